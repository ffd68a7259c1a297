//! The one HTTP error type of Pilot, and the policy that maps every failure to a status and a
//! stable code.
//!
//! # Policy
//!
//! Every error response has the same shape:
//!
//! ```json
//! {"error": {"code": "validation_failed", "message": "step 'fetch', params.url: required param missing", "details": {...}}}
//! ```
//!
//! `code` is stable (clients match on it), `message` is a sentence for people, `details` is an
//! object (or `null`) whose `field` member, when present, names the part of the request at fault
//! (`steps[0].params.url`, `limit`, `cron`...).
//!
//! | status | code | when |
//! |---|---|---|
//! | 400 | `invalid_json`, `invalid_utf8`, `nul_in_text`, `too_deep`, `invalid_field` | the body is not the JSON the route takes; the message names the problem and `details.field` the path |
//! | 400 | `validation_failed` | the JSON is well formed but its content is not acceptable (a plan, a cron expression, a URL...); `details.errors` lists every problem |
//! | 400 | `invalid_query`, `invalid_cursor` | a query parameter is unknown, repeated, out of range or malformed |
//! | 401 | `unauthorized` | a missing, malformed, unknown or revoked token: one body for all, so the answer says nothing about which |
//! | 404 | `not_found` | no such route, or no such object *for the caller*: another user's object, a random id and a malformed id get the same body |
//! | 405 | `method_not_allowed` | the path exists with other methods (listed in `Allow`) |
//! | 409 | `conflict` | the change conflicts with the current state (a taken name, a finished run) |
//! | 413 | `payload_too_large` | the body exceeds the configured limit (checked before and while reading it) |
//! | 415 | `unsupported_media_type` | a body that is not `application/json` |
//! | 429 | `auth_throttled`, `rate_limited` | too many failed authentications from one address (or with one token prefix), too many requests by one user, or too many calls of one inbound webhook; `Retry-After` says when to try again |
//! | 422 | `unprocessable` | a well-formed request the object's state cannot serve: scheduling a plan that has no cron trigger; generating a plan without a key stored for the chosen provider (`details.field` = `provider`) or when the model's plan is still invalid after a second attempt (`details.field` = `prompt`, with `details.errors` and `details.draft`) |
//! | 502 | `model_failed` | `POST /api/plans/generate`: the model call failed (transport, vendor refusal, an answer that is not JSON in JSON mode); `details.retryable` says whether trying again may help |
//! | 503 | `database_unavailable` | the database cannot be reached; the request changed nothing and may be retried |
//! | 503 | `queue_full` | an async submission while the run queue is over the server's limit; `Retry-After` says when to try again |
//! | 500 | `internal` | a bug or a corrupt stored value; never caused by request input. The cause is logged, the body says only that it happened |
//!
//! A 4xx changes nothing: handlers validate everything before their first write, and each
//! write is one storage call (one transaction). Messages never contain secrets: storage and the
//! engine keep secrets out of their errors, and this module adds only what the request said.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use pilot_core::ValidationError;
use pilot_cron::CronError;
use pilot_storage::StorageError;
use serde::Serialize;
use serde_json::{Value, json};

/// An error answered to an HTTP request: a status, a stable code, a message and details.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    details: Value,
    allow: Option<String>,
    /// `Retry-After` and `RateLimit-*` headers (boxed: most errors have none).
    later: Option<Box<Later>>,
}

/// When to try again: seconds for `Retry-After`, and `RateLimit-Limit`, `-Remaining` and
/// `-Reset` when a budget refused the request.
#[derive(Debug, Clone, PartialEq)]
struct Later {
    retry_after: u64,
    rate: Option<(u32, u32, u64)>,
}

