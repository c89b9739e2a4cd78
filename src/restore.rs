//! Restore: plans the whole snapshot first (directories, files and where each blob goes), then
//! workers take one pack at a time, read the needed byte ranges (adjacent blobs merged into one
//! ranged read), verify each blob (AEAD tag, then keyed hash against its id) and write it with
//! `pwrite` into files that were opened once and pre-sized. All-zero blobs are not written, so
//! sparse files come back sparse. Metadata is applied when a file's last blob lands; directory
//! metadata last, deepest first.
//!
//! A single-path snapshot of `/data` restored to `T` puts `/data`'s contents directly in `T`;
//! several paths restore side by side as `T/<base name>`.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::error::{Error, IoContext, Result};
use crate::id::Id;
use crate::progress::{Counters, ProgressMode, Reporter};
use crate::repository::index::{BlobLocation, Index};
use crate::repository::pack;
use crate::repository::snapshot::Snapshot;
use crate::repository::tree::{Node, NodeKind};
use crate::repository::{Repository, TreeLoader};

/// Restore settings.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// Directory to restore into.
    pub target: PathBuf,
    /// Snapshot paths (as `ls` shows them) to restore; empty means everything.
    pub include: Vec<String>,
    /// Allow a non-empty target; existing files in the way are replaced.
    pub overwrite: bool,
    /// Concurrent pack readers; 0 uses the larger of the CPU count and the backend's hint.
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
            threads: std::thread::available_parallelism()
                .map_or(2, |n| n.get())
                .max(2),
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

struct FileState {
    path: PathBuf,
    node: Node,
    handle: Mutex<Option<Arc<File>>>,
    remaining: AtomicUsize,
    failed: AtomicBool,
}

/// Blob → every (file, offset) it must be written to.
type Dests = Vec<(usize, u64)>;
/// One pack's needed blobs, by offset.
type PackBlobs = BTreeMap<u32, (Id, BlobLocation, Dests)>;

struct Plan {
    dirs: Vec<(PathBuf, Node)>,
    files: Vec<FileState>,
    symlinks: Vec<(PathBuf, Node)>,
    hardlinks: Vec<(PathBuf, PathBuf)>,
    root_meta: Option<Node>,
    errors: Vec<String>,
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
    let mut plan = make_plan(&trees, snapshot, opts)?;
    fs::create_dir_all(&opts.target)
        .ctx(|| format!("cannot create restore target {}", opts.target.display()))?;
    for (path, _) in &plan.dirs {
        real_dir(path)?;
    }

