//! Tree assembly while the walk runs, so memory stays flat in the number of files.
//!
//! The walk opens a directory, pushes its children (finished nodes, files waiting for a reader,
//! subdirectories still waiting) and closes it. Reader results come back out of order on a
//! channel; each one completes its file's node in place. A directory is *resolved* when it is
//! closed and nothing under it is waiting: its tree blob is written at once and its parent keeps
//! one node with the subtree id. So what is held is the directories on the walk's path plus
//! those with a file still in the readers' queue — never the whole volume. When the held nodes
//! pass [`HOLD_LIMIT`] the walk waits for readers before going on.
//!
//! *Hold mode* (a capture with late files, see [`super::late`]) keeps every resolved directory
//! as a pending subtree instead, because late files are placed into directories only after the
//! last file was read. Its captures (PostgreSQL data directories) hold thousands of files.

use std::collections::HashMap;

use crossbeam_channel::Receiver;

use super::FileOutcome;
use super::treebuild::TreeBuilder;
use super::walk::Pending;
use crate::error::{Error, Result};
use crate::repository::tree::{Node, NodeKind, Tree};

/// Held child nodes above which the walk waits for reader results before it goes on.
const HOLD_LIMIT: usize = 50_000;

struct Slot {
    node: Node,
    children: Vec<Pending>,
    /// Where the resolved directory goes: (parent slot, position among its children).
    parent: Option<(usize, usize)>,
    /// Children still waiting: files for a reader result, subdirectories for resolution.
    waiting: usize,
    closed: bool,
}

/// Builds trees from the walk's events and the readers' results. Called from the walk's thread
/// only.
pub(super) struct Assembler<'a> {
    pub(super) builder: TreeBuilder<'a, 'a>,
    hold: bool,
    slots: Vec<Option<Slot>>,
    free: Vec<usize>,
    /// Reader job → (slot, position) of its file node.
    jobs: HashMap<usize, (usize, usize)>,
    results: Receiver<(usize, Result<FileOutcome>)>,
    /// Children held by unresolved slots.
    held: usize,
}

/// The slot that collects the backup's root entries.
pub(super) const ROOT: usize = 0;

impl<'a> Assembler<'a> {
    pub(super) fn new(
        builder: TreeBuilder<'a, 'a>,
        results: Receiver<(usize, Result<FileOutcome>)>,
        hold: bool,
    ) -> Self {
        let mut a = Assembler {
            builder,
            hold,
            slots: Vec::new(),
            free: Vec::new(),
            jobs: HashMap::new(),
            results,
            held: 0,
        };
        let root = a.open(Node::new(std::ffi::OsStr::new(""), NodeKind::Dir));
        debug_assert_eq!(root, ROOT);
        a
    }

    /// Starts a directory; its children follow with [`Assembler::push`].
    pub(super) fn open(&mut self, node: Node) -> usize {
        let slot = Slot {
            node,
            children: Vec::new(),
            parent: None,
            waiting: 0,
            closed: false,
        };
        match self.free.pop() {
            Some(i) => {
                self.slots[i] = Some(slot);
                i
            }
            None => {
                self.slots.push(Some(slot));
                self.slots.len() - 1
            }
        }
    }

    fn slot(&mut self, i: usize) -> &mut Slot {
        self.slots[i].as_mut().expect("live slot")
    }

    /// Adds a child to an open directory, in name order.
    pub(super) fn push(&mut self, slot: usize, p: Pending) {
        let pos = self.slot(slot).children.len();
        match &p {
            Pending::File(_, job) => {
                self.jobs.insert(*job, (slot, pos));
                self.slot(slot).waiting += 1;
            }
            Pending::Open(child) => {
                let child = *child;
                self.slot(child).parent = Some((slot, pos));
                self.slot(slot).waiting += 1;
            }
            _ => {}
        }
        self.slot(slot).children.push(p);
        self.held += 1;
    }

    /// Ends a directory: what its parent holds for it, resolved when nothing under it waits,
    /// else [`Pending::Open`] (resolved later, in place).
    pub(super) fn close(&mut self, slot: usize) -> Result<Pending> {
        let s = self.slot(slot);
        s.closed = true;
        if s.waiting == 0 {
            self.resolve(slot)
        } else {
            Ok(Pending::Open(slot))
        }
    }

    /// Applies the reader results that have arrived, without waiting; then, while too much is
    /// held and a reader result is still due, waits for results.
    pub(super) fn poll(&mut self) -> Result<()> {
        while let Ok((job, r)) = self.results.try_recv() {
            self.complete(job, r)?;
        }
        while self.held > HOLD_LIMIT && !self.jobs.is_empty() {
            match self.results.recv() {
                Ok((job, r)) => self.complete(job, r)?,
                Err(_) => return Err(Error::Interrupted),
            }
        }
        Ok(())
    }

    /// Waits for every outstanding reader result (the job queue must be closed) and returns the
    /// root entries.
    pub(super) fn finish(mut self) -> Result<(Vec<Pending>, TreeBuilder<'a, 'a>)> {
        while !self.jobs.is_empty() {
            match self.results.recv() {
                Ok((job, r)) => self.complete(job, r)?,
                Err(_) => return Err(Error::Interrupted),
            }
        }
        let root = self.slots[ROOT].take().expect("root slot");
        if root.waiting != 0 {
            return Err(Error::Interrupted);
        }
        Ok((root.children, self.builder))
    }

    fn complete(&mut self, job: usize, r: Result<FileOutcome>) -> Result<()> {
        let (slot, pos) = self
            .jobs
            .remove(&job)
            .ok_or_else(|| Error::invalid(format!("reader result for unknown job {job}")))?;
        let p = std::mem::replace(&mut self.slot(slot).children[pos], Pending::Gone);
        let Pending::File(node, _) = p else {
            return Err(Error::invalid(format!(
                "reader result for job {job} lands on a finished entry"
            )));
        };
        let done = match self.builder.file(node, r)? {
            Some(n) => Pending::Ready(n),
            None => Pending::Gone,
        };
        self.deliver(slot, pos, done)
    }

    /// Puts a finished child in place; resolves the directory (and so on upwards) when it was
    /// the last one waiting.
    fn deliver(&mut self, mut slot: usize, mut pos: usize, mut p: Pending) -> Result<()> {
        loop {
            let s = self.slot(slot);
            s.children[pos] = p;
            s.waiting -= 1;
            if s.waiting > 0 || !s.closed || slot == ROOT {
                return Ok(());
            }
            let parent = s.parent;
            p = self.resolve(slot)?;
            match parent {
                Some((ps, pp)) => (slot, pos) = (ps, pp),
                None => return Ok(()),
            }
        }
    }

    /// Turns a closed directory with nothing waiting into its parent's entry: a node with the
    /// subtree written, or in hold mode the pending subtree.
    fn resolve(&mut self, slot: usize) -> Result<Pending> {
        let s = self.slots[slot].take().expect("live slot");
        self.free.push(slot);
        self.held -= s.children.len();
        let mut node = s.node;
        if self.hold {
            let children = s
                .children
                .into_iter()
                .filter(|c| !matches!(c, Pending::Gone))
                .collect();
            return Ok(Pending::Dir(node, children));
        }
        let mut tree = Tree {
            nodes: self.builder.nodes(s.children)?,
        };
        node.subtree = Some(self.builder.save_tree(&mut tree)?);
        Ok(Pending::Ready(node))
    }
}
