//! Replicated SQLite changes in the repository (the `sqlite` capture method; docs/FORMAT.md
//! §12c): what [`crate::capture::sqlite`] ships every sync interval, and how a restore brings a
//! database from its snapshot copy to its newest (or a chosen) replicated state.
//!
//! Per database, replication runs in *generations*. A generation is one unbroken stretch of the
//! database's write-ahead log as one lifeboat process saw it; its segments are numbered from 1.
//! Segment `n` holds the newest version of every page the transactions committed since segment
//! `n-1` wrote, plus the database size after them, and the time lifeboat stored them (which is
//! the point-in-time resolution: one sync interval). Applying the segments in order to the
//! snapshot's copy, page by page, gives the database as of the last one applied.
//!
//! A generation's header (segment 0) names its *parent*: the generation and segment the
//! database file was restored to when this generation began (a new lease restores, then starts
//! replicating before the app runs), or none when lifeboat found a database in an unknown state
//! (a volume that kept its data, a log that restarted twice unseen). A restore follows
//! parent links from the snapshot's generation to the newest, so a database replicated on
//! lease 1, restored on lease 2 and written there is whole again on lease 3 even when lease 2
//! vanished before its first snapshot.
//!
//! Objects are create-if-absent and never rewritten; their keys reveal only the hash of the
//! volume and database names, a random generation id and a sequence number.

pub mod upkeep;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::crypto::Kind;
use crate::error::{Error, Result};
use crate::repository::Repository;
use crate::repository::snapshot::Snapshot;

/// Snapshot label prefix: `lifeboat.sqlite:<database path relative to the volume>` holds the
/// [`Base`] of that database's copy as JSON.
pub const LABEL_PREFIX: &str = "lifeboat.sqlite:";
/// Largest segment object read back (a segment is cut at about 16 MiB of pages; one transaction may be larger).
const MAX_OBJECT: u64 = 512 << 20;

/// Where a snapshot's copy of a database stands in its replication.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Base {
    /// The generation being replicated when the copy was taken; empty when the database was
    /// not replicated (rollback-journal mode): the copy is all there is.
    pub generation: String,
    /// The first segment a restore applies on top of the copy. The copy may already contain
    /// part of it (re-applying a page image is harmless), never any of the segment after it.
    pub next: u64,
    /// The copy reflects every transaction stored at or before this time: a point-in-time
    /// restore may start from this snapshot for any target not before it.
    pub time: DateTime<Utc>,
}

/// The link from a generation to the state it started from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Parent {
    /// The parent generation.
    pub generation: String,
    /// Its last segment that the database file reflected when this generation began.
    pub seq: u64,
}

/// A generation's header (segment 0).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GenHeader {
    /// The generation's id.
    pub generation: String,
    /// What the database was restored to when it began; `None` for an unknown state.
    pub parent: Option<Parent>,
    /// The database page size.
    pub page_size: u32,
    /// When it began.
    pub created: DateTime<Utc>,
}

/// One stored change set.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SegmentInfo {
    /// Its generation.
    pub generation: String,
    /// Its number (from 1).
    pub seq: u64,
    /// The database page size.
    pub page_size: u32,
    /// The database size in pages after it.
    pub db_pages: u32,
    /// Transactions it holds.
    pub commits: u32,
    /// When lifeboat stored it (every transaction in it committed before).
    pub time: DateTime<Utc>,
}

/// A change set with its pages.
#[derive(Debug, Clone)]
pub struct Segment {
    /// What it is.
    pub info: SegmentInfo,
    /// Page number to page image.
    pub pages: BTreeMap<u32, Vec<u8>>,
}

impl Segment {
    fn encode(&self) -> Vec<u8> {
        let head = serde_json::to_vec(&self.info).expect("serializable");
        let ps = self.info.page_size as usize;
        let mut out = Vec::with_capacity(4 + head.len() + self.pages.len() * (4 + ps));
        out.extend((head.len() as u32).to_le_bytes());
        out.extend(head);
        for (pgno, page) in &self.pages {
            out.extend(pgno.to_le_bytes());
            out.extend(page);
        }
        out
    }

