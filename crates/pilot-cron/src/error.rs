//! The one error type of the cron library. Every message names what is wrong in words a user can
//! act on: the field (minute, hour, ...) and the problem, because the API returns these messages
//! verbatim when a schedule is created or previewed.

use std::fmt;

/// One field of a crontab expression, named as crontab(5) names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CronField {
    /// The optional first field of a 6-field expression (0-59).
    Second,
    /// Minute of the hour (0-59).
    Minute,
    /// Hour of the day (0-23).
    Hour,
    /// Day of the month (1-31).
    DayOfMonth,
    /// Month of the year (1-12 or `jan`-`dec`).
    Month,
    /// Day of the week (0-7 with 0 and 7 Sunday, or `sun`-`sat`).
    DayOfWeek,
}

impl CronField {
    /// The field's name as it appears in messages, e.g. `day-of-month`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Second => "second",
            Self::Minute => "minute",
            Self::Hour => "hour",
            Self::DayOfMonth => "day-of-month",
            Self::Month => "month",
            Self::DayOfWeek => "day-of-week",
        }
    }
}

impl fmt::Display for CronField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A cron expression or time zone was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CronError {
    /// The expression is empty or only whitespace.
    #[error("the cron expression is empty")]
    Empty,
    /// The expression is longer than [`crate::CRON_MAX_LEN`] bytes.
    #[error("the cron expression is {len} bytes long; the limit is {max}")]
    TooLong {
        /// The expression's length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The expression contains a character crontab never uses (control, non-ASCII).
    #[error("the cron expression contains an unexpected character {found:?}")]
    BadCharacter {
        /// The offending character.
        found: char,
    },
    /// The expression has neither 5 nor 6 fields.
    #[error(
        "expected 5 fields (minute hour day-of-month month day-of-week) or 6 (second first), \
         found {found}{hint}"
    )]
    FieldCount {
        /// How many whitespace-separated fields there were.
        found: usize,
        /// A short explanation for common mistakes (a year field), possibly empty.
        hint: &'static str,
    },
    /// An `@` alias that crontab has but a schedule cannot use (`@reboot`), or an unknown one.
    #[error("{0}")]
    Alias(String),
    /// One field is malformed or out of range.
    #[error("invalid {field} field: {problem}")]
    InvalidField {
        /// The field at fault.
        field: CronField,
        /// What is wrong with it, as a phrase.
        problem: String,
    },
    /// The expression is well formed but no date ever matches it (`0 0 30 2 *`).
    #[error("the cron expression can never fire: {0}")]
    NeverFires(String),
    /// The `cron` crate refused the expression this library translated for it. This is a bug
    /// in the translation, never the user's input; the message is the crate's.
    #[error("internal error: the cron engine rejected a translated expression: {0}")]
    Internal(String),
    /// The time zone is not an IANA name known to the time zone database.
    #[error("unknown time zone '{0}'")]
    UnknownTimeZone(String),
}

impl CronError {
    /// A field error with a formatted problem.
    pub(crate) fn field(field: CronField, problem: impl Into<String>) -> Self {
        Self::InvalidField {
            field,
            problem: problem.into(),
        }
    }
}
