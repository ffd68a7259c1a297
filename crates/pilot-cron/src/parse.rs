//! Parsing crontab text into sets of allowed values, one bit set per field.
//!
//! We parse the text ourselves rather than hand it to the `cron` crate because the crate speaks
//! Quartz, not crontab: it wants a seconds field, numbers Sunday as 1, accepts `?`, `L` and `#`,
//! and ANDs the day-of-month and day-of-week fields. Parsing here gives crontab(5) semantics and
//! messages that name the field at fault; the resulting sets are then handed to the crate in a
//! form it cannot misread (see `search.rs`).

use crate::error::{CronError, CronField};

/// The longest expression we accept, in bytes. Crontab lines are short; this bounds the work
/// any input can cause.
pub const CRON_MAX_LEN: usize = 256;

/// The most comma-separated items one field may have (enough to list every minute).
const MAX_LIST_ITEMS: usize = 60;

/// The most days each month can have; February counts its leap day.
const MONTH_MAX_DAYS: [u32; 13] = [0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];

const MONTH_NAMES: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAY_NAMES: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

/// A parsed expression: the allowed values of every field as bit sets (bit `v` set when value
/// `v` is allowed), plus the facts crontab's rules depend on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fields {
    /// Seconds 0-59; only bit 0 for a 5-field expression.
    pub(crate) seconds: u64,
    /// Minutes 0-59.
    pub(crate) minutes: u64,
    /// Hours 0-23.
    pub(crate) hours: u64,
    /// Days of the month 1-31.
    pub(crate) days_of_month: u64,
    /// Months 1-12.
    pub(crate) months: u64,
    /// Days of the week 0-6, Sunday 0 (a written 7 is folded onto 0).
    pub(crate) days_of_week: u64,
    /// The expression had a seconds field (6 fields).
    pub(crate) has_seconds: bool,
    /// The minute field starts with `*`.
    pub(crate) minute_star: bool,
    /// The hour field starts with `*`.
    pub(crate) hour_star: bool,
    /// The day-of-month field starts with `*`.
    pub(crate) dom_star: bool,
    /// The day-of-week field starts with `*`.
    pub(crate) dow_star: bool,
}

impl Fields {
    /// Debian cron's rule: a 5-field job with fixed minute and hour runs on wall-clock time.
    pub(crate) fn is_wall_clock(&self) -> bool {
        !self.has_seconds && !self.minute_star && !self.hour_star
    }

    /// Crontab's day rule: both day fields restricted means either may match.
    pub(crate) fn days_are_ored(&self) -> bool {
        !self.dom_star && !self.dow_star
    }
}

/// The range, names and identity of one field.
struct Spec {
    field: CronField,
    min: u32,
    max: u32,
    names: &'static [&'static str],
    /// The value of `names[0]`.
    first_name_value: u32,
}

/// A field written with numbers only.
const fn numeric(field: CronField, min: u32, max: u32) -> Spec {
    Spec {
        field,
        min,
        max,
        names: &[],
        first_name_value: 0,
    }
}

const SECOND: Spec = numeric(CronField::Second, 0, 59);
const MINUTE: Spec = numeric(CronField::Minute, 0, 59);
const HOUR: Spec = numeric(CronField::Hour, 0, 23);
const DAY_OF_MONTH: Spec = numeric(CronField::DayOfMonth, 1, 31);
const MONTH: Spec = Spec {
    field: CronField::Month,
    min: 1,
    max: 12,
    names: &MONTH_NAMES,
    first_name_value: 1,
};
// Crontab's day-of-week range is 0-7 so that `5-7` and `*/7` read naturally; 7 is folded onto 0.
const DAY_OF_WEEK: Spec = Spec {
    field: CronField::DayOfWeek,
    min: 0,
    max: 7,
    names: &WEEKDAY_NAMES,
    first_name_value: 0,
};

