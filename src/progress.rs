//! Progress reporting: a live line on a terminal (indicatif), one log line every ten seconds
//! otherwise, nothing when quiet. Workers only bump atomics; a reporter thread reads them.

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
}

/// A running reporter; stops and clears its line on drop.
pub struct Reporter {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Reporter {
    /// Starts reporting `counters` under `verb` ("backup", "restore").
    pub fn start(mode: ProgressMode, verb: &'static str, counters: Arc<Counters>) -> Reporter {
        let stop = Arc::new(AtomicBool::new(false));
        if mode == ProgressMode::Quiet {
            return Reporter { stop, handle: None };
        }
        let tty = std::io::stderr().is_terminal();
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
            while !stop2.load(Relaxed) {
                std::thread::sleep(Duration::from_millis(200));
                let line = line(verb, &counters, start.elapsed());
                match &bar {
                    Some(b) => {
                        b.set_message(line);
                        b.tick();
                    }
                    None if last_log.elapsed() >= Duration::from_secs(10) => {
                        tracing::info!("{line}");
                        last_log = Instant::now();
                    }
                    None => {}
                }
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

fn line(verb: &str, c: &Counters, elapsed: Duration) -> String {
    let done = c.bytes_done.load(Relaxed);
    let rate = done as f64 / elapsed.as_secs_f64().max(0.001);
    format!(
        "{verb}: {}/{} files, {}/{} ({}/s)",
        c.files_done.load(Relaxed),
        c.files_total.load(Relaxed),
        crate::format::bytes(done),
        crate::format::bytes(c.bytes_total.load(Relaxed)),
        crate::format::bytes(rate as u64)
    )
}

impl Drop for Reporter {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
