//! Secret redaction (docs/RELIABILITY.md promise 8): the caller's credential values are removed from
//! stored outputs, previews, messages and errors before anything is written, in every encoding a
//! remote service is likely to echo them in.
//!
//! For each secret the [`Redactor`] precomputes a set of needles: the raw value; standard base64
//! and base64url, padded and unpadded, plus the stable middle part of the value's base64 when it
//! sits at a byte offset of 1 or 2 inside a longer encoded blob; lower- and upper-case hex;
//! percent-encoding under the common encode sets (every non-alphanumeric byte, RFC 3986
//! unreserved kept, `encodeURIComponent`, HTML forms with `+` for space) with upper- and
//! lower-case escapes; and JSON string escaping (serde's, and the ASCII-only form with `\uXXXX`
//! escapes, each also with `\/`). For a `basic` credential (`user:password`) the password part
//! alone is a secret too; base64 of the whole value is the `Authorization: Basic` form.
//!
//! Secrets (and password parts) shorter than [`MIN_SECRET_LEN`] bytes are not redacted: they
//! protect nothing, and replacing every occurrence of two or three common characters would shred
//! outputs. A redactor without needles (providers that declare no credential types) does no work.

use std::borrow::Cow;

use crate::{Credential, CredentialKind};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::Value;

/// What a secret is replaced with.
pub const REDACTED: &str = "[redacted]";

/// Secrets shorter than this (in bytes) are not redacted.
pub const MIN_SECRET_LEN: usize = 4;

/// Unaligned base64 middles shorter than this are not used as needles (too likely to match
/// unrelated base64 text).
const MIN_CORE_LEN: usize = 8;

/// RFC 3986 unreserved characters kept as they are.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// What JavaScript's `encodeURIComponent` keeps.
const URI_COMPONENT: &AsciiSet = &UNRESERVED
    .remove(b'!')
    .remove(b'*')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')');

/// What `application/x-www-form-urlencoded` keeps (space becomes `+` separately).
const FORM: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'*')
    .remove(b'-')
    .remove(b'.')
    .remove(b'_');

/// The secrets of one provider call, as needles to cut out of anything written.
#[derive(Clone, Default)]
pub struct Redactor {
    /// Every encoded form, longest first so a longer form is replaced before a shorter one that
    /// it contains.
    needles: Vec<String>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redactor")
            .field("needles", &self.needles.len())
            .finish()
    }
}

impl Redactor {
    /// A redactor for the credentials a provider call received.
    pub fn for_credentials(credentials: &[Credential]) -> Self {
        let mut secrets: Vec<&str> = Vec::with_capacity(credentials.len());
        for credential in credentials {
            let value = credential.secret.expose();
            secrets.push(value);
            if credential.kind == CredentialKind::Basic
                && let Some((_, password)) = value.split_once(':')
            {
                secrets.push(password);
            }
        }
        Self::for_secrets(&secrets)
    }

    /// A redactor for raw secret values.
    pub fn for_secrets(secrets: &[&str]) -> Self {
        let mut needles = Vec::new();
        for secret in secrets.iter().filter(|s| s.len() >= MIN_SECRET_LEN) {
            push_encodings(secret, &mut needles);
        }
        needles.retain(|n| !n.is_empty());
        needles.sort_unstable_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        needles.dedup();
        Self { needles }
    }

    /// Whether there is nothing to redact (the hot path for credential-less providers).
    pub fn is_empty(&self) -> bool {
        self.needles.is_empty()
    }

    /// The longest needle, in bytes (0 when empty).
    pub fn max_needle_len(&self) -> usize {
        self.needles.first().map_or(0, String::len)
    }

