//! Repairs. `repair index --read-data` salvages the good blobs of damaged packs.
//!
//! `repair snapshots`: when blobs are lost for good (a pack deleted or damaged, and `repair
//! index` could not bring them back), a snapshot that references them would fail every restore
//! and every prune forever. Repair writes a new snapshot with the same time and name whose trees
//! leave out the files that lost content (and turn unreadable directories into empty ones),
//! tagged `repaired` and labelled with the snapshot it came from. The original is removed only
//! with `--forget`.

use std::collections::HashSet;

use serde::Serialize;

use crate::backup::{Heartbeat, PackWriter, seal_blob};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::repository::index::Index;
use crate::repository::pack::BlobType;
use crate::repository::tree::{NodeKind, Tree};
use crate::repository::{IndexRepair, Repository, TreeLoader, object_id};

/// Tag on every snapshot `repair snapshots` writes.
pub const REPAIRED_TAG: &str = "repaired";
/// Label naming the snapshot a repaired one replaces.
pub const REPAIRED_FROM_LABEL: &str = "lifeboat.repaired-from";

/// What happened to one damaged snapshot.
#[derive(Debug, Clone, Serialize)]
pub struct SnapshotRepair {
    /// The damaged snapshot.
    pub snapshot: String,
    /// Its replacement (none with `--dry-run`, or when the snapshot object itself is unreadable).
    pub replacement: Option<String>,
    /// Files left out because content blobs are lost.
    pub files_dropped: Vec<String>,
    /// Directories whose listing is lost, now empty.
    pub dirs_emptied: Vec<String>,
    /// Why the snapshot object itself could not be read, if that is the damage.
    pub unreadable: Option<String>,
    /// Whether the damaged snapshot was removed.
    pub forgotten: bool,
}

/// `repair index`: rebuilds the index from the pack headers; with `read_data`, also copies the
/// good blobs of packs with damaged ones into new packs and deletes the damaged packs, so what
/// can be recovered is and `check --read-data` comes back clean.
pub fn repair_index(repo: &Repository, read_data: bool) -> Result<IndexRepair> {
    let mut r = repo.repair_index(read_data)?;
    if r.salvage.is_empty() {
        return Ok(r);
    }
    let mut out = PackWriter::new(repo);
    let salvage = std::mem::take(&mut r.salvage);
    for (pack, good) in &salvage {
        let key = crate::repository::pack::pack_key(pack);
        let data = repo.get_object(&key)?;
        for e in good {
            let sealed = &data[e.offset as usize..(e.offset + e.length) as usize];
            repo.open_blob(pack, e, sealed)?;
            r.salvaged_blobs += 1;
            out.copy(e, sealed)?;
        }
    }
    r.packs += out.finish()?;
    r.blobs += r.salvaged_blobs;
    for (pack, _) in &salvage {
        repo.backend()
            .delete(&crate::repository::pack::pack_key(pack))?;
    }
    Ok(r)
}

/// Repairs every snapshot that references lost blobs. Healthy snapshots are not touched.
pub fn repair_snapshots(
    repo: &Repository,
    forget: bool,
    dry_run: bool,
) -> Result<Vec<SnapshotRepair>> {
    Heartbeat::scope(repo, "repair", |_| run(repo, forget, dry_run))
}

