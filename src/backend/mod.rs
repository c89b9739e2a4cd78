//! Storage backends: a store of opaque named bytes. Backends never see plaintext, packs or
//! snapshots, only keys like `data/ab/ab12…` and byte strings; everything above this trait works
//! the same on a local directory and on S3. Accounting wraps the trait rather than living in each
//! implementation.

mod counting;
pub mod limit;
mod local;
mod retry;
pub mod s3;
mod throttle;

use std::path::Path;

pub use counting::{Counting, RequestStats};
pub use local::LocalBackend;
pub use retry::{Retry, RetryPolicy};
pub use s3::{S3Backend, S3Location};
pub use throttle::{Adaptive, is_throttle};

use crate::error::Result;

/// What to store.
#[derive(Clone, Copy)]
pub enum Payload<'a> {
    /// Bytes in memory.
    Bytes(&'a [u8]),
    /// A finished temporary file. The backend may move it away (the caller must not reuse it) or
    /// leave it in place; the caller removes whatever is left afterwards.
    File(&'a Path),
}

/// Whether an existing object may be replaced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PutMode {
    /// Replace silently. Only for content-addressed names, where the old bytes are the same bytes.
    Overwrite,
    /// Fail-safe create (`If-None-Match: *` on S3): never replace an existing object.
    IfAbsent,
}

/// What a put did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PutOutcome {
    /// The object now holds the payload.
    Written,
    /// `IfAbsent` found an object already there and left it untouched.
    AlreadyExists,
}

/// One listed object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Full key, e.g. `data/ab/ab12…`.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// When the object was last written, as the store reports it. Prune uses it to leave young
    /// packs alone (a running backup's, and on Storj any younger than the 30-day minimum).
    pub modified: Option<std::time::SystemTime>,
    /// An opaque token that changes whenever the object's bytes may have changed: the S3 `ETag`,
    /// or for a local file its inode, change time and size. `None` when the store gives none.
    /// The verified-pack ledger ([`crate::repository::verified`]) trusts a pack it once read in
    /// full only while this token is unchanged.
    pub version: Option<String>,
}

/// A store of named bytes.
///
/// Contracts every implementation keeps (the conformance tests in `tests/` check them):
/// - `get`/`get_range` on an absent key return [`crate::Error::NotFound`];
/// - `get_range` returns exactly `len` bytes or an error, never a short read;
/// - a `put` is atomic: readers see the old object, nothing, or the whole new one;
/// - `list` returns every key under `prefix` in no particular order;
/// - `delete` of an absent key succeeds.
pub trait Backend: Send + Sync {
    /// A human-readable location for messages (`/srv/repo`, `s3:bucket/prefix`).
    fn location(&self) -> String;

    /// Creates the container (directory, bucket) if needed. Called by `init` only.
    fn create(&self) -> Result<()>;

    /// Reads a whole object of at most `max` bytes. An object larger than `max` (by its
    /// declared length or by the bytes that actually arrive) is an error naming it, and no more
    /// than about `max` bytes are ever buffered: a hostile store cannot make the reader allocate
    /// more than the caller budgeted for the object's kind.
    fn get(&self, key: &str, max: u64) -> Result<Vec<u8>>;

    /// Reads `len` bytes at `offset`.
    fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Vec<u8>>;

