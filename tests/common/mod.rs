//! Helpers shared by the integration tests: fast repositories, tree builders and a comparer that
//! checks bytes and metadata.
#![allow(dead_code)]

pub mod conformance;
pub mod hostile_server;
pub mod pg;
pub mod proxy;
pub mod seaweed;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use lifeboat::backend::LocalBackend;
use lifeboat::backup::{self, BackupOptions, BackupOutcome, Source};
use lifeboat::repository::keys::KdfParams;
use lifeboat::repository::{InitOptions, Repository};
use lifeboat::restore::{self, RestoreOptions, RestoreOutcome};

pub const PASSWORD: &str = "correct horse battery staple";

/// The drills' seeded generator (xorshift64): the same seed gives the same run.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// A number in `lo..hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }
    /// An index below `n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    /// One of `v`.
    pub fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len())]
    }
}

/// A TCP port free on 127.0.0.1 right now, for a server a test starts moments later.
///
/// Taken from 10000–19999, not from the kernel's ephemeral range (32768–60999 here): a port the
/// kernel handed out once is handed out again to the next outgoing connection of any process
/// (a client of SeaweedFS, PostgreSQL's own sockets), which can take it before the server binds
/// it. SeaweedFS's ports (tests/common/seaweed.rs) are 20000 and up. One process never returns
/// the same port twice; the start differs per process.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = std::process::id().wrapping_mul(7919);
    for _ in 0..10_000 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 10_000 + (start.wrapping_add(n.wrapping_mul(37)) % 10_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in 10000-19999 on 127.0.0.1");
}

/// Small chunks (4K/16K/64K) so small test files span many chunks; cheap Argon2.
pub fn init_options() -> InitOptions {
    InitOptions {
        pack_size: 1 << 20,
        compression_level: 3,
        kdf: KdfParams {
            m_cost: 64,
            t_cost: 1,
            p_cost: 1,
        },
        chunk_sizes: Some((4096, 16384, 65536)),
    }
}

pub fn init_repo(dir: &Path) -> Repository {
    Repository::init(Box::new(LocalBackend::new(dir)), PASSWORD, &init_options()).unwrap()
}

pub fn open_repo(dir: &Path) -> Repository {
    Repository::open(Box::new(LocalBackend::new(dir)), PASSWORD).unwrap()
}

pub fn backup_dir(repo: &Repository, path: &Path, name: &str) -> BackupOutcome {
    backup::backup(
        repo,
        &Source::Paths(vec![path.to_path_buf()]),
        &BackupOptions::new(name),
    )
    .unwrap()
}

pub fn restore_latest(repo: &Repository, name: &str, target: &Path) -> RestoreOutcome {
    let (_, snap) = repo.find_snapshot("latest", Some(name)).unwrap();
    restore::restore(repo, &snap, &RestoreOptions::new(target)).unwrap()
}

/// Deterministic pseudo-random bytes.
pub fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(n + 8);
    while v.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(n);
    v
}

pub fn write(path: &Path, data: &[u8]) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, data).unwrap();
}

/// Asserts two trees are equal: names, types, bytes, symlink targets, permission bits, mtimes.
pub fn assert_same_tree(a: &Path, b: &Path) {
    let mut names_a: Vec<_> = fs::read_dir(a)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let mut names_b: Vec<_> = fs::read_dir(b)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names_a.sort();
    names_b.sort();
    assert_eq!(
        names_a,
        names_b,
        "entries of {} vs {}",
        a.display(),
        b.display()
    );
    for name in names_a {
        let (pa, pb) = (a.join(&name), b.join(&name));
        let (ma, mb) = (
            fs::symlink_metadata(&pa).unwrap(),
            fs::symlink_metadata(&pb).unwrap(),
        );
        assert_eq!(ma.file_type(), mb.file_type(), "type of {}", pb.display());
        if ma.file_type().is_symlink() {
            assert_eq!(
                fs::read_link(&pa).unwrap(),
                fs::read_link(&pb).unwrap(),
                "{}",
                pb.display()
            );
            continue;
        }
        assert_eq!(
            ma.permissions().mode() & 0o7777,
            mb.permissions().mode() & 0o7777,
            "mode of {}",
            pb.display()
        );
        if ma.is_dir() {
            assert_same_tree(&pa, &pb);
        } else {
            assert_eq!(ma.len(), mb.len(), "size of {}", pb.display());
            assert!(
                fs::read(&pa).unwrap() == fs::read(&pb).unwrap(),
                "content of {}",
                pb.display()
            );
        }
        assert_eq!(
            (ma.mtime(), ma.mtime_nsec()),
            (mb.mtime(), mb.mtime_nsec()),
            "mtime of {}",
            pb.display()
        );
    }
}

/// Runs the lifeboat binary with the test password.
pub fn lifeboat(repo: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lifeboat"));
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("LIFEBOAT_REPOSITORY", repo)
        .env("LIFEBOAT_PASSWORD", PASSWORD);
    c
}

/// `lifeboat init` through the CLI with test-speed parameters.
pub fn cli_init(repo: &Path) {
    let out = lifeboat(repo)
        .args([
            "init",
            "--kdf-memory-kib",
            "64",
            "--kdf-time",
            "1",
            "--chunk-sizes",
            "4096,16384,65536",
            "--pack-size-mib",
            "1",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "init: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// All object files under `dir/sub`.
pub fn objects(repo: &Path, sub: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![repo.join(sub)];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Flips one bit at `offset` (negative: from the end).
pub fn flip_byte(path: &Path, offset: i64) {
    let mut b = fs::read(path).unwrap();
    let i = if offset < 0 {
        (b.len() as i64 + offset) as usize
    } else {
        offset as usize
    };
    b[i] ^= 0x01;
    fs::write(path, b).unwrap();
}

/// Relative path → BLAKE3 hex of every file under `dir`: a cheap record of what a snapshot should
/// restore to, for drills that take many snapshots.
pub fn manifest(dir: &Path) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().display().to_string();
                out.insert(
                    rel,
                    blake3::hash(&fs::read(&p).unwrap()).to_hex().to_string(),
                );
            }
        }
    }
    out
}
