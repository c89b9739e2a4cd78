//! The replicated SQLite log against a damaged store and through retention (issue 18): a change
//! set flipped or deleted after the newest snapshot makes `restore` and `check` fail naming the
//! object (never a database that silently lacks transactions); a history followed across two
//! leases restores whole; `forget` + `prune` delete the first lease's generation once no kept
//! snapshot needs it, and what remains still restores and checks clean. Also: the settings are
//! refused loudly when they cannot work.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{PASSWORD, cli_init, lifeboat};

const NAME: &str = "sqlitelog";
const DB: &str = "app/db.sqlite3";

fn writer() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_lifeboat"))
        .with_file_name("examples")
        .join("sqlite_writer")
}

/// `lifeboat run -- sqlite_writer` on `vol` in a process group of its own (so a SIGKILL to the
/// group is a provider that vanished), with one backup at start and none after.
fn lease(base: &Path, vol: &Path, k: usize, args: &[&str], env: &[(&str, &str)]) -> Child {
    use std::os::unix::process::CommandExt;
    std::fs::create_dir_all(vol).unwrap();
    let log = std::fs::File::create(base.join(format!("agent-{k}.log"))).unwrap();
    Command::new(env!("CARGO_BIN_EXE_lifeboat"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("LIFEBOAT_REPOSITORY", base.join("repo"))
        .env("LIFEBOAT_PASSWORD", PASSWORD)
        .env("LIFEBOAT_PATH", vol)
        .env("LIFEBOAT_NAME", NAME)
        .env("LIFEBOAT_CACHE_DIR", base.join("cache"))
        .env("LIFEBOAT_SQLITE", vol.join(DB))
        .env("LIFEBOAT_SCHEDULE", "off")
        .env("LIFEBOAT_BACKUP_ON_START", "true")
        .env("LIFEBOAT_LEASE_TTL", "3s")
        .env("LIFEBOAT_LEASE_WAIT", "1m")
        .envs(env.iter().copied())
        .arg("run")
        .arg("--")
        .arg(writer())
        .arg("--db")
        .arg(vol.join(DB))
        .arg("--log")
        .arg(base.join(format!("writer-{k}.log")))
        .args(args)
        .process_group(0)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

fn agent_log(base: &Path, k: usize) -> String {
    std::fs::read_to_string(base.join(format!("agent-{k}.log"))).unwrap_or_default()
}

/// Lets lease `k` take its start backup and replicate for a few seconds, then kills it.
fn run_and_kill(base: &Path, vol: &Path, k: usize) {
    let mut child = lease(base, vol, k, &["--interval-ms", "5"], &[]);
    wait_backup(base, k, &mut child);
    std::thread::sleep(Duration::from_secs(4));
    kill(base, k, &mut child);
}

/// Waits for a snapshot holding a copy of the database (the first backup may run before the
/// app created it; the new database's replication asks for another at once).
fn wait_backup(base: &Path, k: usize, child: &mut Child) {
    let t = Instant::now();
    let stored = |log: &str| {
        log.find("sqlite base copy done")
            .is_some_and(|c| log[c..].contains("backup done"))
    };
    while !stored(&agent_log(base, k)) {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "no backup: {}",
            agent_log(base, k)
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "{}",
            agent_log(base, k)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// SIGKILL to lease `k`'s agent and its app at once.
fn kill(base: &Path, k: usize, child: &mut Child) {
    // The app runs in a process group of its own: find it by its log path.
    let tag = base
        .join(format!("writer-{k}.log"))
        .to_string_lossy()
        .into_owned();
    let app: Vec<i32> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&tag))
        })
        .collect();
    assert!(
        !app.is_empty(),
        "the writer of lease {k} is not running: {}",
        agent_log(base, k)
    );
    // SAFETY: SIGKILL to the process group this test started and to its app, at once.
    unsafe {
        libc::kill(-(child.id() as i32), libc::SIGKILL);
        for pid in app {
            libc::kill(pid, libc::SIGKILL);
        }
    }
    child.wait().unwrap();
}

/// Rows in a restored database (after `PRAGMA integrity_check` is "ok").
fn rows(db: &Path) -> i64 {
    let c = rusqlite::Connection::open(db).unwrap();
    let ok: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
    c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap()
}

/// The highest row the writer of lease `k` logged as committed.
fn logged_max(base: &Path, k: usize) -> i64 {
    std::fs::read_to_string(base.join(format!("writer-{k}.log")))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .max()
        .unwrap_or(0)
}

fn restore(base: &Path, target: &str) -> std::process::Output {
    let dir = base.join(target);
    let _ = std::fs::remove_dir_all(&dir);
    lifeboat(&base.join("repo"))
        .env("LIFEBOAT_CACHE_DIR", base.join("cache-cli"))
        .args(["restore", "latest", "--name", NAME, "--target"])
        .arg(&dir)
        .output()
        .unwrap()
}

fn check(base: &Path) -> std::process::Output {
    lifeboat(&base.join("repo"))
        .env("LIFEBOAT_CACHE_DIR", base.join("cache-cli"))
        .args(["check", "--read-data"])
        .output()
        .unwrap()
}

/// Change sets of every generation: (generation dir, seq, path), in order.
fn change_sets(repo: &Path) -> Vec<(String, u64, PathBuf)> {
    let mut out = Vec::new();
    for db in std::fs::read_dir(repo.join("sqlite")).unwrap().flatten() {
        for g in std::fs::read_dir(db.path()).unwrap().flatten() {
            for f in std::fs::read_dir(g.path()).unwrap().flatten() {
                let seq: u64 = f.file_name().to_string_lossy().parse().unwrap();
                out.push((g.file_name().to_string_lossy().into_owned(), seq, f.path()));
            }
        }
    }
    out.sort();
    out
}

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn a_damaged_log_fails_loudly_and_prune_keeps_what_restores() {
    let base = tempfile::tempdir().unwrap();
    let base = base.path();
    cli_init(&base.join("repo"));

    // Lease 1, then lease 2 on a new volume (restores lease 1's history, writes its own).
    run_and_kill(base, &base.join("vol-1"), 1);
    run_and_kill(base, &base.join("vol-2"), 2);
    let l2 = agent_log(base, 2);
    assert!(
        l2.contains("SQLite database restored to its newest replicated state"),
        "{l2}"
    );
    // The gate narrates its restore (issue 20): what it restores, before it starts.
    assert!(l2.contains("restoring snapshot"), "{l2}");
    let out = restore(base, "ok");
    assert!(out.status.success(), "{}", text(&out));
    let n = rows(&base.join("ok").join(DB));
    assert!(
        n >= logged_max(base, 2) - 400 && logged_max(base, 2) > logged_max(base, 1),
        "restored {n} rows; lease 1 logged {}, lease 2 {}",
        logged_max(base, 1),
        logged_max(base, 2)
    );
    let c = check(base);
    assert!(c.status.success(), "{}", text(&c));
    assert!(
        text(&c).contains("replicated SQLite log objects"),
        "{}",
        text(&c)
    );

    // The last change set of the newest generation is applied by every restore of latest.
    let sets = change_sets(&base.join("repo"));
    let generations: std::collections::BTreeSet<&String> = sets.iter().map(|s| &s.0).collect();
    assert_eq!(generations.len(), 2, "one generation per lease: {sets:?}");
    let newest = *generations.iter().last().unwrap();
    let (_, last_seq, last) = sets.iter().rfind(|s| &s.0 == newest).unwrap().clone();
    assert!(last_seq >= 2, "{sets:?}");
    let key = |p: &Path| {
        p.strip_prefix(base.join("repo"))
            .unwrap()
            .display()
            .to_string()
    };

    // Flipped: authentication fails, naming the object.
    let good = std::fs::read(&last).unwrap();
    let mut bad = good.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x40;
    std::fs::write(&last, &bad).unwrap();
    let out = restore(base, "flipped");
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains(&key(&last)), "{}", text(&out));
    let c = check(base);
    assert!(
        !c.status.success() && text(&c).contains(&key(&last)),
        "{}",
        text(&c)
    );
    std::fs::write(&last, &good).unwrap();

    // A hole: the one before the last goes missing.
    let (_, _, before) = sets
        .iter()
        .find(|s| &s.0 == newest && s.1 == last_seq - 1)
        .unwrap()
        .clone();
    let saved = std::fs::read(&before).unwrap();
    std::fs::remove_file(&before).unwrap();
    let out = restore(base, "hole");
    assert!(
        !out.status.success() && text(&out).contains("hole") && text(&out).contains(&key(&before)),
        "{}",
        text(&out)
    );
    let c = check(base);
    assert!(
        !c.status.success() && text(&c).contains("hole"),
        "{}",
        text(&c)
    );
    std::fs::write(&before, &saved).unwrap();

    // Retention: keep only lease 2's snapshot; lease 1's generation goes, lease 2's stays whole.
    let f = lifeboat(&base.join("repo"))
        .env("LIFEBOAT_CACHE_DIR", base.join("cache-cli"))
        .args(["forget", "--keep-last", "1", "--prune"])
        .output()
        .unwrap();
    assert!(f.status.success(), "{}", text(&f));
    assert!(
        text(&f).contains("replicated SQLite change set(s) no kept snapshot can use"),
        "{}",
        text(&f)
    );
    let left = change_sets(&base.join("repo"));
    assert!(
        left.iter().all(|s| &s.0 == newest),
        "lease 1's generation is gone: {left:?}"
    );
    // Lease 2's header stays, and its change sets from the kept copy's on (those before it
    // may go): a contiguous run up to the last.
    let seqs: Vec<u64> = left.iter().map(|s| s.1).collect();
    assert_eq!(seqs[0], 0, "the generation header stays: {left:?}");
    assert_eq!(*seqs.last().unwrap(), last_seq, "{left:?}");
    assert!(
        seqs[1..].windows(2).all(|w| w[1] == w[0] + 1),
        "lease 2's change sets after its copy are whole: {left:?}"
    );
    let out = restore(base, "after-prune");
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(rows(&base.join("after-prune").join(DB)), n);
    let c = check(base);
    assert!(c.status.success(), "{}", text(&c));
}

