//! Files mode on a live database is refused: a real PostgreSQL server (initdb + pg_ctl, as an
//! unprivileged user when the tests run as root, on a unix socket in a temp directory) runs on
//! the volume while `lifeboat daemon` and `lifeboat run` start in files mode. Without
//! LIFEBOAT_ALLOW_LIVE_DATABASE they refuse with one line naming the dump method; with it, or
//! once the server has stopped, they start.
//!
//! The server binaries come from /usr/lib/postgresql/*/bin or PATH; when missing,
//! tests/common/ensure_postgres.sh installs Debian's `postgresql` package. The test is skipped,
//! with a loud SKIPPED line, only when that fails too.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::pg::{as_pg_user, chown_nobody};
use common::{PASSWORD, cli_init};

struct Server {
    bindir: PathBuf,
    data: PathBuf,
}

impl Server {
    fn stop(&self) {
        let _ = as_pg_user(&self.bindir.join("pg_ctl"))
            .args(["stop", "-w", "-m", "fast", "-D"])
            .arg(&self.data)
            .env("LC_ALL", "C")
            .output();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A new data directory (owned by `nobody` when we are root) and a socket directory; returns
/// whether we are root and the socket directory.
fn initdb(bindir: &Path, base: &Path, data: &Path) -> (bool, PathBuf) {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let sock = base.join("sock");
    std::fs::create_dir_all(&sock).unwrap();
    std::fs::create_dir_all(data.parent().unwrap()).unwrap();
    if root {
        for d in [base, data.parent().unwrap()] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        chown_nobody(&sock);
        std::fs::create_dir_all(data).unwrap();
        chown_nobody(data);
    }
    let out = as_pg_user(&bindir.join("initdb"))
        .args(["-A", "trust", "-U", "postgres", "-D"])
        .arg(data)
        .env("LC_ALL", "C")
        .output()
        .unwrap();
    assert!(out.status.success(), "initdb: {}", text(&out));
    (root, sock)
}

fn start_postgres(bindir: &Path, base: &Path, data: &Path) -> Server {
    let (root, sock) = initdb(bindir, base, data);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = Server {
        bindir: bindir.to_path_buf(),
        data: data.to_path_buf(),
    };
    let log = base.join("pg.log");
    if root {
        std::fs::write(&log, "").unwrap();
        chown_nobody(&log);
    }
    let out = as_pg_user(&bindir.join("pg_ctl"))
        .args(["start", "-w", "-t", "60", "-D"])
        .arg(data)
        .arg("-l")
        .arg(&log)
        .arg("-o")
        .arg(format!(
            "-p {port} -k {} -c listen_addresses='' -c checkpoint_timeout=30s",
            sock.display()
        ))
        .env("LC_ALL", "C")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pg_ctl start: {}\n{}",
        text(&out),
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(data.join("postmaster.pid").is_file());
    server
}

fn text(o: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn agent(repo: &Path, volume: &Path, cache: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lifeboat"));
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("LIFEBOAT_REPOSITORY", repo)
        .env("LIFEBOAT_PASSWORD", PASSWORD)
        .env("LIFEBOAT_PATH", volume)
        .env("LIFEBOAT_NAME", "pg")
        .env("LIFEBOAT_CACHE_DIR", cache)
        .env("LIFEBOAT_LEASE_TTL", "30s")
        .env("LIFEBOAT_SCHEDULE", "off");
    c
}

#[test]
fn files_mode_on_a_live_postgresql_is_refused_with_the_method_to_use() {
    let Some(bindir) = common::pg::bindir(&[]) else {
        eprintln!(
            "SKIPPED files_mode_on_a_live_postgresql_is_refused: no PostgreSQL server binaries and tests/common/ensure_postgres.sh could not install them"
        );
        println!("SKIPPED: PostgreSQL server binaries missing and not installable");
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let repo = t.path().join("repo");
    cli_init(&repo);
    let vol = t.path().join("vol");
    let data = vol.join("pgdata");
    let server = start_postgres(&bindir, t.path(), &data);
    let cache = t.path().join("cache");

    // The sidecar and the wrapper both refuse, at once, with one line naming the method.
    for args in [vec!["daemon"], vec!["run", "--", "sleep", "30"]] {
        let start = std::time::Instant::now();
        let out = agent(&repo, &vol, &cache).args(&args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} started: {}", text(&out));
        assert!(
            start.elapsed().as_secs() < 20,
            "{args:?} took {:?}",
            start.elapsed()
        );
        let line = err
            .lines()
            .find(|l| l.contains("refusing to back up a live PostgreSQL database"))
            .unwrap_or_else(|| panic!("{args:?}: no refusal line: {}", text(&out)));
        assert!(
            line.contains("LIFEBOAT_DUMP_COMMAND")
                && line.contains("LIFEBOAT_METHOD=postgres")
                && line.contains("LIFEBOAT_ALLOW_LIVE_DATABASE")
                && line.contains(&data.display().to_string()),
            "{line}"
        );
        println!("LIVE_DB {args:?}: exit {:?}: {line}", out.status.code());
    }

    // Accepting crash-consistent copies explicitly: it starts and backs up.
    let out = agent(&repo, &vol, &cache)
        .env("LIFEBOAT_ALLOW_LIVE_DATABASE", "true")
        .args(["run", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    // Dump mode is not files mode: no refusal either.
    let out = agent(&repo, &vol, &cache)
        .env("LIFEBOAT_DUMP_COMMAND", "echo dump")
        .args(["run", "--", "true"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("refusing to back up"),
        "{}",
        text(&out)
    );

    // Once the server has stopped, its files are a consistent copy: files mode proceeds.
    server.stop();
    assert!(!data.join("postmaster.pid").exists());
    let out = agent(&repo, &vol, &cache)
        .args(["run", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    // A postmaster.pid that nothing here can judge (its PID absent, its shared memory segment
    // not in this IPC namespace: another container's server, or a crash in a namespace that is
    // gone). The sidecar refuses: the server may be running next to it. The wrapper lets its
    // app start, since the app is that server (it replaces the file when it starts and removes
    // it when it stops, as the stand-in here does), and backs up once it has stopped.
    std::fs::write(
        data.join("postmaster.pid"),
        "999999999\n/elsewhere\n1764547200\n5432\n/var/run/postgresql\n*\n 77001234   9999999\nready\n",
    )
    .unwrap();
    let out = agent(&repo, &vol, &cache).arg("daemon").output().unwrap();
    assert!(!out.status.success(), "daemon started: {}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("another container"),
        "{}",
        text(&out)
    );
    let pidfile = data.join("postmaster.pid");
    let out = agent(&repo, &vol, &cache)
        .args(["run", "--", "rm", "-f"])
        .arg(&pidfile)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("starting the app, which owns it") && err.contains("final backup done"),
        "{}",
        text(&out)
    );
}

/// An app holding an SQLite database open in WAL mode (Python's sqlite3, when python3 exists):
/// refused in files mode, the message naming LIFEBOAT_PAUSE (a crash-consistent copy).
#[test]
fn files_mode_on_a_live_sqlite_wal_database_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let repo = t.path().join("repo");
    cli_init(&repo);
    let vol = t.path().join("vol");
    std::fs::create_dir_all(vol.join("app")).unwrap();
    let db = vol.join("app/app.db");
    let ready = t.path().join("ready");
    let script = format!(
        "import sqlite3, time, pathlib\nc = sqlite3.connect({:?})\nc.execute('pragma journal_mode=wal')\nc.execute('create table if not exists t(x)')\nc.executemany('insert into t values (?)', [(i,) for i in range(1000)])\nc.commit()\npathlib.Path({:?}).write_text('1')\ntime.sleep(60)\n",
        db.display().to_string(),
        ready.display().to_string()
    );
    let Ok(mut app) = Command::new("python3").args(["-c", &script]).spawn() else {
        println!("SKIPPED files_mode_on_a_live_sqlite_wal_database_is_refused: no python3");
        return;
    };
    let start = std::time::Instant::now();
    while !ready.exists() {
        assert!(
            start.elapsed().as_secs() < 30,
            "the SQLite app did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(vol.join("app/app.db-wal").exists());
    let cache = t.path().join("cache");
    let out = agent(&repo, &vol, &cache)
        .args(["daemon"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let _ = app.kill();
    let _ = app.wait();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let line = err
        .lines()
        .find(|l| l.contains("refusing to back up a live SQLite database"))
        .unwrap_or_else(|| panic!("{}", text(&out)));
    assert!(line.contains("LIFEBOAT_PAUSE=true"), "{line}");
    println!("LIVE_DB sqlite: exit 1: {line}");
}

/// `lifeboat run -- postgres` in files mode: the database is stopped when the agent starts, so
/// the start check passes; once the app runs, the agent reports the refusal within seconds (not
/// at the first scheduled backup), and the final backup, after PostgreSQL stopped, succeeds.
#[test]
fn run_around_postgresql_in_files_mode_reports_the_live_database_early() {
    let Some(bindir) = common::pg::bindir(&[]) else {
        println!("SKIPPED: PostgreSQL server binaries missing and not installable");
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let repo = t.path().join("repo");
    cli_init(&repo);
    let vol = t.path().join("vol");
    let data = vol.join("pgdata");
    let (root, sock) = initdb(&bindir, t.path(), &data);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut app: Vec<String> = Vec::new();
    if root {
        app.extend(
            [
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--",
            ]
            .map(String::from),
        );
    }
    app.push(bindir.join("postgres").display().to_string());
    app.extend([
        "-D".into(),
        data.display().to_string(),
        "-k".into(),
        sock.display().to_string(),
        "-p".into(),
        port.to_string(),
        "-c".into(),
        "listen_addresses=".into(),
    ]);
    let mut child = agent(&repo, &vol, &t.path().join("cache"))
        .env("LC_ALL", "C")
        .arg("run")
        .arg("--")
        .args(&app)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let reader = {
        let lines = lines.clone();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for l in std::io::BufReader::new(err).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(l);
            }
        })
    };
    let start = std::time::Instant::now();
    let found = loop {
        let l = lines.lock().unwrap().clone();
        if let Some(line) = l
            .iter()
            .find(|l| l.contains("refusing to back up a live PostgreSQL database"))
        {
            break line.clone();
        }
        if start.elapsed().as_secs() > 60 || child.try_wait().unwrap().is_some() {
            // SAFETY: stopping the agent this test started.
            unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
            panic!("no early refusal: {}", l.join("\n"));
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let seconds = start.elapsed().as_secs_f64();
    // SAFETY: stopping the agent this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    reader.join().unwrap();
    let log = lines.lock().unwrap().join("\n");
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.contains("final backup done"), "{log}");
    assert!(found.contains("LIFEBOAT_METHOD=postgres"), "{found}");
    println!(
        "LIVE_DB run -- postgres: reported after {seconds:.1} s; final backup after it stopped: done"
    );
}
