//! Command-line interface, following restic's conventions: `lifeboat [-r REPO] COMMAND`, the
//! repository also from `LIFEBOAT_REPOSITORY`, the password from `LIFEBOAT_PASSWORD(_FILE)`,
//! `--password-file` or a prompt. Errors are printed once, as one line, by `main`.
//!
//! Exit codes: 0 success; 1 error; 2 usage error; 3 backup written but some files unreadable, or
//! restore finished with some files missing; 10 no repository at the location; 12 wrong password.

mod browse;
mod commands;
mod demo;
mod password;
mod settings;
mod sqlite;
mod wal;

pub use password::read_file as read_secret_file;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::agent::config::AgentArgs;
use crate::error::Error;
use crate::repository::keys::KdfParams;

/// Encrypted, deduplicated backups that ride along with your app.
#[derive(Parser, Debug)]
#[command(name = "lifeboat", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

/// Options every command takes.
#[derive(Args, Debug, Clone)]
pub struct Global {
    /// Repository: a directory path, `file:PATH`, or (with S3 support) `s3:…`.
    #[arg(
        short = 'r',
        long = "repo",
        env = "LIFEBOAT_REPOSITORY",
        global = true,
        hide_env_values = true,
        help_heading = "Repository"
    )]
    repo: Option<String>,
    /// Read the password from this file.
    #[arg(
        long,
        env = "LIFEBOAT_PASSWORD_FILE",
        global = true,
        help_heading = "Repository"
    )]
    password_file: Option<PathBuf>,
    /// Run this shell command and read the password from its output (a secret manager).
    #[arg(
        long,
        env = "LIFEBOAT_PASSWORD_COMMAND",
        global = true,
        conflicts_with = "password_file",
        help_heading = "Repository"
    )]
    password_command: Option<String>,
    /// Print machine-readable JSON on stdout.
    #[arg(long, global = true, help_heading = "Global options")]
    json: bool,
    /// Only errors and warnings; no progress.
    #[arg(short, long, global = true, help_heading = "Global options")]
    quiet: bool,
    /// Do not keep local copies of index, snapshot and tree objects (S3 repositories keep them
    /// in LIFEBOAT_CACHE_DIR or ~/.cache/lifeboat by default).
    #[arg(long, global = true, help_heading = "Repository")]
    no_cache: bool,
    /// Upload at most this many KiB/s (averaged over each object).
    #[arg(
        long,
        env = "LIFEBOAT_LIMIT_UPLOAD",
        global = true,
        value_name = "KiB/s",
        help_heading = "Repository"
    )]
    limit_upload: Option<u64>,
    /// Download at most this many KiB/s (averaged over each object).
    #[arg(
        long,
        env = "LIFEBOAT_LIMIT_DOWNLOAD",
        global = true,
        value_name = "KiB/s",
        help_heading = "Repository"
    )]
    limit_download: Option<u64>,
    /// More log detail (-v info, -vv debug).
    #[arg(short, long, action = clap::ArgAction::Count, global = true, help_heading = "Global options")]
    verbose: u8,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create a new repository.
    Init(InitArgs),
    /// Back up files and directories, or a command's output, as a new snapshot.
    Backup(BackupArgs),
    /// List snapshots.
    Snapshots(SnapshotsArgs),
    /// List files in a snapshot.
    Ls(LsArgs),
    /// Show what changed between two snapshots (+ added, - removed, M modified, U metadata,
    /// T type).
    Diff(browse::DiffArgs),
    /// Find which snapshots hold files matching a name or path glob.
    Find(browse::FindArgs),
    /// Restore size, deduplicated and stored size, per volume.
    Stats(browse::StatsArgs),
    /// Write one file, or a directory as tar, from a snapshot to stdout.
    Dump(browse::DumpArgs),
    /// Add, remove or set snapshot tags.
    Tag(browse::TagArgs),
    /// Copy snapshots to a second repository (another provider, off-site).
    Copy(browse::CopyArgs),
    /// Restore a snapshot into a directory.
    Restore(RestoreArgs),
    /// Verify the repository's structure, and optionally its data.
    Check(CheckArgs),
    /// Manage the passwords (key objects) that open the repository.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Print a decrypted repository object, for debugging.
    Cat(CatArgs),
    /// Back up and restore a generated sample directory in a local repository, and verify it.
    Demo(DemoArgs),
    /// Protect a volume around an app: restore gate, then `APP` as a child with scheduled
    /// backups and a final one when it stops (the Akash entrypoint wrapper).
    Run(RunArgs),
    /// Protect a volume from a sidecar container: restore gate, scheduled backups, a final
    /// backup on SIGTERM.
    Daemon(DaemonArgs),
    /// Remove snapshots a keep policy does not keep (per volume name); the data stays until a
    /// prune.
    Forget(ForgetArgs),
    /// Delete data no snapshot needs, in two phases that are safe while backups run: this run
    /// deletes what an earlier run marked (after the grace period) and marks what is unneeded
    /// now.
    Prune(PruneArgs),
    /// Rebuild damaged repository metadata.
    #[command(subcommand)]
    Repair(RepairCommand),
    /// Check the agent's settings.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Akash SDL files: check them, or put a service under lifeboat.
    #[command(subcommand)]
    Sdl(SdlCommand),
    /// PostgreSQL's archive_command: store one WAL file in the repository (through the agent's
    /// socket when given, else opening the repository itself).
    WalPush(WalPushArgs),
    /// PostgreSQL's restore_command: fetch one WAL file. Exit 0: written; 1: not archived (the
    /// end of recovery); 126: the archive cannot be read or has a hole (recovery stops loudly).
    WalFetch(WalFetchArgs),
}

