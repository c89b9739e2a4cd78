//! `lifeboat find PATTERN…`: which snapshots hold a path. A pattern without `/` is matched
//! against each entry's name, one with `/` against its whole path as `ls` prints it (globs:
//! `*`, `?`, `[…]`, `**`). A subtree shared by many snapshots is searched once.

use std::collections::HashMap;
use std::rc::Rc;

use globset::{Glob, GlobMatcher};

use crate::error::{Error, Result};
use crate::id::Id;
use crate::ls::Entry;
use crate::repository::TreeLoader;

/// Compiled patterns.
pub struct Patterns {
    by_name: Vec<GlobMatcher>,
    by_path: Vec<GlobMatcher>,
}

impl Patterns {
    /// Compiles `patterns`; a malformed glob is an error naming it.
    pub fn new(patterns: &[String]) -> Result<Patterns> {
        let mut p = Patterns {
            by_name: Vec::new(),
            by_path: Vec::new(),
        };
        for pat in patterns {
            let g = Glob::new(pat)
                .map_err(|e| Error::invalid(format!("pattern {pat:?}: {e}")))?
                .compile_matcher();
            if pat.contains('/') {
                p.by_path.push(g);
            } else {
                p.by_name.push(g);
            }
        }
        Ok(p)
    }

    fn matches(&self, name: &str, path: &str) -> bool {
        self.by_name.iter().any(|g| g.is_match(name))
            || self.by_path.iter().any(|g| g.is_match(path))
    }
}

/// Searches snapshots' trees, remembering each subtree's matches (relative paths) by tree id.
pub struct Finder<'a> {
    trees: &'a TreeLoader<'a>,
    patterns: Patterns,
    memo: HashMap<(Id, String), Rc<Vec<Entry>>>,
}

impl<'a> Finder<'a> {
    /// A finder over `trees`.
    pub fn new(trees: &'a TreeLoader<'a>, patterns: Patterns) -> Self {
        Finder {
            trees,
            patterns,
            memo: HashMap::new(),
        }
    }

    /// The matching entries under `tree` (a snapshot's root), in path order.
    pub fn find(&mut self, tree: Id) -> Result<Vec<Entry>> {
        let mut v = (*self.search(tree, String::new())?).clone();
        v.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(v)
    }

    /// Matches below `tree`, whose path is `prefix`. Path patterns depend on the prefix, so the
    /// memo is keyed by both; with name patterns only the prefix is the same for a shared
    /// subtree in the same place, which is the common case (the same volume over time).
    fn search(&mut self, tree: Id, prefix: String) -> Result<Rc<Vec<Entry>>> {
        let key = (tree, prefix);
        if let Some(hit) = self.memo.get(&key) {
            return Ok(hit.clone());
        }
        let mut out = Vec::new();
        for n in self.trees.load(&tree)?.nodes {
            let p = format!("{}/{}", key.1, n.name);
            if self.patterns.matches(&n.name, &p) {
                out.push(crate::ls::entry(&p, &n));
            }
            if let Some(s) = n.subtree {
                out.extend(self.search(s, p)?.iter().cloned());
            }
        }
        let out = Rc::new(out);
        self.memo.insert(key, out.clone());
        Ok(out)
    }
}
