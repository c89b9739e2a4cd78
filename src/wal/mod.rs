//! The WAL archive: PostgreSQL's write-ahead log, file by file, in the repository.
//!
//! PostgreSQL hands each finished WAL segment (and each timeline history and backup history
//! file) to `archive_command`; `lifeboat wal-push` stores it here, and on a new lease
//! `lifeboat wal-fetch` (PostgreSQL's `restore_command`) brings them back while the server
//! replays them. A base backup plus every WAL file after it is the database at any later moment:
//! that is what makes the recovery point seconds (`archive_timeout`) instead of the backup
//! schedule.
//!
//! Each file is one object `wal/<d>/<name>` (docs/FORMAT.md §2, §12b): `d` names the volume
//! without revealing it (keyed BLAKE3 of `lifeboat wal v1 <volume name>`), `name` is
//! PostgreSQL's own file name (validated: 24 hex digits with an optional `.partial` or
//! `.<8 hex>.backup` suffix, or `<8 hex>.history`). The object is an envelope of kind `wal`
//! whose associated data is the object key, around the zstd-compressed file: the store cannot
//! swap two files, move one to another volume, or alter one unnoticed. Objects are written
//! create-if-absent; a second push of the same name succeeds only if the stored file is
//! byte-identical (PostgreSQL's contract for `archive_command` after a lost reply), and fails
//! loudly otherwise.
//!
//! Contracts: [`WalArchive::push`] returns only once the object is stored (so PostgreSQL may
//! recycle the segment); [`WalArchive::fetch`] tells "not archived" apart from "archive
//! unreadable", and [`WalArchive::fetch_checked`] also tells "missing although a later file of
//! the same timeline exists" (a hole: recovery must stop loudly, never end early and fork).

pub mod socket;
pub mod upkeep;

use crate::crypto::Kind;
use crate::error::{Error, Result};
use crate::repository::Repository;
use crate::repository::limits::MAX_WAL;

/// PostgreSQL's default WAL segment size.
pub const DEFAULT_SEGMENT_SIZE: u64 = 16 << 20;

/// One archived file, from a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalEntry {
    /// PostgreSQL's file name.
    pub name: String,
    /// Stored (compressed, sealed) size.
    pub size: u64,
    /// When the store says it was written.
    pub modified: Option<std::time::SystemTime>,
}

/// What a push did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Stored now; the object's size.
    Stored(u64),
    /// The same bytes were already archived (a retry after a lost reply).
    AlreadyThere,
}

/// What a fetch found.
#[derive(Debug)]
pub enum Fetched {
    /// The file's bytes.
    Found(Vec<u8>),
    /// Not archived (the end of the archive, or a timeline that does not exist).
    NotFound,
    /// Not archived although a later segment of the same timeline is: a hole.
    Hole(String),
}

/// A segment file name's parts: timeline, and the segment's position (log, seg).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct SegmentName {
    /// Timeline.
    pub timeline: u32,
    /// High 32 bits of the position.
    pub log: u32,
    /// Segment within `log`.
    pub seg: u32,
}

impl SegmentName {
    /// Parses a plain 24-hex-digit segment name (no suffix).
    pub fn parse(name: &str) -> Option<SegmentName> {
        if name.len() != 24 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let h = |r: std::ops::Range<usize>| u32::from_str_radix(&name[r], 16).ok();
        Some(SegmentName {
            timeline: h(0..8)?,
            log: h(8..16)?,
            seg: h(16..24)?,
        })
    }

    /// The name PostgreSQL gives it.
    pub fn name(&self) -> String {
        format!("{:08X}{:08X}{:08X}", self.timeline, self.log, self.seg)
    }

    /// The segment holding byte `lsn` of the log, for segments of `seg_size` bytes.
    pub fn of_lsn(timeline: u32, lsn: u64, seg_size: u64) -> SegmentName {
        let per_log = 0x1_0000_0000 / seg_size;
        let n = lsn / seg_size;
        SegmentName {
            timeline,
            log: (n / per_log) as u32,
            seg: (n % per_log) as u32,
        }
    }

    /// The segment after this one.
    pub fn next(&self, seg_size: u64) -> SegmentName {
        let per_log = (0x1_0000_0000 / seg_size) as u32;
        if self.seg + 1 >= per_log {
            SegmentName {
                timeline: self.timeline,
                log: self.log + 1,
                seg: 0,
            }
        } else {
            SegmentName {
                seg: self.seg + 1,
                ..*self
            }
        }
    }

    /// Position in the log, ignoring the timeline.
    pub fn position(&self) -> (u32, u32) {
        (self.log, self.seg)
    }
}

