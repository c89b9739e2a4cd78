//! The agent's settings: every one an environment variable (the only configuration channel an
//! Akash SDL has), each also a flag, optionally a TOML file named by `LIFEBOAT_CONFIG`, and every
//! secret also as `NAME_FILE`. Validated up front so a typo fails at start, not at 3 a.m.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;

use super::schedule::Schedule;
use crate::error::{Error, Result};
use crate::forget::KeepPolicy;
use crate::format::parse_duration;

/// The agent's flags; each also reads the environment variable it names.
#[derive(Args, Debug, Clone, Default)]
pub struct AgentArgs {
    /// The volume mount to protect.
    #[arg(long, env = "LIFEBOAT_PATH", help_heading = "Volume")]
    pub path: Option<PathBuf>,
    /// The volume's stable name (default: AKASH_OWNER/<mount's base name> on Akash, else the
    /// absolute path). Never derived from the deployment sequence, which changes every lease.
    #[arg(long, env = "LIFEBOAT_NAME", help_heading = "Volume")]
    pub name: Option<String>,
    /// When to back up: cron (5 fields, or 6 with seconds), @hourly/@daily/..., `@every 30s`,
    /// or `off`.
    #[arg(
        long,
        env = "LIFEBOAT_SCHEDULE",
        default_value = "@hourly",
        help_heading = "Schedule"
    )]
    pub schedule: String,
    /// Time zone the schedule's fields are read in.
    #[arg(
        long,
        env = "LIFEBOAT_TIMEZONE",
        default_value = "UTC",
        help_heading = "Schedule"
    )]
    pub timezone: String,
    /// Largest per-volume offset added to every scheduled run (e.g. `10m`); fixed per name.
    #[arg(
        long,
        env = "LIFEBOAT_JITTER",
        default_value = "0s",
        help_heading = "Schedule"
    )]
    pub jitter: String,
    /// Take a backup as soon as the app is up.
    #[arg(long, env = "LIFEBOAT_BACKUP_ON_START", help_heading = "Schedule")]
    pub backup_on_start: bool,
    /// Glob to leave out of backups (repeatable, or comma-separated in the variable).
    #[arg(
        long = "exclude",
        env = "LIFEBOAT_EXCLUDE",
        value_delimiter = ',',
        help_heading = "Volume"
    )]
    pub excludes: Vec<String>,
    /// Retention after each backup: keep the newest N snapshots.
    #[arg(long, env = "LIFEBOAT_KEEP_LAST", help_heading = "Retention")]
    pub keep_last: Option<u32>,
    /// Keep the newest snapshot of each of the last N hours.
    #[arg(long, env = "LIFEBOAT_KEEP_HOURLY", help_heading = "Retention")]
    pub keep_hourly: Option<u32>,
    /// ... of each of the last N days.
    #[arg(long, env = "LIFEBOAT_KEEP_DAILY", help_heading = "Retention")]
    pub keep_daily: Option<u32>,
    /// ... of each of the last N weeks.
    #[arg(long, env = "LIFEBOAT_KEEP_WEEKLY", help_heading = "Retention")]
    pub keep_weekly: Option<u32>,
    /// ... of each of the last N months.
    #[arg(long, env = "LIFEBOAT_KEEP_MONTHLY", help_heading = "Retention")]
    pub keep_monthly: Option<u32>,
    /// ... of each of the last N years.
    #[arg(long, env = "LIFEBOAT_KEEP_YEARLY", help_heading = "Retention")]
    pub keep_yearly: Option<u32>,
    /// Keep every snapshot within this long of the newest (e.g. `7d`).
    #[arg(long, env = "LIFEBOAT_KEEP_WITHIN", help_heading = "Retention")]
    pub keep_within: Option<String>,
    /// When to prune (cron like LIFEBOAT_SCHEDULE, default `off`). Safe beside backups from any
    /// number of instances; needs delete permission on the bucket. Usually run by the owner
    /// instead (`lifeboat prune`), so the agent's key can be write-only.
    #[arg(
        long,
        env = "LIFEBOAT_PRUNE_SCHEDULE",
        default_value = "off",
        help_heading = "Retention"
    )]
    pub prune_schedule: String,
    /// Prune's grace period: marked data is deleted only this long after it was marked.
    #[arg(
        long,
        env = "LIFEBOAT_PRUNE_GRACE",
        default_value = "24h",
        help_heading = "Retention"
    )]
    pub prune_grace: String,
    /// Command run (`sh -c`) before each backup, e.g. a checkpoint.
    #[arg(long, env = "LIFEBOAT_PRE_BACKUP", help_heading = "Capture")]
    pub pre_backup: Option<String>,
    /// Command run after each backup (always, when the pre-backup command ran).
    #[arg(long, env = "LIFEBOAT_POST_BACKUP", help_heading = "Capture")]
    pub post_backup: Option<String>,
    /// Time limit for each hook.
    #[arg(
        long,
        env = "LIFEBOAT_HOOK_TIMEOUT",
        default_value = "5m",
        help_heading = "Capture"
    )]
    pub hook_timeout: String,
    /// When the pre-backup hook fails: `abort` the backup or `continue`.
    #[arg(
        long,
        env = "LIFEBOAT_HOOK_ON_ERROR",
        default_value = "abort",
        help_heading = "Capture"
    )]
    pub hook_on_error: String,
    /// Stream this command's output into the snapshot instead of the volume's files
    /// (e.g. `pg_dumpall -U postgres`).
    #[arg(long, env = "LIFEBOAT_DUMP_COMMAND", help_heading = "Capture")]
    pub dump_command: Option<String>,
    /// File name the dump is stored under.
    #[arg(
        long,
        env = "LIFEBOAT_DUMP_FILENAME",
        default_value = "dump.sql",
        help_heading = "Capture"
    )]
    pub dump_filename: String,
    /// On a new lease, run this after the app is up to load the dump; `{file}` is replaced by
    /// its path (e.g. `psql -U postgres -f {file}`). Retried until it succeeds or times out.
    #[arg(long, env = "LIFEBOAT_RESTORE_COMMAND", help_heading = "Capture")]
    pub restore_command: Option<String>,
    /// How long the restore command may keep failing while the app starts.
    #[arg(
        long,
        env = "LIFEBOAT_RESTORE_COMMAND_TIMEOUT",
        default_value = "10m",
        help_heading = "Capture"
    )]
    pub restore_command_timeout: String,
    /// Where a dump is restored to before the restore command loads it.
    #[arg(long, env = "LIFEBOAT_DUMP_DIR", help_heading = "Capture")]
    pub dump_dir: Option<PathBuf>,
    /// Freeze the app (SIGSTOP to its process group) while each backup runs, for a
    /// crash-consistent copy of a small volume.
    #[arg(long, env = "LIFEBOAT_PAUSE", help_heading = "Capture")]
    pub pause: bool,
    /// Longest pause; the app is resumed after this even if the backup still runs.
    #[arg(
        long,
        env = "LIFEBOAT_PAUSE_MAX",
        default_value = "30s",
        help_heading = "Capture"
    )]
    pub pause_max: String,
    /// Restore this snapshot (id prefix) instead of the latest on an empty volume.
    #[arg(long, env = "LIFEBOAT_RESTORE_SNAPSHOT", help_heading = "Restore gate")]
    pub restore_snapshot: Option<String>,
    /// How long the restore gate keeps retrying an unreachable or failing repository.
    #[arg(
        long,
        env = "LIFEBOAT_RESTORE_TIMEOUT",
        default_value = "5m",
        help_heading = "Restore gate"
    )]
    pub restore_timeout: String,
    /// When the gate gives up: `fail` (exit, app never starts on an empty volume) or
    /// `start-empty`.
    #[arg(
        long,
        env = "LIFEBOAT_ON_RESTORE_FAILURE",
        default_value = "fail",
        help_heading = "Restore gate"
    )]
    pub on_restore_failure: String,
    /// Time from the stop signal until the final backup has finished or failed loudly (fits
    /// Kubernetes' default terminationGracePeriodSeconds of 30 s, which Akash leases get too).
    #[arg(
        long,
        env = "LIFEBOAT_SHUTDOWN_BACKUP_TIMEOUT",
        default_value = "25s",
        help_heading = "Schedule"
    )]
    pub shutdown_backup_timeout: String,
    /// How long a scheduled backup that failed on a storage outage is retried as a whole (with
    /// backoff and jitter) before it counts as failed.
    #[arg(
        long,
        env = "LIFEBOAT_BACKUP_RETRY_WINDOW",
        default_value = "5m",
        help_heading = "Schedule"
    )]
    pub backup_retry_window: String,
    /// Back up a running database's files anyway (files mode refuses a live PostgreSQL,
    /// MySQL/MariaDB or SQLite database otherwise).
    #[arg(long, env = "LIFEBOAT_ALLOW_LIVE_DATABASE", help_heading = "Capture")]
    pub allow_live_database: bool,
    /// Where S3 backups stage packs before upload (default: TMPDIR, else /tmp); checked at start
    /// for room for the packs in flight.
    #[arg(long, env = "LIFEBOAT_STAGING_DIR", help_heading = "Volume")]
    pub staging_dir: Option<PathBuf>,
    /// How long a volume lease lives without renewal.
    #[arg(
        long,
        env = "LIFEBOAT_LEASE_TTL",
        default_value = "60s",
        help_heading = "Restore gate"
    )]
    pub lease_ttl: String,
    /// Longest wait for another instance's lease on the same volume name.
    #[arg(
        long,
        env = "LIFEBOAT_LEASE_WAIT",
        default_value = "10m",
        help_heading = "Restore gate"
    )]
    pub lease_wait: String,
    /// Address for /healthz, /readyz, /metrics, /status and POST /backup (off by default).
    #[arg(
        long,
        env = "LIFEBOAT_LISTEN",
        help_heading = "HTTP (metrics, health, control)"
    )]
    pub listen: Option<SocketAddr>,
    /// Tag every snapshot (repeatable, or comma-separated in the variable).
    #[arg(
        long = "tag",
        env = "LIFEBOAT_TAGS",
        value_delimiter = ',',
        help_heading = "Volume"
    )]
    pub tags: Vec<String>,
    /// How the volume is captured: files, pause, dump, postgres or sqlite (default: sqlite when
    /// LIFEBOAT_SQLITE is set, dump when LIFEBOAT_DUMP_COMMAND is, pause when LIFEBOAT_PAUSE
    /// is, else files).
    #[arg(long, env = "LIFEBOAT_METHOD", help_heading = "Capture")]
    pub method: Option<String>,
    /// postgres: PostgreSQL's archive_timeout, the longest a committed transaction waits to
    /// reach the repository (the recovery point when the provider vanishes).
    #[arg(
        long,
        env = "LIFEBOAT_PG_ARCHIVE_TIMEOUT",
        default_value = "60s",
        help_heading = "Capture"
    )]
    pub pg_archive_timeout: String,
    /// postgres: the agent's socket for `wal-push`/`wal-fetch` (default in TMPDIR; for a
    /// sidecar, a path in a volume both containers mount).
    #[arg(long, env = "LIFEBOAT_WAL_SOCKET", help_heading = "Capture")]
    pub wal_socket: Option<PathBuf>,
    /// postgres, sqlite: on a new lease, recover the database to this moment (RFC 3339)
    /// instead of its newest replicated state.
    #[arg(long, env = "LIFEBOAT_RESTORE_TO_TIME", help_heading = "Restore gate")]
    pub restore_to_time: Option<String>,
    /// sqlite: the databases to replicate (comma-separated paths inside the volume); empty:
    /// every SQLite file found in the volume. Setting it implies LIFEBOAT_METHOD=sqlite.
    #[arg(
        long = "sqlite",
        env = "LIFEBOAT_SQLITE",
        value_delimiter = ',',
        help_heading = "Capture"
    )]
    pub sqlite: Vec<PathBuf>,
    /// sqlite: the longest a committed transaction waits to be shipped to the repository.
    #[arg(
        long,
        env = "LIFEBOAT_SQLITE_SYNC_INTERVAL",
        default_value = "1s",
        help_heading = "Capture"
    )]
    pub sqlite_sync_interval: String,
    /// sqlite: the log length (pages) at which lifeboat checkpoints the database.
    #[arg(
        long,
        env = "LIFEBOAT_SQLITE_CHECKPOINT_PAGES",
        default_value = "1000",
        help_heading = "Capture"
    )]
    pub sqlite_checkpoint_pages: String,
}

