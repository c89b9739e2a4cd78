//! Restore: walks the snapshot's trees depth-first, creating directories as it goes and
//! collecting files, symlinks and hard links into batches of at most [`BATCH_FILES`] files;
//! each batch goes through the fetch-verify-write [`pipeline`]. What a restore holds in memory is
//! one batch, the directories (for their metadata, applied last, deepest first) and the paths
//! of multiply-linked files, so a snapshot of millions of files restores in flat memory.
//!
//! A single-path snapshot of `/data` restored to `T` puts `/data`'s contents directly in `T`;
//! several paths restore side by side as `T/<base name>`.

mod pipeline;

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use crate::error::{Error, IoContext, Result};
use crate::id::Id;
use crate::progress::{Counters, ProgressMode, Reporter};
use crate::repository::snapshot::Snapshot;
use crate::repository::tree::{Node, NodeKind};
use crate::repository::{Repository, TreeLoader};
use pipeline::{Batch, FileState, Pipeline, apply_meta};

/// Files per batch: their nodes, paths and open handles are what a restore holds.
const BATCH_FILES: usize = 8192;
/// Blob writes per batch (a batch of a few very large files).
const BATCH_BLOBS: usize = 262_144;

/// Restore settings.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// Directory to restore into.
    pub target: PathBuf,
    /// Snapshot paths (as `ls` shows them) to restore; empty means everything.
    pub include: Vec<String>,
    /// Allow a non-empty target; existing files in the way are replaced.
    pub overwrite: bool,
    /// Ranged reads in flight; 0 uses the backend's [`crate::backend::Backend::concurrency`]
    /// (`LIFEBOAT_S3_CONNECTIONS` for S3).
    pub fetchers: usize,
    /// Threads that verify, decrypt and write what the readers fetched; 0 uses the CPU count.
    pub threads: usize,
    /// Progress display.
    pub progress: ProgressMode,
}

impl RestoreOptions {
    /// Defaults for `target`.
    pub fn new(target: impl Into<PathBuf>) -> Self {
        RestoreOptions {
            target: target.into(),
            include: Vec::new(),
            overwrite: false,
            fetchers: 0,
            threads: 0,
            progress: ProgressMode::Quiet,
        }
    }
}

/// What a restore did.
#[derive(Debug, Default, Clone, Serialize)]
pub struct RestoreOutcome {
    /// Regular files written.
    pub files: u64,
    /// Directories created.
    pub dirs: u64,
    /// Symlinks created.
    pub symlinks: u64,
    /// Hard links recreated.
    pub hardlinks: u64,
    /// File bytes restored.
    pub bytes: u64,
    /// Files or entries that could not be restored, each naming the cause.
    pub errors: Vec<String>,
}

/// Restores `snapshot` into `opts.target`.
pub fn restore(
    repo: &Repository,
    snapshot: &Snapshot,
    opts: &RestoreOptions,
) -> Result<RestoreOutcome> {
    let index = repo.load_index()?;
    let trees = TreeLoader::new(repo, &index);
    check_target(&opts.target, opts.overwrite)?;
    fs::create_dir_all(&opts.target)
        .ctx(|| format!("cannot create restore target {}", opts.target.display()))?;
    // A whole restore knows its totals from the snapshot's summary (batches are planned as
    // the walk goes, so counting them would make the totals grow under the bar).
    let s = &snapshot.summary;
    let counters = Arc::new(if opts.include.is_empty() && s.total_files > 0 {
        Counters::with_totals(s.total_files, s.total_bytes)
    } else {
        Counters::default()
    });
    let reporter = Reporter::start(opts.progress, "restore", counters.clone());
    let mut planner = Planner {
        trees: &trees,
        includes: Vec::new(),
        links: HashMap::new(),
        dirs: Vec::new(),
        root_meta: None,
        batch: Batch::default(),
        pipe: Pipeline {
            repo,
            index: &index,
            counters,
            fetchers: match opts.fetchers {
                0 => repo.backend().concurrency().max(1),
                n => n,
            },
            workers: match opts.threads {
                0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
                n => n,
            },
            out: RestoreOutcome::default(),
        },
        selected_any: false,
    };
    planner.plan(snapshot, opts)?;
    planner.flush();
    drop(reporter);
    let mut out = std::mem::take(&mut planner.pipe.out);
    // The backed-up directory itself counts, as the backup counted it, also when its contents
    // land directly in the target (a one-path snapshot): the target takes its metadata.
    out.dirs = planner.dirs.len() as u64 + u64::from(planner.root_meta.is_some());
    for (path, node) in planner.dirs.iter().rev() {
        if let Err(e) = apply_meta(path, node) {
            out.errors.push(e.to_string());
        }
    }
    if let Some(node) = &planner.root_meta
        && let Err(e) = apply_meta(&opts.target, node)
    {
        out.errors.push(e.to_string());
    }
    Ok(out)
}

