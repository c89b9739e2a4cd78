//! Prune: removes packs no snapshot needs and repacks mostly-unused ones, in two phases, with no
//! lock, while any number of backups run (docs/FORMAT.md §11a has the argument).
//!
//! One run does both phases:
//! 1. **Sweep** every prune mark that is ripe: older than the grace period, and no live backup
//!    started before it. The packs it names are re-checked against the snapshots as they are now;
//!    those still unneeded leave the index (a superseding index object) and are deleted.
//! 2. **Mark** what is unneeded now: packs nothing references, packs no index lists (left by a
//!    killed backup), and, past `--max-unused`, packs whose live blobs are first copied into new
//!    packs. Nothing is deleted here; the mark is swept by a later run.
//!
//! Packs younger than the oldest live backup are never marked: they may belong to it. Packs
//! younger than 30 days are not repacked unless asked: Storj bills deleted objects for 30 days
//! anyway, so repacking them early costs more than it saves.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::backup::PackWriter;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::progress::{Counters, Reporter};
use crate::repository::gc::{GC_RECORD_VERSION, PruneMark, heartbeat_interval};
use crate::repository::index::{Index, IndexFile};
use crate::repository::pack::{self, PackEntry};
use crate::repository::tree::NodeKind;
use crate::repository::{Repository, TreeLoader, object_id, verify_object_id};

/// Prune settings.
#[derive(Debug, Clone)]
pub struct PruneOptions {
    /// How long a mark waits before its sweep, and how stale a writer record must be to count
    /// as dead. At least three heartbeat intervals.
    pub grace: Duration,
    /// Unused bytes left in partly used packs, as a fraction of the used bytes, before repacking.
    pub max_unused: f64,
    /// Packs younger than this are not repacked (Storj's minimum storage duration)…
    pub young: Duration,
    /// …unless this is set.
    pub repack_young: bool,
    /// Report only.
    pub dry_run: bool,
    /// How to show the repack's and the sweep's progress.
    pub progress: crate::progress::ProgressMode,
    /// Delete in this run what it marks, instead of after the grace period, when no backup is
    /// running and none can start unseen (docs/FORMAT.md §11a, "prune --now"); refuse otherwise.
    pub now: bool,
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            grace: Duration::from_secs(24 * 3600),
            max_unused: 0.05,
            young: Duration::from_secs(30 * 24 * 3600),
            repack_young: false,
            dry_run: false,
            progress: crate::progress::ProgressMode::Quiet,
            now: false,
        }
    }
}

/// A mark that is not swept yet, and why.
#[derive(Debug, Clone, Serialize)]
pub struct WaitingMark {
    /// Mark id.
    pub mark: String,
    /// Packs it names.
    pub packs: usize,
    /// Why it waits.
    pub reason: String,
}

/// What prune did (or, with `--dry-run`, would do).
#[derive(Debug, Clone, Default, Serialize)]
pub struct PruneReport {
    /// Nothing was changed.
    pub dry_run: bool,
    /// Backups running now (live writer records).
    pub writers_live: usize,
    /// Stale writer records removed (backups that died).
    pub writers_removed: usize,
    /// Marks swept.
    pub marks_swept: usize,
    /// Packs deleted by the sweep.
    pub packs_deleted: usize,
    /// Bytes deleted by the sweep.
    pub bytes_deleted: u64,
    /// Marked packs kept after all because a snapshot written since needs them.
    pub packs_rescued: usize,
    /// Marks left for a later run.
    pub marks_waiting: Vec<WaitingMark>,
    /// Packs in the repository after the sweep.
    pub packs_total: usize,
    /// Their bytes.
    pub bytes_total: u64,
    /// Bytes of blobs some snapshot needs.
    pub bytes_used: u64,
    /// Packs marked by this run (to delete after the grace period).
    pub packs_marked: usize,
    /// Their bytes.
    pub bytes_marked: u64,
    /// Of those, packs whose live blobs were copied out first.
    pub packs_repacked: usize,
    /// Blobs copied.
    pub blobs_repacked: usize,
    /// Bytes written in new packs.
    pub bytes_repacked: u64,
    /// Partly used packs left alone because they are younger than `young`.
    pub packs_young_kept: usize,
    /// Unused bytes in them.
    pub bytes_young_unused: u64,
    /// The mark written, if any.
    pub mark: Option<String>,
    /// Archived WAL files older than every kept base backup, deleted (counted with --dry-run).
    pub wal_files_deleted: usize,
    /// Replicated SQLite change sets no kept snapshot can use, deleted (counted with --dry-run).
    pub sqlite_objects_deleted: usize,
}

