//! The database snippets in `sdl-snippets/`, run end to end with the real servers: each test
//! reads its snippet's service (env and args) with serde_yaml_ng, starts the real
//! `lifeboat run -- <server>` on an empty volume, writes 10,000 rows (keys) through the
//! database's own client, stops it with SIGTERM (the final backup: a dump for the dump-mode
//! snippets, the files for Redis), then starts it again on a NEW empty volume with the same
//! repository and reads the rows back, comparing the count and a checksum. Each prints
//! `snippet=<file> rows_written=N rows_read_back=N seconds=S` (S: from the second start until
//! the rows were read back).
//!
//! What differs from a deployment, and nothing else:
//! - Placeholders get test values: `LIFEBOAT_REPOSITORY` is a local directory, the passwords
//!   are fixed strings, `LIFEBOAT_PATH` (and any variable under it, like `PGDATA`) points into a
//!   temporary directory. Every other `LIFEBOAT_*` setting is passed verbatim from the YAML.
//! - The official images' `docker-entrypoint.sh` does not exist here, so only the app command
//!   is replaced, by a stand-in script that does what that entrypoint does on an empty volume
//!   (initialise the data directory, set the passwords, run a temporary socket-only server for
//!   the initialisation as the PostgreSQL and MySQL/MariaDB images do, drop root privileges)
//!   and then execs the server, listening on loopback at a free port.
//! - The clients find that server through their standard means: `PGHOST`/`PGPORT`, the user's
//!   `~/.my.cnf` (`HOME` is the test's directory), and for `redis-cli`, which has neither, a
//!   `-p PORT` shim first in `PATH`. MySQL 8.4 is stood in for by Debian's MariaDB (`mysqldump`/`mysql` are
//!   MariaDB's), PostgreSQL 16 by Debian's PostgreSQL 15, Redis 7 by Debian's Redis 7.
//!
//! The servers come from `tests/install-servers.sh` (Debian packages, installed only when
//! missing). Run as root (as CI does), the servers run as their own users (`postgres`, `mysql`,
//! `redis`), as in the images.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const REPO_PASSWORD: &str = "snippet e2e repository password";
const DB_PASSWORD: &str = "snippet-e2e-db-password";
const APP_PASSWORD: &str = "snippet-e2e-app-password";
const ROWS: usize = 10_000;
const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs tests/install-servers.sh once per test process.
fn install_servers() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let out = Command::new("sh")
            .arg(root().join("tests/install-servers.sh"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "tests/install-servers.sh failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

fn is_root() -> bool {
    // SAFETY: getuid has no preconditions.
    unsafe { libc::getuid() == 0 }
}

/// The service's env (`KEY=VALUE` pairs) and args, read from the snippet file.
struct Snippet {
    file: String,
    env: Vec<(String, String)>,
    args: Vec<String>,
    path: String,
}

fn snippet(file: &str, service: &str) -> Snippet {
    let text = std::fs::read_to_string(root().join("sdl-snippets").join(file)).unwrap();
    let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    let svc = &v["services"][service];
    let strings = |k: &str| -> Vec<String> {
        svc[k]
            .as_sequence()
            .unwrap_or_else(|| panic!("{file}: services.{service}.{k} is not a list"))
            .iter()
            .map(|x| x.as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        strings("command"),
        ["/usr/local/bin/lifeboat", "run", "--"],
        "{file}"
    );
    let env: Vec<(String, String)> = strings("env")
        .into_iter()
        .map(|e| {
            let (k, v) = e.split_once('=').unwrap();
            (k.to_string(), v.to_string())
        })
        .collect();
    let path = env
        .iter()
        .find(|(k, _)| k == "LIFEBOAT_PATH")
        .map(|(_, v)| v.clone())
        .unwrap();
    Snippet {
        file: file.into(),
        env,
        args: strings("args"),
        path,
    }
}

impl Snippet {
    fn get(&self, key: &str) -> Option<&str> {
        self.env
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The snippet's env with test values for the placeholders and the volume path; every
    /// other value verbatim.
    fn env_for(&self, volume: &Path, repo: &Path) -> Vec<(String, String)> {
        self.env
            .iter()
            .map(|(k, v)| {
                let v = if k == "LIFEBOAT_REPOSITORY" {
                    repo.display().to_string()
                } else if k == "LIFEBOAT_PASSWORD" {
                    REPO_PASSWORD.into()
                } else if let Some(rest) = v.strip_prefix(&self.path) {
                    format!("{}{rest}", volume.display())
                } else if k.starts_with("AWS_") {
                    "unused-by-a-local-repository".into()
                } else if v.contains('<') && v.contains('>') {
                    assert!(
                        k.ends_with("_PASSWORD"),
                        "{}: no test value for the placeholder in {k}={v}",
                        self.file
                    );
                    DB_PASSWORD.into()
                } else {
                    v.clone()
                };
                (k.clone(), v)
            })
            .collect()
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `chown user path` when running as root (the servers run as their own users then).
fn give_to(user: &str, path: &Path) {
    if is_root() {
        let s = Command::new("chown").arg(user).arg(path).status().unwrap();
        assert!(s.success());
    }
}

/// The prefix that runs a command as `user` without a wrapper process in between (the
/// images' `gosu`), or nothing when not root.
fn as_user(user: &str) -> String {
    if is_root() {
        format!("setpriv --reuid={user} --regid={user} --init-groups --")
    } else {
        String::new()
    }
}

fn write_script(path: &Path, body: &str) {
    std::fs::write(path, body).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A running `lifeboat run`; killed (with the server whose pid file it names) if the test
/// panics.
struct Agent {
    child: Option<Child>,
    log: PathBuf,
    server_pidfile: PathBuf,
}

impl Agent {
    fn start(
        env: &[(String, String)],
        extra: &[(String, String)],
        app: &[String],
        work: &Path,
        log: &Path,
        server_pidfile: &Path,
    ) -> Agent {
        let f = std::fs::File::create(log).unwrap();
        let mut c = Command::new(env!("CARGO_BIN_EXE_lifeboat"));
        c.env_clear()
            .env("HOME", work)
            .env("XDG_CACHE_HOME", work.join("cache"))
            .env("TMPDIR", work.join("tmp"))
            .envs(env.iter().cloned())
            .envs(extra.iter().cloned())
            .arg("run")
            .arg("--")
            .args(app)
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f);
        // TMPDIR is the servers' too: world-writable like /tmp.
        std::fs::create_dir_all(work.join("tmp")).unwrap();
        std::fs::set_permissions(work.join("tmp"), std::fs::Permissions::from_mode(0o1777))
            .unwrap();
        Agent {
            child: Some(c.spawn().unwrap()),
            log: log.to_path_buf(),
            server_pidfile: server_pidfile.to_path_buf(),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn assert_running(&mut self) {
        if let Some(s) = self.child.as_mut().unwrap().try_wait().unwrap() {
            panic!("lifeboat exited early ({s}):\n{}", self.log());
        }
    }

    /// SIGTERM, then waits for the exit.
    fn stop(&mut self, timeout: Duration) -> ExitStatus {
        let child = self.child.as_mut().unwrap();
        // SAFETY: signalling the process this test started.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let start = Instant::now();
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                self.child = None;
                return s;
            }
            if start.elapsed() > timeout {
                panic!(
                    "lifeboat did not exit within {timeout:?} of SIGTERM:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Ok(s) = std::fs::read_to_string(&self.server_pidfile)
            && let Some(pid) = s.lines().next().and_then(|l| l.trim().parse::<i32>().ok())
            && pid > 1
        {
            // SAFETY: the pid of a server this test started (its own pid file).
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// Runs `sh -c cmd` with `env` added; Ok(stdout) on success.
fn sh(cmd: &str, env: &[(String, String)]) -> Result<String, String> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .envs(env.iter().cloned())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!(
            "{cmd}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Polls `f` until it returns Some, failing after `timeout` with the agent's log.
fn wait_for<T>(
    what: &str,
    agent: &mut Agent,
    timeout: Duration,
    mut f: impl FnMut() -> Result<T, String>,
) -> T {
    let start = Instant::now();
    loop {
        let last = match f() {
            Ok(v) => return v,
            Err(e) => e,
        };
        agent.assert_running();
        if start.elapsed() > timeout {
            panic!(
                "timed out after {timeout:?} waiting for {what}; last error: {last}\nlifeboat's log:\n{}",
                agent.log()
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A temporary directory every server user can traverse.
fn workdir() -> tempfile::TempDir {
    let t = tempfile::Builder::new()
        .prefix("lifeboat-snippet-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    t
}

fn new_volume(work: &Path, name: &str) -> PathBuf {
    let v = work.join(name);
    std::fs::create_dir(&v).unwrap();
    v
}

/// The same data read back: `(count, checksum)` before and after.
fn report(file: &str, written: &(usize, String), read: &(usize, String), seconds: f64) {
    println!(
        "snippet={} rows_written={} rows_read_back={} seconds={seconds:.1}",
        file.trim_end_matches(".yaml"),
        written.0,
        read.0
    );
    assert_eq!(written.0, ROWS);
    assert_eq!(read, written, "{file}: the data read back differs");
}

fn restored_marker(volume: &Path) -> Result<(), String> {
    if volume.join(".lifeboat/restored").exists() {
        Ok(())
    } else {
        Err("the volume is not marked restored yet".into())
    }
}

fn count_and_sum(out: &str) -> Result<(usize, String), String> {
    let mut it = out.split_whitespace();
    let n = it
        .next()
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("unexpected output {out:?}"))?;
    Ok((n, it.next().unwrap_or("").to_string()))
}

/// Stand-in for the postgres image's `docker-entrypoint.sh postgres`: initdb with the
/// password (local connections trusted, the image's `host all all all scram-sha-256` line
/// appended), a temporary socket-only server for the init phase, then the server itself.
const PG_ENTRYPOINT: &str = r#"#!/bin/sh
set -eu
mkdir -p "$PGDATA"
[ -z "$RUN_AS" ] || chown -R postgres "$PGDATA"
chmod 700 "$PGDATA"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    pw="$(mktemp)"
    printf '%s\n' "$POSTGRES_PASSWORD" > "$pw"
    [ -z "$RUN_AS" ] || chown postgres "$pw"
    $RUN_AS "$PG_BIN/initdb" -D "$PGDATA" --username=postgres --pwfile="$pw" >/dev/null
    rm -f "$pw"
    printf '\nhost all all all scram-sha-256\n' >> "$PGDATA/pg_hba.conf"
    $RUN_AS "$PG_BIN/pg_ctl" -D "$PGDATA" -o "-c listen_addresses='' -k $PGHOST -p $PGPORT" -w start >/dev/null
    $RUN_AS "$PG_BIN/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null
fi
exec $RUN_AS "$PG_BIN/postgres" -D "$PGDATA" -c listen_addresses=127.0.0.1 -k "$PGHOST" -p "$PGPORT"
"#;

#[test]
fn postgres_dump_snippet_restores_its_dump_on_a_new_volume() {
    install_servers();
    let sn = snippet("postgres-dump.yaml", "postgres");
    assert_eq!(sn.args, ["docker-entrypoint.sh", "postgres"]);
    assert!(
        sn.get("LIFEBOAT_DUMP_COMMAND").is_some() && sn.get("LIFEBOAT_RESTORE_COMMAND").is_some()
    );
    let t = workdir();
    let w = t.path();
    let sock = w.join("sock");
    std::fs::create_dir(&sock).unwrap();
    give_to("postgres", &sock);
    let repo = w.join("repo");
    let entry = w.join("docker-entrypoint-standin.sh");
    write_script(&entry, PG_ENTRYPOINT);
    let port = free_port().to_string();
    let path = format!("{PG_BIN}:{}", std::env::var("PATH").unwrap_or_default());
    // The clients (the snippet's commands and this test's) find the server through these.
    let client: Vec<(String, String)> = vec![
        ("PATH".into(), path),
        ("PGHOST".into(), sock.display().to_string()),
        ("PGPORT".into(), port),
    ];
    let mut extra = client.clone();
    extra.push(("PG_BIN".into(), PG_BIN.into()));
    extra.push(("RUN_AS".into(), as_user("postgres")));
    let app = vec![entry.display().to_string()];
    let mut app_client = client.clone();
    app_client.push(("PGPASSWORD".into(), APP_PASSWORD.into()));
    let query = "psql -h 127.0.0.1 -U app -d appdb -XAtq -F ' ' -c \
        \"SELECT count(*), md5(string_agg(id || ':' || payload, ',' ORDER BY id)) FROM snippet_rows\"";

    // First lease: an empty volume, no snapshot yet.
    let v1 = new_volume(w, "volume1");
    let env1 = sn.env_for(&v1, &repo);
    let pidfile1 =
        PathBuf::from(&env1.iter().find(|(k, _)| k == "PGDATA").unwrap().1).join("postmaster.pid");
    let mut a = Agent::start(&env1, &extra, &app, w, &w.join("run1.log"), &pidfile1);
    wait_for(
        "PostgreSQL to accept connections",
        &mut a,
        Duration::from_secs(120),
        || sh("psql -h 127.0.0.1 -U postgres -XAtqc 'SELECT 1'", &client),
    );
    sh(
        &format!(
            "psql -h 127.0.0.1 -U postgres -Xq -v ON_ERROR_STOP=1 \
             -c \"CREATE ROLE app LOGIN PASSWORD '{APP_PASSWORD}'\" -c 'CREATE DATABASE appdb OWNER app'"
        ),
        &client,
    )
    .unwrap();
    sh(
        &format!(
            "psql -h 127.0.0.1 -U app -d appdb -Xq -v ON_ERROR_STOP=1 \
             -c 'CREATE TABLE snippet_rows (id integer PRIMARY KEY, payload text NOT NULL)' \
             -c \"INSERT INTO snippet_rows SELECT g, md5(g::text) FROM generate_series(1, {ROWS}) g\""
        ),
        &app_client,
    )
    .unwrap();
    let written = count_and_sum(&sh(query, &app_client).unwrap()).unwrap();
    let s = a.stop(Duration::from_secs(60));
    let log1 = a.log();
    assert!(log1.contains("final backup done"), "{s}:\n{log1}");
    drop(a);

    // Second lease: a new empty volume, the same repository.
    let v2 = new_volume(w, "volume2");
    let env2 = sn.env_for(&v2, &repo);
    let pidfile2 =
        PathBuf::from(&env2.iter().find(|(k, _)| k == "PGDATA").unwrap().1).join("postmaster.pid");
    let started = Instant::now();
    let mut b = Agent::start(&env2, &extra, &app, w, &w.join("run2.log"), &pidfile2);
    let read = wait_for(
        "the dump to be loaded",
        &mut b,
        Duration::from_secs(300),
        || sh(query, &app_client).and_then(|o| count_and_sum(&o)),
    );
    let seconds = started.elapsed().as_secs_f64();
    wait_for(
        "the restore to finish",
        &mut b,
        Duration::from_secs(60),
        || restored_marker(&v2),
    );
    report(&sn.file, &written, &read, seconds);
    b.stop(Duration::from_secs(60));
    let log2 = b.log();
    assert!(log2.contains("dump loaded into the app"), "{log2}");
    // Retries while the server starts are expected; an error from the dump itself is not.
    assert!(!log2.contains("already exists"), "{log2}");
    assert!(!log2.contains("kept failing"), "{log2}");
}

/// Stand-in for the mysql/mariadb image's `docker-entrypoint.sh mysqld` (argument: the data
/// directory): on an empty one, `mariadb-install-db`, a temporary socket-only server that drops
/// the password-less `root@127.0.0.1`/`::1`/hostname accounts, sets the root password for
/// `root@localhost` and creates `root@'%'` (the images' default `MYSQL_ROOT_HOST`), then the server itself with `skip-name-resolve`, as the images run it.
const MYSQL_ENTRYPOINT: &str = r#"#!/bin/sh
set -eu
D="$1"
USER_OPT=""
if [ "$(id -u)" = 0 ]; then chown -R mysql "$D"; USER_OPT=--user=mysql; fi
if [ ! -d "$D/mysql" ]; then
    mariadb-install-db --no-defaults --datadir="$D" $USER_OPT \
        --auth-root-authentication-method=normal --skip-test-db >/dev/null
    mariadbd --no-defaults --datadir="$D" --socket="$SOCKET" --pid-file="$SERVER_PIDFILE" \
        $USER_OPT --skip-networking &
    pid=$!
    i=0
    until mariadb --no-defaults -uroot --socket="$SOCKET" -e 'SELECT 1' >/dev/null 2>&1; do
        i=$((i + 1)); [ "$i" -lt 300 ] || exit 1; sleep 0.2
    done
    mariadb --no-defaults -uroot --socket="$SOCKET" <<SQL
DROP USER IF EXISTS 'root'@'127.0.0.1', 'root'@'::1';
EXECUTE IMMEDIATE CONCAT('DROP USER IF EXISTS root@\'', @@hostname, '\'');
SET PASSWORD FOR 'root'@'localhost' = PASSWORD('$MYSQL_ROOT_PASSWORD');
CREATE USER 'root'@'%' IDENTIFIED BY '$MYSQL_ROOT_PASSWORD';
GRANT ALL ON *.* TO 'root'@'%' WITH GRANT OPTION;
SQL
    kill "$pid"
    wait "$pid" || true
fi
exec mariadbd --no-defaults --datadir="$D" --socket="$SOCKET" --pid-file="$SERVER_PIDFILE" \
    $USER_OPT --bind-address=127.0.0.1 --port="$PORT" --skip-name-resolve
"#;

#[test]
fn mysql_snippet_restores_its_dump_on_a_new_volume() {
    install_servers();
    let sn = snippet("mysql.yaml", "mysql");
    assert_eq!(sn.args, ["docker-entrypoint.sh", "mysqld"]);
    assert!(
        sn.get("LIFEBOAT_DUMP_COMMAND").is_some() && sn.get("LIFEBOAT_RESTORE_COMMAND").is_some()
    );
    let t = workdir();
    let w = t.path();
    let run = w.join("run");
    std::fs::create_dir(&run).unwrap();
    give_to("mysql", &run);
    let socket = run.join("mysqld.sock");
    let server_pidfile = run.join("mysqld.pid");
    let port = free_port().to_string();
    let repo = w.join("repo");
    let entry = w.join("docker-entrypoint-standin.sh");
    write_script(&entry, MYSQL_ENTRYPOINT);
    // The clients (the snippet's commands and this test's) find the server through the user's
    // own option file: Debian's /etc/mysql sets a socket path that beats MYSQL_UNIX_PORT.
    std::fs::write(
        w.join(".my.cnf"),
        format!("[client]\nsocket={}\nport={port}\n", socket.display()),
    )
    .unwrap();
    let client: Vec<(String, String)> = vec![("HOME".into(), w.display().to_string())];
    let extra: Vec<(String, String)> = vec![
        ("PATH".into(), std::env::var("PATH").unwrap_or_default()),
        ("SOCKET".into(), socket.display().to_string()),
        ("PORT".into(), port),
        (
            "SERVER_PIDFILE".into(),
            server_pidfile.display().to_string(),
        ),
    ];
    let root = format!("mysql -h127.0.0.1 -uroot -p{DB_PASSWORD} -N -B");
    let app_sql = format!("mysql -h127.0.0.1 -uapp -p{APP_PASSWORD} -N -B appdb");
    let query = format!(
        "{app_sql} -e \"SELECT COUNT(*), SUM(CRC32(CONCAT(id, ':', payload))) FROM snippet_rows\""
    );

    // First lease: an empty volume, no snapshot yet.
    let v1 = new_volume(w, "volume1");
    let app1 = vec![entry.display().to_string(), v1.display().to_string()];
    let mut a = Agent::start(
        &sn.env_for(&v1, &repo),
        &extra,
        &app1,
        w,
        &w.join("run1.log"),
        &server_pidfile,
    );
    wait_for(
        "MariaDB to accept connections",
        &mut a,
        Duration::from_secs(120),
        || sh(&format!("{root} -e 'SELECT 1'"), &client),
    );
    sh(
        &format!(
            "{root} -e \"CREATE DATABASE appdb; CREATE USER 'app'@'%' IDENTIFIED BY '{APP_PASSWORD}'; \
             GRANT ALL ON appdb.* TO 'app'@'%'\""
        ),
        &client,
    )
    .unwrap();
    sh(
        &format!(
            "{app_sql} -e \"CREATE TABLE snippet_rows (id INT PRIMARY KEY, payload VARCHAR(64) NOT NULL); \
             INSERT INTO snippet_rows SELECT seq, MD5(seq) FROM seq_1_to_{ROWS}\""
        ),
        &client,
    )
    .unwrap();
    let written = count_and_sum(&sh(&query, &client).unwrap()).unwrap();
    let s = a.stop(Duration::from_secs(60));
    let log1 = a.log();
    assert!(log1.contains("final backup done"), "{s}:\n{log1}");
    drop(a);

    // Second lease: a new empty volume, the same repository.
    let v2 = new_volume(w, "volume2");
    let app2 = vec![entry.display().to_string(), v2.display().to_string()];
    let started = Instant::now();
    let mut b = Agent::start(
        &sn.env_for(&v2, &repo),
        &extra,
        &app2,
        w,
        &w.join("run2.log"),
        &server_pidfile,
    );
    let read = wait_for(
        "the dump to be loaded",
        &mut b,
        Duration::from_secs(300),
        || sh(&query, &client).and_then(|o| count_and_sum(&o)),
    );
    let seconds = started.elapsed().as_secs_f64();
    wait_for(
        "the restore to finish",
        &mut b,
        Duration::from_secs(60),
        || restored_marker(&v2),
    );
    report(&sn.file, &written, &read, seconds);
    b.stop(Duration::from_secs(60));
    let log2 = b.log();
    assert!(log2.contains("dump loaded into the app"), "{log2}");
    assert!(!log2.contains("kept failing"), "{log2}");
}

/// Stand-in for the redis image's `docker-entrypoint.sh redis-server ARGS`: the data directory
/// handed to the `redis` user, then the server itself (its own ARGS plus loopback, the port and
/// a pid file).
const REDIS_ENTRYPOINT: &str = r#"#!/bin/sh
set -eu
shift # redis-server
if [ "$(id -u)" = 0 ]; then
    chown -R redis "$DATA_DIR"
    exec setpriv --reuid=redis --regid=redis --init-groups -- redis-server "$@" \
        --bind 127.0.0.1 --port "$PORT" --pidfile "$SERVER_PIDFILE"
fi
exec redis-server "$@" --bind 127.0.0.1 --port "$PORT" --pidfile "$SERVER_PIDFILE"
"#;

/// Reads keys `snippet:1..=ROWS` back: how many hold their value, and an FNV-1a checksum of
/// all the values read.
fn redis_read(work: &Path, client: &[(String, String)]) -> Result<(usize, String), String> {
    let gets = work.join("gets.txt");
    let mut cmds = String::new();
    for i in 1..=ROWS {
        cmds.push_str(&format!("GET snippet:{i}\n"));
    }
    std::fs::write(&gets, cmds).unwrap();
    let out = sh(&format!("redis-cli < {}", gets.display()), client)?;
    let mut present = 0;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, line) in out.lines().enumerate() {
        if line == redis_value(i + 1) {
            present += 1;
        }
        for b in line.bytes().chain([b'\n']) {
            h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
        }
    }
    Ok((present, format!("{h:016x}")))
}

fn redis_value(i: usize) -> String {
    format!(
        "row-{i}-{:016x}",
        (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
    )
}

#[test]
fn redis_snippet_restores_its_files_on_a_new_volume() {
    install_servers();
    let sn = snippet("redis.yaml", "redis");
    assert_eq!(sn.args[..2], ["docker-entrypoint.sh", "redis-server"]);
    assert!(sn.get("LIFEBOAT_DUMP_COMMAND").is_none(), "files mode");
    let t = workdir();
    let w = t.path();
    let run = w.join("run");
    std::fs::create_dir(&run).unwrap();
    give_to("redis", &run);
    let server_pidfile = run.join("redis.pid");
    let port = free_port().to_string();
    let repo = w.join("repo");
    let entry = w.join("docker-entrypoint-standin.sh");
    write_script(&entry, REDIS_ENTRYPOINT);
    let bin = w.join("bin");
    std::fs::create_dir(&bin).unwrap();
    let real = Command::new("sh")
        .args(["-c", "command -v redis-cli"])
        .output()
        .unwrap();
    let real = String::from_utf8_lossy(&real.stdout).trim().to_string();
    write_script(
        &bin.join("redis-cli"),
        &format!("#!/bin/sh\nexec {real} -p {port} \"$@\"\n"),
    );
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let client: Vec<(String, String)> = vec![("PATH".into(), path)];
    let app_for = |volume: &Path| -> Vec<String> {
        std::iter::once(entry.display().to_string())
            .chain(sn.args[1..].iter().map(|a| match a.strip_prefix(&sn.path) {
                Some(rest) => format!("{}{rest}", volume.display()),
                None => a.clone(),
            }))
            .collect()
    };
    let extra = |volume: &Path| -> Vec<(String, String)> {
        let mut e = client.clone();
        e.push(("PORT".into(), port.clone()));
        e.push((
            "SERVER_PIDFILE".into(),
            server_pidfile.display().to_string(),
        ));
        e.push(("DATA_DIR".into(), volume.display().to_string()));
        e
    };

    // First lease: an empty volume, no snapshot yet.
    let v1 = new_volume(w, "volume1");
    let mut a = Agent::start(
        &sn.env_for(&v1, &repo),
        &extra(&v1),
        &app_for(&v1),
        w,
        &w.join("run1.log"),
        &server_pidfile,
    );
    wait_for("Redis to answer", &mut a, Duration::from_secs(60), || {
        sh("redis-cli PING", &client)
    });
    let sets = w.join("sets.txt");
    let mut cmds = String::new();
    for i in 1..=ROWS {
        cmds.push_str(&format!("SET snippet:{i} {}\n", redis_value(i)));
    }
    std::fs::write(&sets, cmds).unwrap();
    sh(
        &format!("redis-cli < {} > /dev/null", sets.display()),
        &client,
    )
    .unwrap();
    let written = redis_read(w, &client).unwrap();
    // The pre-backup hook as the agent runs it (`sh -c`, LIFEBOAT_REASON set): a scheduled
    // backup needs the SAVE to succeed; the final one, after Redis stopped, goes ahead.
    let hook = sn.get("LIFEBOAT_PRE_BACKUP").unwrap();
    let reason = |r: &str| {
        let mut e = client.clone();
        e.push(("LIFEBOAT_REASON".into(), r.into()));
        e
    };
    sh(hook, &reason("schedule")).unwrap();
    let s = a.stop(Duration::from_secs(60));
    let log1 = a.log();
    assert!(log1.contains("final backup done"), "{s}:\n{log1}");
    drop(a);
    assert!(
        sh(hook, &reason("schedule")).is_err(),
        "SAVE answered after the stop"
    );
    sh(hook, &reason("final")).unwrap();

    // Second lease: a new empty volume, the same repository.
    let v2 = new_volume(w, "volume2");
    let started = Instant::now();
    let mut b = Agent::start(
        &sn.env_for(&v2, &repo),
        &extra(&v2),
        &app_for(&v2),
        w,
        &w.join("run2.log"),
        &server_pidfile,
    );
    let read = wait_for(
        "Redis to load the files",
        &mut b,
        Duration::from_secs(120),
        || {
            sh("redis-cli PING", &client)?;
            redis_read(w, &client)
        },
    );
    let seconds = started.elapsed().as_secs_f64();
    report(&sn.file, &written, &read, seconds);
    b.stop(Duration::from_secs(60));
    assert!(b.log().contains("volume restored"), "{}", b.log());
}

/// docs/SECURITY.md: the agent's key has no delete permission and retention is run by the
/// owner, so no snippet (nor `sdl inject`'s output, postgres-lifeboat.yaml) sets the agent's
/// retention or prune schedule.
#[test]
fn snippets_leave_retention_to_the_owner() {
    let mut checked = 0;
    for e in std::fs::read_dir(root().join("sdl-snippets")).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if !name.ends_with(".yaml") {
            continue;
        }
        let v: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        for (_, svc) in v["services"].as_mapping().unwrap() {
            for e in svc["env"].as_sequence().into_iter().flatten() {
                let e = e.as_str().unwrap();
                assert!(
                    !e.starts_with("LIFEBOAT_KEEP_") && !e.starts_with("LIFEBOAT_PRUNE_SCHEDULE"),
                    "{name}: {e} needs a delete-capable key on the agent"
                );
            }
        }
        checked += 1;
    }
    assert!(checked >= 6, "{checked}");
}
