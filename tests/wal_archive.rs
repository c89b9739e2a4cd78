//! The WAL archive against a hostile or damaged store, without a PostgreSQL server: what
//! `wal-push` and `wal-fetch` (PostgreSQL's archive and restore commands) do when an object is
//! altered, moved, missing in the middle, or pushed twice, and what `check` and `prune` do with
//! the archive. A restore command that said "not archived" for a damaged or missing-in-the-middle
//! file would end PostgreSQL's recovery early and silently: each of those must be exit 126.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::{cli_init, flip_byte, lifeboat, open_repo};
use lifeboat::backup::{self, BackupOptions, Source};
use lifeboat::wal::socket::{WalServer, WalService};
use lifeboat::wal::{Fetched, Pushed, WalArchive};

const VOLUME: &str = "pg";

fn seg(n: u32) -> String {
    format!("00000001000000000000{n:04X}")
}

/// A WAL-like file: mostly zeros (a segment switched early), a distinct head.
fn body(n: u32) -> Vec<u8> {
    let mut b = vec![0u8; 1 << 20];
    for (i, x) in b.iter_mut().take(4096).enumerate() {
        *x = (i as u32 ^ n.wrapping_mul(2_654_435_761)) as u8;
    }
    b
}

fn object(repo_dir: &Path, name: &str) -> std::path::PathBuf {
    let repo = open_repo(repo_dir);
    let a = WalArchive::new(&repo, VOLUME);
    repo_dir.join(a.prefix()).join(name)
}

fn cli_fetch(repo_dir: &Path, name: &str, dest: &Path) -> (i32, String) {
    let out = lifeboat(repo_dir)
        .args(["wal-fetch", "--name", VOLUME, name])
        .arg(dest)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A stand-in data directory to take "base backups" of.
fn data_dir(base: &Path) -> std::path::PathBuf {
    let data = base.join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("PG_VERSION"), "15\n").unwrap();
    data
}

/// A base backup snapshot whose first WAL segment is `start`.
fn base_backup(repo_dir: &Path, data: &Path, start: &str) {
    let repo = open_repo(repo_dir);
    let mut opts = BackupOptions::new(VOLUME);
    opts.method = Some("postgres".into());
    opts.labels
        .insert("lifeboat.pg.start_wal".into(), start.into());
    backup::backup(&repo, &Source::Paths(vec![data.to_path_buf()]), &opts).unwrap();
}

#[test]
fn pushes_are_create_only_and_a_retry_of_the_same_bytes_succeeds() {
    let t = tempfile::tempdir().unwrap();
    cli_init(t.path());
    let repo = open_repo(t.path());
    let a = WalArchive::new(&repo, VOLUME);
    let stored = a.push(&seg(1), &body(1)).unwrap();
    let Pushed::Stored(n) = stored else {
        panic!("first push: {stored:?}")
    };
    assert!(
        n < 64 * 1024,
        "a mostly-empty segment compresses: {n} bytes"
    );
    assert_eq!(a.push(&seg(1), &body(1)).unwrap(), Pushed::AlreadyThere);
    let e = a.push(&seg(1), &body(2)).unwrap_err().to_string();
    assert!(e.contains("different contents"), "{e}");
    match a.fetch(&seg(1)).unwrap() {
        Fetched::Found(b) => assert_eq!(b, body(1)),
        other => panic!("{other:?}"),
    }
    for bad in ["../config", "config", "00000001000000000000000G", ""] {
        assert!(a.push(bad, b"x").is_err(), "{bad:?} accepted");
    }
}

#[test]
fn a_damaged_or_moved_wal_object_stops_recovery_instead_of_ending_it() {
    let t = tempfile::tempdir().unwrap();
    cli_init(t.path());
    {
        let repo = open_repo(t.path());
        let a = WalArchive::new(&repo, VOLUME);
        for n in 1..=3 {
            a.push(&seg(n), &body(n)).unwrap();
        }
    }
    let dest = t.path().join("out");
    let (code, _) = cli_fetch(t.path(), &seg(1), &dest);
    assert_eq!(code, 0);
    assert_eq!(std::fs::read(&dest).unwrap(), body(1));

    // One flipped byte: not "missing" (exit 1) but fatal (126), and nothing written.
    flip_byte(&object(t.path(), &seg(2)), -20);
    let dest2 = t.path().join("out2");
    let (code, err) = cli_fetch(t.path(), &seg(2), &dest2);
    assert_eq!(code, 126, "{err}");
    assert!(!dest2.exists());
    assert!(err.contains(&seg(2)), "{err}");

    // Segment 1's object served under segment 3's name: fails to authenticate.
    std::fs::copy(object(t.path(), &seg(1)), object(t.path(), &seg(3))).unwrap();
    let (code, err) = cli_fetch(t.path(), &seg(3), &t.path().join("out3"));
    assert_eq!(code, 126, "{err}");
}

