//! Capture methods: how a volume's data becomes a snapshot's source. The agent knows only the
//! [`Capture`] interface; each method is chosen by name (`LIFEBOAT_METHOD`):
//!
//! - `files`: the volume's files as they are (refused on a live database: [`livedb`]);
//! - `pause`: the files, with the app frozen (SIGSTOP) for the copy, up to a limit;
//! - `dump`: the standard output of a command (`pg_dumpall`, `mysqldump`) as one file;
//! - `postgres`: a hot base backup through PostgreSQL's backup API, plus a continuous stream of
//!   WAL into the repository ([`postgres`], [`crate::wal`]);
//! - `sqlite`: the files, with each SQLite database copied through SQLite's backup API and its
//!   changes replicated every second between backups ([`sqlite`], [`crate::sqlitelog`]).
//!
//! A capture is begun for each backup ([`Capture::begin`]): it sets the backup's options
//! (method, excludes, labels, late files) and returns the source plus what must happen once the
//! copy is over (resume the app, end the database's backup session). Around restores a method may
//! add to the staged volume ([`Capture::after_restore`]) and say when the app finished its own
//! recovery ([`Capture::recovered`]). A method that streams changes between backups runs from
//! [`Capture::start`] to [`Capture::stop`] and reports its own metrics.

pub mod livedb;
pub mod postgres;
pub mod sqlite;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::backup::{BackupOptions, Source};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::repository::Repository;
use crate::repository::snapshot::Snapshot;

/// The capture methods, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// The files as they are.
    Files,
    /// The files with the app frozen.
    Pause,
    /// A command's output.
    Dump,
    /// PostgreSQL base backups and WAL archiving.
    Postgres,
    /// SQLite copies and continuous replication.
    Sqlite,
}

impl Method {
    /// Parses `LIFEBOAT_METHOD`.
    pub fn parse(text: &str) -> Result<Method> {
        match text.trim() {
            "files" => Ok(Method::Files),
            "pause" => Ok(Method::Pause),
            "dump" => Ok(Method::Dump),
            "postgres" => Ok(Method::Postgres),
            "sqlite" => Ok(Method::Sqlite),
            other => Err(Error::invalid(format!(
                "LIFEBOAT_METHOD={other:?} is not a capture method: use files, pause, dump, postgres or sqlite"
            ))),
        }
    }

    /// The name recorded in snapshots.
    pub fn name(self) -> &'static str {
        match self {
            Method::Files => "files",
            Method::Pause => "pause",
            Method::Dump => "dump",
            Method::Postgres => "postgres",
            Method::Sqlite => "sqlite",
        }
    }
}

/// What a method may do to the running app.
pub trait AppControl: Send + Sync {
    /// Freezes the app until the returned guard is dropped or `max` passes.
    fn pause(&self, max: Duration) -> Box<dyn Paused>;
}

/// A frozen app; resumed when dropped.
pub trait Paused: Send {
    /// Whether the freeze ended on its time limit before the copy finished.
    fn timed_out(&self) -> bool;
}

/// One backup about to run.
pub struct Begin<'a> {
    /// The volume.
    pub path: &'a Path,
    /// The final backup at shutdown.
    pub is_final: bool,
    /// The wrapped app, when lifeboat runs it (`run`); `None` for a sidecar.
    pub app: Option<&'a dyn AppControl>,
    /// Whether the wrapped app has exited (only meaningful with `app`).
    pub app_exited: bool,
    /// The backup's options, for the method to complete.
    pub opts: &'a mut BackupOptions,
    /// Reads a file from this volume's WAL archive (PostgreSQL: a segment the base backup needs
    /// that the server already recycled).
    pub wal: Option<WalReader>,
}

/// Reads one file from the volume's WAL archive.
pub type WalReader = std::sync::Arc<dyn Fn(&str) -> Result<crate::wal::Fetched> + Send + Sync>;

