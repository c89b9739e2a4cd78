//! Storage outages around the agent's backups, against a real S3 server (SeaweedFS) behind a
//! fault proxy (tests/common/proxy.rs):
//!
//! - a store restart (the proxy stops listening for 60 s, so connections are refused, as when
//!   the S3 server is stopped) during a scheduled backup: the backup completes once the store is
//!   back, by retrying the whole backup (LIFEBOAT_BACKUP_RETRY_WINDOW);
//! - a 60 s stall (every request read, never answered) during the final backup on SIGTERM: the
//!   agent exits non-zero (14) with a failure webhook and an error line, inside
//!   LIFEBOAT_SHUTDOWN_BACKUP_TIMEOUT (the 25 s default).
//!
//! Each prints one OUTAGE line with its figures.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::proxy::Proxy;
use common::{free_port, seaweed};

fn agent(url: &str, home: &Path, volume: &Path, name: &str) -> Command {
    let mut c = seaweed::lifeboat_s3(url, home);
    c.env("LIFEBOAT_PATH", volume)
        .env("LIFEBOAT_NAME", name)
        .env("LIFEBOAT_CACHE_DIR", home.join("cache"))
        // Long enough that lease renewal plays no part in these drills.
        .env("LIFEBOAT_LEASE_TTL", "10m")
        .env("RUST_LOG", "info");
    c
}

fn snapshots(url: &str, home: &Path) -> Vec<serde_json::Value> {
    let out = seaweed::lifeboat_s3(url, home)
        .env("LIFEBOAT_CACHE_DIR", home.join("cli-cache"))
        .args(["snapshots", "--json"])
        .output()
        .unwrap();
    if !out.status.success() {
        return Vec::new();
    }
    serde_json::from_slice(&out.stdout).unwrap_or_default()
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
            // SAFETY: killing the agent this test started.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
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

fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

fn wait_ready(port: u16, child: &mut Child) {
    let start = Instant::now();
    loop {
        if http_get(port, "/readyz")
            .is_some_and(|r| r.lines().next().is_some_and(|l| l.contains(" 200")))
        {
            return;
        }
        if let Ok(Some(st)) = child.try_wait() {
            panic!("agent exited before it was ready: {st}");
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "agent not ready in 120 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A webhook receiver: the bodies of the POSTs it got.
fn webhook() -> (String, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", l.local_addr().unwrap());
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { continue };
            let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buf = Vec::new();
            let mut b = [0u8; 8192];
            while let Ok(n) = c.read(&mut b) {
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&b[..n]);
                let s = String::from_utf8_lossy(&buf).into_owned();
                if let Some(i) = s.find("\r\n\r\n") {
                    let len = s[..i]
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse::<usize>().ok())?
                        })
                        .unwrap_or(0);
                    if buf.len() >= i + 4 + len {
                        g.lock().unwrap().push(s[i + 4..].to_string());
                        break;
                    }
                }
            }
            let _ =
                c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    (url, got)
}

fn fill(volume: &Path, files: usize, seed: u64) {
    for i in 0..files {
        common::write(
            &volume.join(format!("data/f{i}.bin")),
            &common::random_bytes(200_000, seed * 1000 + i as u64),
        );
    }
}

