//! A real PostgreSQL server for tests: its binaries (installed by `ensure_postgres.sh` when
//! missing), run as `nobody` when the tests run as root (PostgreSQL refuses root).

use std::path::{Path, PathBuf};
use std::process::Command;

/// The newest `/usr/lib/postgresql/*/bin` (or initdb's directory on PATH) that has `initdb` and
/// every tool in `also`; runs tests/common/ensure_postgres.sh once when there is none.
pub fn bindir(also: &[&str]) -> Option<PathBuf> {
    let complete =
        |b: &Path| b.join("initdb").is_file() && also.iter().all(|t| b.join(t).is_file());
    let find = || -> Option<PathBuf> {
        let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path().join("bin"))
            .filter(|b| complete(b))
            .collect();
        dirs.sort();
        if let Some(d) = dirs.pop() {
            return Some(d);
        }
        let out = Command::new("sh")
            .args(["-c", "command -v initdb"])
            .output()
            .ok()?;
        let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        let d = p.parent()?.to_path_buf();
        (p.is_file() && complete(&d)).then_some(d)
    };
    if let Some(d) = find() {
        return Some(d);
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/common/ensure_postgres.sh");
    let ok = Command::new("sh")
        .arg(script)
        .status()
        .is_ok_and(|s| s.success());
    if ok { find() } else { None }
}

/// Whether the tests run as root.
pub fn root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Runs a server binary as `nobody` when we are root.
pub fn as_pg_user(bin: &Path) -> Command {
    if root() {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(bin);
        c
    } else {
        Command::new(bin)
    }
}

/// Gives `p` (recursively) to `nobody` when we are root.
pub fn chown_nobody(p: &Path) {
    if root() {
        let st = Command::new("chown")
            .args(["-R", "nobody"])
            .arg(p)
            .status()
            .unwrap();
        assert!(st.success());
    }
}
