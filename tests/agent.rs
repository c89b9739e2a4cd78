//! The agent as a user runs it: real `lifeboat run`/`daemon` processes around real shell-script
//! apps, real signals, a real local repository (and SeaweedFS for the S3 drill).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{PASSWORD, assert_same_tree, cli_init, lifeboat};

fn agent(repo: &str, volume: &Path, name: &str, cache: &Path) -> Command {
    // The volume's mount point exists before the agent starts, as on Akash and Kubernetes.
    std::fs::create_dir_all(volume).unwrap();
    let mut c = Command::new(env!("CARGO_BIN_EXE_lifeboat"));
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("LIFEBOAT_REPOSITORY", repo)
        .env("LIFEBOAT_PASSWORD", PASSWORD)
        .env("LIFEBOAT_PATH", volume)
        .env("LIFEBOAT_NAME", name)
        .env("LIFEBOAT_CACHE_DIR", cache)
        // Long enough that no renewal stalled by a loaded machine loses it: these tests are not
        // about lease loss (tests/lease_drill.rs is), and nothing here waits one out.
        .env("LIFEBOAT_LEASE_TTL", "30s")
        .env("LIFEBOAT_SCHEDULE", "off");
    for k in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"] {
        if let Ok(v) = std::env::var(k) {
            c.env(k, v);
        }
    }
    c
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn snapshots(repo: &str) -> Vec<serde_json::Value> {
    let out = lifeboat(Path::new(repo))
        .env(
            "LIFEBOAT_CACHE_DIR",
            std::env::temp_dir().join("lifeboat-test-cache"),
        )
        .envs(aws_env())
        .args(["snapshots", "--json"])
        .output()
        .unwrap();
    if !out.status.success() {
        return Vec::new();
    }
    serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout).unwrap_or_default()
}

fn aws_env() -> Vec<(String, String)> {
    ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"]
        .into_iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
        .collect()
}

