//! The agent: `lifeboat run -- APP` (wrapper entrypoint, the only shape Akash allows: one
//! container per service, no shared volumes) and `lifeboat daemon` (sidecar on Kubernetes or
//! compose). Both: connect to the repository, take the volume's lease, pass the restore gate,
//! then back up on schedule, on `POST /backup`, and once more at shutdown.
//!
//! Threads: the main loop waits on signals, the app's exit, HTTP triggers and the next scheduled
//! time; each backup runs on a thread of its own behind one lock, so a run that would overlap is
//! skipped and counted rather than queued.

pub mod app;
pub mod config;
pub mod fence;
pub mod gate;
pub mod hooks;
pub mod http;
pub mod lease;
pub mod notify;
pub mod schedule;
pub mod shutdown;
pub mod state;
mod wal;
mod work;

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use chrono::Utc;
use crossbeam_channel::{Receiver, Sender, never, select};
use serde_json::json;
use signal_hook::consts::signal::{SIGCHLD, SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2};
use tracing::{error, info, warn};

use self::app::App;
use self::config::AgentConfig;
use self::gate::GateOutcome;
use self::lease::Lease;
use self::notify::Notifier;
use self::state::State;
use self::work::run_backup;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::repository::{InitOptions, Repository};

/// What the agent wraps.
pub enum Mode {
    /// Start this command as the app, after the gate.
    Wrap(Vec<String>),
    /// No app: a sidecar next to one.
    Daemon,
}

/// How to reach the repository.
pub struct RepoAccess {
    /// Repository location string.
    pub location: String,
    /// Its password.
    pub password: String,
    /// Keep a local cache of immutable objects (S3).
    pub cache: bool,
}

/// Exit code when the gate refuses to start the app.
pub const EXIT_GATE_FAILED: u8 = 13;

struct Agent {
    cfg: AgentConfig,
    capture: Box<dyn crate::capture::Capture>,
    repo: OnceLock<Arc<Repository>>,
    lease: Mutex<Option<Lease>>,
    state: Arc<State>,
    notifier: Notifier,
    app: Mutex<Option<Arc<App>>>,
}

/// Why a backup runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reason {
    Schedule,
    Start,
    Request,
    Final,
}

impl Reason {
    fn as_str(self) -> &'static str {
        match self {
            Reason::Schedule => "schedule",
            Reason::Start => "start",
            Reason::Request => "request",
            Reason::Final => "final",
        }
    }
}

/// Opens the repository, creating it when there is none yet (a first deployment): the agent and
/// the init-container restore (`restore --if-empty`) both start from here, so an app's first
/// `up` needs no separate `init`. Creation is logged.
pub(crate) fn connect(access: &RepoAccess) -> Result<Repository> {
    let backend = crate::backend::open(&access.location)?;
    let repo = match Repository::open(backend, &access.password) {
        Ok(r) => r,
        Err(Error::NoRepository { .. }) => {
            info!(location = %access.location, "no repository there yet: creating one");
            let backend = crate::backend::open(&access.location)?;
            match Repository::init(backend, &access.password, &InitOptions::default()) {
                Ok(r) => r,
                // Another instance created it meanwhile.
                Err(Error::AlreadyInitialized { .. }) => {
                    Repository::open(crate::backend::open(&access.location)?, &access.password)?
                }
                Err(e) => return Err(e),
            }
        }
        Err(e) => return Err(e),
    };
    if !access.cache {
        return Ok(repo);
    }
    let base = crate::repository::cache::default_base();
    let repo = repo.with_ledger(&base);
    if access.location.starts_with("s3:") {
        return Ok(repo.with_cache(&base));
    }
    Ok(repo)
}

