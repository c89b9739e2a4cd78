//! Backup: a bounded pipeline on scoped threads.
//!
//! ```text
//! walk (main) ─jobs→ readers: read, FastCDC, keyed BLAKE3, dedup claim
//!                      ─new blobs→ sealers: zstd, XChaCha20-Poly1305
//!                                   ─sealed→ packer ─packs→ uploaders → backend
//! ```
//! Every channel is bounded, so memory stays near `readers × 2 × max_chunk + queues`, whatever
//! the file sizes. Trees are built bottom-up once all file contents are known, then the index,
//! then the snapshot: a run that dies early leaves only packs, which the next run adopts.

mod assemble;
pub(crate) mod heartbeat;
mod late;
mod packer;
mod sources;
mod stages;
mod treebuild;
pub(crate) mod vouch;
mod walk;

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender, bounded, unbounded};
use globset::{Glob, GlobSet, GlobSetBuilder};

use crate::backend::{Payload, PutMode};
use crate::chunker::Chunker;
use crate::error::{Error, IoContext, Result};
use crate::id::Id;
use crate::progress::{Counters, ProgressMode, Reporter};
use crate::repository::index::{Index, IndexFile};
use crate::repository::pack::{self, BlobType, FLAG_ZSTD, PackEntry};
use crate::repository::snapshot::{SNAPSHOT_VERSION, Snapshot, Summary};
use crate::repository::tree::Tree;
use crate::repository::{Repository, TreeLoader};

use assemble::Assembler;
pub(crate) use heartbeat::Heartbeat;
pub use late::{LateFile, LateFiles, LateOutput};
pub use packer::{FinishedPack, PackWriter, Packer, SealedBlob};
use sources::{add_late_files, stream_command};
use stages::{chunk_into, pack_stage, read_stage, seal_stage, upload_stage};
pub(crate) use stages::{seal_blob, upload_pack};
use treebuild::TreeBuilder;
pub use walk::node_from_metadata;
use walk::{FileJob, Pending, Walker};

/// What to back up.
#[derive(Debug, Clone)]
pub enum Source {
    /// Files and directories; each becomes a root entry named by its base name.
    Paths(Vec<PathBuf>),
    /// The standard output of `sh -c COMMAND`, stored as one file.
    Command {
        /// Shell command line.
        command: String,
        /// Name of the file in the snapshot.
        filename: String,
    },
}

/// Backup settings.
#[derive(Debug, Clone)]
pub struct BackupOptions {
    /// Volume name: the grouping key for "latest".
    pub name: String,
    /// Tags.
    pub tags: Vec<String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Glob patterns; a pattern matches the full path or the base name.
    pub excludes: Vec<String>,
    /// zstd level; `None` uses the repository default.
    pub compression_level: Option<i32>,
    /// Read every file even if the parent says it is unchanged.
    pub force: bool,
    /// Parent snapshot; `None` picks the latest of the same name.
    pub parent: Option<Id>,
    /// CPU worker threads per stage.
    pub threads: usize,
    /// Concurrent pack uploads; 0 uses the backend's hint.
    pub upload_threads: usize,
    /// Progress display.
    pub progress: ProgressMode,
    /// How the data was captured, recorded in the snapshot.
    pub method: Option<String>,
    /// Run right before the snapshot commits (the agent's volume lease): an error aborts the
    /// commit, a stamp is recorded in the snapshot.
    pub fence: Option<CommitFence>,
    /// Asked right before the snapshot commits: `Some(why)` when the capture turned out not to be
    /// consistent (the agent's pause outlasted its limit). The snapshot is then labelled
    /// `lifeboat.consistent=false` and `lifeboat.inconsistent=<why>`, and `latest` prefers a
    /// consistent one.
    pub consistency: Option<ConsistencyCheck>,
    /// Files known only once every other file was read (PostgreSQL's `backup_label`); see
    /// [`late`].
    pub late_files: Option<LateFiles>,
    /// The files are being written while they are read: a database's own directory during a
    /// hot backup, whose log (WAL) repairs what the copy caught mid-write. A file or directory
    /// that disappears between the listing and the read (a dropped table) is left out silently
    /// instead of counted as an error, and a file whose mtime is within two seconds before the
    /// parent snapshot started is read again even when it looks unchanged (it may have been
    /// written within one timestamp tick after the parent read it; git's "racy clean" rule).
    pub live_files: bool,
    /// The volume was restored from this snapshot, finishing before file-system time `.1`
    /// (nanoseconds; the ctime of the marker written after the restore). When it is also the
    /// parent, a file whose size and mtime match the parent's and whose ctime is earlier than
    /// that is the restore's own copy, whatever its (new) inode and ctime say, and is not read
    /// again: the first backup after a new lease's restore re-reads nothing. A write after the
    /// restore sets the file's ctime at or after the marker's, so it is still read.
    pub restored: Option<(Id, i64)>,
    /// Do not descend into directories on another file system than their backup path (restic's
    /// `--one-file-system`); their mount points are kept, empty.
    pub one_file_system: bool,
}

