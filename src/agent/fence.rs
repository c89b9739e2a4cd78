//! What an instance does once it has lost its volume lease (FORMAT.md 12a). Which snapshots a
//! newer lease generation supersedes is `repository::forks`, where `latest` is chosen.

use std::time::Duration;

use super::lease::LeaseStatus;

pub use crate::repository::forks::{prefer, superseded};

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