    fn decode(key: &str, b: &[u8]) -> Result<Segment> {
        let bad = |why: &str| Error::corrupt(key.to_string(), why.to_string());
        let n = u32::from_le_bytes(
            b.get(..4)
                .ok_or_else(|| bad("truncated"))?
                .try_into()
                .unwrap(),
        );
        let head = b
            .get(4..4 + n as usize)
            .ok_or_else(|| bad("truncated header"))?;
        let info: SegmentInfo =
            serde_json::from_slice(head).map_err(|e| bad(&format!("bad header: {e}")))?;
        let ps = info.page_size as usize;
        if !(512..=65_536).contains(&ps) || !ps.is_power_of_two() {
            return Err(bad("bad page size"));
        }
        let rest = &b[4 + n as usize..];
        if !rest.len().is_multiple_of(4 + ps) {
            return Err(bad("pages are not whole"));
        }
        let mut pages = BTreeMap::new();
        for rec in rest.chunks_exact(4 + ps) {
            let pgno = u32::from_le_bytes(rec[..4].try_into().unwrap());
            if pgno == 0 || pgno > info.db_pages {
                return Err(bad("page number outside the database"));
            }
            pages.insert(pgno, rec[4..].to_vec());
        }
        Ok(Segment { info, pages })
    }
}

/// A fresh generation id: the start time (so ids sort by age) and 32 random bits.
pub fn new_generation_id() -> String {
    format!(
        "{:013}{}",
        Utc::now().timestamp_millis().max(0),
        hex::encode(crate::crypto::random_bytes::<4>())
    )
}

fn valid_generation(g: &str) -> bool {
    g.len() == 21 && g.bytes().all(|c| c.is_ascii_hexdigit())
}

/// The replicated log of one database of one volume.
pub struct Log<'a> {
    repo: &'a Repository,
    dir: String,
}

impl<'a> Log<'a> {
    /// The log of database `db` (its path relative to the volume) of volume `volume`.
    pub fn new(repo: &'a Repository, volume: &str, db: &str) -> Self {
        let d = repo
            .key()
            .blob_id(format!("lifeboat sqlite v1 {volume}\0{db}").as_bytes());
        Log {
            repo,
            dir: format!("sqlite/{}/", &d.to_hex()[..32]),
        }
    }

    fn key(&self, generation: &str, seq: u64) -> String {
        format!("{}{generation}/{seq:012}", self.dir)
    }

    fn put(&self, key: &str, plain: &[u8]) -> Result<u64> {
        match self.repo.put_sealed(Kind::SqliteLog, key, plain)? {
            Some(n) => Ok(n),
            // A retried put whose first attempt landed: the same bytes are there.
            None if self.get(key)? == plain => Ok(0),
            None => Err(Error::invalid(format!(
                "{key} already exists with different contents: two lifeboat instances replicate the same database generation; refusing to overwrite"
            ))),
        }
    }

    fn get(&self, key: &str) -> Result<Vec<u8>> {
        self.repo.get_sealed(Kind::SqliteLog, key, MAX_OBJECT)
    }

    /// Stores a generation's header. Idempotent.
    pub fn put_header(&self, h: &GenHeader) -> Result<u64> {
        let key = self.key(&h.generation, 0);
        self.put(&key, &serde_json::to_vec(h).expect("serializable"))
    }

    /// Stores a segment; returns the bytes written (0 when a retry found it already there).
    pub fn put_segment(&self, s: &Segment) -> Result<u64> {
        let key = self.key(&s.info.generation, s.info.seq);
        self.put(&key, &s.encode())
    }

    /// A generation's header; an error when it is missing or fails to authenticate.
    pub fn header(&self, generation: &str) -> Result<GenHeader> {
        let key = self.key(generation, 0);
        let h: GenHeader = serde_json::from_slice(&self.get(&key)?)
            .map_err(|e| Error::corrupt(key.clone(), format!("bad generation header: {e}")))?;
        if h.generation != generation {
            return Err(Error::corrupt(key, "header of another generation"));
        }
        Ok(h)
    }

    /// A segment, authenticated and checked to be the one its name says.
    pub fn segment(&self, generation: &str, seq: u64) -> Result<Segment> {
        let key = self.key(generation, seq);
        let s = Segment::decode(&key, &self.get(&key)?)?;
        if s.info.generation != generation || s.info.seq != seq {
            return Err(Error::corrupt(
                key,
                "holds another segment than its name says",
            ));
        }
        Ok(s)
    }

    /// Every stored object: generation to segment numbers (0 is the header).
    pub fn list(&self) -> Result<BTreeMap<String, BTreeSet<u64>>> {
        let mut out: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
        for o in self.repo.backend().list(&self.dir)? {
            let Some(rest) = o.key.strip_prefix(&self.dir) else {
                continue;
            };
            let Some((g, s)) = rest.split_once('/') else {
                continue;
            };
            if let (true, Ok(seq)) = (valid_generation(g), s.parse::<u64>()) {
                out.entry(g.to_string()).or_default().insert(seq);
            }
        }
        Ok(out)
    }