/// See [`BackupOptions::consistency`].
#[derive(Clone)]
#[allow(clippy::type_complexity)]
pub struct ConsistencyCheck(pub std::sync::Arc<dyn Fn() -> Option<String> + Send + Sync>);

impl std::fmt::Debug for ConsistencyCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConsistencyCheck")
    }
}

/// Label of a snapshot whose capture was not consistent (value `false`).
pub const CONSISTENT_LABEL: &str = "lifeboat.consistent";

/// A check run right before a snapshot commits; see [`BackupOptions::fence`].
#[derive(Clone)]
#[allow(clippy::type_complexity)]
pub struct CommitFence(
    pub std::sync::Arc<dyn Fn() -> Result<crate::repository::snapshot::LeaseStamp> + Send + Sync>,
);

impl std::fmt::Debug for CommitFence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CommitFence")
    }
}

impl BackupOptions {
    /// Defaults for volume `name`.
    pub fn new(name: impl Into<String>) -> Self {
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        BackupOptions {
            name: name.into(),
            tags: Vec::new(),
            labels: BTreeMap::new(),
            excludes: Vec::new(),
            compression_level: None,
            force: false,
            parent: None,
            threads: cpus,
            upload_threads: 0,
            progress: ProgressMode::Quiet,
            method: None,
            fence: None,
            consistency: None,
            late_files: None,
            live_files: false,
            one_file_system: false,
            restored: None,
        }
    }
}

/// A committed backup.
#[derive(Debug, Clone)]
pub struct BackupOutcome {
    /// The new snapshot's id.
    pub id: Id,
    /// The snapshot.
    pub snapshot: Snapshot,
    /// Files and directories that could not be read (the snapshot is partial if any).
    pub warnings: Vec<String>,
}

/// State shared by the pipeline's threads.
pub(crate) struct Shared<'a> {
    repo: &'a Repository,
    vouch: &'a vouch::Vouch<'a>,
    claimed: Mutex<HashSet<Id>>,
    abort: AtomicBool,
    error: Mutex<Option<Error>>,
    warnings: Mutex<Vec<String>>,
    progress: Arc<Counters>,
    data_blobs: AtomicU64,
    tree_blobs: AtomicU64,
    bytes_added: AtomicU64,
    bytes_stored: AtomicU64,
    bytes_read: AtomicU64,
}

impl Shared<'_> {
    /// True exactly once per blob id across all threads, and never for blobs the repository
    /// already holds in a pack this run can vouch for ([`vouch::Vouch`]).
    fn claim(&self, id: &Id) -> bool {
        !self.vouch.reusable(id) && self.claimed.lock().expect("claimed").insert(*id)
    }

    fn aborted(&self) -> bool {
        self.abort.load(Relaxed)
    }

    /// Records the first fatal error and stops the pipeline.
    fn fail(&self, e: Error) {
        let mut slot = self.error.lock().expect("error");
        if slot.is_none() {
            *slot = Some(e);
        }
        self.abort.store(true, Relaxed);
    }

    fn warn(&self, msg: String) {
        tracing::warn!("{msg}");
        self.warnings.lock().expect("warnings").push(msg);
    }
}

struct RawBlob {
    id: Id,
    kind: BlobType,
    data: Vec<u8>,
}

struct FileOutcome {
    content: Vec<Id>,
    size: u64,
}

/// Sets a flag when dropped (stops the progress scan whichever way the backup ends).
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Relaxed);
    }
}

