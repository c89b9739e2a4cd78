//! An untrusted store, one rule at a time: the config survives the loss of one copy and its damage
//! is called damage; a future-dated snapshot never becomes `latest` nor drives retention; `restore
//! latest` refuses when the newest snapshot is damaged unless `--fallback`; junk under `index/` or
//! `keys/` is skipped, not fatal, and `check` names it; a backup stores again what a damaged pack
//! held instead of referring to it, and the verified-pack ledger spares the steady state any
//! download. The hostile-storage drill (`tests/hostile_drill.rs`) mixes all of these at random.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use common::*;
use lifeboat::Id;
use lifeboat::backend::LocalBackend;
use lifeboat::backup::{self, BackupOptions, Source};
use lifeboat::repository::Repository;

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A repository (made through the CLI) with `n` snapshots of volume `vol`, the source changing
/// between them. Returns (repo dir, source dir, snapshot ids oldest first).
fn repo_with_snapshots(tmp: &Path, n: usize) -> (PathBuf, PathBuf, Vec<String>) {
    let repo = tmp.join("repo");
    let src = tmp.join("src");
    cli_init(&repo);
    let mut ids = Vec::new();
    for i in 0..n {
        write(&src.join("a.bin"), &random_bytes(200_000, i as u64));
        write(&src.join("same.txt"), b"unchanged");
        let out = lifeboat(&repo)
            .args(["--json", "backup", "--name", "vol"])
            .arg(&src)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        ids.push(v["snapshot"].as_str().unwrap().to_string());
        // Distinct store times for the snapshot objects.
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    (repo, src, ids)
}

fn objects(repo: &Path, dir: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![repo.join(dir)];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

fn flip(path: &Path, at: usize) {
    let mut b = fs::read(path).unwrap();
    let i = at % b.len();
    b[i] ^= 0x20;
    fs::write(path, b).unwrap();
}

#[test]
fn one_lost_config_copy_is_survived_and_repaired() {
    let tmp = tempfile::tempdir().unwrap();
    let (repo, _, _) = repo_with_snapshots(tmp.path(), 1);
    fs::remove_file(repo.join("config")).unwrap();
    let out = lifeboat(&repo).arg("snapshots").output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let out = lifeboat(&repo).arg("check").output().unwrap();
    assert!(!out.status.success(), "check must report the lost copy");
    assert!(
        stdout(&out).contains("config is missing") || stderr(&out).contains("config is missing")
    );
    let out = lifeboat(&repo).args(["repair", "config"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("rewrote config"), "{}", stdout(&out));
    let out = lifeboat(&repo).arg("check").output().unwrap();
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));

    // Both copies damaged: damage, named, not "wrong password" (exit 12).
    flip(&repo.join("config"), 40);
    flip(&repo.join("config.1"), 40);
    let out = lifeboat(&repo).arg("snapshots").output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("config is damaged") && !err.contains("wrong password"),
        "{err}"
    );
}

#[test]
fn a_future_dated_snapshot_is_never_latest_nor_in_retention() {
    let tmp = tempfile::tempdir().unwrap();
    let (repo_dir, src, ids) = repo_with_snapshots(tmp.path(), 2);
    let repo = open_repo(&repo_dir);
    let (_, mut s) = repo.find_snapshot(&ids[0], None).unwrap();
    s.time += chrono::TimeDelta::days(30);
    let future = repo.save_snapshot(&s).unwrap().to_hex();

    let out = lifeboat(&repo_dir).arg("snapshots").output().unwrap();
    let list = stdout(&out);
    let line = list.lines().find(|l| l.starts_with(&future[..8])).unwrap();
    assert!(line.contains("future-dated"), "{list}");

    // `latest` is the honest newest snapshot, not the future-dated one.
    let target = tmp.path().join("restored");
    let out = lifeboat(&repo_dir)
        .args(["--json", "restore", "latest", "--name", "vol", "--target"])
        .arg(&target)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["snapshot"].as_str().unwrap(), ids[1]);
    assert_same_tree(&src, &target);

    // keep-last 1 keeps the honest newest and leaves the future-dated one alone.
    let out = lifeboat(&repo_dir)
        .args(["forget", "--name", "vol", "--keep-last", "1"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let left: Vec<String> = objects(&repo_dir, "snapshots")
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(left.contains(&ids[1]) && left.contains(&future), "{left:?}");
    assert!(!left.contains(&ids[0]));
}

#[test]
fn restore_latest_refuses_a_damaged_newest_snapshot_unless_fallback() {
    let tmp = tempfile::tempdir().unwrap();
    let (repo, _, ids) = repo_with_snapshots(tmp.path(), 2);
    let newest = repo.join("snapshots").join(&ids[1]);
    flip(&newest, 30);
    let target = tmp.path().join("t1");
    let out = lifeboat(&repo)
        .args(["restore", "latest", "--name", "vol", "--target"])
        .arg(&target)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("snapshots/{}", ids[1])) && err.contains("--fallback"),
        "{err}"
    );
    assert!(!target.exists() || fs::read_dir(&target).unwrap().next().is_none());
    // The gate is as strict.
    let out = lifeboat(&repo)
        .args([
            "restore",
            "latest",
            "--if-empty",
            "--name",
            "vol",
            "--target",
        ])
        .arg(tmp.path().join("gate"))
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", stdout(&out));

    let target = tmp.path().join("t2");
    let out = lifeboat(&repo)
        .args([
            "--json",
            "restore",
            "latest",
            "--fallback",
            "--name",
            "vol",
            "--target",
        ])
        .arg(&target)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["snapshot"].as_str().unwrap(),
        ids[0],
        "says which one it restored"
    );
    assert!(stderr(&out).contains("--fallback"), "{}", stderr(&out));
}

