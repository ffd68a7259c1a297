//! Plans: create, list, read, replace, delete, and their inbound-webhook tokens. A plan is
//! validated against the installed providers when it is saved, so a run never starts with a
//! plan that cannot work; the providers it needs are derived from its steps.

use actix_web::web::Data;
use actix_web::{HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use pilot_core::{Plan, PlanId, Step, Trigger, validate_plan};
use pilot_cron::CronSchedule;
use pilot_storage::{HookRow, NewPlan, PlanDeletion, PlanRow};
use serde::{Deserialize, Serialize};

use crate::extract::{Body, Caller, NoBody, Query, path_id};
use crate::handlers::{PageView, caller_plan, check_line, check_text, deleted, list_page};
use crate::wire::{StepBody, TriggerBody, steps_in, steps_out, strict_trigger};
use crate::{ApiError, AppState};

/// The body of `POST /api/plans` and `PUT /api/plans/{id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PlanInput {
    name: String,
    #[serde(default)]
    original_prompt: Option<String>,
    steps: Vec<StepBody>,
    #[serde(default)]
    plain_english_steps: Option<Vec<String>>,
    #[serde(default, deserialize_with = "strict_trigger")]
    trigger: Option<TriggerBody>,
    #[serde(default)]
    status: Option<String>,
    /// What `GET /api/plans/{id}` shows besides the plan, so its answer can be sent back as it
    /// is: the server owns these, ignores them on save, and refuses an `id` that is not the
    /// plan's (409).
    #[serde(default)]
    id: Option<String>,
    #[serde(default, rename = "required_providers")]
    _required_providers: Option<serde::de::IgnoredAny>,
    #[serde(default, rename = "next_fires")]
    _next_fires: Option<serde::de::IgnoredAny>,
    #[serde(default, rename = "created_at")]
    _created_at: Option<serde::de::IgnoredAny>,
    #[serde(default, rename = "updated_at")]
    _updated_at: Option<serde::de::IgnoredAny>,
}

/// The statuses a plan may have.
pub(crate) const PLAN_STATUSES: [&str; 3] = ["active", "paused", "draft"];

/// A stored plan as the API shows it.
#[derive(Debug, Serialize)]
pub(crate) struct PlanView {
    id: PlanId,
    name: String,
    original_prompt: Option<String>,
    steps: Vec<StepBody>,
    plain_english_steps: Vec<String>,
    required_providers: Vec<String>,
    trigger: Option<TriggerBody>,
    /// With a cron trigger: its next 5 fire times (empty otherwise, and while paused).
    next_fires: Vec<String>,
    status: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    /// Set once, in the answer that created the plan's first webhook token.
    #[serde(skip_serializing_if = "Option::is_none")]
    webhook: Option<HookIssued>,
}

impl From<PlanRow> for PlanView {
    fn from(row: PlanRow) -> Self {
        Self {
            id: row.id,
            name: row.plan.name,
            original_prompt: row.plan.original_prompt,
            steps: steps_out(row.plan.steps),
            plain_english_steps: row.plan.plain_english_steps,
            required_providers: row.plan.required_providers,
            next_fires: next_fires(row.plan.trigger.as_ref(), &row.plan.status),
            trigger: row.plan.trigger.map(TriggerBody::from),
            status: row.plan.status,
            created_at: row.created_at,
            updated_at: row.updated_at,
            webhook: None,
        }
    }
}

/// The next 5 fire times of a cron trigger, as RFC 3339 in the trigger's zone.
fn next_fires(trigger: Option<&Trigger>, status: &str) -> Vec<String> {
    let Some(Trigger::Cron { cron, timezone }) = trigger else {
        return Vec::new();
    };
    if status == "paused" {
        return Vec::new();
    }
    CronSchedule::parse(cron, timezone.as_deref().unwrap_or("UTC"))
        .map(|schedule| {
            schedule
                .next_fires(Utc::now(), 5)
                .into_iter()
                .map(|t| t.to_rfc3339())
                .collect()
        })
        .unwrap_or_default()
}

/// A webhook token, shown once when it is created.
#[derive(Debug, Serialize)]
pub(crate) struct HookIssued {
    id: String,
    token: String,
    path: String,
    created_at: DateTime<Utc>,
}

/// A webhook token's metadata (the token itself is never stored).
#[derive(Debug, Serialize)]
pub(crate) struct HookView {
    id: String,
    plan_id: PlanId,
    created_at: DateTime<Utc>,
}

impl From<HookRow> for HookView {
    fn from(row: HookRow) -> Self {
        Self {
            id: row.id,
            plan_id: row.plan_id,
            created_at: row.created_at,
        }
    }
}

