//! The SQLite drill (issue 18): `examples/sqlite_writer` commits numbered rows to a WAL-mode
//! database, one row per transaction (as fast as it can on odd leases, every 10 ms on even ones;
//! every third lease it also runs `PRAGMA wal_checkpoint(TRUNCATE)` itself every 200 commits),
//! as the app under `lifeboat run` with LIFEBOAT_METHOD=sqlite: base copies on a schedule, the
//! WAL replicated every LIFEBOAT_SQLITE_SYNC_INTERVAL (1 s), lifeboat's own checkpoints every
//! 200 pages. At a random moment every process is SIGKILLed at once (the PID namespace's init
//! dies: the provider vanished) and the next lease starts on a new, empty volume. After each kill
//! `lifeboat restore latest` must give a database that passes `PRAGMA integrity_check`, holds
//! exactly the rows 1..=max (no holes), and holds every row the writer logged as committed more
//! than the sync interval + 2 s before the kill; the agent's own restore on the next lease must
//! bring back the same rows. Then the graceful path (SIGTERM) must lose nothing, and a
//! point-in-time restore to a moment between two known commits must return exactly the first.
//!
//! Short tier (in `cargo test`): 30 kills. Full tier:
//! `LIFEBOAT_SQLITE_DRILL_KILLS=100 cargo test --release --test sqlite_drill -- --nocapture`
//! (a `--test` selection does not build the examples: build the writer first with
//! `cargo build --release --example sqlite_writer`, or run plain `cargo test --release`). Seed:
//! LIFEBOAT_DRILL_SEED (default 18). Figures are printed as `SQLITE_DRILL` lines.
//!
//! Each kill is classified by the agent's log before it: during a checkpoint (the last
//! `sqlite checkpoint begins` has no `sqlite checkpoint done` after it), during a base copy (the
//! last `sqlite base copy begins` has no `backup done` or `backup failed` after it: the copy or
//! the backup that stores it is in flight; backups run every 3 s). Two leases in three aim their kill at one of
//! them (killing at the first moment, within the lease's random run time, when the log shows one
//! in progress); the counts are reported, never asserted (they are probabilistic).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{PASSWORD, Rng, cli_init, free_port};

const NAME: &str = "sqlitedrill";
/// LIFEBOAT_SQLITE_SYNC_INTERVAL, seconds.
const SYNC_S: u64 = 1;
/// Slack on top of the sync interval before an acknowledged row must be in the repository.
const MARGIN_S: u64 = 2;
/// The writer's blob per row: smaller than its default, so 30 restores of a database that grows
/// by every fast lease stay quick.
const PAD: &str = "100";
const DB: &str = "app/db.sqlite3";

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

fn http_get(listen: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", listen)).ok()?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .ok()?;
    let mut r = String::new();
    let _ = s.read_to_string(&mut r);
    Some(r)
}

fn ready(listen: u16) -> bool {
    http_get(listen, "/readyz")
        .is_some_and(|r| r.starts_with("HTTP/1.0 200") || r.starts_with("HTTP/1.1 200"))
}

/// The largest value of the Prometheus series `name` (over its labels) in `text`.
fn metric_max(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let value = if rest.starts_with('{') {
                rest.rsplit_once('}')?.1
            } else if rest.starts_with(' ') {
                rest
            } else {
                return None;
            };
            value.split_whitespace().next()?.parse::<f64>().ok()
        })
        .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))))
}

fn log_tail(path: &Path) -> String {
    let l = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = l.lines().collect();
    format!(
        "--- {} (last 40 lines) ---\n{}",
        path.display(),
        lines[lines.len().saturating_sub(40)..].join("\n")
    )
}

/// lifeboat's pid: the one child of `unshare`.
fn inner_pid(unshare: &Child) -> i32 {
    let p = format!("/proc/{0}/task/{0}/children", unshare.id());
    let text = std::fs::read_to_string(&p).unwrap();
    text.split_whitespace().next().unwrap().parse().unwrap()
}

/// `pid` and every process below it (children of any of its threads).
fn family(pid: i32) -> Vec<i32> {
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        for t in std::fs::read_dir(format!("/proc/{p}/task"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let kids = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            for c in kids.split_whitespace().filter_map(|c| c.parse().ok()) {
                if !out.contains(&c) {
                    out.push(c);
                }
            }
        }
        i += 1;
    }
    out
}

