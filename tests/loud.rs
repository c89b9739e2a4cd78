//! No silent success at the edges: a repository URL of another scheme is refused (it would have
//! become a local directory that dies with the container), a CLI command whose output pipe closes
//! ends quietly instead of panicking, the agent survives its log stream closing and still takes
//! its final backup, logs carry no colour codes when they are not a terminal, and
//! `--read-data-subset N%` reads at least N% of the pack bytes.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lifeboat"));
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("LIFEBOAT_PASSWORD", PASSWORD);
    c
}

/// The agent on volume `vol` of `repo`, as a test runs it: its own cache, a short lease, no
/// schedule (backups come from the gate and the final backup only).
fn agent(repo: &Path, volume: &Path, cache: &Path) -> Command {
    let mut c = bin();
    c.env("LIFEBOAT_REPOSITORY", repo)
        .env("LIFEBOAT_PATH", volume)
        .env("LIFEBOAT_NAME", "vol")
        .env("LIFEBOAT_CACHE_DIR", cache)
        .env("LIFEBOAT_LEASE_TTL", "30s")
        .env("LIFEBOAT_SCHEDULE", "off");
    c
}

#[test]
fn a_url_without_s3_prefix_is_refused_not_made_a_directory() {
    let tmp = tempfile::tempdir().unwrap();
    for url in [
        "https://gateway.storjshare.io/my-bucket/pg",
        "http://127.0.0.1:9/bucket/pg",
        "ftp://host/x",
    ] {
        let out = bin()
            .current_dir(tmp.path())
            .env("LIFEBOAT_REPOSITORY", url)
            .arg("init")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{url}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains(url), "{err}");
        if url.starts_with("http") {
            assert!(err.contains(&format!("did you mean s3:{url}?")), "{err}");
        }
        let out = bin()
            .current_dir(tmp.path())
            .env("LIFEBOAT_REPOSITORY", url)
            .args(["config", "check"])
            .output()
            .unwrap();
        assert!(!out.status.success(), "config check passed {url}");
    }
    assert_eq!(
        std::fs::read_dir(tmp.path()).unwrap().count(),
        0,
        "nothing created locally"
    );
}

#[test]
fn a_closed_output_pipe_ends_a_command_quietly() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    let src = tmp.path().join("src");
    cli_init(&repo);
    for i in 0..3000 {
        write(&src.join(format!("d{}/f{i}", i % 10)), b"x");
    }
    let out = lifeboat(&repo)
        .args(["backup", "--name", "v"])
        .arg(&src)
        .output()
        .unwrap();
    assert!(out.status.success());
    for args in [&["ls", "latest"][..], &["--json", "ls", "latest"][..]] {
        let mut child = lifeboat(&repo)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        // The reader goes away, like `| head -1`.
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert_ne!(out.status.code(), Some(101), "{args:?}");
        assert!(
            out.status.success() || out.status.signal() == Some(libc::SIGPIPE),
            "{args:?}: {:?} {err}",
            out.status
        );
    }
}

#[test]
fn the_agent_outlives_its_log_stream_and_still_takes_the_final_backup() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    let volume = tmp.path().join("vol");
    cli_init(&repo);
    std::fs::create_dir_all(&volume).unwrap();
    write(&volume.join("data.txt"), b"precious");
    let mut child = agent(&repo, &volume, &tmp.path().join("cache"))
        .args(["run", "--", "sh", "-c", "while true; do sleep 0.05; done"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read until the app is up, then close the log stream.
    let mut log = BufReader::new(child.stderr.take().unwrap());
    let start = Instant::now();
    let mut line = String::new();
    let mut plain = true;
    loop {
        line.clear();
        assert!(log.read_line(&mut line).unwrap() > 0, "agent ended early");
        plain &= !line.contains('\u{1b}');
        if line.contains("app started") {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "no app start");
    }
    assert!(plain, "colour codes in a log that is not a terminal");
    drop(log);
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let status = child.wait().unwrap();
    assert_ne!(status.code(), Some(101), "the agent panicked");
    assert!(status.signal().is_none(), "the agent died of {status:?}");
    let out = lifeboat(&repo)
        .args(["--json", "snapshots"])
        .output()
        .unwrap();
    let snaps: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        snaps
            .iter()
            .any(|s| s["labels"]["lifeboat.reason"] == "final"),
        "no final backup after the log stream closed: {snaps:?}"
    );
}