/// Runs the agent until the app exits (wrapper) or a stop signal arrives (daemon). Returns the
/// process exit code: the app's, or 128 + signal.
pub fn run(cfg: AgentConfig, access: RepoAccess, mode: Mode) -> Result<u8> {
    // Files mode on a live database, or no room to stage packs: refuse before anything starts.
    cfg.preflight(&access.location, matches!(mode, Mode::Wrap(_)))?;
    let state = Arc::new(State::default());
    let stop = Arc::new(AtomicBool::new(false));
    // Signals first, so a SIGTERM during a long gate is honoured.
    let mut signals = signal_hook::iterator::Signals::new([
        SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGCHLD,
    ])
    .map_err(|e| Error::io("installing signal handlers", e))?;
    let (sig_tx, sig_rx) = crossbeam_channel::unbounded::<i32>();
    {
        let stop = stop.clone();
        std::thread::spawn(move || {
            for s in signals.forever() {
                if matches!(s, SIGTERM | SIGINT | SIGQUIT) {
                    stop.store(true, Relaxed);
                }
                if sig_tx.send(s).is_err() {
                    return;
                }
            }
        });
    }
    let (trigger_tx, trigger_rx) =
        crossbeam_channel::unbounded::<Option<Sender<std::result::Result<Id, String>>>>();
    if let Some(addr) = cfg.listen {
        let tx = trigger_tx.clone();
        let trigger: http::Trigger = Arc::new(move |wait| {
            if !wait {
                tx.send(None).map_err(|_| "agent is stopping".to_string())?;
                return Ok(None);
            }
            let (rtx, rrx) = crossbeam_channel::bounded(1);
            tx.send(Some(rtx))
                .map_err(|_| "agent is stopping".to_string())?;
            rrx.recv()
                .map_err(|_| "agent is stopping".to_string())?
                .map(|id| Some(id.to_hex()))
        });
        http::serve(
            addr,
            state.clone(),
            cfg.name.clone(),
            cfg.control_token.clone(),
            trigger,
        )?;
    }
    let stopped = || stop.load(Relaxed);
    let capture = crate::capture::choose(&cfg.capture);
    if capture.method() == crate::capture::Method::Postgres {
        // Not ready until PostgreSQL is out of recovery (main_loop watches it), not even for the
        // moment between the gate and the app's start.
        state.recovering.store(true, Relaxed);
    }

    info!(name = %cfg.name, path = %cfg.path.display(), schedule = %cfg.schedule, "lifeboat agent starting");
    // A volume that has data needs nothing from the repository to start: if the repository does
    // not answer at once, the app starts anyway and backups begin once it does. Only an empty
    // volume waits for (and, if it never answers, refuses to start without) the repository.
    let has_data = matches!(
        gate::volume_state(&cfg.path),
        Ok(gate::VolumeState::HasData)
    );
    let window = if has_data {
        Duration::ZERO
    } else {
        cfg.restore_timeout
    };
    let holder = format!(
        "{}:{}:{}",
        crate::sysinfo::hostname(),
        std::process::id(),
        hex::encode(crate::crypto::random_bytes::<4>())
    );
    let repo = match gate::retry("connecting to the repository", window, &stopped, || {
        connect(&access)
    }) {
        Ok(r) => Some(Arc::new(r)),
        Err(e) if has_data => {
            warn!(
                "the repository does not answer ({e}); the volume has data, so the app starts now and backups begin once the repository is reachable"
            );
            None
        }
        Err(e) => return gate_failed(&cfg, &state, e, mode),
    };
    let (outcome, lease) = match &repo {
        None => (GateOutcome::HasData, None),
        Some(repo) => {
            let lease = Lease::acquire(
                repo.clone(),
                &cfg.name,
                &holder,
                cfg.lease_ttl,
                cfg.lease_wait,
                &stopped,
            )?;
            let started = Instant::now();
            let outcome = match gate::retry("restore gate", cfg.restore_timeout, &stopped, || {
                gate::attempt(repo, &cfg, capture.as_ref())
            }) {
                Ok(o) => o,
                Err(e) => {
                    let r = gate_failed(&cfg, &state, e, mode);
                    lease.release();
                    return r;
                }
            };
            *state.requests.lock().unwrap_or_else(|e| e.into_inner()) = repo.stats();
            record_gate(&state, &outcome, started.elapsed().as_secs_f64());
            (outcome, Some(lease))
        }
    };
    if repo.is_none() {
        record_gate(&state, &outcome, 0.0);
    }
    if stopped() {
        if let Some(l) = lease {
            l.release();
        }
        return Ok(128 + SIGTERM as u8);
    }
    let agent = Arc::new(Agent {
        notifier: Notifier::new(cfg.ping_url.clone(), cfg.webhook_url.clone()),
        cfg,
        capture,
        repo: OnceLock::new(),
        lease: Mutex::new(lease),
        state,
        app: Mutex::new(None),
    });
    // Volume lease (issue 14): report its loss.
    if let Some(l) = agent
        .lease
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
    {
        watch_lease(&agent, l.status());
    }
    start_streaming(&agent, &trigger_tx);
    match repo {
        Some(r) => {
            let _ = agent.repo.set(r);
        }
        None => {
            let agent = agent.clone();
            std::thread::spawn(move || connect_later(&agent, &access, &holder));
        }
    }
    let code = main_loop(&agent, mode, outcome, sig_rx, trigger_rx);
    // After the final backup: the method's last sync, then nothing more is written.
    agent.capture.stop();
    let lease = agent.lease.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(l) = lease {
        // Bounded by the shutdown deadline (a stalled store must not hold the exit).
        shutdown::within_deadline("releasing the volume lease", move || l.release());
    }
    code
}

