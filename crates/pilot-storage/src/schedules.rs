//! Schedules: one per plan, with its cron expression, zone, misfire and overlap policy and the
//! next due time (computed by the caller with the cron library). The firing transaction (claim
//! due schedules, insert runs unique per `(schedule_id, scheduled_for)`, advance `next_run_at`)
//! belongs to the scheduler and lives beside this module on the same tables.

use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;
use pilot_core::{PlanId, RunId, RunStatus, ScheduleId, UserId};

use crate::conn::{Mode, Scope, transaction};
use crate::page::{Page, PageRequest, after, paginate};
use crate::plans::owns_plan;
use crate::runs::parse_status;
use crate::schema::{execution_plans as plans, runs, schedules};
use crate::time::{now, to_naive, to_utc};
use crate::{Database, StorageError};

/// What to do with ticks missed while nothing was running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MisfirePolicy {
    /// Drop missed ticks; wait for the next one.
    Skip,
    /// One catch-up run for the missed ticks, if within the grace window (the default).
    #[default]
    Coalesce,
}

impl MisfirePolicy {
    /// The wire and storage name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Skip => "skip",
            Self::Coalesce => "coalesce",
        }
    }

    /// Parses the wire and storage name.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Skip, Self::Coalesce]
            .into_iter()
            .find(|p| p.as_str() == s)
    }
}

/// What to do with a tick while the schedule's previous run is still running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OverlapPolicy {
    /// Start it anyway (the default).
    #[default]
    Allow,
    /// Skip the tick.
    Skip,
}

impl OverlapPolicy {
    /// The wire and storage name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Skip => "skip",
        }
    }

    /// Parses the wire and storage name.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Allow, Self::Skip]
            .into_iter()
            .find(|p| p.as_str() == s)
    }
}

/// The default misfire grace window: one hour.
pub const DEFAULT_GRACE_SECONDS: i64 = 3600;

/// A schedule as `/schedule` sets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleSpec {
    /// 5 or 6 fields (validated by the caller).
    pub cron: String,
    /// IANA zone name.
    pub timezone: String,
    /// Misfire policy.
    pub misfire: MisfirePolicy,
    /// How late a coalesced catch-up may still run, in seconds.
    pub grace_seconds: i64,
    /// Overlap policy.
    pub overlap: OverlapPolicy,
    /// The next due time (UTC), from the cron library; `None` when it never fires again.
    pub next_run_at: Option<DateTime<Utc>>,
    /// Whether it fires.
    pub enabled: bool,
}

/// A stored schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleRow {
    /// The schedule's id (part of each fired run's logical occurrence).
    pub id: ScheduleId,
    /// Its owner.
    pub user_id: UserId,
    /// The plan it runs.
    pub plan_id: PlanId,
    /// The settings.
    pub spec: ScheduleSpec,
    /// When it last fired.
    pub last_run_at: Option<DateTime<Utc>>,
    /// The run it last created.
    pub last_run_id: Option<RunId>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it was last changed.
    pub updated_at: DateTime<Utc>,
}

/// A schedule as `GET /api/scheduler/jobs` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleListing {
    /// The schedule.
    pub schedule: ScheduleRow,
    /// The plan's current name.
    pub plan_name: String,
    /// The status of the run it last created, if that run still exists.
    pub last_run_status: Option<RunStatus>,
    /// The plan's status (`paused`: its ticks pass without runs).
    pub plan_status: String,
    /// Ticks skipped because the plan was paused.
    pub missed_paused: u64,
}

#[derive(Queryable, Selectable, Insertable, AsChangeset, Clone)]
#[diesel(table_name = schedules)]
#[diesel(treat_none_as_null = true)]
pub(crate) struct ScheduleRecord {
    pub(crate) id: String,
    pub(crate) user_id: String,
    pub(crate) plan_id: String,
    pub(crate) cron: String,
    pub(crate) timezone: String,
    pub(crate) misfire_policy: String,
    pub(crate) grace_seconds: i64,
    pub(crate) overlap_policy: String,
    pub(crate) next_run_at: Option<NaiveDateTime>,
    pub(crate) last_run_at: Option<NaiveDateTime>,
    pub(crate) last_run_id: Option<String>,
    pub(crate) enabled: bool,
    pub(crate) created_at: NaiveDateTime,
    pub(crate) updated_at: NaiveDateTime,
}

impl ScheduleRecord {
    pub(crate) fn into_row(self) -> Result<ScheduleRow, StorageError> {
        Ok(ScheduleRow {
            spec: ScheduleSpec {
                misfire: MisfirePolicy::parse(&self.misfire_policy).ok_or_else(|| {
                    StorageError::Corrupt(format!(
                        "unknown misfire policy '{}'",
                        self.misfire_policy
                    ))
                })?,
                overlap: OverlapPolicy::parse(&self.overlap_policy).ok_or_else(|| {
                    StorageError::Corrupt(format!(
                        "unknown overlap policy '{}'",
                        self.overlap_policy
                    ))
                })?,
                cron: self.cron,
                timezone: self.timezone,
                grace_seconds: self.grace_seconds,
                next_run_at: self.next_run_at.map(to_utc),
                enabled: self.enabled,
            },
            id: ScheduleId(self.id),
            user_id: UserId(self.user_id),
            plan_id: PlanId(self.plan_id),
            last_run_at: self.last_run_at.map(to_utc),
            last_run_id: self.last_run_id.map(RunId),
            created_at: to_utc(self.created_at),
            updated_at: to_utc(self.updated_at),
        })
    }
}

