//! Files mode on a live database is not a backup: a copy of a running PostgreSQL, MySQL/MariaDB
//! or SQLite database's files, taken over seconds while it writes, restores broken. Before the
//! agent starts and before each files-mode backup, the volume is searched (bounded: a few levels
//! deep, a limited number of entries) for:
//!
//! - a PostgreSQL data directory (`PG_VERSION`) with a `postmaster.pid` whose process is alive;
//! - a MySQL/MariaDB data directory (a `mysql` schema directory beside `ibdata1`,
//!   `aria_log_control` or `auto.cnf`) whose server holds its file locks, has a live `*.pid` file
//!   or a socket in the directory;
//! - an SQLite database (`SQLite format 3` header) with a non-empty `-wal` or hot `-journal`.
//!
//! The agent refuses with one line naming the right method, unless the copy is made
//! crash-consistent (`LIFEBOAT_PAUSE`), replaced by a dump (`LIFEBOAT_DUMP_COMMAND`), or
//! accepted (`LIFEBOAT_ALLOW_LIVE_DATABASE=true`).

use std::fs;
use std::path::{Path, PathBuf};

/// A database found running on the volume.
#[derive(Debug, Clone)]
pub struct LiveDatabase {
    /// "PostgreSQL", "MySQL/MariaDB" or "SQLite".
    pub kind: &'static str,
    /// Its data directory or file.
    pub path: PathBuf,
    /// What gave it away.
    pub evidence: String,
    /// The method to use instead.
    pub advice: &'static str,
}

impl LiveDatabase {
    /// The one-line refusal.
    pub fn refusal(&self) -> String {
        format!(
            "refusing to back up a live {} database in files mode: {} ({}); a file copy of a running database restores broken. {}, or set LIFEBOAT_ALLOW_LIVE_DATABASE=true to accept the copy",
            self.kind,
            self.path.display(),
            self.evidence,
            self.advice
        )
    }
}

/// Directories deeper than this below the volume are not searched.
const MAX_DEPTH: usize = 6;
/// Entries looked at in all, so a volume of millions of files is not walked twice per backup.
const MAX_ENTRIES: usize = 200_000;

/// The first live database under `root` (skipping `skip`), if any.
pub fn find(root: &Path, skip: &[PathBuf]) -> Option<LiveDatabase> {
    let mut queue = std::collections::VecDeque::from([(root.to_path_buf(), 0usize)]);
    let mut seen = 0usize;
    while let Some((dir, depth)) = queue.pop_front() {
        if let Some(db) = check_dir(&dir) {
            return Some(db);
        }
        let Ok(rd) = fs::read_dir(&dir) else { continue };
        for entry in rd.flatten() {
            seen += 1;
            if seen > MAX_ENTRIES {
                return None;
            }
            let path = entry.path();
            let Ok(ft) = entry.file_type() else { continue };
            if ft.is_dir() {
                if depth < MAX_DEPTH && !skip.iter().any(|s| s == &path) {
                    queue.push_back((path, depth + 1));
                }
            } else if ft.is_file()
                && let Some(db) = check_sqlite(&path)
            {
                return Some(db);
            }
        }
    }
    None
}

fn check_dir(dir: &Path) -> Option<LiveDatabase> {
    if dir.join("PG_VERSION").is_file() {
        let pidfile = dir.join("postmaster.pid");
        let text = fs::read_to_string(&pidfile).ok()?;
        let pid: i32 = text.lines().next()?.trim().parse().ok()?;
        if alive(pid) {
            return Some(LiveDatabase {
                kind: "PostgreSQL",
                path: dir.to_path_buf(),
                evidence: format!("PG_VERSION and postmaster.pid of running process {pid}"),
                advice: "Set LIFEBOAT_METHOD=postgres for hot base backups with WAL archiving (or LIFEBOAT_DUMP_COMMAND, e.g. `pg_dumpall -U postgres`, for a dump)",
            });
        }
        return None;
    }
    if dir.join("mysql").is_dir()
        && ["ibdata1", "aria_log_control", "auto.cnf"]
            .iter()
            .any(|f| dir.join(f).is_file())
    {
        return mysql_live(dir).map(|evidence| LiveDatabase {
            kind: "MySQL/MariaDB",
            path: dir.to_path_buf(),
            evidence,
            advice: "Set LIFEBOAT_DUMP_COMMAND (e.g. `mysqldump --all-databases --single-transaction`) for a dump, or LIFEBOAT_PAUSE=true for a crash-consistent copy",
        });
    }
    None
}

