//! Files mode on a live database is not a backup: a copy of a running PostgreSQL, MySQL/MariaDB
//! or SQLite database's files, taken over seconds while it writes, restores broken. Before the
//! agent starts and before each files-mode backup, the volume is searched (bounded: a few levels
//! deep, a limited number of entries) for:
//!
//! - a PostgreSQL data directory (`PG_VERSION`) with a `postmaster.pid` that this process cannot
//!   show to be stale (below: a sidecar sees another container's PIDs as absent or as its own);
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
    /// Shown running (a live process, an attached segment, a lock, a log with frames), rather
    /// than not shown stopped: a PostgreSQL whose `postmaster.pid` this process cannot judge.
    pub certain: bool,
}

impl LiveDatabase {
    /// The agent's one-line refusal.
    pub fn refusal(&self) -> String {
        format!(
            "refusing to back up a live {} database in files mode: {} ({}); a file copy of a running database restores broken. {}, or set LIFEBOAT_ALLOW_LIVE_DATABASE=true to accept the copy",
            self.kind,
            self.path.display(),
            self.evidence,
            self.advice
        )
    }

    /// The one-line refusal of `lifeboat backup PATH`, whose alternatives are a dump through
    /// `--stdin-from-command` or the agent's methods.
    pub fn cli_refusal(&self) -> String {
        let dump = match self.kind {
            "PostgreSQL" => "'pg_dumpall -U postgres' --stdin-filename all.sql".to_string(),
            "MySQL/MariaDB" => {
                "'mysqldump --all-databases --single-transaction' --stdin-filename all.sql"
                    .to_string()
            }
            _ => format!(
                "'sqlite3 {} .dump' --stdin-filename dump.sql",
                self.path.display()
            ),
        };
        format!(
            "refusing to back up a live {} database's files: {} ({}); a file copy of a running database restores broken. Back up a dump (`lifeboat backup --stdin-from-command {dump}`), stop the database first, or pass --allow-live-database to accept the copy",
            self.kind,
            self.path.display(),
            self.evidence,
        )
    }
}

/// Directories deeper than this below the volume are not searched.
const MAX_DEPTH: usize = 6;
/// Entries looked at in all, so a volume of millions of files is not walked twice per backup.
const MAX_ENTRIES: usize = 200_000;

/// The first live database under `root` (skipping the directories in `skip`), if any; `root`
/// may also be a database file itself. The search is bounded ([`MAX_DEPTH`],
/// [`MAX_ENTRIES`]): a database deeper in a huge tree is not found.
pub fn find(root: &Path, skip: &[PathBuf]) -> Option<LiveDatabase> {
    find_where(root, &|p: &Path| skip.iter().any(|s| s == p))
}

/// [`find`], skipping every directory and file below `root` for which `skip` is true (what a
/// backup excludes).
pub fn find_where(root: &Path, skip: &dyn Fn(&Path) -> bool) -> Option<LiveDatabase> {
    if root.is_file() {
        let name = root.file_name()?.to_string_lossy().into_owned();
        return ["-wal", "-journal"]
            .iter()
            .find_map(|suffix| check_sqlite(&root.with_file_name(format!("{name}{suffix}"))));
    }
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
            if skip(&path) {
                continue;
            }
            if ft.is_dir() {
                if depth < MAX_DEPTH {
                    queue.push_back((path, depth + 1));
                }
            } else if ft.is_file()
                && let Some(db) = check_sqlite(&path)
                && !skip(&db.path)
            {
                return Some(db);
            }
        }
    }
    None
}

fn check_dir(dir: &Path) -> Option<LiveDatabase> {
    if dir.join("PG_VERSION").is_file() {
        let (evidence, certain) = postgres_live(&dir.join("postmaster.pid"))?;
        return Some(LiveDatabase {
            kind: "PostgreSQL",
            path: dir.to_path_buf(),
            evidence,
            certain,
            advice: "Set LIFEBOAT_METHOD=postgres for hot base backups with WAL archiving (or LIFEBOAT_DUMP_COMMAND, e.g. `pg_dumpall -U postgres`, for a dump)",
        });
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
            certain: true,
            advice: "Set LIFEBOAT_DUMP_COMMAND (e.g. `mysqldump --all-databases --single-transaction`) for a dump, or LIFEBOAT_PAUSE=true for a crash-consistent copy",
        });
    }
    None
}

