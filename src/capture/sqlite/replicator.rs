//! Continuous replication of one SQLite database in WAL mode, the way Litestream does it but
//! without writing to the app's database.
//!
//! ## Why no committed frame is lost
//! SQLite overwrites a log frame only after the log *restarts* from its first frame, which
//! needs every frame checkpointed into the database file *and* no reader using the log
//! (<https://www.sqlite.org/wal.html>, wal.c `walRestartLog`). lifeboat keeps a read
//! transaction open at all times, on one of two connections: to move forward it begins the new
//! one before it ends the old one, so there is never a moment without it. While it is held:
//! - a reader that uses the log pins it: no checkpoint, the app's own `wal_checkpoint(TRUNCATE)`
//!   included, can restart it (the app's checkpoint copies what it can and reports busy);
//! - a reader that began when everything was already checkpointed (it reads the database file
//!   only) blocks checkpoints from copying anything newer, so the log can restart at most once
//!   while it is held; and such a reader only begins when everything in the log was already
//!   checkpointed, which (the previous reader pinning the log) means everything was shipped.
//!
//! A restart therefore shows up as new salts with a checkpoint sequence one higher; a larger
//! jump, or a log that vanished, means frames went unseen (something outside these rules, such
//! as the app deleting its `-wal`), and replication begins a new generation with no parent and
//! asks for a backup at once, so the gap is closed by a fresh copy rather than hidden.
//!
//! ## Checkpoints
//! Holding a reader forever would grow the log forever. Once the log holds
//! `LIFEBOAT_SQLITE_CHECKPOINT_PAGES` frames since its start, lifeboat takes SQLite's write
//! lock (`BEGIN IMMEDIATE` on a third connection; app writers wait on their busy timeout for
//! a few milliseconds), ships what is left, ends its reader, runs a PASSIVE checkpoint on a
//! fourth connection, begins a reader again and releases the lock; the app's next commit then
//! restarts the log. If the write lock is busy (a long app transaction), it tries again at the
//! next sync.
//!
//! ## Files this process must never open itself
//! SQLite's locks are POSIX advisory locks, which a process loses on *any* close of the file.
//! So lifeboat reads the database only through SQLite (the copy uses the online backup API)
//! and reads only the `-wal` file directly (SQLite holds no locks on it). The backup walk
//! excludes the database, `-wal`, `-shm` and `-journal` files for the same reason.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OpenFlags};
use tracing::{info, warn};

use super::StreamContext;
use super::walfile::{self, Pos};
use crate::error::{Error, Result};
use crate::sqlitelog::{Base, GenHeader, Log, Parent, Segment, SegmentInfo, new_generation_id};

/// Frames read per segment before it is cut (at a commit boundary): bounds the memory a burst
/// of writes takes (pages, then their encoding, compression and envelope: about four times this).
const MAX_SEGMENT_BYTES: usize = 16 << 20;
/// The largest transaction (pages written) a change set holds; a larger one (a VACUUM, a bulk
/// import) is captured by a new copy instead: see [`walfile::Scan::oversized`].
const MAX_TXN_BYTES: usize = 256 << 20;

/// What the metrics show of one database.
#[derive(Debug, Clone, Default)]
pub struct Status {
    /// "waiting" (no file yet), "wal" (replicated) or "rollback" (copied on the schedule only).
    pub mode: &'static str,
    /// The time of the newest stored change.
    pub last_stored: Option<DateTime<Utc>>,
    /// When every committed change was last known to be stored.
    pub caught_up: Option<Instant>,
    /// Segments stored by this process.
    pub segments: u64,
    /// Bytes stored by this process.
    pub bytes: u64,
    /// Syncs that failed.
    pub failures: u64,
    /// Checkpoints lifeboat ran.
    pub checkpoints: u64,
    /// The generation being written.
    pub generation: String,
}

struct Gen {
    id: String,
    parent: Option<Parent>,
    header_stored: bool,
    next_seq: u64,
    page_size: u32,
}

