//! Lease drills (issue 14): takeovers of a lease by 2-4 contenders at once, against the local
//! backend and against SeaweedFS through a fault-injecting proxy (delays, lost replies, resets).
//!
//! Each round the current holder is partitioned from the store (its requests fail, some after
//! reaching the store: lost replies), crashes (stops renewing) or releases; 2-4 contenders then
//! race for the lease at once. Every holder runs a "child" (an interval recorded from the moment
//! it holds the lease until it sees the lease lost or gives it up). Required: no two children
//! ever run at once, exactly one contender wins each generation, the old holder (its path healed)
//! cannot commit a snapshot after the takeover, and the newest generation's snapshot is `latest`
//! after the fork filter.
//!
//! Seeded (LIFEBOAT_DRILL_SEED); short tier by default, LIFEBOAT_DRILL_ITERATIONS=N runs N
//! rounds on each backend.

mod common;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::proxy::{Fault, Proxy};
use common::{PASSWORD, init_options, seaweed};
use lifeboat::agent::fence;
use lifeboat::agent::lease::Lease;
use lifeboat::backend::{
    Backend, LocalBackend, ObjectInfo, Payload, PutMode, PutOutcome, RequestStats,
};
use lifeboat::backup::{self, BackupOptions, CommitFence, Source};
use lifeboat::repository::Repository;

/// A backend whose path to the store can be cut: while cut, requests fail; puts and deletes
/// reach the store first half the time (the reply is lost).
struct Switch {
    inner: Arc<dyn Backend>,
    cut: Arc<AtomicBool>,
    n: AtomicU64,
}

impl Switch {
    fn down(&self, _before: bool) -> lifeboat::Result<()> {
        if self.cut.load(SeqCst) {
            return Err(lifeboat::Error::io(
                "drill partition",
                std::io::Error::new(std::io::ErrorKind::ConnectionReset, "partitioned"),
            ));
        }
        Ok(())
    }
}

impl Backend for Switch {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn create(&self) -> lifeboat::Result<()> {
        self.inner.create()
    }
    fn get(&self, key: &str, max: u64) -> lifeboat::Result<Vec<u8>> {
        self.down(true)?;
        self.inner.get(key, max)
    }
    fn get_range(&self, key: &str, offset: u64, len: u64) -> lifeboat::Result<Vec<u8>> {
        self.down(true)?;
        self.inner.get_range(key, offset, len)
    }
    fn put(&self, key: &str, payload: Payload<'_>, mode: PutMode) -> lifeboat::Result<PutOutcome> {
        if self.cut.load(SeqCst) && self.n.fetch_add(1, SeqCst) % 2 == 1 {
            // Reaches the store; the reply is lost.
            let _ = self.inner.put(key, payload, mode);
        }
        self.down(true)?;
        self.inner.put(key, payload, mode)
    }
    fn list(&self, prefix: &str) -> lifeboat::Result<Vec<ObjectInfo>> {
        self.down(true)?;
        self.inner.list(prefix)
    }
    fn delete(&self, key: &str) -> lifeboat::Result<()> {
        self.down(true)?;
        self.inner.delete(key)
    }
    fn staging_dir(&self) -> Option<PathBuf> {
        self.inner.staging_dir()
    }
    fn requests(&self) -> Option<RequestStats> {
        self.inner.requests()
    }
}

struct Node {
    repo: Arc<Repository>,
    cut: Arc<AtomicBool>,
}

/// A child's run: generation, start, stop.
#[derive(Clone, Debug)]
struct Run {
    generation: u64,
    start: Instant,
    stop: Option<Instant>,
    /// When the holder noticed (polling) that it had to stop.
    detected: Option<Instant>,
}

struct Holder {
    node: usize,
    lease: Lease,
    quit: Arc<AtomicBool>,
    child: std::thread::JoinHandle<()>,
}

