//! lifeboat's container deliverable built and run with podman (issue 21): lifeboat's own image
//! (container/Containerfile: FROM scratch, the static binary, CA bundle, user 65532) runs
//! `--version`, `demo` and a backup to the S3 server on the host's loopback; and an app image
//! made exactly as `lifeboat sdl inject --mode image` says (sdl-snippets/postgres.yaml in, the
//! Dockerfile it writes built as written, but for its two registry images) restores itself onto
//! a new empty volume, takes its final backup on `podman stop`, and refuses to start the app when
//! the S3 server is down.
//!
//! What differs from a deployment, and nothing else:
//! - No registry is reachable: `ghcr.io/lifeboat-backup/lifeboat:0.3.0` is the image built here
//!   from this tree, and `postgres:16` is stood in for by Debian 12's PostgreSQL 15 on a
//!   debootstrap root filesystem with a docker-entrypoint.sh doing what the official one does
//!   (tests/podman/postgres/). The generated Dockerfile's two FROM lines are swapped for these
//!   and every other line is built verbatim.
//! - The SDL's placeholders get test values; the S3 server is SeaweedFS on 127.0.0.1, so the
//!   containers use the host's network (`--network host`) and PostgreSQL a free port (PGPORT).
//!
//! podman comes from tests/install-podman.sh (runc, cgroupfs, no default ulimits: the settings
//! this kind of machine needs), called by the tests themselves. Each test prints a
//! `CONTAINER-…` line with its figures.

mod common;
mod podman;

use std::path::Path;
use std::time::{Duration, Instant};

use podman::{Cleanup, PG_CHECK as CHECK, podman, podman_ok, psql, unique};

const REPO_PASSWORD: &str = "container e2e repository password";
const PG_PASSWORD: &str = "container-e2e-pg-password";

fn s3_url(bucket: &str, prefix: &str) -> String {
    format!(
        "s3:http://{}/{bucket}/{prefix}",
        common::seaweed::server().s3
    )
}

fn s3_env() -> Vec<(String, String)> {
    vec![
        (
            "AWS_ACCESS_KEY_ID".into(),
            common::seaweed::ACCESS_KEY.into(),
        ),
        (
            "AWS_SECRET_ACCESS_KEY".into(),
            common::seaweed::SECRET_KEY.into(),
        ),
    ]
}

