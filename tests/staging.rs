//! Staging needs no undocumented disk: S3 backups stage packs in `LIFEBOAT_STAGING_DIR` (default
//! TMPDIR), and the agent checks it for room at start. On a 40 MiB tmpfs (mounted when the tests
//! run as root and may mount; otherwise the free-space half is skipped loudly):
//!
//! - TMPDIR or LIFEBOAT_STAGING_DIR there: the agent refuses at once with one line;
//! - TMPDIR there but LIFEBOAT_STAGING_DIR on a large disk: an S3 backup of 80 MB succeeds, its
//!   packs staged in LIFEBOAT_STAGING_DIR.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::seaweed;

struct Tmpfs(std::path::PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn small_tmpfs(at: &Path) -> Option<Tmpfs> {
    std::fs::create_dir_all(at).unwrap();
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=40m", "tmpfs"])
        .arg(at)
        .output()
        .is_ok_and(|o| o.status.success());
    ok.then(|| Tmpfs(at.to_path_buf()))
}

fn text(o: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn agent(url: &str, home: &Path, volume: &Path) -> Command {
    let mut c = seaweed::lifeboat_s3(url, home);
    c.env("LIFEBOAT_PATH", volume)
        .env("LIFEBOAT_NAME", "staging")
        .env("LIFEBOAT_CACHE_DIR", home.join("cache"))
        .env("LIFEBOAT_LEASE_TTL", "10s")
        .env("LIFEBOAT_SCHEDULE", "off");
    c
}

#[test]
fn an_unusable_staging_directory_is_refused_at_start() {
    let t = tempfile::tempdir().unwrap();
    let v = t.path().join("vol");
    common::write(&v.join("a"), b"a");
    let file = t.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let out = agent("s3:http://127.0.0.1:1/b/r", t.path(), &v)
        .env("LIFEBOAT_STAGING_DIR", &file)
        .args(["daemon"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("LIFEBOAT_STAGING_DIR"),
        "{}",
        text(&out)
    );
}

#[test]
fn a_small_tmpdir_is_refused_at_start_and_a_staging_dir_elsewhere_works() {
    let t = tempfile::tempdir().unwrap();
    let Some(small) = small_tmpfs(&t.path().join("small")) else {
        println!(
            "SKIPPED a_small_tmpdir_is_refused_at_start: cannot mount a tmpfs here (needs root)"
        );
        eprintln!("SKIPPED: cannot mount a 40 MiB tmpfs");
        return;
    };
    let v = t.path().join("vol");
    for i in 0..8 {
        common::write(
            &v.join(format!("f{i}")),
            &common::random_bytes(10_000_000, i),
        );
    }
    // Refused whether the small disk is TMPDIR (the default) or named explicitly.
    for (k, val) in [("TMPDIR", &small.0), ("LIFEBOAT_STAGING_DIR", &small.0)] {
        let out = agent("s3:http://127.0.0.1:1/b/r", t.path(), &v)
            .env(k, val)
            .args(["run", "--", "true"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{k}: {}", text(&out));
        let line = err
            .lines()
            .find(|l| l.contains("MiB free"))
            .unwrap_or_else(|| panic!("{k}: {}", text(&out)));
        assert!(line.contains("LIFEBOAT_STAGING_DIR"), "{line}");
        println!("STAGING {k}=40 MiB tmpfs: exit 1: {line}");
    }
    // TMPDIR stays small; packs go to the staging directory: an 80 MB backup to S3 succeeds.
    seaweed::set_credentials();
    let s = seaweed::server();
    let url = format!("s3:http://{}/staging-{}/repo", s.s3, std::process::id());
    let staging = t.path().join("staging");
    let out = agent(&url, t.path(), &v)
        .env("TMPDIR", &small.0)
        .env("LIFEBOAT_STAGING_DIR", &staging)
        .args(["run", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("final backup done"),
        "{}",
        text(&out)
    );
    println!("STAGING TMPDIR=40 MiB tmpfs, LIFEBOAT_STAGING_DIR elsewhere: 80 MB S3 backup done");
}
