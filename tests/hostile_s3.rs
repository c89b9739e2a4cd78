//! The real binary against a hostile S3 server (tests/common/hostile_server.rs) that serves a
//! real repository and misbehaves in one way per test: endless bodies, bodies longer than
//! announced, endless ranged reads, a one-byte-a-second drip, endless pagination, a million
//! listed keys, and listed keys that are not valid object keys. Each command must end within a
//! bound, without a panic, with peak RSS under 256 MB, and (unless the case is survivable) fail
//! with a last error line naming the object or prefix. One `HOSTILE` line per run is printed so
//! the figures can be quoted (`cargo test --release --test hostile_s3 -- --nocapture`).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::hostile_server::{HostileServer, Misbehaviour};
use common::*;

const BUCKET: &str = "hostile";
const PREFIX: &str = "repo";
const RSS_LIMIT_MB: f64 = 256.0;
const TIME_LIMIT: Duration = Duration::from_secs(60);

/// One repository for all cases: `<dir>/hostile/repo`, served as bucket `hostile`.
fn repository() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("lifeboat-hostile-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let src = dir.join("src");
        for i in 0..4 {
            write(&src.join(format!("big/{i}.bin")), &random_bytes(400_000, i));
        }
        for i in 0..20 {
            write(
                &src.join(format!("small/f{i}")),
                format!("{i}").repeat(i + 1).as_bytes(),
            );
        }
        let repo = init_repo(&dir.join(BUCKET).join(PREFIX));
        backup_dir(&repo, &src, "h");
        dir
    })
}

struct Outcome {
    code: i32,
    secs: f64,
    rss_mb: f64,
    stderr: String,
}

impl Outcome {
    /// The last error line that names something: the last `lifeboat:` line other than a
    /// summary pointing at the lines above (restore lists each failed file), else the last line.
    fn error_line(&self) -> &str {
        let mut lines = self.stderr.lines().rev().filter(|l| !l.trim().is_empty());
        self.stderr
            .lines()
            .rev()
            .find(|l| l.starts_with("lifeboat:") && !l.contains("listed above"))
            .or_else(|| lines.next())
            .unwrap_or("")
    }
}

