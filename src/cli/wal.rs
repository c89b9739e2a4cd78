//! `wal-push`, `wal-fetch` (PostgreSQL's archive and restore commands) and `restore --to-time`.

use std::path::Path;

use super::{Global, RestoreArgs, WalFetchArgs, WalPushArgs};
use crate::error::{Error, Result};
use crate::restore::{self, RestoreOptions};
use crate::wal::{Fetched, Pushed, WalArchive, socket};

/// wal-fetch's exit code when recovery must stop: PostgreSQL treats an exit status above 125
/// from restore_command as fatal, instead of as "file not archived" (which ends recovery and
/// starts a new timeline, silently dropping whatever the archive could not deliver).
pub const EXIT_FETCH_FATAL: u8 = 126;

fn file_name(p: &Path) -> Result<String> {
    p.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string)
        .ok_or_else(|| Error::invalid(format!("{}: not a WAL file path", p.display())))
}

fn volume(name: &Option<String>) -> Result<&str> {
    name.as_deref().filter(|n| !n.is_empty()).ok_or_else(|| {
        Error::invalid("no volume name: pass --socket (the agent's) or --name / LIFEBOAT_NAME")
    })
}

/// Stores one WAL file; exit 0 only once it is in the repository.
pub(super) fn push(g: &Global, a: &WalPushArgs) -> Result<u8> {
    let name = file_name(&a.file)?;
    let bytes = std::fs::read(&a.file)
        .map_err(|e| Error::io(format!("reading WAL file {}", a.file.display()), e))?;
    match &a.socket {
        Some(s) => socket::push(s, &name, &bytes)?,
        None => {
            let repo = super::commands::open(g)?;
            if let Pushed::Stored(n) =
                WalArchive::new(&repo, volume(&a.name)?).push(&name, &bytes)?
            {
                tracing::debug!(bytes = n, "stored");
            }
        }
    }
    Ok(0)
}

/// Fetches one WAL file; see [`EXIT_FETCH_FATAL`].
pub(super) fn fetch(g: &Global, a: &WalFetchArgs) -> Result<u8> {
    let r = match &a.socket {
        Some(s) => socket::fetch(s, &a.file),
        None => super::commands::open(g)
            .and_then(|repo| Ok((repo, volume(&a.name)?.to_string())))
            .and_then(|(repo, v)| WalArchive::new(&repo, &v).fetch_checked(&a.file)),
    };
    match r {
        Ok(Fetched::Found(b)) => {
            let tmp = a.dest.with_extension("lifeboat-tmp");
            std::fs::write(&tmp, &b)
                .and_then(|()| std::fs::rename(&tmp, &a.dest))
                .map_err(|e| Error::io(format!("writing {}", a.dest.display()), e))?;
            Ok(0)
        }
        Ok(Fetched::NotFound) => {
            eprintln!("lifeboat: wal-fetch: {} is not in the archive", a.file);
            Ok(1)
        }
        Ok(Fetched::Hole(m)) => {
            eprintln!("lifeboat: wal-fetch: {m}");
            Ok(EXIT_FETCH_FATAL)
        }
        Err(e) => {
            eprintln!(
                "lifeboat: wal-fetch: {}: {e}; recovery stops here rather than end early (fix the repository access and start the server again)",
                a.file
            );
            Ok(EXIT_FETCH_FATAL)
        }
    }
}

/// `restore --to-time`: the newest base backup before the target, with recovery settings that
/// replay the archive up to it.
pub(super) fn restore_to_time(g: &Global, a: &RestoreArgs) -> Result<u8> {
    let target = crate::capture::postgres::parse_target(
        a.to_time.as_deref().unwrap_or_default(),
        "--to-time",
    )?;
    if a.snapshot != "latest" {
        return Err(Error::invalid(
            "--to-time chooses the base backup itself: give `latest` as the snapshot",
        ));
    }
    let name = volume(&a.name)?;
    let repo = super::commands::open(g)?;
    if super::sqlite::is_sqlite_volume(&repo, name)? {
        return super::sqlite::restore_to_time(g, a, &repo, name);
    }
    let (id, snap) = crate::wal::base_backup_before(&repo, name, &target)?;
    let mut opts = RestoreOptions::new(&a.target);
    opts.overwrite = a.overwrite;
    let out = restore::restore(&repo, &snap, &opts)?;
    if !out.errors.is_empty() {
        for e in &out.errors {
            eprintln!("lifeboat: restore: {e}");
        }
        return Err(Error::corrupt(
            format!("snapshot {}", id.short()),
            "restore incomplete: the base backup cannot be recovered",
        ));
    }
    let datadir = crate::capture::postgres::datadir_in(&a.target, &snap);
    let exe = std::env::current_exe().map_err(|e| Error::io("finding the lifeboat binary", e))?;
    let command = format!("{} wal-fetch --name {name} %f %p", exe.display());
    crate::capture::postgres::write_recovery_settings(&datadir, &command, Some(&target))?;
    if !g.quiet {
        println!(
            "restored base backup {} to {}; PostgreSQL replays the archived WAL up to {target} when started on {} (with LIFEBOAT_REPOSITORY and LIFEBOAT_PASSWORD or LIFEBOAT_PASSWORD_FILE in its environment), then promotes",
            id.short(),
            a.target.display(),
            datadir.display()
        );
    }
    Ok(0)
}
