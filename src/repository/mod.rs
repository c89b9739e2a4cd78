//! An open repository: a backend plus the master key and config. Every read and write of a
//! repository object goes through here, so the layout (`config`, `keys/`, `data/`, `index/`,
//! `snapshots/`) lives in one place; docs/FORMAT.md describes it byte by byte.

pub mod cache;
pub mod config;
pub mod forks;
pub mod gc;
pub mod index;
pub mod keyring;
pub mod keys;
pub mod limits;
pub mod pack;
pub mod snapshot;
pub mod tree;
pub mod verified;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::backend::{Backend, Counting, Payload, PutMode, PutOutcome, RequestStats};
use crate::crypto::{ENVELOPE_V1, Kind, MasterKey};
use crate::error::{Error, Result};
use crate::id::Id;

use config::{Config, FORMAT_VERSION};
use index::{Index, IndexFile};
use keys::{KdfParams, KeyFile};
use pack::{BlobType, PackEntry};
use snapshot::{SNAPSHOT_VERSION, Snapshot};
use tree::Tree;

/// What `repair index` did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct IndexRepair {
    /// Packs in the new index.
    pub packs: usize,
    /// Blobs in the new index.
    pub blobs: usize,
    /// Packs left out, with why their header could not be read.
    pub unreadable: Vec<(String, String)>,
    /// Blobs left out because they failed verification (`--read-data` only): pack and why.
    pub damaged_blobs: Vec<(String, String)>,
    /// Packs with damaged blobs, and their good entries, left for the caller to copy out.
    #[serde(skip)]
    pub salvage: Vec<(Id, Vec<PackEntry>)>,
    /// Good blobs copied out of damaged packs into new ones.
    pub salvaged_blobs: usize,
}

/// Options fixed at `init`.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// Target pack size in bytes.
    pub pack_size: u32,
    /// Default zstd level.
    pub compression_level: i32,
    /// Argon2id cost of the first key.
    pub kdf: KdfParams,
    /// Override chunk sizes (min, avg, max); tests use small ones.
    pub chunk_sizes: Option<(u32, u32, u32)>,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            pack_size: config::DEFAULT_PACK_SIZE,
            compression_level: 3,
            kdf: KdfParams::default(),
            chunk_sizes: None,
        }
    }
}

/// A repository opened with a password.
pub struct Repository {
    backend: Counting<Box<dyn Backend>>,
    key: MasterKey,
    config: Config,
    key_name: String,
    cache: Option<cache::Cache>,
    ledger: verified::Ledger,
}

/// A key object as shown by `key list`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KeyInfo {
    /// Full id.
    pub id: String,
    /// Whether this is the key that opened the repository.
    pub current: bool,
    /// Who added it.
    pub username: String,
    /// Where it was added.
    pub hostname: String,
    /// When it was added.
    pub created: chrono::DateTime<chrono::Utc>,
}