#[test]
fn junk_index_and_key_objects_are_skipped_and_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let (repo, src, _) = repo_with_snapshots(tmp.path(), 1);
    let junk = random_bytes(5000, 7);
    fs::write(repo.join("index").join(Id::of_bytes(&junk).to_hex()), &junk).unwrap();
    // A key object asking for 4 GiB of Argon2 memory, correctly named by its hash, sorted first.
    let key = objects(&repo, "keys").pop().unwrap();
    let text = fs::read_to_string(&key).unwrap();
    let hostile = text.replace("\"m_cost\": 64", "\"m_cost\": 4194304");
    assert_ne!(hostile, text);
    fs::write(
        repo.join("keys")
            .join(Id::of_bytes(hostile.as_bytes()).to_hex()),
        &hostile,
    )
    .unwrap();

    let target = tmp.path().join("restored");
    let out = lifeboat(&repo)
        .args(["restore", "latest", "--name", "vol", "--target"])
        .arg(&target)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_same_tree(&src, &target);
    let out = lifeboat(&repo)
        .args(["backup", "--name", "vol"])
        .arg(&src)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let out = lifeboat(&repo).arg("check").output().unwrap();
    assert!(!out.status.success());
    let report = format!("{}{}", stdout(&out), stderr(&out));
    assert!(
        report.contains("index/") && report.contains("outside the accepted"),
        "{report}"
    );
}

/// The ledger makes a backup after a backup download no pack; a pack damaged on the store since
/// is read again, found bad, and what it held is stored again, so the new snapshot restores.
#[test]
fn backups_vouch_for_what_they_reuse() {
    let tmp = tempfile::tempdir().unwrap();
    let repo_dir = tmp.path().join("repo");
    let src = tmp.path().join("src");
    let ledger = tmp.path().join("cache");
    init_repo(&repo_dir);
    for i in 0..4 {
        write(&src.join(format!("f{i}")), &random_bytes(600_000, 100 + i));
    }
    let open = || open_repo(&repo_dir).with_ledger(&ledger);
    let run = |repo: &Repository, force: bool| {
        let mut o = BackupOptions::new("vol");
        o.force = force;
        backup::backup(repo, &Source::Paths(vec![src.clone()]), &o).unwrap()
    };
    run(&open(), false);
    let data_packs = || {
        objects(&repo_dir, "data")
            .into_iter()
            .filter(|p| {
                // Data packs are the large ones here (the trees are tiny).
                fs::metadata(p).unwrap().len() > 100_000
            })
            .collect::<Vec<_>>()
    };
    let packs = data_packs();
    let pack_bytes: u64 = packs.iter().map(|p| fs::metadata(p).unwrap().len()).sum();
    assert!(!packs.is_empty());

    // Steady state: reading every file again (force) reuses every blob, downloading no pack.
    let repo = open();
    run(&repo, true);
    assert!(
        repo.stats().bytes_down < pack_bytes / 4,
        "downloaded {} of {pack_bytes} pack bytes",
        repo.stats().bytes_down
    );

    // Without the ledger, the same backup verifies by downloading.
    let repo = open_repo(&repo_dir);
    run(&repo, true);
    assert!(
        repo.stats().bytes_down >= pack_bytes,
        "verified by download"
    );

    // Damage one data pack on the store; the next backup must not refer to it.
    flip(&packs[0], 1000);
    let repo = open();
    let out = run(&repo, true);
    assert!(
        data_packs().len() > packs.len(),
        "what the damaged pack held was stored again"
    );
    let target = tmp.path().join("restored");
    let repo = Repository::open(Box::new(LocalBackend::new(&repo_dir)), PASSWORD).unwrap();
    let r = lifeboat::restore::restore(
        &repo,
        &out.snapshot,
        &lifeboat::restore::RestoreOptions::new(&target),
    )
    .unwrap();
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_same_tree(&src, &target);
}
