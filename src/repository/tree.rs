//! Tree blobs: one directory's entries as JSON, sorted by name bytes so the same directory always
//! serializes to the same bytes and an unchanged subtree dedupes to an existing blob.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::id::Id;

/// File types lifeboat stores. Devices, FIFOs and sockets are skipped with a warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    /// Regular file.
    File,
    /// Directory.
    Dir,
    /// Symbolic link.
    Symlink,
}

/// One directory entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// UTF-8 name (lossy when `name_raw` is present).
    pub name: String,
    /// Hex of the exact name bytes when they are not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_raw: Option<String>,
    /// Entry type.
    #[serde(rename = "type")]
    pub kind: NodeKind,
    /// Permission bits including setuid/setgid/sticky (`mode & 0o7777`).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    /// Files only: status change time, for change detection.
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub ctime_ns: i64,
    /// Files: byte length. Others: 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub size: u64,
    /// Files only: inode number, for change detection and hard links.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub inode: u64,
    /// Files only: device number, for hard links.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub device: u64,
    /// Files only: link count; above 1 the restorer recreates the hard link.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub links: u64,
    /// Symlinks: target (lossy when `target_raw` is present).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Hex of the exact target bytes when they are not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_raw: Option<String>,
    /// Files: data blob ids in order; their plaintexts concatenated are the file.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub content: Vec<Id>,
    /// Directories: the tree blob of their entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subtree: Option<Id>,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}
fn is_zero_i64(v: &i64) -> bool {
    *v == 0
}

impl Node {
    /// A node with only name and type set.
    pub fn new(name: &OsStr, kind: NodeKind) -> Node {
        let (name, name_raw) = split_os(name);
        Node {
            name,
            name_raw,
            kind,
            mode: 0,
            uid: 0,
            gid: 0,
            mtime_ns: 0,
            ctime_ns: 0,
            size: 0,
            inode: 0,
            device: 0,
            links: 0,
            target: None,
            target_raw: None,
            content: Vec::new(),
            subtree: None,
        }
    }

    /// The exact name.
    pub fn name_os(&self) -> OsString {
        join_os(&self.name, &self.name_raw)
    }

    /// Sets the symlink target.
    pub fn set_target(&mut self, t: &OsStr) {
        let (s, raw) = split_os(t);
        self.target = Some(s);
        self.target_raw = raw;
    }

    /// The exact symlink target.
    pub fn target_os(&self) -> Option<OsString> {
        self.target.as_ref().map(|t| join_os(t, &self.target_raw))
    }
}

fn split_os(s: &OsStr) -> (String, Option<String>) {
    match s.to_str() {
        Some(u) => (u.to_string(), None),
        None => (
            s.to_string_lossy().into_owned(),
            Some(hex::encode(s.as_bytes())),
        ),
    }
}

fn join_os(s: &str, raw: &Option<String>) -> OsString {
    match raw.as_ref().and_then(|r| hex::decode(r).ok()) {
        Some(b) => OsString::from_vec(b),
        None => OsString::from(s),
    }
}

/// A directory listing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tree {
    /// Entries sorted by name bytes.
    pub nodes: Vec<Node>,
}

impl Tree {
    /// Canonical bytes: entries sorted by their exact name bytes.
    pub fn to_bytes(&mut self) -> Vec<u8> {
        self.nodes
            .sort_by(|a, b| a.name_os().as_bytes().cmp(b.name_os().as_bytes()));
        serde_json::to_vec(self).expect("tree serializes")
    }

    /// Parses a tree blob's plaintext.
    pub fn from_bytes(bytes: &[u8], id: &Id) -> Result<Tree> {
        serde_json::from_slice(bytes).map_err(|e| {
            Error::corrupt(
                format!("tree {}", id.short()),
                format!("bad tree JSON: {e}"),
            )
        })
    }

    /// Finds an entry by exact name.
    pub fn find(&self, name: &OsStr) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name_os() == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_utf8_names_survive() {
        let raw = OsStr::from_bytes(b"caf\xe9");
        let mut n = Node::new(raw, NodeKind::Symlink);
        n.set_target(OsStr::from_bytes(b"\xff/x"));
        let mut t = Tree { nodes: vec![n] };
        let back = Tree::from_bytes(&t.to_bytes(), &Id::default()).unwrap();
        assert_eq!(back.nodes[0].name_os(), raw);
        assert_eq!(
            back.nodes[0].target_os().unwrap(),
            OsStr::from_bytes(b"\xff/x")
        );
    }

    #[test]
    fn serialization_is_canonical() {
        let a = Node::new(OsStr::new("a"), NodeKind::File);
        let b = Node::new(OsStr::new("b"), NodeKind::File);
        let mut t1 = Tree {
            nodes: vec![a.clone(), b.clone()],
        };
        let mut t2 = Tree { nodes: vec![b, a] };
        assert_eq!(t1.to_bytes(), t2.to_bytes());
    }
}
