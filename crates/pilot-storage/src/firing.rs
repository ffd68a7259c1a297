//! The scheduler's side of the tables: the firing transaction and the wake-up query. Written by
//! the scheduler's issue; it lives here because only this crate knows SQL.
//!
//! Firing claims due schedules, turns their ticks into queued runs and advances `next_run_at`,
//! all in one transaction, so a tick is either fully fired or not at all. Exactly one run per
//! tick, however many schedulers race, comes from two things: due rows are locked with
//! `FOR UPDATE SKIP LOCKED` in `(next_run_at, id)` order on PostgreSQL (SQLite has one writer:
//! `BEGIN IMMEDIATE`), and each run carries its logical occurrence `(schedule_id,
//! scheduled_for)` under the unique index `runs_schedule_occurrence`, inserted with `ON CONFLICT
//! DO NOTHING`, so even a tick fired twice by mistake yields one run. What a due schedule does
//! (misfire and overlap policies, the next due time) is decided by the caller's planner, which
//! holds the cron library; this module only applies the decision.

use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;
use pilot_core::{PlanId, RunId, RunStatus, ScheduleId, TriggerKind, UserId};

use crate::conn::{DbConn, Mode, Scope, set_scope, transaction};
use crate::runs::{NewRun, RunRecord};
use crate::schedules::{MisfirePolicy, OverlapPolicy, ScheduleRecord};
use crate::schema::{execution_plans as plans, runs, schedules};
use crate::time::{to_naive, to_utc};
use crate::{Database, StorageError};

/// The PostgreSQL channel told when runs become queued (workers `LISTEN` on it).
pub const RUNS_CHANNEL: &str = "pilot_runs";

/// A due schedule, locked by the firing transaction, as the planner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueSchedule {
    /// The schedule.
    pub id: ScheduleId,
    /// Its owner.
    pub user_id: UserId,
    /// The plan it runs.
    pub plan_id: PlanId,
    /// Its cron expression.
    pub cron: String,
    /// Its IANA zone.
    pub timezone: String,
    /// Its misfire policy.
    pub misfire: MisfirePolicy,
    /// Its grace window for a coalesced catch-up, in seconds.
    pub grace_seconds: i64,
    /// Its overlap policy.
    pub overlap: OverlapPolicy,
    /// The first tick not yet handled.
    pub next_run_at: DateTime<Utc>,
    /// Whether a run of this schedule is queued or running (read only for overlap `skip`).
    pub previous_run_active: bool,
}

/// What the planner decided for one due schedule.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FireDecision {
    /// The ticks to create queued runs for.
    pub fires: Vec<DateTime<Utc>>,
    /// The new `next_run_at`; `None` stops the schedule from firing (it never fires again).
    pub next_run_at: Option<DateTime<Utc>>,
    /// Ticks dropped by the misfire policy (passed through to the report).
    pub missed_misfire: u64,
    /// Ticks dropped by the overlap policy (passed through to the report).
    pub missed_overlap: u64,
}

/// One run a firing transaction created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FiredRun {
    /// The new queued run.
    pub run_id: RunId,
    /// The schedule that fired it.
    pub schedule_id: ScheduleId,
    /// Its tick.
    pub scheduled_for: DateTime<Utc>,
}

/// What one firing transaction did, once committed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FiringReport {
    /// How many due schedules it claimed (equal to the limit: there may be more).
    pub claimed: usize,
    /// The runs it created.
    pub fired: Vec<FiredRun>,
    /// Ticks whose run already existed (another scheduler fired them): no run was created.
    pub duplicates: usize,
    /// Ticks that created no run because the plan is gone.
    pub orphaned: usize,
    /// Sum of the decisions' `missed_misfire`.
    pub missed_misfire: u64,
    /// Sum of the decisions' `missed_overlap`.
    pub missed_overlap: u64,
    /// Ticks that created no run because the plan is paused.
    pub missed_paused: u64,
}

/// What the scheduler needs to know to decide how long it may sleep: one query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WakeInfo {
    /// The database's clock when it answered (lease expiries are on this clock).
    pub db_now: DateTime<Utc>,
    /// The earliest `next_run_at` of an enabled schedule.
    pub next_fire_at: Option<DateTime<Utc>>,
    /// Runs waiting for a worker (all users).
    pub queued: u64,
    /// The earliest lease expiry of a running run.
    pub next_lease_expiry: Option<DateTime<Utc>>,
    /// The earliest time a parked run becomes claimable (after `db_now`).
    pub next_available: Option<DateTime<Utc>>,
}

#[derive(QueryableByName)]
struct WakeRow {
    #[diesel(sql_type = diesel::sql_types::Timestamp)]
    db_now: NaiveDateTime,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Timestamp>)]
    next_fire_at: Option<NaiveDateTime>,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    queued: i64,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Timestamp>)]
    next_lease_expiry: Option<NaiveDateTime>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Timestamp>)]
    next_available: Option<NaiveDateTime>,
}