/// Runs a backup and commits a snapshot. No lock is taken: a writer record with a heartbeat tells
/// a concurrent prune this backup is alive (docs/FORMAT.md §11a).
pub fn backup(repo: &Repository, source: &Source, opts: &BackupOptions) -> Result<BackupOutcome> {
    validate_name(&opts.name)?;
    heartbeat::Heartbeat::scope(repo, &opts.name, |hb| run(repo, source, opts, hb))
}

fn run(
    repo: &Repository,
    source: &Source,
    opts: &BackupOptions,
    hb: &heartbeat::Heartbeat,
) -> Result<BackupOutcome> {
    let started = Instant::now();
    let time = chrono::Utc::now();
    let level = opts
        .compression_level
        .unwrap_or(repo.config().compression_level);
    if !(1..=22).contains(&level) {
        return Err(Error::invalid(format!(
            "compression level {level} is outside zstd's 1-22"
        )));
    }
    let excludes = build_excludes(&opts.excludes)?;
    let roots = match source {
        Source::Paths(paths) => resolve_roots(paths)?,
        Source::Command { filename, .. } => {
            if filename.is_empty() || filename.contains('/') {
                return Err(Error::invalid(format!(
                    "--stdin-filename {filename:?} must be a plain file name"
                )));
            }
            Vec::new()
        }
    };

    let mut index = repo.load_index()?;
    let listing = repo.backend().list("data/")?;
    repo.cache_retain("data/", &listing);
    let adopted = adopt_orphan_packs(repo, &mut index, &listing);
    let (parent, estimate) = match find_parent(repo, &index, opts)? {
        Some((id, tree, racy, est)) => (Some((id, tree, racy)), Some(est)),
        None => (None, None),
    };
    let vouch = vouch::Vouch::new(repo, &index, &listing);

    let shared = Shared {
        repo,
        vouch: &vouch,
        claimed: Mutex::new(HashSet::new()),
        abort: AtomicBool::new(false),
        error: Mutex::new(None),
        warnings: Mutex::new(Vec::new()),
        // While the walk runs, the percentage is of the parent snapshot's size (an estimate);
        // once the walk is over, of the real totals.
        progress: Arc::new(match estimate {
            Some(bytes) => Counters::with_estimate(bytes),
            None => Counters::default(),
        }),
        data_blobs: AtomicU64::new(0),
        tree_blobs: AtomicU64::new(0),
        bytes_added: AtomicU64::new(0),
        bytes_stored: AtomicU64::new(0),
        bytes_read: AtomicU64::new(0),
    };
    let trees = TreeLoader::new(repo, &index);
    let staging = repo
        .backend()
        .staging_dir()
        .unwrap_or_else(std::env::temp_dir);
    let reporter = Reporter::start(opts.progress, "backup", shared.progress.clone());
    // The totals for the percentage: a metadata-only walk runs ahead of the readers (as restic's
    // scanner does) and gives them as soon as it has counted; until then the parent's size is the
    // estimate. Its own thread, not waited for: a backup never waits on its progress display.
    // Only for someone watching (the CLI): the agent's log lines, which start after 10 s, make
    // do with the parent's estimate rather than walk a large volume twice on a small container.
    let scan_stop = Arc::new(AtomicBool::new(false));
    if opts.progress == ProgressMode::Auto
        && let Source::Paths(_) = source
    {
        let paths: Vec<PathBuf> = roots.iter().map(|(p, _)| p.clone()).collect();
        let (counters, stop, ex) = (shared.progress.clone(), scan_stop.clone(), excludes.clone());
        let one_fs = opts.one_file_system;
        std::thread::spawn(move || {
            if let Some((files, bytes)) = walk::scan(&paths, &ex, one_fs, &stop) {
                counters.scanned(files, bytes);
            }
        });
    }
    let _stop_scan = StopOnDrop(scan_stop);
    let threads = opts.threads.max(1);

    let (job_tx, job_rx) = bounded::<Vec<FileJob>>(16);
    let (raw_tx, raw_rx) = bounded::<RawBlob>(threads);
    let (sealed_tx, sealed_rx) = bounded::<SealedBlob>(threads);
    let (pack_tx, pack_rx) = bounded::<FinishedPack>(1);
    let (done_tx, done_rx) = unbounded::<(Id, Vec<PackEntry>)>();
    let (result_tx, result_rx) = unbounded::<(usize, Result<FileOutcome>)>();

    let mut root_id: Option<Id> = None;
    let mut late_labels = BTreeMap::new();
    let mut late_files = 0u64;
    let mut walk_stats = walk::WalkStats::default();

    std::thread::scope(|s| {
        let shared = &shared;
        let uploaders = match opts.upload_threads {
            0 => repo.backend().concurrency().max(1),
            n => n,
        };
        for _ in 0..uploaders {
            let rx = pack_rx.clone();
            let tx = done_tx.clone();
            s.spawn(move || upload_stage(shared, rx, tx));
        }
        drop((pack_rx, done_tx));
        {
            let staging = staging.clone();
            s.spawn(move || pack_stage(shared, &staging, sealed_rx, pack_tx));
        }
        for _ in 0..threads {
            let rx = raw_rx.clone();
            let tx = sealed_tx.clone();
            s.spawn(move || seal_stage(shared, level, rx, tx));
        }
        drop(raw_rx);
        for _ in 0..threads {
            let rx = job_rx.clone();
            let tx = raw_tx.clone();
            let sealed = sealed_tx.clone();
            let res = result_tx.clone();
            s.spawn(move || read_stage(shared, level, rx, tx, sealed, res));
        }
        drop((job_rx, result_tx));

        // The walk (or the command stream) runs here, feeding the readers; trees are written
        // as directories complete (see `assemble`).
        let builder = TreeBuilder {
            shared,
            level,
            sealed: &sealed_tx,
            errors: 0,
            compressor: None,
            vanished_ok: opts.live_files,
        };
        let mut asm = Assembler::new(builder, result_rx, opts.late_files.is_some());
        match source {
            Source::Paths(_) => {
                let mut walker = Walker {
                    shared,
                    asm,
                    trees: &trees,
                    excludes: &excludes,
                    jobs: job_tx,
                    batch: Vec::new(),
                    batch_bytes: 0,
                    next_job: 0,
                    stats: walk::WalkStats::default(),
                    force: opts.force,
                    racy_before_ns: match &parent {
                        Some((_, _, t)) if opts.live_files => *t,
                        _ => i64::MAX,
                    },
                    vanished_ok: opts.live_files,
                    one_file_system: opts.one_file_system,
                    root_dev: 0,
                    restored_before_ns: match (&parent, opts.restored) {
                        (Some((pid, _, _)), Some((rid, t))) if *pid == rid => Some(t),
                        _ => None,
                    },
                };
                let parent_root = parent.as_ref().map(|(_, t, _)| t);
                for (path, name) in &roots {
                    let pnode = parent_root.and_then(|t| t.find(name));
                    if let Some(p) = walker.root(path, name.clone(), pnode) {
                        walker.asm.push(assemble::ROOT, p);
                    }
                }
                walker.send_jobs();
                walker
                    .shared
                    .progress
                    .set_totals(walker.stats.total_files, walker.stats.total_bytes);
                walk_stats = walker.stats;
                asm = walker.asm;
                // The rest of the walker (its job sender) is dropped: the job queue closes.
            }
            Source::Command { command, filename } => {
                drop(job_tx);
                match stream_command(shared, repo, command, filename, &raw_tx) {
                    Ok(node) => {
                        walk_stats.files_new = 1;
                        walk_stats.total_files = 1;
                        walk_stats.total_bytes = node.size;
                        asm.push(assemble::ROOT, Pending::Ready(node));
                    }
                    Err(e) => shared.fail(e),
                }
            }
        }
        match asm.finish() {
            Ok((mut pending, mut builder)) => {
                // Every file is read: now the files that exist only after the copy
                // (backup_label).
                if let Some(late) = opts.late_files.as_ref().filter(|_| !shared.aborted()) {
                    match add_late_files(shared, late, &roots, &mut pending, &raw_tx) {
                        Ok((l, n)) => {
                            late_labels = l;
                            late_files = n;
                        }
                        Err(e) => shared.fail(e),
                    }
                }
                drop(raw_tx);
                if !shared.aborted() {
                    let root = builder.nodes(pending).and_then(|nodes| {
                        let mut tree = Tree { nodes };
                        builder.save_tree(&mut tree)
                    });
                    match root {
                        Ok(id) => root_id = Some(id),
                        Err(e) => shared.fail(e),
                    }
                }
                walk_stats.errors += builder.errors;
            }
            Err(e) => {
                drop(raw_tx);
                shared.fail(e);
            }
        }
        drop(sealed_tx);
    });
    drop(reporter);

    if let Some(e) = shared.error.lock().expect("error").take() {
        return Err(e);
    }
    let root_id = root_id.ok_or(Error::Interrupted)?;
    let new_packs: Vec<(Id, Vec<PackEntry>)> = done_rx.iter().collect();
    let packs_written = new_packs.len() as u64;
    if vouch.rejected() > 0 {
        tracing::warn!(
            "{} damaged or missing pack(s) found; this snapshot does not use them, but older snapshots may: run `lifeboat check --read-data`, then `lifeboat repair index --read-data` and `lifeboat repair snapshots`",
            vouch.rejected()
        );
    }
    let live: HashSet<Id> = listing
        .iter()
        .filter_map(|o| crate::repository::object_id(&o.key, "data/").ok())
        .chain(new_packs.iter().map(|(id, _)| *id))
        .collect();
    repo.ledger().save(Some(&live));

    // Still alive in every prune's eyes? Then no sweep can have removed what this backup reuses.
    hb.confirm()?;
    let packs_adopted = adopted.len() as u64;
    let mut index_packs = adopted;
    index_packs.extend(new_packs);
    if !index_packs.is_empty() {
        repo.save_index(&IndexFile {
            supersedes: Vec::new(),
            packs: index_packs,
        })?;
    }

    let warnings = shared.warnings.into_inner().expect("warnings");
    let summary = Summary {
        files_new: walk_stats.files_new + late_files,
        files_changed: walk_stats.files_changed,
        files_unmodified: walk_stats.files_unmodified,
        dirs: walk_stats.dirs,
        errors: walk_stats.errors,
        data_blobs_added: shared.data_blobs.load(Relaxed),
        tree_blobs_added: shared.tree_blobs.load(Relaxed),
        bytes_read: shared.bytes_read.load(Relaxed),
        bytes_added: shared.bytes_added.load(Relaxed),
        bytes_stored: shared.bytes_stored.load(Relaxed),
        total_bytes: walk_stats.total_bytes,
        total_files: walk_stats.total_files + late_files,
        packs_written,
        packs_adopted,
        duration_seconds: started.elapsed().as_secs_f64(),
    };
    let paths = match source {
        Source::Paths(_) => roots.iter().map(|(p, _)| p.display().to_string()).collect(),
        Source::Command { filename, .. } => vec![format!("/{filename}")],
    };
    let snapshot = Snapshot {
        version: SNAPSHOT_VERSION,
        time,
        name: opts.name.clone(),
        paths,
        hostname: crate::sysinfo::hostname(),
        username: crate::sysinfo::username(),
        tags: opts.tags.clone(),
        labels: {
            let mut l = opts.labels.clone();
            l.extend(late_labels);
            if let Some(why) = opts.consistency.as_ref().and_then(|c| (c.0)()) {
                tracing::warn!(
                    "snapshot not consistent ({why}): labelled so that `latest` prefers a consistent one"
                );
                l.insert(CONSISTENT_LABEL.into(), "false".into());
                l.insert("lifeboat.inconsistent".into(), why);
            }
            l
        },
        method: opts.method.clone().unwrap_or_else(|| match source {
            Source::Paths(_) => "files".into(),
            Source::Command { .. } => "stdin".into(),
        }),
        tree: root_id,
        parent: parent.map(|(id, _, _)| id),
        program_version: env!("CARGO_PKG_VERSION").into(),
        summary,
        future_dated: false,
        stored_at: None,
        lease: opts.fence.as_ref().map(|f| (f.0)()).transpose()?,
        original: None,
    };
    let id = repo.save_snapshot(&snapshot)?;
    Ok(BackupOutcome {
        id,
        snapshot,
        warnings,
    })
}

