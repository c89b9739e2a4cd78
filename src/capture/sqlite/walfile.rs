//! Reading SQLite's write-ahead log (the `-wal` file) as the database's own readers do: a
//! 32-byte header, then frames of a 24-byte header and one page, each frame's checksum chained
//! from the previous one (<https://www.sqlite.org/fileformat2.html#walformat>).
//!
//! Only frames up to the last *commit frame* (a non-zero "database size after commit") whose
//! checksum chain is intact count: what follows is a transaction still being written, or a
//! leftover of an earlier log generation (same offsets, older salts). This module is pure
//! parsing: it never opens the database file itself (see [`super::replicator`] for why that
//! matters) and never writes.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};

/// Magic numbers: the low bit says whether checksums read the data as big-endian words.
const MAGIC_LE: u32 = 0x377f_0682;
const MAGIC_BE: u32 = 0x377f_0683;
const HEADER: usize = 32;
const FRAME_HEADER: usize = 24;

/// A log generation's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalHeader {
    /// Checksums read big-endian words.
    pub big_endian: bool,
    /// The database page size.
    pub page_size: u32,
    /// Checkpoint sequence: incremented each time the log restarts from its first frame.
    pub ckpt_seq: u32,
    /// Salts: new random values each restart; frames of older generations carry old salts.
    pub salt: (u32, u32),
    /// The header's checksum, which seeds the first frame's.
    pub cksum: (u32, u32),
}

/// Where replication stands in the log: `frames` frames of the generation with `salt` are
/// shipped, ending at checksum `cksum`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pos {
    /// The generation's checkpoint sequence.
    pub ckpt_seq: u32,
    /// The generation's salts.
    pub salt: (u32, u32),
    /// Frames consumed from the start of the file.
    pub frames: u32,
    /// Running checksum after the last consumed frame (the header's when none).
    pub cksum: (u32, u32),
}

/// The committed transactions found after a position.
#[derive(Debug, Default)]
pub struct Scan {
    /// The newest version of each page written by those transactions.
    pub pages: BTreeMap<u32, Vec<u8>>,
    /// The database size in pages after the last of them.
    pub db_pages: u32,
    /// Commit frames seen.
    pub commits: u32,
    /// The position after them (unchanged when none).
    pub end: Option<Pos>,
    /// The log restarted (new salts) since the position given.
    pub restarted: bool,
    /// The log restarted more than once since the position given (checkpoint sequence jumped):
    /// transactions were checkpointed into the database and overwritten before they were seen.
    pub gap: bool,
    /// Page size of the log.
    pub page_size: u32,
    /// Frames after `end` that belong to this generation but are not yet committed, or the
    /// scan stopped at `max_bytes`: call again.
    pub more: bool,
    /// One committed transaction wrote more than `max_txn` bytes of pages: it is not in `pages`
    /// (it does not fit a change set), `end` lies after it.
    pub oversized: bool,
}

fn checksum(big_endian: bool, data: &[u8], mut s: (u32, u32)) -> (u32, u32) {
    for w in data.chunks_exact(8) {
        let word = |b: &[u8]| {
            let a = [b[0], b[1], b[2], b[3]];
            if big_endian {
                u32::from_be_bytes(a)
            } else {
                u32::from_le_bytes(a)
            }
        };
        s.0 = s.0.wrapping_add(word(&w[..4]).wrapping_add(s.1));
        s.1 = s.1.wrapping_add(word(&w[4..]).wrapping_add(s.0));
    }
    s
}