#[derive(Args, Debug)]
struct WalPushArgs {
    /// The file (PostgreSQL's %p, relative to the data directory).
    file: PathBuf,
    /// The agent's WAL socket.
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Volume name (without --socket).
    #[arg(long, env = "LIFEBOAT_NAME")]
    name: Option<String>,
}

#[derive(Args, Debug)]
struct WalFetchArgs {
    /// The WAL file's name (PostgreSQL's %f).
    file: String,
    /// Where to write it (PostgreSQL's %p).
    dest: PathBuf,
    /// The agent's WAL socket.
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Volume name (without --socket).
    #[arg(long, env = "LIFEBOAT_NAME")]
    name: Option<String>,
}

#[derive(Subcommand, Debug)]
enum SdlCommand {
    /// Check an SDL against Akash's rules (and lifeboat's: no global control port).
    Check {
        /// The SDL file.
        file: PathBuf,
    },
    /// Rewrite one service so lifeboat wraps its command, backs up its persistent volume and
    /// restores it on a new lease. Prints the result (or writes it with -o).
    Inject(Box<SdlInjectArgs>),
}

#[derive(Args, Debug)]
struct SdlInjectArgs {
    /// The SDL file.
    file: PathBuf,
    /// The service to protect.
    #[arg(long)]
    service: String,
    /// The image's ENTRYPOINT, when the SDL has no `command` and the image has no preset
    /// (repeat for each word).
    #[arg(long, allow_hyphen_values = true)]
    entrypoint: Vec<String>,
    /// The image's CMD, when the SDL has neither `command` nor `args` (repeat for each word).
    #[arg(long, allow_hyphen_values = true)]
    cmd: Vec<String>,
    /// The image has no ENTRYPOINT (its CMD is the whole command line).
    #[arg(long, conflicts_with = "entrypoint")]
    no_entrypoint: bool,
    /// The image has no CMD (its ENTRYPOINT is the whole command line).
    #[arg(long, conflicts_with = "cmd")]
    no_cmd: bool,
    /// Volume name (default: the service name).
    #[arg(long)]
    name: Option<String>,
    /// Repository the service backs up to (default: `-r/--repo` or LIFEBOAT_REPOSITORY if set,
    /// else a Storj bucket placeholder).
    #[arg(long = "repo-url")]
    repo_url: Option<String>,
    /// `image` (build a small image; the Dockerfile goes to --dockerfile) or `bootstrap`
    /// (download a pinned release at start, checked against --sha256).
    #[arg(long, default_value = "image")]
    mode: String,
    /// Image mode: the image you will build and push.
    #[arg(long)]
    image: Option<String>,
    /// Image mode: where to write the Dockerfile (default: printed to stderr).
    #[arg(long)]
    dockerfile: Option<PathBuf>,
    /// Bootstrap mode: the static binary's URL.
    #[arg(long)]
    release_url: Option<String>,
    /// Bootstrap mode: its SHA-256.
    #[arg(long)]
    sha256: Option<String>,
    /// Write the result here instead of standard output.
    #[arg(short = 'o', long = "output")]
    output: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct InitArgs {
    /// Target pack size in MiB (Storj: keep well above 0.05 and at most 64).
    #[arg(long, default_value_t = 32)]
    pack_size_mib: u32,
    /// Default zstd level (1-22).
    #[arg(long, default_value_t = 3)]
    compression: i32,
    /// Argon2id memory in KiB for the first key (default: OWASP's 19 MiB floor).
    #[arg(long, default_value_t = KdfParams::default().m_cost)]
    kdf_memory_kib: u32,
    /// Argon2id passes.
    #[arg(long, default_value_t = KdfParams::default().t_cost)]
    kdf_time: u32,
    /// Chunk sizes `min,avg,max` in bytes (tests use small ones).
    #[arg(long, hide = true)]
    chunk_sizes: Option<String>,
}

#[derive(Args, Debug)]
struct BackupArgs {
    /// Files and directories to back up.
    paths: Vec<PathBuf>,
    /// Volume name: snapshots with the same name form one history. Default: the paths.
    #[arg(long, env = "LIFEBOAT_NAME")]
    name: Option<String>,
    /// Tag the snapshot (repeatable).
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// Label the snapshot, `KEY=VALUE` (repeatable).
    #[arg(long = "label")]
    labels: Vec<String>,
    /// Skip paths matching this glob (full path or base name; repeatable).
    #[arg(long = "exclude", short = 'e')]
    excludes: Vec<String>,
    /// Read exclude globs from this file, one per line (`#` comments and blank lines ignored;
    /// repeatable).
    #[arg(long = "exclude-file")]
    exclude_files: Vec<PathBuf>,
    /// Back up the paths listed in this file, one per line (`#` comments and blank lines
    /// ignored; repeatable), as well as any given as arguments.
    #[arg(long = "files-from", conflicts_with = "stdin_from_command")]
    files_from: Vec<PathBuf>,
    /// Stay on the file system of each backup path: directories where another one is mounted
    /// are kept, empty.
    #[arg(long, short = 'x')]
    one_file_system: bool,
    /// Stream this command's stdout into the snapshot as one file (`sh -c CMD`).
    #[arg(long, requires = "stdin_filename", conflicts_with = "paths")]
    stdin_from_command: Option<String>,
    /// File name for --stdin-from-command.
    #[arg(long)]
    stdin_filename: Option<String>,
    /// Read every file, ignoring the parent snapshot.
    #[arg(long)]
    force: bool,
    /// Back up a running database's files anyway (a path holding a live PostgreSQL,
    /// MySQL/MariaDB or SQLite database is refused otherwise, as the agent's files mode does).
    #[arg(long, env = "LIFEBOAT_ALLOW_LIVE_DATABASE")]
    allow_live_database: bool,
    /// Use this snapshot as the parent instead of the latest with the same name.
    #[arg(long)]
    parent: Option<String>,
    /// zstd level for this backup.
    #[arg(long)]
    compression: Option<i32>,
    /// Worker threads per stage (default: CPU count).
    #[arg(long)]
    threads: Option<usize>,
}

#[derive(Args, Debug)]
struct SnapshotsArgs {
    /// Only snapshots of this volume name.
    #[arg(long, env = "LIFEBOAT_NAME")]
    name: Option<String>,
    /// Only snapshots made on this host.
    #[arg(long)]
    host: Option<String>,
}

#[derive(Args, Debug)]
struct LsArgs {
    /// Snapshot id (prefix) or `latest`.
    snapshot: String,
    /// Only this path and what is below it.
    path: Option<String>,
    /// With `latest`: the latest of this volume name.
    #[arg(long, env = "LIFEBOAT_NAME")]
    name: Option<String>,
    /// Long listing: type, mode, size, mtime.
    #[arg(short, long)]
    long: bool,
}

#[derive(Args, Debug)]
struct RestoreArgs {
    /// Snapshot id (prefix) or `latest`.
    snapshot: String,
    /// With `latest`: the latest of this volume name.
    #[arg(long, env = "LIFEBOAT_NAME")]
    name: Option<String>,
    /// Directory to restore into (a single-path snapshot's contents land directly in it).
    #[arg(long, short = 't')]
    target: PathBuf,
    /// Restore only this snapshot path (repeatable), as `ls` shows it or relative to the
    /// backed-up directory.
    #[arg(long = "include", short = 'i')]
    include: Vec<String>,
    /// Restore into a non-empty target, replacing files in the way.
    #[arg(long)]
    overwrite: bool,
    /// Ranged reads in flight (default: LIFEBOAT_S3_CONNECTIONS, 8, for S3; 2 for a directory).
    #[arg(long)]
    threads: Option<usize>,
    /// Init-container mode: restore only when the target is empty (ignoring `lost+found`), with
    /// the agent's markers, so an interrupted restore is redone and a volume with data is left
    /// alone.
    #[arg(long, conflicts_with_all = ["overwrite", "include"])]
    if_empty: bool,
    /// With `latest`: when a snapshot object that may be the newest is damaged, restore the
    /// newest readable snapshot instead of refusing (and say which one was restored).
    #[arg(long)]
    fallback: bool,
    /// SQLite (a volume captured with the sqlite method): the newest snapshot from before this
    /// moment (RFC 3339) for the files, its databases brought to this moment.
    /// PostgreSQL point-in-time restore (RFC 3339): restore the newest base backup of --name
    /// from before this moment and set the data directory up to replay archived WAL up to it
    /// when the server starts (which then needs LIFEBOAT_REPOSITORY and the password).
    #[arg(long, conflicts_with_all = ["if_empty", "include"])]
    to_time: Option<String>,
}

#[derive(Args, Debug)]
struct ForgetArgs {
    /// Only this volume name (default: every name, each on its own).
    #[arg(long)]
    name: Option<String>,
    /// Keep the newest N snapshots.
    #[arg(long)]
    keep_last: Option<u32>,
    /// Keep the newest snapshot of each of the last N hours.
    #[arg(long)]
    keep_hourly: Option<u32>,
    /// ... of each of the last N days.
    #[arg(long)]
    keep_daily: Option<u32>,
    /// ... of each of the last N weeks.
    #[arg(long)]
    keep_weekly: Option<u32>,
    /// ... of each of the last N months.
    #[arg(long)]
    keep_monthly: Option<u32>,
    /// ... of each of the last N years.
    #[arg(long)]
    keep_yearly: Option<u32>,
    /// Keep everything within this long of the newest snapshot (e.g. `30d`).
    #[arg(long)]
    keep_within: Option<String>,
    /// Keep every snapshot with this tag (repeatable).
    #[arg(long = "keep-tag")]
    keep_tags: Vec<String>,
    /// Show what would be kept and removed, and why, without removing anything.
    #[arg(long, short = 'n')]
    dry_run: bool,
    /// Group snapshots by `name` (always) plus `host` and/or `tags`, e.g. `name,host`.
    #[arg(long, default_value = "name")]
    group_by: String,
    /// Prune afterwards (with the prune options below).
    #[arg(long)]
    prune: bool,
    #[command(flatten)]
    prune_opts: PruneOpts,
}

#[derive(Args, Debug)]
struct PruneArgs {
    #[command(flatten)]
    opts: PruneOpts,
    /// Report what would be deleted, marked and repacked; change nothing.
    #[arg(long, short = 'n')]
    dry_run: bool,
}

#[derive(Args, Debug)]
struct PruneOpts {
    /// How long marked packs wait before deletion; also how stale a backup's heartbeat must be
    /// before it counts as dead. Must outlast the longest restore.
    #[arg(long, default_value = "24h", env = "LIFEBOAT_PRUNE_GRACE")]
    grace: String,
    /// Unused space tolerated in partly used packs, as a percentage of the used data, before
    /// they are repacked.
    #[arg(long, default_value = "5%")]
    max_unused: String,
    /// Also repack packs younger than 30 days (on Storj they are billed for 30 days anyway).
    #[arg(long)]
    repack_young: bool,
    /// Delete unneeded data in this run instead of after the grace period. Refused while any
    /// backup's writer record is live; safe against backups that start meanwhile (FORMAT.md
    /// §11a). Do not run it while a restore is reading the repository.
    #[arg(long)]
    now: bool,
}

#[derive(Subcommand, Debug)]
enum RepairCommand {
    /// Rebuild the index from the pack headers (when index objects are damaged or lost).
    Index {
        /// Also download every pack and leave damaged blobs out of the index.
        #[arg(long)]
        read_data: bool,
    },
    /// Replace snapshots that reference lost data with repaired copies (tagged `repaired`) that
    /// leave out the damaged files.
    Snapshots {
        /// Remove the damaged originals (and snapshot objects that cannot be read at all).
        #[arg(long)]
        forget: bool,
        /// Report only.
        #[arg(long, short = 'n')]
        dry_run: bool,
    },
    /// Write the config and its copy (`config.1`) again where one is missing, damaged or stale,
    /// from the copy that opened the repository.
    Config,
}

#[derive(Args, Debug)]
#[command(after_help = settings::NO_FLAG_HELP)]
struct RunArgs {
    #[command(flatten)]
    agent: AgentArgs,
    /// The app's command and arguments, after `--`.
    #[arg(last = true, required = true, value_name = "APP")]
    command: Vec<String>,
}

#[derive(Args, Debug)]
#[command(after_help = settings::NO_FLAG_HELP)]
struct DaemonArgs {
    #[command(flatten)]
    agent: AgentArgs,
}

#[derive(Subcommand, Debug)]
enum ConfigCommand {
    /// Validate every setting, reach the repository, try the password, and print the effective
    /// configuration with secrets redacted.
    Check(DaemonArgs),
}

#[derive(Args, Debug)]
struct CheckArgs {
    /// Download and verify every pack.
    #[arg(long, conflicts_with = "read_data_subset")]
    read_data: bool,
    /// Download and verify a subset: `N%` or `n/t`.
    #[arg(long)]
    read_data_subset: Option<String>,
}

#[derive(Subcommand, Debug)]
enum KeyCommand {
    /// Add a password (new password from --new-password-file, LIFEBOAT_NEW_PASSWORD or a prompt).
    Add(NewPassword),
    /// List key objects.
    List,
    /// Remove a key object by id prefix.
    Remove {
        /// Key id (prefix).
        id: String,
    },
    /// Replace the current password.
    Passwd(NewPassword),
}

#[derive(Args, Debug)]
struct NewPassword {
    /// File holding the new password.
    #[arg(long, env = "LIFEBOAT_NEW_PASSWORD_FILE")]
    new_password_file: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct CatArgs {
    /// `config`, `snapshot`, `index` or `tree`.
    kind: String,
    /// Object id (snapshot and index: prefix or full; tree: full blob id).
    id: Option<String>,
}

#[derive(Args, Debug)]
struct DemoArgs {
    /// Working directory for the sample data, repository and restore.
    #[arg(long, default_value = "lifeboat-demo")]
    dir: PathBuf,
}

/// Parses arguments, runs the command, prints any error as one line, returns the exit code.
pub fn main() -> ExitCode {
    if let Err(e) = crate::agent::config::load_config_file() {
        say_error(&e);
        return ExitCode::from(e.exit_code());
    }
    let cli = match parse() {
        Ok(c) => c,
        Err(e) => match settings::env_value_error(&e) {
            Some(msg) => {
                use std::io::Write;
                let _ = writeln!(std::io::stderr(), "lifeboat: {msg}");
                return ExitCode::from(2);
            }
            None => e.exit(),
        },
    };
    let agent = matches!(cli.command, Command::Run(_) | Command::Daemon(_));
    if !agent {
        restore_sigpipe();
    }
    init_logging(&cli.global);
    crate::backend::limit::set(crate::backend::limit::Limits {
        up: cli.global.limit_upload.map(|k| k.saturating_mul(1024)),
        down: cli.global.limit_download.map(|k| k.saturating_mul(1024)),
    });
    // The agent (and its `config check`) refuses settings it does not know rather than ignore
    // them; one-off commands take their options as flags and are not held to it.
    let checks_settings = agent || matches!(cli.command, Command::Config(_));
    if checks_settings
        && let Err(e) =
            settings::check_unknown(std::env::vars_os().filter_map(|(k, _)| k.into_string().ok()))
    {
        say_error(&e);
        return ExitCode::from(e.exit_code());
    }
    match commands::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            say_error(&e);
            ExitCode::from(e.exit_code())
        }
    }
}