impl Repository {
    /// Creates a new repository. Writes the key first and the config last, so a crash in between
    /// leaves no config (no repository) rather than a config nobody can open.
    pub fn init(backend: Box<dyn Backend>, password: &str, opts: &InitOptions) -> Result<Self> {
        let location = backend.location();
        backend.create()?;
        match backend.get("config", limits::MAX_CONFIG) {
            Ok(_) => return Err(Error::AlreadyInitialized { location }),
            Err(Error::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        check_password(password)?;
        let mut cfg = Config::new(opts.pack_size, opts.compression_level);
        if let Some((min, avg, max)) = opts.chunk_sizes {
            cfg.chunker.min_size = min;
            cfg.chunker.avg_size = avg;
            cfg.chunker.max_size = max;
        }
        cfg.chunker.validate()?;
        if !(1..=22).contains(&cfg.compression_level) {
            return Err(Error::invalid(format!(
                "compression level {} is outside zstd's 1-22",
                cfg.compression_level
            )));
        }
        if !(1 << 20..=1 << 30).contains(&cfg.pack_size) {
            return Err(Error::invalid("pack size must be between 1 MiB and 1 GiB"));
        }
        let key = MasterKey::generate();
        let key_file = KeyFile::create(&key, password, opts.kdf)?.to_bytes();
        // The key's name is the hash of bytes that hold a fresh random salt and key: an object
        // already there under that name can only be this run's own write whose reply was lost.
        let key_name = format!("keys/{}", Id::of_bytes(&key_file));
        backend.put(&key_name, Payload::Bytes(&key_file), PutMode::IfAbsent)?;
        let sealed = key.sealer(Kind::Config).seal(
            b"config",
            &serde_json::to_vec(&cfg).expect("config serializes"),
        );
        // `config` first, create-only: it decides whose repository this is. The copy is written
        // only once `config` is known to be ours, so a lost race never touches another
        // repository's copy. A crash between the two leaves a repository that opens from
        // `config` alone (`check` reports the missing copy, `repair config` writes it).
        if backend.put("config", Payload::Bytes(&sealed), PutMode::IfAbsent)?
            == PutOutcome::AlreadyExists
        {
            Self::init_config_conflict(backend.as_ref(), &key, &sealed, &key_name, &location)?;
        }
        backend.put(CONFIG_COPY, Payload::Bytes(&sealed), PutMode::Overwrite)?;
        Ok(Repository {
            backend: Counting::new(backend),
            key,
            config: cfg,
            key_name,
            cache: None,
            ledger: verified::Ledger::in_memory(),
        })
    }

    /// `init`'s create-only write of `config` found an object there. A retried request whose first
    /// reply was lost finds its own write: the same bytes, or a config that this run's key opens.
    /// Then `init` goes on. Otherwise the location belongs to another `init`; this run's key object
    /// (its name is the hash of bytes only this run could make) is removed only when the other
    /// config was read and definitely is not sealed under this run's key. Nothing else is deleted.
    fn init_config_conflict(
        backend: &dyn Backend,
        key: &MasterKey,
        sealed: &[u8],
        key_name: &str,
        location: &str,
    ) -> Result<()> {
        let found = backend.get("config", limits::MAX_CONFIG)?;
        if found == sealed
            || key
                .sealer(Kind::Config)
                .open(b"config", &found, &|| "config".to_string())
                .is_ok()
        {
            tracing::info!(
                "init: the store already holds this run's config (a lost reply); going on"
            );
            return Ok(());
        }
        let _ = backend.delete(key_name);
        Err(Error::AlreadyInitialized {
            location: location.to_string(),
        })
    }

    /// Opens an existing repository with a password.
    ///
    /// The config is stored twice (`config`, and its copy `config.1`); either one that
    /// authenticates opens the repository, so one lost or damaged object does not end it. Key
    /// objects whose bytes do not hash to their name, that do not parse, or whose KDF costs are
    /// out of bounds are skipped with a warning naming them (`check` reports them), so one bad key
    /// cannot block the others. When a key opens with the password but neither config copy
    /// authenticates under it, the config is reported as damaged, not the password as wrong.
    pub fn open(backend: Box<dyn Backend>, password: &str) -> Result<Self> {
        let backend = Counting::new(backend);
        let mut configs = Vec::new();
        for name in ["config", CONFIG_COPY] {
            match backend.get(name, limits::MAX_CONFIG) {
                Ok(c) => configs.push((name, c)),
                Err(Error::NotFound { .. }) => {}
                Err(e @ Error::Corrupt { .. }) => tracing::warn!("{e}"),
                Err(e) => return Err(e),
            }
        }
        if configs.is_empty() {
            return Err(Error::NoRepository {
                location: backend.location(),
            });
        }
        if let Some((name, _)) = configs
            .iter()
            .find(|(_, c)| c.first() == Some(&ENVELOPE_V1))
        {
            return Err(Error::OlderFormat {
                object: name.to_string(),
                found: 1,
                supported: FORMAT_VERSION,
            });
        }
        let keys = backend.list("keys/")?;
        let mut opened_but_config_bad = None;
        // A key object the store failed to deliver is not a key the password failed to open.
        let mut unread = None;
        for info in &keys {
            let key_file = match read_key_object(&backend, &info.key) {
                Ok(k) => k,
                Err(e @ Error::NewerFormat { .. }) => return Err(e),
                Err(e @ (Error::Backend { .. } | Error::Io { .. })) => {
                    tracing::warn!("cannot read {}: {e}", info.key);
                    unread = Some(e);
                    continue;
                }
                Err(e) => {
                    tracing::warn!("skipping {}: {e}", info.key);
                    continue;
                }
            };
            let key = match key_file.open(password, &info.key) {
                Ok(Some(k)) => k,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!("skipping {}: {e}", info.key);
                    continue;
                }
            };
            // A key left by an interrupted init may open but not match this config: try the next.
            let mut last_err = None;
            for (name, sealed) in &configs {
                let opened = key
                    .sealer(Kind::Config)
                    .open(b"config", sealed, &|| name.to_string())
                    .and_then(|plain| parse_config(&plain));
                match opened {
                    Ok(cfg) => {
                        return Ok(Repository {
                            backend,
                            key,
                            config: cfg,
                            key_name: info.key.clone(),
                            cache: None,
                            ledger: verified::Ledger::in_memory(),
                        });
                    }
                    Err(e @ Error::NewerFormat { .. }) => return Err(e),
                    Err(e) => last_err = Some(e),
                }
            }
            opened_but_config_bad = last_err.map(|e| (info.key.clone(), e));
        }
        if let Some((key, e)) = opened_but_config_bad {
            return Err(Error::corrupt(
                "config",
                format!(
                    "{key} opens with this password, but no copy of the config authenticates under it ({e}); if another key object holds the same password, remove the stray key; otherwise the config and its copy {CONFIG_COPY} are both damaged"
                ),
            ));
        }
        if let Some(e) = unread {
            return Err(e);
        }
        Err(Error::WrongPassword { keys: keys.len() })
    }

    /// Keeps local copies of index objects, snapshots and tree packs under `base` (see
    /// [`cache`]). Worth it when reads cost requests (S3); `check` never uses it.
    pub fn with_cache(mut self, base: &std::path::Path) -> Self {
        self.cache = Some(cache::Cache::new(base, &self.config.id));
        self
    }

    /// Remembers verified packs across runs in `base` (see [`verified`]): a backup then
    /// re-reads only packs that changed on the store since this machine last verified them.
    pub fn with_ledger(mut self, base: &std::path::Path) -> Self {
        self.ledger = verified::Ledger::load(base, &self.config.id);
        self
    }

    /// The verified-pack ledger.
    pub fn ledger(&self) -> &verified::Ledger {
        &self.ledger
    }

    /// Downloads a whole pack and checks that it hashes to its name. Returns its bytes, and
    /// records it in the ledger with the version token of `listed` (when given). A pack that
    /// does not hash to its name is an error naming it, and is forgotten by the ledger.
    pub fn verify_pack(
        &self,
        id: &Id,
        listed: Option<&crate::backend::ObjectInfo>,
    ) -> Result<Vec<u8>> {
        let key = pack::pack_key(id);
        let r = self.get_object(&key).and_then(|bytes| {
            verify_object_id(&key, id, &bytes)?;
            Ok(bytes)
        });
        match &r {
            Ok(bytes) => self.ledger.record(
                *id,
                bytes.len() as u64,
                listed.and_then(|l| l.version.clone()),
            ),
            Err(_) => self.ledger.forget(id),
        }
        r
    }

    /// Reads an immutable, content-addressed object through the cache.
    pub(crate) fn get_immutable(&self, key: &str, id: &Id) -> Result<Vec<u8>> {
        if let Some(c) = &self.cache
            && let Some(b) = c.get(key, id)
        {
            return Ok(b);
        }
        let bytes = self.get_object(key)?;
        verify_object_id(key, id, &bytes)?;
        if let Some(c) = &self.cache {
            c.put(key, &bytes);
        }
        Ok(bytes)
    }

    /// Reads a whole object, refusing one larger than its kind may be ([`limits`]).
    pub fn get_object(&self, key: &str) -> Result<Vec<u8>> {
        self.backend.get(
            key,
            limits::max_object_size(key, self.config.pack_size as u64),
        )
    }

    /// Drops cached objects under `prefix` that the repository no longer lists.
    pub(crate) fn cache_retain(&self, prefix: &str, listed: &[crate::backend::ObjectInfo]) {
        if let Some(c) = &self.cache {
            let live: std::collections::HashSet<&str> =
                listed.iter().map(|o| o.key.as_str()).collect();
            c.retain(prefix, &live);
        }
    }

    /// Copies a file about to be uploaded into the cache (tree packs).
    pub(crate) fn cache_file(&self, key: &str, path: &std::path::Path) {
        if let Some(c) = &self.cache {
            c.put_file(key, path);
        }
    }

    /// The backend, with request accounting.
    pub fn backend(&self) -> &dyn Backend {
        &self.backend
    }

    /// Requests made through this repository so far.
    pub fn stats(&self) -> RequestStats {
        self.backend.stats()
    }

    /// The master key.
    pub fn key(&self) -> &MasterKey {
        &self.key
    }

    /// The decoded config.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The config as stored, decrypted (for `cat config`).
    pub fn config_json(&self) -> String {
        serde_json::to_string_pretty(&self.config).expect("config serializes")
    }

    /// Reads every live index object (those no other index supersedes). An object that vanishes
    /// between the listing and the read was superseded by a concurrent prune or repair, whose
    /// new object the listing may have missed: the listing is then repeated.
    ///
    /// Strict: a damaged index object that nothing supersedes is an error. Prune and repair use
    /// this, because a pack whose index object was skipped would look unused to them.
    pub fn index_files(&self) -> Result<Vec<(Id, IndexFile)>> {
        self.index_files_mode(true)
    }

    /// Like [`Repository::index_files`], but a damaged or forged index object is skipped with a
    /// warning naming it, so one junk object under `index/` cannot stop every restore and backup.
    /// What it listed is still found: backups adopt its packs again after verifying them, and
    /// `check` reports the object.
    pub fn index_files_lenient(&self) -> Result<Vec<(Id, IndexFile)>> {
        self.index_files_mode(false)
    }

    fn index_files_mode(&self, strict: bool) -> Result<Vec<(Id, IndexFile)>> {
        let mut attempt = 0;
        loop {
            match self.index_files_once(strict) {
                Err(Error::NotFound { .. }) if attempt < 5 => attempt += 1,
                r => return r,
            }
        }
    }

    fn index_files_once(&self, strict: bool) -> Result<Vec<(Id, IndexFile)>> {
        let listed = self.backend.list("index/")?;
        self.cache_retain("index/", &listed);
        let read = crate::parallel::map(listed, 8, |info| {
            let id = object_id(&info.key, "index/");
            let r = id
                .as_ref()
                .map_err(|e| Error::invalid(e.to_string()))
                .and_then(|id| {
                    let bytes = self.get_immutable(&info.key, id)?;
                    IndexFile::decode(&self.key, &info.key, &bytes)
                });
            (id.ok(), r)
        });
        let superseded: std::collections::HashSet<Id> = read
            .iter()
            .filter_map(|(_, r)| r.as_ref().ok())
            .flat_map(|f| f.supersedes.iter().copied())
            .collect();
        let mut files = Vec::new();
        for (id, r) in read {
            match (id, r) {
                (Some(id), Ok(f)) => files.push((id, f)),
                // A damaged object that a repaired index replaces no longer matters.
                (Some(id), Err(_)) if superseded.contains(&id) => {}
                (_, Err(e @ Error::NotFound { .. })) => return Err(e),
                (_, Err(e @ Error::NewerFormat { .. })) => return Err(e),
                (_, Err(e)) if strict => return Err(e),
                (_, Err(e)) => tracing::warn!("ignoring {e}"),
                (None, Ok(_)) => {}
            }
        }
        Ok(files
            .into_iter()
            .filter(|(id, _)| !superseded.contains(id))
            .collect())
    }

    /// Rebuilds the index from the pack headers themselves: downloads every pack, checks that it
    /// hashes to its name and reads its header, writes one index object listing every readable pack and superseding every
    /// index object present, readable or not, then deletes those. Packs whose header cannot be
    /// read are reported and left out. With `read_data`, every pack is downloaded and each blob
    /// verified; a pack with damaged blobs is left out and returned in `salvage` with its good
    /// entries ([`crate::repair::repair_index`] copies those into new packs).
    pub fn repair_index(&self, read_data: bool) -> Result<IndexRepair> {
        let old: Vec<Id> = self
            .backend
            .list("index/")?
            .iter()
            .filter_map(|o| object_id(&o.key, "index/").ok())
            .collect();
        let listed = self.backend.list("data/")?;
        // Every pack is downloaded and hashed: a pack is listed into the index only under the
        // name its contents give it (a copy stored under another name is left out).
        let read = crate::parallel::map(listed, 2, |info| {
            let r = object_id(&info.key, "data/").and_then(|id| {
                if read_data {
                    self.salvage_pack(&id, &info.key)
                } else {
                    let bytes = self.verify_pack(&id, Some(&info))?;
                    Ok((
                        id,
                        pack::parse_pack(&self.key, &info.key, &bytes)?,
                        Vec::new(),
                    ))
                }
            });
            (info.key, r)
        });
        let mut file = IndexFile {
            supersedes: old,
            packs: Vec::new(),
        };
        let mut bad = Vec::new();
        let mut damaged = Vec::new();
        let mut salvage = Vec::new();
        let mut blobs = 0;
        for (key, r) in read {
            match r {
                Ok((id, entries, dropped)) if !dropped.is_empty() => {
                    // Its good blobs are copied out by the caller; the pack itself goes.
                    damaged.extend(dropped);
                    salvage.push((id, entries));
                }
                Ok((id, entries, _)) => {
                    blobs += entries.len();
                    file.packs.push((id, entries));
                }
                Err(e) => bad.push((key, e.to_string())),
            }
        }
        file.packs.sort_by_key(|(id, _)| *id);
        let packs = file.packs.len();
        self.save_index(&file)?;
        // The new object supersedes the old ones, so they can go: an index written meanwhile by a
        // concurrent backup was not listed above and stays.
        for id in &file.supersedes {
            self.backend.delete(&format!("index/{id}"))?;
        }
        Ok(IndexRepair {
            packs,
            blobs,
            unreadable: bad,
            damaged_blobs: damaged,
            salvage,
            salvaged_blobs: 0,
        })
    }

    /// Downloads a whole pack and returns the entries of the blobs that verify, and a line for
    /// each that does not.
    #[allow(clippy::type_complexity)]
    fn salvage_pack(
        &self,
        id: &Id,
        key: &str,
    ) -> Result<(Id, Vec<PackEntry>, Vec<(String, String)>)> {
        let data = self.verify_pack(id, None)?;
        let entries = pack::parse_pack(&self.key, key, &data)?;
        let mut good = Vec::with_capacity(entries.len());
        let mut dropped = Vec::new();
        for e in entries {
            let blob = &data[e.offset as usize..(e.offset + e.length) as usize];
            match self.open_blob(id, &e, blob) {
                Ok(_) => good.push(e),
                Err(err) => dropped.push((key.to_string(), err.to_string())),
            }
        }
        Ok((*id, good, dropped))
    }

    /// Replaces every live index object that lists a pack in `drop` with one new object holding
    /// their other packs, superseding them and anything they superseded (so no half-finished
    /// earlier rewrite can come back to life). Returns the objects now superseded: the caller
    /// deletes them after the packs. Index objects written meanwhile are not touched.
    pub fn rewrite_index_without(&self, drop: &std::collections::HashSet<Id>) -> Result<Vec<Id>> {
        let listed = self.backend.list("index/")?;
        let read = crate::parallel::map(listed, 8, |info| {
            let id = object_id(&info.key, "index/").ok()?;
            let f = self
                .get_immutable(&info.key, &id)
                .and_then(|b| IndexFile::decode(&self.key, &info.key, &b));
            Some((id, f))
        });
        let mut files = Vec::new();
        let mut superseded = std::collections::HashSet::new();
        let mut present = std::collections::HashSet::new();
        for (id, f) in read.into_iter().flatten() {
            present.insert(id);
            match f {
                Ok(f) => {
                    superseded.extend(f.supersedes.iter().copied());
                    files.push((id, f));
                }
                Err(e) => tracing::warn!("{e}"),
            }
        }
        let mut new = IndexFile::default();
        let mut gone: Vec<Id> = superseded.intersection(&present).copied().collect();
        for (id, f) in files {
            if superseded.contains(&id) || !f.packs.iter().any(|(p, _)| drop.contains(p)) {
                continue;
            }
            gone.push(id);
            new.packs
                .extend(f.packs.into_iter().filter(|(p, _)| !drop.contains(p)));
        }
        if gone.is_empty() {
            return Ok(gone);
        }
        gone.sort();
        gone.dedup();
        new.supersedes = gone.clone();
        self.save_index(&new)?;
        Ok(gone)
    }

    /// Deletes index objects a newer object supersedes.
    pub fn delete_index_objects(&self, ids: &[Id]) -> Result<()> {
        for id in ids {
            self.backend.delete(&format!("index/{id}"))?;
        }
        Ok(())
    }

    /// Builds the in-memory index from all live index objects. Packs a prune has marked go in
    /// last and are flagged, so readers prefer a copy that will stay and backups reuse none.
    pub fn load_index(&self) -> Result<Index> {
        let marked = self.marked_packs()?;
        Ok(Index::from_files(&self.index_files_lenient()?, marked))
    }

    /// Stores an index object under the hash of its bytes; returns the id of the last object
    /// written. An index larger than [`limits::INDEX_SPLIT`] is written as several objects, so
    /// that none exceeds what readers accept ([`limits::MAX_INDEX`]); the superseded list goes in
    /// the last one, so a crash part-way leaves the old objects live beside the new parts (their
    /// union lists every pack) and never a gap.
    pub fn save_index(&self, f: &IndexFile) -> Result<Id> {
        const PACK_BYTES: usize = 36;
        const ENTRY_BYTES: usize = 46;
        let mut parts: Vec<IndexFile> = vec![IndexFile::default()];
        let mut size = 0usize;
        for (pack, entries) in &f.packs {
            let n = PACK_BYTES + ENTRY_BYTES * entries.len();
            if size + n > limits::INDEX_SPLIT && size > 0 {
                parts.push(IndexFile::default());
                size = 0;
            }
            size += n;
            parts
                .last_mut()
                .expect("one part")
                .packs
                .push((*pack, entries.clone()));
        }
        parts.last_mut().expect("one part").supersedes = f.supersedes.clone();
        let mut last = None;
        for part in &parts {
            last = Some(self.put_immutable("index", &part.encode(&self.key))?);
        }
        Ok(last.expect("one part"))
    }

    /// Stores a snapshot; the last write of a backup.
    pub fn save_snapshot(&self, s: &Snapshot) -> Result<Id> {
        let bytes = self
            .key
            .sealer(Kind::Snapshot)
            .seal(b"", &serde_json::to_vec(s).expect("snapshot serializes"));
        self.put_immutable("snapshots", &bytes)
    }

    /// Writes `bytes` create-only as `<dir>/<hash of bytes>` (and into the cache); returns the id.
    fn put_immutable(&self, dir: &str, bytes: &[u8]) -> Result<Id> {
        let id = Id::of_bytes(bytes);
        let key = format!("{dir}/{id}");
        self.backend
            .put(&key, Payload::Bytes(bytes), PutMode::IfAbsent)?;
        if let Some(c) = &self.cache {
            c.put(&key, bytes);
        }
        Ok(id)
    }

    /// Removes one snapshot object (forget). The data it referenced stays until a prune. A
    /// cached copy is harmless (readers only load listed snapshots) and is dropped by the next
    /// listing, so no extra request is spent here.
    pub fn delete_snapshot(&self, id: &Id) -> Result<()> {
        self.backend.delete(&format!("snapshots/{id}"))
    }

    /// Loads one snapshot.
    pub fn load_snapshot(&self, id: &Id) -> Result<Snapshot> {
        let key = format!("snapshots/{id}");
        let bytes = self.get_immutable(&key, id)?;
        let plain = self
            .key
            .sealer(Kind::Snapshot)
            .open(b"", &bytes, &|| key.clone())?;
        parse_snapshot(&plain, &key)
    }

    /// All snapshots, oldest first. Damaged ones are returned as errors by `check`; here they
    /// are skipped with a warning so one bad object does not hide the others.
    pub fn snapshots(&self) -> Result<Vec<(Id, Snapshot)>> {
        self.load_snapshots(false)
    }

    /// Like [`Repository::snapshots`], but a damaged snapshot is an error: the restore gate must
    /// not mistake "the newest snapshot is unreadable" for "there is nothing to restore".
    pub fn snapshots_strict(&self) -> Result<Vec<(Id, Snapshot)>> {
        self.load_snapshots(true)
    }

    fn load_snapshots(&self, strict: bool) -> Result<Vec<(Id, Snapshot)>> {
        let (good, damaged) = self.snapshots_with_damage()?;
        if strict && let Some((_, e, _)) = damaged.into_iter().next() {
            return Err(e);
        }
        Ok(good)
    }

    /// Every readable snapshot (oldest first, future-dated ones flagged) and every snapshot
    /// object that could not be read, with the error and the store's write time. Damaged objects
    /// are logged as warnings here, once.
    #[allow(clippy::type_complexity)]
    pub fn snapshots_with_damage(
        &self,
    ) -> Result<(
        Vec<(Id, Snapshot)>,
        Vec<(String, Error, Option<chrono::DateTime<chrono::Utc>>)>,
    )> {
        let listed = self.backend.list("snapshots/")?;
        self.cache_retain("snapshots/", &listed);
        let now = chrono::Utc::now();
        let loaded = crate::parallel::map(listed, 8, |info| {
            let stored = info.modified.map(chrono::DateTime::<chrono::Utc>::from);
            let r = object_id(&info.key, "snapshots/").and_then(|id| {
                let mut s = self.load_snapshot(&id)?;
                let reference = stored.map_or(now, |t| t.min(now));
                s.future_dated = s.time > reference + snapshot::FUTURE_TOLERANCE;
                s.stored_at = stored;
                Ok((id, s))
            });
            (info.key, stored, r)
        });
        let mut good = Vec::new();
        let mut damaged = Vec::new();
        for (key, stored, r) in loaded {
            match r {
                Ok(s) => {
                    if s.1.future_dated {
                        tracing::warn!(
                            "{key}: dated {} but stored at {}: more than {} minutes in the future, so it is not used as the latest snapshot nor by retention",
                            s.1.time,
                            stored.map_or("an unknown time".into(), |t| t.to_string()),
                            snapshot::FUTURE_TOLERANCE.num_minutes()
                        );
                    }
                    good.push(s);
                }
                // Forgotten since the listing.
                Err(Error::NotFound { .. }) => {}
                Err(e @ Error::NewerFormat { .. }) => return Err(e),
                Err(e) => {
                    tracing::warn!("{e}");
                    damaged.push((key, e, stored));
                }
            }
        }
        good.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
        Ok((good, damaged))
    }

    /// The newest snapshot of a volume (or of any volume) that is safe to call "latest": not
    /// future-dated, and no damaged snapshot object was stored at or after it (a damaged object
    /// might be the real newest snapshot, so restoring the one before would silently lose data).
    /// With `fallback`, damage is only warned about and the newest readable snapshot is chosen;
    /// the caller says which one it restored.
    pub fn find_latest(&self, name: Option<&str>, fallback: bool) -> Result<(Id, Snapshot)> {
        if let Some(found) = self.latest(name, fallback)? {
            return Ok(found);
        }
        let future = self
            .snapshots()?
            .into_iter()
            .filter(|(_, s)| s.future_dated && name.is_none_or(|n| s.name == n))
            .count();
        let whose = match name {
            Some(n) => format!("volume name {n:?}"),
            None => "the repository".into(),
        };
        Err(if future > 0 {
            Error::invalid(format!(
                "{whose} has only future-dated snapshots ({future}), which are never taken as latest: check this machine's and the writer's clocks, or restore one by its id"
            ))
        } else if let Some(n) = name {
            Error::invalid(format!("no snapshot for volume name {n:?} yet"))
        } else {
            Error::invalid("the repository has no snapshots yet")
        })
    }

    /// Like [`Repository::find_latest`], with `None` when there is no snapshot (and no damaged
    /// object that might be one): the restore gate's "first deployment".
    pub fn latest(&self, name: Option<&str>, fallback: bool) -> Result<Option<(Id, Snapshot)>> {
        let (good, damaged) = self.snapshots_with_damage()?;
        // Forks of a volume's history (FORMAT.md 12a) are never latest.
        let good = forks::prefer(good);
        let mut candidates = good
            .into_iter()
            .rev()
            .filter(|(_, s)| !s.future_dated && name.is_none_or(|n| s.name == n));
        let newest = candidates.next();
        let consistent = |s: &Snapshot| {
            s.labels
                .get(crate::backup::CONSISTENT_LABEL)
                .map(String::as_str)
                != Some("false")
        };
        // A capture known not to be consistent (a pause that outlasted its limit) is passed over
        // for the newest consistent one, saying so; it is used only when there is no other.
        let latest = match newest {
            Some((id, s)) if !consistent(&s) => match candidates.find(|(_, s)| consistent(s)) {
                Some(found) => {
                    tracing::warn!(
                        "skipping snapshot {} ({}): using {}, the newest consistent one",
                        id.short(),
                        s.labels
                            .get("lifeboat.inconsistent")
                            .map_or("not consistent", String::as_str),
                        found.0.short()
                    );
                    Some(found)
                }
                None => Some((id, s)),
            },
            other => other,
        };
        let newer_damage = damaged.iter().find(|(_, _, stored)| {
            match (stored, latest.as_ref().and_then(|(_, s)| s.stored_at)) {
                (Some(d), Some(l)) => *d >= l,
                _ => true,
            }
        });
        if let Some((key, e, _)) = newer_damage
            && !fallback
        {
            let instead = latest
                .as_ref()
                .map(|(id, _)| format!(" ({})", id.short()))
                .unwrap_or_default();
            return Err(Error::corrupt(
                key.clone(),
                format!(
                    "{e}; it may be the newest snapshot, so `latest` is refused rather than silently taking an older one: run `lifeboat check` and `lifeboat repair snapshots`, or pass --fallback to use the newest readable snapshot{instead}"
                ),
            ));
        }
        if let Some((key, _, _)) = newer_damage {
            match &latest {
                Some((id, _)) => tracing::warn!(
                    "--fallback: {key} is damaged; using the newest readable snapshot {}",
                    id.short()
                ),
                None => {
                    tracing::warn!("--fallback: {key} is damaged and no readable snapshot is left")
                }
            }
        }
        Ok(latest)
    }

    /// Resolves `latest` (optionally for one volume name) or a unique id prefix.
    pub fn find_snapshot(&self, spec: &str, name: Option<&str>) -> Result<(Id, Snapshot)> {
        if spec == "latest" {
            return self.find_latest(name, false);
        }
        let all = self.snapshots()?;
        if spec.len() < 4 || !spec.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(Error::invalid(format!(
                "{spec:?} is not a snapshot id: give `latest` or at least 4 hex digits of an id from `lifeboat snapshots`"
            )));
        }
        let spec = spec.to_ascii_lowercase();
        let mut hits: Vec<_> = all
            .into_iter()
            .filter(|(id, _)| id.to_hex().starts_with(&spec))
            .collect();
        match hits.len() {
            1 => Ok(hits.pop().expect("one")),
            0 => Err(Error::invalid(format!("no snapshot with id {spec}"))),
            n => Err(Error::invalid(format!(
                "{n} snapshots start with {spec}: give more digits"
            ))),
        }
    }

