//! The last stage of a backup: pending nodes become finished ones, and tree blobs are written
//! bottom-up.

use std::sync::atomic::Ordering::Relaxed;

use crossbeam_channel::Sender;

use super::walk::Pending;
use super::{FileOutcome, SealedBlob, Shared, seal_blob};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::repository::pack::BlobType;
use crate::repository::tree::{Node, Tree};

/// Turns pending nodes into finished ones, writing tree blobs bottom-up.
pub(super) struct TreeBuilder<'a, 's> {
    pub(super) shared: &'a Shared<'s>,
    pub(super) level: i32,
    pub(super) sealed: &'a Sender<SealedBlob>,
    pub(super) errors: u64,
    pub(super) compressor: Option<zstd::bulk::Compressor<'static>>,
    pub(super) vanished_ok: bool,
}

impl TreeBuilder<'_, '_> {
    /// A file's finished node from its reader result: `None` drops it from its tree (a file
    /// that could not be read is a warning and counted; one that vanished under `live_files` is
    /// simply gone). An interrupted read fails the whole backup.
    pub(super) fn file(&mut self, mut n: Node, r: Result<FileOutcome>) -> Result<Option<Node>> {
        match r {
            Ok(o) => {
                n.content = o.content;
                n.size = o.size;
                Ok(Some(n))
            }
            Err(Error::Interrupted) => Err(Error::Interrupted),
            Err(Error::Io { source, .. })
                if self.vanished_ok && source.kind() == std::io::ErrorKind::NotFound =>
            {
                Ok(None)
            }
            Err(e) => {
                self.errors += 1;
                self.shared.warn(e.to_string());
                Ok(None)
            }
        }
    }

    /// Finished nodes from resolved pending ones, writing the trees of pending subtrees (hold
    /// mode) bottom-up. Anything still waiting means the pipeline stopped early.
    pub(super) fn nodes(&mut self, pending: Vec<Pending>) -> Result<Vec<Node>> {
        let mut out = Vec::with_capacity(pending.len());
        for p in pending {
            match p {
                Pending::Ready(n) => out.push(n),
                Pending::Gone => {}
                Pending::File(..) | Pending::Open(_) => return Err(Error::Interrupted),
                Pending::Dir(mut n, children) => {
                    let mut tree = Tree {
                        nodes: self.nodes(children)?,
                    };
                    n.subtree = Some(self.save_tree(&mut tree)?);
                    out.push(n);
                }
            }
        }
        Ok(out)
    }

    pub(super) fn save_tree(&mut self, tree: &mut Tree) -> Result<Id> {
        let bytes = tree.to_bytes();
        let id = self.shared.repo.key().blob_id(&bytes);
        if self.shared.claim(&id) {
            if self.compressor.is_none() {
                self.compressor = Some(
                    zstd::bulk::Compressor::new(self.level).map_err(|e| Error::io("zstd", e))?,
                );
            }
            let blob = seal_blob(
                self.shared.repo,
                self.level,
                id,
                BlobType::Tree,
                &bytes,
                self.compressor.as_mut(),
            )?;
            self.shared.tree_blobs.fetch_add(1, Relaxed);
            self.shared
                .bytes_added
                .fetch_add(bytes.len() as u64, Relaxed);
            self.shared
                .bytes_stored
                .fetch_add(blob.bytes.len() as u64, Relaxed);
            self.sealed.send(blob).map_err(|_| Error::Interrupted)?;
        }
        Ok(id)
    }
}
