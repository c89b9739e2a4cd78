//! Where passwords come from: a file (`--password-file` / `LIFEBOAT_PASSWORD_FILE`), a command
//! (`--password-command` / `LIFEBOAT_PASSWORD_COMMAND`: a secret manager, as restic's), the
//! environment (`LIFEBOAT_PASSWORD`), or a prompt when stdin is a terminal.

use std::io::IsTerminal;
use std::path::Path;

use crate::error::{Error, IoContext, Result};

/// Reads a secret file, dropping one trailing newline (files written by `echo` end in one).
pub fn read_file(path: &Path) -> Result<String> {
    let s = std::fs::read_to_string(path)
        .ctx(|| format!("cannot read password file {}", path.display()))?;
    Ok(s.strip_suffix('\n')
        .map(|s| s.strip_suffix('\r').unwrap_or(s))
        .unwrap_or(&s)
        .to_string())
}

/// The repository password: the file, else the command, else `env_var`, else a prompt.
pub fn repository(
    file: Option<&Path>,
    command: Option<&str>,
    env_var: &str,
    confirm: bool,
) -> Result<String> {
    if let Some(f) = file {
        return read_file(f);
    }
    if let Some(c) = command {
        return from_command(c);
    }
    if let Ok(p) = std::env::var(env_var) {
        return Ok(p);
    }
    prompt(
        "repository password",
        confirm,
        &format!("set {env_var} or {env_var}_FILE, or give a password command"),
    )
}

/// Runs `sh -c command` and takes its standard output, less one trailing newline, as the
/// password. Fails, naming the command (never its output), when it cannot start, exits non-zero,
/// or prints nothing: an empty password from a broken secret manager must not be tried.
pub fn from_command(command: &str) -> Result<String> {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .output()
        .ctx(|| format!("cannot run the password command {command:?}"))?;
    if !out.status.success() {
        return Err(Error::invalid(format!(
            "the password command {command:?} failed ({}): fix it or give the password another way",
            out.status
        )));
    }
    let s = String::from_utf8(out.stdout).map_err(|_| {
        Error::invalid(format!(
            "the password command {command:?} printed bytes that are not UTF-8"
        ))
    })?;
    let p = s
        .strip_suffix('\n')
        .map(|s| s.strip_suffix('\r').unwrap_or(s))
        .unwrap_or(&s);
    if p.is_empty() {
        return Err(Error::invalid(format!(
            "the password command {command:?} printed nothing"
        )));
    }
    Ok(p.to_string())
}

/// A new password for `key add` / `key passwd`.
pub fn new_password(file: Option<&Path>) -> Result<String> {
    if let Some(f) = file {
        return read_file(f);
    }
    if let Ok(p) = std::env::var("LIFEBOAT_NEW_PASSWORD") {
        return Ok(p);
    }
    prompt(
        "new password",
        true,
        "set LIFEBOAT_NEW_PASSWORD or pass --new-password-file",
    )
}

fn prompt(what: &str, confirm: bool, hint: &str) -> Result<String> {
    if !std::io::stdin().is_terminal() {
        return Err(Error::invalid(format!(
            "no {what} given and no terminal to ask on: {hint}"
        )));
    }
    let p = rpassword::prompt_password(format!("enter {what}: "))
        .map_err(|e| Error::io("reading password", e))?;
    if confirm {
        let again = rpassword::prompt_password(format!("enter {what} again: "))
            .map_err(|e| Error::io("reading password", e))?;
        if again != p {
            return Err(Error::invalid("the passwords do not match"));
        }
    }
    Ok(p)
}
