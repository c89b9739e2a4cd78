//! The restore gate: decides, before the app starts, whether the volume must be restored.
//!
//! - the volume has data → leave it alone;
//! - it is empty and the volume name has snapshots → restore the latest (or the one asked for);
//! - it is empty and there are none (first deployment) → start fresh;
//! - anything fails → retry until the restore timeout, then refuse to start the app on an
//!   empty volume (unless `start-empty` was asked for).
//!
//! "Empty" ignores `lost+found` and lifeboat's own marker directory. The app never sees a partial
//! restore: the gate restores into `.lifeboat/staging` inside the volume (same file system), and
//! only a restore that finished with every file verified is moved into place, one rename per
//! top-level entry. Around that:
//!
//! - `.lifeboat/restore-in-progress` is written before anything else;
//! - `.lifeboat/restore-committing` once the staged restore is complete, before the first rename;
//! - `.lifeboat/restored` replaces both when everything is in place.
//!
//! A restore that fails removes everything it wrote and its markers: the volume is as it was
//! before (empty), so `start-empty` starts the app on an empty volume, never on partial data. A
//! restore cut short by a kill is settled the next time anything looks at the volume
//! ([`volume_state`], which the agent calls first, before it contacts the repository): cut short
//! while committing, the renames are finished (the staged copy was complete); cut short before,
//! everything it wrote is removed.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::json;
use tracing::{info, warn};

use super::config::{AgentConfig, MARKER_DIR};
use crate::error::{Error, IoContext, Result};
use crate::id::Id;
use crate::repository::Repository;
use crate::restore::{self, RestoreOptions};

const IN_PROGRESS: &str = "restore-in-progress";
const COMMITTING: &str = "restore-committing";
const RESTORED: &str = "restored";
const STAGING: &str = "staging";

/// What the gate found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GateOutcome {
    /// The volume already had data; nothing was restored.
    HasData,
    /// The volume was restored from this snapshot.
    Restored {
        /// Snapshot id.
        snapshot: Id,
        /// Files restored.
        files: u64,
        /// Bytes restored.
        bytes: u64,
    },
    /// No snapshot of this volume exists: first deployment, the app starts on an empty volume.
    Fresh,
    /// Dump mode: the dump was restored to `file`; the restore command loads it once the app is
    /// up, and the marker is finished after it succeeds.
    DumpStaged {
        /// Snapshot id.
        snapshot: Id,
        /// The restored dump.
        file: PathBuf,
    },
    /// The gate failed and `start-empty` let the app start anyway.
    StartedEmptyAfterFailure(String),
}

/// The volume's state as far as the gate is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolumeState {
    /// Nothing but `lost+found` and lifeboat's markers.
    Empty,
    /// A previous restore was cut short by a kill; [`volume_state`] removed what it wrote, so
    /// the volume is empty again (and the gate restores it anew).
    RestoreInterrupted,
    /// The app's data is there.
    HasData,
}

/// Looks at the volume, after settling a restore that a kill cut short (see the module docs):
/// `RestoreInterrupted` says one was found and removed (the volume is empty now); a restore cut
/// short while committing is finished and the volume has data.
pub fn volume_state(path: &Path) -> Result<VolumeState> {
    let interrupted = settle_interrupted(path)?;
    let entries = match std::fs::read_dir(path) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(VolumeState::Empty),
        Err(e) => {
            return Err(Error::io(
                format!("{}: cannot list the volume", path.display()),
                e,
            ));
        }
    };
    for e in entries {
        let e = e.ctx(|| format!("{}: cannot list the volume", path.display()))?;
        let name = e.file_name();
        if name != "lost+found" && name != MARKER_DIR {
            return Ok(VolumeState::HasData);
        }
    }
    Ok(if interrupted {
        VolumeState::RestoreInterrupted
    } else {
        VolumeState::Empty
    })
}

/// Finishes or removes a restore a kill cut short. Returns whether one was removed.
fn settle_interrupted(path: &Path) -> Result<bool> {
    let markers = path.join(MARKER_DIR);
    if !markers.join(IN_PROGRESS).exists() {
        return Ok(false);
    }
    let staging = markers.join(STAGING);
    if let Ok(body) = std::fs::read(markers.join(COMMITTING))
        && let Some(snapshot) = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["snapshot"].as_str().and_then(|h| h.parse::<Id>().ok()))
    {
        warn!(path = %path.display(), "a restore was cut short while moving into place: finishing it");
        if staging.exists() {
            restore::commit_staged(&staging, path, &KEEP)?;
        }
        finish_marker(path, &snapshot)?;
        return Ok(false);
    }
    warn!(path = %path.display(), "a restore was cut short: removing what it wrote");
    abandon(path)?;
    Ok(true)
}

