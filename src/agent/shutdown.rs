//! Deadlines and retries around whole backups.
//!
//! - The final backup on a stop signal runs against one deadline: the signal's arrival plus
//!   `LIFEBOAT_SHUTDOWN_BACKUP_TIMEOUT`. The backup itself gets that window less a reserve for the
//!   alert; when it has not finished by then the agent stops waiting, counts a failure, sends the
//!   failure ping and webhook (waiting for them only until the deadline) and exits with
//!   [`EXIT_FINAL_BACKUP_FAILED`], so the platform never kills it mid-backup unannounced.
//! - A scheduled (or start, or requested) backup that fails on a storage outage is retried as a
//!   whole with exponential backoff and jitter for `LIFEBOAT_BACKUP_RETRY_WINDOW`, on top of the
//!   backend's per-request retries, so a store restart of a minute or two costs a delay, not a
//!   backup. A stop signal ends the wait at once, so the final backup is not held up.

use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::time::{Duration, Instant};

use crate::error::Error;

/// Exit code of `run`/`daemon` when the final backup failed or did not finish in time.
pub const EXIT_FINAL_BACKUP_FAILED: u8 = 14;

static STOPPING: AtomicBool = AtomicBool::new(false);
static DEADLINE: std::sync::Mutex<Option<Instant>> = std::sync::Mutex::new(None);

/// The instant by which the process must have exited (the stop signal plus the shutdown
/// timeout), once the final backup has been given it.
pub fn set_deadline(at: Instant) {
    *DEADLINE.lock().unwrap_or_else(|e| e.into_inner()) = Some(at);
}

/// Runs `f` (a last request to the store on the way out), but waits for it only until the
/// shutdown deadline, if one is set: a stalled store must not hold the exit past it.
pub fn within_deadline(what: &str, f: impl FnOnce() + Send + 'static) {
    let Some(at) = *DEADLINE.lock().unwrap_or_else(|e| e.into_inner()) else {
        return f();
    };
    let (tx, rx) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        f();
        let _ = tx.send(());
    });
    if rx
        .recv_timeout(at.saturating_duration_since(Instant::now()))
        .is_err()
    {
        tracing::warn!("{what}: not finished by the shutdown deadline; exiting without it");
    }
}

/// A stop signal arrived: scheduled retries end, the final backup is next.
pub fn begin_stop() {
    STOPPING.store(true, SeqCst);
}

/// Whether a stop signal arrived.
pub fn stopping() -> bool {
    STOPPING.load(SeqCst)
}

/// Part of the shutdown window kept for the failure alert: a fifth, between 1 and 5 seconds.
pub fn alert_reserve(window: Duration) -> Duration {
    (window / 5).clamp(Duration::from_secs(1), Duration::from_secs(5))
}

/// When the process should be gone: a little (a tenth of the window, at most 1 s) before the
/// deadline, so exiting never races the platform's kill.
pub fn exit_by(deadline: Instant, window: Duration) -> Instant {
    deadline
        .checked_sub((window / 10).min(Duration::from_secs(1)))
        .unwrap_or(deadline)
}

/// Whether a failed backup is worth repeating: the store was unreachable, slow or failing, not
/// refusing the data or the credentials.
pub fn is_outage(e: &Error) -> bool {
    if e.is_retryable() {
        return true;
    }
    match e {
        Error::Io { source, .. } => matches!(
            source.kind(),
            std::io::ErrorKind::ConnectionRefused
                | std::io::ErrorKind::NotConnected
                | std::io::ErrorKind::UnexpectedEof
                | std::io::ErrorKind::HostUnreachable
                | std::io::ErrorKind::NetworkUnreachable
        ),
        Error::HeartbeatLapsed { .. } => true,
        _ => false,
    }
}

/// Delay before whole-backup retry `attempt` (1-based): 5 s doubling to at most 60 s, with
/// "equal jitter" (half fixed, half random) so retries neither hammer the store nor stall.
pub fn retry_delay(attempt: u32) -> Duration {
    let exp = Duration::from_secs(5)
        .saturating_mul(1 << (attempt.saturating_sub(1)).min(10))
        .min(Duration::from_secs(60));
    let half = exp / 2;
    let r = u64::from_le_bytes(crate::crypto::random_bytes());
    half + Duration::from_millis(r % (half.as_millis() as u64).max(1))
}

/// Sleeps `d`, waking early when a stop signal arrives; returns false if it did.
pub fn sleep_unless_stopping(d: Duration) -> bool {
    let end = Instant::now() + d;
    while Instant::now() < end {
        if stopping() {
            return false;
        }
        std::thread::sleep((end - Instant::now()).min(Duration::from_millis(100)));
    }
    !stopping()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_with_jitter_and_stay_capped() {
        for a in 1..20 {
            let d = retry_delay(a);
            let exp = (5u64 << (a - 1).min(10)).min(60);
            assert!(
                d >= Duration::from_secs(exp) / 2 && d <= Duration::from_secs(exp),
                "{a}: {d:?}"
            );
        }
        let total: Duration = (1..=6).map(retry_delay).sum();
        assert!(total >= Duration::from_secs(92), "{total:?}");
    }

    #[test]
    fn the_reserve_fits_the_window() {
        assert_eq!(
            alert_reserve(Duration::from_secs(25)),
            Duration::from_secs(5)
        );
        assert_eq!(
            alert_reserve(Duration::from_secs(2)),
            Duration::from_secs(1)
        );
    }
}
