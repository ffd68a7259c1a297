//! Crontab field semantics in UTC: weekday numbering, the day-of-month/day-of-week OR rule,
//! leap days, aliases, seconds, and which jobs follow wall-clock time.

use chrono::{DateTime, Datelike, SecondsFormat, TimeDelta, Utc};
use pilot_cron::{CRON_MAX_FIRES, CronSchedule, next_fires};

fn at(text: &str) -> DateTime<Utc> {
    text.parse().unwrap()
}

/// The first `n` fires of `expr` (UTC) strictly after `after`, as RFC 3339 strings.
fn fires(expr: &str, after: &str, n: usize) -> Vec<String> {
    next_fires(expr, "UTC", at(after), n)
        .unwrap()
        .iter()
        .map(|fire| {
            fire.with_timezone(&Utc)
                .to_rfc3339_opts(SecondsFormat::Secs, true)
        })
        .collect()
}

/// Checks the first fires of `expr` after `after`; `expected` is a space-separated list of
/// UTC instants, or of dates when only the days matter.
fn check(expr: &str, after: &str, expected: &str) {
    let expected: Vec<&str> = expected.split_whitespace().collect();
    let got: Vec<String> = fires(expr, after, expected.len())
        .into_iter()
        .map(|fire| fire[..expected[0].len()].to_owned())
        .collect();
    assert_eq!(got, expected, "{expr} after {after}");
}

#[test]
fn weekday_numbering() {
    // The weekdays a daily-noon job with this day-of-week field fires on, over one week.
    fn check(dow: &str, expected: &str) {
        let expr = format!("0 12 * * {dow}");
        // 2025-06-01 is a Sunday.
        let week: Vec<String> = next_fires(&expr, "", at("2025-06-01T00:00:00Z"), 7)
            .unwrap()
            .iter()
            .filter(|fire| fire.with_timezone(&Utc) < at("2025-06-08T00:00:00Z"))
            .map(|fire| fire.weekday().to_string())
            .collect();
        assert_eq!(week.join(" "), expected, "day-of-week field {dow}");
    }
    check("0", "Sun");
    check("7", "Sun");
    check("0,7", "Sun");
    check("1", "Mon");
    check("1-5", "Mon Tue Wed Thu Fri");
    check("5-7", "Sun Fri Sat");
    check("*/2", "Sun Tue Thu Sat");
    check("0-7/2", "Sun Tue Thu Sat");
    check("*/7", "Sun");
    check("1-7/3", "Sun Mon Thu");
    check("MON-FRI", "Mon Tue Wed Thu Fri");
    check("mon-fri", "Mon Tue Wed Thu Fri");
    check("mon,wed", "Mon Wed");
    check("Sat,SUN", "Sun Sat");
    check("sun-sat", "Sun Mon Tue Wed Thu Fri Sat");
    check("thu-7", "Sun Thu Fri Sat");
    check("mon-wed,fri", "Mon Tue Wed Fri");
    check("*", "Sun Mon Tue Wed Thu Fri Sat");
}

#[test]
#[rustfmt::skip]
fn day_of_month_or_day_of_week() {
    let after = "2025-08-25T12:00:00Z";
    // Both restricted: either matching fires (the 1st, and every Monday).
    check("0 12 1 * MON", after,
        "2025-09-01 2025-09-08 2025-09-15 2025-09-22 2025-09-29 2025-10-01 2025-10-06");
    check("0 0 12 1 * MON", after, "2025-09-01 2025-09-08");
    // Not "the first Monday": days 1-7 and every Monday.
    check("0 12 1-7 * 1", after,
        "2025-09-01 2025-09-02 2025-09-03 2025-09-04 2025-09-05 2025-09-06 2025-09-07 \
         2025-09-08 2025-09-15");
    // A field starting with `*` (even `*/2`) makes both required: odd days that are Mondays.
    check("0 12 */2 * MON", after, "2025-09-01 2025-09-15 2025-09-29 2025-10-13 2025-10-27");
    check("0 12 * * MON", after, "2025-09-01 2025-09-08 2025-09-15");
    check("0 12 1 * *", after, "2025-09-01 2025-10-01 2025-11-01");
    // The same with the `*` on the weekday side: 1sts that fall on Sun, Tue, Thu or Sat.
    check("0 12 1 * */2", after, "2025-11-01 2026-01-01 2026-02-01");
    // Month always ANDs: Mondays in January.
    check("0 12 * jan mon", "2025-12-25T00:00:00Z",
        "2026-01-05 2026-01-12 2026-01-19 2026-01-26 2027-01-04");
    // The sparsest kind of valid expression: a February 1 that is a Monday (11 years apart).
    check("0 0 */31 2 1", "2027-02-02T00:00:00Z", "2038-02-01 2044-02-01");
}

#[test]
#[rustfmt::skip]
fn leap_days() {
    check("0 0 29 2 *", "2025-01-01T00:00:00Z",
        "2028-02-29T00:00:00Z 2032-02-29T00:00:00Z 2036-02-29T00:00:00Z");
    check("0 0 29 2 *", "2028-02-29T00:00:00Z", "2032-02-29T00:00:00Z");
    check("0 0 28-29 feb *", "2027-03-01T00:00:00Z",
        "2028-02-28T00:00:00Z 2028-02-29T00:00:00Z 2029-02-28T00:00:00Z");
    // OR with a weekday: every Monday of February, plus the 29th when there is one.
    check("0 0 29 2 1", "2028-02-20T00:00:00Z",
        "2028-02-21T00:00:00Z 2028-02-28T00:00:00Z 2028-02-29T00:00:00Z 2029-02-05T00:00:00Z");
    // Day 31 fires only in months that have it.
    check("0 0 31 * *", "2025-01-01T00:00:00Z",
        "2025-01-31 2025-03-31 2025-05-31 2025-07-31 2025-08-31 2025-10-31 2025-12-31");
    // 2100 is not a leap year, and fires are computed up to the end of 2100.
    assert!(fires("0 0 29 2 *", "2096-03-01T00:00:00Z", 1).is_empty());
}