fn reason(s: &serde_json::Value) -> String {
    s["labels"]["lifeboat.reason"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

fn kill(pid: u32, sig: i32) {
    // SAFETY: signalling a process this test started.
    unsafe { libc::kill(pid as i32, sig) };
}

fn wait_output(child: Child, timeout: Duration) -> Output {
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(o) => o.unwrap(),
        Err(_) => {
            kill(pid, libc::SIGKILL);
            panic!("agent did not exit within {timeout:?}");
        }
    }
}

fn text(o: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// An app that creates its data on first start and reports, as its first line, what it found.
const APP: &str = r#"
if [ -f "$LIFEBOAT_PATH/db/records" ]; then echo "FOUND $(wc -l < "$LIFEBOAT_PATH/db/records")"; else echo EMPTY;
  mkdir -p "$LIFEBOAT_PATH/db/sub"
  seq 1 5000 > "$LIFEBOAT_PATH/db/records"
  head -c 300000 /dev/urandom > "$LIFEBOAT_PATH/db/blob.bin"
  ln -s records "$LIFEBOAT_PATH/db/link"
  echo nested > "$LIFEBOAT_PATH/db/sub/n.txt"
fi
trap 'echo "got TERM" >> "$LIFEBOAT_PATH/db/term.log"; exit 42' TERM
echo $$ > "$PIDFILE"
while true; do sleep 0.05; done
"#;

/// The drill's volume lease: a renewal acknowledged after the lease lapsed loses it for good (the
/// agent then takes no more backups), and a fsync or a new S3 bucket can stall a renewal for
/// seconds on a loaded machine, so the drill leaves renewals room. It stays short because the
/// second instance waits this TTL out.
const DRILL_LEASE_TTL: &str = "10s";

fn lease_loss_drill(repo: &str, work: &Path) {
    let cache = work.join("cache");
    let v1 = work.join("lease1");
    std::fs::create_dir_all(&v1).unwrap();
    let pidfile = work.join("app.pid");
    // Its output goes to a file: a pipe nobody reads would stall the agent once full, and the
    // file is what a failure shows.
    let log = std::fs::File::create(work.join("first.log")).unwrap();
    let mut first = agent(repo, &v1, "drill", &cache)
        .env("LIFEBOAT_SCHEDULE", "@every 1s")
        .env("LIFEBOAT_LEASE_TTL", DRILL_LEASE_TTL)
        .env("PIDFILE", &pidfile)
        .args(["run", "--", "sh", "-c", APP])
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !snapshots(repo)
        .iter()
        .any(|s| s["name"] == "drill" && s["summary"]["total_files"].as_u64() == Some(3))
    {
        if start.elapsed() > Duration::from_secs(90) || first.try_wait().unwrap().is_some() {
            kill(first.id(), libc::SIGKILL);
            let status = first.wait().unwrap();
            panic!(
                "no scheduled backup holding the app's data after {:?} (agent: {status}); \
                 snapshots: {:?}\nagent output:\n{}",
                start.elapsed(),
                snapshots(repo),
                std::fs::read_to_string(work.join("first.log")).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let app_pid: u32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // The lease ends: everything dies at once, no final backup.
    kill(app_pid, libc::SIGKILL);
    kill(first.id(), libc::SIGKILL);
    let _ = first.wait();

    let v2 = work.join("lease2");
    std::fs::create_dir_all(&v2).unwrap();
    let mut second = agent(repo, &v2, "drill", &cache)
        .env("PIDFILE", &pidfile)
        .env("LIFEBOAT_LEASE_TTL", DRILL_LEASE_TTL)
        .env("LIFEBOAT_LEASE_WAIT", "60s")
        .args(["run", "--", "sh", "-c", APP])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first_line = String::new();
    {
        use std::io::BufRead;
        let stdout = second.stdout.as_mut().unwrap();
        std::io::BufReader::new(stdout)
            .read_line(&mut first_line)
            .unwrap();
    }
    assert_eq!(
        first_line.trim(),
        "FOUND 5000",
        "the app started before its data was back"
    );
    wait_until("the second app's pid", Duration::from_secs(10), || {
        std::fs::read_to_string(&pidfile)
            .is_ok_and(|p| p.trim().parse::<u32>().ok() != Some(app_pid))
    });
    assert_same_tree(&v1.join("db"), &v2.join("db"));
    assert!(v2.join(".lifeboat/restored").exists());
    assert!(!v2.join(".lifeboat/restore-in-progress").exists());
    kill(second.id(), libc::SIGTERM);
    let out = wait_output(second, Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(42), "{}", text(&out));
}

#[test]
fn lease_loss_drill_local_restores_before_the_app_starts() {
    let t = tempfile::tempdir().unwrap();
    let repo = t.path().join("repo");
    cli_init(&repo);
    lease_loss_drill(repo.to_str().unwrap(), t.path());
}

#[test]
fn lease_loss_drill_on_seaweedfs() {
    common::seaweed::set_credentials();
    let s = common::seaweed::server();
    let t = tempfile::tempdir().unwrap();
    let repo = format!("s3:http://{}/agent-drill/repo", s.s3);
    lease_loss_drill(&repo, t.path());
}

#[test]
fn sigterm_reaches_the_app_then_a_final_backup_runs_and_the_apps_code_is_returned() {
    let t = tempfile::tempdir().unwrap();
    let repo = t.path().join("repo");
    cli_init(&repo);
    let v = t.path().join("vol");
    std::fs::create_dir_all(&v).unwrap();
    let pidfile = t.path().join("pid");
    let child = agent(repo.to_str().unwrap(), &v, "sig", &t.path().join("c"))
        .env("PIDFILE", &pidfile)
        .args(["run", "--", "sh", "-c", APP])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("the app", Duration::from_secs(30), || pidfile.exists());
    kill(child.id(), libc::SIGTERM);
    let out = wait_output(child, Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(42), "{}", text(&out));
    assert_eq!(
        std::fs::read_to_string(v.join("db/term.log")).unwrap(),
        "got TERM\n"
    );
    let snaps = snapshots(repo.to_str().unwrap());
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    assert_eq!(reason(&snaps[0]), "final");
    // The final backup ran after the app's exit: it holds what the app wrote on SIGTERM.
    let ls = lifeboat(&repo).args(["ls", "latest"]).output().unwrap();
    assert!(
        String::from_utf8_lossy(&ls.stdout).contains("term.log"),
        "{}",
        text(&ls)
    );
}

#[test]
fn app_killed_by_a_signal_exits_128_plus_signal() {
    let t = tempfile::tempdir().unwrap();
    let repo = t.path().join("repo");
    cli_init(&repo);
    let v = t.path().join("vol");
    let out = agent(repo.to_str().unwrap(), &v, "k", &t.path().join("c"))
        .args(["run", "--", "sh", "-c", "kill -9 $$"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(137), "{}", text(&out));
    assert!(out.status.signal().is_none());
}

#[test]
fn gate_leaves_a_volume_with_data_alone() {
    let t = tempfile::tempdir().unwrap();
    let repo = t.path().join("repo");
    cli_init(&repo);
    let src = t.path().join("src");
    common::write(&src.join("old.txt"), b"old");
    lifeboat(&repo)
        .args(["backup", "--name", "g1"])
        .arg(&src)
        .output()
        .unwrap();
    let v = t.path().join("vol");
    common::write(&v.join("current.txt"), b"current");
    let out = agent(repo.to_str().unwrap(), &v, "g1", &t.path().join("c"))
        .args(["run", "--", "sh", "-c", "ls \"$LIFEBOAT_PATH\""])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "current.txt\n");
    assert!(!v.join("old.txt").exists());
    assert!(!v.join(".lifeboat/restored").exists());
}

#[test]
fn gate_first_deployment_creates_the_repository_and_starts_fresh() {
    let t = tempfile::tempdir().unwrap();
    let repo = t.path().join("repo-not-yet");
    let v = t.path().join("vol");
    std::fs::create_dir_all(v.join("lost+found")).unwrap();
    let out = agent(repo.to_str().unwrap(), &v, "fresh", &t.path().join("c"))
        .args([
            "run",
            "--",
            "sh",
            "-c",
            "echo started; echo data > \"$LIFEBOAT_PATH/f\"",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "started\n");
    assert!(repo.join("config").exists());
    let snaps = snapshots(repo.to_str().unwrap());
    assert_eq!(snaps.len(), 1);
    assert_eq!(reason(&snaps[0]), "final");
}

#[test]
fn gate_refuses_to_start_the_app_when_the_repository_is_unreachable() {
    let t = tempfile::tempdir().unwrap();
    // A port nothing listens on: the S3 server is down.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let v = t.path().join("vol");
    let marker = t.path().join("app-ran");
    let start = Instant::now();
    let out = agent(
        &format!("s3:http://127.0.0.1:{port}/bucket"),
        &v,
        "down",
        &t.path().join("c"),
    )
    .env("AWS_ACCESS_KEY_ID", "x")
    .env("AWS_SECRET_ACCESS_KEY", "y")
    .env("AWS_REGION", "us-east-1")
    .env("LIFEBOAT_RETRY_ATTEMPTS", "1")
    .env("LIFEBOAT_RESTORE_TIMEOUT", "3s")
    .args(["run", "--", "touch"])
    .arg(&marker)
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(13), "{}", text(&out));
    assert!(!marker.exists(), "the app started on an empty volume");
    assert!(
        start.elapsed() >= Duration::from_secs(3),
        "gave up before the timeout"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("LIFEBOAT_ON_RESTORE_FAILURE"));

    // The opt-out starts it anyway.
    let out = agent(
        &format!("s3:http://127.0.0.1:{port}/bucket"),
        &v,
        "down",
        &t.path().join("c"),
    )
    .env("AWS_ACCESS_KEY_ID", "x")
    .env("AWS_SECRET_ACCESS_KEY", "y")
    .env("AWS_REGION", "us-east-1")
    .env("LIFEBOAT_RETRY_ATTEMPTS", "1")
    .env("LIFEBOAT_RESTORE_TIMEOUT", "1s")
    .env("LIFEBOAT_ON_RESTORE_FAILURE", "start-empty")
    .args(["run", "--", "touch"])
    .arg(&marker)
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(marker.exists());
}

#[test]
fn gate_refuses_a_wrong_password_and_a_damaged_snapshot() {
    let t = tempfile::tempdir().unwrap();
    let repo = t.path().join("repo");
    cli_init(&repo);
    let src = t.path().join("src");
    common::write(&src.join("a"), b"a");
    lifeboat(&repo)
        .args(["backup", "--name", "dmg"])
        .arg(&src)
        .output()
        .unwrap();
    let v = t.path().join("vol");
    let marker = t.path().join("app-ran");
    let run = |extra: &[(&str, &str)]| {
        let mut c = agent(repo.to_str().unwrap(), &v, "dmg", &t.path().join("c"));
        c.env("LIFEBOAT_RESTORE_TIMEOUT", "1s");
        for (k, val) in extra {
            c.env(k, val);
        }
        c.args(["run", "--", "touch"])
            .arg(&marker)
            .output()
            .unwrap()
    };
    let out = run(&[("LIFEBOAT_PASSWORD", "not the password")]);
    assert_eq!(out.status.code(), Some(13), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("wrong password"));
    assert!(!marker.exists());

    let snap = common::objects(&repo, "snapshots").pop().unwrap();
    common::flip_byte(&snap, 40);
    let out = run(&[]);
    assert_eq!(out.status.code(), Some(13), "{}", text(&out));
    assert!(
        !marker.exists(),
        "a damaged snapshot was taken for a first deployment"
    );
}

#[test]
fn interrupted_restore_is_redone() {
    let t = tempfile::tempdir().unwrap();
    let repo = t.path().join("repo");
    cli_init(&repo);
    let src = t.path().join("src");
    common::write(&src.join("a.bin"), &common::random_bytes(200_000, 1));
    common::write(&src.join("dir/b.txt"), b"bbb");
    lifeboat(&repo)
        .args(["backup", "--name", "redo"])
        .arg(&src)
        .output()
        .unwrap();
    // What a restore killed midway leaves: the in-progress marker and a partial file.
    let v = t.path().join("vol");
    common::write(&v.join(".lifeboat/restore-in-progress"), b"{}");
    common::write(&v.join("a.bin"), b"partial");
    common::write(&v.join("stray"), b"left over");
    let out = agent(repo.to_str().unwrap(), &v, "redo", &t.path().join("c"))
        .args(["run", "--", "true"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(!v.join("stray").exists());
    assert!(!v.join(".lifeboat/restore-in-progress").exists());
    std::fs::remove_dir_all(v.join(".lifeboat")).unwrap();
    assert_same_tree(&src, &v);
}

#[test]
fn second_instance_waits_for_the_first_ones_final_backup() {
    let t = tempfile::tempdir().unwrap();
    let repo = t.path().join("repo");
    cli_init(&repo);
    let r = repo.to_str().unwrap();
    let (v1, v2) = (t.path().join("old"), t.path().join("new"));
    std::fs::create_dir_all(&v1).unwrap();
    std::fs::create_dir_all(&v2).unwrap();
    let pid1 = t.path().join("pid1");
    let old = agent(r, &v1, "pair", &t.path().join("c1"))
        .env("PIDFILE", &pid1)
        .env("LIFEBOAT_BACKUP_ON_START", "true")
        .args(["run", "--", "sh", "-c", APP])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until(
        "the old instance's first backup",
        Duration::from_secs(30),
        || !snapshots(r).is_empty(),
    );
    let new = agent(r, &v2, "pair", &t.path().join("c2"))
        .env("PIDFILE", t.path().join("pid2"))
        .args(["run", "--", "sh", "-c", APP])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // It waits on the lease: no restore, no app.
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !t.path().join("pid2").exists(),
        "the new instance did not wait"
    );
    assert!(!v2.join("db").exists());
    // The old one stops: its app writes term.log, the final backup takes it, the lease is freed.
    kill(old.id(), libc::SIGTERM);
    let out = wait_output(old, Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(42), "{}", text(&out));
    wait_until("the new instance's app", Duration::from_secs(30), || {
        t.path().join("pid2").exists()
    });
    assert_eq!(
        std::fs::read_to_string(v2.join("db/term.log")).unwrap(),
        "got TERM\n",
        "the new instance restored before the old one's final backup"
    );
    kill(new.id(), libc::SIGTERM);
    let out = wait_output(new, Duration::from_secs(60));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("waiting for its final backup"),
        "{}",
        text(&out)
    );
}

#[test]
fn hooks_run_in_order_and_a_failing_pre_hook_skips_the_backup() {
    let t = tempfile::tempdir().unwrap();
    let repo = t.path().join("repo");
    cli_init(&repo);
    let v = t.path().join("vol");
    common::write(&v.join("f"), b"x");
    let log = t.path().join("hooks.log");
    let l = log.display();
    let out = agent(repo.to_str().unwrap(), &v, "hk", &t.path().join("c"))
        .env(
            "LIFEBOAT_PRE_BACKUP",
            format!("echo pre $LIFEBOAT_REASON >> {l}"),
        )
        .env(
            "LIFEBOAT_POST_BACKUP",
            format!("echo post $LIFEBOAT_RESULT >> {l}"),
        )
        .args(["run", "--", "sh", "-c", &format!("echo app >> {l}")])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "app\npre final\npost success\n"
    );
    assert_eq!(snapshots(repo.to_str().unwrap()).len(), 1);

    std::fs::remove_file(&log).unwrap();
    let out = agent(repo.to_str().unwrap(), &v, "hk", &t.path().join("c"))
        .env("LIFEBOAT_PRE_BACKUP", format!("echo pre >> {l}; exit 1"))
        .env(
            "LIFEBOAT_POST_BACKUP",
            format!("echo post $LIFEBOAT_RESULT >> {l}"),
        )
        .args(["run", "--", "true"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "pre\npost failure\n"
    );
    assert_eq!(
        snapshots(repo.to_str().unwrap()).len(),
        1,
        "a backup ran despite the failed pre hook"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("backup skipped"));
}

fn http(addr: &str, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(s, "{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let code = resp[9..12].parse().unwrap();
    let body = resp.split_once("\r\n\r\n").map_or("", |b| b.1).to_string();
    (code, body)
}

#[test]
fn daemon_serves_health_metrics_and_token_guarded_control() {
    let t = tempfile::tempdir().unwrap();
    let repo = t.path().join("repo");
    cli_init(&repo);
    let v = t.path().join("vol");
    common::write(&v.join("f"), &common::random_bytes(50_000, 3));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let d = agent(repo.to_str().unwrap(), &v, "web", &t.path().join("c"))
        .env("LIFEBOAT_LISTEN", &addr)
        .env("LIFEBOAT_CONTROL_TOKEN", "s3cret")
        .env("LIFEBOAT_KEEP_LAST", "2")
        .arg("daemon")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("readiness", Duration::from_secs(30), || {
        TcpStream::connect(&addr).is_ok() && http(&addr, "GET", "/readyz", None).0 == 200
    });
    assert_eq!(http(&addr, "GET", "/healthz", None).0, 200);
    assert_eq!(http(&addr, "POST", "/backup", None).0, 401);
    assert_eq!(http(&addr, "POST", "/backup", Some("wrong")).0, 401);
    assert_eq!(http(&addr, "GET", "/status", None).0, 401);
    for _ in 0..3 {
        let (code, body) = http(&addr, "POST", "/backup?wait=1", Some("s3cret"));
        assert_eq!(code, 200, "{body}");
        assert!(body.contains("\"snapshot\""), "{body}");
    }
    let (code, status) = http(&addr, "GET", "/status", Some("s3cret"));
    assert_eq!(code, 200);
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["backups"], 3);
    assert_eq!(status["ready"], true);
    let (code, metrics) = http(&addr, "GET", "/metrics", None);
    assert_eq!(code, 200);
    for line in [
        "lifeboat_backups_total{volume=\"web\"} 3",
        "lifeboat_backup_failures_total{volume=\"web\"} 0",
        "lifeboat_ready{volume=\"web\"} 1",
        "lifeboat_last_files{volume=\"web\"} 1",
    ] {
        assert!(metrics.contains(line), "missing {line:?} in\n{metrics}");
    }
    assert!(metrics.contains("lifeboat_repository_requests_total{volume=\"web\",kind=\"put\"}"));
    assert!(metrics.contains("lifeboat_last_success_timestamp_seconds{volume=\"web\"} 1"));
    // Retention: keep-last 2 after each backup.
    assert_eq!(snapshots(repo.to_str().unwrap()).len(), 2);
    kill(d.id(), libc::SIGTERM);
    let out = wait_output(d, Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(128 + 15), "{}", text(&out));
    let snaps = snapshots(repo.to_str().unwrap());
    assert_eq!(snaps.len(), 2);
    assert!(snaps.iter().any(|s| reason(s) == "final"));
}

#[test]
fn dump_mode_streams_a_dump_and_loads_it_on_a_new_lease() {
    let t = tempfile::tempdir().unwrap();
    let repo = t.path().join("repo");
    cli_init(&repo);
    let r = repo.to_str().unwrap();
    // The "database": a file the app owns; the dump is a copy of it, the load appends it back.
    let db1 = t.path().join("vol1");
    common::write(&db1.join("table"), b"row1\nrow2\n");
    let dump = format!("cat {}/table", db1.display());
    let out = agent(r, &db1, "pg", &t.path().join("c"))
        .env("LIFEBOAT_DUMP_COMMAND", &dump)
        .env("LIFEBOAT_BACKUP_ON_START", "true")
        .args(["run", "--", "sleep", "1"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let snaps = snapshots(r);
    assert_eq!(snaps.len(), 1, "{}", text(&out));
    assert_eq!(snaps[0]["method"], "dump");

    let db2 = t.path().join("vol2");
    std::fs::create_dir_all(&db2).unwrap();
    let out = agent(r, &db2, "pg", &t.path().join("c"))
        .env(
            "LIFEBOAT_DUMP_COMMAND",
            format!("cat {}/table", db2.display()),
        )
        .env("LIFEBOAT_DUMP_DIR", t.path().join("dumps"))
        // Not ready at first (the "server" creates its table after a moment), then loads.
        .env(
            "LIFEBOAT_RESTORE_COMMAND",
            format!(
                "test -f {0}/ready && cat {{file}} >> {0}/table",
                db2.display()
            ),
        )
        .args([
            "run",
            "--",
            "sh",
            "-c",
            &format!("sleep 1; touch {}/ready; sleep 4", db2.display()),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        std::fs::read_to_string(db2.join("table")).unwrap(),
        "row1\nrow2\n"
    );
    assert!(db2.join(".lifeboat/restored").exists());
}

#[test]
fn restore_if_empty_is_an_init_container() {
    let t = tempfile::tempdir().unwrap();
    let repo = t.path().join("repo");
    cli_init(&repo);
    let src = t.path().join("src");
    common::write(&src.join("x"), b"xx");
    lifeboat(&repo)
        .args(["backup", "--name", "ic"])
        .arg(&src)
        .output()
        .unwrap();
    let v = t.path().join("vol");
    let run = || {
        lifeboat(&repo)
            .args([
                "restore",
                "latest",
                "--if-empty",
                "--name",
                "ic",
                "--target",
            ])
            .arg(&v)
            .output()
            .unwrap()
    };
    let out = run();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(std::fs::read(v.join("x")).unwrap(), b"xx");
    std::fs::write(v.join("x"), b"changed by the app").unwrap();
    let out = run();
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("has data"));
    assert_eq!(std::fs::read(v.join("x")).unwrap(), b"changed by the app");
}

#[test]
fn config_check_validates_and_redacts() {
    let t = tempfile::tempdir().unwrap();
    let repo = t.path().join("repo");
    cli_init(&repo);
    let base = || {
        let mut c = agent(
            repo.to_str().unwrap(),
            &t.path().join("vol"),
            "cfg",
            &t.path().join("c"),
        );
        c.env("LIFEBOAT_CONTROL_TOKEN", "supersecret")
            .args(["config", "check"]);
        c
    };
    let out = base()
        .env("LIFEBOAT_SCHEDULE", "*/5 * * * *")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.contains("LIFEBOAT_CONTROL_TOKEN=<set>"), "{s}");
    assert!(!s.contains("supersecret"));
    assert!(s.contains("ok: repository"), "{s}");
    let out = base().env("LIFEBOAT_SCHEDULE", "*/5 * *").output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("LIFEBOAT_SCHEDULE") && err.lines().count() == 1,
        "{err}"
    );
    let out = base().env("LIFEBOAT_PASSWORD", "nope").output().unwrap();
    assert_eq!(out.status.code(), Some(12), "{}", text(&out));
    // A TOML file configures the same settings; a variable wins over it.
    let toml = t.path().join("lifeboat.toml");
    std::fs::write(&toml, "schedule = \"@daily\"\nkeep-last = 3\n").unwrap();
    let out = base()
        .env_remove("LIFEBOAT_SCHEDULE")
        .env("LIFEBOAT_KEEP_DAILY", "7")
        .env("LIFEBOAT_CONFIG", &toml)
        .output()
        .unwrap();
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.contains("LIFEBOAT_SCHEDULE=@daily"), "{s}");
    assert!(s.contains("LIFEBOAT_KEEP=last 3, daily 7"), "{s}");
}

#[test]
fn pause_mode_freezes_the_app_during_the_backup_and_always_resumes_it() {
    let t = tempfile::tempdir().unwrap();
    let repo = t.path().join("repo");
    cli_init(&repo);
    let v = t.path().join("vol");
    std::fs::create_dir_all(&v).unwrap();
    let counter = t.path().join("ticks");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let pidfile = t.path().join("pid");
    // The pre hook records whether the app is stopped (state T) while the backup runs.
    let d = agent(repo.to_str().unwrap(), &v, "pz", &t.path().join("c"))
        .env("LIFEBOAT_LISTEN", &addr)
        .env("LIFEBOAT_CONTROL_TOKEN", "tk")
        .env("LIFEBOAT_PAUSE", "true")
        .env("PIDFILE", &pidfile)
        .args(["run", "--", "sh", "-c"])
        .arg(format!(
            "echo $$ > {}; while true; do echo t >> {}; sleep 0.02; done",
            pidfile.display(),
            counter.display()
        ))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("the app", Duration::from_secs(30), || {
        pidfile.exists() && counter.exists()
    });
    let pid = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .to_string();
    let (code, body) = http(&addr, "POST", "/backup?wait=1", Some("tk"));
    assert_eq!(code, 200, "{body}");
    let snaps = snapshots(repo.to_str().unwrap());
    assert_eq!(snaps[0]["method"], "pause");
    // Resumed: it keeps ticking.
    let before = std::fs::read_to_string(&counter).unwrap().len();
    std::thread::sleep(Duration::from_millis(500));
    let after = std::fs::read_to_string(&counter).unwrap().len();
    assert!(after > before, "the app was not resumed");
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    assert!(!stat.contains(") T "), "app still stopped: {stat}");
    kill(d.id(), libc::SIGTERM);
    let out = wait_output(d, Duration::from_secs(60));
    assert!(out.status.code().is_some(), "{}", text(&out));
}

/// A tiny HTTP sink: records `METHOD PATH BODY` of every request.
fn sink() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let s = seen.clone();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut c) = conn else { continue };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            // Read headers, then Content-Length bytes of body.
            let (head, body) = loop {
                let n = c.read(&mut chunk).unwrap_or(0);
                if n == 0 {
                    break (String::from_utf8_lossy(&buf).to_string(), String::new());
                }
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf).to_string();
                if let Some((h, b)) = text.split_once("\r\n\r\n") {
                    let len = h
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if b.len() >= len {
                        break (h.to_string(), b.to_string());
                    }
                }
            };
            let line = head.lines().next().unwrap_or("").to_string();
            let mut parts = line.split_whitespace();
            let (m, p) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            s.lock().unwrap().push(format!("{m} {p} {body}"));
            let _ =
                c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        }
    });
    (addr, seen)
}

