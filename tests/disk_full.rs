//! A full disk is an error that names the cause, never a panic, and it loses nothing already
//! stored. Uses a 2 MiB tmpfs, so it needs root (CI runs as root); elsewhere it says why it
//! did not run.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        ok.then(|| Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn full_disks_fail_cleanly_for_backup_and_restore() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(fs) = Tmpfs::mount(&tmp.path().join("small"), "2m") else {
        eprintln!("disk_full: cannot mount a tmpfs here (needs root); not run");
        return;
    };
    let src = tmp.path().join("src");
    write(&src.join("small.txt"), b"fits");
    let repo = fs.0.join("repo");
    cli_init(&repo);
    let ok = lifeboat(&repo)
        .args(["backup", "--name", "v"])
        .arg(&src)
        .output()
        .unwrap();
    assert!(ok.status.success());

    write(&src.join("big.bin"), &random_bytes(4 << 20, 1));
    let out = lifeboat(&repo)
        .args(["backup", "--name", "v"])
        .arg(&src)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("No space left"), "{err}");
    assert!(!err.contains("panicked"));
    assert_eq!(
        objects(&repo, "snapshots").len(),
        1,
        "no snapshot from the failed backup"
    );
    // The earlier snapshot still restores.
    let t = tmp.path().join("t");
    let r = lifeboat(&repo)
        .args(["restore", "latest", "--target"])
        .arg(&t)
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert_eq!(std::fs::read(t.join("small.txt")).unwrap(), b"fits");

    // Restore onto a full disk names the file it could not write.
    let big_repo = tmp.path().join("repo2");
    cli_init(&big_repo);
    assert!(
        lifeboat(&big_repo)
            .arg("backup")
            .arg(&src)
            .output()
            .unwrap()
            .status
            .success()
    );
    let target = fs.0.join("restore");
    let out = lifeboat(&big_repo)
        .args(["restore", "latest", "--target"])
        .arg(&target)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("big.bin") && err.contains("No space left"),
        "{err}"
    );
    assert!(!err.contains("panicked"));
}
