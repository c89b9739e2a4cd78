//! A backup's writer record and its heartbeat (see [`crate::repository::gc`]). The record is
//! written before the backup reads any prune mark or index, refreshed from a background thread,
//! and checked once more just before the snapshot is committed: if any gap between two successful
//! refreshes exceeded two intervals, a prune (whose grace is at least three) may have taken this
//! backup for dead, and the backup refuses to commit.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, bounded};

use crate::error::{Error, Result};
use crate::id::Id;
use crate::repository::Repository;
use crate::repository::gc::{GC_RECORD_VERSION, WriterRecord, heartbeat_interval};

struct Beats {
    record: WriterRecord,
    last_ok: Instant,
    max_gap: Duration,
}

/// A live writer record.
pub(crate) struct Heartbeat<'r> {
    repo: &'r Repository,
    id: Id,
    interval: Duration,
    beats: Mutex<Beats>,
}

impl<'r> Heartbeat<'r> {
    /// Runs `f` while a writer record for volume `name` exists and is kept fresh.
    pub(crate) fn scope<T>(
        repo: &'r Repository,
        name: &str,
        f: impl FnOnce(&Heartbeat<'r>) -> Result<T>,
    ) -> Result<T> {
        let now = chrono::Utc::now();
        let record = WriterRecord {
            version: GC_RECORD_VERSION,
            start: now,
            refreshed: now,
            name: name.to_string(),
            hostname: crate::sysinfo::hostname(),
            pid: std::process::id(),
        };
        let id = Id(crate::crypto::random_bytes());
        repo.put_writer(&id, &record)?;
        let hb = Heartbeat {
            repo,
            id,
            interval: heartbeat_interval(),
            beats: Mutex::new(Beats {
                record,
                last_ok: Instant::now(),
                max_gap: Duration::ZERO,
            }),
        };
        let (stop_tx, stop_rx) = bounded::<()>(0);
        let out = std::thread::scope(|s| {
            s.spawn(|| hb.beat_until(stop_rx));
            let out = f(&hb);
            drop(stop_tx);
            out
        });
        if let Err(e) = repo.delete_writer(&id) {
            // Without delete permission the record stays; prune removes it once it is stale.
            tracing::warn!("could not remove writers/{id}: {e}");
        }
        out
    }

    fn beat_until(&self, stop: Receiver<()>) {
        loop {
            match stop.recv_timeout(self.interval) {
                Err(RecvTimeoutError::Timeout) => {
                    if let Err(e) = self.refresh() {
                        tracing::warn!("heartbeat: {e}");
                    }
                }
                _ => return,
            }
        }
    }

    fn refresh(&self) -> Result<()> {
        let mut b = self.beats.lock().expect("beats");
        b.record.refreshed = chrono::Utc::now();
        self.repo.put_writer(&self.id, &b.record)?;
        let now = Instant::now();
        let gap = now - b.last_ok;
        b.max_gap = b.max_gap.max(gap);
        b.last_ok = now;
        Ok(())
    }

    /// Checks the record never went stale (refreshing it first when due). Call right before the
    /// snapshot is written.
    pub(crate) fn confirm(&self) -> Result<()> {
        // A record refreshed within the last interval is fresh in every prune's eyes; only an
        // older one is refreshed again (a short backup spends no extra request).
        let since = self.beats.lock().expect("beats").last_ok.elapsed();
        if since > self.interval {
            self.refresh()?;
        }
        let b = self.beats.lock().expect("beats");
        let gap = b.max_gap.max(b.last_ok.elapsed());
        drop(b);
        let limit = self.interval * 2;
        if gap > limit {
            return Err(Error::HeartbeatLapsed {
                gap_seconds: gap.as_secs(),
                limit_seconds: limit.as_secs(),
            });
        }
        Ok(())
    }
}