#[test]
fn read_data_subset_reads_at_least_the_share_asked_for() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    let src = tmp.path().join("src");
    cli_init(&repo);
    for i in 0..8 {
        write(&src.join(format!("f{i}")), &random_bytes(700_000, i));
    }
    let out = lifeboat(&repo)
        .args(["backup", "--name", "v"])
        .arg(&src)
        .output()
        .unwrap();
    assert!(out.status.success());
    let packs = count_packs(&repo);
    assert!(packs >= 4, "{packs} packs");
    for _ in 0..5 {
        let out = lifeboat(&repo)
            .args(["--json", "check", "--read-data-subset", "10%"])
            .output()
            .unwrap();
        assert!(out.status.success());
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(v["report"]["packs_read"].as_u64().unwrap() >= 1, "{v}");
    }
    let out = lifeboat(&repo)
        .args(["--json", "check", "--read-data-subset", "100%"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["report"]["packs_read"].as_u64().unwrap(), packs, "{v}");
}

fn count_packs(repo: &Path) -> u64 {
    let mut n = 0;
    for d in std::fs::read_dir(repo.join("data")).unwrap().flatten() {
        n += std::fs::read_dir(d.path()).unwrap().count() as u64;
    }
    n
}

#[test]
fn no_s3_credentials_fail_at_once_naming_the_variables() {
    let tmp = tempfile::tempdir().unwrap();
    for (env, expect) in [
        (vec![], "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"),
        (
            vec![("AWS_ACCESS_KEY_ID", "k")],
            "AWS_SECRET_ACCESS_KEY is not",
        ),
    ] {
        let start = Instant::now();
        let out = bin()
            .env("HOME", tmp.path())
            .env("LIFEBOAT_REPOSITORY", "s3:http://127.0.0.1:9/bucket/x")
            .envs(env)
            .arg("snapshots")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains(expect), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "took {:?}",
            start.elapsed()
        );
    }
}

#[test]
fn errors_name_what_is_wrong() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    cli_init(&repo);
    let out = lifeboat(&repo).arg("backup").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("nothing to back up") && !err.contains("volume name"),
        "{err}"
    );
    for (var, value, expect) in [
        (
            "LIFEBOAT_SCHEDULE",
            "61 * * * *",
            "minute 61 is outside 0-59",
        ),
        ("LIFEBOAT_SCHEDULE", "0 25 * * *", "hour 25 is outside 0-23"),
        (
            "LIFEBOAT_TIMEZONE",
            "Mars/Base",
            "LIFEBOAT_TIMEZONE=\"Mars/Base\"",
        ),
    ] {
        let out = lifeboat(&repo)
            .env(var, value)
            .args(["config", "check", "--path"])
            .arg(tmp.path())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{var}={value} passed");
        assert!(err.contains(expect), "{var}={value}: {err}");
    }
}

#[test]
fn the_app_does_not_inherit_lifeboats_secrets_unless_asked() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    let volume = tmp.path().join("vol");
    cli_init(&repo);
    std::fs::create_dir_all(&volume).unwrap();
    for pass in [false, true] {
        let envfile = tmp.path().join(format!("env-{pass}"));
        let mut c = agent(&repo, &volume, &tmp.path().join("cache"));
        c.env("LIFEBOAT_CONTROL_TOKEN", "control-token-value")
            .env("AWS_SECRET_ACCESS_KEY", "aws-secret-value")
            .env("APP_SETTING", "kept")
            .args(["run", "--", "sh", "-c"])
            .arg(format!("env > {}", envfile.display()));
        if pass {
            c.env("LIFEBOAT_PASS_SECRETS", "true");
        }
        let out = c.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let env = std::fs::read_to_string(&envfile).unwrap();
        assert!(env.contains("APP_SETTING=kept"), "{env}");
        for secret in [PASSWORD, "control-token-value", "aws-secret-value"] {
            assert_eq!(env.contains(secret), pass, "pass={pass} {secret}: {env}");
        }
    }
}

