//! Check: proves the repository can restore every snapshot. Structure checks (always): every index
//! object opens and hashes to its name, every indexed pack exists and its header agrees with the
//! index, every snapshot opens, and every tree and data blob a snapshot references is indexed.
//! With `--read-data`, packs are downloaded in full: the pack hashes to its name and every blob
//! decrypts and hashes to its id. Problems are collected, each naming the object, not fatal.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::id::Id;
use crate::repository::index::{Index, IndexFile};
use crate::repository::pack::{self, PackEntry};
use crate::repository::tree::NodeKind;
use crate::repository::{Repository, TreeLoader, object_id, verify_object_id};

/// Which packs to download in full.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ReadData {
    /// None: structure only.
    None,
    /// Every pack.
    All,
    /// Packs chosen at random (a different choice each run) until they hold at least this
    /// fraction (0..=1) of all pack bytes; at least one pack when the fraction is above zero.
    Fraction(f64),
    /// Part `n` of `t` (1-based), by pack id, so `1/7` … `7/7` over a week covers everything.
    Part(u32, u32),
    /// Packs chosen at random until they hold at least this many bytes (`5G`: a download budget
    /// a day rather than a share of a repository that grows).
    Bytes(u64),
}

impl std::str::FromStr for ReadData {
    type Err = Error;
    /// Parses `N%`, `n/t` or a size (`500M`, `5G`: K, M, G, T are powers of 1024).
    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::invalid(format!(
                "--read-data-subset {s:?}: give a percentage like 10%, a part like 1/5 or a size like 5G"
            ))
        };
        let t = s.trim();
        let unit = t.trim_end_matches(['B', 'b']).trim_end_matches(['i']);
        if let Some(last) = unit.chars().last().filter(|c| c.is_ascii_alphabetic()) {
            let shift = match last.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                _ => return Err(bad()),
            };
            let v: f64 = unit[..unit.len() - 1].trim().parse().map_err(|_| bad())?;
            if !(v > 0.0 && v.is_finite()) {
                return Err(bad());
            }
            return Ok(ReadData::Bytes((v * (1u64 << shift) as f64) as u64));
        }
        if let Some(p) = s.strip_suffix('%') {
            let v: f64 = p.trim().parse().map_err(|_| bad())?;
            if !(0.0..=100.0).contains(&v) {
                return Err(bad());
            }
            return Ok(ReadData::Fraction(v / 100.0));
        }
        let (n, t) = s.split_once('/').ok_or_else(bad)?;
        let (n, t): (u32, u32) = (
            n.trim().parse().map_err(|_| bad())?,
            t.trim().parse().map_err(|_| bad())?,
        );
        if t == 0 || n == 0 || n > t {
            return Err(bad());
        }
        Ok(ReadData::Part(n, t))
    }
}

/// What check found.
#[derive(Debug, Default, Clone, Serialize)]
pub struct CheckReport {
    /// Problems that make data unrestorable; each names the object.
    pub errors: Vec<String>,
    /// Oddities that lose nothing (unindexed packs left by interrupted backups).
    pub warnings: Vec<String>,
    /// Snapshots checked.
    pub snapshots: u64,
    /// Distinct trees walked.
    pub trees: u64,
    /// Distinct data blobs referenced.
    pub data_blobs: u64,
    /// Packs in the repository.
    pub packs: u64,
    /// Packs downloaded and verified in full.
    pub packs_read: u64,
    /// Archived PostgreSQL WAL files.
    pub wal_files: u64,
    /// Replicated SQLite log objects (change sets and generation headers).
    pub sqlite_objects: u64,
}

/// Runs the checks.
pub fn check(repo: &Repository, read_data: ReadData) -> Result<CheckReport> {
    check_with_progress(repo, read_data, crate::progress::ProgressMode::Quiet)
}