fn be(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Parses a log header; `None` for anything that is not a valid one (an empty or truncated
/// log, a torn header).
pub fn parse_header(b: &[u8]) -> Option<WalHeader> {
    if b.len() < HEADER {
        return None;
    }
    let magic = be(b, 0);
    let big_endian = match magic {
        MAGIC_BE => true,
        MAGIC_LE => false,
        _ => return None,
    };
    if be(b, 4) != 3_007_000 {
        return None;
    }
    let page_size = match be(b, 8) {
        1 => 65_536,
        n if (512..=32_768).contains(&n) && n.is_power_of_two() => n,
        _ => return None,
    };
    let cksum = (be(b, 24), be(b, 28));
    if checksum(big_endian, &b[..24], (0, 0)) != cksum {
        return None;
    }
    Some(WalHeader {
        big_endian,
        page_size,
        ckpt_seq: be(b, 12),
        salt: (be(b, 16), be(b, 20)),
        cksum,
    })
}

/// Reads the committed transactions in `log` after `from` (from the start of the log's current
/// generation when `from` is `None` or belongs to an older generation), stopping at a commit
/// boundary once about `max_bytes` of frames were read. A transaction larger than `max_txn`
/// is not kept in memory: once its commit frame is found the scan ends after it with
/// [`Scan::oversized`] (and nothing else), until then with nothing.
///
/// Contract: the caller holds a read transaction on the database for the whole call (see
/// [`super::replicator`]), so the frames read cannot be overwritten meanwhile; a short read (the
/// log being appended to) simply ends the scan at the last complete, committed frame.
pub fn scan<F: Read + Seek>(
    log: &mut F,
    from: Option<&Pos>,
    max_bytes: usize,
    max_txn: usize,
) -> std::io::Result<Scan> {
    let mut out = Scan::default();
    let mut head = [0u8; HEADER];
    log.seek(SeekFrom::Start(0))?;
    if read_full(log, &mut head)? < HEADER {
        return Ok(out);
    }
    let Some(h) = parse_header(&head) else {
        return Ok(out);
    };
    out.page_size = h.page_size;
    let (mut frame, mut cksum) = match from {
        Some(p) if p.salt == h.salt => (p.frames, p.cksum),
        Some(p) => {
            out.restarted = true;
            out.gap = h.ckpt_seq != p.ckpt_seq.wrapping_add(1);
            (0, h.cksum)
        }
        None => (0, h.cksum),
    };
    let ps = h.page_size as usize;
    let mut buf = vec![0u8; FRAME_HEADER + ps];
    let mut txn: Vec<(u32, Vec<u8>)> = Vec::new();
    let mut txn_bytes = 0usize;
    let mut read = 0usize;
    log.seek(SeekFrom::Start(
        (HEADER + frame as usize * (FRAME_HEADER + ps)) as u64,
    ))?;
    loop {
        if read_full(log, &mut buf)? < buf.len() {
            break;
        }
        if (be(&buf, 8), be(&buf, 12)) != h.salt {
            break;
        }
        let c = checksum(h.big_endian, &buf[..8], cksum);
        let c = checksum(h.big_endian, &buf[FRAME_HEADER..], c);
        if c != (be(&buf, 16), be(&buf, 20)) {
            break;
        }
        cksum = c;
        frame += 1;
        txn_bytes += ps;
        if txn_bytes <= max_txn {
            txn.push((be(&buf, 0), buf[FRAME_HEADER..].to_vec()));
        } else {
            txn.clear();
        }
        let commit = be(&buf, 4);
        if commit != 0 && txn_bytes > max_txn {
            // What came before this transaction goes first; it alone makes the next scan.
            if out.commits == 0 {
                out.pages.clear();
                out.oversized = true;
                out.db_pages = commit;
                out.end = Some(Pos {
                    ckpt_seq: h.ckpt_seq,
                    salt: h.salt,
                    frames: frame,
                    cksum,
                });
            }
            out.more = true;
            txn.clear();
            txn_bytes = 0;
            break;
        }
        if commit != 0 {
            txn_bytes = 0;
            for (pgno, page) in txn.drain(..) {
                read += page.len();
                out.pages.insert(pgno, page);
            }
            out.db_pages = commit;
            out.commits += 1;
            out.end = Some(Pos {
                ckpt_seq: h.ckpt_seq,
                salt: h.salt,
                frames: frame,
                cksum,
            });
            if read >= max_bytes {
                out.more = true;
                break;
            }
        }
    }
    if txn_bytes > 0 {
        out.more = true;
    }
    // A restart with nothing committed yet still moves the position into the new generation,
    // so the next scan does not report the same restart again.
    if out.end.is_none() && out.restarted {
        out.end = Some(Pos {
            ckpt_seq: h.ckpt_seq,
            salt: h.salt,
            frames: 0,
            cksum: h.cksum,
        });
    }
    // The pages map drops the pages after a truncating commit.
    let db_pages = out.db_pages;
    if db_pages > 0 {
        out.pages.retain(|&p, _| p <= db_pages);
    }
    Ok(out)
}

fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// A log written the way SQLite writes it.
    fn log(big_endian: bool, ckpt: u32, salt: (u32, u32), frames: &[(u32, u32, u8)]) -> Vec<u8> {
        let ps = 512usize;
        let mut out = Vec::new();
        out.extend((if big_endian { MAGIC_BE } else { MAGIC_LE }).to_be_bytes());
        out.extend(3_007_000u32.to_be_bytes());
        out.extend((ps as u32).to_be_bytes());
        out.extend(ckpt.to_be_bytes());
        out.extend(salt.0.to_be_bytes());
        out.extend(salt.1.to_be_bytes());
        let mut c = checksum(big_endian, &out, (0, 0));
        out.extend(c.0.to_be_bytes());
        out.extend(c.1.to_be_bytes());
        for &(pgno, commit, fill) in frames {
            let mut fh = Vec::new();
            fh.extend(pgno.to_be_bytes());
            fh.extend(commit.to_be_bytes());
            let page = vec![fill; ps];
            c = checksum(big_endian, &fh, c);
            c = checksum(big_endian, &page, c);
            fh.extend(salt.0.to_be_bytes());
            fh.extend(salt.1.to_be_bytes());
            fh.extend(c.0.to_be_bytes());
            fh.extend(c.1.to_be_bytes());
            out.extend(fh);
            out.extend(page);
        }
        out
    }

    #[test]
    fn only_committed_frames_count_and_the_newest_page_wins() {
        for be in [false, true] {
            let l = log(be, 0, (7, 9), &[(1, 0, 1), (2, 0, 2), (1, 3, 3), (3, 0, 4)]);
            let s = scan(&mut Cursor::new(&l), None, usize::MAX, usize::MAX).unwrap();
            assert_eq!(s.commits, 1);
            assert_eq!(s.db_pages, 3);
            assert_eq!(s.pages.len(), 2);
            assert_eq!(s.pages[&1][0], 3, "the later frame of page 1 wins");
            assert!(s.more, "an uncommitted frame follows");
            let end = s.end.unwrap();
            assert_eq!(end.frames, 3);
            // Nothing new after the end.
            let again = scan(&mut Cursor::new(&l), Some(&end), usize::MAX, usize::MAX).unwrap();
            assert_eq!(again.commits, 0);
            assert!(again.end.is_none() && !again.restarted);
        }
    }

    #[test]
    fn a_damaged_frame_ends_the_log_there() {
        let mut l = log(false, 0, (1, 2), &[(1, 1, 1), (2, 2, 2)]);
        let n = l.len();
        l[n - 1] ^= 0xff;
        let s = scan(&mut Cursor::new(&l), None, usize::MAX, usize::MAX).unwrap();
        assert_eq!(s.commits, 1);
        assert_eq!(s.db_pages, 1);
    }

    #[test]
    fn a_restart_is_continuous_once_and_a_gap_when_the_sequence_jumps() {
        let first = log(false, 4, (1, 1), &[(1, 1, 1)]);
        let p = scan(&mut Cursor::new(&first), None, usize::MAX, usize::MAX)
            .unwrap()
            .end
            .unwrap();
        let next = log(false, 5, (2, 2), &[(1, 1, 9)]);
        let s = scan(&mut Cursor::new(&next), Some(&p), usize::MAX, usize::MAX).unwrap();
        assert!(s.restarted && !s.gap);
        assert_eq!(s.pages[&1][0], 9);
        let later = log(false, 6, (3, 3), &[(1, 1, 9)]);
        let s = scan(&mut Cursor::new(&later), Some(&p), usize::MAX, usize::MAX).unwrap();
        assert!(s.restarted && s.gap);
        // Frames of the old generation left behind the new header are not read.
        let mut mixed = log(false, 5, (2, 2), &[]);
        mixed.extend_from_slice(&first[32..]);
        let s = scan(&mut Cursor::new(&mixed), Some(&p), usize::MAX, usize::MAX).unwrap();
        assert_eq!(s.commits, 0);
        assert_eq!(s.end.unwrap().salt, (2, 2));
    }

    #[test]
    fn the_scan_stops_at_a_commit_once_past_its_budget() {
        let l = log(false, 0, (5, 5), &[(1, 1, 1), (2, 2, 2), (3, 3, 3)]);
        let s = scan(&mut Cursor::new(&l), None, 600, usize::MAX).unwrap();
        assert_eq!(s.commits, 2);
        assert!(s.more);
        let rest = scan(&mut Cursor::new(&l), s.end.as_ref(), 600, usize::MAX).unwrap();
        assert_eq!(rest.commits, 1);
        assert_eq!(rest.db_pages, 3);
    }

    #[test]
    fn a_transaction_too_large_for_a_change_set_is_skipped_whole_and_reported() {
        // 512-byte pages: a budget of 1,000 bytes holds one page per transaction.
        let l = log(
            false,
            0,
            (4, 4),
            &[(1, 1, 1), (2, 0, 2), (3, 3, 3), (1, 3, 4)],
        );
        let s = scan(&mut Cursor::new(&l), None, usize::MAX, 1000).unwrap();
        assert!(
            !s.oversized && s.commits == 1 && s.more,
            "the small one first"
        );
        let big = scan(&mut Cursor::new(&l), s.end.as_ref(), usize::MAX, 1000).unwrap();
        assert!(big.oversized && big.pages.is_empty());
        assert_eq!(big.end.unwrap().frames, 3);
        let last = scan(&mut Cursor::new(&l), big.end.as_ref(), usize::MAX, 1000).unwrap();
        assert!(!last.oversized && last.commits == 1);
        assert_eq!(last.pages[&1][0], 4);
        // Not committed yet: nothing, and call again.
        let open = log(false, 0, (4, 4), &[(1, 0, 1), (2, 0, 2), (3, 0, 3)]);
        let s = scan(&mut Cursor::new(&open), None, usize::MAX, 1000).unwrap();
        assert!(s.end.is_none() && s.more && !s.oversized);
    }

    #[test]
    fn garbage_and_short_files_are_an_empty_log() {
        assert!(
            scan(&mut Cursor::new(vec![0u8; 10]), None, 1, usize::MAX)
                .unwrap()
                .end
                .is_none()
        );
        let mut l = log(false, 0, (1, 1), &[(1, 1, 1)]);
        l[30] ^= 1;
        assert!(
            scan(&mut Cursor::new(&l), None, 1, usize::MAX)
                .unwrap()
                .end
                .is_none()
        );
    }
}
