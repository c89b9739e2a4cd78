//! One backup as the agent runs it: the pre and post hooks, the capture method's source, the
//! lease fence, retries through a storage outage, retention, metrics and notifications.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::json;
use tracing::{error, info, warn};

use super::app::App;
use super::config::OnHookError;
use super::{Agent, Reason, hooks, shutdown, state};
use crate::backup::{self, BackupOptions};
use crate::error::{Error, Result};
use crate::id::Id;

/// One backup: hooks, optional pause, the snapshot, retention, metrics and notifications.
pub(super) fn run_backup(agent: &Agent, reason: Reason) -> Result<Id> {
    let state = &agent.state;
    if !state.ready.load(Relaxed) {
        return Err(Error::invalid(
            "the restore has not finished yet: backing up now would record a half-restored volume",
        ));
    }
    let _busy = match reason {
        Reason::Final => state.busy.lock().unwrap_or_else(|e| e.into_inner()),
        _ => match state.busy.try_lock() {
            Ok(g) => g,
            Err(_) => {
                state.skipped.fetch_add(1, Relaxed);
                warn!(
                    reason = reason.as_str(),
                    "a backup is already running: this run is skipped"
                );
                return Err(Error::invalid("a backup is already running"));
            }
        },
    };
    agent.notifier.start();
    let started = Instant::now();
    // A storage outage (a store restarting, a network partition) outlasting the backend's own
    // retries: try the whole backup again with backoff and jitter, for up to
    // LIFEBOAT_BACKUP_RETRY_WINDOW, unless the agent is stopping (the final backup is next).
    let mut attempt = 0;
    let r = loop {
        let r = backup_inner(agent, reason);
        match &r {
            Err(e)
                if reason != Reason::Final && shutdown::is_outage(e) && !shutdown::stopping() =>
            {
                attempt += 1;
                let delay = shutdown::retry_delay(attempt);
                if started.elapsed() + delay > agent.cfg.backup_retry_window {
                    break r;
                }
                warn!(
                    reason = reason.as_str(),
                    attempt,
                    "backup failed on a storage outage: {e}; retrying the whole backup in {:.1}s (LIFEBOAT_BACKUP_RETRY_WINDOW)",
                    delay.as_secs_f64()
                );
                state.backup_retries.fetch_add(1, Relaxed);
                if !shutdown::sleep_unless_stopping(delay) {
                    break r;
                }
            }
            _ => break r,
        }
    };
    if let Ok(repo) = agent.repo() {
        *state.requests.lock().unwrap_or_else(|e| e.into_inner()) = repo.stats();
    }
    let cfg = &agent.cfg;
    match &r {
        Ok((id, out)) => {
            let s = &out.snapshot.summary;
            state.backups.fetch_add(1, Relaxed);
            state.bytes_added_total.fetch_add(s.bytes_added, Relaxed);
            *state.last.lock().unwrap_or_else(|e| e.into_inner()) = state::LastBackup {
                snapshot: Some(id.to_hex()),
                time: Some(Utc::now()),
                duration_seconds: started.elapsed().as_secs_f64(),
                bytes_read: s.bytes_read,
                bytes_added: s.bytes_added,
                files: s.total_files,
                last_error: None,
            };
            info!(
                snapshot = %id.short(),
                reason = reason.as_str(),
                method = %out.snapshot.method,
                files = s.total_files,
                bytes_read = s.bytes_read,
                bytes_added = s.bytes_added,
                seconds = (started.elapsed().as_secs_f64() * 100.0).round() / 100.0,
                warnings = out.warnings.len(),
                "backup done"
            );
            agent.notifier.success(json!({
                "event": "backup.success", "volume": cfg.name, "snapshot": id.to_hex(),
                "reason": reason.as_str(), "summary": s, "warnings": out.warnings,
            }));
        }
        Err(e) => {
            state.failures.fetch_add(1, Relaxed);
            state
                .last
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .last_error = Some(e.to_string());
            error!(reason = reason.as_str(), "backup failed: {e}");
            agent.notifier.failure(
                &e.to_string(),
                json!({"event": "backup.failure", "volume": cfg.name, "reason": reason.as_str(), "error": e.to_string()}),
            );
        }
    }
    r.map(|(id, _)| id)
}