/// A scratch directory per case: HOME, cache and output files live here.
fn scratch(case: &str) -> PathBuf {
    let d = repository().join(format!("case-{case}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs the binary against `server` with short timeouts and a small retry budget, with its
/// own HOME and `LIFEBOAT_CACHE_DIR=cache`.
///
/// Peak RSS comes from `wait4`'s `ru_maxrss`. Linux carries the spawning process's peak RSS
/// into its child's at exec, and this test process grows (the million-key listing of case (f)
/// lives here), so the binary is not spawned from here but from a fresh copy of this test
/// executable running only [`spawn_helper`] (a few MB): that copy spawns it, waits with
/// `wait4`, kills it after twice the time limit, and writes exit status, seconds and
/// `ru_maxrss` to a file.
fn run(case: &str, server: &HostileServer, work: &Path, cache: &Path, args: &[&str]) -> Outcome {
    let url = format!("s3:http://{}/{BUCKET}/{PREFIX}", server.addr);
    let slug: String = case
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let err = work.join(format!("{slug}.stderr"));
    let result = work.join(format!("{slug}.result"));
    let status = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "spawn_helper",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOSTILE_SPAWN_ARGS", args.join("\x1f"))
        .env("HOSTILE_SPAWN_STDOUT", work.join(format!("{slug}.stdout")))
        .env("HOSTILE_SPAWN_STDERR", &err)
        .env("HOSTILE_SPAWN_RESULT", &result)
        .env("HOME", work.join("home"))
        .env("LIFEBOAT_CACHE_DIR", cache)
        .env("LIFEBOAT_REPOSITORY", &url)
        .env("LIFEBOAT_PASSWORD", PASSWORD)
        .env("AWS_ACCESS_KEY_ID", "hostile")
        .env("AWS_SECRET_ACCESS_KEY", "hostile-secret")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("LIFEBOAT_S3_PATH_STYLE", "true")
        .env("LIFEBOAT_S3_STALL_TIMEOUT", "3s")
        .env("LIFEBOAT_S3_DEADLINE", "4s")
        .env("LIFEBOAT_S3_LIST_DEADLINE", "8s")
        .env("LIFEBOAT_RETRY_ATTEMPTS", "3")
        .env("LIFEBOAT_RETRY_BASE_MS", "50")
        .env("LIFEBOAT_RETRY_BUDGET", "10s")
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "{case}: spawn helper failed: {status}");
    let r = std::fs::read_to_string(&result).unwrap();
    let f: Vec<&str> = r.split_whitespace().collect();
    let o = Outcome {
        code: f[0].parse().unwrap(),
        secs: f[1].parse().unwrap(),
        rss_mb: f[2].parse::<f64>().unwrap() / 1024.0,
        stderr: std::fs::read_to_string(&err).unwrap_or_default(),
    };
    println!(
        "HOSTILE case={case} cmd={:?} exit={} secs={:.1} max_rss_mb={:.0} error={:?}",
        args.join(" "),
        o.code,
        o.secs,
        o.rss_mb,
        o.error_line()
    );
    o
}

/// Not a test of its own: when `HOSTILE_SPAWN_ARGS` is set (by [`run`], in a fresh copy of
/// this executable) it runs the lifeboat binary with those arguments and records exit code,
/// seconds and peak RSS (kB) from `wait4`.
#[test]
// The child is reaped by `wait4` on its pid (for its rusage), not by `Child::wait`.
#[allow(clippy::zombie_processes)]
fn spawn_helper() {
    let Ok(args) = std::env::var("HOSTILE_SPAWN_ARGS") else {
        return;
    };
    let path = |v: &str| PathBuf::from(std::env::var_os(v).unwrap());
    let child = Command::new(env!("CARGO_BIN_EXE_lifeboat"))
        .args(args.split('\x1f'))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(path("HOSTILE_SPAWN_STDOUT")).unwrap())
        .stderr(std::fs::File::create(path("HOSTILE_SPAWN_STDERR")).unwrap())
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    let start = Instant::now();
    let mut status = 0;
    // SAFETY: a zeroed rusage is a valid value; wait4 fills it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let mut killed = false;
    loop {
        // SAFETY: pid is our child; status and usage point to valid memory.
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if r == pid {
            break;
        }
        assert!(r == 0, "wait4: {}", std::io::Error::last_os_error());
        if !killed && start.elapsed() > TIME_LIMIT * 2 {
            // SAFETY: a signal to our own child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            killed = true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    };
    std::fs::write(
        path("HOSTILE_SPAWN_RESULT"),
        format!(
            "{code} {:.3} {}\n",
            start.elapsed().as_secs_f64(),
            usage.ru_maxrss
        ),
    )
    .unwrap();
}

/// Bounded, no panic, RSS under the limit.
fn assert_contained(case: &str, o: &Outcome) {
    assert!(
        o.code != 101 && !o.stderr.contains("panicked"),
        "{case}: panicked:\n{}",
        o.stderr
    );
    assert!(
        o.secs < TIME_LIMIT.as_secs_f64(),
        "{case}: took {:.1}s:\n{}",
        o.secs,
        o.stderr
    );
    assert!(
        o.rss_mb < RSS_LIMIT_MB,
        "{case}: peak RSS {:.0} MB",
        o.rss_mb
    );
}

/// Contained, and failed with a last line naming one of `names`.
fn assert_fails_naming(case: &str, o: &Outcome, names: &[&str]) {
    assert_contained(case, o);
    assert!(o.code != 0, "{case}: succeeded:\n{}", o.stderr);
    let last = o.error_line();
    assert!(
        names.iter().any(|n| last.contains(n)),
        "{case}: last error line names none of {names:?}: {last}\n{}",
        o.stderr
    );
}

#[test]
fn a_endless_body_on_config() {
    let work = scratch("a");
    let s = HostileServer::start(
        &repository().join(BUCKET),
        BUCKET,
        Misbehaviour::EndlessConfig,
    );
    let o = run(
        "a-endless-config",
        &s,
        &work,
        &work.join("cache"),
        &["snapshots"],
    );
    assert_fails_naming("a", &o, &["config"]);
    assert!(o.error_line().contains("65536"), "{}", o.error_line());
}

#[test]
fn b_bodies_longer_than_announced() {
    let work = scratch("b");
    let root = repository().join(BUCKET);
    // Longer than the Content-Length: the client reads what was announced and no more.
    for dir in ["keys/", "snapshots/"] {
        let s = HostileServer::start(&root, BUCKET, Misbehaviour::LongerThanDeclared(dir));
        let case = format!("b-longer-{dir}");
        let o = run(&case, &s, &work, &work.join(&case), &["snapshots"]);
        assert_contained("b", &o);
        assert!(
            o.code == 0 || o.error_line().contains(dir),
            "{dir}: {}",
            o.stderr
        );
    }
    // A Content-Length of 5 GB on a snapshot: refused before the body is read.
    let s = HostileServer::start(&root, BUCKET, Misbehaviour::HugeDeclared("snapshots/"));
    let o = run(
        "b-huge-snapshot",
        &s,
        &work,
        &work.join("c1"),
        &["ls", "latest"],
    );
    assert_contained("b", &o);
    assert!(o.code != 0, "{}", o.stderr);
    // `latest` skips an unreadable snapshot with a warning naming it (and then finds none).
    assert!(
        o.stderr
            .lines()
            .any(|l| l.contains("snapshots/") && l.contains("5000000000 bytes")),
        "{}",
        o.stderr
    );
    // And on the key object: no key opens, and nothing of the 5 GB is read.
    let s = HostileServer::start(&root, BUCKET, Misbehaviour::HugeDeclared("keys/"));
    let o = run("b-huge-key", &s, &work, &work.join("c2"), &["snapshots"]);
    assert_contained("b", &o);
    assert!(o.code != 0, "{}", o.stderr);
}

#[test]
fn c_endless_ranged_reads_during_restore() {
    let work = scratch("c");
    let s = HostileServer::start(
        &repository().join(BUCKET),
        BUCKET,
        Misbehaviour::EndlessRanges,
    );
    let target = work.join("target");
    let o = run(
        "c-endless-ranges",
        &s,
        &work,
        &work.join("cache"),
        &["restore", "latest", "--target", target.to_str().unwrap()],
    );
    assert_fails_naming("c", &o, &["data/"]);
    assert!(o.error_line().contains("stopped reading"), "{}", o.stderr);
}

#[test]
fn d_one_byte_a_second() {
    let work = scratch("d");
    let s = HostileServer::start(
        &repository().join(BUCKET),
        BUCKET,
        Misbehaviour::Drip("config"),
    );
    let o = run(
        "d-drip-config",
        &s,
        &work,
        &work.join("cache"),
        &["snapshots"],
    );
    assert_fails_naming("d", &o, &["config"]);
}

#[test]
fn e_endless_pagination() {
    let work = scratch("e");
    let root = repository().join(BUCKET);
    for repeat in [false, true] {
        let s = HostileServer::start(&root, BUCKET, Misbehaviour::EndlessPages { repeat });
        let o = run(
            &format!("e-endless-pages-repeat-{repeat}"),
            &s,
            &work,
            &work.join(format!("cache-{repeat}")),
            &["snapshots"],
        );
        assert_fails_naming("e", &o, &["keys/", "snapshots/", "index/"]);
    }
}

#[test]
fn f_a_million_listed_packs() {
    let work = scratch("f");
    let s = HostileServer::start(
        &repository().join(BUCKET),
        BUCKET,
        Misbehaviour::HugeListing(1_000_000),
    );
    let o = run("f-million-keys", &s, &work, &work.join("cache"), &["check"]);
    // More keys than a listing may hold (limits::MAX_LIST): refused, naming the prefix, before
    // the listing outgrows the memory bound.
    assert_fails_naming("f", &o, &["data/"]);
}

#[test]
fn g_invalid_listed_keys_are_ignored() {
    let work = scratch("g");
    // Canaries where `..` keys would land from the cache directory and from the repo cache.
    let canaries = [work.join("canary"), work.join("cache/canary")];
    for c in &canaries {
        write(c, b"canary");
    }
    let before: Vec<_> = top_level(&work);
    let s = HostileServer::start(&repository().join(BUCKET), BUCKET, Misbehaviour::BadKeys);
    let target = work.join("target");
    for (name, args) in [
        ("g-bad-keys-snapshots", vec!["snapshots"]),
        ("g-bad-keys-ls", vec!["ls", "latest"]),
        (
            "g-bad-keys-restore",
            vec!["restore", "latest", "--target", target.to_str().unwrap()],
        ),
        ("g-bad-keys-check", vec!["check"]),
    ] {
        let o = run(name, &s, &work, &work.join("cache"), &args);
        assert_contained(name, &o);
        assert_eq!(o.code, 0, "{name}: {}", o.stderr);
        assert!(
            o.stderr.contains("ignoring the listed key"),
            "{name}: {}",
            o.stderr
        );
    }
    for c in &canaries {
        assert_eq!(std::fs::read(c).unwrap(), b"canary", "{}", c.display());
    }
    let mut after = top_level(&work);
    after.retain(|n| n != "target");
    assert_eq!(
        before, after,
        "files appeared or vanished next to the cache"
    );
    // The cache base holds the canary and the repository's cache directory, nothing else.
    let cache = top_level(&work.join("cache"));
    assert!(
        cache.len() == 2 && cache.contains(&"canary".to_string()),
        "{cache:?}"
    );
    assert_eq!(
        s.bad_requests.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the client asked for an invalid key"
    );
}

/// Names in `dir` (sorted), ignoring the per-command output files.
fn top_level(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| {
                    !n.ends_with(".stdout")
                        && !n.ends_with(".stderr")
                        && !n.ends_with(".result")
                        && n != "home"
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}
