//! Hostile-storage drill: hundreds of seeded single-object mutations of a local repository that
//! holds three snapshots of one volume. After each mutation the CLI runs `snapshots`,
//! `ls latest`, `restore latest`, the restore gate (`restore --if-empty`), `check --read-data`,
//! then a `backup` and a restore of the snapshot that backup committed.
//!
//! Required, for every command: no panic, no run over 60 s, peak RSS under 256 MB. A restore
//! that exits 0 must have written exactly the bytes of one of the drill's snapshots, the one it
//! says it restored. A backup that exits 0 must have committed a snapshot that restores
//! byte-identical. `check --read-data` must not exit 0 when the mutation changed an existing
//! object.
//!
//! `LIFEBOAT_DRILL_ITERATIONS` sets the number of mutations (default 300);
//! `LIFEBOAT_DRILL_SEED=N` replays mutation N alone (the pristine repository is rebuilt, so the
//! same kind of object in the same position, e.g. "the second data pack", is mutated the same way).

mod common;

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{Read, Seek};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use lifeboat::Id;
use lifeboat::backend::LocalBackend;
use lifeboat::repository::Repository;
use lifeboat::repository::pack::{BlobType, pack_key};

const VOLUME: &str = "vol";
const TIMEOUT: Duration = Duration::from_secs(60);
const RSS_LIMIT_KB: i64 = 256 * 1024;

// ---------------------------------------------------------------------------------------------
// Running one command: exit code, output, time and peak RSS (wait4), with a watchdog.

struct Run {
    /// Exit code; `None` when killed by a signal.
    code: Option<i32>,
    signal: Option<i32>,
    stdout: String,
    stderr: String,
    secs: f64,
    max_rss_kb: i64,
    timed_out: bool,
}

impl Run {
    fn ok(&self) -> bool {
        self.code == Some(0)
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_str(self.stdout.trim()).unwrap_or(serde_json::Value::Null)
    }

    /// A failed command's reason: the first restore error or stderr, else the output.
    fn why(&self) -> String {
        let v = self.json();
        let errors = v["restored"]["errors"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        match errors.first().and_then(|e| e.as_str()) {
            Some(e) => format!("{} error(s), first: {e}", errors.len()),
            None if !self.stderr.trim().is_empty() => {
                self.stderr.trim().chars().take(300).collect()
            }
            None => self.brief(),
        }
    }

    fn brief(&self) -> String {
        let s = format!("{} {}", self.stdout.trim(), self.stderr.trim());
        let s = s.trim();
        if s.chars().count() > 300 {
            format!("{}…", s.chars().take(300).collect::<String>())
        } else {
            s.to_string()
        }
    }
}

fn run(mut cmd: Command) -> Run {
    let mut out = tempfile::tempfile().unwrap();
    let mut err = tempfile::tempfile().unwrap();
    cmd.stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(err.try_clone().unwrap());
    let start = Instant::now();
    let child = cmd.spawn().unwrap();
    let pid = child.id() as libc::pid_t;
    let mut status: libc::c_int = 0;
    // SAFETY: rusage is plain old data; all-zero is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let mut timed_out = false;
    let mut nap = Duration::from_micros(200);
    loop {
        // SAFETY: wait4 on our own child with valid out-pointers.
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut ru) };
        if r == pid {
            break;
        }
        if r < 0 {
            let e = std::io::Error::last_os_error();
            assert_eq!(e.kind(), std::io::ErrorKind::Interrupted, "wait4: {e}");
            continue;
        }
        if !timed_out && start.elapsed() > TIMEOUT {
            // SAFETY: the child has not been reaped yet, so the pid is still ours.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            timed_out = true;
        }
        std::thread::sleep(nap);
        nap = (nap * 2).min(Duration::from_millis(5));
    }
    let secs = start.elapsed().as_secs_f64();
    drop(child); // already reaped
    let (code, signal) = if libc::WIFEXITED(status) {
        (Some(libc::WEXITSTATUS(status)), None)
    } else if libc::WIFSIGNALED(status) {
        (None, Some(libc::WTERMSIG(status)))
    } else {
        (None, None)
    };
    let read = |f: &mut fs::File| {
        f.rewind().unwrap();
        let mut v = Vec::new();
        f.read_to_end(&mut v).unwrap();
        String::from_utf8_lossy(&v).into_owned()
    };
    Run {
        code,
        signal,
        stdout: read(&mut out),
        stderr: read(&mut err),
        secs,
        max_rss_kb: ru.ru_maxrss,
        timed_out,
    }
}