/// Starts the capture method's stream of changes between backups (SQLite replication), before
/// the app starts, with the agent's repository, lease and backup trigger.
fn start_streaming(
    agent: &Arc<Agent>,
    trigger: &Sender<Option<Sender<std::result::Result<Id, String>>>>,
) {
    let weak = Arc::downgrade(agent);
    let _ = agent.state.method_metrics.set(Box::new(move || {
        let Some(a) = weak.upgrade() else {
            return String::new();
        };
        if let Ok(repo) = a.repo() {
            *a.state.requests.lock().unwrap_or_else(|e| e.into_inner()) = repo.stats();
        }
        a.capture.metrics()
    }));
    let (w1, w2) = (Arc::downgrade(agent), Arc::downgrade(agent));
    let trigger = trigger.clone();
    agent.capture.start(crate::capture::StreamContext {
        volume: agent.cfg.name.clone(),
        repo: Arc::new(move || {
            let a = w1
                .upgrade()
                .ok_or_else(|| Error::invalid("the agent is stopping"))?;
            a.repo().cloned()
        }),
        allowed: Arc::new(move || {
            let a = w2
                .upgrade()
                .ok_or_else(|| Error::invalid("the agent is stopping"))?;
            match a
                .lease
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .and_then(|l| l.lost())
            {
                Some(why) => Err(Error::invalid(format!(
                    "volume lease lost ({why}): this instance replicates no more changes"
                ))),
                None => Ok(()),
            }
        }),
        request_backup: Arc::new(move |why: &str| {
            info!("backup requested: {why}");
            let _ = trigger.send(None);
        }),
    });
}

// ---- volume lease loss (issue 14) ----
/// Once the lease is lost: the `lease_lost` metric, a log line, the ping's failure endpoint and
/// the webhook at once and every minute after; with `LIFEBOAT_ON_LEASE_LOSS=stop-app` the app is
/// also stopped. Backups refuse to commit by themselves (the fence in `work::snapshot`).
fn watch_lease(agent: &Arc<Agent>, status: lease::LeaseStatus) {
    let agent = agent.clone();
    std::thread::spawn(move || {
        let policy = fence::OnLeaseLoss::from_env();
        let done = || status.released();
        fence::watch(
            &status,
            Duration::from_secs(60),
            &done,
            &mut |why, first| {
                agent.state.lease_lost.store(true, Relaxed);
                error!(
                    volume = %agent.cfg.name,
                    "volume lease lost: {why}. This instance takes no more backups; another instance owns the volume now ({})",
                    if policy == fence::OnLeaseLoss::StopApp { "LIFEBOAT_ON_LEASE_LOSS=stop-app: stopping the app" } else { "the app keeps running: LIFEBOAT_ON_LEASE_LOSS=keep-app" }
                );
                agent.notifier.failure(
                    &format!("volume lease lost: {why}"),
                    json!({"event": "lease.lost", "volume": agent.cfg.name, "error": why}),
                );
                if first && policy == fence::OnLeaseLoss::StopApp {
                    let app = agent.app.lock().unwrap_or_else(|e| e.into_inner()).clone();
                    if let Some(a) = app {
                        a.signal(SIGTERM);
                    }
                }
            },
        );
    });
}
// ---- end volume lease loss ----

