//! Conversions between serde_json values (what the engine stores) and jaq values (what jq
//! computes on), and bounded renderings of jaq values as text. Every walk here is bounded: by
//! a nesting limit for recursion, and by a byte limit for what it produces.

use std::fmt::{self, Write as _};

use jaq_core::ValT as _;
use jaq_json::{Num, Val};
use jaq_std::ValT as _;
use serde_json::{Map, Number, Value};

use crate::JqError;

/// Converts an input value. Fails when it nests deeper than `max_depth`.
pub(crate) fn from_json(value: Value, max_depth: usize) -> Result<Val, String> {
    from_json_at(value, 1, max_depth)
}

fn from_json_at(value: Value, depth: usize, max_depth: usize) -> Result<Val, String> {
    if depth > max_depth {
        return Err(format!(
            "the input is nested deeper than {max_depth} levels"
        ));
    }
    Ok(match value {
        Value::Null => Val::Null,
        Value::Bool(b) => Val::Bool(b),
        Value::Number(n) => Val::Num(number_from_json(&n)),
        Value::String(s) => Val::from(s),
        Value::Array(items) => items
            .into_iter()
            .map(|item| from_json_at(item, depth + 1, max_depth))
            .collect::<Result<Val, String>>()?,
        Value::Object(entries) => {
            let entries = entries
                .into_iter()
                .map(|(k, v)| Ok((Val::from(k), from_json_at(v, depth + 1, max_depth)?)))
                .collect::<Result<Vec<_>, String>>()?;
            Val::from_map(entries).map_err(|e| e.to_string())?
        }
    })
}

fn number_from_json(n: &Number) -> Num {
    if let Some(i) = n.as_i64() {
        Num::from_integral(i)
    } else if let Some(u) = n.as_u64() {
        Num::from_integral(u)
    } else {
        Num::Float(n.as_f64().unwrap_or(f64::NAN))
    }
}

/// Converts outputs, counting their size as compact JSON against a shared allowance.
pub(crate) struct OutputSink {
    bytes: usize,
    max_bytes: usize,
    max_depth: usize,
}

impl OutputSink {
    pub(crate) fn new(max_bytes: usize, max_depth: usize) -> Self {
        Self {
            bytes: 0,
            max_bytes,
            max_depth,
        }
    }

    /// Converts one output, or says why it cannot be.
    pub(crate) fn convert(&mut self, value: &Val) -> Result<Value, JqError> {
        self.convert_at(value, 1)
    }

    fn count(&mut self, n: usize) -> Result<(), JqError> {
        self.bytes = self.bytes.saturating_add(n);
        if self.bytes > self.max_bytes {
            return Err(JqError::Limit(format!(
                "the output is larger than {} KiB",
                self.max_bytes >> 10
            )));
        }
        Ok(())
    }

    fn convert_at(&mut self, value: &Val, depth: usize) -> Result<Value, JqError> {
        if depth > self.max_depth {
            return Err(JqError::Limit(format!(
                "the output is nested deeper than {} levels",
                self.max_depth
            )));
        }
        Ok(match value {
            Val::Null => {
                self.count(4)?;
                Value::Null
            }
            Val::Bool(b) => {
                self.count(5)?;
                Value::Bool(*b)
            }
            Val::Num(n) => {
                self.count(8)?;
                number_to_json(n, value).map_or(Value::Null, Value::Number)
            }
            Val::TStr(bytes) | Val::BStr(bytes) => {
                self.count(bytes.len() + 2)?;
                Value::String(String::from_utf8_lossy(bytes).into_owned())
            }
            Val::Arr(items) => {
                self.count(2)?;
                let mut out = Vec::with_capacity(items.len().min(1 << 16));
                for item in items.iter() {
                    self.count(1)?;
                    out.push(self.convert_at(item, depth + 1)?);
                }
                Value::Array(out)
            }
            Val::Obj(entries) => {
                self.count(2)?;
                let mut out = Map::new();
                for (key, item) in entries.iter() {
                    let Some(key) = key.as_utf8_bytes().or_else(|| key.as_bytes()) else {
                        return Err(JqError::Runtime(format!(
                            "object key {} is not a string",
                            excerpt(key)
                        )));
                    };
                    self.count(key.len() + 4)?;
                    let key = String::from_utf8_lossy(key).into_owned();
                    out.insert(key, self.convert_at(item, depth + 1)?);
                }
                Value::Object(out)
            }
        })
    }
}

