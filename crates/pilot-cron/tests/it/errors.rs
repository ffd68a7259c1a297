//! Expressions and time zones that must be rejected, each with the message fragments a user
//! needs to fix it: the field at fault and the problem.

use pilot_cron::{CronError, CronSchedule};

/// Parses `expr` in `tz` and checks that it fails with a message containing every fragment.
fn check(expr: &str, tz: &str, fragments: &[&str]) {
    let error = match CronSchedule::parse(expr, tz) {
        Ok(schedule) => panic!("{expr:?} in {tz:?} was accepted as {schedule}"),
        Err(error) => error.to_string(),
    };
    for fragment in fragments {
        assert!(
            error.contains(fragment),
            "{expr:?}: message {error:?} lacks {fragment:?}"
        );
    }
}

#[test]
fn malformed_fields() {
    let cases: &[(&str, &[&str])] = &[
        ("60 * * * *", &["minute", "60 is out of range 0-59"]),
        ("0 24 * * *", &["hour", "24 is out of range 0-23"]),
        ("0 0 0 * *", &["day-of-month", "0 is out of range 1-31"]),
        ("0 0 32 * *", &["day-of-month", "32 is out of range 1-31"]),
        ("0 0 1 13 *", &["month", "13 is out of range 1-12"]),
        ("0 0 1 0 *", &["month", "0 is out of range 1-12"]),
        ("0 0 * * 8", &["day-of-week", "8 is out of range 0-7"]),
        ("60 0 0 * * *", &["second", "60 is out of range 0-59"]),
        ("99999999999 * * * *", &["minute", "out of range 0-59"]),
        ("5-1 * * * *", &["minute", "range 5-1 is reversed"]),
        (
            "0 0 * * fri-sun",
            &[
                "day-of-week",
                "range fri-sun is reversed",
                "Sunday is also 7",
            ],
        ),
        ("0 0 * * 1-", &["day-of-week", "missing value"]),
        ("-5 * * * *", &["minute", "missing value"]),
        ("*/0 * * * *", &["minute", "a step of 0 is not allowed"]),
        ("0 */0 * * *", &["hour", "a step of 0 is not allowed"]),
        ("*/61 * * * *", &["minute", "step 61 is out of range 1-60"]),
        ("*/ * * * *", &["minute", "missing step"]),
        ("*/x * * * *", &["minute", "step 'x' is not a number"]),
        (
            "5/15 * * * *",
            &["minute", "a step needs a range or '*'", "5-59/15"],
        ),
        ("1,,2 * * * *", &["minute", "empty list item"]),
        ("1, * * * *", &["minute", "empty list item"]),
        ("*-5 * * * *", &["minute", "'*' cannot be part of a range"]),
        ("0 0 * foo *", &["month", "unknown name 'foo'", "jan-dec"]),
        (
            "0 0 * * monday",
            &["day-of-week", "unknown name 'monday'", "sun-sat"],
        ),
        ("0 0 * * xyz", &["day-of-week", "unknown name 'xyz'"]),
        ("mon * * * *", &["minute", "'mon' is not a number"]),
        ("0 0 jan * *", &["day-of-month", "'jan' is not a number"]),
        ("1.5 * * * *", &["minute", "'1.5' is not a number"]),
        ("0 0 1-5-7 * *", &["day-of-month", "'5-7' is not a number"]),
    ];
    for (expr, fragments) in cases {
        check(expr, "UTC", fragments);
    }
}

#[test]
fn syntax_crontab_does_not_have() {
    let cases: &[(&str, &[&str])] = &[
        ("0 0 12 ? * MON", &["day-of-month", "'?' is Quartz syntax"]),
        ("0 0 ? * *", &["day-of-month", "'?' is Quartz syntax"]),
        ("0 0 L * *", &["day-of-month", "'L' and 'W'", "not crontab"]),
        ("0 0 15W * *", &["day-of-month", "'L' and 'W'"]),
        ("0 0 LW * *", &["day-of-month", "'L' and 'W'"]),
        ("0 0 * * 5L", &["day-of-week", "'L' and 'W'"]),
        ("0 0 * * MON#2", &["day-of-week", "'#' (nth weekday"]),
        ("0 0 0 1 1 * 2030", &["found 7", "no year field"]),
        ("@reboot", &["@reboot", "no time of its own"]),
        ("@every 5m", &["unknown alias '@every 5m'", "@hourly"]),
        ("@daily 5", &["unknown alias"]),
        ("@", &["unknown alias"]),
    ];
    for (expr, fragments) in cases {
        check(expr, "UTC", fragments);
    }
}

