//! The S3 backend against a real, independent S3 server process (SeaweedFS on 127.0.0.1), with a
//! fault-injecting proxy in between where the test needs one. Installs and starts the server
//! itself, so `cargo test` exercises it on a clean machine.

mod common;

use std::fs;
use std::process::Command;
use std::time::Instant;

use common::proxy::{Fault, Proxy};
use common::seaweed;
use common::*;
use lifeboat::backend::{Backend, Payload, PutMode, S3Backend, S3Location};

fn s3_backend(url: &str) -> S3Backend {
    seaweed::set_credentials();
    S3Backend::new(S3Location::parse(url, None).unwrap()).unwrap()
}

/// The lifeboat binary pointed at an S3 URL with the test credentials.
fn cli(url: &str) -> Command {
    seaweed::lifeboat_s3(url, &std::env::temp_dir())
}

fn init(url: &str) {
    let out = cli(url)
        .args([
            "init",
            "--kdf-memory-kib",
            "64",
            "--kdf-time",
            "1",
            "--pack-size-mib",
            "1",
            "--chunk-sizes",
            "16384,65536,262144",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "init: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn json(cmd: &mut Command) -> serde_json::Value {
    let out = cmd.arg("--json").output().unwrap();
    assert!(
        out.status.success(),
        "{:?}: {}",
        cmd,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn sample_tree(root: &std::path::Path, mib: usize) {
    for i in 0..mib {
        write(
            &root.join(format!("big/part{i:03}.bin")),
            &random_bytes(1 << 20, i as u64),
        );
    }
    for i in 0..300 {
        write(
            &root.join(format!("small/{}/f{i}.txt", i % 17)),
            format!("record {i}\n").repeat(i % 40 + 1).as_bytes(),
        );
    }
}

#[test]
fn seaweedfs_backend_conforms_with_and_without_prefix() {
    let s = seaweed::server();
    let b = s3_backend(&format!("s3:http://{}/conformance/some/prefix", s.s3));
    common::conformance::conformance(&b);
    let b = s3_backend(&format!("s3:http://{}/conformance-root", s.s3));
    common::conformance::conformance(&b);
    let stats = b.requests().unwrap();
    assert!(stats.put >= 30 && stats.list >= 3, "{stats:?}");
}

#[test]
fn backup_and_restore_through_seaweedfs_are_byte_identical_and_cheap_when_unchanged() {
    let s = seaweed::server();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    sample_tree(&src, 48);
    let url = format!("s3:http://{}/roundtrip/repos/one", s.s3);
    init(&url);
    let first = json(cli(&url).args(["backup", "--name", "vol"]).arg(&src));
    assert_eq!(first["summary"]["files_new"], 348);
    let second = json(cli(&url).args(["backup", "--name", "vol"]).arg(&src));
    assert_eq!(second["summary"]["files_unmodified"], 348);
    let req = &second["requests"];
    let total: u64 = ["put", "get", "head", "list", "delete"]
        .iter()
        .map(|k| req[k].as_u64().unwrap())
        .sum();
    eprintln!(
        "initial backup requests: {}\nno-change backup requests: {}",
        first["requests"], req
    );
    assert!(
        total <= 12,
        "a no-change backup made {total} requests: {req}"
    );
    // The snapshot, and the writer record that tells a concurrent prune this backup is alive
    // (removed again at the end).
    assert_eq!(
        req["put"], 2,
        "only the snapshot and writer record are written: {req}"
    );
    assert_eq!(req["delete"], 1, "{req}");
    // Every reused pack was vouched for by the verified-pack ledger (the ETag returned by each
    // upload matches the one listed), so none was downloaded again (FORMAT.md §11b).
    assert!(
        req["bytes_down"].as_u64().unwrap() < 1 << 20,
        "a no-change backup downloaded packs: {req}"
    );

    let target = tmp.path().join("restored");
    let r = json(
        cli(&url)
            .args(["restore", "latest", "--target"])
            .arg(&target),
    );
    assert_eq!(r["restored"]["files"], 348);
    assert_same_tree(&src, &target);
    let c = json(cli(&url).args(["check", "--read-data"]));
    assert!(c["report"]["errors"].as_array().unwrap().is_empty(), "{c}");
}

#[test]
fn init_creates_the_bucket_and_bad_credentials_fail_fast() {
    let s = seaweed::server();
    let url = format!("s3:http://{}/fresh-bucket-{}/p", s.s3, std::process::id());
    init(&url);
    assert!(
        cli(&url)
            .arg("snapshots")
            .output()
            .unwrap()
            .status
            .success()
    );
    let t = Instant::now();
    let out = cli(&url)
        .env("AWS_SECRET_ACCESS_KEY", "wrong")
        .arg("snapshots")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("access denied to bucket") && err.contains("AWS_ACCESS_KEY_ID"),
        "{err}"
    );
    assert!(t.elapsed().as_secs() < 5, "auth errors are not retried");
    let out = cli(&format!("s3:http://{}/ab", s.s3))
        .arg("snapshots")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("bucket name"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn objects_above_64_mib_go_up_in_64_mib_parts() {
    let s = seaweed::server();
    let b = s3_backend(&format!("s3:http://{}/multipart", s.s3));
    b.create().unwrap();
    let tmp = tempfile::NamedTempFile::new().unwrap();
    let data = random_bytes((64 << 20) + 12345, 77);
    fs::write(tmp.path(), &data).unwrap();
    let before = b.requests().unwrap().put;
    b.put("data/aa/big", Payload::File(tmp.path()), PutMode::IfAbsent)
        .unwrap();
    // create + 2 parts + complete
    assert_eq!(b.requests().unwrap().put - before, 4);
    assert_eq!(
        b.get_range("data/aa/big", (64 << 20) - 5, 100).unwrap(),
        &data[(64 << 20) - 5..(64 << 20) + 95]
    );
    assert!(b.get("data/aa/big", 1 << 30).unwrap() == data);
    assert_eq!(
        b.put("data/aa/big", Payload::File(tmp.path()), PutMode::IfAbsent)
            .unwrap(),
        lifeboat::backend::PutOutcome::AlreadyExists
    );
}

#[test]
fn listings_are_paginated_to_the_end() {
    let s = seaweed::server();
    let b = s3_backend(&format!("s3:http://{}/pagination/x", s.s3));
    b.create().unwrap();
    std::thread::scope(|sc| {
        for t in 0..8 {
            let b = &b;
            sc.spawn(move || {
                for i in (t..1100).step_by(8) {
                    b.put(
                        &format!("snapshots/{i:05}"),
                        Payload::Bytes(b"x"),
                        PutMode::Overwrite,
                    )
                    .unwrap();
                }
            });
        }
    });
    let lists = b.requests().unwrap().list;
    let all = b.list("snapshots/").unwrap();
    assert_eq!(all.len(), 1100);
    assert!(
        b.requests().unwrap().list - lists >= 2,
        "more than one page was requested"
    );
}

#[test]
fn injected_faults_are_retried_and_leave_a_clean_repository() {
    let s = seaweed::server();
    let proxy = Proxy::start(s.s3);
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    sample_tree(&src, 16);
    let url = format!("s3:http://{}/faults/r", proxy.addr);
    init(&url);
    proxy.set(|p| {
        p.every = 3;
        p.faults = vec![
            Fault::SlowDown503,
            Fault::Internal500,
            Fault::ResetBeforeForward,
            Fault::ResetAfterForward,
            Fault::TruncateBody,
            Fault::ResetMidBody,
            Fault::Delay,
        ];
    });
    let b = json(
        cli(&url)
            .env("LIFEBOAT_RETRY_BASE_MS", "20")
            .args(["backup", "--name", "v"])
            .arg(&src),
    );
    assert_eq!(b["summary"]["files_new"], 316);
    let target = tmp.path().join("t");
    json(
        cli(&url)
            .env("LIFEBOAT_RETRY_BASE_MS", "20")
            .args(["restore", "latest", "--target"])
            .arg(&target),
    );
    assert_same_tree(&src, &target);
    let c = json(
        cli(&url)
            .env("LIFEBOAT_RETRY_BASE_MS", "20")
            .args(["check", "--read-data"]),
    );
    assert!(c["report"]["errors"].as_array().unwrap().is_empty(), "{c}");
    let injected = proxy.injected.load(std::sync::atomic::Ordering::SeqCst);
    assert!(injected >= 20, "only {injected} faults were injected");
}

/// Over a long round trip a restore is as fast as the requests it keeps in flight: the
/// configured number, every one of them, and fewer when the store says SlowDown.
#[test]
fn restore_keeps_the_configured_reads_in_flight_and_backs_off_on_slowdown() {
    let s = seaweed::server();
    let proxy = Proxy::start(s.s3);
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    sample_tree(&src, 24);
    let url = format!("s3:http://{}/inflight/r", proxy.addr);
    init(&url);
    json(cli(&url).args(["backup", "--name", "v"]).arg(&src));

    proxy.set(|p| p.latency = Some(std::time::Duration::from_millis(60)));
    proxy.reset_peak();
    let target = tmp.path().join("t");
    json(
        cli(&url)
            .env("LIFEBOAT_S3_CONNECTIONS", "6")
            .args(["restore", "latest", "--target"])
            .arg(&target),
    );
    assert_same_tree(&src, &target);
    let peak = proxy
        .peak_in_flight
        .load(std::sync::atomic::Ordering::SeqCst);
    // The proxy counts a request from its arrival until its answer starts to go out, inside
    // the client's own in-flight window: never more than the setting, and with a 60 ms round
    // trip all six overlap.
    assert!(
        peak == 6,
        "LIFEBOAT_S3_CONNECTIONS=6: the restore kept {peak} requests in flight"
    );

    // Every other request answered 503 SlowDown: the restore still completes, and says it
    // lowered the number in flight.
    proxy.set(|p| {
        p.every = 2;
        p.faults = vec![Fault::SlowDown503];
    });
    let target = tmp.path().join("t2");
    let out = cli(&url)
        .env("LIFEBOAT_S3_CONNECTIONS", "6")
        .env("LIFEBOAT_RETRY_BASE_MS", "20")
        .env("LIFEBOAT_RETRY_ATTEMPTS", "20")
        .args(["restore", "latest", "--target"])
        .arg(&target)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_same_tree(&src, &target);
    assert!(
        err.contains("the store is throttling") && err.contains("requests in flight instead of 6"),
        "no word of backing off: {err}"
    );

    // A setting that is not a number in range is refused by name, not replaced by the default.
    proxy.set(|p| p.every = 0);
    let out = cli(&url)
        .env("LIFEBOAT_S3_CONNECTIONS", "eight")
        .arg("snapshots")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a malformed setting was accepted");
    assert!(
        err.contains("LIFEBOAT_S3_CONNECTIONS=\"eight\" is not a number from 1 to 64"),
        "{err}"
    );
}

#[test]
fn a_store_that_goes_down_fails_the_backup_clearly_and_the_retry_reuses_uploads() {
    let s = seaweed::server();
    let proxy = Proxy::start(s.s3);
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    sample_tree(&src, 24);
    let url = format!("s3:http://{}/outage/r", proxy.addr);
    init(&url);
    let requests = proxy.requests.clone();
    let start = requests.load(std::sync::atomic::Ordering::SeqCst);
    let child = cli(&url)
        .env("LIFEBOAT_RETRY_ATTEMPTS", "3")
        .env("LIFEBOAT_RETRY_BASE_MS", "10")
        .args(["backup", "--name", "v", "--threads", "1"])
        .arg(&src)
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Let it upload some packs, then take the store down.
    while requests.load(std::sync::atomic::Ordering::SeqCst) < start + 15 {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    proxy.set(|p| p.down = true);
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.lines().last().unwrap_or("").contains("SlowDown"),
        "{err}"
    );
    proxy.set(|p| p.down = false);

    let b = s3_backend(&format!("s3:http://{}/outage/r", s.s3));
    assert!(
        b.list("snapshots/").unwrap().is_empty(),
        "no snapshot from the failed run"
    );
    let c = json(cli(&url).arg("check"));
    assert!(c["report"]["errors"].as_array().unwrap().is_empty(), "{c}");
    let again = json(cli(&url).args(["backup", "--name", "v"]).arg(&src));
    assert!(
        again["summary"]["packs_adopted"].as_u64().unwrap() > 0,
        "{again}"
    );
    let target = tmp.path().join("t");
    json(
        cli(&url)
            .args(["restore", "latest", "--target"])
            .arg(&target),
    );
    assert_same_tree(&src, &target);
}

#[test]
fn storj_strictness_no_streaming_checksums_and_out_of_order_listings() {
    let s = seaweed::server();
    let proxy = Proxy::start(s.s3);
    proxy.set(|p| p.strict = true);
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    sample_tree(&src, 8);
    let url = format!("s3:http://{}/strict/r", proxy.addr);
    init(&url);
    json(cli(&url).args(["backup", "--name", "v"]).arg(&src));
    write(&src.join("small/new.txt"), b"second snapshot");
    json(cli(&url).args(["backup", "--name", "v"]).arg(&src));
    let snaps = json(cli(&url).arg("snapshots"));
    assert_eq!(snaps.as_array().unwrap().len(), 2);
    let target = tmp.path().join("t");
    json(
        cli(&url)
            .args(["restore", "latest", "--target"])
            .arg(&target),
    );
    assert_same_tree(&src, &target);
    use std::sync::atomic::Ordering::SeqCst;
    assert_eq!(
        proxy.rejected_streaming.load(SeqCst),
        0,
        "lifeboat sent a streaming or trailer checksum"
    );
    assert!(proxy.shuffled_lists.load(SeqCst) >= 4);
}

#[test]
fn stores_without_conditional_writes_get_the_fallback() {
    let s = seaweed::server();
    let proxy = Proxy::start(s.s3);
    proxy.set(|p| p.no_conditional = true);
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    sample_tree(&src, 2);
    let url = format!("s3:http://{}/noconditional/r", proxy.addr);
    init(&url);
    json(cli(&url).args(["backup", "--name", "v"]).arg(&src));
    // A second init must still refuse: the fallback checks before it writes.
    let again = cli(&url).arg("init").output().unwrap();
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    let target = tmp.path().join("t");
    json(
        cli(&url)
            .args(["restore", "latest", "--target"])
            .arg(&target),
    );
    assert_same_tree(&src, &target);
    assert!(
        proxy
            .rejected_streaming
            .load(std::sync::atomic::Ordering::SeqCst)
            >= 2,
        "501s were served"
    );
}
