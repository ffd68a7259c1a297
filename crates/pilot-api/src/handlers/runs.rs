//! Runs: `POST /api/execute` (inline or queued), `POST /api/execute-step`, inbound webhooks,
//! and reading and cancelling runs.
//!
//! Every new run goes through `pilot_scheduler::Submitter` (plan lookup, the paused check,
//! queue admission). An inline execution holds a lease under the same guard as a worker's
//! claimed runs: it stops the moment its lease is lost, and runs in its own task, so a client
//! that hangs up does not stop it half way. If this process dies, the lease expires and a
//! worker resumes the run at its first unfinished step. A queued run is committed before the
//! 202 is sent (accepted means durable), then the queue signal wakes the embedded worker.

use actix_web::web::Data;
use actix_web::{HttpRequest, HttpResponse};
use chrono::{DateTime, SubsecRound, Utc};
use pilot_core::{
    Plan, PlanId, ProviderResult, RetryPolicy, RunId, RunStatus, Step, StepStatus, TriggerKind,
    UserId, validate_plan, validate_step,
};
use pilot_engine::EngineError;
use pilot_storage::{CancelOutcome, NewRun, RunRow};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::extract::{Body, Caller, NoBody, Query, check_content_type, is_id, parse_json, path_id};
use crate::handlers::PageView;
use crate::wire::{PlanBody, RetryBody};
use crate::{ApiError, AppState};

/// The body of `POST /api/execute`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExecuteRequest {
    #[serde(default)]
    plan_id: Option<String>,
    #[serde(default)]
    plan: Option<PlanBody>,
    #[serde(default)]
    input: Option<Value>,
    #[serde(default, rename = "async")]
    run_async: bool,
}

/// The body of `POST /api/execute-step`: one step, validated like a plan's first step.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExecuteStepRequest {
    #[serde(default)]
    id: Option<String>,
    provider: String,
    action: String,
    #[serde(default)]
    params: Map<String, Value>,
    #[serde(default)]
    retry: Option<RetryBody>,
    #[serde(default)]
    timeout_ms: Option<u64>,
    #[serde(default)]
    input: Option<Value>,
}

/// A run as the API shows it: the run and, per step, its definition and outcome.
#[derive(Debug, Serialize)]
pub(crate) struct RunView {
    id: RunId,
    plan_id: Option<PlanId>,
    plan_name: String,
    status: RunStatus,
    trigger: TriggerKind,
    input: Value,
    error: Option<String>,
    cancel_requested: bool,
    scheduled_for: Option<DateTime<Utc>>,
    takeover_count: u32,
    created_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    steps: Vec<StepView>,
}

/// A run's view carries each step's output up to this size (compact JSON); a larger one is
/// left out, flagged, and read whole from `GET /api/runs/{id}/steps/{step_id}/output`, so a
/// run's answer stays small whatever its steps produced (up to 16 MiB in all).
pub(crate) const VIEW_OUTPUT_LIMIT: usize = 64 * 1024;

/// One step of a run: what it calls and how it went.
#[derive(Debug, Serialize)]
pub(crate) struct StepView {
    id: String,
    provider: String,
    action: String,
    status: StepStatus,
    output: Option<Value>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    output_truncated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    output_bytes: Option<u64>,
    error: Option<String>,
    attempts: u32,
    latency_ms: u64,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
}

impl From<RunRow> for RunView {
    fn from(row: RunRow) -> Self {
        let mut states = row.states.into_iter();
        let steps = row
            .steps
            .into_iter()
            .map(|step| {
                let state = states.next();
                let (status, output, error, attempts, latency_ms, started_at, finished_at) =
                    match state {
                        Some(s) => (
                            s.status,
                            s.output,
                            s.error,
                            s.attempts,
                            s.latency_ms,
                            s.started_at,
                            s.finished_at,
                        ),
                        None => (StepStatus::Pending, None, None, 0, 0, None, None),
                    };
                let (output, output_bytes) = shortened(output);
                StepView {
                    id: step.id,
                    provider: step.provider,
                    action: step.action,
                    status,
                    output,
                    output_truncated: output_bytes.is_some(),
                    output_bytes,
                    error,
                    attempts,
                    latency_ms,
                    started_at,
                    finished_at,
                }
            })
            .collect();
        Self {
            id: row.id,
            plan_id: row.plan_id,
            plan_name: row.plan_name,
            status: row.status,
            trigger: row.trigger,
            input: row.input,
            error: row.error,
            cancel_requested: row.cancel_requested,
            scheduled_for: row.scheduled_for,
            takeover_count: row.takeover_count,
            created_at: row.created_at,
            started_at: row.started_at,
            finished_at: row.finished_at,
            steps,
        }
    }
}

