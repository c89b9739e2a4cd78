//! `lifeboat dump SNAPSHOT PATH`: one file's content, or a directory as a tar stream, on a
//! writer (stdout), without restoring to disk first, as restic's `dump` does. Each blob is read
//! and verified as a restore does; a file whose blobs do not add up to its recorded size ends
//! the dump with an error rather than a short file in an archive that looks whole.

use std::io::{Read, Write};

use crate::error::{Error, Result};
use crate::id::Id;
use crate::repository::index::Index;
use crate::repository::tree::{Node, NodeKind};
use crate::repository::{Repository, TreeLoader};

/// What a dump wrote.
#[derive(Debug, Default, Clone, Copy)]
pub struct Dumped {
    /// Regular files.
    pub files: u64,
    /// Directories.
    pub dirs: u64,
    /// Symlinks.
    pub symlinks: u64,
    /// Content bytes.
    pub bytes: u64,
}

/// Writes `node` (at `path`, as `resolve` returned it) to `out`: a file's bytes as they are, a
/// directory (or the snapshot root) as a tar archive whose paths start at the directory's name.
/// A symlink is refused: there is nothing to print.
pub fn dump(
    repo: &Repository,
    index: &Index,
    trees: &TreeLoader,
    path: &str,
    node: &Node,
    out: &mut dyn Write,
) -> Result<Dumped> {
    let mut d = Dumped::default();
    match node.kind {
        NodeKind::File => {
            let mut r = FileReader::new(repo, index, node, path);
            d.bytes = std::io::copy(&mut r, out).map_err(|e| io_err(path, e))?;
            d.files = 1;
        }
        NodeKind::Symlink => {
            return Err(Error::invalid(format!(
                "{path} is a symlink (to {}): dump a file or a directory",
                node.target.as_deref().unwrap_or("?")
            )));
        }
        NodeKind::Dir => {
            let mut tar = tar::Builder::new(out);
            let base = path.rsplit('/').next().unwrap_or("").to_string();
            let sub = node
                .subtree
                .ok_or_else(|| Error::corrupt(format!("directory {path}"), "has no tree"))?;
            if !base.is_empty() {
                append(repo, index, &mut tar, &base, node, &mut d)?;
            }
            let mut stack: Vec<(Id, String)> = vec![(sub, base)];
            while let Some((tid, rel)) = stack.pop() {
                for n in trees.load(&tid)?.nodes {
                    let p = if rel.is_empty() {
                        n.name.clone()
                    } else {
                        format!("{rel}/{}", n.name)
                    };
                    append(repo, index, &mut tar, &p, &n, &mut d)?;
                    if let Some(s) = n.subtree {
                        // Depth first, in name order: push after the directory's own entry.
                        stack.push((s, p));
                    }
                }
            }
            tar.finish().map_err(|e| io_err(path, e))?;
        }
    }
    Ok(d)
}

fn io_err(path: &str, e: std::io::Error) -> Error {
    // A corrupt or unreadable blob surfaces through io::Error from the reader; keep its words.
    Error::io(format!("dump {path}"), e)
}

fn append<W: Write>(
    repo: &Repository,
    index: &Index,
    tar: &mut tar::Builder<W>,
    path: &str,
    n: &Node,
    d: &mut Dumped,
) -> Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_mode(n.mode);
    h.set_uid(n.uid as u64);
    h.set_gid(n.gid as u64);
    h.set_mtime(n.mtime_ns.div_euclid(1_000_000_000).max(0) as u64);
    match n.kind {
        NodeKind::Dir => {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_size(0);
            d.dirs += 1;
            tar.append_data(&mut h, format!("{path}/"), std::io::empty())
        }
        NodeKind::Symlink => {
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            d.symlinks += 1;
            let target = n.target_os().unwrap_or_default();
            tar.append_link(&mut h, path, target)
        }
        NodeKind::File => {
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(n.size);
            d.files += 1;
            d.bytes += n.size;
            tar.append_data(&mut h, path, FileReader::new(repo, index, n, path))
        }
    }
    .map_err(|e| io_err(path, e))
}

/// A file's content, blob by blob, checked against the recorded size.
struct FileReader<'a> {
    repo: &'a Repository,
    index: &'a Index,
    blobs: std::slice::Iter<'a, Id>,
    buf: Vec<u8>,
    pos: usize,
    read: u64,
    size: u64,
    path: &'a str,
}

impl<'a> FileReader<'a> {
    fn new(repo: &'a Repository, index: &'a Index, n: &'a Node, path: &'a str) -> Self {
        FileReader {
            repo,
            index,
            blobs: n.content.iter(),
            buf: Vec::new(),
            pos: 0,
            read: 0,
            size: n.size,
            path,
        }
    }
}

impl Read for FileReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.buf.len() {
            let Some(id) = self.blobs.next() else {
                if self.read != self.size {
                    return Err(std::io::Error::other(format!(
                        "{}: its blobs hold {} bytes, the snapshot records {}",
                        self.path, self.read, self.size
                    )));
                }
                return Ok(0);
            };
            self.buf = self
                .repo
                .read_blob(self.index, id)
                .map_err(|e| std::io::Error::other(format!("{}: {e}", self.path)))?;
            self.pos = 0;
            self.read += self.buf.len() as u64;
            if self.read > self.size {
                return Err(std::io::Error::other(format!(
                    "{}: its blobs hold more than the {} bytes the snapshot records",
                    self.path, self.size
                )));
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