struct Conns {
    /// The database file's inode when the connections opened: an app that deletes and
    /// recreates its database leaves them on the old file.
    inode: u64,
    readers: [Connection; 2],
    cur: usize,
    writer: Connection,
    ckpt: Connection,
}

#[derive(Default)]
struct Inner {
    conns: Option<Conns>,
    generation: Option<Gen>,
    pos: Option<Pos>,
    /// Frames in the log when lifeboat last tried a checkpoint (0 after a restart).
    last_ckpt_frames: u32,
    rollback_warned: bool,
    rollback_seen: u32,
    /// Where the restore left the database file, for the first generation's header.
    parent: Option<Parent>,
}

/// One replicated database.
pub struct Replica {
    /// Its path relative to the volume (the name in labels and logs).
    pub rel: String,
    /// Its absolute path.
    pub path: PathBuf,
    checkpoint_pages: u32,
    inner: Mutex<Inner>,
    /// What the metrics show.
    pub status: Mutex<Status>,
}

fn open(path: &Path, busy: Duration) -> rusqlite::Result<Connection> {
    // Never create: the app creates its database.
    let c = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    c.busy_timeout(busy)?;
    Ok(c)
}

/// The file's inode (0 when it is gone); `stat` opens nothing, so SQLite's locks are safe.
fn inode(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).map_or(0, |m| m.ino())
}

fn begin_read(c: &Connection) -> rusqlite::Result<()> {
    c.execute_batch("BEGIN")?;
    // A read transaction starts at its first read.
    c.query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(()))
}

fn sql(db: &str, what: &str, e: rusqlite::Error) -> Error {
    Error::invalid(format!("SQLite database {db}: {what}: {e}"))
}

