//! Retries with exponential backoff and full jitter, for errors the backend marks retryable
//! (throttling, 5xx, timeouts, resets, truncated bodies). Every operation of the trait is safe to
//! repeat: reads are reads, puts write whole objects under content-addressed or unique names (a
//! create-only put that succeeded before its answer was lost comes back `AlreadyExists`, and
//! the object is then ours), deletes of absent keys succeed.
//!
//! The total is bounded twice: by the number of attempts and by a time budget. No new attempt
//! starts once the budget has passed since the first began (or would pass during the backoff),
//! so an operation gives up within the budget plus one attempt's own deadline (for S3, see
//! [`super::s3::Timeouts`]). Errors that say the data is wrong (too large, corrupt, a store
//! sending more than asked) are not retryable and fail at once.

use std::time::Duration;

use super::{Backend, ObjectInfo, Payload, PutMode, PutOutcome, RequestStats};
use crate::error::Result;

/// How hard to try.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts in total, including the first.
    pub attempts: u32,
    /// Delay before the first retry; doubles each time.
    pub base: Duration,
    /// Longest single delay.
    pub cap: Duration,
    /// No new attempt starts once this much time has passed since the first began.
    pub budget: Duration,
}

impl Default for RetryPolicy {
    /// 8 attempts over about 40 seconds of backoff at most: long enough to ride out a throttling
    /// burst or a gateway restart, short enough that a dead store is reported while someone is
    /// watching. A budget of 10 minutes caps the attempts that each run into a timeout.
    fn default() -> Self {
        RetryPolicy {
            attempts: 8,
            base: Duration::from_millis(250),
            cap: Duration::from_secs(10),
            budget: Duration::from_secs(600),
        }
    }
}

impl RetryPolicy {
    /// The default, adjusted by `LIFEBOAT_RETRY_ATTEMPTS`, `LIFEBOAT_RETRY_BASE_MS` and
    /// `LIFEBOAT_RETRY_BUDGET` (a duration such as `90s` or `10m`; malformed values are ignored).
    pub fn from_env() -> Self {
        let mut p = RetryPolicy::default();
        if let Some(n) = std::env::var("LIFEBOAT_RETRY_ATTEMPTS")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            p.attempts = std::cmp::max(1, n);
        }
        if let Some(ms) = std::env::var("LIFEBOAT_RETRY_BASE_MS")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            p.base = Duration::from_millis(ms);
        }
        if let Some(d) = std::env::var("LIFEBOAT_RETRY_BUDGET")
            .ok()
            .and_then(|v| crate::format::parse_duration(&v).ok())
        {
            p.budget = d;
        }
        p
    }
}

/// Wraps a backend with retries.
pub struct Retry<B> {
    inner: B,
    policy: RetryPolicy,
}

impl<B: Backend> Retry<B> {
    /// Wraps `inner`.
    pub fn new(inner: B, policy: RetryPolicy) -> Self {
        Retry { inner, policy }
    }

    fn run<T>(&self, what: &str, key: &str, mut op: impl FnMut() -> Result<T>) -> Result<T> {
        let mut attempt = 1;
        let start = std::time::Instant::now();
        loop {
            match op() {
                Err(e) if e.is_retryable() && attempt < self.policy.attempts => {
                    let exp = self.policy.base.saturating_mul(1 << (attempt - 1).min(16));
                    let max = exp.min(self.policy.cap);
                    let r = u64::from_le_bytes(crate::crypto::random_bytes());
                    let delay = Duration::from_nanos(r % (max.as_nanos() as u64).max(1));
                    if start.elapsed() + delay >= self.policy.budget {
                        tracing::warn!(
                            "{what} {key}: {e}; giving up: the retry budget of {}s is spent (LIFEBOAT_RETRY_BUDGET)",
                            self.policy.budget.as_secs()
                        );
                        return Err(e);
                    }
                    tracing::warn!(
                        "{what} {key}: {e}; retrying in {:.1}s (attempt {}/{})",
                        delay.as_secs_f64(),
                        attempt + 1,
                        self.policy.attempts
                    );
                    std::thread::sleep(delay);
                    attempt += 1;
                }
                other => return other,
            }
        }
    }
}