impl AgentArgs {
    /// The settings from the environment alone (for commands that borrow a few of them).
    pub fn from_env() -> Result<AgentArgs> {
        #[derive(clap::Parser)]
        struct P {
            #[command(flatten)]
            a: AgentArgs,
        }
        <P as clap::Parser>::try_parse_from(["lifeboat"])
            .map(|p| p.a)
            .map_err(|e| Error::invalid(e.to_string().lines().next().unwrap_or("").to_string()))
    }
}

/// What the pre-backup hook's failure does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnHookError {
    /// Skip this backup (post-backup still runs).
    Abort,
    /// Back up anyway.
    Continue,
}

/// Validated settings.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Volume mount.
    pub path: PathBuf,
    /// Volume name.
    pub name: String,
    /// Schedule.
    pub schedule: Schedule,
    /// Fixed offset added to scheduled runs.
    pub jitter: Duration,
    /// Backup once the app is up.
    pub backup_on_start: bool,
    /// Excludes (the marker directory is always excluded).
    pub excludes: Vec<String>,
    /// Retention.
    pub keep: KeepPolicy,
    /// When to prune.
    pub prune_schedule: Schedule,
    /// How to prune.
    pub prune: crate::prune::PruneOptions,
    /// Hooks.
    pub pre_backup: Option<String>,
    /// Hooks.
    pub post_backup: Option<String>,
    /// Hook time limit.
    pub hook_timeout: Duration,
    /// Hook failure policy.
    pub hook_on_error: OnHookError,
    /// Dump mode.
    pub dump_command: Option<String>,
    /// Dump file name.
    pub dump_filename: String,
    /// Command that loads a restored dump.
    pub restore_command: Option<String>,
    /// Its retry window.
    pub restore_command_timeout: Duration,
    /// Where dumps are restored.
    pub dump_dir: PathBuf,
    /// Pause mode.
    pub pause: bool,
    /// Longest pause.
    pub pause_max: Duration,
    /// Snapshot to restore instead of the latest.
    pub restore_snapshot: Option<String>,
    /// Gate retry window.
    pub restore_timeout: Duration,
    /// Start the app on an empty volume when the gate fails.
    pub start_empty_on_failure: bool,
    /// Final backup limit.
    pub shutdown_backup_timeout: Duration,
    /// Whole-backup retry window through a storage outage.
    pub backup_retry_window: Duration,
    /// Accept file copies of a live database.
    pub allow_live_database: bool,
    /// Where packs are staged before upload to S3.
    pub staging_dir: PathBuf,
    /// Lease lifetime.
    pub lease_ttl: Duration,
    /// Longest lease wait.
    pub lease_wait: Duration,
    /// HTTP address.
    pub listen: Option<SocketAddr>,
    /// Bearer token for POST /backup and GET /status.
    pub control_token: Option<String>,
    /// healthchecks.io-style URL.
    pub ping_url: Option<String>,
    /// JSON webhook URL.
    pub webhook_url: Option<String>,
    /// Snapshot tags.
    pub tags: Vec<String>,
    /// Snapshot labels (Akash lease coordinates).
    pub labels: BTreeMap<String, String>,
    /// The capture method and its settings.
    pub capture: crate::capture::Settings,
}