fn cli(repo: &Path, cache: &Path, args: &[&str]) -> Command {
    let mut c = lifeboat(repo);
    c.env("LIFEBOAT_CACHE_DIR", cache).arg("--json").args(args);
    c
}

// ---------------------------------------------------------------------------------------------
// Seeded randomness.

struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        let mut r = Rng((seed ^ 0x5DEE_CE66_D1CE_F00D).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        for _ in 0..8 {
            r.next();
        }
        r
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        assert!(n > 0);
        (self.next() % n as u64) as usize
    }

    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len())]
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        random_bytes(n, self.next())
    }

    fn hex_name(&mut self) -> String {
        let mut s = String::new();
        for _ in 0..4 {
            s.push_str(&format!("{:016x}", self.next()));
        }
        s
    }
}

// ---------------------------------------------------------------------------------------------
// The pristine repository.

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Kind {
    Config,
    Key,
    Index,
    Snapshot,
    DataPack,
    TreePack,
}

const KINDS: [Kind; 6] = [
    Kind::Config,
    Kind::Key,
    Kind::Index,
    Kind::Snapshot,
    Kind::DataPack,
    Kind::TreePack,
];

struct Blob {
    pack: String,
    offset: u64,
    length: u64,
    kind: BlobType,
}

struct Pristine {
    _tmp: tempfile::TempDir,
    repo: PathBuf,
    /// The backed-up directory: always at this path, in the state of the third snapshot.
    src: PathBuf,
    /// Snapshot id (hex) → manifest of what it holds; `order` oldest first.
    expected: HashMap<String, BTreeMap<String, String>>,
    order: Vec<String>,
    /// Objects (paths relative to the repository) by kind, in a stable order: by the round that
    /// created them, then size, then name, so a replay picks the equivalent object.
    objects: BTreeMap<Kind, Vec<String>>,
    /// The key object the drill's password opens (the other key has another password).
    main_key: String,
    blobs: Vec<Blob>,
}

fn rel(repo: &Path, p: &Path) -> String {
    p.strip_prefix(repo).unwrap().display().to_string()
}

fn all_objects(repo: &Path) -> Vec<String> {
    let mut v: Vec<String> = ["keys", "index", "snapshots", "data"]
        .iter()
        .flat_map(|s| objects(repo, s))
        .map(|p| rel(repo, &p))
        .collect();
    v.push("config".into());
    v
}

/// The source tree's state for round 0, 1, 2: a few dozen small files, some sharing content.
fn write_round(src: &Path, round: u64) {
    for i in 0..24u64 {
        let p = src.join(format!("d{}/f{i:02}.bin", i % 4));
        if round == 0 || (i + round).is_multiple_of(5) {
            let n = 1_000 + ((i * 7919 + round * 104_729) % 18_000) as usize;
            write(&p, &random_bytes(n, i * 1000 + round));
        }
    }
    // Shared content: copies and a file that embeds another one.
    let f3 = fs::read(src.join("d3/f03.bin")).unwrap();
    write(&src.join("copies/f03-copy.bin"), &f3);
    let mut grown = fs::read(src.join("d1/f05.bin")).unwrap();
    grown.extend_from_slice(&random_bytes(9_000, 77 + round));
    write(&src.join(format!("copies/grown-{round}.bin")), &grown);
    if round == 2 {
        let _ = fs::remove_file(src.join("copies/grown-0.bin"));
        write(&src.join("empty.txt"), b"");
        write(&src.join("text/notes.txt"), &b"lifeboat ".repeat(2_000));
    }
}

fn object_rounds(created: &HashMap<String, usize>, repo: &Path, names: Vec<String>) -> Vec<String> {
    let mut v: Vec<(usize, u64, String)> = names
        .into_iter()
        .map(|n| {
            let len = fs::metadata(repo.join(&n)).unwrap().len();
            (created.get(&n).copied().unwrap_or(99), len, n)
        })
        .collect();
    v.sort();
    v.into_iter().map(|(_, _, n)| n).collect()
}