#[test]
#[rustfmt::skip]
fn aliases() {
    let after = "2025-06-01T10:30:00Z"; // a Sunday
    check("@hourly", after, "2025-06-01T11:00:00Z 2025-06-01T12:00:00Z");
    check("@daily", after, "2025-06-02T00:00:00Z 2025-06-03T00:00:00Z");
    check("@midnight", after, "2025-06-02T00:00:00Z");
    check("@DAILY", after, "2025-06-02T00:00:00Z");
    check("@weekly", after, "2025-06-08T00:00:00Z 2025-06-15T00:00:00Z");
    check("@monthly", after, "2025-07-01T00:00:00Z 2025-08-01T00:00:00Z");
    check("@yearly", after, "2026-01-01T00:00:00Z 2027-01-01T00:00:00Z");
    check("@annually", after, "2026-01-01T00:00:00Z");
}

#[test]
#[rustfmt::skip]
fn minutes_hours_months_and_seconds() {
    let after = "2025-06-01T10:03:00Z";
    check("*/5 * * * *", after, "2025-06-01T10:05:00Z 2025-06-01T10:10:00Z");
    check("5-10/5 */12 * * *", after,
        "2025-06-01T12:05:00Z 2025-06-01T12:10:00Z 2025-06-02T00:05:00Z");
    check("0 9 1 jan,JUL *", after, "2025-07-01T09:00:00Z 2026-01-01T09:00:00Z");
    check("0 0 1 nov-dec *", after, "2025-11-01T00:00:00Z 2025-12-01T00:00:00Z");
    check("007 08 * * *", after, "2025-06-02T08:07:00Z");
    check("*/20 * * * * *", after, "2025-06-01T10:03:20Z 2025-06-01T10:03:40Z 2025-06-01T10:04:00Z");
    check("30 0 12 * * *", after, "2025-06-01T12:00:30Z");
    // Leading and trailing whitespace and tabs between fields are fine.
    check("  0\t12  * * *  ", after, "2025-06-01T12:00:00Z");
}

#[test]
fn next_after_is_strict_and_ignores_subseconds() {
    let schedule = CronSchedule::parse("* * * * * *", "").unwrap();
    let after = at("2025-06-01T12:00:00.5Z");
    assert_eq!(schedule.next_after(after), Some(at("2025-06-01T12:00:01Z")));
    let schedule = CronSchedule::parse("0 12 * * *", "").unwrap();
    assert_eq!(
        schedule.next_after(at("2025-06-01T12:00:00Z")),
        Some(at("2025-06-02T12:00:00Z"))
    );
    assert_eq!(
        schedule.next_after(at("2025-06-01T11:59:59Z")),
        Some(at("2025-06-01T12:00:00Z"))
    );
}

#[test]
fn fire_counts_are_capped() {
    let schedule = CronSchedule::parse("* * * * * *", "UTC").unwrap();
    let fires = schedule.next_fires(at("2025-06-01T00:00:00Z"), usize::MAX);
    assert_eq!(fires.len(), CRON_MAX_FIRES);
    let last = fires.last().unwrap().with_timezone(&Utc);
    assert_eq!(
        last,
        at("2025-06-01T00:00:00Z") + TimeDelta::seconds(CRON_MAX_FIRES as i64)
    );
    assert!(
        schedule
            .next_fires(at("2025-06-01T00:00:00Z"), 0)
            .is_empty()
    );
}

#[test]
fn no_fires_outside_the_supported_years() {
    let schedule = CronSchedule::parse("* * * * *", "Europe/Berlin").unwrap();
    assert_eq!(schedule.next_after(at("2100-12-31T23:59:00Z")), None);
    assert_eq!(schedule.next_after(DateTime::<Utc>::MAX_UTC), None);
    // Long before 1970 the first fire is the crate's first minute, in the zone.
    assert_eq!(
        schedule.next_after(DateTime::<Utc>::MIN_UTC),
        Some(at("1969-12-31T23:00:00Z"))
    );
}

#[test]
fn wall_clock_jobs() {
    fn check(expr: &str, expected: bool) {
        let schedule = CronSchedule::parse(expr, "Europe/Berlin").unwrap();
        assert_eq!(schedule.is_wall_clock(), expected, "{expr}");
    }
    check("30 2 * * *", true);
    check("0,30 2 * * *", true);
    check("0-59 2 * * *", true);
    check("0 9-17 * * mon-fri", true);
    check("@daily", true);
    check("@weekly", true);
    check("*/15 * * * *", false);
    check("0 * * * *", false);
    check("30 */2 * * *", false);
    check("* 2 * * *", false);
    check("@hourly", false);
    check("0 30 2 * * *", false);
}

#[test]
fn accessors() {
    let schedule = CronSchedule::parse(" 0 9 * * 1-5 ", "America/New_York").unwrap();
    assert_eq!(schedule.expression(), "0 9 * * 1-5");
    assert_eq!(schedule.timezone(), chrono_tz::America::New_York);
    assert_eq!(schedule.to_string(), "0 9 * * 1-5 (America/New_York)");
    assert_eq!(
        CronSchedule::parse("0 9 * * *", "").unwrap().timezone(),
        chrono_tz::UTC
    );
    assert_eq!(
        CronSchedule::parse("0 9 * * *", "UTC").unwrap().timezone(),
        chrono_tz::UTC
    );
}