/// [`check`], showing the pack reads' progress (packs and bytes of the total to read).
pub fn check_with_progress(
    repo: &Repository,
    read_data: ReadData,
    progress: crate::progress::ProgressMode,
) -> Result<CheckReport> {
    let mut r = CheckReport::default();
    // Every key object (form, name, KDF bounds) and both config copies.
    r.errors.extend(repo.check_keys_and_config()?);
    // Snapshots are listed before the index: one committed meanwhile by a running backup then
    // either is not seen or finds its index, never a false "not in any index".
    let snapshot_keys = repo.backend().list("snapshots/")?;

    // Index objects.
    let mut files: Vec<(Id, IndexFile)> = Vec::new();
    for info in repo.backend().list("index/")? {
        let loaded = object_id(&info.key, "index/").and_then(|id| {
            let bytes = repo.get_object(&info.key)?;
            verify_object_id(&info.key, &id, &bytes)?;
            Ok((id, IndexFile::decode(repo.key(), &info.key, &bytes)?))
        });
        match loaded {
            Ok(f) => files.push(f),
            Err(e) => r.errors.push(e.to_string()),
        }
    }
    let superseded: HashSet<Id> = files
        .iter()
        .flat_map(|(_, f)| f.supersedes.clone())
        .collect();
    let mut index = Index::default();
    let mut expected: HashMap<Id, Vec<PackEntry>> = HashMap::new();
    for (id, f) in &files {
        if superseded.contains(id) {
            continue;
        }
        for (pack, entries) in &f.packs {
            index.add_pack(*pack, entries);
            expected
                .entry(*pack)
                .or_default()
                .extend_from_slice(entries);
        }
    }

    // Packs: present, headers agree.
    let mut sizes: HashMap<Id, u64> = HashMap::new();
    for info in repo.backend().list("data/")? {
        match object_id(&info.key, "data/") {
            Ok(id) => {
                sizes.insert(id, info.size);
            }
            Err(e) => r.warnings.push(e.to_string()),
        }
    }
    r.packs = sizes.len() as u64;
    // Named one by one up to a point, then counted: a store listing junk must not grow the report
    // without bound.
    let unindexed: Vec<&Id> = sizes
        .keys()
        .filter(|id| !expected.contains_key(id))
        .collect();
    for id in unindexed.iter().take(20) {
        r.warnings.push(format!(
            "{}: not in any index (left by an interrupted backup; the next backup adopts it)",
            pack::pack_key(id)
        ));
    }
    if unindexed.len() > 20 {
        r.warnings.push(format!(
            "{} more packs are not in any index",
            unindexed.len() - 20
        ));
    }
    let mut header_ok: HashSet<Id> = HashSet::new();
    let mut pack_list: Vec<(&Id, &Vec<PackEntry>)> = expected.iter().collect();
    pack_list.sort_by_key(|(id, _)| **id);
    let header_results = crate::parallel::map(pack_list, 8, |(id, entries)| {
        let key = pack::pack_key(id);
        let Some(&size) = sizes.get(id) else {
            return (
                *id,
                Err(format!(
                    "{key}: listed in the index but missing from the repository"
                )),
            );
        };
        match repo.read_pack_header(id, size) {
            Ok(header) => {
                let set: HashSet<(Id, u32, u32)> =
                    header.iter().map(|e| (e.id, e.offset, e.length)).collect();
                match entries
                    .iter()
                    .find(|e| !set.contains(&(e.id, e.offset, e.length)))
                {
                    Some(e) => (
                        *id,
                        Err(format!(
                            "{key}: index says blob {} is at {}+{}, the pack header disagrees",
                            e.id.short(),
                            e.offset,
                            e.length
                        )),
                    ),
                    None => (*id, Ok(())),
                }
            }
            Err(e) => (*id, Err(e.to_string())),
        }
    });
    for (id, res) in header_results {
        match res {
            Ok(()) => {
                header_ok.insert(id);
            }
            Err(e) => r.errors.push(e),
        }
    }

    // Snapshots and everything they reference.
    let trees = TreeLoader::new(repo, &index);
    let mut seen_trees: HashSet<Id> = HashSet::new();
    let mut seen_data: HashSet<Id> = HashSet::new();
    let mut loaded = Vec::new();
    for info in snapshot_keys {
        let snap = object_id(&info.key, "snapshots/")
            .and_then(|id| repo.load_snapshot(&id).map(|s| (id, s)));
        let (sid, snap) = match snap {
            Ok(s) => s,
            Err(e) => {
                r.errors.push(e.to_string());
                continue;
            }
        };
        r.snapshots += 1;
        loaded.push((sid, snap.clone()));
        let mut stack = vec![(snap.tree, String::new())];
        while let Some((tid, path)) = stack.pop() {
            if !seen_trees.insert(tid) {
                continue;
            }
            let tree = match trees.load(&tid) {
                Ok(t) => t,
                Err(e) => {
                    r.errors
                        .push(format!("snapshot {}: {}: {e}", sid.short(), display(&path)));
                    continue;
                }
            };
            for n in &tree.nodes {
                let p = format!("{path}/{}", n.name);
                match n.kind {
                    NodeKind::Dir => match n.subtree {
                        Some(sub) => stack.push((sub, p)),
                        None => r.errors.push(format!(
                            "snapshot {}: {p}: directory without a tree",
                            sid.short()
                        )),
                    },
                    NodeKind::File => {
                        for b in &n.content {
                            if seen_data.insert(*b) && !index.contains(b) {
                                r.errors.push(format!(
                                    "snapshot {}: {p}: data blob {} is not in any index",
                                    sid.short(),
                                    b.short()
                                ));
                            }
                        }
                    }
                    NodeKind::Symlink => {}
                }
            }
        }
    }
    r.trees = seen_trees.len() as u64;
    r.data_blobs = seen_data.len() as u64;

    // Full reads.
    let mut to_read: Vec<Id> = match read_data {
        ReadData::Fraction(f) => {
            let total: u64 = header_ok.iter().map(|id| sizes[id]).sum();
            random_packs(&header_ok, &sizes, (total as f64 * f).ceil() as u64)
        }
        ReadData::Bytes(b) => random_packs(&header_ok, &sizes, b),
        _ => header_ok
            .iter()
            .copied()
            .filter(|id| match read_data {
                ReadData::None | ReadData::Fraction(_) | ReadData::Bytes(_) => false,
                ReadData::All => true,
                ReadData::Part(n, t) => {
                    u32::from_le_bytes(id.0[..4].try_into().expect("4")) % t == n - 1
                }
            })
            .collect(),
    };
    to_read.sort();
    r.packs_read = to_read.len() as u64;
    // Whole packs are read (up to 32 MiB each): as many at once as the backend wants requests
    // in flight, but never more than four packs in memory.
    let readers = repo.backend().concurrency().clamp(2, 4);
    let counters = std::sync::Arc::new(crate::progress::Counters::with_totals(
        to_read.len() as u64,
        to_read.iter().map(|id| sizes[id]).sum(),
    ));
    let reporter = crate::progress::Reporter::start_counting(
        if to_read.is_empty() {
            crate::progress::ProgressMode::Quiet
        } else {
            progress
        },
        "check",
        "packs",
        counters.clone(),
    );
    let read_errors = crate::parallel::map(to_read, readers, |id| {
        let e = verify_pack(repo, &id, sizes[&id]);
        counters
            .files_done
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        counters
            .bytes_done
            .fetch_add(sizes[&id], std::sync::atomic::Ordering::Relaxed);
        e
    });
    drop(reporter);
    for e in read_errors.into_iter().flatten() {
        r.errors.push(e);
    }
    // PostgreSQL WAL archives: no hole after the newest base backup; with --read-data, every
    // file authenticates.
    let wal = crate::wal::upkeep::check(repo, &loaded, matches!(read_data, ReadData::All))?;
    r.wal_files = wal.files;
    r.errors.extend(wal.errors);
    // Replicated SQLite logs: whole from the newest snapshot on; with --read-data, every object
    // authenticates.
    let logs = crate::sqlitelog::upkeep::check(repo, &loaded, matches!(read_data, ReadData::All))?;
    r.sqlite_objects = logs.objects;
    r.errors.extend(logs.errors);
    Ok(r)
}

