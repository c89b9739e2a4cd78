//! Forks of a volume's history (FORMAT.md 12a): a snapshot taken under lease generation `g` but
//! committed after generation `g' > g` of the same volume began (an old instance that lost its
//! lease and still wrote) is listed, flagged, but never `latest` nor what the gate restores.
//! Pure functions over loaded snapshots; `Repository::latest` applies them.

use std::collections::HashSet;

use chrono::{DateTime, Utc};

use crate::id::Id;
use crate::repository::snapshot::Snapshot;

/// When a snapshot became visible (a tagged or copied one: when its original did).
fn committed(s: &Snapshot) -> DateTime<Utc> {
    s.committed()
}

/// The snapshots that are forks: taken under lease generation `g` and committed
/// after a generation `g' > g` of the same volume name began, as told by any snapshot of `g'`
/// (its stamp's `since`).
/// They are listed (flagged) but never become `latest` nor what the gate restores. Snapshots
/// without a stamp are never superseded and supersede nothing: they sort by time as before.
pub fn superseded(candidates: &[(Id, Snapshot)]) -> HashSet<Id> {
    // Each volume name has its own generations: (name, generation, since).
    let starts: Vec<(&str, u64, DateTime<Utc>)> = candidates
        .iter()
        .filter_map(|(_, s)| s.lease.map(|l| (s.name.as_str(), l.generation, l.since)))
        .collect();
    candidates
        .iter()
        .filter(|(_, s)| {
            s.lease.is_some_and(|l| {
                starts.iter().any(|(name, g, since)| {
                    *name == s.name && *g > l.generation && committed(s) > *since
                })
            })
        })
        .map(|(id, _)| *id)
        .collect()
}

/// `candidates` without the superseded ones, order kept: what `latest` and the gate choose from.
pub fn prefer(candidates: Vec<(Id, Snapshot)>) -> Vec<(Id, Snapshot)> {
    let out = superseded(&candidates);
    candidates
        .into_iter()
        .filter(|(id, _)| !out.contains(id))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repository::snapshot::LeaseStamp;

    fn snap(secs: i64, lease: Option<(u64, i64)>) -> Snapshot {
        let t = |s: i64| DateTime::<Utc>::from_timestamp(s, 0).unwrap();
        Snapshot {
            version: 1,
            time: t(secs),
            name: "v".into(),
            paths: vec![],
            hostname: String::new(),
            username: String::new(),
            tags: vec![],
            labels: Default::default(),
            method: "files".into(),
            tree: Id::of_bytes(b"t"),
            parent: None,
            program_version: String::new(),
            summary: Default::default(),
            lease: lease.map(|(generation, since)| LeaseStamp {
                generation,
                since: t(since),
            }),
            future_dated: false,
            stored_at: None,
            original: None,
        }
    }

    #[test]
    fn a_late_commit_of_an_older_generation_is_superseded() {
        let a = (Id::of_bytes(b"a"), snap(100, Some((1, 0))));
        let fork = (Id::of_bytes(b"fork"), snap(300, Some((1, 0))));
        let b = (Id::of_bytes(b"b"), snap(250, Some((2, 200))));
        let cli = (Id::of_bytes(b"cli"), snap(400, None));
        let all = vec![a.clone(), b.clone(), fork.clone(), cli.clone()];
        assert_eq!(superseded(&all), HashSet::from([fork.0]));
        let kept: Vec<Id> = prefer(all).into_iter().map(|(id, _)| id).collect();
        assert_eq!(kept, vec![a.0, b.0, cli.0]);
        // A late write seen through the store's time.
        let mut late = snap(150, Some((1, 0)));
        late.stored_at = DateTime::<Utc>::from_timestamp(260, 0);
        let late = (Id::of_bytes(b"late"), late);
        assert!(superseded(&[late.clone(), b.clone()]).contains(&late.0));
        // Re-tagged (rewritten) after the newer generation began, an honest snapshot of the
        // older one keeps its original commit time and is not a fork; the fork stays one.
        let (aid, a_snap) = &a;
        let mut retagged = a_snap.clone();
        retagged.stored_at = DateTime::<Utc>::from_timestamp(500, 0);
        retagged.original = Some(a_snap.original_of(*aid));
        let retagged = (Id::of_bytes(b"retagged"), retagged);
        let (fid, f_snap) = &fork;
        let mut fork_copy = f_snap.clone();
        fork_copy.original = Some(f_snap.original_of(*fid));
        let fork_copy = (Id::of_bytes(b"forkcopy"), fork_copy);
        let s = superseded(&[retagged.clone(), b.clone(), fork_copy.clone()]);
        assert_eq!(s, HashSet::from([fork_copy.0]));
        // Without a newer generation's snapshot nothing is superseded.
        assert!(superseded(&[a, fork.clone()]).is_empty());
        // Another volume's generations say nothing about this one.
        let mut other = snap(250, Some((2, 200)));
        other.name = "w".into();
        assert!(superseded(&[fork, (Id::of_bytes(b"w"), other)]).is_empty());
    }
}
