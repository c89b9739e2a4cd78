//! The fenced single-writer lease of a volume name (FORMAT.md, "12a. Volume leases").
//!
//! Built only on create-only writes (`If-None-Match: *`, a hard link locally); no object is ever
//! overwritten. Under `leases/<keyed hash of the name>/`:
//!
//! - `<generation, 20 digits>`: the generation record `{holder, name, generation, since, ttl}`.
//!   Taking the lease is creating generation `g + 1` where `g` is the highest listed: exactly one
//!   contender's create succeeds. A create whose reply was lost comes back `AlreadyExists` on the
//!   retry; reading it back and comparing the holder tells whether we won.
//! - `<generation>.r<sequence, 10 digits>`: renewal records, created only by that generation's
//!   holder, so a renewal can never overwrite (or even touch) a successor's lease.
//! - `<generation>.released`: the holder gave the lease up; a successor may take it at once.
//!
//! Expiry never compares two machines' clocks. The holder counts its lease valid until
//! `send time of its last renewal + TTL - margin` on its own monotonic clock, and accepts a
//! renewal only if the store acknowledged it before the previous validity ran out. A contender
//! takes over only after a listing that started at least `TTL + margin` (its own monotonic clock)
//! after it first saw the current state, and that still shows the same state. Any renewal the
//! holder accepted was visible before its validity ended, so before that listing: see FORMAT.md
//! for the argument. Only the rates of the two clocks matter, and the margin covers their drift.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use tracing::{error, info, warn};

use crate::backend::{Payload, PutMode, PutOutcome};
use crate::crypto::Kind;
use crate::error::{Error, Result};
use crate::repository::Repository;
pub use crate::repository::snapshot::LeaseStamp;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct GenBody {
    holder: String,
    name: String,
    generation: u64,
    /// Unix milliseconds, the taker's wall clock (informational, and the snapshot stamp).
    since: i64,
    /// The holder's TTL in milliseconds: a contender waits at least this long.
    ttl_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct RenewBody {
    holder: String,
    generation: u64,
    seq: u64,
    /// Unix seconds, the holder's wall clock: when this renewal runs out (messages only).
    expires: i64,
}

/// The legacy single-object lease of version 1 agents (`leases/<hash>`), read only so that a new
/// agent waits for an old one still running.
#[derive(Debug, Clone, Deserialize)]
struct LegacyBody {
    holder: String,
    expires: i64,
}

/// The object key of a volume name's legacy (version 1) lease.
pub fn lease_key(repo: &Repository, name: &str) -> String {
    let id = repo
        .key()
        .blob_id(format!("lifeboat lease {name}").as_bytes());
    format!("leases/{id}")
}

/// The folder of a volume name's fenced lease. Keyed, so the bucket does not reveal volume names.
pub fn lease_dir(repo: &Repository, name: &str) -> String {
    let id = repo
        .key()
        .blob_id(format!("lifeboat lease v2 {name}").as_bytes());
    format!("leases/{id}")
}

/// Safety margin for a TTL: covers clock-rate drift and scheduling delays.
pub fn margin(ttl: Duration) -> Duration {
    ttl / 10
}

fn gen_key(dir: &str, g: u64) -> String {
    format!("{dir}/{g:020}")
}

fn renew_key(dir: &str, g: u64, seq: u64) -> String {
    format!("{dir}/{g:020}.r{seq:010}")
}

fn released_key(dir: &str, g: u64) -> String {
    format!("{dir}/{g:020}.released")
}

/// What a listing of the lease folder says.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct View {
    /// Highest generation (0: none).
    top: u64,
    /// Highest renewal of `top` (0: none).
    seq: u64,
    released: bool,
    /// Every key with its generation, for garbage collection.
    keys: Vec<(u64, String)>,
}

