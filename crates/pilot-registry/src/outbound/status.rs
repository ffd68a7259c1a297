//! What a non-2xx response means for the engine's retries: 408, 429 and 5xx
//! may succeed later, so they are retryable and carry the server's `Retry-After` (seconds or an
//! HTTP date); every other status is permanent. Messages name the status and a short excerpt of
//! the body, so a failed step says why without storing the whole answer.

use std::time::{Duration, SystemTime};

use pilot_core::redact::Redactor;

use super::OutboundResponse;
use crate::ProviderError;

/// Characters of the response body quoted in an error message at most.
const EXCERPT_CHARS: usize = 200;

/// The longest `Retry-After` honoured; the engine caps it again by the step's remaining time.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 60 * 60);

/// Maps a non-2xx response to the error the engine's retries follow: 408, 429 and 5xx are
/// retryable (honouring `Retry-After`, seconds or an HTTP date), other statuses permanent.
/// `None` for 2xx. The body excerpt in the message is redacted with `redactor` before it is cut,
/// so a secret the server echoes can never survive in part.
pub fn classify_status(response: &OutboundResponse, redactor: &Redactor) -> Option<ProviderError> {
    let status = response.status;
    if (200..300).contains(&status) {
        return None;
    }
    let message = status_message(response, redactor);
    if status == 408 || status == 429 || (500..600).contains(&status) {
        let retry_after = response
            .header("retry-after")
            .and_then(|value| parse_retry_after(value, SystemTime::now()));
        Some(ProviderError::Retryable {
            message,
            retry_after,
        })
    } else {
        Some(ProviderError::Permanent(message))
    }
}

