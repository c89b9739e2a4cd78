//! Retention: which snapshots a keep policy keeps, and why. Same rules as restic's `forget`,
//! so its documentation carries over: each `keep-<period> N` keeps the newest snapshot of each
//! of the last N periods that have one; `keep-last N` the newest N; `keep-within D` everything
//! taken within D of the newest snapshot; `keep-tag T` every snapshot tagged T. A snapshot is
//! kept when any rule keeps it. An empty policy keeps everything.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Datelike, Utc};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::id::Id;
use crate::repository::Repository;
use crate::repository::snapshot::Snapshot;

/// How many snapshots to keep, per rule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct KeepPolicy {
    /// Newest N.
    pub last: u32,
    /// Newest in each of the last N hours that have one.
    pub hourly: u32,
    /// Newest in each of the last N days.
    pub daily: u32,
    /// Newest in each of the last N ISO weeks.
    pub weekly: u32,
    /// Newest in each of the last N months.
    pub monthly: u32,
    /// Newest in each of the last N years.
    pub yearly: u32,
    /// Everything within this long of the newest snapshot.
    pub within: Option<std::time::Duration>,
    /// Everything carrying one of these tags.
    pub tags: Vec<String>,
}

impl KeepPolicy {
    /// True when no rule is set: forgetting with it would remove everything, so callers refuse.
    pub fn is_empty(&self) -> bool {
        self.last == 0
            && self.hourly == 0
            && self.daily == 0
            && self.weekly == 0
            && self.monthly == 0
            && self.yearly == 0
            && self.within.is_none()
            && self.tags.is_empty()
    }
}

impl KeepPolicy {
    /// Builds a policy from the counts `[last, hourly, daily, weekly, monthly, yearly]` (absent
    /// means 0), a `within` duration text and tags, as both `forget` and the agent take them.
    /// `within_name` names the setting in the error.
    pub fn from_settings(
        counts: [Option<u32>; 6],
        within: Option<&str>,
        within_name: &str,
        tags: Vec<String>,
    ) -> Result<KeepPolicy> {
        let [last, hourly, daily, weekly, monthly, yearly] = counts.map(|c| c.unwrap_or(0));
        let within = within
            .map(|w| {
                crate::format::parse_duration(w)
                    .map_err(|e| Error::invalid(format!("{within_name}: {e}")))
            })
            .transpose()?;
        Ok(KeepPolicy {
            last,
            hourly,
            daily,
            weekly,
            monthly,
            yearly,
            within,
            tags,
        })
    }
}

/// The verdict on one snapshot.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    /// Snapshot id.
    pub id: Id,
    /// When it was taken.
    pub time: DateTime<Utc>,
    /// Kept?
    pub keep: bool,
    /// The rules that keep it (empty when removed).
    pub reasons: Vec<String>,
}

type Bucket = fn(&DateTime<Utc>) -> i64;

/// Applies `policy` to one group of snapshots (one volume). Returns newest first. Future-dated
/// snapshots (see [`Snapshot::future_dated`]) take no part: they neither count for the rules nor
/// get removed, and come last with the reason `future-dated`, so a wrong clock can neither push
/// honest snapshots out of `--keep-last` nor be deleted on a guess.
pub fn apply(policy: &KeepPolicy, group: &[(Id, Snapshot)]) -> Vec<Decision> {
    let (future, honest): (Vec<_>, Vec<_>) =
        group.iter().cloned().partition(|(_, s)| s.future_dated);
    let mut out = apply_honest(policy, &honest);
    out.extend(future.into_iter().map(|(id, s)| Decision {
        id,
        time: s.time,
        keep: true,
        reasons: vec!["future-dated".into()],
    }));
    out
}

