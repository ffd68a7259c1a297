//! Property tests: for random crontab expressions (built from field choices, so the allowed
//! values of each field are known independently of the library) in zones with DST changes,
//! fires are strictly increasing, each one matches the expression in its zone, and none is
//! missing: a brute-force walk over every minute (every second for 6-field expressions) near
//! the starting point finds exactly the same fires.

use std::collections::BTreeSet;

use chrono::{DateTime, Datelike, LocalResult, NaiveDateTime, TimeDelta, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use pilot_cron::{CronError, CronSchedule};
use proptest::prelude::*;

/// One generated field: its text and the set of values it allows (bit `v` for value `v`).
#[derive(Debug, Clone)]
struct Field {
    text: String,
    set: u64,
}

#[derive(Debug, Clone)]
struct Expr {
    second: Option<Field>,
    minute: Field,
    hour: Field,
    dom: Field,
    month: Field,
    dow: Field,
}

impl Expr {
    fn text(&self) -> String {
        let fields = [&self.minute, &self.hour, &self.dom, &self.month, &self.dow];
        let mut parts: Vec<&str> = self.second.iter().map(|f| f.text.as_str()).collect();
        parts.extend(fields.iter().map(|f| f.text.as_str()));
        parts.join(" ")
    }

    fn is_wall_clock(&self) -> bool {
        self.second.is_none()
            && !self.minute.text.starts_with('*')
            && !self.hour.text.starts_with('*')
    }

    /// Crontab matching, written out independently of the library.
    fn matches(&self, t: NaiveDateTime) -> bool {
        let has = |f: &Field, v: u32| f.set & (1 << v) != 0;
        let second = self
            .second
            .as_ref()
            .map_or(t.second() == 0, |f| has(f, t.second()));
        let dom = has(&self.dom, t.day());
        let dow = has(&self.dow, t.weekday().num_days_from_sunday());
        let day = if self.dom.text.starts_with('*') || self.dow.text.starts_with('*') {
            dom && dow
        } else {
            dom || dow
        };
        second
            && has(&self.minute, t.minute())
            && has(&self.hour, t.hour())
            && has(&self.month, t.month())
            && day
    }

    /// Whether some month of the month field has some day of the day-of-month field.
    fn can_fire(&self) -> bool {
        if !self.dow.text.starts_with('*') {
            return true;
        }
        let max_days = [0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
        (1..=12).any(|m| {
            self.month.set & (1 << m) != 0
                && (1..=max_days[m]).any(|d| self.dom.set & (1 << d) != 0)
        })
    }
}

/// A field over `min..=max`; `names[i]` (if any) names value `first_name + i`. Day-of-week
/// values 7 fold onto 0.
fn field(
    min: u32,
    max: u32,
    names: &'static [&'static str],
    first_name: u32,
) -> BoxedStrategy<Field> {
    let fold = move |v: u32| if max == 7 && v == 7 { 0 } else { v };
    let render = move |v: u32, upper: bool| {
        let index = v.checked_sub(first_name).map(|i| i as usize);
        match index.and_then(|i| names.get(i)) {
            Some(name) if upper => name.to_uppercase(),
            Some(name) => (*name).to_owned(),
            None => v.to_string(),
        }
    };
    let span = max - min + 1;
    let star = Just(Field {
        text: "*".to_owned(),
        set: (min..=max).fold(0, |s, v| s | 1 << fold(v)),
    });
    let star_step = (2..=span / 2).prop_map(move |step| Field {
        text: format!("*/{step}"),
        set: (min..=max)
            .step_by(step as usize)
            .fold(0, |s, v| s | 1 << fold(v)),
    });
    let single =
        (min..=max, any::<bool>(), any::<bool>()).prop_map(move |(v, named, upper)| Field {
            text: if named {
                render(v, upper)
            } else {
                v.to_string()
            },
            set: 1 << fold(v),
        });
    let range =
        (min..=max, min..=max, 1..=4u32, any::<bool>()).prop_map(move |(a, b, step, named)| {
            let (low, high) = (a.min(b), a.max(b));
            let ends = if named {
                format!("{}-{}", render(low, false), render(high, true))
            } else {
                format!("{low}-{high}")
            };
            Field {
                text: if step > 1 {
                    format!("{ends}/{step}")
                } else {
                    ends
                },
                set: (low..=high)
                    .step_by(step as usize)
                    .fold(0, |s, v| s | 1 << fold(v)),
            }
        });
    let list = prop::collection::vec(min..=max, 2..=4).prop_map(move |values| Field {
        text: values
            .iter()
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
            .join(","),
        set: values.iter().fold(0, |s, v| s | 1 << fold(*v)),
    });
    prop_oneof![2 => star, 2 => star_step, 3 => single, 3 => range, 2 => list].boxed()
}

const MONTHS: &[&str] = &[
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAYS: &[&str] = &["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

/// `*` or, as often, any field: dates must match often for DST changes to be crossed.
fn often_star(field: BoxedStrategy<Field>, all: u64) -> BoxedStrategy<Field> {
    prop_oneof![
        Just(Field {
            text: "*".to_owned(),
            set: all
        }),
        field
    ]
    .boxed()
}

fn expr() -> impl Strategy<Value = Expr> {
    // Hours 0-3 hold most DST changes, so they are drawn often.
    let hour = prop_oneof![
        field(0, 23, &[], 0),
        (0..=3u32).prop_map(|h| Field {
            text: h.to_string(),
            set: 1 << h
        }),
        Just(Field {
            text: "1-3".to_owned(),
            set: 0b1110
        }),
    ];
    (
        prop::option::weighted(0.25, field(0, 59, &[], 0)),
        field(0, 59, &[], 0),
        hour,
        often_star(field(1, 31, &[], 0), (1 << 32) - 2),
        often_star(field(1, 12, MONTHS, 1), (1 << 13) - 2),
        often_star(field(0, 7, WEEKDAYS, 0), 0x7f),
    )
        .prop_map(|(second, minute, hour, dom, month, dow)| Expr {
            second,
            minute,
            hour,
            dom,
            month,
            dow,
        })
}

/// Zones with an offset change (in UTC) to start near.
const CHANGES: &[(&str, &str)] = &[
    ("America/New_York", "2025-03-09T07:00:00Z"),
    ("America/New_York", "2025-11-02T06:00:00Z"),
    ("Europe/Berlin", "2025-03-30T01:00:00Z"),
    ("Europe/Berlin", "2025-10-26T01:00:00Z"),
    ("Australia/Lord_Howe", "2025-04-05T15:00:00Z"),
    ("Australia/Lord_Howe", "2025-10-04T15:30:00Z"),
    ("Pacific/Chatham", "2025-04-05T14:00:00Z"),
    ("America/St_Johns", "2025-11-02T04:30:00Z"),
    // Samoa skipped all of 2011-12-30 when it moved across the date line.
    ("Pacific/Apia", "2011-12-30T10:00:00Z"),
    ("Asia/Kolkata", "2025-06-01T00:00:00Z"),
    ("UTC", "2025-06-01T00:00:00Z"),
];

/// A zone and a starting instant within 36 hours of one of its offset changes.
fn start() -> impl Strategy<Value = (Tz, DateTime<Utc>)> {
    (
        0..CHANGES.len(),
        -36 * 3600..36 * 3600i64,
        0..1_000_000_000u32,
    )
        .prop_map(|(i, shift, nanos)| {
            let (zone, change) = CHANGES[i];
            let change: DateTime<Utc> = change.parse().unwrap();
            let nanos = if shift % 3 == 0 { nanos } else { 0 };
            (
                zone.parse().unwrap(),
                change + TimeDelta::seconds(shift) + TimeDelta::nanoseconds(nanos.into()),
            )
        })
}

/// The instant a wall-clock job fires for local time `t`: its only instant, the first of two,
/// or for a skipped time the first instant that exists after it.
fn wall_clock_fire(tz: Tz, t: NaiveDateTime) -> DateTime<Utc> {
    let mut t = t;
    loop {
        match tz.from_local_datetime(&t) {
            LocalResult::Single(at) => return at.to_utc(),
            LocalResult::Ambiguous(a, b) => return a.to_utc().min(b.to_utc()),
            LocalResult::None => t += TimeDelta::minutes(1),
        }
    }
}

/// Every fire in `(after, until]` by brute force: each minute (or second) for real-time jobs,
/// each local minute mapped by the wall-clock rule otherwise.
fn brute_force(
    e: &Expr,
    tz: Tz,
    after: DateTime<Utc>,
    until: DateTime<Utc>,
) -> BTreeSet<DateTime<Utc>> {
    let step = if e.second.is_some() {
        TimeDelta::seconds(1)
    } else {
        TimeDelta::minutes(1)
    };
    let mut fires = BTreeSet::new();
    if e.is_wall_clock() {
        let first = after.timestamp() - 2 * 86_400;
        let mut t = DateTime::from_timestamp(first - first.rem_euclid(60), 0)
            .unwrap()
            .naive_utc();
        let end = (until + TimeDelta::days(2)).naive_utc();
        while t <= end {
            let fire = wall_clock_fire(tz, t);
            if e.matches(t) && fire > after && fire <= until {
                fires.insert(fire);
            }
            t += step;
        }
    } else {
        let mut at =
            DateTime::from_timestamp(after.timestamp(), 0).unwrap() + TimeDelta::seconds(1);
        while at <= until {
            if e.matches(at.with_timezone(&tz).naive_local()) {
                fires.insert(at);
            }
            at += TimeDelta::seconds(1);
            // Jump to the next step boundary once aligned.
            if step == TimeDelta::minutes(1) && at.second() != 0 {
                at = at.with_second(0).unwrap() + TimeDelta::minutes(1);
            }
        }
    }
    fires
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 1000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn fires_increase_match_and_none_is_missing(e in expr(), (tz, after) in start()) {
        let text = e.text();
        let schedule = match CronSchedule::parse(&text, tz.name()) {
            Ok(schedule) => schedule,
            Err(CronError::NeverFires(_)) => {
                prop_assert!(!e.can_fire(), "{text} was rejected but can fire");
                return Ok(());
            }
            Err(error) => return Err(TestCaseError::fail(format!("{text}: {error}"))),
        };
        prop_assert!(e.can_fire(), "{text} was accepted but can never fire");
        prop_assert_eq!(schedule.is_wall_clock(), e.is_wall_clock());

        let fires: Vec<DateTime<Utc>> =
            schedule.next_fires(after, 25).iter().map(|f| f.with_timezone(&Utc)).collect();
        prop_assert!(!fires.is_empty(), "{text} never fired");
        let mut previous = after;
        for fire in &fires {
            prop_assert!(*fire > previous, "{text}: {fire} does not follow {previous}");
            previous = *fire;
            let local = fire.with_timezone(&tz).naive_local();
            if !e.matches(local) {
                // Only the wall-clock gap rule may fire at a non-matching local time: at the
                // end of a gap that contains a matching local time.
                prop_assert!(e.is_wall_clock(), "{text}: {fire} ({local}) does not match");
                let before = (*fire - TimeDelta::seconds(1)).with_timezone(&tz).naive_local();
                let mut skipped = before.with_second(0).unwrap() + TimeDelta::minutes(1);
                let mut found = false;
                while skipped < local {
                    found |= e.matches(skipped);
                    skipped += TimeDelta::minutes(1);
                }
                prop_assert!(found, "{text}: {fire} ({local}) is no gap end for a match");
            }
        }

        // No fire is missing near the start (where the offset change is).
        let horizon = if e.second.is_some() { TimeDelta::hours(3) } else { TimeDelta::days(2) };
        let until = if fires.len() == 25 { (after + horizon).min(fires[24]) } else { after + horizon };
        let expected = brute_force(&e, tz, after, until);
        let got: BTreeSet<DateTime<Utc>> = fires.iter().copied().filter(|f| *f <= until).collect();
        let missing: Vec<_> = expected.difference(&got).take(3).collect();
        let extra: Vec<_> = got.difference(&expected).take(3).collect();
        prop_assert!(
            missing.is_empty() && extra.is_empty(),
            "{text} in {} after {after}: missing {missing:?}, extra {extra:?}",
            tz.name()
        );
    }
}