fn build_pristine() -> Pristine {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    let src = tmp.path().join("src");
    let cache = tmp.path().join("cache");
    cli_init(&repo);
    let main_key = all_objects(&repo)
        .into_iter()
        .find(|o| o.starts_with("keys/"))
        .unwrap();
    let mut created: HashMap<String, usize> = HashMap::new();
    let mut note = |repo: &Path, round: usize| {
        for o in all_objects(repo) {
            created.entry(o).or_insert(round);
        }
    };
    note(&repo, 0);
    // A second key, with another password, so keys can be replaced by each other.
    let out = lifeboat(&repo)
        .env("LIFEBOAT_NEW_PASSWORD", "another password")
        .args(["key", "add"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "key add: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    note(&repo, 1);
    let mut expected = HashMap::new();
    let mut order = Vec::new();
    for round in 0..3u64 {
        write_round(&src, round);
        let r = run(cli(
            &repo,
            &cache,
            &["backup", "--name", VOLUME, src.to_str().unwrap()],
        ));
        assert!(r.ok(), "pristine backup {round}: {}", r.brief());
        let id = r.json()["snapshot"].as_str().unwrap().to_string();
        expected.insert(id.clone(), tree_manifest(&src));
        order.push(id);
        note(&repo, 2 + round as usize);
    }

    let r = Repository::open(Box::new(LocalBackend::new(&repo)), PASSWORD).unwrap();
    let index = r.load_index().unwrap();
    let mut pack_kind: HashMap<String, BlobType> = HashMap::new();
    let mut blobs = Vec::new();
    for (_, loc) in index.iter() {
        let pack = pack_key(&index.pack_id(loc.pack));
        pack_kind.insert(pack.clone(), loc.kind);
        blobs.push(Blob {
            pack,
            offset: loc.offset as u64,
            length: loc.length as u64,
            kind: loc.kind,
        });
    }
    drop(r);
    let mut objects: BTreeMap<Kind, Vec<String>> = BTreeMap::new();
    for o in all_objects(&repo) {
        let kind = if o == "config" {
            Kind::Config
        } else if o.starts_with("keys/") {
            Kind::Key
        } else if o.starts_with("index/") {
            Kind::Index
        } else if o.starts_with("snapshots/") {
            Kind::Snapshot
        } else {
            match pack_kind.get(&o) {
                Some(BlobType::Data) => Kind::DataPack,
                Some(BlobType::Tree) => Kind::TreePack,
                None => panic!("pack {o} is in no index"),
            }
        };
        objects.entry(kind).or_default().push(o);
    }
    for v in objects.values_mut() {
        *v = object_rounds(&created, &repo, std::mem::take(v));
    }
    let pack_order: HashMap<String, usize> = objects[&Kind::DataPack]
        .iter()
        .chain(&objects[&Kind::TreePack])
        .enumerate()
        .map(|(i, p)| (p.clone(), i))
        .collect();
    blobs.sort_by_key(|b| (pack_order[&b.pack], b.offset));
    for k in KINDS {
        assert!(
            objects.contains_key(&k),
            "no {k:?} object in the pristine repository"
        );
    }
    assert!(objects[&Kind::Key].len() == 2 && objects[&Kind::Snapshot].len() == 3);
    let r = run(cli(&repo, &cache, &["check", "--read-data"]));
    assert!(r.ok(), "pristine check: {}", r.brief());
    Pristine {
        _tmp: tmp,
        repo,
        src,
        expected,
        order,
        objects,
        main_key,
        blobs,
    }
}

/// Relative path → BLAKE3 of every regular file under `dir` (none if it does not exist),
/// ignoring lifeboat's marker directory at the top; symlinks and other entries are recorded too.
fn tree_manifest(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd {
            let p = e.unwrap().path();
            let name = p.strip_prefix(dir).unwrap().display().to_string();
            if name == ".lifeboat" {
                continue;
            }
            let m = fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                stack.push(p);
            } else if m.is_file() {
                out.insert(
                    name,
                    blake3::hash(&fs::read(&p).unwrap()).to_hex().to_string(),
                );
            } else {
                out.insert(name, format!("{:?}", m.file_type()));
            }
        }
    }
    out
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dst);
        } else {
            fs::copy(e.path(), &dst).unwrap();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Mutations.

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Op {
    /// No mutation: the harness's own check on an untouched copy.
    Control,
    Flip,
    Truncate,
    Zero,
    Append,
    Replace,
    Swap,
    CopyNewName,
    Restore,
    Delete,
    Junk,
}

const OPS: [Op; 10] = [
    Op::Flip,
    Op::Truncate,
    Op::Zero,
    Op::Append,
    Op::Replace,
    Op::Swap,
    Op::CopyNewName,
    Op::Restore,
    Op::Delete,
    Op::Junk,
];

/// Did the mutation change an object that was there?
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Changed {
    Yes,
    /// Only added objects.
    No,
    /// Removed a whole snapshot object or the key object the drill's password does not open:
    /// the result is a valid repository, indistinguishable from one after `forget` or
    /// `key remove`, so `check` cannot be required to notice.
    Undetectable,
}

struct Mutation {
    op: Op,
    /// What kind of object was hit (for Restore and Junk: the kind it was stored as).
    kind: Kind,
    changed: Changed,
    what: String,
    /// The newest snapshot object was changed or removed.
    newest_hit: bool,
}

fn short(o: &str) -> String {
    match o.rsplit_once('/') {
        Some((dir, name)) => format!("{dir}/{}", &name[..name.len().min(10)]),
        None => o.to_string(),
    }
}

fn mutate(p: &Pristine, repo: &Path, rng: &mut Rng) -> Mutation {
    let op = *rng.pick(&OPS);
    let pick_object = |rng: &mut Rng, kinds: &[Kind]| -> (Kind, String) {
        let kind = *rng.pick(kinds);
        (kind, rng.pick(&p.objects[&kind]).clone())
    };
    let newest = format!("snapshots/{}", p.order[2]);
    let mut m = Mutation {
        op,
        kind: Kind::Config,
        changed: Changed::Yes,
        what: String::new(),
        newest_hit: false,
    };
    match op {
        Op::Control => unreachable!("OPS has no Control"),
        Op::Flip | Op::Truncate | Op::Zero | Op::Append | Op::Delete => {
            let (kind, o) = pick_object(rng, &KINDS);
            let path = repo.join(&o);
            let mut b = fs::read(&path).unwrap();
            let len = b.len();
            m.kind = kind;
            m.newest_hit = o == newest;
            match op {
                Op::Flip => {
                    let at = rng.below(len);
                    let x = (rng.below(255) + 1) as u8;
                    b[at] ^= x;
                    m.what = format!("flip byte {at}/{len} (^{x:#04x}) of {}", short(&o));
                    fs::write(&path, b).unwrap();
                }
                Op::Truncate => {
                    let to = 1 + rng.below(len - 1);
                    b.truncate(to);
                    m.what = format!("truncate {} from {len} to {to} bytes", short(&o));
                    fs::write(&path, b).unwrap();
                }
                Op::Zero => {
                    m.what = format!("zero length {} (was {len})", short(&o));
                    fs::write(&path, b"").unwrap();
                }
                Op::Append => {
                    let n = 1 + rng.below(4096);
                    b.extend_from_slice(&rng.bytes(n));
                    m.what = format!("append {n} garbage bytes to {} ({len})", short(&o));
                    fs::write(&path, b).unwrap();
                }
                _ => {
                    m.what = format!("delete {}", short(&o));
                    if kind == Kind::Snapshot || (kind == Kind::Key && o != p.main_key) {
                        m.changed = Changed::Undetectable;
                    }
                    fs::remove_file(&path).unwrap();
                }
            }
        }
        Op::Replace => {
            let (kind, o) = pick_object(rng, &KINDS[1..]);
            let others: Vec<&String> = p.objects[&kind].iter().filter(|x| **x != o).collect();
            let other = *rng.pick(&others);
            fs::copy(repo.join(other), repo.join(&o)).unwrap();
            m.kind = kind;
            m.newest_hit = o == newest;
            m.what = format!("replace {} by the bytes of {}", short(&o), short(other));
        }
        Op::Swap => {
            let packs: Vec<(Kind, &String)> = [Kind::DataPack, Kind::TreePack]
                .iter()
                .flat_map(|k| p.objects[k].iter().map(move |o| (*k, o)))
                .collect();
            let a = rng.below(packs.len());
            let mut b = rng.below(packs.len() - 1);
            if b >= a {
                b += 1;
            }
            let (ka, a) = packs[a];
            let (kb, b) = packs[b];
            let (ba, bb) = (
                fs::read(repo.join(a)).unwrap(),
                fs::read(repo.join(b)).unwrap(),
            );
            fs::write(repo.join(a), bb).unwrap();
            fs::write(repo.join(b), ba).unwrap();
            m.kind = if ka == Kind::TreePack || kb == Kind::TreePack {
                Kind::TreePack
            } else {
                Kind::DataPack
            };
            m.what = format!("swap {:?} {} with {:?} {}", ka, short(a), kb, short(b));
        }
        Op::CopyNewName => {
            let (kind, o) = pick_object(rng, &[Kind::DataPack, Kind::TreePack]);
            let name = rng.hex_name();
            let dst = format!("data/{}/{name}", &name[..2]);
            fs::create_dir_all(repo.join(&dst).parent().unwrap()).unwrap();
            fs::copy(repo.join(&o), repo.join(&dst)).unwrap();
            m.kind = kind;
            m.changed = Changed::No;
            m.what = format!("copy {kind:?} {} to {}", short(&o), short(&dst));
        }
        Op::Restore => {
            let blob = rng.pick(&p.blobs);
            let b = fs::read(repo.join(&blob.pack)).unwrap();
            let sealed = &b[blob.offset as usize..(blob.offset + blob.length) as usize];
            let (kind, dir) = *rng.pick(&[
                (Kind::Index, "index"),
                (Kind::Snapshot, "snapshots"),
                (Kind::Key, "keys"),
            ]);
            let dst = format!("{dir}/{}", Id::of_bytes(sealed).to_hex());
            write(&repo.join(&dst), sealed);
            m.kind = kind;
            m.changed = Changed::No;
            m.what = format!(
                "{:?} blob at {}+{} of {} re-stored as {}",
                blob.kind,
                blob.offset,
                blob.length,
                short(&blob.pack),
                short(&dst)
            );
        }
        Op::Junk => {
            let n = rng.below(4096);
            let junk = rng.bytes(n);
            let name = if rng.below(2) == 0 {
                Id::of_bytes(&junk).to_hex()
            } else {
                rng.hex_name()
            };
            let (kind, dst) = match rng.below(4) {
                0 => (Kind::Index, format!("index/{name}")),
                1 => (Kind::Snapshot, format!("snapshots/{name}")),
                2 => (Kind::Key, format!("keys/{name}")),
                _ => (Kind::DataPack, format!("data/{}/{name}", &name[..2])),
            };
            write(&repo.join(&dst), &junk);
            m.kind = kind;
            m.changed = Changed::No;
            m.what = format!("junk object of {n} bytes as {}", short(&dst));
        }
    }
    m
}

// ---------------------------------------------------------------------------------------------
// Figures.

#[derive(Default)]
struct Tally {
    per_op: BTreeMap<Op, usize>,
    per_kind: BTreeMap<Kind, usize>,
    commands: usize,
    panics: usize,
    hangs: usize,
    over_rss: usize,
    silent_corruptions: usize,
    unknown_snapshots: usize,
    gate_fresh: usize,
    unrestorable_commits: usize,
    false_clean: usize,
    check_clean_undetectable: usize,
    check_failed: usize,
    check_clean: usize,
    backups_ok: usize,
    backups_failed: usize,
    restores_ok: usize,
    restores_refused: usize,
    restores_older: usize,
    restores_older_newest_intact: usize,
    gates_ok: usize,
    gates_refused: usize,
    max_rss_kb: i64,
    max_rss_cmd: String,
    slowest: f64,
    slowest_cmd: String,
    violations: Vec<String>,
}

struct Iteration<'a> {
    seed: u64,
    m: &'a Mutation,
    t: &'a mut Tally,
}