/// Why the server that wrote `pidfile` may be running, or None when it is stopped (no file)
/// or provably gone.
///
/// The PID in the file is only meaningful in the PID namespace of the server that wrote it. In
/// a sidecar (another container of the pod, or a compose service) that PID is absent or names
/// another process, lifeboat itself when both are PID 1, so a PID that is not a live
/// `postgres` process here proves nothing. What does cross containers is the System V shared
/// memory segment every postmaster keeps attached for as long as it or any backend lives
/// (PostgreSQL's own interlock against a second postmaster, `PGSharedMemoryIsInUse`): a pod's
/// containers share one IPC namespace. Its key and id are on the file's seventh line. So:
/// a live `postgres` process with that PID here, or a segment with that key and processes
/// attached, is a running server; a segment with that key and nobody attached is the leftover
/// of a crash, and the server is gone; anything else cannot be decided from here and counts as
/// running (the refusal says how to clear a stale file), because copying a running server's
/// files silently would be the worse mistake.
fn postgres_live(pidfile: &Path) -> Option<(String, bool)> {
    let text = match fs::read_to_string(pidfile) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        // Unreadable (0600, PostgreSQL's user): the server may be running.
        Err(e) => {
            return Some((
                format!(
                    "{} cannot be read ({e}): run lifeboat as root or as PostgreSQL's user",
                    pidfile.display()
                ),
                false,
            ));
        }
    };
    let mut lines = text.lines();
    // A negative PID is a single-user-mode server's.
    let pid = match lines.next().map(|l| l.trim().parse::<i32>()) {
        Some(Ok(pid)) => pid.saturating_abs(),
        // Being written, or not PostgreSQL's: nothing shows it stopped.
        _ => {
            return Some((format!("{} names no process", pidfile.display()), false));
        }
    };
    let here = if alive(pid) {
        match fs::read_to_string(format!("/proc/{pid}/comm")) {
            Ok(comm) => {
                let comm = comm.trim().to_string();
                if comm == "postgres" || comm == "postmaster" {
                    return Some((
                        format!("postmaster.pid names running PostgreSQL process {pid}"),
                        true,
                    ));
                }
                format!("is {comm:?} here, not PostgreSQL")
            }
            // No /proc to ask: as before it was asked, a live PID counts.
            Err(_) => {
                return Some((format!("postmaster.pid names running process {pid}"), true));
            }
        }
    } else {
        "does not exist here".to_string()
    };
    // PostgreSQL writes the key_t and the id as unsigned longs: a negative key (the data
    // directory's inode folded into 32 bits) appears sign-extended. Both are 32-bit in the
    // kernel.
    let segment = text.lines().nth(6).and_then(|l| {
        let mut f = l.split_whitespace();
        let key = f.next()?.parse::<u64>().ok()? as u32 as i32;
        let id = f.next()?.parse::<u64>().ok()? as u32 as i32;
        Some((key, id))
    });
    if let Some((key, id)) = segment {
        match shm_attached(id, key) {
            Some(0) => return None,
            Some(n) => {
                return Some((
                    format!("its shared memory segment (key {key}) has {n} processes attached"),
                    true,
                ));
            }
            None => {}
        }
    }
    Some((
        format!(
            "postmaster.pid names process {pid}, which {here}: PostgreSQL running in another container, or a file left by a crash; if PostgreSQL is stopped, start and stop it once, or remove {}",
            pidfile.display()
        ),
        false,
    ))
}

