//! Where passwords come from: a file (`--password-file` / `LIFEBOAT_PASSWORD_FILE`), the
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

/// The repository password.
pub fn repository(file: Option<&Path>, confirm: bool) -> Result<String> {
    if let Some(f) = file {
        return read_file(f);
    }
    if let Ok(p) = std::env::var("LIFEBOAT_PASSWORD") {
        return Ok(p);
    }
    prompt(
        "repository password",
        confirm,
        "set LIFEBOAT_PASSWORD or LIFEBOAT_PASSWORD_FILE",
    )
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
