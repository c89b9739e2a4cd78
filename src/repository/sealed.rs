//! Objects that are one sealed, zstd-compressed item named by their key: archived PostgreSQL WAL
//! (`wal/`) and replicated SQLite change sets (`sqlite/`). The envelope's associated data is the
//! object key, so an object cannot be moved to another name, volume or kind.

use std::io::Read;

use super::Repository;
use crate::backend::{Payload, PutMode, PutOutcome};
use crate::crypto::Kind;
use crate::error::{Error, Result};

impl Repository {
    /// Compresses, seals and stores `plain` under `key`, create-if-absent. `Some(bytes)` when it
    /// was written; `None` when an object already has that key (a retry whose first attempt
    /// landed, or a conflict: the caller reads it back and compares).
    pub fn put_sealed(&self, kind: Kind, key: &str, plain: &[u8]) -> Result<Option<u64>> {
        let compressed = zstd::bulk::compress(plain, 3)
            .map_err(|e| Error::io(format!("compressing {key}"), e))?;
        let sealed = self.key().sealer(kind).seal(key.as_bytes(), &compressed);
        match self
            .backend()
            .put(key, Payload::Bytes(&sealed), PutMode::IfAbsent)?
        {
            PutOutcome::Written => Ok(Some(sealed.len() as u64)),
            PutOutcome::AlreadyExists => Ok(None),
        }
    }

    /// Reads, authenticates and decompresses `key` (at most `max` bytes each way).
    /// `Error::NotFound` only when the store has no such object; anything unreadable is an
    /// error naming the object, never "not found".
    pub fn get_sealed(&self, kind: Kind, key: &str, max: u64) -> Result<Vec<u8>> {
        let sealed = self.backend().get(key, max)?;
        let plain = self
            .key()
            .sealer(kind)
            .open(key.as_bytes(), &sealed, &|| key.to_string())?;
        let mut out = Vec::new();
        zstd::stream::read::Decoder::new(&plain[..])
            .and_then(|d| d.take(max).read_to_end(&mut out))
            .map_err(|e| Error::corrupt(key.to_string(), format!("cannot decompress: {e}")))?;
        Ok(out)
    }
}
