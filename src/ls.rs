//! Listing a snapshot's contents (`lifeboat ls`).

use serde::Serialize;

use crate::error::{Error, Result};
use crate::repository::snapshot::Snapshot;
use crate::repository::tree::{Node, NodeKind};
use crate::repository::{Repository, TreeLoader};

/// One listed entry.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    /// Path inside the snapshot, `/<base name>/…`.
    pub path: String,
    /// `file`, `dir` or `symlink`.
    #[serde(rename = "type")]
    pub kind: NodeKind,
    /// File size.
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
    /// Modification time.
    pub mtime: chrono::DateTime<chrono::Utc>,
    /// Symlink target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// Lists everything under `prefix` (a snapshot path like `/data/sub`; empty for all).
pub fn list(repo: &Repository, snapshot: &Snapshot, prefix: &str) -> Result<Vec<Entry>> {
    let index = repo.load_index()?;
    let trees = TreeLoader::new(repo, &index);
    let prefix = prefix.trim_end_matches('/');
    let mut out = Vec::new();
    let mut stack = vec![(snapshot.tree, String::new())];
    while let Some((tid, path)) = stack.pop() {
        let tree = trees.load(&tid)?;
        for n in tree.nodes.iter().rev() {
            let p = format!("{path}/{}", n.name);
            let wanted = prefix.is_empty() || p == prefix || p.starts_with(&format!("{prefix}/"));
            let ancestor = prefix.starts_with(&format!("{p}/"));
            if !wanted && !ancestor {
                continue;
            }
            if wanted {
                out.push(entry(&p, n));
            }
            if let Some(sub) = n.subtree {
                stack.push((sub, p));
            }
        }
        // Keep output in path order: children were pushed in reverse.
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    if out.is_empty() && !prefix.is_empty() {
        return Err(Error::invalid(format!(
            "{prefix}: no such path in the snapshot"
        )));
    }
    Ok(out)
}

impl Entry {
    /// The `ls -l` line: type and mode, size, mtime, path, and a symlink's target.
    pub fn long(&self) -> String {
        let t = match self.kind {
            NodeKind::Dir => 'd',
            NodeKind::File => '-',
            NodeKind::Symlink => 'l',
        };
        let target = self
            .target
            .as_ref()
            .map(|t| format!(" -> {t}"))
            .unwrap_or_default();
        format!(
            "{t}{:04o} {:>12} {} {}{target}",
            self.mode,
            self.size,
            self.mtime.format("%Y-%m-%d %H:%M:%S"),
            self.path
        )
    }
}

/// The listed form of a node at `path`.
pub fn entry(path: &str, n: &Node) -> Entry {
    Entry {
        path: path.to_string(),
        kind: n.kind,
        size: n.size,
        mode: n.mode,
        mtime: chrono::DateTime::from_timestamp_nanos(n.mtime_ns),
        target: n.target.clone(),
    }
}
