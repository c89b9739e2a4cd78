//! One function per command: parse validated settings out of the raw arguments, call the
//! library, print a text summary or JSON.

use std::collections::BTreeMap;

use serde_json::json;

use super::{
    Cli, Command, ConfigCommand, Global, KeyCommand, PruneOpts, RepairCommand, SdlCommand, password,
};
use crate::agent::config::AgentConfig;
use crate::agent::gate::GateOutcome;
use crate::agent::{Mode, RepoAccess};
use crate::backend;
use crate::backup::{self, BackupOptions, Source};
use crate::check::{self, ReadData};
use crate::error::{Error, Result};
use crate::format;
use crate::progress::ProgressMode;
use crate::repository::keys::KdfParams;
use crate::repository::{InitOptions, Repository};
use crate::restore::{self, RestoreOptions};

/// Dispatches a parsed command line; returns the exit code.
pub fn run(cli: Cli) -> Result<u8> {
    let g = &cli.global;
    match cli.command {
        Command::Init(a) => {
            let chunk_sizes = a
                .chunk_sizes
                .as_deref()
                .map(parse_chunk_sizes)
                .transpose()?;
            let backend = backend::open(repo_location(g)?)?;
            let pw = repo_password(g, true)?;
            let opts = InitOptions {
                pack_size: a
                    .pack_size_mib
                    .checked_mul(1 << 20)
                    .ok_or_else(|| Error::invalid("--pack-size-mib is too large"))?,
                compression_level: a.compression,
                kdf: KdfParams {
                    m_cost: a.kdf_memory_kib,
                    t_cost: a.kdf_time,
                    p_cost: 1,
                },
                chunk_sizes,
            };
            let repo = Repository::init(backend, &pw, &opts)?;
            if g.json {
                println!(
                    "{}",
                    json!({"id": repo.config().id, "location": repo.backend().location()})
                );
            } else {
                println!(
                    "created lifeboat repository {} at {}",
                    &repo.config().id[..10],
                    repo.backend().location()
                );
                println!("Keep the password safe: without it the data cannot be restored.");
            }
            Ok(0)
        }
        Command::Backup(mut a) => {
            for f in &a.files_from {
                a.paths
                    .extend(list_file(f, "--files-from")?.into_iter().map(Into::into));
            }
            for f in &a.exclude_files {
                a.excludes.extend(list_file(f, "--exclude-file")?);
            }
            if a.stdin_from_command.is_none() && a.paths.is_empty() {
                return Err(Error::invalid(
                    "nothing to back up: give one or more paths, or --stdin-from-command CMD",
                ));
            }
            // A file copy of a running database restores broken: refused before anything is
            // read or written, like the agent's files mode.
            // What the backup excludes is not searched.
            if !a.allow_live_database {
                let excludes = crate::backup::build_excludes(&a.excludes)?;
                let skip = |p: &std::path::Path| {
                    excludes.is_match(p)
                        || p.file_name()
                            .is_some_and(|n| excludes.is_match(std::path::Path::new(n)))
                };
                for p in &a.paths {
                    if let Some(db) = crate::capture::livedb::find_where(p, &skip) {
                        return Err(Error::invalid(db.cli_refusal()));
                    }
                }
            }
            let repo = open(g)?;
            let source = match &a.stdin_from_command {
                Some(cmd) => Source::Command {
                    command: cmd.clone(),
                    filename: a.stdin_filename.clone().unwrap_or_default(),
                },
                None => Source::Paths(a.paths.clone()),
            };
            let name = match (&a.name, &source) {
                (Some(n), _) => n.clone(),
                (None, Source::Paths(p)) => default_name(p),
                (None, Source::Command { filename, .. }) => filename.clone(),
            };
            let mut opts = BackupOptions::new(name);
            opts.tags = a.tags.clone();
            opts.labels = parse_labels(&a.labels)?;
            opts.excludes = a.excludes.clone();
            opts.compression_level = a.compression;
            opts.force = a.force;
            opts.one_file_system = a.one_file_system;
            if let Some(t) = a.threads {
                opts.threads = t.max(1);
            }
            opts.progress = progress_mode(g);
            if let Some(p) = &a.parent {
                opts.parent = Some(repo.find_snapshot(p, None)?.0);
            }
            let out = backup::backup(&repo, &source, &opts)?;
            let stats = repo.stats();
            let s = &out.snapshot.summary;
            if g.json {
                println!(
                    "{}",
                    json!({"snapshot": out.id.to_hex(), "short_id": out.id.short(), "summary": s,
                           "warnings": out.warnings, "requests": stats})
                );
            } else if !g.quiet {
                println!(
                    "snapshot {} saved (volume {:?})\n  files: {} new, {} changed, {} unmodified; {} dirs\n  processed {} of files in {}\n  new in the repository: {} of file chunks and directory listings ({} data + {} tree blobs), stored as {} in {} packs\n  requests: {stats}",
                    out.id.short(),
                    out.snapshot.name,
                    s.files_new,
                    s.files_changed,
                    s.files_unmodified,
                    s.dirs,
                    format::bytes(s.total_bytes),
                    format::seconds(s.duration_seconds),
                    format::bytes(s.bytes_added),
                    s.data_blobs_added,
                    s.tree_blobs_added,
                    format::bytes(s.bytes_stored),
                    s.packs_written,
                );
                if s.packs_adopted > 0 {
                    println!(
                        "  adopted {} pack(s) left by an interrupted backup",
                        s.packs_adopted
                    );
                }
            }
            if !out.warnings.is_empty() {
                eprintln!(
                    "lifeboat: snapshot {} is partial: {} file(s) or directories could not be read (see warnings above)",
                    out.id.short(),
                    out.warnings.len()
                );
                return Ok(3);
            }
            Ok(0)
        }
        Command::Snapshots(a) => {
            let repo = open(g)?;
            let snaps: Vec<_> = repo
                .snapshots()?
                .into_iter()
                .filter(|(_, s)| a.name.as_ref().is_none_or(|n| &s.name == n))
                .filter(|(_, s)| a.host.as_ref().is_none_or(|h| &s.hostname == h))
                .collect();
            let forks = crate::repository::forks::superseded(&snaps);
            if g.json {
                let v: Vec<_> = snaps
                    .iter()
                    .map(|(id, s)| {
                        let mut o = serde_json::to_value(s).expect("snapshot serializes");
                        if forks.contains(id) {
                            o["superseded"] = json!(true);
                        }
                        o["id"] = json!(id.to_hex());
                        o["short_id"] = json!(id.short());
                        o
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(v));
            } else {
                println!(
                    "{:<8}  {:<19}  {:<20}  {:<10}  paths",
                    "ID", "time (UTC)", "name", "size"
                );
                for (id, s) in &snaps {
                    println!(
                        "{:<8}  {:<19}  {:<20}  {:<10}  {}{}{}",
                        id.short(),
                        s.time.format("%Y-%m-%d %H:%M:%S"),
                        s.name,
                        format::bytes(s.summary.total_bytes),
                        s.paths.join(", "),
                        if s.tags.is_empty() {
                            String::new()
                        } else {
                            format!("  [{}]", s.tags.join(","))
                        },
                        if s.future_dated {
                            "  !future-dated: not used as latest nor by retention"
                        } else if forks.contains(id) {
                            "  !fork: committed by an older lease after a newer one began; not used as latest"
                        } else {
                            ""
                        }
                    );
                }
                println!("{} snapshot(s)", snaps.len());
            }
            Ok(0)
        }
        Command::Ls(a) => {
            let repo = open(g)?;
            let (_, snap) = repo.find_snapshot(&a.snapshot, a.name.as_deref())?;
            let entries = crate::ls::list(&repo, &snap, a.path.as_deref().unwrap_or(""))?;
            if g.json {
                // One JSON object per line, as restic prints it: a consumer reads a listing of
                // millions of entries as it comes.
                for e in &entries {
                    println!("{}", serde_json::to_string(e).expect("serializes"));
                }
            } else {
                for e in entries {
                    if a.long {
                        println!("{}", e.long());
                    } else {
                        println!("{}", e.path);
                    }
                }
            }
            Ok(0)
        }
        Command::Restore(a) if a.if_empty => {
            // As the agent's gate does: no repository yet is a first deployment, and the
            // repository is created (logged) so that the sidecar and later restores find it.
            let repo = crate::agent::connect(&agent_access(g)?)?;
            // Like any restore target, it is created when missing (an init container given a
            // path inside its mount); the agent itself requires its mount to exist.
            std::fs::create_dir_all(&a.target).map_err(|e| {
                Error::io(
                    format!("cannot create restore target {}", a.target.display()),
                    e,
                )
            })?;
            let mut args = crate::agent::config::AgentArgs::from_env()?;
            args.path = Some(a.target.clone());
            args.name = Some(a.name.clone().ok_or_else(|| {
                Error::invalid(
                    "--if-empty restores a volume by name: pass --name or set LIFEBOAT_NAME",
                )
            })?);
            args.restore_snapshot = (a.snapshot != "latest").then(|| a.snapshot.clone());
            let cfg = AgentConfig::from_args(&args)?;
            let outcome = crate::agent::gate::attempt(
                &repo,
                &cfg,
                crate::capture::choose(&cfg.capture).as_ref(),
            )?;
            let what = match &outcome {
                GateOutcome::HasData => "the target has data: nothing restored".to_string(),
                GateOutcome::Fresh => {
                    format!("no snapshot of volume {:?} yet: nothing restored", cfg.name)
                }
                GateOutcome::Restored {
                    snapshot,
                    files,
                    bytes,
                } => format!(
                    "restored snapshot {} to {}: {files} files ({})",
                    snapshot.short(),
                    a.target.display(),
                    format::bytes(*bytes)
                ),
                GateOutcome::DumpStaged { file, .. } => {
                    format!("dump restored to {}", file.display())
                }
                GateOutcome::StartedEmptyAfterFailure(e) => e.clone(),
            };
            if g.json {
                println!(
                    "{}",
                    json!({"outcome": format!("{outcome:?}"), "message": what})
                );
            } else if !g.quiet {
                println!("{what}");
            }
            Ok(0)
        }
        Command::Forget(a) => {
            let repo = open(g)?;
            let policy = crate::forget::KeepPolicy::from_settings(
                [
                    a.keep_last,
                    a.keep_hourly,
                    a.keep_daily,
                    a.keep_weekly,
                    a.keep_monthly,
                    a.keep_yearly,
                ],
                a.keep_within.as_deref(),
                "--keep-within",
                a.keep_tags.clone(),
            )?;
            let by: crate::forget::GroupBy = a.group_by.parse()?;
            let groups =
                crate::forget::forget_grouped(&repo, a.name.as_deref(), by, &policy, a.dry_run)?;
            if !g.json && !g.quiet {
                for grp in &groups {
                    let removed = grp.decisions.iter().filter(|d| !d.keep).count();
                    let mut label = format!("volume {:?}", grp.name);
                    if let Some(h) = &grp.host {
                        label.push_str(&format!(" host {h:?}"));
                    }
                    if let Some(t) = &grp.tags {
                        label.push_str(&format!(" tags [{}]", t.join(",")));
                    }
                    println!(
                        "{label}: keep {}, {} {removed}",
                        grp.decisions.len() - removed,
                        if a.dry_run { "would remove" } else { "removed" }
                    );
                    for d in &grp.decisions {
                        println!(
                            "  {} {}  {}",
                            if d.keep { "keep  " } else { "remove" },
                            d.id.short(),
                            d.time.format("%Y-%m-%d %H:%M:%S"),
                        );
                        if d.keep {
                            println!("           ({})", d.reasons.join(", "));
                        }
                    }
                }
            }
            let report = groups;
            let pruned = if a.prune {
                let opts = prune_options(&a.prune_opts, a.dry_run, progress_mode(g))?;
                Some(crate::prune::prune(&repo, &opts)?)
            } else {
                None
            };
            if g.json {
                println!(
                    "{}",
                    json!({"dry_run": a.dry_run, "groups": report, "prune": pruned})
                );
            } else if let Some(p) = &pruned
                && !g.quiet
            {
                print_prune(p);
            }
            Ok(0)
        }
        Command::Sdl(SdlCommand::Check { file }) => {
            let text = read_sdl(&file)?;
            let r = crate::sdl::check(&text);
            if g.json {
                println!(
                    "{}",
                    json!({"file": file, "passes": r.errors.is_empty(), "errors": r.errors, "warnings": r.warnings})
                );
            } else {
                for p in &r.errors {
                    println!("{}: {p}", file.display());
                }
                for w in &r.warnings {
                    println!("{}: warning: {w}", file.display());
                }
                if r.errors.is_empty() && !g.quiet {
                    println!(
                        "{}: passes Akash's SDL rules{}",
                        file.display(),
                        if r.warnings.is_empty() {
                            String::new()
                        } else {
                            format!(" ({} warning(s) above)", r.warnings.len())
                        }
                    );
                }
            }
            Ok(if r.errors.is_empty() { 0 } else { 1 })
        }
        Command::Sdl(SdlCommand::Inject(a)) => {
            let text = read_sdl(&a.file)?;
            let mode = match a.mode.as_str() {
                "image" => crate::sdl::Mode::Image,
                "bootstrap" => crate::sdl::Mode::Bootstrap,
                m => {
                    return Err(Error::invalid(format!(
                        "--mode {m:?}: use image or bootstrap"
                    )));
                }
            };
            let opts = crate::sdl::InjectOptions {
                service: a.service.clone(),
                entrypoint: if a.no_entrypoint {
                    Some(Vec::new())
                } else {
                    (!a.entrypoint.is_empty()).then(|| a.entrypoint.clone())
                },
                cmd: if a.no_cmd {
                    Some(Vec::new())
                } else {
                    (!a.cmd.is_empty()).then(|| a.cmd.clone())
                },
                name: a.name.clone(),
                // `-r/--repo` (or LIFEBOAT_REPOSITORY) is the repository here too, not ignored.
                repo: a.repo_url.clone().or_else(|| g.repo.clone()),
                mode,
                image: a.image.clone(),
                release_url: a.release_url.clone(),
                sha256: a.sha256.clone(),
            };
            let out = crate::sdl::inject(&text, &opts)
                .map_err(|e| Error::invalid(format!("{}: {e}", a.file.display())))?;
            let mut warnings = out.warnings.clone();
            if !out.layout_kept {
                warnings.insert(
                    0,
                    "the file's layout was not plain block YAML: it was rewritten whole (comments outside the service dropped)".into(),
                );
            }
            match &a.output {
                Some(p) => std::fs::write(p, &out.sdl)
                    .map_err(|e| Error::io(format!("cannot write {}", p.display()), e))?,
                None if g.json => {}
                None => print!("{}", out.sdl),
            }
            if let Some(df) = &out.dockerfile {
                match &a.dockerfile {
                    Some(p) => std::fs::write(p, df)
                        .map_err(|e| Error::io(format!("cannot write {}", p.display()), e))?,
                    None if g.json => {}
                    None => eprint!("{df}"),
                }
            }
            if g.json {
                println!(
                    "{}",
                    json!({
                        "file": a.output,
                        "sdl": if a.output.is_none() { Some(&out.sdl) } else { None },
                        "dockerfile_file": a.dockerfile,
                        "dockerfile": if a.dockerfile.is_none() { out.dockerfile.as_ref() } else { None },
                        "service": a.service,
                        "variables_added": out.added,
                        "warnings": warnings,
                    })
                );
            } else if !g.quiet {
                if let Some(p) = &a.output {
                    eprintln!(
                        "lifeboat: wrote {} (service {:?} now runs under lifeboat; added {})",
                        p.display(),
                        a.service,
                        out.added.join(", ")
                    );
                }
                if let (Some(p), Some(_)) = (&a.dockerfile, &out.dockerfile) {
                    eprintln!(
                        "lifeboat: wrote {}: build and push the image it names, then deploy",
                        p.display()
                    );
                }
                for w in &warnings {
                    eprintln!("lifeboat: warning: {w}");
                }
            }
            Ok(0)
        }
        Command::Prune(a) => {
            let repo = open(g)?;
            let opts = prune_options(&a.opts, a.dry_run, progress_mode(g))?;
            let r = crate::prune::prune(&repo, &opts)?;
            if g.json {
                println!("{}", json!(r));
            } else if !g.quiet {
                print_prune(&r);
            }
            Ok(0)
        }
        Command::Repair(RepairCommand::Index { read_data }) => {
            let repo = open_uncached(g)?;
            let r = crate::repair::repair_index(&repo, read_data)?;
            let (packs, blobs, bad) = (r.packs, r.blobs, &r.unreadable);
            for (key, e) in bad {
                eprintln!("lifeboat: repair index: {key} left out: {e}");
            }
            for (key, e) in &r.damaged_blobs {
                eprintln!("lifeboat: repair index: {key}: blob left out: {e}");
            }
            if g.json {
                println!(
                    "{}",
                    json!({"packs": packs, "blobs": blobs, "unreadable": bad, "damaged_blobs": r.damaged_blobs, "salvaged_blobs": r.salvaged_blobs})
                );
            } else if !g.quiet {
                println!(
                    "index rebuilt from {packs} pack header(s): {blobs} blob(s); {} unreadable pack(s) and {} damaged blob(s) left out; {} good blob(s) copied out of damaged packs",
                    bad.len(),
                    r.damaged_blobs.len(),
                    r.salvaged_blobs
                );
            }
            Ok(if bad.is_empty() && r.damaged_blobs.is_empty() {
                0
            } else {
                3
            })
        }
        Command::Repair(RepairCommand::Config) => {
            let repo = open_uncached(g)?;
            let fixed = repo.repair_config()?;
            if g.json {
                println!("{}", json!({ "rewritten": fixed }));
            } else if !g.quiet {
                if fixed.is_empty() {
                    println!("both config copies are intact");
                } else {
                    println!("rewrote {}", fixed.join(" and "));
                }
            }
            Ok(0)
        }
        Command::Repair(RepairCommand::Snapshots { forget, dry_run }) => {
            let repo = open_uncached(g)?;
            let r = crate::repair::repair_snapshots(&repo, forget, dry_run)?;
            if g.json {
                println!("{}", json!({"dry_run": dry_run, "repaired": r}));
            } else if !g.quiet {
                if r.is_empty() {
                    println!("no snapshot references lost data");
                }
                for s in &r {
                    let short = &s.snapshot[..8];
                    match (&s.unreadable, &s.replacement) {
                        (Some(e), _) => println!(
                            "snapshot {short}: unreadable ({e}){}",
                            if s.forgotten {
                                "; removed"
                            } else {
                                "; remove it with --forget"
                            }
                        ),
                        (None, Some(new)) => println!(
                            "snapshot {short}: replaced by {} (tag `repaired`): {} file(s) dropped, {} director(ies) emptied{}",
                            &new[..8],
                            s.files_dropped.len(),
                            s.dirs_emptied.len(),
                            if s.forgotten {
                                "; original removed"
                            } else {
                                ""
                            }
                        ),
                        (None, None) => println!(
                            "snapshot {short}: would drop {} file(s) and empty {} director(ies)",
                            s.files_dropped.len(),
                            s.dirs_emptied.len()
                        ),
                    }
                    for f in &s.files_dropped {
                        println!("  dropped {f}");
                    }
                    for d in &s.dirs_emptied {
                        println!("  emptied {d}");
                    }
                }
            }
            Ok(0)
        }
        Command::Run(a) => {
            let cfg = AgentConfig::from_args(&a.agent)?;
            let access = agent_access(g)?;
            crate::agent::run(cfg, access, Mode::Wrap(a.command.clone()))
        }
        Command::Daemon(a) => {
            let cfg = AgentConfig::from_args(&a.agent)?;
            let access = agent_access(g)?;
            crate::agent::run(cfg, access, Mode::Daemon)
        }
        Command::Config(ConfigCommand::Check(a)) => {
            let cfg = AgentConfig::from_args(&a.agent)?;
            let location = repo_location(g)?.to_string();
            for (k, v) in cfg.describe(&location) {
                println!("{k}={v}");
            }
            let backend = backend::open(&location)?;
            let pw = repo_password(g, false)?;
            match Repository::open(backend, &pw) {
                Ok(repo) => {
                    let n = repo
                        .snapshots()?
                        .into_iter()
                        .filter(|(_, s)| s.name == cfg.name)
                        .count();
                    println!(
                        "ok: repository {} opened with the password; {n} snapshot(s) of volume {:?}",
                        repo.backend().location(),
                        cfg.name
                    );
                }
                Err(Error::NoRepository { .. }) => println!(
                    "ok: {location} is reachable and has no repository yet; the agent creates one at start"
                ),
                Err(e) => return Err(e),
            }
            Ok(0)
        }
        Command::Restore(a) if a.to_time.is_some() => super::wal::restore_to_time(g, &a),
        Command::WalPush(a) => super::wal::push(g, &a),
        Command::WalFetch(a) => super::wal::fetch(g, &a),
        Command::Restore(a) => {
            let repo = open(g)?;
            let (id, snap) = if a.snapshot == "latest" {
                repo.find_latest(a.name.as_deref(), a.fallback)?
            } else {
                repo.find_snapshot(&a.snapshot, a.name.as_deref())?
            };
            let mut opts = RestoreOptions::new(&a.target);
            opts.include = a.include.clone();
            opts.overwrite = a.overwrite;
            if let Some(t) = a.threads {
                opts.fetchers = t.max(1);
            }
            opts.progress = progress_mode(g);
            let started = std::time::Instant::now();
            let out = restore::restore(&repo, &snap, &opts)?;
            let secs = started.elapsed().as_secs_f64();
            let stats = repo.stats();
            for e in &out.errors {
                eprintln!("lifeboat: restore: {e}");
            }
            if g.json {
                println!(
                    "{}",
                    json!({"snapshot": id.to_hex(), "target": a.target, "restored": out,
                           "duration_seconds": secs, "requests": stats})
                );
            } else if !g.quiet {
                println!(
                    "restored snapshot {} to {}: {} files ({}), {} dirs, {} symlinks, {} hard links in {}\n  requests: {stats}",
                    id.short(),
                    a.target.display(),
                    out.files,
                    format::bytes(out.bytes),
                    out.dirs,
                    out.symlinks,
                    out.hardlinks,
                    format::seconds(secs)
                );
            }
            if !out.errors.is_empty() {
                // Exit 3 (README, "Exit codes"): the restore finished, some files are missing or
                // damaged and are listed.
                eprintln!(
                    "lifeboat: restore incomplete: {} problem(s), listed above; the other files were restored and verified",
                    out.errors.len()
                );
                return Ok(3);
            }
            super::sqlite::replay(g, &repo, &snap, &a.target, None)?;
            Ok(0)
        }
        Command::Check(a) => {
            let repo = open_uncached(g)?;
            let rd = match (&a.read_data, &a.read_data_subset) {
                (true, _) => ReadData::All,
                (false, Some(s)) => s.parse()?,
                (false, None) => ReadData::None,
            };
            let r = check::check_with_progress(&repo, rd, progress_mode(g))?;
            let stats = repo.stats();
            if g.json {
                println!("{}", json!({"report": r, "requests": stats}));
            } else {
                for w in &r.warnings {
                    eprintln!("warning: {w}");
                }
                for e in &r.errors {
                    eprintln!("error: {e}");
                }
                println!(
                    "checked {} snapshots, {} trees, {} data blobs, {} packs ({} read in full){}\n  requests: {stats}",
                    r.snapshots,
                    r.trees,
                    r.data_blobs,
                    r.packs,
                    r.packs_read,
                    if r.wal_files > 0 {
                        format!(", {} archived WAL files", r.wal_files)
                    } else {
                        String::new()
                    } + &if r.sqlite_objects > 0 {
                        format!(", {} replicated SQLite log objects", r.sqlite_objects)
                    } else {
                        String::new()
                    }
                );
            }
            if !r.errors.is_empty() {
                return Err(Error::invalid(format!(
                    "check found {} problem(s) in the repository, listed above",
                    r.errors.len()
                )));
            }
            if !g.json {
                println!("no errors were found");
            }
            Ok(0)
        }
        Command::Key(k) => key_command(g, k),
        Command::Cat(a) => {
            let repo = open(g)?;
            let out = match (a.kind.as_str(), a.id.as_deref()) {
                ("config", _) => repo.config_json(),
                ("snapshot", Some(id)) => {
                    let (_, s) = repo.find_snapshot(id, None)?;
                    serde_json::to_string_pretty(&s).expect("serializes")
                }
                ("tree", Some(id)) => {
                    let index = repo.load_index()?;
                    let t = crate::repository::TreeLoader::new(&repo, &index).load(&id.parse()?)?;
                    serde_json::to_string_pretty(&t).expect("serializes")
                }
                ("index", Some(id)) => {
                    let files = repo.index_files()?;
                    let (iid, f) = files
                        .iter()
                        .find(|(i, _)| i.to_hex().starts_with(id))
                        .ok_or_else(|| Error::invalid(format!("no live index object {id}")))?;
                    let packs: Vec<_> = f
                        .packs
                        .iter()
                        .map(|(p, e)| json!({"pack": p.to_hex(), "blobs": e.iter().map(|e| json!({
                            "id": e.id.to_hex(), "type": e.kind, "offset": e.offset, "length": e.length,
                            "raw_length": e.raw_length, "compressed": e.compressed()})).collect::<Vec<_>>()}))
                        .collect();
                    serde_json::to_string_pretty(
                        &json!({"id": iid.to_hex(), "supersedes": f.supersedes, "packs": packs}),
                    )
                    .expect("serializes")
                }
                (k, None) if k != "config" => {
                    return Err(Error::invalid(format!("cat {k} needs an id")));
                }
                (k, _) => {
                    return Err(Error::invalid(format!(
                        "cannot cat {k:?}: choose config, snapshot, index or tree"
                    )));
                }
            };
            println!("{out}");
            Ok(0)
        }
        Command::Demo(a) => super::demo::run(&a.dir),
        Command::Diff(a) => super::browse::diff(g, &a),
        Command::Find(a) => super::browse::find(g, &a),
        Command::Stats(a) => super::browse::stats(g, &a),
        Command::Dump(a) => super::browse::dump(g, &a),
        Command::Tag(a) => super::browse::tag(g, &a),
        Command::Copy(a) => super::browse::copy(g, &a),
    }
}

fn key_command(g: &Global, k: KeyCommand) -> Result<u8> {
    let repo = open(g)?;
    match k {
        KeyCommand::Add(n) => {
            let pw = password::new_password(n.new_password_file.as_deref())?;
            let id = repo.add_key(&pw, KdfParams::default())?;
            println!("added key {}", &id[..8]);
        }
        KeyCommand::List => {
            let keys = repo.list_keys()?;
            if g.json {
                println!("{}", serde_json::to_string(&keys).expect("serializes"));
            } else {
                println!(" {:<8}  {:<20}  {:<20}  created", "ID", "user", "host");
                for k in keys {
                    println!(
                        "{}{:<8}  {:<20}  {:<20}  {}",
                        if k.current { "*" } else { " " },
                        &k.id[..8],
                        k.username,
                        k.hostname,
                        k.created.format("%Y-%m-%d %H:%M:%S")
                    );
                }
            }
        }
        KeyCommand::Remove { id } => {
            let removed = repo.remove_key(&id)?;
            println!("removed key {}", &removed[..8]);
        }
        KeyCommand::Passwd(n) => {
            let pw = password::new_password(n.new_password_file.as_deref())?;
            let id = repo.change_password(&pw, KdfParams::default())?;
            println!(
                "password changed: key {} replaced by {}",
                &repo.current_key()[..8],
                &id[..8]
            );
        }
    }
    Ok(0)
}

fn agent_access(g: &Global) -> Result<RepoAccess> {
    Ok(RepoAccess {
        location: repo_location(g)?.to_string(),
        password: repo_password(g, false)?,
        cache: !g.no_cache,
    })
}

/// The repository password from the global options, the environment or a prompt (`confirm`:
/// asked twice, for `init`).
fn repo_password(g: &Global, confirm: bool) -> Result<String> {
    password::repository(
        g.password_file.as_deref(),
        g.password_command.as_deref(),
        "LIFEBOAT_PASSWORD",
        confirm,
    )
}

fn repo_location(g: &Global) -> Result<&str> {
    g.repo.as_deref().ok_or_else(|| {
        Error::invalid("no repository given: pass --repo PATH or set LIFEBOAT_REPOSITORY")
    })
}

pub(super) fn open(g: &Global) -> Result<Repository> {
    let location = repo_location(g)?;
    let repo = open_uncached(g)?;
    if g.no_cache {
        return Ok(repo);
    }
    let base = crate::repository::cache::default_base();
    let repo = repo.with_ledger(&base);
    if location.starts_with("s3:") {
        return Ok(repo.with_cache(&base));
    }
    Ok(repo)
}

/// For `check`: everything is read from the repository itself, never from the local cache.
fn open_uncached(g: &Global) -> Result<Repository> {
    let backend = backend::open(repo_location(g)?)?;
    let pw = repo_password(g, false)?;
    Repository::open(backend, &pw)
}

fn progress_mode(g: &Global) -> ProgressMode {
    if g.quiet || g.json {
        ProgressMode::Quiet
    } else {
        ProgressMode::Auto
    }
}

/// Default volume name: the absolute paths, so repeated backups of the same paths chain.
fn default_name(paths: &[std::path::PathBuf]) -> String {
    paths
        .iter()
        .map(|p| {
            std::path::absolute(p)
                .unwrap_or_else(|_| p.clone())
                .display()
                .to_string()
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The lines of a list file (`--files-from`, `--exclude-file`), without `#` comments, blank
/// lines and surrounding whitespace. A file that cannot be read is an error naming the option:
/// a backup that silently ignored its exclude list would store what the user meant to keep out.
fn list_file(path: &std::path::Path, option: &str) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::io(format!("{option} {}", path.display()), e))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect())
}

fn parse_labels(raw: &[String]) -> Result<BTreeMap<String, String>> {
    raw.iter()
        .map(|l| {
            l.split_once('=')
                .filter(|(k, _)| !k.is_empty())
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| Error::invalid(format!("--label {l:?} must look like KEY=VALUE")))
        })
        .collect()
}

