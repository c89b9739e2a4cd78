//! The restore pipeline for one batch of files: readers fetch ranged reads (neighbouring needed
//! blobs of one pack), as many in flight as the backend wants (`LIFEBOAT_S3_CONNECTIONS` on S3);
//! writers, one per CPU, verify each blob (AEAD tag, then keyed hash against its id) and
//! `pwrite` it into files opened once and pre-sized. A bounded queue between the stages and a
//! byte budget for the read size keep memory flat. All-zero blobs are not written, so sparse
//! files come back sparse; a file's metadata is applied when its last blob lands.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use super::RestoreOutcome;
use crate::error::{Error, IoContext, Result};
use crate::id::Id;
use crate::progress::Counters;
use crate::repository::Repository;
use crate::repository::index::{BlobLocation, Index};
use crate::repository::pack;
use crate::repository::tree::{Node, NodeKind};

/// A file being restored: created at its first blob, closed (metadata applied) at its last.
pub(super) struct FileState {
    pub path: PathBuf,
    pub node: Node,
    handle: Mutex<Option<Arc<File>>>,
    remaining: AtomicUsize,
    failed: AtomicBool,
}

impl FileState {
    pub(super) fn new(path: PathBuf, node: Node) -> Self {
        FileState {
            path,
            node,
            handle: Mutex::new(None),
            remaining: AtomicUsize::new(0),
            failed: AtomicBool::new(false),
        }
    }
}

/// Blob → every (file, offset) it must be written to.
type Dests = Vec<(usize, u64)>;
/// One pack's needed blobs, by offset.
type PackBlobs = BTreeMap<u32, (Id, BlobLocation, Dests)>;

/// What one batch restores; the planner fills it and [`Pipeline::run`] empties it.
#[derive(Default)]
pub(super) struct Batch {
    pub files: Vec<FileState>,
    pub symlinks: Vec<(PathBuf, Node)>,
    /// (link, first path of the same inode), the first restored in this or an earlier batch.
    pub hardlinks: Vec<(PathBuf, PathBuf)>,
    /// Blob writes the files need (bounds the batch for a few huge files).
    pub blobs: usize,
}

impl Batch {
    pub(super) fn is_empty(&self) -> bool {
        self.files.is_empty() && self.symlinks.is_empty() && self.hardlinks.is_empty()
    }
}

/// Runs batches against one repository and adds up what they did.
pub(super) struct Pipeline<'a> {
    pub repo: &'a Repository,
    pub index: &'a Index,
    pub counters: Arc<Counters>,
    pub fetchers: usize,
    pub workers: usize,
    pub out: RestoreOutcome,
}