    /// Decrypts, decompresses and verifies one blob read from its pack.
    pub fn open_blob(&self, pack: &Id, e: &PackEntry, sealed: &[u8]) -> Result<Vec<u8>> {
        let what = || format!("blob {} in pack {}", e.id.short(), pack.short());
        let plain = self
            .key
            .sealer(e.kind.seal_kind())
            .open(&e.id.0, sealed, &what)?;
        let data = if e.compressed() {
            thread_local! {
                // One decompression context per thread: creating one per blob showed up in
                // restore profiles.
                static DCTX: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
                    const { std::cell::RefCell::new(None) };
            }
            let mut out = Vec::with_capacity(e.raw_length as usize);
            DCTX.with(|cell| -> Result<()> {
                let mut slot = cell.borrow_mut();
                if slot.is_none() {
                    *slot = Some(
                        zstd::bulk::Decompressor::new().map_err(|err| Error::io("zstd", err))?,
                    );
                }
                let d = slot.as_mut().expect("set above");
                d.decompress_to_buffer(&plain[..], &mut out)
                    .map_err(|err| Error::corrupt(what(), format!("zstd: {err}")))?;
                Ok(())
            })?;
            out
        } else {
            plain
        };
        if data.len() != e.raw_length as usize {
            return Err(Error::corrupt(
                what(),
                format!("length {} instead of {}", data.len(), e.raw_length),
            ));
        }
        if self.key.blob_id(&data) != e.id {
            return Err(Error::corrupt(what(), "content does not match its id"));
        }
        Ok(data)
    }