fn apply_honest(policy: &KeepPolicy, group: &[(Id, Snapshot)]) -> Vec<Decision> {
    let mut snaps: Vec<&(Id, Snapshot)> = group.iter().collect();
    snaps.sort_by(|a, b| b.1.time.cmp(&a.1.time).then(b.0.cmp(&a.0)));
    let mut out: Vec<Decision> = snaps
        .iter()
        .map(|(id, s)| Decision {
            id: *id,
            time: s.time,
            keep: false,
            reasons: Vec::new(),
        })
        .collect();
    if policy.is_empty() {
        for d in &mut out {
            d.keep = true;
            d.reasons.push("no policy".into());
        }
        return out;
    }
    for (i, d) in out.iter_mut().enumerate() {
        if (i as u32) < policy.last {
            d.reasons.push("last".into());
        }
    }
    let rules: [(&str, u32, Bucket); 5] = [
        ("hourly", policy.hourly, |t| t.timestamp().div_euclid(3600)),
        ("daily", policy.daily, |t| {
            i64::from(t.year()) * 1000 + i64::from(t.ordinal())
        }),
        ("weekly", policy.weekly, |t| {
            let w = t.iso_week();
            i64::from(w.year()) * 100 + i64::from(w.week())
        }),
        ("monthly", policy.monthly, |t| {
            i64::from(t.year()) * 100 + i64::from(t.month())
        }),
        ("yearly", policy.yearly, |t| i64::from(t.year())),
    ];
    for (name, n, bucket) in rules {
        if n == 0 {
            continue;
        }
        let mut seen = HashSet::new();
        for d in out.iter_mut() {
            if seen.len() as u32 >= n {
                break;
            }
            if seen.insert(bucket(&d.time)) {
                d.reasons.push(name.into());
            }
        }
    }
    if let (Some(within), Some(newest)) = (policy.within, out.first().map(|d| d.time)) {
        let limit = chrono::Duration::from_std(within).unwrap_or(chrono::Duration::MAX);
        for d in out.iter_mut() {
            if newest.signed_duration_since(d.time) <= limit {
                d.reasons.push("within".into());
            }
        }
    }
    if !policy.tags.is_empty() {
        let by_id: BTreeMap<Id, &Snapshot> = group.iter().map(|(id, s)| (*id, s)).collect();
        for d in out.iter_mut() {
            if by_id[&d.id].tags.iter().any(|t| policy.tags.contains(t)) {
                d.reasons.push("tag".into());
            }
        }
    }
    for d in &mut out {
        d.keep = !d.reasons.is_empty();
    }
    out
}

/// Applies `policy` to the snapshots of volume `name` and deletes the ones it does not keep
/// (unless `dry_run`). Only snapshot objects are removed; the data they referenced stays until a
/// prune. Returns the decisions, newest first.
pub fn forget(
    repo: &Repository,
    name: &str,
    policy: &KeepPolicy,
    dry_run: bool,
) -> Result<Vec<Decision>> {
    if policy.is_empty() {
        return Err(Error::invalid(
            "no keep rule given: set at least one of keep-last/hourly/daily/weekly/monthly/yearly/within/tag",
        ));
    }
    let group: Vec<(Id, Snapshot)> = repo
        .snapshots()?
        .into_iter()
        .filter(|(_, s)| s.name == name)
        .collect();
    let decisions = apply(policy, &group);
    if !dry_run {
        for d in decisions.iter().filter(|d| !d.keep) {
            repo.delete_snapshot(&d.id)?;
        }
    }
    Ok(decisions)
}

/// What snapshots are grouped by before a policy applies: always the volume name, and on request
/// the host and the tag set too (restic's `--group-by`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroupBy {
    /// Also by hostname.
    pub host: bool,
    /// Also by the (sorted) set of tags.
    pub tags: bool,
}

impl std::str::FromStr for GroupBy {
    type Err = Error;
    /// Parses `name`, `name,host`, `name,host,tags`, … (`name` is always implied).
    fn from_str(s: &str) -> Result<Self> {
        let mut g = GroupBy::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "name" => {}
                "host" => g.host = true,
                "tags" => g.tags = true,
                other => {
                    return Err(Error::invalid(format!(
                        "--group-by {other:?}: use a comma-separated list of name, host, tags"
                    )));
                }
            }
        }
        Ok(g)
    }
}

/// One group's label and decisions.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GroupDecisions {
    /// Volume name.
    pub name: String,
    /// Host, when grouping by host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Tags, when grouping by tags.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    /// Newest first.
    pub decisions: Vec<Decision>,
}

