#![doc = include_str!("../README.md")]

// The work is split three ways: `parse` turns crontab text into field sets, `search` asks the
// `cron` crate for matching local times and maps them to instants, and this file is the API.

mod error;
mod parse;
mod search;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

pub use crate::error::{CronError, CronField};
pub use crate::parse::CRON_MAX_LEN;

use crate::parse::parse_expression;
use crate::search::{Plan, parse_time_zone};

/// The most fires [`CronSchedule::next_fires`] returns; larger requests are cut to it.
pub const CRON_MAX_FIRES: usize = 1000;

/// A validated cron expression in a time zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronSchedule {
    expression: String,
    tz: Tz,
    wall_clock: bool,
    plan: Plan,
}

impl CronSchedule {
    /// Parses a 5-field or 6-field (seconds first) crontab expression, or an `@` alias, in the
    /// IANA time zone `tz` (empty means UTC). Rejects malformed fields, syntax crontab does not
    /// have (`?`, `L`, `W`, `#`, a year field, `@reboot`), and expressions that can never fire.
    pub fn parse(expr: &str, tz: &str) -> Result<Self, CronError> {
        let fields = parse_expression(expr)?;
        let tz = parse_time_zone(tz)?;
        Ok(Self {
            expression: expr.trim().to_owned(),
            tz,
            wall_clock: fields.is_wall_clock(),
            plan: Plan::build(&fields)?,
        })
    }

    /// The expression as given, without surrounding whitespace.
    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// The time zone the fields are read in.
    pub fn timezone(&self) -> Tz {
        self.tz
    }

    /// Whether Debian cron's wall-clock rule applies: a 5-field expression whose minute and hour
    /// fields are both fixed (neither starts with `*`). Such a job fires once for a local time
    /// that is skipped or repeated by a DST change; every other job follows real time.
    pub fn is_wall_clock(&self) -> bool {
        self.wall_clock
    }

    /// The first fire strictly after `after`. `None` when there is none within 28 years (every
    /// valid expression fires within that) or before the end of the year 2100.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        search::next_after(&self.plan, self.tz, self.wall_clock, after)
    }

    /// The next `n` fires strictly after `after` (at most [`CRON_MAX_FIRES`]), as instants in
    /// the schedule's zone so each carries its UTC offset.
    pub fn next_fires(&self, after: DateTime<Utc>, n: usize) -> Vec<DateTime<Tz>> {
        let mut fires = Vec::new();
        let mut cursor = after;
        while fires.len() < n.min(CRON_MAX_FIRES) {
            let Some(fire) = self.next_after(cursor) else {
                break;
            };
            fires.push(fire.with_timezone(&self.tz));
            cursor = fire;
        }
        fires
    }
}

impl std::fmt::Display for CronSchedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.expression, self.tz.name())
    }
}

/// Parses `expr` in `tz` and returns its next `n` fires after `after`: what the schedule
/// preview endpoint shows.
pub fn next_fires(
    expr: &str,
    tz: &str,
    after: DateTime<Utc>,
    n: usize,
) -> Result<Vec<DateTime<Tz>>, CronError> {
    Ok(CronSchedule::parse(expr, tz)?.next_fires(after, n))
}

/// Every IANA time zone name a schedule accepts (the zone database built into this release),
/// in the database's order: what a document or a completion can offer.
pub fn timezone_names() -> impl Iterator<Item = &'static str> {
    chrono_tz::TZ_VARIANTS.iter().map(|tz| tz.name())
}

#[cfg(test)]
mod tests {
    //! What the `cron` crate does on its own, pinned so that an upgrade changing it is noticed:
    //! the translation in `search.rs` relies on both facts.

    use std::str::FromStr;

    use chrono::{Datelike, TimeZone, Utc, Weekday};

    #[test]
    fn crate_ands_day_of_month_with_day_of_week() {
        // Crontab would fire on the 1st of every month and on every Monday; the crate fires
        // only on Mondays that are the 1st (September 1, 2025 is one).
        let schedule = cron::Schedule::from_str("0 0 12 1 * MON").unwrap();
        let start = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap();
        let fires: Vec<_> = schedule.after(&start).take(2).collect();
        assert_eq!(
            fires[0],
            Utc.with_ymd_and_hms(2025, 9, 1, 12, 0, 0).unwrap()
        );
        assert!(
            fires
                .iter()
                .all(|t| t.day() == 1 && t.weekday() == Weekday::Mon)
        );
    }

    #[test]
    fn crate_numbers_sunday_as_one() {
        let schedule = cron::Schedule::from_str("0 0 0 * * 1").unwrap();
        let start = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap();
        let first = schedule.after(&start).next().unwrap();
        assert_eq!(first.weekday(), Weekday::Sun);
        assert!(cron::Schedule::from_str("0 0 0 * * 0").is_err());
    }
}