/// `output` as a view carries it: whole up to [`VIEW_OUTPUT_LIMIT`], else left out, with its
/// size. The size is counted by serialising into a counter, without a copy.
fn shortened(output: Option<Value>) -> (Option<Value>, Option<u64>) {
    struct Counter(u64);
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len() as u64;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let Some(value) = output else {
        return (None, None);
    };
    let mut counter = Counter(0);
    // Writing a `Value` into a writer that never fails cannot fail.
    let _ = serde_json::to_writer(&mut counter, &value);
    if counter.0 <= VIEW_OUTPUT_LIMIT as u64 {
        (Some(value), None)
    } else {
        (None, Some(counter.0))
    }
}

/// `GET /api/runs/{id}/steps/{step_id}/output`: one step's whole output, which a run's view
/// leaves out when it is large.
pub(crate) async fn step_output(
    state: Data<AppState>,
    caller: Caller,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    Query::parse(&req, &[])?;
    let id = RunId(path_id(&req, "id")?);
    let step_id = req.match_info().get("step_id").unwrap_or_default();
    let row = state
        .db()
        .run_by_id(&caller.user, &id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    let index = row
        .steps
        .iter()
        .position(|s| s.id == step_id)
        .ok_or_else(ApiError::not_found)?;
    let (status, output) = match row.states.into_iter().nth(index) {
        Some(s) => (s.status, s.output),
        None => (StepStatus::Pending, None),
    };
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "run_id": row.id,
        "step_id": step_id,
        "status": status,
        "output": output,
    })))
}

/// What `POST /api/execute-step` answers: the run it recorded and the seed's `ProviderResult`.
#[derive(Debug, Serialize)]
struct StepResultView {
    run_id: RunId,
    #[serde(flatten)]
    result: ProviderResult,
}

/// What a queued run's 202 answers.
#[derive(Debug, Serialize)]
struct Accepted {
    run_id: RunId,
    status: RunStatus,
    run: RunView,
}

/// `POST /api/execute`
pub(crate) async fn execute(
    state: Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    body: Body,
) -> Result<HttpResponse, ApiError> {
    let request: ExecuteRequest = body.json(&req).await?;
    let input = request.input.unwrap_or(Value::Null);
    let new_run = match (request.plan_id, request.plan) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                "plan",
                "give either plan_id or plan, not both",
            ));
        }
        (None, None) => {
            return Err(ApiError::invalid(
                "plan_id",
                "give plan_id (a stored plan) or plan (an ad-hoc plan)",
            ));
        }
        (Some(id), None) => {
            if !is_id(&id) {
                return Err(ApiError::not_found());
            }
            let plan_id = PlanId(id.to_ascii_lowercase());
            state
                .submitter()
                .stored_plan_run(&caller.user, &plan_id, input, TriggerKind::Api)
                .await?
        }
        (None, Some(plan)) => {
            let plan = Plan::from(plan);
            crate::handlers::check_line("plan.name", &plan.name, 200, true)?;
            if let Err(errors) = validate_plan(&plan, &state.catalogue()) {
                let ids: Vec<&str> = plan.steps.iter().map(|s| s.id.as_str()).collect();
                return Err(ApiError::validation(&errors, "plan.", &ids));
            }
            NewRun {
                plan_id: None,
                plan_name: plan.name,
                steps: plan.steps,
                input,
                trigger: TriggerKind::Api,
                schedule_id: None,
                scheduled_for: None,
            }
        }
    };
    if request.run_async {
        return enqueue(&state, &caller.user, &new_run).await;
    }
    // What the answer shows of the run besides its outcome, kept before the engine takes the
    // snapshot: the answer is built from these and the engine's outcome, not read back.
    let defs: Vec<(String, String, String)> = new_run
        .steps
        .iter()
        .map(|s| (s.id.clone(), s.provider.clone(), s.action.clone()))
        .collect();
    let (plan_id, plan_name, input) = (
        new_run.plan_id.clone(),
        new_run.plan_name.clone(),
        new_run.input.clone(),
    );
    let submitter = state.submitter().clone();
    let user = caller.user.clone();
    let inline = state
        .spawn_work(async move { submitter.execute_inline(&user, new_run).await })
        .await
        .map_err(|e| ApiError::internal(&format!("inline execution task failed: {e}")))??;
    let (run_id, started_at) = (inline.run_id, inline.started_at);
    let result = inline.end.into_result();
    match result {
        // The engine wrote this end (its last write was accepted under our lease): answer from
        // it. A cancelled run is read back (rare; it shows who asked).
        Ok(outcome) if outcome.status.is_terminal() && outcome.status != RunStatus::Cancelled => {
            Ok(HttpResponse::Ok().json(finished_view(
                run_id, plan_id, plan_name, input, started_at, defs, outcome,
            )))
        }
        // Lease lost, store unavailable, or anything unexpected: the stored run decides.
        other => {
            let row = state
                .db()
                .run_by_id(&caller.user, &run_id)
                .await?
                .ok_or_else(|| ApiError::internal(&"a run created by this request vanished"))?;
            inline_answer(other.map(|_| ()), row)
        }
    }
}

