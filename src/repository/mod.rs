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

mod indexing;
mod loader;
mod sealed;
mod snapshots;

pub use indexing::IndexRepair;
pub use loader::TreeLoader;

use crate::backend::{Backend, Counting, Payload, PutMode, PutOutcome, RequestStats};
use crate::crypto::{ENVELOPE_V1, Kind, MasterKey};
use crate::error::{Error, Result};
use crate::id::Id;

use config::{Config, FORMAT_VERSION};
use index::Index;
use keys::{KdfParams, KeyFile};
use pack::PackEntry;

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

    /// Writes `bytes` create-only as `<dir>/<hash of bytes>` (and into the cache); returns the id.
    pub(crate) fn put_immutable(&self, dir: &str, bytes: &[u8]) -> Result<Id> {
        let id = Id::of_bytes(bytes);
        let key = format!("{dir}/{id}");
        self.backend
            .put(&key, Payload::Bytes(bytes), PutMode::IfAbsent)?;
        if let Some(c) = &self.cache {
            c.put(&key, bytes);
        }
        Ok(id)
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