    /// Deletes one object (prune).
    pub fn delete(&self, generation: &str, seq: u64) -> Result<()> {
        self.repo.backend().delete(&self.key(generation, seq))
    }

    /// The segments a restore from `base` applies, in order: the rest of the base's
    /// generation, then each descendant generation. Where several generations began from the
    /// same one (a point-in-time restore that was then written to, like a PostgreSQL timeline),
    /// the newest wins and the older history after its starting point is left out.
    /// Fails, naming it, on a missing segment that a later one follows (the log has a hole:
    /// restoring past it would skip transactions) or an unreadable generation header.
    pub fn chain(&self, base: &Base) -> Result<Chain> {
        let list = self.list()?;
        let mut headers = BTreeMap::new();
        for g in list.keys().filter(|g| list[*g].contains(&0)) {
            headers.insert(g.clone(), self.header(g)?);
        }
        let mut out = Chain::default();
        let mut generation = base.generation.clone();
        let mut next = base.next.max(1);
        let mut seen = BTreeSet::new();
        while seen.insert(generation.clone()) {
            let seqs = list.get(&generation).cloned().unwrap_or_default();
            let mut end = next - 1;
            while seqs.contains(&(end + 1)) {
                end += 1;
            }
            let mut children: Vec<&GenHeader> = headers
                .values()
                .filter(|h| {
                    h.generation > generation
                        && h.parent.as_ref().is_some_and(|p| {
                            p.generation == generation && p.seq + 1 >= next && p.seq <= end
                        })
                })
                .collect();
            children.sort_by(|a, b| a.generation.cmp(&b.generation));
            let child = children.pop();
            out.ignored
                .extend(children.iter().map(|h| h.generation.clone()));
            let cut = child.map_or(end, |c| c.parent.as_ref().map_or(end, |p| p.seq));
            if child.is_none()
                && let Some(later) = seqs.range(end + 1..).next()
            {
                return Err(Error::corrupt(
                    self.key(&generation, end + 1),
                    format!(
                        "is missing although segment {later} of its generation is stored: the replicated log has a hole; restoring past it would skip transactions"
                    ),
                ));
            }
            out.segments
                .push((generation.clone(), (next..=cut).collect()));
            let Some(c) = child else {
                break;
            };
            generation = c.generation.clone();
            next = 1;
        }
        Ok(out)
    }
}

/// What a restore applies: per generation, its segment numbers in order.
#[derive(Debug, Default)]
pub struct Chain {
    /// Generations with the segments to apply.
    pub segments: Vec<(String, Vec<u64>)>,
    /// Generations that branch off the chain elsewhere (a fork: two restores of one state);
    /// not followed.
    pub ignored: Vec<String>,
}

/// What [`replay`] did.
#[derive(Debug, Clone, Default)]
pub struct Replayed {
    /// Segments applied.
    pub segments: u64,
    /// Where the database now stands: the generation and its last segment reflected.
    pub at: Option<Parent>,
    /// The time of the newest change applied (the base's when none was).
    pub time: Option<DateTime<Utc>>,
    /// Segments left out because they are younger than the target time.
    pub after_target: u64,
}