impl Pipeline<'_> {
    /// Restores every file, symlink and hard link of `batch`. Failures are recorded in
    /// `self.out.errors`, one per entry, naming it; nothing here stops the restore of the rest.
    pub(super) fn run(&mut self, batch: Batch) {
        let Batch {
            files,
            symlinks,
            hardlinks,
            ..
        } = batch;
        let (repo, index, counters) = (self.repo, self.index, &self.counters);
        let mut errors = Vec::new();
        // Map every needed blob to its destinations, grouped by pack.
        let mut by_pack: HashMap<u32, PackBlobs> = HashMap::new();
        for (fi, f) in files.iter().enumerate() {
            counters.found(f.node.size);
            let mut offset = 0u64;
            let mut writes = 0usize;
            for id in &f.node.content {
                match index.get(id) {
                    Some(loc) => {
                        let slot = by_pack
                            .entry(loc.pack)
                            .or_default()
                            .entry(loc.offset)
                            .or_insert_with(|| (*id, *loc, Vec::new()));
                        slot.2.push((fi, offset));
                        offset += loc.raw_length as u64;
                        writes += 1;
                    }
                    None => {
                        f.failed.store(true, Relaxed);
                        errors.push(format!(
                            "{}: blob {} is missing from the repository",
                            f.path.display(),
                            id.short()
                        ));
                        break;
                    }
                }
            }
            f.remaining.store(writes, Relaxed);
            if writes == 0 && !f.failed.load(Relaxed) {
                // Empty file: create it now.
                if let Err(e) = create_sized(&f.path, 0).and_then(|_| apply_meta(&f.path, &f.node))
                {
                    errors.push(e.to_string());
                }
            }
        }

        // Every fetched range is held by a reader, the queue or a writer: at most
        // fetchers + 2 × workers of them exist at once.
        let max_read =
            (READ_BUDGET / (self.fetchers + 2 * self.workers) as u64).clamp(MIN_READ, MAX_READ);
        let mut packs: Vec<(u32, PackBlobs)> = by_pack.into_iter().collect();
        packs.sort_by_key(|(p, _)| *p);
        let reads: Vec<Read> = packs
            .into_iter()
            .flat_map(|(pos, blobs)| coalesce(pos, blobs, max_read))
            .collect();
        let queue = Mutex::new(reads.into_iter());
        let errors = Mutex::new(errors);
        let (fetched_tx, fetched_rx) =
            crossbeam_channel::bounded::<(Read, Result<Vec<u8>>)>(self.workers);
        std::thread::scope(|s| {
            for _ in 0..self.fetchers {
                let tx = fetched_tx.clone();
                let queue = &queue;
                s.spawn(move || {
                    loop {
                        let next = queue.lock().expect("queue").next();
                        let Some(read) = next else { break };
                        let key = pack::pack_key(&index.pack_id(read.pack));
                        let bytes = repo.backend().get_range(&key, read.start, read.len);
                        if tx.send((read, bytes)).is_err() {
                            break;
                        }
                    }
                });
            }
            drop(fetched_tx);
            for _ in 0..self.workers {
                let rx = fetched_rx.clone();
                let (files, errors) = (&files, &errors);
                s.spawn(move || {
                    for (read, bytes) in rx {
                        write_read(repo, index, read, bytes, files, counters, errors);
                    }
                });
            }
        });
        let mut errors = errors.into_inner().expect("errors");

        let out = &mut self.out;
        for f in &files {
            if !f.failed.load(Relaxed) {
                out.files += 1;
                out.bytes += f.node.size;
            }
        }
        for (path, node) in &symlinks {
            let target = node.target_os().unwrap_or_default();
            let _ = fs::remove_file(path);
            match std::os::unix::fs::symlink(&target, path) {
                Ok(()) => {
                    out.symlinks += 1;
                    if let Err(e) = apply_meta(path, node) {
                        errors.push(e.to_string());
                    }
                }
                Err(e) => errors.push(format!("{}: cannot create symlink: {e}", path.display())),
            }
        }
        for (path, first) in &hardlinks {
            let _ = fs::remove_file(path);
            match fs::hard_link(first, path) {
                Ok(()) => out.hardlinks += 1,
                Err(e) => errors.push(format!(
                    "{}: cannot link to {}: {e}",
                    path.display(),
                    first.display()
                )),
            }
        }
        out.errors.extend(errors);
    }
}

/// Bytes of fetched ranges held in memory at once, across readers, queue and writers. The read
/// size is this divided by how many ranges can be held, so raising `LIFEBOAT_S3_CONNECTIONS`
/// makes reads smaller rather than memory larger (down to [`MIN_READ`]).
const READ_BUDGET: u64 = 32 << 20;
/// Smallest range worth a request of its own when neighbouring blobs can be merged.
const MIN_READ: u64 = 1 << 20;
/// Largest single ranged read; adjacent blobs are merged up to the read size.
const MAX_READ: u64 = 8 << 20;
/// Gaps up to this size between needed blobs are read rather than split into two requests.
const MAX_GAP: u64 = 256 << 10;

/// One ranged read: neighbouring needed blobs of one pack, and where each goes.
struct Read {
    pack: u32,
    start: u64,
    len: u64,
    blobs: Vec<(Id, BlobLocation, Dests)>,
}

/// Splits one pack's needed blobs (by offset) into ranged reads: a read grows over following
/// blobs while the gap stays under [`MAX_GAP`] and the total under `max_read`. A blob larger
/// than `max_read` is a read of its own.
fn coalesce(pack: u32, blobs: PackBlobs, max_read: u64) -> Vec<Read> {
    let mut out: Vec<Read> = Vec::new();
    for (id, loc, dests) in blobs.into_values() {
        let (o, e) = (loc.offset as u64, loc.offset as u64 + loc.length as u64);
        if let Some(r) = out.last_mut()
            && o <= r.start + r.len + MAX_GAP
            && e - r.start <= max_read
        {
            r.len = r.len.max(e - r.start);
            r.blobs.push((id, loc, dests));
            continue;
        }
        out.push(Read {
            pack,
            start: o,
            len: e - o,
            blobs: vec![(id, loc, dests)],
        });
    }
    out
}

