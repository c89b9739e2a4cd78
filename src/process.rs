//! Child processes when lifeboat is PID 1 of a container.
//!
//! As a container's entrypoint, lifeboat inherits every orphan the app leaves behind, and a
//! zombie is only cleared by its parent's `wait`. Lifeboat also waits for its own children
//! (the app, hooks, dump commands) through `std::process::Child`, so the reaper must never
//! collect one of those: every child lifeboat starts goes through [`spawn`], which records its
//! pid, and [`reap_orphans`] only waits for the others.

use std::collections::HashSet;
use std::process::{Child, Command};
use std::sync::Mutex;

static OWN: Mutex<Option<HashSet<u32>>> = Mutex::new(None);

/// lifeboat's own secrets: the repository password, the control token and the storage
/// credentials (each also in its `_FILE` form). The app, hooks and dump/restore commands do not
/// inherit them, so `lifeboat run -- sh -c env` (or an app that logs its environment, or a
/// compromised app) does not hand out the keys to the backups. `LIFEBOAT_PASS_SECRETS=true`
/// passes them through for an app that really shares them.
pub const SECRETS: [&str; 6] = [
    "LIFEBOAT_PASSWORD",
    "LIFEBOAT_NEW_PASSWORD",
    "LIFEBOAT_CONTROL_TOKEN",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
];

/// Whether `LIFEBOAT_PASS_SECRETS` asks for lifeboat's secrets to reach children.
fn pass_secrets() -> bool {
    matches!(
        std::env::var("LIFEBOAT_PASS_SECRETS")
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
            .as_str(),
        "1" | "true" | "yes"
    )
}

/// Starts `cmd` and records it as one of lifeboat's own children, to be waited for by the
/// caller. Call [`done`] once it has been waited for. The child does not inherit [`SECRETS`]
/// unless `LIFEBOAT_PASS_SECRETS` is set.
pub fn spawn(cmd: &mut Command) -> std::io::Result<Child> {
    if !pass_secrets() {
        for name in SECRETS {
            cmd.env_remove(name);
            cmd.env_remove(format!("{name}_FILE"));
        }
    }
    let mut own = OWN.lock().unwrap_or_else(|e| e.into_inner());
    let child = cmd.spawn()?;
    own.get_or_insert_with(HashSet::new).insert(child.id());
    Ok(child)
}

/// Forgets a child started by [`spawn`] after it has been waited for.
pub fn done(pid: u32) {
    let mut own = OWN.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(set) = own.as_mut() {
        set.remove(&pid);
    }
}

/// True when this process is a container's init (PID 1).
pub fn is_init() -> bool {
    std::process::id() == 1
}

/// Waits for every exited child that lifeboat did not start itself (orphans reparented to it).
/// Returns how many were reaped. Uses `/proc/self/task/*/children`, so zombies of lifeboat's
/// own children are left for their owners.
pub fn reap_orphans() -> usize {
    let own = OWN.lock().unwrap_or_else(|e| e.into_inner());
    let mut reaped = 0;
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    for task in tasks.flatten() {
        let Ok(list) = std::fs::read_to_string(task.path().join("children")) else {
            continue;
        };
        for pid in list
            .split_whitespace()
            .filter_map(|p| p.parse::<u32>().ok())
        {
            if own.as_ref().is_some_and(|s| s.contains(&pid)) {
                continue;
            }
            let mut status = 0;
            // SAFETY: waitpid with WNOHANG on a pid that is our child; it reaps it only when it
            // has exited and never blocks.
            let r = unsafe { libc::waitpid(pid as libc::pid_t, &mut status, libc::WNOHANG) };
            if r > 0 {
                reaped += 1;
            }
        }
    }
    reaped
}
