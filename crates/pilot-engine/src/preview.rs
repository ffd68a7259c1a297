//! The output preview of an execution-log row: the output's compact JSON cut to at most the
//! configured number of bytes on a character boundary, secrets redacted.
//!
//! The output is serialised once, and only as far as the preview needs: serialisation stops a
//! little past the limit (far enough that a secret straddling the limit is still seen whole and
//! replaced), so a 10 MB output costs a 1 KiB write, not a 10 MB string.

use std::io;

use serde_json::Value;

use pilot_core::redact::Redactor;

/// The preview of `output`, at most `limit` bytes.
pub(crate) fn preview(output: &Value, limit: usize, redactor: &Redactor) -> String {
    let cap = limit
        .saturating_add(redactor.max_needle_len())
        .saturating_add(4);
    let mut writer = Bounded {
        buf: Vec::with_capacity(cap.min(limit + 64)),
        cap,
        full: false,
    };
    // The only error is the deliberate one that stops serialisation at the cap.
    let _ = serde_json::to_writer(&mut writer, output);
    let truncated = writer.full;
    let mut buf = writer.buf;
    let valid = match std::str::from_utf8(&buf) {
        Ok(_) => buf.len(),
        Err(e) => e.valid_up_to(),
    };
    buf.truncate(valid);
    let mut text = String::from_utf8(buf).unwrap_or_default();
    if !redactor.is_empty() {
        text = redactor.redact_string(text);
    }
    let cut = text.len() > limit;
    truncate_on_char_boundary(&mut text, limit);
    if truncated || cut {
        redactor.strip_partial_tail(&mut text);
    }
    text
}

/// Cuts `text` to at most `limit` bytes without splitting a character.
pub(crate) fn truncate_on_char_boundary(text: &mut String, limit: usize) {
    if text.len() <= limit {
        return;
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
}

/// A writer that keeps at most `cap` bytes and then refuses more.
struct Bounded {
    buf: Vec<u8>,
    cap: usize,
    full: bool,
}

impl io::Write for Bounded {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = self.cap - self.buf.len();
        if room == 0 {
            self.full = true;
            return Err(io::Error::other("preview limit reached"));
        }
        let n = data.len().min(room);
        self.buf.extend_from_slice(&data[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn check(output: Value, limit: usize, secrets: &[&str], expect: &str) {
        let redactor = Redactor::for_secrets(secrets);
        let got = preview(&output, limit, &redactor);
        assert_eq!(got, expect);
        assert!(got.len() <= limit);
    }

    #[test]
    fn table() {
        check(json!({"a": 1}), 1024, &[], r#"{"a":1}"#);
        check(json!("abcdef"), 4, &[], r#""abc"#);
        // "é" is two bytes: a cut inside it backs off to the boundary.
        check(json!("ééé"), 4, &[], "\"é");
        check(json!(null), 1024, &[], "null");
        check(
            json!({"k": "key-1234"}),
            1024,
            &["key-1234"],
            r#"{"k":"[redacted]"}"#,
        );
        // A secret straddling the limit is replaced whole, then the text is cut; the final "a"
        // goes too, being the start of the secret's base64 form ("a2V5...").
        check(json!("xxxxkey-1234yyyy"), 10, &["key-1234"], "\"xxxx[red");
        check(
            json!("0123456789key-1234"),
            14,
            &["key-1234"],
            "\"0123456789[re",
        );
        check(json!(["a", "b"]), 0, &[], "");
    }

    #[test]
    fn a_secret_cut_by_the_cap_leaves_no_prefix_behind() {
        // The hex form (32 bytes) shrinks to 10, which pulls the secret the cap cut in two back
        // under the limit: its visible prefix must go.
        let secret = "abcdefghijklmnop";
        let text = format!("{}xxxxxxxx{secret}{secret}", hex::encode(secret));
        check(json!(text), 20, &[secret], "\"[redacted]xxxxxxxx");
    }

    #[test]
    fn large_output_is_serialised_only_up_to_the_cap() {
        let big = json!({"data": "x".repeat(5_000_000)});
        let got = preview(&big, 1024, &Redactor::for_secrets(&[]));
        assert_eq!(got.len(), 1024);
        assert!(got.starts_with(r#"{"data":"xxx"#));
    }
}