impl Replica {
    /// A replica of `path` (relative name `rel`), not yet started.
    /// `parent`: where the gate's restore left the file, when it did.
    pub fn new(
        rel: String,
        path: PathBuf,
        checkpoint_pages: u32,
        parent: Option<Parent>,
    ) -> Replica {
        Replica {
            rel,
            path,
            checkpoint_pages: checkpoint_pages.max(1),
            inner: Mutex::new(Inner {
                parent,
                ..Inner::default()
            }),
            status: Mutex::new(Status {
                mode: "waiting",
                ..Status::default()
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_status(&self, f: impl FnOnce(&mut Status)) {
        f(&mut self.status.lock().unwrap_or_else(|e| e.into_inner()));
    }

    fn wal_path(&self) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push("-wal");
        PathBuf::from(p)
    }

    /// Opens the connections once the database exists in WAL mode. `Ok(false)` while it does
    /// not (no file yet, or rollback-journal mode: warned once).
    fn ensure_open(&self, inner: &mut Inner) -> Result<bool> {
        if inner.conns.is_some() {
            return Ok(true);
        }
        if !self.path.exists() {
            return Ok(false);
        }
        let e = |what, err| sql(&self.rel, what, err);
        let ckpt = open(&self.path, Duration::from_secs(5)).map_err(|x| e("opening", x))?;
        let mode: String = ckpt
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .map_err(|x| e("reading journal_mode", x))?;
        if !mode.eq_ignore_ascii_case("wal") {
            // An app switches its new database to WAL right after creating it: warn only when
            // it stays in rollback mode.
            inner.rollback_seen += 1;
            if !inner.rollback_warned && inner.rollback_seen >= 5 {
                warn!(
                    db = %self.rel,
                    journal_mode = %mode,
                    "SQLite database is not in WAL mode: it is copied consistently at each backup (writers wait for the copy), but changes between backups are not replicated; set PRAGMA journal_mode=WAL in the app for continuous replication"
                );
                inner.rollback_warned = true;
            }
            self.set_status(|s| s.mode = "rollback");
            return Ok(false);
        }
        let page_size: u32 = ckpt
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .map_err(|x| e("reading page_size", x))?;
        let readers = [
            open(&self.path, Duration::from_secs(5)).map_err(|x| e("opening", x))?,
            open(&self.path, Duration::from_secs(5)).map_err(|x| e("opening", x))?,
        ];
        let writer = open(&self.path, Duration::from_millis(200)).map_err(|x| e("opening", x))?;
        begin_read(&readers[0]).map_err(|x| e("beginning a read transaction", x))?;
        inner.conns = Some(Conns {
            inode: inode(&self.path),
            readers,
            cur: 0,
            writer,
            ckpt,
        });
        if inner.generation.is_none() {
            inner.generation = Some(Gen {
                id: new_generation_id(),
                parent: inner.parent.take(),
                header_stored: false,
                next_seq: 1,
                page_size,
            });
            // `pos` stays: a generation begun after a gap starts where the log is now (the
            // backup it asks for copies everything before).
        }
        self.set_status(|s| s.mode = "wal");
        Ok(true)
    }

    /// Ships every committed transaction not yet stored, then moves the read transaction
    /// forward. Returns the time of the last change set stored, if any. Idempotent; on an error
    /// nothing moves (the
    /// read transaction stays where it was, pinning the unshipped frames) and the next call
    /// retries.
    fn sync_locked(&self, inner: &mut Inner, ctx: &StreamContext) -> Result<Option<DateTime<Utc>>> {
        if inner
            .conns
            .as_ref()
            .is_some_and(|c| c.inode != inode(&self.path))
        {
            warn!(
                db = %self.rel,
                "the SQLite database file was replaced: replication starts a new generation and a backup"
            );
            inner.conns = None;
            inner.generation = None;
            inner.pos = None;
        }
        if !self.ensure_open(inner)? {
            return Ok(None);
        }
        let repo = (ctx.repo)()?;
        let log = Log::new(&repo, &ctx.volume, &self.rel);
        let g = inner.generation.as_mut().expect("opened");
        if !g.header_stored {
            (ctx.allowed)()?;
            log.put_header(&GenHeader {
                generation: g.id.clone(),
                parent: g.parent.clone(),
                page_size: g.page_size,
                created: Utc::now(),
            })?;
            g.header_stored = true;
            let orphan = g.parent.is_none();
            let id = g.id.clone();
            self.set_status(|s| s.generation = id.clone());
            info!(db = %self.rel, generation = %id, parent = ?inner.generation.as_ref().and_then(|g| g.parent.as_ref()), "SQLite replication generation begins");
            if orphan {
                (ctx.request_backup)(&format!(
                    "SQLite database {} begins a replication generation without a restored base",
                    self.rel
                ));
            }
        }
        let mut stored = None;
        loop {
            let mut f = match std::fs::File::open(self.wal_path()) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                Err(e) => {
                    return Err(Error::io(
                        format!("reading {}", self.wal_path().display()),
                        e,
                    ));
                }
            };
            let scan = walfile::scan(&mut f, inner.pos.as_ref(), MAX_SEGMENT_BYTES, MAX_TXN_BYTES)
                .map_err(|e| Error::io(format!("reading {}", self.wal_path().display()), e))?;
            let g = inner.generation.as_mut().expect("opened");
            if scan.gap || (scan.page_size != 0 && scan.page_size != g.page_size) {
                warn!(
                    db = %self.rel,
                    "the SQLite log restarted more than once between two syncs (or its page size changed): changes may have gone unseen; starting a new replication generation and a backup"
                );
                inner.generation = None;
                inner.pos = scan.end;
                inner.conns = None;
                return Ok(stored);
            }
            if scan.restarted {
                inner.last_ckpt_frames = 0;
            }
            if scan.oversized {
                warn!(
                    db = %self.rel,
                    "an SQLite transaction wrote more than {} MiB of pages, more than a change set holds: replication starts a new generation and a backup copies the database (until it is stored, a restore gives the state before that transaction)",
                    MAX_TXN_BYTES >> 20
                );
                inner.generation = None;
                inner.pos = scan.end;
                inner.conns = None;
                return Ok(stored);
            }
            if scan.commits > 0 {
                let time = Utc::now();
                let seg = Segment {
                    info: SegmentInfo {
                        generation: g.id.clone(),
                        seq: g.next_seq,
                        page_size: g.page_size,
                        db_pages: scan.db_pages,
                        commits: scan.commits,
                        time,
                    },
                    pages: scan.pages,
                };
                (ctx.allowed)()?;
                let n = log.put_segment(&seg)?;
                g.next_seq += 1;
                stored = Some(time);
                self.set_status(|s| {
                    s.segments += 1;
                    s.bytes += n;
                    s.last_stored = Some(time);
                });
            }
            if scan.end.is_some() {
                inner.pos = scan.end;
            }
            if !scan.more || scan.commits == 0 {
                break;
            }
        }
        // Move the read transaction forward: the new one begins before the old one ends.
        let c = inner.conns.as_mut().expect("opened");
        let next = 1 - c.cur;
        begin_read(&c.readers[next])
            .map_err(|e| sql(&self.rel, "beginning a read transaction", e))?;
        let _ = c.readers[c.cur].execute_batch("COMMIT");
        c.cur = next;
        self.set_status(|s| s.caught_up = Some(Instant::now()));
        Ok(stored)
    }

    /// Between syncs: when every committed change is already stored, moves the read transaction
    /// forward (the new one begins, then the old one ends), so that the app's own
    /// `wal_checkpoint(RESTART|TRUNCATE)`, which waits for readers older than the log's end,
    /// waits at most one refresh rather than a whole sync interval. When anything is left to
    /// ship nothing moves: that is the sync's job (moving past unshipped frames could let a
    /// checkpoint restart the log over them).
    pub fn refresh(&self) {
        let Ok(mut inner) = self.inner.try_lock() else {
            return;
        };
        let pos = inner.pos;
        let Some(c) = inner.conns.as_mut() else {
            return;
        };
        let next = 1 - c.cur;
        if begin_read(&c.readers[next]).is_err() {
            let _ = c.readers[next].execute_batch("ROLLBACK");
            return;
        }
        // Read after the new transaction began: whatever it can see is in the file by now.
        let idle = match std::fs::File::open(self.wal_path()) {
            Ok(mut f) => {
                // No page is kept (max_txn 0): only whether anything was committed.
                walfile::scan(&mut f, pos.as_ref(), 1, 0).is_ok_and(|s| s.end.is_none())
            }
            Err(e) => e.kind() == std::io::ErrorKind::NotFound,
        };
        if idle {
            let _ = c.readers[c.cur].execute_batch("COMMIT");
            c.cur = next;
        } else {
            let _ = c.readers[next].execute_batch("COMMIT");
        }
    }

    /// One sync (and a checkpoint when the log is long). Called by the replication thread
    /// every sync interval.
    pub fn tick(&self, ctx: &StreamContext) -> Result<()> {
        let mut inner = self.lock();
        let r = self.sync_locked(&mut inner, ctx);
        if let Err(e) = &r {
            self.set_status(|s| s.failures += 1);
            return Err(Error::invalid(format!(
                "replicating SQLite database {}: {e}",
                self.rel
            )));
        }
        let frames = inner.pos.map_or(0, |p| p.frames);
        if inner.conns.is_some() && frames >= inner.last_ckpt_frames + self.checkpoint_pages {
            inner.last_ckpt_frames = frames;
            self.checkpoint(&mut inner, ctx)?;
        }
        Ok(())
    }

    /// See the module documentation, "Checkpoints".
    fn checkpoint(&self, inner: &mut Inner, ctx: &StreamContext) -> Result<()> {
        let frames = inner.pos.map_or(0, |p| p.frames);
        {
            let c = inner.conns.as_ref().expect("opened");
            if let Err(e) = c.writer.execute_batch("BEGIN IMMEDIATE") {
                info!(db = %self.rel, "sqlite checkpoint deferred: the app holds the write lock ({e})");
                return Ok(());
            }
        }
        info!(db = %self.rel, frames, "sqlite checkpoint begins");
        let r = (|| -> Result<(i64, i64, i64)> {
            self.sync_locked(inner, ctx)?;
            let c = inner
                .conns
                .as_mut()
                .ok_or_else(|| Error::invalid("connections closed"))?;
            let _ = c.readers[c.cur].execute_batch("COMMIT");
            let out = c.ckpt.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            });
            // Whatever happened, hold a reader again before the write lock is released.
            let again = begin_read(&c.readers[c.cur]);
            again.map_err(|e| sql(&self.rel, "beginning a read transaction", e))?;
            out.map_err(|e| sql(&self.rel, "checkpointing", e))
        })();
        if let Some(c) = inner.conns.as_ref() {
            let _ = c.writer.execute_batch("ROLLBACK");
        }
        match r {
            Ok((busy, log, done)) => {
                self.set_status(|s| s.checkpoints += 1);
                info!(db = %self.rel, busy, log, checkpointed = done, "sqlite checkpoint done");
                Ok(())
            }
            Err(e) => {
                // A reader may be missing now: start over with fresh connections and a new
                // generation rather than trust the log's continuity.
                warn!(db = %self.rel, "sqlite checkpoint failed ({e}); replication starts a new generation");
                inner.conns = None;
                inner.generation = None;
                Err(e)
            }
        }
    }