/// Keeps trying to reach the repository after the app started on a volume with data.
fn connect_later(agent: &Arc<Agent>, access: &RepoAccess, holder: &str) {
    let mut delay = Duration::from_secs(5);
    loop {
        std::thread::sleep(delay);
        match connect(access) {
            Ok(repo) => {
                let repo = Arc::new(repo);
                let never = || false;
                match Lease::acquire(
                    repo.clone(),
                    &agent.cfg.name,
                    holder,
                    agent.cfg.lease_ttl,
                    agent.cfg.lease_wait,
                    &never,
                ) {
                    Ok(l) => {
                        watch_lease(agent, l.status());
                        *agent.lease.lock().unwrap_or_else(|e| e.into_inner()) = Some(l);
                        let _ = agent.repo.set(repo);
                        info!("the repository answers now: backups are on");
                        return;
                    }
                    Err(e) => warn!("{e}"),
                }
            }
            Err(e) => warn!(
                retry_in = format!("{}s", delay.as_secs()),
                "repository still unreachable: {e}"
            ),
        }
        delay = (delay * 2).min(Duration::from_secs(300));
    }
}

impl Agent {
    fn repo(&self) -> Result<&Arc<Repository>> {
        self.repo.get().ok_or_else(|| {
            Error::invalid(
                "the repository has not been reachable since start; backups begin once it is",
            )
        })
    }
}

fn record_gate(state: &State, outcome: &GateOutcome, seconds: f64) {
    let what = match outcome {
        GateOutcome::HasData => "has-data".to_string(),
        GateOutcome::Restored { snapshot, .. } => format!("restored {}", snapshot.short()),
        GateOutcome::Fresh => "fresh".to_string(),
        GateOutcome::DumpStaged { snapshot, .. } => format!("dump {} pending", snapshot.short()),
        GateOutcome::StartedEmptyAfterFailure(e) => format!("failed, started empty: {e}"),
    };
    let restore_seconds = if matches!(
        outcome,
        GateOutcome::Restored { .. } | GateOutcome::DumpStaged { .. }
    ) {
        seconds
    } else {
        0.0
    };
    *state.gate.lock().unwrap_or_else(|e| e.into_inner()) = Some((what, restore_seconds));
    if !matches!(outcome, GateOutcome::DumpStaged { .. }) && !state.recovering.load(Relaxed) {
        state.ready.store(true, Relaxed);
    }
}

fn gate_failed(cfg: &AgentConfig, state: &Arc<State>, e: Error, mode: Mode) -> Result<u8> {
    if !cfg.start_empty_on_failure {
        error!(
            "restore gate failed, the app is not started on an empty volume: {e}. Fix the repository access or set LIFEBOAT_ON_RESTORE_FAILURE=start-empty"
        );
        return Ok(EXIT_GATE_FAILED);
    }
    warn!(
        "restore gate failed; LIFEBOAT_ON_RESTORE_FAILURE=start-empty: starting the app without backups: {e}"
    );
    record_gate(
        state,
        &GateOutcome::StartedEmptyAfterFailure(e.to_string()),
        0.0,
    );
    match mode {
        Mode::Daemon => Ok(EXIT_GATE_FAILED),
        Mode::Wrap(argv) => {
            let app = App::start(&argv)?;
            let status = app
                .exited
                .recv()
                .map_err(|_| Error::invalid("lost the app"))?;
            Ok(app::exit_code(&status))
        }
    }
}

