//! The `postgres` method: hot base backups through PostgreSQL's non-exclusive backup API, and
//! the settings that make PostgreSQL archive its WAL into the repository.
//!
//! A base backup: in one session held open for the whole copy, `pg_backup_start(label, fast)`
//! (PostgreSQL 15+; `pg_start_backup(label, fast, false)` on 13 and 14), then the data directory
//! is copied while the server keeps running (nothing is paused: the copy may catch pages
//! mid-write, which replaying the WAL from the backup's checkpoint repairs), then
//! `pg_backup_stop(false)` (`pg_stop_backup(false, false)`) returns the backup label. The label
//! and every WAL segment from the backup's start to its end go into the snapshot itself, so a
//! restore of the base alone always starts. Directories PostgreSQL's documentation lists as
//! not to be copied (`pg_wal`, `pg_replslot`, `pg_stat_tmp`, ...) are stored empty.
//!
//! Dedup: relation files that did not change since the parent snapshot are not re-read when
//! their size, mtime, ctime and inode match and their mtime lies two seconds or more before the
//! parent started ([`crate::backup::BackupOptions::live_files`]); everything else is read and
//! deduplicated chunk by chunk. The cost: a base backup reads each changed file whole.
//!
//! When the server is not running (the final backup after it stopped, or a crashed server), the
//! data directory is copied as it is, `pg_wal` included: a stopped cluster is consistent, and a
//! crashed one is recovered from its own WAL like after a power loss.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{Begin, Capture, Method, Prepared, WalReader};
use crate::backup::{LateFile, LateFiles, LateOutput, Source};
use crate::error::{Error, Result};
use crate::repository::snapshot::Snapshot;
use crate::wal::{Fetched, SegmentName};

/// Label: the data directory, relative to the volume (`.` when it is the volume).
pub const LABEL_DATADIR: &str = "lifeboat.pg.datadir";
/// Label: the first WAL segment a base backup needs.
pub const LABEL_START_WAL: &str = "lifeboat.pg.start_wal";
/// Label: the last WAL segment a base backup needs.
pub const LABEL_STOP_WAL: &str = "lifeboat.pg.stop_wal";
/// Label: when the base backup became consistent (RFC 3339): a point-in-time restore needs a
/// base backup from before its target.
pub const LABEL_STOP_TIME: &str = "lifeboat.pg.stop_time";
/// Label: the WAL segment size in bytes.
pub const LABEL_SEGMENT_SIZE: &str = "lifeboat.pg.wal_segment_size";
/// Label: `true` for a copy of a stopped server.
pub const LABEL_COLD: &str = "lifeboat.pg.cold";

/// Settings of the postgres method.
#[derive(Debug, Clone)]
pub struct PgSettings {
    /// The volume.
    pub volume: PathBuf,
    /// `archive_timeout` given to the server: the longest a committed transaction waits to
    /// reach the archive, so the recovery point when the provider vanishes.
    pub archive_timeout: Duration,
    /// The agent's WAL socket (see [`crate::wal::socket`]).
    pub socket: PathBuf,
    /// This lifeboat binary, for `archive_command` and `restore_command`.
    pub exe: PathBuf,
    /// A point-in-time restore's target (`LIFEBOAT_RESTORE_TO_TIME`), as PostgreSQL reads it.
    pub restore_to_time: Option<String>,
}

/// The postgres method.
pub struct Postgres {
    s: PgSettings,
}

impl Postgres {
    /// The method with its settings.
    pub fn new(s: PgSettings) -> Postgres {
        Postgres { s }
    }
}

/// Connection settings from the usual `PG*` variables: `PGHOST` (a host or a socket
/// directory; default the first of /var/run/postgresql and /tmp holding the server's socket,
/// else localhost), `PGPORT` (5432), `PGUSER` (postgres), `PGDATABASE` (postgres), `PGPASSWORD`.
pub fn connection() -> postgres::Config {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let port: u16 = env("PGPORT").and_then(|p| p.parse().ok()).unwrap_or(5432);
    let mut c = postgres::Config::new();
    let host = env("PGHOST").unwrap_or_else(|| {
        ["/var/run/postgresql", "/tmp"]
            .into_iter()
            .find(|d| Path::new(d).join(format!(".s.PGSQL.{port}")).exists())
            .unwrap_or("localhost")
            .to_string()
    });
    c.host(&host)
        .port(port)
        .user(env("PGUSER").as_deref().unwrap_or("postgres"))
        .dbname(env("PGDATABASE").as_deref().unwrap_or("postgres"))
        .application_name("lifeboat")
        .connect_timeout(Duration::from_secs(10));
    if let Some(p) = env("PGPASSWORD") {
        c.password(p);
    }
    c
}

