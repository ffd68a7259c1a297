//! The request handlers, one module per area of the API, and what they share: the list
//! envelope and the page a plain list asks for, the caller's plan or the one 404, the answer to
//! a delete, and checks of user-supplied text, names, URLs and headers.
//!
//! Every handler follows one order: authenticate, read and validate everything, then make one
//! storage call that writes. So a 4xx never leaves a change behind.

pub(crate) mod credentials;
pub(crate) mod generate;
pub(crate) mod integrations;
pub(crate) mod logs;
pub(crate) mod plans;
pub(crate) mod runs;
pub(crate) mod schedules;
pub(crate) mod system;

use actix_web::{HttpRequest, HttpResponse};
use pilot_core::PlanId;
use pilot_storage::{Page, PageRequest, PlanRow};
use serde::Serialize;

use crate::extract::{Caller, Query};
use crate::{ApiError, AppState};

/// One page of a list: `{"items": [...], "next_cursor": "..." | null}`.
#[derive(Debug, Serialize)]
pub(crate) struct PageView<T> {
    pub(crate) items: Vec<T>,
    pub(crate) next_cursor: Option<String>,
}

impl<T> PageView<T> {
    pub(crate) fn from_page<R>(page: Page<R>, view: impl Fn(R) -> T) -> Self {
        Self {
            items: page.items.into_iter().map(view).collect(),
            next_cursor: page.next_cursor,
        }
    }
}

/// The page a plain list asks for: `limit` and `cursor`, and no other query parameter.
pub(crate) fn list_page(req: &HttpRequest) -> Result<PageRequest, ApiError> {
    Query::parse(req, &["limit", "cursor"])?.page()
}

/// The caller's plan `id`, or the one 404 (another user's plan is not found either).
pub(crate) async fn caller_plan(
    state: &AppState,
    caller: &Caller,
    id: &PlanId,
) -> Result<PlanRow, ApiError> {
    state
        .db()
        .plan(&caller.user, id)
        .await?
        .ok_or_else(ApiError::not_found)
}

/// The answer to a delete: 204 when something was deleted, otherwise the one 404.
pub(crate) fn deleted(found: bool) -> Result<HttpResponse, ApiError> {
    if found {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(ApiError::not_found())
    }
}

/// Checks a one-line text field: not blank (when `required`), at most `max` characters, and
/// no control characters.
pub(crate) fn check_line(
    field: &str,
    value: &str,
    max: usize,
    required: bool,
) -> Result<(), ApiError> {
    if required && value.trim().is_empty() {
        return Err(ApiError::invalid(field, "must not be empty"));
    }
    if value.chars().count() > max {
        return Err(ApiError::invalid(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            field,
            "must not contain control characters (line breaks, tabs, NUL...)",
        ));
    }
    Ok(())
}

/// Checks a free text field (line breaks and tabs allowed): at most `max` characters, no other
/// control characters.
pub(crate) fn check_text(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    if value.chars().count() > max {
        return Err(ApiError::invalid(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    if value
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err(ApiError::invalid(
            field,
            "must not contain control characters other than line breaks and tabs",
        ));
    }
    Ok(())
}

/// Checks a name users refer to things by: 1 to 64 letters, digits, `_`, `-` or `.`, starting
/// with a letter or digit.
pub(crate) fn check_name(field: &str, value: &str) -> Result<(), ApiError> {
    let ok = !value.is_empty()
        && value.len() <= 64
        && value.as_bytes()[0].is_ascii_alphanumeric()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(
            field,
            "must be 1 to 64 letters, digits, '_', '-' or '.', starting with a letter or digit",
        ))
    }
}

/// Headers a user may not set: the transport owns them.
const FORBIDDEN_HEADERS: [&str; 7] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
    "trailer",
];

/// Checks an HTTP header name: an RFC 9110 token of at most 64 characters that the transport
/// does not own.
pub(crate) fn check_header_name(field: &str, name: &str) -> Result<(), ApiError> {
    let token = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if !token {
        return Err(ApiError::invalid(
            field,
            "is not a valid header name (letters, digits and !#$%&'*+-.^_`|~, at most 64)",
        ));
    }
    if FORBIDDEN_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
        return Err(ApiError::invalid(
            field,
            format!("the header '{name}' is set by Pilot and cannot be configured"),
        ));
    }
    Ok(())
}

/// Checks an HTTP header value: at most 4096 bytes, no CR, LF, NUL or other control character
/// but tab. The value itself is never repeated in the error (it may be a secret).
pub(crate) fn check_header_value(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    if value.len() > max {
        return Err(ApiError::invalid(
            field,
            format!("must be at most {max} bytes"),
        ));
    }
    if value.chars().any(|c| c.is_control() && c != '\t') {
        return Err(ApiError::invalid(
            field,
            "must not contain CR, LF, NUL or other control characters",
        ));
    }
    Ok(())
}

/// Parses a user-supplied base URL or origin: absolute http(s), no userinfo, no query or
/// fragment, and a destination the outbound guard allows.
pub(crate) fn check_url(
    field: &str,
    text: &str,
    outbound: &pilot_registry::OutboundClient,
) -> Result<url::Url, ApiError> {
    if text.len() > 2048 {
        return Err(ApiError::invalid(field, "must be at most 2048 characters"));
    }
    let url = url::Url::parse(text)
        .map_err(|e| ApiError::invalid(field, format!("is not a valid URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ApiError::invalid(field, "must use http or https"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ApiError::invalid(
            field,
            "must not contain a user name or password; store credentials with /api/provider-credentials",
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(ApiError::invalid(
            field,
            "must not have a query or fragment",
        ));
    }
    outbound
        .check_url(&url)
        .map_err(|e| ApiError::invalid(field, e.to_string()))?;
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_checks() {
        assert!(check_header_name("h", "X-Api-Key").is_ok());
        for bad in ["", "X Key", "X:Key", "Host", "content-length", "X\r\nEvil"] {
            assert!(check_header_name("h", bad).is_err(), "{bad:?}");
        }
        assert!(check_header_value("v", "a\tb", 100).is_ok());
        for bad in ["a\r\nb", "a\nb", "a\0b"] {
            let e = check_header_value("v", bad, 100).unwrap_err();
            assert!(!e.message().contains(bad), "the value must not be echoed");
        }
    }

    #[test]
    fn names() {
        assert!(check_name("n", "github-v2.api").is_ok());
        for bad in ["", "-x", "a b", "é", &"a".repeat(65)] {
            assert!(check_name("n", bad).is_err(), "{bad:?}");
        }
    }
}