/// Gone or a zombie: it writes nothing any more.
fn dead(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(s) => s
            .rsplit_once(')')
            .is_none_or(|(_, r)| r.trim_start().starts_with(['Z', 'X'])),
    }
}

fn wait_exit(child: &mut Child, limit: Duration, what: &str, alog: &Path) -> ExitStatus {
    let t = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        if t.elapsed() > limit {
            // SAFETY: SIGKILL to the unshare process this test started.
            unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
            let _ = child.wait();
            panic!("{what}: not exited after {limit:?}\n{}", log_tail(alog));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Position of the last `needle` in `log`, -1 if none.
fn last(log: &str, needle: &str) -> i64 {
    log.rfind(needle).map_or(-1, |p| p as i64)
}

fn in_checkpoint(log: &str) -> bool {
    last(log, "sqlite checkpoint begins") > last(log, "sqlite checkpoint done")
}

/// A base copy is being taken or the backup holding it is not committed yet (killing there
/// leaves the previous snapshot and the replicated log to restore from).
fn in_base_copy(log: &str) -> bool {
    let begun = last(log, "sqlite base copy begins");
    begun > last(log, "backup done") && begun > last(log, "backup failed")
}

/// One acknowledged commit from the writer's log.
#[derive(Clone, Copy, Debug)]
struct Commit {
    n: i64,
    at_ms: u64,
    latency_us: u64,
}

/// The writer's log: its commits, and its own TRUNCATE checkpoints as `[busy, log,
/// checkpointed, ms since the commit before it]` (how long the checkpoint held the app up). A
/// line cut short by the kill (no newline yet) is not a commit.
fn read_writer_log(path: &Path) -> (Vec<Commit>, Vec<[i64; 4]>) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
    let (mut commits, mut ckpts) = (Vec::new(), Vec::new());
    for line in complete.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.first() == Some(&"ckpt") && f.len() == 5 {
            let v: Vec<i64> = f[1..].iter().map(|x| x.parse().unwrap_or(-1)).collect();
            let held = commits.last().map_or(0, |c: &Commit| v[0] - c.at_ms as i64);
            ckpts.push([v[1], v[2], v[3], held]);
            continue;
        }
        let parsed = (f.len() == 3)
            .then(|| {
                Some((
                    f[0].parse::<i64>().ok()?,
                    f[1].parse::<u64>().ok()?,
                    f[2].parse::<u64>().ok()?,
                ))
            })
            .flatten();
        let Some((n, at_ms, latency_us)) = parsed else {
            panic!("{}: malformed line {line:?}", path.display());
        };
        commits.push(Commit {
            n,
            at_ms,
            latency_us,
        });
    }
    (commits, ckpts)
}

/// What a restored database holds (after `integrity_check` said "ok" and its rows were found
/// to be exactly 1..=max).
struct DbState {
    max: i64,
    bytes: u64,
}

