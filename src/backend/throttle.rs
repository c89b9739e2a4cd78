//! Adaptive concurrency: at most `limit` requests in flight, where `limit` starts at the backend's
//! configured concurrency, halves each time the store answers that it is overloaded (503
//! SlowDown, 429) and grows back by one after `limit` answers in a row without that (additive
//! increase, multiplicative decrease, as TCP does). The pools above size themselves by
//! [`Backend::concurrency`] and never need to know: a request beyond the current limit simply
//! waits here for a slot, so a throttling store sees fewer requests at once, not the same number
//! retried harder.
//!
//! Placed under [`super::Retry`], so every attempt, first or retried, takes a slot, and the
//! backoff sleep happens without one.

use std::sync::{Condvar, Mutex};

use super::{Backend, ObjectInfo, Payload, PutMode, PutOutcome, RequestStats};
use crate::error::{Error, Result};

struct Gate {
    /// Requests allowed in flight now.
    limit: usize,
    in_flight: usize,
    /// Answers in a row without throttling since the limit last changed.
    clean: usize,
}

/// Wraps a backend with an adaptive in-flight limit.
pub struct Adaptive<B> {
    inner: B,
    max: usize,
    gate: Mutex<Gate>,
    freed: Condvar,
}

/// Whether `e` is the store saying "too many requests": back off in numbers, not only in time.
pub fn is_throttle(e: &Error) -> bool {
    match e {
        Error::Backend { message, .. } => {
            message.starts_with("503") || message.starts_with("429") || message.contains("SlowDown")
        }
        _ => false,
    }
}

impl<B: Backend> Adaptive<B> {
    /// Wraps `inner`, starting at (and never above) `inner.concurrency()` requests in flight.
    pub fn new(inner: B) -> Self {
        let max = inner.concurrency().max(1);
        Adaptive {
            inner,
            max,
            gate: Mutex::new(Gate {
                limit: max,
                in_flight: 0,
                clean: 0,
            }),
            freed: Condvar::new(),
        }
    }

    /// The current in-flight limit (for tests and logs).
    pub fn limit(&self) -> usize {
        self.gate.lock().expect("gate").limit
    }

    fn run<T>(&self, op: impl FnOnce() -> Result<T>) -> Result<T> {
        {
            let mut g = self.gate.lock().expect("gate");
            while g.in_flight >= g.limit {
                g = self.freed.wait(g).expect("gate");
            }
            g.in_flight += 1;
        }
        let out = op();
        let mut g = self.gate.lock().expect("gate");
        g.in_flight -= 1;
        match &out {
            Err(e) if is_throttle(e) => {
                let was = g.limit;
                g.limit = (g.limit / 2).max(1);
                g.clean = 0;
                if g.limit != was {
                    tracing::warn!(
                        "the store is throttling ({e}): {} requests in flight instead of {was} until it recovers",
                        g.limit
                    );
                }
            }
            _ => {
                g.clean += 1;
                if g.clean >= g.limit && g.limit < self.max {
                    g.limit += 1;
                    g.clean = 0;
                    if g.limit == self.max {
                        tracing::info!(
                            "the store recovered: back to {} requests in flight",
                            self.max
                        );
                    }
                }
            }
        }
        drop(g);
        self.freed.notify_all();
        out
    }
}

impl<B: Backend> Backend for Adaptive<B> {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn create(&self) -> Result<()> {
        self.run(|| self.inner.create())
    }
    fn get(&self, key: &str, max: u64) -> Result<Vec<u8>> {
        self.run(|| self.inner.get(key, max))
    }
    fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        self.run(|| self.inner.get_range(key, offset, len))
    }
    fn put(&self, key: &str, payload: Payload<'_>, mode: PutMode) -> Result<PutOutcome> {
        self.run(|| self.inner.put(key, payload, mode))
    }
    fn put_versioned(
        &self,
        key: &str,
        payload: Payload<'_>,
        mode: PutMode,
    ) -> Result<(PutOutcome, Option<String>)> {
        self.run(|| self.inner.put_versioned(key, payload, mode))
    }
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        self.run(|| self.inner.list(prefix))
    }
    fn delete(&self, key: &str) -> Result<()> {
        self.run(|| self.inner.delete(key))
    }
    fn staging_dir(&self) -> Option<std::path::PathBuf> {
        self.inner.staging_dir()
    }
    fn requests(&self) -> Option<RequestStats> {
        self.inner.requests()
    }
    fn concurrency(&self) -> usize {
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

    /// Answers SlowDown while `throttle` is set, and records the most requests it saw at once.
    struct Store {
        throttle: std::sync::atomic::AtomicBool,
        now: AtomicUsize,
        peak: AtomicUsize,
    }

    impl Backend for Store {
        fn location(&self) -> String {
            "store".into()
        }
        fn create(&self) -> Result<()> {
            Ok(())
        }
        fn get(&self, key: &str, _: u64) -> Result<Vec<u8>> {
            let n = self.now.fetch_add(1, SeqCst) + 1;
            self.peak.fetch_max(n, SeqCst);
            std::thread::sleep(std::time::Duration::from_millis(5));
            self.now.fetch_sub(1, SeqCst);
            if self.throttle.load(SeqCst) {
                return Err(Error::Backend {
                    key: key.into(),
                    message: "503 SlowDown Please reduce your request rate.".into(),
                    retryable: true,
                });
            }
            Ok(Vec::new())
        }
        fn get_range(&self, key: &str, _: u64, _: u64) -> Result<Vec<u8>> {
            self.get(key, 0)
        }
        fn put(&self, _: &str, _: Payload<'_>, _: PutMode) -> Result<PutOutcome> {
            Ok(PutOutcome::Written)
        }
        fn list(&self, _: &str) -> Result<Vec<ObjectInfo>> {
            Ok(Vec::new())
        }
        fn delete(&self, _: &str) -> Result<()> {
            Ok(())
        }
        fn concurrency(&self) -> usize {
            8
        }
    }

    fn hammer(b: &Adaptive<Store>, threads: usize, each: usize) {
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| {
                    for _ in 0..each {
                        let _ = b.get("k", 0);
                    }
                });
            }
        });
    }

    #[test]
    fn throttling_halves_the_requests_in_flight_and_recovery_restores_them() {
        let b = Adaptive::new(Store {
            throttle: true.into(),
            now: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
        });
        assert_eq!(b.limit(), 8);
        hammer(&b, 16, 4);
        assert_eq!(b.limit(), 1, "sustained SlowDown ends at one request");
        b.inner.peak.store(0, SeqCst);
        hammer(&b, 16, 2);
        assert_eq!(
            b.inner.peak.load(SeqCst),
            1,
            "while throttled, never more than one request at once"
        );
        b.inner.throttle.store(false, SeqCst);
        hammer(&b, 16, 20);
        assert_eq!(b.limit(), 8, "clean answers grow the limit back");
        assert!(b.inner.peak.load(SeqCst) <= 8, "never above the setting");
    }

    #[test]
    fn other_errors_do_not_count_as_throttling() {
        assert!(!is_throttle(&Error::Backend {
            key: "k".into(),
            message: "500 InternalError".into(),
            retryable: true,
        }));
        assert!(is_throttle(&Error::Backend {
            key: "k".into(),
            message: "429 TooManyRequests".into(),
            retryable: true,
        }));
        assert!(!is_throttle(&Error::NotFound { key: "k".into() }));
    }
}