/// Runs one prune: sweep what is ripe, then mark what is unneeded now. With `now`, a second pass
/// sweeps every mark at once, including the one just written, after listing the writers again.
pub fn prune(repo: &Repository, opts: &PruneOptions) -> Result<PruneReport> {
    if !opts.now || opts.dry_run {
        return prune_pass(repo, opts, Pass::Normal);
    }
    let first = prune_pass(repo, opts, Pass::NowMark)?;
    let second = prune_pass(repo, opts, Pass::NowSweep)?;
    Ok(PruneReport {
        writers_removed: first.writers_removed + second.writers_removed,
        marks_swept: first.marks_swept + second.marks_swept,
        packs_deleted: first.packs_deleted + second.packs_deleted,
        bytes_deleted: first.bytes_deleted + second.bytes_deleted,
        packs_rescued: first.packs_rescued + second.packs_rescued,
        marks_waiting: second.marks_waiting,
        packs_total: second.packs_total,
        bytes_total: second.bytes_total,
        bytes_used: second.bytes_used,
        mark: second.mark.or(first.mark),
        packs_marked: first.packs_marked + second.packs_marked,
        bytes_marked: first.bytes_marked + second.bytes_marked,
        ..first
    })
}

/// Which pass of a prune this is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// Sweep what is ripe, mark what is unneeded.
    Normal,
    /// `--now`, first pass: as `Normal`, refusing if a writer is live, and judging every pack
    /// written before the run began (no allowance: a writer that begins later is caught by the
    /// second pass's listing).
    NowMark,
    /// `--now`, second pass: a new writer listing; if it is still empty, every mark is ripe.
    NowSweep,
}

