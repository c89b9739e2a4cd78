//! A backup killed with SIGKILL mid-way leaves no snapshot, and the next run adopts the packs it
//! had uploaded instead of uploading them again; the repository then checks clean and restores.

mod common;

use std::fs;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn killed_backup_is_invisible_and_its_packs_are_reused() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    // 96 MiB of incompressible data in 24 files: ~96 packs of 1 MiB.
    for i in 0..24 {
        write(&src.join(format!("f{i:02}.bin")), &random_bytes(4 << 20, i));
    }
    let repo = tmp.path().join("repo");
    cli_init(&repo);

    let mut child = lifeboat(&repo)
        .args(["backup", "--name", "v", "--threads", "1"])
        .arg(&src)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        if objects(&repo, "data").len() >= 10 {
            break;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("backup finished ({status}) before it could be killed");
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no packs appeared"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let survivors = objects(&repo, "data");
    assert!(survivors.len() >= 10);
    assert!(
        objects(&repo, "snapshots").is_empty(),
        "no snapshot from a killed backup"
    );

    let out = lifeboat(&repo)
        .args(["backup", "--name", "v", "--json"])
        .arg(&src)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let adopted = v["summary"]["packs_adopted"].as_u64().unwrap();
    assert!(
        adopted as usize >= survivors.len(),
        "adopted {adopted} of {} packs",
        survivors.len()
    );
    // Every surviving pack is still there and nothing was uploaded twice.
    let after = objects(&repo, "data");
    assert!(survivors.iter().all(|p| after.contains(p)));
    let stored: u64 = after.iter().map(|p| fs::metadata(p).unwrap().len()).sum();
    assert!(
        stored < (96 << 20) + (6 << 20),
        "repository holds {stored} bytes for 96 MiB of data"
    );

    let check = lifeboat(&repo)
        .args(["check", "--read-data"])
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let target = tmp.path().join("restored");
    let r = lifeboat(&repo)
        .args(["restore", "latest", "--target"])
        .arg(&target)
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert_same_tree(&src, &target);
}