/// Name of the directory lifeboat keeps its restore markers in, inside the volume.
pub const MARKER_DIR: &str = ".lifeboat";

fn duration(what: &str, v: &str) -> Result<Duration> {
    parse_duration(v).map_err(|e| Error::invalid(format!("{what}: {e}")))
}

/// Reads `NAME`, or the file `NAME_FILE` points at (one trailing newline dropped).
pub fn secret(name: &str) -> Result<Option<String>> {
    if let Ok(v) = std::env::var(name) {
        return Ok(Some(v).filter(|v| !v.is_empty()));
    }
    match std::env::var(format!("{name}_FILE")) {
        Ok(f) => {
            let v = crate::cli::read_secret_file(Path::new(&f))?;
            // An empty file would silently mean "not set": for the control token that switches
            // authentication off while the operator believes it is on.
            if v.trim().is_empty() {
                return Err(Error::invalid(format!(
                    "{name}_FILE={f} is empty: put the secret in it, or unset {name}_FILE"
                )));
            }
            Ok(Some(v))
        }
        Err(_) => Ok(None),
    }
}

impl AgentConfig {
    /// Validates the flags and environment into settings.
    pub fn from_args(a: &AgentArgs) -> Result<AgentConfig> {
        let path = a.path.clone().ok_or_else(|| {
            Error::invalid(
                "no volume path: pass --path DIR or set LIFEBOAT_PATH to the volume's mount",
            )
        })?;
        if !path.is_absolute() && path.components().next().is_none() {
            return Err(Error::invalid("LIFEBOAT_PATH is empty"));
        }
        let path = std::path::absolute(&path)
            .map_err(|e| Error::io(format!("{}: cannot resolve", path.display()), e))?;
        // The volume's mount point exists before the agent starts (Akash, Kubernetes and compose
        // all create it). A path that is missing or not a directory is a mistake — usually a
        // LIFEBOAT_PATH that differs from the SDL's mount path — and creating it would back up
        // the container's own disk, which dies with the lease, while reporting success.
        match std::fs::metadata(&path) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(Error::invalid(format!(
                    "LIFEBOAT_PATH={} is not a directory: set it to the volume's mount path",
                    path.display()
                )));
            }
            Err(_) => {
                return Err(Error::invalid(format!(
                    "LIFEBOAT_PATH={} does not exist: set it to the volume's mount path (the `mount:` of the SDL's storage), or create the directory",
                    path.display()
                )));
            }
        }
        let owner = std::env::var("AKASH_OWNER").ok().filter(|s| !s.is_empty());
        let name = match (&a.name, &owner) {
            (Some(n), _) if n.trim().is_empty() => {
                return Err(Error::invalid(
                    "LIFEBOAT_NAME is empty: unset it or give the volume a name",
                ));
            }
            (Some(n), _) => n.clone(),
            (None, Some(o)) => format!(
                "{o}/{}",
                path.file_name()
                    .map_or("volume".into(), |b| b.to_string_lossy().into_owned())
            ),
            (None, None) => path.to_string_lossy().into_owned(),
        };
        // A bad time zone names LIFEBOAT_TIMEZONE itself, not the schedule it was read with.
        let named = |var: &str, e: String| {
            if e.starts_with("LIFEBOAT_TIMEZONE") {
                Error::invalid(e)
            } else {
                Error::invalid(format!("{var}: {e}"))
            }
        };
        let schedule =
            Schedule::parse(&a.schedule, &a.timezone).map_err(|e| named("LIFEBOAT_SCHEDULE", e))?;
        let prune_schedule = Schedule::parse(&a.prune_schedule, &a.timezone)
            .map_err(|e| named("LIFEBOAT_PRUNE_SCHEDULE", e))?;
        let prune = crate::prune::PruneOptions {
            grace: crate::format::parse_duration(&a.prune_grace)
                .map_err(|e| Error::invalid(format!("LIFEBOAT_PRUNE_GRACE: {e}")))?,
            ..Default::default()
        };
        let hook_on_error = match a.hook_on_error.as_str() {
            "abort" => OnHookError::Abort,
            "continue" => OnHookError::Continue,
            other => {
                return Err(Error::invalid(format!(
                    "LIFEBOAT_HOOK_ON_ERROR={other:?}: use abort or continue"
                )));
            }
        };
        let start_empty_on_failure = match a.on_restore_failure.as_str() {
            "fail" => false,
            "start-empty" => true,
            other => {
                return Err(Error::invalid(format!(
                    "LIFEBOAT_ON_RESTORE_FAILURE={other:?}: use fail or start-empty"
                )));
            }
        };
        let keep = KeepPolicy::from_settings(
            [
                a.keep_last,
                a.keep_hourly,
                a.keep_daily,
                a.keep_weekly,
                a.keep_monthly,
                a.keep_yearly,
            ],
            a.keep_within.as_deref(),
            "LIFEBOAT_KEEP_WITHIN",
            Vec::new(),
        )?;
        if a.restore_command.is_some() && a.dump_command.is_none() {
            return Err(Error::invalid(
                "LIFEBOAT_RESTORE_COMMAND loads a dump: set LIFEBOAT_DUMP_COMMAND too",
            ));
        }
        if a.dump_filename.contains('/') || a.dump_filename.is_empty() {
            return Err(Error::invalid(format!(
                "LIFEBOAT_DUMP_FILENAME={:?}: give a plain file name",
                a.dump_filename
            )));
        }
        let mut labels = BTreeMap::new();
        for (var, label) in [
            ("AKASH_OWNER", "akash.owner"),
            ("AKASH_PROVIDER", "akash.provider"),
            ("AKASH_DEPLOYMENT_SEQUENCE", "akash.dseq"),
            ("AKASH_GROUP_SEQUENCE", "akash.gseq"),
            ("AKASH_ORDER_SEQUENCE", "akash.oseq"),
            ("AKASH_CLUSTER_PUBLIC_HOSTNAME", "akash.hostname"),
        ] {
            if let Ok(v) = std::env::var(var)
                && !v.is_empty()
            {
                labels.insert(label.to_string(), v);
            }
        }
        let mut excludes = a.excludes.clone();
        excludes.retain(|e| !e.trim().is_empty());
        excludes.push(path.join(MARKER_DIR).to_string_lossy().into_owned());
        let staging_dir = match a.staging_dir.clone().filter(|p| !p.as_os_str().is_empty()) {
            Some(d) => std::path::absolute(&d)
                .map_err(|e| Error::io(format!("LIFEBOAT_STAGING_DIR {}", d.display()), e))?,
            None => std::env::temp_dir(),
        };
        if staging_dir.starts_with(&path) {
            // Staged packs are never part of the backup.
            excludes.push(staging_dir.to_string_lossy().into_owned());
        }
        let capture = capture_settings(a, &path, &name, &staging_dir)?;
        Ok(AgentConfig {
            backup_retry_window: duration("LIFEBOAT_BACKUP_RETRY_WINDOW", &a.backup_retry_window)?,
            allow_live_database: a.allow_live_database,
            staging_dir,
            dump_dir: a
                .dump_dir
                .clone()
                .unwrap_or_else(|| std::env::temp_dir().join("lifeboat-dump")),
            jitter: duration("LIFEBOAT_JITTER", &a.jitter)?,
            hook_timeout: duration("LIFEBOAT_HOOK_TIMEOUT", &a.hook_timeout)?,
            restore_command_timeout: duration(
                "LIFEBOAT_RESTORE_COMMAND_TIMEOUT",
                &a.restore_command_timeout,
            )?,
            pause_max: duration("LIFEBOAT_PAUSE_MAX", &a.pause_max)?,
            restore_timeout: duration("LIFEBOAT_RESTORE_TIMEOUT", &a.restore_timeout)?,
            shutdown_backup_timeout: duration(
                "LIFEBOAT_SHUTDOWN_BACKUP_TIMEOUT",
                &a.shutdown_backup_timeout,
            )?,
            lease_ttl: duration("LIFEBOAT_LEASE_TTL", &a.lease_ttl)?.max(Duration::from_secs(2)),
            lease_wait: duration("LIFEBOAT_LEASE_WAIT", &a.lease_wait)?,
            control_token: secret("LIFEBOAT_CONTROL_TOKEN")?,
            ping_url: secret("LIFEBOAT_PING_URL")?,
            webhook_url: secret("LIFEBOAT_WEBHOOK_URL")?,
            path,
            name,
            schedule,
            backup_on_start: a.backup_on_start,
            excludes,
            keep,
            prune_schedule,
            prune,
            pre_backup: a.pre_backup.clone().filter(|s| !s.trim().is_empty()),
            post_backup: a.post_backup.clone().filter(|s| !s.trim().is_empty()),
            hook_on_error,
            dump_command: a.dump_command.clone().filter(|s| !s.trim().is_empty()),
            dump_filename: a.dump_filename.clone(),
            restore_command: a.restore_command.clone().filter(|s| !s.trim().is_empty()),
            pause: a.pause,
            restore_snapshot: a.restore_snapshot.clone(),
            start_empty_on_failure,
            listen: a.listen,
            tags: a.tags.iter().filter(|t| !t.is_empty()).cloned().collect(),
            labels,
            capture,
        })
    }

    /// The effective settings as `KEY=value` lines, secrets redacted.
    pub fn describe(&self, repository: &str) -> Vec<(String, String)> {
        let redact = |v: &Option<String>| match v {
            Some(_) => "<set>".to_string(),
            None => "<unset>".to_string(),
        };
        let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "<unset>".into());
        let secs = |d: Duration| format!("{}s", d.as_secs_f64());
        vec![
            ("LIFEBOAT_REPOSITORY".into(), redact_url(repository)),
            ("LIFEBOAT_PATH".into(), self.path.display().to_string()),
            ("LIFEBOAT_NAME".into(), self.name.clone()),
            ("LIFEBOAT_SCHEDULE".into(), self.schedule.to_string()),
            ("LIFEBOAT_JITTER".into(), secs(self.jitter)),
            (
                "LIFEBOAT_BACKUP_ON_START".into(),
                self.backup_on_start.to_string(),
            ),
            ("LIFEBOAT_KEEP".into(), describe_keep(&self.keep)),
            (
                "LIFEBOAT_PRUNE_SCHEDULE".into(),
                self.prune_schedule.to_string(),
            ),
            (
                "LIFEBOAT_PRUNE_GRACE".into(),
                format!("{}s", self.prune.grace.as_secs()),
            ),
            ("LIFEBOAT_PRE_BACKUP".into(), opt(&self.pre_backup)),
            ("LIFEBOAT_POST_BACKUP".into(), opt(&self.post_backup)),
            ("LIFEBOAT_HOOK_TIMEOUT".into(), secs(self.hook_timeout)),
            ("LIFEBOAT_DUMP_COMMAND".into(), opt(&self.dump_command)),
            (
                "LIFEBOAT_RESTORE_COMMAND".into(),
                opt(&self.restore_command),
            ),
            ("LIFEBOAT_METHOD".into(), self.capture.method.name().into()),
            (
                "LIFEBOAT_PG_ARCHIVE_TIMEOUT".into(),
                secs(self.capture.postgres.archive_timeout),
            ),
            (
                "LIFEBOAT_WAL_SOCKET".into(),
                self.capture.postgres.socket.display().to_string(),
            ),
            (
                "LIFEBOAT_RESTORE_TO_TIME".into(),
                opt(&self.capture.postgres.restore_to_time),
            ),
            (
                "LIFEBOAT_SQLITE".into(),
                self.capture
                    .sqlite
                    .databases
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            (
                "LIFEBOAT_SQLITE_SYNC_INTERVAL".into(),
                secs(self.capture.sqlite.sync_interval),
            ),
            (
                "LIFEBOAT_SQLITE_CHECKPOINT_PAGES".into(),
                self.capture.sqlite.checkpoint_pages.to_string(),
            ),
            ("LIFEBOAT_PAUSE".into(), self.pause.to_string()),
            (
                "LIFEBOAT_RESTORE_TIMEOUT".into(),
                secs(self.restore_timeout),
            ),
            (
                "LIFEBOAT_ON_RESTORE_FAILURE".into(),
                if self.start_empty_on_failure {
                    "start-empty"
                } else {
                    "fail"
                }
                .into(),
            ),
            (
                "LIFEBOAT_SHUTDOWN_BACKUP_TIMEOUT".into(),
                secs(self.shutdown_backup_timeout),
            ),
            (
                "LIFEBOAT_BACKUP_RETRY_WINDOW".into(),
                secs(self.backup_retry_window),
            ),
            (
                "LIFEBOAT_ALLOW_LIVE_DATABASE".into(),
                self.allow_live_database.to_string(),
            ),
            (
                "LIFEBOAT_STAGING_DIR".into(),
                self.staging_dir.display().to_string(),
            ),
            ("LIFEBOAT_LEASE_TTL".into(), secs(self.lease_ttl)),
            (
                "LIFEBOAT_LISTEN".into(),
                self.listen.map_or("<off>".into(), |a| a.to_string()),
            ),
            ("LIFEBOAT_CONTROL_TOKEN".into(), redact(&self.control_token)),
            ("LIFEBOAT_PING_URL".into(), redact(&self.ping_url)),
            ("LIFEBOAT_WEBHOOK_URL".into(), redact(&self.webhook_url)),
            ("labels".into(), format!("{:?}", self.labels)),
        ]
    }
}

