//! The `sqlite` method: the volume's files, with each SQLite database copied consistently
//! through SQLite itself (the app is never paused) and its changes replicated into the
//! repository every `LIFEBOAT_SQLITE_SYNC_INTERVAL` (default 1 s) between backups
//! ([`replicator`], [`crate::sqlitelog`]).
//!
//! Databases: the paths in `LIFEBOAT_SQLITE` (comma-separated, inside the volume), or when it
//! is empty every file in the volume that starts with SQLite's header and is not a `-wal`,
//! `-shm` or `-journal` file, found when the agent starts and again at each backup (a database
//! the app creates later joins at the next backup).
//!
//! A backup stores the volume's other files as the `files` method does, and for each database
//! a copy taken inside a read transaction with the online backup API, labelled with where it
//! stands in the replication ([`crate::sqlitelog::Base`]). A restore onto an empty volume
//! applies the replicated changes after that copy (to `LIFEBOAT_RESTORE_TO_TIME` when set) and
//! checks the result with `PRAGMA quick_check` before the app may start; the next generation of
//! replication then names the restored state as its parent.

pub mod replicator;
pub mod walfile;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tracing::{info, warn};

use super::{Begin, Capture, Method, Prepared, StreamContext};
use crate::backup::{LateFile, LateFiles, LateOutput, Source};
use crate::error::{Error, Result};
use crate::repository::Repository;
use crate::repository::snapshot::Snapshot;
use crate::sqlitelog::{self, LABEL_PREFIX, Parent};
use replicator::Replica;

/// Settings of the sqlite method.
#[derive(Debug, Clone)]
pub struct SqliteSettings {
    /// The volume.
    pub volume: PathBuf,
    /// The volume's name in the repository.
    pub name: String,
    /// The databases (absolute, inside the volume); empty: detect them.
    pub databases: Vec<PathBuf>,
    /// The longest a committed transaction waits to be shipped.
    pub sync_interval: Duration,
    /// Log length (frames) at which lifeboat checkpoints.
    pub checkpoint_pages: u32,
    /// Where database copies are written before the backup reads them.
    pub staging: PathBuf,
    /// A point-in-time restore's target (`LIFEBOAT_RESTORE_TO_TIME`, RFC 3339).
    pub restore_to_time: Option<String>,
    /// Directories never searched for databases (lifeboat's own).
    pub skip: Vec<PathBuf>,
}

/// The sqlite method.
pub struct Sqlite {
    s: SqliteSettings,
    replicas: Arc<Mutex<Vec<Arc<Replica>>>>,
    /// Where the gate's restore left each database (relative path to state).
    restored: Mutex<BTreeMap<String, Parent>>,
    ctx: OnceLock<StreamContext>,
    stop: Arc<AtomicBool>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

const SUFFIXES: [&str; 3] = ["-wal", "-shm", "-journal"];
/// How often idle read transactions move forward between syncs.
const REFRESH: Duration = Duration::from_millis(100);

/// A glob that matches exactly `path` (globset has no escape function).
fn literal_glob(path: &Path) -> String {
    let mut out = String::new();
    for c in path.to_string_lossy().chars() {
        match c {
            '*' | '?' | '[' | ']' | '{' | '}' | '\\' => {
                out.push('[');
                out.push(c);
                out.push(']');
            }
            c => out.push(c),
        }
    }
    out
}

/// Whether `path` starts with SQLite's header. Only for files this process has no SQLite
/// connection to (closing any descriptor drops the process's locks: see [`replicator`]).
fn is_sqlite(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 16];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok()
        && &head == b"SQLite format 3\0"
}

impl Sqlite {
    /// The method with its settings.
    pub fn new(s: SqliteSettings) -> Sqlite {
        Sqlite {
            s,
            replicas: Arc::new(Mutex::new(Vec::new())),
            restored: Mutex::new(BTreeMap::new()),
            ctx: OnceLock::new(),
            stop: Arc::new(AtomicBool::new(false)),
            thread: Mutex::new(None),
        }
    }

    fn rel(&self, path: &Path) -> String {
        path.strip_prefix(&self.s.volume)
            .unwrap_or(path)
            .to_string_lossy()
            .into_owned()
    }

