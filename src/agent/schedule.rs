//! When backups run: standard 5-field cron, 6-field cron with seconds first, the `@hourly`-style
//! macros, and `@every 30s` intervals, in a configurable time zone (UTC by default). A fixed
//! per-volume jitter, derived from the volume name, shifts every run so a fleet deployed from
//! one SDL does not hit the bucket in the same second, yet each volume keeps a stable rhythm.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

use crate::format::parse_duration;

/// A parsed schedule.
#[derive(Debug, Clone)]
pub enum Schedule {
    /// A cron pattern, evaluated in `tz`.
    Cron {
        /// The pattern.
        cron: Box<Cron>,
        /// The zone its fields are read in.
        tz: Tz,
        /// The text it came from.
        text: String,
    },
    /// Every interval, counted from the agent's start.
    Every(Duration),
    /// No scheduled backups (`off`): only the final one, and those triggered over HTTP.
    Off,
}

/// Names the cron field whose number is out of range (croner only says "Number out of bounds").
fn out_of_range(t: &str) -> Option<String> {
    let fields: Vec<&str> = t.split_whitespace().collect();
    let names: &[(&str, u32, u32)] = match fields.len() {
        5 => &[
            ("minute", 0, 59),
            ("hour", 0, 23),
            ("day of month", 1, 31),
            ("month", 1, 12),
            ("weekday", 0, 7),
        ],
        6 => &[
            ("second", 0, 59),
            ("minute", 0, 59),
            ("hour", 0, 23),
            ("day of month", 1, 31),
            ("month", 1, 12),
            ("weekday", 0, 7),
        ],
        _ => return None,
    };
    for (field, (name, lo, hi)) in fields.iter().zip(names) {
        for part in field.split([',', '-', '/']) {
            if let Ok(n) = part.parse::<u32>()
                && !(*lo..=*hi).contains(&n)
                && !field.contains(&format!("/{part}"))
            {
                return Some(format!("{name} {n} is outside {lo}-{hi}"));
            }
        }
    }
    None
}

impl Schedule {
    /// Parses `text` with fields read in time zone `tz` (an IANA name like `Europe/Berlin`).
    pub fn parse(text: &str, tz: &str) -> Result<Schedule, String> {
        let t = text.trim();
        let tz = Tz::from_str(tz.trim()).map_err(|_| {
            format!(
                "LIFEBOAT_TIMEZONE={tz:?} is not a time zone: use an IANA name such as UTC or Europe/Berlin"
            )
        })?;
        if t.eq_ignore_ascii_case("off") || t.eq_ignore_ascii_case("never") {
            return Ok(Schedule::Off);
        }
        if let Some(rest) = t.strip_prefix("@every") {
            let d = parse_duration(rest).map_err(|e| format!("schedule {t:?}: {e}"))?;
            if d < Duration::from_secs(1) {
                return Err(format!("schedule {t:?}: the interval must be at least 1s"));
            }
            return Ok(Schedule::Every(d));
        }
        let fields = t.split_whitespace().count();
        if !t.starts_with('@') && !(5..=6).contains(&fields) {
            return Err(format!(
                "schedule {t:?}: expected 5 cron fields (min hour day month weekday), 6 with seconds first, @hourly/@daily/@weekly/@monthly/@yearly, or @every 30s"
            ));
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build()
            .parse(t)
            .map_err(|e| match out_of_range(t) {
                Some(why) => format!("schedule {t:?}: {why}"),
                None => format!("schedule {t:?}: {e}"),
            })?;
        Ok(Schedule::Cron {
            cron: Box::new(cron),
            tz,
            text: t.to_string(),
        })
    }

    /// The first run strictly after `after`, or `None` when there is none (`off`, or a pattern
    /// that never matches again).
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Schedule::Off => None,
            Schedule::Every(d) => Some(after + chrono::Duration::from_std(*d).ok()?),
            Schedule::Cron { cron, tz, .. } => {
                let local = after.with_timezone(tz);
                cron.find_next_occurrence(&local, false)
                    .ok()
                    .map(|t| t.with_timezone(&Utc))
            }
        }
    }
}

impl std::fmt::Display for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Schedule::Off => write!(f, "off"),
            Schedule::Every(d) => write!(f, "@every {}s", d.as_secs_f64()),
            Schedule::Cron { text, tz, .. } => write!(f, "{text} ({tz})"),
        }
    }
}

/// The volume's fixed offset within `[0, max)`: the same name always gets the same offset, so
/// restarts keep the rhythm and different volumes spread out.
pub fn jitter(name: &str, max: Duration) -> Duration {
    if max.is_zero() {
        return Duration::ZERO;
    }
    let h = blake3::hash(format!("lifeboat jitter {name}").as_bytes());
    let n = u64::from_le_bytes(h.as_bytes()[..8].try_into().expect("8 bytes"));
    Duration::from_millis(n % max.as_millis().max(1) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(h: u32, m: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 21, h, m, s).unwrap()
    }

    #[test]
    fn five_and_six_fields_and_macros() {
        let s = Schedule::parse("*/15 * * * *", "UTC").unwrap();
        assert_eq!(s.next_after(at(10, 7, 0)), Some(at(10, 15, 0)));
        let s = Schedule::parse("30 */15 * * * *", "UTC").unwrap();
        assert_eq!(s.next_after(at(10, 7, 0)), Some(at(10, 15, 30)));
        let s = Schedule::parse("@hourly", "UTC").unwrap();
        assert_eq!(s.next_after(at(10, 7, 0)), Some(at(11, 0, 0)));
        let s = Schedule::parse("@daily", "UTC").unwrap();
        assert_eq!(
            s.next_after(at(10, 7, 0)),
            Some(Utc.with_ymd_and_hms(2026, 11, 22, 0, 0, 0).unwrap())
        );
        let s = Schedule::parse("@every 90s", "UTC").unwrap();
        assert_eq!(s.next_after(at(10, 0, 0)), Some(at(10, 1, 30)));
        assert!(
            Schedule::parse("off", "UTC")
                .unwrap()
                .next_after(at(1, 0, 0))
                .is_none()
        );
    }

    #[test]
    fn time_zone_shifts_the_fields() {
        // 02:00 in Berlin (UTC+1 in November) is 01:00 UTC.
        let s = Schedule::parse("0 2 * * *", "Europe/Berlin").unwrap();
        assert_eq!(
            s.next_after(at(0, 30, 0)),
            Some(Utc.with_ymd_and_hms(2026, 11, 21, 1, 0, 0).unwrap())
        );
    }

    #[test]
    fn bad_schedules_are_named() {
        for bad in [
            "* * *",
            "61 * * * *",
            "@every",
            "@every 0s",
            "@fortnightly",
            "0 0 * * * * *",
        ] {
            let e = Schedule::parse(bad, "UTC").unwrap_err();
            assert!(e.contains("schedule"), "{bad}: {e}");
        }
        assert!(
            Schedule::parse("@daily", "Mars/Olympus")
                .unwrap_err()
                .contains("time zone")
        );
    }

    #[test]
    fn jitter_is_deterministic_and_bounded() {
        let max = Duration::from_secs(600);
        let a = jitter("owner1/db", max);
        assert_eq!(a, jitter("owner1/db", max));
        assert!(a < max);
        let spread: std::collections::HashSet<_> = (0..50)
            .map(|i| jitter(&format!("vol{i}"), max).as_secs())
            .collect();
        assert!(spread.len() > 40, "jitter does not spread: {spread:?}");
        assert_eq!(jitter("x", Duration::ZERO), Duration::ZERO);
    }
}
