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
    inner: Box<dyn Backend>,
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
        runs.lock().unwrap()[idx].stop = Some(Instant::now());
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
    double_wins: u64,
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
        if winners.len() != 1 {
            f.double_wins += 1;
            eprintln!("{label} round {round}: {} winners", winners.len());
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
    let mut runs = runs.lock().unwrap().clone();
    runs.sort_by_key(|r| r.start);
    for w in runs.windows(2) {
        let stop = w[0].stop.expect("stopped");
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
    let nodes = (0..5)
        .map(|_| {
            let cut = Arc::new(AtomicBool::new(false));
            let sw = Switch {
                inner: Box::new(LocalBackend::new(t.path())),
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
                inner: lifeboat::backend::open(&url).unwrap(),
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