/// Starts the child of a lease: it runs until the lease is lost or `quit`.
fn start_child(
    lease: &Lease,
    runs: &Arc<Mutex<Vec<Run>>>,
) -> (Arc<AtomicBool>, std::thread::JoinHandle<()>) {
    let status = lease.status();
    let quit = Arc::new(AtomicBool::new(false));
    // The start is taken before the lease is checked: if it is still held after, the lease was
    // held at the start too.
    let start = Instant::now();
    let idx = {
        let mut r = runs.lock().unwrap();
        r.push(Run {
            generation: lease.generation(),
            start,
            stop: None,
            detected: None,
        });
        r.len() - 1
    };
    if status.lost().is_some() {
        // Never started: its lease lapsed before the child could run.
        runs.lock().unwrap()[idx].stop = Some(start);
        return (quit, std::thread::spawn(|| {}));
    }
    let (q, runs) = (quit.clone(), runs.clone());
    let h = std::thread::spawn(move || {
        while !q.load(SeqCst) && status.lost().is_none() {
            std::thread::sleep(Duration::from_millis(1));
        }
        // The child is stopped on detection or by a deadline timer armed at the lease's
        // validity end, whichever comes first (the detection lag is reported separately).
        let now = Instant::now();
        let deadline = status.valid_until();
        let mut r = runs.lock().unwrap();
        r[idx].stop = Some(now.min(deadline));
        r[idx].detected = Some(now);
    });
    (quit, h)
}

fn fenced_backup(
    repo: &Repository,
    lease: &Lease,
    src: &std::path::Path,
) -> lifeboat::Result<lifeboat::Id> {
    let mut opts = BackupOptions::new("drill");
    opts.threads = 1;
    opts.fence = Some(CommitFence(Arc::new(lease.fence())));
    backup::backup(repo, &Source::Paths(vec![src.to_path_buf()]), &opts).map(|o| o.id)
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Default, Debug)]
struct Figures {
    rounds: u64,
    contenders: u64,
    partitions: u64,
    crashes: u64,
    releases: u64,
    overlaps: u64,
    /// Children whose holder noticed the loss only after the successor started (polling lag).
    late_detections: u64,
    max_detection_lag_ms: u64,
    double_wins: u64,
    /// Winners whose lease had already lapsed when acquire returned (a stalled thread): legit.
    lapsed_wins: u64,
    old_commits_refused: u64,
    old_commits_after_takeover: u64,
    new_commits: u64,
    new_commit_failures: u64,
}

