//! Finding the next fire: the `cron` crate walks the local calendar, this file maps local times
//! to real instants under the DST rules.
//!
//! The crate is asked only one question: "the next local wall-clock time after `x` whose fields
//! match". We ask it in UTC, which has no gaps or folds, so its answer is a plain calendar
//! computation; we hand it the field sets as explicit lists with weekday *names*, so its Quartz
//! weekday numbering never matters; and because it ANDs day-of-month with day-of-week, crontab's
//! OR is two crate schedules whose earliest answer wins.
//!
//! Mapping a local time to instants is where the time zone comes in, in two ways (following
//! Debian cron's rule):
//! - wall-clock jobs (5 fields, fixed minute and hour) fire once per matching local time: at its
//!   only instant, at the first of two in a repeated interval, or at the end of a skipped one;
//! - real-time jobs fire at every instant whose local time matches, so a repeated interval fires
//!   twice and a skipped one not at all.

use std::str::FromStr;

use chrono::{DateTime, Datelike, LocalResult, NaiveDate, NaiveDateTime, TimeDelta, TimeZone, Utc};
use chrono_tz::{GapInfo, Tz};

use crate::error::CronError;
use crate::parse::Fields;

/// The last year the `cron` crate iterates; no fire is computed beyond it.
const LAST_YEAR: i32 = 2100;

/// How far ahead of `after` a fire is looked for. The sparsest valid expressions fire every 11
/// years (`0 0 */31 2 1`: a February 1 that is a Monday), and every valid date falls on every
/// weekday within 28 years, so 28 years is always enough for a fire to exist.
const HORIZON: TimeDelta = TimeDelta::days(28 * 366);

/// The local calendar search: one crate schedule, or two whose union is crontab's day OR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    /// Every field; with crontab's OR, the day-of-month side (day-of-week left as `*`).
    first: cron::Schedule,
    /// With crontab's OR, the day-of-week side (day-of-month left as `*`).
    or_weekday: Option<cron::Schedule>,
}

impl Plan {
    /// Translates parsed fields into crate schedules.
    pub(crate) fn build(fields: &Fields) -> Result<Self, CronError> {
        let time = format!(
            "{} {} {}",
            list(fields.seconds, 0..=59),
            list(fields.minutes, 0..=59),
            list(fields.hours, 0..=23)
        );
        let dom = list(fields.days_of_month, 1..=31);
        let month = list(fields.months, 1..=12);
        let dow = weekday_list(fields.days_of_week);
        if fields.days_are_ored() {
            Ok(Self {
                first: compile(&format!("{time} {dom} {month} *"))?,
                or_weekday: Some(compile(&format!("{time} * {month} {dow}"))?),
            })
        } else {
            Ok(Self {
                first: compile(&format!("{time} {dom} {month} {dow}"))?,
                or_weekday: None,
            })
        }
    }

    /// The next local time strictly after `after` that matches, in the crate's years.
    fn next_local(&self, after: NaiveDateTime) -> Option<NaiveDateTime> {
        if after.year() > LAST_YEAR {
            return None;
        }
        // Before 1970 the crate finds nothing, so start from the eve of its first year.
        let floor = NaiveDate::from_ymd_opt(1969, 12, 31)?.and_hms_opt(23, 59, 59)?;
        let after = Utc.from_utc_datetime(&after.max(floor));
        let next = |schedule: &cron::Schedule| schedule.after(&after).next().map(|t| t.naive_utc());
        earliest(next(&self.first), self.or_weekday.as_ref().and_then(next))
    }
}

/// The first fire strictly after `after`, or `None` when there is none within the horizon.
pub(crate) fn next_after(
    plan: &Plan,
    tz: Tz,
    wall_clock: bool,
    after: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    if after.year() > LAST_YEAR {
        return None;
    }
    // Fires fall on whole seconds, so "after 12:00:00.5" is "after 12:00:00". Dates long before
    // the crate's first year behave like its eve, which keeps the arithmetic below in range.
    let after = DateTime::from_timestamp(after.timestamp(), 0)?;
    let floor = DateTime::from_timestamp(-2 * 86_400, 0)?;
    let after = after.max(floor);

    let limit = after.checked_add_signed(HORIZON)?;
    // UTC offsets stay within a day, so no local time past this can map to an instant before
    // the limit.
    let local_limit = limit.naive_utc().checked_add_signed(TimeDelta::days(2))?;
    let search = Search {
        plan,
        tz,
        after,
        local_limit,
    };
    let fire = if wall_clock {
        search.wall_clock()
    } else {
        earliest(search.real_time(), search.second_pass_of_fold())
    };
    fire.filter(|fire| *fire <= limit)
}

/// One next-fire computation; every loop below moves its local cursor strictly forward and
/// stops at `local_limit`, so each ends.
struct Search<'a> {
    plan: &'a Plan,
    tz: Tz,
    after: DateTime<Utc>,
    local_limit: NaiveDateTime,
}