fn prune_pass(repo: &Repository, opts: &PruneOptions, pass: Pass) -> Result<PruneReport> {
    let hb = heartbeat_interval();
    if opts.grace < hb * 3 {
        return Err(Error::invalid(format!(
            "--grace {}s is shorter than three heartbeat intervals ({}s): backups would look dead while running",
            opts.grace.as_secs_f64(),
            (hb * 3).as_secs_f64()
        )));
    }
    if !(0.0..=1.0).contains(&opts.max_unused) {
        return Err(Error::invalid(
            "--max-unused must be a percentage between 0% and 100%",
        ));
    }
    let mut report = PruneReport {
        dry_run: opts.dry_run,
        ..Default::default()
    };
    let grace = chrono::Duration::from_std(opts.grace).expect("grace fits");
    // How far clocks of different machines may disagree, and how long a write may take to show.
    let allowance = if pass == Pass::Normal {
        chrono::Duration::from_std((opts.grace / 4).min(Duration::from_secs(300)))
            .expect("allowance fits")
    } else {
        chrono::Duration::zero()
    };

    // 1. Who is running. Everything below is decided after this listing.
    let t0 = Utc::now();
    let mut live_starts = Vec::new();
    let mut live: Vec<String> = Vec::new();
    for (id, w) in repo.writers()? {
        let (refreshed, start) = match &w {
            Ok(r) => (Some(r.refreshed), Some(r.start)),
            Err((e, modified)) => {
                tracing::warn!("writers/{id}: {e}");
                (*modified, None)
            }
        };
        let dead = refreshed.is_some_and(|r| t0 - r > grace);
        if dead {
            report.writers_removed += 1;
            if !opts.dry_run {
                repo.delete_writer(&id)?;
            }
        } else {
            report.writers_live += 1;
            live.push(match &w {
                Ok(r) => format!(
                    "volume {:?} on host {} (pid {}), heartbeat {}s ago",
                    r.name,
                    r.hostname,
                    r.pid,
                    (t0 - r.refreshed).num_seconds()
                ),
                Err(_) => format!("writers/{id} (unreadable)"),
            });
            // An unreadable but fresh record: assume it started long ago.
            live_starts.push(start.unwrap_or(DateTime::<Utc>::MIN_UTC));
        }
    }
    let oldest_writer = live_starts.iter().min().copied();
    if pass != Pass::Normal && !live.is_empty() {
        let when = if pass == Pass::NowMark {
            "prune --now refused, nothing changed"
        } else {
            "prune --now: a backup started during this prune, so what it marked is deleted only after the grace period, by a later prune"
        };
        return Err(Error::invalid(format!(
            "{when}: live writer(s) {}; wait for them to finish, or if they died, prune again after --grace ({}s now) has passed since their last heartbeat",
            live.join("; "),
            opts.grace.as_secs()
        )));
    }

    // 2. What the snapshots need, listed after the writers.
    // Snapshots before the index: a snapshot is written after its index, so every snapshot
    // listed here finds its blobs in the index loaded next.
    let snapshots = repo.snapshots_strict()?;
    report.wal_files_deleted = crate::wal::upkeep::prune(repo, &snapshots, opts.dry_run)?;
    report.sqlite_objects_deleted =
        crate::sqlitelog::upkeep::prune(repo, &snapshots, opts.dry_run)?;
    // One listing of marks and of index objects serves the sweep; the mark phase reloads the
    // index only if the sweep changed it.
    let marks = repo.prune_marks()?;
    let marked = |keep: &dyn Fn(&Id) -> bool| -> HashSet<Id> {
        marks
            .iter()
            .filter(|(id, _)| keep(id))
            .flat_map(|(_, m)| m.packs.iter().copied())
            .collect()
    };
    let mut files = repo.index_files()?;
    let mut index = Index::from_files(&files, marked(&|_| true));
    let used = used_blobs(repo, &index, &snapshots)?;

    // 3. Sweep.
    let mut ripe = Vec::new();
    for (id, m) in &marks {
        let wait = grace.max(chrono::Duration::seconds(m.grace_seconds as i64));
        let reason = if pass == Pass::NowSweep {
            None
        } else if t0 < m.created + wait {
            Some(format!(
                "grace period ends at {}",
                (m.created + wait).format("%Y-%m-%d %H:%M:%S UTC")
            ))
        } else if oldest_writer.is_some_and(|s| s <= m.created + allowance) {
            Some("a backup that started before the mark is still running".to_string())
        } else {
            None
        };
        match reason {
            Some(reason) => report.marks_waiting.push(WaitingMark {
                mark: id.to_hex(),
                packs: m.packs.len(),
                reason,
            }),
            None => ripe.push((*id, m)),
        }
    }
    let listed = repo.backend().list("data/")?;
    let mut sizes: HashMap<Id, (u64, Option<SystemTime>)> = HashMap::new();
    for info in &listed {
        if let Ok(id) = object_id(&info.key, "data/") {
            sizes.insert(id, (info.size, info.modified));
        }
    }
    let mut doomed = HashSet::new();
    if !ripe.is_empty() {
        let entries = pack_entries(&files);
        for (_, m) in &ripe {
            for p in &m.packs {
                // Kept if a snapshot written since the mark needs a blob found only here.
                let needed = entries.get(p).is_some_and(|es| {
                    es.iter()
                        .any(|e| used.contains(&e.id) && !index.reusable(&e.id))
                });
                if needed {
                    report.packs_rescued += 1;
                } else {
                    doomed.insert(*p);
                }
            }
        }
        for p in &doomed {
            if let Some((size, _)) = sizes.get(p) {
                report.packs_deleted += 1;
                report.bytes_deleted += size;
            }
        }
        report.marks_swept = ripe.len();
        if !opts.dry_run {
            // Order matters for a kill at any point: the index stops naming the packs first,
            // then the packs go, then the old index objects, and the mark last.
            let gone = repo.rewrite_index_without(&doomed)?;
            let mut sorted: Vec<&Id> = doomed.iter().collect();
            sorted.sort();
            let (counters, reporter) = progress(
                opts,
                "prune: deleting",
                sorted.len(),
                sorted
                    .iter()
                    .filter_map(|p| sizes.get(p))
                    .map(|s| s.0)
                    .sum(),
            );
            for p in sorted {
                repo.backend().delete(&pack::pack_key(p))?;
                counters.files_done.fetch_add(1, Relaxed);
                counters
                    .bytes_done
                    .fetch_add(sizes.get(p).map_or(0, |s| s.0), Relaxed);
            }
            drop(reporter);
            repo.delete_index_objects(&gone)?;
            for (id, _) in &ripe {
                repo.delete_prune_mark(id)?;
            }
            files = repo.index_files()?;
            index = Index::from_files(&files, marked(&|id| !ripe.iter().any(|(r, _)| r == id)));
        }
        for p in &doomed {
            sizes.remove(p);
        }
    }

    // 4. Mark.
    let still_marked = marked(&|id| !ripe.iter().any(|(r, _)| r == id));
    // Packs written after this are not ours to judge: they may belong to a running backup.
    let cutoff: SystemTime = (oldest_writer.map_or(t0, |s| s.min(t0)) - allowance).into();
    let young_cutoff = SystemTime::now()
        .checked_sub(opts.young)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let entries = pack_entries(&files);

    // Which pack provides each needed blob: the newest one holding it (a repacked copy wins over
    // the original), never a marked one if another copy exists.
    let mut order: Vec<(&Id, &(u64, Option<SystemTime>))> = sizes.iter().collect();
    order.sort_by_key(|(id, (_, m))| (still_marked.contains(id), std::cmp::Reverse(*m), **id));
    let mut provided: HashSet<Id> = HashSet::with_capacity(used.len());
    let mut usage: HashMap<Id, u64> = HashMap::new();
    for (id, _) in &order {
        let Some(es) = entries.get(id) else { continue };
        let mut bytes = 0;
        for e in es {
            if used.contains(&e.id) && provided.insert(e.id) {
                bytes += e.length as u64;
            }
        }
        usage.insert(**id, bytes);
    }

    let mut delete = Vec::new();
    let mut partial = Vec::new();
    let mut unused_partial: u64 = 0;
    for (id, &(size, modified)) in &sizes {
        report.packs_total += 1;
        report.bytes_total += size;
        let used_bytes = usage.get(id).copied().unwrap_or(0);
        report.bytes_used += used_bytes;
        if still_marked.contains(id) {
            continue;
        }
        let old_enough = modified.is_some_and(|m| m < cutoff);
        if used_bytes == 0 {
            if old_enough {
                delete.push(*id);
            }
            continue;
        }
        let unused = size.saturating_sub(used_bytes);
        if unused == 0 {
            continue;
        }
        unused_partial += unused;
        if !old_enough {
            continue;
        }
        if !opts.repack_young && modified.is_none_or(|m| m > young_cutoff) {
            report.packs_young_kept += 1;
            report.bytes_young_unused += unused;
            continue;
        }
        partial.push((*id, size, unused));
    }
    // Repack the emptiest packs first until what stays unused is within the limit.
    partial.sort_by(|a, b| {
        (b.2 as f64 / b.1 as f64)
            .total_cmp(&(a.2 as f64 / a.1 as f64))
            .then(a.0.cmp(&b.0))
    });
    let allowed = (report.bytes_used as f64 * opts.max_unused) as u64;
    let mut repack = Vec::new();
    for (id, _, unused) in partial {
        if unused_partial <= allowed {
            break;
        }
        unused_partial -= unused;
        repack.push(id);
    }
    delete.sort();
    repack.sort();
    for id in delete.iter().chain(&repack) {
        report.packs_marked += 1;
        report.bytes_marked += sizes[id].0;
    }
    report.packs_repacked = repack.len();
    if opts.dry_run {
        // At most this many; a blob another kept pack also holds is not copied.
        for id in &repack {
            report.blobs_repacked += entries[id].iter().filter(|e| used.contains(&e.id)).count();
        }
        return Ok(report);
    }
    if !repack.is_empty() {
        // The new packs are unindexed until the copy ends: a writer record keeps another
        // prune from taking them for leftovers meanwhile.
        let (blobs, bytes) = crate::backup::Heartbeat::scope(repo, "prune", |_| {
            let (counters, reporter) = progress(
                opts,
                "prune: repacking",
                repack.len(),
                repack.iter().map(|p| sizes[p].0).sum(),
            );
            let out = copy_live_blobs(repo, &index, &entries, &used, &repack, &counters);
            drop(reporter);
            out
        })?;
        report.blobs_repacked = blobs;
        report.bytes_repacked = bytes;
    }
    let mut packs = delete;
    packs.extend(repack);
    if !packs.is_empty() {
        let mark = PruneMark {
            version: GC_RECORD_VERSION,
            created: Utc::now(),
            grace_seconds: opts.grace.as_secs(),
            packs,
        };
        report.mark = Some(repo.save_prune_mark(&mark)?.to_hex());
    }
    Ok(report)
}

