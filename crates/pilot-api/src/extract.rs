//! Reading requests: the caller's identity, JSON bodies, query strings and path ids, each
//! failing with an [`ApiError`] that names the problem.
//!
//! Handlers authenticate first and read the body second ([`Caller`] is an extractor, the body is
//! taken raw as a [`Body`] and parsed by the handler), so an anonymous request with a broken
//! body gets 401, never a 400 that would confirm the route's shape. Bodies are parsed by code
//! that checks what serde alone would not: the content type (415), the size while streaming
//! (413), UTF-8, NUL characters in text and nesting depth, before serde_path_to_error names the
//! field a type or unknown-field error is about.

use std::collections::HashMap;
use std::future::{Ready, ready};
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::web::{Bytes, BytesMut, Data};
use actix_web::{FromRequest, HttpMessage as _, HttpRequest};
use futures_util::StreamExt as _;
use pilot_core::UserId;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::{ApiError, AppState};

/// The deepest nesting of arrays and objects a body may have.
pub(crate) const MAX_JSON_DEPTH: usize = 64;

/// The authenticated caller. Extract it first in every authenticated handler.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub(crate) user: UserId,
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let token = bearer_token(req);
        let state = req.app_data::<Data<AppState>>().cloned();
        let address = client_address(req);
        let req = req.clone();
        Box::pin(async move {
            let state = state.ok_or_else(|| ApiError::internal(&"AppState is not registered"))?;
            let throttle = state.throttle();
            let Some(token) = token else {
                throttle.auth_failed(&address, None);
                return Err(ApiError::unauthorized());
            };
            if let Some(seconds) = throttle.auth_refused(&address, &token) {
                return Err(ApiError::too_many(
                    "auth_throttled",
                    "too many failed authentication attempts from this address; retry later",
                    seconds,
                ));
            }
            let Some(user) = state.db().authenticate(&token).await? else {
                throttle.auth_failed(&address, Some(&token));
                return Err(ApiError::unauthorized());
            };
            throttle.auth_succeeded(&token);
            let decision = throttle.request(user.as_str());
            req.extensions_mut().insert(decision);
            if !decision.allowed {
                return Err(ApiError::too_many(
                    "rate_limited",
                    format!(
                        "more than {} requests in a minute; retry after the Retry-After delay",
                        decision.limit
                    ),
                    decision.reset,
                )
                .with_rate(decision.limit, decision.remaining, decision.reset));
            }
            Ok(Caller { user })
        })
    }
}

/// The client's address as the failure budget knows it: the connection's peer (forwarding
/// headers are not trusted; behind a proxy every client shares the proxy's budget).
fn client_address(req: &HttpRequest) -> String {
    req.peer_addr()
        .map_or_else(|| "unknown".to_owned(), |addr| addr.ip().to_string())
}

/// The token of an `Authorization: Bearer <token>` header, if the header has that form.
fn bearer_token(req: &HttpRequest) -> Option<String> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = token.trim();
    (!token.is_empty()).then(|| token.to_owned())
}

/// The raw request body, read and parsed by the handler after authentication.
pub(crate) struct Body {
    payload: Payload,
}

impl FromRequest for Body {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(_: &HttpRequest, payload: &mut Payload) -> Self::Future {
        ready(Ok(Body {
            payload: payload.take(),
        }))
    }
}

/// The extractor of routes that take no body (cancel, unschedule, issue a hook token): a
/// request with one, of any content type, is refused with 400 `unexpected_body`, so a client
/// that meant to send something learns that nothing of it is read.
#[derive(Debug)]
pub(crate) struct NoBody;

impl FromRequest for NoBody {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let chunked = req.headers().contains_key(header::TRANSFER_ENCODING);
        ready(match declared_length(req) {
            Err(e) => Err(e),
            Ok(Some(0)) | Ok(None) if !chunked => Ok(NoBody),
            Ok(_) => Err(ApiError::new(
                actix_web::http::StatusCode::BAD_REQUEST,
                "unexpected_body",
                "this request takes no body; send it without one",
            )
            .with_details(json!({ "field": "body" }))),
        })
    }
}

