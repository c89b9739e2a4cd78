//! A local cache of immutable repository objects (index objects, snapshots, tree packs), so a
//! no-change backup against S3 lists and writes but hardly reads. Correct by construction: these
//! objects are named by the BLAKE3 hash of their bytes, never change, and every cached read is
//! verified against its name. Entries the repository no longer lists are dropped.

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

    /// A cached object, if present and intact.
    pub fn get(&self, key: &str, id: &Id) -> Option<Vec<u8>> {
        let path = self.dir.join(key);
        let bytes = std::fs::read(&path).ok()?;
        if Id::of_bytes(&bytes) != *id {
            let _ = std::fs::remove_file(&path);
            return None;
        }
        Some(bytes)
    }

    /// Stores a copy; failures only cost a later download, so they are logged, not returned.
    pub fn put(&self, key: &str, bytes: &[u8]) {
        let path = self.dir.join(key);
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
        match std::fs::read(src) {
            Ok(b) => self.put(key, &b),
            Err(e) => tracing::debug!("cache: cannot read {}: {e}", src.display()),
        }
    }

    /// Drops cached objects under `prefix` that are not in `live` (keys as listed).
    pub fn retain(&self, prefix: &str, live: &HashSet<&str>) {
        let mut stack = vec![self.dir.join(prefix)];
        while let Some(d) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in rd.flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if let Ok(rel) = p.strip_prefix(&self.dir) {
                    let key = rel.to_string_lossy();
                    if !live.contains(key.as_ref()) {
                        let _ = std::fs::remove_file(&p);
                    }
                }
            }
        }
    }
}