fn connect() -> Result<postgres::Client> {
    let c = connection();
    c.connect(postgres::NoTls).map_err(|e| {
        Error::invalid(format!(
            "cannot connect to PostgreSQL ({}): {e}; set PGHOST (host or socket directory), PGPORT, PGUSER and PGPASSWORD for lifeboat",
            describe(&c)
        ))
    })
}

fn describe(c: &postgres::Config) -> String {
    let host = match c.get_hosts().first() {
        Some(postgres::config::Host::Tcp(h)) => h.clone(),
        Some(postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "?".into(),
    };
    format!(
        "host {host}, port {}, user {}",
        c.get_ports().first().copied().unwrap_or(5432),
        c.get_user().unwrap_or("?")
    )
}

fn sql_error(what: &str) -> impl Fn(postgres::Error) -> Error + '_ {
    move |e| Error::invalid(format!("PostgreSQL: {what}: {e}"))
}

/// Paths whose characters need no quoting in a shell command or a configuration value.
fn plain(p: &Path) -> Result<String> {
    let s = p.display().to_string();
    if s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/._-+".contains(&b))
    {
        Ok(s)
    } else {
        Err(Error::invalid(format!(
            "{s:?}: lifeboat puts this path into PostgreSQL's archive_command/restore_command and needs it free of spaces and quotes"
        )))
    }
}

impl PgSettings {
    /// `archive_command`: `<lifeboat> wal-push --socket <socket> %p`.
    pub fn archive_command(&self) -> Result<String> {
        Ok(format!(
            "{} wal-push --socket {} %p",
            plain(&self.exe)?,
            plain(&self.socket)?
        ))
    }

    /// `restore_command`: `<lifeboat> wal-fetch --socket <socket> %f %p`.
    pub fn restore_command(&self) -> Result<String> {
        Ok(format!(
            "{} wal-fetch --socket {} %f %p",
            plain(&self.exe)?,
            plain(&self.socket)?
        ))
    }
}

/// Whether `argv` starts a PostgreSQL server lifeboat can add settings to: `postgres` (or
/// `postmaster`) anywhere in it, or the official image's `docker-entrypoint.sh postgres`.
fn runs_postgres(argv: &[String]) -> bool {
    argv.iter().any(|a| {
        let base = Path::new(a)
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("");
        base == "postgres" || base == "postmaster"
    })
}

impl Capture for Postgres {
    fn method(&self) -> Method {
        Method::Postgres
    }

    fn app_args(&self, argv: &[String]) -> Vec<String> {
        if !runs_postgres(argv) {
            tracing::warn!(
                "LIFEBOAT_METHOD=postgres: the app command does not look like `postgres`, so lifeboat adds no archive settings; set archive_mode = on, archive_command = '{}' and archive_timeout = {}s in the server's configuration",
                self.s.archive_command().unwrap_or_default(),
                self.s.archive_timeout.as_secs()
            );
            return Vec::new();
        }
        let cmd = match self.s.archive_command() {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("{e}");
                return Vec::new();
            }
        };
        vec![
            "-c".into(),
            "archive_mode=on".into(),
            "-c".into(),
            format!("archive_command={cmd}"),
            "-c".into(),
            format!(
                "archive_timeout={}",
                self.s.archive_timeout.as_secs().max(1)
            ),
        ]
    }

    fn begin(&self, b: Begin<'_>) -> Result<Prepared> {
        match connect() {
            Ok(client) => self.hot(b, client),
            Err(e) => {
                let datadir = find_datadir(&self.s.volume).ok_or_else(|| {
                    Error::invalid(format!(
                        "LIFEBOAT_METHOD=postgres: no PostgreSQL data directory (PG_VERSION, global/pg_control) in {}, and {e}",
                        self.s.volume.display()
                    ))
                })?;
                let pid_file = datadir.join("postmaster.pid");
                let stopped = !pid_file.exists() || (b.app.is_some() && b.app_exited);
                if !stopped {
                    return Err(Error::invalid(format!(
                        "{e}; and {} says the server is running, so it cannot be copied cold",
                        pid_file.display()
                    )));
                }
                self.cold(b, &datadir)
            }
        }
    }

    fn after_restore(
        &self,
        _repo: &crate::repository::Repository,
        staged: &Path,
        snapshot: &Snapshot,
    ) -> Result<()> {
        if snapshot.method != "postgres" {
            return Ok(());
        }
        write_recovery_settings(
            &datadir_in(staged, snapshot),
            &self.s.restore_command()?,
            self.s.restore_to_time.as_deref(),
        )
    }

    fn recovered(&self) -> Result<bool> {
        // A server still starting refuses connections: the caller keeps asking, and reports the
        // error once it has lasted.
        let mut c = connect()?;
        let row = c
            .query_one("SELECT pg_is_in_recovery()", &[])
            .map_err(sql_error("asking whether recovery finished"))?;
        Ok(!row.get::<_, bool>(0))
    }
}