fn check_target(target: &Path, overwrite: bool) -> Result<()> {
    match fs::read_dir(target) {
        Ok(mut rd) => {
            if rd.next().is_some() && !overwrite {
                return Err(Error::invalid(format!(
                    "restore target {} is not empty: choose an empty directory or pass --overwrite",
                    target.display()
                )));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => Err(Error::invalid(format!(
            "restore target {} is a file, not a directory",
            target.display()
        ))),
        Err(e) => Err(Error::io(format!("restore target {}", target.display()), e)),
    }
}

/// Normalizes include paths to `/a/b` form relative to the snapshot's root tree.
fn include_paths(snapshot: &Snapshot, root_names: &[String], include: &[String]) -> Vec<String> {
    include
        .iter()
        .map(|p| {
            let trimmed = p.trim_end_matches('/');
            // The absolute source path, as `snapshots` prints it: `/var/lib/pg/data/base` for a
            // snapshot of `/var/lib/pg/data` is `/data/base` inside the snapshot.
            for (src, name) in snapshot.paths.iter().zip(root_names) {
                let src = src.trim_end_matches('/');
                if src.starts_with('/') && src.len() > 1 {
                    if trimmed == src {
                        return format!("/{name}");
                    }
                    if let Some(rest) = trimmed.strip_prefix(&format!("{src}/")) {
                        return format!("/{name}/{rest}");
                    }
                }
            }
            let single = snapshot.paths.len() == 1 && root_names.len() == 1;
            let first = trimmed
                .trim_start_matches('/')
                .split('/')
                .next()
                .unwrap_or("");
            if single && !root_names.iter().any(|n| n == first) {
                // Relative to the single backed-up directory.
                format!("/{}/{}", root_names[0], trimmed.trim_start_matches('/'))
            } else {
                format!("/{}", trimmed.trim_start_matches('/'))
            }
        })
        .collect()
}

fn selected(logical: &str, includes: &[String]) -> (bool, bool) {
    // (take this entry, descend into it)
    if includes.is_empty() {
        return (true, true);
    }
    let mut take = false;
    let mut descend = false;
    for inc in includes {
        if logical == inc || logical.starts_with(&format!("{inc}/")) {
            take = true;
            descend = true;
        } else if inc.starts_with(&format!("{logical}/")) {
            descend = true;
        }
    }
    (take, descend)
}

/// Walks the snapshot and hands batches to the pipeline as they fill.
struct Planner<'a> {
    trees: &'a TreeLoader<'a>,
    includes: Vec<String>,
    /// (device, inode) of a multiply-linked file → where its first link was restored.
    links: HashMap<(u64, u64), PathBuf>,
    /// Every directory restored, parents first, for the metadata applied at the end.
    dirs: Vec<(PathBuf, Node)>,
    root_meta: Option<Node>,
    batch: Batch,
    pipe: Pipeline<'a>,
    /// Whether anything at all matched the includes.
    selected_any: bool,
}

impl Planner<'_> {
    fn plan(&mut self, snapshot: &Snapshot, opts: &RestoreOptions) -> Result<()> {
        let trees = self.trees;
        let root = trees.load(&snapshot.tree)?;
        let root_names: Vec<String> = root.nodes.iter().map(|n| n.name.clone()).collect();
        self.includes = include_paths(snapshot, &root_names, &opts.include);
        let single_dir = root.nodes.len() == 1 && root.nodes[0].kind == NodeKind::Dir;
        for node in &root.nodes {
            let logical = format!("/{}", node.name);
            if single_dir {
                // The one backed-up directory *is* the target.
                let (take, descend) = selected(&logical, &self.includes);
                if take {
                    self.root_meta = Some(node.clone());
                    self.selected_any = true;
                }
                if descend && let Some(sub) = node.subtree {
                    self.walk(&sub, &opts.target, &logical)?;
                }
            } else {
                self.add_node(node, &opts.target, &logical)?;
            }
        }
        if !opts.include.is_empty() && !self.selected_any {
            let mut shown: Vec<String> = Vec::new();
            for node in &root.nodes {
                match (single_dir, node.subtree) {
                    (true, Some(sub)) => {
                        if let Ok(t) = trees.load(&sub) {
                            shown.extend(t.nodes.iter().take(10).map(|n| n.name.clone()));
                        }
                    }
                    _ => shown.push(node.name.clone()),
                }
            }
            return Err(Error::invalid(format!(
                "--include {} matches nothing in the snapshot; give paths as `ls` prints them, relative to the backed-up directory, or the absolute source path ({}); it holds: {}",
                opts.include.join(", "),
                snapshot.paths.join(", "),
                shown.join(", ")
            )));
        }
        Ok(())
    }

    /// Restores what the current batch holds.
    fn flush(&mut self) {
        let batch = std::mem::take(&mut self.batch);
        if !batch.is_empty() {
            self.pipe.run(batch);
        }
    }

    fn walk(&mut self, tree: &Id, dir: &Path, logical: &str) -> Result<()> {
        let t = match self.trees.load(tree) {
            Ok(t) => t,
            Err(e) => {
                self.pipe.out.errors.push(format!("{}: {e}", dir.display()));
                return Ok(());
            }
        };
        for node in &t.nodes {
            let child_logical = format!("{logical}/{}", node.name);
            self.add_node(node, dir, &child_logical)?;
        }
        Ok(())
    }

    fn add_node(&mut self, node: &Node, dir: &Path, logical: &str) -> Result<()> {
        let (take, descend) = selected(logical, &self.includes);
        if !take && !descend {
            return Ok(());
        }
        // Never write outside the target, whatever a tree says.
        let name = node.name_os();
        if name.is_empty() || name == "." || name == ".." || name.as_encoded_bytes().contains(&b'/')
        {
            self.pipe.out.errors.push(format!(
                "{}: refusing unsafe entry name {:?}",
                dir.display(),
                node.name
            ));
            return Ok(());
        }
        let path = dir.join(name);
        match node.kind {
            NodeKind::Dir => {
                real_dir(&path)?;
                if take {
                    self.selected_any = true;
                }
                self.dirs.push((path.clone(), node.clone()));
                if let Some(sub) = node.subtree {
                    self.walk(&sub, &path, logical)?;
                }
            }
            NodeKind::File if take => {
                self.selected_any = true;
                if node.links > 1 {
                    let key = (node.device, node.inode);
                    if let Some(first) = self.links.get(&key) {
                        self.batch.hardlinks.push((path, first.clone()));
                        return Ok(());
                    }
                    self.links.insert(key, path.clone());
                }
                self.batch.blobs += node.content.len();
                self.batch.files.push(FileState::new(path, node.clone()));
                if self.batch.files.len() >= BATCH_FILES || self.batch.blobs >= BATCH_BLOBS {
                    self.flush();
                }
            }
            NodeKind::Symlink if take => {
                self.selected_any = true;
                self.batch.symlinks.push((path, node.clone()));
            }
            _ => {}
        }
        Ok(())
    }
}