    /// Stores an object.
    fn put(&self, key: &str, payload: Payload<'_>, mode: PutMode) -> Result<PutOutcome>;

    /// Like [`Backend::put`], and also returns the stored object's version token (see
    /// [`ObjectInfo::version`]) when the store reports one with the write, so that a writer can
    /// later tell whether its own object was changed. The default reports none.
    fn put_versioned(
        &self,
        key: &str,
        payload: Payload<'_>,
        mode: PutMode,
    ) -> Result<(PutOutcome, Option<String>)> {
        Ok((self.put(key, payload, mode)?, None))
    }

    /// Lists all objects whose key starts with `prefix`.
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>>;

    /// Removes an object.
    fn delete(&self, key: &str) -> Result<()>;

    /// A directory where temporary files can be created so that `put(Payload::File)` is a cheap
    /// rename. `None` means any temporary directory will do.
    fn staging_dir(&self) -> Option<std::path::PathBuf> {
        None
    }

    /// Real requests sent, when the backend counts them itself (retries and list pages included).
    /// `None` lets the accounting wrapper count calls instead.
    fn requests(&self) -> Option<RequestStats> {
        None
    }

    /// How many requests are worth having in flight at once (uploads, restore reads).
    fn concurrency(&self) -> usize {
        2
    }
}

/// The error for an object larger than its kind allows (see [`Backend::get`]).
pub fn check_size(key: &str, size: u64, max: u64) -> crate::Result<()> {
    if size > max {
        return Err(crate::Error::corrupt(
            key,
            format!("{size} bytes is more than the {max} an object of its kind may hold"),
        ));
    }
    Ok(())
}

/// Rejects keys no backend should accept: empty or `.`/`..` components, a leading `/`,
/// non-printable or non-ASCII bytes, more than 1024 bytes (S3's and Storj's key limit).
/// Repository keys are always like `data/ab/<64 hex>`; anything else is a bug or hostile input.
pub fn validate_key(key: &str) -> crate::Result<()> {
    let ok = !key.is_empty()
        && key.len() <= 1024
        && !key.starts_with('/')
        && key.bytes().all(|b| b.is_ascii_graphic())
        && !key
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..");
    if ok {
        Ok(())
    } else {
        Err(crate::Error::invalid(format!("invalid object key {key:?}")))
    }
}

/// Opens the backend a repository string names: a plain path or `file:PATH` is a local directory;
/// `s3:https://HOST/BUCKET/PREFIX`, `s3:http://…` or `s3://BUCKET/PREFIX` (endpoint from
/// `AWS_ENDPOINT_URL`) is S3. Remote backends come wrapped in retries, each attempt under the
/// adaptive in-flight limit.
pub fn open(location: &str) -> Result<Box<dyn Backend>> {
    let b = open_unlimited(location)?;
    let limits = limit::get();
    if limits == limit::Limits::default() {
        return Ok(b);
    }
    Ok(Box::new(limit::Limited::new(b, limits)))
}

fn open_unlimited(location: &str) -> Result<Box<dyn Backend>> {
    if location.starts_with("s3:") {
        let loc = S3Location::parse(location, std::env::var("AWS_ENDPOINT_URL").ok())?;
        return Ok(Box::new(Retry::new(
            Adaptive::new(S3Backend::new(loc)?),
            RetryPolicy::from_env(),
        )));
    }
    if let Some(rest) = location.strip_prefix("file:") {
        return Ok(Box::new(LocalBackend::new(rest)));
    }
    if location.is_empty() {
        return Err(crate::Error::invalid(
            "no repository given: pass --repo PATH or set LIFEBOAT_REPOSITORY",
        ));
    }
    refuse_foreign_scheme(location)?;
    Ok(Box::new(LocalBackend::new(location)))
}

/// A location that looks like a URL of another scheme (`https://gateway.storjshare.io/bucket`)
/// would otherwise become a local directory named `https:` — backups that die with the container.
/// Refused, with the spelling that works.
fn refuse_foreign_scheme(location: &str) -> Result<()> {
    let Some((scheme, rest)) = location.split_once("://") else {
        return Ok(());
    };
    let is_scheme = !scheme.is_empty()
        && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !is_scheme {
        return Ok(());
    }
    let hint = match scheme.to_ascii_lowercase().as_str() {
        "http" | "https" => format!("did you mean s3:{location}?"),
        _ => format!(
            "use s3:https://HOST/BUCKET/PREFIX, s3://BUCKET/PREFIX, a directory path or file:PATH (not {scheme}://{rest})"
        ),
    };
    Err(crate::Error::invalid(format!(
        "repository {location:?} is not a location lifeboat knows: {hint} (a local directory named {scheme}: would not survive the container)"
    )))
}