#[test]
fn pings_webhooks_skipped_runs_and_json_summary_logs() {
    let t = tempfile::tempdir().unwrap();
    let repo = t.path().join("repo");
    cli_init(&repo);
    let v = t.path().join("vol");
    common::write(&v.join("f"), b"data");
    let (sink_addr, seen) = sink();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let flag = t.path().join("fail-next");
    let d = agent(repo.to_str().unwrap(), &v, "note", &t.path().join("c"))
        .env("LIFEBOAT_LISTEN", &addr)
        .env("LIFEBOAT_CONTROL_TOKEN", "tk")
        .env("LIFEBOAT_PING_URL", format!("http://{sink_addr}/ping/uuid"))
        .env("LIFEBOAT_WEBHOOK_URL", format!("http://{sink_addr}/hook"))
        .env("LIFEBOAT_LOG_FORMAT", "json")
        // Slow enough to overlap a second request; fails when the flag file exists.
        .env(
            "LIFEBOAT_PRE_BACKUP",
            format!("sleep 3; test ! -e {}", flag.display()),
        )
        .arg("daemon")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("readiness", Duration::from_secs(30), || {
        TcpStream::connect(&addr).is_ok() && http(&addr, "GET", "/readyz", None).0 == 200
    });
    assert_eq!(http(&addr, "POST", "/backup", Some("tk")).0, 202);
    wait_until("the first backup to start", Duration::from_secs(20), || {
        let (code, body) = http(&addr, "GET", "/status", Some("tk"));
        code == 200 && body.contains("\"running\":true")
    });
    // The first is still in its 3 s pre hook: this one is skipped, never run alongside.
    let (code, body) = http(&addr, "POST", "/backup?wait=1", Some("tk"));
    assert_eq!(code, 409, "{body}");
    wait_until("the first backup", Duration::from_secs(30), || {
        snapshots(repo.to_str().unwrap()).len() == 1
    });
    std::fs::write(&flag, b"").unwrap();
    let (code, body) = http(&addr, "POST", "/backup?wait=1", Some("tk"));
    assert_eq!(code, 500, "{body}");
    assert!(body.contains("LIFEBOAT_PRE_BACKUP"), "{body}");
    let (_, metrics) = http(&addr, "GET", "/metrics", None);
    assert!(
        metrics.contains("lifeboat_skipped_runs_total{volume=\"note\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("lifeboat_backup_failures_total{volume=\"note\"} 1"),
        "{metrics}"
    );
    wait_until("notifications", Duration::from_secs(20), || {
        seen.lock().unwrap().len() >= 6
    });
    let seen = seen.lock().unwrap().clone();
    let count = |prefix: &str| seen.iter().filter(|s| s.starts_with(prefix)).count();
    assert_eq!(count("POST /ping/uuid/start "), 2, "{seen:?}");
    assert_eq!(count("POST /ping/uuid "), 1, "{seen:?}");
    assert_eq!(count("POST /ping/uuid/fail "), 1, "{seen:?}");
    let fail = seen
        .iter()
        .find(|s| s.starts_with("POST /ping/uuid/fail "))
        .unwrap();
    assert!(
        fail.contains("LIFEBOAT_PRE_BACKUP"),
        "the failure ping carries the error: {fail}"
    );
    let hooks: Vec<serde_json::Value> = seen
        .iter()
        .filter_map(|s| s.strip_prefix("POST /hook "))
        .map(|b| serde_json::from_str(b).unwrap())
        .collect();
    assert_eq!(hooks.len(), 2, "{seen:?}");
    assert!(
        hooks
            .iter()
            .any(|h| h["event"] == "backup.success" && h["volume"] == "note")
    );
    assert!(hooks.iter().any(|h| h["event"] == "backup.failure"));
    std::fs::remove_file(&flag).unwrap();
    kill(d.id(), libc::SIGTERM);
    let out = wait_output(d, Duration::from_secs(60));
    // JSON lines, one summary line per backup (the requested one and the final one).
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not a JSON line: {l}")))
        .collect();
    let summaries = lines
        .iter()
        .filter(|l| l["fields"]["message"] == "backup done")
        .count();
    assert_eq!(summaries, 2, "{stderr}");
}

#[test]
fn as_pid_1_it_reaps_orphaned_zombies() {
    // A new PID namespace makes lifeboat PID 1, as a container entrypoint is.
    let probe = Command::new("unshare")
        .args(["-fp", "--mount-proc", "true"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        eprintln!("skipped: this machine cannot create a PID namespace (unshare -fp)");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let repo = t.path().join("repo");
    cli_init(&repo);
    let v = t.path().join("vol");
    // The app orphans a short-lived grandchild, then counts zombies once it has exited.
    let app =
        "(sleep 0.2 &); sleep 1.5; grep -l '^State:.*Z' /proc/[0-9]*/status 2>/dev/null | wc -l";
    let c = agent(repo.to_str().unwrap(), &v, "init", &t.path().join("c"));
    let prog = c.get_program().to_owned();
    let envs: Vec<_> = c
        .get_envs()
        .map(|(k, v)| (k.to_owned(), v.map(|v| v.to_owned())))
        .collect();
    let mut u = Command::new("unshare");
    u.env_clear()
        .args(["-fp", "--mount-proc"])
        .arg(prog)
        .args(["run", "--", "sh", "-c", app]);
    for (k, v) in envs {
        if let Some(v) = v {
            u.env(k, v);
        }
    }
    let out = u.output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "0",
        "zombies left: {}",
        text(&out)
    );
}

#[test]
fn a_volume_with_data_starts_even_when_the_repository_is_down() {
    let t = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let v = t.path().join("vol");
    common::write(&v.join("db"), b"the app's own data");
    let out = agent(
        &format!("s3:http://127.0.0.1:{port}/bucket"),
        &v,
        "up",
        &t.path().join("c"),
    )
    .env("AWS_ACCESS_KEY_ID", "x")
    .env("AWS_SECRET_ACCESS_KEY", "y")
    .env("AWS_REGION", "us-east-1")
    .env("LIFEBOAT_RETRY_ATTEMPTS", "1")
    .env("LIFEBOAT_SHUTDOWN_BACKUP_TIMEOUT", "2s")
    .args(["run", "--", "sh", "-c", "cat \"$LIFEBOAT_PATH/db\"; exit 5"])
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "the app's own data");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("the app starts now"), "{err}");
    assert!(err.contains("final backup failed"), "{err}");
}

