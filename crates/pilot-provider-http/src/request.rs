//! What `webhook` and `custom_api` share: reading their params strictly (an unknown param, a
//! wrong type or an unsupported method is a permanent error naming the param), encoding the
//! body, sending through the guarded client with the step's `Idempotency-Key`, and shaping the
//! response into the step's output `{status, headers, body}`.
//!
//! Body encoding: an absent or `null` body sends none; a string is sent as it is, as
//! `text/plain; charset=utf-8`; any other JSON value is sent as compact JSON, as
//! `application/json`. A `Content-Type` in the step's headers overrides either default (so a
//! string holding rendered JSON can be sent as `application/json`).

use bytes::Bytes;
use pilot_registry::{
    Method, OutboundRequest, OutboundResponse, ProviderContext, ProviderError, ProviderOutput,
    classify_status,
};
use serde_json::{Map, Value, json};

/// The methods both providers accept.
pub(crate) const METHODS: &str = "GET, POST, PUT, PATCH or DELETE";

/// The step's params as an object whose keys are all in `known`.
pub(crate) fn object<'a>(
    params: &'a Value,
    action: &str,
    known: &[&str],
) -> Result<&'a Map<String, Value>, ProviderError> {
    let Some(map) = params.as_object() else {
        return Err(ProviderError::permanent("params must be an object"));
    };
    if let Some(unknown) = map.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(ProviderError::permanent(format!(
            "param '{}' is not a param of {action} (it takes: {})",
            shorten(unknown),
            known.join(", ")
        )));
    }
    Ok(map)
}

/// A string param; `None` when absent or null.
pub(crate) fn string<'a>(
    params: &'a Map<String, Value>,
    name: &str,
) -> Result<Option<&'a str>, ProviderError> {
    match params.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(wrong_type(name, "a string", other)),
    }
}

/// A required string param.
pub(crate) fn required_string<'a>(
    params: &'a Map<String, Value>,
    name: &str,
) -> Result<&'a str, ProviderError> {
    string(params, name)?
        .ok_or_else(|| ProviderError::permanent(format!("param '{name}' is required")))
}

/// The `method` param (case-insensitive), `default` when absent.
pub(crate) fn method(
    params: &Map<String, Value>,
    default: Option<Method>,
) -> Result<Method, ProviderError> {
    let Some(text) = string(params, "method")? else {
        return default.ok_or_else(|| ProviderError::permanent("param 'method' is required"));
    };
    match text.to_ascii_uppercase().as_str() {
        "GET" => Ok(Method::GET),
        "POST" => Ok(Method::POST),
        "PUT" => Ok(Method::PUT),
        "PATCH" => Ok(Method::PATCH),
        "DELETE" => Ok(Method::DELETE),
        _ => Err(ProviderError::permanent(format!(
            "param 'method' must be {METHODS}, got '{}'",
            shorten(text)
        ))),
    }
}

/// The `headers` param: an object whose values are strings, numbers or booleans (null values
/// are left out). Validation of names and values happens in the outbound client.
pub(crate) fn headers(params: &Map<String, Value>) -> Result<Vec<(String, String)>, ProviderError> {
    let map = match params.get("headers") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Object(map)) => map,
        Some(other) => return Err(wrong_type("headers", "an object", other)),
    };
    let mut out = Vec::with_capacity(map.len());
    for (name, value) in map {
        match scalar(value) {
            Ok(Some(text)) => out.push((name.clone(), text)),
            Ok(None) => {}
            Err(kind) => {
                return Err(ProviderError::permanent(format!(
                    "param 'headers': the value of '{}' must be a string, number or boolean, got {kind}",
                    shorten(name)
                )));
            }
        }
    }
    Ok(out)
}