/// Brings `file` (a database restored from a snapshot whose copy stands at `base`) to the
/// newest replicated state, or with `until` to the last change stored at or before it.
///
/// Contract: `file` is a plain database file no SQLite connection has open (a restore target),
/// with no `-wal` beside it. Pages are written in place and the file is cut to the database
/// size last applied; on an error the file is left partly updated and the caller discards it.
pub fn replay(
    repo: &Repository,
    volume: &str,
    db: &str,
    file: &Path,
    base: &Base,
    until: Option<DateTime<Utc>>,
) -> Result<Replayed> {
    let mut out = Replayed {
        time: Some(base.time),
        ..Replayed::default()
    };
    if base.generation.is_empty() {
        return Ok(out);
    }
    out.at = Some(Parent {
        generation: base.generation.clone(),
        seq: base.next.saturating_sub(1),
    });
    let log = Log::new(repo, volume, db);
    let chain = log.chain(base)?;
    for g in &chain.ignored {
        tracing::warn!(db, generation = %g, "a replication generation that forks off the restored history is not applied");
    }
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(file)
        .map_err(|e| {
            Error::io(
                format!("opening {} to replay its changes", file.display()),
                e,
            )
        })?;
    let page_size = db_page_size(&mut f).map_err(|e| Error::io(file.display().to_string(), e))?;
    let all: Vec<(&String, u64)> = chain
        .segments
        .iter()
        .flat_map(|(g, seqs)| seqs.iter().map(move |&s| (g, s)))
        .collect();
    // Fetched a window at a time, as many as the store keeps in flight (a new lease may replay
    // an hour of one-second change sets), applied strictly in order.
    let window = repo.backend().concurrency().max(1);
    'outer: for (w, part) in all.chunks(window).enumerate() {
        let fetched = crate::parallel::map(part.to_vec(), window, |(g, s)| log.segment(g, s));
        for (i, (s, &(generation, seq))) in fetched.into_iter().zip(part).enumerate() {
            let s = s?;
            if until.is_some_and(|t| s.info.time > t) {
                out.after_target = (all.len() - (w * window + i)) as u64;
                break 'outer;
            }
            if page_size.is_some_and(|p| p != s.info.page_size) {
                return Err(Error::corrupt(
                    log.key(generation, seq),
                    "its page size differs from the database's",
                ));
            }
            let ps = u64::from(s.info.page_size);
            for (pgno, page) in &s.pages {
                f.seek(SeekFrom::Start(u64::from(pgno - 1) * ps))
                    .and_then(|_| f.write_all(page))
                    .map_err(|e| Error::io(format!("writing {}", file.display()), e))?;
            }
            f.set_len(u64::from(s.info.db_pages) * ps)
                .map_err(|e| Error::io(format!("sizing {}", file.display()), e))?;
            out.segments += 1;
            out.time = Some(s.info.time);
            out.at = Some(Parent {
                generation: generation.clone(),
                seq,
            });
        }
    }
    f.sync_all()
        .map_err(|e| Error::io(format!("syncing {}", file.display()), e))?;
    Ok(out)
}

/// The page size in a database file's header; `None` for an empty file.
fn db_page_size(f: &mut std::fs::File) -> std::io::Result<Option<u32>> {
    let mut h = [0u8; 18];
    f.seek(SeekFrom::Start(0))?;
    let mut n = 0;
    while n < h.len() {
        match f.read(&mut h[n..])? {
            0 => break,
            k => n += k,
        }
    }
    if n < h.len() {
        return Ok(None);
    }
    Ok(Some(match u16::from_be_bytes([h[16], h[17]]) {
        1 => 65_536,
        p => u32::from(p),
    }))
}

/// The databases a snapshot holds replicated copies of: path relative to the volume, and base.
pub fn bases(snap: &Snapshot) -> Vec<(String, Base)> {
    snap.labels
        .iter()
        .filter_map(|(k, v)| {
            let db = k.strip_prefix(LABEL_PREFIX)?;
            Some((db.to_string(), serde_json::from_str(v).ok()?))
        })
        .collect()
}

/// The snapshot a point-in-time restore to `target` starts from: the newest of `volume` whose
/// every database copy reflects only changes stored before the target. Fails, naming the
/// oldest, when every snapshot is younger.
pub fn snapshot_before(
    repo: &Repository,
    volume: &str,
    target: DateTime<Utc>,
) -> Result<(crate::id::Id, Snapshot)> {
    let mut snaps: Vec<_> = repo
        .snapshots()?
        .into_iter()
        .filter(|(_, s)| s.name == volume && s.method == "sqlite")
        .collect();
    snaps.sort_by_key(|(_, s)| s.time);
    let at = |s: &Snapshot| bases(s).iter().map(|(_, b)| b.time).max().unwrap_or(s.time);
    let oldest = snaps.first().map(|(_, s)| at(s));
    snaps
        .into_iter()
        .rev()
        .find(|(_, s)| at(s) <= target)
        .ok_or_else(|| {
            Error::invalid(match oldest {
                Some(o) => format!(
                    "no snapshot of {volume:?} is older than {target}: the oldest reflects {o}; choose a later time"
                ),
                None => format!("volume {volume:?} has no snapshot"),
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_segment_round_trips_and_rejects_pages_outside_the_database() {
        let mut pages = BTreeMap::new();
        pages.insert(1, vec![1u8; 512]);
        pages.insert(3, vec![3u8; 512]);
        let s = Segment {
            info: SegmentInfo {
                generation: new_generation_id(),
                seq: 4,
                page_size: 512,
                db_pages: 3,
                commits: 2,
                time: Utc::now(),
            },
            pages,
        };
        let b = s.encode();
        let back = Segment::decode("k", &b).unwrap();
        assert_eq!(back.pages, s.pages);
        assert_eq!(back.info.seq, 4);
        let mut small = s.clone();
        small.info.db_pages = 2;
        assert!(Segment::decode("k", &small.encode()).is_err());
        assert!(Segment::decode("k", &b[..b.len() - 1]).is_err());
        assert!(valid_generation(&s.info.generation));
    }
}
