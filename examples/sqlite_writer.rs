//! The app of the SQLite drill (`tests/sqlite_drill.rs`, issue 18): an ordinary SQLite program in
//! WAL mode that commits numbered rows, one row per transaction, and leaves its own checkpointing
//! to SQLite (wal_autocheckpoint stays at its default), optionally adding its own
//! `PRAGMA wal_checkpoint(TRUNCATE)`. It runs as the app under `lifeboat run` and knows nothing
//! about lifeboat; after each commit it appends `n unix_millis_after_commit latency_micros` to a
//! log outside the volume, so the drill knows which rows were acknowledged, and when, before it
//! SIGKILLed everything.
//!
//! ```text
//! sqlite_writer --db PATH --log PATH [--interval-ms N] [--truncate-every N] [--pad BYTES]
//!               [--rows N] [--gap-ms G]
//! ```
//!
//! - `--interval-ms N`: sleep N ms between commits (default 0: as fast as possible).
//! - `--truncate-every N`: every N commits run `PRAGMA wal_checkpoint(TRUNCATE)` and log
//!   `ckpt unix_millis busy log checkpointed` (default 0: never).
//! - `--pad BYTES`: size of each row's random blob (default 200).
//! - `--rows N`: commit exactly N rows, then idle until SIGTERM/SIGINT (for the point-in-time
//!   part of the drill); `--gap-ms G` is the sleep between those rows (same as `--interval-ms`).
//!
//! The first row is `max(n) + 1` of the database as found (a restored one continues its
//! numbering). A busy/locked error retries the same row, so numbers are never skipped; the
//! latency logged for a row includes its retries. SIGTERM or SIGINT ends it with exit code 0.
//! No fsync of the log: in the drill only processes die, never the kernel.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, ErrorCode, params};

struct Args {
    db: PathBuf,
    log: PathBuf,
    interval_ms: u64,
    truncate_every: u64,
    pad: i64,
    rows: Option<u64>,
}

const USAGE: &str = "usage: sqlite_writer --db PATH --log PATH [--interval-ms N] [--truncate-every N] [--pad BYTES] [--rows N] [--gap-ms G]";

fn usage(msg: &str) -> ! {
    eprintln!("sqlite_writer: {msg}\n{USAGE}");
    std::process::exit(2)
}

fn num<T: FromStr>(flag: &str, v: &str) -> T {
    v.parse()
        .unwrap_or_else(|_| usage(&format!("{flag}: not a number: {v:?}")))
}

fn parse_args() -> Args {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let (mut db, mut log) = (None, None);
    let mut a = Args {
        db: PathBuf::new(),
        log: PathBuf::new(),
        interval_ms: 0,
        truncate_every: 0,
        pad: 200,
        rows: None,
    };
    let mut i = 0;
    while i < argv.len() {
        let flag = argv[i].as_str();
        if flag == "-h" || flag == "--help" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let Some(value) = argv.get(i + 1) else {
            usage(&format!("{flag} needs a value"))
        };
        match flag {
            "--db" => db = Some(PathBuf::from(value)),
            "--log" => log = Some(PathBuf::from(value)),
            "--interval-ms" | "--gap-ms" => a.interval_ms = num(flag, value),
            "--truncate-every" => a.truncate_every = num(flag, value),
            "--pad" => a.pad = num(flag, value),
            "--rows" => a.rows = Some(num(flag, value)),
            _ => usage(&format!("unknown argument {flag:?}")),
        }
        i += 2;
    }
    a.db = db.unwrap_or_else(|| usage("--db is required"));
    a.log = log.unwrap_or_else(|| usage("--log is required"));
    a
}

fn unix_millis() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis()
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

fn fail(what: &str, e: impl std::fmt::Display) -> ! {
    eprintln!("sqlite_writer: {what}: {e}");
    std::process::exit(1)
}

/// Runs `f` until it does not fail with busy/locked (the setup statements, which may meet
/// lifeboat's own connection), or until a stop signal.
fn retry_busy<T>(stop: &AtomicBool, what: &str, mut f: impl FnMut() -> rusqlite::Result<T>) -> T {
    loop {
        match f() {
            Ok(v) => return v,
            Err(e) if is_busy(&e) && !stop.load(SeqCst) => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => fail(what, e),
        }
    }
}

/// One line, one write(2) (the log is opened with O_APPEND and unbuffered).
fn log_line(log: &mut File, line: &str) {
    if let Err(e) = log.write_all(line.as_bytes()) {
        fail("writing the log", e);
    }
}