fn validate_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 200 || name.chars().any(|c| c.is_control()) {
        return Err(Error::invalid(format!(
            "volume name {name:?} must be 1-200 printable characters (set --name or LIFEBOAT_NAME)"
        )));
    }
    Ok(())
}

/// The `--exclude` patterns as the walk matches them (against the whole path and the name).
pub(crate) fn build_excludes(patterns: &[String]) -> Result<GlobSet> {
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        b.add(Glob::new(p).map_err(|e| Error::invalid(format!("--exclude {p:?}: {e}")))?);
    }
    b.build()
        .map_err(|e| Error::invalid(format!("--exclude: {e}")))
}

/// Absolute source paths and their root names; two paths may not share a base name.
fn resolve_roots(paths: &[PathBuf]) -> Result<Vec<(PathBuf, OsString)>> {
    if paths.is_empty() {
        return Err(Error::invalid("nothing to back up: give at least one path"));
    }
    let mut out: Vec<(PathBuf, OsString)> = Vec::new();
    for p in paths {
        let abs = std::path::absolute(p).ctx(|| format!("backup path {}", p.display()))?;
        if std::fs::symlink_metadata(&abs).is_err() {
            return Err(Error::invalid(format!(
                "backup path {} does not exist",
                p.display()
            )));
        }
        let abs = normalize(&abs);
        let name = abs
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_else(|| OsString::from("root"));
        if out.iter().any(|(_, n)| *n == name) {
            return Err(Error::invalid(format!(
                "two backup paths share the base name {:?}; back them up separately",
                name
            )));
        }
        out.push((abs, name));
    }
    Ok(out)
}

