//! The PostgreSQL drill (issue 16): `pgbench` and a ledger writer commit continuously to a real
//! PostgreSQL under `lifeboat run` with LIFEBOAT_METHOD=postgres (hot base backups on a
//! schedule, WAL archived with archive_timeout 10 s). At a random moment every process is
//! SIGKILLed at once (the PID namespace's init dies: the provider vanished) and the next lease
//! starts on a new, empty volume. Each recovery must start, `pg_amcheck` must be clean, and every
//! ledger transaction acknowledged more than archive_timeout + 5 s before the kill must be there.
//! Then the graceful path (SIGTERM) must lose nothing, and a point-in-time restore to a moment
//! between two known transactions must return exactly the first.
//!
//! Short tier (in `cargo test`): 3 kills. Full tier: `LIFEBOAT_PG_DRILL_KILLS=20 cargo test
//! --release --test pg_drill -- --nocapture`. Seed: LIFEBOAT_DRILL_SEED (default 16). Figures
//! are printed as `PG_DRILL` lines.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use common::pg::{as_pg_user as as_pg, chown_nobody, root};
use common::{PASSWORD, cli_init, free_port};

const ARCHIVE_TIMEOUT: u64 = 10;
const MARGIN: u64 = 5;
const NAME: &str = "pgdrill";

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }
}

struct Env {
    bindir: PathBuf,
    base: PathBuf,
    repo: PathBuf,
    sock: PathBuf,
    port: u16,
}

impl Env {
    /// A dead server's socket and lock files: a new lease's machine has none.
    fn clear_sockets(&self) {
        for e in std::fs::read_dir(&self.sock).unwrap().flatten() {
            let _ = std::fs::remove_file(e.path());
        }
    }

    fn client(&self) -> Result<postgres::Client, postgres::Error> {
        postgres::Config::new()
            .host_path(&self.sock)
            .port(self.port)
            .user("postgres")
            .dbname("postgres")
            .connect_timeout(Duration::from_secs(5))
            .connect(postgres::NoTls)
    }

    /// `lifeboat run -- postgres` on `vol` in a PID namespace of its own: killing the returned
    /// child (unshare) kills every process in it at once.
    fn start(&self, vol: &Path, listen: u16, extra: &[(&str, &str)]) -> Child {
        let data = vol.join("pgdata");
        let mut c = Command::new("unshare");
        c.args(["--pid", "--fork", "--kill-child", "--"])
            .arg(env!("CARGO_BIN_EXE_lifeboat"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("LC_ALL", "C")
            .env("LIFEBOAT_REPOSITORY", &self.repo)
            .env("LIFEBOAT_PASSWORD", PASSWORD)
            .env("LIFEBOAT_PATH", vol)
            .env("LIFEBOAT_NAME", NAME)
            .env("LIFEBOAT_CACHE_DIR", self.base.join("cache"))
            .env("LIFEBOAT_METHOD", "postgres")
            .env("LIFEBOAT_PG_ARCHIVE_TIMEOUT", format!("{ARCHIVE_TIMEOUT}s"))
            .env("LIFEBOAT_SCHEDULE", "@every 20s")
            .env("LIFEBOAT_BACKUP_ON_START", "true")
            .env("LIFEBOAT_LEASE_TTL", "4s")
            .env("LIFEBOAT_LEASE_WAIT", "2m")
            .env("LIFEBOAT_WAL_SOCKET", self.base.join("wal.sock"))
            .env("LIFEBOAT_LISTEN", format!("127.0.0.1:{listen}"))
            .env("PGHOST", &self.sock)
            .env("PGPORT", self.port.to_string())
            .env("PGUSER", "postgres");
        for (k, v) in extra {
            c.env(k, v);
        }
        c.arg("run").arg("--");
        if root() {
            c.args([
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--",
            ]);
        }
        c.arg(self.bindir.join("postgres"))
            .arg("-D")
            .arg(&data)
            .arg("-k")
            .arg(&self.sock)
            .args(["-p", &self.port.to_string(), "-c", "listen_addresses="])
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.base.join("agent.log"))
                    .unwrap(),
            ));
        c.spawn().unwrap()
    }
}