    /// Reads one blob with a ranged read. When the index knows more than one copy, a copy that
    /// fails to read or verify is skipped (with a warning) and the next is tried; the error of
    /// the first copy is returned only when none reads.
    pub fn read_blob(&self, index: &Index, id: &Id) -> Result<Vec<u8>> {
        let mut first_err = None;
        for loc in index.locations(id) {
            let pack = index.pack_id(loc.pack);
            let r = self
                .backend
                .get_range(&pack::pack_key(&pack), loc.offset as u64, loc.length as u64)
                .and_then(|sealed| self.open_blob(&pack, &loc.entry(*id), &sealed));
            match r {
                Ok(data) => return Ok(data),
                Err(e) => {
                    if index.locations(id).nth(1).is_some() {
                        tracing::warn!("{e}; trying another copy");
                    }
                    first_err.get_or_insert(e);
                }
            }
        }
        Err(first_err
            .unwrap_or_else(|| Error::corrupt(format!("blob {}", id.short()), "not in any index")))
    }

    /// Reads and parses a pack's header with one ranged read of its tail (two for huge headers).
    pub fn read_pack_header(&self, pack: &Id, size: u64) -> Result<Vec<PackEntry>> {
        let key = pack::pack_key(pack);
        let probe = size.min(pack::HEADER_PROBE);
        let tail = self.backend.get_range(&key, size - probe, probe)?;
        let hlen = pack::header_len(&key, &tail, size)?;
        let sealed = if hlen + 4 <= probe {
            tail[(probe - hlen - 4) as usize..(probe - 4) as usize].to_vec()
        } else {
            self.backend.get_range(&key, size - hlen - 4, hlen)?
        };
        pack::decode_header(&self.key, &key, &sealed, size)
    }