/// Files under `repo/sqlite`.
fn log_objects(repo: &Path) -> usize {
    if !repo.join("sqlite").exists() {
        return 0;
    }
    common::objects(repo, "sqlite").len()
}

#[test]
fn an_idle_database_stores_nothing_between_backups() {
    let base = tempfile::tempdir().unwrap();
    let base = base.path();
    cli_init(&base.join("repo"));
    let mut child = lease(
        base,
        &base.join("vol"),
        1,
        &["--rows", "3", "--gap-ms", "100"],
        &[],
    );
    wait_backup(base, 1, &mut child);
    // The three rows are committed and shipped within a sync interval or two.
    std::thread::sleep(Duration::from_secs(3));
    let before = log_objects(&base.join("repo"));
    assert!(before >= 1, "the generation header at least");
    std::thread::sleep(Duration::from_secs(6));
    let after = log_objects(&base.join("repo"));
    kill(base, 1, &mut child);
    assert_eq!(
        before, after,
        "an idle database must not store anything: {before} log objects, then {after} 6 s later"
    );
    println!("SQLITE_IDLE: {after} log objects, none added in 6 idle seconds (6 sync intervals)");
}

/// The writer log of lease `k`: (row, commit time in Unix ms).
fn logged(base: &Path, k: usize) -> Vec<(i64, i64)> {
    std::fs::read_to_string(base.join(format!("writer-{k}.log")))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            Some((w.next()?.parse().ok()?, w.next()?.parse().ok()?))
        })
        .collect()
}

