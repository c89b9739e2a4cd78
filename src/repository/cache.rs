//! A local cache of immutable repository objects (index objects, snapshots, tree packs), so a
//! no-change backup against S3 lists and writes but hardly reads. Correct by construction: these
//! objects are named by the BLAKE3 hash of their bytes, never change, and every cached read is
//! verified against its name. Entries the repository no longer lists are dropped.
//!
//! Keys come from listings of an untrusted store, so none is ever turned into a path unless
//! [`crate::backend::validate_key`] accepts it (no `..`, no leading `/`, printable ASCII only):
//! every file the cache reads, writes or deletes lies inside its directory. Symbolic links found
//! in the cache are never followed by `retain`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::id::Id;

/// Cached copies of one repository's objects.
pub struct Cache {
    dir: PathBuf,
}

/// Where caches live: `LIFEBOAT_CACHE_DIR`, else `$XDG_CACHE_HOME/lifeboat`, else
/// `$HOME/.cache/lifeboat`, else the temporary directory.
pub fn default_base() -> PathBuf {
    if let Some(d) = std::env::var_os("LIFEBOAT_CACHE_DIR") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(d).join("lifeboat");
    }
    if let Some(h) = std::env::var_os("HOME") {
        return PathBuf::from(h).join(".cache/lifeboat");
    }
    std::env::temp_dir().join("lifeboat-cache")
}

impl Cache {
    /// The cache of repository `repo_id` under `base`.
    pub fn new(base: &Path, repo_id: &str) -> Cache {
        Cache {
            dir: base.join(repo_id),
        }
    }

    /// The path caching `key`, or `None` (and a debug note) for a key that is not a valid
    /// object key.
    fn path(&self, key: &str) -> Option<PathBuf> {
        match crate::backend::validate_key(key) {
            Ok(()) => Some(self.dir.join(key)),
            Err(_) => {
                tracing::debug!("cache: not caching the invalid key {key:?}");
                None
            }
        }
    }

    /// A cached object, if present and intact.
    pub fn get(&self, key: &str, id: &Id) -> Option<Vec<u8>> {
        let path = self.path(key)?;
        let bytes = std::fs::read(&path).ok()?;
        if Id::of_bytes(&bytes) != *id {
            let _ = std::fs::remove_file(&path);
            return None;
        }
        Some(bytes)
    }

    /// Stores a copy; failures only cost a later download, so they are logged, not returned.
    pub fn put(&self, key: &str, bytes: &[u8]) {
        let Some(path) = self.path(key) else { return };
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let r = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|_| std::fs::write(&tmp, bytes))
            .and_then(|_| std::fs::rename(&tmp, &path));
        if let Err(e) = r {
            let _ = std::fs::remove_file(&tmp);
            tracing::debug!("cache: cannot store {key}: {e}");
        }
    }

    /// Stores a copy of a file.
    pub fn put_file(&self, key: &str, src: &Path) {
        if self.path(key).is_none() {
            return;
        }
        match std::fs::read(src) {
            Ok(b) => self.put(key, &b),
            Err(e) => tracing::debug!("cache: cannot read {}: {e}", src.display()),
        }
    }

    /// Drops cached objects under `prefix` that are not in `live` (keys as listed). Only
    /// regular files whose path below the cache directory is a valid key are removed; nothing
    /// outside the cache directory is touched (a `prefix` that is not a valid key prefix does
    /// nothing, and symbolic links are neither followed nor removed).
    pub fn retain(&self, prefix: &str, live: &HashSet<&str>) {
        let top = prefix.trim_end_matches('/');
        if !top.is_empty() && crate::backend::validate_key(top).is_err() {
            tracing::debug!("cache: not pruning under the invalid prefix {prefix:?}");
            return;
        }
        let mut stack = vec![self.dir.join(top)];
        while let Some(d) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in rd.flatten() {
                let Ok(ft) = e.file_type() else { continue };
                let p = e.path();
                if ft.is_dir() {
                    stack.push(p);
                } else if ft.is_file()
                    && let Ok(rel) = p.strip_prefix(&self.dir)
                    && let Some(key) = rel.to_str()
                    && crate::backend::validate_key(key).is_ok()
                    && key.starts_with(prefix)
                    && !live.contains(key)
                {
                    let _ = std::fs::remove_file(&p);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_keys_never_reach_the_file_system() {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().join("cache");
        let canary = tmp.path().join("canary");
        std::fs::write(&canary, b"keep").unwrap();
        let c = Cache::new(&base, "repo");
        let id = Id::of_bytes(b"keep");
        for key in [
            "../canary",
            "index/../../canary",
            "/etc/passwd",
            "snapshots/\u{e9}",
        ] {
            c.put(key, b"evil");
            assert_eq!(c.get(key, &id), None, "{key}");
        }
        assert_eq!(std::fs::read(&canary).unwrap(), b"keep");
        // A symbolic link inside the cache pointing outside is neither followed nor removed.
        c.put("index/aa", b"x");
        std::os::unix::fs::symlink(tmp.path(), base.join("repo/index/out")).unwrap();
        c.retain("index/", &HashSet::new());
        c.retain("../", &HashSet::new());
        assert!(canary.exists());
        assert!(!base.join("repo/index/aa").exists());
        assert!(base.join("repo/index/out").symlink_metadata().is_ok());
    }
}
