//! Request accounting: counts every request and byte that crosses the backend, so each command can
//! report what it cost (S3 bills per request and per byte). A wrapper, so every backend gets it.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::Serialize;

use super::{Backend, ObjectInfo, Payload, PutMode, PutOutcome};
use crate::error::Result;

/// A snapshot of the counters.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct RequestStats {
    /// Object writes.
    pub put: u64,
    /// Whole and ranged reads.
    pub get: u64,
    /// Existence checks.
    pub head: u64,
    /// Listing calls (pages, for S3).
    pub list: u64,
    /// Deletes.
    pub delete: u64,
    /// Bytes written.
    pub bytes_up: u64,
    /// Bytes read.
    pub bytes_down: u64,
}

impl RequestStats {
    /// Total requests of all kinds.
    pub fn total(&self) -> u64 {
        self.put + self.get + self.head + self.list + self.delete
    }
}

impl std::fmt::Display for RequestStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} PUT, {} GET, {} HEAD, {} LIST, {} DELETE; {} up, {} down",
            self.put,
            self.get,
            self.head,
            self.list,
            self.delete,
            crate::format::bytes(self.bytes_up),
            crate::format::bytes(self.bytes_down)
        )
    }
}

/// Wraps a backend and counts what passes through.
pub struct Counting<B> {
    inner: B,
    put: AtomicU64,
    get: AtomicU64,
    list: AtomicU64,
    delete: AtomicU64,
    up: AtomicU64,
    down: AtomicU64,
}

impl<B: Backend> Counting<B> {
    /// Starts counting from zero.
    pub fn new(inner: B) -> Self {
        Counting {
            inner,
            put: AtomicU64::new(0),
            get: AtomicU64::new(0),
            list: AtomicU64::new(0),
            delete: AtomicU64::new(0),
            up: AtomicU64::new(0),
            down: AtomicU64::new(0),
        }
    }

    /// The counters so far.
    pub fn stats(&self) -> RequestStats {
        if let Some(real) = self.inner.requests() {
            return real;
        }
        RequestStats {
            put: self.put.load(Relaxed),
            get: self.get.load(Relaxed),
            list: self.list.load(Relaxed),
            delete: self.delete.load(Relaxed),
            head: 0,
            bytes_up: self.up.load(Relaxed),
            bytes_down: self.down.load(Relaxed),
        }
    }
}

impl<B: Backend> Backend for Counting<B> {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn create(&self) -> Result<()> {
        self.inner.create()
    }
    fn get(&self, key: &str, max: u64) -> Result<Vec<u8>> {
        self.get.fetch_add(1, Relaxed);
        let v = self.inner.get(key, max)?;
        self.down.fetch_add(v.len() as u64, Relaxed);
        Ok(v)
    }
    fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        self.get.fetch_add(1, Relaxed);
        let v = self.inner.get_range(key, offset, len)?;
        self.down.fetch_add(v.len() as u64, Relaxed);
        Ok(v)
    }
    fn put(&self, key: &str, payload: Payload<'_>, mode: PutMode) -> Result<PutOutcome> {
        // One accounting path: every backend's put is its put_versioned without the token.
        Ok(self.put_versioned(key, payload, mode)?.0)
    }
    fn put_versioned(
        &self,
        key: &str,
        payload: Payload<'_>,
        mode: PutMode,
    ) -> Result<(PutOutcome, Option<String>)> {
        self.put.fetch_add(1, Relaxed);
        let n = match payload {
            Payload::Bytes(b) => b.len() as u64,
            Payload::File(p) => std::fs::metadata(p).map(|m| m.len()).unwrap_or(0),
        };
        let out = self.inner.put_versioned(key, payload, mode)?;
        if out.0 == PutOutcome::Written {
            self.up.fetch_add(n, Relaxed);
        }
        Ok(out)
    }
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        self.list.fetch_add(1, Relaxed);
        self.inner.list(prefix)
    }
    fn delete(&self, key: &str) -> Result<()> {
        self.delete.fetch_add(1, Relaxed);
        self.inner.delete(key)
    }
    fn staging_dir(&self) -> Option<std::path::PathBuf> {
        self.inner.staging_dir()
    }
    fn requests(&self) -> Option<RequestStats> {
        self.inner.requests()
    }
    fn concurrency(&self) -> usize {
        self.inner.concurrency()
    }
}

impl Backend for Box<dyn Backend> {
    fn location(&self) -> String {
        (**self).location()
    }
    fn create(&self) -> Result<()> {
        (**self).create()
    }
    fn get(&self, key: &str, max: u64) -> Result<Vec<u8>> {
        (**self).get(key, max)
    }
    fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        (**self).get_range(key, offset, len)
    }
    fn put(&self, key: &str, payload: Payload<'_>, mode: PutMode) -> Result<PutOutcome> {
        (**self).put(key, payload, mode)
    }
    fn put_versioned(
        &self,
        key: &str,
        payload: Payload<'_>,
        mode: PutMode,
    ) -> Result<(PutOutcome, Option<String>)> {
        (**self).put_versioned(key, payload, mode)
    }
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        (**self).list(prefix)
    }
    fn delete(&self, key: &str) -> Result<()> {
        (**self).delete(key)
    }
    fn staging_dir(&self) -> Option<std::path::PathBuf> {
        (**self).staging_dir()
    }
    fn requests(&self) -> Option<RequestStats> {
        (**self).requests()
    }
    fn concurrency(&self) -> usize {
        (**self).concurrency()
    }
}
