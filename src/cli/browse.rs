//! The everyday read-and-reorganize commands restic users reach for: `diff`, `find`, `stats`,
//! `dump`, `tag` and `copy`. Each prints text, or with `--json` one JSON object per line where it
//! lists (`diff`, `find`) and one object where it summarizes.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;
use serde_json::json;

use super::Global;
use super::commands::open;
use crate::browse::{self, Filter};
use crate::error::{Error, Result};
use crate::format;
use crate::repository::{Repository, TreeLoader};

/// Which snapshots: ids, or all those of a volume name, a host, tags.
#[derive(Args, Debug, Clone)]
pub(super) struct FilterArgs {
    /// Only snapshots of this volume name (and `latest` means its latest).
    #[arg(long, env = "LIFEBOAT_NAME")]
    name: Option<String>,
    /// Only snapshots made on this host.
    #[arg(long)]
    host: Option<String>,
    /// Only snapshots with this tag (repeatable: all of them).
    #[arg(long = "tag")]
    tags: Vec<String>,
}

impl FilterArgs {
    fn filter(&self, ids: &[String]) -> Filter {
        Filter {
            ids: ids.to_vec(),
            name: self.name.clone(),
            host: self.host.clone(),
            tags: self.tags.clone(),
        }
    }
}

#[derive(Args, Debug)]
pub(super) struct DiffArgs {
    /// The older snapshot (id prefix or `latest`).
    first: String,
    /// The newer snapshot.
    second: String,
    /// With `latest`: the latest of this volume name.
    #[arg(long, env = "LIFEBOAT_NAME")]
    name: Option<String>,
}

#[derive(Args, Debug)]
pub(super) struct FindArgs {
    /// Name (`*.db`) or path (`/data/**/*.db`) globs; an entry matching any is listed.
    #[arg(required = true)]
    patterns: Vec<String>,
    /// Only in this snapshot (repeatable; default: every selected snapshot).
    #[arg(long = "snapshot", short = 's')]
    snapshots: Vec<String>,
    #[command(flatten)]
    filter: FilterArgs,
    /// Long listing: type, mode, size, mtime.
    #[arg(short, long)]
    long: bool,
}

#[derive(Args, Debug)]
pub(super) struct StatsArgs {
    /// Snapshots (default: every selected snapshot).
    snapshots: Vec<String>,
    #[command(flatten)]
    filter: FilterArgs,
}