/// Counters and a reporter for `packs` packs of `bytes` bytes.
fn progress(
    opts: &PruneOptions,
    verb: &'static str,
    packs: usize,
    bytes: u64,
) -> (Arc<Counters>, Reporter) {
    let c = Arc::new(Counters::with_totals(packs as u64, bytes));
    let r = Reporter::start_counting(opts.progress, verb, "packs", c.clone());
    (c, r)
}

/// Every indexed pack's entries, from the live index objects.
fn pack_entries(files: &[(Id, IndexFile)]) -> HashMap<Id, Vec<PackEntry>> {
    let mut out = HashMap::new();
    for (_, f) in files {
        for (p, es) in &f.packs {
            out.entry(*p).or_insert_with(|| es.clone());
        }
    }
    out
}

/// Every tree and data blob some snapshot references. A snapshot or tree that cannot be read is
/// an error: prune must not guess what it would have needed.
pub fn used_blobs(
    repo: &Repository,
    index: &Index,
    snapshots: &[(Id, crate::repository::snapshot::Snapshot)],
) -> Result<HashSet<Id>> {
    let trees = TreeLoader::new(repo, index);
    let mut used = HashSet::new();
    for (sid, snap) in snapshots {
        let mut stack = vec![snap.tree];
        while let Some(t) = stack.pop() {
            if !used.insert(t) {
                continue;
            }
            let tree = trees.load(&t).map_err(|e| {
                Error::invalid(format!(
                    "snapshot {} cannot be read ({e}); prune will not guess what it needs: run `lifeboat check`, then `lifeboat repair snapshots`",
                    sid.short()
                ))
            })?;
            for n in tree.nodes {
                match n.kind {
                    NodeKind::Dir => stack.extend(n.subtree),
                    NodeKind::File => used.extend(n.content),
                    NodeKind::Symlink => {}
                }
            }
        }
    }
    Ok(used)
}

