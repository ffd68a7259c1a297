//! Provider credentials: write-only. `POST` stores (encrypted by storage), `GET` says only
//! whether one is configured, its type, binding and dates, `DELETE` removes. Responses are built
//! from [`pilot_storage::CredentialInfo`], a type that cannot hold the secret, and the request
//! type holding the secret has no `Debug` and no `Serialize`, so it cannot reach a log or a
//! response by accident. Error messages never repeat the value.
//!
//! Binding: an `openai`/`groq` key goes only to the operator's base URL, so it
//! takes no origin; a `custom_api` credential is bound to one origin, given directly or through
//! one of the caller's custom integrations.

use actix_web::web::Data;
use actix_web::{HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use pilot_core::{CredentialKind, Secret};
use pilot_storage::{CredentialInfo, NewCredential};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::extract::{Body, Caller, Query, is_id};
use crate::handlers::{check_header_name, check_header_value, check_name, check_url};
use crate::{ApiError, AppState};

/// The longest secret accepted, in bytes.
pub(crate) const MAX_SECRET_BYTES: usize = 16 * 1024;

/// The body of `POST /api/provider-credentials/{provider}`. Deliberately neither `Debug` nor
/// `Serialize`: it holds the secret.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CredentialInput {
    #[serde(rename = "type")]
    kind: CredentialKind,
    value: String,
    #[serde(default)]
    origin: Option<String>,
    #[serde(default)]
    integration: Option<String>,
    #[serde(default)]
    header_name: Option<String>,
    #[serde(default)]
    expires_at: Option<DateTime<Utc>>,
}

