//! Daylight-saving weeks in three zones, with every expected fire written out in UTC.
//!
//! Each case is one job across one DST change: a fixed-time job inside the skipped or repeated
//! interval and one outside it (wall-clock rule: the skipped time fires once when the gap ends,
//! the repeated time once at its first occurrence), and hourly, every-15-minute and 6-field jobs
//! (real-time rule: every instant whose local time matches). Lord Howe shifts by 30 minutes.

use chrono::{DateTime, SecondsFormat, Utc};
use pilot_cron::CronSchedule;

/// Checks the first fires of `expr` in `tz` strictly after `after` (all times UTC, RFC 3339).
fn check(expr: &str, tz: &str, after: &str, expected: &[&str]) {
    let schedule = CronSchedule::parse(expr, tz).unwrap();
    let after: DateTime<Utc> = after.parse().unwrap();
    let fires: Vec<String> = schedule
        .next_fires(after, expected.len())
        .iter()
        .map(|fire| {
            fire.with_timezone(&Utc)
                .to_rfc3339_opts(SecondsFormat::Secs, true)
        })
        .collect();
    assert_eq!(fires, expected, "{expr} in {tz} after {after}");
}

const NEW_YORK: &str = "America/New_York";
const BERLIN: &str = "Europe/Berlin";
const LORD_HOWE: &str = "Australia/Lord_Howe";

#[test]
fn new_york_spring_forward() {
    // 2025-03-09 02:00 EST (07:00Z) becomes 03:00 EDT; local 02:00-02:59 does not exist.
    #[rustfmt::skip]
    let cases: &[(&str, &str, &[&str])] = &[
        // Fixed time inside the gap: once, at the gap's end (03:00 EDT).
        ("30 2 * * *", "2025-03-08T00:00:00Z",
            &["2025-03-08T07:30:00Z", "2025-03-09T07:00:00Z", "2025-03-10T06:30:00Z"]),
        ("0 2 * * *", "2025-03-08T00:00:00Z",
            &["2025-03-08T07:00:00Z", "2025-03-09T07:00:00Z", "2025-03-10T06:00:00Z"]),
        // Two times inside the gap still fire once; a time at the gap's end merges with it.
        ("0,30 2 * * *", "2025-03-08T07:15:00Z",
            &["2025-03-08T07:30:00Z", "2025-03-09T07:00:00Z", "2025-03-10T06:00:00Z"]),
        ("0 2,3 * * *", "2025-03-09T00:00:00Z",
            &["2025-03-09T07:00:00Z", "2025-03-10T06:00:00Z", "2025-03-10T07:00:00Z"]),
        // Fixed times outside the gap keep their local time.
        ("30 1 * * *", "2025-03-08T00:00:00Z",
            &["2025-03-08T06:30:00Z", "2025-03-09T06:30:00Z", "2025-03-10T05:30:00Z"]),
        ("30 3 * * *", "2025-03-08T00:00:00Z",
            &["2025-03-08T08:30:00Z", "2025-03-09T07:30:00Z", "2025-03-10T07:30:00Z"]),
        // Real time: the missing local hour simply has no fires.
        ("0 * * * *", "2025-03-09T05:00:00Z",
            &["2025-03-09T06:00:00Z", "2025-03-09T07:00:00Z", "2025-03-09T08:00:00Z"]),
        ("*/15 * * * *", "2025-03-09T06:30:00Z",
            &["2025-03-09T06:45:00Z", "2025-03-09T07:00:00Z", "2025-03-09T07:15:00Z"]),
        ("*/30 2 * * *", "2025-03-08T07:00:00Z",
            &["2025-03-08T07:30:00Z", "2025-03-10T06:00:00Z", "2025-03-10T06:30:00Z"]),
        // A 6-field job always follows real time, even with a fixed minute and hour.
        ("0 30 2 * * *", "2025-03-08T00:00:00Z",
            &["2025-03-08T07:30:00Z", "2025-03-10T06:30:00Z"]),
    ];
    for (expr, after, expected) in cases {
        check(expr, NEW_YORK, after, expected);
    }
}

