//! The SQLite half of `restore`: bringing restored databases to their newest replicated state
//! after a plain restore, and `restore --to-time` for volumes captured with the sqlite method.

use super::{Global, RestoreArgs};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::repository::Repository;
use crate::repository::snapshot::Snapshot;
use crate::restore::{self, RestoreOptions};

/// Whether the volume's newest snapshot was taken with the sqlite method (`--to-time` then
/// means this module's point-in-time restore, not PostgreSQL's).
pub(super) fn is_sqlite_volume(repo: &Repository, name: &str) -> Result<bool> {
    Ok(repo
        .snapshots()?
        .into_iter()
        .filter(|(_, s)| s.name == name)
        .max_by_key(|(_, s)| s.time)
        .is_some_and(|(_, s)| s.method == "sqlite"))
}

/// Applies the replicated changes to every database the snapshot holds a copy of, in the
/// restored `target`, and says what each database now reflects. No-op for other snapshots.
pub(super) fn replay(
    g: &Global,
    repo: &Repository,
    snap: &Snapshot,
    target: &std::path::Path,
    until: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<()> {
    for (db, r) in crate::capture::sqlite::replay_all(repo, snap, target, until)? {
        if !g.quiet && !g.json {
            println!(
                "  SQLite {db}: {} replicated change set(s) applied; reflects changes up to {}{} (PRAGMA quick_check: ok)",
                r.segments,
                r.time.map_or("the copy".to_string(), |t| t
                    .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
                if r.after_target > 0 {
                    format!(", {} later one(s) left out", r.after_target)
                } else {
                    String::new()
                }
            );
        }
    }
    Ok(())
}

/// `restore latest --to-time T` on a sqlite volume: the newest snapshot whose database copies
/// predate T for the files, and the databases replayed up to T.
pub(super) fn restore_to_time(
    g: &Global,
    a: &RestoreArgs,
    repo: &Repository,
    name: &str,
) -> Result<u8> {
    let text = a.to_time.as_deref().unwrap_or_default();
    let until = chrono::DateTime::parse_from_rfc3339(text)
        .map_err(|e| Error::invalid(format!("--to-time {text:?} is not an RFC 3339 time: {e}")))?
        .with_timezone(&chrono::Utc);
    let (id, snap): (Id, Snapshot) = crate::sqlitelog::snapshot_before(repo, name, until)?;
    let mut opts = RestoreOptions::new(&a.target);
    opts.overwrite = a.overwrite;
    let out = restore::restore(repo, &snap, &opts)?;
    if !out.errors.is_empty() {
        for e in &out.errors {
            eprintln!("lifeboat: restore: {e}");
        }
        return Err(Error::corrupt(
            format!("snapshot {}", id.short()),
            "restore incomplete: the databases were not brought forward",
        ));
    }
    if !g.quiet {
        println!(
            "restored snapshot {} of {} to {}: the other files are as of that snapshot (the newest before {}); the databases are brought to that time:",
            id.short(),
            snap.time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            a.target.display(),
            until.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        );
    }
    replay(g, repo, &snap, &a.target, Some(until))?;
    Ok(0)
}