    /// Databases to replicate: the configured ones, or those found in the volume; new ones get
    /// a replica. Files that already have one are never opened here.
    fn discover(&self) -> Vec<Arc<Replica>> {
        let mut reps = self.replicas.lock().unwrap_or_else(|e| e.into_inner());
        let known: Vec<PathBuf> = reps.iter().map(|r| r.path.clone()).collect();
        let wanted: Vec<PathBuf> = if self.s.databases.is_empty() {
            let mut found = Vec::new();
            let mut stack = vec![self.s.volume.clone()];
            while let Some(dir) = stack.pop() {
                if self.s.skip.iter().any(|s| dir.starts_with(s)) {
                    continue;
                }
                for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                    let p = e.path();
                    let Ok(t) = e.file_type() else { continue };
                    let name = e.file_name().to_string_lossy().into_owned();
                    if t.is_dir() {
                        stack.push(p);
                    } else if t.is_file()
                        && !SUFFIXES.iter().any(|s| name.ends_with(s))
                        && (known.contains(&p) || is_sqlite(&p))
                    {
                        found.push(p);
                    }
                }
            }
            found.sort();
            found
        } else {
            self.s.databases.clone()
        };
        let mut restored = self.restored.lock().unwrap_or_else(|e| e.into_inner());
        for p in wanted {
            if !known.contains(&p) {
                let rel = self.rel(&p);
                info!(db = %rel, "SQLite database replicated");
                let parent = restored.remove(&rel);
                reps.push(Arc::new(Replica::new(
                    rel,
                    p,
                    self.s.checkpoint_pages,
                    parent,
                )));
            }
        }
        reps.clone()
    }

    fn target_time(&self) -> Result<Option<chrono::DateTime<chrono::Utc>>> {
        self.s
            .restore_to_time
            .as_deref()
            .map(|t| {
                chrono::DateTime::parse_from_rfc3339(t)
                    .map(|t| t.with_timezone(&chrono::Utc))
                    .map_err(|e| Error::invalid(format!("LIFEBOAT_RESTORE_TO_TIME={t:?}: {e}")))
            })
            .transpose()
    }
}