/// Every WAL object in the repository with its size.
fn wal_objects(repo: &Path) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for d in std::fs::read_dir(repo.join("wal"))
        .into_iter()
        .flatten()
        .flatten()
    {
        for f in std::fs::read_dir(d.path()).into_iter().flatten().flatten() {
            out.push((
                f.file_name().to_string_lossy().into_owned(),
                f.metadata().map_or(0, |m| m.len()),
            ));
        }
    }
    out
}

/// lifeboat's pid: the one child of `unshare`.
fn inner_pid(unshare: &Child) -> i32 {
    let p = format!("/proc/{0}/task/{0}/children", unshare.id());
    let text = std::fs::read_to_string(&p).unwrap();
    text.split_whitespace().next().unwrap().parse().unwrap()
}

/// A new lease's empty volume (traversable by the server's user).
fn new_volume(vol: &Path) {
    std::fs::create_dir_all(vol).unwrap();
    std::fs::set_permissions(vol, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn ready(listen: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", listen)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = s.write_all(b"GET /readyz HTTP/1.0\r\n\r\n");
    let mut r = String::new();
    let _ = s.read_to_string(&mut r);
    r.starts_with("HTTP/1.0 200") || r.starts_with("HTTP/1.1 200")
}

fn wait_ready(env: &Env, child: &mut Child, listen: u16, limit: Duration) -> f64 {
    let t = Instant::now();
    loop {
        if ready(listen) && env.client().is_ok() {
            return t.elapsed().as_secs_f64();
        }
        if let Some(st) = child.try_wait().unwrap() {
            panic!("agent exited ({st}) before ready: {}", log_tail(env));
        }
        assert!(
            t.elapsed() < limit,
            "not ready after {limit:?}: {}",
            log_tail(env)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn log_tail(env: &Env) -> String {
    let l = std::fs::read_to_string(env.base.join("agent.log")).unwrap_or_default();
    let lines: Vec<&str> = l.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// Commits ledger rows one by one, recording each acknowledged id with its time and latency.
struct Writer {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<(i64, SystemTime)>>>,
    worst: Arc<Mutex<f64>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    fn start(env: &Env, acked: Arc<Mutex<Vec<(i64, SystemTime)>>>) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let worst = Arc::new(Mutex::new(0f64));
        let mut c = env.client().unwrap();
        let (s, a, w) = (stop.clone(), acked.clone(), worst.clone());
        let in_db: Option<i64> = c
            .query_one("SELECT max(id) FROM ledger", &[])
            .unwrap()
            .get(0);
        let thread = std::thread::spawn(move || {
            let acked_max = a.lock().unwrap().last().map_or(0, |x| x.0);
            let mut next = acked_max.max(in_db.unwrap_or(0)) + 1;
            while !s.load(SeqCst) {
                let t = Instant::now();
                if c.execute(
                    "INSERT INTO ledger VALUES ($1, clock_timestamp())",
                    &[&next],
                )
                .is_err()
                {
                    return;
                }
                let lat = t.elapsed().as_secs_f64();
                a.lock().unwrap().push((next, SystemTime::now()));
                let mut wm = w.lock().unwrap();
                *wm = wm.max(lat);
                next += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Writer {
            stop,
            acked,
            worst,
            thread: Some(thread),
        }
    }
    fn stop(mut self) -> f64 {
        self.stop.store(true, SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = &self.acked;
        *self.worst.lock().unwrap()
    }
}

fn pgbench(env: &Env, args: &[&str]) -> Command {
    let mut c = Command::new(env.bindir.join("pgbench"));
    c.arg("-h")
        .arg(&env.sock)
        .args(["-p", &env.port.to_string(), "-U", "postgres"])
        .args(args)
        .arg("postgres")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

fn amcheck(env: &Env) {
    let out = Command::new(env.bindir.join("pg_amcheck"))
        .arg("-h")
        .arg(&env.sock)
        .args([
            "-p",
            &env.port.to_string(),
            "-U",
            "postgres",
            "--install-missing",
            "--heapallindexed",
            "-d",
            "postgres",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pg_amcheck: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Checks the ledger after a recovery: returns (rows lost that were acknowledged, worst loss in
/// seconds before `killed`).
fn verify(env: &Env, acked: &[(i64, SystemTime)], killed: SystemTime) -> (usize, f64) {
    let mut c = env.client().unwrap();
    let have: std::collections::HashSet<i64> = c
        .query("SELECT id FROM ledger", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut lost = 0;
    let mut worst = 0f64;
    for (id, at) in acked {
        if !have.contains(id) {
            lost += 1;
            let before = killed.duration_since(*at).unwrap_or_default().as_secs_f64();
            worst = worst.max(before);
            assert!(
                before <= (ARCHIVE_TIMEOUT + MARGIN) as f64,
                "ledger row {id}, acknowledged {before:.1} s before the kill, is lost (archive_timeout {ARCHIVE_TIMEOUT} s)"
            );
        }
    }
    (lost, worst)
}

#[test]
fn postgres_survives_kills_and_restores_to_a_point_in_time() {
    let Some(bindir) = common::pg::bindir(&["pgbench", "pg_amcheck"]) else {
        println!(
            "SKIPPED pg_drill: no PostgreSQL server binaries and tests/common/ensure_postgres.sh could not install them"
        );
        return;
    };
    let kills: usize = std::env::var("LIFEBOAT_PG_DRILL_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let seed: u64 = std::env::var("LIFEBOAT_DRILL_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16);
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let t = tempfile::tempdir().unwrap();
    std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let sock = t.path().join("sock");
    std::fs::create_dir_all(&sock).unwrap();
    chown_nobody(&sock);
    let env = Env {
        bindir: bindir.clone(),
        base: t.path().to_path_buf(),
        repo: t.path().join("repo"),
        sock,
        port: free_port(),
    };
    cli_init(&env.repo);
    let vol0 = t.path().join("vol0");
    std::fs::create_dir_all(vol0.join("pgdata")).unwrap();
    std::fs::set_permissions(&vol0, std::fs::Permissions::from_mode(0o755)).unwrap();
    chown_nobody(&vol0.join("pgdata"));
    let out = as_pg(&bindir.join("initdb"))
        .args(["-A", "trust", "-U", "postgres", "-D"])
        .arg(vol0.join("pgdata"))
        .env("LC_ALL", "C")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "initdb: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let acked: Arc<Mutex<Vec<(i64, SystemTime)>>> = Arc::default();
    let mut worst_latency = 0f64;
    let mut worst_loss = 0f64;
    let mut lost_total = 0;
    let mut restore_secs = Vec::new();
    let mut vol = vol0;
    let mut killed_at: Option<SystemTime> = None;
    let mut kills_in_backup = 0;
    let mut kills_with_wal_pending = 0;
    for cycle in 0..=kills {
        let listen = free_port();
        let mut agent = env.start(&vol, listen, &[]);
        let secs = wait_ready(&env, &mut agent, listen, Duration::from_secs(240));
        if cycle == 0 {
            let mut c = env.client().unwrap();
            c.batch_execute("CREATE TABLE ledger (id bigint PRIMARY KEY, at timestamptz NOT NULL)")
                .unwrap();
            let st = pgbench(&env, &["-i", "-s", "2", "-q"]).status().unwrap();
            assert!(st.success(), "pgbench -i");
        } else {
            restore_secs.push(secs);
            let log = std::fs::read_to_string(env.base.join("agent.log")).unwrap_or_default();
            let last = |needle: &str| {
                log.lines()
                    .rev()
                    .find(|l| l.contains(needle))
                    .and_then(|l| l.split("seconds=").nth(1))
                    .and_then(|v| v.trim_start_matches('"').split(['"', ' ']).next())
                    .unwrap_or("?")
                    .to_string()
            };
            println!(
                "PG_DRILL cycle {cycle}: volume restore {} s, then WAL replay until ready {} s",
                last("volume restored"),
                last("out of recovery: ready")
            );
            amcheck(&env);
            let (lost, worst) = verify(&env, &acked.lock().unwrap(), killed_at.unwrap());
            lost_total += lost;
            worst_loss = worst_loss.max(worst);
            println!(
                "PG_DRILL cycle {cycle}: recovered and ready in {secs:.1} s; amcheck clean; acknowledged rows lost {lost} (all within {worst:.1} s of the kill)"
            );
            // Rows past the recovery point are gone for good: forget them.
            let mut c = env.client().unwrap();
            let max: Option<i64> = c
                .query_one("SELECT max(id) FROM ledger", &[])
                .unwrap()
                .get(0);
            acked.lock().unwrap().retain(|(id, _)| Some(*id) <= max);
        }
        if cycle == kills {
            // The graceful path, then a point-in-time restore; `agent` still runs.
            graceful_and_pitr(&env, agent, listen, &acked, &mut rng, t.path());
            break;
        }
        let mut bench = pgbench(&env, &["-c", "2", "-j", "1", "-T", "600"])
            .spawn()
            .unwrap();
        let writer = Writer::start(&env, acked.clone());
        // Every third kill lands inside a base backup, every third while a WAL file waits for or
        // is in its push; the rest at a random moment.
        let run = rng.range(8, 45);
        let began = Instant::now();
        std::thread::sleep(Duration::from_secs(run.min(8)));
        let aim = cycle % 3;
        while began.elapsed() < Duration::from_secs(run + 40) {
            if aim == 0 && began.elapsed() >= Duration::from_secs(run) {
                break;
            }
            if aim == 1 {
                let log = std::fs::read_to_string(env.base.join("agent.log")).unwrap_or_default();
                let pos = |n: &str| log.rfind(n).map_or(-1, |p| p as i64);
                if pos("PostgreSQL base backup started")
                    > pos("backup done").max(pos("backup failed"))
                {
                    std::thread::sleep(Duration::from_millis(rng.range(0, 40)));
                    break;
                }
            }
            if aim == 2
                && std::fs::read_dir(vol.join("pgdata/pg_wal/archive_status")).is_ok_and(|d| {
                    d.flatten()
                        .any(|e| e.file_name().to_string_lossy().ends_with(".ready"))
                })
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let run = began.elapsed().as_secs();
        // SAFETY: SIGKILL to the unshare process this test started: its namespace dies with it.
        unsafe { libc::kill(agent.id() as i32, libc::SIGKILL) };
        killed_at = Some(SystemTime::now());
        let _ = agent.wait();
        worst_latency = worst_latency.max(writer.stop());
        let _ = bench.kill();
        let _ = bench.wait();
        // What the kill interrupted: a base backup (started, not yet done) and WAL waiting for
        // or in the middle of its push (archive_status/*.ready).
        let log = std::fs::read_to_string(env.base.join("agent.log")).unwrap_or_default();
        let pos = |n: &str| log.rfind(n).map_or(-1, |p| p as i64);
        let in_backup =
            pos("PostgreSQL base backup started") > pos("backup done").max(pos("backup failed"));
        let ready = std::fs::read_dir(vol.join("pgdata/pg_wal/archive_status")).map_or(0, |d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".ready"))
                .count()
        });
        kills_in_backup += usize::from(in_backup);
        kills_with_wal_pending += usize::from(ready > 0);
        println!(
            "PG_DRILL cycle {cycle}: SIGKILL to every process after {run} s of writes (during a base backup: {in_backup}; WAL files not yet archived: {ready})"
        );
        vol = t.path().join(format!("vol{}", cycle + 1));
        new_volume(&vol);
        // The socket directory of a dead server holds a stale lock file: a new lease has none.
        env.clear_sockets();
    }
    let arch = std::fs::read_dir(env.repo.join("wal")).map_or(0, |d| {
        d.flatten()
            .map(|v| std::fs::read_dir(v.path()).map_or(0, |f| f.count()))
            .sum::<usize>()
    });
    println!(
        "PG_DRILL summary: seed {seed}, kills {kills} ({kills_in_backup} during a base backup, {kills_with_wal_pending} with WAL waiting to be archived), recoveries started {}, amcheck clean {}, acknowledged rows lost {lost_total} (worst {worst_loss:.1} s before the kill; archive_timeout {ARCHIVE_TIMEOUT} s), restore+recovery seconds {:?}, longest ledger transaction {:.3} s, WAL objects {arch}",
        restore_secs.len(),
        restore_secs.len(),
        restore_secs
            .iter()
            .map(|s| format!("{s:.1}"))
            .collect::<Vec<_>>(),
        worst_latency
    );
    assert_eq!(restore_secs.len(), kills);
}

fn graceful_and_pitr(
    env: &Env,
    mut agent: Child,
    listen: u16,
    acked: &Arc<Mutex<Vec<(i64, SystemTime)>>>,
    rng: &mut Rng,
    base: &Path,
) {
    let _ = listen;
    let writer = Writer::start(env, acked.clone());
    // Past at least one scheduled base backup, so one is older than the target.
    std::thread::sleep(Duration::from_secs(25 + rng.range(0, 5)));
    let mut c = env.client().unwrap();
    c.batch_execute("CREATE TABLE IF NOT EXISTS marks (m text)")
        .unwrap();
    c.batch_execute("INSERT INTO marks VALUES ('A')").unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let target = chrono::Utc::now();
    std::thread::sleep(Duration::from_millis(1500));
    c.batch_execute("INSERT INTO marks VALUES ('B')").unwrap();
    let stall = writer.stop();
    println!(
        "PG_DRILL stall: longest ledger commit {stall:.3} s over 25+ s spanning a scheduled base backup, without pgbench"
    );
    drop(c);
    // Past archive_timeout: B's segment is archived.
    std::thread::sleep(Duration::from_secs(ARCHIVE_TIMEOUT + 3));
    // SIGTERM to lifeboat itself (PID 1 of the namespace; unshare ignores SIGTERM).
    // SAFETY: signalling the agent this test started.
    unsafe { libc::kill(inner_pid(&agent), libc::SIGTERM) };
    let st = agent.wait().unwrap();
    assert!(st.success(), "graceful stop: {st}: {}", log_tail(env));
    let stopped = SystemTime::now();

    let vol = base.join("vol-graceful");
    new_volume(&vol);
    env.clear_sockets();
    let listen = free_port();
    // No schedule: the idle measurement below must see only what PostgreSQL itself archives.
    let mut agent = env.start(&vol, listen, &[("LIFEBOAT_SCHEDULE", "off")]);
    let secs = wait_ready(env, &mut agent, listen, Duration::from_secs(240));
    let have: std::collections::HashSet<i64> = env
        .client()
        .unwrap()
        .query("SELECT id FROM ledger", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let lost = acked
        .lock()
        .unwrap()
        .iter()
        .filter(|(id, _)| !have.contains(id))
        .count();
    assert_eq!(lost, 0, "the graceful path lost acknowledged rows");
    amcheck(env);
    println!(
        "PG_DRILL graceful: SIGTERM, new volume restored and ready in {secs:.1} s, acknowledged rows lost 0 of {}",
        acked.lock().unwrap().len()
    );
    let _ = stopped;
    // An idle database: after the start-up base backup, how many WAL objects per minute?
    std::thread::sleep(Duration::from_secs(5));
    let before = wal_objects(&env.repo);
    let idle = 3 * ARCHIVE_TIMEOUT + 2;
    std::thread::sleep(Duration::from_secs(idle));
    let after = wal_objects(&env.repo);
    let mut sizes: Vec<u64> = after.iter().map(|(_, s)| *s).collect();
    sizes.sort();
    println!(
        "PG_DRILL idle: {} WAL object(s) archived in {idle} s of an idle database (archive_timeout {ARCHIVE_TIMEOUT} s); stored WAL objects: {} , median {} bytes, largest {} bytes",
        after.len() - before.len(),
        sizes.len(),
        sizes.get(sizes.len() / 2).copied().unwrap_or(0),
        sizes.last().copied().unwrap_or(0)
    );
    // A server that switched segments on every archive_timeout would archive three here;
    // autovacuum waking up may write one or two by itself.
    assert!(
        after.len() - before.len() < 3,
        "an idle database kept archiving: {} objects in {idle} s",
        after.len() - before.len()
    );
    // SAFETY: stopping the agent this test started.
    unsafe { libc::kill(inner_pid(&agent), libc::SIGTERM) };
    let _ = agent.wait();

    // Point in time: between A and B.
    let pitr = base.join("pitr");
    let out = common::lifeboat(&env.repo)
        .env("LIFEBOAT_NAME", NAME)
        .env("LIFEBOAT_CACHE_DIR", base.join("cache"))
        .args(["restore", "latest", "--to-time"])
        .arg(target.to_rfc3339())
        .arg("--target")
        .arg(&pitr)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "restore --to-time: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::set_permissions(&pitr, std::fs::Permissions::from_mode(0o755)).unwrap();
    env.clear_sockets();
    let mut server = as_pg(&env.bindir.join("postgres"))
        .arg("-D")
        .arg(pitr.join("pgdata"))
        .arg("-k")
        .arg(&env.sock)
        .args(["-p", &env.port.to_string(), "-c", "listen_addresses="])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("LC_ALL", "C")
        .env("LIFEBOAT_REPOSITORY", &env.repo)
        .env("LIFEBOAT_PASSWORD", PASSWORD)
        .env("LIFEBOAT_CACHE_DIR", base.join("cache-pitr"))
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::File::create(base.join("pitr.log")).unwrap(),
        ))
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    let marks = loop {
        if let Ok(mut c) = env.client()
            && let Ok(r) = c.query_one("SELECT pg_is_in_recovery()", &[])
            && !r.get::<_, bool>(0)
        {
            let rows: Vec<String> = c
                .query("SELECT m FROM marks ORDER BY m", &[])
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect();
            break rows;
        }
        if let Some(st) = server.try_wait().unwrap() {
            panic!(
                "PITR server exited ({st}): {}",
                std::fs::read_to_string(base.join("pitr.log")).unwrap_or_default()
            );
        }
        assert!(
            t0.elapsed() < Duration::from_secs(180),
            "PITR recovery did not finish"
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    // SAFETY: stopping the server this test started.
    unsafe { libc::kill(server.id() as i32, libc::SIGINT) };
    let _ = server.wait();
    assert_eq!(
        marks,
        vec!["A".to_string()],
        "point-in-time restore to {target}"
    );
    println!(
        "PG_DRILL pitr: restored to {target} (between A and B) in {:.1} s: exactly A",
        t0.elapsed().as_secs_f64()
    );

    // The same through the gate: a new lease with LIFEBOAT_RESTORE_TO_TIME.
    let vol = base.join("vol-pitr-gate");
    new_volume(&vol);
    env.clear_sockets();
    let listen = free_port();
    let when = target.to_rfc3339();
    let mut agent = env.start(
        &vol,
        listen,
        &[
            ("LIFEBOAT_SCHEDULE", "off"),
            ("LIFEBOAT_BACKUP_ON_START", "false"),
            ("LIFEBOAT_RESTORE_TO_TIME", when.as_str()),
        ],
    );
    let secs = wait_ready(env, &mut agent, listen, Duration::from_secs(240));
    let marks: Vec<String> = env
        .client()
        .unwrap()
        .query("SELECT m FROM marks ORDER BY m", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    // SAFETY: stopping the agent this test started.
    unsafe { libc::kill(inner_pid(&agent), libc::SIGTERM) };
    let _ = agent.wait();
    assert_eq!(
        marks,
        vec!["A".to_string()],
        "LIFEBOAT_RESTORE_TO_TIME={when}"
    );
    println!(
        "PG_DRILL pitr via the gate (LIFEBOAT_RESTORE_TO_TIME): ready in {secs:.1} s: exactly A"
    );
}