impl Iteration<'_> {
    fn violation(&mut self, msg: String) {
        let v = format!(
            "seed {} [{:?} {:?}: {}]: {msg}",
            self.seed, self.m.op, self.m.kind, self.m.what
        );
        eprintln!("VIOLATION {v}");
        self.t.violations.push(v);
    }

    /// An exit-0 restore of `latest` that restored an older snapshot than the newest.
    fn older(&mut self) {
        self.t.restores_older += 1;
        if !self.m.newest_hit {
            self.t.restores_older_newest_intact += 1;
        }
    }

    /// Runs a command and applies the rules every command obeys.
    fn run(&mut self, label: &str, cmd: Command) -> Run {
        let r = run(cmd);
        self.t.commands += 1;
        if r.max_rss_kb > self.t.max_rss_kb {
            self.t.max_rss_kb = r.max_rss_kb;
            self.t.max_rss_cmd = format!("{label} (seed {})", self.seed);
        }
        if r.secs > self.t.slowest {
            self.t.slowest = r.secs;
            self.t.slowest_cmd = format!("{label} (seed {})", self.seed);
        }
        if r.timed_out {
            self.t.hangs += 1;
            self.violation(format!("{label}: still running after {TIMEOUT:?}, killed"));
        } else if r.code == Some(101) || r.stderr.contains("panicked") || r.signal.is_some() {
            self.t.panics += 1;
            self.violation(format!(
                "{label}: panic/crash (exit {:?}, signal {:?}): {}",
                r.code,
                r.signal,
                r.brief()
            ));
        }
        if r.max_rss_kb > RSS_LIMIT_KB {
            self.t.over_rss += 1;
            self.violation(format!("{label}: peak RSS {} MB", r.max_rss_kb / 1024));
        }
        r
    }
}