impl Body {
    /// Parses a required JSON body into `T`.
    pub(crate) async fn json<T: DeserializeOwned>(self, req: &HttpRequest) -> Result<T, ApiError> {
        match self.optional_json(req).await? {
            Some(value) => Ok(value),
            None => Err(ApiError::new(
                actix_web::http::StatusCode::BAD_REQUEST,
                "invalid_json",
                "this request needs a JSON body",
            )
            .with_details(json!({ "field": "body" }))),
        }
    }

    /// Parses a JSON body into `T`, or `None` when the request has no body at all.
    pub(crate) async fn optional_json<T: DeserializeOwned>(
        self,
        req: &HttpRequest,
    ) -> Result<Option<T>, ApiError> {
        let limit = body_limit(req);
        let declared = declared_length(req)?;
        if declared.is_some_and(|n| n > limit) {
            return Err(ApiError::payload_too_large(limit));
        }
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap_or("(not text)").to_owned());
        let bytes = read_limited(self.payload, limit).await?;
        if bytes.is_empty() {
            return Ok(None);
        }
        check_content_type(content_type.as_deref())?;
        // Request types are objects; serde would also take a struct written as an array.
        if let Ok(text) = std::str::from_utf8(&bytes)
            && !text.trim_start().starts_with('{')
        {
            scan(text)?;
            return Err(ApiError::field(
                "invalid_field",
                "body",
                "the body must be a JSON object",
            ));
        }
        parse_json(&bytes).map(Some)
    }

    /// Reads the body (within the size limit) without interpreting it.
    pub(crate) async fn bytes(self, req: &HttpRequest) -> Result<Bytes, ApiError> {
        let limit = body_limit(req);
        if declared_length(req)?.is_some_and(|n| n > limit) {
            return Err(ApiError::payload_too_large(limit));
        }
        read_limited(self.payload, limit).await
    }
}

fn body_limit(req: &HttpRequest) -> usize {
    req.app_data::<Data<AppState>>()
        .map(|s| s.settings().body_limit)
        .unwrap_or(crate::state::DEFAULT_BODY_LIMIT)
}

fn declared_length(req: &HttpRequest) -> Result<Option<usize>, ApiError> {
    let Some(value) = req.headers().get(header::CONTENT_LENGTH) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|n| Some(usize::try_from(n).unwrap_or(usize::MAX)))
        .ok_or_else(|| {
            ApiError::field(
                "invalid_header",
                "content-length",
                "Content-Length is not a number",
            )
        })
}

async fn read_limited(mut payload: Payload, limit: usize) -> Result<Bytes, ApiError> {
    let mut body = BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::new(
                actix_web::http::StatusCode::BAD_REQUEST,
                "invalid_body",
                format!("the request body could not be read: {e}"),
            )
        })?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::payload_too_large(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// Accepts `application/json` and `application/<anything>+json`, with no charset or UTF-8.
pub(crate) fn check_content_type(value: Option<&str>) -> Result<(), ApiError> {
    let Some(value) = value else {
        return Err(ApiError::unsupported_media_type("(none)"));
    };
    let mut parts = value.split(';');
    let essence = parts.next().unwrap_or("").trim().to_ascii_lowercase();
    let json_type = essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"));
    if !json_type {
        return Err(ApiError::unsupported_media_type(&shown(value)));
    }
    for param in parts {
        let Some((name, charset)) = param.split_once('=') else {
            continue;
        };
        let charset = charset.trim().trim_matches('"');
        if name.trim().eq_ignore_ascii_case("charset") && !charset.eq_ignore_ascii_case("utf-8") {
            return Err(ApiError::unsupported_media_type(&shown(value)));
        }
    }
    Ok(())
}

/// Parses a JSON document into `T`, naming the problem: invalid UTF-8, a NUL character, too
/// deep nesting, a syntax error, or a field of the wrong type or name.
pub(crate) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        ApiError::field(
            "invalid_utf8",
            "body",
            format!("the body is not valid UTF-8 (at byte {})", e.valid_up_to()),
        )
    })?;
    scan(text)?;
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let value: T = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        json_error(&path, &inner)
    })?;
    deserializer.end().map_err(|e| json_error(".", &e))?;
    Ok(value)
}