fn drill(label: &str, nodes: Vec<Node>, rounds: u64, ttl: Duration, seed: u64) -> Figures {
    let mut rng = Rng(seed | 1);
    let runs: Arc<Mutex<Vec<Run>>> = Arc::new(Mutex::new(Vec::new()));
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("data"), b"generation 0").unwrap();
    let mut f = Figures::default();
    let started = Instant::now();
    // The first holder.
    let first = Lease::acquire(
        nodes[0].repo.clone(),
        "drill",
        "node0-r0",
        ttl,
        Duration::from_secs(60),
        &|| false,
    )
    .unwrap();
    let (quit, child) = start_child(&first, &runs);
    let mut holder = Holder {
        node: 0,
        lease: first,
        quit,
        child,
    };
    for round in 1..=rounds {
        // The old holder: partitioned, crashed or released.
        let how = rng.below(10);
        let old = holder;
        let mut old_child = Some(old.child);
        let old_lease = match how {
            0..=5 => {
                f.partitions += 1;
                nodes[old.node].cut.store(true, SeqCst);
                Some(old.lease)
            }
            6..=7 => {
                f.crashes += 1;
                drop(old.lease); // stops renewing, never releases
                None
            }
            _ => {
                f.releases += 1;
                old.quit.store(true, SeqCst);
                old_child.take().unwrap().join().unwrap();
                old.lease.release();
                None
            }
        };
        // 2-4 contenders at once, from the other nodes.
        let n = 2 + rng.below(3) as usize;
        f.contenders += n as u64;
        let mut pick: Vec<usize> = (0..nodes.len()).filter(|i| *i != old.node).collect();
        while pick.len() > n {
            pick.remove(rng.below(pick.len() as u64) as usize);
        }
        let won = Arc::new(AtomicBool::new(false));
        let winners: Vec<(usize, Lease)> = std::thread::scope(|s| {
            let hs: Vec<_> = pick
                .iter()
                .map(|&i| {
                    let (repo, won) = (nodes[i].repo.clone(), won.clone());
                    nodes[i].cut.store(false, SeqCst);
                    s.spawn(move || {
                        let stop = || won.load(SeqCst);
                        let r = Lease::acquire(
                            repo,
                            "drill",
                            &format!("node{i}-r{round}"),
                            ttl,
                            Duration::from_secs(120),
                            &stop,
                        );
                        match r {
                            Ok(l) => {
                                won.store(true, SeqCst);
                                Some((i, l))
                            }
                            Err(_) => None,
                        }
                    })
                })
                .collect();
            hs.into_iter().filter_map(|h| h.join().unwrap()).collect()
        });
        let mut winners = winners;
        winners.sort_by_key(|(_, l)| std::cmp::Reverse(l.generation()));
        if winners.len() != 1 {
            let gens: Vec<u64> = winners.iter().map(|(_, l)| l.generation()).collect();
            eprintln!(
                "{label} round {round}: {} winners, generations {gens:?}",
                winners.len()
            );
            let mut g = gens.clone();
            g.dedup();
            if g.len() != gens.len() {
                f.double_wins += 1;
            }
            f.lapsed_wins += winners[1..]
                .iter()
                .filter(|(_, l)| l.lost().is_some())
                .count() as u64;
        }
        let mut winners = winners.into_iter();
        let (node, lease) = winners.next().expect("a winner");
        // A second winner would be a split brain: keep its child running too, so it shows.
        let extra: Vec<_> = winners
            .map(|(_, l)| {
                let c = start_child(&l, &runs);
                (l, c)
            })
            .collect();
        let (quit, child) = start_child(&lease, &runs);
        std::fs::write(
            src.path().join("data"),
            format!("generation {}", lease.generation()),
        )
        .unwrap();
        match fenced_backup(&nodes[node].repo, &lease, src.path()) {
            Ok(_) => f.new_commits += 1,
            Err(e) => {
                f.new_commit_failures += 1;
                eprintln!("{label} round {round}: the new holder's backup failed: {e}");
            }
        }
        // The old holder's path heals: it must not commit.
        if let Some(l) = old_lease {
            nodes[old.node].cut.store(false, SeqCst);
            match fenced_backup(&nodes[old.node].repo, &l, src.path()) {
                Ok(id) => {
                    f.old_commits_after_takeover += 1;
                    eprintln!(
                        "{label} round {round}: the old holder committed {id:?} after the takeover"
                    );
                }
                Err(_) => f.old_commits_refused += 1,
            }
            drop(l);
        }
        if let Some(c) = old_child {
            c.join().unwrap();
        }
        for (l, (q, c)) in extra {
            q.store(true, SeqCst);
            c.join().unwrap();
            drop(l);
        }
        holder = Holder {
            node,
            lease,
            quit,
            child,
        };
        f.rounds += 1;
    }
    holder.quit.store(true, SeqCst);
    holder.child.join().unwrap();
    let last_gen = holder.lease.generation();
    holder.lease.release();
    // No two children ever ran at once.
    // (A child whose lease had lapsed before it started never ran.)
    let mut runs: Vec<Run> = runs
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.stop != Some(r.start))
        .cloned()
        .collect();
    runs.sort_by_key(|r| r.start);
    for w in runs.windows(2) {
        let stop = w[0].stop.expect("stopped");
        let detected = w[0].detected.unwrap_or(stop);
        f.max_detection_lag_ms = f
            .max_detection_lag_ms
            .max(detected.saturating_duration_since(stop).as_millis() as u64);
        if detected > w[1].start {
            f.late_detections += 1;
        }
        if stop > w[1].start {
            f.overlaps += 1;
            eprintln!(
                "{label}: overlap: generation {} ran until {:?} after generation {} started",
                w[0].generation,
                stop - w[1].start,
                w[1].generation
            );
        }
    }
    // Latest, after the fork filter, is the newest generation's snapshot.
    let all = nodes[0].repo.snapshots().unwrap();
    let latest = fence::prefer(all.clone())
        .into_iter()
        .max_by_key(|(_, s)| s.time);
    let (_, latest) = latest.expect("snapshots");
    let top = all
        .iter()
        .filter_map(|(_, s)| s.lease.map(|l| l.generation))
        .max();
    assert_eq!(
        latest.lease.map(|l| l.generation),
        top,
        "{label}: latest is not from the newest generation"
    );
    assert_eq!(top, Some(last_gen), "{label}");
    assert!(
        fence::superseded(&all).is_empty(),
        "{label}: forks were committed"
    );
    eprintln!(
        "LEASE_DRILL {label}: {f:?}, ttl {} ms, {} snapshots, {:.1} s",
        ttl.as_millis(),
        all.len(),
        started.elapsed().as_secs_f64()
    );
    f
}