    /// The id of the key that opened the repository.
    pub fn current_key(&self) -> &str {
        self.key_name.trim_start_matches("keys/")
    }
}

/// The second copy of the config, written before `config` by `init`.
pub const CONFIG_COPY: &str = "config.1";

/// Reads and parses a key object, checking that its bytes hash to its name: a key object is
/// trusted only under the name its own contents give it.
fn read_key_object(backend: &dyn Backend, key: &str) -> Result<KeyFile> {
    let bytes = backend.get(key, limits::MAX_KEY)?;
    verify_object_id(key, &object_id(key, "keys/")?, &bytes)?;
    KeyFile::parse(&bytes, key)
}

fn check_password(password: &str) -> Result<()> {
    if password.is_empty() {
        return Err(Error::invalid(
            "an empty password is not allowed: set LIFEBOAT_PASSWORD or LIFEBOAT_PASSWORD_FILE",
        ));
    }
    Ok(())
}

fn parse_config(plain: &[u8]) -> Result<Config> {
    #[derive(serde::Deserialize)]
    struct V {
        version: u32,
    }
    let v: V = serde_json::from_slice(plain)
        .map_err(|e| Error::corrupt("config", format!("bad JSON: {e}")))?;
    if v.version > FORMAT_VERSION {
        return Err(Error::NewerFormat {
            object: "config".into(),
            found: v.version,
            supported: FORMAT_VERSION,
        });
    }
    if v.version < FORMAT_VERSION {
        return Err(Error::OlderFormat {
            object: "config".into(),
            found: v.version,
            supported: FORMAT_VERSION,
        });
    }
    let cfg: Config = serde_json::from_slice(plain)
        .map_err(|e| Error::corrupt("config", format!("bad JSON: {e}")))?;
    cfg.chunker
        .validate()
        .map_err(|e| Error::corrupt("config", e.to_string()))?;
    Ok(cfg)
}