fn scan(repo: &Repository, dir: &str) -> Result<View> {
    let mut v = View::default();
    let prefix = format!("{dir}/");
    for o in repo.backend().list(&prefix)? {
        let Some(rest) = o.key.strip_prefix(&prefix) else {
            continue;
        };
        let (g, tail) = rest.split_at(rest.len().min(20));
        let Ok(g) = g.parse::<u64>() else { continue };
        if g > v.top {
            v.top = g;
            v.seq = 0;
            v.released = false;
        }
        if g == v.top {
            if tail == ".released" {
                v.released = true;
            } else if let Some(s) = tail.strip_prefix(".r").and_then(|s| s.parse::<u64>().ok()) {
                v.seq = v.seq.max(s);
            }
        }
        v.keys.push((g, o.key));
    }
    // A listing is unsorted: recompute what belongs to the top generation.
    let top = v.top;
    v.seq = 0;
    v.released = false;
    for (g, k) in &v.keys {
        if *g != top {
            continue;
        }
        let tail = &k[prefix.len() + 20..];
        if tail == ".released" {
            v.released = true;
        } else if let Some(s) = tail.strip_prefix(".r").and_then(|s| s.parse::<u64>().ok()) {
            v.seq = v.seq.max(s);
        }
    }
    Ok(v)
}

