//! The walk: scans the source paths depth-first in name order, turns each entry into a tree
//! node, and decides per file whether it must be read. A file whose size, mtime, ctime and inode
//! match the parent snapshot's node (and whose blobs are all indexed) keeps the parent's content
//! list without being opened. Files to read go to the reader threads as jobs.

use std::ffi::OsString;
use std::fs::{self, Metadata};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;

use crossbeam_channel::Sender;
use globset::GlobSet;

use super::Shared;
use super::assemble::Assembler;
use crate::repository::TreeLoader;
use crate::repository::tree::{Node, NodeKind, Tree};

/// A file the readers must chunk.
pub(super) struct FileJob {
    pub idx: usize,
    pub path: PathBuf,
    /// Its size when the walk saw it: small files are sealed by their reader (see
    /// [`super::stages::read_stage`]).
    pub size: u64,
}

/// Files per job batch, and the bytes after which a batch goes out early. Batches cut the
/// channel hand-offs (and thread wake-ups) per small file, which otherwise cost more than
/// reading it; a big file goes out on its own so readers share the work.
const BATCH_FILES: usize = 32;
const BATCH_BYTES: u64 = 4 << 20;

/// A node whose tree position is known but whose content or subtree may still be being
/// produced (see [`super::assemble`]).
pub(super) enum Pending {
    /// Complete: symlinks, unchanged files, read files, directories whose tree is written.
    Ready(Node),
    /// Waiting for reader job `usize`.
    File(Node, usize),
    /// A directory waiting for results under it: assembler slot `usize`.
    Open(usize),
    /// A directory and its finished children, whose tree is written at the end (hold mode).
    Dir(Node, Vec<Pending>),
    /// A file that could not be read (warned) or vanished: left out of its tree.
    Gone,
}

/// Which files were read and why.
#[derive(Default)]
pub(super) struct WalkStats {
    pub files_new: u64,
    pub files_changed: u64,
    pub files_unmodified: u64,
    pub dirs: u64,
    pub errors: u64,
    pub total_files: u64,
    pub total_bytes: u64,
}

pub(super) struct Walker<'a> {
    pub shared: &'a Shared<'a>,
    /// Where entries go; trees are written as directories complete.
    pub asm: Assembler<'a>,
    pub trees: &'a TreeLoader<'a>,
    pub excludes: &'a GlobSet,
    pub jobs: Sender<Vec<FileJob>>,
    /// Jobs not yet sent (see [`BATCH_FILES`]); [`Walker::send_jobs`] sends them.
    pub batch: Vec<FileJob>,
    pub batch_bytes: u64,
    pub next_job: usize,
    pub stats: WalkStats,
    pub force: bool,
    /// A file whose mtime is not before this (nanoseconds) is read even when it looks unchanged:
    /// it may have been written right after the parent read it, within one timestamp tick.
    pub racy_before_ns: i64,
    /// See `BackupOptions::live_files`.
    pub vanished_ok: bool,
    /// See `BackupOptions::one_file_system`.
    pub one_file_system: bool,
    /// The device of the backup path being walked.
    pub root_dev: u64,
    /// See `BackupOptions::restored`: set when the parent is the snapshot the volume was
    /// restored from.
    pub restored_before_ns: Option<i64>,
}

/// Fills a node's metadata fields from `lstat` results.
pub fn node_from_metadata(name: &std::ffi::OsStr, kind: NodeKind, m: &Metadata) -> Node {
    let mut n = Node::new(name, kind);
    n.mode = m.mode() & 0o7777;
    n.uid = m.uid();
    n.gid = m.gid();
    n.mtime_ns = m.mtime() * 1_000_000_000 + m.mtime_nsec();
    if kind == NodeKind::File {
        n.ctime_ns = m.ctime() * 1_000_000_000 + m.ctime_nsec();
        n.size = m.len();
        n.inode = m.ino();
        n.device = m.dev();
        n.links = m.nlink();
    }
    n
}

