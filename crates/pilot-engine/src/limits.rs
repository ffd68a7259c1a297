//! The size limits that keep one run's stored state bounded: a step's output may take at most
//! [`EngineConfig::max_output_bytes`] of compact JSON, and all of a run's outputs together at
//! most [`EngineConfig::max_run_state_bytes`]. Sizes are measured by serialising into a counter
//! that stops at the limit, so an oversized output costs no more than the limit to measure and
//! is never copied.
//!
//! [`EngineConfig::max_output_bytes`]: crate::EngineConfig::max_output_bytes
//! [`EngineConfig::max_run_state_bytes`]: crate::EngineConfig::max_run_state_bytes

use std::io;

use serde_json::Value;

/// The size of `value`'s compact JSON, or `None` when it is larger than `limit` bytes.
pub(crate) fn json_size_within(value: &Value, limit: usize) -> Option<usize> {
    let mut counter = Counter { bytes: 0, limit };
    serde_json::to_writer(&mut counter, value).ok()?;
    Some(counter.bytes)
}

/// Counts bytes and refuses to go past `limit`.
struct Counter {
    bytes: usize,
    limit: usize,
}

impl io::Write for Counter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.bytes = self.bytes.saturating_add(data.len());
        if self.bytes > self.limit {
            return Err(io::Error::other("size limit reached"));
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn sizes_are_compact_json_and_stop_at_the_limit() {
        let value = json!({"a": [1, 2, "xyz"]});
        let exact = serde_json::to_vec(&value).unwrap().len();
        assert_eq!(json_size_within(&value, exact), Some(exact));
        assert_eq!(json_size_within(&value, exact - 1), None);
        assert_eq!(json_size_within(&json!("x".repeat(10_000)), 100), None);
        assert_eq!(json_size_within(&Value::Null, 4), Some(4));
    }
}