/// `HTTP 503 Service Unavailable: <excerpt>`.
fn status_message(response: &OutboundResponse, redactor: &Redactor) -> String {
    let reason = reqwest::StatusCode::from_u16(response.status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    let mut message = format!("HTTP {} {reason}", response.status)
        .trim_end()
        .to_owned();
    let excerpt = excerpt(&response.body, redactor);
    if !excerpt.is_empty() {
        message.push_str(": ");
        message.push_str(&excerpt);
    }
    message
}

/// The body's first characters, redacted, then whitespace collapsed and control characters
/// dropped. The redactor sees a secret that straddles the cut whole (the head read is longer
/// than the excerpt by the longest needle), and a cut that still ends inside one loses the
/// partial match.
fn excerpt(body: &[u8], redactor: &Redactor) -> String {
    let head = &body[..body
        .len()
        .min(EXCERPT_CHARS * 4 + redactor.max_needle_len())];
    let text = String::from_utf8_lossy(head);
    let text = redactor.redact_str(&text);
    let mut words = text
        .split_whitespace()
        .flat_map(|w| std::iter::once(' ').chain(w.chars().filter(|c| !c.is_control())));
    words.next();
    let mut out: String = words.by_ref().take(EXCERPT_CHARS).collect();
    if words.next().is_some() || head.len() < body.len() {
        redactor.strip_partial_tail(&mut out);
        out.push('…');
    }
    out
}

/// Parses `Retry-After`: delay-seconds or an HTTP date (a date in the past means now).
pub(crate) fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let delay = if let Ok(seconds) = value.parse::<u64>() {
        Duration::from_secs(seconds)
    } else {
        let at = httpdate::parse_http_date(value).ok()?;
        at.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(delay.min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn response(status: u16, headers: &[(&str, &str)], body: &str) -> OutboundResponse {
        OutboundResponse {
            status,
            headers: headers
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect(),
            body: Bytes::from(body.to_owned()),
            url: url::Url::parse("http://127.0.0.1/").unwrap(),
        }
    }

    /// `expect`: `None` (success), `Some((retryable, retry_after_secs, message))`.
    fn check(
        status: u16,
        headers: &[(&str, &str)],
        body: &str,
        expect: Option<(bool, Option<u64>, &str)>,
    ) {
        let got = classify_status(&response(status, headers, body), &Redactor::default());
        match (expect, got) {
            (None, None) => {}
            (Some((retryable, after, message)), Some(err)) => {
                assert_eq!(err.is_retryable(), retryable, "{status}");
                assert_eq!(
                    err.retry_after(),
                    after.map(Duration::from_secs),
                    "{status}"
                );
                assert_eq!(err.to_string(), message, "{status}");
            }
            (expect, got) => panic!("{status}: expected {expect:?}, got {got:?}"),
        }
    }

    #[test]
    fn status_table() {
        check(200, &[], "ok", None);
        check(201, &[], "", None);
        check(204, &[], "", None);
        check(299, &[], "", None);
        check(
            400,
            &[],
            "{\"error\": \"bad field\"}",
            Some((
                false,
                None,
                "HTTP 400 Bad Request: {\"error\": \"bad field\"}",
            )),
        );
        check(401, &[], "", Some((false, None, "HTTP 401 Unauthorized")));
        check(
            404,
            &[("retry-after", "5")],
            "",
            Some((false, None, "HTTP 404 Not Found")),
        );
        check(304, &[], "", Some((false, None, "HTTP 304 Not Modified")));
        check(302, &[], "", Some((false, None, "HTTP 302 Found")));
        check(408, &[], "", Some((true, None, "HTTP 408 Request Timeout")));
        check(
            429,
            &[("retry-after", "7")],
            "slow down",
            Some((true, Some(7), "HTTP 429 Too Many Requests: slow down")),
        );
        check(
            429,
            &[("retry-after", "soon")],
            "",
            Some((true, None, "HTTP 429 Too Many Requests")),
        );
        check(
            500,
            &[],
            "  boom\n\n at line 3 ",
            Some((true, None, "HTTP 500 Internal Server Error: boom at line 3")),
        );
        check(
            503,
            &[("retry-after", " 120 ")],
            "",
            Some((true, Some(120), "HTTP 503 Service Unavailable")),
        );
        check(599, &[], "", Some((true, None, "HTTP 599")));
        check(
            503,
            &[("retry-after", "99999999999999")],
            "",
            Some((true, Some(86_400), "HTTP 503 Service Unavailable")),
        );
    }

    #[test]
    fn long_bodies_are_cut() {
        let body = "x".repeat(10_000);
        let err = classify_status(&response(502, &[], &body), &Redactor::default()).unwrap();
        let message = err.to_string();
        assert!(
            message.starts_with("HTTP 502 Bad Gateway: xxx"),
            "{message}"
        );
        assert!(message.ends_with('…'));
        assert!(message.chars().count() < 250, "{}", message.len());
        let binary = classify_status(
            &response(500, &[], "\u{0}\u{1}ab\u{7}c"),
            &Redactor::default(),
        )
        .unwrap();
        assert_eq!(binary.to_string(), "HTTP 500 Internal Server Error: abc");
    }

    /// A secret the server echoes is redacted before the excerpt is cut, wherever it sits
    /// relative to the cut: no prefix of it survives.
    #[test]
    fn excerpts_are_redacted_before_the_cut() {
        let secret = "sk-live-0123456789abcdefghijklmn";
        let redactor = Redactor::for_secrets(&[secret]);
        for lead in [0, 150, 169, 180, 190, 199, 200, 240] {
            let body = format!("{}{secret} trailing words", "a".repeat(lead));
            let err = classify_status(&response(500, &[], &body), &redactor).unwrap();
            let message = err.to_string();
            for k in 4..=secret.len() {
                assert!(
                    !message.contains(&secret[..k]),
                    "lead {lead}: {k} characters of the secret in {message}"
                );
            }
            if lead + secret.len() < 200 {
                assert!(message.contains("[redacted]"), "lead {lead}: {message}");
            }
        }
    }

    #[test]
    fn retry_after_dates() {
        let now = httpdate::parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT").unwrap();
        let cases = [
            ("Wed, 21 Oct 2015 07:28:30 GMT", Some(30)),
            ("Wednesday, 21-Oct-15 07:29:00 GMT", Some(60)),
            ("Wed Oct 21 07:28:10 2015", Some(10)),
            ("Wed, 21 Oct 2015 07:00:00 GMT", Some(0)),
            ("0", Some(0)),
            ("45", Some(45)),
            ("-5", None),
            ("1.5", None),
            ("", None),
            ("tomorrow", None),
        ];
        for (value, expect) in cases {
            assert_eq!(
                parse_retry_after(value, now),
                expect.map(Duration::from_secs),
                "{value:?}"
            );
        }
    }
}