#[test]
fn sdl_inject_takes_the_repository_from_dash_r() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = bin()
        .args([
            "sdl",
            "inject",
            "-r",
            "s3:https://gateway.storjshare.io/my-bucket/pg",
            "--service",
            "postgres",
        ])
        .arg(root.join("sdl-snippets/postgres.yaml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sdl = String::from_utf8_lossy(&out.stdout);
    assert!(
        sdl.contains("LIFEBOAT_REPOSITORY=s3:https://gateway.storjshare.io/my-bucket/pg"),
        "{sdl}"
    );
}

/// Everything the agent needs is validated before the app starts, by `run` and by `config check`,
/// and each error names the variable, the value and what is accepted.
#[test]
fn agent_settings_are_validated_and_named() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    cli_init(&repo);
    let vol = tmp.path().join("vol");
    std::fs::create_dir_all(&vol).unwrap();
    let file = tmp.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let empty = tmp.path().join("empty-token");
    std::fs::write(&empty, b"").unwrap();
    let toml = tmp.path().join("lifeboat.toml");
    std::fs::write(&toml, "schedule = \"@hourly\"\nschedual = \"@every 10s\"\n").unwrap();
    let vol_s = vol.display().to_string();
    let cases: Vec<(Vec<(&str, String)>, &str)> = vec![
        (
            vec![(
                "LIFEBOAT_PATH",
                tmp.path().join("missing").display().to_string(),
            )],
            "does not exist",
        ),
        (
            vec![("LIFEBOAT_PATH", file.display().to_string())],
            "is not a directory",
        ),
        (
            vec![("LIFEBOAT_SCHEDUEL", "@every 10s".into())],
            "did you mean LIFEBOAT_SCHEDULE?",
        ),
        (
            vec![("LIFEBOAT_CONFIG", toml.display().to_string())],
            "LIFEBOAT_SCHEDUAL",
        ),
        (
            vec![("LIFEBOAT_PAUSE", "yes".into())],
            "LIFEBOAT_PAUSE=\"yes\" is not valid: use one of true, false",
        ),
        (
            vec![("LIFEBOAT_CONTROL_TOKEN_FILE", empty.display().to_string())],
            "LIFEBOAT_CONTROL_TOKEN_FILE",
        ),
    ];
    for (env, expect) in cases {
        for args in [&["config", "check"][..], &["run", "--", "true"][..]] {
            let mut c = lifeboat(&repo);
            c.env("LIFEBOAT_PATH", &vol_s)
                .env("LIFEBOAT_SCHEDULE", "off")
                .env("LIFEBOAT_CACHE_DIR", tmp.path().join("cache"));
            for (k, v) in &env {
                c.env(k, v);
            }
            let out = c.args(args).output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{env:?} {args:?} passed");
            assert!(err.contains(expect), "{env:?} {args:?}: {err}");
        }
    }
}

#[test]
fn restore_overwrite_never_follows_a_symlink_it_did_not_create() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    let src = tmp.path().join("src");
    cli_init(&repo);
    write(&src.join("a/f"), b"from the snapshot");
    write(&src.join("x"), b"x from the snapshot");
    std::fs::set_permissions(src.join("x"), std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(
        lifeboat(&repo)
            .args(["backup", "--name", "v"])
            .arg(&src)
            .output()
            .unwrap()
            .status
            .success()
    );
    let target = tmp.path().join("target");
    let outside_dir = tmp.path().join("outside-dir");
    let outside_file = tmp.path().join("outside-file");
    std::fs::create_dir_all(&target).unwrap();
    std::fs::create_dir_all(&outside_dir).unwrap();
    std::fs::write(&outside_file, b"not yours").unwrap();
    std::fs::set_permissions(&outside_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::os::unix::fs::symlink(&outside_dir, target.join("a")).unwrap();
    std::os::unix::fs::symlink(&outside_file, target.join("x")).unwrap();
    let out = lifeboat(&repo)
        .args([
            "restore",
            "latest",
            "--name",
            "v",
            "--overwrite",
            "--target",
        ])
        .arg(&target)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_dir(&outside_dir).unwrap().count(),
        0,
        "wrote through a link"
    );
    assert_eq!(std::fs::read(&outside_file).unwrap(), b"not yours");
    let mode = std::fs::metadata(&outside_file)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o644, "chmod-ed through a link");
    assert!(
        std::fs::symlink_metadata(target.join("a"))
            .unwrap()
            .is_dir()
    );
    assert_eq!(
        std::fs::read(target.join("a/f")).unwrap(),
        b"from the snapshot"
    );
    assert_eq!(
        std::fs::read(target.join("x")).unwrap(),
        b"x from the snapshot"
    );
}