    /// A consistent copy of the database for a backup, in a temporary file in `staging`, with
    /// where it stands in the replication. `None` when the database does not exist (yet).
    ///
    /// Every change committed before the call is stored first (an error fails the backup: a
    /// copy whose changes since the last segment are not stored would be a base the log cannot
    /// continue). The copy itself runs through SQLite's online backup API inside a read
    /// transaction of its own, so the app keeps writing meanwhile.
    pub fn copy(
        &self,
        staging: &Path,
        ctx: &StreamContext,
    ) -> Result<Option<(tempfile::NamedTempFile, Base)>> {
        if !self.path.exists() {
            return Ok(None);
        }
        let e = |what, err| sql(&self.rel, what, err);
        let mut inner = self.lock();
        self.sync_locked(&mut inner, ctx).map_err(|x| {
            Error::invalid(format!(
                "cannot store the newest changes of SQLite database {} before copying it: {x}",
                self.rel
            ))
        })?;
        let img = open(&self.path, Duration::from_secs(30)).map_err(|x| e("opening", x))?;
        begin_read(&img).map_err(|x| e("beginning a read transaction", x))?;
        let base = match inner.generation.as_ref().filter(|_| inner.conns.is_some()) {
            Some(g) => {
                let next = g.next_seq;
                let generation = g.id.clone();
                // Transactions committed between the two syncs may be in the copy: their
                // segment (`next`) is applied again on restore, which is harmless.
                let second = self.sync_locked(&mut inner, ctx)?;
                Base {
                    generation,
                    next,
                    time: second.unwrap_or_else(Utc::now),
                }
            }
            None => Base {
                generation: String::new(),
                next: 0,
                time: Utc::now(),
            },
        };
        drop(inner);
        info!(db = %self.rel, "sqlite base copy begins");
        let tmp = tempfile::Builder::new()
            .prefix("lifeboat-sqlite-")
            .tempfile_in(staging)
            .map_err(|x| Error::io(format!("creating a copy in {}", staging.display()), x))?;
        {
            let mut dst = Connection::open(tmp.path()).map_err(|x| e("opening the copy", x))?;
            let b = rusqlite::backup::Backup::new(&img, &mut dst)
                .map_err(|x| e("starting the copy", x))?;
            b.run_to_completion(4096, Duration::ZERO, None)
                .map_err(|x| e("copying", x))?;
        }
        let _ = img.execute_batch("COMMIT");
        let bytes = std::fs::metadata(tmp.path()).map(|m| m.len()).unwrap_or(0);
        info!(db = %self.rel, bytes, generation = %base.generation, next = base.next, "sqlite base copy done");
        Ok(Some((tmp, base)))
    }

    /// The final sync before lifeboat exits; then the connections close (SQLite checkpoints
    /// and removes the log if no one else has the database open).
    pub fn finish(&self, ctx: &StreamContext) -> Result<()> {
        let mut inner = self.lock();
        let r = if inner.conns.is_some() {
            self.sync_locked(&mut inner, ctx).map(|_| ())
        } else {
            Ok(())
        };
        inner.conns = None;
        r
    }
}
