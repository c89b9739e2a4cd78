//! A repository in a local directory. Writes are atomic: a temporary file in `<root>/tmp`, fsync,
//! rename, then fsync of the parent directory, so a crash leaves either the old state or the new.

use std::fs::{self, File};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::{Backend, ObjectInfo, Payload, PutMode, PutOutcome};
use crate::error::{Error, IoContext, Result};

/// A directory holding a repository.
pub struct LocalBackend {
    root: PathBuf,
    counter: AtomicU64,
}

impl LocalBackend {
    /// A backend rooted at `root` (which need not exist until `create`).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalBackend {
            root: root.into(),
            counter: AtomicU64::new(0),
        }
    }

    fn path(&self, key: &str) -> Result<PathBuf> {
        super::validate_key(key)?;
        Ok(self.root.join(key))
    }

    /// A temporary file name no other writer uses: the pid, a counter and 64 random bits. The
    /// counter alone is per backend instance, so two instances in one process (or a pid reused
    /// on another machine sharing the directory) could pick the same name and one create-only
    /// put would link the other's bytes: both would "win".
    fn tmp_path(&self) -> PathBuf {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let r = u64::from_le_bytes(crate::crypto::random_bytes());
        self.root
            .join("tmp")
            .join(format!("put-{}-{n}-{r:016x}", std::process::id()))
    }

    fn not_found_or(&self, key: &str, e: std::io::Error) -> Error {
        if e.kind() == ErrorKind::NotFound {
            Error::NotFound { key: key.into() }
        } else {
            Error::io(format!("{}", self.root.join(key).display()), e)
        }
    }
}

/// The version token of a local file: inode, change time (ns) and size. The change time is set
/// by the kernel on every write, rename or chmod and cannot be set back by a user (unlike the
/// modification time), so a rewrite in place or a replacement shows as a new token.
fn version_of(meta: &fs::Metadata) -> String {
    format!(
        "{:x}-{}.{:09}-{}",
        meta.ino(),
        meta.ctime(),
        meta.ctime_nsec(),
        meta.len()
    )
}

