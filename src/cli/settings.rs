//! Every `LIFEBOAT_*` variable the agent sees must be one lifeboat knows. A typo
//! (`LIFEBOAT_SCHEDUEL=@every 10s`) would otherwise leave the default in force while the user
//! believes the setting took: on Akash nobody watches, and the first sign would be the day the
//! backups turn out hourly, or absent. TOML keys of `LIFEBOAT_CONFIG` become variables before this
//! runs, so they are checked the same way.

use clap::CommandFactory;

use crate::error::{Error, Result};

/// Variables read outside the command-line definitions, or set by lifeboat for hooks, or used by
/// the project's scripts and test drills (which pass their environment on to the agent).
const OTHER_KNOWN: &[&str] = &[
    "LIFEBOAT_CONFIG",
    "LIFEBOAT_LOG",
    "LIFEBOAT_LOG_FORMAT",
    "LIFEBOAT_CACHE_DIR",
    "LIFEBOAT_HEARTBEAT",
    "LIFEBOAT_PASSWORD",
    "LIFEBOAT_NEW_PASSWORD",
    "LIFEBOAT_PASS_SECRETS",
    "LIFEBOAT_CONTROL_TOKEN",
    "LIFEBOAT_PING_URL",
    "LIFEBOAT_WEBHOOK_URL",
    "LIFEBOAT_STAGING_DIR",
    "LIFEBOAT_S3_PATH_STYLE",
    "LIFEBOAT_S3_CONNECTIONS",
    "LIFEBOAT_S3_STALL_TIMEOUT",
    "LIFEBOAT_S3_DEADLINE",
    "LIFEBOAT_S3_MIN_RATE",
    "LIFEBOAT_S3_LIST_DEADLINE",
    "LIFEBOAT_RETRY_ATTEMPTS",
    "LIFEBOAT_RETRY_BASE_MS",
    "LIFEBOAT_RETRY_BUDGET",
    "LIFEBOAT_BACKUP_RETRY_WINDOW",
    "LIFEBOAT_ALLOW_LIVE_DATABASE",
    "LIFEBOAT_ON_LEASE_LOSS",
    // Set by lifeboat for hooks and dump/restore commands.
    "LIFEBOAT_REASON",
    "LIFEBOAT_RESULT",
    "LIFEBOAT_DUMP_FILE",
    // The project's build and bench scripts, and the test drills.
    "LIFEBOAT_BIN",
    "LIFEBOAT_IMAGE",
    "LIFEBOAT_BUCKET",
    "LIFEBOAT_DRILL_ITERATIONS",
    "LIFEBOAT_DRILL_SEED",
];

/// `run --help` and `daemon --help`: the settings that have no flag (environment or
/// `LIFEBOAT_CONFIG` only), so that `--help` lists every variable the agent reads.
pub const NO_FLAG_HELP: &str = "\
Settings without a flag (environment or LIFEBOAT_CONFIG only; secrets also as NAME_FILE):
  Repository:
    LIFEBOAT_PASSWORD            the repository password (or --password-file/--password-command)
    LIFEBOAT_CACHE_DIR           where S3 metadata is cached (~/.cache/lifeboat)
    LIFEBOAT_S3_PATH_STYLE       false: virtual-hosted-style S3 requests (default: path style)
    LIFEBOAT_S3_CONNECTIONS      requests in flight to S3 (8)
    LIFEBOAT_S3_STALL_TIMEOUT    a request with no byte for this long fails (60s)
    LIFEBOAT_S3_DEADLINE         a request's deadline (120s, plus its size at LIFEBOAT_S3_MIN_RATE)
    LIFEBOAT_S3_MIN_RATE         slowest acceptable transfer rate (256 KiB/s)
    LIFEBOAT_S3_LIST_DEADLINE    a whole listing's deadline
    LIFEBOAT_RETRY_ATTEMPTS      attempts per request (8)
    LIFEBOAT_RETRY_BASE_MS       first backoff (exponential, with jitter)
    LIFEBOAT_RETRY_BUDGET        never retry past this long (10m)
    LIFEBOAT_HEARTBEAT           writer-record refresh interval (5m; FORMAT.md 11a)
  Agent:
    LIFEBOAT_CONFIG              a TOML file whose keys are these variables
    LIFEBOAT_ON_LEASE_LOSS       keep-app or stop-app when this instance loses its volume lease
    LIFEBOAT_PASS_SECRETS        true: pass lifeboat's secrets on to the app and hooks
  Notifications:
    LIFEBOAT_CONTROL_TOKEN       bearer token for POST /backup and GET /status (off without it)
    LIFEBOAT_PING_URL            healthchecks.io-style URL: /start, success, /fail
    LIFEBOAT_WEBHOOK_URL         JSON POST on every success and failure
  Logs:
    LIFEBOAT_LOG                 log filter (info, debug, lifeboat=debug)
    LIFEBOAT_LOG_FORMAT          json: one JSON object per line
    NO_COLOR                     no colour even on a terminal (logs are plain when not a terminal)
The README's settings table has every variable with its default.";