fn wait_rows(base: &Path, k: usize, n: usize, child: &mut Child) -> Vec<(i64, i64)> {
    let t = Instant::now();
    loop {
        let l = logged(base, k);
        if l.len() >= n {
            return l;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "{}",
            agent_log(base, k)
        );
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "{}",
            agent_log(base, k)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Like PostgreSQL's timelines: a lease restored to a point in time and then written to is the
/// history from then on; the rows after the point in the old history do not come back, even
/// when that lease vanished before its first snapshot (a restore follows its generation from
/// the older snapshot by the parent link, leaving the old history after the fork point out).
#[test]
fn a_point_in_time_restore_that_is_written_to_becomes_the_history() {
    let base = tempfile::tempdir().unwrap();
    let base = base.path();
    cli_init(&base.join("repo"));
    let mut one = lease(
        base,
        &base.join("vol-1"),
        1,
        &["--rows", "2", "--gap-ms", "3000"],
        &[],
    );
    wait_backup(base, 1, &mut one);
    let old = wait_rows(base, 1, 2, &mut one);
    std::thread::sleep(Duration::from_millis(2500));
    kill(base, 1, &mut one);
    let target = chrono::DateTime::from_timestamp_millis((old[0].1 + old[1].1) / 2)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let mut two = lease(
        base,
        &base.join("vol-2"),
        2,
        &["--rows", "3", "--gap-ms", "200"],
        &[
            ("LIFEBOAT_RESTORE_TO_TIME", target.as_str()),
            ("LIFEBOAT_BACKUP_ON_START", "false"),
        ],
    );
    let new = wait_rows(base, 2, 3, &mut two);
    assert_eq!(
        new[0].0, 2,
        "lease 2 continues after row 1 (restored to {target})"
    );
    std::thread::sleep(Duration::from_millis(2500));
    kill(base, 2, &mut two);
    assert!(
        !agent_log(base, 2).contains("backup done"),
        "lease 2 took no snapshot: the newest is lease 1's"
    );
    let out = restore(base, "latest");
    assert!(out.status.success(), "{}", text(&out));
    let c = rusqlite::Connection::open(base.join("latest").join(DB)).unwrap();
    let got: Vec<(i64, i64)> = c
        .prepare("SELECT n, ts FROM t ORDER BY n")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(got.len(), 4, "rows 1 to 4: {got:?}");
    assert_eq!(got[0].0, old[0].0);
    // The writer stamps `ts` just before its commit and logs the time just after.
    for (row, (n, logged_at)) in got[1..].iter().zip(&new) {
        assert_eq!(row.0, *n);
        assert!(
            row.1 <= *logged_at && row.1 > old[1].1,
            "row {n} is lease 2's (ts {}), not the old history's row 2 (committed {}): {got:?}",
            row.1,
            old[1].1
        );
    }
}

#[test]
fn sqlite_settings_that_cannot_work_are_refused_naming_the_variable() {
    let base = tempfile::tempdir().unwrap();
    let base = base.path();
    cli_init(&base.join("repo"));
    let vol = base.join("vol");
    std::fs::create_dir_all(&vol).unwrap();
    for (vars, expect) in [
        (
            vec![("LIFEBOAT_SQLITE", "/elsewhere/db.sqlite3")],
            "LIFEBOAT_SQLITE: /elsewhere/db.sqlite3 is not a file inside the volume",
        ),
        (
            vec![
                (
                    "LIFEBOAT_SQLITE",
                    &*vol.join("db").to_string_lossy().into_owned().leak(),
                ),
                ("LIFEBOAT_METHOD", "files"),
            ],
            "LIFEBOAT_SQLITE is set but LIFEBOAT_METHOD=files",
        ),
        (
            vec![
                ("LIFEBOAT_METHOD", "sqlite"),
                ("LIFEBOAT_SQLITE_CHECKPOINT_PAGES", "lots"),
            ],
            "LIFEBOAT_SQLITE_CHECKPOINT_PAGES=\"lots\"",
        ),
        (
            vec![
                ("LIFEBOAT_METHOD", "sqlite"),
                ("LIFEBOAT_SQLITE_SYNC_INTERVAL", "0s"),
            ],
            "LIFEBOAT_SQLITE_SYNC_INTERVAL",
        ),
    ] {
        let mut c = lifeboat(&base.join("repo"));
        c.env("LIFEBOAT_PATH", &vol).env("LIFEBOAT_NAME", NAME);
        for (k, v) in &vars {
            c.env(k, v);
        }
        let out = c.args(["run", "--", "true"]).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{vars:?}: {}", text(&out));
        assert!(text(&out).contains(expect), "{vars:?}: {}", text(&out));
    }
}
