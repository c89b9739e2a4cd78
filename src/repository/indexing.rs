//! The index as a whole: reading every live index object (strictly for prune and repair,
//! leniently for readers), rebuilding it from the packs themselves, and rewriting it around packs
//! a prune or repair drops (docs/FORMAT.md §8, §11).

use super::index::{Index, IndexFile};
use super::pack::{self, PackEntry};
use super::{Repository, limits, object_id};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::id::Id;

/// What `repair index` did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct IndexRepair {
    /// Packs in the new index.
    pub packs: usize,
    /// Blobs in the new index.
    pub blobs: usize,
    /// Packs left out, with why their header could not be read.
    pub unreadable: Vec<(String, String)>,
    /// Blobs left out because they failed verification (`--read-data` only): pack and why.
    pub damaged_blobs: Vec<(String, String)>,
    /// Packs with damaged blobs, and their good entries, left for the caller to copy out.
    #[serde(skip)]
    pub salvage: Vec<(Id, Vec<PackEntry>)>,
    /// Good blobs copied out of damaged packs into new ones.
    pub salvaged_blobs: usize,
}

impl Repository {
    /// Reads every live index object (those no other index supersedes). An object that vanishes
    /// between the listing and the read was superseded by a concurrent prune or repair, whose
    /// new object the listing may have missed: the listing is then repeated.
    ///
    /// Strict: a damaged index object that nothing supersedes is an error. Prune and repair use
    /// this, because a pack whose index object was skipped would look unused to them.
    pub fn index_files(&self) -> Result<Vec<(Id, IndexFile)>> {
        self.index_files_mode(true)
    }

    /// Like [`Repository::index_files`], but a damaged or forged index object is skipped with a
    /// warning naming it, so one junk object under `index/` cannot stop every restore and backup.
    /// What it listed is still found: backups adopt its packs again after verifying them, and
    /// `check` reports the object.
    pub fn index_files_lenient(&self) -> Result<Vec<(Id, IndexFile)>> {
        self.index_files_mode(false)
    }

    fn index_files_mode(&self, strict: bool) -> Result<Vec<(Id, IndexFile)>> {
        let mut attempt = 0;
        loop {
            match self.index_files_once(strict) {
                Err(Error::NotFound { .. }) if attempt < 5 => attempt += 1,
                r => return r,
            }
        }
    }

    fn index_files_once(&self, strict: bool) -> Result<Vec<(Id, IndexFile)>> {
        let listed = self.backend.list("index/")?;
        self.cache_retain("index/", &listed);
        let read = crate::parallel::map(listed, 8, |info| {
            let id = object_id(&info.key, "index/");
            let r = id
                .as_ref()
                .map_err(|e| Error::invalid(e.to_string()))
                .and_then(|id| {
                    let bytes = self.get_immutable(&info.key, id)?;
                    IndexFile::decode(&self.key, &info.key, &bytes)
                });
            (id.ok(), r)
        });
        let superseded: std::collections::HashSet<Id> = read
            .iter()
            .filter_map(|(_, r)| r.as_ref().ok())
            .flat_map(|f| f.supersedes.iter().copied())
            .collect();
        let mut files = Vec::new();
        for (id, r) in read {
            match (id, r) {
                (Some(id), Ok(f)) => files.push((id, f)),
                // A damaged object that a repaired index replaces no longer matters.
                (Some(id), Err(_)) if superseded.contains(&id) => {}
                (_, Err(e @ Error::NotFound { .. })) => return Err(e),
                (_, Err(e @ Error::NewerFormat { .. })) => return Err(e),
                (_, Err(e)) if strict => return Err(e),
                (_, Err(e)) => tracing::warn!("ignoring {e}"),
                (None, Ok(_)) => {}
            }
        }
        Ok(files
            .into_iter()
            .filter(|(id, _)| !superseded.contains(id))
            .collect())
    }

    /// Rebuilds the index from the pack headers themselves: downloads every pack, checks that it
    /// hashes to its name and reads its header, writes one index object listing every readable pack and superseding every
    /// index object present, readable or not, then deletes those. Packs whose header cannot be
    /// read are reported and left out. With `read_data`, every pack is downloaded and each blob
    /// verified; a pack with damaged blobs is left out and returned in `salvage` with its good
    /// entries ([`crate::repair::repair_index`] copies those into new packs).
    pub fn repair_index(&self, read_data: bool) -> Result<IndexRepair> {
        let old: Vec<Id> = self
            .backend
            .list("index/")?
            .iter()
            .filter_map(|o| object_id(&o.key, "index/").ok())
            .collect();
        let listed = self.backend.list("data/")?;
        // Every pack is downloaded and hashed: a pack is listed into the index only under the
        // name its contents give it (a copy stored under another name is left out).
        let readers = self.backend.concurrency().clamp(2, 4);
        let read = crate::parallel::map(listed, readers, |info| {
            let r = object_id(&info.key, "data/").and_then(|id| {
                if read_data {
                    self.salvage_pack(&id, &info.key)
                } else {
                    let bytes = self.verify_pack(&id, Some(&info))?;
                    Ok((
                        id,
                        pack::parse_pack(&self.key, &info.key, &bytes)?,
                        Vec::new(),
                    ))
                }
            });
            (info.key, r)
        });
        let mut file = IndexFile {
            supersedes: old,
            packs: Vec::new(),
        };
        let mut bad = Vec::new();
        let mut damaged = Vec::new();
        let mut salvage = Vec::new();
        let mut blobs = 0;
        for (key, r) in read {
            match r {
                Ok((id, entries, dropped)) if !dropped.is_empty() => {
                    // Its good blobs are copied out by the caller; the pack itself goes.
                    damaged.extend(dropped);
                    salvage.push((id, entries));
                }
                Ok((id, entries, _)) => {
                    blobs += entries.len();
                    file.packs.push((id, entries));
                }
                Err(e) => bad.push((key, e.to_string())),
            }
        }
        file.packs.sort_by_key(|(id, _)| *id);
        let packs = file.packs.len();
        self.save_index(&file)?;
        // The new object supersedes the old ones, so they can go: an index written meanwhile by a
        // concurrent backup was not listed above and stays.
        for id in &file.supersedes {
            self.backend.delete(&format!("index/{id}"))?;
        }
        Ok(IndexRepair {
            packs,
            blobs,
            unreadable: bad,
            damaged_blobs: damaged,
            salvage,
            salvaged_blobs: 0,
        })
    }

