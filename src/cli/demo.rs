//! `lifeboat demo`: the quick start. Generates a small app volume, backs it up into a local
//! repository, changes it, backs up again (showing deduplication), restores the latest snapshot
//! into an empty directory, compares every byte, and runs a full check. No cloud account needed.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::backend::LocalBackend;
use crate::backup::{self, BackupOptions, Source};
use crate::check::{self, ReadData};
use crate::error::{Error, IoContext, Result};
use crate::format;
use crate::repository::{InitOptions, Repository};
use crate::restore::{self, RestoreOptions};

const MARKER: &str = ".lifeboat-demo";
const PASSWORD: &str = "demo-password-use-a-real-one";

/// Runs the demo in `dir`; returns the exit code.
pub fn run(dir: &Path) -> Result<u8> {
    prepare(dir)?;
    let source = dir.join("volume");
    let repo_dir = dir.join("repository");
    let target = dir.join("restored");
    make_volume(&source)?;
    println!("1. generated a sample app volume in {}", source.display());

    let repo = Repository::init(
        Box::new(LocalBackend::new(&repo_dir)),
        PASSWORD,
        &InitOptions::default(),
    )?;
    println!(
        "2. created an encrypted repository in {} (password {PASSWORD:?})",
        repo_dir.display()
    );

    let opts = BackupOptions::new("demo-volume");
    let first = backup::backup(&repo, &Source::Paths(vec![source.clone()]), &opts)?;
    let s = &first.snapshot.summary;
    println!(
        "3. backup {}: {} files, {} read, {} stored after dedup+zstd, {} packs, {}",
        first.id.short(),
        s.total_files,
        format::bytes(s.bytes_read),
        format::bytes(s.bytes_stored),
        s.packs_written,
        format::seconds(s.duration_seconds)
    );

    // The app writes: append to the "database", edit a config file, add a log.
    let mut db = fs::OpenOptions::new()
        .append(true)
        .open(source.join("db/table.dat"))
        .ctx(|| "demo: cannot open table.dat".into())?;
    db.write_all(&pseudo_random(512 * 1024, 99))
        .ctx(|| "demo: cannot append".into())?;
    fs::write(source.join("config/app.toml"), "port = 8081\nworkers = 4\n")
        .ctx(|| "demo: cannot write".into())?;
    fs::write(
        source.join("logs/today.log"),
        "started\nserved 42 requests\n",
    )
    .ctx(|| "demo: cannot write".into())?;
    let second = backup::backup(&repo, &Source::Paths(vec![source.clone()]), &opts)?;
    let s = &second.snapshot.summary;
    println!(
        "4. the app changed 3 files; backup {}: {} new, {} changed, {} unmodified files, only {} stored",
        second.id.short(),
        s.files_new,
        s.files_changed,
        s.files_unmodified,
        format::bytes(s.bytes_stored)
    );

    let (latest, snap) = repo.find_snapshot("latest", Some("demo-volume"))?;
    let out = restore::restore(&repo, &snap, &RestoreOptions::new(&target))?;
    if !out.errors.is_empty() {
        return Err(Error::invalid(format!(
            "demo restore failed: {}",
            out.errors.join("; ")
        )));
    }
    let compared = compare_trees(&source, &target)?;
    println!(
        "5. restored snapshot {} into the empty directory {}: {} files, every byte identical",
        latest.short(),
        target.display(),
        compared
    );

    let report = check::check(&repo, ReadData::All)?;
    if !report.errors.is_empty() {
        return Err(Error::invalid(format!(
            "demo check failed: {}",
            report.errors.join("; ")
        )));
    }
    println!(
        "6. check --read-data: {} snapshots, {} packs verified, no errors",
        report.snapshots, report.packs_read
    );
    // The commands as this user will type them: through cargo when the demo ran from a build
    // tree, `lifeboat` when it is installed.
    let from_cargo = std::env::var_os("CARGO").is_some()
        || std::env::current_exe()
            .ok()
            .is_some_and(|p| p.components().any(|c| c.as_os_str() == "target"));
    let cmd = if from_cargo {
        "cargo run --release --"
    } else {
        "lifeboat"
    };
    println!(
        "\nTry it yourself:\n  export LIFEBOAT_REPOSITORY={} LIFEBOAT_PASSWORD={PASSWORD}\n  {cmd} snapshots\n  {cmd} ls latest\n  {cmd} diff {} {}\n  {cmd} stats",
        repo_dir.display(),
        first.id.short(),
        second.id.short()
    );
    Ok(0)
}

fn prepare(dir: &Path) -> Result<()> {
    if dir.exists() {
        let empty = fs::read_dir(dir)
            .map(|mut d| d.next().is_none())
            .unwrap_or(false);
        if !empty && !dir.join(MARKER).exists() {
            return Err(Error::invalid(format!(
                "{} exists and is not a lifeboat demo directory: pass --dir with a new path",
                dir.display()
            )));
        }
        fs::remove_dir_all(dir).ctx(|| format!("cannot clear {}", dir.display()))?;
    }
    fs::create_dir_all(dir).ctx(|| format!("cannot create {}", dir.display()))?;
    fs::write(dir.join(MARKER), "").ctx(|| format!("cannot write in {}", dir.display()))
}

fn make_volume(root: &Path) -> Result<()> {
    let w = |p: PathBuf, data: &[u8]| -> Result<()> {
        fs::create_dir_all(p.parent().expect("parent")).ctx(|| format!("{}", p.display()))?;
        fs::write(&p, data).ctx(|| format!("cannot write {}", p.display()))
    };
    // A "database": 12 MiB, half compressible records and half random pages.
    let mut db = Vec::new();
    for i in 0..6 * 1024 {
        db.extend_from_slice(format!("{i:08} user-{i} active balance={}\n", i * 7).as_bytes());
        db.resize(db.len().div_ceil(1024) * 1024, b' ');
    }
    db.extend_from_slice(&pseudo_random(6 << 20, 1));
    w(root.join("db/table.dat"), &db)?;
    for i in 0..200 {
        w(
            root.join(format!("uploads/{:02}/file-{i}.txt", i % 10)),
            format!("upload {i}\n").repeat(50 + i).as_bytes(),
        )?;
    }
    w(root.join("config/app.toml"), b"port = 8080\nworkers = 4\n")?;
    w(root.join("logs/.keep"), b"")?;
    std::os::unix::fs::symlink("config/app.toml", root.join("current.toml"))
        .ctx(|| "demo: cannot create symlink".into())?;
    Ok(())
}

fn pseudo_random(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(n);
    while v.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(n);
    v
}

/// Compares two trees byte for byte (files, symlink targets); returns the number of files.
fn compare_trees(a: &Path, b: &Path) -> Result<u64> {
    let mut n = 0;
    for entry in fs::read_dir(a).ctx(|| format!("{}", a.display()))? {
        let entry = entry.ctx(|| format!("{}", a.display()))?;
        let (pa, pb) = (entry.path(), b.join(entry.file_name()));
        let ft = entry.file_type().ctx(|| format!("{}", pa.display()))?;
        let differs = || Error::invalid(format!("demo: {} differs after restore", pb.display()));
        if ft.is_dir() {
            n += compare_trees(&pa, &pb)?;
        } else if ft.is_symlink() {
            if fs::read_link(&pa).ok() != fs::read_link(&pb).ok() {
                return Err(differs());
            }
        } else {
            if fs::read(&pa).ok() != fs::read(&pb).ok() {
                return Err(differs());
            }
            n += 1;
        }
    }
    Ok(n)
}
