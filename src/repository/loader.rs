//! Loading tree blobs for walks (backup's parent, restore, `ls`, check).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::Repository;
use super::index::{self, Index};
use super::pack::{self, BlobType};
use super::tree::Tree;
use crate::error::{Error, Result};
use crate::id::Id;

/// Loads tree blobs, fetching each tree pack whole once: a snapshot's trees are packed together,
/// so walking a parent snapshot costs a few GETs instead of one per directory.
pub struct TreeLoader<'a> {
    repo: &'a Repository,
    index: &'a Index,
    packs: Mutex<HashMap<u32, Arc<Vec<u8>>>>,
}

impl<'a> TreeLoader<'a> {
    /// Packs kept in memory at once (a tree pack is at most the pack size).
    const MAX_CACHED_PACKS: usize = 4;

    /// A loader over `index`.
    pub fn new(repo: &'a Repository, index: &'a Index) -> Self {
        TreeLoader {
            repo,
            index,
            packs: Mutex::new(HashMap::new()),
        }
    }

    /// Loads and parses one tree, falling back to another copy when the first is damaged.
    pub fn load(&self, id: &Id) -> Result<Tree> {
        let mut first_err = None;
        for loc in self.index.locations(id) {
            match self.load_from(id, loc) {
                Ok(t) => return Ok(t),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        Err(first_err
            .unwrap_or_else(|| Error::corrupt(format!("tree {}", id.short()), "not in any index")))
    }

    fn load_from(&self, id: &Id, loc: &index::BlobLocation) -> Result<Tree> {
        if loc.kind != BlobType::Tree {
            return Err(Error::corrupt(
                format!("tree {}", id.short()),
                "indexed as a data blob",
            ));
        }
        let pack_id = self.index.pack_id(loc.pack);
        let cached = self.packs.lock().expect("lock").get(&loc.pack).cloned();
        let pack = match cached {
            Some(p) => p,
            None => {
                let bytes = Arc::new(
                    self.repo
                        .get_immutable(&pack::pack_key(&pack_id), &pack_id)?,
                );
                let mut packs = self.packs.lock().expect("lock");
                if packs.len() >= Self::MAX_CACHED_PACKS {
                    packs.clear();
                }
                packs.insert(loc.pack, bytes.clone());
                bytes
            }
        };
        let end = loc.offset as usize + loc.length as usize;
        if end > pack.len() {
            return Err(Error::corrupt(
                pack::pack_key(&pack_id),
                "shorter than its index entries say",
            ));
        }
        let plain =
            self.repo
                .open_blob(&pack_id, &loc.entry(*id), &pack[loc.offset as usize..end])?;
        Tree::from_bytes(&plain, id)
    }
}