fn parse_chunk_sizes(s: &str) -> Result<(u32, u32, u32)> {
    let v: Vec<u32> = s
        .split(',')
        .map(|x| x.trim().parse::<u32>())
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| Error::invalid(format!("--chunk-sizes {s:?} must be min,avg,max in bytes")))?;
    match v.as_slice() {
        [a, b, c] => Ok((*a, *b, *c)),
        _ => Err(Error::invalid(format!(
            "--chunk-sizes {s:?} must be min,avg,max in bytes"
        ))),
    }
}

fn prune_options(
    o: &PruneOpts,
    dry_run: bool,
    progress: ProgressMode,
) -> Result<crate::prune::PruneOptions> {
    let grace = crate::format::parse_duration(&o.grace)
        .map_err(|e| Error::invalid(format!("--grace: {e}")))?;
    let pct = o.max_unused.trim().trim_end_matches('%');
    let max_unused: f64 = pct.parse().map_err(|_| {
        Error::invalid(format!(
            "--max-unused {:?}: give a percentage like 5%",
            o.max_unused
        ))
    })?;
    Ok(crate::prune::PruneOptions {
        grace,
        max_unused: max_unused / 100.0,
        repack_young: o.repack_young,
        dry_run,
        now: o.now,
        progress,
        ..Default::default()
    })
}