#[test]
fn a_store_restart_during_a_scheduled_backup_is_ridden_out() {
    seaweed::set_credentials();
    let s = seaweed::server();
    let proxy = Proxy::start(s.s3);
    let t = tempfile::tempdir().unwrap();
    let bucket = format!("outage-restart-{}", std::process::id());
    let url = format!("s3:http://{}/{bucket}/repo", proxy.addr);
    let direct = format!("s3:http://{}/{bucket}/repo", s.s3);
    let v = t.path().join("vol");
    fill(&v, 10, 1);
    let port = free_port();
    let mut child = agent(&url, t.path(), &v, "restart")
        .env("LIFEBOAT_LISTEN", format!("127.0.0.1:{port}"))
        .env("LIFEBOAT_SCHEDULE", "@every 15s")
        .args(["daemon"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_ready(port, &mut child);
    // New data, so the scheduled backup has packs to upload, then the store goes away.
    fill(&v, 10, 2);
    let outage = Duration::from_secs(60);
    proxy.offline();
    let down_at = chrono::Utc::now();
    let down = Instant::now();
    std::thread::sleep(outage);
    proxy.online();
    let up_at = chrono::Utc::now();
    // A scheduled backup that began while the store was down must complete.
    let mut done = None;
    while down.elapsed() < Duration::from_secs(300) {
        let snaps = snapshots(&direct, t.path());
        if let Some(sn) = snaps.iter().find(|sn| {
            let time = sn["time"]
                .as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
            // A retried backup records when its successful attempt began.
            sn["labels"]["lifeboat.reason"] == "schedule" && time.is_some_and(|t| t >= down_at)
        }) {
            done = Some(sn.clone());
            break;
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    let after = down.elapsed();
    let metrics = http_get(port, "/metrics").unwrap_or_default();
    let metric = |name: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(&format!("lifeboat_{name}")))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(-1.0)
    };
    let (failures, retried) = (
        metric("backup_failures_total"),
        metric("backup_retries_total"),
    );
    // SAFETY: stopping the agent this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = wait_output(child, Duration::from_secs(60));
    let log = text(&out);
    let snap = done.unwrap_or_else(|| {
        panic!("no scheduled backup started during the outage completed\n{log}")
    });
    assert!(
        log.contains("retrying the whole backup"),
        "the backup rode the outage out by retrying: {log}"
    );
    assert_eq!(failures, 0.0, "no backup failed: {metrics}\n{log}");
    assert!(retried >= 1.0, "{metrics}");
    let retries = log.matches("retrying the whole backup").count();
    println!(
        "OUTAGE restart: store down {} s (until {}); scheduled backup {} (last attempt started {}) stored {:.0} s after the outage began, {} whole-backup retries, 0 failures; agent exit {:?}",
        outage.as_secs(),
        up_at.format("%H:%M:%S"),
        snap["short_id"]
            .as_str()
            .or(snap["id"].as_str())
            .unwrap_or("?"),
        snap["time"].as_str().unwrap_or("?"),
        after.as_secs_f64(),
        retries,
        out.status.code()
    );
}

#[test]
fn a_stall_during_the_final_backup_fails_loudly_within_the_shutdown_timeout() {
    stall_drill("daemon", &["daemon"]);
}

/// The wrapper around an app that exits 0 on SIGTERM: before, `run` exited 0 with the final
/// backup lost.
#[test]
fn a_stall_during_the_final_backup_of_run_fails_loudly_within_the_shutdown_timeout() {
    stall_drill(
        "run",
        &[
            "run",
            "--",
            "sh",
            "-c",
            "trap 'exit 0' TERM; while :; do sleep 0.1; done",
        ],
    );
}

fn stall_drill(label: &str, args: &[&str]) {
    seaweed::set_credentials();
    let s = seaweed::server();
    let proxy = Proxy::start(s.s3);
    let t = tempfile::tempdir().unwrap();
    let bucket = format!("outage-stall-{label}-{}", std::process::id());
    let url = format!("s3:http://{}/{bucket}/repo", proxy.addr);
    let v = t.path().join("vol");
    fill(&v, 5, 3);
    let port = free_port();
    let (hook, got) = webhook();
    let mut child = agent(&url, t.path(), &v, "stall")
        .env("LIFEBOAT_LISTEN", format!("127.0.0.1:{port}"))
        .env("LIFEBOAT_SCHEDULE", "off")
        .env("LIFEBOAT_WEBHOOK_URL", &hook)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_ready(port, &mut child);
    fill(&v, 5, 4);
    let timeout = Duration::from_secs(25); // the documented default
    proxy.set(|p| p.stall = Some(Duration::from_secs(60)));
    let t0 = Instant::now();
    // SAFETY: stopping the agent this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = wait_output(child, Duration::from_secs(120));
    let took = t0.elapsed();
    let log = text(&out);
    proxy.set(|p| p.stall = None);
    assert_eq!(out.status.code(), Some(14), "{log}");
    assert!(
        took < timeout,
        "exit {:.1} s after SIGTERM, past the {} s shutdown timeout\n{log}",
        took.as_secs_f64(),
        timeout.as_secs()
    );
    assert!(log.contains("final backup"), "{log}");
    let hooks = got.lock().unwrap().clone();
    assert!(
        hooks
            .iter()
            .any(|h| h.contains("backup.failure") && h.contains("\"final\"")),
        "a failure webhook for the final backup: {hooks:?}\n{log}"
    );
    println!(
        "OUTAGE stall ({label}): store stalled 60 s from SIGTERM; agent exited {:?} after {:.1} s (shutdown timeout {} s); failure webhook received ({} webhook(s))",
        out.status.code(),
        took.as_secs_f64(),
        timeout.as_secs(),
        hooks.len()
    );
}