/// A scalar as text: `Ok(None)` for null, `Err(type name)` for arrays and objects.
pub(crate) fn scalar(value: &Value) -> Result<Option<String>, &'static str> {
    match value {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        Value::Bool(b) => Ok(Some(b.to_string())),
        Value::Number(n) => Ok(Some(n.to_string())),
        Value::Array(_) => Err("an array"),
        Value::Object(_) => Err("an object"),
    }
}

/// The encoded `body` param and its default content type.
pub(crate) fn body(params: &Map<String, Value>) -> Option<(Bytes, &'static str)> {
    match params.get("body") {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) => Some((Bytes::from(text.clone()), "text/plain; charset=utf-8")),
        Some(value) => Some((Bytes::from(value.to_string()), "application/json")),
    }
}

/// Everything a request needs besides its URL and credential.
#[derive(Debug, Clone)]
pub(crate) struct Parts {
    pub(crate) method: Method,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Option<(Bytes, &'static str)>,
}

impl Parts {
    /// The outbound request: the headers in order, the body's content type unless the headers
    /// give one, and the step's `Idempotency-Key` (replacing any the headers give).
    pub(crate) fn into_request(self, url: url::Url, ctx: &ProviderContext) -> OutboundRequest {
        let mut headers: Vec<(String, String)> = self
            .headers
            .into_iter()
            .filter(|(name, _)| !name.eq_ignore_ascii_case("idempotency-key"))
            .collect();
        let mut request = OutboundRequest::new(self.method, url);
        if let Some((bytes, content_type)) = self.body {
            if !headers
                .iter()
                .any(|(name, _)| name.eq_ignore_ascii_case("content-type"))
            {
                headers.push(("Content-Type".into(), content_type.into()));
            }
            request.body = Some(bytes);
        }
        headers.push(("Idempotency-Key".into(), ctx.idempotency_key.clone()));
        request.headers = headers;
        request.timeout = ctx.timeout;
        request
    }
}

/// Sends `request` and turns the answer into the step's output; a non-2xx answer is an error
/// (retryable for 408, 429 and 5xx, with the server's Retry-After).
pub(crate) async fn send(
    request: OutboundRequest,
    ctx: &ProviderContext,
) -> Result<ProviderOutput, ProviderError> {
    let method = request.method.clone();
    let response = ctx.http.send(request).await?;
    if let Some(error) = classify_status(&response, &ctx.redactor()) {
        return Err(error);
    }
    Ok(output(&method, response))
}

/// `{status, headers, body}`: headers by lower-case name (repeats joined with ", "); the body
/// parsed when it is JSON (a JSON content type, or none and the bytes parse), else text
/// (invalid UTF-8 replaced), `null` when empty.
fn output(method: &Method, response: OutboundResponse) -> ProviderOutput {
    let mut headers = Map::new();
    for (name, value) in &response.headers {
        match headers.get_mut(name) {
            Some(Value::String(existing)) => {
                existing.push_str(", ");
                existing.push_str(value);
            }
            _ => {
                headers.insert(name.clone(), Value::String(value.clone()));
            }
        }
    }
    let body = body_value(response.header("content-type"), &response.body);
    let host = response.url.host_str().unwrap_or_default().to_owned();
    ProviderOutput {
        output: json!({ "status": response.status, "headers": headers, "body": body }),
        message: Some(format!("{method} {host}: HTTP {}", response.status)),
        metadata: json!({
            "status": response.status,
            "url": response.url.as_str(),
            "bytes": response.body.len(),
        }),
    }
}

fn body_value(content_type: Option<&str>, bytes: &[u8]) -> Value {
    if bytes.is_empty() {
        return Value::Null;
    }
    let json_type = content_type.map(|ct| {
        let essence = ct
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        essence == "application/json" || essence.ends_with("+json")
    });
    if json_type != Some(false)
        && let Ok(value) = serde_json::from_slice(bytes)
    {
        return value;
    }
    Value::String(String::from_utf8_lossy(bytes).into_owned())
}

fn wrong_type(name: &str, expected: &str, got: &Value) -> ProviderError {
    let kind = match got {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    };
    ProviderError::permanent(format!("param '{name}' must be {expected}, got {kind}"))
}

/// A user string cut to a length fit for an error message.
pub(crate) fn shorten(text: &str) -> String {
    const MAX: usize = 64;
    if text.chars().count() <= MAX {
        return text.escape_debug().to_string();
    }
    let head: String = text.chars().take(MAX).collect();
    format!("{}…", head.escape_debug())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_parsed_when_json() {
        let cases: [(Option<&str>, &str, Value); 9] = [
            (Some("application/json"), "{\"a\":1}", json!({"a": 1})),
            (
                Some("application/problem+json; charset=utf-8"),
                "[1,2]",
                json!([1, 2]),
            ),
            (Some("Application/JSON"), "\"s\"", json!("s")),
            (Some("application/json"), "not json", json!("not json")),
            (Some("text/plain"), "{\"a\":1}", json!("{\"a\":1}")),
            (None, "{\"a\":1}", json!({"a": 1})),
            (None, "plain words", json!("plain words")),
            (Some("text/html"), "", Value::Null),
            (
                Some("application/octet-stream"),
                "\u{fffd}ok",
                json!("\u{fffd}ok"),
            ),
        ];
        for (content_type, body, expect) in cases {
            assert_eq!(
                body_value(content_type, body.as_bytes()),
                expect,
                "{content_type:?} {body:?}"
            );
        }
        assert_eq!(body_value(None, b"\xff\xfeab"), json!("\u{fffd}\u{fffd}ab"));
    }

    #[test]
    fn bodies_are_encoded_by_type() {
        let encode = |value: Value| {
            let params = json!({ "body": value });
            body(params.as_object().unwrap())
                .map(|(b, ct)| (String::from_utf8(b.to_vec()).unwrap(), ct))
        };
        assert_eq!(encode(Value::Null), None);
        assert_eq!(
            encode(json!("hi")),
            Some(("hi".into(), "text/plain; charset=utf-8"))
        );
        assert_eq!(
            encode(json!({"a": [1, "x"]})),
            Some(("{\"a\":[1,\"x\"]}".into(), "application/json"))
        );
        assert_eq!(encode(json!(3)), Some(("3".into(), "application/json")));
        assert_eq!(
            encode(json!(false)),
            Some(("false".into(), "application/json"))
        );
    }

    #[test]
    fn params_are_checked() {
        let check = |params: Value, expect: &str| {
            let result =
                object(&params, "webhook.send", &["url", "method", "headers"]).and_then(|map| {
                    method(map, None)?;
                    headers(map)?;
                    Ok(())
                });
            match result {
                Err(e) => assert!(
                    e.to_string().contains(expect) && !e.is_retryable(),
                    "{params}: {e}"
                ),
                Ok(()) => assert_eq!(expect, "", "{params}"),
            }
        };
        check(json!({"method": "post"}), "");
        check(
            json!({"method": "Delete", "headers": {"a": 1, "b": true, "c": null}}),
            "",
        );
        check(json!([]), "params must be an object");
        check(
            json!({"method": "POST", "header": {}}),
            "param 'header' is not a param of webhook.send",
        );
        check(json!({}), "param 'method' is required");
        check(
            json!({"method": "TRACE"}),
            "must be GET, POST, PUT, PATCH or DELETE, got 'TRACE'",
        );
        check(json!({"method": "CONNECT"}), "got 'CONNECT'");
        check(
            json!({"method": 5}),
            "param 'method' must be a string, got a number",
        );
        check(
            json!({"method": "GET", "headers": []}),
            "param 'headers' must be an object, got an array",
        );
        check(
            json!({"method": "GET", "headers": {"x": {"y": 1}}}),
            "the value of 'x' must be a string",
        );
        check(json!({"method": "GET", &"k".repeat(200): 1}), "…");
    }
}