/// Sleeps `ms`, waking early on a stop signal.
fn nap(stop: &AtomicBool, ms: u64) {
    let until = Instant::now() + Duration::from_millis(ms);
    while !stop.load(SeqCst) {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
}

fn main() {
    let args = parse_args();
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        if let Err(e) = signal_hook::flag::register(sig, Arc::clone(&stop)) {
            fail("installing a signal handler", e);
        }
    }

    // On a new lease the volume is empty until lifeboat restores it; the app makes its own
    // directory when there was nothing to restore.
    if let Some(parent) = args.db.parent()
        && !parent.as_os_str().is_empty()
        && let Err(e) = std::fs::create_dir_all(parent)
    {
        fail(&format!("creating {}", parent.display()), e);
    }
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&args.log)
        .unwrap_or_else(|e| fail(&format!("opening {}", args.log.display()), e));
    let conn = Connection::open(&args.db)
        .unwrap_or_else(|e| fail(&format!("opening {}", args.db.display()), e));
    if let Err(e) = conn.busy_timeout(Duration::from_millis(10_000)) {
        fail("PRAGMA busy_timeout", e);
    }
    let mode: String = retry_busy(&stop, "PRAGMA journal_mode=WAL", || {
        conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
    });
    if !mode.eq_ignore_ascii_case("wal") {
        fail(
            "PRAGMA journal_mode=WAL",
            format!("the database stays in {mode} mode"),
        );
    }
    retry_busy(&stop, "PRAGMA synchronous=NORMAL", || {
        conn.pragma_update(None, "synchronous", "NORMAL")
    });
    retry_busy(&stop, "CREATE TABLE", || {
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS t(n INTEGER PRIMARY KEY, ts INTEGER NOT NULL, pad BLOB)",
        )
    });
    let mut n: i64 = retry_busy(&stop, "SELECT max(n)", || {
        conn.query_row("SELECT coalesce(max(n), 0) + 1 FROM t", [], |r| r.get(0))
    });
    eprintln!(
        "sqlite_writer: {} from row {n} (interval {} ms, truncate every {} commits, pad {} bytes{})",
        args.db.display(),
        args.interval_ms,
        args.truncate_every,
        args.pad,
        args.rows.map(|r| format!(", {r} rows")).unwrap_or_default()
    );

    let mut insert = conn
        .prepare("INSERT INTO t VALUES (?1, ?2, randomblob(?3))")
        .unwrap_or_else(|e| fail("preparing the INSERT", e));
    let mut committed: u64 = 0;
    // When the current row's first attempt began: a retried row's latency includes its retries.
    let mut first_try: Option<Instant> = None;
    while !stop.load(SeqCst) {
        if args.rows.is_some_and(|limit| committed >= limit) {
            nap(&stop, 200);
            continue;
        }
        let began = *first_try.get_or_insert_with(Instant::now);
        let ts = unix_millis() as i64;
        match insert.execute(params![n, ts, args.pad]) {
            Ok(_) => {}
            Err(e) if is_busy(&e) => {
                // Not committed: retry the same number.
                if !conn.is_autocommit() {
                    let _ = conn.execute_batch("ROLLBACK");
                }
                continue;
            }
            Err(e) if e.sqlite_error_code() == Some(ErrorCode::ConstraintViolation) => {
                // A retry that finds the row there: the earlier attempt did commit it.
                let there = conn
                    .query_row("SELECT count(*) FROM t WHERE n = ?1", [n], |r| {
                        r.get::<_, i64>(0)
                    })
                    .unwrap_or_else(|e2| fail(&format!("INSERT row {n}: {e}; then"), e2));
                if there != 1 {
                    fail(&format!("INSERT row {n}"), e);
                }
            }
            Err(e) => fail(&format!("INSERT row {n}"), e),
        }
        let latency = began.elapsed().as_micros();
        let after = unix_millis();
        first_try = None;
        log_line(&mut log, &format!("{n} {after} {latency}\n"));
        n += 1;
        committed += 1;
        if args.truncate_every > 0 && committed.is_multiple_of(args.truncate_every) {
            let r = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            });
            let line = match r {
                Ok((busy, wal, done)) => format!("ckpt {} {busy} {wal} {done}\n", unix_millis()),
                // Another connection's checkpoint in the way: noted, not fatal.
                Err(e) if is_busy(&e) => format!("ckpt {} 1 -1 -1\n", unix_millis()),
                Err(e) => fail("PRAGMA wal_checkpoint(TRUNCATE)", e),
            };
            log_line(&mut log, &line);
        }
        if args.interval_ms > 0 {
            nap(&stop, args.interval_ms);
        }
    }
    drop(insert);
    if let Err((_, e)) = conn.close() {
        eprintln!("sqlite_writer: closing the database: {e}");
    }
    eprintln!("sqlite_writer: stopped after {committed} commits, next row {n}");
}