/// Every variable lifeboat knows: those of every command-line option, and [`OTHER_KNOWN`].
pub fn known() -> Vec<String> {
    let mut out: Vec<String> = OTHER_KNOWN.iter().map(|s| s.to_string()).collect();
    let mut stack = vec![super::Cli::command()];
    while let Some(cmd) = stack.pop() {
        for arg in cmd.get_arguments() {
            if let Some(env) = arg.get_env() {
                out.push(env.to_string_lossy().into_owned());
            }
        }
        stack.extend(cmd.get_subcommands().cloned());
    }
    out.sort();
    out.dedup();
    out
}

/// Fails on the first `LIFEBOAT_*` variable in `vars` that lifeboat does not know (a `_FILE`
/// form counts as its base), naming the closest known one.
pub fn check_unknown(vars: impl Iterator<Item = String>) -> Result<()> {
    let known = known();
    let mut unknown: Vec<String> = vars
        .filter(|v| v.starts_with("LIFEBOAT_"))
        .filter(|v| {
            let base = v.strip_suffix("_FILE").unwrap_or(v);
            !known.iter().any(|k| k == v || k == base)
        })
        .collect();
    unknown.sort();
    let Some(first) = unknown.first() else {
        return Ok(());
    };
    let closest = known
        .iter()
        .min_by_key(|k| distance(k, first))
        .filter(|k| distance(k, first) <= 4);
    let hint = match closest {
        Some(k) => format!("did you mean {k}?"),
        None => "see the settings table in the README".into(),
    };
    Err(Error::invalid(format!(
        "unknown setting {first} ({hint}); lifeboat would ignore it and keep the default{}",
        if unknown.len() > 1 {
            format!(" (also unknown: {})", unknown[1..].join(", "))
        } else {
            String::new()
        }
    )))
}

/// When clap rejects a value that came from an environment variable (not from a flag on the
/// command line), the message names the variable and the value instead of a flag the user never
/// typed: `LIFEBOAT_PAUSE="yes" is not valid: use one of true, false`.
pub fn env_value_error(e: &clap::Error) -> Option<String> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if !matches!(
        e.kind(),
        ErrorKind::InvalidValue | ErrorKind::ValueValidation
    ) {
        return None;
    }
    let ContextValue::String(arg) = e.get(ContextKind::InvalidArg)? else {
        return None;
    };
    let long = arg
        .split_whitespace()
        .next()?
        .strip_prefix("--")?
        .to_string();
    let typed =
        std::env::args().any(|a| a == format!("--{long}") || a.starts_with(&format!("--{long}=")));
    if typed {
        return None;
    }
    let mut stack = vec![super::Cli::command()];
    let mut var = None;
    while let Some(cmd) = stack.pop() {
        if let Some(a) = cmd
            .get_arguments()
            .find(|a| a.get_long() == Some(long.as_str()))
        {
            var = a.get_env().map(|v| v.to_string_lossy().into_owned());
            if var.is_some() {
                break;
            }
        }
        stack.extend(cmd.get_subcommands().cloned());
    }
    let var = var?;
    let value = std::env::var(&var).ok()?;
    let accepted = match e.get(ContextKind::ValidValue) {
        Some(ContextValue::Strings(v)) => format!("use one of {}", v.join(", ")),
        _ => {
            let text = e.to_string();
            let why = text
                .lines()
                .next()
                .unwrap_or("")
                .rsplit(": ")
                .next()
                .unwrap_or("")
                .to_string();
            if why.is_empty() {
                "see --help".into()
            } else {
                why
            }
        }
    };
    Some(format!("{var}={value:?} is not valid: {accepted}"))
}

/// Levenshtein distance.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `LIFEBOAT_*` name the sources mention is known, so no real setting is refused.
    #[test]
    fn every_setting_the_code_reads_is_known() {
        let known = known();
        let mut stack = vec![std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src")];
        let mut missing = Vec::new();
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                    continue;
                }
                let text = std::fs::read_to_string(&p).unwrap_or_default();
                for (i, _) in text.match_indices("\"LIFEBOAT_") {
                    let name: String = text[i + 1..]
                        .chars()
                        .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                        .collect();
                    let base = name.strip_suffix("_FILE").unwrap_or(&name);
                    // Prefixes in messages (`LIFEBOAT_KEEP_*`) and this module's own typo example.
                    let prefix_or_example = name.ends_with('_')
                        || name == "LIFEBOAT_SCHEDUEL"
                        || known.iter().any(|k| k.starts_with(&format!("{name}_")));
                    if prefix_or_example || known.iter().any(|k| *k == name || k == base) {
                        continue;
                    }
                    missing.push(format!("{name} ({})", p.display()));
                }
            }
        }
        assert!(missing.is_empty(), "not in the known settings: {missing:?}");
    }

    #[test]
    fn a_typo_is_named_with_the_setting_meant() {
        let err = check_unknown(["LIFEBOAT_SCHEDUEL".to_string()].into_iter()).unwrap_err();
        assert!(
            err.to_string().contains("did you mean LIFEBOAT_SCHEDULE?"),
            "{err}"
        );
        assert!(
            check_unknown(
                [
                    "LIFEBOAT_SCHEDULE".to_string(),
                    "LIFEBOAT_PASSWORD_FILE".to_string(),
                    "PATH".to_string()
                ]
                .into_iter()
            )
            .is_ok()
        );
    }
}