impl ApiError {
    /// An error with a status, a code and a message, without details.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: Value::Null,
            allow: None,
            later: None,
        }
    }

    /// The same error with `details` set.
    pub fn with_details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }

    /// A 400 naming the part of the request at fault in `details.field`.
    pub fn field(code: &'static str, field: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message).with_details(json!({ "field": field }))
    }

    /// A 400 `validation_failed` about one field.
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        Self::new(
            StatusCode::BAD_REQUEST,
            "validation_failed",
            format!("{field}: {message}"),
        )
        .with_details(json!({
            "field": field,
            "errors": [{ "step": null, "field": field, "message": message }],
        }))
    }

    /// A 400 `validation_failed` listing every problem a validation found; the first one is the
    /// message and its field is `details.field`, as a path into the request: `prefix` (e.g.
    /// `plan.` when the plan is nested) then `steps[<index>].<field>`, the index found from the
    /// step's id in `step_ids`.
    pub fn validation(errors: &[ValidationError], prefix: &str, step_ids: &[&str]) -> Self {
        // Validation reports steps in order, so a label is looked up from the last step
        // reported on: a duplicate id then names the later step, not the first.
        let mut floor = 0;
        let fields: Vec<Option<String>> = errors
            .iter()
            .map(|e| qualified_field(e, prefix, step_ids, &mut floor))
            .collect();
        let listed: Vec<Value> = errors
            .iter()
            .zip(&fields)
            .map(|(e, field)| json!({ "step": e.step, "field": field, "message": e.message }))
            .collect();
        let first = errors.first();
        let message = match first {
            Some(e) if errors.len() > 1 => format!("{e} (and {} more problems)", errors.len() - 1),
            Some(e) => e.to_string(),
            None => "the request is invalid".to_owned(),
        };
        let field = fields.first().cloned().flatten();
        Self::new(StatusCode::BAD_REQUEST, "validation_failed", message)
            .with_details(json!({ "field": field, "errors": listed }))
    }

    /// The one 401 answer, the same for a missing, malformed, unknown or revoked token.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid API token is required: send `Authorization: Bearer <token>`",
        )
    }

    /// The one 404 answer, the same for a missing object, another user's object and a
    /// malformed id.
    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "not found")
    }

    /// A 405 listing the methods the path takes.
    pub fn method_not_allowed(allowed: &[&str]) -> Self {
        let allow = allowed.join(", ");
        let mut e = Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("this path takes {allow}"),
        )
        .with_details(json!({ "allowed": allowed }));
        e.allow = Some(allow);
        e
    }

    /// A 409.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// A 413 for a body over `limit` bytes.
    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the request body exceeds the limit of {limit} bytes"),
        )
        .with_details(json!({ "limit": limit }))
    }

    /// A 415.
    pub fn unsupported_media_type(found: &str) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("the body must be JSON (Content-Type: application/json); found '{found}'"),
        )
        .with_details(json!({ "field": "content-type" }))
    }

    /// A 422.
    pub fn unprocessable(field: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "unprocessable", message)
            .with_details(json!({ "field": field }))
    }

    /// A 429: too many requests; retry after `seconds`.
    pub(crate) fn too_many(code: &'static str, message: impl Into<String>, seconds: u64) -> Self {
        let mut error = Self::new(StatusCode::TOO_MANY_REQUESTS, code, message);
        error.later = Some(Box::new(Later {
            retry_after: seconds.max(1),
            rate: None,
        }));
        error
    }

    /// The same error with `RateLimit-*` headers: the limit, what is left, seconds to reset.
    pub(crate) fn with_rate(mut self, limit: u32, remaining: u32, reset: u64) -> Self {
        let later = self.later.get_or_insert_with(|| {
            Box::new(Later {
                retry_after: reset.max(1),
                rate: None,
            })
        });
        later.rate = Some((limit, remaining, reset));
        self
    }

    /// A 503 for an async submission while the queue holds `max` runs or more.
    pub fn queue_full(max: u64) -> Self {
        let mut error = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "queue_full",
            format!(
                "the run queue holds {max} runs or more (the server's limit); nothing was queued, \
                 retry after the Retry-After delay"
            ),
        );
        error.later = Some(Box::new(Later {
            retry_after: 5,
            rate: None,
        }));
        error
    }

    /// A 503: the database cannot be reached.
    pub fn unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "database_unavailable",
            "the database is unavailable; nothing was changed, retry later",
        )
    }

    /// A 500 for a bug or a corrupt stored value. `cause` is logged, never answered.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error answering a request");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "an internal error occurred; it has been logged",
        )
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The stable code.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The details (`null` when there are none).
    pub fn details(&self) -> &Value {
        &self.details
    }
}

fn qualified_field(
    e: &ValidationError,
    prefix: &str,
    step_ids: &[&str],
    floor: &mut usize,
) -> Option<String> {
    // A duplicate id is reported (first) on its later occurrence.
    let duplicate = e.field.as_deref() == Some("id") && e.message.starts_with("duplicate step id");
    let mut index = |label: &str| -> String {
        // Validation labels a step by its id, or by `#<index>` when the id itself is invalid.
        let found = match label.strip_prefix('#') {
            Some(n) => n.parse::<usize>().ok(),
            None => {
                let mut at = step_ids
                    .iter()
                    .enumerate()
                    .skip(*floor)
                    .filter(|(_, id)| **id == label)
                    .map(|(i, _)| i);
                let first = at.next();
                if duplicate {
                    at.next().or(first)
                } else {
                    first
                }
            }
        };
        match found {
            Some(i) => {
                *floor = i;
                i.to_string()
            }
            None => label.to_owned(),
        }
    };
    let field = match (&e.step, &e.field) {
        (Some(step), Some(field)) => format!("steps[{}].{field}", index(step)),
        (Some(step), None) => format!("steps[{}]", index(step)),
        (None, Some(field)) => field.clone(),
        (None, None) => "steps".to_owned(),
    };
    Some(format!("{prefix}{field}"))
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    code: &'a str,
    message: &'a str,
    details: &'a Value,
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        if let Some(allow) = &self.allow
            && let Ok(value) = HeaderValue::from_str(allow)
        {
            response.insert_header((header::ALLOW, value));
        }
        if let Some(later) = &self.later {
            response.insert_header((header::RETRY_AFTER, later.retry_after.to_string()));
            if let Some((limit, remaining, reset)) = later.rate {
                response.insert_header(("RateLimit-Limit", limit.to_string()));
                response.insert_header(("RateLimit-Remaining", remaining.to_string()));
                response.insert_header(("RateLimit-Reset", reset.to_string()));
            }
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
        }
        response.json(Body {
            error: Inner {
                code: self.code,
                message: &self.message,
                details: &self.details,
            },
        })
    }
}

