//! The WAL archive's share of `prune` and `check`.
//!
//! Prune: a WAL segment older than the start of the oldest base backup a volume keeps can never
//! be replayed (recovery starts at a base backup), so it goes; timeline history files stay
//! (they are tiny and recovery reads them to follow timelines). A volume whose oldest kept
//! PostgreSQL snapshot is a cold copy (no start segment recorded), or which keeps none, loses
//! nothing.
//!
//! Check: from the newest base backup's first segment, the archive must hold every segment of
//! that timeline up to its newest one; a hole is an error (recovery would stop there). With
//! `--read-data`, every archived file is read and authenticated.

use std::collections::BTreeMap;

use super::{Fetched, SegmentName, WalArchive, first_gap};
use crate::capture::postgres::{LABEL_SEGMENT_SIZE, LABEL_START_WAL};
use crate::error::Result;
use crate::id::Id;
use crate::repository::Repository;
use crate::repository::snapshot::Snapshot;

/// Per volume: its PostgreSQL snapshots, oldest first.
fn postgres_snapshots(snapshots: &[(Id, Snapshot)]) -> BTreeMap<String, Vec<&Snapshot>> {
    let mut by: BTreeMap<String, Vec<&Snapshot>> = BTreeMap::new();
    for (_, s) in snapshots {
        if s.method == "postgres" {
            by.entry(s.name.clone()).or_default().push(s);
        }
    }
    for v in by.values_mut() {
        v.sort_by_key(|s| s.time);
    }
    by
}

/// Deletes (or with `dry_run` counts) archived WAL that no kept base backup can use.
pub fn prune(repo: &Repository, snapshots: &[(Id, Snapshot)], dry_run: bool) -> Result<usize> {
    let mut deleted = 0;
    for (volume, snaps) in postgres_snapshots(snapshots) {
        let Some(start) = snaps
            .first()
            .and_then(|s| s.labels.get(LABEL_START_WAL))
            .and_then(|n| SegmentName::parse(n))
        else {
            continue;
        };
        let archive = WalArchive::new(repo, &volume);
        for e in archive.list()? {
            if e.name.ends_with(".history") {
                continue;
            }
            let Some(seg) = SegmentName::parse(&e.name[..24.min(e.name.len())]) else {
                continue;
            };
            if seg.position() < start.position() {
                if !dry_run {
                    archive.delete(&e.name)?;
                }
                deleted += 1;
            }
        }
    }
    Ok(deleted)
}

/// What `check` found in the WAL archives.
#[derive(Debug, Default)]
pub struct WalCheck {
    /// Holes and unreadable files.
    pub errors: Vec<String>,
    /// Archived files seen.
    pub files: u64,
}

/// Checks every volume's WAL archive against its newest base backup.
pub fn check(repo: &Repository, snapshots: &[(Id, Snapshot)], read_all: bool) -> Result<WalCheck> {
    let mut out = WalCheck::default();
    for (volume, snaps) in postgres_snapshots(snapshots) {
        let archive = WalArchive::new(repo, &volume);
        let list = archive.list()?;
        out.files += list.len() as u64;
        if let Some(newest) = snaps
            .iter()
            .rev()
            .find(|s| s.labels.contains_key(LABEL_START_WAL))
            && let Some(start) = newest
                .labels
                .get(LABEL_START_WAL)
                .and_then(|n| SegmentName::parse(n))
        {
            let seg_size = newest
                .labels
                .get(LABEL_SEGMENT_SIZE)
                .and_then(|s| s.parse().ok())
                .unwrap_or(super::DEFAULT_SEGMENT_SIZE);
            let names: Vec<String> = list.iter().map(|e| e.name.clone()).collect();
            if let Some(gap) = first_gap(&names, start, seg_size) {
                out.errors.push(format!(
                    "WAL archive of volume {volume:?}: segment {} is missing although later ones of its timeline are archived; a recovery from the newest base backup stops there",
                    gap.name()
                ));
            }
        }
        if read_all {
            for e in &list {
                match archive.fetch(&e.name) {
                    Ok(Fetched::Found(_)) => {}
                    Ok(_) => out
                        .errors
                        .push(format!("WAL file {} of volume {volume:?} vanished", e.name)),
                    Err(err) => out
                        .errors
                        .push(format!("WAL file {} of volume {volume:?}: {err}", e.name)),
                }
            }
        }
    }
    Ok(out)
}
