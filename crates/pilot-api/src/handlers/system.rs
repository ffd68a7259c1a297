//! Routes about the service itself: liveness, readiness, the OpenAPI document, Prometheus
//! metrics, and the provider catalogue.

use actix_web::http::header::ContentType;
use actix_web::web::Data;
use actix_web::{HttpRequest, HttpResponse};
use serde_json::json;

use crate::extract::{Caller, Query};
use crate::{ApiError, AppState};

/// `GET /api/health`: the process answers. It does not touch the database (that is readiness).
pub(crate) async fn health() -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
    })))
}

/// `GET /api/ready`: 200 when the database answers, 503 while it does not.
pub(crate) async fn ready(state: Data<AppState>) -> Result<HttpResponse, ApiError> {
    match state.db().ping().await {
        Ok(()) => Ok(HttpResponse::Ok().json(json!({
            "status": "ready",
            "database": state.db().backend().as_str(),
        }))),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check: database unreachable");
            Err(ApiError::unavailable())
        }
    }
}

/// The OpenAPI document, generated from the route table and handed to the app by the crate
/// root (`pilot_api::config`), so no handler imports the generator that reads the table.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OpenApiDocument(pub(crate) &'static serde_json::Value);

/// `GET /api/openapi.json`: the OpenAPI document generated from the route table.
pub(crate) async fn openapi(document: Data<OpenApiDocument>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(document.0))
}

/// `GET /metrics`: Prometheus metrics (OpenMetrics text). The queue depth is sampled now; when
/// the database is down the last value stays.
pub(crate) async fn metrics(state: Data<AppState>) -> Result<HttpResponse, ApiError> {
    match state.db().queue_stats().await {
        Ok(stats) => state.metrics().set_queue_depth(stats.queued),
        Err(e) => tracing::debug!(error = %e, "queue depth not sampled"),
    }
    state
        .metrics()
        .sync_provider_panics(state.registry().panic_count());
    let text = state
        .metrics()
        .encode()
        .map_err(|e| ApiError::internal(&e))?;
    Ok(HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(text))
}

/// `GET /api/providers`: every installed provider with its actions, params and credential
/// types.
pub(crate) async fn providers(
    state: Data<AppState>,
    _caller: Caller,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    Query::parse(&req, &[])?;
    let providers: Vec<_> = state.registry().list().collect();
    Ok(HttpResponse::Ok()
        .insert_header(ContentType::json())
        .json(json!({ "providers": providers })))
}
