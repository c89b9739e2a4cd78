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
const PG_BASE_IMAGE: &str = "localhost/lifeboat-test/debian12-postgresql15:base";

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

/// The stand-in for postgres:16: tests/pg-rootfs.sh's tarball (made once, then cached),
/// imported, with tests/podman/postgres/ on top. Built once per process.
pub fn postgres_image() -> &'static str {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        install();
        let tar = cache_dir().join("debian12-postgresql15.tar");
        std::fs::create_dir_all(cache_dir()).unwrap();
        let t = Instant::now();
        let out = Command::new("sh")
            .arg(root().join("tests/pg-rootfs.sh"))
            .arg(&tar)
            .output()
            .unwrap();
        assert!(out.status.success(), "tests/pg-rootfs.sh: {}", text(&out));
        eprintln!(
            "debian12+postgresql15 root filesystem ({}): {:.1}s",
            tar.display(),
            t.elapsed().as_secs_f64()
        );
        if !podman(&["image", "exists", PG_BASE_IMAGE]).status.success() {
            let t = Instant::now();
            podman_ok(&["import", "-q", tar.to_str().unwrap(), PG_BASE_IMAGE]);
            eprintln!("podman import: {:.1}s", t.elapsed().as_secs_f64());
        }
        let ctx = root().join("tests/podman/postgres");
        podman_ok(&[
            "build",
            "-q",
            "--build-arg",
            &format!("BASE={PG_BASE_IMAGE}"),
            "-t",
            POSTGRES_IMAGE,
            ctx.to_str().unwrap(),
        ]);
        eprintln!(
            "postgres stand-in image: {} bytes",
            image_size(POSTGRES_IMAGE)
        );
    });
    POSTGRES_IMAGE
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
        for d in &self.dirs {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

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