fn main_loop(
    agent: &Arc<Agent>,
    mode: Mode,
    outcome: GateOutcome,
    signals: Receiver<i32>,
    triggers: Receiver<Option<Sender<std::result::Result<Id, String>>>>,
) -> Result<u8> {
    let cfg = &agent.cfg;
    let postgres = agent.capture.method() == crate::capture::Method::Postgres;
    // PostgreSQL's archive_command and restore_command reach the agent here; it must listen
    // before the server starts (a restored server asks for WAL at once).
    let _wal_server = if postgres {
        Some(crate::wal::socket::WalServer::start(
            &cfg.capture.postgres.socket,
            Arc::new(wal::AgentWal(agent.clone())),
        )?)
    } else {
        None
    };
    let app = match &mode {
        Mode::Wrap(argv) => {
            let mut argv = argv.clone();
            argv.extend(agent.capture.app_args(&argv));
            Some(Arc::new(App::start(&argv)?))
        }
        Mode::Daemon => None,
    };
    if postgres {
        // Ready (and backing up) only once PostgreSQL is out of recovery: a base backup of a
        // server still replaying WAL would be a standby's.
        agent.state.ready.store(false, Relaxed);
        agent.state.recovering.store(true, Relaxed);
        let agent = agent.clone();
        let restored = matches!(outcome, GateOutcome::Restored { .. });
        std::thread::spawn(move || wait_for_recovery(&agent, restored));
    }
    *agent.app.lock().unwrap_or_else(|e| e.into_inner()) = app.clone();
    if let GateOutcome::DumpStaged { snapshot, file } = outcome {
        let agent = agent.clone();
        std::thread::spawn(move || load_dump(&agent, &snapshot, &file));
    }
    if app.is_some() && cfg.live_database(cfg.pause).is_none_or(|db| !db.certain) {
        // The wrapped app may be the database: the check at start saw it stopped (or could not
        // tell, and let the app start).
        let agent = agent.clone();
        std::thread::spawn(move || watch_live_database(&agent));
    }
    if cfg.backup_on_start && !postgres {
        spawn_backup(agent, Reason::Start, None);
    }
    let jitter = chrono::Duration::from_std(cfg.jitter).unwrap_or_default();
    let schedule_next = |after| cfg.schedule.next_after(after).map(|t| t + jitter);
    let mut next = schedule_next(Utc::now() - jitter);
    let prune_next = |after| cfg.prune_schedule.next_after(after).map(|t| t + jitter);
    let mut next_prune = prune_next(Utc::now() - jitter);
    let exited = app.as_ref().map_or_else(never, |a| a.exited.clone());
    let mut final_needed = true;
    // The final backup's deadline counts from the first stop signal: the platform's grace
    // period does (the app's own shutdown comes out of the same window).
    let mut stop_at: Option<Instant> = None;
    let mut final_failed = false;
    let code: u8 = loop {
        *agent
            .state
            .next_run
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = next;
        let soonest = match (next, next_prune) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let wait = soonest.map_or(Duration::from_secs(3600), |t| {
            (t - Utc::now()).to_std().unwrap_or(Duration::ZERO)
        });
        select! {
            recv(signals) -> s => {
                let Ok(s) = s else { continue };
                if s == SIGCHLD {
                    if crate::process::is_init() {
                        crate::process::reap_orphans();
                    }
                    continue;
                }
                if matches!(s, SIGTERM | SIGINT | SIGQUIT) {
                    shutdown::begin_stop();
                    stop_at.get_or_insert_with(Instant::now);
                }
                match &app {
                    Some(a) => {
                        if matches!(s, SIGTERM | SIGINT | SIGQUIT) && cfg.dump_command.is_some() && final_needed {
                            // A dump needs the app alive: take the final backup before it stops.
                            info!("stop signal: taking the final dump backup before stopping the app");
                            let deadline = stop_at.unwrap_or_else(Instant::now) + cfg.shutdown_backup_timeout;
                            final_failed = !final_backup(agent, deadline);
                            final_needed = false;
                        }
                        // PostgreSQL's SIGTERM is a smart shutdown, which waits for every client to
                        // leave (the official image's STOPSIGNAL is SIGINT for this reason): the
                        // fast shutdown fits the platform's grace period.
                        let s = if postgres && s == SIGTERM { SIGINT } else { s };
                        info!(signal = s, "forwarding signal to the app");
                        a.signal(s);
                    }
                    None if matches!(s, SIGTERM | SIGINT | SIGQUIT) => {
                        info!(signal = s, "stop signal: final backup, then exit");
                        break 128 + s as u8;
                    }
                    None => {}
                }
            }
            recv(exited) -> status => {
                let status = status.map_err(|_| Error::invalid("lost the app"))?;
                let code = app::exit_code(&status);
                info!(code, "app exited");
                if cfg.dump_command.is_some() && final_needed {
                    warn!("the app stopped on its own: a dump needs it running, so there is no final backup");
                    final_needed = false;
                }
                break code;
            }
            recv(triggers) -> t => {
                if let Ok(reply) = t {
                    spawn_backup(agent, Reason::Request, reply);
                }
            }
            default(wait) => {
                if next.is_some_and(|t| t <= Utc::now()) {
                    spawn_backup(agent, Reason::Schedule, None);
                    next = schedule_next(Utc::now());
                }
                if next_prune.is_some_and(|t| t <= Utc::now()) {
                    spawn_prune(agent);
                    next_prune = prune_next(Utc::now());
                }
            }
        }
    };
    if crate::process::is_init() {
        crate::process::reap_orphans();
    }
    if final_needed {
        let deadline = stop_at.unwrap_or_else(Instant::now) + cfg.shutdown_backup_timeout;
        final_failed = !final_backup(agent, deadline);
    }
    // A lost final backup must not look like a clean stop: exit 14, unless the app's own exit
    // code already says it failed (a code of its own, not the stop signal's 128 + n).
    let apps_own_failure = app.is_some()
        && code != 0
        && ![SIGTERM, SIGINT, SIGQUIT].contains(&(i32::from(code) - 128));
    if final_failed && !apps_own_failure {
        error!(
            app_exit_code = code,
            "exiting with code {}: the final backup failed",
            shutdown::EXIT_FINAL_BACKUP_FAILED
        );
        return Ok(shutdown::EXIT_FINAL_BACKUP_FAILED);
    }
    Ok(code)
}