#[derive(Args, Debug)]
pub(super) struct DumpArgs {
    /// Snapshot id (prefix) or `latest`.
    snapshot: String,
    /// A file (its bytes are written) or a directory (`/` for everything: a tar archive), as
    /// `ls` prints paths.
    path: String,
    /// With `latest`: the latest of this volume name.
    #[arg(long, env = "LIFEBOAT_NAME")]
    name: Option<String>,
    /// Write here instead of standard output.
    #[arg(long, short = 'o')]
    target: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub(super) struct TagArgs {
    /// Snapshots (default: every selected snapshot).
    snapshots: Vec<String>,
    #[command(flatten)]
    filter: FilterArgs,
    /// Add this tag (repeatable).
    #[arg(long)]
    add: Vec<String>,
    /// Remove this tag (repeatable).
    #[arg(long)]
    remove: Vec<String>,
    /// Replace all tags with these (repeatable; give it once with an empty value to clear).
    #[arg(long)]
    set: Vec<String>,
}

#[derive(Args, Debug)]
pub(super) struct CopyArgs {
    /// Snapshots to copy (default: every selected snapshot).
    snapshots: Vec<String>,
    #[command(flatten)]
    filter: FilterArgs,
    /// The destination repository (it must exist: `lifeboat init -r …` first).
    #[arg(long = "to", env = "LIFEBOAT_TO_REPOSITORY", hide_env_values = true)]
    to: String,
    /// The destination's password file (else LIFEBOAT_TO_PASSWORD, else a prompt).
    #[arg(long, env = "LIFEBOAT_TO_PASSWORD_FILE")]
    to_password_file: Option<PathBuf>,
    /// A command printing the destination's password.
    #[arg(long, env = "LIFEBOAT_TO_PASSWORD_COMMAND")]
    to_password_command: Option<String>,
}

pub(super) fn diff(g: &Global, a: &DiffArgs) -> Result<u8> {
    let repo = open(g)?;
    let (ia, sa) = repo.find_snapshot(&a.first, a.name.as_deref())?;
    let (ib, sb) = repo.find_snapshot(&a.second, a.name.as_deref())?;
    let index = repo.load_index()?;
    let trees = TreeLoader::new(&repo, &index);
    let (changes, st) = browse::diff::diff(&trees, &index, sa.tree, sb.tree)?;
    let mut out = std::io::stdout().lock();
    if g.json {
        for c in &changes {
            line(
                &mut out,
                &json!({"message_type": "change", "modifier": c.modifier.to_string(), "path": c.path}),
            )?;
        }
        line(
            &mut out,
            &json!({"message_type": "statistics", "source_snapshot": ia.to_hex(), "target_snapshot": ib.to_hex(), "changes": st}),
        )?;
        return Ok(0);
    }
    println!("comparing snapshot {} to {}:", ia.short(), ib.short());
    for c in &changes {
        writeln!(out, "{}    {}", c.modifier, c.path).map_err(|e| Error::io("stdout", e))?;
    }
    println!(
        "\n{} added, {} removed, {} changed, {} metadata only, {} type changed\ndata: added {} in {} blob(s), removed {} in {} blob(s)",
        st.added,
        st.removed,
        st.modified,
        st.metadata,
        st.type_changed,
        format::bytes(st.bytes_added),
        st.blobs_added,
        format::bytes(st.bytes_removed),
        st.blobs_removed
    );
    Ok(0)
}

fn line(out: &mut impl Write, v: &serde_json::Value) -> Result<()> {
    writeln!(out, "{v}").map_err(|e| Error::io("stdout", e))
}

pub(super) fn find(g: &Global, a: &FindArgs) -> Result<u8> {
    let repo = open(g)?;
    let snaps = a.filter.filter(&a.snapshots).select(&repo)?;
    let index = repo.load_index()?;
    let trees = TreeLoader::new(&repo, &index);
    let mut finder = browse::find::Finder::new(&trees, browse::find::Patterns::new(&a.patterns)?);
    let mut out = std::io::stdout().lock();
    let mut hits = 0usize;
    let mut in_snaps = 0usize;
    for (id, s) in &snaps {
        let found = finder.find(s.tree)?;
        if found.is_empty() {
            continue;
        }
        hits += found.len();
        in_snaps += 1;
        if g.json {
            for e in &found {
                let mut v = serde_json::to_value(e).expect("serializes");
                v["snapshot"] = json!(id.to_hex());
                v["name"] = json!(s.name);
                line(&mut out, &v)?;
            }
            continue;
        }
        writeln!(
            out,
            "found in snapshot {} of volume {:?} from {}:",
            id.short(),
            s.name,
            s.time.format("%Y-%m-%d %H:%M:%S")
        )
        .map_err(|e| Error::io("stdout", e))?;
        for e in &found {
            let l = if a.long {
                format!("  {}", e.long())
            } else {
                format!("  {}", e.path)
            };
            writeln!(out, "{l}").map_err(|e| Error::io("stdout", e))?;
        }
    }
    if !g.json && !g.quiet {
        eprintln!(
            "{hits} match(es) in {in_snaps} of {} snapshot(s)",
            snaps.len()
        );
    }
    // Like grep: no match is not an error, but a script can tell.
    Ok(if hits == 0 { 1 } else { 0 })
}

pub(super) fn stats(g: &Global, a: &StatsArgs) -> Result<u8> {
    let repo = open(g)?;
    let snaps = a.filter.filter(&a.snapshots).select(&repo)?;
    let index = repo.load_index()?;
    let trees = TreeLoader::new(&repo, &index);
    let st = browse::stats::stats(&trees, &index, &snaps)?;
    if g.json {
        let volumes: serde_json::Map<String, serde_json::Value> = st
            .iter()
            .filter_map(|(k, v)| k.as_ref().map(|k| (k.clone(), json!(v))))
            .collect();
        println!(
            "{}",
            json!({"volumes": volumes, "total": st.get(&None).cloned().unwrap_or_default()})
        );
        return Ok(0);
    }
    for (name, v) in &st {
        let title = match name {
            Some(n) => format!("volume {n:?}"),
            None if st.len() > 2 => "all selected snapshots".to_string(),
            None => continue,
        };
        println!(
            "{title}: {} snapshot(s)\n  latest restores {} files, {}\n  all of them restore {}; stored once: {} in {} blob(s), {} after compression and encryption (+ {} of trees)\n  deduplication {:.1}x, compression {:.2}x",
            v.snapshots,
            v.latest_files,
            format::bytes(v.latest_bytes),
            format::bytes(v.restore_bytes),
            format::bytes(v.raw_bytes),
            v.blobs,
            format::bytes(v.stored_bytes),
            format::bytes(v.tree_stored_bytes),
            v.dedup_ratio(),
            v.compression_ratio()
        );
    }
    if st.is_empty() {
        println!("no snapshots");
    }
    Ok(0)
}

pub(super) fn dump(g: &Global, a: &DumpArgs) -> Result<u8> {
    let repo = open(g)?;
    let (_, snap) = repo.find_snapshot(&a.snapshot, a.name.as_deref())?;
    let index = repo.load_index()?;
    let trees = TreeLoader::new(&repo, &index);
    let (path, node) = browse::resolve(&trees, &snap, &a.path)?;
    let shown = if path.is_empty() { "/" } else { &path };
    if a.target.is_none()
        && node.kind == crate::repository::tree::NodeKind::Dir
        && std::io::IsTerminal::is_terminal(&std::io::stdout())
    {
        return Err(Error::invalid(format!(
            "dump {shown}: refusing to write a tar archive to a terminal; redirect it (> {}.tar) or pass -o FILE",
            shown
                .rsplit('/')
                .next()
                .filter(|s| !s.is_empty())
                .unwrap_or("snapshot")
        )));
    }
    let d = match &a.target {
        Some(t) => {
            // Written beside the target and renamed once complete: a failed dump leaves no
            // file that looks whole.
            let dir = t.parent().filter(|p| !p.as_os_str().is_empty());
            let mut tmp = tempfile::NamedTempFile::new_in(dir.unwrap_or(std::path::Path::new(".")))
                .map_err(|e| {
                    Error::io(format!("cannot create a file beside {}", t.display()), e)
                })?;
            let mut w = std::io::BufWriter::new(tmp.as_file_mut());
            let d = browse::dump::dump(&repo, &index, &trees, shown, &node, &mut w)?;
            w.flush()
                .map_err(|e| Error::io(format!("write {}", t.display()), e))?;
            drop(w);
            tmp.as_file()
                .sync_all()
                .map_err(|e| Error::io(format!("sync {}", t.display()), e))?;
            tmp.persist(t)
                .map_err(|e| Error::io(format!("cannot write {}", t.display()), e.error))?;
            d
        }
        None => {
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            let d = browse::dump::dump(&repo, &index, &trees, shown, &node, &mut out)?;
            out.flush().map_err(|e| Error::io("stdout", e))?;
            d
        }
    };
    if !g.quiet && !g.json {
        eprintln!(
            "dumped {shown}: {} file(s), {} dir(s), {} symlink(s), {}",
            d.files,
            d.dirs,
            d.symlinks,
            format::bytes(d.bytes)
        );
    }
    Ok(0)
}

pub(super) fn tag(g: &Global, a: &TagArgs) -> Result<u8> {
    if a.add.is_empty() && a.remove.is_empty() && a.set.is_empty() {
        return Err(Error::invalid(
            "tag: say what to change with --add, --remove or --set",
        ));
    }
    let repo = open(g)?;
    let snaps = a.filter.filter(&a.snapshots).select(&repo)?;
    let change = crate::tag::TagChange {
        set: (!a.set.is_empty()).then(|| a.set.iter().filter(|t| !t.is_empty()).cloned().collect()),
        add: a.add.clone(),
        remove: a.remove.clone(),
    };
    let done = crate::tag::tag(&repo, &snaps, &change)?;
    if g.json {
        println!("{}", json!({"changed": done, "selected": snaps.len()}));
    } else if !g.quiet {
        for r in &done {
            println!(
                "snapshot {} is now {} [{}]",
                &r.old[..8],
                &r.new[..8],
                r.tags.join(",")
            );
        }
        println!("{} of {} snapshot(s) changed", done.len(), snaps.len());
    }
    Ok(0)
}

pub(super) fn copy(g: &Global, a: &CopyArgs) -> Result<u8> {
    let src = open(g)?;
    let snaps = a.filter.filter(&a.snapshots).select(&src)?;
    let pw = super::password::repository(
        a.to_password_file.as_deref(),
        a.to_password_command.as_deref(),
        "LIFEBOAT_TO_PASSWORD",
        false,
    )?;
    let dst = Repository::open(crate::backend::open(&a.to)?, &pw)?;
    if dst.config().id == src.config().id {
        return Err(Error::invalid(format!(
            "--to {}: that is the source repository itself",
            a.to
        )));
    }
    let r = crate::copy::copy(&src, &dst, &snaps)?;
    if g.json {
        println!("{}", json!(r));
    } else if !g.quiet {
        for (from, to) in &r.copied {
            println!("copied snapshot {} as {}", &from[..8], &to[..8]);
        }
        println!(
            "{} snapshot(s) copied, {} already there; {} blob(s) stored ({}), {} already in {}{}",
            r.copied.len(),
            r.skipped.len(),
            r.blobs_stored,
            format::bytes(r.bytes_stored),
            r.blobs_deduplicated,
            dst.backend().location(),
            if r.wal_files > 0 {
                format!("; {} archived WAL file(s)", r.wal_files)
            } else {
                String::new()
            }
        );
    }
    Ok(0)
}