fn iterations(short: u64) -> u64 {
    std::env::var("LIFEBOAT_DRILL_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(short)
}

fn seed() -> u64 {
    std::env::var("LIFEBOAT_DRILL_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x1ea5e)
}

fn check(f: &Figures) {
    assert_eq!(f.overlaps, 0, "{f:?}");
    assert_eq!(f.double_wins, 0, "{f:?}");
    assert_eq!(f.old_commits_after_takeover, 0, "{f:?}");
}

#[test]
fn lease_races_local() {
    let t = tempfile::tempdir().unwrap();
    Repository::init(
        Box::new(LocalBackend::new(t.path())),
        PASSWORD,
        &init_options(),
    )
    .unwrap();
    // One local backend shared by the nodes: LocalBackend names its temporary files by pid and
    // a per-instance counter, so two instances in one process can pick the same temporary name
    // and one create-if-absent then links the other's bytes (a split brain of the drill itself,
    // not of the protocol). Separate processes never share a temporary name.
    let local: Arc<dyn Backend> = Arc::new(LocalBackend::new(t.path()));
    let nodes = (0..5)
        .map(|_| {
            let cut = Arc::new(AtomicBool::new(false));
            let sw = Switch {
                inner: local.clone(),
                cut: cut.clone(),
                n: AtomicU64::new(0),
            };
            Node {
                repo: Arc::new(Repository::open(Box::new(sw), PASSWORD).unwrap()),
                cut,
            }
        })
        .collect();
    let f = drill(
        "local",
        nodes,
        iterations(200),
        Duration::from_millis(300),
        seed(),
    );
    check(&f);
}

#[test]
fn lease_races_s3_through_fault_proxy() {
    let s = seaweed::server();
    seaweed::set_credentials();
    let proxy = Proxy::start(s.s3);
    let url = format!(
        "s3:http://{}/leasedrill/r{}",
        proxy.addr,
        std::process::id()
    );
    Repository::init(
        lifeboat::backend::open(&url).unwrap(),
        PASSWORD,
        &init_options(),
    )
    .unwrap();
    {
        let mut p = proxy.plan.lock().unwrap();
        p.every = 7;
        p.faults = vec![
            Fault::Delay,
            Fault::ResetAfterForward,
            Fault::ResetBeforeForward,
            Fault::SlowDown503,
            Fault::Internal500,
        ];
    }
    let nodes = (0..5)
        .map(|_| {
            let cut = Arc::new(AtomicBool::new(false));
            let sw = Switch {
                inner: Arc::from(lifeboat::backend::open(&url).unwrap()),
                cut: cut.clone(),
                n: AtomicU64::new(0),
            };
            Node {
                repo: Arc::new(Repository::open(Box::new(sw), PASSWORD).unwrap()),
                cut,
            }
        })
        .collect();
    let f = drill(
        "s3+proxy",
        nodes,
        iterations(40),
        Duration::from_millis(1500),
        seed(),
    );
    eprintln!(
        "proxy: {} requests, {} faults injected",
        proxy.requests.load(SeqCst),
        proxy.injected.load(SeqCst)
    );
    check(&f);
}

// ---- Partition drill: network namespaces ----

/// Runs `ip` with `args`; panics with its output on failure.
fn ip(args: &[&str]) {
    let out = std::process::Command::new("ip")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Three namespaces made for this drill (store, old, new), veth pairs old<->store and
/// new<->store; every address lives in them. Dropped: processes killed, namespaces deleted.
struct Net {
    store: String,
    old: String,
    new: String,
    old_link: String,
    pids: std::cell::RefCell<Vec<u32>>,
    weed: std::cell::RefCell<Option<std::process::Child>>,
}

impl Drop for Net {
    fn drop(&mut self) {
        for p in self.pids.borrow().iter() {
            // SAFETY: signalling processes this drill started, by pid.
            unsafe {
                libc::kill(*p as i32, libc::SIGKILL);
            }
        }
        if let Some(mut w) = self.weed.borrow_mut().take() {
            let _ = w.kill();
            let _ = w.wait();
        }
        std::thread::sleep(Duration::from_millis(200));
        for n in [&self.store, &self.old, &self.new] {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", n])
                .status();
        }
    }
}

impl Net {
    fn setup() -> Net {
        let id = std::process::id() % 100_000;
        let net = Net {
            store: format!("lbds{id}"),
            old: format!("lbdo{id}"),
            new: format!("lbdn{id}"),
            old_link: format!("lbo{id}s"),
            pids: Default::default(),
            weed: Default::default(),
        };
        for n in [&net.store, &net.old, &net.new] {
            ip(&["netns", "add", n]);
            ip(&["-n", n, "link", "set", "lo", "up"]);
        }
        for (ns, tag, subnet) in [(&net.old, "o", 1), (&net.new, "n", 2)] {
            let (a, b) = (format!("lb{tag}{id}a"), format!("lb{tag}{id}s"));
            ip(&[
                "link", "add", &a, "netns", ns, "type", "veth", "peer", "name", &b, "netns",
                &net.store,
            ]);
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("10.213.{subnet}.1/24"),
                "dev",
                &a,
            ]);
            ip(&[
                "-n",
                &net.store,
                "addr",
                "add",
                &format!("10.213.{subnet}.2/24"),
                "dev",
                &b,
            ]);
            ip(&["-n", ns, "link", "set", &a, "up"]);
            ip(&["-n", &net.store, "link", "set", &b, "up"]);
        }
        net
    }

    /// Cuts (or heals) the old instance's path to the store.
    fn old_path(&self, up: bool) {
        ip(&[
            "-n",
            &self.store,
            "link",
            "set",
            &self.old_link,
            if up { "up" } else { "down" },
        ]);
    }

    fn exec(&self, ns: &str) -> std::process::Command {
        let mut c = std::process::Command::new("ip");
        c.args(["netns", "exec", ns]);
        c
    }
}

fn weed_path() -> Option<PathBuf> {
    let out = std::process::Command::new("sh")
        .args(["-c", "command -v weed"])
        .output()
        .ok()?;
    let p = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (!p.is_empty()).then(|| PathBuf::from(p))
}

fn lifeboat_in(net: &Net, ns: &str, url: &str, home: &std::path::Path) -> std::process::Command {
    let mut c = net.exec(ns);
    c.arg(env!("CARGO_BIN_EXE_lifeboat"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("LIFEBOAT_REPOSITORY", url)
        .env("LIFEBOAT_PASSWORD", PASSWORD)
        .env("AWS_ACCESS_KEY_ID", seaweed::ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", seaweed::SECRET_KEY)
        .env("AWS_REGION", "us-east-1");
    c
}

/// (id, generation, time) of every snapshot, read from the new instance's namespace.
fn snapshot_list(
    net: &Net,
    url: &str,
    home: &std::path::Path,
) -> Vec<(String, Option<u64>, String)> {
    let out = lifeboat_in(net, &net.new, url, home)
        .args(["snapshots", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["id"].as_str().unwrap().to_string(),
                s["lease"]["generation"].as_u64(),
                s["time"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The old instance loses its path to the store, the new one takes over and restores, the path
/// heals: the old instance commits nothing after the takeover and says so in its log.
#[test]
fn partition_drill_netns() {
    let root = unsafe { libc::geteuid() } == 0;
    let weed = weed_path();
    if !root || weed.is_none() || std::process::Command::new("ip").arg("-V").output().is_err() {
        eprintln!("PARTITION_DRILL skipped: needs root, ip and weed");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let net = Net::setup();
    // SeaweedFS inside the store namespace.
    let cfg = t.path().join("s3.json");
    std::fs::write(
        &cfg,
        format!(
            r#"{{"identities":[{{"name":"lifeboat","credentials":[{{"accessKey":"{}","secretKey":"{}"}}],"actions":["Admin","Read","Write","List","Tagging"]}}]}}"#,
            seaweed::ACCESS_KEY,
            seaweed::SECRET_KEY
        ),
    )
    .unwrap();
    std::fs::create_dir_all(t.path().join("weed")).unwrap();
    let weed_log = std::fs::File::create(t.path().join("weed.log")).unwrap();
    let w = net
        .exec(&net.store)
        .arg(weed.unwrap())
        .arg("server")
        .arg(format!("-dir={}", t.path().join("weed").display()))
        .args(["-ip=10.213.1.2", "-ip.bind=0.0.0.0", "-filer", "-s3"])
        .args([
            "-master.port=9333",
            "-volume.port=8080",
            "-filer.port=8888",
            "-s3.port=8333",
        ])
        .arg(format!("-s3.config={}", cfg.display()))
        .args([
            "-master.volumeSizeLimitMB=64",
            "-volume.max=20",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
        ])
        .stdout(weed_log.try_clone().unwrap())
        .stderr(weed_log)
        .spawn()
        .unwrap();
    *net.weed.borrow_mut() = Some(w);
    let old_url = "s3:http://10.213.1.2:8333/partition/repo";
    let new_url = "s3:http://10.213.2.2:8333/partition/repo";
    let home = t.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    wait_for("SeaweedFS and init", Duration::from_secs(120), || {
        lifeboat_in(&net, &net.old, old_url, &home)
            .args([
                "init",
                "--kdf-memory-kib",
                "64",
                "--kdf-time",
                "1",
                "--pack-size-mib",
                "1",
            ])
            .output()
            .unwrap()
            .status
            .success()
    });
    let agent = |ns: &str, url: &str, vol: &std::path::Path, log: &std::path::Path| {
        std::fs::create_dir_all(vol).unwrap();
        let app = format!(
            "while :; do date +%s.%N >> {}/app.log; sleep 0.2; done",
            vol.display()
        );
        let f = std::fs::File::create(log).unwrap();
        lifeboat_in(&net, ns, url, &home)
            .env("LIFEBOAT_PATH", vol)
            .env("LIFEBOAT_NAME", "partitioned")
            .env("LIFEBOAT_CACHE_DIR", t.path().join(format!("cache-{ns}")))
            .env("LIFEBOAT_LEASE_TTL", "4s")
            .env("LIFEBOAT_LEASE_WAIT", "120s")
            .env("LIFEBOAT_SCHEDULE", "@every 2s")
            .env("LIFEBOAT_BACKUP_ON_START", "true")
            .env("LIFEBOAT_SHUTDOWN_BACKUP_TIMEOUT", "10s")
            .args(["run", "--", "sh", "-c", &app])
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .unwrap()
    };
    let (old_vol, new_vol) = (t.path().join("old-vol"), t.path().join("new-vol"));
    let (old_log, new_log) = (t.path().join("old.log"), t.path().join("new.log"));
    let started = Instant::now();
    let mut old = agent(&net.old.clone(), old_url, &old_vol, &old_log);
    net.pids.borrow_mut().push(old.id());
    wait_for(
        "the old instance's snapshots",
        Duration::from_secs(60),
        || snapshot_list(&net, new_url, &home).len() >= 2,
    );
    // The partition.
    net.old_path(false);
    let before: Vec<_> = snapshot_list(&net, new_url, &home)
        .into_iter()
        .filter(|s| s.1 == Some(1))
        .collect();
    let cut_at = Instant::now();
    let mut new = agent(&net.new.clone(), new_url, &new_vol, &new_log);
    net.pids.borrow_mut().push(new.id());
    wait_for(
        "the new instance's snapshot",
        Duration::from_secs(90),
        || {
            snapshot_list(&net, new_url, &home)
                .iter()
                .any(|s| s.1 == Some(2))
        },
    );
    let takeover = cut_at.elapsed();
    assert!(
        new_vol.join("app.log").exists(),
        "the new instance restored the app's data"
    );
    // The path heals; the old instance keeps its schedule for a while.
    net.old_path(true);
    std::thread::sleep(Duration::from_secs(12));
    let log = std::fs::read_to_string(&old_log).unwrap();
    assert!(
        log.contains("volume lease lost"),
        "the old instance's log:\n{log}"
    );
    // Stop both (the old one's final backup must be refused too).
    for c in [&old, &new] {
        unsafe {
            libc::kill(c.id() as i32, libc::SIGTERM);
        }
    }
    let _ = old.wait();
    let _ = new.wait();
    let after: Vec<_> = snapshot_list(&net, new_url, &home);
    let old_after: Vec<_> = after.iter().filter(|s| s.1 == Some(1)).cloned().collect();
    let log = std::fs::read_to_string(&old_log).unwrap();
    let refused = log.matches("volume lease lost").count();
    assert_eq!(
        old_after, before,
        "the old instance committed after the takeover; its log:\n{log}"
    );
    let top = after.iter().filter_map(|s| s.1).max();
    assert_eq!(top, Some(2));
    for l in log.lines().filter(|l| l.contains("lease")).take(6) {
        eprintln!("old instance: {l}");
    }
    eprintln!(
        "PARTITION_DRILL: takeover {:.1} s after the cut; old instance: {} snapshots before the cut, 0 after, {refused} log lines about the lost lease; new instance: {} snapshots; {:.1} s in all",
        takeover.as_secs_f64(),
        before.len(),
        after.iter().filter(|s| s.1 == Some(2)).count(),
        started.elapsed().as_secs_f64()
    );
}