fn parse_snapshot(plain: &[u8], name: &str) -> Result<Snapshot> {
    #[derive(serde::Deserialize)]
    struct V {
        version: u32,
    }
    let v: V = serde_json::from_slice(plain)
        .map_err(|e| Error::corrupt(name, format!("bad JSON: {e}")))?;
    if v.version > SNAPSHOT_VERSION {
        return Err(Error::NewerFormat {
            object: name.into(),
            found: v.version,
            supported: SNAPSHOT_VERSION,
        });
    }
    serde_json::from_slice(plain).map_err(|e| Error::corrupt(name, format!("bad JSON: {e}")))
}

/// Parses the id at the end of an object key like `index/<hex>` or `data/ab/<hex>`.
pub fn object_id(key: &str, prefix: &str) -> Result<Id> {
    let name = key.rsplit('/').next().unwrap_or(key);
    name.parse()
        .map_err(|_| Error::corrupt(key, format!("unexpected object name under {prefix}")))
}

/// Checks that stored bytes hash to the name they are stored under.
pub fn verify_object_id(key: &str, id: &Id, bytes: &[u8]) -> Result<()> {
    if Id::of_bytes(bytes) != *id {
        return Err(Error::corrupt(
            key,
            "contents do not match the object's name (hash)",
        ));
    }
    Ok(())
}

