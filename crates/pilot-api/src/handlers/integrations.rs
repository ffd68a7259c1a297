//! Custom integrations: a user's named API (base URL, auth scheme, default headers) that
//! `custom_api` steps can name instead of a full URL. The base URL passes the outbound guard
//! when it is saved (it is checked again on every request), and header names and values are
//! checked here so a stored integration can never inject a header.

use std::collections::BTreeMap;

use actix_web::web::Data;
use actix_web::{HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use pilot_core::{CredentialKind, Integration};
use pilot_storage::IntegrationRow;
use serde::{Deserialize, Serialize};

use crate::extract::{Body, Caller, Query, path_id};
use crate::handlers::{
    PageView, check_header_name, check_header_value, check_name, check_url, deleted, list_page,
};
use crate::{ApiError, AppState};

/// The most default headers an integration may have.
pub(crate) const MAX_HEADERS: usize = 50;

/// The body of `POST /api/custom-integrations` and `PUT /api/custom-integrations/{id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct IntegrationInput {
    name: String,
    base_url: String,
    #[serde(default)]
    auth_scheme: Option<CredentialKind>,
    #[serde(default)]
    auth_header: Option<String>,
    #[serde(default)]
    default_headers: BTreeMap<String, String>,
}

/// A custom integration as the API shows it.
#[derive(Debug, Serialize)]
pub(crate) struct IntegrationView {
    id: String,
    name: String,
    base_url: String,
    auth_scheme: Option<CredentialKind>,
    auth_header: Option<String>,
    default_headers: BTreeMap<String, String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<IntegrationRow> for IntegrationView {
    fn from(row: IntegrationRow) -> Self {
        Self {
            id: row.id,
            name: row.integration.name,
            base_url: row.integration.base_url,
            auth_scheme: row.integration.auth_scheme,
            auth_header: row.integration.auth_header,
            default_headers: row.integration.default_headers.into_iter().collect(),
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

fn prepare(state: &AppState, input: IntegrationInput) -> Result<Integration, ApiError> {
    check_name("name", &input.name)?;
    let url = check_url("base_url", &input.base_url, state.outbound())?;
    if let Some(header) = &input.auth_header {
        check_header_name("auth_header", header)?;
        if !matches!(
            input.auth_scheme,
            Some(CredentialKind::ApiKey | CredentialKind::Header)
        ) {
            return Err(ApiError::invalid(
                "auth_header",
                "applies only to the api_key and header auth schemes",
            ));
        }
    }
    if input.default_headers.len() > MAX_HEADERS {
        return Err(ApiError::invalid(
            "default_headers",
            format!("at most {MAX_HEADERS} headers"),
        ));
    }
    for (name, value) in &input.default_headers {
        check_header_name(&format!("default_headers.{name}"), name)?;
        check_header_value(&format!("default_headers.{name}"), value, 4096)?;
        if name.eq_ignore_ascii_case("authorization") {
            return Err(ApiError::invalid(
                &format!("default_headers.{name}"),
                "store secrets with /api/provider-credentials, not as a default header",
            ));
        }
    }
    Ok(Integration {
        name: input.name,
        base_url: url.to_string(),
        auth_scheme: input.auth_scheme,
        auth_header: input.auth_header,
        default_headers: input.default_headers.into_iter().collect(),
    })
}

/// `GET /api/custom-integrations`
pub(crate) async fn list(
    state: Data<AppState>,
    caller: Caller,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let page = list_page(&req)?;
    let rows = state.db().list_integrations(&caller.user, &page).await?;
    Ok(HttpResponse::Ok().json(PageView::from_page(rows, IntegrationView::from)))
}

/// `POST /api/custom-integrations`
pub(crate) async fn create(
    state: Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    body: Body,
) -> Result<HttpResponse, ApiError> {
    let input: IntegrationInput = body.json(&req).await?;
    let integration = prepare(&state, input)?;
    let row = state
        .db()
        .create_integration(&caller.user, &integration)
        .await?;
    Ok(HttpResponse::Created().json(IntegrationView::from(row)))
}

/// `GET /api/custom-integrations/{id}`
pub(crate) async fn get(
    state: Data<AppState>,
    caller: Caller,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    Query::parse(&req, &[])?;
    let id = path_id(&req, "id")?;
    let row = state
        .db()
        .integration_by_id(&caller.user, &id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    Ok(HttpResponse::Ok().json(IntegrationView::from(row)))
}

/// `PUT /api/custom-integrations/{id}`
pub(crate) async fn update(
    state: Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    body: Body,
) -> Result<HttpResponse, ApiError> {
    let id = path_id(&req, "id")?;
    let input: IntegrationInput = body.json(&req).await?;
    let integration = prepare(&state, input)?;
    let row = state
        .db()
        .update_integration(&caller.user, &id, &integration)
        .await?
        .ok_or_else(ApiError::not_found)?;
    Ok(HttpResponse::Ok().json(IntegrationView::from(row)))
}

/// `DELETE /api/custom-integrations/{id}`
pub(crate) async fn delete(
    state: Data<AppState>,
    caller: Caller,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let id = path_id(&req, "id")?;
    deleted(state.db().delete_integration(&caller.user, &id).await?)
}
