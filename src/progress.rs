//! Progress reporting: a live bar on a terminal (indicatif), log lines otherwise (every ten
//! seconds, and at 25, 50 and 75%), nothing when quiet. Workers only bump atomics; a reporter
//! thread reads them.
//!
//! Where the totals come from: a restore and a `check --read-data` know them before they start;
//! a backup estimates from its parent snapshot's size (shown with `~`) until its walk, which runs
//! ahead of the readers, has counted everything, then shows the real figures.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    /// Nothing.
    Quiet,
    /// Terminal bar when stderr is a TTY, periodic log lines otherwise.
    Auto,
    /// Log lines even on a terminal: the agent, whose stderr the app's output shares.
    Log,
}

/// Counters shared with the workers.
#[derive(Default, Debug)]
pub struct Counters {
    /// Files found so far.
    pub files_total: AtomicU64,
    /// Bytes of files found so far.
    pub bytes_total: AtomicU64,
    /// Files finished.
    pub files_done: AtomicU64,
    /// Bytes finished (read or skipped as unchanged).
    pub bytes_done: AtomicU64,
    /// The totals were set up front (a restore knows them from the snapshot's summary), or the
    /// walk that counts them is over: the line shows a percentage and an ETA. Set up front, the
    /// workers do not add to them.
    pub totals_known: AtomicBool,
    /// Until the totals are known: the expected bytes (a backup's parent snapshot), for an
    /// estimated percentage.
    pub estimate_bytes: AtomicU64,
}

impl Counters {
    /// Counters whose totals are known before the work starts.
    pub fn with_totals(files: u64, bytes: u64) -> Counters {
        let c = Counters::default();
        c.files_total.store(files, Relaxed);
        c.bytes_total.store(bytes, Relaxed);
        c.totals_known.store(true, Relaxed);
        c
    }

    /// Counters for a walk expected to find about `bytes` bytes.
    pub fn with_estimate(bytes: u64) -> Counters {
        let c = Counters::default();
        c.estimate_bytes.store(bytes, Relaxed);
        c
    }

    /// The walk is over: the totals counted so far are the real ones.
    pub fn totals_final(&self) {
        self.totals_known.store(true, Relaxed);
    }

    /// Totals counted by a scan ahead of the work (a backup's metadata-only walk): from now on
    /// the workers do not add to them. Ignored once the totals are known.
    pub fn scanned(&self, files: u64, bytes: u64) {
        if !self.totals_known.swap(true, Relaxed) {
            self.files_total.store(files, Relaxed);
            self.bytes_total.store(bytes, Relaxed);
        }
    }

    /// The real totals, once counted: they replace any scan's.
    pub fn set_totals(&self, files: u64, bytes: u64) {
        self.files_total.store(files, Relaxed);
        self.bytes_total.store(bytes, Relaxed);
        self.totals_known.store(true, Relaxed);
    }

    /// Counts a file found by the workers, unless the totals were known up front.
    pub fn found(&self, bytes: u64) {
        if !self.totals_known.load(Relaxed) {
            self.files_total.fetch_add(1, Relaxed);
            self.bytes_total.fetch_add(bytes, Relaxed);
        }
    }

    /// Done, as a fraction of the known total bytes (files when there are no bytes); while the
    /// totals are counted, of the estimate (`true` in the second place).
    fn fraction(&self) -> Option<(f64, bool)> {
        if !self.totals_known.load(Relaxed) {
            let est = self
                .estimate_bytes
                .load(Relaxed)
                .max(self.bytes_total.load(Relaxed));
            return (self.estimate_bytes.load(Relaxed) > 0).then(|| {
                let f = self.bytes_done.load(Relaxed) as f64 / est as f64;
                (f.clamp(0.0, 0.99), true)
            });
        }
        let (done, total) = match self.bytes_total.load(Relaxed) {
            0 => (
                self.files_done.load(Relaxed),
                self.files_total.load(Relaxed),
            ),
            t => (self.bytes_done.load(Relaxed), t),
        };
        (total > 0).then(|| ((done as f64 / total as f64).clamp(0.0, 1.0), false))
    }
}

/// A running reporter; stops and clears its line on drop.
pub struct Reporter {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Reporter {
    /// Starts reporting `counters` under `verb` ("backup", "restore").
    pub fn start(mode: ProgressMode, verb: &'static str, counters: Arc<Counters>) -> Reporter {
        Self::start_counting(mode, verb, "files", counters)
    }

