//! Read-only questions about snapshots, answered from their trees: what changed between two
//! ([`diff`]), which snapshots hold a path ([`find`]), how much they take ([`stats`]), and one
//! file or directory out of a snapshot as a stream ([`dump`]). Nothing here writes to the
//! repository; every tree and blob read is verified as a restore verifies it.

pub mod diff;
pub mod dump;
pub mod find;
pub mod stats;

use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::id::Id;
use crate::repository::TreeLoader;
use crate::repository::snapshot::Snapshot;
use crate::repository::tree::{Node, NodeKind};

/// Snapshot filters shared by the commands that take several snapshots (`find`, `stats`,
/// `copy`, `tag`): ids (prefixes or `latest`), a volume name, a host, tags. Empty filters select
/// every snapshot.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Snapshot ids or prefixes, or `latest` (the latest of `name` when given).
    pub ids: Vec<String>,
    /// Volume name.
    pub name: Option<String>,
    /// Host that made the snapshot (restic's `--host`).
    pub host: Option<String>,
    /// Every one of these tags.
    pub tags: Vec<String>,
}

impl Filter {
    /// The snapshots selected, oldest first. An id that matches nothing is an error, never an
    /// empty answer: a typo must not read as "not found in any snapshot".
    pub fn select(&self, repo: &crate::repository::Repository) -> Result<Vec<(Id, Snapshot)>> {
        let mut out = Vec::new();
        if self.ids.is_empty() {
            out = repo.snapshots()?;
        } else {
            for spec in &self.ids {
                let hit = repo.find_snapshot(spec, self.name.as_deref())?;
                if !out.iter().any(|(id, _)| *id == hit.0) {
                    out.push(hit);
                }
            }
            out.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
        }
        out.retain(|(_, s)| {
            self.name.as_ref().is_none_or(|n| &s.name == n)
                && self.host.as_ref().is_none_or(|h| &s.hostname == h)
                && self.tags.iter().all(|t| s.tags.contains(t))
        });
        if out.is_empty() && (self.name.is_some() || self.host.is_some() || !self.tags.is_empty()) {
            return Err(Error::invalid(format!(
                "no snapshot matches{}{}{}",
                self.name
                    .as_ref()
                    .map(|n| format!(" --name {n:?}"))
                    .unwrap_or_default(),
                self.host
                    .as_ref()
                    .map(|h| format!(" --host {h:?}"))
                    .unwrap_or_default(),
                if self.tags.is_empty() {
                    String::new()
                } else {
                    format!(" --tag {}", self.tags.join(","))
                }
            )));
        }
        Ok(out)
    }
}

/// The node at `path` in a snapshot (`/` or empty: the root, as a directory node), with its
/// path as `ls` prints it. `path` is either that form (`/data/sub/f`) or, for a snapshot of one
/// directory, relative to it (`sub/f`), as `restore --include` takes it.
pub fn resolve(trees: &TreeLoader, snap: &Snapshot, path: &str) -> Result<(String, Node)> {
    let trimmed = path.trim_matches('/');
    if trimmed.is_empty() {
        let mut root = Node::new(std::ffi::OsStr::new(""), NodeKind::Dir);
        root.subtree = Some(snap.tree);
        root.mode = 0o755;
        root.mtime_ns = snap.time.timestamp_nanos_opt().unwrap_or(0);
        return Ok((String::new(), root));
    }
    let root = trees.load(&snap.tree)?;
    let mut tries = vec![trimmed.to_string()];
    if let [only] = root.nodes.as_slice() {
        tries.push(format!("{}/{trimmed}", only.name));
    }
    for t in &tries {
        if let Some(found) = walk_path(trees, snap.tree, t)? {
            return Ok((format!("/{t}"), found));
        }
    }
    Err(Error::invalid(format!(
        "{path}: no such path in the snapshot (paths as `lifeboat ls` prints them)"
    )))
}

fn walk_path(trees: &TreeLoader, mut tree: Id, path: &str) -> Result<Option<Node>> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    for (i, part) in parts.iter().enumerate() {
        let t = trees.load(&tree)?;
        let Some(n) = t.nodes.iter().find(|n| n.name == *part) else {
            return Ok(None);
        };
        if i + 1 == parts.len() {
            return Ok(Some(n.clone()));
        }
        match n.subtree {
            Some(s) => tree = s,
            None => return Ok(None),
        }
    }
    Ok(None)
}

/// Calls `f` for every node under `tree`, depth first in name order, with its path below
/// `prefix`. Directories are visited before their contents.
pub fn walk(
    trees: &TreeLoader,
    tree: Id,
    prefix: &str,
    f: &mut dyn FnMut(&str, &Node) -> Result<()>,
) -> Result<()> {
    let t = trees.load(&tree)?;
    for n in &t.nodes {
        let p = format!("{prefix}/{}", n.name);
        f(&p, n)?;
        if let Some(sub) = n.subtree {
            walk(trees, sub, &p, f)?;
        }
    }
    Ok(())
}

/// Nodes of a tree by their exact name (the raw bytes when they are not UTF-8), for merging two
/// directories.
fn by_name(nodes: Vec<Node>) -> HashMap<(String, Option<String>), Node> {
    nodes
        .into_iter()
        .map(|n| ((n.name.clone(), n.name_raw.clone()), n))
        .collect()
}