#[test]
fn new_york_fall_back() {
    // 2025-11-02 02:00 EDT (06:00Z) becomes 01:00 EST; local 01:00-01:59 happens twice,
    // first 05:00Z-05:59Z (EDT), then 06:00Z-06:59Z (EST).
    #[rustfmt::skip]
    let cases: &[(&str, &str, &[&str])] = &[
        // Fixed time inside the repeated hour: its first occurrence only.
        ("30 1 * * *", "2025-11-01T00:00:00Z",
            &["2025-11-01T05:30:00Z", "2025-11-02T05:30:00Z", "2025-11-03T06:30:00Z"]),
        ("30 1 * * *", "2025-11-02T05:30:00Z",
            &["2025-11-03T06:30:00Z"]),
        ("0-59/30 1 * * *", "2025-11-02T04:00:00Z",
            &["2025-11-02T05:00:00Z", "2025-11-02T05:30:00Z", "2025-11-03T06:00:00Z"]),
        // Fixed time outside it.
        ("30 2 * * *", "2025-11-01T00:00:00Z",
            &["2025-11-01T06:30:00Z", "2025-11-02T07:30:00Z", "2025-11-03T07:30:00Z"]),
        ("30 0 * * *", "2025-11-01T00:00:00Z",
            &["2025-11-01T04:30:00Z", "2025-11-02T04:30:00Z", "2025-11-03T05:30:00Z"]),
        // Real time: both passes fire.
        ("0 * * * *", "2025-11-02T04:00:00Z",
            &["2025-11-02T05:00:00Z", "2025-11-02T06:00:00Z", "2025-11-02T07:00:00Z"]),
        ("*/15 * * * *", "2025-11-02T05:30:00Z", &[
            "2025-11-02T05:45:00Z", "2025-11-02T06:00:00Z", "2025-11-02T06:15:00Z",
            "2025-11-02T06:30:00Z", "2025-11-02T06:45:00Z", "2025-11-02T07:00:00Z",
        ]),
        // Late in the first pass, the next fire is early in the second pass, whose local time
        // (01:00) is *earlier* than the starting point's (01:50).
        ("*/15 * * * *", "2025-11-02T05:50:00Z",
            &["2025-11-02T06:00:00Z"]),
        ("0 30 1 * * *", "2025-11-01T12:00:00Z",
            &["2025-11-02T05:30:00Z", "2025-11-02T06:30:00Z", "2025-11-03T06:30:00Z"]),
    ];
    for (expr, after, expected) in cases {
        check(expr, NEW_YORK, after, expected);
    }
}

#[test]
fn berlin_spring_forward() {
    // 2025-03-30 02:00 CET (01:00Z) becomes 03:00 CEST; local 02:00-02:59 does not exist.
    #[rustfmt::skip]
    let cases: &[(&str, &str, &[&str])] = &[
        ("30 2 * * *", "2025-03-29T00:00:00Z",
            &["2025-03-29T01:30:00Z", "2025-03-30T01:00:00Z", "2025-03-31T00:30:00Z"]),
        ("30 1 * * *", "2025-03-29T00:00:00Z",
            &["2025-03-29T00:30:00Z", "2025-03-30T00:30:00Z", "2025-03-30T23:30:00Z"]),
        ("0 3 * * *", "2025-03-29T00:00:00Z",
            &["2025-03-29T02:00:00Z", "2025-03-30T01:00:00Z", "2025-03-31T01:00:00Z"]),
        ("0 * * * *", "2025-03-29T23:00:00Z",
            &["2025-03-30T00:00:00Z", "2025-03-30T01:00:00Z", "2025-03-30T02:00:00Z"]),
        ("*/15 * * * *", "2025-03-30T00:30:00Z",
            &["2025-03-30T00:45:00Z", "2025-03-30T01:00:00Z", "2025-03-30T01:15:00Z"]),
    ];
    for (expr, after, expected) in cases {
        check(expr, BERLIN, after, expected);
    }
}

#[test]
fn berlin_fall_back() {
    // 2025-10-26 03:00 CEST (01:00Z) becomes 02:00 CET; local 02:00-02:59 happens twice,
    // first 00:00Z-00:59Z (CEST), then 01:00Z-01:59Z (CET).
    #[rustfmt::skip]
    let cases: &[(&str, &str, &[&str])] = &[
        ("30 2 * * *", "2025-10-25T00:00:00Z",
            &["2025-10-25T00:30:00Z", "2025-10-26T00:30:00Z", "2025-10-27T01:30:00Z"]),
        ("30 3 * * *", "2025-10-25T00:00:00Z",
            &["2025-10-25T01:30:00Z", "2025-10-26T02:30:00Z", "2025-10-27T02:30:00Z"]),
        ("0 * * * *", "2025-10-25T23:00:00Z",
            &["2025-10-26T00:00:00Z", "2025-10-26T01:00:00Z", "2025-10-26T02:00:00Z"]),
        ("*/15 * * * *", "2025-10-26T00:40:00Z",
            &["2025-10-26T00:45:00Z", "2025-10-26T01:00:00Z", "2025-10-26T01:15:00Z"]),
        ("15 2 * * *", "2025-10-26T00:15:00Z",
            &["2025-10-27T01:15:00Z"]),
    ];
    for (expr, after, expected) in cases {
        check(expr, BERLIN, after, expected);
    }
}