impl Walker<'_> {
    /// Turns one backup path into a pending root node named by its base name.
    pub fn root(&mut self, path: &Path, name: OsString, parent: Option<&Node>) -> Option<Pending> {
        let meta = match fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(e) => {
                self.warn(format!("{}: {e}", path.display()));
                return None;
            }
        };
        self.root_dev = meta.dev();
        self.entry(path, name, &meta, parent)
    }

    fn entry(
        &mut self,
        path: &Path,
        name: OsString,
        meta: &Metadata,
        parent: Option<&Node>,
    ) -> Option<Pending> {
        let ft = meta.file_type();
        if ft.is_dir() {
            self.stats.dirs += 1;
            let node = node_from_metadata(&name, NodeKind::Dir, meta);
            let parent_tree = parent
                .filter(|p| p.kind == NodeKind::Dir)
                .and_then(|p| p.subtree)
                .and_then(|id| match self.trees.load(&id) {
                    Ok(t) => Some(t),
                    Err(e) => {
                        tracing::warn!(
                            "parent tree of {} unusable, reading all files: {e}",
                            path.display()
                        );
                        None
                    }
                });
            let slot = self.asm.open(node);
            // Another file system mounted below the backup path: its mount point is kept,
            // empty, as restic does, so a restore recreates the place to mount it.
            if !(self.one_file_system && meta.dev() != self.root_dev) {
                self.dir(path, parent_tree.as_ref(), slot);
            }
            drop(parent_tree);
            match self.asm.close(slot) {
                Ok(p) => Some(p),
                Err(e) => {
                    self.shared.fail(e);
                    None
                }
            }
        } else if ft.is_file() {
            let node = node_from_metadata(&name, NodeKind::File, meta);
            self.stats.total_files += 1;
            self.stats.total_bytes += node.size;
            let c = &self.shared.progress;
            c.found(node.size);
            match parent.filter(|p| p.kind == NodeKind::File) {
                Some(p) if !self.force && self.unchanged(p, &node) => {
                    self.stats.files_unmodified += 1;
                    c.files_done.fetch_add(1, Relaxed);
                    c.bytes_done.fetch_add(node.size, Relaxed);
                    let mut n = node;
                    n.content = p.content.clone();
                    Some(Pending::Ready(n))
                }
                Some(_) => {
                    self.stats.files_changed += 1;
                    Some(self.job(path, node))
                }
                None => {
                    self.stats.files_new += 1;
                    Some(self.job(path, node))
                }
            }
        } else if ft.is_symlink() {
            let mut node = node_from_metadata(&name, NodeKind::Symlink, meta);
            match fs::read_link(path) {
                Ok(t) => node.set_target(t.as_os_str()),
                Err(e) => {
                    self.warn(format!("{}: cannot read link: {e}", path.display()));
                    return None;
                }
            }
            Some(Pending::Ready(node))
        } else {
            let what = if ft.is_fifo() {
                "named pipe"
            } else if ft.is_socket() {
                "socket"
            } else if ft.is_block_device() || ft.is_char_device() {
                "device"
            } else {
                "special file"
            };
            tracing::warn!("{}: skipping {what}", path.display());
            None
        }
    }

    fn unchanged(&self, p: &Node, n: &Node) -> bool {
        // The same inode untouched since the parent read it; or the restore's own copy of the
        // parent's file, not touched since the restore ended.
        let same = (p.ctime_ns == n.ctime_ns && p.inode == n.inode)
            || self.restored_before_ns.is_some_and(|t| n.ctime_ns < t);
        p.size == n.size
            && p.mtime_ns == n.mtime_ns
            && n.mtime_ns < self.racy_before_ns
            && same
            && p.content.iter().all(|id| self.shared.vouch.reusable(id))
    }

    fn job(&mut self, path: &Path, node: Node) -> Pending {
        let idx = self.next_job;
        self.next_job += 1;
        self.batch_bytes += node.size;
        self.batch.push(FileJob {
            idx,
            path: path.to_path_buf(),
            size: node.size,
        });
        if self.batch.len() >= BATCH_FILES || self.batch_bytes >= BATCH_BYTES {
            self.send_jobs();
        }
        Pending::File(node, idx)
    }

    /// Sends the batched jobs. Called when a batch fills, before the walk may wait for reader
    /// results (a job still here would never produce one), and when the walk ends.
    pub fn send_jobs(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        self.batch_bytes = 0;
        // A send fails only when the readers are gone after an abort; the results are then
        // missing and the backup fails as a whole, so nothing needs doing here.
        let _ = self.jobs.send(std::mem::take(&mut self.batch));
    }

    /// Applies reader results (see [`Assembler::poll`]), sending batched jobs first.
    fn poll(&mut self) {
        self.send_jobs();
        if let Err(e) = self.asm.poll() {
            self.shared.fail(e);
        }
    }

    fn dir(&mut self, path: &Path, parent: Option<&Tree>, slot: usize) {
        let rd = match fs::read_dir(path) {
            Ok(rd) => rd,
            Err(e) if self.vanished_ok && e.kind() == std::io::ErrorKind::NotFound => {
                return;
            }
            Err(e) => {
                self.warn(format!("{}: cannot list directory: {e}", path.display()));
                return;
            }
        };
        let mut names: Vec<OsString> = Vec::new();
        for entry in rd {
            match entry {
                Ok(e) => names.push(e.file_name()),
                Err(e) => self.warn(format!("{}: cannot list directory: {e}", path.display())),
            }
        }
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        for (i, name) in names.into_iter().enumerate() {
            if self.shared.aborted() {
                break;
            }
            let child = path.join(&name);
            if self.excludes.is_match(&child) || self.excludes.is_match(Path::new(&name)) {
                continue;
            }
            let meta = match fs::symlink_metadata(&child) {
                Ok(m) => m,
                Err(e) if self.vanished_ok && e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    self.warn(format!("{}: {e}", child.display()));
                    continue;
                }
            };
            let parent_node = parent.and_then(|t| t.find(&name));
            let is_dir = meta.is_dir();
            if let Some(p) = self.entry(&child, name, &meta, parent_node) {
                // Pushed before any poll: an open subdirectory must have its place in its
                // parent before a result can resolve it.
                self.asm.push(slot, p);
            }
            if is_dir || i % 1024 == 1023 {
                self.poll();
            }
        }
    }

    fn warn(&mut self, msg: String) {
        self.stats.errors += 1;
        self.shared.warn(msg);
    }
}