/// A begun capture.
pub struct Prepared {
    /// What to back up.
    pub source: Source,
    /// Held for the copy and dropped after it (a paused app resumes, a database session ends).
    pub guard: Option<Box<dyn Send>>,
    /// Asked after the copy: a warning to log (the pause ran out).
    pub after: Option<Box<dyn FnOnce() -> Option<String> + Send>>,
}

impl Prepared {
    fn plain(source: Source) -> Prepared {
        Prepared {
            source,
            guard: None,
            after: None,
        }
    }
}

/// A capture method.
pub trait Capture: Send + Sync {
    /// Which method this is.
    fn method(&self) -> Method;
    /// Arguments appended to the wrapped app's command line (PostgreSQL's archive settings).
    fn app_args(&self, _argv: &[String]) -> Vec<String> {
        Vec::new()
    }
    /// Begins one capture. Errors refuse this backup with a one-line reason.
    fn begin(&self, b: Begin<'_>) -> Result<Prepared>;
    /// After the gate restored `snapshot` into `staged` (what becomes the volume), before it is
    /// moved into place: a method adds what its restore needs (PostgreSQL's recovery settings,
    /// SQLite's replicated changes). An error fails the restore; nothing is moved.
    fn after_restore(
        &self,
        _repo: &Repository,
        _staged: &Path,
        _snapshot: &Snapshot,
    ) -> Result<()> {
        Ok(())
    }
    /// The snapshot a point-in-time restore to `target` (RFC 3339) starts from.
    fn restore_point(&self, repo: &Repository, name: &str, target: &str) -> Result<(Id, Snapshot)> {
        crate::wal::base_backup_before(repo, name, target)
    }
    /// Begins streaming changes between backups (after the gate, before the app starts).
    fn start(&self, _ctx: StreamContext) {}
    /// Ends streaming: a last sync, then nothing more is written. Called once the app stopped.
    fn stop(&self) {}
    /// The method's own Prometheus metrics (text exposition format).
    fn metrics(&self) -> String {
        String::new()
    }
    /// Whether the restored app finished its own recovery; polled until true before the agent
    /// reports ready and takes backups.
    fn recovered(&self) -> Result<bool> {
        Ok(true)
    }
}

/// What a streaming method needs from the agent.
#[derive(Clone)]
#[allow(clippy::type_complexity)]
pub struct StreamContext {
    /// The volume's name in the repository.
    pub volume: String,
    /// The repository, once connected (an error until then).
    pub repo: Arc<dyn Fn() -> Result<Arc<Repository>> + Send + Sync>,
    /// Whether this instance may still write for the volume (its lease is held); an error
    /// names why not.
    pub allowed: Arc<dyn Fn() -> Result<()> + Send + Sync>,
    /// Asks for a backup as soon as possible, saying why.
    pub request_backup: Arc<dyn Fn(&str) + Send + Sync>,
}

/// Settings of the built-in methods.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The method.
    pub method: Method,
    /// Dump: the command and the file name it is stored under.
    pub dump: Option<(String, String)>,
    /// Pause: the longest freeze.
    pub pause_max: Duration,
    /// Files: accept a live database's files anyway.
    pub allow_live_database: bool,
    /// Directories never searched for live databases (lifeboat's own).
    pub skip: Vec<PathBuf>,
    /// PostgreSQL settings.
    pub postgres: postgres::PgSettings,
    /// SQLite settings.
    pub sqlite: sqlite::SqliteSettings,
}

/// The method named in `settings`.
pub fn choose(settings: &Settings) -> Box<dyn Capture> {
    match settings.method {
        Method::Files => Box::new(Files {
            allow_live: settings.allow_live_database,
            skip: settings.skip.clone(),
        }),
        Method::Pause => Box::new(Pause {
            max: settings.pause_max,
        }),
        Method::Dump => {
            let (command, filename) = settings.dump.clone().unwrap_or_default();
            Box::new(Dump { command, filename })
        }
        Method::Postgres => Box::new(postgres::Postgres::new(settings.postgres.clone())),
        Method::Sqlite => Box::new(sqlite::Sqlite::new(settings.sqlite.clone())),
    }
}