impl Database {
    /// The scheduler's wake-up query: database time, the earliest due schedule, the queue depth
    /// and the earliest lease expiry, across all users, in one statement.
    pub async fn wake_info(&self) -> Result<WakeInfo, StorageError> {
        self.run(|conn| {
            transaction(conn, Scope::Scheduler, Mode::Read, |conn| {
                // `{now}` is the backend's spelling of the database's clock; parked runs count
                // as queued once their time has come.
                const REST: &str = "(SELECT min(next_run_at) FROM schedules WHERE enabled) AS next_fire_at, \
                     (SELECT count(*) FROM runs WHERE status = 'queued' \
                        AND (available_at IS NULL OR available_at <= {now})) AS queued, \
                     (SELECT min(lease_expires_at) FROM runs WHERE status = 'running') AS next_lease_expiry, \
                     (SELECT min(available_at) FROM runs WHERE status = 'queued' \
                        AND available_at > {now}) AS next_available";
                let query = |now: &str| {
                    format!("SELECT {now} AS db_now, {}", REST.replace("{now}", now))
                };
                let row: WakeRow = match conn {
                    DbConn::Pg(c) => diesel::sql_query(query("(now() AT TIME ZONE 'UTC')")).get_result(c)?,
                    DbConn::Sqlite(c) => {
                        diesel::sql_query(query("strftime('%Y-%m-%d %H:%M:%f', 'now')")).get_result(c)?
                    }
                };
                Ok(WakeInfo {
                    db_now: to_utc(row.db_now),
                    next_fire_at: row.next_fire_at.map(to_utc),
                    queued: u64::try_from(row.queued).unwrap_or(0),
                    next_lease_expiry: row.next_lease_expiry.map(to_utc),
                    next_available: row.next_available.map(to_utc),
                })
            })
        })
        .await
    }

    /// One firing transaction: claims up to `limit` enabled schedules due at `now` (oldest tick
    /// first; on PostgreSQL skipping rows another scheduler holds), asks `planner` what each
    /// does, creates one queued run per fired tick (unique per `(schedule_id, scheduled_for)`),
    /// and stores each schedule's new `next_run_at` and last run, then commits. Runs snapshot
    /// their plan's steps as they are now. On PostgreSQL the workers listening on
    /// [`RUNS_CHANNEL`] are told at commit.
    pub async fn fire_due_schedules<F>(
        &self,
        now: DateTime<Utc>,
        limit: usize,
        mut planner: F,
    ) -> Result<FiringReport, StorageError>
    where
        F: FnMut(&DueSchedule) -> FireDecision + Send + 'static,
    {
        let now = to_naive(now);
        let limit = i64::try_from(limit.clamp(1, 10_000)).unwrap_or(10_000);
        self.run(move |conn| {
            transaction(conn, Scope::Scheduler, Mode::Write, |conn| {
                let due = lock_due(conn, now, limit)?;
                let mut report = FiringReport {
                    claimed: due.len(),
                    ..FiringReport::default()
                };
                for record in due {
                    fire_one(conn, record, now, &mut planner, &mut report)?;
                }
                if !report.fired.is_empty()
                    && let DbConn::Pg(c) = conn
                {
                    diesel::sql_query(format!("SELECT pg_notify('{RUNS_CHANNEL}', '')"))
                        .execute(c)?;
                }
                Ok(report)
            })
        })
        .await
    }
}

/// Locks the due schedules, in a deterministic order so racing schedulers never deadlock.
fn lock_due(
    conn: &mut DbConn,
    now: NaiveDateTime,
    limit: i64,
) -> Result<Vec<ScheduleRecord>, StorageError> {
    macro_rules! due {
        () => {
            schedules::table
                .filter(schedules::enabled.eq(true))
                .filter(schedules::next_run_at.le(now))
                .order((schedules::next_run_at, schedules::id))
                .limit(limit)
                .select(ScheduleRecord::as_select())
        };
    }
    Ok(match conn {
        DbConn::Pg(c) => due!().for_update().skip_locked().load(c)?,
        DbConn::Sqlite(c) => due!().load(c)?,
    })
}