    /// Downloads a whole pack and returns the entries of the blobs that verify, and a line for
    /// each that does not.
    #[allow(clippy::type_complexity)]
    fn salvage_pack(
        &self,
        id: &Id,
        key: &str,
    ) -> Result<(Id, Vec<PackEntry>, Vec<(String, String)>)> {
        let data = self.verify_pack(id, None)?;
        let entries = pack::parse_pack(&self.key, key, &data)?;
        let mut good = Vec::with_capacity(entries.len());
        let mut dropped = Vec::new();
        for e in entries {
            let blob = &data[e.offset as usize..(e.offset + e.length) as usize];
            match self.open_blob(id, &e, blob) {
                Ok(_) => good.push(e),
                Err(err) => dropped.push((key.to_string(), err.to_string())),
            }
        }
        Ok((*id, good, dropped))
    }

    /// Replaces every live index object that lists a pack in `drop` with one new object holding
    /// their other packs, superseding them and anything they superseded (so no half-finished
    /// earlier rewrite can come back to life). Returns the objects now superseded: the caller
    /// deletes them after the packs. Index objects written meanwhile are not touched.
    pub fn rewrite_index_without(&self, drop: &std::collections::HashSet<Id>) -> Result<Vec<Id>> {
        let listed = self.backend.list("index/")?;
        let read = crate::parallel::map(listed, 8, |info| {
            let id = object_id(&info.key, "index/").ok()?;
            let f = self
                .get_immutable(&info.key, &id)
                .and_then(|b| IndexFile::decode(&self.key, &info.key, &b));
            Some((id, f))
        });
        let mut files = Vec::new();
        let mut superseded = std::collections::HashSet::new();
        let mut present = std::collections::HashSet::new();
        for (id, f) in read.into_iter().flatten() {
            present.insert(id);
            match f {
                Ok(f) => {
                    superseded.extend(f.supersedes.iter().copied());
                    files.push((id, f));
                }
                Err(e) => tracing::warn!("{e}"),
            }
        }
        let mut new = IndexFile::default();
        let mut gone: Vec<Id> = superseded.intersection(&present).copied().collect();
        for (id, f) in files {
            if superseded.contains(&id) || !f.packs.iter().any(|(p, _)| drop.contains(p)) {
                continue;
            }
            gone.push(id);
            new.packs
                .extend(f.packs.into_iter().filter(|(p, _)| !drop.contains(p)));
        }
        if gone.is_empty() {
            return Ok(gone);
        }
        gone.sort();
        gone.dedup();
        new.supersedes = gone.clone();
        self.save_index(&new)?;
        Ok(gone)
    }

    /// Deletes index objects a newer object supersedes.
    pub fn delete_index_objects(&self, ids: &[Id]) -> Result<()> {
        for id in ids {
            self.backend.delete(&format!("index/{id}"))?;
        }
        Ok(())
    }

    /// Builds the in-memory index from all live index objects. Packs a prune has marked go in
    /// last and are flagged, so readers prefer a copy that will stay and backups reuse none.
    pub fn load_index(&self) -> Result<Index> {
        let marked = self.marked_packs()?;
        Ok(Index::from_files(&self.index_files_lenient()?, marked))
    }

    /// Stores an index object under the hash of its bytes; returns the id of the last object
    /// written. An index larger than [`limits::INDEX_SPLIT`] is written as several objects, so
    /// that none exceeds what readers accept ([`limits::MAX_INDEX`]); the superseded list goes in
    /// the last one, so a crash part-way leaves the old objects live beside the new parts (their
    /// union lists every pack) and never a gap.
    pub fn save_index(&self, f: &IndexFile) -> Result<Id> {
        const PACK_BYTES: usize = 36;
        const ENTRY_BYTES: usize = 46;
        let mut parts: Vec<IndexFile> = vec![IndexFile::default()];
        let mut size = 0usize;
        for (pack, entries) in &f.packs {
            let n = PACK_BYTES + ENTRY_BYTES * entries.len();
            if size + n > limits::INDEX_SPLIT && size > 0 {
                parts.push(IndexFile::default());
                size = 0;
            }
            size += n;
            parts
                .last_mut()
                .expect("one part")
                .packs
                .push((*pack, entries.clone()));
        }
        parts.last_mut().expect("one part").supersedes = f.supersedes.clone();
        let mut last = None;
        for part in &parts {
            last = Some(self.put_immutable("index", &part.encode(&self.key))?);
        }
        Ok(last.expect("one part"))
    }
}