/// The view of an inline run that ended as the engine reports, the same as reading it back
/// would show: times at storage's precision (microseconds). `finished_at` is this process's
/// clock when the answer is built, a moment after the stored one; `cancel_requested` is false
/// (a cancelled run is read back instead, and a request that came after the last step
/// started changed nothing).
fn finished_view(
    id: RunId,
    plan_id: Option<PlanId>,
    plan_name: String,
    input: Value,
    started_at: DateTime<Utc>,
    defs: Vec<(String, String, String)>,
    outcome: pilot_engine::RunOutcome,
) -> RunView {
    let stored = |t: DateTime<Utc>| t.trunc_subsecs(6);
    let mut states = outcome.states.into_iter();
    let steps = defs
        .into_iter()
        .map(|(step_id, provider, action)| {
            let state = states
                .next()
                .unwrap_or_else(|| pilot_core::StepState::pending(step_id.clone()));
            let (output, output_bytes) = shortened(state.output);
            StepView {
                id: step_id,
                provider,
                action,
                status: state.status,
                output,
                output_truncated: output_bytes.is_some(),
                output_bytes,
                error: state.error,
                attempts: state.attempts,
                latency_ms: state.latency_ms,
                started_at: state.started_at.map(stored),
                finished_at: state.finished_at.map(stored),
            }
        })
        .collect();
    RunView {
        id,
        plan_id,
        plan_name,
        status: outcome.status,
        trigger: TriggerKind::Api,
        input,
        error: outcome.error,
        cancel_requested: false,
        scheduled_for: None,
        takeover_count: 0,
        created_at: started_at,
        started_at: Some(started_at),
        finished_at: Some(stored(Utc::now())),
        steps,
    }
}

/// `POST /api/execute-step`
pub(crate) async fn execute_step(
    state: Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    body: Body,
) -> Result<HttpResponse, ApiError> {
    let request: ExecuteStepRequest = body.json(&req).await?;
    let step = Step {
        id: request.id.unwrap_or_else(|| "step".to_owned()),
        provider: request.provider,
        action: request.action,
        params: request.params,
        retry: request.retry.map(RetryPolicy::from),
        timeout_ms: request.timeout_ms,
        when: None,
        continue_on_error: false,
    };
    if let Err(errors) = validate_step(&step, 0, &[], &state.catalogue()) {
        // The step's fields are at the top level of this request.
        let ids = [step.id.as_str()];
        let e = ApiError::validation(&errors, "", &ids);
        return Err(strip_step_prefix(e));
    }
    let new_run = NewRun {
        plan_id: None,
        plan_name: format!("execute-step {}.{}", step.provider, step.action),
        steps: vec![step],
        input: request.input.unwrap_or(Value::Null),
        trigger: TriggerKind::Step,
        schedule_id: None,
        scheduled_for: None,
    };
    let submitter = state.submitter().clone();
    let user = caller.user.clone();
    let inline = state
        .spawn_work(async move {
            submitter
                .run_inline(&user, new_run, |engine, snapshot| async move {
                    engine.execute_step(snapshot).await
                })
                .await
        })
        .await
        .map_err(|e| ApiError::internal(&format!("inline execution task failed: {e}")))??;
    let run_id = inline.run_id;
    let result = inline.end.into_result();
    match result {
        Ok(result) => Ok(HttpResponse::Ok().json(StepResultView { run_id, result })),
        Err(outcome) => {
            let row = state
                .db()
                .run_by_id(&caller.user, &run_id)
                .await?
                .ok_or_else(|| ApiError::internal(&"a run created by this request vanished"))?;
            inline_answer(Err(outcome), row)
        }
    }
}

