//! The replicated SQLite logs' share of `prune` and `check`.
//!
//! Prune, per database of each volume that kept snapshots name: a segment older than the
//! oldest kept copy of its generation can never be applied (a restore starts at a copy), so it
//! goes. A generation no kept snapshot reaches, directly or through parent links, goes whole
//! once a kept snapshot is younger than it (the live generation always is referenced by the
//! next snapshot; one younger than every snapshot may be waiting for its first copy and stays).
//! Logs of databases no kept snapshot names are left alone (they cannot be attributed).
//!
//! Check: from each volume's newest snapshot, every database's chain must be whole (no hole,
//! every header readable); with `--read-data` every segment of every log is read and
//! authenticated.

use std::collections::{BTreeMap, BTreeSet};

use super::{Base, Log, bases};
use crate::error::Result;
use crate::id::Id;
use crate::repository::Repository;
use crate::repository::snapshot::Snapshot;

/// Per (volume, database): the bases of the kept snapshots and the newest snapshot's time.
type Kept<'s> = BTreeMap<(String, String), (Vec<Base>, chrono::DateTime<chrono::Utc>)>;

fn kept(snapshots: &[(Id, Snapshot)]) -> Kept<'_> {
    let mut by: Kept<'_> = BTreeMap::new();
    for (_, s) in snapshots {
        for (db, base) in bases(s) {
            let e = by
                .entry((s.name.clone(), db))
                .or_insert_with(|| (Vec::new(), s.time));
            e.1 = e.1.max(s.time);
            e.0.push(base);
        }
    }
    by
}

/// Deletes (or with `dry_run` counts) replicated changes no kept snapshot can use.
pub fn prune(repo: &Repository, snapshots: &[(Id, Snapshot)], dry_run: bool) -> Result<usize> {
    let mut deleted = 0;
    for ((volume, db), (bases, newest)) in kept(snapshots) {
        let log = Log::new(repo, &volume, &db);
        let list = log.list()?;
        // The oldest first segment each referenced generation still needs.
        let mut need: BTreeMap<String, u64> = BTreeMap::new();
        for b in bases.iter().filter(|b| !b.generation.is_empty()) {
            let n = need.entry(b.generation.clone()).or_insert(b.next);
            *n = (*n).min(b.next);
        }
        // Generations reachable from a referenced one through parent links.
        let mut reach: BTreeSet<String> = need.keys().cloned().collect();
        let mut parents = BTreeMap::new();
        for g in list.keys().filter(|g| list[*g].contains(&0)) {
            if let Ok(h) = log.header(g) {
                parents.insert(g.clone(), h.parent.map(|p| p.generation));
            }
        }
        loop {
            let before = reach.len();
            for (g, p) in &parents {
                if p.as_ref().is_some_and(|p| reach.contains(p)) {
                    reach.insert(g.clone());
                }
            }
            if reach.len() == before {
                break;
            }
        }
        for (g, seqs) in &list {
            let created = g[..13]
                .parse::<i64>()
                .ok()
                .and_then(chrono::DateTime::from_timestamp_millis);
            let doomed: Vec<u64> = if let Some(&first) = need.get(g) {
                seqs.iter()
                    .copied()
                    .filter(|&s| s >= 1 && s < first)
                    .collect()
            } else if !reach.contains(g) && created.is_some_and(|c| c < newest) {
                seqs.iter().copied().collect()
            } else {
                Vec::new()
            };
            for s in doomed {
                if !dry_run {
                    log.delete(g, s)?;
                }
                deleted += 1;
            }
        }
    }
    Ok(deleted)
}

/// What `check` found in the replicated logs.
#[derive(Debug, Default)]
pub struct LogCheck {
    /// Holes, unreadable headers and segments.
    pub errors: Vec<String>,
    /// Objects seen.
    pub objects: u64,
}

/// Checks every database's log against its volume's newest snapshot.
pub fn check(repo: &Repository, snapshots: &[(Id, Snapshot)], read_all: bool) -> Result<LogCheck> {
    let mut out = LogCheck::default();
    let mut newest: BTreeMap<&str, &Snapshot> = BTreeMap::new();
    for (_, s) in snapshots {
        if !bases(s).is_empty() && newest.get(s.name.as_str()).is_none_or(|n| n.time < s.time) {
            newest.insert(&s.name, s);
        }
    }
    for (volume, snap) in newest {
        for (db, base) in bases(snap) {
            let log = Log::new(repo, volume, &db);
            let list = log.list()?;
            out.objects += list.values().map(|s| s.len() as u64).sum::<u64>();
            if !base.generation.is_empty()
                && let Err(e) = log.chain(&base)
            {
                out.errors
                    .push(format!("SQLite log of {db:?} in volume {volume:?}: {e}"));
            }
            if read_all {
                for (g, seqs) in &list {
                    for &s in seqs {
                        let r = if s == 0 {
                            log.header(g).map(|_| ())
                        } else {
                            log.segment(g, s).map(|_| ())
                        };
                        if let Err(e) = r {
                            out.errors
                                .push(format!("SQLite log of {db:?} in volume {volume:?}: {e}"));
                        }
                    }
                }
            }
        }
    }
    Ok(out)
}