/// Applies `policy` to every group (optionally only volume `only`), deleting what it does not
/// keep unless `dry_run`.
pub fn forget_grouped(
    repo: &Repository,
    only: Option<&str>,
    by: GroupBy,
    policy: &KeepPolicy,
    dry_run: bool,
) -> Result<Vec<GroupDecisions>> {
    if policy.is_empty() {
        return Err(Error::invalid(
            "no keep rule given: set at least one of keep-last/hourly/daily/weekly/monthly/yearly/within/tag",
        ));
    }
    type Key = (String, Option<String>, Option<Vec<String>>);
    let mut groups: std::collections::BTreeMap<Key, Vec<(Id, Snapshot)>> = Default::default();
    for (id, s) in repo.snapshots()? {
        if only.is_some_and(|n| n != s.name) {
            continue;
        }
        let mut tags = s.tags.clone();
        tags.sort();
        let key = (
            s.name.clone(),
            by.host.then(|| s.hostname.clone()),
            by.tags.then_some(tags),
        );
        groups.entry(key).or_default().push((id, s));
    }
    let mut out = Vec::new();
    for ((name, host, tags), group) in groups {
        let decisions = apply(policy, &group);
        if !dry_run {
            for d in decisions.iter().filter(|d| !d.keep) {
                repo.delete_snapshot(&d.id)?;
            }
        }
        out.push(GroupDecisions {
            name,
            host,
            tags,
            decisions,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn snap(id: u8, t: DateTime<Utc>, tags: &[&str]) -> (Id, Snapshot) {
        let mut s: Snapshot = serde_json::from_value(serde_json::json!({
            "version": 1, "time": t, "name": "v", "paths": ["/data"], "hostname": "h",
            "username": "u", "method": "files", "tree": Id([0; 32]),
            "program_version": "t",
            "summary": crate::repository::snapshot::Summary::default()
        }))
        .unwrap();
        s.tags = tags.iter().map(|t| t.to_string()).collect();
        (Id([id; 32]), s)
    }

    fn kept(d: &[Decision]) -> Vec<u8> {
        let mut v: Vec<u8> = d.iter().filter(|d| d.keep).map(|d| d.id.0[0]).collect();
        v.sort();
        v
    }

    #[test]
    fn hourly_keeps_newest_per_hour_and_last_keeps_newest_n() {
        let base = Utc.with_ymd_and_hms(2026, 1, 1, 10, 0, 0).unwrap();
        let group: Vec<_> = (0..6u8)
            // two snapshots per hour: 10:00, 10:30, 11:00, 11:30, 12:00, 12:30
            .map(|i| snap(i, base + chrono::Duration::minutes(30 * i64::from(i)), &[]))
            .collect();
        let p = KeepPolicy {
            hourly: 2,
            ..Default::default()
        };
        assert_eq!(kept(&apply(&p, &group)), vec![3, 5]);
        let p = KeepPolicy {
            last: 1,
            hourly: 2,
            ..Default::default()
        };
        assert_eq!(kept(&apply(&p, &group)), vec![3, 5]);
        let p = KeepPolicy {
            last: 3,
            ..Default::default()
        };
        assert_eq!(kept(&apply(&p, &group)), vec![3, 4, 5]);
    }

    #[test]
    fn daily_weekly_within_and_tags() {
        let base = Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap();
        let group: Vec<_> = (0..30u8)
            .map(|i| {
                let tags: &[&str] = if i == 0 { &["keep"] } else { &[] };
                snap(i, base + chrono::Duration::days(i64::from(i)), tags)
            })
            .collect();
        let p = KeepPolicy {
            daily: 3,
            ..Default::default()
        };
        assert_eq!(kept(&apply(&p, &group)), vec![27, 28, 29]);
        let p = KeepPolicy {
            within: Some(std::time::Duration::from_secs(2 * 86400)),
            tags: vec!["keep".into()],
            ..Default::default()
        };
        assert_eq!(kept(&apply(&p, &group)), vec![0, 27, 28, 29]);
        let p = KeepPolicy {
            weekly: 2,
            ..Default::default()
        };
        let k = kept(&apply(&p, &group));
        assert_eq!(k.len(), 2);
        assert!(k.contains(&29));
    }

    #[test]
    fn empty_policy_keeps_everything() {
        let base = Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap();
        let group = vec![snap(1, base, &[]), snap(2, base, &[])];
        assert!(apply(&KeepPolicy::default(), &group).iter().all(|d| d.keep));
    }
}