fn check_db(dir: &Path, what: &str) -> DbState {
    let path = dir.join(DB);
    assert!(
        path.is_file(),
        "{what}: no database at {} after the restore",
        path.display()
    );
    let bytes = [path.clone(), dir.join(format!("{DB}-wal"))]
        .iter()
        .map(|p| std::fs::metadata(p).map_or(0, |m| m.len()))
        .sum::<u64>();
    let c = rusqlite::Connection::open(&path)
        .unwrap_or_else(|e| panic!("{what}: opening {}: {e}", path.display()));
    let mut stmt = c
        .prepare("PRAGMA integrity_check")
        .unwrap_or_else(|e| panic!("{what}: PRAGMA integrity_check: {e}"));
    let integrity: Vec<String> = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
        .unwrap_or_else(|e| panic!("{what}: PRAGMA integrity_check: {e}"));
    drop(stmt);
    assert_eq!(
        integrity,
        vec!["ok".to_string()],
        "{what}: PRAGMA integrity_check of {}",
        path.display()
    );
    let (count, min, max): (i64, i64, i64) = c
        .query_row(
            "SELECT count(*), coalesce(min(n), 0), coalesce(max(n), 0) FROM t",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap_or_else(|e| panic!("{what}: reading table t: {e}"));
    assert!(
        count == max && (max == 0 || min == 1),
        "{what}: the rows are not exactly 1..={max}: {count} rows, n from {min} to {max}"
    );
    DbState { max, bytes }
}

struct Lease {
    child: Child,
    listen: u16,
    vol: PathBuf,
    alog: PathBuf,
    wlog: PathBuf,
    ready_s: f64,
}

struct Drill {
    base: PathBuf,
    repo: PathBuf,
    writer: PathBuf,
}

impl Drill {
    /// A new lease on a new, empty volume `vol-LABEL`: `lifeboat run -- sqlite_writer …` in a PID
    /// namespace of its own (killing the returned unshare kills every process in it at once),
    /// waited on until /readyz answers 200.
    fn lease(&self, label: &str, writer_args: &[&str]) -> Lease {
        self.lease_with(label, writer_args, &[])
    }

    /// [`Drill::lease`] with extra agent settings.
    fn lease_with(&self, label: &str, writer_args: &[&str], env: &[(&str, &str)]) -> Lease {
        let vol = self.base.join(format!("vol-{label}"));
        std::fs::create_dir_all(&vol).unwrap();
        let alog = self.base.join(format!("agent-{label}.log"));
        let wlog = self.base.join(format!("writer-{label}.log"));
        let listen = free_port();
        let child = Command::new("unshare")
            .args(["--pid", "--fork", "--kill-child", "--"])
            .arg(env!("CARGO_BIN_EXE_lifeboat"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("LC_ALL", "C")
            .env("LIFEBOAT_REPOSITORY", &self.repo)
            .env("LIFEBOAT_PASSWORD", PASSWORD)
            .env("LIFEBOAT_PATH", &vol)
            .env("LIFEBOAT_NAME", NAME)
            .env("LIFEBOAT_CACHE_DIR", self.base.join("cache"))
            .env("LIFEBOAT_LISTEN", format!("127.0.0.1:{listen}"))
            .env("LIFEBOAT_SCHEDULE", "@every 3s")
            .env("LIFEBOAT_BACKUP_ON_START", "true")
            .env("LIFEBOAT_LEASE_TTL", "4s")
            .env("LIFEBOAT_LEASE_WAIT", "2m")
            .env("LIFEBOAT_METHOD", "sqlite")
            .env("LIFEBOAT_SQLITE", vol.join(DB))
            .env("LIFEBOAT_SQLITE_SYNC_INTERVAL", format!("{SYNC_S}s"))
            .env("LIFEBOAT_SQLITE_CHECKPOINT_PAGES", "200")
            .envs(env.iter().copied())
            .arg("run")
            .arg("--")
            .arg(&self.writer)
            .arg("--db")
            .arg(vol.join(DB))
            .arg("--log")
            .arg(&wlog)
            .args(["--pad", PAD])
            .args(writer_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(&alog).unwrap()))
            .spawn()
            .unwrap();
        let mut lease = Lease {
            child,
            listen,
            vol,
            alog,
            wlog,
            ready_s: 0.0,
        };
        let t = Instant::now();
        let limit = Duration::from_secs(60);
        while !ready(listen) {
            if let Some(st) = lease.child.try_wait().unwrap() {
                panic!(
                    "lease {label}: agent exited ({st}) before ready\n{}",
                    log_tail(&lease.alog)
                );
            }
            if t.elapsed() > limit {
                // SAFETY: SIGKILL to the unshare process this test started.
                unsafe { libc::kill(lease.child.id() as i32, libc::SIGKILL) };
                let _ = lease.child.wait();
                panic!(
                    "lease {label}: not ready after {limit:?}\n{}",
                    log_tail(&lease.alog)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        lease.ready_s = t.elapsed().as_secs_f64();
        lease
    }

    /// `lifeboat restore latest --name NAME --target DIR [--to-time T]`: must exit 0. Returns its
    /// output and how long it took.
    fn restore(&self, target: &Path, to_time: Option<&str>, what: &str) -> (String, f64) {
        let t = Instant::now();
        let mut c = common::lifeboat(&self.repo);
        c.env("LIFEBOAT_NAME", NAME)
            .env("LIFEBOAT_CACHE_DIR", self.base.join("cache-cli"))
            .args(["restore", "latest", "--name", NAME, "--target"])
            .arg(target);
        if let Some(t) = to_time {
            c.args(["--to-time", t]);
        }
        let out = c.output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "{what}: lifeboat restore latest{} exited {}: {text}",
            to_time
                .map(|t| format!(" --to-time {t}"))
                .unwrap_or_default(),
            out.status
        );
        (text, t.elapsed().as_secs_f64())
    }
}

/// Waits until `wlog` has at least `n` commits.
fn wait_commits(lease: &mut Lease, n: usize, limit: Duration) -> Vec<Commit> {
    let t = Instant::now();
    loop {
        let (c, _) = read_writer_log(&lease.wlog);
        if c.len() >= n {
            return c;
        }
        if let Some(st) = lease.child.try_wait().unwrap() {
            panic!(
                "agent exited ({st}) before the writer logged {n} commits\n{}",
                log_tail(&lease.alog)
            );
        }
        assert!(
            t.elapsed() < limit,
            "the writer logged {} of {n} commits in {limit:?}\n{}",
            c.len(),
            log_tail(&lease.alog)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// SIGTERM to lifeboat itself (PID 1 of the namespace; unshare ignores SIGTERM): it stops the
/// writer and takes its final backup. Must exit 0.
fn stop_gracefully(lease: &mut Lease, what: &str) -> f64 {
    let t = Instant::now();
    // SAFETY: signalling the agent this test started.
    unsafe { libc::kill(inner_pid(&lease.child), libc::SIGTERM) };
    let st = wait_exit(
        &mut lease.child,
        Duration::from_secs(120),
        what,
        &lease.alog,
    );
    assert!(
        st.success(),
        "{what}: graceful stop exited {st}\n{}",
        log_tail(&lease.alog)
    );
    t.elapsed().as_secs_f64()
}

/// The new lease's writer began right after the rows the previous restore gave: the agent's
/// restore onto the empty volume brought back exactly what `lifeboat restore latest` did.
fn assert_continues(commits: &[Commit], max_restored: i64, lease: &Lease, label: &str) {
    if let Some(first) = commits.first() {
        assert_eq!(
            first.n,
            max_restored + 1,
            "lease {label}: the writer began at row {} but `lifeboat restore latest` gave rows 1..={max_restored}: the agent's restore onto the empty volume differs\n{}",
            first.n,
            log_tail(&lease.alog)
        );
    }
}

#[test]
fn sqlite_survives_kills_and_restores_to_a_point_in_time() {
    let writer = Path::new(env!("CARGO_BIN_EXE_lifeboat"))
        .with_file_name("examples")
        .join("sqlite_writer");
    assert!(
        writer.is_file(),
        "{} is missing: `cargo test` builds the examples, a `--test sqlite_drill` selection does not; run `cargo build [--release] --example sqlite_writer` first",
        writer.display()
    );
    let kills: usize = std::env::var("LIFEBOAT_SQLITE_DRILL_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let seed: u64 = std::env::var("LIFEBOAT_DRILL_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(18);
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let t = tempfile::tempdir().unwrap();
    let drill = Drill {
        base: t.path().to_path_buf(),
        repo: t.path().join("repo"),
        writer,
    };
    cli_init(&drill.repo);
    let began = Instant::now();

    // Every acknowledged commit still expected in the repository: row → commit time (ms).
    let mut record: BTreeMap<i64, u64> = BTreeMap::new();
    let mut max_restored: i64 = 0;
    let mut integrity_ok = 0usize;
    let (mut during_checkpoint, mut during_base_copy) = (0usize, 0usize);
    let mut worst_loss_s = 0f64;
    let mut max_latency_us = 0u64;
    let mut slow_writes = 0usize; // commits over 100 ms
    let mut commits_total = 0usize;
    let (mut app_ckpts, mut app_ckpts_busy, mut app_ckpt_ms) = (0usize, 0usize, 0i64);
    let mut worst_lag: Option<f64> = None;
    let mut restore_secs: Vec<f64> = Vec::new();
    let mut ready_secs: Vec<f64> = Vec::new();
    let mut tally = |commits: &[Commit], ckpts: &[[i64; 4]]| {
        for c in commits {
            max_latency_us = max_latency_us.max(c.latency_us);
            slow_writes += usize::from(c.latency_us > 100_000);
        }
        commits_total += commits.len();
        app_ckpts += ckpts.len();
        app_ckpts_busy += ckpts.iter().filter(|c| c[0] != 0).count();
        app_ckpt_ms = app_ckpt_ms.max(ckpts.iter().map(|c| c[3]).max().unwrap_or(0));
    };

    for k in 1..=kills {
        let label = k.to_string();
        let fast = k % 2 == 1;
        let mut mode: Vec<&str> = Vec::new();
        if !fast {
            mode.extend(["--interval-ms", "10"]);
        }
        if k % 3 == 0 {
            mode.extend(["--truncate-every", "200"]);
        }
        let mut lease = drill.lease(&label, &mode);
        ready_secs.push(lease.ready_s);
        if k == 1 {
            // Nothing to restore from yet: the first kill must come after a snapshot holding a
            // base copy of the database.
            let t0 = Instant::now();
            loop {
                let log = std::fs::read_to_string(&lease.alog).unwrap_or_default();
                let copied = last(&log, "sqlite base copy done");
                if copied >= 0 && last(&log, "backup done") > copied {
                    break;
                }
                if let Some(st) = lease.child.try_wait().unwrap() {
                    panic!("lease 1: agent exited ({st})\n{}", log_tail(&lease.alog));
                }
                assert!(
                    t0.elapsed() < Duration::from_secs(60),
                    "lease 1: no `sqlite base copy done` then `backup done` in 60 s\n{}",
                    log_tail(&lease.alog)
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }

        // Run for a random 1.5–5 s. Leases 1, 4, 7… kill as soon as a checkpoint is in progress
        // after 1.5 s, leases 2, 5, 8… as soon as a base copy is; the rest at the random moment.
        let run_ms = rng.range(1500, 5001);
        let aim = k % 3;
        let t0 = Instant::now();
        let mut scraped = false;
        loop {
            let el = t0.elapsed().as_millis() as u64;
            if el >= run_ms {
                break;
            }
            if !scraped && el >= run_ms / 2 {
                scraped = true;
                if let Some(m) = http_get(lease.listen, "/metrics")
                    && let Some(lag) = metric_max(&m, "lifeboat_sqlite_replication_lag_seconds")
                {
                    worst_lag = Some(worst_lag.map_or(lag, |w| w.max(lag)));
                }
            }
            if aim != 0 && el >= 1500 {
                let log = std::fs::read_to_string(&lease.alog).unwrap_or_default();
                if (aim == 1 && in_checkpoint(&log)) || (aim == 2 && in_base_copy(&log)) {
                    break;
                }
            }
            if let Some(st) = lease.child.try_wait().unwrap() {
                panic!(
                    "lease {k}: agent exited ({st}) while the writer ran\n{}",
                    log_tail(&lease.alog)
                );
            }
            std::thread::sleep(Duration::from_millis(if aim == 0 { 20 } else { 5 }));
        }
        let ran = t0.elapsed().as_secs_f64();
        let procs = family(inner_pid(&lease.child));
        // SAFETY: SIGKILL to the unshare process this test started: its namespace dies with it.
        unsafe { libc::kill(lease.child.id() as i32, libc::SIGKILL) };
        let killed = SystemTime::now();
        let _ = lease.child.wait();
        let t1 = Instant::now();
        while !procs.iter().all(|p| dead(*p)) {
            assert!(
                t1.elapsed() < Duration::from_secs(10),
                "lease {k}: processes {procs:?} survived the namespace's SIGKILL"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let kill_ms = unix_ms(killed);

        // What the kill interrupted.
        let log = std::fs::read_to_string(&lease.alog).unwrap_or_default();
        let (ckpt, copy) = (in_checkpoint(&log), in_base_copy(&log));
        during_checkpoint += usize::from(ckpt);
        during_base_copy += usize::from(copy);

        let (commits, ckpts) = read_writer_log(&lease.wlog);
        assert_continues(&commits, max_restored, &lease, &label);
        tally(&commits[..], &ckpts[..]);
        for c in &commits {
            record.insert(c.n, c.at_ms);
        }

        // A new machine restores what the repository holds.
        let check = drill.base.join(format!("check-{k}"));
        let what = format!("kill {k}");
        let (_, secs) = drill.restore(&check, None, &what);
        restore_secs.push(secs);
        let db = check_db(&check, &what);
        integrity_ok += 1;
        let due = kill_ms.saturating_sub((SYNC_S + MARGIN_S) * 1000);
        let missing: Vec<(i64, u64)> = record.range(db.max + 1..).map(|(n, t)| (*n, *t)).collect();
        let late: Vec<&(i64, u64)> = missing.iter().filter(|(_, t)| *t < due).collect();
        assert!(
            late.is_empty(),
            "{what}: {} acknowledged row(s) committed more than {} s before the kill are lost (the restore holds 1..={}); the oldest: row {} committed {:.2} s before the kill\n{}",
            late.len(),
            SYNC_S + MARGIN_S,
            db.max,
            late[0].0,
            kill_ms.saturating_sub(late[0].1) as f64 / 1000.0,
            log_tail(&lease.alog)
        );
        // The recovery point: everything committed since the oldest lost row is gone.
        let loss_s = missing
            .first()
            .map_or(0.0, |(_, t)| kill_ms.saturating_sub(*t) as f64 / 1000.0);
        worst_loss_s = worst_loss_s.max(loss_s);
        // Rows past the recovery point are gone for good; the next lease reuses their numbers.
        record.retain(|n, _| *n <= db.max);
        max_restored = db.max;
        println!(
            "SQLITE_DRILL kill {k}/{kills}: {} writer{}, ready {:.1} s, SIGKILL after {ran:.1} s (during a checkpoint: {ckpt}; during a base copy: {copy}), {} commits logged; restore {secs:.1} s: integrity ok, rows 1..={}, {} logged row(s) lost, loss {loss_s:.2} s, database {:.1} MiB",
            if fast { "fast" } else { "10 ms" },
            if k % 3 == 0 {
                " + app TRUNCATE checkpoints"
            } else {
                ""
            },
            lease.ready_s,
            commits.len(),
            db.max,
            missing.len(),
            db.bytes as f64 / 1048576.0
        );
        // The abandoned volume and the check copy: nothing may depend on them.
        let _ = std::fs::remove_dir_all(&check);
        let _ = std::fs::remove_dir_all(&lease.vol);
    }

    // The graceful path: SIGTERM loses nothing.
    let mut lease = drill.lease("graceful", &[]);
    ready_secs.push(lease.ready_s);
    std::thread::sleep(Duration::from_secs(3));
    let metrics = http_get(lease.listen, "/metrics").unwrap_or_default();
    let lag = metric_max(&metrics, "lifeboat_sqlite_replication_lag_seconds");
    let newest = metric_max(
        &metrics,
        "lifeboat_sqlite_last_replicated_timestamp_seconds",
    );
    assert!(
        lag.is_some() && newest.is_some(),
        "/metrics lacks lifeboat_sqlite_replication_lag_seconds or lifeboat_sqlite_last_replicated_timestamp_seconds:\n{metrics}"
    );
    let scraped_at = unix_ms(SystemTime::now()) as f64 / 1000.0;
    let stop_s = stop_gracefully(&mut lease, "graceful lease");
    let (commits, ckpts) = read_writer_log(&lease.wlog);
    assert_continues(&commits, max_restored, &lease, "graceful");
    assert!(
        !commits.is_empty(),
        "the graceful lease's writer logged nothing"
    );
    tally(&commits[..], &ckpts[..]);
    for c in &commits {
        record.insert(c.n, c.at_ms);
    }
    let check = drill.base.join("check-graceful");
    let (_, secs) = drill.restore(&check, None, "graceful");
    let db = check_db(&check, "graceful");
    let lost = record.range(db.max + 1..).count();
    assert_eq!(
        lost,
        0,
        "the graceful path lost acknowledged rows: the restore holds 1..={}, the writer logged up to {}",
        db.max,
        record.keys().next_back().copied().unwrap_or(0)
    );
    max_restored = db.max;
    println!(
        "SQLITE_DRILL graceful: {} commits in 3 s, metrics lag {:.2} s and newest replicated change {:.1} s old at 3 s, SIGTERM to exit {stop_s:.1} s, restore {secs:.1} s: integrity ok, rows 1..={}, acknowledged rows lost 0",
        commits.len(),
        lag.unwrap_or(f64::NAN),
        scraped_at - newest.unwrap_or(f64::NAN),
        db.max
    );
    let _ = std::fs::remove_dir_all(&check);
    let _ = std::fs::remove_dir_all(&lease.vol);

    // Point in time: two commits 4 s apart, a restore to the moment between them.
    let mut lease = drill.lease("pitr", &["--rows", "2", "--gap-ms", "4000"]);
    ready_secs.push(lease.ready_s);
    let commits = wait_commits(&mut lease, 2, Duration::from_secs(60));
    // Past the sync interval: B is replicated.
    std::thread::sleep(Duration::from_secs(3));
    stop_gracefully(&mut lease, "point-in-time lease");
    let (commits_all, ckpts) = read_writer_log(&lease.wlog);
    assert_eq!(
        commits_all.len(),
        2,
        "the --rows 2 writer logged {commits_all:?}"
    );
    assert_continues(&commits, max_restored, &lease, "pitr");
    tally(&commits_all[..], &ckpts[..]);
    let (a, b) = (commits[0], commits[1]);
    assert_eq!(b.n, a.n + 1);
    let mid = a.at_ms + (b.at_ms - a.at_ms) / 2;
    let target = chrono::DateTime::from_timestamp_millis(mid as i64)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let pitr = drill.base.join("pitr");
    let (said, secs) = drill.restore(&pitr, Some(&target), "point-in-time restore");
    let at = check_db(&pitr, &format!("restore --to-time {target}"));
    assert_eq!(
        at.max, a.n,
        "restore --to-time {target} (between row {} committed at {} ms and row {} at {} ms) must give exactly the rows up to {}; lifeboat said: {said}",
        a.n, a.at_ms, b.n, b.at_ms, a.n
    );
    println!(
        "SQLITE_DRILL pitr: restored to {target} (row {} committed {:.2} s before, row {} {:.2} s after) in {secs:.1} s: rows 1..={}, exactly up to the first; lifeboat said: {}",
        a.n,
        (mid - a.at_ms) as f64 / 1000.0,
        b.n,
        (b.at_ms - mid) as f64 / 1000.0,
        at.max,
        said.trim().replace('\n', " | ")
    );
    let newest = drill.base.join("pitr-latest");
    drill.restore(&newest, None, "restore after the point-in-time lease");
    let now = check_db(&newest, "restore after the point-in-time lease");
    assert_eq!(
        now.max, b.n,
        "without --to-time the restore must give every row up to {}",
        b.n
    );

    // The same through the gate: a new lease with LIFEBOAT_RESTORE_TO_TIME (its writer commits
    // nothing), whose volume must hold exactly A; its final backup then makes A the newest.
    let mut lease = drill.lease_with(
        "pitr-gate",
        &["--rows", "0"],
        &[("LIFEBOAT_RESTORE_TO_TIME", target.as_str())],
    );
    ready_secs.push(lease.ready_s);
    let gate = check_db(&lease.vol, "the gate's LIFEBOAT_RESTORE_TO_TIME restore");
    assert_eq!(
        gate.max, a.n,
        "LIFEBOAT_RESTORE_TO_TIME={target} on a new lease must give exactly the rows up to {}",
        a.n
    );
    stop_gracefully(&mut lease, "point-in-time gate lease");
    println!(
        "SQLITE_DRILL pitr via the gate (LIFEBOAT_RESTORE_TO_TIME): ready in {:.1} s: rows 1..={}, exactly A",
        lease.ready_s, gate.max
    );
    let _ = std::fs::remove_dir_all(&lease.vol);
    max_restored = gate.max;

    let restore_avg = restore_secs.iter().sum::<f64>() / restore_secs.len().max(1) as f64;
    let restore_max = restore_secs.iter().copied().fold(0f64, f64::max);
    let ready_max = ready_secs.iter().copied().fold(0f64, f64::max);
    println!(
        "SQLITE_DRILL summary: seed {seed}, {commits_total} commits logged, app TRUNCATE checkpoints {app_ckpts} ({app_ckpts_busy} busy, the longest held the app {app_ckpt_ms} ms), writes over 100 ms {slow_writes}, restore after a kill {restore_avg:.1} s on average (longest {restore_max:.1} s), lease ready in at most {ready_max:.1} s, highest replication lag seen in /metrics {}, wall time {:.0} s",
        worst_lag.map_or("-".to_string(), |l| format!("{l:.2} s")),
        began.elapsed().as_secs_f64()
    );
    println!(
        "SQLITE_DRILL kills={kills} integrity_ok={integrity_ok} during_checkpoint={during_checkpoint} during_base_copy={during_base_copy} worst_loss_s={worst_loss_s:.2} max_write_latency_ms={:.1} rows={max_restored}",
        max_latency_us as f64 / 1000.0
    );
    assert_eq!(integrity_ok, kills);
}