fn print_prune(r: &crate::prune::PruneReport) {
    let mib = crate::format::bytes;
    let would = if r.dry_run { "would " } else { "" };
    println!(
        "repository: {} pack(s), {}, {} of it used by snapshots",
        r.packs_total,
        mib(r.bytes_total),
        mib(r.bytes_used)
    );
    if r.writers_live > 0 || r.writers_removed > 0 {
        println!(
            "backups running: {}; stale writer records {}removed: {}",
            r.writers_live, would, r.writers_removed
        );
    }
    if r.marks_swept > 0 {
        println!(
            "{} {} pack(s) ({}) marked earlier; {} kept because a newer snapshot needs them",
            if r.dry_run { "would delete" } else { "deleted" },
            r.packs_deleted,
            mib(r.bytes_deleted),
            r.packs_rescued
        );
    }
    for w in &r.marks_waiting {
        println!(
            "mark {} ({} pack(s)) waits: {}",
            &w.mark[..8],
            w.packs,
            w.reason
        );
    }
    println!(
        "{} {} pack(s) ({}) for deletion after the grace period, {} of them repacked ({} blob(s), {} written)",
        if r.dry_run { "would mark" } else { "marked" },
        r.packs_marked,
        mib(r.bytes_marked),
        r.packs_repacked,
        r.blobs_repacked,
        mib(r.bytes_repacked)
    );
    if r.wal_files_deleted > 0 {
        println!(
            "{} {} archived WAL file(s) older than every kept PostgreSQL base backup",
            if r.dry_run { "would delete" } else { "deleted" },
            r.wal_files_deleted
        );
    }
    if r.sqlite_objects_deleted > 0 {
        println!(
            "{} {} replicated SQLite change set(s) no kept snapshot can use",
            if r.dry_run { "would delete" } else { "deleted" },
            r.sqlite_objects_deleted
        );
    }
    if r.packs_young_kept > 0 {
        println!(
            "left {} partly used pack(s) younger than 30 days alone ({} unused; --repack-young to include them)",
            r.packs_young_kept,
            mib(r.bytes_young_unused)
        );
    }
}

fn read_sdl(path: &std::path::Path) -> Result<String> {
    std::fs::read_to_string(path)
        .map_err(|e| Error::io(format!("cannot read SDL file {}", path.display()), e))
}