fn open<T: serde::de::DeserializeOwned>(repo: &Repository, key: &str) -> Result<Option<T>> {
    match repo.get_object(key) {
        Ok(bytes) => Ok(repo
            .key()
            .sealer(Kind::Lease)
            .open(key.as_bytes(), &bytes, &|| key.to_string())
            .ok()
            .and_then(|p| serde_json::from_slice::<T>(&p).ok())),
        Err(Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

fn create<T: Serialize>(repo: &Repository, key: &str, body: &T) -> Result<PutOutcome> {
    let bytes = repo.key().sealer(Kind::Lease).seal(
        key.as_bytes(),
        &serde_json::to_vec(body).expect("lease serializes"),
    );
    repo.backend()
        .put(key, Payload::Bytes(&bytes), PutMode::IfAbsent)
}

fn ms_time(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

/// The shared state of a held lease: whether it is still valid, and if not why.
struct Shared {
    valid_until: Mutex<Instant>,
    lost: Mutex<Option<String>>,
    ttl: Duration,
    released: AtomicBool,
}

impl Shared {
    fn lose(&self, why: String) {
        let mut l = self.lost.lock().unwrap_or_else(|e| e.into_inner());
        if l.is_none() {
            error!("volume lease lost: {why}; this instance commits no more snapshots");
            *l = Some(why);
        }
    }

    fn lost(&self) -> Option<String> {
        if self.released.load(Relaxed) {
            return None;
        }
        if let Some(w) = self.lost.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            return Some(w);
        }
        let until = *self.valid_until.lock().unwrap_or_else(|e| e.into_inner());
        if Instant::now() >= until {
            self.lose(format!(
                "could not renew it within its TTL ({} s): another instance may have taken over",
                self.ttl.as_secs_f64()
            ));
            return self.lost.lock().unwrap_or_else(|e| e.into_inner()).clone();
        }
        None
    }
}

/// A cheap handle on a held lease's state, for watchers.
#[derive(Clone)]
pub struct LeaseStatus(Arc<Shared>);

impl LeaseStatus {
    /// Why the lease is lost, or `None` while it is held.
    pub fn lost(&self) -> Option<String> {
        self.0.lost()
    }

    /// Until when (this process's monotonic clock) the lease is valid as things stand: the
    /// deadline a holder may arm to stop what depends on the lease.
    pub fn valid_until(&self) -> Instant {
        *self.0.valid_until.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the lease was given up on purpose (the instance is stopping).
    pub fn released(&self) -> bool {
        self.0.released.load(Relaxed)
    }
}

/// A held lease; renewed by a background thread until [`Lease::release`].
pub struct Lease {
    repo: Arc<Repository>,
    dir: String,
    holder: String,
    name: String,
    generation: u64,
    since: DateTime<Utc>,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    renewer: Option<std::thread::JoinHandle<()>>,
}

/// Who holds a volume, for the waiting message.
struct Holder {
    holder: String,
    generation: u64,
    since: Option<DateTime<Utc>>,
    expires: Option<DateTime<Utc>>,
    ttl: Duration,
}

impl Holder {
    fn describe(&self) -> String {
        let since = self
            .since
            .map_or_else(|| "an unknown time".into(), |t| t.to_rfc3339());
        let until = self.expires.map_or_else(
            || "unknown".into(),
            |t| format!("{} by its own clock", t.to_rfc3339()),
        );
        format!(
            "{} (lease generation {}, held since {since}, renewed until {until})",
            self.holder, self.generation
        )
    }
}

fn holder_of(repo: &Repository, dir: &str, v: &View, ttl: Duration) -> Result<Holder> {
    let body: Option<GenBody> = open(repo, &gen_key(dir, v.top))?;
    let renewal: Option<RenewBody> = if v.seq > 0 {
        open(repo, &renew_key(dir, v.top, v.seq))?
    } else {
        None
    };
    let ttl = body
        .as_ref()
        .map_or(ttl, |b| ttl.max(Duration::from_millis(b.ttl_ms)));
    Ok(Holder {
        holder: body
            .as_ref()
            .map_or_else(|| "<unreadable>".into(), |b| b.holder.clone()),
        generation: v.top,
        since: body.as_ref().map(|b| ms_time(b.since)),
        expires: renewal
            .map(|r| r.expires)
            .or(body.map(|b| (b.since + b.ttl_ms as i64) / 1000))
            .and_then(|s| Utc.timestamp_opt(s, 0).single()),
        ttl,
    })
}

impl Lease {
    /// Takes the lease of `name`, waiting up to `wait` for another holder to release it or let
    /// it expire. `stop` ends the wait early.
    pub fn acquire(
        repo: Arc<Repository>,
        name: &str,
        holder: &str,
        ttl: Duration,
        wait: Duration,
        stop: &dyn Fn() -> bool,
    ) -> Result<Lease> {
        let dir = lease_dir(&repo, name);
        let legacy = lease_key(&repo, name);
        let started = Instant::now();
        let poll = (ttl / 10).clamp(Duration::from_millis(20), Duration::from_millis(500));
        // The state first seen, and when (after the listing that showed it returned).
        let mut seen: Option<(View, Instant, Holder)> = None;
        let mut last_log: Option<Instant> = None;
        let (generation, since, valid_until) = loop {
            if let Some(l) = open::<LegacyBody>(&repo, &legacy)?
                && l.holder != holder
                && l.expires >= Utc::now().timestamp()
            {
                if started.elapsed() >= wait || stop() {
                    return Err(Error::invalid(format!(
                        "volume {name:?} is held by an older lifeboat ({}) until {}; waited {} s (LIFEBOAT_LEASE_WAIT)",
                        l.holder,
                        l.expires,
                        started.elapsed().as_secs()
                    )));
                }
                std::thread::sleep(poll);
                continue;
            }
            let listed_at = Instant::now();
            let mut v = scan(&repo, &dir)?;
            v.keys.clear();
            let free = v.top == 0
                || v.released
                || matches!(&seen, Some((s, t0, h)) if *s == v && listed_at >= *t0 + h.ttl + margin(h.ttl));
            if !free {
                if seen.as_ref().is_none_or(|(s, _, _)| *s != v) {
                    let h = holder_of(&repo, &dir, &v, ttl)?;
                    if seen.as_ref().is_none_or(|(s, _, _)| s.top != v.top) {
                        info!(
                            "volume {name:?} is held by another instance: {}; waiting for its final backup and release, or for {} s without a renewal",
                            h.describe(),
                            (h.ttl + margin(h.ttl)).as_secs_f64()
                        );
                        last_log = Some(Instant::now());
                    }
                    seen = Some((v, Instant::now(), h));
                }
                let h = &seen.as_ref().expect("seen").2;
                if started.elapsed() >= wait || stop() {
                    return Err(Error::invalid(format!(
                        "volume {name:?} is held by another instance: {}; waited {} s (LIFEBOAT_LEASE_WAIT). Stop the other instance or wait for its lease to lapse",
                        h.describe(),
                        started.elapsed().as_secs()
                    )));
                }
                if last_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                    info!(
                        "still waiting for volume {name:?}: held by {}",
                        h.describe()
                    );
                    last_log = Some(Instant::now());
                }
                std::thread::sleep(poll);
                continue;
            }
            let g = v.top + 1;
            if v.top > 0 && !v.released {
                let h = &seen.as_ref().expect("seen").2;
                warn!(
                    "taking over volume {name:?}: its lease was not renewed for {} s: {}",
                    (h.ttl + margin(h.ttl)).as_secs_f64(),
                    h.describe()
                );
            }
            let sent = Instant::now();
            let body = GenBody {
                holder: holder.into(),
                name: name.into(),
                generation: g,
                since: Utc::now().timestamp_millis(),
                ttl_ms: ttl.as_millis() as u64,
            };
            match create(&repo, &gen_key(&dir, g), &body)? {
                PutOutcome::Written => break (g, ms_time(body.since), sent + ttl - margin(ttl)),
                PutOutcome::AlreadyExists => {
                    match open::<GenBody>(&repo, &gen_key(&dir, g))? {
                        // Our own create, whose reply was lost and retried.
                        Some(b) if b.holder == holder => {
                            break (g, ms_time(b.since), sent + ttl - margin(ttl));
                        }
                        _ => {
                            info!(generation = g, "another instance took the lease first");
                            seen = None;
                        }
                    }
                }
            }
        };
        // A process stalled for a TTL right after winning must not start on a lapsed lease.
        if Instant::now() + margin(ttl) >= valid_until {
            warn!(
                generation,
                "won the volume lease but stalled past its TTL before using it: contending again"
            );
            return Lease::acquire(
                repo,
                name,
                holder,
                ttl,
                wait.saturating_sub(started.elapsed()),
                stop,
            );
        }
        info!(name, holder, generation, "volume lease acquired");
        let shared = Arc::new(Shared {
            valid_until: Mutex::new(valid_until),
            lost: Mutex::new(None),
            ttl,
            released: AtomicBool::new(false),
        });
        let stop_flag = Arc::new(AtomicBool::new(false));
        let renewer = {
            let r = Renewer {
                repo: repo.clone(),
                dir: dir.clone(),
                holder: holder.to_string(),
                generation,
                ttl,
                shared: shared.clone(),
                stop: stop_flag.clone(),
            };
            std::thread::spawn(move || r.run())
        };
        Ok(Lease {
            repo,
            dir,
            holder: holder.into(),
            name: name.into(),
            generation,
            since,
            shared,
            stop: stop_flag,
            renewer: Some(renewer),
        })
    }

    /// This lease's generation.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// A handle to watch for the loss of this lease.
    pub fn status(&self) -> LeaseStatus {
        LeaseStatus(self.shared.clone())
    }

    /// Why the lease is lost, or `None` while it is held.
    pub fn lost(&self) -> Option<String> {
        self.shared.lost()
    }

    /// A function that proves, right before a snapshot commits, that this lease is still held:
    /// valid with at least a quarter of its TTL to spare, and no later generation listed.
    pub fn fence(&self) -> impl Fn() -> Result<LeaseStamp> + Send + Sync + 'static {
        let (repo, dir, shared) = (self.repo.clone(), self.dir.clone(), self.shared.clone());
        let (generation, since) = (self.generation, self.since);
        move || check(&repo, &dir, &shared, generation, since)
    }

    /// Gives the lease up (after the final backup), so a waiting successor starts at once.
    pub fn release(mut self) {
        let lost = self.shared.lost();
        self.shared.released.store(true, Relaxed);
        self.stop.store(true, Relaxed);
        if let Some(h) = self.renewer.take() {
            let _ = h.join();
        }
        if let Some(why) = lost {
            warn!("the volume lease was not released: it was already lost ({why})");
            return;
        }
        match scan(&self.repo, &self.dir) {
            Ok(v) if v.top == self.generation => {
                match create(
                    &self.repo,
                    &released_key(&self.dir, self.generation),
                    &self.holder,
                ) {
                    Ok(_) => {
                        info!(name = %self.name, generation = self.generation, "volume lease released")
                    }
                    Err(e) => {
                        warn!(error = %e, "could not release the volume lease; it lapses after its TTL ({} s)", self.shared.ttl.as_secs())
                    }
                }
            }
            Ok(v) => warn!(
                generation = v.top,
                "the volume lease was taken over by another instance before release"
            ),
            Err(e) => warn!(error = %e, "could not read the volume lease to release it"),
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
    }
}

fn check(
    repo: &Repository,
    dir: &str,
    shared: &Shared,
    generation: u64,
    since: DateTime<Utc>,
) -> Result<LeaseStamp> {
    let lost = |why: String| Error::invalid(format!("volume lease lost: {why}; not committing"));
    if shared.released.load(Relaxed) {
        return Err(lost("it was released".into()));
    }
    if let Some(why) = shared.lost() {
        return Err(lost(why));
    }
    let v = scan(repo, dir).map_err(|e| {
        Error::invalid(format!(
            "cannot prove this instance still holds the volume lease ({e}); not committing"
        ))
    })?;
    if v.top > generation {
        shared.lose(format!(
            "generation {} took the volume over (ours is {generation})",
            v.top
        ));
    }
    if let Some(why) = shared.lost() {
        return Err(lost(why));
    }
    let until = *shared.valid_until.lock().unwrap_or_else(|e| e.into_inner());
    if until.saturating_duration_since(Instant::now()) < shared.ttl / 4 {
        return Err(Error::invalid(
            "the volume lease is close to lapsing (renewals are failing); not committing",
        ));
    }
    Ok(LeaseStamp { generation, since })
}

struct Renewer {
    repo: Arc<Repository>,
    dir: String,
    holder: String,
    generation: u64,
    ttl: Duration,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
}

impl Renewer {
    fn run(self) {
        let period = self.ttl / 3;
        let tick = (self.ttl / 20).clamp(Duration::from_millis(5), Duration::from_millis(100));
        let mut next = Instant::now() + period;
        let mut seq = 0u64;
        let mut collected = false;
        while !self.stop.load(Relaxed) {
            if self.shared.lost().is_some() {
                return;
            }
            if Instant::now() < next {
                std::thread::sleep(tick);
                continue;
            }
            next = Instant::now() + period;
            seq += 1;
            let sent = Instant::now();
            let body = RenewBody {
                holder: self.holder.clone(),
                generation: self.generation,
                seq,
                expires: Utc::now().timestamp() + self.ttl.as_secs() as i64,
            };
            let r = create(
                &self.repo,
                &renew_key(&self.dir, self.generation, seq),
                &body,
            );
            let acked = Instant::now();
            match r {
                Ok(_) => {
                    let mut until = self
                        .shared
                        .valid_until
                        .lock()
                        .unwrap_or_else(|e| e.into_inner());
                    if acked < *until {
                        *until = sent + self.ttl - margin(self.ttl);
                    } else {
                        drop(until);
                        self.shared.lose(format!(
                            "renewal {seq} was acknowledged after the lease's validity ended"
                        ));
                        return;
                    }
                }
                Err(e) => {
                    warn!(error = %e, "lease renewal failed; retrying");
                    next = Instant::now() + tick * 4;
                    continue;
                }
            }
            match scan(&self.repo, &self.dir) {
                Ok(v) if v.top > self.generation => {
                    self.shared.lose(format!(
                        "generation {} took the volume over (ours is {})",
                        v.top, self.generation
                    ));
                    return;
                }
                Ok(v) => {
                    // Garbage: older generations, and our renewals before the previous one.
                    for (g, k) in &v.keys {
                        let old_renewal = *g == self.generation
                            && k.rsplit_once(".r")
                                .and_then(|(_, s)| s.parse::<u64>().ok())
                                .is_some_and(|s| s + 1 < seq);
                        if (*g < self.generation && !collected) || old_renewal {
                            let _ = self.repo.backend().delete(k);
                        }
                    }
                    collected = true;
                }
                Err(e) => warn!(error = %e, "lease renewal: cannot list the lease"),
            }
        }
    }
}
