//! Keeps the caller's key out of everything this crate returns. A server may echo the key
//! (in an error message, or a model may repeat it), so every error message and every output
//! string is scrubbed of it in the encodings it could plausibly take: raw, JSON-escaped,
//! percent-encoded, hex and base64.

use std::borrow::Cow;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use serde_json::{Map, Value};

/// What replaces a secret.
pub(crate) const MASK: &str = "[redacted]";

/// Replaces one secret's spellings with [`MASK`].
#[derive(Debug, Clone)]
pub(crate) struct Redactor {
    /// The spellings to remove, longest first so a longer one is not broken by a shorter one.
    needles: Vec<String>,
}

impl Redactor {
    /// A redactor for `secret`; an empty secret redacts nothing.
    pub(crate) fn new(secret: &str) -> Self {
        if secret.is_empty() {
            return Self {
                needles: Vec::new(),
            };
        }
        let bytes = secret.as_bytes();
        let mut needles = vec![
            secret.to_owned(),
            secret.replace('\\', "\\\\").replace('"', "\\\""),
            percent_encode(secret),
            hex::encode(bytes),
            hex::encode_upper(bytes),
            // The unpadded forms are prefixes of the padded ones; the padding left behind
            // reveals nothing.
            STANDARD_NO_PAD.encode(bytes),
            URL_SAFE_NO_PAD.encode(bytes),
        ];
        needles.sort_by_key(|n| std::cmp::Reverse(n.len()));
        needles.dedup();
        Self { needles }
    }

    /// `text` without the secret.
    pub(crate) fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut text = Cow::Borrowed(text);
        for needle in &self.needles {
            if text.contains(needle.as_str()) {
                text = Cow::Owned(text.replace(needle.as_str(), MASK));
            }
        }
        text
    }

    /// Redacts every string (and object key) inside `value`.
    pub(crate) fn redact_value(&self, value: &mut Value) {
        match value {
            Value::String(s) => {
                if let Cow::Owned(clean) = self.redact(s) {
                    *s = clean;
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|item| self.redact_value(item)),
            Value::Object(map) => {
                if map.keys().any(|k| matches!(self.redact(k), Cow::Owned(_))) {
                    let old = std::mem::take(map);
                    *map = old
                        .into_iter()
                        .map(|(k, v)| (self.redact(&k).into_owned(), v))
                        .collect::<Map<_, _>>();
                }
                map.values_mut().for_each(|item| self.redact_value(item));
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
        }
    }
}

/// Percent-encodes every byte outside the URL-unreserved set.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose::{STANDARD, URL_SAFE};
    use serde_json::json;

    use super::*;

    const KEY: &str = "sk-te\"st/+?~k3y";

    #[test]
    fn every_encoding_of_the_key_is_removed() {
        let redactor = Redactor::new(KEY);
        let spellings = [
            KEY.to_owned(),
            serde_json::to_string(KEY).unwrap(),
            percent_encode(KEY),
            hex::encode(KEY),
            hex::encode_upper(KEY),
            STANDARD.encode(KEY),
            URL_SAFE.encode(KEY),
            format!("Bearer {KEY}"),
        ];
        for spelling in spellings {
            let text = format!("before {spelling} after");
            let clean = redactor.redact(&text);
            assert!(clean.contains(MASK), "{text} -> {clean}");
            assert!(!clean.contains("k3y"), "{text} -> {clean}");
            assert!(
                clean.starts_with("before ") && clean.contains(" after"),
                "{clean}"
            );
        }
    }

    #[test]
    fn text_without_the_key_is_left_alone() {
        let redactor = Redactor::new(KEY);
        assert!(matches!(
            redactor.redact("nothing here"),
            Cow::Borrowed("nothing here")
        ));
        assert_eq!(Redactor::new("").redact("anything"), "anything");
    }

    #[test]
    fn values_are_redacted_deeply_keys_included() {
        let redactor = Redactor::new("secret-key-1");
        let mut value =
            json!({"a": ["x secret-key-1 y", 1, null], "secret-key-1": {"b": "secret-key-1"}});
        redactor.redact_value(&mut value);
        assert_eq!(
            value,
            json!({"a": ["x [redacted] y", 1, null], "[redacted]": {"b": "[redacted]"}})
        );
    }
}