/// Copies the blobs of `packs` that a snapshot needs (and no other kept pack holds) into new
/// packs, verified on the way, then indexes them. Returns (blobs, bytes written).
fn copy_live_blobs(
    repo: &Repository,
    index: &Index,
    entries: &HashMap<Id, Vec<PackEntry>>,
    used: &HashSet<Id>,
    packs: &[Id],
    counters: &Counters,
) -> Result<(usize, u64)> {
    let leaving: HashSet<Id> = packs.iter().copied().collect();
    let mut out = PackWriter::new(repo);
    let mut copied = HashSet::new();
    for id in packs {
        let key = pack::pack_key(id);
        let data = repo.get_object(&key)?;
        verify_object_id(&key, id, &data)?;
        counters.files_done.fetch_add(1, Relaxed);
        counters.bytes_done.fetch_add(data.len() as u64, Relaxed);
        for e in &entries[id] {
            if !used.contains(&e.id) || copied.contains(&e.id) {
                continue;
            }
            // Another pack that stays already has it.
            if let Some(loc) = index.get(&e.id) {
                let holder = index.pack_id(loc.pack);
                if !leaving.contains(&holder) && !index.is_marked(&holder) {
                    continue;
                }
            }
            let end = e.offset as usize + e.length as usize;
            if end > data.len() {
                return Err(Error::corrupt(&key, "shorter than its index entries say"));
            }
            let sealed = &data[e.offset as usize..end];
            // Never carry damage forward: the copy must decrypt and hash to its id.
            repo.open_blob(id, e, sealed)?;
            copied.insert(e.id);
            out.copy(e, sealed)?;
        }
    }
    let bytes = out.bytes;
    out.finish()?;
    Ok((copied.len(), bytes))
}