impl AgentConfig {
    /// Files mode (no dump, no pause) on a volume holding a live database, not accepted by
    /// `LIFEBOAT_ALLOW_LIVE_DATABASE`: what was found.
    /// `paused`: the copy is made with the app frozen (crash-consistent).
    pub fn live_database(&self, paused: bool) -> Option<crate::capture::livedb::LiveDatabase> {
        if self.capture.method != crate::capture::Method::Files
            || self.dump_command.is_some()
            || paused
            || self.allow_live_database
        {
            return None;
        }
        crate::capture::livedb::find(&self.path, &[self.path.join(MARKER_DIR)])
    }

    /// [`Self::live_database`]'s one-line refusal.
    pub fn live_database_refusal(&self, paused: bool) -> Option<String> {
        self.live_database(paused).map(|db| db.refusal())
    }

    /// Checks made once before the agent starts: no live database in files mode, and room to
    /// stage S3 packs. `wraps_app`: the agent is about to start the app, so a database it cannot
    /// judge (a `postmaster.pid` left by a crash in another container's namespaces) is the
    /// app's own, not yet started: warned about, not refused, and watched once the app runs.
    pub fn preflight(&self, location: &str, wraps_app: bool) -> Result<()> {
        if let Some(db) = self.live_database(self.pause) {
            if !wraps_app || db.certain {
                return Err(Error::invalid(db.refusal()));
            }
            tracing::warn!(
                "{} ({}): starting the app, which owns it; backups are refused while it runs",
                db.path.display(),
                db.evidence
            );
        }
        if location.starts_with("s3:") {
            crate::backend::s3::connections_from_env()?;
            check_staging(&self.staging_dir)?;
        }
        Ok(())
    }
}