/// Parses PostgreSQL's textual LSN (`16/B374D848`).
pub fn parse_lsn(text: &str) -> Option<u64> {
    let (hi, lo) = text.trim().split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

/// Whether `name` is a file PostgreSQL archives: a segment (24 hex digits), a partial segment
/// (`.partial`), a backup history file (`.<8 hex>.backup`) or a timeline history file
/// (`<8 hex>.history`). Nothing else can become an object key.
pub fn valid_name(name: &str) -> bool {
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    if let Some(tli) = name.strip_suffix(".history") {
        return hex(tli, 8);
    }
    if let Some(seg) = name.strip_suffix(".partial") {
        return hex(seg, 24);
    }
    if let Some(rest) = name.strip_suffix(".backup") {
        return rest.len() == 33
            && hex(&rest[..24], 24)
            && &rest[24..25] == "."
            && hex(&rest[25..], 8);
    }
    hex(name, 24)
}

/// The WAL archive of one volume.
pub struct WalArchive<'a> {
    repo: &'a Repository,
    dir: String,
}

impl<'a> WalArchive<'a> {
    /// The archive of volume `name` in `repo`.
    pub fn new(repo: &'a Repository, volume: &str) -> Self {
        let d = repo
            .key()
            .blob_id(format!("lifeboat wal v1 {volume}").as_bytes());
        WalArchive {
            repo,
            dir: format!("wal/{}/", &d.to_hex()[..32]),
        }
    }

    /// The key prefix of this volume's archive (`wal/<d>/`).
    pub fn prefix(&self) -> &str {
        &self.dir
    }

    fn key(&self, name: &str) -> Result<String> {
        if !valid_name(name) {
            return Err(Error::invalid(format!(
                "{name:?} is not a PostgreSQL WAL file name; wal-push and wal-fetch take %f/%p from archive_command and restore_command"
            )));
        }
        Ok(format!("{}{name}", self.dir))
    }

    /// Stores WAL file `name`. Returns once the object is stored. Idempotent for identical bytes;
    /// different bytes under an archived name fail (the archive is never overwritten).
    pub fn push(&self, name: &str, bytes: &[u8]) -> Result<Pushed> {
        let key = self.key(name)?;
        match self.repo.put_sealed(Kind::Wal, &key, bytes)? {
            Some(n) => Ok(Pushed::Stored(n)),
            None => match self.fetch(name)? {
                Fetched::Found(old) if old == bytes => Ok(Pushed::AlreadyThere),
                Fetched::Found(_) => Err(Error::invalid(format!(
                    "WAL file {name} is already archived with different contents ({key}); two servers are archiving into volume's WAL, or this server was restored without recovery: refusing to overwrite"
                ))),
                _ => Err(Error::corrupt(
                    key,
                    "the store refused to create it (it exists) but cannot return it",
                )),
            },
        }
    }

    /// Reads WAL file `name`: `NotFound` when it was never archived; an error when the object is
    /// there but unreadable or fails to authenticate (never reported as "not found": PostgreSQL
    /// would end recovery early on it).
    pub fn fetch(&self, name: &str) -> Result<Fetched> {
        let key = self.key(name)?;
        match self.repo.get_sealed(Kind::Wal, &key, MAX_WAL) {
            Ok(b) => Ok(Fetched::Found(b)),
            Err(Error::NotFound { .. }) => Ok(Fetched::NotFound),
            Err(e) => Err(e),
        }
    }

    /// Like [`fetch`](Self::fetch), but a segment missing while a later segment of the same
    /// timeline is archived comes back as [`Fetched::Hole`].
    pub fn fetch_checked(&self, name: &str) -> Result<Fetched> {
        match self.fetch(name)? {
            Fetched::NotFound => {
                let Some(want) = SegmentName::parse(name) else {
                    return Ok(Fetched::NotFound);
                };
                let later = self
                    .list()?
                    .into_iter()
                    .filter_map(|e| SegmentName::parse(&e.name))
                    .filter(|s| s.timeline == want.timeline && s.position() > want.position())
                    .min();
                Ok(match later {
                    Some(l) => Fetched::Hole(format!(
                        "WAL segment {name} is missing from the archive although {} of the same timeline is there: the archive has a hole; recovery stops here instead of ending early",
                        l.name()
                    )),
                    None => Fetched::NotFound,
                })
            }
            other => Ok(other),
        }
    }