/// Parses a crontab expression (5 or 6 fields, or an `@` alias) and checks that it can fire.
pub(crate) fn parse_expression(expr: &str) -> Result<Fields, CronError> {
    if expr.len() > CRON_MAX_LEN {
        return Err(CronError::TooLong {
            len: expr.len(),
            max: CRON_MAX_LEN,
        });
    }
    if let Some(found) = expr
        .chars()
        .find(|c| !(c.is_ascii_graphic() || *c == ' ' || *c == '\t'))
    {
        return Err(CronError::BadCharacter { found });
    }
    let text = expr.trim();
    if text.is_empty() {
        return Err(CronError::Empty);
    }
    let text = if text.starts_with('@') {
        expand_alias(text)?
    } else {
        text
    };

    let parts: Vec<&str> = text.split_ascii_whitespace().collect();
    let (second, rest) = match parts.len() {
        5 => (None, &parts[..]),
        6 => (Some(parts[0]), &parts[1..]),
        found => {
            let hint = if found == 7 {
                " (crontab has no year field)"
            } else {
                ""
            };
            return Err(CronError::FieldCount { found, hint });
        }
    };
    let [minute, hour, dom, month, dow] = rest else {
        return Err(CronError::FieldCount {
            found: parts.len(),
            hint: "",
        });
    };

    let fields = Fields {
        seconds: match second {
            Some(text) => parse_field(text, &SECOND)?,
            None => 1,
        },
        minutes: parse_field(minute, &MINUTE)?,
        hours: parse_field(hour, &HOUR)?,
        days_of_month: parse_field(dom, &DAY_OF_MONTH)?,
        months: parse_field(month, &MONTH)?,
        days_of_week: parse_field(dow, &DAY_OF_WEEK)?,
        has_seconds: second.is_some(),
        minute_star: minute.starts_with('*'),
        hour_star: hour.starts_with('*'),
        dom_star: dom.starts_with('*'),
        dow_star: dow.starts_with('*'),
    };
    check_can_fire(&fields)?;
    Ok(fields)
}

/// Replaces an `@` alias with the 5-field expression Debian cron gives it.
fn expand_alias(text: &str) -> Result<&'static str, CronError> {
    match text.to_ascii_lowercase().as_str() {
        "@yearly" | "@annually" => Ok("0 0 1 1 *"),
        "@monthly" => Ok("0 0 1 * *"),
        "@weekly" => Ok("0 0 * * 0"),
        "@daily" | "@midnight" => Ok("0 0 * * *"),
        "@hourly" => Ok("0 * * * *"),
        "@reboot" => Err(CronError::Alias(
            "@reboot runs when the cron daemon starts and has no time of its own; \
             use a time-based expression"
                .to_owned(),
        )),
        _ => Err(CronError::Alias(format!(
            "unknown alias '{text}'; use @yearly, @annually, @monthly, @weekly, @daily, \
             @midnight or @hourly"
        ))),
    }
}

/// Parses one field: a comma-separated list of `*`, values and ranges, each with an optional
/// `/step`.
fn parse_field(text: &str, spec: &Spec) -> Result<u64, CronError> {
    let items = text.split(',').count();
    if items > MAX_LIST_ITEMS {
        return Err(CronError::field(
            spec.field,
            format!("{items} list items; the limit is {MAX_LIST_ITEMS}"),
        ));
    }
    let mut bits = 0;
    for item in text.split(',') {
        bits |= parse_item(item, spec)?;
    }
    Ok(bits)
}

fn parse_item(item: &str, spec: &Spec) -> Result<u64, CronError> {
    let err = |problem: String| CronError::field(spec.field, problem);
    if item.is_empty() {
        return Err(err(
            "empty list item (a doubled comma, or a comma at an end)".to_owned(),
        ));
    }
    reject_quartz(item, spec)?;

    let (range, step) = match item.split_once('/') {
        Some((range, step)) => (range, Some(parse_step(step, spec)?)),
        None => (item, None),
    };
    let (low, high) = if range == "*" {
        (spec.min, spec.max)
    } else if let Some((low, high)) = range.split_once('-') {
        let (low, high) = (parse_value(low, spec)?, parse_value(high, spec)?);
        if low > high {
            let hint = if spec.field == CronField::DayOfWeek {
                " (Sunday is also 7)"
            } else {
                ""
            };
            return Err(err(format!(
                "range {range} is reversed; ranges run from low to high{hint}"
            )));
        }
        (low, high)
    } else {
        let value = parse_value(range, spec)?;
        if let Some(step) = step {
            return Err(err(format!(
                "'{item}': a step needs a range or '*' before it, e.g. '{value}-{}/{step}'",
                spec.max
            )));
        }
        (value, value)
    };

    let step = step.unwrap_or(1);
    let mut bits = 0u64;
    let mut value = low;
    while value <= high {
        // Day-of-week 7 is Sunday, like 0.
        let bit = if spec.field == CronField::DayOfWeek && value == 7 {
            0
        } else {
            value
        };
        bits |= 1 << bit;
        value += step;
    }
    Ok(bits)
}