/// The capture method: `LIFEBOAT_METHOD`, or what the older settings imply.
fn capture_settings(
    a: &AgentArgs,
    path: &Path,
    name: &str,
    staging: &Path,
) -> Result<crate::capture::Settings> {
    use crate::capture::Method;
    let dump = a.dump_command.clone().filter(|s| !s.trim().is_empty());
    let sqlite: Vec<PathBuf> = a
        .sqlite
        .iter()
        .filter(|p| !p.as_os_str().is_empty())
        .cloned()
        .collect();
    let method = match a.method.as_deref().filter(|m| !m.trim().is_empty()) {
        Some(m) => Method::parse(m)?,
        None if !sqlite.is_empty() => Method::Sqlite,
        None if dump.is_some() => Method::Dump,
        None if a.pause => Method::Pause,
        None => Method::Files,
    };
    if method == Method::Dump && dump.is_none() {
        return Err(Error::invalid(
            "LIFEBOAT_METHOD=dump needs LIFEBOAT_DUMP_COMMAND (the command that writes the dump)",
        ));
    }
    if method != Method::Dump && dump.is_some() {
        return Err(Error::invalid(format!(
            "LIFEBOAT_DUMP_COMMAND is set but LIFEBOAT_METHOD={}: unset one of them",
            method.name()
        )));
    }
    if a.pause && method != Method::Pause {
        return Err(Error::invalid(format!(
            "LIFEBOAT_PAUSE=true but LIFEBOAT_METHOD={}: unset one of them",
            method.name()
        )));
    }
    if a.restore_to_time.is_some() && !matches!(method, Method::Postgres | Method::Sqlite) {
        return Err(Error::invalid(
            "LIFEBOAT_RESTORE_TO_TIME replays a database's log: it needs LIFEBOAT_METHOD=postgres or sqlite",
        ));
    }
    if !sqlite.is_empty() && method != Method::Sqlite {
        return Err(Error::invalid(format!(
            "LIFEBOAT_SQLITE is set but LIFEBOAT_METHOD={}: unset one of them",
            method.name()
        )));
    }
    for p in &sqlite {
        if !p.is_absolute() || !p.starts_with(path) || p == path {
            return Err(Error::invalid(format!(
                "LIFEBOAT_SQLITE: {} is not a file inside the volume {} (LIFEBOAT_PATH); give absolute paths of the databases in it",
                p.display(),
                path.display()
            )));
        }
    }
    let sync_interval = duration("LIFEBOAT_SQLITE_SYNC_INTERVAL", &a.sqlite_sync_interval)?;
    if sync_interval.is_zero() {
        return Err(Error::invalid(
            "LIFEBOAT_SQLITE_SYNC_INTERVAL=0: give a duration such as 1s",
        ));
    }
    let checkpoint_pages: u32 = a
        .sqlite_checkpoint_pages
        .trim()
        .parse()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| {
            Error::invalid(format!(
                "LIFEBOAT_SQLITE_CHECKPOINT_PAGES={:?} is not a positive number of pages (default 1000)",
                a.sqlite_checkpoint_pages
            ))
        })?;
    let restore_to_time = a
        .restore_to_time
        .as_deref()
        .filter(|t| !t.trim().is_empty())
        .map(|t| crate::capture::postgres::parse_target(t, "LIFEBOAT_RESTORE_TO_TIME"))
        .transpose()?;
    let socket = match a.wal_socket.clone().filter(|p| !p.as_os_str().is_empty()) {
        Some(p) => std::path::absolute(&p)
            .map_err(|e| Error::io(format!("LIFEBOAT_WAL_SOCKET {}", p.display()), e))?,
        None => {
            let tag = &blake3::hash(name.as_bytes()).to_hex()[..12];
            std::env::temp_dir().join(format!("lifeboat-wal-{tag}.sock"))
        }
    };
    let exe = std::env::current_exe()
        .map_err(|e| Error::io("finding the lifeboat binary for archive_command", e))?;
    Ok(crate::capture::Settings {
        method,
        dump: dump.map(|d| (d, a.dump_filename.clone())),
        pause_max: duration("LIFEBOAT_PAUSE_MAX", &a.pause_max)?,
        allow_live_database: a.allow_live_database,
        skip: vec![path.join(MARKER_DIR)],
        postgres: crate::capture::postgres::PgSettings {
            volume: path.to_path_buf(),
            archive_timeout: duration("LIFEBOAT_PG_ARCHIVE_TIMEOUT", &a.pg_archive_timeout)?,
            socket,
            exe,
            restore_to_time: restore_to_time.clone(),
        },
        sqlite: crate::capture::sqlite::SqliteSettings {
            volume: path.to_path_buf(),
            name: name.to_string(),
            databases: sqlite,
            sync_interval,
            checkpoint_pages,
            staging: staging.to_path_buf(),
            restore_to_time,
            skip: vec![path.join(MARKER_DIR)],
        },
    })
}