#[test]
fn wrong_shape() {
    let cases: &[(&str, &[&str])] = &[
        ("", &["empty"]),
        ("   \t ", &["empty"]),
        ("* * * *", &["expected 5 fields", "or 6", "found 4"]),
        ("*", &["found 1"]),
        ("hello", &["found 1"]),
        ("* * * * * * * *", &["found 8"]),
        ("0 0 * * * extra words", &["found 7"]),
        ("0 12 * * *\n", &["unexpected character '\\n'"]),
        ("0 12 * * mön", &["unexpected character 'ö'"]),
        ("0 12 * * *;rm", &["day-of-week", "'*;rm' is not a number"]),
    ];
    for (expr, fragments) in cases {
        check(expr, "UTC", fragments);
    }
}

#[test]
fn limits() {
    let long = format!("0 0 * * {}", "1,".repeat(130));
    check(&long, "UTC", &["bytes long", "limit is 256"]);
    let items: Vec<String> = (0..61).map(|i| (i % 60).to_string()).collect();
    check(
        &format!("{} * * * *", items.join(",")),
        "UTC",
        &["minute", "61 list items", "limit is 60"],
    );
    // Sixty items are fine: every minute, listed.
    let items: Vec<String> = (0..60).map(|i| i.to_string()).collect();
    assert!(CronSchedule::parse(&format!("{} * * * *", items.join(",")), "UTC").is_ok());
}

#[test]
fn never_firing() {
    let cases: &[(&str, &[&str])] = &[
        ("0 0 30 2 *", &["can never fire", "feb", "day-of-month 30"]),
        ("0 0 31 4 *", &["can never fire", "apr", "31"]),
        (
            "0 0 31 2,4,6,9,11 *",
            &["can never fire", "feb,apr,jun,sep,nov", "31"],
        ),
        ("0 0 30-31 feb *", &["can never fire", "30,31"]),
        ("0 0 30 2 */2", &["can never fire"]),
        ("0 0 0 31 jun *", &["can never fire"]),
    ];
    for (expr, fragments) in cases {
        check(expr, "UTC", fragments);
    }
    // With a restricted weekday the two day fields are ORed, so the weekday still fires.
    assert!(CronSchedule::parse("0 0 30 2 mon", "UTC").is_ok());
    assert!(CronSchedule::parse("0 0 29 2 *", "UTC").is_ok());
}

#[test]
fn bad_time_zones() {
    let cases: &[(&str, &[&str])] = &[
        (
            "Mars/Olympus_Mons",
            &["unknown time zone 'Mars/Olympus_Mons'"],
        ),
        (
            "America/New York",
            &["unknown time zone 'America/New York'"],
        ),
        ("+02:00", &["unknown time zone '+02:00'"]),
        ("CEST", &["unknown time zone 'CEST'"]),
    ];
    for (tz, fragments) in cases {
        check("0 12 * * *", tz, fragments);
    }
    // A long name is echoed only in part.
    let long = "X".repeat(1000);
    let error = CronSchedule::parse("0 12 * * *", &long).unwrap_err();
    assert_eq!(error, CronError::UnknownTimeZone("X".repeat(64)));
}

#[test]
fn errors_are_typed() {
    assert_eq!(
        CronSchedule::parse("0 24 * * *", "UTC").unwrap_err(),
        CronError::InvalidField {
            field: pilot_cron::CronField::Hour,
            problem: "24 is out of range 0-23".to_owned(),
        }
    );
    assert_eq!(
        CronSchedule::parse("* * * *", "UTC").unwrap_err(),
        CronError::FieldCount { found: 4, hint: "" }
    );
}

#[test]
fn every_listed_time_zone_is_accepted() {
    let names: Vec<&str> = pilot_cron::timezone_names().collect();
    assert!(names.len() > 400, "{}", names.len());
    assert!(names.contains(&"Europe/Berlin") && names.contains(&"UTC"));
    for name in names {
        assert!(
            pilot_cron::CronSchedule::parse("0 0 * * *", name).is_ok(),
            "{name}"
        );
    }
}
