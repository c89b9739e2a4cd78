//! Snapshots as a whole: saving, loading, listing with what is damaged or future-dated, and
//! choosing `latest` — the rules that keep a damaged, forged, forked or future-dated snapshot from
//! being restored in place of the newest good one (docs/FORMAT.md §10).

use super::snapshot::{self, SNAPSHOT_VERSION, Snapshot};
use super::{Repository, forks, object_id};
use crate::backend::Backend;
use crate::crypto::Kind;
use crate::error::{Error, Result};
use crate::id::Id;

impl Repository {
    /// Stores a snapshot; the last write of a backup.
    pub fn save_snapshot(&self, s: &Snapshot) -> Result<Id> {
        let bytes = self
            .key
            .sealer(Kind::Snapshot)
            .seal(b"", &serde_json::to_vec(s).expect("snapshot serializes"));
        self.put_immutable("snapshots", &bytes)
    }

    /// Removes one snapshot object (forget). The data it referenced stays until a prune. A
    /// cached copy is harmless (readers only load listed snapshots) and is dropped by the next
    /// listing, so no extra request is spent here.
    pub fn delete_snapshot(&self, id: &Id) -> Result<()> {
        self.backend.delete(&format!("snapshots/{id}"))
    }

    /// Loads one snapshot.
    pub fn load_snapshot(&self, id: &Id) -> Result<Snapshot> {
        let key = format!("snapshots/{id}");
        let bytes = self.get_immutable(&key, id)?;
        let plain = self
            .key
            .sealer(Kind::Snapshot)
            .open(b"", &bytes, &|| key.clone())?;
        parse_snapshot(&plain, &key)
    }

    /// All snapshots, oldest first. Damaged ones are returned as errors by `check`; here they
    /// are skipped with a warning so one bad object does not hide the others.
    pub fn snapshots(&self) -> Result<Vec<(Id, Snapshot)>> {
        self.load_snapshots(false)
    }

    /// Like [`Repository::snapshots`], but a damaged snapshot is an error: the restore gate must
    /// not mistake "the newest snapshot is unreadable" for "there is nothing to restore".
    pub fn snapshots_strict(&self) -> Result<Vec<(Id, Snapshot)>> {
        self.load_snapshots(true)
    }

    fn load_snapshots(&self, strict: bool) -> Result<Vec<(Id, Snapshot)>> {
        let (good, damaged) = self.snapshots_with_damage()?;
        if strict && let Some((_, e, _)) = damaged.into_iter().next() {
            return Err(e);
        }
        Ok(good)
    }

    /// Every readable snapshot (oldest first, future-dated ones flagged) and every snapshot
    /// object that could not be read, with the error and the store's write time. Damaged objects
    /// are logged as warnings here, once.
    #[allow(clippy::type_complexity)]
    pub fn snapshots_with_damage(
        &self,
    ) -> Result<(
        Vec<(Id, Snapshot)>,
        Vec<(String, Error, Option<chrono::DateTime<chrono::Utc>>)>,
    )> {
        let listed = self.backend.list("snapshots/")?;
        self.cache_retain("snapshots/", &listed);
        let now = chrono::Utc::now();
        let loaded = crate::parallel::map(listed, 8, |info| {
            let stored = info.modified.map(chrono::DateTime::<chrono::Utc>::from);
            let r = object_id(&info.key, "snapshots/").and_then(|id| {
                let mut s = self.load_snapshot(&id)?;
                let reference = stored.map_or(now, |t| t.min(now));
                s.future_dated = s.time > reference + snapshot::FUTURE_TOLERANCE;
                s.stored_at = stored;
                Ok((id, s))
            });
            (info.key, stored, r)
        });
        let mut good = Vec::new();
        let mut damaged = Vec::new();
        for (key, stored, r) in loaded {
            match r {
                Ok(s) => {
                    if s.1.future_dated {
                        tracing::warn!(
                            "{key}: dated {} but stored at {}: more than {} minutes in the future, so it is not used as the latest snapshot nor by retention",
                            s.1.time,
                            stored.map_or("an unknown time".into(), |t| t.to_string()),
                            snapshot::FUTURE_TOLERANCE.num_minutes()
                        );
                    }
                    good.push(s);
                }
                // Forgotten since the listing.
                Err(Error::NotFound { .. }) => {}
                Err(e @ Error::NewerFormat { .. }) => return Err(e),
                Err(e) => {
                    tracing::warn!("{e}");
                    damaged.push((key, e, stored));
                }
            }
        }
        good.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
        Ok((good, damaged))
    }

