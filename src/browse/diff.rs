//! `lifeboat diff A B`: what changed between two snapshots, path by path, as restic prints it
//! (`+` added, `-` removed, `M` content changed, `U` metadata only, `T` type changed), and how
//! much data the second adds and drops. Subtrees with the same tree id are skipped unread: an
//! unchanged directory costs nothing however large.

use serde::Serialize;

use super::{by_name, walk};
use crate::error::Result;
use crate::id::Id;
use crate::repository::TreeLoader;
use crate::repository::index::Index;
use crate::repository::tree::{Node, NodeKind};

/// One changed path.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Change {
    /// `+`, `-`, `M`, `U` or `T`.
    pub modifier: char,
    /// Path as `ls` prints it; directories end in `/`.
    pub path: String,
}

/// Totals of a diff.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DiffStats {
    /// Files, directories and symlinks only in the second snapshot.
    pub added: u64,
    /// ... only in the first.
    pub removed: u64,
    /// Files whose content changed.
    pub modified: u64,
    /// Entries whose metadata (mode, owner, mtime) alone changed.
    pub metadata: u64,
    /// Entries whose type changed.
    pub type_changed: u64,
    /// Data blobs the second snapshot references and the first does not.
    pub blobs_added: u64,
    /// Their plaintext bytes.
    pub bytes_added: u64,
    /// Data blobs the first references and the second does not.
    pub blobs_removed: u64,
    /// Their plaintext bytes.
    pub bytes_removed: u64,
}

/// Compares the trees `a` and `b`; returns the changes in path order and the totals.
pub fn diff(trees: &TreeLoader, index: &Index, a: Id, b: Id) -> Result<(Vec<Change>, DiffStats)> {
    let mut changes = Vec::new();
    let mut st = DiffStats::default();
    diff_trees(trees, a, b, "", &mut changes, &mut st)?;
    // Blob totals over the whole snapshots: a blob dropped from one file may still be held by an
    // unchanged one elsewhere.
    let blobs_a = super::stats::data_blobs(trees, [a])?;
    let blobs_b = super::stats::data_blobs(trees, [b])?;
    for id in blobs_b.difference(&blobs_a) {
        st.blobs_added += 1;
        st.bytes_added += index.get(id).map_or(0, |l| l.raw_length as u64);
    }
    for id in blobs_a.difference(&blobs_b) {
        st.blobs_removed += 1;
        st.bytes_removed += index.get(id).map_or(0, |l| l.raw_length as u64);
    }
    changes.sort_by(|x, y| x.path.cmp(&y.path));
    Ok((changes, st))
}

fn display(path: &str, n: &Node) -> String {
    if n.kind == NodeKind::Dir {
        format!("{path}/")
    } else {
        path.to_string()
    }
}

/// Everything at and below `n`, added (`+`) or removed (`-`).
fn whole(
    trees: &TreeLoader,
    modifier: char,
    path: &str,
    n: &Node,
    changes: &mut Vec<Change>,
) -> Result<u64> {
    let mut count = 1;
    changes.push(Change {
        modifier,
        path: display(path, n),
    });
    if let Some(sub) = n.subtree {
        walk(trees, sub, path, &mut |p, c| {
            count += 1;
            changes.push(Change {
                modifier,
                path: display(p, c),
            });
            Ok(())
        })?;
    }
    Ok(count)
}

fn diff_trees(
    trees: &TreeLoader,
    a: Id,
    b: Id,
    prefix: &str,
    changes: &mut Vec<Change>,
    st: &mut DiffStats,
) -> Result<()> {
    if a == b {
        return Ok(());
    }
    let old = by_name(trees.load(&a)?.nodes);
    let new = by_name(trees.load(&b)?.nodes);
    for (key, n) in &old {
        if !new.contains_key(key) {
            let p = format!("{prefix}/{}", n.name);
            st.removed += whole(trees, '-', &p, n, changes)?;
        }
    }
    for (key, nb) in &new {
        let p = format!("{prefix}/{}", nb.name);
        let Some(na) = old.get(key) else {
            st.added += whole(trees, '+', &p, nb, changes)?;
            continue;
        };
        if na.kind != nb.kind {
            st.type_changed += 1;
            changes.push(Change {
                modifier: 'T',
                path: display(&p, nb),
            });
            // What was below a directory that is now a file is gone, and the reverse is new.
            if let Some(sub) = na.subtree {
                walk(trees, sub, &p, &mut |q, c| {
                    st.removed += 1;
                    changes.push(Change {
                        modifier: '-',
                        path: display(q, c),
                    });
                    Ok(())
                })?;
            }
            if let Some(sub) = nb.subtree {
                walk(trees, sub, &p, &mut |q, c| {
                    st.added += 1;
                    changes.push(Change {
                        modifier: '+',
                        path: display(q, c),
                    });
                    Ok(())
                })?;
            }
            continue;
        }
        let content = na.content != nb.content || na.size != nb.size || na.target != nb.target;
        let meta = na.mode != nb.mode
            || na.uid != nb.uid
            || na.gid != nb.gid
            || (na.kind != NodeKind::Dir && na.mtime_ns != nb.mtime_ns);
        if content {
            st.modified += 1;
            changes.push(Change {
                modifier: 'M',
                path: display(&p, nb),
            });
        } else if meta {
            st.metadata += 1;
            changes.push(Change {
                modifier: 'U',
                path: display(&p, nb),
            });
        }
        if let (Some(sa), Some(sb)) = (na.subtree, nb.subtree) {
            diff_trees(trees, sa, sb, &p, changes, st)?;
        }
    }
    Ok(())
}