impl Database {
    /// Creates or replaces the schedule of the user's plan `plan` (its id and history are kept
    /// when it already exists). `None` when the plan is not theirs.
    pub async fn upsert_schedule(
        &self,
        user: &UserId,
        plan: &PlanId,
        spec: &ScheduleSpec,
    ) -> Result<Option<ScheduleRow>, StorageError> {
        if spec.grace_seconds < 0 {
            return Err(StorageError::InvalidInput(
                "grace_seconds must not be negative".to_owned(),
            ));
        }
        let (user, plan, spec) = (user.clone(), plan.clone(), spec.clone());
        self.run(move |conn| {
            transaction(conn, Scope::User(&user), Mode::Write, |conn| {
                if !owns_plan(conn, &user, &plan)? {
                    return Ok(None);
                }
                let target = schedules::table
                    .filter(schedules::user_id.eq(user.as_str()))
                    .filter(schedules::plan_id.eq(plan.as_str()));
                let existing = target
                    .select(ScheduleRecord::as_select())
                    .first(conn)
                    .optional()?;
                let at = now();
                let record = ScheduleRecord {
                    id: existing
                        .as_ref()
                        .map(|e| e.id.clone())
                        .unwrap_or_else(pilot_core::new_id),
                    user_id: user.0.clone(),
                    plan_id: plan.0.clone(),
                    cron: spec.cron.clone(),
                    timezone: spec.timezone.clone(),
                    misfire_policy: spec.misfire.as_str().to_owned(),
                    grace_seconds: spec.grace_seconds,
                    overlap_policy: spec.overlap.as_str().to_owned(),
                    next_run_at: spec.next_run_at.map(to_naive),
                    last_run_at: existing.as_ref().and_then(|e| e.last_run_at),
                    last_run_id: existing.as_ref().and_then(|e| e.last_run_id.clone()),
                    enabled: spec.enabled,
                    created_at: existing.as_ref().map(|e| e.created_at).unwrap_or(at),
                    updated_at: at,
                };
                if existing.is_some() {
                    diesel::update(target).set(&record).execute(conn)?;
                } else {
                    diesel::insert_into(schedules::table)
                        .values(&record)
                        .execute(conn)?;
                }
                // Workers sleeping until the old earliest due time must look again.
                crate::runs::notify_runs(conn)?;
                record.into_row().map(Some)
            })
        })
        .await
    }

    /// The schedule of the user's plan `plan`, if any.
    pub async fn schedule_for_plan(
        &self,
        user: &UserId,
        plan: &PlanId,
    ) -> Result<Option<ScheduleRow>, StorageError> {
        let (user, plan) = (user.clone(), plan.clone());
        self.run(move |conn| {
            transaction(conn, Scope::User(&user), Mode::Read, |conn| {
                schedules::table
                    .filter(schedules::user_id.eq(user.as_str()))
                    .filter(schedules::plan_id.eq(plan.as_str()))
                    .select(ScheduleRecord::as_select())
                    .first(conn)
                    .optional()?
                    .map(ScheduleRecord::into_row)
                    .transpose()
            })
        })
        .await
    }

    /// Removes the schedule of the user's plan `plan` (unschedule); `false` when there was none.
    pub async fn delete_schedule(
        &self,
        user: &UserId,
        plan: &PlanId,
    ) -> Result<bool, StorageError> {
        let (user, plan) = (user.clone(), plan.clone());
        self.run(move |conn| {
            transaction(conn, Scope::User(&user), Mode::Write, |conn| {
                let n = diesel::delete(
                    schedules::table
                        .filter(schedules::user_id.eq(user.as_str()))
                        .filter(schedules::plan_id.eq(plan.as_str())),
                )
                .execute(conn)?;
                Ok(n > 0)
            })
        })
        .await
    }

    /// The user's schedules, newest first, with their plan's name and last run's status.
    pub async fn list_schedules(
        &self,
        user: &UserId,
        page: &PageRequest,
    ) -> Result<Page<ScheduleListing>, StorageError> {
        let position = page.position()?;
        let limit = page.clamped_limit();
        let user = user.clone();
        self.run(move |conn| {
            transaction(conn, Scope::User(&user), Mode::Read, |conn| {
                let mut query = schedules::table
                    .inner_join(
                        plans::table.on(plans::id
                            .eq(schedules::plan_id)
                            .and(plans::user_id.eq(schedules::user_id))),
                    )
                    .left_join(
                        runs::table.on(runs::id
                            .nullable()
                            .eq(schedules::last_run_id)
                            .and(runs::user_id.eq(schedules::user_id))),
                    )
                    .filter(schedules::user_id.eq(user.as_str()))
                    .select((
                        ScheduleRecord::as_select(),
                        plans::name,
                        runs::status.nullable(),
                        plans::status,
                        schedules::missed_paused,
                    ))
                    .order((schedules::created_at.desc(), schedules::id.desc()))
                    .limit(limit + 1)
                    .into_boxed();
                if let Some(c) = position {
                    query = query.filter(after(schedules::created_at, schedules::id, c));
                }
                let rows: Vec<(ScheduleRecord, String, Option<String>, String, i64)> =
                    query.load(conn)?;
                paginate(
                    rows,
                    limit,
                    |r| (r.0.created_at, r.0.id.clone()),
                    |(record, plan_name, status, plan_status, missed_paused)| {
                        Ok(ScheduleListing {
                            schedule: record.into_row()?,
                            plan_name,
                            last_run_status: status.as_deref().map(parse_status).transpose()?,
                            plan_status,
                            missed_paused: u64::try_from(missed_paused).unwrap_or(0),
                        })
                    },
                )
            })
        })
        .await
    }
}
