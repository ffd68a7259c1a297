//! Request header validation. Header names and values come from users' plans, so they are
//! checked before anything is sent: a name must be an HTTP token, a value may not hold CR, LF,
//! NUL or other control characters (no header or request splitting), and the headers that
//! frame the message or the connection (Host, Content-Length, Transfer-Encoding, Connection and
//! the other hop-by-hop ones) are the client's business, never a plan's. Errors name the header
//! but never repeat its value, which may be secret.

use pilot_core::Secret;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use super::OutboundError;

/// Headers a request may not set.
const FORBIDDEN: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "proxy-authenticate",
    "te",
    "trailer",
    "upgrade",
];

/// Headers that carry credentials; dropped from the plain headers when a redirect leaves the
/// origin, as browsers do.
pub(crate) const SENSITIVE: &[&str] = &["authorization", "cookie", "proxy-authorization"];

/// Headers that describe a body; dropped when a redirect turns the request into a GET.
pub(crate) const BODY_HEADERS: &[&str] = &[
    "content-type",
    "content-encoding",
    "content-language",
    "content-location",
];

/// Validates plain headers into a map (a repeated name adds a value).
pub(crate) fn plain_headers(headers: &[(String, String)]) -> Result<HeaderMap, OutboundError> {
    let mut map = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        let name = header_name(name)?;
        let value = header_value(&name, value.as_bytes())?;
        map.append(name, value);
    }
    Ok(map)
}

/// Validates credential headers into a map of values marked sensitive (so even a debug dump of
/// the request shows no secret).
pub(crate) fn secret_headers(headers: &[(String, Secret)]) -> Result<HeaderMap, OutboundError> {
    let mut map = HeaderMap::with_capacity(headers.len());
    for (name, secret) in headers {
        let name = header_name(name)?;
        let mut value = header_value(&name, secret.expose().as_bytes())?;
        value.set_sensitive(true);
        map.insert(name, value);
    }
    Ok(map)
}

fn header_name(name: &str) -> Result<HeaderName, OutboundError> {
    let printable: String = name
        .chars()
        .take(64)
        .flat_map(char::escape_default)
        .collect();
    let parsed = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
        OutboundError::InvalidHeader(format!("'{printable}' is not a valid header name"))
    })?;
    if FORBIDDEN.contains(&parsed.as_str()) {
        return Err(OutboundError::InvalidHeader(format!(
            "'{printable}' is set by the HTTP client and cannot be given"
        )));
    }
    Ok(parsed)
}

fn header_value(name: &HeaderName, value: &[u8]) -> Result<HeaderValue, OutboundError> {
    if value.iter().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
        return Err(OutboundError::InvalidHeader(format!(
            "the value of '{name}' contains CR, LF or NUL"
        )));
    }
    HeaderValue::from_bytes(value).map_err(|_| {
        OutboundError::InvalidHeader(format!(
            "the value of '{name}' contains a control character"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `expect` is `None` when the header is accepted, else a fragment of the error.
    fn check(name: &str, value: &str, expect: Option<&str>) {
        let got = plain_headers(&[(name.to_owned(), value.to_owned())]);
        match (expect, got) {
            (None, Ok(map)) => assert_eq!(map.len(), 1),
            (Some(fragment), Err(OutboundError::InvalidHeader(message))) => {
                assert!(
                    message.contains(fragment),
                    "{name:?}: '{message}' lacks '{fragment}'"
                );
                assert!(
                    value.len() < 4 || !message.contains(value),
                    "the value leaked: {message}"
                );
            }
            (expect, got) => panic!("{name:?}: {value:?}: expected {expect:?}, got {got:?}"),
        }
    }

    #[test]
    fn header_table() {
        let cases = [
            ("X-Custom", "v", None),
            ("x-api-key", "café ☕", None),
            ("Authorization", "Bearer abc", None),
            ("Idempotency-Key", "run:step", None),
            ("X-Tab", "a\tb", None),
            ("X-Evil", "a\r\nInjected: 1", Some("CR, LF or NUL")),
            ("X-Evil", "a\nb", Some("CR, LF or NUL")),
            ("X-Evil", "a\rb", Some("CR, LF or NUL")),
            ("X-Evil", "a\0b", Some("CR, LF or NUL")),
            ("X-Evil", "a\x07b", Some("control character")),
            ("X-Evil", "a\x7fb", Some("control character")),
            ("X-Evil\r\nInjected", "v", Some("not a valid header name")),
            ("X Space", "v", Some("not a valid header name")),
            ("X:Colon", "v", Some("not a valid header name")),
            ("", "v", Some("not a valid header name")),
            ("Näme", "v", Some("not a valid header name")),
            (
                "Host",
                "evil.test",
                Some("'Host' is set by the HTTP client"),
            ),
            ("content-length", "5", Some("set by the HTTP client")),
            (
                "Transfer-Encoding",
                "chunked",
                Some("set by the HTTP client"),
            ),
            ("Connection", "close", Some("set by the HTTP client")),
            ("Keep-Alive", "timeout=5", Some("set by the HTTP client")),
            ("TE", "trailers", Some("set by the HTTP client")),
            ("Upgrade", "websocket", Some("set by the HTTP client")),
            ("Trailer", "x", Some("set by the HTTP client")),
            (
                "Proxy-Authorization",
                "Basic x",
                Some("set by the HTTP client"),
            ),
        ];
        for (name, value, expect) in cases {
            check(name, value, expect);
        }
    }

    #[test]
    fn secret_header_errors_never_show_the_secret() {
        let err = secret_headers(&[("X-Key".into(), Secret::new("s3cr3t\r\nX: y"))]).unwrap_err();
        assert!(!err.to_string().contains("s3cr3t"), "{err}");
        let map = secret_headers(&[("X-Key".into(), Secret::new("s3cr3t"))]).unwrap();
        assert!(map["x-key"].is_sensitive());
        assert!(!format!("{map:?}").contains("s3cr3t"));
    }
}
