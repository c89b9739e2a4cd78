//! Shell commands the agent runs around backups (`sh -c`), each with a time limit. A command
//! runs in its own process group so a timeout kills everything it started.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::process;

/// Runs `command` with `env` added, waiting at most `timeout`. Stdout and stderr go to the
/// agent's stderr, so they land in the container log.
pub fn run(command: &str, env: &[(&str, String)], timeout: Duration) -> Result<()> {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .stdout(std::io::stderr())
        .stderr(Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = process::spawn(&mut cmd).map_err(|e| Error::Command {
        command: command.into(),
        message: format!("cannot start: {e}"),
    })?;
    let pid = child.id();
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() >= deadline => {
                // SAFETY: signals the process group this command leads.
                unsafe { libc::kill(-(pid as libc::pid_t), libc::SIGKILL) };
                let _ = child.wait();
                process::done(pid);
                return Err(Error::Command {
                    command: command.into(),
                    message: format!("timed out after {} s and was killed", timeout.as_secs()),
                });
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => {
                process::done(pid);
                return Err(Error::Command {
                    command: command.into(),
                    message: e.to_string(),
                });
            }
        }
    };
    process::done(pid);
    if status.success() {
        Ok(())
    } else {
        Err(Error::Command {
            command: command.into(),
            message: format!("exited with {status}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn success_failure_and_timeout() {
        run("true", &[], Duration::from_secs(5)).unwrap();
        let e = run("exit 3", &[], Duration::from_secs(5)).unwrap_err();
        assert!(e.to_string().contains("exit status: 3"), "{e}");
        let t = Instant::now();
        let e = run("sleep 30", &[], Duration::from_millis(300)).unwrap_err();
        assert!(e.to_string().contains("timed out"), "{e}");
        assert!(t.elapsed() < Duration::from_secs(10));
        run(
            "test \"$X\" = yes",
            &[("X", "yes".into())],
            Duration::from_secs(5),
        )
        .unwrap();
    }
}
