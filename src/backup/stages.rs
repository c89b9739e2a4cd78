//! The backup pipeline's stages, each on its own threads, joined by bounded channels: readers
//! chunk and hash files (sealing small files themselves), sealers compress and encrypt the
//! chunks of large files, one packer fills packs in the staging directory, uploaders store
//! finished packs. A stage stops when its input
//! channel closes; the first fatal error ([`Shared::fail`]) makes every stage stop early.

use super::*;

/// Files up to this size are sealed (compressed, encrypted) by the reader that read them: a
/// hand-off to a sealer costs more than the work. Larger files' chunks go to the sealers, so
/// one big file still keeps every core busy.
const SEAL_INLINE_BELOW: u64 = 1 << 20;

pub(super) fn read_stage(
    shared: &Shared,
    level: i32,
    jobs: Receiver<Vec<FileJob>>,
    raw: Sender<RawBlob>,
    sealed: Sender<SealedBlob>,
    results: Sender<(usize, Result<FileOutcome>)>,
) {
    let mut chunker = Chunker::new(&shared.repo.config().chunker);
    let Some(mut comp) = compressor(shared, level) else {
        return;
    };
    for batch in jobs.iter() {
        for job in batch {
            let r = if shared.aborted() {
                Err(Error::Interrupted)
            } else {
                let mut sink = if job.size < SEAL_INLINE_BELOW {
                    Sink::Sealed(&sealed, &mut comp, level)
                } else {
                    Sink::Raw(&raw)
                };
                read_file(shared, &mut chunker, &job.path, &mut sink)
            };
            shared.progress.files_done.fetch_add(1, Relaxed);
            let _ = results.send((job.idx, r));
        }
    }
}

fn read_file(
    shared: &Shared,
    chunker: &mut Chunker,
    path: &Path,
    sink: &mut Sink,
) -> Result<FileOutcome> {
    let file = std::fs::File::open(path).ctx(|| format!("{}: cannot open", path.display()))?;
    let mut content = Vec::new();
    let size = chunk_into(shared, chunker, file, sink, &mut content).map_err(|e| match e {
        Error::Io { source, .. } => Error::io(format!("{}: read failed", path.display()), source),
        other => other,
    })?;
    Ok(FileOutcome { content, size })
}

/// Where new chunks go: to the sealers, or sealed here and straight to the packer.
pub(super) enum Sink<'a> {
    Raw(&'a Sender<RawBlob>),
    Sealed(
        &'a Sender<SealedBlob>,
        &'a mut zstd::bulk::Compressor<'static>,
        i32,
    ),
}

/// Chunks a stream, sends unseen chunks on, and records the content list.
pub(super) fn chunk_into<R: std::io::Read>(
    shared: &Shared,
    chunker: &mut Chunker,
    src: R,
    sink: &mut Sink,
    content: &mut Vec<Id>,
) -> Result<u64> {
    let key = shared.repo.key();
    let n = chunker.chunk(src, |data: &[u8]| -> Result<()> {
        if shared.aborted() {
            return Err(Error::Interrupted);
        }
        let id = key.blob_id(data);
        content.push(id);
        shared.bytes_read.fetch_add(data.len() as u64, Relaxed);
        shared
            .progress
            .bytes_done
            .fetch_add(data.len() as u64, Relaxed);
        if shared.claim(&id) {
            match sink {
                Sink::Raw(raw) => raw
                    .send(RawBlob {
                        id,
                        kind: BlobType::Data,
                        data: data.to_vec(),
                    })
                    .map_err(|_| ()),
                Sink::Sealed(sealed, comp, level) => {
                    let s = seal_blob(shared.repo, *level, id, BlobType::Data, data, Some(comp))?;
                    count_sealed(shared, data.len(), &s);
                    sealed.send(s).map_err(|_| ())
                }
            }
            .map_err(|()| Error::Interrupted)?;
        }
        Ok(())
    })?;
    Ok(n)
}

/// A zstd context for one thread; failing to make one fails the backup.
fn compressor(shared: &Shared, level: i32) -> Option<zstd::bulk::Compressor<'static>> {
    zstd::bulk::Compressor::new(level)
        .map_err(|e| shared.fail(Error::io("zstd", e)))
        .ok()
}