fn sync_dir(dir: &Path) {
    // Directory fsync makes the rename durable; failure (e.g. on some FUSE mounts) is not fatal.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

impl Backend for LocalBackend {
    fn location(&self) -> String {
        self.root.display().to_string()
    }

    fn create(&self) -> Result<()> {
        for sub in ["", "tmp", "data", "index", "snapshots", "keys"] {
            let p = self.root.join(sub);
            fs::create_dir_all(&p).ctx(|| format!("cannot create {}", p.display()))?;
        }
        Ok(())
    }

    /// See [`Backend::get`]: the file's length is checked against `max` before reading, and
    /// the read itself stops at `max + 1` bytes (a file growing meanwhile is refused too).
    fn get(&self, key: &str, max: u64) -> Result<Vec<u8>> {
        let f = File::open(self.path(key)?).map_err(|e| self.not_found_or(key, e))?;
        let len = f
            .metadata()
            .map_err(|e| Error::io(format!("cannot stat {}", self.root.join(key).display()), e))?
            .len();
        crate::backend::check_size(key, len, max)?;
        let mut data = Vec::with_capacity(len as usize);
        f.take(max.saturating_add(1))
            .read_to_end(&mut data)
            .map_err(|e| Error::io(format!("cannot read {}", self.root.join(key).display()), e))?;
        crate::backend::check_size(key, data.len() as u64, max)?;
        Ok(data)
    }

    /// See [`Backend::get_range`]: a range past the end of the file is refused before any
    /// buffer is allocated ("shorter than the requested range", not retryable).
    fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        let f = File::open(self.path(key)?).map_err(|e| self.not_found_or(key, e))?;
        let size = f
            .metadata()
            .map_err(|e| Error::io(format!("cannot stat {}", self.root.join(key).display()), e))?
            .len();
        if offset.checked_add(len).is_none_or(|end| end > size) {
            return Err(Error::corrupt(
                key,
                format!("object is shorter than the requested range {offset}+{len}"),
            ));
        }
        let mut buf = vec![0u8; len as usize];
        f.read_exact_at(&mut buf, offset).map_err(|e| {
            if e.kind() == ErrorKind::UnexpectedEof {
                Error::corrupt(
                    key,
                    format!("object is shorter than the requested range {offset}+{len}"),
                )
            } else {
                Error::io(key.to_string(), e)
            }
        })?;
        Ok(buf)
    }

    fn put(&self, key: &str, payload: Payload<'_>, mode: PutMode) -> Result<PutOutcome> {
        self.put_versioned(key, payload, mode).map(|(o, _)| o)
    }

    /// See [`Backend::put_versioned`]: the version is the token of the file just written
    /// (stat after the rename or link; see [`Backend::list`]), `None` when it already existed.
    fn put_versioned(
        &self,
        key: &str,
        payload: Payload<'_>,
        mode: PutMode,
    ) -> Result<(PutOutcome, Option<String>)> {
        let dest = self.path(key)?;
        if mode == PutMode::IfAbsent && dest.exists() {
            return Ok((PutOutcome::AlreadyExists, None));
        }
        let parent = dest.parent().expect("keys have a parent");
        fs::create_dir_all(parent).ctx(|| format!("cannot create {}", parent.display()))?;
        let tmp_dir = self.root.join("tmp");
        fs::create_dir_all(&tmp_dir).ctx(|| format!("cannot create {}", tmp_dir.display()))?;
        let tmp = match payload {
            Payload::Bytes(data) => {
                let tmp = self.tmp_path();
                let mut f =
                    File::create(&tmp).ctx(|| format!("cannot create {}", tmp.display()))?;
                f.write_all(data)
                    .and_then(|_| f.sync_all())
                    .ctx(|| format!("cannot write {}", tmp.display()))?;
                tmp
            }
            Payload::File(src) => {
                let tmp = self.tmp_path();
                // Same file system (the packer stages in staging_dir()): a rename, no copy.
                if fs::rename(src, &tmp).is_err() {
                    fs::copy(src, &tmp)
                        .ctx(|| format!("cannot copy {} to {}", src.display(), tmp.display()))?;
                }
                File::open(&tmp)
                    .and_then(|f| f.sync_all())
                    .ctx(|| format!("cannot sync {}", tmp.display()))?;
                tmp
            }
        };
        let result = match mode {
            PutMode::Overwrite => fs::rename(&tmp, &dest).map(|_| PutOutcome::Written),
            // hard_link fails if dest exists: an atomic create-if-absent on POSIX file systems.
            PutMode::IfAbsent => match fs::hard_link(&tmp, &dest) {
                Ok(()) => Ok(PutOutcome::Written),
                Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(PutOutcome::AlreadyExists),
                Err(e) => Err(e),
            },
        };
        // Stat only once the temporary name is gone: after a link, unlinking the other name
        // changes the shared inode's change time again.
        let _ = fs::remove_file(&tmp);
        let outcome = result.ctx(|| format!("cannot store {}", dest.display()))?;
        sync_dir(parent);
        let version = match outcome {
            PutOutcome::Written => fs::metadata(&dest).ok().map(|m| version_of(&m)),
            PutOutcome::AlreadyExists => None,
        };
        Ok((outcome, version))
    }

    /// See [`Backend::list`]. Only names that are valid keys
    /// ([`crate::backend::validate_key`]: printable ASCII, no `.`/`..`) are listed; any other
    /// file (a non-UTF-8 or non-ASCII name, say) is skipped with a warning that quotes it
    /// escaped. More than
    /// [`crate::repository::limits::MAX_LIST`] keys is an error naming the prefix. `version` is
    /// the inode, change time and size of each file.
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        // Walk the directory holding the prefix; keys are relative paths with '/' separators.
        let (dir_part, _) = prefix.rsplit_once('/').unwrap_or(("", prefix));
        let start = if dir_part.is_empty() {
            self.root.clone()
        } else {
            if super::validate_key(dir_part).is_err() {
                return Err(Error::invalid(format!("invalid listing prefix {prefix:?}")));
            }
            self.root.join(dir_part)
        };
        let max = crate::repository::limits::MAX_LIST;
        let mut skipped = 0u64;
        let mut out = Vec::new();
        let mut stack = vec![start];
        while let Some(dir) = stack.pop() {
            let rd = match fs::read_dir(&dir) {
                Ok(rd) => rd,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io(format!("cannot list {}", dir.display()), e)),
            };
            for entry in rd {
                let entry = entry.ctx(|| format!("cannot list {}", dir.display()))?;
                let path = entry.path();
                let Ok(rel) = path.strip_prefix(&self.root) else {
                    continue;
                };
                let rel = match rel.to_str() {
                    Some(r) if super::validate_key(r).is_ok() => r.to_string(),
                    _ => {
                        skipped += 1;
                        if skipped <= 10 {
                            tracing::warn!(
                                "listing {prefix}: ignoring {:?}: not a valid object key",
                                rel.as_os_str()
                            );
                        }
                        continue;
                    }
                };
                if rel == "tmp" || rel.starts_with("tmp/") {
                    continue;
                }
                let ft = entry
                    .file_type()
                    .ctx(|| format!("cannot stat {}", path.display()))?;
                if ft.is_dir() {
                    if prefix.starts_with(&(rel.clone() + "/")) || rel.starts_with(prefix) {
                        stack.push(path);
                    }
                } else if rel.starts_with(prefix) {
                    let meta = match entry.metadata() {
                        Ok(m) => m,
                        // Deleted since the directory was read: no longer listed.
                        Err(e) if e.kind() == ErrorKind::NotFound => continue,
                        Err(e) => {
                            return Err(Error::io(format!("cannot stat {}", path.display()), e));
                        }
                    };
                    if out.len() >= max {
                        return Err(Error::Backend {
                            key: prefix.to_string(),
                            message: format!(
                                "listing holds more than {max} keys; refusing to go on"
                            ),
                            retryable: false,
                        });
                    }
                    out.push(ObjectInfo {
                        key: rel,
                        size: meta.len(),
                        modified: meta.modified().ok(),
                        version: Some(version_of(&meta)),
                    });
                }
            }
        }
        if skipped > 10 {
            tracing::warn!("listing {prefix}: ignored {skipped} invalid names in all");
        }
        Ok(out)
    }

    fn delete(&self, key: &str) -> Result<()> {
        match fs::remove_file(self.path(key)?) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(format!("cannot delete {key}"), e)),
        }
    }

    fn staging_dir(&self) -> Option<PathBuf> {
        let d = self.root.join("tmp");
        fs::create_dir_all(&d).ok()?;
        Some(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_sparse_file_is_refused_unread_and_versions_change_with_the_bytes() {
        let tmp = tempfile::tempdir().unwrap();
        let b = LocalBackend::new(tmp.path());
        b.create().unwrap();
        let f = File::create(tmp.path().join("index/big")).unwrap();
        f.set_len(3 << 30).unwrap();
        let e = b.get("index/big", 32 << 20).unwrap_err().to_string();
        assert!(
            e.contains("index/big") && e.contains("3221225472 bytes"),
            "{e}"
        );

        let (_, v1) = b
            .put_versioned("keys/k", Payload::Bytes(b"one"), PutMode::IfAbsent)
            .unwrap();
        let listed = b.list("keys/").unwrap();
        assert_eq!(listed[0].version, v1);
        assert!(v1.is_some());
        let (o, v) = b
            .put_versioned("keys/k", Payload::Bytes(b"two"), PutMode::IfAbsent)
            .unwrap();
        assert_eq!((o, v), (PutOutcome::AlreadyExists, None));
        let (_, v2) = b
            .put_versioned("keys/k", Payload::Bytes(b"two"), PutMode::Overwrite)
            .unwrap();
        assert_ne!(v1, v2);
        assert_eq!(b.list("keys/").unwrap()[0].version, v2);
    }
}