/// Removes `.` and `..` components lexically (the path need not stay a symlink-free path).
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// The parent snapshot, its root tree, the time before which a file's mtime must lie for the
/// parent's copy of it to be trusted (see `Walker::unchanged`), and its size in bytes: the
/// progress estimate while the walk runs.
fn find_parent(
    repo: &Repository,
    index: &Index,
    opts: &BackupOptions,
) -> Result<Option<(Id, Tree, i64, u64)>> {
    if opts.force {
        return Ok(None);
    }
    let snap = match opts.parent {
        Some(id) => Some((id, repo.load_snapshot(&id)?)),
        None => repo
            .snapshots()?
            .into_iter()
            .rev()
            .find(|(_, s)| s.name == opts.name),
    };
    let Some((id, s)) = snap else { return Ok(None) };
    // Two seconds before the parent started: comfortably more than any file system's timestamp
    // granularity, so a write after the parent read a file always changes its mtime.
    let racy_before = s.time.timestamp_nanos_opt().unwrap_or(i64::MAX) - 2_000_000_000;
    match TreeLoader::new(repo, index).load(&s.tree) {
        Ok(t) => Ok(Some((id, t, racy_before, s.summary.total_bytes))),
        Err(e) => {
            tracing::warn!(
                "parent snapshot {} unusable, reading all files: {e}",
                id.short()
            );
            Ok(None)
        }
    }
}

/// Finds packs that no index lists (left by an interrupted backup), and adopts those that hash to
/// their name: each is downloaded whole (orphans are few: the packs of one interrupted run), its
/// header read from the verified bytes, and its blobs added to `index`. Returns them so this
/// backup's index lists them too. A pack that does not hash to its name (a copy stored under
/// another name, a damaged upload) is reported and never adopted.
fn adopt_orphan_packs(
    repo: &Repository,
    index: &mut Index,
    listed: &[crate::backend::ObjectInfo],
) -> Vec<(Id, Vec<PackEntry>)> {
    let mut out = Vec::new();
    for info in listed {
        let Ok(id) = crate::repository::object_id(&info.key, "data/") else {
            continue;
        };
        if index.has_pack(&id) || index.is_marked(&id) {
            continue;
        }
        let header = repo
            .verify_pack(&id, Some(info))
            .and_then(|bytes| pack::parse_pack(repo.key(), &info.key, &bytes));
        match header {
            Ok(entries) => {
                tracing::info!("adopting pack {} left by an interrupted backup", id.short());
                index.add_pack(id, &entries);
                out.push((id, entries));
            }
            Err(e) => tracing::warn!("ignoring unindexed pack {}: {e}", id.short()),
        }
    }
    out
}
