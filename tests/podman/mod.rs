//! Shared by the container tests (tests/container_run.rs, tests/container_examples.rs): podman
//! (installed by tests/install-podman.sh), lifeboat's own image built FROM scratch from the
//! static binary (container/build-static.sh, built once into target/static: a separate target
//! directory, because `cargo test` holds the lock of the one it runs from), the stand-in for
//! postgres:16 (a debootstrap root filesystem, tests/pg-rootfs.sh, cached in
//! /var/cache/lifeboat-tests or LIFEBOAT_TEST_CACHE), and a guard that removes what a test made.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Instant;

/// lifeboat's image as the tests build it.
pub const LIFEBOAT_IMAGE: &str = "localhost/lifeboat:test";
/// The stand-in for the official postgres:16 image.
pub const POSTGRES_IMAGE: &str = "localhost/lifeboat-test/postgres:16";
/// The stand-in for an SQLite app (Vaultwarden in container/k8s/vaultwarden.yaml).
pub const SQLITE_APP_IMAGE: &str = "localhost/lifeboat-test/sqlite-app:1";
const BASE_IMAGE: &str = "localhost/lifeboat-test/debian12-postgresql15-sqlite3:base";

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn cache_dir() -> PathBuf {
    std::env::var_os("LIFEBOAT_TEST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/lifeboat-tests"))
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Runs tests/install-podman.sh once per process; a failure (not root, no mirror) fails the
/// test with the script's one-line reason.
pub fn install() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let t = Instant::now();
        let out = Command::new("sh")
            .arg(root().join("tests/install-podman.sh"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "tests/install-podman.sh failed (the container tests need podman): {}",
            text(&out).trim()
        );
        eprintln!("install-podman.sh: {:.1}s", t.elapsed().as_secs_f64());
    });
}

/// `podman ARGS`, its output whatever the status.
pub fn podman(args: &[&str]) -> Output {
    Command::new("podman").args(args).output().unwrap()
}

/// `podman ARGS`, which must succeed; its stdout.
pub fn podman_ok(args: &[&str]) -> String {
    let out = podman(args);
    assert!(
        out.status.success(),
        "podman {}: {}",
        args.join(" "),
        text(&out).trim()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The static binary of container/build-static.sh, built (or brought up to date) once per
/// process into target/static.
pub fn static_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let target = root().join("target/static");
        let t = Instant::now();
        let out = Command::new("sh")
            .arg(root().join("container/build-static.sh"))
            .current_dir(root())
            .env("CARGO_TARGET_DIR", &target)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "container/build-static.sh: {}",
            text(&out)
        );
        eprintln!(
            "static build (CARGO_TARGET_DIR=target/static): {:.1}s",
            t.elapsed().as_secs_f64()
        );
        target.join("x86_64-unknown-linux-gnu/release/lifeboat")
    })
}

/// Image size as podman reports it, in bytes.
pub fn image_size(image: &str) -> u64 {
    podman_ok(&["image", "inspect", "--format", "{{.Size}}", image])
        .trim()
        .parse()
        .unwrap()
}

/// lifeboat's image (container/Containerfile on the rootfs container/stage-rootfs.sh stages),
/// built once per process.
pub fn lifeboat_image() -> &'static str {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        install();
        let bin = static_binary();
        let ctx = root().join("target/static/image-context");
        let out = Command::new("sh")
            .arg(root().join("container/stage-rootfs.sh"))
            .arg(bin)
            .arg(ctx.join("rootfs"))
            .output()
            .unwrap();
        assert!(out.status.success(), "stage-rootfs.sh: {}", text(&out));
        std::fs::copy(
            root().join("container/Containerfile"),
            ctx.join("Containerfile"),
        )
        .unwrap();
        let t = Instant::now();
        podman_ok(&["build", "-q", "-t", LIFEBOAT_IMAGE, ctx.to_str().unwrap()]);
        eprintln!(
            "lifeboat image: built in {:.1}s, {} bytes",
            t.elapsed().as_secs_f64(),
            image_size(LIFEBOAT_IMAGE)
        );
    });
    LIFEBOAT_IMAGE
}