    /// Every archived file of this volume, in name order.
    pub fn list(&self) -> Result<Vec<WalEntry>> {
        let mut out: Vec<WalEntry> = self
            .repo
            .backend()
            .list(&self.dir)?
            .into_iter()
            .filter_map(|o| {
                let name = o.key.strip_prefix(&self.dir)?.to_string();
                valid_name(&name).then_some(WalEntry {
                    name,
                    size: o.size,
                    modified: o.modified,
                })
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Deletes archived file `name` (prune).
    pub fn delete(&self, name: &str) -> Result<()> {
        let key = self.key(name)?;
        self.repo.backend().delete(&key)
    }
}

/// The newest PostgreSQL base backup of `volume` that became consistent before `target` (RFC
/// 3339): where a point-in-time restore to `target` starts. Fails, naming the oldest, when
/// every base backup is younger than the target.
pub fn base_backup_before(
    repo: &Repository,
    volume: &str,
    target: &str,
) -> Result<(crate::id::Id, crate::repository::snapshot::Snapshot)> {
    use crate::capture::postgres::LABEL_STOP_TIME;
    let target_time = chrono::DateTime::parse_from_rfc3339(target)
        .map_err(|e| Error::invalid(format!("recovery target {target:?}: {e}")))?;
    let mut oldest: Option<String> = None;
    let mut best = None;
    for (id, s) in repo.snapshots()? {
        if s.name != volume || s.method != "postgres" {
            continue;
        }
        let Some(stop) = s
            .labels
            .get(LABEL_STOP_TIME)
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        else {
            continue;
        };
        if oldest.as_ref().is_none_or(|o| *o > stop.to_rfc3339()) {
            oldest = Some(stop.to_rfc3339());
        }
        if stop <= target_time
            && best
                .as_ref()
                .is_none_or(|(_, _, t): &(_, _, chrono::DateTime<chrono::FixedOffset>)| stop > *t)
        {
            best = Some((id, s, stop));
        }
    }
    match best {
        Some((id, s, _)) => Ok((id, s)),
        None => Err(Error::invalid(format!(
            "no PostgreSQL base backup of volume {volume:?} is older than the recovery target {target}{}",
            oldest.map_or(String::new(), |o| format!(
                " (the oldest became consistent at {o})"
            ))
        ))),
    }
}

/// The first gap in the segments of `timeline` between `from` and the newest archived one, if
/// any: `check` reports it, since recovery would stop there.
pub fn first_gap(names: &[String], from: SegmentName, seg_size: u64) -> Option<SegmentName> {
    let mut have: Vec<SegmentName> = names
        .iter()
        .filter_map(|n| SegmentName::parse(n))
        .filter(|s| s.timeline == from.timeline && s.position() >= from.position())
        .collect();
    have.sort();
    let mut want = from;
    for s in have {
        if s.position() != want.position() {
            return Some(want);
        }
        want = s.next(seg_size);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated() {
        for ok in [
            "000000010000000000000002",
            "00000002.history",
            "000000010000000000000002.partial",
            "000000010000000000000002.00000028.backup",
        ] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in [
            "",
            "../config",
            "00000001000000000000000",
            "000000010000000000000002/x",
            "0000000g0000000000000002",
            "00000002.history.x",
            "000000010000000000000002.0000028.backup",
        ] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn segment_arithmetic_matches_postgresql() {
        let s = SegmentName::of_lsn(1, parse_lsn("0/2000028").unwrap(), DEFAULT_SEGMENT_SIZE);
        assert_eq!(s.name(), "000000010000000000000002");
        let s = SegmentName::of_lsn(3, parse_lsn("16/B374D848").unwrap(), DEFAULT_SEGMENT_SIZE);
        assert_eq!(s.name(), "0000000300000016000000B3");
        let last = SegmentName::parse("0000000100000000000000FF").unwrap();
        assert_eq!(
            last.next(DEFAULT_SEGMENT_SIZE).name(),
            "000000010000000100000000"
        );
        let big = SegmentName::parse("00000001000000000000003F").unwrap();
        assert_eq!(big.next(64 << 20).name(), "000000010000000100000000");
    }

    #[test]
    fn gaps_are_found_per_timeline() {
        let names: Vec<String> = [
            "000000010000000000000002",
            "000000010000000000000003",
            "000000010000000000000005",
            "000000020000000000000004",
        ]
        .map(String::from)
        .to_vec();
        let from = SegmentName::parse("000000010000000000000002").unwrap();
        assert_eq!(
            first_gap(&names, from, DEFAULT_SEGMENT_SIZE).map(|s| s.name()),
            Some("000000010000000000000004".into())
        );
        let from2 = SegmentName::parse("000000020000000000000004").unwrap();
        assert_eq!(first_gap(&names, from2, DEFAULT_SEGMENT_SIZE), None);
    }
}