/// Parses a point-in-time recovery target given as RFC 3339 (`what` names the setting or
/// flag in the error); returns it normalised to UTC, as snapshot labels and
/// [`crate::wal::base_backup_before`] read it.
pub fn parse_target(text: &str, what: &str) -> Result<String> {
    chrono::DateTime::parse_from_rfc3339(text.trim())
        .map(|t| {
            t.with_timezone(&chrono::Utc)
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        })
        .map_err(|e| {
            Error::invalid(format!(
                "{what}={text:?}: {e}; give RFC 3339, e.g. 2026-11-30T14:05:00Z"
            ))
        })
}

/// Where a restored base backup's data directory lies below `root` (the restore target or the
/// staged volume): its `lifeboat.pg.datadir` label.
pub fn datadir_in(root: &Path, snapshot: &Snapshot) -> PathBuf {
    match snapshot.labels.get(LABEL_DATADIR).map(String::as_str) {
        None | Some(".") => root.to_path_buf(),
        Some(rel) => root.join(rel),
    }
}

/// Writes `recovery.signal` and lifeboat's recovery settings into `datadir`'s
/// `postgresql.auto.conf`: `restore_command`, `recovery_target_timeline = 'latest'` and, for a
/// point-in-time restore, `recovery_target_time` with `recovery_target_action = 'promote'`.
/// Recovery settings already in the file (from the server this backup came from, or an earlier
/// restore) are removed first, so a stale target can never apply. Both files keep the data
/// directory's owner.
pub fn write_recovery_settings(
    datadir: &Path,
    restore_command: &str,
    to_time: Option<&str>,
) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(datadir).map_err(|e| {
        Error::io(
            format!("restored PostgreSQL data directory {}", datadir.display()),
            e,
        )
    })?;
    let auto = datadir.join("postgresql.auto.conf");
    let old = std::fs::read_to_string(&auto).unwrap_or_default();
    let ours = [
        "restore_command",
        "recovery_target",
        "recovery_target_time",
        "recovery_target_xid",
        "recovery_target_lsn",
        "recovery_target_name",
        "recovery_target_timeline",
        "recovery_target_action",
        "recovery_target_inclusive",
    ];
    let mut text: String = old
        .lines()
        .filter(|l| {
            let key = l.split(['=', ' ', '\t']).next().unwrap_or("").trim();
            !ours.contains(&key) && !l.starts_with("# lifeboat")
        })
        .map(|l| format!("{l}\n"))
        .collect();
    text.push_str("# lifeboat recovery settings, rewritten at each restore\n");
    text.push_str(&format!(
        "restore_command = '{}'\n",
        restore_command.replace('\'', "''")
    ));
    text.push_str("recovery_target_timeline = 'latest'\n");
    if let Some(t) = to_time {
        // PostgreSQL's own timestamp form: it refuses RFC 3339's `T` and `Z` here.
        let t = chrono::DateTime::parse_from_rfc3339(t).map_or_else(
            |_| t.to_string(),
            |d| {
                d.with_timezone(&chrono::Utc)
                    .format("%Y-%m-%d %H:%M:%S%.6f+00")
                    .to_string()
            },
        );
        text.push_str(&format!(
            "recovery_target_time = '{}'\n",
            t.replace('\'', "''")
        ));
        text.push_str("recovery_target_action = 'promote'\n");
    }
    let write = |p: &Path, body: &[u8]| -> Result<()> {
        std::fs::write(p, body).map_err(|e| Error::io(format!("writing {}", p.display()), e))?;
        std::os::unix::fs::chown(p, Some(meta.uid()), Some(meta.gid()))
            .map_err(|e| Error::io(format!("chown {}", p.display()), e))
    };
    write(&auto, text.as_bytes())?;
    write(&datadir.join("recovery.signal"), b"")
}