/// tests/pg-rootfs.sh's tarball (made once, then cached), imported: the Debian base of the
/// PostgreSQL stand-in and of the SQLite app. Made once per process.
fn base_image() -> &'static str {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        install();
        let tar = cache_dir().join("debian12-postgresql15-sqlite3.tar");
        std::fs::create_dir_all(cache_dir()).unwrap();
        let t = Instant::now();
        let out = Command::new("sh")
            .arg(root().join("tests/pg-rootfs.sh"))
            .arg(&tar)
            .output()
            .unwrap();
        assert!(out.status.success(), "tests/pg-rootfs.sh: {}", text(&out));
        eprintln!(
            "debian12+postgresql15+sqlite3 root filesystem ({}): {:.1}s",
            tar.display(),
            t.elapsed().as_secs_f64()
        );
        if !podman(&["image", "exists", BASE_IMAGE]).status.success() {
            let t = Instant::now();
            podman_ok(&["import", "-q", tar.to_str().unwrap(), BASE_IMAGE]);
            eprintln!("podman import: {:.1}s", t.elapsed().as_secs_f64());
        }
    });
    BASE_IMAGE
}

/// `podman build` of tests/podman/DIR on the Debian base, tagged `tag`.
fn build_on_base(dir: &str, tag: &str) {
    let base = base_image();
    let ctx = root().join("tests/podman").join(dir);
    podman_ok(&[
        "build",
        "-q",
        "--build-arg",
        &format!("BASE={base}"),
        "-t",
        tag,
        ctx.to_str().unwrap(),
    ]);
    eprintln!("{tag}: {} bytes", image_size(tag));
}

/// The stand-in for postgres:16: the Debian base with tests/podman/postgres/ on top. Built once
/// per process.
pub fn postgres_image() -> &'static str {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| build_on_base("postgres", POSTGRES_IMAGE));
    POSTGRES_IMAGE
}

/// The stand-in for an SQLite app (tests/podman/sqlite-app/). Built once per process.
pub fn sqlite_app_image() -> &'static str {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| build_on_base("sqlite-app", SQLITE_APP_IMAGE));
    SQLITE_APP_IMAGE
}

/// A unique name for this process and test.
pub fn unique(what: &str) -> String {
    format!("lbtest-{what}-{}", std::process::id())
}

/// Removes the containers, pods, volumes and images it was given when dropped, panic or not.
#[derive(Default)]
pub struct Cleanup {
    pub containers: Vec<String>,
    pub pods: Vec<String>,
    pub volumes: Vec<String>,
    pub images: Vec<String>,
    pub secrets: Vec<String>,
    pub dirs: Vec<PathBuf>,
}

