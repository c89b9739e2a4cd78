//! The two small records that let prune run beside any number of backups without locks
//! (docs/FORMAT.md §11a has the argument):
//!
//! - `writers/<random id>`: a backup's heartbeat. Written when the backup starts, rewritten every
//!   heartbeat interval, removed when it ends. A record not refreshed within the prune grace
//!   period belongs to a dead (or stalled) writer.
//! - `prune/<id>`: a prune mark, the first of prune's two phases. It lists packs no snapshot
//!   needed when it was written; backups that start later neither deduplicate against nor adopt
//!   them, and a later prune deletes them once no backup that started before the mark is alive.
//!
//! Both are sealed JSON like snapshots.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Repository, object_id};
use crate::backend::{Payload, PutMode};
use crate::crypto::Kind;
use crate::error::{Error, Result};
use crate::id::Id;

/// Highest writer/mark record version this build reads.
pub const GC_RECORD_VERSION: u32 = 1;

/// How often a running backup refreshes its writer record unless `LIFEBOAT_HEARTBEAT` says
/// otherwise. Prune's grace period must be at least three of these.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(300);

/// The heartbeat interval in effect (`LIFEBOAT_HEARTBEAT`, a duration like `5m`; tests shorten it).
pub fn heartbeat_interval() -> Duration {
    std::env::var("LIFEBOAT_HEARTBEAT")
        .ok()
        .and_then(|v| crate::format::parse_duration(&v).ok())
        .filter(|d| !d.is_zero())
        .unwrap_or(DEFAULT_HEARTBEAT)
}

/// A running backup, as prune sees it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WriterRecord {
    /// Record version.
    pub version: u32,
    /// When the backup started (before it read any prune mark or index).
    pub start: DateTime<Utc>,
    /// Last heartbeat.
    pub refreshed: DateTime<Utc>,
    /// Volume name being backed up.
    pub name: String,
    /// Host and process, for people reading `prune --json`.
    pub hostname: String,
    /// Process id on that host.
    pub pid: u32,
}

/// Phase one of a prune.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PruneMark {
    /// Record version.
    pub version: u32,
    /// When the mark was written; set just before the write, after every listing it rests on.
    pub created: DateTime<Utc>,
    /// The grace period the marking prune used; a sweep waits at least this long.
    pub grace_seconds: u64,
    /// Packs to delete once safe.
    pub packs: Vec<Id>,
}

impl Repository {
    /// Seals a writer record, bound to its own key (its name is chosen before it is written).
    fn put_sealed_json<T: Serialize>(&self, key: &str, value: &T, mode: PutMode) -> Result<()> {
        let bytes = self.key().sealer(Kind::Writer).seal(
            key.as_bytes(),
            &serde_json::to_vec(value).expect("record serializes"),
        );
        self.backend().put(key, Payload::Bytes(&bytes), mode)?;
        Ok(())
    }

    /// Reads a writer record (`Kind::Writer`, bound to its key) or a prune mark
    /// (`Kind::PruneMark`, named by its hash, which is checked).
    fn get_sealed_json<T: serde::de::DeserializeOwned>(&self, key: &str, kind: Kind) -> Result<T> {
        let bytes = self.get_object(key)?;
        let name: &[u8] = if kind == Kind::Writer {
            key.as_bytes()
        } else {
            super::verify_object_id(key, &object_id(key, "prune/")?, &bytes)?;
            b""
        };
        let plain = self
            .key()
            .sealer(kind)
            .open(name, &bytes, &|| key.to_string())?;
        #[derive(Deserialize)]
        struct V {
            version: u32,
        }
        let v: V = serde_json::from_slice(&plain)
            .map_err(|e| Error::corrupt(key, format!("bad JSON: {e}")))?;
        if v.version > GC_RECORD_VERSION {
            return Err(Error::NewerFormat {
                object: key.into(),
                found: v.version,
                supported: GC_RECORD_VERSION,
            });
        }
        serde_json::from_slice(&plain).map_err(|e| Error::corrupt(key, format!("bad JSON: {e}")))
    }

    /// Writes (or refreshes) a writer record under `writers/<id>`.
    pub fn put_writer(&self, id: &Id, record: &WriterRecord) -> Result<()> {
        self.put_sealed_json(&format!("writers/{id}"), record, PutMode::Overwrite)
    }

    /// Removes a writer record.
    pub fn delete_writer(&self, id: &Id) -> Result<()> {
        self.backend().delete(&format!("writers/{id}"))
    }

    /// Every writer record. An unreadable one comes back as an error with the object's write
    /// time, so prune can still tell a dead one from a live one.
    #[allow(clippy::type_complexity)]
    pub fn writers(
        &self,
    ) -> Result<
        Vec<(
            Id,
            std::result::Result<WriterRecord, (Error, Option<DateTime<Utc>>)>,
        )>,
    > {
        let listed = self.backend().list("writers/")?;
        let read = crate::parallel::map(listed, 8, |info| {
            let id = object_id(&info.key, "writers/").ok()?;
            match self.get_sealed_json::<WriterRecord>(&info.key, Kind::Writer) {
                // Finished since the listing.
                Err(Error::NotFound { .. }) => None,
                r => Some((
                    id,
                    r.map_err(|e| (e, info.modified.map(DateTime::<Utc>::from))),
                )),
            }
        });
        Ok(read.into_iter().flatten().collect())
    }

    /// Every prune mark. A damaged mark is an error: skipping it would let a backup reuse packs
    /// that a later sweep deletes.
    pub fn prune_marks(&self) -> Result<Vec<(Id, PruneMark)>> {
        let listed = self.backend().list("prune/")?;
        let read = crate::parallel::map(listed, 8, |info| -> Result<Option<(Id, PruneMark)>> {
            let id = object_id(&info.key, "prune/")?;
            match self.get_sealed_json(&info.key, Kind::PruneMark) {
                // Swept since the listing.
                Err(Error::NotFound { .. }) => Ok(None),
                r => Ok(Some((id, r?))),
            }
        });
        Ok(read
            .into_iter()
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .flatten()
            .collect())
    }

    /// Packs named by any prune mark: not to be reused.
    pub fn marked_packs(&self) -> Result<HashSet<Id>> {
        Ok(self
            .prune_marks()?
            .into_iter()
            .flat_map(|(_, m)| m.packs)
            .collect())
    }

    /// Writes a prune mark create-only under the hash of its bytes.
    pub fn save_prune_mark(&self, mark: &PruneMark) -> Result<Id> {
        let bytes = self
            .key()
            .sealer(Kind::PruneMark)
            .seal(b"", &serde_json::to_vec(mark).expect("mark serializes"));
        let id = Id::of_bytes(&bytes);
        self.backend().put(
            &format!("prune/{id}"),
            Payload::Bytes(&bytes),
            PutMode::IfAbsent,
        )?;
        Ok(id)
    }

    /// Removes a prune mark once its sweep is done.
    pub fn delete_prune_mark(&self, id: &Id) -> Result<()> {
        self.backend().delete(&format!("prune/{id}"))
    }
}