/// A stored credential as the API shows it: never the secret.
#[derive(Debug, Serialize)]
pub(crate) struct CredentialView {
    id: String,
    #[serde(rename = "type")]
    kind: CredentialKind,
    origin: Option<String>,
    integration: Option<String>,
    header_name: Option<String>,
    expires_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<CredentialInfo> for CredentialView {
    fn from(info: CredentialInfo) -> Self {
        Self {
            id: info.id,
            kind: info.kind,
            origin: info.origin,
            integration: info.integration,
            header_name: info.header_name,
            expires_at: info.expires_at,
            created_at: info.created_at,
            updated_at: info.updated_at,
        }
    }
}

/// What `GET` answers: whether anything is configured, and what.
#[derive(Debug, Serialize)]
struct StatusView {
    provider: String,
    configured: bool,
    credentials: Vec<CredentialView>,
}

/// The `{provider}` path segment, which must name an installed provider (404 otherwise: the
/// catalogue is public, so the answer may say which providers exist).
fn provider_name(state: &AppState, req: &HttpRequest) -> Result<String, ApiError> {
    let name = req.match_info().get("provider").unwrap_or_default();
    if state.registry().describe(name).is_none() {
        let mut known: Vec<&str> = state.registry().list().map(|d| d.name.as_str()).collect();
        known.sort_unstable();
        return Err(ApiError::new(
            actix_web::http::StatusCode::NOT_FOUND,
            "not_found",
            format!("unknown provider; known providers: {}", known.join(", ")),
        )
        .with_details(json!({ "field": "provider" })));
    }
    Ok(name.to_owned())
}

/// `GET /api/provider-credentials/{provider}`
pub(crate) async fn get(
    state: Data<AppState>,
    caller: Caller,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    Query::parse(&req, &[])?;
    let provider = provider_name(&state, &req)?;
    let infos = state.db().credential_info(&caller.user, &provider).await?;
    Ok(HttpResponse::Ok().json(StatusView {
        configured: !infos.is_empty(),
        credentials: infos.into_iter().map(CredentialView::from).collect(),
        provider,
    }))
}

/// `POST /api/provider-credentials/{provider}`: stores (or replaces, for the same binding) the
/// caller's credential.
pub(crate) async fn put(
    state: Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    body: Body,
) -> Result<HttpResponse, ApiError> {
    let provider = provider_name(&state, &req)?;
    let input: CredentialInput = body.json(&req).await?;
    let Some(description) = state.registry().describe(&provider) else {
        return Err(ApiError::not_found());
    };
    if description.credential_types.is_empty() {
        return Err(ApiError::invalid(
            "provider",
            format!("provider '{provider}' uses no credentials"),
        ));
    }
    if !description.credential_types.contains(&input.kind) {
        let kinds: Vec<&str> = description
            .credential_types
            .iter()
            .map(|k| k.as_str())
            .collect();
        return Err(ApiError::invalid(
            "type",
            format!(
                "provider '{provider}' takes credentials of type {}",
                kinds.join(", ")
            ),
        ));
    }
    if input.value.is_empty() {
        return Err(ApiError::invalid("value", "must not be empty"));
    }
    check_header_value("value", &input.value, MAX_SECRET_BYTES)?;
    if let Some(header) = &input.header_name {
        check_header_name("header_name", header)?;
    }
    let binds_origin = provider == "custom_api";
    if !binds_origin && (input.origin.is_some() || input.integration.is_some()) {
        return Err(ApiError::invalid(
            if input.origin.is_some() {
                "origin"
            } else {
                "integration"
            },
            format!(
                "a '{provider}' credential is sent only to the operator's configured URL and takes no binding"
            ),
        ));
    }
    let mut origin = match &input.origin {
        Some(text) => Some(origin_of(&check_url("origin", text, state.outbound())?)),
        None => None,
    };
    if let Some(name) = &input.integration {
        check_name("integration", name)?;
        let row = state
            .db()
            .integration_by_name(&caller.user, name)
            .await?
            .ok_or_else(|| {
                ApiError::invalid(
                    "integration",
                    format!("you have no custom integration named '{name}'"),
                )
            })?;
        let bound = url::Url::parse(&row.integration.base_url)
            .map(|u| origin_of(&u))
            .map_err(|e| {
                ApiError::internal(&format!("stored integration URL does not parse: {e}"))
            })?;
        if origin.as_ref().is_some_and(|o| *o != bound) {
            return Err(ApiError::invalid(
                "origin",
                "differs from the integration's base URL origin; give one or the other",
            ));
        }
        origin = Some(bound);
    }
    if binds_origin && origin.is_none() {
        return Err(ApiError::invalid(
            "origin",
            "a custom_api credential must be bound to an origin or to an integration",
        ));
    }
    // Shorter secrets could not be told apart from ordinary text, so nothing would redact them.
    let min = pilot_core::redact::MIN_SECRET_LEN;
    if input.value.len() < min {
        return Err(ApiError::invalid(
            "value",
            format!(
                "must be at least {min} bytes long (a shorter secret cannot be kept out of logs)"
            ),
        ));
    }
    if input.kind == CredentialKind::Basic
        && let Some((_, password)) = input.value.split_once(':')
        && password.len() < min
    {
        return Err(ApiError::invalid(
            "value",
            format!(
                "the password of a basic credential (after ':') must be at least {min} bytes long"
            ),
        ));
    }
    if let Some(at) = input.expires_at
        && at <= Utc::now()
    {
        return Err(ApiError::invalid(
            "expires_at",
            "is in the past; give a future time, or leave it out for a credential that does not expire",
        ));
    }
    let credential = NewCredential {
        provider,
        kind: input.kind,
        secret: Secret::new(input.value),
        origin,
        integration: input.integration,
        header_name: input.header_name,
        expires_at: input.expires_at,
    };
    let info = state.db().put_credential(&caller.user, &credential).await?;
    Ok(HttpResponse::Ok().json(CredentialView::from(info)))
}

/// `DELETE /api/provider-credentials/{provider}[?id=]`: removes the caller's credentials for
/// the provider (or the one with `id`); 404 when there was none.
pub(crate) async fn delete(
    state: Data<AppState>,
    caller: Caller,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let query = Query::parse(&req, &["id"])?;
    let provider = provider_name(&state, &req)?;
    // `?id=` with nothing after it is a client that lost its id: deleting every credential of
    // the provider instead would be the worst reading of it.
    if query.is_given_empty("id") {
        return Err(ApiError::field(
            "invalid_query",
            "id",
            "id is empty; give a credential id, or no id parameter to delete all of the provider's credentials",
        ));
    }
    let deleted = match query.get("id") {
        Some(id) => {
            if !is_id(id) {
                return Err(ApiError::not_found());
            }
            let id = id.to_ascii_lowercase();
            let infos = state.db().credential_info(&caller.user, &provider).await?;
            if !infos.iter().any(|i| i.id == id) {
                return Err(ApiError::not_found());
            }
            u64::from(state.db().delete_credential(&caller.user, &id).await?)
        }
        None => {
            state
                .db()
                .delete_credentials(&caller.user, &provider)
                .await?
        }
    };
    if deleted == 0 {
        return Err(ApiError::not_found());
    }
    Ok(HttpResponse::Ok().json(json!({ "provider": provider, "deleted": deleted })))
}

/// `scheme://host[:port]` of a URL.
fn origin_of(url: &url::Url) -> String {
    url.origin().ascii_serialization()
}