/// Packs in a random order (keyed by a fresh seed, so successive runs cover different packs),
/// taken until they hold at least `want` bytes (at least one pack when `want` is above zero): the
/// amount read is what was asked for, not a coin toss per pack that can read nothing.
fn random_packs(candidates: &HashSet<Id>, sizes: &HashMap<Id, u64>, want: u64) -> Vec<Id> {
    if want == 0 || candidates.is_empty() {
        return Vec::new();
    }
    let seed: [u8; 32] = crate::crypto::random_bytes();
    let mut order: Vec<(blake3::Hash, Id)> = candidates
        .iter()
        .map(|id| (blake3::keyed_hash(&seed, &id.0), *id))
        .collect();
    order.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut got = 0u64;
    let mut out = Vec::new();
    for (_, id) in order {
        if got >= want && !out.is_empty() {
            break;
        }
        got += sizes[&id];
        out.push(id);
    }
    out
}

fn display(p: &str) -> &str {
    if p.is_empty() { "/" } else { p }
}

/// Downloads a pack and verifies its hash, header and every blob. Returns the problems found.
fn verify_pack(repo: &Repository, id: &Id, size: u64) -> Vec<String> {
    let key = pack::pack_key(id);
    let bytes = match repo.get_object(&key) {
        Ok(b) => b,
        Err(e) => return vec![e.to_string()],
    };
    let mut errs = Vec::new();
    if bytes.len() as u64 != size || Id::of_bytes(&bytes) != *id {
        errs.push(format!(
            "{key}: contents do not match the pack's name (hash): the pack is damaged"
        ));
    }
    let entries = match pack::header_len(&key, &bytes, bytes.len() as u64).and_then(|n| {
        let end = bytes.len() - 4;
        pack::decode_header(
            repo.key(),
            &key,
            &bytes[end - n as usize..end],
            bytes.len() as u64,
        )
    }) {
        Ok(e) => e,
        Err(e) => {
            errs.push(e.to_string());
            return errs;
        }
    };
    for e in &entries {
        let blob = &bytes[e.offset as usize..(e.offset + e.length) as usize];
        if let Err(err) = repo.open_blob(id, e, blob) {
            errs.push(format!("{key}: {err}"));
        }
    }
    errs
}