/// A jq number as a JSON number. JSON has no NaN or infinities: NaN becomes null (`None`) as
/// in jq, and the infinities become the largest finite numbers. Integers too wide for 64 bits
/// become the nearest float.
fn number_to_json(n: &Num, value: &Val) -> Option<Number> {
    if let Some(i) = n.as_isize().and_then(|i| i64::try_from(i).ok()) {
        return Some(Number::from(i));
    }
    if let Num::BigInt(_) | Num::Dec(_) = n {
        let text = n.to_string();
        if let Ok(i) = text.parse::<i64>() {
            return Some(Number::from(i));
        }
        if let Ok(u) = text.parse::<u64>() {
            return Some(Number::from(u));
        }
    }
    let f = value.as_f64()?;
    let f = if f.is_infinite() {
        f64::MAX.copysign(f)
    } else {
        f
    };
    Number::from_f64(f)
}

/// A `fmt::Write` that keeps at most `max` bytes and then fails, which makes jaq's formatter
/// stop walking the value.
struct Capped {
    text: String,
    max: usize,
    full: bool,
}

impl fmt::Write for Capped {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if self.text.len() + s.len() > self.max {
            let room = self.max - self.text.len();
            let cut = (0..=room)
                .rev()
                .find(|&i| s.is_char_boundary(i))
                .unwrap_or(0);
            self.text.push_str(&s[..cut]);
            self.full = true;
            return Err(fmt::Error);
        }
        self.text.push_str(s);
        Ok(())
    }
}

fn render(value: &dyn fmt::Display, max: usize) -> (String, bool) {
    let mut out = Capped {
        text: String::new(),
        max,
        full: false,
    };
    let _ = write!(out, "{value}");
    (out.text, out.full)
}

/// The value as compact JSON (jaq's formatting), or `None` when it is longer than `max` bytes.
/// Stops formatting as soon as the limit is reached.
pub(crate) fn bounded_json(value: &Val, max: usize) -> Option<String> {
    let (text, full) = render(value, max);
    (!full).then_some(text)
}

/// A short excerpt of a value for an error message.
pub(crate) fn excerpt(value: &dyn fmt::Display) -> String {
    const MAX: usize = 200;
    let (mut text, full) = render(value, MAX);
    if full {
        text.push('…');
    }
    text
}

/// The message of a jq error: a string raised with `error("...")` as it is, anything else as a
/// short excerpt.
pub(crate) fn error_message(error: jaq_core::Error<Val>) -> String {
    const MAX: usize = 1000;
    let (mut text, full) = render(&error, MAX);
    if full {
        text.push('…');
    }
    // `error("boom")` renders as the JSON string "\"boom\""; show it unquoted.
    if !full
        && text.starts_with('"')
        && let Ok(Value::String(s)) = serde_json::from_str::<Value>(&text)
    {
        return s;
    }
    text
}

/// The deepest nesting of `[` and `{` in JSON text, ignoring brackets inside strings (and
/// counting those in comments, which only overestimates).
pub(crate) fn json_depth(text: &[u8]) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for &byte in text {
        if in_string {
            match (escaped, byte) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_depth_ignores_brackets_in_strings() {
        let check =
            |text: &str, expect: usize| assert_eq!(json_depth(text.as_bytes()), expect, "{text}");
        check("1", 0);
        check("[1, [2], {\"a\": [3]}]", 3);
        check("\"[[[[\"", 0);
        check("[\"\\\"[[\"]", 1);
        check("]]]][", 1);
    }

    #[test]
    fn bounded_json_stops_at_the_limit() {
        let value: Val = (0..1000).map(|i| Val::from(i as isize)).collect();
        assert_eq!(bounded_json(&Val::from(1isize), 10).as_deref(), Some("1"));
        assert!(bounded_json(&value, 100).is_none());
        assert!(excerpt(&value).ends_with('…'));
        assert!(excerpt(&value).len() < 210);
    }
}