/// The drill's snapshot ids that `text` names (full or by a prefix of at least 8 hex digits).
fn named_ids(text: &str, known: &[String]) -> (Vec<String>, Vec<String>) {
    let (mut hit, mut unknown) = (Vec::new(), Vec::new());
    for word in text.split(|c: char| !c.is_ascii_hexdigit()) {
        if word.len() < 8 || word.len() > 64 {
            continue;
        }
        let w = word.to_ascii_lowercase();
        match known.iter().find(|k| k.starts_with(&w)) {
            Some(k) => {
                if !hit.contains(k) {
                    hit.push(k.clone())
                }
            }
            None => unknown.push(w),
        }
    }
    (hit, unknown)
}

/// A restore that exited 0: the target must hold exactly one of the drill's snapshots, the one
/// the command names if it names one.
fn judge_restore(it: &mut Iteration, p: &Pristine, label: &str, said: &str, target: &Path) {
    let got = tree_manifest(target);
    let (named, unknown) = named_ids(said, &p.order);
    let matching: Vec<&String> = p.order.iter().filter(|id| p.expected[*id] == got).collect();
    if named.is_empty() && !unknown.is_empty() {
        it.t.unknown_snapshots += 1;
        it.violation(format!(
            "{label} exited 0 naming snapshot(s) {unknown:?}, which the drill never made"
        ));
        return;
    }
    if let Some(id) = named.first() {
        if p.expected[id] != got {
            it.t.silent_corruptions += 1;
            let also = matching
                .first()
                .map(|m| format!(" (the bytes are snapshot {}'s)", &m[..8]))
                .unwrap_or_default();
            it.violation(format!(
                "{label} exited 0 saying it restored {} but the target differs{also}: {}",
                &id[..8],
                diff(&p.expected[id], &got)
            ));
            return;
        }
        if *id != p.order[2] {
            it.older();
        }
        return;
    }
    if matching.is_empty() {
        it.t.silent_corruptions += 1;
        it.violation(format!(
            "{label} exited 0 with bytes of no drill snapshot: {}",
            diff(&p.expected[&p.order[2]], &got)
        ));
    } else if *matching[0] != p.order[2] {
        it.older();
    }
}

