//! Fencing by lease generation (FORMAT.md 12a): which snapshots a newer lease generation
//! supersedes, and what an instance does once it has lost its lease.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::id::Id;
use crate::repository::snapshot::Snapshot;

use super::lease::LeaseStatus;

/// When a snapshot became visible: the later of its own time and the store's write time.
fn committed(s: &Snapshot) -> DateTime<Utc> {
    s.stored_at.map_or(s.time, |t| t.max(s.time))
}

/// The snapshots (of one volume) that are forks: taken under lease generation `g` and committed
/// after a generation `g' > g` began, as told by any snapshot of `g'` (its stamp's `since`).
/// They are listed (flagged) but never become `latest` nor what the gate restores. Snapshots
/// without a stamp are never superseded and supersede nothing: they sort by time as before.
pub fn superseded(candidates: &[(Id, Snapshot)]) -> HashSet<Id> {
    // Earliest known start of each generation above g, as (generation, since), sorted.
    let mut starts: Vec<(u64, DateTime<Utc>)> = candidates
        .iter()
        .filter_map(|(_, s)| s.lease.map(|l| (l.generation, l.since)))
        .collect();
    starts.sort();
    starts.dedup_by_key(|(g, _)| *g);
    candidates
        .iter()
        .filter(|(_, s)| {
            s.lease.is_some_and(|l| {
                starts
                    .iter()
                    .any(|(g, since)| *g > l.generation && committed(s) > *since)
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

/// What an instance that lost its lease does with its app (`LIFEBOAT_ON_LEASE_LOSS`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnLeaseLoss {
    /// Keep the app running, stop backups, alert every minute (default).
    KeepApp,
    /// Also stop the app (SIGTERM), so a partitioned old instance stops serving.
    StopApp,
}

impl OnLeaseLoss {
    /// From `LIFEBOAT_ON_LEASE_LOSS` (`keep-app`, the default, or `stop-app`).
    pub fn from_env() -> OnLeaseLoss {
        match std::env::var("LIFEBOAT_ON_LEASE_LOSS").as_deref() {
            Ok("stop-app") => OnLeaseLoss::StopApp,
            Ok("keep-app") | Err(_) => OnLeaseLoss::KeepApp,
            Ok(other) => {
                tracing::warn!(
                    "LIFEBOAT_ON_LEASE_LOSS={other:?} is not keep-app or stop-app: keeping the app"
                );
                OnLeaseLoss::KeepApp
            }
        }
    }
}

/// Watches a lease until `done()`; once it is lost, calls `alert(reason, first)` at once and
/// then every `every` (the agent logs, sets its metric, pings the failure endpoint and the
/// webhook).
pub fn watch(
    status: &LeaseStatus,
    every: Duration,
    done: &dyn Fn() -> bool,
    alert: &mut dyn FnMut(&str, bool),
) {
    let mut last: Option<std::time::Instant> = None;
    while !done() {
        if let Some(why) = status.lost()
            && last.is_none_or(|t| t.elapsed() >= every)
        {
            alert(&why, last.is_none());
            last = Some(std::time::Instant::now());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
