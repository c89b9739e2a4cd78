//! Files that exist only once the copy is finished: PostgreSQL's `backup_label` and the WAL a
//! base backup needs are known only after `pg_backup_stop`, which must come after every data
//! file was read. The capture hands them over through [`LateFiles`]; the engine calls it once,
//! after the last reader finished and before the trees are written, chunks what it returns like
//! any other file, and places each file into the tree at its path.

use std::ffi::OsString;
use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::repository::tree::{Node, NodeKind};

use super::walk::Pending;

/// One file added after the walk.
pub struct LateFile {
    /// Where it belongs: an absolute path below one of the backup's source paths, whose parent
    /// directory the walk stored.
    pub path: PathBuf,
    /// Its bytes; read to the end (a short read is simply a shorter file).
    pub content: Box<dyn Read + Send>,
    /// Permission bits.
    pub mode: u32,
}

/// What the capture adds once the copy is over.
#[derive(Default)]
pub struct LateOutput {
    /// Files to place into the tree.
    pub files: Vec<LateFile>,
    /// Labels for the snapshot (what is known only now: where the copy ended).
    pub labels: std::collections::BTreeMap<String, String>,
}

/// Called once after every file was read; an error fails the backup (nothing commits).
#[derive(Clone)]
#[allow(clippy::type_complexity)]
pub struct LateFiles(pub Arc<dyn Fn() -> Result<LateOutput> + Send + Sync>);

impl std::fmt::Debug for LateFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LateFiles")
    }
}

/// A node for a late file, owned by the directory it lands in.
pub(super) fn node_for(path: &Path, dir_meta: Option<&Node>, mode: u32, size: u64) -> Node {
    let name = path.file_name().unwrap_or_default();
    let mut n = Node::new(name, NodeKind::File);
    n.mode = mode;
    if let Some(d) = dir_meta {
        n.uid = d.uid;
        n.gid = d.gid;
    }
    n.mtime_ns = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0);
    n.size = size;
    n
}

/// The directory node that `path` (absolute) lands in: its metadata, for ownership.
pub(super) fn parent_dir<'p>(
    pending: &'p [Pending],
    roots: &[(PathBuf, OsString)],
    path: &Path,
) -> Option<&'p Node> {
    let (idx, rel) = locate(roots, path).ok()?;
    let mut level = pending;
    let mut dir: Option<&Node> = None;
    let comps: Vec<OsString> = rel.components().map(|c| c.as_os_str().into()).collect();
    let root_name = &roots[idx].1;
    let mut names = vec![root_name.clone()];
    names.extend(comps[..comps.len().saturating_sub(1)].iter().cloned());
    for name in names {
        let found = level.iter().find_map(|p| match p {
            Pending::Dir(n, children) if n.name_os() == name => Some((n, children)),
            _ => None,
        })?;
        dir = Some(found.0);
        level = found.1;
    }
    dir
}

/// Places `node` (a late file at `path`) into the pending tree, replacing an entry of the same
/// name. Fails when `path` is not below a source path or a directory on the way is missing.
pub(super) fn insert(
    pending: &mut [Pending],
    roots: &[(PathBuf, OsString)],
    path: &Path,
    node: Node,
) -> Result<()> {
    let (idx, rel) = locate(roots, path)?;
    let comps: Vec<OsString> = rel.components().map(|c| c.as_os_str().into()).collect();
    if comps.is_empty() {
        return Err(Error::invalid(format!(
            "late file {} is a source path itself",
            path.display()
        )));
    }
    let mut level: &mut Vec<Pending> = match pending.iter_mut().find_map(|p| match p {
        Pending::Dir(n, children) if n.name_os() == roots[idx].1 => Some(children),
        _ => None,
    }) {
        Some(c) => c,
        None => return Err(missing(path)),
    };
    for name in &comps[..comps.len() - 1] {
        level = match level.iter_mut().find_map(|p| match p {
            Pending::Dir(n, children) if n.name_os() == *name => Some(children),
            _ => None,
        }) {
            Some(c) => c,
            None => return Err(missing(path)),
        };
    }
    let name = comps.last().expect("non-empty");
    level.retain(|p| pending_name(p).as_ref() != Some(name));
    let pos = level
        .iter()
        .position(|p| {
            pending_name(p).is_some_and(|n| {
                use std::os::unix::ffi::OsStrExt;
                n.as_bytes() > name.as_bytes()
            })
        })
        .unwrap_or(level.len());
    level.insert(pos, Pending::Ready(node));
    Ok(())
}

fn pending_name(p: &Pending) -> Option<OsString> {
    match p {
        Pending::Ready(n) | Pending::File(n, _) | Pending::Dir(n, _) => Some(n.name_os()),
        Pending::Open(_) | Pending::Gone => None,
    }
}

fn missing(path: &Path) -> Error {
    Error::invalid(format!(
        "late file {}: its directory was not part of the backup",
        path.display()
    ))
}

fn locate(roots: &[(PathBuf, OsString)], path: &Path) -> Result<(usize, PathBuf)> {
    for (i, (root, _)) in roots.iter().enumerate() {
        if let Ok(rel) = path.strip_prefix(root)
            && rel.components().all(|c| matches!(c, Component::Normal(_)))
        {
            return Ok((i, rel.to_path_buf()));
        }
    }
    Err(Error::invalid(format!(
        "late file {} is not below a backup path",
        path.display()
    )))
}
