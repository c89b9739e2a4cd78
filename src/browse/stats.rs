//! `lifeboat stats`: per volume, what its snapshots would restore and what they take in the
//! repository once deduplicated and compressed, as restic's `stats` modes `restore-size` and
//! `raw-data` answer them, side by side.

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;

use crate::error::Result;
use crate::id::Id;
use crate::repository::TreeLoader;
use crate::repository::index::Index;
use crate::repository::snapshot::Snapshot;

/// Figures for one volume name (or for all the selected snapshots).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct VolumeStats {
    /// Snapshots counted.
    pub snapshots: u64,
    /// Files the newest of them restores.
    pub latest_files: u64,
    /// Bytes the newest of them restores.
    pub latest_bytes: u64,
    /// Bytes all of them would restore, one after another (restic's `restore-size`).
    pub restore_bytes: u64,
    /// Distinct data blobs they reference.
    pub blobs: u64,
    /// Plaintext bytes of those blobs (restic's `raw-data`, before compression).
    pub raw_bytes: u64,
    /// Their stored bytes (compressed and sealed).
    pub stored_bytes: u64,
    /// Distinct tree blobs, and their stored bytes.
    pub trees: u64,
    /// Stored bytes of the tree blobs.
    pub tree_stored_bytes: u64,
}

impl VolumeStats {
    /// `restore_bytes / raw_bytes`: how many times over deduplication saves.
    pub fn dedup_ratio(&self) -> f64 {
        self.restore_bytes as f64 / self.raw_bytes.max(1) as f64
    }
    /// `raw_bytes / stored_bytes`: what compression saves.
    pub fn compression_ratio(&self) -> f64 {
        self.raw_bytes as f64 / self.stored_bytes.max(1) as f64
    }
}

/// The distinct data blobs under the given trees; each tree is read once however many
/// snapshots share it.
pub fn data_blobs(trees: &TreeLoader, roots: impl IntoIterator<Item = Id>) -> Result<HashSet<Id>> {
    let mut seen = HashSet::new();
    let mut blobs = HashSet::new();
    for r in roots {
        collect(trees, r, &mut seen, &mut blobs)?;
    }
    Ok(blobs)
}

fn collect(
    trees: &TreeLoader,
    tree: Id,
    seen: &mut HashSet<Id>,
    blobs: &mut HashSet<Id>,
) -> Result<()> {
    if !seen.insert(tree) {
        return Ok(());
    }
    for n in trees.load(&tree)?.nodes {
        blobs.extend(n.content.iter().copied());
        if let Some(s) = n.subtree {
            collect(trees, s, seen, blobs)?;
        }
    }
    Ok(())
}

/// Stats per volume name (keys) and for all of `snaps` together (`None`). `snaps` oldest first.
pub fn stats(
    trees: &TreeLoader,
    index: &Index,
    snaps: &[(Id, Snapshot)],
) -> Result<BTreeMap<Option<String>, VolumeStats>> {
    let mut groups: BTreeMap<Option<String>, Vec<&Snapshot>> = BTreeMap::new();
    for (_, s) in snaps {
        groups.entry(Some(s.name.clone())).or_default().push(s);
        groups.entry(None).or_default().push(s);
    }
    let mut out = BTreeMap::new();
    for (name, ss) in groups {
        let mut v = VolumeStats {
            snapshots: ss.len() as u64,
            ..Default::default()
        };
        if let Some(last) = ss.last() {
            v.latest_files = last.summary.total_files;
            v.latest_bytes = last.summary.total_bytes;
        }
        v.restore_bytes = ss.iter().map(|s| s.summary.total_bytes).sum();
        let mut seen = HashSet::new();
        let mut blobs = HashSet::new();
        for s in &ss {
            collect(trees, s.tree, &mut seen, &mut blobs)?;
        }
        for id in &blobs {
            if let Some(l) = index.get(id) {
                v.blobs += 1;
                v.raw_bytes += l.raw_length as u64;
                v.stored_bytes += l.length as u64;
            }
        }
        for id in &seen {
            if let Some(l) = index.get(id) {
                v.trees += 1;
                v.tree_stored_bytes += l.length as u64;
            }
        }
        out.insert(name, v);
    }
    Ok(out)
}