/// The command line, with the repository options hidden from the help of the commands that do
/// not open a repository (`sdl check`; `sdl inject` takes `--repo` only as the URL to write).
fn parse() -> std::result::Result<Cli, clap::Error> {
    use clap::{CommandFactory, FromArgMatches};
    const REPO_ONLY: [&str; 5] = [
        "password_file",
        "password_command",
        "no_cache",
        "limit_upload",
        "limit_download",
    ];
    let cmd = Cli::command();
    // A subcommand that already has an argument of a global's id keeps its own copy when the
    // globals are propagated: give it a hidden one.
    let globals: Vec<clap::Arg> = cmd.get_arguments().cloned().collect();
    let cmd = cmd.mut_subcommand("sdl", |sdl| {
        let hide = |mut c: clap::Command, names: &[&str]| {
            for n in names {
                if let Some(a) = globals.iter().find(|a| a.get_id() == *n) {
                    c = c.arg(a.clone().hide(true));
                }
            }
            c
        };
        sdl.mut_subcommand("check", |c| hide(hide(c, &REPO_ONLY), &["repo"]))
            .mut_subcommand("inject", |c| hide(c, &REPO_ONLY))
    });
    let mut m = cmd.try_get_matches()?;
    Cli::from_arg_matches_mut(&mut m)
}