#[test]
fn lord_howe_fall_back_by_half_an_hour() {
    // 2025-04-06 02:00 LHDT (+11:00, 15:00Z) becomes 01:30 LHST (+10:30); local 01:30-01:59
    // happens twice, first 14:30Z-14:59Z, then 15:00Z-15:29Z.
    #[rustfmt::skip]
    let cases: &[(&str, &str, &[&str])] = &[
        ("45 1 * * *", "2025-04-04T00:00:00Z",
            &["2025-04-04T14:45:00Z", "2025-04-05T14:45:00Z", "2025-04-06T15:15:00Z"]),
        ("15 1 * * *", "2025-04-04T00:00:00Z",
            &["2025-04-04T14:15:00Z", "2025-04-05T14:15:00Z", "2025-04-06T14:45:00Z"]),
        // Minute 0 never falls in the repeated half hour, so the hourly job has a 90-minute step.
        ("0 * * * *", "2025-04-05T13:00:00Z",
            &["2025-04-05T14:00:00Z", "2025-04-05T15:30:00Z", "2025-04-05T16:30:00Z"]),
        ("*/15 * * * *", "2025-04-05T14:20:00Z", &[
            "2025-04-05T14:30:00Z", "2025-04-05T14:45:00Z", "2025-04-05T15:00:00Z",
            "2025-04-05T15:15:00Z", "2025-04-05T15:30:00Z",
        ]),
        ("*/15 * * * *", "2025-04-05T14:50:00Z",
            &["2025-04-05T15:00:00Z"]),
    ];
    for (expr, after, expected) in cases {
        check(expr, LORD_HOWE, after, expected);
    }
}

#[test]
fn lord_howe_spring_forward_by_half_an_hour() {
    // 2025-10-05 02:00 LHST (+10:30, 15:30Z on the 4th) becomes 02:30 LHDT (+11:00); local
    // 02:00-02:29 does not exist.
    #[rustfmt::skip]
    let cases: &[(&str, &str, &[&str])] = &[
        ("15 2 * * *", "2025-10-03T00:00:00Z",
            &["2025-10-03T15:45:00Z", "2025-10-04T15:30:00Z", "2025-10-05T15:15:00Z"]),
        ("45 2 * * *", "2025-10-03T00:00:00Z",
            &["2025-10-03T16:15:00Z", "2025-10-04T15:45:00Z", "2025-10-05T15:45:00Z"]),
        ("0 * * * *", "2025-10-04T13:30:00Z",
            &["2025-10-04T14:30:00Z", "2025-10-04T16:00:00Z", "2025-10-04T17:00:00Z"]),
        ("*/15 * * * *", "2025-10-04T15:00:00Z",
            &["2025-10-04T15:15:00Z", "2025-10-04T15:30:00Z", "2025-10-04T15:45:00Z"]),
    ];
    for (expr, after, expected) in cases {
        check(expr, LORD_HOWE, after, expected);
    }
}

#[test]
fn samoa_skips_a_whole_day() {
    // Pacific/Apia went from 2011-12-29 23:59:59 -10:00 (09:59:59Z on the 30th) straight to
    // 2011-12-31 00:00 +14:00: local December 30 never happened.
    #[rustfmt::skip]
    let cases: &[(&str, &str, &[&str])] = &[
        ("0 12 * * *", "2011-12-29T00:00:00Z",
            &["2011-12-29T22:00:00Z", "2011-12-30T10:00:00Z", "2011-12-30T22:00:00Z"]),
        ("0 * * * *", "2011-12-30T08:00:00Z",
            &["2011-12-30T09:00:00Z", "2011-12-30T10:00:00Z", "2011-12-30T11:00:00Z"]),
        ("0 * 30 12 *", "2011-12-29T00:00:00Z",
            &["2012-12-29T10:00:00Z"]),
    ];
    for (expr, after, expected) in cases {
        check(expr, "Pacific/Apia", after, expected);
    }
}

#[test]
fn fires_carry_their_local_offset() {
    let schedule = CronSchedule::parse("0 9 * * *", BERLIN).unwrap();
    let after: DateTime<Utc> = "2025-03-29T00:00:00Z".parse().unwrap();
    let fires: Vec<String> = schedule
        .next_fires(after, 2)
        .iter()
        .map(|fire| fire.to_rfc3339_opts(SecondsFormat::Secs, true))
        .collect();
    assert_eq!(
        fires,
        ["2025-03-29T09:00:00+01:00", "2025-03-30T09:00:00+02:00"]
    );
}