impl Search<'_> {
    fn local_after(&self) -> NaiveDateTime {
        self.after.with_timezone(&self.tz).naive_local()
    }

    fn next_local(&self, after: NaiveDateTime) -> Option<NaiveDateTime> {
        self.plan
            .next_local(after)
            .filter(|t| *t <= self.local_limit)
    }

    /// Wall-clock jobs: each matching local time fires once. The local-to-instant map used here
    /// never decreases, so the first local time past `after` whose fire is past `after` wins.
    fn wall_clock(&self) -> Option<DateTime<Utc>> {
        let mut cursor = self.local_after();
        loop {
            let local = self.next_local(cursor)?;
            let fire = match self.tz.from_local_datetime(&local) {
                LocalResult::Single(at) => at.to_utc(),
                LocalResult::Ambiguous(a, b) => a.to_utc().min(b.to_utc()),
                LocalResult::None => match gap_end(self.tz, local) {
                    Some(end) => end,
                    None => {
                        cursor = local;
                        continue;
                    }
                },
            };
            if fire > self.after {
                return Some(fire);
            }
            cursor = local;
        }
    }

    /// Real-time jobs, first half: instants whose local time is later than `after`'s. Local
    /// times inside a gap have no instant and are skipped.
    fn real_time(&self) -> Option<DateTime<Utc>> {
        let mut cursor = self.local_after();
        loop {
            let local = self.next_local(cursor)?;
            match self.tz.from_local_datetime(&local) {
                LocalResult::Single(at) if at.to_utc() > self.after => return Some(at.to_utc()),
                LocalResult::Single(_) => {}
                LocalResult::Ambiguous(a, b) => {
                    let (first, second) = ordered(a.to_utc(), b.to_utc());
                    if first > self.after {
                        return Some(first);
                    }
                    if second > self.after {
                        return Some(second);
                    }
                }
                LocalResult::None => {
                    // Jump to the end of the gap instead of asking about each missing second.
                    let end = gap_end(self.tz, local).map(|end| end.with_timezone(&self.tz));
                    let before_end = end.and_then(|end| {
                        end.naive_local().checked_sub_signed(TimeDelta::seconds(1))
                    });
                    cursor = before_end.map_or(local, |t| t.max(local));
                    continue;
                }
            }
            cursor = local;
        }
    }

    /// Real-time jobs, second half: when `after` lies in the first pass of a repeated interval,
    /// the second pass replays local times up to and *before* `after`'s own, and those instants
    /// are still in the future.
    fn second_pass_of_fold(&self) -> Option<DateTime<Utc>> {
        let local_after = self.local_after();
        let LocalResult::Ambiguous(a, b) = self.tz.from_local_datetime(&local_after) else {
            return None;
        };
        let (first, second) = ordered(a.to_utc(), b.to_utc());
        if first != self.after {
            return None;
        }
        // The fold repeats at most `second - first` of local time, ending after `local_after`.
        let mut cursor = local_after.checked_sub_signed(second - first)?;
        loop {
            let local = self.next_local(cursor)?;
            if local > local_after {
                return None;
            }
            let latest = match self.tz.from_local_datetime(&local) {
                LocalResult::Single(at) => Some(at.to_utc()),
                LocalResult::Ambiguous(a, b) => Some(ordered(a.to_utc(), b.to_utc()).1),
                LocalResult::None => None,
            };
            if let Some(at) = latest.filter(|at| *at > self.after) {
                return Some(at);
            }
            cursor = local;
        }
    }
}

/// The first instant after the gap that swallows the local time `t` (the transition instant).
fn gap_end(tz: Tz, t: NaiveDateTime) -> Option<DateTime<Utc>> {
    GapInfo::new(&t, &tz)?.end.map(|end| end.to_utc())
}

/// Resolves a time zone name: an IANA name, or empty for UTC.
pub(crate) fn parse_time_zone(name: &str) -> Result<Tz, CronError> {
    let name = name.trim();
    if name.is_empty() {
        return Ok(Tz::UTC);
    }
    Tz::from_str(name).map_err(|_| {
        // Echo at most a short prefix: the name is user input of any length.
        let shown: String = name.chars().take(64).collect();
        CronError::UnknownTimeZone(shown)
    })
}

fn compile(expression: &str) -> Result<cron::Schedule, CronError> {
    cron::Schedule::from_str(expression).map_err(|error| CronError::Internal(error.to_string()))
}

/// A field set as crate syntax: `*` when every value is allowed, else an explicit list.
fn list(bits: u64, range: std::ops::RangeInclusive<u32>) -> String {
    if range.clone().all(|v| bits & (1 << v) != 0) {
        return "*".to_owned();
    }
    let values: Vec<String> = range
        .filter(|v| bits & (1 << v) != 0)
        .map(|v| v.to_string())
        .collect();
    values.join(",")
}

/// Weekdays as crate syntax, by name so the crate's Sunday-is-1 numbering never applies.
fn weekday_list(bits: u64) -> String {
    const NAMES: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];
    if bits & 0x7f == 0x7f {
        return "*".to_owned();
    }
    let names: Vec<&str> = (0..7)
        .filter(|d| bits & (1 << d) != 0)
        .map(|d| NAMES[d])
        .collect();
    names.join(",")
}

fn ordered(a: DateTime<Utc>, b: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
    if a <= b { (a, b) } else { (b, a) }
}

fn earliest<T: Ord>(a: Option<T>, b: Option<T>) -> Option<T> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
