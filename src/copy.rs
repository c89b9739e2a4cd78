//! `lifeboat copy`: snapshots into a second repository (an off-provider or second-provider
//! copy), as restic's `copy` does. Blob ids are keyed by each repository's own key, so every
//! blob is read and verified from the source, re-identified, and stored in the destination
//! unless it is already there (deduplicated against packs the destination can vouch for, as a
//! backup is); trees are rewritten with the new ids. Each snapshot is committed last, under a
//! writer record, exactly like a backup: an interrupted copy leaves no snapshot and is redone
//! by running it again. A snapshot whose copy is already in the destination (same original id)
//! is skipped, so `copy` is idempotent.
//!
//! PostgreSQL base backups need archived WAL to be consistent: the volume's WAL archive is
//! copied along with them. SQLite continuous-replication change sets are not copied: the copy of
//! a `sqlite` snapshot restores each database as of the snapshot (the consistent copy it holds),
//! and its replication labels are dropped so nothing looks for change sets that are not there.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use crate::backup::heartbeat::Heartbeat;
use crate::backup::vouch::Vouch;
use crate::backup::{PackWriter, seal_blob};
use crate::error::Result;
use crate::id::Id;
use crate::repository::index::Index;
use crate::repository::pack::BlobType;
use crate::repository::snapshot::Snapshot;
use crate::repository::tree::Tree;
use crate::repository::{Repository, TreeLoader};

/// What a copy did.
#[derive(Debug, Default, Clone, Serialize)]
pub struct CopyReport {
    /// `(source id, destination id)` of each snapshot copied.
    pub copied: Vec<(String, String)>,
    /// Source snapshots whose copy was already in the destination.
    pub skipped: Vec<String>,
    /// Blobs stored in the destination.
    pub blobs_stored: u64,
    /// Their plaintext bytes.
    pub bytes_stored: u64,
    /// Blobs the destination already had.
    pub blobs_deduplicated: u64,
    /// Archived WAL files copied.
    pub wal_files: u64,
}

/// Copies `snaps` (oldest first) from `src` to `dst`.
pub fn copy(src: &Repository, dst: &Repository, snaps: &[(Id, Snapshot)]) -> Result<CopyReport> {
    let mut report = CopyReport::default();
    let have: HashSet<Id> = dst
        .snapshots()?
        .into_iter()
        .filter_map(|(_, s)| s.original.map(|o| o.id))
        .collect();
    let src_index = src.load_index()?;
    let trees = TreeLoader::new(src, &src_index);
    for (id, s) in snaps {
        let original = s.original_of(*id);
        if have.contains(&original.id) || have.contains(id) {
            report.skipped.push(id.to_hex());
            continue;
        }
        let new_id = Heartbeat::scope(dst, &s.name, |hb| {
            // Read after the writer record exists, as a backup does, so a prune running now
            // sees this copy before it can mark what the copy deduplicates against.
            let dst_index = dst.load_index()?;
            let listing = dst.backend().list("data/")?;
            let vouch = Vouch::new(dst, &dst_index, &listing);
            let mut c = Copier {
                src,
                dst,
                src_index: &src_index,
                trees: &trees,
                dst_index: &dst_index,
                vouch: &vouch,
                writer: PackWriter::new(dst),
                level: dst.config().compression_level,
                blobs: HashMap::new(),
                tree_ids: HashMap::new(),
                stored: HashSet::new(),
                report: &mut report,
            };
            let tree = c.tree(s.tree)?;
            c.writer.finish()?;
            if s.labels
                .contains_key(crate::capture::postgres::LABEL_START_WAL)
            {
                report.wal_files += copy_wal(src, dst, &s.name)?;
            }
            hb.confirm()?;
            let mut new = s.clone();
            new.tree = tree;
            new.parent = None;
            new.future_dated = false;
            new.original = Some(original);
            new.labels
                .retain(|k, _| !k.starts_with(crate::sqlitelog::LABEL_PREFIX));
            dst.save_snapshot(&new)
        })?;
        report.copied.push((id.to_hex(), new_id.to_hex()));
    }
    Ok(report)
}

/// Copies the archived WAL files of `volume` that the destination lacks.
fn copy_wal(src: &Repository, dst: &Repository, volume: &str) -> Result<u64> {
    use crate::wal::{Fetched, WalArchive};
    let (from, to) = (WalArchive::new(src, volume), WalArchive::new(dst, volume));
    let there: HashSet<String> = to.list()?.into_iter().map(|e| e.name).collect();
    let mut n = 0;
    for e in from.list()? {
        if there.contains(&e.name) {
            continue;
        }
        if let Fetched::Found(bytes) = from.fetch(&e.name)? {
            to.push(&e.name, &bytes)?;
            n += 1;
        }
    }
    Ok(n)
}

struct Copier<'a, 'r> {
    src: &'a Repository,
    dst: &'r Repository,
    src_index: &'a Index,
    trees: &'a TreeLoader<'a>,
    dst_index: &'a Index,
    vouch: &'a Vouch<'a>,
    writer: PackWriter<'r>,
    level: i32,
    /// Source blob id → destination blob id.
    blobs: HashMap<Id, Id>,
    /// Source tree id → destination tree id.
    tree_ids: HashMap<Id, Id>,
    /// Destination blobs written in this run.
    stored: HashSet<Id>,
    report: &'a mut CopyReport,
}

impl Copier<'_, '_> {
    fn tree(&mut self, id: Id) -> Result<Id> {
        if let Some(t) = self.tree_ids.get(&id) {
            return Ok(*t);
        }
        let mut t = self.trees.load(&id)?;
        for n in &mut t.nodes {
            for b in &mut n.content {
                *b = self.data(*b)?;
            }
            if let Some(s) = n.subtree {
                n.subtree = Some(self.tree(s)?);
            }
        }
        let new = self.store(BlobType::Tree, &Tree::to_bytes(&mut t))?;
        self.tree_ids.insert(id, new);
        Ok(new)
    }

    fn data(&mut self, id: Id) -> Result<Id> {
        if let Some(d) = self.blobs.get(&id) {
            return Ok(*d);
        }
        let plain = self.src.read_blob(self.src_index, &id)?;
        let new = self.store(BlobType::Data, &plain)?;
        self.blobs.insert(id, new);
        Ok(new)
    }

    fn store(&mut self, kind: BlobType, plain: &[u8]) -> Result<Id> {
        let id = self.dst.key().blob_id(plain);
        if self.stored.contains(&id) || (self.dst_index.reusable(&id) && self.vouch.reusable(&id)) {
            self.report.blobs_deduplicated += 1;
            return Ok(id);
        }
        let sealed = seal_blob(self.dst, self.level, id, kind, plain, None)?;
        self.writer.add(sealed)?;
        self.stored.insert(id);
        self.report.blobs_stored += 1;
        self.report.bytes_stored += plain.len() as u64;
        Ok(id)
    }
}