/// The PostgreSQL data directory in `volume`: the volume itself or a directory up to three
/// levels down holding `PG_VERSION` and `global/pg_control`.
pub fn find_datadir(volume: &Path) -> Option<PathBuf> {
    let mut queue = std::collections::VecDeque::from([(volume.to_path_buf(), 0)]);
    while let Some((d, depth)) = queue.pop_front() {
        if d.join("PG_VERSION").is_file() && d.join("global/pg_control").is_file() {
            return Some(d);
        }
        if depth < 3
            && let Ok(rd) = std::fs::read_dir(&d)
        {
            let mut subdirs: Vec<PathBuf> = rd
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path())
                .filter(|p| !p.ends_with(".lifeboat"))
                .collect();
            subdirs.sort();
            queue.extend(subdirs.into_iter().map(|p| (p, depth + 1)));
        }
    }
    None
}

fn relative(volume: &Path, datadir: &Path) -> Result<String> {
    let rel = datadir.strip_prefix(volume).map_err(|_| {
        Error::invalid(format!(
            "PostgreSQL's data directory {} is outside LIFEBOAT_PATH {}: point LIFEBOAT_PATH at the volume that holds it",
            datadir.display(),
            volume.display()
        ))
    })?;
    Ok(if rel.as_os_str().is_empty() {
        ".".into()
    } else {
        rel.display().to_string()
    })
}

fn exclude(datadir: &Path, rel: &str) -> String {
    format!("{}/{rel}", globset::escape(&datadir.display().to_string()))
}

/// What PostgreSQL's documentation says a base backup leaves out (the directories stay, empty).
const NOT_COPIED: &[&str] = &[
    "pg_wal/*",
    "pg_replslot/*",
    "pg_dynshmem/*",
    "pg_notify/*",
    "pg_serial/*",
    "pg_snapshots/*",
    "pg_stat_tmp/*",
    "pg_subtrans/*",
    "**/pgsql_tmp*",
    "**/pg_internal.init",
    "postmaster.pid",
    "postmaster.opts",
    "backup_label",
    "backup_label.old",
    "tablespace_map",
    "recovery.signal",
    "standby.signal",
];

/// The session of one hot base backup, ended by `stop` or by dropping it (closing the session
/// aborts a non-exclusive backup in PostgreSQL).
struct Session {
    client: postgres::Client,
    version: i32,
}

