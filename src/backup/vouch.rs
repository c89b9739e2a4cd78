//! What a backup may refer to without storing it again. The index says which pack holds a blob;
//! the store may since have damaged, truncated, swapped or deleted that pack. A snapshot that
//! refers to such a blob would be committed as a success and fail on the day it is restored, so a
//! backup deduplicates only against packs it can vouch for:
//!
//! - the pack is in this run's listing of `data/` (deleted packs are out);
//! - and either the verified-pack ledger knows it at the listed size and version token, or it is
//!   downloaded now and hashes to its name (then it enters the ledger).
//!
//! Each pack is judged at most once per run, lazily, the first time a blob in it could be
//! reused; the steady state (packs this machine wrote or already verified) costs no download. A
//! pack that fails is reported once and its blobs are stored again: the files that used them are
//! read and uploaded afresh rather than referenced, so the new snapshot restores.

use std::collections::HashMap;
use std::sync::OnceLock;

use crate::backend::ObjectInfo;
use crate::id::Id;
use crate::repository::Repository;
use crate::repository::index::Index;

/// Per-run judgement of the packs in the index.
pub(crate) struct Vouch<'a> {
    repo: &'a Repository,
    index: &'a Index,
    listed: HashMap<Id, ObjectInfo>,
    verdicts: Vec<OnceLock<bool>>,
}

impl<'a> Vouch<'a> {
    /// A judge over `index`, given this run's listing of `data/`.
    pub fn new(repo: &'a Repository, index: &'a Index, listing: &[ObjectInfo]) -> Self {
        let listed = listing
            .iter()
            .filter_map(|o| {
                crate::repository::object_id(&o.key, "data/")
                    .ok()
                    .map(|id| (id, o.clone()))
            })
            .collect();
        Vouch {
            repo,
            index,
            listed,
            verdicts: (0..index.packs().len()).map(|_| OnceLock::new()).collect(),
        }
    }

    /// Whether the backup may refer to blob `id` without storing it: some copy of it lives in an
    /// unmarked pack that this run can vouch for. May download a pack (once per run).
    pub fn reusable(&self, id: &Id) -> bool {
        self.index.locations(id).any(|loc| {
            let pack = self.index.pack_id(loc.pack);
            !self.index.is_marked(&pack) && self.pack_ok(loc.pack, &pack)
        })
    }

    fn pack_ok(&self, pos: u32, pack: &Id) -> bool {
        let Some(cell) = self.verdicts.get(pos as usize) else {
            return false;
        };
        *cell.get_or_init(|| self.judge(pack))
    }

    fn judge(&self, pack: &Id) -> bool {
        let Some(listed) = self.listed.get(pack) else {
            tracing::warn!(
                "pack {} is in the index but not in the repository: its blobs will be stored again",
                pack.short()
            );
            return false;
        };
        if self.repo.ledger().trusts(pack, listed) {
            return true;
        }
        match self.repo.verify_pack(pack, Some(listed)) {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!("{e}; its blobs will be stored again");
                false
            }
        }
    }

    /// How many packs were judged bad in this run.
    pub fn rejected(&self) -> usize {
        self.verdicts
            .iter()
            .filter(|v| v.get() == Some(&false))
            .count()
    }
}