/// Validates a plan input against the registry and turns it into what storage keeps.
pub(crate) fn prepare(state: &AppState, input: PlanInput) -> Result<NewPlan, ApiError> {
    check_line("name", &input.name, 200, true)?;
    if let Some(prompt) = &input.original_prompt {
        check_text("original_prompt", prompt, 100_000)?;
    }
    let status = input.status.unwrap_or_else(|| "active".to_owned());
    if !PLAN_STATUSES.contains(&status.as_str()) {
        return Err(ApiError::invalid(
            "status",
            format!("must be one of {}", PLAN_STATUSES.join(", ")),
        ));
    }
    let trigger = input.trigger.map(Trigger::from);
    if let Some(Trigger::Cron { cron, timezone }) = &trigger {
        CronSchedule::parse(cron, timezone.as_deref().unwrap_or("UTC")).map_err(|e| {
            let field = match e {
                pilot_cron::CronError::UnknownTimeZone(_) => "trigger.timezone",
                _ => "trigger.cron",
            };
            ApiError::invalid(field, e.to_string())
        })?;
    }
    let plan = Plan {
        name: input.name.trim().to_owned(),
        steps: steps_in(input.steps),
    };
    if let Err(errors) = validate_plan(&plan, &state.catalogue()) {
        let ids: Vec<&str> = plan.steps.iter().map(|s| s.id.as_str()).collect();
        return Err(ApiError::validation(&errors, "", &ids));
    }
    let plain_english_steps = match input.plain_english_steps {
        Some(lines) => {
            if lines.len() > plan.steps.len().max(1) * 4 {
                return Err(ApiError::invalid(
                    "plain_english_steps",
                    "has more lines than the plan could need",
                ));
            }
            for (i, line) in lines.iter().enumerate() {
                check_text(&format!("plain_english_steps[{i}]"), line, 2000)?;
            }
            lines
        }
        None => plan
            .steps
            .iter()
            .map(|s| format!("{}: {}.{}", s.id, s.provider, s.action))
            .collect(),
    };
    Ok(NewPlan {
        required_providers: required_providers(&plan.steps),
        name: plan.name,
        original_prompt: input.original_prompt,
        steps: plan.steps,
        plain_english_steps,
        trigger,
        status,
    })
}

/// The providers the steps call, each once, in first-use order.
pub(crate) fn required_providers(steps: &[Step]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for step in steps {
        if !out.contains(&step.provider) {
            out.push(step.provider.clone());
        }
    }
    out
}

/// `GET /api/plans`
pub(crate) async fn list(
    state: Data<AppState>,
    caller: Caller,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let page = list_page(&req)?;
    let plans = state.db().list_plans(&caller.user, &page).await?;
    Ok(HttpResponse::Ok().json(PageView::from_page(plans, PlanView::from)))
}

/// `POST /api/plans`
pub(crate) async fn create(
    state: Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    body: Body,
) -> Result<HttpResponse, ApiError> {
    let input: PlanInput = body.json(&req).await?;
    let plan = prepare(&state, input)?;
    let webhook = matches!(plan.trigger, Some(Trigger::Webhook));
    let row = state.db().create_plan(&caller.user, &plan).await?;
    crate::handlers::schedules::follow_trigger(
        &state,
        &caller.user,
        &row.id,
        row.plan.trigger.as_ref(),
    )
    .await?;
    let mut view = PlanView::from(row);
    if webhook {
        view.webhook = issue_hook(&state, &caller, &view.id).await?;
    }
    Ok(HttpResponse::Created().json(view))
}

/// `POST /api/plans/validate`: checks a plan exactly as saving it would, and saves nothing. A
/// body that is not a plan's JSON is a 400 as for a save; a plan with problems is a 200 listing
/// every one found (step, field, message).
pub(crate) async fn validate(
    state: Data<AppState>,
    _caller: Caller,
    req: HttpRequest,
    body: Body,
) -> Result<HttpResponse, ApiError> {
    let input: PlanInput = body.json(&req).await?;
    let answer = match prepare(&state, input) {
        Ok(plan) => serde_json::json!({
            "valid": true,
            "errors": [],
            "required_providers": plan.required_providers,
        }),
        Err(e) if e.code() == "validation_failed" => {
            let errors = match e.details().get("errors") {
                Some(listed) => listed.clone(),
                None => serde_json::json!([{
                    "step": null,
                    "field": e.details().get("field").cloned().unwrap_or_default(),
                    "message": e.message(),
                }]),
            };
            serde_json::json!({ "valid": false, "errors": errors, "required_providers": [] })
        }
        Err(e) => return Err(e),
    };
    Ok(HttpResponse::Ok().json(answer))
}