impl Postgres {
    fn hot(&self, b: Begin<'_>, mut client: postgres::Client) -> Result<Prepared> {
        let row = client
            .query_one(
                "SELECT current_setting('server_version_num')::int, pg_is_in_recovery(), \
                 current_setting('archive_mode'), current_setting('archive_command'), \
                 current_setting('data_directory'), \
                 (SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size'), \
                 (SELECT count(*) FROM pg_tablespace WHERE spcname NOT IN ('pg_default', 'pg_global'))",
                &[],
            )
            .map_err(sql_error("reading the server's settings (lifeboat needs a superuser, PGUSER)"))?;
        let version: i32 = row.get(0);
        let in_recovery: bool = row.get(1);
        let archive_mode: String = row.get(2);
        let archive_command: String = row.get(3);
        let data_directory: String = row.get(4);
        let seg_size: i64 = row.get(5);
        let tablespaces: i64 = row.get(6);
        if !(130000..190000).contains(&version) {
            return Err(Error::invalid(format!(
                "PostgreSQL {version}: LIFEBOAT_METHOD=postgres supports PostgreSQL 13 to 18"
            )));
        }
        if in_recovery {
            return Err(Error::invalid(
                "PostgreSQL is still recovering (replaying WAL): the base backup waits until it finishes",
            ));
        }
        if !matches!(archive_mode.as_str(), "on" | "always")
            || !archive_command.contains("wal-push")
        {
            return Err(Error::invalid(format!(
                "PostgreSQL does not archive its WAL into lifeboat (archive_mode = {archive_mode}, archive_command = {archive_command:?}): without it a base backup cannot be recovered past its end; run the server under `lifeboat run -- postgres ...` (lifeboat adds the settings), or set archive_mode = on and archive_command = '{}'",
                self.s.archive_command()?
            )));
        }
        if tablespaces > 0 {
            return Err(Error::invalid(format!(
                "PostgreSQL has {tablespaces} tablespace(s) outside the data directory: LIFEBOAT_METHOD=postgres copies only the data directory; move them into pg_default"
            )));
        }
        // The archiver failing means the recovery point is this base backup, not
        // archive_timeout: the backup still runs (it is the best there is), and says so.
        if let Ok(row) = client.query_one(
            "SELECT coalesce(last_failed_time > coalesce(last_archived_time, '-infinity'), false), \
             coalesce(last_failed_wal, ''), failed_count FROM pg_stat_archiver",
            &[],
        ) && row.get::<_, bool>(0)
        {
            let wal: String = row.get(1);
            let n: i64 = row.get(2);
            tracing::error!(
                "PostgreSQL's WAL archiving is failing ({n} failure(s), last on {wal}): until it recovers, a lost provider loses everything since this base backup; see the agent's `WAL archiving failed` lines"
            );
        }
        let volume = std::fs::canonicalize(&self.s.volume)
            .map_err(|e| Error::io(format!("LIFEBOAT_PATH {}", self.s.volume.display()), e))?;
        let datadir = std::fs::canonicalize(&data_directory)
            .map_err(|e| Error::io(format!("PostgreSQL's data directory {data_directory}"), e))?;
        let rel = relative(&volume, &datadir)?;
        let seg_size = seg_size as u64;
        let start_sql = if version >= 150000 {
            "SELECT pg_backup_start($1, true)::text"
        } else {
            "SELECT pg_start_backup($1, true, false)::text"
        };
        let start_lsn: String = client
            .query_one(start_sql, &[&"lifeboat"])
            .map_err(sql_error("starting the base backup"))?
            .get(0);
        let opts = b.opts;
        opts.method = Some("postgres".into());
        opts.live_files = true;
        opts.excludes
            .extend(NOT_COPIED.iter().map(|r| exclude(&datadir, r)));
        opts.labels.insert(LABEL_DATADIR.into(), rel);
        opts.labels
            .insert("lifeboat.pg.version".into(), version.to_string());
        opts.labels
            .insert(LABEL_SEGMENT_SIZE.into(), seg_size.to_string());
        opts.labels
            .insert("lifeboat.pg.start_lsn".into(), start_lsn.clone());
        let session = Arc::new(Mutex::new(Some(Session { client, version })));
        let s = session.clone();
        let wal = b.wal.clone();
        let dd = datadir.clone();
        opts.late_files = Some(LateFiles(Arc::new(move || {
            let sess = s.lock().unwrap_or_else(|e| e.into_inner()).take();
            let Some(sess) = sess else {
                return Err(Error::invalid("the base backup session is already over"));
            };
            stop(sess, &dd, seg_size, wal.as_ref())
        })));
        tracing::info!(start_lsn = %start_lsn, datadir = %datadir.display(), "PostgreSQL base backup started");
        Ok(Prepared {
            source: Source::Paths(vec![self.s.volume.clone()]),
            // Dropping the session after a failed copy closes it: PostgreSQL aborts the backup.
            guard: Some(Box::new(session)),
            after: None,
        })
    }

    fn cold(&self, b: Begin<'_>, datadir: &Path) -> Result<Prepared> {
        let volume = std::fs::canonicalize(&self.s.volume)
            .map_err(|e| Error::io(format!("LIFEBOAT_PATH {}", self.s.volume.display()), e))?;
        let datadir = std::fs::canonicalize(datadir)
            .map_err(|e| Error::io(format!("{}", datadir.display()), e))?;
        let rel = relative(&volume, &datadir)?;
        let opts = b.opts;
        opts.method = Some("postgres".into());
        opts.excludes.extend(
            ["postmaster.pid", "postmaster.opts"]
                .iter()
                .map(|r| exclude(&datadir, r)),
        );
        opts.labels.insert(LABEL_DATADIR.into(), rel);
        opts.labels.insert(LABEL_COLD.into(), "true".into());
        opts.labels.insert(
            LABEL_STOP_TIME.into(),
            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        );
        tracing::info!(datadir = %datadir.display(), "PostgreSQL is not running: copying its stopped data directory");
        Ok(Prepared {
            source: Source::Paths(vec![self.s.volume.clone()]),
            guard: None,
            after: None,
        })
    }
}