impl<B: Backend> Backend for Retry<B> {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn create(&self) -> Result<()> {
        self.run("create", "", || self.inner.create())
    }
    fn get(&self, key: &str, max: u64) -> Result<Vec<u8>> {
        self.run("GET", key, || self.inner.get(key, max))
    }
    fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        self.run("GET", key, || self.inner.get_range(key, offset, len))
    }
    fn put(&self, key: &str, payload: Payload<'_>, mode: PutMode) -> Result<PutOutcome> {
        self.run("PUT", key, || self.inner.put(key, payload, mode))
    }
    fn put_versioned(
        &self,
        key: &str,
        payload: Payload<'_>,
        mode: PutMode,
    ) -> Result<(PutOutcome, Option<String>)> {
        self.run("PUT", key, || self.inner.put_versioned(key, payload, mode))
    }
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        self.run("LIST", prefix, || self.inner.list(prefix))
    }
    fn delete(&self, key: &str) -> Result<()> {
        self.run("DELETE", key, || self.inner.delete(key))
    }
    fn staging_dir(&self) -> Option<std::path::PathBuf> {
        self.inner.staging_dir()
    }
    fn requests(&self) -> Option<RequestStats> {
        self.inner.requests()
    }
    fn concurrency(&self) -> usize {
        self.inner.concurrency()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;
    use std::sync::atomic::{AtomicU32, Ordering};

    struct Flaky {
        fails: AtomicU32,
        retryable: bool,
    }

    impl Backend for Flaky {
        fn location(&self) -> String {
            "flaky".into()
        }
        fn create(&self) -> Result<()> {
            Ok(())
        }
        fn get(&self, key: &str, _: u64) -> Result<Vec<u8>> {
            if self.fails.fetch_sub(1, Ordering::SeqCst) > 0 {
                return Err(Error::Backend {
                    key: key.into(),
                    message: "503 SlowDown".into(),
                    retryable: self.retryable,
                });
            }
            Ok(b"ok".to_vec())
        }
        fn get_range(&self, _: &str, _: u64, _: u64) -> Result<Vec<u8>> {
            unimplemented!()
        }
        fn put(&self, _: &str, _: Payload<'_>, _: PutMode) -> Result<PutOutcome> {
            unimplemented!()
        }
        fn list(&self, _: &str) -> Result<Vec<ObjectInfo>> {
            unimplemented!()
        }
        fn delete(&self, _: &str) -> Result<()> {
            unimplemented!()
        }
    }

    const FAST: RetryPolicy = RetryPolicy {
        attempts: 4,
        base: Duration::from_millis(1),
        cap: Duration::from_millis(2),
        budget: Duration::from_secs(60),
    };

    #[test]
    fn retries_transient_errors_until_success_or_budget() {
        let b = Retry::new(
            Flaky {
                fails: AtomicU32::new(3),
                retryable: true,
            },
            FAST,
        );
        assert_eq!(b.get("k", 1024).unwrap(), b"ok");
        let b = Retry::new(
            Flaky {
                fails: AtomicU32::new(4),
                retryable: true,
            },
            FAST,
        );
        assert!(b.get("k", 1024).is_err());
    }

    #[test]
    fn the_time_budget_bounds_retries() {
        let b = Retry::new(
            Flaky {
                fails: AtomicU32::new(100),
                retryable: true,
            },
            RetryPolicy {
                attempts: 100,
                base: Duration::from_millis(20),
                cap: Duration::from_millis(20),
                budget: Duration::from_millis(100),
            },
        );
        let t = std::time::Instant::now();
        assert!(b.get("k", 1024).is_err());
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
        // 100 attempts would need about a second of backoff: the budget stopped them before.
        let left = b.inner.fails.load(Ordering::SeqCst);
        assert!(left > 0 && left < 99, "{left} failures left");
    }

    #[test]
    fn permanent_errors_fail_at_once() {
        let b = Retry::new(
            Flaky {
                fails: AtomicU32::new(1),
                retryable: false,
            },
            FAST,
        );
        assert!(b.get("k", 1024).is_err());
        assert_eq!(
            b.inner.fails.load(Ordering::SeqCst),
            0,
            "tried exactly once"
        );
    }
}