/// Entries of the volume a restore never replaces or removes.
const KEEP: [&str; 2] = ["lost+found", MARKER_DIR];

/// Returns the volume to the state before the restore began: removes the staged copy, anything
/// moved into place, and the markers. The gate only restores into a volume that holds nothing but
/// `lost+found` and the marker directory, so everything else is the restore's.
fn abandon(path: &Path) -> Result<()> {
    let markers = path.join(MARKER_DIR);
    match std::fs::remove_dir_all(markers.join(STAGING)) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(Error::io(
                format!("cannot remove {}", markers.join(STAGING).display()),
                e,
            ));
        }
    }
    clear_volume(path)?;
    for name in [RESTORED, COMMITTING, IN_PROGRESS] {
        remove_if_there(&markers.join(name))?;
    }
    Ok(())
}

fn remove_if_there(p: &Path) -> Result<()> {
    match std::fs::remove_file(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("cannot remove {}", p.display()), e)),
    }
}

/// Removes everything a cut-short restore left, keeping `lost+found` and the marker directory.
fn clear_volume(path: &Path) -> Result<()> {
    let entries = match std::fs::read_dir(path) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(format!("{}: cannot list", path.display()), e)),
    };
    for e in entries {
        let e = e.ctx(|| format!("{}: cannot list", path.display()))?;
        let name = e.file_name();
        if KEEP.iter().any(|k| name == *k) {
            continue;
        }
        let p = e.path();
        let r = if e.file_type().is_ok_and(|t| t.is_dir()) {
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_file(&p)
        };
        r.ctx(|| format!("{}: cannot remove a partial restore's file", p.display()))?;
    }
    Ok(())
}

fn write_marker(path: &Path, name: &str, body: &serde_json::Value) -> Result<()> {
    let dir = path.join(MARKER_DIR);
    std::fs::create_dir_all(&dir).ctx(|| format!("cannot create {}", dir.display()))?;
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, body.to_string()).ctx(|| format!("cannot write {}", tmp.display()))?;
    let f = std::fs::File::open(&tmp).ctx(|| format!("cannot open {}", tmp.display()))?;
    f.sync_all()
        .ctx(|| format!("cannot sync {}", tmp.display()))?;
    std::fs::rename(&tmp, dir.join(name))
        .ctx(|| format!("cannot write marker in {}", dir.display()))
}

/// What the volume was restored from and the file-system time the restore had finished by: the
/// ctime of the `restored` marker, written after every restored file and its metadata. `None`
/// when the volume was not restored by lifeboat or the marker cannot be read.
/// See [`crate::backup::BackupOptions::restored`].
pub fn restored_hint(path: &Path) -> Option<(Id, i64)> {
    use std::os::unix::fs::MetadataExt;
    let marker = path.join(MARKER_DIR).join(RESTORED);
    let meta = std::fs::metadata(&marker).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&marker).ok()?).ok()?;
    let id: Id = v["snapshot"].as_str()?.parse().ok()?;
    Some((id, meta.ctime() * 1_000_000_000 + meta.ctime_nsec()))
}

/// Marks the restore finished: removes the in-progress marker and records what was restored.
pub fn finish_marker(path: &Path, snapshot: &Id) -> Result<()> {
    write_marker(
        path,
        RESTORED,
        &json!({"snapshot": snapshot.to_hex(), "time": chrono::Utc::now()}),
    )?;
    // In-progress first: once it is gone the volume counts as restored. A committing marker a
    // kill leaves behind is inert (only read beside in-progress) and the next restore removes it
    // before it writes in-progress.
    remove_if_there(&path.join(MARKER_DIR).join(IN_PROGRESS))?;
    remove_if_there(&path.join(MARKER_DIR).join(COMMITTING))
}