    /// `text` with every needle replaced; borrowed when nothing matched.
    pub fn redact_str<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut out = Cow::Borrowed(text);
        for needle in &self.needles {
            if out.contains(needle.as_str()) {
                out = Cow::Owned(out.replace(needle.as_str(), REDACTED));
            }
        }
        out
    }

    /// `text` with every needle replaced, reusing the allocation when nothing matched.
    pub fn redact_string(&self, text: String) -> String {
        match self.redact_str(&text) {
            Cow::Borrowed(_) => text,
            Cow::Owned(redacted) => redacted,
        }
    }

    /// Redacts every string and every object key in `value`, in place. The walk keeps its own
    /// stack, so no nesting depth can overflow the thread's.
    pub fn redact_value(&self, value: &mut Value) {
        if self.is_empty() {
            return;
        }
        let mut pending = vec![value];
        while let Some(value) = pending.pop() {
            match value {
                Value::String(s) => {
                    if let Cow::Owned(redacted) = self.redact_str(s) {
                        *s = redacted;
                    }
                }
                Value::Array(items) => pending.extend(items.iter_mut()),
                Value::Object(map) => {
                    self.redact_keys(map);
                    pending.extend(map.values_mut());
                }
                Value::Null | Value::Bool(_) | Value::Number(_) => {}
            }
        }
    }

    /// Renames the keys of `map` that hold a secret.
    fn redact_keys(&self, map: &mut serde_json::Map<String, Value>) {
        let renamed: Vec<String> = map
            .keys()
            .filter(|k| matches!(self.redact_str(k), Cow::Owned(_)))
            .cloned()
            .collect();
        for key in renamed {
            if let Some(v) = map.remove(&key) {
                let mut new_key = self.redact_string(key);
                // Two keys may redact to the same text: keep both values.
                while map.contains_key(&new_key) {
                    new_key.push('_');
                }
                map.insert(new_key, v);
            }
        }
    }

    /// Removes a trailing fragment of `text` that is the start of a needle: what remains of a
    /// secret that a truncation cut in two.
    pub fn strip_partial_tail(&self, text: &mut String) {
        for needle in &self.needles {
            let longest = needle.len().saturating_sub(1).min(text.len());
            for k in (1..=longest).rev() {
                if needle.is_char_boundary(k) && text.ends_with(&needle[..k]) {
                    text.truncate(text.len() - k);
                    break;
                }
            }
        }
    }
}

/// Every encoded form of one secret.
fn push_encodings(secret: &str, needles: &mut Vec<String>) {
    let bytes = secret.as_bytes();
    needles.push(secret.to_owned());

    // Base64 as a whole value (the Basic-auth header form is STANDARD of `user:password`).
    for engine in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD] {
        needles.push(engine.encode(bytes));
    }
    // Base64 of a blob that contains the secret at offset 1 or 2 (mod 3): only the characters
    // that depend on the secret's bytes alone are stable.
    for offset in 1..3usize {
        let mut shifted = vec![0u8; offset];
        shifted.extend_from_slice(bytes);
        let skip = (offset * 8).div_ceil(6);
        let full = shifted.len() * 8 / 6;
        for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
            let encoded = engine.encode(&shifted);
            if let Some(core) = encoded.get(skip..full)
                && core.len() >= MIN_CORE_LEN
            {
                needles.push(core.to_owned());
            }
        }
    }
    // A blob that holds the secret at offset 0 but continues after it: the aligned encoding's
    // trailing partial character depends on what follows, so only the part before it is stable.
    let aligned_full = bytes.len() * 8 / 6;
    if let Some(core) = STANDARD_NO_PAD.encode(bytes).get(..aligned_full)
        && core.len() >= MIN_CORE_LEN
    {
        needles.push(core.to_owned());
        needles.push(core.replace('+', "-").replace('/', "_"));
    }

    needles.push(hex::encode(bytes));
    needles.push(hex::encode_upper(bytes));

    for set in [NON_ALPHANUMERIC, UNRESERVED, URI_COMPONENT] {
        let upper = utf8_percent_encode(secret, set).to_string();
        needles.push(lowercase_escapes(&upper));
        needles.push(upper);
    }
    let form = utf8_percent_encode(secret, FORM)
        .to_string()
        .replace("%20", "+");
    needles.push(lowercase_escapes(&form));
    needles.push(form);

    let serde_form = json_escape(secret);
    let ascii_form = json_escape_ascii(secret);
    for form in [serde_form, ascii_form] {
        if form.contains('/') {
            needles.push(form.replace('/', "\\/"));
        }
        needles.push(form);
    }
}