/// The staging room S3 backups need: every uploader holds a pack, one waits in the queue and
/// two (data and tree) are being filled, at the default 32 MiB pack size.
pub fn staging_need() -> u64 {
    let connections = crate::backend::s3::connections_from_env()
        .unwrap_or(crate::backend::s3::DEFAULT_CONNECTIONS) as u64;
    u64::from(crate::repository::config::DEFAULT_PACK_SIZE) * (connections + 3)
}

/// The staging directory exists (created if need be), is writable and has [`staging_need`]
/// bytes free.
pub fn check_staging(dir: &Path) -> Result<()> {
    let what = || format!("LIFEBOAT_STAGING_DIR {}", dir.display());
    std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("{}: cannot create", what()), e))?;
    tempfile::tempfile_in(dir)
        .map_err(|e| Error::io(format!("{}: cannot write a staging file", what()), e))?;
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
        .map_err(|_| Error::invalid(format!("{}: not a valid path", what())))?;
    // SAFETY: a zeroed statvfs is valid; statvfs fills it for a NUL-terminated path.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Ok(());
    }
    let free = st.f_bavail as u64 * st.f_frsize as u64;
    let need = staging_need();
    if free < need {
        return Err(Error::invalid(format!(
            "{}: {} MiB free, but S3 backups stage up to {} MiB of packs there (32 MiB packs for each of LIFEBOAT_S3_CONNECTIONS uploads plus 3); point LIFEBOAT_STAGING_DIR at a larger disk or lower LIFEBOAT_S3_CONNECTIONS",
            what(),
            free >> 20,
            need >> 20
        )));
    }
    Ok(())
}

