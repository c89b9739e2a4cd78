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
