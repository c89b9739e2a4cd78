//! Snapshot objects (`snapshots/<id>`): the only thing that makes a backup visible. Written last,
//! after every pack and index it depends on, so an interrupted backup never shows up.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::id::Id;

/// Highest snapshot version this build reads.
pub const SNAPSHOT_VERSION: u32 = 1;

/// A committed backup.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Snapshot {
    /// Format version.
    pub version: u32,
    /// When the backup started.
    pub time: DateTime<Utc>,
    /// The volume's stable name: "latest snapshot of this volume" groups by it.
    pub name: String,
    /// Absolute source paths (or the stdin file name).
    pub paths: Vec<String>,
    /// Host that made it.
    pub hostname: String,
    /// User that made it.
    pub username: String,
    /// User tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Free-form labels, e.g. Akash owner/provider/dseq.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// How the data was captured: `files`, `stdin`, later `pause`/`dump`.
    pub method: String,
    /// Root tree: one node per backup path, named by its base name.
    pub tree: Id,
    /// The snapshot used to skip unchanged files, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<Id>,
    /// Version of lifeboat that wrote it.
    pub program_version: String,
    /// What the backup did.
    pub summary: Summary,
    /// The volume lease generation this snapshot was committed under (agent snapshots; see
    /// FORMAT.md 12a). `None` for CLI backups and older versions: those sort by time as before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<LeaseStamp>,
    /// Set on a snapshot rewritten by `tag` or written by `copy` (FORMAT.md 12d): the snapshot
    /// it stands for, and when that one was committed, so the rewrite is neither taken for a
    /// fork of an older lease nor copied twice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original: Option<Original>,
    /// Set when loaded, never stored: the snapshot's `time` is more than [`FUTURE_TOLERANCE`]
    /// ahead of when the store says its object was written (or of this machine's clock when the
    /// store gives no time). Such a snapshot is listed with a flag but never becomes `latest` and
    /// is neither kept nor removed by retention rules, so a wrong clock cannot pin "latest" or
    /// push honest snapshots out of `--keep-last`.
    #[serde(
        skip_deserializing,
        default,
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub future_dated: bool,
    /// Set when loaded, never stored: when the store says the object was written.
    #[serde(skip)]
    pub stored_at: Option<DateTime<Utc>>,
}

/// The lease a snapshot was committed under: its generation and when that generation began
/// (the taker's clock). A snapshot of generation `g` committed after a generation `g' > g` began
/// is a fork of the volume's history and is never preferred as latest.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct LeaseStamp {
    /// Lease generation.
    pub generation: u64,
    /// When that generation took the volume.
    pub since: DateTime<Utc>,
}

/// The snapshot a rewritten or copied snapshot stands for.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Original {
    /// Its id in the repository that first stored it (a rewrite of a rewrite keeps the first).
    pub id: Id,
    /// When it became visible there: the later of its time and its store write time.
    pub committed: DateTime<Utc>,
}

impl Snapshot {
    /// When this snapshot's content became visible: for a rewrite or copy, when the original
    /// did; else the later of its own time and the store's write time.
    pub fn committed(&self) -> DateTime<Utc> {
        match &self.original {
            Some(o) => o.committed,
            None => self.stored_at.map_or(self.time, |t| t.max(self.time)),
        }
    }

    /// What a rewrite or copy of this snapshot (id `id`) records as its original.
    pub fn original_of(&self, id: Id) -> Original {
        self.original.unwrap_or(Original {
            id,
            committed: self.committed(),
        })
    }
}

/// How far a snapshot's own time may run ahead of the store's write time. SigV4 already refuses
/// requests from a clock more than 15 minutes off, so an honest writer to S3 never exceeds it.
pub const FUTURE_TOLERANCE: chrono::TimeDelta = chrono::TimeDelta::minutes(15);

/// Statistics of one backup.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Summary {
    /// Files read because they were new.
    pub files_new: u64,
    /// Files read because they changed.
    pub files_changed: u64,
    /// Files taken from the parent without reading.
    pub files_unmodified: u64,
    /// Directories.
    pub dirs: u64,
    /// Entries that could not be read (the snapshot is partial).
    pub errors: u64,
    /// Data blobs added to the repository.
    pub data_blobs_added: u64,
    /// Tree blobs added.
    pub tree_blobs_added: u64,
    /// Bytes read from source files.
    pub bytes_read: u64,
    /// Plaintext bytes of new blobs.
    pub bytes_added: u64,
    /// Stored (compressed, sealed) bytes of new blobs.
    pub bytes_stored: u64,
    /// Total size of all files in the snapshot.
    pub total_bytes: u64,
    /// Total number of files in the snapshot.
    pub total_files: u64,
    /// Packs uploaded.
    pub packs_written: u64,
    /// Packs left by an interrupted run and adopted.
    pub packs_adopted: u64,
    /// Wall time.
    pub duration_seconds: f64,
}