/// Brings one restored database to its replicated state and checks it.
fn finish_restore(
    repo: &Repository,
    volume: &str,
    db: &str,
    file: &Path,
    base: &sqlitelog::Base,
    until: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<sqlitelog::Replayed> {
    for s in SUFFIXES {
        let mut p = file.as_os_str().to_owned();
        p.push(s);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
    let r = sqlitelog::replay(repo, volume, db, file, base, until)?;
    quick_check(file, db)?;
    Ok(r)
}

/// `PRAGMA quick_check` on a restored database: anything but "ok" is an error naming it.
pub fn quick_check(file: &Path, db: &str) -> Result<()> {
    let c =
        rusqlite::Connection::open_with_flags(file, rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE)
            .map_err(|e| {
                Error::invalid(format!("restored SQLite database {db}: cannot open: {e}"))
            })?;
    let rows: Vec<String> = c
        .prepare("PRAGMA quick_check")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .map_err(|e| Error::invalid(format!("restored SQLite database {db}: quick_check: {e}")))?;
    if rows != ["ok"] {
        return Err(Error::corrupt(
            db.to_string(),
            format!(
                "the restored SQLite database fails PRAGMA quick_check: {}",
                rows.join("; ")
            ),
        ));
    }
    Ok(())
}

/// Restores every replicated database of `snap` in `target` (a `restore` target or the gate's
/// staging directory) to its newest replicated state, or to `until`. Returns, per database,
/// what was applied.
pub fn replay_all(
    repo: &Repository,
    snap: &Snapshot,
    target: &Path,
    until: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<Vec<(String, sqlitelog::Replayed)>> {
    let mut out = Vec::new();
    for (db, base) in sqlitelog::bases(snap) {
        let file = target.join(&db);
        if !file.exists() {
            continue;
        }
        let r = finish_restore(repo, &snap.name, &db, &file, &base, until)?;
        out.push((db, r));
    }
    Ok(out)
}

impl Capture for Sqlite {
    fn method(&self) -> Method {
        Method::Sqlite
    }

    fn begin(&self, b: Begin<'_>) -> Result<Prepared> {
        let ctx = self.ctx.get().ok_or_else(|| {
            Error::invalid(
                "the sqlite method replicates from the agent (`lifeboat run` or `daemon`)",
            )
        })?;
        b.opts.method = Some("sqlite".into());
        let reps = self.discover();
        let mut copies = Vec::new();
        for r in &reps {
            for suffix in std::iter::once("").chain(SUFFIXES) {
                let mut p = r.path.as_os_str().to_owned();
                p.push(suffix);
                b.opts.excludes.push(literal_glob(Path::new(&p)));
            }
            if let Some((tmp, base)) = r.copy(&self.s.staging, ctx)? {
                copies.push((r.path.clone(), r.rel.clone(), tmp, base));
            }
        }
        let copies = Arc::new(Mutex::new(copies));
        b.opts.late_files = Some(LateFiles(Arc::new(move || {
            let mut out = LateOutput::default();
            for (path, rel, tmp, base) in copies.lock().unwrap_or_else(|e| e.into_inner()).iter() {
                let content = std::fs::File::open(tmp.path())
                    .map_err(|e| Error::io(format!("reading the copy of {rel}"), e))?;
                out.files.push(LateFile {
                    path: path.clone(),
                    content: Box::new(content),
                    mode: 0o644,
                });
                out.labels.insert(
                    format!("{LABEL_PREFIX}{rel}"),
                    serde_json::to_string(base).expect("serializable"),
                );
            }
            Ok(out)
        })));
        Ok(Prepared {
            source: Source::Paths(vec![b.path.to_path_buf()]),
            guard: None,
            after: None,
        })
    }

    fn after_restore(&self, repo: &Repository, staged: &Path, snapshot: &Snapshot) -> Result<()> {
        let until = self.target_time()?;
        for (db, r) in replay_all(repo, snapshot, staged, until)? {
            info!(
                db = %db,
                segments = r.segments,
                at = ?r.time,
                later_left_out = r.after_target,
                "SQLite database restored to its newest replicated state"
            );
            if let Some(at) = r.at {
                self.restored
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(db, at);
            }
        }
        Ok(())
    }

    fn restore_point(
        &self,
        repo: &Repository,
        name: &str,
        target: &str,
    ) -> Result<(crate::id::Id, Snapshot)> {
        let t = chrono::DateTime::parse_from_rfc3339(target)
            .map_err(|e| Error::invalid(format!("restore target {target:?}: {e}")))?;
        sqlitelog::snapshot_before(repo, name, t.with_timezone(&chrono::Utc))
    }

    fn start(&self, ctx: StreamContext) {
        if self.ctx.set(ctx.clone()).is_err() {
            return;
        }
        self.discover();
        let stop = self.stop.clone();
        let interval = self.s.sync_interval;
        let reps = self.replicas.clone();
        let handle = std::thread::Builder::new()
            .name("sqlite-replication".into())
            .spawn(move || {
                let mut failing: BTreeMap<String, String> = BTreeMap::new();
                while !stop.load(Relaxed) {
                    let started = std::time::Instant::now();
                    let list = reps.lock().unwrap_or_else(|e| e.into_inner()).clone();
                    // Between syncs, keep the read transactions fresh (see Replica::refresh).
                    let until = started + interval;
                    loop {
                        let now = std::time::Instant::now();
                        if stop.load(Relaxed) || now >= until {
                            break;
                        }
                        std::thread::sleep((until - now).min(REFRESH));
                        for r in &list {
                            r.refresh();
                        }
                    }
                    if stop.load(Relaxed) {
                        break;
                    }
                    for r in list {
                        match r.tick(&ctx) {
                            Ok(()) => {
                                if failing.remove(&r.rel).is_some() {
                                    info!(db = %r.rel, "SQLite replication works again");
                                }
                            }
                            Err(e) => {
                                let text = e.to_string();
                                if failing.get(&r.rel) != Some(&text) {
                                    warn!("{text}; retrying every sync interval");
                                    failing.insert(r.rel.clone(), text);
                                }
                            }
                        }
                    }
                }
            });
        match handle {
            Ok(h) => *self.thread.lock().unwrap_or_else(|e| e.into_inner()) = Some(h),
            Err(e) => warn!("cannot start SQLite replication: {e}"),
        }
    }

    fn stop(&self) {
        self.stop.store(true, Relaxed);
        if let Some(h) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = h.join();
        }
        let Some(ctx) = self.ctx.get() else { return };
        for r in self
            .replicas
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            if let Err(e) = r.finish(ctx) {
                warn!(db = %r.rel, "the last SQLite sync failed: {e}");
            }
        }
    }

    fn metrics(&self) -> String {
        use std::fmt::Write;
        let reps = self
            .replicas
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut m = String::new();
        let mut section =
            |name: &str, kind: &str, help: &str, v: &dyn Fn(&replicator::Status) -> Option<f64>| {
                let _ = writeln!(m, "# HELP {name} {help}\n# TYPE {name} {kind}");
                for r in &reps {
                    let st = r.status.lock().unwrap_or_else(|e| e.into_inner()).clone();
                    if let Some(x) = v(&st) {
                        let _ = writeln!(
                            m,
                            "{name}{{db=\"{}\"}} {x}",
                            r.rel.replace('\\', "\\\\").replace('"', "\\\"")
                        );
                    }
                }
            };
        section(
            "lifeboat_sqlite_replication_lag_seconds",
            "gauge",
            "Age of the oldest committed change that may not be stored yet (0 to one sync interval when healthy; grows while syncs fail).",
            &|s| {
                (s.mode == "wal")
                    .then(|| s.caught_up.map_or(f64::NAN, |t| t.elapsed().as_secs_f64()))
            },
        );
        section(
            "lifeboat_sqlite_last_replicated_timestamp_seconds",
            "gauge",
            "When the newest replicated change was stored (Unix time).",
            &|s| s.last_stored.map(|t| t.timestamp_millis() as f64 / 1000.0),
        );
        section(
            "lifeboat_sqlite_segments_total",
            "counter",
            "Change sets stored by this process.",
            &|s| Some(s.segments as f64),
        );
        section(
            "lifeboat_sqlite_replicated_bytes_total",
            "counter",
            "Bytes of change sets stored by this process.",
            &|s| Some(s.bytes as f64),
        );
        section(
            "lifeboat_sqlite_sync_failures_total",
            "counter",
            "Syncs that failed (retried every sync interval).",
            &|s| Some(s.failures as f64),
        );
        section(
            "lifeboat_sqlite_checkpoints_total",
            "counter",
            "Checkpoints lifeboat ran.",
            &|s| Some(s.checkpoints as f64),
        );
        section(
            "lifeboat_sqlite_replicated",
            "gauge",
            "1 when the database is replicated continuously (WAL mode), 0 when it is only copied at backups.",
            &|s| Some(if s.mode == "wal" { 1.0 } else { 0.0 }),
        );
        m
    }
}