/// Gives Quartz-only syntax a message of its own instead of a puzzling "not a number".
fn reject_quartz(item: &str, spec: &Spec) -> Result<(), CronError> {
    let problem = if item.contains('?') {
        "'?' is Quartz syntax, not crontab; use '*'"
    } else if item.contains('#') {
        "'#' (nth weekday of the month) is Quartz syntax, not crontab"
    } else if item.split(['-', '/']).any(|token| {
        let letters = token
            .trim_start_matches(|c: char| c.is_ascii_digit())
            .to_ascii_lowercase();
        matches!(letters.as_str(), "l" | "w" | "lw")
    }) {
        "'L' and 'W' (last day, nearest weekday) are Quartz syntax, not crontab"
    } else {
        return Ok(());
    };
    Err(CronError::field(spec.field, problem))
}

fn parse_step(text: &str, spec: &Spec) -> Result<u32, CronError> {
    let err = |problem: String| CronError::field(spec.field, problem);
    let span = spec.max - spec.min + 1;
    if text.is_empty() {
        return Err(err("missing step after '/'".to_owned()));
    }
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(err(format!("step '{text}' is not a number")));
    }
    match text.parse::<u32>() {
        Ok(0) => Err(err("a step of 0 is not allowed".to_owned())),
        Ok(step) if step <= span => Ok(step),
        _ => Err(err(format!("step {text} is out of range 1-{span}"))),
    }
}

fn parse_value(text: &str, spec: &Spec) -> Result<u32, CronError> {
    let err = |problem: String| CronError::field(spec.field, problem);
    if text.is_empty() {
        return Err(err("missing value in a range".to_owned()));
    }
    if text == "*" {
        return Err(err(
            "'*' cannot be part of a range; use '*' or '*/step' alone".to_owned(),
        ));
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        return match text.parse::<u32>() {
            Ok(value) if (spec.min..=spec.max).contains(&value) => Ok(value),
            _ => Err(err(format!(
                "{text} is out of range {}-{}",
                spec.min, spec.max
            ))),
        };
    }
    if spec.names.is_empty() {
        return Err(err(format!("'{text}' is not a number")));
    }
    if !text.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(err(format!("'{text}' is not a number or a name")));
    }
    let lower = text.to_ascii_lowercase();
    match spec.names.iter().position(|name| *name == lower) {
        Some(index) => Ok(spec.first_name_value + index as u32),
        None => Err(err(format!(
            "unknown name '{text}'; use {}-{} or numbers {}-{}",
            spec.names[0],
            spec.names[spec.names.len() - 1],
            spec.min,
            spec.max
        ))),
    }
}

/// Rejects an expression no date can ever match. Only a restricted day-of-month combined with
/// an unrestricted (`*`-led) day-of-week can do that: with both restricted crontab ORs them, and
/// every month has every weekday; a `*`-led day-of-month always contains day 1; and each valid
/// date falls on every weekday in some year.
fn check_can_fire(fields: &Fields) -> Result<(), CronError> {
    if !fields.dow_star {
        return Ok(());
    }
    let fires = (1..=12u32).any(|month| {
        let month_days = (1u64 << (MONTH_MAX_DAYS[month as usize] + 1)) - 2;
        fields.months & (1 << month) != 0 && fields.days_of_month & month_days != 0
    });
    if fires {
        return Ok(());
    }
    let months: Vec<&str> = (1..=12)
        .filter(|m| fields.months & (1 << m) != 0)
        .map(|m| MONTH_NAMES[m - 1])
        .collect();
    let days: Vec<String> = (1..=31)
        .filter(|d| fields.days_of_month & (1 << d) != 0)
        .map(|d: u32| d.to_string())
        .collect();
    Err(CronError::NeverFires(format!(
        "none of the selected months ({}) has day-of-month {}",
        months.join(","),
        days.join(",")
    )))
}