/// The hex word right after `marker` in `text`.
fn after(text: &str, marker: &str) -> Option<String> {
    let rest = &text[text.find(marker)? + marker.len()..];
    let word: String = rest.chars().take_while(|c| c.is_ascii_hexdigit()).collect();
    (word.len() >= 8).then_some(word)
}

fn diff(want: &BTreeMap<String, String>, got: &BTreeMap<String, String>) -> String {
    let missing = want.keys().filter(|k| !got.contains_key(*k)).count();
    let extra = got.keys().filter(|k| !want.contains_key(*k)).count();
    let differ: Vec<&String> = want
        .iter()
        .filter(|(k, v)| got.get(*k).is_some_and(|g| g != *v))
        .map(|(k, _)| k)
        .collect();
    format!(
        "{missing} file(s) missing, {extra} extra, {} with other bytes {:?}",
        differ.len(),
        differ.iter().take(3).collect::<Vec<_>>()
    )
}

/// One mutation (none with `control`) of a fresh copy of the pristine repository, then the
/// commands.
fn iteration(p: &Pristine, base: &Path, seed: u64, control: bool, t: &mut Tally) {
    let dir = tempfile::tempdir_in(base).unwrap();
    let repo = dir.path().join("repo");
    let cache = dir.path().join("cache");
    copy_dir(&p.repo, &repo);
    let mut rng = Rng::new(seed);
    let m = if control {
        Mutation {
            op: Op::Control,
            kind: Kind::Config,
            changed: Changed::No,
            what: "none".into(),
            newest_hit: false,
        }
    } else {
        mutate(p, &repo, &mut rng)
    };
    *t.per_op.entry(m.op).or_default() += 1;
    *t.per_kind.entry(m.kind).or_default() += 1;
    let mut it = Iteration { seed, m: &m, t };

    // (1) Listing.
    it.run("snapshots", cli(&repo, &cache, &["snapshots"]));
    it.run("ls latest", cli(&repo, &cache, &["ls", "latest"]));

    // (2) restore latest.
    let target = dir.path().join("restore");
    let r = it.run(
        "restore latest",
        cli(
            &repo,
            &cache,
            &["restore", "latest", "--target", target.to_str().unwrap()],
        ),
    );
    if r.ok() {
        it.t.restores_ok += 1;
        let said = r.json()["snapshot"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| r.stdout.clone());
        judge_restore(&mut it, p, "restore latest", &said, &target);
    } else {
        it.t.restores_refused += 1;
    }

    // (3) The gate.
    let target = dir.path().join("gate");
    let r = it.run(
        "restore --if-empty",
        cli(
            &repo,
            &cache,
            &[
                "restore",
                "latest",
                "--if-empty",
                "--name",
                VOLUME,
                "--target",
                target.to_str().unwrap(),
            ],
        ),
    );
    if r.ok() {
        it.t.gates_ok += 1;
        let v = r.json();
        let outcome = v["outcome"].as_str().unwrap_or("");
        if outcome.starts_with("Fresh") || r.stdout.contains("nothing restored") {
            // A single mutation leaves at least two of the three snapshots' objects.
            it.t.gate_fresh += 1;
            it.violation(format!(
                "the gate exited 0 restoring nothing: {}",
                r.brief()
            ));
        } else {
            // The id the gate names: `Id(…)` in the outcome, else `snapshot …` in the message.
            let message = v["message"].as_str().unwrap_or("");
            let said = after(outcome, "Id(")
                .or_else(|| after(message, "snapshot "))
                .unwrap_or_else(|| r.stdout.clone());
            judge_restore(&mut it, p, "the gate", &said, &target);
        }
    } else {
        it.t.gates_refused += 1;
    }

    // (4) check --read-data.
    let r = it.run(
        "check --read-data",
        cli(&repo, &cache, &["check", "--read-data"]),
    );
    if r.ok() {
        it.t.check_clean += 1;
        match m.changed {
            Changed::Yes => {
                it.t.false_clean += 1;
                it.violation("check --read-data exited 0 on a changed object".into());
            }
            Changed::Undetectable => it.t.check_clean_undetectable += 1,
            Changed::No => {}
        }
    } else {
        it.t.check_failed += 1;
    }

    // (5) A backup (every other one with a new file that shares content), then its restore.
    let extra = p.src.join("extra.bin");
    if seed % 2 == 1 {
        let mut b = fs::read(p.src.join("d2/f06.bin")).unwrap();
        let n = 3_000 + rng.below(20_000);
        b.extend_from_slice(&rng.bytes(n));
        write(&extra, &b);
    }
    let want = tree_manifest(&p.src);
    let r = it.run(
        "backup",
        cli(
            &repo,
            &cache,
            &["backup", "--name", VOLUME, p.src.to_str().unwrap()],
        ),
    );
    let _ = fs::remove_file(&extra);
    if r.ok() {
        it.t.backups_ok += 1;
        let id = r.json()["snapshot"].as_str().map(str::to_string);
        match id {
            None => {
                it.t.unrestorable_commits += 1;
                it.violation(format!("backup exited 0 naming no snapshot: {}", r.brief()));
            }
            Some(id) => {
                let target = dir.path().join("restore-new");
                let r = it.run(
                    "restore <new>",
                    cli(
                        &repo,
                        &cache,
                        &["restore", &id, "--target", target.to_str().unwrap()],
                    ),
                );
                if !r.ok() {
                    it.t.unrestorable_commits += 1;
                    it.violation(format!(
                        "backup committed {} but it does not restore: {}",
                        &id[..8],
                        r.why()
                    ));
                } else {
                    let got = tree_manifest(&target);
                    if got != want {
                        it.t.unrestorable_commits += 1;
                        it.violation(format!(
                            "backup committed {} but it restores other bytes: {}",
                            &id[..8],
                            diff(&want, &got)
                        ));
                    }
                }
            }
        }
    } else {
        it.t.backups_failed += 1;
    }
}

