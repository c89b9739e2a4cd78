//! The everyday commands restic users reach for, through the binary: `diff`, `find`, `stats`,
//! `dump`, `tag`, `copy`, and `--password-command`.

mod common;

use std::fs;
use std::path::Path;
use std::process::Output;

use common::*;

fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

fn run(repo: &Path, args: &[&str]) -> String {
    ok(lifeboat(repo).args(args).output().unwrap())
}

fn json_lines(s: &str) -> Vec<serde_json::Value> {
    s.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Two snapshots of volume `v`: the second changes a file, removes one, adds one, changes a
/// mode, and turns a file into a directory.
fn two_snapshots(tmp: &Path) -> (std::path::PathBuf, std::path::PathBuf, Vec<String>) {
    let repo = tmp.join("repo");
    cli_init(&repo);
    let data = tmp.join("data");
    write(&data.join("keep.bin"), &random_bytes(300_000, 1));
    write(&data.join("edit.txt"), b"first version\n");
    write(&data.join("gone/old.db"), &random_bytes(50_000, 2));
    write(&data.join("mode.sh"), b"#!/bin/sh\n");
    write(&data.join("morph"), b"a file for now");
    run(
        &repo,
        &["backup", data.to_str().unwrap(), "--name", "v", "-q"],
    );
    write(&data.join("edit.txt"), b"second version, longer\n");
    fs::remove_dir_all(data.join("gone")).unwrap();
    write(&data.join("new/fresh.db"), &random_bytes(70_000, 3));
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(data.join("mode.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::remove_file(data.join("morph")).unwrap();
    write(&data.join("morph/inside"), b"now a directory");
    run(
        &repo,
        &["backup", data.to_str().unwrap(), "--name", "v", "-q"],
    );
    let ids: Vec<String> =
        serde_json::from_str::<serde_json::Value>(&run(&repo, &["snapshots", "--json"]))
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect();
    assert_eq!(ids.len(), 2);
    (repo, data, ids)
}

#[test]
fn diff_names_every_change_and_the_data_added_and_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let (repo, _, ids) = two_snapshots(tmp.path());
    let out = run(&repo, &["diff", &ids[0][..8], &ids[1][..8], "--json"]);
    let lines = json_lines(&out);
    let changes: Vec<(String, String)> = lines
        .iter()
        .filter(|v| v["message_type"] == "change")
        .map(|v| {
            (
                v["modifier"].as_str().unwrap().to_string(),
                v["path"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = [
        ("M", "/data/edit.txt"),
        ("-", "/data/gone/"),
        ("-", "/data/gone/old.db"),
        ("U", "/data/mode.sh"),
        ("T", "/data/morph/"),
        ("+", "/data/morph/inside"),
        ("+", "/data/new/"),
        ("+", "/data/new/fresh.db"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(changes, want, "{out}");
    let st = &lines.last().unwrap()["changes"];
    assert_eq!(st["added"], 3);
    assert_eq!(st["removed"], 2);
    assert_eq!(st["modified"], 1);
    assert_eq!(st["metadata"], 1);
    assert_eq!(st["type_changed"], 1);
    // Added: the new edit.txt, fresh.db, morph/inside; removed: old edit.txt, old.db, old morph.
    let added = st["bytes_added"].as_u64().unwrap();
    let removed = st["bytes_removed"].as_u64().unwrap();
    assert_eq!(added, 23 + 70_000 + 15, "{st}");
    assert_eq!(removed, 14 + 50_000 + 14, "{st}");
    // The same snapshot twice: nothing.
    let same = run(&repo, &["diff", &ids[1][..8], "latest", "--name", "v"]);
    assert!(same.contains("0 added, 0 removed, 0 changed"), "{same}");
}

#[test]
fn find_lists_each_snapshot_holding_a_match_and_says_so_when_none_does() {
    let tmp = tempfile::tempdir().unwrap();
    let (repo, _, ids) = two_snapshots(tmp.path());
    let hits = json_lines(&run(&repo, &["find", "*.db", "--json"]));
    let got: Vec<(String, String)> = hits
        .iter()
        .map(|v| {
            (
                v["snapshot"].as_str().unwrap()[..8].to_string(),
                v["path"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (ids[0][..8].to_string(), "/data/gone/old.db".to_string()),
            (ids[1][..8].to_string(), "/data/new/fresh.db".to_string()),
        ]
    );
    assert_eq!(hits[1]["size"], 70_000);
    // A path glob, limited to one snapshot.
    let text = run(&repo, &["find", "/data/*/inside", "-s", &ids[1][..8]]);
    assert!(text.contains("/data/morph/inside"), "{text}");
    // Nothing found: exit 1, like grep; a bad glob: a usage error naming it.
    let none = lifeboat(&repo)
        .args(["find", "*.nothing"])
        .output()
        .unwrap();
    assert_eq!(none.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&none.stderr).contains("0 match(es) in 0 of 2"));
    let bad = lifeboat(&repo).args(["find", "[oops"]).output().unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("pattern \"[oops\""));
    // A host that made nothing: said, not an empty success.
    let host = lifeboat(&repo)
        .args(["find", "*.db", "--host", "no-such-host"])
        .output()
        .unwrap();
    assert!(!host.status.success());
    assert!(String::from_utf8_lossy(&host.stderr).contains("no snapshot matches --host"));
}

#[test]
fn stats_counts_restore_size_once_per_snapshot_and_stored_data_once() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    cli_init(&repo);
    let data = tmp.path().join("data");
    write(&data.join("a"), &random_bytes(400_000, 7));
    write(&data.join("b"), &vec![0u8; 200_000]);
    for _ in 0..3 {
        run(
            &repo,
            &[
                "backup",
                data.to_str().unwrap(),
                "--name",
                "v",
                "--force",
                "-q",
            ],
        );
    }
    let v: serde_json::Value = serde_json::from_str(&run(&repo, &["stats", "--json"])).unwrap();
    let s = &v["volumes"]["v"];
    assert_eq!(s["snapshots"], 3);
    assert_eq!(s["latest_files"], 2);
    assert_eq!(s["latest_bytes"], 600_000);
    assert_eq!(s["restore_bytes"], 1_800_000);
    // Each distinct chunk once: the random file's bytes plus one zero chunk or a few.
    let raw = s["raw_bytes"].as_u64().unwrap();
    assert!((400_000..600_000).contains(&raw), "{s}");
    // The zeros compress; the random data does not.
    assert!(s["stored_bytes"].as_u64().unwrap() < raw, "{s}");
    assert_eq!(v["total"]["snapshots"], 3);
    let text = run(&repo, &["stats"]);
    assert!(text.contains("volume \"v\": 3 snapshot(s)"), "{text}");
}

#[test]
fn dump_writes_a_file_or_a_directory_as_tar_and_fails_on_damaged_data() {
    let tmp = tempfile::tempdir().unwrap();
    let (repo, data, _) = two_snapshots(tmp.path());
    let out = lifeboat(&repo)
        .args(["dump", "latest", "/data/keep.bin"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(out.stdout, fs::read(data.join("keep.bin")).unwrap());
    // Relative to the backed-up directory works too.
    let rel = lifeboat(&repo)
        .args(["dump", "latest", "edit.txt"])
        .output()
        .unwrap();
    assert_eq!(rel.stdout, b"second version, longer\n");
    // A directory: a tar that unpacks to the same tree.
    let tar_path = tmp.path().join("out.tar");
    run(
        &repo,
        &["dump", "latest", "/data", "-o", tar_path.to_str().unwrap()],
    );
    let unpack = tmp.path().join("unpacked");
    tar::Archive::new(fs::File::open(&tar_path).unwrap())
        .unpack(&unpack)
        .unwrap();
    assert_eq!(manifest(&unpack.join("data")), manifest(&data));
    // A tar archive is not written to a terminal (run under `script`, which gives it one).
    let tty = std::process::Command::new("script")
        .args([
            "-qec",
            &format!("{} dump latest /data", env!("CARGO_BIN_EXE_lifeboat")),
            "/dev/null",
        ])
        .env("LIFEBOAT_REPOSITORY", &repo)
        .env("LIFEBOAT_PASSWORD", PASSWORD)
        .output()
        .unwrap();
    assert!(!tty.status.success());
    assert!(
        String::from_utf8_lossy(&tty.stdout)
            .contains("refusing to write a tar archive to a terminal"),
        "{}",
        String::from_utf8_lossy(&tty.stdout)
    );
    // No such path: named.
    let missing = lifeboat(&repo)
        .args(["dump", "latest", "/data/nope"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/data/nope: no such path"));
    // A damaged data pack: the dump fails loudly and `-o` leaves no file behind.
    for p in objects(&repo, "data") {
        flip_byte(&p, 100);
    }
    let bad_target = tmp.path().join("bad.tar");
    let bad = lifeboat(&repo)
        .args([
            "dump",
            "latest",
            "/data",
            "-o",
            bad_target.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(
        !bad_target.exists(),
        "a failed dump left {}",
        bad_target.display()
    );
}

#[test]
fn tag_rewrites_snapshots_once_and_keeps_them_restorable() {
    let tmp = tempfile::tempdir().unwrap();
    let (repo, data, ids) = two_snapshots(tmp.path());
    let out = run(
        &repo,
        &["tag", "--add", "golden", "--add", "x", &ids[0][..8]],
    );
    assert!(out.contains("1 of 1 snapshot(s) changed"), "{out}");
    let snaps: serde_json::Value =
        serde_json::from_str(&run(&repo, &["snapshots", "--json"])).unwrap();
    let snaps = snaps.as_array().unwrap();
    assert_eq!(snaps.len(), 2, "the old object is gone");
    let tagged = snaps
        .iter()
        .find(|s| s["tags"] == serde_json::json!(["golden", "x"]))
        .unwrap();
    assert_ne!(tagged["id"], ids[0].as_str());
    assert_eq!(tagged["original"]["id"], ids[0].as_str());
    // Again: nothing to do. Removing one, then selecting by tag.
    let again = run(
        &repo,
        &[
            "tag",
            "--add",
            "golden",
            tagged["short_id"].as_str().unwrap(),
        ],
    );
    assert!(again.contains("0 of 1 snapshot(s) changed"), "{again}");
    run(&repo, &["tag", "--remove", "x", "--tag", "golden"]);
    let snaps: serde_json::Value =
        serde_json::from_str(&run(&repo, &["snapshots", "--json"])).unwrap();
    let t = snaps
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["tags"] == serde_json::json!(["golden"]))
        .unwrap();
    // A rewrite of a rewrite still names the first original.
    assert_eq!(t["original"]["id"], ids[0].as_str());
    // The latest is still the newer backup, and the tagged one restores.
    let latest = run(&repo, &["ls", "latest", "--name", "v"]);
    assert!(latest.contains("/data/new/fresh.db"));
    let target = tmp.path().join("r");
    run(
        &repo,
        &[
            "restore",
            t["short_id"].as_str().unwrap(),
            "-t",
            target.to_str().unwrap(),
            "-q",
        ],
    );
    assert!(target.join("gone/old.db").exists());
    let _ = data;
    // Nothing to change: a usage error, not a silent success.
    let none = lifeboat(&repo).args(["tag", "latest"]).output().unwrap();
    assert!(!none.status.success());
}

#[test]
fn copy_reencrypts_into_a_second_repository_dedups_and_is_idempotent() {
    let tmp = tempfile::tempdir().unwrap();
    let (repo, data, _) = two_snapshots(tmp.path());
    let dst = tmp.path().join("second");
    let pwfile = tmp.path().join("pw2");
    fs::write(&pwfile, "another password\n").unwrap();
    ok(lifeboat(&dst)
        .env("LIFEBOAT_PASSWORD", "another password")
        .args(["init", "--kdf-memory-kib", "64", "--kdf-time", "1"])
        .output()
        .unwrap());
    let copy = |extra: &[&str]| {
        let mut c = lifeboat(&repo);
        c.args(["copy", "--to", dst.to_str().unwrap(), "--json"])
            .env("LIFEBOAT_TO_PASSWORD_FILE", &pwfile)
            .args(extra);
        serde_json::from_str::<serde_json::Value>(&ok(c.output().unwrap())).unwrap()
    };
    let first = copy(&[]);
    assert_eq!(first["copied"].as_array().unwrap().len(), 2);
    assert!(first["blobs_stored"].as_u64().unwrap() > 5);
    let second = copy(&[]);
    assert_eq!(second["copied"].as_array().unwrap().len(), 0);
    assert_eq!(second["skipped"].as_array().unwrap().len(), 2);
    // A third backup that changes one file: its copy stores only what is new.
    write(&data.join("edit.txt"), b"third\n");
    run(
        &repo,
        &["backup", data.to_str().unwrap(), "--name", "v", "-q"],
    );
    let third = copy(&["latest", "--name", "v"]);
    assert_eq!(third["copied"].as_array().unwrap().len(), 1);
    assert!(
        third["blobs_deduplicated"].as_u64().unwrap() >= 2,
        "{third}"
    );
    assert!(third["bytes_stored"].as_u64().unwrap() < 300_000, "{third}");
    // The destination opens with its own password, checks clean reading every pack, and
    // restores the latest snapshot byte for byte.
    let in_dst = |args: &[&str]| {
        ok(lifeboat(&dst)
            .env("LIFEBOAT_PASSWORD", "another password")
            .args(args)
            .output()
            .unwrap())
    };
    assert!(in_dst(&["check", "--read-data"]).contains("no errors were found"));
    let target = tmp.path().join("restored");
    in_dst(&[
        "restore",
        "latest",
        "--name",
        "v",
        "-t",
        target.to_str().unwrap(),
        "-q",
    ]);
    assert_eq!(manifest(&target), manifest(&data));
    // The source itself as destination: refused.
    let same = lifeboat(&repo)
        .args(["copy", "--to", repo.to_str().unwrap()])
        .env("LIFEBOAT_TO_PASSWORD", PASSWORD)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&same.stderr).contains("the source repository itself"));
}

#[test]
fn password_command_gives_the_password_and_a_failing_one_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    cli_init(&repo);
    let out = lifeboat(&repo)
        .env_remove("LIFEBOAT_PASSWORD")
        .args([
            "--password-command",
            &format!("printf '%s\\n' '{PASSWORD}'"),
            "snapshots",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (cmd, says) in [("exit 3", "failed"), ("true", "printed nothing")] {
        let out = lifeboat(&repo)
            .env("LIFEBOAT_PASSWORD_COMMAND", cmd)
            .arg("snapshots")
            .output()
            .unwrap();
        assert!(!out.status.success());
        let e = String::from_utf8_lossy(&out.stderr);
        assert!(e.contains(says) && e.contains(cmd), "{e}");
    }
    // Wrong password from the command: the wrong-password exit code.
    let out = lifeboat(&repo)
        .args(["--password-command", "echo nope", "snapshots"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(12));
}

#[test]
fn backup_takes_lists_from_files_and_stays_on_one_file_system() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    cli_init(&repo);
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    write(&a.join("keep.txt"), b"keep");
    write(&a.join("cache/junk.tmp"), b"junk");
    write(&a.join("skip.log"), b"log");
    write(&b.join("other.txt"), b"other");
    let list = tmp.path().join("paths.txt");
    fs::write(
        &list,
        format!(
            "# what to back up\n{}\n\n  {}  \n",
            a.display(),
            b.display()
        ),
    )
    .unwrap();
    let ex = tmp.path().join("excludes.txt");
    fs::write(&ex, "# noise\n*.log\n\ncache\n").unwrap();
    run(
        &repo,
        &[
            "backup",
            "--files-from",
            list.to_str().unwrap(),
            "--exclude-file",
            ex.to_str().unwrap(),
            "--name",
            "lists",
            "-q",
        ],
    );
    let ls = run(&repo, &["ls", "latest", "--name", "lists"]);
    let paths: Vec<&str> = ls.lines().collect();
    assert_eq!(paths, ["/a", "/a/keep.txt", "/b", "/b/other.txt"], "{ls}");
    // A list file that cannot be read stops the backup, naming the option.
    let out = lifeboat(&repo)
        .args([
            "backup",
            "--exclude-file",
            "/nonexistent/excludes",
            a.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--exclude-file /nonexistent/excludes"));

    // --one-file-system: a tmpfs mounted inside the backup path is left out, its mount point
    // kept. (The test suite runs as root, as CI does.)
    let mnt = a.join("mnt");
    fs::create_dir(&mnt).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "none", mnt.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(mounted.success(), "mounting a tmpfs needs root");
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _guard = Unmount(mnt.clone());
    write(&mnt.join("elsewhere.txt"), b"on another file system");
    run(
        &repo,
        &["backup", a.to_str().unwrap(), "--name", "xdev", "-x", "-q"],
    );
    let ls = run(&repo, &["ls", "latest", "--name", "xdev"]);
    assert!(ls.lines().any(|l| l == "/a/mnt"), "{ls}");
    assert!(!ls.contains("elsewhere.txt"), "{ls}");
    run(
        &repo,
        &["backup", a.to_str().unwrap(), "--name", "all", "-q"],
    );
    assert!(run(&repo, &["ls", "latest", "--name", "all"]).contains("/a/mnt/elsewhere.txt"));
}

#[test]
fn read_data_subset_takes_a_size_and_upload_limit_paces_the_backup() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    cli_init(&repo);
    let data = tmp.path().join("data");
    write(&data.join("big"), &random_bytes(3 << 20, 11));
    let t = std::time::Instant::now();
    run(
        &repo,
        &[
            "--limit-upload",
            "1024",
            "backup",
            data.to_str().unwrap(),
            "-q",
        ],
    );
    // 3 MiB of incompressible data at 1 MiB/s cannot be done in much under 3 s.
    assert!(
        t.elapsed() >= std::time::Duration::from_millis(2500),
        "{:?}",
        t.elapsed()
    );
    let packs = objects(&repo, "data").len();
    assert!(packs >= 3, "{packs} packs");
    let read = |subset: &str| -> u64 {
        let v: serde_json::Value = serde_json::from_str(&run(
            &repo,
            &["check", "--read-data-subset", subset, "--json"],
        ))
        .unwrap();
        v["report"]["packs_read"].as_u64().unwrap()
    };
    assert_eq!(read("1K"), 1, "a small budget still reads one pack");
    assert_eq!(read("5G") as usize, packs);
    // A byte budget takes packs in a random order until it is met. Pack sizes vary with the
    // chunk boundaries and with how the upload pipeline filled them, so the count is not fixed;
    // what must hold for any order is that k packs can reach 2 MiB (the k largest do) and that
    // k - 1 could not have stopped short of it (the k - 1 smallest do not reach it).
    let mut sizes: Vec<u64> = objects(&repo, "data")
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .collect();
    sizes.sort_unstable();
    let want = 2u64 << 20;
    for _ in 0..5 {
        let k = read("2MiB") as usize;
        assert!(
            (1..=packs).contains(&k),
            "{k} packs for 2 MiB, of {packs}: {sizes:?}"
        );
        let largest: u64 = sizes.iter().rev().take(k).sum();
        let smallest_but_one: u64 = sizes.iter().take(k - 1).sum();
        assert!(
            (largest >= want || k == packs) && smallest_but_one < want,
            "{k} packs for 2 MiB cannot be a budget's choice among {sizes:?}"
        );
    }
    let bad = lifeboat(&repo)
        .args(["check", "--read-data-subset", "5X"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&bad.stderr).contains("a size like 5G"));
}
