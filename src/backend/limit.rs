//! Bandwidth limits (`--limit-upload`, `--limit-download`, in KiB/s as restic takes them): on a
//! small VPS or a metered link, a backup must not take the whole uplink from the app it protects.
//!
//! Requests are paced, not their byte streams: each transfer of `n` bytes books `n / rate` seconds
//! on a shared clock, and the request that overbooks it waits after completing until the clock
//! catches up. The average rate over any stretch longer than one object is the limit; a single
//! pack still goes out at line speed, then the next waits. With concurrent requests the booking
//! is shared, so the limit is for the process, not per connection.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{Backend, ObjectInfo, Payload, PutMode, PutOutcome, RequestStats};
use crate::error::Result;

/// Bytes per second, each direction; `None` is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Upload.
    pub up: Option<u64>,
    /// Download.
    pub down: Option<u64>,
}

struct Clock {
    rate: u64,
    next: Mutex<Option<Instant>>,
}

impl Clock {
    fn new(rate: Option<u64>) -> Option<Clock> {
        rate.filter(|r| *r > 0).map(|rate| Clock {
            rate,
            next: Mutex::new(None),
        })
    }

    /// Books `n` bytes starting no earlier than `started`; returns how long to wait now.
    fn book(&self, started: Instant, n: u64) -> Duration {
        let cost = Duration::from_secs_f64(n as f64 / self.rate as f64);
        let mut next = self.next.lock().expect("clock");
        let from = next.map_or(started, |t| t.max(started));
        let until = from + cost;
        *next = Some(until);
        until.saturating_duration_since(Instant::now())
    }
}

/// A backend whose transfers are paced to [`Limits`].
pub struct Limited<B> {
    inner: B,
    up: Option<Clock>,
    down: Option<Clock>,
}

impl<B: Backend> Limited<B> {
    /// Wraps `inner`.
    pub fn new(inner: B, limits: Limits) -> Self {
        Limited {
            inner,
            up: Clock::new(limits.up),
            down: Clock::new(limits.down),
        }
    }

    fn pace(clock: &Option<Clock>, started: Instant, n: u64) {
        if let Some(c) = clock {
            std::thread::sleep(c.book(started, n));
        }
    }
}

fn payload_len(p: &Payload<'_>) -> u64 {
    match p {
        Payload::Bytes(b) => b.len() as u64,
        Payload::File(f) => std::fs::metadata(f).map_or(0, |m| m.len()),
    }
}

impl<B: Backend> Backend for Limited<B> {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn create(&self) -> Result<()> {
        self.inner.create()
    }
    fn get(&self, key: &str, max: u64) -> Result<Vec<u8>> {
        let t = Instant::now();
        let out = self.inner.get(key, max)?;
        Self::pace(&self.down, t, out.len() as u64);
        Ok(out)
    }
    fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        let t = Instant::now();
        let out = self.inner.get_range(key, offset, len)?;
        Self::pace(&self.down, t, out.len() as u64);
        Ok(out)
    }
    fn put(&self, key: &str, payload: Payload<'_>, mode: PutMode) -> Result<PutOutcome> {
        Ok(self.put_versioned(key, payload, mode)?.0)
    }
    fn put_versioned(
        &self,
        key: &str,
        payload: Payload<'_>,
        mode: PutMode,
    ) -> Result<(PutOutcome, Option<String>)> {
        let n = payload_len(&payload);
        let t = Instant::now();
        let out = self.inner.put_versioned(key, payload, mode)?;
        Self::pace(&self.up, t, n);
        Ok(out)
    }
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        self.inner.list(prefix)
    }
    fn delete(&self, key: &str) -> Result<()> {
        self.inner.delete(key)
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

static LIMITS: std::sync::OnceLock<Limits> = std::sync::OnceLock::new();

/// Sets the process's limits once, before any backend is opened (the command line does).
pub fn set(limits: Limits) {
    let _ = LIMITS.set(limits);
}

/// The process's limits.
pub fn get() -> Limits {
    LIMITS.get().copied().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bookings_add_up_to_the_rate_across_callers() {
        let c = Clock::new(Some(1000)).unwrap();
        let t = Instant::now();
        // 500 bytes at 1000 B/s: half a second from the start.
        let w1 = c.book(t, 500);
        assert!(w1 > Duration::from_millis(400) && w1 <= Duration::from_millis(500));
        // A second caller starting at the same time queues behind the first.
        let w2 = c.book(t, 500);
        assert!(w2 > Duration::from_millis(900) && w2 <= Duration::from_millis(1000));
        assert!(Clock::new(Some(0)).is_none() && Clock::new(None).is_none());
    }
}