/// The final backup, finished or failed loudly by `deadline` (the stop signal plus
/// `LIFEBOAT_SHUTDOWN_BACKUP_TIMEOUT`): the backup gets the window less a reserve for the alert;
/// past that the agent stops waiting for it, counts and reports the failure, and returns false.
/// It waits for a backup already running first, within the same window.
fn final_backup(agent: &Arc<Agent>, deadline: Instant) -> bool {
    if agent.cfg.dump_command.is_none() && !agent.cfg.path.exists() {
        warn!(path = %agent.cfg.path.display(), "no final backup: the volume does not exist");
        return true;
    }
    let timeout = agent.cfg.shutdown_backup_timeout;
    let exit_by = shutdown::exit_by(deadline, timeout);
    shutdown::set_deadline(exit_by);
    let budget = deadline
        .saturating_duration_since(Instant::now())
        .saturating_sub(shutdown::alert_reserve(timeout));
    let (tx, rx) = crossbeam_channel::bounded(1);
    {
        let agent = agent.clone();
        std::thread::spawn(move || {
            let _ = tx.send(run_backup(&agent, Reason::Final));
        });
    }
    let ok = match rx.recv_timeout(budget) {
        Ok(Ok(id)) => {
            info!(snapshot = %id.short(), "final backup done");
            true
        }
        // run_backup counted it, logged it and sent the failure ping and webhook.
        Ok(Err(Error::Command { command, .. })) if command == "LIFEBOAT_PRE_BACKUP" => {
            warn!(
                "final backup skipped: the pre-backup hook failed (LIFEBOAT_HOOK_ON_ERROR=abort)"
            );
            true
        }
        Ok(Err(e)) => {
            error!("final backup failed: {e}");
            false
        }
        Err(_) => {
            let msg = format!(
                "final backup did not finish within {:.1} s of the {} s shutdown window (LIFEBOAT_SHUTDOWN_BACKUP_TIMEOUT): the store is unreachable or stalled; the next run adopts what it uploaded",
                budget.as_secs_f64(),
                timeout.as_secs()
            );
            let state = &agent.state;
            state.failures.fetch_add(1, Relaxed);
            state
                .last
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .last_error = Some(msg.clone());
            error!(reason = "final", "backup failed: {msg}");
            agent.notifier.failure(
                &msg,
                json!({"event": "backup.failure", "volume": agent.cfg.name, "reason": "final", "error": msg}),
            );
            false
        }
    };
    // Deliver the success or failure ping and webhook before the process exits.
    notify::flush(exit_by);
    ok
}

fn spawn_backup(
    agent: &Arc<Agent>,
    reason: Reason,
    reply: Option<Sender<std::result::Result<Id, String>>>,
) {
    let agent = agent.clone();
    std::thread::spawn(move || {
        let r = run_backup(&agent, reason).map_err(|e| e.to_string());
        if let Some(tx) = reply {
            let _ = tx.send(r);
        }
    });
}

/// A scheduled prune on its own thread. It needs no lock against backups (they may run at the
/// same time); only two prunes from this agent never overlap.
fn spawn_prune(agent: &Arc<Agent>) {
    if agent
        .state
        .pruning
        .swap(true, std::sync::atomic::Ordering::SeqCst)
    {
        warn!("prune skipped: the previous one is still running");
        return;
    }
    let agent = agent.clone();
    std::thread::spawn(move || {
        let r = agent
            .repo()
            .and_then(|repo| crate::prune::prune(repo, &agent.cfg.prune));
        let st = &agent.state;
        match r {
            Ok(r) => {
                st.prunes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                st.prune_bytes_deleted
                    .fetch_add(r.bytes_deleted, std::sync::atomic::Ordering::Relaxed);
                info!(
                    packs_deleted = r.packs_deleted,
                    bytes_deleted = r.bytes_deleted,
                    packs_marked = r.packs_marked,
                    packs_repacked = r.packs_repacked,
                    marks_waiting = r.marks_waiting.len(),
                    "prune done"
                );
            }
            Err(e) => {
                st.prune_failures
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                warn!("prune failed (backups are unaffected): {e}");
            }
        }
        st.pruning.store(false, std::sync::atomic::Ordering::SeqCst);
    });
}