impl From<pilot_scheduler::SubmitError> for ApiError {
    fn from(e: pilot_scheduler::SubmitError) -> Self {
        use pilot_scheduler::SubmitError;
        match e {
            SubmitError::PlanNotFound => Self::not_found(),
            // A paused plan does not run: on demand or from its webhooks (409), and its
            // schedule skips its ticks.
            SubmitError::Paused { plan_id, name } => Self::conflict(format!(
                "plan '{name}' is paused: it does not run until its status is set to active \
                 again (PUT /api/plans/{plan_id})"
            )),
            SubmitError::QueueFull { max } => Self::queue_full(max),
            SubmitError::Storage(e) => e.into(),
            other => Self::internal(&other),
        }
    }
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::Unavailable(cause) => {
                tracing::warn!(error = %cause, "database unavailable");
                Self::unavailable()
            }
            StorageError::NotFound => Self::not_found(),
            StorageError::Conflict(message) => Self::conflict(message),
            StorageError::InvalidCursor => Self::field(
                "invalid_cursor",
                "cursor",
                "cursor: not a cursor this list returned; start again without one",
            ),
            StorageError::InvalidInput(message) => {
                Self::new(StatusCode::BAD_REQUEST, "validation_failed", message)
            }
            other => Self::internal(&other),
        }
    }
}

impl From<CronError> for ApiError {
    fn from(e: CronError) -> Self {
        let field = match e {
            CronError::UnknownTimeZone(_) => "timezone",
            _ => "cron",
        };
        Self::invalid(field, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use actix_web::body::to_bytes;

    use super::*;

    async fn body_of(e: &ApiError) -> Value {
        let bytes = to_bytes(e.error_response().into_body()).await.unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[actix_web::test]
    async fn every_error_has_the_one_shape() {
        let cases = [
            ApiError::unauthorized(),
            ApiError::not_found(),
            ApiError::method_not_allowed(&["GET", "POST"]),
            ApiError::payload_too_large(10),
            ApiError::unsupported_media_type("text/plain"),
            ApiError::unavailable(),
            ApiError::invalid("name", "too long"),
        ];
        for e in cases {
            let body = body_of(&e).await;
            let error = body["error"].as_object().unwrap();
            assert_eq!(error.len(), 3, "{body}");
            assert_eq!(error["code"], e.code());
            assert!(error["message"].is_string());
            assert!(error.contains_key("details"));
        }
    }

    #[test]
    fn storage_errors_map_to_their_statuses() {
        let check = |e: StorageError, status: u16, code: &str| {
            let api = ApiError::from(e);
            assert_eq!((api.status().as_u16(), api.code()), (status, code));
        };
        check(
            StorageError::Unavailable("down".into()),
            503,
            "database_unavailable",
        );
        check(StorageError::NotFound, 404, "not_found");
        check(StorageError::Conflict("taken".into()), 409, "conflict");
        check(StorageError::InvalidCursor, 400, "invalid_cursor");
        check(StorageError::Corrupt("bad".into()), 500, "internal");
    }

    #[test]
    fn validation_names_step_and_field() {
        let errors = vec![
            ValidationError::step("fetch", "params.url", "required param missing"),
            ValidationError::plan("a plan needs at least one step"),
        ];
        let e = ApiError::validation(&errors, "", &["first", "fetch"]);
        assert_eq!(e.status().as_u16(), 400);
        assert_eq!(e.details()["field"], "steps[1].params.url");
        assert!(e.message().contains("step 'fetch', params.url"));
        assert_eq!(e.details()["errors"].as_array().unwrap().len(), 2);

        let duplicate = vec![ValidationError::step("a", "id", "duplicate step id 'a'")];
        let e = ApiError::validation(&duplicate, "", &["x", "a", "a"]);
        assert_eq!(e.details()["field"], "steps[2].id");
        let errors = vec![
            ValidationError::step("a", "params.url", "required"),
            ValidationError::step("a", "id", "duplicate step id 'a'"),
        ];
        let e = ApiError::validation(&errors, "", &["a", "b", "a"]);
        assert_eq!(e.details()["errors"][0]["field"], "steps[0].params.url");
        assert_eq!(e.details()["errors"][1]["field"], "steps[2].id");
    }

    #[test]
    fn cron_errors_name_cron_or_timezone() {
        let e = ApiError::from(CronError::UnknownTimeZone("Mars/Base".into()));
        assert_eq!(e.details()["field"], "timezone");
        let e = ApiError::from(CronError::Empty);
        assert_eq!(e.details()["field"], "cron");
    }
}
