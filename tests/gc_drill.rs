//! Drills for forget and prune (docs/FORMAT.md §11a):
//! - kill -9 at random moments during forget and prune, many times: afterwards `check
//!   --read-data` is clean and every snapshot still listed restores byte-identical;
//! - prune running over and over while two backups run into the same repository, on a local
//!   directory and on SeaweedFS, with content that keeps coming back after its packs were
//!   marked: every surviving snapshot restores byte-identical.
//!
//! `LIFEBOAT_DRILL_ITERATIONS` raises the kill-9 iteration count (default 100).

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::seaweed;
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

fn json_of(out: &std::process::Output, what: &str) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn snapshot_ids(base: &dyn Fn() -> Command) -> Vec<String> {
    let out = base().args(["--json", "snapshots"]).output().unwrap();
    json_of(&out, "snapshots")
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

/// `check --read-data` is clean and every listed snapshot restores to its recorded manifest.
fn verify_all(
    base: &dyn Fn() -> Command,
    expected: &HashMap<String, BTreeMap<String, String>>,
    scratch: &Path,
) -> usize {
    let out = base().args(["check", "--read-data"]).output().unwrap();
    assert!(
        out.status.success(),
        "check: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let ids = snapshot_ids(base);
    assert!(!ids.is_empty());
    for id in &ids {
        let target = scratch.join(format!("restored-{id}"));
        let out = base()
            .args(["restore", id, "--target"])
            .arg(&target)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "restore {id}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let want = expected
            .get(id)
            .unwrap_or_else(|| panic!("snapshot {id} was never committed by the drill"));
        assert_eq!(&manifest(&target), want, "snapshot {id}");
        std::fs::remove_dir_all(&target).unwrap();
    }
    ids.len()
}

#[test]
fn kill_9_during_forget_and_prune_never_loses_a_kept_snapshot() {
    let iterations: u64 = std::env::var("LIFEBOAT_DRILL_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let t = tempfile::tempdir().unwrap();
    let repo = t.path().join("repo");
    cli_init(&repo);
    let base = || {
        let mut c = lifeboat(&repo);
        c.env("LIFEBOAT_HEARTBEAT", "300ms");
        c
    };
    let src = t.path().join("src");
    for i in 0..16u64 {
        write(&src.join(format!("f{i}")), &random_bytes(60_000, i));
    }
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut expected = HashMap::new();
    let (mut killed, mut completed, mut deleted) = (0, 0, 0u64);
    for it in 0..iterations {
        for _ in 0..3 {
            let i = rng.next() % 16;
            // Contents come from a small pool, so data forgotten earlier keeps coming back.
            let seed = rng.next() % 40;
            write(
                &src.join(format!("f{i}")),
                &random_bytes(20_000 + (seed as usize) * 1_500, seed),
            );
        }
        let out = base()
            .args(["--json", "backup", "--name", "drill"])
            .arg(&src)
            .output()
            .unwrap();
        let id = json_of(&out, "backup")["snapshot"]
            .as_str()
            .unwrap()
            .to_string();
        expected.insert(id, manifest(&src));

        let mut cmd = base();
        cmd.arg("--json");
        if it.is_multiple_of(2) {
            cmd.args(["forget", "--keep-last", "3", "--prune"]);
        } else {
            cmd.arg("prune");
        }
        let mut child = cmd
            .args(["--grace", "1s", "--repack-young", "--max-unused", "0%"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        if !rng.next().is_multiple_of(4) {
            std::thread::sleep(Duration::from_micros(rng.next() % 40_000));
            let _ = child.kill();
        }
        let out = child.wait_with_output().unwrap();
        if out.status.success() {
            completed += 1;
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            let p = if v.get("prune").is_some() {
                &v["prune"]
            } else {
                &v
            };
            deleted += p["packs_deleted"].as_u64().unwrap_or(0);
        } else {
            killed += 1;
        }
    }
    // Let every mark ripen and be swept by an uninterrupted run.
    std::thread::sleep(Duration::from_millis(1200));
    let out = base()
        .args(["--json", "prune", "--grace", "1s"])
        .output()
        .unwrap();
    deleted += json_of(&out, "final prune")["packs_deleted"]
        .as_u64()
        .unwrap();
    let restored = verify_all(&base, &expected, t.path());
    eprintln!(
        "gc drill: {iterations} forget/prune runs, {killed} killed with SIGKILL, {completed} completed, \
         {deleted} packs deleted by sweeps; {restored} surviving snapshots restored byte-identical"
    );
    assert!(killed > 0 && completed > 0 && deleted > 0);
}

/// Two backup loops and a prune loop on one repository at once.
/// Two volumes backed up in a loop while `forget --prune` runs beside them. With `now`, the
/// prune is `--now`: it refuses while a writer is live and deletes at once when none is, and
/// the backups that start during it must still restore.
fn prune_beside_two_backups(base: &(dyn Fn() -> Command + Sync), scratch: &Path, now: bool) {
    let (mut refused, mut immediate) = (0u64, 0u64);
    let expected = Mutex::new(HashMap::new());
    let rounds = 14;
    let done = std::sync::atomic::AtomicUsize::new(0);
    let lapsed = std::sync::atomic::AtomicUsize::new(0);
    let (mut sweeps, mut deleted, mut held) = (0, 0u64, 0);
    std::thread::scope(|s| {
        for name in ["alpha", "beta"] {
            let expected = &expected;
            let done = &done;
            let lapsed = &lapsed;
            s.spawn(move || {
                for k in 0..rounds {
                    // A fresh copy per round, from a pool that repeats every three rounds and is
                    // shared by both volumes.
                    let dir = scratch.join(format!("stage/{name}-{k}/vol"));
                    for i in 0..6u64 {
                        let seed = (k as u64 % 3) * 10 + i;
                        write(&dir.join(format!("f{i}")), &random_bytes(300_000, seed));
                    }
                    write(&dir.join("own"), name.as_bytes());
                    let out = base()
                        .args(["--json", "backup", "--name", name])
                        .arg(&dir)
                        .output()
                        .unwrap();
                    if !out.status.success() {
                        let err = String::from_utf8_lossy(&out.stderr);
                        // The one refusal the protocol allows on a loaded machine.
                        assert!(err.contains("heartbeat lapsed"), "backup {name}: {err}");
                        lapsed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        continue;
                    }
                    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
                    expected
                        .lock()
                        .unwrap()
                        .insert(v["snapshot"].as_str().unwrap().to_string(), manifest(&dir));
                    // Spread the rounds over several grace periods.
                    std::thread::sleep(Duration::from_millis(400));
                }
                done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            });
        }
        let started = Instant::now();
        while done.load(std::sync::atomic::Ordering::Relaxed) < 2 {
            assert!(started.elapsed() < Duration::from_secs(300), "drill hung");
            let mut cmd = base();
            cmd.args([
                "--json",
                "forget",
                "--keep-last",
                "2",
                "--prune",
                "--grace",
                "1500ms",
                "--repack-young",
                "--max-unused",
                "0%",
            ]);
            if now {
                cmd.arg("--now");
            }
            let out = cmd.output().unwrap();
            if now && !out.status.success() {
                let err = String::from_utf8_lossy(&out.stderr);
                assert!(
                    err.contains("prune --now refused")
                        || err.contains("a backup started during this prune"),
                    "prune --now: {err}"
                );
                refused += 1;
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            let v = json_of(&out, "forget --prune");
            if now && v["prune"]["packs_deleted"].as_u64().unwrap() > 0 {
                immediate += 1;
            }
            sweeps += v["prune"]["marks_swept"].as_u64().unwrap();
            deleted += v["prune"]["packs_deleted"].as_u64().unwrap();
            held += v["prune"]["marks_waiting"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|w| w["reason"].as_str().unwrap().contains("still running"))
                .count();
            std::thread::sleep(Duration::from_millis(150));
        }
    });
    let expected = expected.into_inner().unwrap();
    let restored = verify_all(&|| base(), &expected, scratch);
    if now {
        eprintln!(
            "prune --now beside backups: {immediate} runs deleted at once, {refused} refused (a writer was live)"
        );
        assert!(
            immediate > 0,
            "no prune --now found a moment without a writer"
        );
    }
    eprintln!(
        "concurrent drill: {} backups committed ({} refused on a lapsed heartbeat), {sweeps} marks swept, \
         {deleted} packs deleted, {held} sweeps held back by a running backup; {restored} snapshots restored",
        expected.len(),
        lapsed.into_inner()
    );
    assert!(deleted > 0, "no sweep ran while the backups did");
    assert!(expected.len() >= rounds, "too few backups committed");
}

/// The concurrent drill on a directory repository; `now`: with `prune --now`.
fn beside_two_backups_local(now: bool) {
    let t = tempfile::tempdir().unwrap();
    let repo = t.path().join("repo");
    cli_init(&repo);
    let base = || {
        let mut c = lifeboat(&repo);
        c.env("LIFEBOAT_HEARTBEAT", "500ms");
        c
    };
    prune_beside_two_backups(&base, t.path(), now);
}

#[test]
fn prune_beside_two_running_backups_local() {
    beside_two_backups_local(false);
}

#[test]
fn prune_now_beside_two_running_backups_local() {
    beside_two_backups_local(true);
}

#[test]
fn prune_beside_two_running_backups_s3() {
    let s = seaweed::server();
    let t = tempfile::tempdir().unwrap();
    let url = format!("s3:http://{}/gc-drill/repo", s.s3);
    let base = || {
        let mut c = seaweed::lifeboat_s3(&url, t.path());
        c.env("LIFEBOAT_HEARTBEAT", "500ms");
        c
    };
    let out = base()
        .args([
            "init",
            "--kdf-memory-kib",
            "64",
            "--kdf-time",
            "1",
            "--pack-size-mib",
            "1",
            "--chunk-sizes",
            "4096,16384,65536",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    prune_beside_two_backups(&base, t.path(), false);
}
