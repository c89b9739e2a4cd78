//! The agent's WAL socket: how `lifeboat wal-push` and `wal-fetch`, run by PostgreSQL as
//! `archive_command` and `restore_command`, reach the running agent.
//!
//! Opening the repository costs a password derivation (Argon2, hundreds of milliseconds and tens
//! of MiB) and needs the password, which the agent keeps out of the app's environment. So the
//! agent, which has the repository open, listens on a Unix socket and the commands only carry
//! bytes. One request per connection:
//!
//! - `PUSH <name> <length>\n` and the file's bytes → `OK\n` once the object is stored, or
//!   `ERR <message>\n`;
//! - `FETCH <name>\n` → `OK <length>\n` and the bytes, `NOTFOUND\n`, `HOLE <message>\n` or
//!   `ERR <message>\n`.
//!
//! The socket is world-writable (PostgreSQL runs as its own user) and lives where only the
//! container's processes can reach it; anything that can reach it is the app itself. The client
//! writes files itself, so the agent never writes to a path a caller chose.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::Fetched;
use crate::error::{Error, Result};

/// The largest file accepted over the socket (PostgreSQL's largest segment size).
const MAX_FILE: u64 = 1 << 30;
/// How long a client waits for the agent's reply: a push waits out the agent's storage retries.
const REPLY_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// What the agent does with requests.
pub trait WalService: Send + Sync + 'static {
    /// Stores a file; returns once it is durable.
    fn push(&self, name: &str, bytes: &[u8]) -> Result<()>;
    /// Reads a file.
    fn fetch(&self, name: &str) -> Result<Fetched>;
}

/// A listening socket; removed when dropped.
pub struct WalServer {
    path: PathBuf,
}

impl Drop for WalServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl WalServer {
    /// Listens on `path` (a stale socket file there is replaced) and serves each connection on
    /// its own thread.
    pub fn start(path: &Path, service: Arc<dyn WalService>) -> Result<WalServer> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::io(format!("cannot create {}", dir.display()), e))?;
        }
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path)
            .map_err(|e| Error::io(format!("cannot listen on {}", path.display()), e))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))
            .map_err(|e| Error::io(format!("cannot open up {}", path.display()), e))?;
        std::thread::Builder::new()
            .name("wal-socket".into())
            .spawn(move || {
                for conn in listener.incoming().flatten() {
                    let svc = service.clone();
                    let _ = std::thread::Builder::new()
                        .name("wal-request".into())
                        .spawn(move || {
                            if let Err(e) = serve(conn, svc.as_ref()) {
                                tracing::debug!("WAL socket request: {e}");
                            }
                        });
                }
            })
            .map_err(|e| Error::io("cannot start the WAL socket thread", e))?;
        Ok(WalServer {
            path: path.to_path_buf(),
        })
    }
}

fn one_line(e: &Error) -> String {
    e.to_string().replace('\n', " ")
}

fn serve(conn: UnixStream, svc: &dyn WalService) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut out = conn;
    let mut line = String::new();
    reader.by_ref().take(4096).read_line(&mut line)?;
    let parts: Vec<&str> = line.trim_end().split(' ').collect();
    match parts.as_slice() {
        ["PUSH", name, len] => {
            let len: u64 = len.parse().unwrap_or(u64::MAX);
            if len > MAX_FILE {
                return writeln!(out, "ERR file too large");
            }
            let mut bytes = Vec::with_capacity(len as usize);
            reader.take(len).read_to_end(&mut bytes)?;
            if bytes.len() as u64 != len {
                return writeln!(out, "ERR short request");
            }
            match svc.push(name, &bytes) {
                Ok(()) => writeln!(out, "OK"),
                Err(e) => writeln!(out, "ERR {}", one_line(&e)),
            }
        }
        ["FETCH", name] => match svc.fetch(name) {
            Ok(Fetched::Found(b)) => {
                writeln!(out, "OK {}", b.len())?;
                out.write_all(&b)
            }
            Ok(Fetched::NotFound) => writeln!(out, "NOTFOUND"),
            Ok(Fetched::Hole(m)) => writeln!(out, "HOLE {}", m.replace('\n', " ")),
            Err(e) => writeln!(out, "ERR {}", one_line(&e)),
        },
        _ => writeln!(out, "ERR unknown request"),
    }
}

fn connect(socket: &Path) -> Result<UnixStream> {
    let s = UnixStream::connect(socket).map_err(|e| {
        Error::io(
            format!(
                "cannot reach the lifeboat agent's WAL socket {} (is `lifeboat run`/`daemon` running with LIFEBOAT_METHOD=postgres?)",
                socket.display()
            ),
            e,
        )
    })?;
    let _ = s.set_read_timeout(Some(REPLY_TIMEOUT));
    Ok(s)
}

fn reply_error(socket: &Path, e: std::io::Error) -> Error {
    Error::io(
        format!("no reply from the lifeboat agent on {}", socket.display()),
        e,
    )
}

/// Sends a file to the agent; `Ok` once the agent stored it.
pub fn push(socket: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let mut s = connect(socket)?;
    let io = |e| reply_error(socket, e);
    writeln!(s, "PUSH {name} {}", bytes.len()).map_err(io)?;
    s.write_all(bytes).map_err(io)?;
    let mut line = String::new();
    BufReader::new(s)
        .take(64 * 1024)
        .read_line(&mut line)
        .map_err(io)?;
    match line.trim_end() {
        "OK" => Ok(()),
        l => Err(Error::invalid(format!(
            "archiving {name} failed: {}",
            l.strip_prefix("ERR ").unwrap_or(if l.is_empty() {
                "the agent closed the connection"
            } else {
                l
            })
        ))),
    }
}

/// Asks the agent for a file.
pub fn fetch(socket: &Path, name: &str) -> Result<Fetched> {
    let mut s = connect(socket)?;
    let io = |e| reply_error(socket, e);
    writeln!(s, "FETCH {name}").map_err(io)?;
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.by_ref()
        .take(64 * 1024)
        .read_line(&mut line)
        .map_err(io)?;
    let line = line.trim_end();
    if let Some(len) = line.strip_prefix("OK ") {
        let len: u64 = len
            .parse()
            .map_err(|_| Error::invalid(format!("bad reply from the agent: {line:?}")))?;
        let mut b = Vec::with_capacity(len.min(MAX_FILE) as usize);
        r.take(len).read_to_end(&mut b).map_err(io)?;
        if b.len() as u64 != len {
            return Err(Error::invalid(format!(
                "fetching {name}: the agent's reply was cut short ({} of {len} bytes)",
                b.len()
            )));
        }
        return Ok(Fetched::Found(b));
    }
    if line == "NOTFOUND" {
        return Ok(Fetched::NotFound);
    }
    if let Some(m) = line.strip_prefix("HOLE ") {
        return Ok(Fetched::Hole(m.to_string()));
    }
    Err(Error::invalid(format!(
        "fetching {name} failed: {}",
        line.strip_prefix("ERR ").unwrap_or(if line.is_empty() {
            "the agent closed the connection"
        } else {
            line
        })
    )))
}