#[test]
fn restore_include_takes_the_printed_paths_and_refuses_what_matches_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    let src = tmp.path().join("data");
    cli_init(&repo);
    write(&src.join("base/1"), b"one");
    write(&src.join("other"), b"two");
    assert!(
        lifeboat(&repo)
            .args(["backup", "--name", "v"])
            .arg(&src)
            .output()
            .unwrap()
            .status
            .success()
    );
    // The absolute source path, as `snapshots` prints it.
    let abs = format!("{}/base", src.display());
    let t1 = tmp.path().join("t1");
    let out = lifeboat(&repo)
        .args([
            "restore",
            "latest",
            "--name",
            "v",
            "--include",
            &abs,
            "--target",
        ])
        .arg(&t1)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(t1.join("base/1")).unwrap(), b"one");
    assert!(!t1.join("other").exists());
    let out = lifeboat(&repo)
        .args([
            "restore",
            "latest",
            "--name",
            "v",
            "--include",
            "/nope",
            "--target",
        ])
        .arg(tmp.path().join("t2"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("matches nothing") && err.contains("base") && err.contains("other"),
        "{err}"
    );
}

/// A capture that was not consistent (the agent's pause outlasted LIFEBOAT_PAUSE_MAX) is labelled,
/// and `latest` (so the gate) takes the newest consistent snapshot instead, saying which it
/// skipped; with no consistent one left it is still used rather than nothing.
#[test]
fn an_inconsistent_capture_is_labelled_and_passed_over_by_latest() {
    use lifeboat::backup::{self, BackupOptions, ConsistencyCheck, Source};
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    write(&src.join("f"), b"one");
    let repo = init_repo(&tmp.path().join("repo"));
    let good = backup::backup(
        &repo,
        &Source::Paths(vec![src.clone()]),
        &BackupOptions::new("v"),
    )
    .unwrap();
    write(&src.join("f"), b"two");
    let mut o = BackupOptions::new("v");
    o.consistency = Some(ConsistencyCheck(std::sync::Arc::new(|| {
        Some("pause limit".into())
    })));
    let bad = backup::backup(&repo, &Source::Paths(vec![src.clone()]), &o).unwrap();
    assert_eq!(
        bad.snapshot
            .labels
            .get("lifeboat.consistent")
            .map(String::as_str),
        Some("false")
    );
    let (id, _) = repo.find_latest(Some("v"), false).unwrap();
    assert_eq!(id, good.id, "latest passes over the inconsistent capture");
    // Only inconsistent ones: still restorable, used.
    let (id, _) = repo.find_latest(None, false).unwrap();
    assert_eq!(id, good.id);
    repo.delete_snapshot(&good.id).unwrap();
    let (id, _) = repo.find_latest(Some("v"), false).unwrap();
    assert_eq!(id, bad.id);
}

/// Only storage errors are waited out at the gate: a wrong password fails at once with its advice
/// (exit 13, the app not started), not after LIFEBOAT_RESTORE_TIMEOUT of retries.
#[test]
fn the_gate_fails_at_once_on_what_waiting_cannot_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    cli_init(&repo);
    let src = tmp.path().join("src");
    write(&src.join("f"), b"x");
    assert!(
        lifeboat(&repo)
            .args(["backup", "--name", "vol"])
            .arg(&src)
            .output()
            .unwrap()
            .status
            .success()
    );
    let vol = tmp.path().join("vol");
    std::fs::create_dir_all(&vol).unwrap();
    let start = Instant::now();
    let out = agent(&repo, &vol, &tmp.path().join("cache"))
        .env("LIFEBOAT_PASSWORD", "not the password")
        .env("LIFEBOAT_RESTORE_TIMEOUT", "5m")
        .args(["run", "--", "sh", "-c", "echo started > started"])
        .current_dir(tmp.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(13), "{err}");
    assert!(err.contains("wrong password"), "{err}");
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "took {:?}",
        start.elapsed()
    );
    assert!(!tmp.path().join("started").exists(), "the app started");
}