fn json_error(path: &str, e: &serde_json::Error) -> ApiError {
    use serde_json::error::Category;
    let text = strip_position(e);
    // serde_path_to_error's path ends with the field at fault (an unknown field included),
    // except for a missing field, which only the message names.
    let mut field = if path == "." || path.is_empty() {
        String::new()
    } else {
        path.to_owned()
    };
    if let Some(name) = text
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split('`').next())
    {
        field = if field.is_empty() {
            name.to_owned()
        } else {
            format!("{field}.{name}")
        };
    }
    if field.is_empty() {
        field = "body".to_owned();
    }
    let field = field.as_str();
    let (code, message) = match e.classify() {
        Category::Data => ("invalid_field", format!("{field}: {text}")),
        Category::Syntax | Category::Eof | Category::Io => {
            ("invalid_json", format!("malformed JSON: {e}"))
        }
    };
    ApiError::field(code, field, message).with_details(json!({
        "field": field,
        "line": e.line(),
        "column": e.column(),
    }))
}

/// serde_json's message without its " at line L column C" suffix (the details carry those).
fn strip_position(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.rfind(" at line ") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}

/// One pass over the JSON text, outside and inside strings: rejects nesting deeper than
/// [`MAX_JSON_DEPTH`] and NUL characters (raw, or escaped as `\u0000`), which no text field of
/// Pilot accepts and which PostgreSQL cannot store.
fn scan(text: &str) -> Result<(), ApiError> {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut in_string = false;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == 0 {
            return Err(nul_error(i));
        }
        if in_string {
            match b {
                b'\\' => {
                    if bytes.get(i + 1) == Some(&b'u') && bytes.get(i + 2..i + 6) == Some(b"0000") {
                        return Err(nul_error(i));
                    }
                    i += 2;
                    continue;
                }
                b'"' => in_string = false,
                _ => {}
            }
        } else {
            match b {
                b'"' => in_string = true,
                b'[' | b'{' => {
                    depth += 1;
                    if depth > MAX_JSON_DEPTH {
                        return Err(ApiError::field(
                            "too_deep",
                            "body",
                            format!(
                                "the JSON nests deeper than {MAX_JSON_DEPTH} levels (at byte {i})"
                            ),
                        ));
                    }
                }
                b']' | b'}' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        i += 1;
    }
    Ok(())
}

fn nul_error(at: usize) -> ApiError {
    ApiError::field(
        "nul_in_text",
        "body",
        format!(
            "the body contains a NUL character (at byte {at}); text fields may not contain one"
        ),
    )
}

/// A user-supplied header value cut for an error message.
pub(crate) fn shown(text: &str) -> String {
    let cut: String = text.chars().take(64).collect();
    if cut.len() < text.len() {
        format!("{cut}...")
    } else {
        cut
    }
}

/// A parsed query string: each known parameter at most once, unknown ones refused.
#[derive(Debug, Default)]
pub(crate) struct Query {
    values: HashMap<String, String>,
}

impl Query {
    /// Parses the request's query string, allowing only `allowed` names.
    pub(crate) fn parse(req: &HttpRequest, allowed: &[&str]) -> Result<Self, ApiError> {
        Self::parse_str(req.query_string(), allowed)
    }

    pub(crate) fn parse_str(query: &str, allowed: &[&str]) -> Result<Self, ApiError> {
        let mut values = HashMap::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let name = decode(name, "query")?;
            let value = decode(value, &name)?;
            if !allowed.contains(&name.as_str()) {
                let known = if allowed.is_empty() {
                    "this route takes no query parameters".to_owned()
                } else {
                    format!("this route takes: {}", allowed.join(", "))
                };
                return Err(ApiError::field(
                    "invalid_query",
                    &shown(&name),
                    format!("unknown query parameter '{}'; {known}", shown(&name)),
                ));
            }
            if value.contains('\0') {
                return Err(ApiError::field(
                    "invalid_query",
                    &name,
                    format!("{name}: contains a NUL character"),
                ));
            }
            if values.insert(name.clone(), value).is_some() {
                return Err(ApiError::field(
                    "invalid_query",
                    &name,
                    format!("query parameter '{name}' is given more than once"),
                ));
            }
        }
        Ok(Self { values })
    }

    /// The value of `name`, if given (an empty value counts as absent).
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.values
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// Whether `name` is in the query with an empty value (`?name=` or `?name`).
    pub(crate) fn is_given_empty(&self, name: &str) -> bool {
        self.values.get(name).is_some_and(String::is_empty)
    }

    /// An integer parameter within `range`, or `default` when absent.
    pub(crate) fn integer(
        &self,
        name: &str,
        range: std::ops::RangeInclusive<u32>,
        default: u32,
    ) -> Result<u32, ApiError> {
        let Some(text) = self.get(name) else {
            return Ok(default);
        };
        match text.parse::<u32>() {
            Ok(n) if range.contains(&n) => Ok(n),
            _ => Err(ApiError::field(
                "invalid_query",
                name,
                format!(
                    "{name} must be an integer from {} to {}; got '{}'",
                    range.start(),
                    range.end(),
                    shown(text)
                ),
            )),
        }
    }

    /// The page this list request asks for: `limit` 1..=200 (default 50) and `cursor`.
    pub(crate) fn page(&self) -> Result<pilot_storage::PageRequest, ApiError> {
        let limit = self.integer("limit", 1..=MAX_LIMIT, DEFAULT_LIMIT)?;
        Ok(match self.get("cursor") {
            Some(cursor) => {
                if cursor.len() > 512 {
                    return Err(ApiError::field(
                        "invalid_cursor",
                        "cursor",
                        "cursor: not a cursor this list returned",
                    ));
                }
                pilot_storage::PageRequest::after(limit, cursor)
            }
            None => pilot_storage::PageRequest::first(limit),
        })
    }
}

