//! Crash drill: back up a changing tree over and over, killing the backup with SIGKILL at a
//! random moment most times. Afterwards `check --read-data` must be clean and every snapshot
//! that was committed must restore byte-identical to the tree it was taken of.
//!
//! `LIFEBOAT_DRILL_ITERATIONS` raises the iteration count (default 120).

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::*;

fn snapshot_ids(repo: &Path) -> Vec<String> {
    let out = lifeboat(repo)
        .args(["snapshots", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    v.iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), &dst).unwrap();
            let m = std::fs::metadata(e.path()).unwrap();
            filetime::set_file_mtime(&dst, filetime::FileTime::from_last_modification_time(&m))
                .unwrap();
        }
    }
    let m = std::fs::metadata(from).unwrap();
    filetime::set_file_mtime(to, filetime::FileTime::from_last_modification_time(&m)).unwrap();
}

#[test]
fn kill_9_during_backups_never_loses_a_committed_snapshot() {
    let iterations: u64 = std::env::var("LIFEBOAT_DRILL_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(120);
    let t = tempfile::tempdir().unwrap();
    let repo = t.path().join("repo");
    cli_init(&repo);
    let src = t.path().join("src");
    for i in 0..30u64 {
        write(
            &src.join(format!("d{}/f{i}.bin", i % 4)),
            &random_bytes((i as usize * 7919) % 150_000, i),
        );
    }
    let mut expected: HashMap<String, std::path::PathBuf> = HashMap::new();
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let (mut killed, mut committed) = (0, 0);
    for it in 0..iterations {
        // Change a few files: rewrite, grow, delete and recreate.
        for _ in 0..3 {
            let i = next() % 30;
            let p = src.join(format!("d{}/f{i}.bin", i % 4));
            match next() % 3 {
                0 => write(&p, &random_bytes((next() % 200_000) as usize, next())),
                1 => {
                    let mut d = std::fs::read(&p).unwrap_or_default();
                    d.extend_from_slice(&random_bytes((next() % 20_000) as usize, next()));
                    write(&p, &d);
                }
                _ => {
                    let _ = std::fs::remove_file(&p);
                }
            }
        }
        let before = snapshot_ids(&repo);
        let mut child = lifeboat(&repo)
            .args(["backup", "--name", "drill", "--threads", "2"])
            .arg(&src)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Three runs in four are killed somewhere between start and end.
        if next() % 4 != 0 {
            std::thread::sleep(Duration::from_micros(next() % 60_000));
            let _ = child.kill();
        }
        let status = child.wait().unwrap();
        if !status.success() {
            killed += 1;
        }
        let after = snapshot_ids(&repo);
        let new: Vec<_> = after.iter().filter(|s| !before.contains(s)).collect();
        assert!(new.len() <= 1, "iteration {it}: {new:?}");
        if let Some(id) = new.first() {
            committed += 1;
            let copy = t.path().join(format!("expected/{it}"));
            copy_tree(&src, &copy);
            expected.insert((*id).clone(), copy);
        }
    }
    eprintln!("drill: {iterations} backups, {killed} killed, {committed} snapshots committed");
    assert!(
        killed > 0 && committed > 0,
        "the drill did not exercise both outcomes"
    );
    let out = lifeboat(&repo)
        .args(["check", "--read-data"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "check after the drill: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for (id, tree) in &expected {
        let target = t.path().join(format!("restored/{id}"));
        let out = lifeboat(&repo)
            .args(["restore", id, "--target"])
            .arg(&target)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{id}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_same_tree(tree, &target);
    }
}