fn describe_keep(k: &KeepPolicy) -> String {
    let mut parts: Vec<String> = [
        ("last", k.last),
        ("hourly", k.hourly),
        ("daily", k.daily),
        ("weekly", k.weekly),
        ("monthly", k.monthly),
        ("yearly", k.yearly),
    ]
    .iter()
    .filter(|(_, n)| *n > 0)
    .map(|(r, n)| format!("{r} {n}"))
    .collect();
    if let Some(w) = k.within {
        parts.push(format!("within {}s", w.as_secs()));
    }
    if parts.is_empty() {
        "<keep everything>".into()
    } else {
        parts.join(", ")
    }
}

/// Hides credentials embedded in a URL (`https://user:pass@host` → `https://<redacted>@host`).
fn redact_url(s: &str) -> String {
    match (s.find("://"), s.find('@')) {
        (Some(p), Some(at)) if at > p => format!("{}<redacted>{}", &s[..p + 3], &s[at..]),
        _ => s.to_string(),
    }
}

/// Loads `LIFEBOAT_CONFIG` (TOML) into the environment before the command line is parsed, so a
/// file and variables configure the same settings and a variable always wins. Keys are the
/// variable names with or without the `LIFEBOAT_` prefix, in any case: `schedule = "@daily"`.
pub fn load_config_file() -> Result<()> {
    let Ok(file) = std::env::var("LIFEBOAT_CONFIG") else {
        return Ok(());
    };
    let text = std::fs::read_to_string(&file)
        .map_err(|e| Error::io(format!("LIFEBOAT_CONFIG {file}: cannot read"), e))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e| Error::invalid(format!("LIFEBOAT_CONFIG {file}: not valid TOML: {e}")))?;
    for (k, v) in table {
        let key = k.to_ascii_uppercase().replace('-', "_");
        let key = if key.starts_with("LIFEBOAT_") || key.starts_with("AWS_") {
            key
        } else {
            format!("LIFEBOAT_{key}")
        };
        let value = match v {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Array(a) => a
                .iter()
                .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_string))
                .collect::<Vec<_>>()
                .join(","),
            other => {
                return Err(Error::invalid(format!(
                    "LIFEBOAT_CONFIG {file}: {k} = {other}: use a string, number, boolean or list"
                )));
            }
        };
        if std::env::var_os(&key).is_none() {
            // SAFETY: called from `main` before any other thread exists.
            unsafe { std::env::set_var(&key, value) };
        }
    }
    Ok(())
}
