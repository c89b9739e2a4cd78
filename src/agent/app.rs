//! The wrapped application: started as lifeboat's child in its own process group, sent the
//! signals lifeboat receives, paused and resumed for pause-mode backups, and waited for.

use std::process::{Child, Command, ExitStatus};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::time::Duration;

use crossbeam_channel::Receiver;
use tracing::{info, warn};

use crate::error::{Error, Result};
use crate::process;

/// A running app.
pub struct App {
    pid: u32,
    gone: Arc<AtomicBool>,
    /// Delivers the exit status once, when the app ends.
    pub exited: Receiver<ExitStatus>,
}

impl App {
    /// Starts `argv` with inherited stdio.
    pub fn start(argv: &[String]) -> Result<App> {
        let (prog, args) = argv
            .split_first()
            .ok_or_else(|| Error::invalid("no app command after `--`"))?;
        let mut cmd = Command::new(prog);
        cmd.args(args);
        // Its own process group: pause mode stops the whole tree (a database's workers too).
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let mut child: Child = process::spawn(&mut cmd).map_err(|e| Error::Command {
            command: argv.join(" "),
            message: format!("cannot start the app: {e}"),
        })?;
        let pid = child.id();
        info!(pid, command = %argv.join(" "), "app started");
        let (tx, rx) = crossbeam_channel::bounded(1);
        let gone = Arc::new(AtomicBool::new(false));
        let g = gone.clone();
        std::thread::spawn(move || {
            let status = child.wait();
            g.store(true, SeqCst);
            process::done(pid);
            match status {
                Ok(s) => {
                    let _ = tx.send(s);
                }
                Err(e) => warn!(error = %e, "waiting for the app failed"),
            }
        });
        Ok(App {
            pid,
            gone,
            exited: rx,
        })
    }

    /// Whether the app has exited.
    pub fn has_exited(&self) -> bool {
        self.gone.load(SeqCst)
    }

    /// The app's pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Sends `sig` to the app (not its group: the app decides what its children get).
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.pid as libc::pid_t, sig) };
    }

    /// Stops the app's process group until the returned guard is dropped or `max` passes,
    /// whichever comes first: the app is always resumed, even when the backup fails or panics.
    pub fn pause(&self, max: Duration) -> PauseGuard {
        let pgid = self.pid as libc::pid_t;
        // SAFETY: signals the process group the app leads.
        unsafe { libc::kill(-pgid, libc::SIGSTOP) };
        let resumed = Arc::new(AtomicBool::new(false));
        let r = resumed.clone();
        std::thread::spawn(move || {
            let deadline = std::time::Instant::now() + max;
            while std::time::Instant::now() < deadline {
                if r.load(SeqCst) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if !r.swap(true, SeqCst) {
                warn!(
                    max_seconds = max.as_secs(),
                    "pause limit reached: resuming the app while the backup continues"
                );
                // SAFETY: as above.
                unsafe { libc::kill(-pgid, libc::SIGCONT) };
            }
        });
        PauseGuard { pgid, resumed }
    }
}

/// Resumes a paused app when dropped.
pub struct PauseGuard {
    pgid: libc::pid_t,
    resumed: Arc<AtomicBool>,
}

impl PauseGuard {
    /// True when the pause limit ran out before the backup finished.
    pub fn timed_out(&self) -> bool {
        self.resumed.load(SeqCst)
    }

    /// A check for the backup to run just before it commits: while the guard lives, the flag is
    /// set only by the limit running out.
    pub fn consistency_check(&self) -> crate::backup::ConsistencyCheck {
        let resumed = self.resumed.clone();
        crate::backup::ConsistencyCheck(Arc::new(move || {
            resumed.load(SeqCst).then(|| {
                "the app was resumed when LIFEBOAT_PAUSE_MAX ran out, before the read ended"
                    .to_string()
            })
        }))
    }
}

impl crate::capture::Paused for PauseGuard {
    fn timed_out(&self) -> bool {
        PauseGuard::timed_out(self)
    }
}

impl Drop for PauseGuard {
    fn drop(&mut self) {
        if !self.resumed.swap(true, SeqCst) {
            // SAFETY: signals the process group the app leads.
            unsafe { libc::kill(-self.pgid, libc::SIGCONT) };
        }
    }
}

/// The exit code a shell would report: the app's code, or 128 + the signal that killed it.
pub fn exit_code(status: &ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => c as u8,
        (None, Some(s)) => (128 + s) as u8,
        _ => 1,
    }
}