/// Holds readiness back until the restored (or restarted) database finished replaying its log;
/// after a restore (or with LIFEBOAT_BACKUP_ON_START) then takes a base backup at once: the new
/// timeline's first, so the next recovery replays from here rather than from the old base.
fn wait_for_recovery(agent: &Arc<Agent>, restored: bool) {
    let started = Instant::now();
    let mut said = false;
    let mut last_said = started;
    loop {
        if shutdown::stopping() {
            return;
        }
        match agent.capture.recovered() {
            Ok(true) => break,
            Ok(false) => {}
            // Refused connections are normal while the server starts or replays; one that lasts
            // (a wrong PGHOST or password) must not look like a long recovery.
            Err(e)
                if started.elapsed() > Duration::from_secs(20)
                    && last_said.elapsed() > Duration::from_secs(30) =>
            {
                warn!(
                    "still not ready after {} s: {e}",
                    started.elapsed().as_secs()
                );
                agent
                    .state
                    .last
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .last_error = Some(e.to_string());
                last_said = Instant::now();
            }
            Err(_) => {}
        }
        if !said && started.elapsed() > Duration::from_secs(5) {
            info!("waiting for PostgreSQL to finish recovery before reporting ready");
            said = true;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    agent.state.recovering.store(false, Relaxed);
    agent.state.ready.store(true, Relaxed);
    info!(
        seconds = (started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
        "PostgreSQL is up and out of recovery: ready"
    );
    if restored || agent.cfg.backup_on_start {
        spawn_backup(agent, Reason::Start, None);
    }
}

/// Files mode around an app that turns out to run a database on the volume: say so (error line,
/// failure ping and webhook) soon after it starts, not only at the first scheduled backup, which
/// refuses it anyway. Looks a few times during the app's first two minutes.
fn watch_live_database(agent: &Agent) {
    let cfg = &agent.cfg;
    for wait in [3, 10, 30, 80] {
        if !shutdown::sleep_unless_stopping(Duration::from_secs(wait)) {
            return;
        }
        if let Some(msg) = cfg.live_database_refusal(cfg.pause) {
            error!("{msg}");
            agent
                .state
                .last
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .last_error = Some(msg.clone());
            agent.notifier.failure(
                &msg,
                json!({"event": "backup.refused", "volume": cfg.name, "error": msg}),
            );
            return;
        }
    }
}

/// Dump mode on a new lease: load the restored dump once the app accepts it.
fn load_dump(agent: &Agent, snapshot: &Id, file: &std::path::Path) {
    let cfg = &agent.cfg;
    let Some(cmd) = &cfg.restore_command else {
        warn!(file = %file.display(), "dump restored but LIFEBOAT_RESTORE_COMMAND is not set: load it by hand");
        let _ = gate::finish_marker(&cfg.path, snapshot);
        agent.state.ready.store(true, Relaxed);
        return;
    };
    let cmd = cmd.replace("{file}", &file.display().to_string());
    let never_stop = || false;
    let r = gate::retry_any(
        "restore command",
        cfg.restore_command_timeout,
        &never_stop,
        || {
            hooks::run(
                &cmd,
                &[("LIFEBOAT_DUMP_FILE", file.display().to_string())],
                cfg.hook_timeout,
            )
        },
    );
    match r {
        Ok(()) => {
            if let Err(e) = gate::finish_marker(&cfg.path, snapshot) {
                warn!("{e}");
            }
            let _ = std::fs::remove_dir_all(&cfg.dump_dir);
            info!(snapshot = %snapshot.short(), "dump loaded into the app");
            agent.state.ready.store(true, Relaxed);
        }
        Err(e) => error!(
            "the restore command kept failing for {} s: {e}. The volume is not marked restored, so the next start redoes the restore; backups stay off until then",
            cfg.restore_command_timeout.as_secs()
        ),
    }
}