#[test]
fn hostile_storage_drill() {
    let iterations: u64 = std::env::var("LIFEBOAT_DRILL_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let seeds: Vec<u64> = match std::env::var("LIFEBOAT_DRILL_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        Some(s) => vec![s],
        None => (0..iterations).collect(),
    };
    let started = Instant::now();
    let p = build_pristine();
    eprintln!(
        "pristine repository: {}",
        p.objects
            .iter()
            .map(|(k, v)| format!("{} {k:?}", v.len()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let base = tempfile::tempdir().unwrap();

    // The harness judged on an untouched copy (both backup variants): everything succeeds, the
    // newest snapshot restores, and no violation is seen.
    let mut c = Tally::default();
    for seed in 0..2 {
        iteration(&p, base.path(), seed, true, &mut c);
    }
    assert!(
        c.violations.is_empty()
            && (c.restores_ok, c.gates_ok, c.check_clean, c.backups_ok) == (2, 2, 2, 2)
            && c.restores_older == 0,
        "the harness fails an untouched repository: {:?}",
        c.violations
    );

    let mut t = Tally::default();
    for &seed in &seeds {
        iteration(&p, base.path(), seed, false, &mut t);
    }
    let total = started.elapsed().as_secs_f64();

    let per = |m: &dyn Fn() -> Vec<String>| m().join(", ");
    let violations = t.panics
        + t.hangs
        + t.over_rss
        + t.silent_corruptions
        + t.unknown_snapshots
        + t.gate_fresh
        + t.unrestorable_commits
        + t.false_clean;
    eprintln!(
        "\n=== hostile-storage drill: {} mutation(s), {} command(s), {total:.1} s ===\n\
         mutations per kind:   {}\n\
         objects hit per kind: {}\n\
         panics/crashes:                     {}\n\
         hangs (> 60 s):                     {}\n\
         over 256 MB RSS:                    {}\n\
         silent corruptions (exit 0, wrong bytes): {}\n\
         restores of a snapshot never made:  {}\n\
         gate started fresh:                 {}\n\
         unrestorable committed snapshots:   {}\n\
         false-clean checks:                 {}\n\
         check clean after an undetectable deletion (not a violation): {}\n\
         check: {} clean, {} failed\n\
         backups: {} succeeded, {} failed\n\
         restore latest: {} exited 0, {} refused; gate: {} exited 0, {} refused; \
         {} exit-0 restore(s) of an older snapshot ({} with the newest snapshot object untouched)\n\
         max RSS: {:.1} MB ({}); slowest command: {:.2} s ({})\n\
         violations: {violations} ({} listed)",
        seeds.len(),
        t.commands,
        per(&|| t.per_op.iter().map(|(k, v)| format!("{k:?} {v}")).collect()),
        per(&|| t
            .per_kind
            .iter()
            .map(|(k, v)| format!("{k:?} {v}"))
            .collect()),
        t.panics,
        t.hangs,
        t.over_rss,
        t.silent_corruptions,
        t.unknown_snapshots,
        t.gate_fresh,
        t.unrestorable_commits,
        t.false_clean,
        t.check_clean_undetectable,
        t.check_clean,
        t.check_failed,
        t.backups_ok,
        t.backups_failed,
        t.restores_ok,
        t.restores_refused,
        t.gates_ok,
        t.gates_refused,
        t.restores_older,
        t.restores_older_newest_intact,
        t.max_rss_kb as f64 / 1024.0,
        t.max_rss_cmd,
        t.slowest,
        t.slowest_cmd,
        t.violations.len(),
    );
    for v in &t.violations {
        eprintln!("  {v}");
    }
    assert!(
        t.violations.is_empty(),
        "{} violation(s); replay one with LIFEBOAT_DRILL_SEED=<seed>",
        t.violations.len()
    );
}
