//! The verified-pack ledger: which packs this machine has read in full and found to hash to their
//! name, and which version of the stored object that was (the store's version token: the S3
//! `ETag`, or a local file's inode, change time and size). A backup deduplicates only against
//! packs it can vouch for: listed in the ledger with an unchanged token, or downloaded and hashed
//! now. Packs a backup uploads are entered with the token the store returned for the write, so
//! the steady state costs no downloads, while a pack changed on the store since (a flipped byte,
//! a truncation, a swap) is read again before anything new refers to it.
//!
//! The ledger is a local file, `<cache dir>/<repository id>/verified-packs`, one line per pack:
//! `<pack id hex> TAB <size> TAB <version token>`. Losing it costs downloads, never safety. It
//! trusts the store's version token: a store that lies about tokens defeats it, which `check
//! --read-data` and the readers' fallback to other copies then catch.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;

use crate::backend::ObjectInfo;
use crate::id::Id;

/// Packs verified by this machine, with the size and version token they had.
#[derive(Default)]
pub struct Ledger {
    path: Option<PathBuf>,
    entries: Mutex<HashMap<Id, (u64, String)>>,
    dirty: std::sync::atomic::AtomicBool,
}

impl Ledger {
    /// A ledger that remembers nothing across processes (no cache directory).
    pub fn in_memory() -> Ledger {
        Ledger::default()
    }

    /// Loads the ledger of repository `repo_id` under the cache directory `base`. A missing or
    /// unreadable file is an empty ledger; malformed lines are ignored.
    pub fn load(base: &std::path::Path, repo_id: &str) -> Ledger {
        let path = base.join(repo_id).join("verified-packs");
        let mut entries = HashMap::new();
        if let Ok(text) = std::fs::read_to_string(&path) {
            for line in text.lines() {
                let mut parts = line.splitn(3, '\t');
                let (Some(id), Some(size), Some(version)) =
                    (parts.next(), parts.next(), parts.next())
                else {
                    continue;
                };
                if let (Ok(id), Ok(size)) = (id.parse::<Id>(), size.parse::<u64>()) {
                    entries.insert(id, (size, version.to_string()));
                }
            }
        }
        Ledger {
            path: Some(path),
            entries: Mutex::new(entries),
            dirty: Default::default(),
        }
    }

    /// Whether pack `id`, as listed now, is the same object this machine verified.
    pub fn trusts(&self, id: &Id, listed: &ObjectInfo) -> bool {
        let Some(version) = &listed.version else {
            return false;
        };
        self.entries
            .lock()
            .expect("ledger")
            .get(id)
            .is_some_and(|(size, v)| *size == listed.size && v == version)
    }

    /// Records that pack `id` of `size` bytes, at store version `version`, hashes to its name.
    /// Without a version token nothing is recorded (the pack is verified again next time).
    pub fn record(&self, id: Id, size: u64, version: Option<String>) {
        let Some(v) = version.filter(|v| !v.contains(['\n', '\t'])) else {
            return;
        };
        self.entries.lock().expect("ledger").insert(id, (size, v));
        self.dirty.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Forgets a pack (found damaged, or gone).
    pub fn forget(&self, id: &Id) {
        if self.entries.lock().expect("ledger").remove(id).is_some() {
            self.dirty.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Writes the ledger back, keeping only packs in `live` when given (so it does not grow with
    /// pruned packs). Failures are logged: the ledger is an optimisation, never a requirement.
    pub fn save(&self, live: Option<&std::collections::HashSet<Id>>) {
        let Some(path) = &self.path else { return };
        if !self.dirty.load(std::sync::atomic::Ordering::Relaxed) && live.is_none() {
            return;
        }
        let mut text = String::new();
        for (id, (size, v)) in self.entries.lock().expect("ledger").iter() {
            if live.is_none_or(|l| l.contains(id)) {
                text.push_str(&format!("{id}\t{size}\t{v}\n"));
            }
        }
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let r = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|_| {
                let mut f = std::fs::File::create(&tmp)?;
                f.write_all(text.as_bytes())?;
                f.sync_all()
            })
            .and_then(|_| std::fs::rename(&tmp, path));
        if let Err(e) = r {
            let _ = std::fs::remove_file(&tmp);
            tracing::debug!(
                "cannot save the verified-pack ledger {}: {e}",
                path.display()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(size: u64, v: &str) -> ObjectInfo {
        ObjectInfo {
            key: "data/ab/x".into(),
            size,
            modified: None,
            version: Some(v.into()),
        }
    }

    #[test]
    fn trusts_only_the_same_version_and_survives_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let l = Ledger::load(dir.path(), "repo");
        let id = Id::of_bytes(b"pack");
        assert!(!l.trusts(&id, &info(10, "v1")));
        l.record(id, 10, Some("v1".into()));
        assert!(l.trusts(&id, &info(10, "v1")));
        assert!(!l.trusts(&id, &info(10, "v2")), "changed on the store");
        assert!(!l.trusts(&id, &info(11, "v1")), "other size");
        l.save(None);
        let again = Ledger::load(dir.path(), "repo");
        assert!(again.trusts(&id, &info(10, "v1")));
        again.forget(&id);
        assert!(!again.trusts(&id, &info(10, "v1")));
        let no_version = ObjectInfo {
            version: None,
            ..info(10, "v1")
        };
        assert!(!l.trusts(&id, &no_version), "no token, no trust");
    }
}