/// The largest page a list returns.
pub(crate) const MAX_LIMIT: u32 = 200;
/// The page size when `limit` is absent.
pub(crate) const DEFAULT_LIMIT: u32 = 50;

fn decode(raw: &str, field: &str) -> Result<String, ApiError> {
    let spaced = raw.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| {
            ApiError::field(
                "invalid_query",
                field,
                format!("{field}: not valid UTF-8 after percent-decoding"),
            )
        })
}

/// Whether `text` has the shape of an id Pilot issues (a hyphenated UUID). Anything else is
/// answered 404 without asking the database, like a well-formed id that does not exist.
pub(crate) fn is_id(text: &str) -> bool {
    text.len() == 36
        && text.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

/// The `{name}` path segment as an id, or the one 404.
pub(crate) fn path_id(req: &HttpRequest, name: &str) -> Result<String, ApiError> {
    match req.match_info().get(name) {
        Some(id) if is_id(id) => Ok(id.to_ascii_lowercase()),
        _ => Err(ApiError::not_found()),
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;
    use serde_json::Value;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Sample {
        name: String,
        #[serde(default)]
        items: Vec<Item>,
        #[serde(default)]
        data: Option<Value>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Item {
        n: u32,
    }

    fn check(body: &[u8], code: &str, field: &str) {
        let e = parse_json::<Sample>(body).unwrap_err();
        assert_eq!(e.code(), code, "{}", e.message());
        assert_eq!(e.details()["field"], field, "{}", e.message());
        assert_eq!(e.status().as_u16(), 400);
    }

    #[test]
    fn body_errors_name_the_problem_and_field() {
        check(b"{\"name\": ", "invalid_json", "name");
        check(b"{\"name\": \"a\"} x", "invalid_json", "body");
        check(b"\xff\xfe", "invalid_utf8", "body");
        check(b"{\"name\": \"a\\u0000b\"}", "nul_in_text", "body");
        check(b"{\"name\": \"a\0\"}", "nul_in_text", "body");
        check(b"{\"name\": 5}", "invalid_field", "name");
        check(b"{\"name\": \"a\", \"extra\": 1}", "invalid_field", "extra");
        check(
            b"{\"name\": \"a\", \"items\": [{\"n\": 1, \"m\": 2}]}",
            "invalid_field",
            "items[0].m",
        );
        check(
            b"{\"name\": \"a\", \"items\": [{\"n\": -1}]}",
            "invalid_field",
            "items[0].n",
        );
        check(b"{}", "invalid_field", "name");
        check(b"[]", "invalid_field", "body");
        check(
            b"{\"name\": \"a\", \"items\": [{}]}",
            "invalid_field",
            "items[0].n",
        );
        let deep = format!(
            "{{\"name\":\"a\",\"data\":{}{}}}",
            "[".repeat(70),
            "]".repeat(70)
        );
        check(deep.as_bytes(), "too_deep", "body");
    }

    #[test]
    fn escaped_backslash_before_u0000_text_is_not_nul() {
        let ok: Sample = parse_json(br#"{"name": "a\\u0000"}"#).unwrap();
        assert_eq!(ok.name, "a\\u0000");
    }

    #[test]
    fn depth_limit_counts_only_structure_outside_strings() {
        let text = format!(
            "{{\"name\":\"{}\",\"data\":{}1{}}}",
            "[".repeat(100),
            "[".repeat(60),
            "]".repeat(60)
        );
        assert!(parse_json::<Sample>(text.as_bytes()).is_ok());
    }

    #[test]
    fn content_types() {
        for ok in [
            "application/json",
            "Application/JSON; charset=utf-8",
            "application/merge-patch+json",
        ] {
            assert!(check_content_type(Some(ok)).is_ok(), "{ok}");
        }
        for bad in [
            "text/plain",
            "application/json; charset=latin1",
            "application/x-www-form-urlencoded",
        ] {
            assert_eq!(
                check_content_type(Some(bad)).unwrap_err().status().as_u16(),
                415,
                "{bad}"
            );
        }
        assert_eq!(check_content_type(None).unwrap_err().status().as_u16(), 415);
    }

    #[test]
    fn queries() {
        let q = Query::parse_str("limit=10&cursor=abc%3D", &["limit", "cursor"]).unwrap();
        assert_eq!(
            q.page().unwrap(),
            pilot_storage::PageRequest::after(10, "abc=")
        );
        let check = |query: &str, field: &str| {
            let e = Query::parse_str(query, &["limit", "cursor"])
                .and_then(|q| q.page())
                .unwrap_err();
            assert_eq!(e.details()["field"], field, "{query}: {}", e.message());
        };
        check("limit=0", "limit");
        check("limit=201", "limit");
        check("limit=-1", "limit");
        check("limit=ten", "limit");
        check("limit=1&limit=2", "limit");
        check("bogus=1", "bogus");
        check("cursor=%ff", "cursor");
    }

    #[test]
    fn ids() {
        assert!(is_id("0f8fad5b-d9cb-469f-a165-70867728950e"));
        for bad in [
            "",
            "1",
            "0f8fad5b-d9cb-469f-a165-70867728950",
            "0f8fad5b_d9cb-469f-a165-70867728950e",
            "../../etc/passwd",
        ] {
            assert!(!is_id(bad), "{bad}");
        }
    }
}