/// Ends the backup; returns the label, the tablespace map and the WAL from the backup's start
/// to its end as late files.
fn stop(
    mut sess: Session,
    datadir: &Path,
    seg_size: u64,
    wal: Option<&WalReader>,
) -> Result<LateOutput> {
    let sql = if sess.version >= 150000 {
        "SELECT lsn::text, labelfile, spcmapfile FROM pg_backup_stop(false)"
    } else {
        "SELECT lsn::text, labelfile, spcmapfile FROM pg_stop_backup(false, false)"
    };
    let row = sess
        .client
        .query_one(sql, &[])
        .map_err(sql_error("ending the base backup"))?;
    let stop_lsn: String = row.get(0);
    let label: String = row.get(1);
    let spcmap: Option<String> = row.get(2);
    let stop_wal: String = sess
        .client
        .query_one("SELECT pg_walfile_name($1::text::pg_lsn)", &[&stop_lsn])
        .map_err(sql_error("naming the backup's last WAL segment"))?
        .get(0);
    let stop_time = chrono::Utc::now();
    let start_wal = label
        .lines()
        .find_map(|l| {
            l.strip_prefix("START WAL LOCATION: ")
                .and_then(|r| r.split("(file ").nth(1))
                .map(|f| f.trim_end_matches(')').to_string())
        })
        .ok_or_else(|| Error::invalid("PostgreSQL's backup label names no START WAL LOCATION"))?;
    let (Some(first), Some(last)) = (
        SegmentName::parse(&start_wal),
        SegmentName::parse(&stop_wal),
    ) else {
        return Err(Error::invalid(format!(
            "PostgreSQL's backup WAL {start_wal}..{stop_wal} are not segment names"
        )));
    };
    let mut files = vec![LateFile {
        path: datadir.join("backup_label"),
        content: Box::new(Cursor::new(label.into_bytes())),
        mode: 0o600,
    }];
    if let Some(m) = spcmap.filter(|m| !m.is_empty()) {
        files.push(LateFile {
            path: datadir.join("tablespace_map"),
            content: Box::new(Cursor::new(m.into_bytes())),
            mode: 0o600,
        });
    }
    let mut seg = first;
    let mut count = 0;
    loop {
        let name = seg.name();
        files.push(LateFile {
            path: datadir.join("pg_wal").join(&name),
            content: Box::new(Cursor::new(read_segment(datadir, &name, seg_size, wal)?)),
            mode: 0o600,
        });
        count += 1;
        if seg.position() >= last.position() || count > 4096 {
            break;
        }
        seg = seg.next(seg_size);
    }
    let mut labels = BTreeMap::new();
    labels.insert(LABEL_START_WAL.into(), start_wal.clone());
    labels.insert(LABEL_STOP_WAL.into(), stop_wal.clone());
    labels.insert("lifeboat.pg.stop_lsn".into(), stop_lsn.clone());
    labels.insert(
        LABEL_STOP_TIME.into(),
        stop_time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    );
    tracing::info!(stop_lsn = %stop_lsn, wal = %format!("{start_wal}..{stop_wal}"), segments = count, "PostgreSQL base backup ended");
    // The session closes here, after the stop.
    drop(sess);
    Ok(LateOutput { files, labels })
}

/// A WAL segment the base backup needs: from `pg_wal` while it is there and whole, else from
/// the archive (the server recycled it after archiving it).
fn read_segment(
    datadir: &Path,
    name: &str,
    seg_size: u64,
    wal: Option<&WalReader>,
) -> Result<Vec<u8>> {
    let path = datadir.join("pg_wal").join(name);
    if let Ok(b) = std::fs::read(&path)
        && b.len() as u64 == seg_size
    {
        return Ok(b);
    }
    match wal.map(|f| f(name)).transpose()? {
        Some(Fetched::Found(b)) => Ok(b),
        _ => Err(Error::invalid(format!(
            "WAL segment {name}, which this base backup needs, is neither in {} nor in the archive",
            path.display()
        ))),
    }
}