struct Files {
    allow_live: bool,
    skip: Vec<PathBuf>,
}

impl Capture for Files {
    fn method(&self) -> Method {
        Method::Files
    }
    fn begin(&self, b: Begin<'_>) -> Result<Prepared> {
        if !self.allow_live
            && let Some(db) = livedb::find(b.path, &self.skip)
        {
            return Err(Error::invalid(db.refusal()));
        }
        b.opts.method = Some("files".into());
        Ok(Prepared::plain(Source::Paths(vec![b.path.to_path_buf()])))
    }
}

struct Pause {
    max: Duration,
}

impl Capture for Pause {
    fn method(&self) -> Method {
        Method::Pause
    }
    fn begin(&self, b: Begin<'_>) -> Result<Prepared> {
        let source = Source::Paths(vec![b.path.to_path_buf()]);
        // The final backup runs after the app stopped: a plain copy is consistent then.
        let Some(app) = b.app.filter(|_| !b.is_final && !b.app_exited) else {
            b.opts.method = Some("files".into());
            return Ok(Prepared::plain(source));
        };
        b.opts.method = Some("pause".into());
        let paused: std::sync::Arc<std::sync::Mutex<Option<Box<dyn Paused>>>> =
            std::sync::Arc::new(std::sync::Mutex::new(Some(app.pause(self.max))));
        let p = paused.clone();
        b.opts.consistency = Some(crate::backup::ConsistencyCheck(std::sync::Arc::new(
            move || {
                let g = p.lock().unwrap_or_else(|e| e.into_inner());
                g.as_ref()
                    .filter(|g| g.timed_out())
                    .map(|_| "the app was resumed when LIFEBOAT_PAUSE_MAX ran out, before the copy finished".to_string())
            },
        )));
        Ok(Prepared {
            source,
            guard: None,
            after: Some(Box::new(move || {
                let g = paused.lock().unwrap_or_else(|e| e.into_inner()).take();
                let timed_out = g.as_ref().is_some_and(|g| g.timed_out());
                drop(g);
                timed_out.then(|| {
                    "the backup outlasted LIFEBOAT_PAUSE_MAX: this snapshot is not crash-consistent"
                        .to_string()
                })
            })),
        })
    }
}

struct Dump {
    command: String,
    filename: String,
}

impl Capture for Dump {
    fn method(&self) -> Method {
        Method::Dump
    }
    fn begin(&self, b: Begin<'_>) -> Result<Prepared> {
        b.opts.method = Some("dump".into());
        Ok(Prepared::plain(Source::Command {
            command: self.command.clone(),
            filename: self.filename.clone(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_misspelt_method_is_refused_naming_the_choices() {
        assert_eq!(Method::parse("postgres").unwrap(), Method::Postgres);
        assert_eq!(Method::parse(" files ").unwrap(), Method::Files);
        let e = Method::parse("postgress").unwrap_err().to_string();
        assert!(
            e.contains("LIFEBOAT_METHOD=\"postgress\"")
                && e.contains("files, pause, dump, postgres or sqlite"),
            "{e}"
        );
    }

    #[test]
    fn a_recovery_target_must_be_rfc3339() {
        let t = postgres::parse_target("2026-11-30T15:05:00+01:00", "LIFEBOAT_RESTORE_TO_TIME")
            .unwrap();
        assert_eq!(t, "2026-11-30T14:05:00.000000Z");
        let e = postgres::parse_target("yesterday", "LIFEBOAT_RESTORE_TO_TIME")
            .unwrap_err()
            .to_string();
        assert!(e.contains("LIFEBOAT_RESTORE_TO_TIME=\"yesterday\""), "{e}");
    }
}