#[test]
fn a_hole_in_the_archive_is_fatal_and_check_names_it_and_the_end_is_not() {
    let t = tempfile::tempdir().unwrap();
    cli_init(t.path());
    let data = data_dir(t.path());
    {
        let repo = open_repo(t.path());
        let a = WalArchive::new(&repo, VOLUME);
        for n in [1, 2, 3, 5] {
            a.push(&seg(n), &body(n)).unwrap();
        }
        a.push(
            "00000002.history",
            b"1\t0/5000000\tno recovery target specified\n",
        )
        .unwrap();
    }
    base_backup(t.path(), &data, &seg(2));
    // Segment 4 is missing while 5 is there: a hole.
    let (code, err) = cli_fetch(t.path(), &seg(4), &t.path().join("o"));
    assert_eq!(code, 126, "{err}");
    assert!(err.contains("hole"), "{err}");
    // Past the newest archived segment: the normal end of recovery.
    let (code, err) = cli_fetch(t.path(), &seg(6), &t.path().join("o"));
    assert_eq!(code, 1, "{err}");
    // Another timeline's file that was never archived: also the normal answer.
    let (code, _) = cli_fetch(t.path(), "00000003.history", &t.path().join("o"));
    assert_eq!(code, 1);

    let out = lifeboat(t.path()).arg("check").output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "check passed with a hole: {text}");
    assert!(text.contains(&seg(4)), "{text}");

    // Filled: check passes.
    {
        let repo = open_repo(t.path());
        WalArchive::new(&repo, VOLUME)
            .push(&seg(4), &body(4))
            .unwrap();
    }
    let out = lifeboat(t.path()).arg("check").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A damaged object: only --read-data opens every WAL object.
    flip_byte(&object(t.path(), &seg(3)), -5);
    let out = lifeboat(t.path())
        .args(["check", "--read-data"])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains(&seg(3)), "{text}");
}

#[test]
fn prune_removes_wal_older_than_the_oldest_kept_base_backup_only() {
    let t = tempfile::tempdir().unwrap();
    cli_init(t.path());
    let data = data_dir(t.path());
    {
        let repo = open_repo(t.path());
        let a = WalArchive::new(&repo, VOLUME);
        for n in 1..=6 {
            a.push(&seg(n), &body(n)).unwrap();
        }
        a.push(&format!("{}.00000028.backup", seg(3)), b"START")
            .unwrap();
        a.push("00000002.history", b"1\t0/3000000\n").unwrap();
    }
    base_backup(t.path(), &data, &seg(4));
    std::fs::write(data.join("x"), "changed").unwrap();
    base_backup(t.path(), &data, &seg(6));
    let out = lifeboat(t.path())
        .args(["prune", "--dry-run"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let repo = open_repo(t.path());
    assert_eq!(
        WalArchive::new(&repo, VOLUME).list().unwrap().len(),
        8,
        "dry run deleted"
    );
    let report = lifeboat::prune::prune(&repo, &lifeboat::prune::PruneOptions::default()).unwrap();
    assert_eq!(report.wal_files_deleted, 4);
    let left: Vec<String> = WalArchive::new(&repo, VOLUME)
        .list()
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(
        left,
        vec![seg(4), seg(5), seg(6), "00000002.history".to_string()]
    );
}

struct Direct(std::path::PathBuf);

impl WalService for Direct {
    fn push(&self, name: &str, bytes: &[u8]) -> lifeboat::Result<()> {
        let repo = open_repo(&self.0);
        WalArchive::new(&repo, VOLUME).push(name, bytes).map(|_| ())
    }
    fn fetch(&self, name: &str) -> lifeboat::Result<Fetched> {
        let repo = open_repo(&self.0);
        WalArchive::new(&repo, VOLUME).fetch_checked(name)
    }
}

#[test]
fn the_agent_socket_carries_pushes_and_fetches_with_the_same_exit_codes() {
    let t = tempfile::tempdir().unwrap();
    cli_init(t.path());
    let sock = t.path().join("run/wal.sock");
    let _server = WalServer::start(&sock, Arc::new(Direct(t.path().to_path_buf()))).unwrap();
    let wal = t.path().join("pg_wal");
    std::fs::create_dir_all(&wal).unwrap();
    for n in [1, 2, 4] {
        std::fs::write(wal.join(seg(n)), body(n)).unwrap();
        let out = lifeboat(t.path())
            .env_remove("LIFEBOAT_PASSWORD")
            .args(["wal-push", "--socket"])
            .arg(&sock)
            .arg(wal.join(seg(n)))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let fetch = |name: &str| {
        let dest = t.path().join("fetched");
        let _ = std::fs::remove_file(&dest);
        let out = lifeboat(t.path())
            .env_remove("LIFEBOAT_PASSWORD")
            .args(["wal-fetch", "--socket"])
            .arg(&sock)
            .arg(name)
            .arg(&dest)
            .output()
            .unwrap();
        (out.status.code(), std::fs::read(&dest).ok())
    };
    assert_eq!(fetch(&seg(2)), (Some(0), Some(body(2))));
    assert_eq!(fetch(&seg(3)).0, Some(126), "hole");
    assert_eq!(fetch(&seg(5)).0, Some(1), "end of the archive");
    // A push of other bytes under an archived name is refused through the socket too.
    std::fs::write(wal.join(seg(1)), body(9)).unwrap();
    let out = lifeboat(t.path())
        .args(["wal-push", "--socket"])
        .arg(&sock)
        .arg(wal.join(seg(1)))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("different contents"));
    // No agent: a loud failure naming the socket, never a success.
    let out = lifeboat(t.path())
        .args(["wal-push", "--socket"])
        .arg(t.path().join("nothing.sock"))
        .arg(wal.join(seg(2)))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing.sock"));
}