#[test]
fn scheduled_prune_deletes_what_retention_forgot_while_backups_continue() {
    let t = tempfile::tempdir().unwrap();
    let repo = t.path().join("repo");
    cli_init(&repo);
    let v = t.path().join("vol");
    common::write(&v.join("f"), &common::random_bytes(200_000, 1));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let d = agent(repo.to_str().unwrap(), &v, "pruned", &t.path().join("c"))
        .env("LIFEBOAT_LISTEN", &addr)
        .env("LIFEBOAT_SCHEDULE", "@every 1s")
        .env("LIFEBOAT_KEEP_LAST", "1")
        .env("LIFEBOAT_PRUNE_SCHEDULE", "@every 2s")
        .env("LIFEBOAT_PRUNE_GRACE", "1s")
        .env("LIFEBOAT_HEARTBEAT", "300ms")
        .arg("daemon")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // New content every half second: each forgotten snapshot leaves a garbage pack behind.
    let mut deleted = 0.0;
    for round in 0..40u64 {
        common::write(&v.join("f"), &common::random_bytes(200_000, 100 + round));
        std::thread::sleep(Duration::from_millis(500));
        if TcpStream::connect(&addr).is_ok() {
            let (_, metrics) = http(&addr, "GET", "/metrics", None);
            deleted = metrics
                .lines()
                .find(|l| l.starts_with("lifeboat_prune_deleted_bytes_total"))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|n| n.parse::<f64>().ok())
                .unwrap_or(0.0);
        }
        if deleted > 0.0 && round > 8 {
            break;
        }
    }
    kill(d.id(), libc::SIGTERM);
    let out = wait_output(d, Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(128 + 15), "{}", text(&out));
    assert!(deleted > 0.0, "no prune deleted anything:\n{}", text(&out));
    assert!(text(&out).contains("prune done"), "{}", text(&out));
    // What is left checks clean and the newest snapshot is the final state of the volume.
    let chk = lifeboat(&repo)
        .args(["check", "--read-data"])
        .output()
        .unwrap();
    assert!(chk.status.success(), "{}", text(&chk));
    let target = t.path().join("restored");
    let r = lifeboat(&repo)
        .args(["restore", "latest", "--name", "pruned", "--target"])
        .arg(&target)
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", text(&r));
    assert_same_tree(&v, &target);
}