fn count_sealed(shared: &Shared, raw_len: usize, s: &SealedBlob) {
    shared.data_blobs.fetch_add(1, Relaxed);
    shared.bytes_added.fetch_add(raw_len as u64, Relaxed);
    shared.bytes_stored.fetch_add(s.bytes.len() as u64, Relaxed);
}

/// Compresses (when that helps) and seals one blob.
pub(crate) fn seal_blob(
    repo: &Repository,
    level: i32,
    id: Id,
    kind: BlobType,
    data: &[u8],
    compressor: Option<&mut zstd::bulk::Compressor<'static>>,
) -> Result<SealedBlob> {
    let compressed = match compressor {
        Some(c) => c.compress(data),
        None => zstd::bulk::compress(data, level),
    }
    .map_err(|e| Error::io("zstd compression", e))?;
    let (flags, plain) = if compressed.len() < data.len() {
        (FLAG_ZSTD, &compressed[..])
    } else {
        (0, data)
    };
    Ok(SealedBlob {
        id,
        kind,
        flags,
        raw_length: data.len() as u32,
        bytes: repo.key().sealer(kind.seal_kind()).seal(&id.0, plain),
    })
}

pub(super) fn seal_stage(
    shared: &Shared,
    level: i32,
    raw: Receiver<RawBlob>,
    sealed: Sender<SealedBlob>,
) {
    let Some(mut comp) = compressor(shared, level) else {
        return;
    };
    for blob in raw.iter() {
        if shared.aborted() {
            continue;
        }
        match seal_blob(
            shared.repo,
            level,
            blob.id,
            blob.kind,
            &blob.data,
            Some(&mut comp),
        ) {
            Ok(s) => {
                count_sealed(shared, blob.data.len(), &s);
                if sealed.send(s).is_err() {
                    return;
                }
            }
            Err(e) => shared.fail(e),
        }
    }
}

pub(super) fn pack_stage(
    shared: &Shared,
    staging: &Path,
    sealed: Receiver<SealedBlob>,
    packs: Sender<FinishedPack>,
) {
    let mut packer = Packer::new(
        shared.repo.key(),
        staging,
        shared.repo.config().pack_size as u64,
    );
    for blob in sealed.iter() {
        if shared.aborted() {
            continue;
        }
        match packer.add(blob) {
            Ok(Some(p)) => {
                if packs.send(p).is_err() {
                    return;
                }
            }
            Ok(None) => {}
            Err(e) => shared.fail(e),
        }
    }
    if shared.aborted() {
        return;
    }
    match packer.finish() {
        Ok(done) => {
            for p in done {
                if packs.send(p).is_err() {
                    return;
                }
            }
        }
        Err(e) => shared.fail(e),
    }
}

/// Uploads a closed pack (and keeps tree packs in the local cache).
pub(crate) fn upload_pack(repo: &Repository, p: &FinishedPack) -> Result<()> {
    let key = pack::pack_key(&p.id);
    if p.entries.first().is_some_and(|e| e.kind == BlobType::Tree) {
        // The next backup walks these trees as its parent: keep them local.
        repo.cache_file(&key, &p.file);
    }
    let size = std::fs::metadata(&p.file)
        .ctx(|| format!("{}: staged pack", p.file.display()))?
        .len();
    let (_, version) =
        repo.backend()
            .put_versioned(&key, Payload::File(&p.file), PutMode::Overwrite)?;
    // Written from bytes this process sealed and hashed: verified by construction.
    repo.ledger().record(p.id, size, version);
    Ok(())
}

pub(super) fn upload_stage(
    shared: &Shared,
    packs: Receiver<FinishedPack>,
    done: Sender<(Id, Vec<PackEntry>)>,
) {
    for p in packs.iter() {
        if shared.aborted() {
            continue;
        }
        match upload_pack(shared.repo, &p) {
            Ok(()) => {
                let _ = done.send((p.id, p.entries));
            }
            Err(e) => shared.fail(e),
        }
    }
}