/// `GET /api/plans/{id}`
pub(crate) async fn get(
    state: Data<AppState>,
    caller: Caller,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    Query::parse(&req, &[])?;
    let id = PlanId(path_id(&req, "id")?);
    let row = caller_plan(&state, &caller, &id).await?;
    Ok(HttpResponse::Ok().json(PlanView::from(row)))
}

/// `PUT /api/plans/{id}`: replaces the plan. Runs already created keep their own snapshot.
pub(crate) async fn update(
    state: Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    body: Body,
) -> Result<HttpResponse, ApiError> {
    let id = PlanId(path_id(&req, "id")?);
    let input: PlanInput = body.json(&req).await?;
    if let Some(given) = &input.id
        && !given.eq_ignore_ascii_case(id.as_str())
    {
        return Err(ApiError::conflict(format!(
            "the body's id ({}) is not the plan's ({}); leave it out, or send the plan to its \
             own URL",
            crate::extract::shown(given),
            id.as_str()
        )));
    }
    let plan = prepare(&state, input)?;
    let row = state
        .db()
        .update_plan(&caller.user, &id, &plan)
        .await?
        .ok_or_else(ApiError::not_found)?;
    crate::handlers::schedules::follow_trigger(
        &state,
        &caller.user,
        &row.id,
        row.plan.trigger.as_ref(),
    )
    .await?;
    Ok(HttpResponse::Ok().json(PlanView::from(row)))
}

/// `DELETE /api/plans/{id}[?force=true]`: deletes the plan, its schedule and its webhook tokens;
/// its finished runs and logs stay. A plan with queued or running runs answers 409 unless
/// `force=true`, which cancels them.
pub(crate) async fn delete(
    state: Data<AppState>,
    caller: Caller,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let query = Query::parse(&req, &["force"])?;
    let force = match query.get("force") {
        None => false,
        Some("true") => true,
        Some("false") => false,
        Some(_) => {
            return Err(ApiError::field(
                "invalid_query",
                "force",
                "force must be true or false",
            ));
        }
    };
    let id = PlanId(path_id(&req, "id")?);
    match state
        .db()
        .delete_plan_if_idle(&caller.user, &id, force)
        .await?
    {
        PlanDeletion::Missing => Err(ApiError::not_found()),
        PlanDeletion::Busy(n) => Err(ApiError::conflict(format!(
            "the plan has {n} queued or running run(s); wait for them, cancel them, or delete \
             with ?force=true, which cancels them"
        ))),
        PlanDeletion::Deleted(_) => deleted(true),
    }
}

/// `POST /api/plans/{id}/hooks`: issues a new webhook token for the plan, shown once.
pub(crate) async fn create_hook(
    state: Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    _: NoBody,
) -> Result<HttpResponse, ApiError> {
    let id = PlanId(path_id(&req, "id")?);
    let issued = issue_hook(&state, &caller, &id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    Ok(HttpResponse::Created().json(issued))
}

/// `GET /api/plans/{id}/hooks`: the plan's webhook tokens (metadata only).
pub(crate) async fn list_hooks(
    state: Data<AppState>,
    caller: Caller,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    Query::parse(&req, &[])?;
    let id = PlanId(path_id(&req, "id")?);
    caller_plan(&state, &caller, &id).await?;
    let hooks = state.db().list_hooks(&caller.user, &id).await?;
    let items: Vec<HookView> = hooks.into_iter().map(HookView::from).collect();
    Ok(HttpResponse::Ok().json(PageView {
        items,
        next_cursor: None,
    }))
}

/// `DELETE /api/plans/{id}/hooks/{hook_id}`: revokes one webhook token.
pub(crate) async fn delete_hook(
    state: Data<AppState>,
    caller: Caller,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let plan = PlanId(path_id(&req, "id")?);
    let hook = path_id(&req, "hook_id")?;
    let hooks = state.db().list_hooks(&caller.user, &plan).await?;
    if !hooks.iter().any(|h| h.id == hook) {
        return Err(ApiError::not_found());
    }
    deleted(state.db().delete_hook(&caller.user, &hook).await?)
}

async fn issue_hook(
    state: &AppState,
    caller: &Caller,
    plan: &PlanId,
) -> Result<Option<HookIssued>, ApiError> {
    let Some((row, token)) = state.db().create_hook(&caller.user, plan).await? else {
        return Ok(None);
    };
    let token = token.expose().to_owned();
    Ok(Some(HookIssued {
        id: row.id,
        path: format!("/api/hooks/{token}"),
        token,
        created_at: row.created_at,
    }))
}
