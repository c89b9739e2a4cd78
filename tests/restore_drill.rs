//! Never start the app on a partial restore. The real binary, a real local repository:
//!
//! - the drill: `lifeboat run` restoring an empty volume is killed with SIGKILL at a seeded random
//!   moment; then `lifeboat run` with `LIFEBOAT_ON_RESTORE_FAILURE=start-empty` starts again on
//!   that volume while the gate fails, either because the repository will not open (a wrong
//!   password) or because the restore itself fails (a copy of the repository missing a data
//!   pack). The app records what it sees: an empty volume or the complete one, never anything in
//!   between. `LIFEBOAT_DRILL_ITERATIONS` (default 20) and `LIFEBOAT_DRILL_SEED` change the runs;
//!   one `RESTORE-DRILL` line reports the figures;
//! - a restore cut short while moving into place is finished at the next start;
//! - a failed CLI restore exits 3 (README, "Exit codes").

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn agent(repo: &Path, volume: &Path, cache: &Path) -> Command {
    // The volume's mount point exists before the agent starts, as on Akash and Kubernetes.
    std::fs::create_dir_all(volume).unwrap();
    let mut c = Command::new(env!("CARGO_BIN_EXE_lifeboat"));
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("LIFEBOAT_REPOSITORY", repo)
        .env("LIFEBOAT_PASSWORD", PASSWORD)
        .env("LIFEBOAT_PATH", volume)
        .env("LIFEBOAT_NAME", "vol")
        .env("LIFEBOAT_CACHE_DIR", cache)
        .env("LIFEBOAT_LEASE_TTL", "3s")
        .env("LIFEBOAT_SCHEDULE", "off")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

/// The tree the snapshot holds: several top-level directories and files, so a restore takes a
/// while and moves several entries into place.
fn source(dir: &Path) {
    for d in 0..6u64 {
        for f in 0..4u64 {
            write(
                &dir.join(format!("d{d}/f{f}.bin")),
                &random_bytes(1_200_000 + (f as usize) * 50_000, d * 10 + f + 1),
            );
        }
        write(
            &dir.join(format!("d{d}/sub/small.txt")),
            format!("{d}").as_bytes(),
        );
    }
    write(&dir.join("top.bin"), &random_bytes(1_000_000, 99));
    write(&dir.join("README"), b"the app's data");
}

/// What the app sees, lifeboat's marker directory and `lost+found` aside.
fn seen(volume: &Path) -> BTreeMap<String, String> {
    let mut m = manifest(volume);
    m.retain(|k, _| !k.starts_with(".lifeboat/") && !k.starts_with("lost+found/"));
    m
}

fn copy_dir(from: &Path, to: &Path) {
    let ok = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

fn wait_for(p: &Path, timeout: Duration) -> bool {
    let start = Instant::now();
    while !p.exists() {
        if start.elapsed() > timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    true
}

/// How long a restore left to finish takes, from its in-progress marker to its restored marker.
fn baseline(repo: &Path, work: &Path) -> Duration {
    let v = work.join("baseline-vol");
    let r = work.join("baseline-repo");
    copy_dir(repo, &r);
    let mut child = agent(&r, &v, &work.join("cache-b"))
        .args(["run", "--", "true"])
        .spawn()
        .unwrap();
    assert!(wait_for(
        &v.join(".lifeboat/restore-in-progress"),
        Duration::from_secs(30)
    ));
    let started = Instant::now();
    assert!(wait_for(
        &v.join(".lifeboat/restored"),
        Duration::from_secs(60)
    ));
    let took = started.elapsed();
    assert!(child.wait().unwrap().success());
    let _ = std::fs::remove_dir_all(&v);
    let _ = std::fs::remove_dir_all(&r);
    took
}

#[test]
fn kill_9_during_restore_then_start_empty_never_starts_the_app_on_partial_data() {
    let iterations: u64 = std::env::var("LIFEBOAT_DRILL_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let seed: u64 = std::env::var("LIFEBOAT_DRILL_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x11fe_b0a7);
    let mut rng = Rng(seed | 1);
    let t = tempfile::tempdir().unwrap();
    let work = t.path();
    let src = work.join("src");
    source(&src);
    let want = manifest(&src);
    let good = work.join("good");
    cli_init(&good);
    let out = lifeboat(&good)
        .args(["backup", "--name", "vol"])
        .arg(&src)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A copy missing its largest data pack: the restore writes the other files, then fails.
    let broken = work.join("broken");
    copy_dir(&good, &broken);
    let largest = objects(&broken, "data")
        .into_iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    std::fs::remove_file(largest).unwrap();

    let full = baseline(&good, work);
    let window_ms = (full.as_millis() as u64 * 3 / 2).max(20);

    let started = Instant::now();
    let (mut kills, mut finished_first, mut empty, mut complete, mut partial, mut not_started) =
        (0, 0, 0, 0, 0, 0);
    let mut while_committing = 0;
    let mut failures = Vec::new();
    for i in 0..iterations {
        let v = work.join(format!("vol{i}"));
        std::fs::create_dir_all(&v).unwrap();
        let repo = work.join(format!("repo{i}"));
        copy_dir(&good, &repo);
        // The kill lands at a random moment of the restore (or a little after it).
        let delay = Duration::from_millis(rng.next() % window_ms);
        let mut first = agent(&repo, &v, &work.join(format!("cache{i}")))
            .args(["run", "--", "true"])
            .spawn()
            .unwrap();
        wait_for(
            &v.join(".lifeboat/restore-in-progress"),
            Duration::from_secs(30),
        );
        std::thread::sleep(delay);
        let in_progress = v.join(".lifeboat/restore-in-progress").exists();
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(first.id() as i32, libc::SIGKILL);
        }
        let _ = first.wait();
        if in_progress {
            kills += 1;
        }
        if v.join(".lifeboat/restored").exists() {
            finished_first += 1;
        } else if v.join(".lifeboat/restore-committing").exists() {
            while_committing += 1;
        }

        // The gate fails; start-empty starts the app. Half the runs cannot open the repository,
        // half open it and fail the restore.
        let wrong_password = rng.next().is_multiple_of(2);
        let (second_repo, broken_copy) = if wrong_password {
            (repo.clone(), None)
        } else {
            let b = work.join(format!("broken{i}"));
            copy_dir(&broken, &b);
            (b.clone(), Some(b))
        };
        let saw = work.join(format!("seen{i}"));
        let mut second = agent(&second_repo, &v, &work.join(format!("cache2-{i}")));
        second
            .env("LIFEBOAT_ON_RESTORE_FAILURE", "start-empty")
            .env("LIFEBOAT_RESTORE_TIMEOUT", "1s");
        if wrong_password {
            second.env("LIFEBOAT_PASSWORD", "not the password");
        }
        let out = second
            .args(["run", "--", "sh", "-c", "ls -A \"$1\" > \"$2\"", "app"])
            .arg(&v)
            .arg(&saw)
            .output()
            .unwrap();
        let listing = std::fs::read_to_string(&saw).ok();
        let got = seen(&v);
        let saw_nothing = listing.as_deref().is_some_and(|l| {
            l.lines()
                .all(|n| n == ".lifeboat" || n == "lost+found" || n.is_empty())
        });
        // Whether the app started is what it wrote; the agent's own exit code may be 14 here
        // (its final backup cannot be taken with a wrong password or a broken repository).
        let what = if listing.is_none() {
            not_started += 1;
            "the app did not start"
        } else if got.is_empty() && saw_nothing {
            empty += 1;
            "empty"
        } else if got == want {
            complete += 1;
            "complete"
        } else {
            partial += 1;
            "PARTIAL"
        };
        if what != "empty" && what != "complete" {
            failures.push(format!(
                "run {i} (kill after {delay:?}, {}): {what}: {} of {} files; the app saw {:?}\n{}",
                if wrong_password {
                    "wrong password"
                } else {
                    "failing restore"
                },
                got.len(),
                want.len(),
                listing,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let _ = std::fs::remove_dir_all(&v);
        let _ = std::fs::remove_dir_all(&repo);
        if let Some(b) = broken_copy {
            let _ = std::fs::remove_dir_all(b);
        }
    }
    println!(
        "RESTORE-DRILL seed: {seed}, runs: {iterations}, kills during a restore: {kills}, killed while moving into place: {while_committing}, restores finished before the kill: {finished_first}, full restore {:.2}s, app starts on an empty volume: {empty}, on a complete one: {complete}, partial starts: {partial}, app not started: {not_started}, {:.1}s",
        full.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(kills > 0, "no kill landed during a restore");
}

/// What a kill leaves when it lands between two renames: the staged restore complete, the
/// committing marker written, some entries already in place. The next start finishes it.
#[test]
fn a_restore_cut_short_while_moving_into_place_is_finished_at_the_next_start() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    source(&src);
    let repo = t.path().join("repo");
    cli_init(&repo);
    assert!(
        lifeboat(&repo)
            .args(["backup", "--name", "vol"])
            .arg(&src)
            .output()
            .unwrap()
            .status
            .success()
    );
    let v = t.path().join("vol");
    let staging: PathBuf = v.join(".lifeboat/staging");
    let out = lifeboat(&repo)
        .args(["restore", "latest", "--target"])
        .arg(&staging)
        .output()
        .unwrap();
    assert!(out.status.success());
    let snap = out_snapshot(&repo);
    write(
        &v.join(".lifeboat/restore-in-progress"),
        format!("{{\"snapshot\":\"{snap}\"}}").as_bytes(),
    );
    write(
        &v.join(".lifeboat/restore-committing"),
        format!("{{\"snapshot\":\"{snap}\"}}").as_bytes(),
    );
    for name in ["d0", "d1", "top.bin"] {
        std::fs::rename(staging.join(name), v.join(name)).unwrap();
    }
    // The repository is unreachable this time: the volume is settled before it is needed.
    let saw = t.path().join("seen");
    let out = agent(&t.path().join("nowhere"), &v, &t.path().join("c"))
        .env("LIFEBOAT_PASSWORD", "not the password")
        .env("LIFEBOAT_RESTORE_TIMEOUT", "1s")
        .args(["run", "--", "sh", "-c", "ls -A \"$1\" > \"$2\"", "app"])
        .arg(&v)
        .arg(&saw)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(seen(&v), manifest(&src));
    assert!(v.join(".lifeboat/restored").exists());
    assert!(!v.join(".lifeboat/restore-in-progress").exists());
    assert!(!v.join(".lifeboat/restore-committing").exists());
    assert!(!staging.exists());
}

fn out_snapshot(repo: &Path) -> String {
    let out = lifeboat(repo)
        .args(["snapshots", "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v[0]["id"].as_str().unwrap().to_string()
}

#[test]
fn a_cli_restore_with_damaged_files_exits_3_and_lists_them() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    source(&src);
    let repo = t.path().join("repo");
    cli_init(&repo);
    assert!(
        lifeboat(&repo)
            .args(["backup", "--name", "vol"])
            .arg(&src)
            .output()
            .unwrap()
            .status
            .success()
    );
    let largest = objects(&repo, "data")
        .into_iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    std::fs::remove_file(largest).unwrap();
    let out = lifeboat(&repo)
        .args(["restore", "latest", "--target"])
        .arg(t.path().join("t"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("restore incomplete"), "{err}");
    assert!(err.contains("missing"), "{err}");
}