/// Processes attached to the System V shared memory segment `id`, when it exists in this IPC
/// namespace with key `key` (an id alone may have been reused).
///
/// Read from `/proc/sysvipc/shm`, which lists every segment of the namespace to any reader:
/// `shmctl(IPC_STAT)` needs read permission on the segment (PostgreSQL's is 0600, its own
/// user's), and a container's root lacks CAP_IPC_OWNER. Without /proc, IPC_STAT is tried.
fn shm_attached(id: i32, key: i32) -> Option<u64> {
    if let Ok(table) = fs::read_to_string("/proc/sysvipc/shm") {
        // Columns: key shmid perms size cpid lpid nattch ...; the key printed signed.
        return table.lines().skip(1).find_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            (f.len() > 6 && f[0].parse::<i32>().ok()? == key && f[1].parse::<i32>().ok()? == id)
                .then(|| f[6].parse().ok())
                .flatten()
        });
    }
    // SAFETY: a zeroed shmid_ds is a valid buffer; IPC_STAT only fills it in.
    let mut ds: libc::shmid_ds = unsafe { std::mem::zeroed() };
    // SAFETY: IPC_STAT with a valid buffer reads the segment's metadata and nothing else.
    let r = unsafe { libc::shmctl(id, libc::IPC_STAT, &mut ds) };
    (r == 0 && ds.shm_perm.__key == key).then_some(ds.shm_nattch as u64)
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
        certain: true,
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
    fn postgres_with_a_live_pid_is_found_and_an_unprovable_one_is_refused() {
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
        // This test process is alive but not PostgreSQL: not shown running, not shown stopped.
        let db = find(d.path(), &[]).expect("live");
        assert_eq!(db.kind, "PostgreSQL");
        assert!(
            !db.certain && db.evidence.contains("not PostgreSQL"),
            "{db:?}"
        );
        let msg = db.refusal();
        assert!(msg.contains("pg_dumpall") && !msg.contains('\n'), "{msg}");
        assert!(find(d.path(), &[d.path().join("app")]).is_none(), "skipped");
        fs::write(pg.join("postmaster.pid"), "999999999\n").unwrap();
        let db = find(d.path(), &[]).expect("a PID that is not visible proves nothing");
        assert!(
            !db.certain
                && db.evidence.contains("does not exist here")
                && db.evidence.contains("remove"),
            "{db:?}"
        );
        fs::write(pg.join("postmaster.pid"), "").unwrap();
        assert!(!find(d.path(), &[]).expect("being written").certain);
    }

    /// What a sidecar sees: a PID from another namespace (here absent, or a process that is not
    /// PostgreSQL), and the postmaster's shared memory segment in the pod's IPC namespace. Run
    /// with a positive key and a negative one (PostgreSQL derives the key from the data
    /// directory's inode and writes it sign-extended as an unsigned long).
    #[test]
    fn postgres_in_another_pid_namespace_is_judged_by_its_shared_memory() {
        // Private keys no other test uses.
        let low = std::process::id() as i32 & 0xffff;
        for key in [0x4c42_0000 + low, -(0x4c43_0000 + low)] {
            judged_by_segment(key);
        }
    }

    fn judged_by_segment(key: i32) {
        let d = tempfile::tempdir().unwrap();
        let pg = d.path().join("pgdata");
        fs::create_dir_all(&pg).unwrap();
        fs::write(pg.join("PG_VERSION"), "16\n").unwrap();
        // SAFETY: creating a one-page segment; removed below.
        let id = unsafe { libc::shmget(key, 4096, libc::IPC_CREAT | 0o600) };
        assert!(id >= 0, "shmget: {}", std::io::Error::last_os_error());
        // As PostgreSQL writes it: `%9lu %9lu` of the key and the id.
        let write = |pid: i64, key: i32, id: i32| {
            let (key, id) = (key as i64 as u64, id as i64 as u64);
            fs::write(
                pg.join("postmaster.pid"),
                format!("{pid}\n/var/lib/postgresql/data\n1764547200\n5432\n/var/run/postgresql\n*\n{key:>9} {id:>9}\nready\n"),
            )
            .unwrap()
        };
        // This test process: alive, but not PostgreSQL.
        let me = i64::from(std::process::id());
        write(me, key, id);
        assert!(
            find(d.path(), &[]).is_none(),
            "key {key}: segment with nobody attached: a crash leftover"
        );
        write(999_999_999, key, id);
        assert!(
            find(d.path(), &[]).is_none(),
            "key {key}: absent PID, segment unattached"
        );
        // SAFETY: attach the segment read-only, as a backend would keep it attached.
        let at = unsafe { libc::shmat(id, std::ptr::null(), libc::SHM_RDONLY) };
        assert_ne!(at as isize, -1);
        let live = find(d.path(), &[]).expect("attached segment: running");
        assert!(
            live.certain && live.evidence.contains("1 processes attached"),
            "key {key}: {live:?}"
        );
        write(me, key, id);
        assert!(find(d.path(), &[]).is_some_and(|db| db.certain));
        // The same id under another key is not the server's segment.
        write(999_999_999, key.wrapping_add(1), id);
        let unknown = find(d.path(), &[]).expect("undecidable counts as running");
        assert!(
            !unknown.certain && unknown.evidence.contains("another container"),
            "key {key}: {unknown:?}"
        );
        // SAFETY: detach and remove what this test made.
        unsafe {
            libc::shmdt(at);
            libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut());
        }
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
        let file = find(&d.path().join("app.db"), &[]).expect("the database file itself");
        assert!(
            file.cli_refusal().contains("sqlite3"),
            "{}",
            file.cli_refusal()
        );
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