/// Verifies and decrypts every blob of one fetched range and writes it to its files. A blob
/// that fails (the read failed, or it does not authenticate) is taken from another pack when
/// the index knows one; otherwise each file that needed it is marked failed, naming the cause.
fn write_read(
    repo: &Repository,
    index: &Index,
    read: Read,
    fetched: Result<Vec<u8>>,
    files: &[FileState],
    counters: &Counters,
    errors: &Mutex<Vec<String>>,
) {
    let pack_id = index.pack_id(read.pack);
    let key = pack::pack_key(&pack_id);
    for (id, loc, dests) in &read.blobs {
        let result = fetched
            .as_ref()
            .map_err(|e| clone_err(&key, e))
            .and_then(|buf| {
                let a = (loc.offset as u64 - read.start) as usize;
                repo.open_blob(&pack_id, &loc.entry(*id), &buf[a..a + loc.length as usize])
            })
            .or_else(|e| other_copy(repo, index, id, read.pack).ok_or(e));
        match result {
            Ok(data) => {
                let zero = data.iter().all(|&b| b == 0);
                for &(fi, off) in dests {
                    write_blob(&files[fi], off, &data, zero, counters, errors);
                    counters.bytes_done.fetch_add(data.len() as u64, Relaxed);
                }
            }
            Err(e) => {
                for &(fi, _) in dests {
                    let f = &files[fi];
                    if !f.failed.swap(true, Relaxed) {
                        errors
                            .lock()
                            .expect("errors")
                            .push(format!("{}: {e}", f.path.display()));
                    }
                    finish_one(f, counters, errors);
                }
            }
        }
    }
}

/// Reads a blob from any copy other than the one in `failed_pack` (the index lists a blob in
/// several packs after a backup stored it again around damage). `None` when no other copy reads.
fn other_copy(repo: &Repository, index: &Index, id: &Id, failed_pack: u32) -> Option<Vec<u8>> {
    index
        .locations(id)
        .filter(|l| l.pack != failed_pack)
        .find_map(|l| {
            let pack = index.pack_id(l.pack);
            repo.backend()
                .get_range(&pack::pack_key(&pack), l.offset as u64, l.length as u64)
                .and_then(|sealed| repo.open_blob(&pack, &l.entry(*id), &sealed))
                .ok()
        })
}

/// One failed ranged read fails every blob in the range; each gets its own copy naming the pack.
fn clone_err(key: &str, e: &Error) -> Error {
    match e {
        Error::NotFound { .. } => Error::corrupt(key, "pack is missing from the repository"),
        other => Error::corrupt(key, format!("cannot be read: {other}")),
    }
}

fn create_sized(path: &Path, size: u64) -> Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    // A symlink in the file's place is removed, not followed (O_NOFOLLOW makes sure).
    if fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
        fs::remove_file(path).ctx(|| format!("{}: cannot replace", path.display()))?;
    }
    let f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .ctx(|| format!("{}: cannot create", path.display()))?;
    f.set_len(size)
        .ctx(|| format!("{}: cannot size to {size} bytes", path.display()))?;
    Ok(f)
}

fn write_blob(
    f: &FileState,
    off: u64,
    data: &[u8],
    zero: bool,
    counters: &Counters,
    errors: &Mutex<Vec<String>>,
) {
    if !f.failed.load(Relaxed) {
        let handle = {
            let mut h = f.handle.lock().expect("handle");
            if h.is_none() {
                match create_sized(&f.path, f.node.size) {
                    Ok(file) => *h = Some(Arc::new(file)),
                    Err(e) => {
                        f.failed.store(true, Relaxed);
                        errors.lock().expect("errors").push(e.to_string());
                    }
                }
            }
            h.clone()
        };
        if let Some(file) = handle {
            // The file was sized with set_len, so skipping zeros leaves a hole that reads as zeros.
            if !zero && let Err(e) = file.write_all_at(data, off) {
                f.failed.store(true, Relaxed);
                errors
                    .lock()
                    .expect("errors")
                    .push(format!("{}: write failed: {e}", f.path.display()));
            }
        }
    }
    finish_one(f, counters, errors);
}

/// Counts one finished write; the last one closes the file and applies its metadata.
fn finish_one(f: &FileState, counters: &Counters, errors: &Mutex<Vec<String>>) {
    if f.remaining.fetch_sub(1, Relaxed) != 1 {
        return;
    }
    counters.files_done.fetch_add(1, Relaxed);
    let handle = f.handle.lock().expect("handle").take();
    drop(handle);
    if !f.failed.load(Relaxed)
        && let Err(e) = apply_meta(&f.path, &f.node)
    {
        errors.lock().expect("errors").push(e.to_string());
    }
}

/// Sets owner (when running as root), permissions and mtime. Symlinks get owner and mtime only.
pub(super) fn apply_meta(path: &Path, node: &Node) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        std::os::unix::fs::lchown(path, Some(node.uid), Some(node.gid))
            .ctx(|| format!("{}: cannot set owner", path.display()))?;
    }
    if node.kind != NodeKind::Symlink {
        fs::set_permissions(path, fs::Permissions::from_mode(node.mode))
            .ctx(|| format!("{}: cannot set permissions", path.display()))?;
    }
    let t = filetime::FileTime::from_unix_time(
        node.mtime_ns.div_euclid(1_000_000_000),
        node.mtime_ns.rem_euclid(1_000_000_000) as u32,
    );
    filetime::set_symlink_file_times(path, t, t)
        .ctx(|| format!("{}: cannot set times", path.display()))?;
    Ok(())
}
