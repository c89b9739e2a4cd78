//! What a backup stores besides the walked files: a command's standard output (dump mode) and
//! the late files a capture hands over once the copy is over (see [`super::late`]).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use crossbeam_channel::Sender;

use super::late::{self, LateFiles};
use super::stages::Sink;
use super::walk::Pending;
use super::{RawBlob, Shared, chunk_into};
use crate::chunker::Chunker;
use crate::error::{Error, Result};
use crate::repository::Repository;
use crate::repository::tree::{Node, NodeKind};

/// Streams `sh -c command`'s stdout into the repository as one file node.
pub(super) fn stream_command(
    shared: &Shared,
    repo: &Repository,
    command: &str,
    filename: &str,
    raw: &Sender<RawBlob>,
) -> Result<Node> {
    let mut child = crate::process::spawn(
        Command::new("sh")
            .arg("-c")
            .arg(command)
            .stdin(Stdio::null())
            .stdout(Stdio::piped()),
    )
    .map_err(|e| Error::Command {
        command: command.into(),
        message: format!("cannot start: {e}"),
    })?;
    let stdout = child.stdout.take().expect("piped");
    let mut chunker = Chunker::new(&repo.config().chunker);
    let mut content = Vec::new();
    let streamed = chunk_into(
        shared,
        &mut chunker,
        stdout,
        &mut Sink::Raw(raw),
        &mut content,
    );
    let status = child.wait().map_err(|e| Error::Command {
        command: command.into(),
        message: e.to_string(),
    });
    crate::process::done(child.id());
    let status = status?;
    let size = streamed?;
    if !status.success() {
        return Err(Error::Command {
            command: command.into(),
            message: format!("{status}; no snapshot was written"),
        });
    }
    let now = chrono::Utc::now();
    let mut node = Node::new(std::ffi::OsStr::new(filename), NodeKind::File);
    node.mode = 0o600;
    // SAFETY: getuid/getgid have no preconditions.
    node.uid = unsafe { libc::getuid() };
    node.gid = unsafe { libc::getgid() };
    node.mtime_ns = now.timestamp_nanos_opt().unwrap_or(0);
    node.size = size;
    node.content = content;
    Ok(node)
}

/// Chunks the late files and places them into the pending tree (see [`late`]).
pub(super) fn add_late_files(
    shared: &Shared,
    late: &LateFiles,
    roots: &[(PathBuf, OsString)],
    pending: &mut [Pending],
    raw: &Sender<RawBlob>,
) -> Result<(BTreeMap<String, String>, u64)> {
    let mut chunker = Chunker::new(&shared.repo.config().chunker);
    let out = (late.0)()?;
    let n = out.files.len() as u64;
    for f in out.files {
        let mut content = Vec::new();
        let size = chunk_into(
            shared,
            &mut chunker,
            f.content,
            &mut Sink::Raw(raw),
            &mut content,
        )?;
        let mut node = late::node_for(
            &f.path,
            late::parent_dir(pending, roots, &f.path),
            f.mode,
            size,
        );
        node.content = content;
        late::insert(pending, roots, &f.path, node)?;
    }
    Ok((out.labels, n))
}