/// Prints the one-line error. Never panics: with stderr closed there is nobody to tell, and the
/// exit code still says it.
fn say_error(e: &Error) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "lifeboat: {}", one_line(e));
}

/// A CLI command whose output pipe closes (`lifeboat ls latest | head`) ends quietly, killed by
/// SIGPIPE like every Unix filter (status 141 in a shell), instead of panicking on EPIPE. Rust
/// ignores SIGPIPE by default; the agent keeps it that way (a closed log stream must not kill
/// it), every other command gets the default action back.
fn restore_sigpipe() {
    // SAFETY: resetting a signal disposition to its default before any thread is started.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn one_line(e: &Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        let m = inner.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        src = inner.source();
    }
    s.replace('\n', " ")
}

fn init_logging(g: &Global) {
    use tracing_subscriber::EnvFilter;
    let default = match (g.quiet, g.verbose) {
        (true, _) => "warn",
        (false, 0) => "lifeboat=info",
        (false, 1) => "lifeboat=info",
        _ => "lifeboat=debug",
    };
    let filter =
        EnvFilter::try_from_env("LIFEBOAT_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    // Colour only on a terminal and never with NO_COLOR: container logs are files and pipes.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        // A failed log write (stderr closed) is dropped: the default reports it with eprintln!,
        // which panics on EPIPE and would take the agent (and its final backup) down with it.
        .log_internal_errors(false)
        .with_target(false);
    if std::env::var("LIFEBOAT_LOG_FORMAT").as_deref() == Ok("json") {
        let _ = builder.json().try_init();
    } else {
        let _ = builder.without_time().try_init();
    }
}