fn run(repo: &Repository, forget: bool, dry_run: bool) -> Result<Vec<SnapshotRepair>> {
    // Snapshots before the index, so a backup committing meanwhile is not mistaken for damage.
    let listed = repo.backend().list("snapshots/")?;
    let index = repo.load_index()?;
    let loader = TreeLoader::new(repo, &index);
    let mut writer = TreeWriter {
        repo,
        index: &index,
        out: PackWriter::new(repo),
        pending: HashSet::new(),
        present: repo
            .backend()
            .list("data/")?
            .iter()
            .filter_map(|o| object_id(&o.key, "data/").ok())
            .collect(),
        dry_run,
    };
    let mut out = Vec::new();
    let mut plans = Vec::new();
    for info in listed {
        let id = object_id(&info.key, "snapshots/")?;
        let snap = match repo.load_snapshot(&id) {
            Ok(s) => s,
            Err(e @ Error::NewerFormat { .. }) => return Err(e),
            Err(e) => {
                // Nothing to salvage from an object that does not open; removing it is the repair.
                if forget && !dry_run {
                    repo.delete_snapshot(&id)?;
                }
                out.push(SnapshotRepair {
                    snapshot: id.to_hex(),
                    replacement: None,
                    files_dropped: Vec::new(),
                    dirs_emptied: Vec::new(),
                    unreadable: Some(e.to_string()),
                    forgotten: forget && !dry_run,
                });
                continue;
            }
        };
        let mut damage = Damage::default();
        let root = rewrite(&loader, &mut writer, snap.tree, "", &mut damage)?;
        if let Some(root) = root {
            plans.push((id, snap, root, damage));
        }
    }
    // Trees first, then their index, then the snapshots: the usual write order.
    writer.out.finish()?;
    for (id, mut snap, root, damage) in plans {
        let replacement = if dry_run {
            None
        } else {
            snap.tree = root;
            snap.parent = None;
            if !snap.tags.iter().any(|t| t == REPAIRED_TAG) {
                snap.tags.push(REPAIRED_TAG.into());
            }
            snap.labels.insert(REPAIRED_FROM_LABEL.into(), id.to_hex());
            let new = repo.save_snapshot(&snap)?;
            if forget {
                repo.delete_snapshot(&id)?;
            }
            Some(new.to_hex())
        };
        out.push(SnapshotRepair {
            snapshot: id.to_hex(),
            replacement,
            files_dropped: damage.files,
            dirs_emptied: damage.dirs,
            unreadable: None,
            forgotten: forget && !dry_run,
        });
    }
    Ok(out)
}

#[derive(Default)]
struct Damage {
    files: Vec<String>,
    dirs: Vec<String>,
}

/// Rewrites the tree `id` without lost content; `None` when nothing under it is damaged.
fn rewrite(
    loader: &TreeLoader,
    writer: &mut TreeWriter,
    id: Id,
    path: &str,
    damage: &mut Damage,
) -> Result<Option<Id>> {
    let tree = match loader.load(&id) {
        Ok(t) => t,
        Err(e @ Error::Backend { .. }) => return Err(e),
        Err(_) => {
            damage.dirs.push(if path.is_empty() {
                "/".into()
            } else {
                path.into()
            });
            return writer.save(Tree::default()).map(Some);
        }
    };
    let mut changed = false;
    let mut nodes = Vec::with_capacity(tree.nodes.len());
    for mut n in tree.nodes {
        let p = format!("{path}/{}", n.name);
        match n.kind {
            NodeKind::File if n.content.iter().any(|b| writer.lost(b)) => {
                damage.files.push(p);
                changed = true;
                continue;
            }
            NodeKind::Dir => {
                let sub = match n.subtree {
                    Some(sub) => rewrite(loader, writer, sub, &p, damage)?,
                    None => {
                        damage.dirs.push(p.clone());
                        Some(writer.save(Tree::default())?)
                    }
                };
                if let Some(sub) = sub {
                    n.subtree = Some(sub);
                    changed = true;
                }
            }
            _ => {}
        }
        nodes.push(n);
    }
    if !changed {
        return Ok(None);
    }
    writer.save(Tree { nodes }).map(Some)
}

/// Stores new tree blobs (once each) into tree packs.
struct TreeWriter<'a> {
    repo: &'a Repository,
    index: &'a Index,
    out: PackWriter<'a>,
    pending: HashSet<Id>,
    /// Packs that exist: a blob indexed in a missing pack is lost too.
    present: HashSet<Id>,
    dry_run: bool,
}

impl TreeWriter<'_> {
    fn lost(&self, blob: &Id) -> bool {
        self.index
            .get(blob)
            .is_none_or(|loc| !self.present.contains(&self.index.pack_id(loc.pack)))
    }

    fn save(&mut self, mut tree: Tree) -> Result<Id> {
        let bytes = tree.to_bytes();
        let id = self.repo.key().blob_id(&bytes);
        if self.dry_run || self.index.reusable(&id) || !self.pending.insert(id) {
            return Ok(id);
        }
        let level = self.repo.config().compression_level;
        self.out.add(seal_blob(
            self.repo,
            level,
            id,
            BlobType::Tree,
            &bytes,
            None,
        )?)?;
        Ok(id)
    }
}
