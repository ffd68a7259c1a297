//! `GET /api/execution-logs`: the caller's execution-log rows (one per step attempt), newest
//! first, optionally for one plan or one run. Filters are scoped like everything else: another
//! user's plan or run id finds nothing, exactly like an id that does not exist.

use actix_web::web::Data;
use actix_web::{HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use pilot_core::{PlanId, RunId};
use pilot_storage::{LogFilter, LogRow};
use serde::Serialize;

use crate::extract::{Caller, Query, is_id};
use crate::handlers::PageView;
use crate::{ApiError, AppState};

/// One execution-log row as the API shows it.
#[derive(Debug, Serialize)]
pub(crate) struct LogView {
    id: String,
    plan_id: Option<PlanId>,
    run_id: RunId,
    plan_name: String,
    step_number: u32,
    step_id: String,
    provider: String,
    action: String,
    attempt: u32,
    status: String,
    message: Option<String>,
    latency_ms: u64,
    output_preview: Option<String>,
    error: Option<String>,
    timestamp: DateTime<Utc>,
}

impl From<LogRow> for LogView {
    fn from(row: LogRow) -> Self {
        Self {
            id: row.id,
            plan_id: row.plan_id,
            run_id: row.run_id,
            plan_name: row.plan_name,
            step_number: row.step_number,
            step_id: row.step_id,
            provider: row.provider,
            action: row.action,
            attempt: row.attempt,
            status: row.status,
            message: row.message,
            latency_ms: row.latency_ms,
            output_preview: row.output_preview,
            error: row.error,
            timestamp: row.timestamp,
        }
    }
}

/// `GET /api/execution-logs?plan_id=&run_id=&limit=&cursor=`
pub(crate) async fn list(
    state: Data<AppState>,
    caller: Caller,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let query = Query::parse(&req, &["plan_id", "run_id", "limit", "cursor"])?;
    let page = query.page()?;
    let id = |name: &str| -> Result<Option<String>, ApiError> {
        match query.get(name) {
            None => Ok(None),
            Some(v) if is_id(v) => Ok(Some(v.to_ascii_lowercase())),
            Some(_) => Err(ApiError::field(
                "invalid_query",
                name,
                format!(
                    "{name} must be an id (a UUID such as 0f8fad5b-d9cb-469f-a165-70867728950e)"
                ),
            )),
        }
    };
    let filter = LogFilter {
        plan_id: id("plan_id")?.map(PlanId),
        run_id: id("run_id")?.map(RunId),
    };
    let logs = state.db().list_logs(&caller.user, &filter, &page).await?;
    Ok(HttpResponse::Ok().json(PageView::from_page(logs, LogView::from)))
}