fn mysql_live(dir: &Path) -> Option<String> {
    for f in ["ibdata1", "ib_logfile0", "aria_log_control", "ibtmp1"] {
        let p = dir.join(f);
        if p.is_file() && locked(&p) {
            return Some(format!("{f} is locked by a running server"));
        }
    }
    for entry in fs::read_dir(dir).ok()?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Ok(ft) = entry.file_type() else { continue };
        if name.ends_with(".pid")
            && ft.is_file()
            && let Some(pid) = fs::read_to_string(entry.path())
                .ok()
                .and_then(|t| t.trim().parse::<i32>().ok())
            && alive(pid)
        {
            return Some(format!("{name} names running process {pid}"));
        }
        if name.ends_with(".sock") && std::os::unix::fs::FileTypeExt::is_socket(&ft) {
            return Some(format!("server socket {name}"));
        }
    }
    None
}

fn check_sqlite(file: &Path) -> Option<LiveDatabase> {
    let name = file.file_name()?.to_string_lossy().into_owned();
    let (db, what) = if let Some(b) = name.strip_suffix("-wal") {
        (file.with_file_name(b), "a write-ahead log")
    } else if let Some(b) = name.strip_suffix("-journal") {
        (file.with_file_name(b), "a hot journal")
    } else {
        return None;
    };
    if fs::metadata(file).ok()?.len() == 0 {
        return None;
    }
    let mut head = [0u8; 16];
    let mut f = fs::File::open(&db).ok()?;
    std::io::Read::read_exact(&mut f, &mut head).ok()?;
    if &head != b"SQLite format 3\0" {
        return None;
    }
    Some(LiveDatabase {
        kind: "SQLite",
        path: db,
        evidence: format!("{what} beside it, {name}"),
        advice: "Set LIFEBOAT_PAUSE=true for a crash-consistent copy, or LIFEBOAT_DUMP_COMMAND (e.g. `sqlite3 FILE .dump`) for a dump",
    })
}

/// The process exists (possibly owned by another user).
fn alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks that the process exists.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Another process holds a POSIX lock on `path` (InnoDB and Aria lock their files).
fn locked(path: &Path) -> bool {
    use std::os::fd::AsRawFd;
    let Ok(f) = fs::File::open(path) else {
        return false;
    };
    // SAFETY: a zeroed flock is a valid argument; F_GETLK only fills it in.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as _;
    fl.l_whence = libc::SEEK_SET as _;
    // SAFETY: a valid descriptor and a valid flock.
    let r = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GETLK, &mut fl) };
    r == 0 && fl.l_type != libc::F_UNLCK as libc::c_short
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_with_a_live_pid_is_found_and_a_stale_one_is_not() {
        let d = tempfile::tempdir().unwrap();
        let pg = d.path().join("app/pgdata");
        fs::create_dir_all(&pg).unwrap();
        fs::write(pg.join("PG_VERSION"), "15\n").unwrap();
        assert!(find(d.path(), &[]).is_none(), "no postmaster.pid: stopped");
        fs::write(
            pg.join("postmaster.pid"),
            format!("{}\n/x\n", std::process::id()),
        )
        .unwrap();
        let db = find(d.path(), &[]).expect("live");
        assert_eq!(db.kind, "PostgreSQL");
        let msg = db.refusal();
        assert!(msg.contains("pg_dumpall") && !msg.contains('\n'), "{msg}");
        assert!(find(d.path(), &[d.path().join("app")]).is_none(), "skipped");
        fs::write(pg.join("postmaster.pid"), "999999999\n").unwrap();
        assert!(find(d.path(), &[]).is_none(), "stale pid");
    }

    #[test]
    fn sqlite_with_a_wal_is_found() {
        let d = tempfile::tempdir().unwrap();
        let mut head = b"SQLite format 3\0".to_vec();
        head.resize(4096, 0);
        fs::write(d.path().join("app.db"), &head).unwrap();
        assert!(find(d.path(), &[]).is_none());
        fs::write(d.path().join("app.db-wal"), b"").unwrap();
        assert!(find(d.path(), &[]).is_none(), "empty WAL");
        fs::write(d.path().join("app.db-wal"), b"frames").unwrap();
        assert_eq!(find(d.path(), &[]).unwrap().kind, "SQLite");
        fs::write(d.path().join("notes.txt-journal"), b"x").unwrap();
        fs::remove_file(d.path().join("app.db-wal")).unwrap();
        assert!(find(d.path(), &[]).is_none(), "not a database");
    }

    #[test]
    fn mysql_with_a_live_pid_file_is_found() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("mysql")).unwrap();
        fs::write(d.path().join("ibdata1"), b"x").unwrap();
        assert!(find(d.path(), &[]).is_none());
        fs::write(
            d.path().join("host.pid"),
            format!("{}\n", std::process::id()),
        )
        .unwrap();
        assert_eq!(find(d.path(), &[]).unwrap().kind, "MySQL/MariaDB");
    }
}