/// One attempt at the gate against an open repository.
pub fn attempt(
    repo: &Repository,
    cfg: &AgentConfig,
    capture: &dyn crate::capture::Capture,
) -> Result<GateOutcome> {
    let state = volume_state(&cfg.path)?;
    if state == VolumeState::HasData {
        if cfg.capture.postgres.restore_to_time.is_some() {
            warn!(
                "LIFEBOAT_RESTORE_TO_TIME is ignored: the volume has data; it applies only to a restore onto an empty volume"
            );
        }
        info!(path = %cfg.path.display(), "volume has data: no restore");
        return Ok(GateOutcome::HasData);
    }
    // A damaged snapshot object that may be the newest is a failure to retry and report, never
    // a reason to fall back to an older one or to "first deployment" (Repository::latest).
    let found = match (
        cfg.restore_snapshot.as_deref(),
        cfg.capture.postgres.restore_to_time.as_deref(),
    ) {
        (None, None) => repo.latest(Some(&cfg.name), false)?,
        (Some(spec), _) => Some(repo.find_snapshot(spec, Some(&cfg.name))?),
        (None, Some(t)) => Some(capture.restore_point(repo, &cfg.name, t)?),
    };
    let Some((id, snap)) = found else {
        info!(name = %cfg.name, "no snapshot of this volume yet: first deployment, starting fresh");
        return Ok(GateOutcome::Fresh);
    };
    if state == VolumeState::RestoreInterrupted {
        info!(path = %cfg.path.display(), "an earlier restore was cut short and removed: restoring again");
    }
    std::fs::create_dir_all(cfg.path.join(MARKER_DIR))
        .ctx(|| format!("cannot create {}", cfg.path.join(MARKER_DIR).display()))?;
    remove_if_there(&cfg.path.join(MARKER_DIR).join(COMMITTING))?;
    write_marker(
        &cfg.path,
        IN_PROGRESS,
        &json!({"snapshot": id.to_hex(), "started": chrono::Utc::now()}),
    )?;
    let started = Instant::now();
    let r = if cfg.dump_command.is_some() {
        restore_dump(repo, cfg, &id, &snap)
    } else {
        restore_volume(repo, cfg, &id, &snap, started, capture)
    };
    if r.is_err() {
        // Leave the volume as it was before: empty. The dump lives beside the volume.
        if cfg.dump_command.is_some() {
            let _ = std::fs::remove_dir_all(&cfg.dump_dir);
        }
        if let Err(e) = abandon(&cfg.path) {
            warn!("cannot remove what the failed restore wrote: {e}");
        }
    }
    r
}

fn restore_dump(
    repo: &Repository,
    cfg: &AgentConfig,
    id: &Id,
    snap: &crate::repository::snapshot::Snapshot,
) -> Result<GateOutcome> {
    // The dump goes beside the volume; the app initialises the empty volume itself and the
    // restore command loads the dump into it.
    let _ = std::fs::remove_dir_all(&cfg.dump_dir);
    let mut opts = RestoreOptions::new(&cfg.dump_dir);
    opts.overwrite = true;
    let out = restore::restore(repo, snap, &opts)?;
    if !out.errors.is_empty() {
        return Err(Error::corrupt(
            format!("snapshot {}", id.short()),
            format!("dump restore incomplete: {}", out.errors.join("; ")),
        ));
    }
    let file = find_file(&cfg.dump_dir, &cfg.dump_filename).ok_or_else(|| {
        Error::corrupt(
            format!("snapshot {}", id.short()),
            format!("holds no dump file {:?}", cfg.dump_filename),
        )
    })?;
    info!(snapshot = %id.short(), file = %file.display(), "dump restored; it is loaded once the app is up");
    Ok(GateOutcome::DumpStaged {
        snapshot: *id,
        file,
    })
}

