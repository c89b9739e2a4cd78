//! The packer: appends sealed blobs to an open pack file per blob type (data and trees go to
//! separate packs, so a parent snapshot's trees load in a few reads), hashing as it writes, and
//! closes a pack with its sealed header once it reaches the target size. Packs are staged as
//! temporary files so memory does not grow with the pack size: in the backend's staging directory
//! (the repository itself for a local one), else in `LIFEBOAT_STAGING_DIR`, else in TMPDIR. The
//! agent checks the staging directory for room at start (see `agent::config::check_staging`).

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::crypto::MasterKey;
use crate::error::{IoContext, Result};
use crate::id::Id;
use crate::repository::pack::{self, BlobType, PackEntry};

/// A blob ready for a pack.
pub struct SealedBlob {
    /// Keyed hash of the plaintext.
    pub id: Id,
    /// Data or tree.
    pub kind: BlobType,
    /// Compression flags.
    pub flags: u8,
    /// Plaintext length.
    pub raw_length: u32,
    /// The envelope.
    pub bytes: Vec<u8>,
}

/// A closed pack waiting for upload. The temporary file is removed when this is dropped.
pub struct FinishedPack {
    /// BLAKE3 of the pack's bytes: its name.
    pub id: Id,
    /// Blob entries in pack order.
    pub entries: Vec<PackEntry>,
    /// The staged file.
    pub file: tempfile::TempPath,
    /// Bytes in the pack.
    pub size: u64,
}

struct OpenPack {
    out: BufWriter<std::fs::File>,
    path: tempfile::TempPath,
    hasher: blake3::Hasher,
    entries: Vec<PackEntry>,
    size: u64,
}

/// Builds packs from sealed blobs.
pub struct Packer<'a> {
    key: &'a MasterKey,
    dir: PathBuf,
    target: u64,
    open: [Option<OpenPack>; 2],
}

impl<'a> Packer<'a> {
    /// Packs staged in `dir` (or `LIFEBOAT_STAGING_DIR` when `dir` is TMPDIR, the fallback for
    /// backends without a staging directory of their own), closed at `target` bytes.
    pub fn new(key: &'a MasterKey, dir: &Path, target: u64) -> Self {
        Packer {
            key,
            dir: staging_dir(dir),
            target,
            open: [None, None],
        }
    }

    /// Appends a blob; returns a pack if this blob filled one.
    pub fn add(&mut self, blob: SealedBlob) -> Result<Option<FinishedPack>> {
        let slot = blob.kind.to_byte() as usize;
        if self.open[slot].is_none() {
            let tmp = tempfile::Builder::new()
                .prefix("pack-")
                .tempfile_in(&self.dir)
                .ctx(|| format!("cannot create a temporary pack in {}", self.dir.display()))?;
            let (file, path) = tmp.into_parts();
            self.open[slot] = Some(OpenPack {
                out: BufWriter::with_capacity(1 << 20, file),
                path,
                hasher: blake3::Hasher::new(),
                entries: Vec::new(),
                size: 0,
            });
        }
        let p = self.open[slot].as_mut().expect("just opened");
        p.out
            .write_all(&blob.bytes)
            .ctx(|| format!("cannot write {}", p.path.display()))?;
        p.hasher.update(&blob.bytes);
        p.entries.push(PackEntry {
            id: blob.id,
            kind: blob.kind,
            flags: blob.flags,
            offset: p.size as u32,
            length: blob.bytes.len() as u32,
            raw_length: blob.raw_length,
        });
        p.size += blob.bytes.len() as u64;
        if p.size >= self.target {
            return self.close(slot).map(Some);
        }
        Ok(None)
    }

    /// Closes every open pack.
    pub fn finish(&mut self) -> Result<Vec<FinishedPack>> {
        let mut out = Vec::new();
        for slot in 0..2 {
            if self.open[slot].is_some() {
                out.push(self.close(slot)?);
            }
        }
        Ok(out)
    }

    fn close(&mut self, slot: usize) -> Result<FinishedPack> {
        let mut p = self.open[slot].take().expect("open pack");
        let header = pack::encode_header(self.key, &p.entries);
        p.out
            .write_all(&header)
            .and_then(|_| p.out.flush())
            .ctx(|| format!("cannot write {}", p.path.display()))?;
        p.hasher.update(&header);
        Ok(FinishedPack {
            id: Id(*p.hasher.finalize().as_bytes()),
            entries: p.entries,
            file: p.path,
            size: p.size + header.len() as u64,
        })
    }
}

/// `dir`, unless it is TMPDIR and `LIFEBOAT_STAGING_DIR` names another directory.
pub fn staging_dir(dir: &Path) -> PathBuf {
    if dir == std::env::temp_dir()
        && let Some(d) = std::env::var_os("LIFEBOAT_STAGING_DIR").filter(|d| !d.is_empty())
    {
        return PathBuf::from(d);
    }
    dir.to_path_buf()
}

/// Packs, uploads and finally indexes blobs outside a backup's pipeline: prune's repack and the
/// repairs. One index object lists everything written, once `finish` is called.
pub struct PackWriter<'r> {
    repo: &'r crate::repository::Repository,
    packer: Packer<'r>,
    written: Vec<(Id, Vec<PackEntry>)>,
    /// Bytes uploaded so far.
    pub bytes: u64,
}

impl<'r> PackWriter<'r> {
    /// A writer staging packs where the backend wants them.
    pub fn new(repo: &'r crate::repository::Repository) -> Self {
        let staging = repo
            .backend()
            .staging_dir()
            .unwrap_or_else(std::env::temp_dir);
        PackWriter {
            repo,
            packer: Packer::new(repo.key(), &staging, repo.config().pack_size as u64),
            written: Vec::new(),
            bytes: 0,
        }
    }

    /// Adds a sealed blob, uploading a pack when one fills.
    pub fn add(&mut self, blob: SealedBlob) -> Result<()> {
        if let Some(p) = self.packer.add(blob)? {
            self.upload(p)?;
        }
        Ok(())
    }

    /// Copies an already sealed blob (from another pack) as it is.
    pub fn copy(&mut self, e: &PackEntry, sealed: &[u8]) -> Result<()> {
        self.add(SealedBlob {
            id: e.id,
            kind: e.kind,
            flags: e.flags,
            raw_length: e.raw_length,
            bytes: sealed.to_vec(),
        })
    }

    fn upload(&mut self, p: FinishedPack) -> Result<()> {
        super::upload_pack(self.repo, &p)?;
        self.bytes += p.size;
        self.written.push((p.id, p.entries));
        Ok(())
    }

    /// Uploads what is left and writes the index object; returns how many packs were written.
    pub fn finish(mut self) -> Result<usize> {
        for p in self.packer.finish()? {
            self.upload(p)?;
        }
        let n = self.written.len();
        if n > 0 {
            self.repo.save_index(&crate::repository::index::IndexFile {
                supersedes: Vec::new(),
                packs: std::mem::take(&mut self.written),
            })?;
        }
        Ok(n)
    }
}