    /// Like [`start`](Self::start), counting `unit` ("files", "packs") instead of files.
    pub fn start_counting(
        mode: ProgressMode,
        verb: &'static str,
        unit: &'static str,
        counters: Arc<Counters>,
    ) -> Reporter {
        let stop = Arc::new(AtomicBool::new(false));
        if mode == ProgressMode::Quiet {
            return Reporter { stop, handle: None };
        }
        let tty = mode == ProgressMode::Auto && std::io::stderr().is_terminal();
        let stop2 = stop.clone();
        let handle = std::thread::spawn(move || {
            let start = Instant::now();
            let bar = tty.then(|| {
                let b = indicatif::ProgressBar::new_spinner();
                b.set_style(
                    indicatif::ProgressStyle::with_template("{spinner} [{elapsed}] {msg}")
                        .expect("template"),
                );
                b
            });
            let mut last_log = Instant::now();
            // Log lines: every 10 s, and when a quarter, half, three quarters are done.
            let mut quarter = 0;
            while !stop2.load(Relaxed) {
                std::thread::sleep(Duration::from_millis(200));
                let line = line(verb, unit, &counters, start.elapsed());
                let q = counters
                    .fraction()
                    .filter(|(_, est)| !est)
                    .map_or(0, |(f, _)| (f * 4.0).floor() as u32);
                match &bar {
                    Some(b) => {
                        let f = counters.fraction();
                        b.set_message(format!("{}{line}", gauge(f.map(|(f, _)| f), 20)));
                        b.tick();
                    }
                    // Nothing for the first ten seconds: a short run's start and end lines
                    // say enough, and a backup every 30 s must not fill the log.
                    None if start.elapsed() >= Duration::from_secs(10)
                        && (last_log.elapsed() >= Duration::from_secs(10)
                            || (q > quarter && q < 4)) =>
                    {
                        tracing::info!("{line}");
                        last_log = Instant::now();
                    }
                    None => {}
                }
                quarter = quarter.max(q);
            }
            if let Some(b) = bar {
                b.finish_and_clear();
            }
        });
        Reporter {
            stop,
            handle: Some(handle),
        }
    }
}

/// A text bar `[#####-----] ` of `width` cells for fraction `f`; blank cells when unknown.
fn gauge(f: Option<f64>, width: usize) -> String {
    let filled = f.map_or(0, |f| ((f.clamp(0.0, 1.0) * width as f64).round()) as usize);
    let rest = if f.is_some() { '-' } else { ' ' };
    format!(
        "[{}{}] ",
        "#".repeat(filled),
        rest.to_string().repeat(width - filled)
    )
}

fn line(verb: &str, unit: &str, c: &Counters, elapsed: Duration) -> String {
    let done = c.bytes_done.load(Relaxed);
    let rate = done as f64 / elapsed.as_secs_f64().max(0.001);
    let (pct, eta) = match c.fraction() {
        Some((f, est)) => {
            let approx = if est { "~" } else { "" };
            let left = if f > 0.0 {
                elapsed.as_secs_f64() * (1.0 - f) / f
            } else {
                f64::NAN
            };
            (
                format!("{approx}{:.1}% ", f * 100.0),
                if left.is_finite() {
                    format!(", ETA {approx}{}", clock(left as u64))
                } else {
                    String::new()
                },
            )
        }
        None => (String::new(), String::new()),
    };
    format!(
        "{verb}: {pct}{}/{} {unit}, {}/{} ({}/s){eta}",
        c.files_done.load(Relaxed),
        c.files_total.load(Relaxed),
        crate::format::bytes(done),
        crate::format::bytes(c.bytes_total.load(Relaxed)),
        crate::format::bytes(rate as u64)
    )
}

/// `m:ss` or `h:mm:ss`, as restic prints durations.
fn clock(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    if h > 0 {
        format!("{h}:{m:02}:{s:02}")
    } else {
        format!("{m}:{s:02}")
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_totals_give_a_percentage_and_an_eta_and_workers_do_not_grow_them() {
        let c = Counters::with_totals(10, 1000);
        c.found(500);
        assert_eq!(
            c.bytes_total.load(Relaxed),
            1000,
            "known totals do not grow"
        );
        c.bytes_done.store(250, Relaxed);
        c.files_done.store(3, Relaxed);
        let l = line("restore", "files", &c, Duration::from_secs(10));
        assert!(l.starts_with("restore: 25.0% 3/10 files"), "{l}");
        assert!(l.ends_with("ETA 0:30"), "{l}");
        // Unknown totals: no percentage, and the workers count.
        let u = Counters::default();
        u.found(7);
        assert_eq!(u.bytes_total.load(Relaxed), 7);
        assert!(!line("backup", "files", &u, Duration::from_secs(1)).contains('%'));
        assert_eq!(gauge(Some(0.25), 8), "[##------] ");
        assert_eq!(gauge(None, 4), "[    ] ");
        assert_eq!(gauge(Some(1.0), 4), "[####] ");
        assert_eq!(clock(3725), "1:02:05");
        // A backup estimates from its parent until its walk is over.
        let b = Counters::with_estimate(2000);
        b.found(100);
        b.bytes_done.store(500, Relaxed);
        let l = line("backup", "files", &b, Duration::from_secs(5));
        assert!(l.starts_with("backup: ~25.0% "), "{l}");
        b.totals_final();
        let l = line("backup", "packs", &b, Duration::from_secs(5));
        assert!(l.contains(" packs, "), "{l}");
        assert!(l.starts_with("backup: 100.0% "), "{l}");
    }
}