    /// The newest snapshot of a volume (or of any volume) that is safe to call "latest": not
    /// future-dated, and no damaged snapshot object was stored at or after it (a damaged object
    /// might be the real newest snapshot, so restoring the one before would silently lose data).
    /// With `fallback`, damage is only warned about and the newest readable snapshot is chosen;
    /// the caller says which one it restored.
    pub fn find_latest(&self, name: Option<&str>, fallback: bool) -> Result<(Id, Snapshot)> {
        if let Some(found) = self.latest(name, fallback)? {
            return Ok(found);
        }
        let future = self
            .snapshots()?
            .into_iter()
            .filter(|(_, s)| s.future_dated && name.is_none_or(|n| s.name == n))
            .count();
        let whose = match name {
            Some(n) => format!("volume name {n:?}"),
            None => "the repository".into(),
        };
        Err(if future > 0 {
            Error::invalid(format!(
                "{whose} has only future-dated snapshots ({future}), which are never taken as latest: check this machine's and the writer's clocks, or restore one by its id"
            ))
        } else if let Some(n) = name {
            Error::invalid(format!("no snapshot for volume name {n:?} yet"))
        } else {
            Error::invalid("the repository has no snapshots yet")
        })
    }

    /// Like [`Repository::find_latest`], with `None` when there is no snapshot (and no damaged
    /// object that might be one): the restore gate's "first deployment".
    pub fn latest(&self, name: Option<&str>, fallback: bool) -> Result<Option<(Id, Snapshot)>> {
        let (good, damaged) = self.snapshots_with_damage()?;
        // Forks of a volume's history (FORMAT.md 12a) are never latest.
        let good = forks::prefer(good);
        let mut candidates = good
            .into_iter()
            .rev()
            .filter(|(_, s)| !s.future_dated && name.is_none_or(|n| s.name == n));
        let newest = candidates.next();
        let consistent = |s: &Snapshot| {
            s.labels
                .get(crate::backup::CONSISTENT_LABEL)
                .map(String::as_str)
                != Some("false")
        };
        // A capture known not to be consistent (a pause that outlasted its limit) is passed over
        // for the newest consistent one, saying so; it is used only when there is no other.
        let latest = match newest {
            Some((id, s)) if !consistent(&s) => match candidates.find(|(_, s)| consistent(s)) {
                Some(found) => {
                    tracing::warn!(
                        "skipping snapshot {} ({}): using {}, the newest consistent one",
                        id.short(),
                        s.labels
                            .get("lifeboat.inconsistent")
                            .map_or("not consistent", String::as_str),
                        found.0.short()
                    );
                    Some(found)
                }
                None => Some((id, s)),
            },
            other => other,
        };
        let newer_damage = damaged.iter().find(|(_, _, stored)| {
            match (stored, latest.as_ref().and_then(|(_, s)| s.stored_at)) {
                (Some(d), Some(l)) => *d >= l,
                _ => true,
            }
        });
        if let Some((key, e, _)) = newer_damage
            && !fallback
        {
            let instead = latest
                .as_ref()
                .map(|(id, _)| format!(" ({})", id.short()))
                .unwrap_or_default();
            return Err(Error::corrupt(
                key.clone(),
                format!(
                    "{e}; it may be the newest snapshot, so `latest` is refused rather than silently taking an older one: run `lifeboat check` and `lifeboat repair snapshots`, or pass --fallback to use the newest readable snapshot{instead}"
                ),
            ));
        }
        if let Some((key, _, _)) = newer_damage {
            match &latest {
                Some((id, _)) => tracing::warn!(
                    "--fallback: {key} is damaged; using the newest readable snapshot {}",
                    id.short()
                ),
                None => {
                    tracing::warn!("--fallback: {key} is damaged and no readable snapshot is left")
                }
            }
        }
        Ok(latest)
    }

    /// Resolves `latest` (optionally for one volume name) or a unique id prefix.
    pub fn find_snapshot(&self, spec: &str, name: Option<&str>) -> Result<(Id, Snapshot)> {
        if spec == "latest" {
            return self.find_latest(name, false);
        }
        let all = self.snapshots()?;
        if spec.len() < 4 || !spec.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(Error::invalid(format!(
                "{spec:?} is not a snapshot id: give `latest` or at least 4 hex digits of an id from `lifeboat snapshots`"
            )));
        }
        let spec = spec.to_ascii_lowercase();
        let mut hits: Vec<_> = all
            .into_iter()
            .filter(|(id, _)| id.to_hex().starts_with(&spec))
            .collect();
        match hits.len() {
            1 => Ok(hits.pop().expect("one")),
            0 => Err(Error::invalid(format!("no snapshot with id {spec}"))),
            n => Err(Error::invalid(format!(
                "{n} snapshots start with {spec}: give more digits"
            ))),
        }
    }
}

fn parse_snapshot(plain: &[u8], name: &str) -> Result<Snapshot> {
    #[derive(serde::Deserialize)]
    struct V {
        version: u32,
    }
    let v: V = serde_json::from_slice(plain)
        .map_err(|e| Error::corrupt(name, format!("bad JSON: {e}")))?;
    if v.version > SNAPSHOT_VERSION {
        return Err(Error::NewerFormat {
            object: name.into(),
            found: v.version,
            supported: SNAPSHOT_VERSION,
        });
    }
    serde_json::from_slice(plain).map_err(|e| Error::corrupt(name, format!("bad JSON: {e}")))
}