impl Cleanup {
    pub fn container(&mut self, name: &str) -> String {
        self.containers.push(name.to_string());
        name.to_string()
    }
    pub fn volume(&mut self, name: &str) -> String {
        self.volumes.push(name.to_string());
        name.to_string()
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = podman(&["rm", "-f", "-t", "0", c]);
        }
        for p in &self.pods {
            let _ = podman(&["pod", "rm", "-f", "-t", "0", p]);
        }
        for v in &self.volumes {
            let _ = podman(&["volume", "rm", "-f", v]);
        }
        for i in &self.images {
            let _ = podman(&["rmi", "-f", i]);
        }
        for s in &self.secrets {
            let _ = podman(&["secret", "rm", s]);
        }
        for d in &self.dirs {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// `psql -U postgres -Atc SQL` inside a PostgreSQL container (its env's PGPORT applies); None
/// while the server refuses.
pub fn psql(container: &str, sql: &str) -> Option<String> {
    let out = podman(&[
        "exec", container, "psql", "-U", "postgres", "-X", "-Atc", sql,
    ]);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Rows of table `t (id, v)` and a checksum of them: equal before a stop and after a restore.
pub const PG_CHECK: &str =
    "select count(*) || ':' || md5(string_agg(id || '=' || v, ',' order by id)) from t";

/// A container's logs (stdout and stderr together).
pub fn logs(container: &str) -> String {
    text(&podman(&["logs", container]))
}

/// `podman wait`: the container's exit code.
pub fn wait(container: &str) -> i32 {
    podman_ok(&["wait", container]).trim().parse().unwrap()
}

/// The host directory behind a named volume.
pub fn volume_dir(volume: &str) -> PathBuf {
    PathBuf::from(podman_ok(&["volume", "inspect", "--format", "{{.Mountpoint}}", volume]).trim())
}

/// The app image made from sdl-snippets/postgres.yaml by `lifeboat sdl inject --mode image`,
/// the Dockerfile it writes built as written but for its two FROM lines (lifeboat's image built
/// here, the postgres:16 stand-in): (image, the SDL service it printed). Checks that the
/// image's ENTRYPOINT and CMD are that service's command and args.
pub fn postgres_app_image(work: &Path) -> (String, serde_yaml_ng::Value) {
    // The static build (minutes, on the CPU) and the debootstrap (mostly the mirror) overlap.
    let pg = std::thread::spawn(postgres_image);
    let lifeboat = lifeboat_image();
    let base = pg.join().unwrap();
    let built = "localhost/lifeboat-test/postgres-lifeboat:16";
    let ctx = work.join("app");
    std::fs::create_dir_all(&ctx).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lifeboat"))
        .args(["sdl", "inject", "--mode", "image", "--service", "postgres"])
        .arg(root().join("sdl-snippets/postgres.yaml"))
        .args(["--image", built, "--dockerfile"])
        .arg(ctx.join("Dockerfile"))
        .arg("-o")
        .arg(ctx.join("deploy.yaml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "sdl inject: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let df = std::fs::read_to_string(ctx.join("Dockerfile")).unwrap();
    let from_lifeboat = format!(
        "FROM ghcr.io/lifeboat-backup/lifeboat:{} AS lifeboat",
        env!("CARGO_PKG_VERSION")
    );
    let froms: Vec<&str> = df.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(froms, [from_lifeboat.as_str(), "FROM postgres:16"], "{df}");
    let local = df
        .replace(&from_lifeboat, &format!("FROM {lifeboat} AS lifeboat"))
        .replace("FROM postgres:16\n", &format!("FROM {base}\n"));
    std::fs::write(ctx.join("Dockerfile"), &local).unwrap();
    let t = Instant::now();
    podman_ok(&["build", "-q", "-t", built, ctx.to_str().unwrap()]);
    eprintln!(
        "app image: built in {:.1}s, {} bytes (base {} bytes)",
        t.elapsed().as_secs_f64(),
        image_size(built),
        image_size(base)
    );
    // The image's ENTRYPOINT and CMD are the SDL's command and args: the SDL runs it unchanged.
    let sdl: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(ctx.join("deploy.yaml")).unwrap())
            .unwrap();
    let svc = &sdl["services"]["postgres"];
    let words =
        |v: &serde_yaml_ng::Value| -> Vec<String> { serde_yaml_ng::from_value(v.clone()).unwrap() };
    let inspect = podman_ok(&[
        "image",
        "inspect",
        "--format",
        "{{json .Config.Entrypoint}} {{json .Config.Cmd}} {{.Config.StopSignal}}",
        built,
    ]);
    assert_eq!(
        inspect.trim(),
        format!(
            "{} {} SIGINT",
            serde_json::to_string(&words(&svc["command"])).unwrap(),
            serde_json::to_string(&words(&svc["args"])).unwrap()
        )
    );
    (built.to_string(), svc.clone())
}