/// Counts the regular files under `paths` and their bytes, reading metadata only, skipping what
/// the backup skips (`excludes`; other file systems with `one_fs`). `None` when stopped first.
/// For progress totals only: its figures are never stored.
pub(super) fn scan(
    paths: &[std::path::PathBuf],
    excludes: &GlobSet,
    one_fs: bool,
    stop: &std::sync::atomic::AtomicBool,
) -> Option<(u64, u64)> {
    let (mut files, mut bytes) = (0u64, 0u64);
    for root in paths {
        let Ok(meta) = fs::symlink_metadata(root) else {
            continue;
        };
        let dev = meta.dev();
        if meta.is_file() {
            files += 1;
            bytes += meta.len();
            continue;
        }
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            if stop.load(Relaxed) {
                return None;
            }
            let Ok(rd) = fs::read_dir(&dir) else { continue };
            for e in rd.flatten() {
                let p = e.path();
                if excludes.is_match(&p) || excludes.is_match(Path::new(&e.file_name())) {
                    continue;
                }
                let Ok(m) = fs::symlink_metadata(&p) else {
                    continue;
                };
                if m.is_dir() {
                    if !(one_fs && m.dev() != dev) {
                        stack.push(p);
                    }
                } else if m.is_file() {
                    files += 1;
                    bytes += m.len();
                }
            }
        }
    }
    Some((files, bytes))
}