/// Makes `path` a real directory. Directories are created parents first (the plan lists them in
/// that order), so every component below the target is one this restore made real: a symlink or
/// file already in the way (`restore --overwrite` into an existing tree) is removed, never
/// followed, so nothing is written outside the target through a link the restore did not create.
fn real_dir(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => return Ok(()),
        Ok(_) => {
            fs::remove_file(path).ctx(|| format!("{}: cannot replace", path.display()))?;
        }
        Err(_) => {}
    }
    match fs::create_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs::create_dir_all(path).ctx(|| format!("cannot create directory {}", path.display()))
        }
        Err(e) => Err(Error::io(
            format!("cannot create directory {}", path.display()),
            e,
        )),
    }
}

/// Moves a finished restore from `staging` into `target`, which must be on the same file system
/// (`staging` is usually inside `target`, so a mount point works): each top-level entry is renamed
/// into place, replacing whatever is in the way, except names in `keep` that `target` already
/// has (those stay, and the staged copy is dropped). Then `staging`'s own permissions, owner and
/// mtime are copied to `target` and `staging` is removed. Running it again after it was cut short
/// finishes the job.
pub fn commit_staged(staging: &Path, target: &Path, keep: &[&str]) -> Result<()> {
    let entries = fs::read_dir(staging).ctx(|| format!("{}: cannot list", staging.display()))?;
    for e in entries {
        let e = e.ctx(|| format!("{}: cannot list", staging.display()))?;
        let name = e.file_name();
        let dest = target.join(&name);
        let in_the_way = fs::symlink_metadata(&dest).ok();
        if let Some(meta) = in_the_way {
            if keep.iter().any(|k| name == **k) {
                continue;
            }
            let r = if meta.is_dir() {
                fs::remove_dir_all(&dest)
            } else {
                fs::remove_file(&dest)
            };
            r.ctx(|| format!("{}: cannot replace", dest.display()))?;
        }
        fs::rename(e.path(), &dest).ctx(|| {
            format!(
                "cannot move {} into place as {}",
                e.path().display(),
                dest.display()
            )
        })?;
    }
    let meta =
        fs::symlink_metadata(staging).ctx(|| format!("{}: cannot stat", staging.display()))?;
    {
        use std::os::unix::fs::MetadataExt;
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            std::os::unix::fs::lchown(target, Some(meta.uid()), Some(meta.gid()))
                .ctx(|| format!("{}: cannot set owner", target.display()))?;
        }
        fs::set_permissions(target, fs::Permissions::from_mode(meta.mode() & 0o7777))
            .ctx(|| format!("{}: cannot set permissions", target.display()))?;
        let t = filetime::FileTime::from_last_modification_time(&meta);
        filetime::set_file_mtime(target, t)
            .ctx(|| format!("{}: cannot set times", target.display()))?;
    }
    fs::remove_dir_all(staging).ctx(|| format!("cannot remove {}", staging.display()))
}