    // Map every needed blob to its destinations, grouped by pack.
    let mut by_pack: HashMap<u32, PackBlobs> = HashMap::new();
    let counters = Arc::new(Counters::default());
    for (fi, f) in plan.files.iter().enumerate() {
        counters.files_total.fetch_add(1, Relaxed);
        counters.bytes_total.fetch_add(f.node.size, Relaxed);
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
                    plan.errors.push(format!(
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
            if let Err(e) = create_sized(&f.path, 0).and_then(|_| apply_meta(&f.path, &f.node)) {
                plan.errors.push(e.to_string());
            }
        }
    }

    let reporter = Reporter::start(opts.progress, "restore", counters.clone());
    let errors = Mutex::new(std::mem::take(&mut plan.errors));
    let mut packs: Vec<(u32, PackBlobs)> = by_pack.into_iter().collect();
    packs.sort_by_key(|(p, _)| *p);
    let queue = Mutex::new(packs.into_iter());
    std::thread::scope(|s| {
        let workers = match opts.threads {
            0 => std::thread::available_parallelism()
                .map_or(2, |n| n.get())
                .max(repo.backend().concurrency()),
            n => n,
        };
        for _ in 0..workers {
            s.spawn(|| {
                loop {
                    let next = queue.lock().expect("queue").next();
                    let Some((pack_pos, blobs)) = next else { break };
                    restore_pack(
                        repo,
                        &index,
                        pack_pos,
                        blobs,
                        &plan.files,
                        &counters,
                        &errors,
                    );
                }
            });
        }
    });
    drop(reporter);
    let mut errors = errors.into_inner().expect("errors");

    let mut out = RestoreOutcome {
        dirs: plan.dirs.len() as u64,
        ..Default::default()
    };
    for f in &plan.files {
        if !f.failed.load(Relaxed) {
            out.files += 1;
            out.bytes += f.node.size;
        }
    }
    for (path, node) in &plan.symlinks {
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
    for (path, first) in &plan.hardlinks {
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
    for (path, node) in plan.dirs.iter().rev() {
        if let Err(e) = apply_meta(path, node) {
            errors.push(e.to_string());
        }
    }
    if let Some(node) = &plan.root_meta
        && let Err(e) = apply_meta(&opts.target, node)
    {
        errors.push(e.to_string());
    }
    out.errors = errors;
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

fn make_plan(trees: &TreeLoader, snapshot: &Snapshot, opts: &RestoreOptions) -> Result<Plan> {
    let root = trees.load(&snapshot.tree)?;
    let root_names: Vec<String> = root.nodes.iter().map(|n| n.name.clone()).collect();
    let includes = include_paths(snapshot, &root_names, &opts.include);
    let mut plan = Plan {
        dirs: Vec::new(),
        files: Vec::new(),
        symlinks: Vec::new(),
        hardlinks: Vec::new(),
        root_meta: None,
        errors: Vec::new(),
    };
    let mut links: HashMap<(u64, u64), PathBuf> = HashMap::new();
    let single_dir = root.nodes.len() == 1 && root.nodes[0].kind == NodeKind::Dir;
    for node in &root.nodes {
        let logical = format!("/{}", node.name);
        if single_dir {
            // The one backed-up directory *is* the target.
            let (take, descend) = selected(&logical, &includes);
            if take {
                plan.root_meta = Some(node.clone());
            }
            if descend && let Some(sub) = node.subtree {
                walk(
                    trees,
                    &sub,
                    &opts.target,
                    &logical,
                    &includes,
                    &mut plan,
                    &mut links,
                )?;
            }
        } else {
            add_node(
                trees,
                node,
                &opts.target,
                &logical,
                &includes,
                &mut plan,
                &mut links,
            )?;
        }
    }
    let nothing = plan.files.is_empty()
        && plan.dirs.is_empty()
        && plan.symlinks.is_empty()
        && plan.hardlinks.is_empty()
        && plan.root_meta.is_none();
    if !opts.include.is_empty() && nothing {
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
    Ok(plan)
}

fn walk(
    trees: &TreeLoader,
    tree: &Id,
    dir: &Path,
    logical: &str,
    includes: &[String],
    plan: &mut Plan,
    links: &mut HashMap<(u64, u64), PathBuf>,
) -> Result<()> {
    let t = match trees.load(tree) {
        Ok(t) => t,
        Err(e) => {
            plan.errors.push(format!("{}: {e}", dir.display()));
            return Ok(());
        }
    };
    for node in &t.nodes {
        let child_logical = format!("{logical}/{}", node.name);
        add_node(trees, node, dir, &child_logical, includes, plan, links)?;
    }
    Ok(())
}

fn add_node(
    trees: &TreeLoader,
    node: &Node,
    dir: &Path,
    logical: &str,
    includes: &[String],
    plan: &mut Plan,
    links: &mut HashMap<(u64, u64), PathBuf>,
) -> Result<()> {
    let (take, descend) = selected(logical, includes);
    if !take && !descend {
        return Ok(());
    }
    // Never write outside the target, whatever a tree says.
    let name = node.name_os();
    if name.is_empty() || name == "." || name == ".." || name.as_encoded_bytes().contains(&b'/') {
        plan.errors.push(format!(
            "{}: refusing unsafe entry name {:?}",
            dir.display(),
            node.name
        ));
        return Ok(());
    }
    let path = dir.join(name);
    match node.kind {
        NodeKind::Dir => {
            plan.dirs.push((path.clone(), node.clone()));
            if let Some(sub) = node.subtree {
                walk(trees, &sub, &path, logical, includes, plan, links)?;
            }
        }
        NodeKind::File if take => {
            if node.links > 1 {
                let key = (node.device, node.inode);
                if let Some(first) = links.get(&key) {
                    plan.hardlinks.push((path, first.clone()));
                    return Ok(());
                }
                links.insert(key, path.clone());
            }
            plan.files.push(FileState {
                path,
                node: node.clone(),
                handle: Mutex::new(None),
                remaining: AtomicUsize::new(0),
                failed: AtomicBool::new(false),
            });
        }
        NodeKind::Symlink if take => plan.symlinks.push((path, node.clone())),
        _ => {}
    }
    Ok(())
}

/// Largest single ranged read; adjacent blobs are merged up to this size.
const MAX_READ: u64 = 8 << 20;
/// Gaps up to this size between needed blobs are read rather than split into two requests.
const MAX_GAP: u64 = 256 << 10;

fn restore_pack(
    repo: &Repository,
    index: &Index,
    pack_pos: u32,
    blobs: PackBlobs,
    files: &[FileState],
    counters: &Counters,
    errors: &Mutex<Vec<String>>,
) {
    let pack_id = index.pack_id(pack_pos);
    let key = pack::pack_key(&pack_id);
    let blobs: Vec<(Id, BlobLocation, Dests)> = blobs.into_values().collect();
    let mut i = 0;
    while i < blobs.len() {
        // Grow a read range over following blobs while the gap and total stay small.
        let start = blobs[i].1.offset as u64;
        let mut end = start + blobs[i].1.length as u64;
        let mut j = i + 1;
        while j < blobs.len() {
            let o = blobs[j].1.offset as u64;
            let e = o + blobs[j].1.length as u64;
            if o > end + MAX_GAP || e - start > MAX_READ {
                break;
            }
            end = end.max(e);
            j += 1;
        }
        let range = repo.backend().get_range(&key, start, end - start);
        for (id, loc, dests) in &blobs[i..j] {
            let result = range
                .as_ref()
                .map_err(|e| clone_err(&key, e))
                .and_then(|buf| {
                    let a = (loc.offset as u64 - start) as usize;
                    repo.open_blob(&pack_id, &loc.entry(*id), &buf[a..a + loc.length as usize])
                })
                .or_else(|e| other_copy(repo, index, id, pack_pos).ok_or(e));
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
        i = j;
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
fn apply_meta(path: &Path, node: &Node) -> Result<()> {
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
