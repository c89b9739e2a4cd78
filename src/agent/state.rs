//! What the agent knows about itself, shared by the scheduler, the backup runner and the HTTP
//! endpoints, and rendered as Prometheus metrics and `/status` JSON.

use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::backend::RequestStats;

/// The last backup's outcome.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LastBackup {
    /// Snapshot id of the last success.
    pub snapshot: Option<String>,
    /// When the last success finished.
    pub time: Option<DateTime<Utc>>,
    /// Seconds the last success took.
    pub duration_seconds: f64,
    /// Bytes read by the last success.
    pub bytes_read: u64,
    /// Bytes added to the repository by the last success.
    pub bytes_added: u64,
    /// Files in the last snapshot.
    pub files: u64,
    /// The last failure's message, cleared by a success.
    pub last_error: Option<String>,
}

/// Shared agent state.
#[derive(Default)]
pub struct State {
    /// Set once the restore gate has passed.
    pub ready: AtomicBool,
    /// Successful backups since start.
    pub backups: AtomicU64,
    /// Failed backups since start.
    pub failures: AtomicU64,
    /// Scheduled runs skipped because a backup was still running.
    pub skipped: AtomicU64,
    /// Whole backups repeated after a storage outage.
    pub backup_retries: AtomicU64,
    /// Bytes added over all backups since start.
    pub bytes_added_total: AtomicU64,
    /// Last backup.
    pub last: Mutex<LastBackup>,
    /// Next scheduled run.
    pub next_run: Mutex<Option<DateTime<Utc>>>,
    /// What the gate did, and how long its restore took.
    pub gate: Mutex<Option<(String, f64)>>,
    /// Repository requests since start.
    pub requests: Mutex<RequestStats>,
    /// Held while a backup runs: never two at once.
    pub busy: Mutex<()>,
    /// Set while a prune runs.
    pub pruning: AtomicBool,
    /// Prunes that finished.
    pub prunes: AtomicU64,
    /// WAL files archived (postgres method).
    pub wal_files: AtomicU64,
    /// Bytes stored for archived WAL files.
    pub wal_bytes: AtomicU64,
    /// Archive requests that failed (PostgreSQL retries them).
    pub wal_failures: AtomicU64,
    /// Unix time the newest WAL file was archived: the recovery point.
    pub wal_last: AtomicU64,
    /// Set while the restored app is still replaying its log (PostgreSQL recovery).
    pub recovering: AtomicBool,
    /// Prunes that failed.
    pub prune_failures: AtomicU64,
    /// Bytes deleted by prunes since start.
    pub prune_bytes_deleted: AtomicU64,
    /// The volume lease was lost (taken over or not renewable): backups are off.
    pub lease_lost: AtomicBool,
    /// The capture method's own metrics (SQLite replication), appended to the exposition; the
    /// agent's closure also refreshes `requests` from the open repository.
    #[allow(clippy::type_complexity)]
    pub method_metrics: std::sync::OnceLock<Box<dyn Fn() -> String + Send + Sync>>,
}