/// Applies the planner's decision for one locked schedule, under its owner's scope (the plan
/// row is readable only there).
fn fire_one<F>(
    conn: &mut DbConn,
    record: ScheduleRecord,
    now: NaiveDateTime,
    planner: &mut F,
    report: &mut FiringReport,
) -> Result<(), StorageError>
where
    F: FnMut(&DueSchedule) -> FireDecision,
{
    let Some(next_run_at) = record.next_run_at else {
        return Ok(());
    };
    let (id, user_id) = (record.id.clone(), record.user_id.clone());
    let row = match record.into_row() {
        Ok(row) => row,
        Err(e) => {
            // One corrupt row must not stop every other schedule from firing: stop this one.
            tracing::error!(schedule_id = %id, error = %e, "corrupt schedule row; it will not fire again until it is saved anew");
            set_scope(conn, Scope::User(&UserId(user_id.clone())))?;
            diesel::update(
                schedules::table
                    .filter(schedules::id.eq(&id))
                    .filter(schedules::user_id.eq(&user_id)),
            )
            .set(schedules::next_run_at.eq(None::<NaiveDateTime>))
            .execute(conn)?;
            return Ok(());
        }
    };
    let user = row.user_id.clone();
    set_scope(conn, Scope::User(&user))?;
    let previous_run_active = row.spec.overlap == OverlapPolicy::Skip && {
        let active: i64 = runs::table
            .filter(runs::user_id.eq(user.as_str()))
            .filter(runs::schedule_id.eq(row.id.as_str()))
            .filter(runs::status.eq_any([RunStatus::Queued.as_str(), RunStatus::Running.as_str()]))
            .count()
            .get_result(conn)?;
        active > 0
    };
    let due = DueSchedule {
        id: row.id.clone(),
        user_id: user.clone(),
        plan_id: row.plan_id.clone(),
        cron: row.spec.cron.clone(),
        timezone: row.spec.timezone.clone(),
        misfire: row.spec.misfire,
        grace_seconds: row.spec.grace_seconds,
        overlap: row.spec.overlap,
        next_run_at: to_utc(next_run_at),
        previous_run_active,
    };
    let decision = planner(&due);
    report.missed_misfire += decision.missed_misfire;
    report.missed_overlap += decision.missed_overlap;

    let mut last_run_id = None;
    if !decision.fires.is_empty() {
        let plan: Option<(String, String, String)> = plans::table
            .filter(plans::user_id.eq(user.as_str()))
            .filter(plans::id.eq(row.plan_id.as_str()))
            .select((plans::name, plans::plan_json, plans::status))
            .first(conn)
            .optional()?;
        match plan {
            None => report.orphaned += decision.fires.len(),
            Some((_, _, status)) if status == "paused" => {
                // A paused plan's ticks pass without runs; firing resumes at the first tick
                // after it is active again.
                let n = decision.fires.len() as u64;
                report.missed_paused += n;
                diesel::update(
                    schedules::table
                        .filter(schedules::id.eq(row.id.as_str()))
                        .filter(schedules::user_id.eq(user.as_str())),
                )
                .set(
                    schedules::missed_paused
                        .eq(schedules::missed_paused + i64::try_from(n).unwrap_or(i64::MAX)),
                )
                .execute(conn)?;
            }
            Some((plan_name, plan_json, _)) => match crate::stored::decode_steps(&plan_json) {
                Err(e) => {
                    tracing::error!(schedule_id = %row.id, error = %e, "the plan's steps do not decode; ticks dropped");
                    report.orphaned += decision.fires.len();
                }
                Ok(steps) => {
                    for tick in &decision.fires {
                        let run = NewRun {
                            plan_id: Some(row.plan_id.clone()),
                            plan_name: plan_name.clone(),
                            steps: steps.clone(),
                            input: serde_json::Value::Null,
                            trigger: TriggerKind::Schedule,
                            schedule_id: Some(row.id.clone()),
                            scheduled_for: Some(*tick),
                        };
                        let record = RunRecord::new(&user, &run, None)?;
                        if insert_unless_fired(conn, &record)? {
                            last_run_id = Some(record.id.clone());
                            report.fired.push(FiredRun {
                                run_id: RunId(record.id.clone()),
                                schedule_id: row.id.clone(),
                                scheduled_for: *tick,
                            });
                        } else {
                            report.duplicates += 1;
                        }
                    }
                }
            },
        }
    }

    let target = schedules::table
        .filter(schedules::id.eq(row.id.as_str()))
        .filter(schedules::user_id.eq(user.as_str()));
    let next = decision.next_run_at.map(to_naive);
    match last_run_id {
        Some(run_id) => diesel::update(target)
            .set((
                schedules::next_run_at.eq(next),
                schedules::last_run_at.eq(Some(now)),
                schedules::last_run_id.eq(Some(run_id)),
            ))
            .execute(conn)?,
        None => diesel::update(target)
            .set(schedules::next_run_at.eq(next))
            .execute(conn)?,
    };
    Ok(())
}

/// Inserts a scheduled run unless its `(schedule_id, scheduled_for)` already has one; answers
/// whether it was inserted.
fn insert_unless_fired(conn: &mut DbConn, record: &RunRecord) -> Result<bool, StorageError> {
    let inserted = match conn {
        DbConn::Pg(c) => diesel::insert_into(runs::table)
            .values(record)
            .on_conflict_do_nothing()
            .execute(c)?,
        DbConn::Sqlite(c) => diesel::insert_into(runs::table)
            .values(record)
            .on_conflict_do_nothing()
            .execute(c)?,
    };
    Ok(inserted == 1)
}
