//! `lifeboat tag`: change a snapshot's tags. Snapshot objects are immutable and named by their
//! content, so, as restic does, the changed snapshot is written as a new object that records the
//! one it replaces ([`Original`](crate::repository::snapshot::Original)), and only then is the
//! old one deleted. Interrupted between the two, both are listed with the same content; running
//! the command again finishes the job (a snapshot already carrying the wanted tags is left
//! alone).

use serde::Serialize;

use crate::error::Result;
use crate::id::Id;
use crate::repository::Repository;
use crate::repository::snapshot::Snapshot;

/// The change asked for.
#[derive(Debug, Clone, Default)]
pub struct TagChange {
    /// Replace all tags with these (applied first).
    pub set: Option<Vec<String>>,
    /// Add these.
    pub add: Vec<String>,
    /// Remove these.
    pub remove: Vec<String>,
}

impl TagChange {
    /// The tags `current` becomes: sorted, without duplicates.
    pub fn apply(&self, current: &[String]) -> Vec<String> {
        let mut t: Vec<String> = self.set.clone().unwrap_or_else(|| current.to_vec());
        t.extend(self.add.iter().cloned());
        t.retain(|x| !self.remove.contains(x));
        t.sort();
        t.dedup();
        t
    }
}

/// One rewritten snapshot.
#[derive(Debug, Clone, Serialize)]
pub struct Retagged {
    /// The snapshot replaced.
    pub old: String,
    /// Its replacement.
    pub new: String,
    /// The replacement's tags.
    pub tags: Vec<String>,
}

/// Applies `change` to each snapshot; returns those that changed (the others are untouched).
pub fn tag(
    repo: &Repository,
    snaps: &[(Id, Snapshot)],
    change: &TagChange,
) -> Result<Vec<Retagged>> {
    let mut out = Vec::new();
    for (id, s) in snaps {
        let mut want = s.tags.clone();
        want.sort();
        want.dedup();
        let tags = change.apply(&s.tags);
        if tags == want {
            continue;
        }
        let mut new = s.clone();
        new.original = Some(s.original_of(*id));
        new.tags = tags.clone();
        new.future_dated = false;
        let new_id = repo.save_snapshot(&new)?;
        repo.delete_snapshot(id)?;
        out.push(Retagged {
            old: id.to_hex(),
            new: new_id.to_hex(),
            tags,
        });
    }
    Ok(out)
}