/// Restores into `.lifeboat/staging`, then moves it into place only when every file came back.
fn restore_volume(
    repo: &Repository,
    cfg: &AgentConfig,
    id: &Id,
    snap: &crate::repository::snapshot::Snapshot,
    started: Instant,
    capture: &dyn crate::capture::Capture,
) -> Result<GateOutcome> {
    let staging = cfg.path.join(MARKER_DIR).join(STAGING);
    match std::fs::remove_dir_all(&staging) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(format!("cannot remove {}", staging.display()), e)),
    }
    let mut opts = RestoreOptions::new(&staging);
    // Narrated: a restore over the internet can take minutes, exactly when the owner watches
    // the container log (progress lines every 10 s and at each quarter).
    opts.progress = crate::progress::ProgressMode::Log;
    info!(
        snapshot = %id.short(),
        files = snap.summary.total_files,
        bytes = snap.summary.total_bytes,
        "restoring snapshot {} ({} files, {}) onto the empty volume",
        id.short(),
        snap.summary.total_files,
        crate::format::bytes(snap.summary.total_bytes)
    );
    let out = restore::restore(repo, snap, &opts)?;
    if !out.errors.is_empty() {
        return Err(Error::corrupt(
            format!("snapshot {}", id.short()),
            format!(
                "restore incomplete ({} error(s)): {}; nothing was moved into the volume",
                out.errors.len(),
                out.errors.first().cloned().unwrap_or_default()
            ),
        ));
    }
    if out.files
        != snap.summary.files_new + snap.summary.files_changed + snap.summary.files_unmodified
        && snap.summary.errors == 0
    {
        warn!(
            restored = out.files,
            "restored file count differs from the snapshot's summary"
        );
    }
    // The method's own additions (PostgreSQL's recovery settings) go into the staged copy, so
    // the volume never holds a restored database without them.
    capture.after_restore(repo, &staging, snap)?;
    write_marker(
        &cfg.path,
        COMMITTING,
        &json!({"snapshot": id.to_hex(), "staged": chrono::Utc::now()}),
    )?;
    restore::commit_staged(&staging, &cfg.path, &KEEP)?;
    finish_marker(&cfg.path, id)?;
    info!(
        snapshot = %id.short(),
        files = out.files,
        bytes = out.bytes,
        seconds = (started.elapsed().as_secs_f64() * 100.0).round() / 100.0,
        "volume restored"
    );
    Ok(GateOutcome::Restored {
        snapshot: *id,
        files: out.files,
        bytes: out.bytes,
    })
}

fn find_file(dir: &Path, name: &str) -> Option<PathBuf> {
    let direct = dir.join(name);
    if direct.is_file() {
        return Some(direct);
    }
    if dir.is_file() {
        return Some(dir.to_path_buf());
    }
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir())
            && let Some(f) = find_file(&e.path(), name)
        {
            return Some(f);
        }
    }
    None
}

/// Retries `op` with exponential backoff (1 s doubling to 30 s) until it succeeds or `timeout`
/// has passed; the last error is returned. `stop` ends the wait early (a SIGTERM at start).
/// Errors worth waiting out: the storage (unreachable, throttling, a restart), the network, an
/// object that vanished between a listing and a read.
fn transient(e: &Error) -> bool {
    matches!(e, Error::Backend { .. } | Error::NotFound { .. }) || e.is_retryable()
}

/// Retries `op` with backoff until it succeeds, `timeout` passes or `stop` says so, but only
/// through storage errors: anything else fails at once with its own advice.
pub fn retry<T>(
    what: &str,
    timeout: Duration,
    stop: &dyn Fn() -> bool,
    op: impl FnMut() -> Result<T>,
) -> Result<T> {
    retry_when(transient, what, timeout, stop, op)
}

/// Like [`retry`], through every error: for a restore command run against a server that is still
/// starting, where "connection refused" comes back as the command's failure.
pub fn retry_any<T>(
    what: &str,
    timeout: Duration,
    stop: &dyn Fn() -> bool,
    op: impl FnMut() -> Result<T>,
) -> Result<T> {
    retry_when(|_| true, what, timeout, stop, op)
}

fn retry_when<T>(
    retry_it: fn(&Error) -> bool,
    what: &str,
    timeout: Duration,
    stop: &dyn Fn() -> bool,
    mut op: impl FnMut() -> Result<T>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    let mut delay = Duration::from_secs(1);
    loop {
        match op() {
            Ok(v) => return Ok(v),
            // A wrong password, a setting, a volume path, damage or a newer format do not get
            // better with waiting: fail at once with the error's own advice.
            Err(e) if !retry_it(&e) => return Err(e),
            Err(e) => {
                let now = Instant::now();
                if now >= deadline || stop() {
                    return Err(e);
                }
                let left = deadline - now;
                warn!(error = %e, retry_in = format!("{:.0}s", delay.min(left).as_secs_f64()), "{what} failed; retrying");
                let until = now + delay.min(left);
                while Instant::now() < until && !stop() {
                    std::thread::sleep(Duration::from_millis(100));
                }
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    }
}