/// Rewrites `steps[0].params.url` to `params.url`: execute-step's body is the step itself.
fn strip_step_prefix(e: ApiError) -> ApiError {
    let rewrite = |v: &Value| -> Value {
        match v.as_str() {
            Some(s) => Value::String(s.strip_prefix("steps[0].").unwrap_or(s).to_owned()),
            None => v.clone(),
        }
    };
    let mut details = e.details().clone();
    if let Some(obj) = details.as_object_mut() {
        if let Some(field) = obj.get("field") {
            let new = rewrite(field);
            obj.insert("field".to_owned(), new);
        }
        if let Some(Value::Array(errors)) = obj.get_mut("errors") {
            for item in errors {
                if let Some(field) = item.get("field") {
                    let new = rewrite(field);
                    item["field"] = new;
                }
            }
        }
    }
    e.with_details(details)
}

/// `POST /api/hooks/{token}`: starts the token's plan with the JSON body as `${input}` (and
/// nothing else), as a queued run. No API token: the hook token is the credential.
pub(crate) async fn inbound_hook(
    state: Data<AppState>,
    req: HttpRequest,
    body: Body,
) -> Result<HttpResponse, ApiError> {
    let token = req.match_info().get("token").unwrap_or_default().to_owned();
    let decision = state.throttle().hook_call(&token);
    if !decision.allowed {
        return Err(ApiError::too_many(
            "rate_limited",
            format!(
                "this webhook was called more than {} times in a minute; retry after the \
                 Retry-After delay",
                decision.limit
            ),
            decision.reset,
        )
        .with_rate(decision.limit, decision.remaining, decision.reset));
    }
    let Some((user, plan_id)) = state.db().resolve_hook(&token).await? else {
        return Err(ApiError::not_found());
    };
    let content_type = req
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or("(not text)").to_owned());
    let bytes = body.bytes(&req).await?;
    let input = if bytes.is_empty() {
        Value::Null
    } else {
        check_content_type(content_type.as_deref())?;
        parse_json::<Value>(&bytes)?
    };
    let new_run = state
        .submitter()
        .stored_plan_run(&user, &plan_id, input, TriggerKind::Webhook)
        .await?;
    let row = state.submitter().enqueue(&user, &new_run).await?;
    Ok(HttpResponse::Accepted().json(serde_json::json!({
        "run_id": row.id,
        "status": row.status,
    })))
}