/// `podman run --rm --network host [-e K=V]… [extra…] IMAGE ARGS…`: (exit code, output).
fn run_once(image: &str, env: &[(String, String)], extra: &[&str], args: &[&str]) -> (i32, String) {
    let mut a: Vec<String> = vec![
        "run".into(),
        "--rm".into(),
        "--network".into(),
        "host".into(),
    ];
    for (k, v) in env {
        a.push("-e".into());
        a.push(format!("{k}={v}"));
    }
    a.extend(extra.iter().map(|s| s.to_string()));
    a.push(image.into());
    a.extend(args.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = a.iter().map(String::as_str).collect();
    let out = podman(&refs);
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn lifeboat_image_runs_version_demo_and_a_backup_to_s3() {
    let started = Instant::now();
    let image = podman::lifeboat_image();
    let mut clean = Cleanup::default();

    // The layout: exactly what container/stage-rootfs.sh stages, run as 65532.
    let cfg = podman_ok(&[
        "image",
        "inspect",
        "--format",
        "{{.Config.User}} {{json .Config.Entrypoint}} {{.Config.WorkingDir}}",
        image,
    ]);
    assert_eq!(
        cfg.trim(),
        "65532:65532 [\"/usr/local/bin/lifeboat\"] /home/nonroot"
    );
    let probe = unique("layout");
    podman_ok(&["create", "--name", &clean.container(&probe), image]);
    let tar = podman(&["export", &probe]);
    assert!(tar.status.success());
    let list = std::process::Command::new("tar")
        .args(["--numeric-owner", "-tvf", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(&tar.stdout)?;
            c.wait_with_output()
        })
        .unwrap();
    let listing = String::from_utf8_lossy(&list.stdout).to_string();
    for want in [
        "usr/local/bin/lifeboat",
        "etc/ssl/certs/ca-certificates.crt",
        "etc/passwd",
        "etc/group",
    ] {
        assert!(listing.contains(want), "image lacks {want}:\n{listing}");
    }
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with("drwxrwxrwt") && l.trim_end().ends_with("tmp/")),
        "no /tmp with mode 1777:\n{listing}"
    );
    assert!(
        listing
            .lines()
            .any(|l| l.contains("65532/65532") && l.trim_end().ends_with("home/nonroot/")),
        "no /home/nonroot owned by 65532:\n{listing}"
    );

    let (code, out) = run_once(image, &[], &[], &["--version"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(env!("CARGO_PKG_VERSION")),
        "--version says {out}"
    );

    // `demo` in the image's working directory, as the non-root user.
    let (code, out) = run_once(image, &[], &[], &["demo"]);
    assert_eq!(code, 0, "lifeboat demo in the image: {out}");

    // A backup of a host directory (mounted read-only) to the S3 server on the host's loopback;
    // the repository is created by the first backup's `init`, restored here by the host binary.
    let data = tempfile::tempdir().unwrap();
    for i in 0..50u64 {
        common::write(
            &data.path().join(format!("d{}/f{i}.bin", i % 5)),
            &common::random_bytes(10_000 + (i as usize) * 997, i),
        );
    }
    let bucket = unique("image");
    let url = s3_url(&bucket, "plain");
    let mut env = s3_env();
    env.push(("LIFEBOAT_REPOSITORY".into(), url.clone()));
    env.push(("LIFEBOAT_PASSWORD".into(), REPO_PASSWORD.into()));
    let mount = format!("{}:/data:ro", data.path().display());
    let (code, out) = run_once(
        image,
        &env,
        &[],
        &["init", "--kdf-memory-kib", "64", "--kdf-time", "1"],
    );
    assert_eq!(code, 0, "init to S3 from the image: {out}");
    let (code, out) = run_once(
        image,
        &env,
        &["-v", &mount],
        &["backup", "/data", "--name", "plain"],
    );
    assert_eq!(code, 0, "backup to S3 from the image: {out}");
    let home = tempfile::tempdir().unwrap();
    let target = tempfile::tempdir().unwrap();
    let r = common::seaweed::lifeboat_s3(&url, home.path())
        .env("LIFEBOAT_PASSWORD", REPO_PASSWORD)
        .args(["restore", "latest", "--name", "plain", "--target"])
        .arg(target.path().join("r"))
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert_eq!(
        common::manifest(data.path()),
        common::manifest(&target.path().join("r")),
        "what the image backed up is not what the host restored"
    );
    eprintln!(
        "CONTAINER-IMAGE size_bytes={} seconds={:.1}",
        podman::image_size(image),
        started.elapsed().as_secs_f64()
    );
}

/// The app image, made from sdl-snippets/postgres.yaml by `lifeboat sdl inject --mode image`:
/// (image, env from the SDL it printed, with test values for the placeholders).
fn app_image(work: &Path, repo: &str, pgport: u16) -> (String, Vec<(String, String)>) {
    let (built, svc) = podman::postgres_app_image(work);
    let words =
        |v: &serde_yaml_ng::Value| -> Vec<String> { serde_yaml_ng::from_value(v.clone()).unwrap() };
    let env = words(&svc["env"])
        .into_iter()
        .map(|e| {
            let (k, v) = e.split_once('=').unwrap();
            let v = match k {
                "LIFEBOAT_REPOSITORY" => repo.to_string(),
                "LIFEBOAT_PASSWORD" => REPO_PASSWORD.into(),
                "POSTGRES_PASSWORD" => PG_PASSWORD.into(),
                "AWS_ACCESS_KEY_ID" => common::seaweed::ACCESS_KEY.into(),
                "AWS_SECRET_ACCESS_KEY" => common::seaweed::SECRET_KEY.into(),
                _ => {
                    assert!(!v.contains('<'), "no test value for {k}={v}");
                    v.to_string()
                }
            };
            (k.to_string(), v)
        })
        .chain([("PGPORT".to_string(), pgport.to_string())])
        .collect();
    (built, env)
}

/// `podman run -d` of the app image on `volume`, stopped with a 30 s grace (Kubernetes' and
/// Akash's).
fn start_app(name: &str, image: &str, volume: &str, env: &[(String, String)]) {
    let mut a: Vec<String> = [
        "run",
        "-d",
        "--name",
        name,
        "--network",
        "host",
        "--stop-timeout",
        "30",
        "-v",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.push(format!("{volume}:/var/lib/postgresql/data"));
    for (k, v) in env {
        a.push("-e".into());
        a.push(format!("{k}={v}"));
    }
    a.push(image.into());
    let refs: Vec<&str> = a.iter().map(String::as_str).collect();
    podman_ok(&refs);
}

fn wait_for_sql(container: &str, sql: &str, limit: Duration) -> String {
    let t = Instant::now();
    loop {
        if let Some(v) = psql(container, sql) {
            return v;
        }
        let running = podman_ok(&["inspect", "--format", "{{.State.Running}}", container]);
        assert!(
            running.trim() == "true" && t.elapsed() < limit,
            "{container} never answered {sql:?} (running: {}); its log:\n{}",
            running.trim(),
            podman::logs(container)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn app_image_restores_itself_on_a_new_volume_and_refuses_to_start_without_s3() {
    podman::install();
    let mut clean = Cleanup::default();
    let work = tempfile::tempdir().unwrap();
    let bucket = unique("app");
    let repo = s3_url(&bucket, "postgres");
    let pgport = common::free_port();
    let (image, env) = app_image(work.path(), &repo, pgport);

    // 1. An empty volume: nothing to restore, PostgreSQL initialises it; rows are written.
    let (c1, v1) = (
        clean.container(&unique("pg1")),
        clean.volume(&unique("pgdata1")),
    );
    start_app(&c1, &image, &v1, &env);
    wait_for_sql(&c1, "select 1", Duration::from_secs(180));
    psql(
        &c1,
        "create table t (id int primary key, v text); \
         insert into t select g, md5(g::text) from generate_series(1, 100000) g",
    )
    .expect("create and fill t");
    for i in 0..20 {
        let lo = 100_001 + i * 500;
        psql(
            &c1,
            &format!(
                "insert into t select g, md5(g::text) from generate_series({lo}, {}) g",
                lo + 499
            ),
        )
        .expect("insert");
    }
    let written = psql(&c1, CHECK).unwrap();
    let rows_written: u64 = written.split(':').next().unwrap().parse().unwrap();
    assert_eq!(rows_written, 110_000);

    // 2. `podman stop`: the image's STOPSIGNAL (SIGINT, as postgres:16's) reaches lifeboat as
    // PID 1, which stops PostgreSQL, takes the final backup and releases the lease in time.
    let t = Instant::now();
    podman_ok(&["stop", &c1]);
    let stop_to_exit = t.elapsed().as_secs_f64();
    let code = podman_ok(&["inspect", "--format", "{{.State.ExitCode}}", &c1]);
    let log1 = podman::logs(&c1);
    assert_eq!(
        code.trim(),
        "0",
        "exit code after podman stop; log:\n{log1}"
    );
    assert!(
        stop_to_exit < 30.0,
        "stop took {stop_to_exit:.1}s (killed?)"
    );
    for want in [
        "initialised an empty",
        "final backup done",
        "volume lease released",
    ] {
        assert!(
            log1.contains(want),
            "first run's log lacks {want:?}:\n{log1}"
        );
    }

    // 3. A new container on a NEW empty volume: restored before PostgreSQL starts, every row back.
    let (c2, v2) = (
        clean.container(&unique("pg2")),
        clean.volume(&unique("pgdata2")),
    );
    let t = Instant::now();
    start_app(&c2, &image, &v2, &env);
    let back = wait_for_sql(&c2, CHECK, Duration::from_secs(300));
    let restore_to_rows = t.elapsed().as_secs_f64();
    let log2 = podman::logs(&c2);
    assert_eq!(back, written, "rows after the restore; log:\n{log2}");
    assert!(
        !log2.contains("initialised an empty"),
        "PostgreSQL initialised an empty volume before the restore:\n{log2}"
    );
    let restored = log2
        .find("volume restored")
        .unwrap_or_else(|| panic!("{log2}"));
    let pg_first = log2
        .find("starting PostgreSQL")
        .unwrap_or_else(|| panic!("no PostgreSQL start line:\n{log2}"));
    assert!(
        restored < pg_first,
        "PostgreSQL started before the restore finished:\n{log2}"
    );
    podman_ok(&["stop", &c2]);
    if std::env::var_os("LIFEBOAT_TEST_LOGS").is_some() {
        eprintln!("--- first container:\n{log1}\n--- second container:\n{log2}");
    }

    // 4. The S3 server down at start: the gate gives up, the app never starts, exit code 13.
    let dead = format!(
        "s3:http://127.0.0.1:{}/{bucket}/postgres",
        common::free_port()
    );
    let env3: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| {
            let v = if k == "LIFEBOAT_REPOSITORY" {
                dead.clone()
            } else {
                v.clone()
            };
            (k.clone(), v)
        })
        .chain([("LIFEBOAT_RESTORE_TIMEOUT".to_string(), "10s".to_string())])
        .collect();
    let (c3, v3) = (
        clean.container(&unique("pg3")),
        clean.volume(&unique("pgdata3")),
    );
    let t = Instant::now();
    start_app(&c3, &image, &v3, &env3);
    let code = podman::wait(&c3);
    let log3 = podman::logs(&c3);
    assert_eq!(code, 13, "exit code with the S3 server down; log:\n{log3}");
    assert!(
        !log3.contains("initialised an empty") && !log3.contains("starting PostgreSQL"),
        "the app started with the repository unreachable:\n{log3}"
    );
    let left: Vec<_> = std::fs::read_dir(podman::volume_dir(&v3))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n != ".lifeboat")
        .collect();
    assert!(left.is_empty(), "the volume was written: {left:?}");
    eprintln!(
        "CONTAINER-E2E rows_written={rows_written} rows_back={} stop_to_exit_s={stop_to_exit:.1} \
         new_volume_start_to_rows_s={restore_to_rows:.1} s3_down_exit={code} s3_down_s={:.1}",
        back.split(':').next().unwrap(),
        t.elapsed().as_secs_f64()
    );
}