impl State {
    /// Prometheus text exposition.
    pub fn metrics(&self, name: &str) -> String {
        // First: it also refreshes the request counts (a streaming method stores between
        // backups).
        let method = self.method_metrics.get().map(|m| m()).unwrap_or_default();
        let mut o = String::new();
        let label = format!(
            "volume=\"{}\"",
            name.replace('\\', "\\\\").replace('"', "\\\"")
        );
        let last = self.last.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut g = |metric: &str, kind: &str, help: &str, v: f64| {
            let _ = writeln!(o, "# HELP lifeboat_{metric} {help}");
            let _ = writeln!(o, "# TYPE lifeboat_{metric} {kind}");
            let _ = writeln!(o, "lifeboat_{metric}{{{label}}} {v}");
        };
        g(
            "ready",
            "gauge",
            "1 once the restore gate has passed.",
            f64::from(u8::from(self.ready.load(Relaxed))),
        );
        g(
            "last_success_timestamp_seconds",
            "gauge",
            "Unix time the last successful backup finished (0: none yet).",
            last.time.map_or(0.0, |t| t.timestamp() as f64),
        );
        g(
            "last_duration_seconds",
            "gauge",
            "Duration of the last successful backup.",
            last.duration_seconds,
        );
        g(
            "last_bytes_read",
            "gauge",
            "Bytes read by the last successful backup.",
            last.bytes_read as f64,
        );
        g(
            "last_bytes_added",
            "gauge",
            "Bytes added to the repository by the last successful backup.",
            last.bytes_added as f64,
        );
        g(
            "last_files",
            "gauge",
            "Files in the last snapshot.",
            last.files as f64,
        );
        g(
            "lease_lost",
            "gauge",
            "1 once this instance lost its volume lease: it commits no more snapshots.",
            f64::from(u8::from(self.lease_lost.load(Relaxed))),
        );
        g(
            "prunes_total",
            "counter",
            "Prunes that finished since start.",
            self.prunes.load(Relaxed) as f64,
        );
        g(
            "prune_failures_total",
            "counter",
            "Prunes that failed since start.",
            self.prune_failures.load(Relaxed) as f64,
        );
        g(
            "prune_deleted_bytes_total",
            "counter",
            "Bytes of unneeded packs deleted by prunes since start.",
            self.prune_bytes_deleted.load(Relaxed) as f64,
        );
        g(
            "wal_archived_files_total",
            "counter",
            "WAL files archived into the repository since start (postgres method).",
            self.wal_files.load(Relaxed) as f64,
        );
        g(
            "wal_stored_bytes_total",
            "counter",
            "Bytes stored for archived WAL files since start.",
            self.wal_bytes.load(Relaxed) as f64,
        );
        g(
            "wal_archive_failures_total",
            "counter",
            "WAL archive requests that failed since start (PostgreSQL retries them; WAL piles up in pg_wal meanwhile).",
            self.wal_failures.load(Relaxed) as f64,
        );
        g(
            "wal_last_archived_timestamp_seconds",
            "gauge",
            "Unix time the newest WAL file was archived: the recovery point if the provider vanished now (0: none yet).",
            self.wal_last.load(Relaxed) as f64,
        );
        g(
            "recovering",
            "gauge",
            "1 while the restored database replays its WAL; /readyz answers 503 meanwhile.",
            f64::from(u8::from(self.recovering.load(Relaxed))),
        );
        g(
            "backups_total",
            "counter",
            "Successful backups since start.",
            self.backups.load(Relaxed) as f64,
        );
        g(
            "backup_failures_total",
            "counter",
            "Failed backups since start.",
            self.failures.load(Relaxed) as f64,
        );
        g(
            "backup_retries_total",
            "counter",
            "Whole backups repeated after a storage outage (LIFEBOAT_BACKUP_RETRY_WINDOW).",
            self.backup_retries.load(Relaxed) as f64,
        );
        g(
            "skipped_runs_total",
            "counter",
            "Scheduled runs skipped because a backup was still running.",
            self.skipped.load(Relaxed) as f64,
        );
        g(
            "bytes_added_total",
            "counter",
            "Bytes added to the repository since start.",
            self.bytes_added_total.load(Relaxed) as f64,
        );
        let restore = self.gate.lock().unwrap_or_else(|e| e.into_inner()).clone();
        g(
            "restore_duration_seconds",
            "gauge",
            "Seconds the start-up restore took (0: none).",
            restore.map_or(0.0, |r| r.1),
        );
        let r = *self.requests.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(
            o,
            "# HELP lifeboat_repository_requests_total Requests sent to the repository since start."
        );
        let _ = writeln!(o, "# TYPE lifeboat_repository_requests_total counter");
        for (kind, v) in [
            ("put", r.put),
            ("get", r.get),
            ("head", r.head),
            ("list", r.list),
            ("delete", r.delete),
        ] {
            let _ = writeln!(
                o,
                "lifeboat_repository_requests_total{{{label},kind=\"{kind}\"}} {v}"
            );
        }
        o.push_str(&method);
        o
    }

    /// `/status` JSON.
    pub fn status(&self, name: &str) -> serde_json::Value {
        let last = self.last.lock().unwrap_or_else(|e| e.into_inner()).clone();
        serde_json::json!({
            "volume": name,
            "ready": self.ready.load(Relaxed),
            "gate": self.gate.lock().unwrap_or_else(|e| e.into_inner()).as_ref().map(|g| g.0.clone()),
            "last_backup": last,
            "next_run": *self.next_run.lock().unwrap_or_else(|e| e.into_inner()),
            "backups": self.backups.load(Relaxed),
            "failures": self.failures.load(Relaxed),
            "skipped_runs": self.skipped.load(Relaxed),
            "running": self.busy.try_lock().is_err(),
            "recovering": self.recovering.load(Relaxed),
            "wal_last_archived": self.wal_last.load(Relaxed),
        })
    }
}