/// `GET /api/runs/{id}`
pub(crate) async fn get(
    state: Data<AppState>,
    caller: Caller,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    Query::parse(&req, &[])?;
    let id = RunId(path_id(&req, "id")?);
    let row = state
        .db()
        .run_by_id(&caller.user, &id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    Ok(HttpResponse::Ok().json(RunView::from(row)))
}

/// `POST /api/runs/{id}/cancel`: a queued run is cancelled at once (200), a running one at its
/// next step boundary (202); a finished run cannot be (409).
pub(crate) async fn cancel(
    state: Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    _: NoBody,
) -> Result<HttpResponse, ApiError> {
    let id = RunId(path_id(&req, "id")?);
    let outcome = state
        .db()
        .cancel_run(&caller.user, &id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    let status = match outcome {
        CancelOutcome::AlreadyFinished(status) => {
            return Err(ApiError::conflict(format!(
                "the run already ended ({}); there is nothing to cancel",
                status.as_str()
            )));
        }
        CancelOutcome::Cancelled => {
            state
                .metrics()
                .record_run_finished(RunStatus::Cancelled.as_str());
            actix_web::http::StatusCode::OK
        }
        CancelOutcome::Requested => actix_web::http::StatusCode::ACCEPTED,
    };
    let row = state
        .db()
        .run_by_id(&caller.user, &id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    Ok(HttpResponse::build(status).json(RunView::from(row)))
}

/// `GET /api/runs`: the caller's runs across plans, newest first, filtered by `status`
/// (comma-separated, any of), `plan_id`, `trigger`, `created_after` and `created_before`.
pub(crate) async fn list(
    state: Data<AppState>,
    caller: Caller,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let query = Query::parse(
        &req,
        &[
            "limit",
            "cursor",
            "status",
            "plan_id",
            "trigger",
            "created_after",
            "created_before",
        ],
    )?;
    let page = query.page()?;
    let mut filter = pilot_storage::RunFilter::default();
    if let Some(text) = query.get("status").filter(|t| !t.is_empty()) {
        for part in text.split(',') {
            let status = RunStatus::parse(part.trim()).ok_or_else(|| {
                ApiError::field(
                    "invalid_query",
                    "status",
                    "status must be queued, running, succeeded, failed or cancelled (several: comma-separated)",
                )
            })?;
            filter.statuses.push(status);
        }
    }
    if let Some(text) = query.get("plan_id").filter(|t| !t.is_empty()) {
        if !is_id(text) {
            return Err(ApiError::field(
                "invalid_query",
                "plan_id",
                "plan_id must be a plan id (a UUID)",
            ));
        }
        filter.plan_id = Some(PlanId(text.to_ascii_lowercase()));
    }
    if let Some(text) = query.get("trigger").filter(|t| !t.is_empty()) {
        filter.trigger = Some(TriggerKind::parse(text).ok_or_else(|| {
            ApiError::field(
                "invalid_query",
                "trigger",
                "trigger must be api, schedule, webhook or step",
            )
        })?);
    }
    let time = |name: &'static str| -> Result<Option<DateTime<Utc>>, ApiError> {
        match query.get(name).filter(|t| !t.is_empty()) {
            None => Ok(None),
            Some(text) => DateTime::parse_from_rfc3339(text)
                .map(|t| Some(t.with_timezone(&Utc)))
                .map_err(|_| {
                    ApiError::field(
                        "invalid_query",
                        name,
                        format!("{name} must be an RFC 3339 time, e.g. 2026-12-01T00:00:00Z"),
                    )
                }),
        }
    };
    filter.created_after = time("created_after")?;
    filter.created_before = time("created_before")?;
    let runs = state.db().list_runs(&caller.user, &filter, &page).await?;
    Ok(HttpResponse::Ok().json(PageView::from_page(runs, RunView::from)))
}

/// `GET /api/plans/{id}/runs`
pub(crate) async fn list_for_plan(
    state: Data<AppState>,
    caller: Caller,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let page = Query::parse(&req, &["limit", "cursor"])?.page()?;
    let id = PlanId(path_id(&req, "id")?);
    state
        .db()
        .plan(&caller.user, &id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    let runs = state
        .db()
        .list_runs_for_plan(&caller.user, &id, &page)
        .await?;
    Ok(HttpResponse::Ok().json(PageView::from_page(runs, RunView::from)))
}

async fn enqueue(state: &AppState, user: &UserId, run: &NewRun) -> Result<HttpResponse, ApiError> {
    let row = state.submitter().enqueue(user, run).await?;
    Ok(HttpResponse::Accepted().json(Accepted {
        run_id: row.id.clone(),
        status: row.status,
        run: RunView::from(row),
    }))
}

/// The answer to an inline execution: the run as stored. 200 when it ended; 202 when it did not
/// (its lease moved to a worker, which goes on with it); 503 when progress could not be
/// written (the run resumes elsewhere once its lease expires).
fn inline_answer(result: Result<(), EngineError>, row: RunRow) -> Result<HttpResponse, ApiError> {
    match result {
        Ok(()) | Err(EngineError::Fenced) => {
            if row.status.is_terminal() {
                Ok(HttpResponse::Ok().json(RunView::from(row)))
            } else {
                // The documented 202 shape, the same as a queued run's.
                Ok(HttpResponse::Accepted().json(Accepted {
                    run_id: row.id.clone(),
                    status: row.status,
                    run: RunView::from(row),
                }))
            }
        }
        Err(EngineError::Store(pilot_core::StoreError::Unavailable(cause))) => {
            tracing::warn!(error = %cause, "inline run could not write its progress");
            Err(ApiError::unavailable())
        }
        Err(e) => Err(ApiError::internal(&e)),
    }
}