fn backup_inner(agent: &Agent, reason: Reason) -> Result<(Id, backup::BackupOutcome)> {
    let cfg = &agent.cfg;
    let hook_env = [
        ("LIFEBOAT_NAME", cfg.name.clone()),
        ("LIFEBOAT_PATH", cfg.path.display().to_string()),
        ("LIFEBOAT_REASON", reason.as_str().to_string()),
    ];
    let mut pre_error = None;
    if let Some(pre) = &cfg.pre_backup
        && let Err(e) = hooks::run(pre, &hook_env, cfg.hook_timeout)
    {
        match cfg.hook_on_error {
            OnHookError::Abort => pre_error = Some(e),
            OnHookError::Continue => warn!("pre-backup hook failed, backing up anyway: {e}"),
        }
    }
    let result = match pre_error {
        Some(e) => Err(Error::Command {
            command: "LIFEBOAT_PRE_BACKUP".into(),
            message: format!("{e}; backup skipped (LIFEBOAT_HOOK_ON_ERROR=abort)"),
        }),
        None => snapshot(agent, reason),
    };
    if let Some(post) = &cfg.post_backup {
        let mut env = hook_env.to_vec();
        env.push((
            "LIFEBOAT_RESULT",
            if result.is_ok() { "success" } else { "failure" }.into(),
        ));
        if let Err(e) = hooks::run(post, &env, cfg.hook_timeout) {
            warn!("post-backup hook failed: {e}");
        }
    }
    let (id, out) = result?;
    if !cfg.keep.is_empty() {
        match crate::forget::forget(agent.repo()?, &cfg.name, &cfg.keep, false) {
            Ok(d) => {
                let gone: Vec<String> = d
                    .iter()
                    .filter(|d| !d.keep)
                    .map(|d| format!("{} ({})", d.id.short(), d.time.format("%Y-%m-%d %H:%M:%S")))
                    .collect();
                if !gone.is_empty() {
                    info!(
                        removed = gone.len(),
                        kept = d.len() - gone.len(),
                        snapshots = %gone.join(", "),
                        "retention removed snapshots"
                    );
                }
            }
            Err(e) => warn!("retention failed (the backup itself is safe): {e}"),
        }
    }
    Ok((id, out))
}

fn snapshot(agent: &Agent, reason: Reason) -> Result<(Id, backup::BackupOutcome)> {
    let cfg = &agent.cfg;
    let mut opts = BackupOptions::new(cfg.name.clone());
    // A long backup logs where it is every 10 s (and at each quarter) once it has run 10 s.
    opts.progress = crate::progress::ProgressMode::Log;
    opts.restored = super::gate::restored_hint(&cfg.path);
    opts.excludes = cfg.excludes.clone();
    opts.tags = cfg.tags.clone();
    opts.labels = cfg.labels.clone();
    opts.labels
        .insert("lifeboat.reason".into(), reason.as_str().into());
    // Volume lease fence (issue 14): no snapshot commits unless the lease is provably held.
    if let Some(l) = agent
        .lease
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
    {
        if let Some(why) = l.lost() {
            return Err(Error::invalid(format!(
                "volume lease lost ({why}): this instance takes no more backups"
            )));
        }
        opts.fence = Some(backup::CommitFence(Arc::new(l.fence())));
    }
    let repo = agent.repo()?;
    let app = agent.app.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let control = app.as_ref().map(|a| AppHandle(a.clone()));
    let exited = app.as_ref().is_some_and(|a| a.has_exited());
    let wal: crate::capture::WalReader = {
        let repo = repo.clone();
        let name = cfg.name.clone();
        Arc::new(move |f: &str| crate::wal::WalArchive::new(&repo, &name).fetch(f))
    };
    let prepared = agent.capture.begin(crate::capture::Begin {
        path: &cfg.path,
        is_final: reason == Reason::Final,
        app: control
            .as_ref()
            .map(|c| c as &dyn crate::capture::AppControl),
        app_exited: exited,
        opts: &mut opts,
        wal: Some(wal),
    })?;
    let out = backup::backup(repo, &prepared.source, &opts);
    drop(prepared.guard);
    if let Some(after) = prepared.after
        && let Some(w) = after()
    {
        warn!("{w}");
    }
    let out = out?;
    Ok((out.id, out))
}

/// The wrapped app as capture methods see it.
struct AppHandle(Arc<App>);

impl crate::capture::AppControl for AppHandle {
    fn pause(&self, max: Duration) -> Box<dyn crate::capture::Paused> {
        Box::new(self.0.pause(max))
    }
}
