//! The single-writer lease of a volume name: `leases/<keyed hash of the name>`, an encrypted
//! JSON object `{holder, expires}` created with a conditional put and renewed while the agent
//! runs. On a redeploy the new instance finds the old one's lease, waits for its final backup
//! and release (or for it to expire, if the old lease vanished with its provider), and only then
//! restores, so it restores the newest data and the two never write one volume's history at once.
//!
//! Expiry is judged by the reader's clock against the writer's timestamp, so the TTL must
//! comfortably exceed the clock skew between providers (default 60 s, renewed every TTL/3).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::backend::{Payload, PutMode, PutOutcome};
use crate::crypto::Kind;
use crate::error::{Error, Result};
use crate::repository::Repository;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct LeaseBody {
    holder: String,
    name: String,
    /// Unix seconds.
    expires: i64,
}

/// A held lease; renewed by a background thread until [`Lease::release`].
pub struct Lease {
    repo: Arc<Repository>,
    key: String,
    holder: String,
    name: String,
    ttl: Duration,
    stop: Arc<AtomicBool>,
    renewer: Option<std::thread::JoinHandle<()>>,
}

/// The object key of a volume name's lease. Keyed, so the bucket does not reveal volume names.
pub fn lease_key(repo: &Repository, name: &str) -> String {
    let id = repo
        .key()
        .blob_id(format!("lifeboat lease {name}").as_bytes());
    format!("leases/{id}")
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn read(repo: &Repository, key: &str) -> Result<Option<LeaseBody>> {
    match repo.get_object(key) {
        Ok(bytes) => {
            let body = repo
                .key()
                .sealer(Kind::Lease)
                .open(key.as_bytes(), &bytes, &|| key.to_string())
                .ok()
                .and_then(|p| serde_json::from_slice::<LeaseBody>(&p).ok());
            if body.is_none() {
                warn!(key, "unreadable lease object: treating it as expired");
            }
            Ok(body.or(Some(LeaseBody {
                holder: "<unreadable>".into(),
                name: String::new(),
                expires: 0,
            })))
        }
        Err(Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

fn write(repo: &Repository, key: &str, body: &LeaseBody, mode: PutMode) -> Result<PutOutcome> {
    let bytes = repo.key().sealer(Kind::Lease).seal(
        key.as_bytes(),
        &serde_json::to_vec(body).expect("lease serializes"),
    );
    repo.backend().put(key, Payload::Bytes(&bytes), mode)
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
        let key = lease_key(&repo, name);
        let started = Instant::now();
        let mut logged = String::new();
        loop {
            let body = LeaseBody {
                holder: holder.into(),
                name: name.into(),
                expires: now() + ttl.as_secs() as i64,
            };
            if write(&repo, &key, &body, PutMode::IfAbsent)? == PutOutcome::Written {
                break;
            }
            match read(&repo, &key)? {
                None => continue, // released between our put and our read
                Some(cur) if cur.holder == holder => {
                    write(&repo, &key, &body, PutMode::Overwrite)?;
                    break;
                }
                Some(cur) if cur.expires < now() => {
                    warn!(holder = %cur.holder, "taking over an expired lease of this volume");
                    repo.backend().delete(&key)?;
                    continue;
                }
                Some(cur) => {
                    if started.elapsed() >= wait || stop() {
                        return Err(Error::invalid(format!(
                            "volume {name:?} is held by another instance ({}) whose lease runs {} s more; waited {} s (LIFEBOAT_LEASE_WAIT). Stop the other instance or wait for it to expire",
                            cur.holder,
                            cur.expires - now(),
                            started.elapsed().as_secs()
                        )));
                    }
                    if logged != cur.holder {
                        info!(holder = %cur.holder, expires_in = cur.expires - now(), "another instance holds this volume; waiting for its final backup and release");
                        logged = cur.holder.clone();
                    }
                    std::thread::sleep(Duration::from_millis(500));
                }
            }
        }
        info!(name, holder, "volume lease acquired");
        let stop_flag = Arc::new(AtomicBool::new(false));
        let renewer = {
            let (repo, key, stop, holder, name) = (
                repo.clone(),
                key.clone(),
                stop_flag.clone(),
                holder.to_string(),
                name.to_string(),
            );
            std::thread::spawn(move || renew_loop(&repo, &key, &holder, &name, ttl, &stop))
        };
        Ok(Lease {
            repo,
            key,
            holder: holder.into(),
            name: name.into(),
            ttl,
            stop: stop_flag,
            renewer: Some(renewer),
        })
    }

    /// Gives the lease up (after the final backup), so a waiting successor starts at once.
    pub fn release(mut self) {
        self.stop.store(true, Relaxed);
        if let Some(h) = self.renewer.take() {
            let _ = h.join();
        }
        match read(&self.repo, &self.key) {
            Ok(Some(cur)) if cur.holder == self.holder => {
                if let Err(e) = self.repo.backend().delete(&self.key) {
                    warn!(error = %e, "could not release the volume lease; it expires in {} s", self.ttl.as_secs());
                } else {
                    info!(name = %self.name, "volume lease released");
                }
            }
            Ok(_) => warn!("the volume lease was taken over by another instance before release"),
            Err(e) => warn!(error = %e, "could not read the volume lease to release it"),
        }
    }
}

fn renew_loop(
    repo: &Repository,
    key: &str,
    holder: &str,
    name: &str,
    ttl: Duration,
    stop: &AtomicBool,
) {
    let period = ttl / 3;
    let mut next = Instant::now() + period;
    while !stop.load(Relaxed) {
        if Instant::now() < next {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        next = Instant::now() + period;
        match read(repo, key) {
            Ok(Some(cur)) if cur.holder != holder && cur.expires >= now() => {
                warn!(other = %cur.holder, "another instance took this volume's lease (ours had expired); not renewing");
                continue;
            }
            Err(e) => {
                warn!(error = %e, "lease renewal: cannot read the lease; retrying");
                continue;
            }
            _ => {}
        }
        let body = LeaseBody {
            holder: holder.into(),
            name: name.into(),
            expires: now() + ttl.as_secs() as i64,
        };
        if let Err(e) = write(repo, key, &body, PutMode::Overwrite) {
            warn!(error = %e, "lease renewal failed; retrying");
        }
    }
}
