//! Schedules: `POST /api/plans/{id}/schedule` and `/unschedule`, `GET /api/scheduler/jobs`
//! and `GET /api/scheduler/preview`. Expressions and time zones are validated, and next fire
//! times computed, by pilot-scheduler's cron library: the same code path the scheduler fires
//! with, so a preview is exactly what will run. Firing is the scheduler's work.

use actix_web::web::Data;
use actix_web::{HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use pilot_core::{PlanId, RunId, RunStatus, ScheduleId, Trigger};
use pilot_cron::CronSchedule;
use pilot_storage::{
    DEFAULT_GRACE_SECONDS, MisfirePolicy, OverlapPolicy, ScheduleListing, ScheduleRow, ScheduleSpec,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::extract::{Body, Caller, NoBody, Query, path_id};
use crate::handlers::{PageView, caller_plan, list_page};
use crate::{ApiError, AppState};

/// The longest misfire grace window: one week.
const MAX_GRACE_SECONDS: i64 = 7 * 24 * 3600;
/// The most fire times a preview returns.
const MAX_PREVIEW: u32 = 100;

/// The body of `POST /api/plans/{id}/schedule`; every field is optional, and without a body
/// the plan's stored cron trigger is used with the default policies.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ScheduleInput {
    #[serde(default)]
    cron: Option<String>,
    #[serde(default)]
    timezone: Option<String>,
    #[serde(default)]
    misfire_policy: Option<String>,
    #[serde(default)]
    grace_seconds: Option<i64>,
    #[serde(default)]
    overlap_policy: Option<String>,
    #[serde(default)]
    enabled: Option<bool>,
}

/// A schedule as the API shows it.
#[derive(Debug, Serialize)]
pub(crate) struct ScheduleView {
    id: ScheduleId,
    plan_id: PlanId,
    #[serde(skip_serializing_if = "Option::is_none")]
    plan_name: Option<String>,
    cron: String,
    timezone: String,
    misfire_policy: &'static str,
    grace_seconds: i64,
    overlap_policy: &'static str,
    enabled: bool,
    next_run_at: Option<DateTime<Utc>>,
    last_run_at: Option<DateTime<Utc>>,
    last_run_id: Option<RunId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_status: Option<Option<RunStatus>>,
    /// In the jobs list: the plan's status (a paused plan's ticks pass without runs).
    #[serde(skip_serializing_if = "Option::is_none")]
    plan_status: Option<String>,
    /// In the jobs list: ticks skipped because the plan was paused.
    #[serde(skip_serializing_if = "Option::is_none")]
    missed_paused: Option<u64>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl ScheduleView {
    fn new(
        row: ScheduleRow,
        plan_name: Option<String>,
        last_status: Option<Option<RunStatus>>,
    ) -> Self {
        Self {
            id: row.id,
            plan_id: row.plan_id,
            plan_name,
            cron: row.spec.cron,
            timezone: row.spec.timezone,
            misfire_policy: row.spec.misfire.as_str(),
            grace_seconds: row.spec.grace_seconds,
            overlap_policy: row.spec.overlap.as_str(),
            enabled: row.spec.enabled,
            next_run_at: row.spec.next_run_at,
            last_run_at: row.last_run_at,
            last_run_id: row.last_run_id,
            last_status,
            plan_status: None,
            missed_paused: None,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

impl From<ScheduleListing> for ScheduleView {
    fn from(listing: ScheduleListing) -> Self {
        Self {
            plan_status: Some(listing.plan_status),
            missed_paused: Some(listing.missed_paused),
            ..Self::new(
                listing.schedule,
                Some(listing.plan_name),
                Some(listing.last_run_status),
            )
        }
    }
}

/// `POST /api/plans/{id}/schedule`: schedules the plan and stores the cron expression and zone
/// as its trigger.
pub(crate) async fn schedule(
    state: Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    body: Body,
) -> Result<HttpResponse, ApiError> {
    let id = PlanId(path_id(&req, "id")?);
    let input: ScheduleInput = body.optional_json(&req).await?.unwrap_or_default();
    let misfire = match &input.misfire_policy {
        None => MisfirePolicy::default(),
        Some(text) => MisfirePolicy::parse(text)
            .ok_or_else(|| ApiError::invalid("misfire_policy", "must be 'skip' or 'coalesce'"))?,
    };
    let overlap = match &input.overlap_policy {
        None => OverlapPolicy::default(),
        Some(text) => OverlapPolicy::parse(text)
            .ok_or_else(|| ApiError::invalid("overlap_policy", "must be 'allow' or 'skip'"))?,
    };
    let grace_seconds = input.grace_seconds.unwrap_or(DEFAULT_GRACE_SECONDS);
    if !(0..=MAX_GRACE_SECONDS).contains(&grace_seconds) {
        return Err(ApiError::invalid(
            "grace_seconds",
            format!("must be between 0 and {MAX_GRACE_SECONDS}"),
        ));
    }
    if let Some(tz) = &input.timezone {
        crate::handlers::check_line("timezone", tz, 64, true)?;
    }
    let plan = caller_plan(&state, &caller, &id).await?;
    let (cron, timezone) = match (input.cron, &plan.plan.trigger) {
        (Some(cron), _) => (cron, input.timezone),
        (None, Some(Trigger::Cron { cron, timezone })) => {
            (cron.clone(), input.timezone.or_else(|| timezone.clone()))
        }
        (None, _) => {
            return Err(ApiError::unprocessable(
                "cron",
                "the plan has no cron trigger: give `cron` (and `timezone`) in the body, or store a cron trigger on the plan",
            ));
        }
    };
    let timezone = timezone.unwrap_or_else(|| "UTC".to_owned());
    let parsed = CronSchedule::parse(&cron, &timezone)?;
    let spec = ScheduleSpec {
        cron: parsed.expression().to_owned(),
        timezone,
        misfire,
        grace_seconds,
        overlap,
        next_run_at: parsed.next_after(Utc::now()),
        enabled: input.enabled.unwrap_or(true),
    };
    // One truth: the plan's trigger is the schedule's cron and zone.
    let trigger = Trigger::Cron {
        cron: spec.cron.clone(),
        timezone: Some(spec.timezone.clone()),
    };
    if plan.plan.trigger.as_ref() != Some(&trigger) {
        let mut changed = plan.plan.clone();
        changed.trigger = Some(trigger);
        state.db().update_plan(&caller.user, &id, &changed).await?;
    }
    let row = state
        .db()
        .upsert_schedule(&caller.user, &id, &spec)
        .await?
        .ok_or_else(ApiError::not_found)?;
    // The embedded worker sleeps until the earliest due time it knew of: wake it to see this one.
    state.queue_signal().notify_one();
    Ok(HttpResponse::Ok().json(ScheduleView::new(row, Some(plan.plan.name), None)))
}

/// Makes the plan's schedule follow its trigger after a save: a cron trigger schedules it (a
/// schedule that exists keeps its policies and enabled flag, a new one gets the defaults), any
/// other trigger unschedules it. The plan's trigger is the one truth about its schedule.
pub(crate) async fn follow_trigger(
    state: &AppState,
    user: &pilot_core::UserId,
    plan: &PlanId,
    trigger: Option<&Trigger>,
) -> Result<(), ApiError> {
    let Some(Trigger::Cron { cron, timezone }) = trigger else {
        state.db().delete_schedule(user, plan).await?;
        return Ok(());
    };
    let timezone = timezone.clone().unwrap_or_else(|| "UTC".to_owned());
    let parsed = CronSchedule::parse(cron, &timezone)?;
    let existing = state.db().schedule_for_plan(user, plan).await?;
    let defaults = ScheduleSpec {
        cron: String::new(),
        timezone: String::new(),
        misfire: MisfirePolicy::default(),
        grace_seconds: DEFAULT_GRACE_SECONDS,
        overlap: OverlapPolicy::default(),
        next_run_at: None,
        enabled: true,
    };
    let kept = existing.map_or(defaults, |row| row.spec);
    let unchanged = kept.cron == parsed.expression() && kept.timezone == timezone;
    let spec = ScheduleSpec {
        cron: parsed.expression().to_owned(),
        // An unchanged expression keeps its due tick; a new one starts from now.
        next_run_at: if unchanged && kept.next_run_at.is_some() {
            kept.next_run_at
        } else {
            parsed.next_after(Utc::now())
        },
        timezone,
        ..kept
    };
    state.db().upsert_schedule(user, plan, &spec).await?;
    state.queue_signal().notify_one();
    Ok(())
}

/// `POST /api/plans/{id}/unschedule`: removes the plan's schedule and sets a cron trigger to
/// manual; `unscheduled` says whether there was a schedule.
pub(crate) async fn unschedule(
    state: Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    _: NoBody,
) -> Result<HttpResponse, ApiError> {
    let id = PlanId(path_id(&req, "id")?);
    let plan = caller_plan(&state, &caller, &id).await?;
    // One truth: an unscheduled plan is started by hand.
    if matches!(plan.plan.trigger, Some(Trigger::Cron { .. })) {
        let mut changed = plan.plan.clone();
        changed.trigger = Some(Trigger::Manual);
        state.db().update_plan(&caller.user, &id, &changed).await?;
    }
    let removed = state.db().delete_schedule(&caller.user, &id).await?;
    Ok(HttpResponse::Ok().json(json!({ "plan_id": id, "unscheduled": removed })))
}

/// `GET /api/scheduler/jobs`: the caller's schedules with next and last run.
pub(crate) async fn jobs(
    state: Data<AppState>,
    caller: Caller,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let page = list_page(&req)?;
    let rows = state.db().list_schedules(&caller.user, &page).await?;
    Ok(HttpResponse::Ok().json(PageView::from_page(rows, ScheduleView::from)))
}

/// `GET /api/scheduler/preview?cron=&timezone=&count=&after=`: the next fire times.
pub(crate) async fn preview(_caller: Caller, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let query = Query::parse(&req, &["cron", "timezone", "count", "after"])?;
    let cron = query.get("cron").ok_or_else(|| {
        ApiError::field(
            "invalid_query",
            "cron",
            "cron: required (e.g. cron=0%209%20*%20*%201-5)",
        )
    })?;
    let timezone = query.get("timezone").unwrap_or("UTC");
    let count = query.integer("count", 1..=MAX_PREVIEW, 5)?;
    let after = match query.get("after") {
        None => Utc::now(),
        Some(text) => DateTime::parse_from_rfc3339(text)
            // A `+` offset that was not percent-encoded arrives as a space.
            .or_else(|e| DateTime::parse_from_rfc3339(&text.replace(' ', "+")).map_err(|_| e))
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| {
                ApiError::field(
                    "invalid_query",
                    "after",
                    format!("after must be an RFC 3339 time such as 2025-01-31T09:00:00Z: {e}"),
                )
            })?,
    };
    let schedule = CronSchedule::parse(cron, timezone)?;
    let fires: Vec<String> = schedule
        .next_fires(after, usize::try_from(count).unwrap_or(5))
        .iter()
        .map(|t| t.to_rfc3339())
        .collect();
    Ok(HttpResponse::Ok().json(json!({
        "cron": schedule.expression(),
        "timezone": schedule.timezone().name(),
        "wall_clock": schedule.is_wall_clock(),
        "after": after.to_rfc3339(),
        "fires": fires,
    })))
}
