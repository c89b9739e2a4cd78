//! Prune: two phases, the grace period, and the rules that make it safe beside running backups
//! (docs/FORMAT.md §11a). Heartbeats are shortened to one second so grace periods of a few
//! seconds are allowed.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use lifeboat::Id;
use lifeboat::repository::gc::{GC_RECORD_VERSION, WriterRecord};

const GRACE: &str = "3s";
const GRACE_WAIT: Duration = Duration::from_millis(3300);

fn lb(repo: &Path) -> Command {
    let mut c = lifeboat(repo);
    c.env("LIFEBOAT_HEARTBEAT", "1s");
    c
}

fn run_json(repo: &Path, args: &[&str]) -> serde_json::Value {
    let out = lb(repo).arg("--json").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn prune(repo: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["prune", "--grace", GRACE];
    args.extend_from_slice(extra);
    run_json(repo, &args)
}

fn backup(repo: &Path, src: &Path, name: &str) -> String {
    run_json(repo, &["backup", "--name", name, src.to_str().unwrap()])["snapshot"]
        .as_str()
        .unwrap()
        .to_string()
}

fn check_clean(repo: &Path) {
    let out = lb(repo).args(["check", "--read-data"]).output().unwrap();
    assert!(
        out.status.success(),
        "check: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn restore(repo: &Path, id: &str, target: &Path) {
    let out = lb(repo)
        .args(["restore", id, "--target"])
        .arg(target)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "restore {id}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn listing(repo: &Path) -> Vec<std::path::PathBuf> {
    let mut all = Vec::new();
    for sub in ["data", "index", "snapshots", "prune"] {
        all.extend(objects(repo, sub));
    }
    all
}

#[test]
fn prune_marks_first_deletes_after_the_grace_period_and_kept_snapshots_restore() {
    let t = tempfile::tempdir().unwrap();
    let repo = t.path().join("repo");
    cli_init(&repo);
    let src = t.path().join("v/data");
    for i in 0..6u64 {
        write(&src.join(format!("f{i}")), &random_bytes(300_000, i));
    }
    backup(&repo, &src, "v");
    // Replace most of the data: the first snapshot's packs become garbage once it is forgotten.
    for i in 0..4u64 {
        write(&src.join(format!("f{i}")), &random_bytes(300_000, 100 + i));
    }
    let kept = backup(&repo, &src, "v");
    let expected = t.path().join("expected");
    std::fs::rename(&src, &expected).unwrap();
    run_json(&repo, &["forget", "--keep-last", "1"]);
    let bytes_before: u64 = objects(&repo, "data")
        .iter()
        .map(|p| p.metadata().unwrap().len())
        .sum();

    // Packs written moments ago are too young to judge; wait past the allowance.
    std::thread::sleep(Duration::from_secs(1));
    let before = listing(&repo);
    let dry = prune(
        &repo,
        &["--dry-run", "--repack-young", "--max-unused", "0%"],
    );
    assert!(dry["packs_marked"].as_u64().unwrap() > 0, "{dry}");
    assert_eq!(listing(&repo), before, "a dry run changed the repository");

    let first = prune(&repo, &["--repack-young", "--max-unused", "0%"]);
    assert!(first["packs_marked"].as_u64().unwrap() > 0, "{first}");
    assert_eq!(first["packs_deleted"], 0, "{first}");
    assert!(first["mark"].is_string());
    // Phase one deleted nothing, and the kept snapshot is whole.
    check_clean(&repo);

    // Before the grace period ends, a second run only waits.
    let waiting = prune(&repo, &[]);
    assert_eq!(waiting["packs_deleted"], 0, "{waiting}");
    assert!(
        waiting["marks_waiting"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("grace period"),
        "{waiting}"
    );

    std::thread::sleep(GRACE_WAIT);
    let swept = prune(&repo, &[]);
    assert!(swept["packs_deleted"].as_u64().unwrap() > 0, "{swept}");
    assert_eq!(swept["marks_swept"], 1);
    assert!(objects(&repo, "prune").is_empty());
    let bytes_after: u64 = objects(&repo, "data")
        .iter()
        .map(|p| p.metadata().unwrap().len())
        .sum();
    assert!(
        bytes_after < bytes_before * 3 / 4,
        "{bytes_before} -> {bytes_after}"
    );
    check_clean(&repo);
    let target = t.path().join("restored");
    restore(&repo, &kept, &target);
    assert_same_tree(&expected, &target);
}

#[test]
fn a_backup_never_reuses_data_that_prune_has_marked() {
    // The interleaving that loses data without the rule: a blob is marked as garbage, a new
    // backup finds the same content and references the marked copy, the sweep deletes it.
    let t = tempfile::tempdir().unwrap();
    let repo = t.path().join("repo");
    cli_init(&repo);
    let src = t.path().join("v/data");
    write(&src.join("a"), &random_bytes(400_000, 1));
    let old = backup(&repo, &src, "v");
    std::fs::remove_file(src.join("a")).unwrap();
    write(&src.join("b"), &random_bytes(10_000, 2));
    backup(&repo, &src, "v");
    run_json(&repo, &["forget", "--keep-last", "1"]);
    let left = run_json(&repo, &["snapshots"]);
    assert_eq!(left.as_array().unwrap().len(), 1);
    assert_ne!(left[0]["id"].as_str(), Some(old.as_str()));
    std::thread::sleep(Duration::from_secs(1));
    let marked = prune(&repo, &[]);
    assert!(marked["packs_marked"].as_u64().unwrap() > 0, "{marked}");

    // The content of `a` comes back while its old packs wait for the sweep.
    write(&src.join("a"), &random_bytes(400_000, 1));
    let again = run_json(&repo, &["backup", "--name", "v", src.to_str().unwrap()]);
    assert!(
        again["summary"]["data_blobs_added"].as_u64().unwrap() > 0,
        "the backup deduplicated against marked packs: {again}"
    );
    let expected = t.path().join("expected");
    std::fs::rename(&src, &expected).unwrap();

    std::thread::sleep(GRACE_WAIT);
    let swept = prune(&repo, &[]);
    assert!(swept["packs_deleted"].as_u64().unwrap() > 0, "{swept}");
    check_clean(&repo);
    let target = t.path().join("restored");
    restore(&repo, again["snapshot"].as_str().unwrap(), &target);
    assert_same_tree(&expected, &target);
}

#[test]
fn a_backup_older_than_a_mark_holds_the_sweep_and_stale_writers_are_cleared() {
    let t = tempfile::tempdir().unwrap();
    let repo_dir = t.path().join("repo");
    cli_init(&repo_dir);
    let src = t.path().join("v/data");
    write(&src.join("a"), &random_bytes(200_000, 7));
    backup(&repo_dir, &src, "v");
    write(&src.join("a"), &random_bytes(200_000, 8));
    backup(&repo_dir, &src, "v");
    run_json(&repo_dir, &["forget", "--keep-last", "1"]);
    std::thread::sleep(Duration::from_secs(1));

    // A backup that started before the mark and is still beating.
    let repo = lifeboat::repository::Repository::open(
        Box::new(lifeboat::backend::LocalBackend::new(&repo_dir)),
        PASSWORD,
    )
    .unwrap();
    let now = chrono::Utc::now();
    let running = Id::of_bytes(b"running");
    let mut record = WriterRecord {
        version: GC_RECORD_VERSION,
        start: now,
        refreshed: now,
        name: "v".into(),
        hostname: "elsewhere".into(),
        pid: 1,
    };
    repo.put_writer(&running, &record).unwrap();
    // And one that died long ago.
    let dead = Id::of_bytes(b"dead");
    repo.put_writer(
        &dead,
        &WriterRecord {
            start: now - chrono::Duration::hours(3),
            refreshed: now - chrono::Duration::hours(2),
            ..record.clone()
        },
    )
    .unwrap();

    let marked = prune(&repo_dir, &[]);
    assert_eq!(marked["writers_removed"], 1, "{marked}");
    assert_eq!(marked["writers_live"], 1, "{marked}");
    // Nothing the running backup could be writing is marked: only packs older than its start.
    assert!(marked["packs_marked"].as_u64().unwrap() > 0, "{marked}");
    assert_eq!(objects(&repo_dir, "writers").len(), 1);

    for _ in 0..4 {
        std::thread::sleep(Duration::from_secs(1));
        record.refreshed = chrono::Utc::now();
        repo.put_writer(&running, &record).unwrap();
    }
    let held = prune(&repo_dir, &[]);
    assert_eq!(held["packs_deleted"], 0, "{held}");
    assert!(
        held["marks_waiting"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("still running"),
        "{held}"
    );

    repo.delete_writer(&running).unwrap();
    let swept = prune(&repo_dir, &[]);
    assert!(swept["packs_deleted"].as_u64().unwrap() > 0, "{swept}");
    check_clean(&repo_dir);
}

#[test]
fn a_backup_whose_heartbeat_lapsed_does_not_commit() {
    let t = tempfile::tempdir().unwrap();
    let repo = t.path().join("repo");
    cli_init(&repo);
    let child = lb(&repo)
        .env("LIFEBOAT_HEARTBEAT", "200ms")
        .args([
            "backup",
            "--name",
            "v",
            "--stdin-filename",
            "dump.sql",
            "--stdin-from-command",
            "sleep 2; echo data",
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Stopped once its writer record exists (a stop before that would only delay the start),
    // while the command still holds the backup back.
    let t0 = std::time::Instant::now();
    while objects(&repo, "writers").is_empty() {
        assert!(t0.elapsed() < Duration::from_secs(20), "no writer record");
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = child.id() as i32;
    // SAFETY: plain kill(2) on our own child.
    unsafe {
        libc::kill(pid, libc::SIGSTOP);
    }
    std::thread::sleep(Duration::from_millis(1500));
    unsafe {
        libc::kill(pid, libc::SIGCONT);
    }
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("heartbeat lapsed"), "{err}");
    assert!(objects(&repo, "snapshots").is_empty());
    // The refused run left nothing a later backup trips on.
    let ok = lb(&repo)
        .env("LIFEBOAT_HEARTBEAT", "200ms")
        .args([
            "backup",
            "--name",
            "v",
            "--stdin-filename",
            "dump.sql",
            "--stdin-from-command",
            "echo data",
        ])
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    check_clean(&repo);
}

#[test]
fn prune_refuses_a_grace_shorter_than_three_heartbeats_and_a_bad_percentage() {
    let t = tempfile::tempdir().unwrap();
    let repo = t.path().join("repo");
    cli_init(&repo);
    let out = lb(&repo).args(["prune", "--grace", "2s"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("--grace") && err.lines().count() == 1, "{err}");
    let out = lb(&repo)
        .args(["prune", "--max-unused", "lots"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("--max-unused"), "{err}");
}

#[test]
fn prune_now_frees_space_in_the_same_run_and_refuses_beside_a_live_writer() {
    let t = tempfile::tempdir().unwrap();
    let repo_dir = t.path().join("repo");
    cli_init(&repo_dir);
    let src = t.path().join("v/data");
    write(&src.join("a"), &random_bytes(400_000, 21));
    backup(&repo_dir, &src, "v");
    write(&src.join("a"), &random_bytes(400_000, 22));
    let kept = backup(&repo_dir, &src, "v");
    run_json(&repo_dir, &["forget", "--keep-last", "1"]);
    let before = objects(&repo_dir, "data").len();

    // A live writer record: refused, and nothing changes.
    let repo = lifeboat::repository::Repository::open(
        Box::new(lifeboat::backend::LocalBackend::new(&repo_dir)),
        PASSWORD,
    )
    .unwrap();
    let now = chrono::Utc::now();
    let w = Id::of_bytes(b"writer");
    repo.put_writer(
        &w,
        &WriterRecord {
            version: GC_RECORD_VERSION,
            start: now,
            refreshed: now,
            name: "v".into(),
            hostname: "elsewhere".into(),
            pid: 7,
        },
    )
    .unwrap();
    let files = listing(&repo_dir);
    let out = lb(&repo_dir).args(["prune", "--now"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("prune --now refused, nothing changed") && err.contains("host elsewhere"),
        "{err}"
    );
    assert_eq!(
        listing(&repo_dir),
        files,
        "a refused prune --now changed the repository"
    );

    // No writer: the forgotten snapshot's data is gone in this one run, with the default
    // 24-hour grace, and what is kept still checks and restores.
    repo.delete_writer(&w).unwrap();
    let v = run_json(&repo_dir, &["prune", "--now"]);
    assert!(v["packs_deleted"].as_u64().unwrap() > 0, "{v}");
    assert!(v["marks_waiting"].as_array().unwrap().is_empty(), "{v}");
    assert!(objects(&repo_dir, "prune").is_empty(), "the mark was swept");
    let after = objects(&repo_dir, "data").len();
    assert!(after < before, "{before} packs before, {after} after");
    check_clean(&repo_dir);
    let target = t.path().join("r");
    restore(&repo_dir, &kept, &target);
    assert_eq!(manifest(&target), manifest(&src));
}
