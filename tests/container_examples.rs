//! container/docker-compose.yaml run for real with podman-compose (PyPI, installed by
//! tests/install-podman.sh): the published file, copied verbatim, plus an override that only
//! swaps the registry images for the ones built here (tests/podman: lifeboat's, and for
//! Vaultwarden an SQLite app that commits a numbered row every 20 ms), points the repository at
//! the S3 server on the host's loopback (so `network_mode: host`) and gives the sidecar's HTTP
//! endpoint a free port. A first `up` on an empty bucket: `restore` creates the repository and
//! has finished (exit 0) before the app and the sidecar start; the sidecar replicates while the
//! app writes; `stop` stops the app before the sidecar, whose final backup succeeds; `down -v`
//! removes the volume and `up` restores every row into the new one before the app starts.
//!
//! podman-compose waits for `service_completed_successfully` as "stopped" (whatever the exit
//! code), so the test checks the restore's exit code itself.

mod common;
mod podman;

use std::process::Command;
use std::time::{Duration, Instant};

use podman::{podman, podman_ok, unique};

struct Project {
    dir: tempfile::TempDir,
    name: String,
    env: Vec<(String, String)>,
}

impl Project {
    fn compose(&self, args: &[&str]) -> std::process::Output {
        let mut c = Command::new("podman-compose");
        c.current_dir(self.dir.path())
            .args([
                "-p",
                &self.name,
                "-f",
                "docker-compose.yaml",
                "-f",
                "override.yaml",
            ])
            .args(args);
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c.output().expect("podman-compose")
    }
    fn compose_ok(&self, args: &[&str]) {
        let out = self.compose(args);
        assert!(
            out.status.success(),
            "podman-compose {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    fn container(&self, service: &str) -> String {
        format!("{}_{service}_1", self.name)
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let _ = self.compose(&["down", "-v", "-t", "0"]);
    }
}

fn state(container: &str, field: &str) -> String {
    podman_ok(&[
        "inspect",
        "--format",
        &format!("{{{{.State.{field}}}}}"),
        container,
    ])
    .trim()
    .to_string()
}

/// `sqlite3 /data/db.sqlite3 SQL` in the app's container; None until it answers.
fn sqlite(p: &Project, sql: &str) -> Option<String> {
    let out = podman(&[
        "exec",
        &p.container("app"),
        "sqlite3",
        "/data/db.sqlite3",
        sql,
    ]);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn wait_until<T>(p: &Project, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let t = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            t.elapsed() < Duration::from_secs(180),
            "{what}: not within 180 s; the app's log:\n{}\nthe sidecar's:\n{}",
            podman::logs(&p.container("app")),
            podman::logs(&p.container("lifeboat"))
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// The highest row and the count of rows up to it (a gap shows as a smaller count).
fn rows(p: &Project) -> Option<(i64, i64)> {
    let out = sqlite(p, "SELECT max(id), count(*) FROM t")?;
    let (max, count) = out.split_once('|')?;
    Some((max.parse().ok()?, count.parse().ok()?))
}

/// `restore` exited 0. (podman's FinishedAt is written when the container is cleaned up, up to
/// a fraction of a second after podman-compose saw it stop, so the order is checked by what the
/// app and the sidecar found on the volume instead: see the callers.)
fn assert_restore_ok(p: &Project) {
    let restore = p.container("restore");
    assert_eq!(
        state(&restore, "Status"),
        "exited",
        "restore: {}",
        podman::logs(&restore)
    );
    assert_eq!(
        state(&restore, "ExitCode"),
        "0",
        "restore: {}",
        podman::logs(&restore)
    );
}

#[test]
fn compose_example_restores_first_and_brings_a_removed_volume_back() {
    let started = Instant::now();
    // The static build (CPU) and the debootstrap (mostly the mirror) overlap.
    let app = std::thread::spawn(podman::sqlite_app_image);
    let lifeboat = podman::lifeboat_image();
    let app_image = app.join().unwrap();
    let s3 = common::seaweed::server().s3;
    let name = unique("compose");
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        podman::root().join("container/docker-compose.yaml"),
        dir.path().join("docker-compose.yaml"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("lifeboat-password.txt"),
        "compose example password\n",
    )
    .unwrap();
    let repo = format!("s3:http://{s3}/{name}/vaultwarden");
    std::fs::write(
        dir.path().join("override.yaml"),
        format!(
            "services:\n  restore:\n    image: {lifeboat}\n    network_mode: host\n    environment:\n      LIFEBOAT_REPOSITORY: {repo}\n\
             \x20 app:\n    image: {app_image}\n    network_mode: host\n\
             \x20 lifeboat:\n    image: {lifeboat}\n    network_mode: host\n    environment:\n      LIFEBOAT_REPOSITORY: {repo}\n      LIFEBOAT_LISTEN: 127.0.0.1:{}\n",
            common::free_port()
        ),
    )
    .unwrap();
    let p = Project {
        dir,
        name,
        env: vec![
            ("LIFEBOAT_BUCKET".into(), "unused".into()),
            (
                "AWS_ACCESS_KEY_ID".into(),
                common::seaweed::ACCESS_KEY.into(),
            ),
            (
                "AWS_SECRET_ACCESS_KEY".into(),
                common::seaweed::SECRET_KEY.into(),
            ),
        ],
    };

    // A first `up` on an empty bucket: `restore` creates the repository, nothing to restore;
    // the app writes and the sidecar replicates.
    p.compose_ok(&["up", "-d"]);
    let side = p.container("lifeboat");
    wait_until(&p, "the sidecar replicating", || {
        podman::logs(&side)
            .contains("SQLite replication generation begins")
            .then_some(())
    });
    wait_until(&p, "500 rows", || rows(&p).filter(|(max, _)| *max >= 500));
    assert_restore_ok(&p);

    // `stop`: the app first, then the sidecar, whose final backup sees the app's last write.
    let t = Instant::now();
    // Docker Compose stops dependents first (the app, then the sidecar it depends on);
    // podman-compose 1.6 does not keep that order reliably (seen here with PostgreSQL: the
    // sidecar stopped while the server still ran), so the order Docker Compose takes is
    // spelled out.
    p.compose_ok(&["stop", "app"]);
    p.compose_ok(&["stop"]);
    let stop_s = t.elapsed().as_secs_f64();
    let log = podman::logs(&side);
    // 143 (128 + SIGTERM) after a final backup that succeeded; 14 when it failed.
    assert_eq!(
        state(&side, "ExitCode"),
        "143",
        "sidecar's exit code; log:\n{log}"
    );
    assert!(log.contains("final backup done"), "{log}");
    assert_eq!(state(&p.container("app"), "ExitCode"), "0");
    let db = podman::volume_dir(&format!("{}_appdata", p.name)).join("db.sqlite3");
    let written: i64 = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row("SELECT max(id) FROM t", [], |r| r.get(0))
        .unwrap();

    // `down -v` removes the volume; `up` restores it before the app starts.
    p.compose_ok(&["down", "-v"]);
    let t = Instant::now();
    p.compose_ok(&["up", "-d"]);
    let back: i64 = wait_until(&p, "the app's start", || {
        sqlite(
            &p,
            "SELECT restored FROM starts ORDER BY rowid DESC LIMIT 1",
        )?
        .parse()
        .ok()
    });
    let up_s = t.elapsed().as_secs_f64();
    assert_restore_ok(&p);
    assert_eq!(back, written, "rows after down -v / up");
    assert_eq!(
        sqlite(&p, &format!("SELECT count(*) FROM t WHERE id <= {back}")).unwrap(),
        back.to_string(),
        "gaps below the restored row"
    );
    assert_eq!(sqlite(&p, "PRAGMA integrity_check").unwrap(), "ok");
    let (max, count) = rows(&p).unwrap();
    assert_eq!(max, count, "a gap in the rows the app committed");
    let rlog = podman::logs(&p.container("restore"));
    let sidelog = podman::logs(&p.container("lifeboat"));
    assert!(
        rlog.contains("restored") && sidelog.contains("volume has data: no restore"),
        "the sidecar did not find the restored volume:\nrestore:\n{rlog}\nsidecar:\n{sidelog}"
    );
    eprintln!(
        "CONTAINER-COMPOSE rows_written={written} rows_back={back} stop_s={stop_s:.1} up_to_app_s={up_s:.1} seconds={:.1}",
        started.elapsed().as_secs_f64()
    );
}