/// `%2F` -> `%2f` for every escape.
fn lowercase_escapes(encoded: &str) -> String {
    let mut out = String::with_capacity(encoded.len());
    let mut rest = encoded;
    while let Some(pos) = rest.find('%') {
        out.push_str(&rest[..pos]);
        let escape = rest.get(pos..pos + 3).unwrap_or(&rest[pos..]);
        out.push_str(&escape.to_ascii_lowercase());
        rest = &rest[pos + escape.len()..];
    }
    out.push_str(rest);
    out
}

/// The secret as serde_json writes it inside a string (without the quotes).
fn json_escape(secret: &str) -> String {
    let quoted = Value::String(secret.to_owned()).to_string();
    quoted[1..quoted.len() - 1].to_owned()
}

/// The secret as an ASCII-only JSON encoder (Python's default) writes it: non-ASCII characters
/// as `\uXXXX` (lower-case hex, surrogate pairs beyond the BMP).
fn json_escape_ascii(secret: &str) -> String {
    let mut out = String::with_capacity(secret.len());
    let mut units = [0u16; 2];
    for c in secret.chars() {
        if c.is_ascii() {
            out.push_str(&json_escape(c.encode_utf8(&mut [0u8; 4])));
        } else {
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "sk-Test/Key+42 ü\"x";

    /// `text` redacted with `secrets` must equal `expect`.
    fn check(secrets: &[&str], text: &str, expect: &str) {
        let redactor = Redactor::for_secrets(secrets);
        assert_eq!(redactor.redact_str(text), expect, "redacting {text:?}");
    }

    fn percent(set: &'static AsciiSet) -> String {
        utf8_percent_encode(SECRET, set).to_string()
    }

    #[test]
    fn every_encoding_is_redacted() {
        let b = SECRET.as_bytes();
        let cases: Vec<(&str, String)> = vec![
            ("raw", SECRET.to_owned()),
            ("base64", STANDARD.encode(b)),
            ("base64 unpadded", STANDARD_NO_PAD.encode(b)),
            ("base64url", URL_SAFE.encode(b)),
            ("base64url unpadded", URL_SAFE_NO_PAD.encode(b)),
            ("hex", hex::encode(b)),
            ("HEX", hex::encode_upper(b)),
            ("percent", percent(NON_ALPHANUMERIC)),
            (
                "percent lower",
                lowercase_escapes(&percent(NON_ALPHANUMERIC)),
            ),
            ("percent unreserved", percent(UNRESERVED)),
            ("percent component", percent(URI_COMPONENT)),
            ("form", percent(FORM).replace("%20", "+")),
            ("json", json_escape(SECRET)),
            ("json ascii", json_escape_ascii(SECRET)),
            (
                "json ascii slash",
                json_escape_ascii(SECRET).replace('/', "\\/"),
            ),
        ];
        for (name, encoded) in cases {
            assert_ne!(encoded, "", "{name}");
            check(
                &[SECRET],
                &format!("before {encoded} after"),
                "before [redacted] after",
            );
        }
    }

    #[test]
    fn base64_inside_a_larger_blob_is_cut_out() {
        for prefix in ["", "a", "ab", "abc", "abcd"] {
            let blob = STANDARD.encode(format!("{prefix}{SECRET}suffix-data"));
            let redacted = Redactor::for_secrets(&[SECRET]).redact_string(blob.clone());
            assert!(
                redacted.contains(REDACTED),
                "prefix {prefix:?}: {blob} -> {redacted}"
            );
            // At least 24 of the secret's ~26 base64 characters are gone.
            assert!(
                redacted.len() + 24 <= blob.len() + REDACTED.len(),
                "prefix {prefix:?}"
            );
        }
    }

    #[test]
    fn basic_auth_header_and_password_alone() {
        let credential = Credential {
            provider: "custom_api".into(),
            kind: CredentialKind::Basic,
            secret: crate::Secret::new("alice:s3cret-pw"),
            origin: None,
            integration: None,
            header_name: None,
        };
        let redactor = Redactor::for_credentials(&[credential]);
        let header = format!("Basic {}", STANDARD.encode("alice:s3cret-pw"));
        assert_eq!(redactor.redact_str(&header), "Basic [redacted]");
        assert_eq!(redactor.redact_str("pw=s3cret-pw"), "pw=[redacted]");
        assert_eq!(redactor.redact_str("user alice"), "user alice");
    }

    #[test]
    fn table() {
        let cases: &[(&[&str], &str, &str)] = &[
            (&["abcd"], "xxabcdxx", "xx[redacted]xx"),
            (&["abcd"], "abcdabcd", "[redacted][redacted]"),
            (
                &["abc"],
                "abc is too short to redact",
                "abc is too short to redact",
            ),
            (
                &[""],
                "empty secrets redact nothing",
                "empty secrets redact nothing",
            ),
            (&[], "no secrets", "no secrets"),
            (&["token-1234"], "Bearer token-1234", "Bearer [redacted]"),
            (&["token-1234"], "746f6b656e2d31323334", "[redacted]"),
            (&["token-1234"], "dG9rZW4tMTIzNA==", "[redacted]"),
            (&["token-1234"], "dG9rZW4tMTIzNA", "[redacted]"),
            (&["a b&c=d"], "q=a+b%26c%3Dd", "q=[redacted]"),
            (&["a b&c=d"], "q=a%20b%26c%3dd", "q=[redacted]"),
            (&["päss-wörd"], "p\\u00e4ss-w\\u00f6rd", "[redacted]"),
            (
                &["with\"quote"],
                "{\"k\":\"with\\\"quote\"}",
                "{\"k\":\"[redacted]\"}",
            ),
            (
                &["one1", "two22"],
                "one1 and two22",
                "[redacted] and [redacted]",
            ),
            (&["unrelated"], "nothing to see", "nothing to see"),
        ];
        for (secrets, text, expect) in cases {
            check(secrets, text, expect);
        }
    }

    #[test]
    fn values_and_keys_are_walked() {
        let redactor = Redactor::for_secrets(&["s3cr3t"]);
        let mut value = serde_json::json!({
            "echo": {"authorization": "Bearer s3cr3t", "list": ["x", "czNjcjN0"]},
            "s3cr3t": 1,
            "n": 5,
        });
        redactor.redact_value(&mut value);
        assert_eq!(
            value,
            serde_json::json!({
                "echo": {"authorization": "Bearer [redacted]", "list": ["x", "[redacted]"]},
                "[redacted]": 1,
                "n": 5,
            })
        );
    }

    #[test]
    fn colliding_redacted_keys_keep_both_values() {
        let redactor = Redactor::for_secrets(&["s3cr3t"]);
        let mut value = serde_json::json!({"s3cr3t": 1, "[redacted]": 2});
        redactor.redact_value(&mut value);
        let map = value.as_object().map(|m| m.len());
        assert_eq!(map, Some(2));
        assert!(!value.to_string().contains("s3cr3t"));
    }

    #[test]
    fn deep_nesting_does_not_overflow() {
        let redactor = Redactor::for_secrets(&["s3cr3t"]);
        let mut value = Value::String("s3cr3t".into());
        for _ in 0..100_000 {
            value = Value::Array(vec![value]);
        }
        redactor.redact_value(&mut value);
        let mut inner = &value;
        while let Value::Array(items) = inner {
            inner = &items[0];
        }
        assert_eq!(inner, &Value::String(REDACTED.into()));
        // Dropping a value this deep recurses inside serde_json: take it apart by hand.
        let mut next = Some(value);
        while let Some(Value::Array(mut items)) = next {
            next = items.pop();
        }
    }

    #[test]
    fn partial_tail_is_stripped() {
        let redactor = Redactor::for_secrets(&["supersecret"]);
        let mut text = "preview ends in super".to_owned();
        redactor.strip_partial_tail(&mut text);
        assert_eq!(text, "preview ends in ");
        let mut clean = "no secret here".to_owned();
        redactor.strip_partial_tail(&mut clean);
        assert_eq!(clean, "no secret here");
    }

    #[test]
    fn empty_redactor_borrows() {
        let redactor = Redactor::for_secrets(&[]);
        assert!(redactor.is_empty());
        assert!(matches!(redactor.redact_str("anything"), Cow::Borrowed(_)));
    }
}