/// Loads tree blobs, fetching each tree pack whole once: a snapshot's trees are packed together,
/// so walking a parent snapshot costs a few GETs instead of one per directory.
pub struct TreeLoader<'a> {
    repo: &'a Repository,
    index: &'a Index,
    packs: Mutex<HashMap<u32, Arc<Vec<u8>>>>,
}

impl<'a> TreeLoader<'a> {
    /// Packs kept in memory at once (a tree pack is at most the pack size).
    const MAX_CACHED_PACKS: usize = 4;

    /// A loader over `index`.
    pub fn new(repo: &'a Repository, index: &'a Index) -> Self {
        TreeLoader {
            repo,
            index,
            packs: Mutex::new(HashMap::new()),
        }
    }

    /// Loads and parses one tree, falling back to another copy when the first is damaged.
    pub fn load(&self, id: &Id) -> Result<Tree> {
        let mut first_err = None;
        for loc in self.index.locations(id) {
            match self.load_from(id, loc) {
                Ok(t) => return Ok(t),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        Err(first_err
            .unwrap_or_else(|| Error::corrupt(format!("tree {}", id.short()), "not in any index")))
    }

    fn load_from(&self, id: &Id, loc: &index::BlobLocation) -> Result<Tree> {
        if loc.kind != BlobType::Tree {
            return Err(Error::corrupt(
                format!("tree {}", id.short()),
                "indexed as a data blob",
            ));
        }
        let pack_id = self.index.pack_id(loc.pack);
        let cached = self.packs.lock().expect("lock").get(&loc.pack).cloned();
        let pack = match cached {
            Some(p) => p,
            None => {
                let bytes = Arc::new(
                    self.repo
                        .get_immutable(&pack::pack_key(&pack_id), &pack_id)?,
                );
                let mut packs = self.packs.lock().expect("lock");
                if packs.len() >= Self::MAX_CACHED_PACKS {
                    packs.clear();
                }
                packs.insert(loc.pack, bytes.clone());
                bytes
            }
        };
        let end = loc.offset as usize + loc.length as usize;
        if end > pack.len() {
            return Err(Error::corrupt(
                pack::pack_key(&pack_id),
                "shorter than its index entries say",
            ));
        }
        let plain =
            self.repo
                .open_blob(&pack_id, &loc.entry(*id), &pack[loc.offset as usize..end])?;
        Tree::from_bytes(&plain, id)
    }
}
