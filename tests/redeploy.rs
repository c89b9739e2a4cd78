//! The restore-on-redeploy guide's simulation (`docs/redeploy-simulation.sh`): two wrapper
//! processes, separate empty volumes, one repository; the app on the second "lease" must find
//! every record the first one wrote. Run against a local directory and against SeaweedFS.

mod common;

use std::process::Command;

use common::seaweed::{self, ACCESS_KEY, SECRET_KEY};

fn simulate(repo: Option<String>) {
    let mut c = Command::new("bash");
    c.arg(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/redeploy-simulation.sh"
    ))
    .arg(env!("CARGO_BIN_EXE_lifeboat"))
    .env_remove("LIFEBOAT_REPOSITORY");
    if let Some(r) = repo {
        c.env("LIFEBOAT_REPOSITORY", r)
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .env("AWS_REGION", "us-east-1");
    }
    let out = c.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("OK: nothing lost"), "{text}");
    let found = text
        .lines()
        .find(|l| l.contains("the app on lease B said: FOUND"))
        .unwrap_or_else(|| panic!("{text}"));
    eprintln!("{found}");
}

#[test]
fn redeploy_simulation_local() {
    simulate(None);
}

#[test]
fn redeploy_simulation_seaweedfs() {
    let s = seaweed::server();
    simulate(Some(format!("s3:http://{}/redeploy/sim", s.s3)));
}

/// The first backup on a new lease, after the gate restored the volume, reads only what the app
/// changed: the restore's own copies have new inodes and ctimes, but the restore marker tells
/// them apart. A file the app rewrote to the same size and mtime is still read (its ctime moved).
#[test]
fn first_backup_after_a_restore_reads_only_what_changed_since() {
    use common::*;
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    cli_init(&repo);
    // The same mount path on both leases, as an SDL gives it.
    let data = tmp.path().join("lease1/data");
    for i in 0..20 {
        write(&data.join(format!("f{i:02}")), &random_bytes(50_000, i));
    }
    let out = lifeboat(&repo)
        .args(["backup", "--name", "v", "-q"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(out.status.success());
    // The new lease: the init-container form of the gate restores onto an empty volume.
    let vol = tmp.path().join("lease2/data");
    let out = lifeboat(&repo)
        .args(["restore", "latest", "--if-empty", "--name", "v", "--target"])
        .arg(&vol)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The app then: appends to one file, and rewrites another with the same size and mtime.
    let app = format!(
        "echo more >> {v}/f03 && m=$(stat -c %y {v}/f07) && head -c 50000 /dev/zero > {v}/f07 && touch -d \"$m\" {v}/f07",
        v = vol.display()
    );
    let out = lifeboat(&repo)
        .env("LIFEBOAT_PATH", &vol)
        .env("LIFEBOAT_NAME", "v")
        .env("LIFEBOAT_SCHEDULE", "off")
        .env("LIFEBOAT_LOG_FORMAT", "json")
        .args(["run", "--", "sh", "-c", &app])
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    let done: serde_json::Value = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["fields"]["message"] == "backup done")
        .unwrap_or_else(|| panic!("{log}"));
    // Exactly the two files the app touched: 50,005 + 50,000 bytes, not the volume's 1 MB.
    assert_eq!(done["fields"]["bytes_read"], 100_005, "{log}");
    // And the snapshot holds what the volume holds.
    let back = tmp.path().join("back");
    let out = lifeboat(&repo)
        .args(["restore", "latest", "--name", "v", "-t"])
        .arg(&back)
        .output()
        .unwrap();
    assert!(out.status.success());
    std::fs::remove_dir_all(vol.join(".lifeboat")).unwrap();
    let _ = std::fs::remove_dir_all(back.join(".lifeboat"));
    assert_eq!(manifest(&back), manifest(&vol));
}
