//! Runs and their per-step state: creation (queued, or running under a lease for inline
//! execution by the API), reads for the API, cancellation, and the worker side of the queue:
//! claiming queued and expired runs under a lease computed from database time, heartbeats,
//! release, and the takeover cap. Every change a worker makes is fenced by the lease epoch.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;
use pilot_core::{
    CancelSignal, PlanId, RunEnd, RunId, RunSnapshot, RunStatus, RunWrite, ScheduleId, Step,
    StepState, StepStatus, TriggerKind, UserId, WriteAck,
};
use serde_json::Value;

use crate::conn::{DbConn, Mode, Scope, set_scope, transaction};
use crate::page::{Page, PageRequest, paginate};
use crate::schema::{execution_logs, run_steps, runs};
use crate::time::{db_now, now, to_naive, to_utc};
use crate::{Database, StorageError};

/// What a new run executes and why.
#[derive(Debug, Clone, PartialEq)]
pub struct NewRun {
    /// The stored plan it comes from (`None` for ad-hoc plans and execute-step).
    pub plan_id: Option<PlanId>,
    /// Copied into each log row.
    pub plan_name: String,
    /// The snapshot of the steps this run executes.
    pub steps: Vec<Step>,
    /// `${input}`.
    pub input: Value,
    /// How it was started.
    pub trigger: TriggerKind,
    /// The schedule that fired it (scheduled runs only).
    pub schedule_id: Option<ScheduleId>,
    /// The logical tick it belongs to (scheduled runs only); unique per schedule.
    pub scheduled_for: Option<DateTime<Utc>>,
}

/// A lease: who holds a run and for how long (from database time).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// A name for the holder (e.g. `host:pid:worker-3`), shown on the run.
    pub owner: String,
    /// How long the lease lasts without a heartbeat.
    pub ttl: Duration,
}

/// A run as the API shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRow {
    /// The run's id.
    pub id: RunId,
    /// Its owner.
    pub user_id: UserId,
    /// The stored plan it came from, if any.
    pub plan_id: Option<PlanId>,
    /// The plan's name at creation.
    pub plan_name: String,
    /// The steps it executes (its own snapshot).
    pub steps: Vec<Step>,
    /// How it was started.
    pub trigger: TriggerKind,
    /// The schedule that fired it.
    pub schedule_id: Option<ScheduleId>,
    /// The logical tick it belongs to.
    pub scheduled_for: Option<DateTime<Utc>>,
    /// `${input}`.
    pub input: Value,
    /// Where it is.
    pub status: RunStatus,
    /// One entry per step (pending where nothing was recorded yet).
    pub states: Vec<StepState>,
    /// Why it failed.
    pub error: Option<String>,
    /// Whether its owner asked to cancel it.
    pub cancel_requested: bool,
    /// Who holds the lease.
    pub lease_owner: Option<String>,
    /// The current lease epoch (the fencing token).
    pub lease_epoch: i64,
    /// When the lease ends without a heartbeat.
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// How many times an expired lease was taken over.
    pub takeover_count: u32,
    /// When it was committed.
    pub created_at: DateTime<Utc>,
    /// When it was first claimed.
    pub started_at: Option<DateTime<Utc>>,
    /// When it ended.
    pub finished_at: Option<DateTime<Utc>>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

impl RunRow {
    /// What the engine needs to execute or resume this run under its current epoch.
    pub fn snapshot(&self) -> RunSnapshot {
        RunSnapshot {
            run_id: self.id.clone(),
            plan_id: self.plan_id.clone(),
            user_id: self.user_id.clone(),
            plan_name: self.plan_name.clone(),
            steps: self.steps.clone(),
            input: self.input.clone(),
            states: self.states.clone(),
            epoch: self.lease_epoch,
            trigger: self.trigger,
            cancel: CancelSignal::new(self.cancel_requested),
        }
    }

    /// [`RunRow::snapshot`] without copying the steps, input and states.
    fn into_snapshot(self) -> RunSnapshot {
        RunSnapshot {
            run_id: self.id,
            plan_id: self.plan_id,
            user_id: self.user_id,
            plan_name: self.plan_name,
            steps: self.steps,
            input: self.input,
            states: self.states,
            epoch: self.lease_epoch,
            trigger: self.trigger,
            cancel: CancelSignal::new(self.cancel_requested),
        }
    }
}

/// What a cancel request did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// The run was queued and is now cancelled.
    Cancelled,
    /// The run is running; its executor stops at the next step boundary.
    Requested,
    /// The run had already ended with this status; nothing changed.
    AlreadyFinished(RunStatus),
}

/// Which of a user's runs to list; empty fields do not filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunFilter {
    /// Runs of this plan.
    pub plan_id: Option<PlanId>,
    /// Runs in any of these statuses.
    pub statuses: Vec<RunStatus>,
    /// Runs started this way.
    pub trigger: Option<TriggerKind>,
    /// Created at or after.
    pub created_after: Option<DateTime<Utc>>,
    /// Created before.
    pub created_before: Option<DateTime<Utc>>,
}

/// A worker's request for work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimRequest {
    /// The lease holder's name.
    pub owner: String,
    /// Most runs to claim.
    pub limit: usize,
    /// Lease length.
    pub ttl: Duration,
    /// Takeovers allowed per run; a run whose lease expires once more fails instead.
    pub max_takeovers: u32,
    /// Most runs of one user executing at once, across every worker (queued runs of a user at
    /// the cap wait); 0 for no cap.
    pub max_running_per_user: u32,
}

/// One claimed run.
#[derive(Debug, Clone)]
pub struct ClaimedRun {
    /// What to execute, with the new epoch.
    pub snapshot: RunSnapshot,
    /// When the lease ends without a heartbeat.
    pub lease_expires_at: DateTime<Utc>,
    /// Whether this claim took over an expired lease (rather than a queued run).
    pub taken_over: bool,
    /// Takeovers so far, including this one.
    pub takeover_count: u32,
}

/// A run failed because its lease expired more often than the cap allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AbandonedRun {
    /// The run.
    pub run_id: RunId,
    /// Its owner.
    pub user_id: UserId,
    /// Takeovers it had.
    pub takeover_count: u32,
}

/// What a claim did.
#[derive(Debug, Clone, Default)]
pub struct ClaimOutcome {
    /// Runs now leased to the caller.
    pub claimed: Vec<ClaimedRun>,
    /// Runs failed for exceeding the takeover cap.
    pub abandoned: Vec<AbandonedRun>,
}

/// Queue counters (all users), for metrics and for sleeping until work is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueStats {
    /// Runs waiting for a worker.
    pub queued: u64,
    /// Runs under a lease.
    pub running: u64,
    /// The earliest lease expiry among running runs.
    pub next_lease_expiry: Option<DateTime<Utc>>,
}

/// The error message of a run failed by the takeover cap.
pub const TAKEOVER_CAP_MESSAGE: &str = "quarantined: the run was in flight when its worker \
     stopped without finishing it (the lease expired) more often than the takeover cap \
     (PILOT_MAX_TAKEOVERS) allows; it may be what crashed them, so it is not resumed again";

#[derive(Queryable, Selectable, Insertable, Clone)]
#[diesel(table_name = runs)]
pub(crate) struct RunRecord {
    pub(crate) id: String,
    pub(crate) user_id: String,
    pub(crate) plan_id: Option<String>,
    pub(crate) plan_name: String,
    pub(crate) steps_json: String,
    pub(crate) step_count: i32,
    pub(crate) trigger_kind: String,
    pub(crate) schedule_id: Option<String>,
    pub(crate) scheduled_for: Option<NaiveDateTime>,
    pub(crate) input_json: String,
    pub(crate) status: String,
    pub(crate) error: Option<String>,
    pub(crate) cancel_requested: bool,
    pub(crate) lease_owner: Option<String>,
    pub(crate) lease_epoch: i64,
    pub(crate) lease_expires_at: Option<NaiveDateTime>,
    pub(crate) takeover_count: i32,
    pub(crate) created_at: NaiveDateTime,
    pub(crate) started_at: Option<NaiveDateTime>,
    pub(crate) finished_at: Option<NaiveDateTime>,
    pub(crate) updated_at: NaiveDateTime,
}

#[derive(Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = run_steps)]
#[diesel(treat_none_as_null = true)]
struct StepRecord {
    run_id: String,
    step_index: i32,
    user_id: String,
    step_id: String,
    status: String,
    output_json: Option<String>,
    error: Option<String>,
    attempts: i32,
    latency_ms: i64,
    started_at: Option<NaiveDateTime>,
    finished_at: Option<NaiveDateTime>,
    updated_at: NaiveDateTime,
}

/// An execution-log row as inserted, borrowing from the engine's record (no copies per row).
#[derive(Insertable)]
#[diesel(table_name = execution_logs)]
struct LogInsert<'a> {
    id: String,
    plan_id: Option<&'a str>,
    run_id: &'a str,
    user_id: &'a str,
    plan_name: &'a str,
    step_number: i32,
    step_id: &'a str,
    provider: &'a str,
    action: &'a str,
    attempt: i32,
    status: &'a str,
    message: Option<&'a str>,
    latency_ms: i64,
    output_preview: Option<&'a str>,
    error: Option<&'a str>,
    timestamp: NaiveDateTime,
    created_at: NaiveDateTime,
}

impl RunRecord {
    /// A new run row: queued, or running under `lease` from `at`.
    pub(crate) fn new(
        user: &UserId,
        run: &NewRun,
        lease: Option<(&Lease, NaiveDateTime)>,
    ) -> Result<Self, StorageError> {
        let step_count = i32::try_from(run.steps.len())
            .map_err(|_| StorageError::InvalidInput("too many steps".to_owned()))?;
        let created_at = lease.map(|(_, at)| at).unwrap_or_else(now);
        let (status, owner, epoch, expires, started) = match lease {
            Some((lease, at)) => (
                RunStatus::Running,
                Some(lease.owner.clone()),
                1,
                Some(lease_end(at, lease.ttl)?),
                Some(at),
            ),
            None => (RunStatus::Queued, None, 0, None, None),
        };
        Ok(Self {
            id: RunId::new().0,
            user_id: user.0.clone(),
            plan_id: run.plan_id.as_ref().map(|p| p.0.clone()),
            plan_name: run.plan_name.clone(),
            steps_json: crate::stored::encode_steps(&run.steps)?,
            step_count,
            trigger_kind: run.trigger.as_str().to_owned(),
            schedule_id: run.schedule_id.as_ref().map(|s| s.0.clone()),
            scheduled_for: run.scheduled_for.map(to_naive),
            input_json: serde_json::to_string(&run.input)?,
            status: status.as_str().to_owned(),
            error: None,
            cancel_requested: false,
            lease_owner: owner,
            lease_epoch: epoch,
            lease_expires_at: expires,
            takeover_count: 0,
            created_at,
            started_at: started,
            finished_at: None,
            updated_at: created_at,
        })
    }

    /// The row as the API shows it, from its already decoded steps and their states.
    fn into_row(self, steps: Vec<Step>, states: Vec<StepState>) -> Result<RunRow, StorageError> {
        let input = serde_json::from_str(&self.input_json)?;
        self.into_row_with(steps, input, states)
    }

    /// Like [`RunRecord::into_row`] for a run just inserted from `steps` and `input`: nothing is
    /// decoded again, every step is pending.
    fn into_new_row(self, steps: Vec<Step>, input: Value) -> Result<RunRow, StorageError> {
        let states = pending_states(&steps);
        self.into_row_with(steps, input, states)
    }

    fn into_row_with(
        self,
        steps: Vec<Step>,
        input: Value,
        states: Vec<StepState>,
    ) -> Result<RunRow, StorageError> {
        Ok(RunRow {
            id: RunId(self.id),
            user_id: UserId(self.user_id),
            plan_id: self.plan_id.map(PlanId),
            plan_name: self.plan_name,
            steps,
            trigger: TriggerKind::parse(&self.trigger_kind).ok_or_else(|| {
                StorageError::Corrupt(format!("unknown trigger kind '{}'", self.trigger_kind))
            })?,
            schedule_id: self.schedule_id.map(ScheduleId),
            scheduled_for: self.scheduled_for.map(to_utc),
            input,
            status: parse_status(&self.status)?,
            states,
            error: self.error,
            cancel_requested: self.cancel_requested,
            lease_owner: self.lease_owner,
            lease_epoch: self.lease_epoch,
            lease_expires_at: self.lease_expires_at.map(to_utc),
            takeover_count: u32::try_from(self.takeover_count).unwrap_or(0),
            created_at: to_utc(self.created_at),
            started_at: self.started_at.map(to_utc),
            finished_at: self.finished_at.map(to_utc),
            updated_at: to_utc(self.updated_at),
        })
    }
}

impl StepRecord {
    fn new(
        run: &RunId,
        user: &UserId,
        index: i32,
        state: &StepState,
    ) -> Result<Self, StorageError> {
        Ok(Self {
            run_id: run.0.clone(),
            step_index: index,
            user_id: user.0.clone(),
            step_id: state.step_id.clone(),
            status: state.status.as_str().to_owned(),
            output_json: state
                .output
                .as_ref()
                .map(serde_json::to_string)
                .transpose()?,
            error: state.error.clone(),
            attempts: i32::try_from(state.attempts).unwrap_or(i32::MAX),
            latency_ms: i64::try_from(state.latency_ms).unwrap_or(i64::MAX),
            started_at: state.started_at.map(to_naive),
            finished_at: state.finished_at.map(to_naive),
            updated_at: now(),
        })
    }

    fn into_state(self) -> Result<(i32, StepState), StorageError> {
        let status = match self.status.as_str() {
            "pending" => StepStatus::Pending,
            "succeeded" => StepStatus::Succeeded,
            "failed" => StepStatus::Failed,
            "skipped" => StepStatus::Skipped,
            other => {
                return Err(StorageError::Corrupt(format!(
                    "unknown step status '{other}'"
                )));
            }
        };
        Ok((
            self.step_index,
            StepState {
                step_id: self.step_id,
                status,
                output: self
                    .output_json
                    .as_deref()
                    .map(serde_json::from_str)
                    .transpose()?,
                error: self.error,
                attempts: u32::try_from(self.attempts).unwrap_or(0),
                latency_ms: u64::try_from(self.latency_ms).unwrap_or(0),
                started_at: self.started_at.map(to_utc),
                finished_at: self.finished_at.map(to_utc),
            },
        ))
    }
}

pub(crate) fn parse_status(s: &str) -> Result<RunStatus, StorageError> {
    RunStatus::parse(s).ok_or_else(|| StorageError::Corrupt(format!("unknown run status '{s}'")))
}

/// When a lease of `ttl` taken at `at` ends; a ttl past the calendar's end is refused rather
/// than overflowing chrono's arithmetic (which panics).
fn lease_end(at: NaiveDateTime, ttl: Duration) -> Result<NaiveDateTime, StorageError> {
    chrono::Duration::from_std(ttl)
        .ok()
        .and_then(|ttl| at.checked_add_signed(ttl))
        .ok_or_else(|| StorageError::InvalidInput("lease ttl out of range".to_owned()))
}

/// Moves a leased run's times to `at` (the database clock of the transaction inserting it).
pub(crate) fn restamp_lease(
    record: &mut RunRecord,
    at: NaiveDateTime,
    ttl: Duration,
) -> Result<(), StorageError> {
    record.created_at = at;
    record.updated_at = at;
    record.started_at = Some(at);
    record.lease_expires_at = Some(lease_end(at, ttl)?);
    Ok(())
}

/// Inserts a run row (the scheduler's firing transaction uses this too).
pub(crate) fn insert_run(conn: &mut DbConn, record: &RunRecord) -> Result<(), StorageError> {
    diesel::insert_into(runs::table)
        .values(record)
        .execute(conn)?;
    Ok(())
}

/// Loads runs with their recorded step states; the caller's scope must cover `user`.
fn load_runs(conn: &mut DbConn, records: Vec<RunRecord>) -> Result<Vec<RunRow>, StorageError> {
    if records.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<&str> = records.iter().map(|r| r.id.as_str()).collect();
    let users: Vec<&str> = records.iter().map(|r| r.user_id.as_str()).collect();
    let steps = run_steps::table
        .filter(run_steps::run_id.eq_any(&ids))
        .filter(run_steps::user_id.eq_any(&users))
        .order((run_steps::run_id, run_steps::step_index))
        .select(StepRecord::as_select())
        .load(conn)?;
    let mut by_run: HashMap<String, Vec<StepRecord>> = HashMap::new();
    for s in steps {
        by_run.entry(s.run_id.clone()).or_default().push(s);
    }
    records
        .into_iter()
        .map(|r| {
            let recorded = by_run.remove(&r.id).unwrap_or_default();
            let count = usize::try_from(r.step_count).unwrap_or(0);
            let mut states: Vec<Option<StepState>> = vec![None; count];
            for s in recorded {
                let (i, state) = s.into_state()?;
                if let Some(slot) = usize::try_from(i).ok().and_then(|i| states.get_mut(i)) {
                    *slot = Some(state);
                }
            }
            let steps: Vec<Step> = crate::stored::decode_steps(&r.steps_json)?;
            let states = states
                .into_iter()
                .zip(steps.iter())
                .map(|(s, step)| s.unwrap_or_else(|| StepState::pending(step.id.clone())))
                .collect();
            r.into_row(steps, states)
        })
        .collect()
}

fn load_run(conn: &mut DbConn, user: &UserId, id: &RunId) -> Result<Option<RunRow>, StorageError> {
    let record = runs::table
        .filter(runs::user_id.eq(user.as_str()))
        .filter(runs::id.eq(id.as_str()))
        .select(RunRecord::as_select())
        .get_result(conn)
        .optional()?;
    Ok(load_runs(conn, record.into_iter().collect())?.pop())
}

/// Why a fenced update matched nothing: the run is missing (or another user's), or the epoch
/// moved on.
fn fence_failure(conn: &mut DbConn, user: &UserId, id: &RunId) -> StorageError {
    let exists = runs::table
        .filter(runs::user_id.eq(user.as_str()))
        .filter(runs::id.eq(id.as_str()))
        .count()
        .get_result::<i64>(conn);
    match exists {
        Ok(0) => StorageError::NotFound,
        Ok(_) => StorageError::StaleEpoch,
        Err(e) => e.into(),
    }
}

/// A run row for the group-commit writer to insert (runs are described here, and the writer
/// applies them: the dependency goes one way).
pub(crate) struct NewRunJob {
    /// Its owner (the transaction's scope while it is inserted).
    pub(crate) user: UserId,
    /// The row, stamped with the application clock.
    pub(crate) record: Box<RunRecord>,
    /// `Some(ttl)` for a run started under a lease: on PostgreSQL its times are restamped from
    /// the database clock, as every lease is.
    pub(crate) lease_ttl: Option<Duration>,
    /// Tell listening workers at commit (a queued run).
    pub(crate) notify: bool,
}

/// Applies one engine write inside an open transaction whose scope is the write's user (the
/// group-commit writer sets it once per run of same-user writes): the fenced run update first
/// (so a stale write changes nothing), then the step state, then the log rows.
pub(crate) fn apply_write(conn: &mut DbConn, write: &RunWrite) -> Result<WriteAck, StorageError> {
    let at = now();
    type Returned = (diesel::sql_types::Bool, diesel::sql_types::Integer);
    let (id, user, running) = (
        write.run_id.as_str(),
        write.user_id.as_str(),
        RunStatus::Running.as_str(),
    );
    let fence = [
        Arg::Text(id),
        Arg::Text(user),
        Arg::BigInt(write.epoch),
        Arg::Text(running),
    ];
    let parked = matches!(write.end, Some(RunEnd::Park { .. }));
    let update: Fixed<'_, Returned> = match &write.end {
        Some(RunEnd::Finish(finish)) => {
            if !finish.status.is_terminal() {
                return Err(StorageError::InvalidInput(
                    "a run can only finish with a terminal status".to_owned(),
                ));
            }
            let mut args = vec![
                Arg::Text(finish.status.as_str()),
                Arg::OptText(finish.error.as_deref()),
                Arg::Time(at),
                Arg::Time(at),
            ];
            args.extend(fence);
            Fixed::new(FINISH_RUN_SQL, args)
        }
        Some(RunEnd::Park { resume_after }) => {
            // Claims compare `available_at` with the database's clock: compute it from there.
            let until = lease_end(db_now(conn)?, *resume_after)?;
            let mut args = vec![
                Arg::Text(RunStatus::Queued.as_str()),
                Arg::Time(until),
                Arg::Time(at),
            ];
            args.extend(fence);
            Fixed::new(PARK_RUN_SQL, args)
        }
        None => {
            let mut args = vec![Arg::Time(at)];
            args.extend(fence);
            Fixed::new(UPDATE_RUN_SQL, args)
        }
    };
    let fenced: Option<(bool, i32)> = match conn {
        DbConn::Pg(c) => update.get_result(c).optional()?,
        DbConn::Sqlite(c) => update.get_result(c).optional()?,
    };
    let Some((cancel_requested, step_count)) = fenced else {
        return Err(fence_failure(conn, &write.user_id, &write.run_id));
    };
    for (key, state) in &write.steps {
        if key.item.is_some() {
            return Err(StorageError::InvalidInput(
                "per-item step states are not stored by this version".to_owned(),
            ));
        }
        let index = i32::try_from(key.index)
            .ok()
            .filter(|i| *i < step_count)
            .ok_or_else(|| {
                StorageError::InvalidInput(format!(
                    "step index {} is out of range for this run",
                    key.index
                ))
            })?;
        let r = StepRecord::new(&write.run_id, &write.user_id, index, state)?;
        // The run row is already fenced and locked, and step rows carry the run owner's id, so
        // the conflicting row can only be this run's own.
        let upsert: Fixed<'_, ()> = Fixed::new(
            UPSERT_STEP_SQL,
            vec![
                Arg::Text(&r.run_id),
                Arg::Int(r.step_index),
                Arg::Text(&r.user_id),
                Arg::Text(&r.step_id),
                Arg::Text(&r.status),
                Arg::OptText(r.output_json.as_deref()),
                Arg::OptText(r.error.as_deref()),
                Arg::Int(r.attempts),
                Arg::BigInt(r.latency_ms),
                Arg::OptTime(r.started_at),
                Arg::OptTime(r.finished_at),
                Arg::Time(r.updated_at),
            ],
        );
        execute_fixed(conn, upsert)?;
    }
    if parked {
        notify_runs(conn)?;
    }
    let rows: Vec<LogInsert> = write
        .logs
        .iter()
        .map(|l| LogInsert {
            id: pilot_core::new_id(),
            plan_id: l.plan_id.as_ref().map(PlanId::as_str),
            run_id: write.run_id.as_str(),
            user_id: write.user_id.as_str(),
            plan_name: &l.plan_name,
            step_number: i32::try_from(l.step_number).unwrap_or(i32::MAX),
            step_id: &l.step_id,
            provider: &l.provider,
            action: &l.action,
            attempt: i32::try_from(l.attempt).unwrap_or(i32::MAX),
            status: &l.status,
            message: l.message.as_deref(),
            latency_ms: i64::try_from(l.latency_ms).unwrap_or(i64::MAX),
            output_preview: l.output_preview.as_deref(),
            error: l.error.as_deref(),
            timestamp: to_naive(l.timestamp),
            created_at: at,
        })
        .collect();
    match rows.as_slice() {
        [] => {}
        [l] => {
            let insert: Fixed<'_, ()> = Fixed::new(
                INSERT_LOG_SQL,
                vec![
                    Arg::Text(&l.id),
                    Arg::OptText(l.plan_id),
                    Arg::Text(l.run_id),
                    Arg::Text(l.user_id),
                    Arg::Text(l.plan_name),
                    Arg::Int(l.step_number),
                    Arg::Text(l.step_id),
                    Arg::Text(l.provider),
                    Arg::Text(l.action),
                    Arg::Int(l.attempt),
                    Arg::Text(l.status),
                    Arg::OptText(l.message),
                    Arg::BigInt(l.latency_ms),
                    Arg::OptText(l.output_preview),
                    Arg::OptText(l.error),
                    Arg::Time(l.timestamp),
                    Arg::Time(l.created_at),
                ],
            );
            execute_fixed(conn, insert)?;
        }
        // A multi-row insert does not compile on the enum: expand it per backend.
        _ => {
            match conn {
                DbConn::Pg(c) => diesel::insert_into(execution_logs::table)
                    .values(&rows)
                    .execute(c)?,
                DbConn::Sqlite(c) => diesel::insert_into(execution_logs::table)
                    .values(&rows)
                    .execute(c)?,
            };
        }
    }
    Ok(WriteAck { cancel_requested })
}

/// One bind of a [`Fixed`] statement.
enum Arg<'a> {
    Text(&'a str),
    OptText(Option<&'a str>),
    Int(i32),
    BigInt(i64),
    Time(NaiveDateTime),
    OptTime(Option<NaiveDateTime>),
}

/// A statement of constant text (its binds marked `?`, rendered per backend) that diesel keeps
/// prepared in its statement cache. diesel's own `UPDATE`, `ON CONFLICT DO UPDATE` and
/// multi-row `INSERT` builders opt out of that cache, so each engine write used to be
/// compiled afresh (28 % of the server's instructions on SQLite; parsed and planned for every
/// write on PostgreSQL). `ST` is the SQL type of the rows a `RETURNING` clause answers.
struct Fixed<'a, ST> {
    sql: &'static str,
    args: Vec<Arg<'a>>,
    returns: std::marker::PhantomData<ST>,
}

impl<'a, ST> Fixed<'a, ST> {
    fn new(sql: &'static str, args: Vec<Arg<'a>>) -> Self {
        Self {
            sql,
            args,
            returns: std::marker::PhantomData,
        }
    }
}

impl<ST> diesel::query_builder::QueryId for Fixed<'_, ST> {
    type QueryId = ();
    // Keyed by its SQL text in the cache (several statements share this type).
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<ST: 'static> diesel::query_builder::Query for Fixed<'_, ST> {
    type SqlType = ST;
}

impl<ST, Conn> RunQueryDsl<Conn> for Fixed<'_, ST> {}

impl<ST, DB> diesel::query_builder::QueryFragment<DB> for Fixed<'_, ST>
where
    DB: diesel::backend::Backend
        + diesel::sql_types::HasSqlType<diesel::sql_types::Text>
        + diesel::sql_types::HasSqlType<diesel::sql_types::Integer>
        + diesel::sql_types::HasSqlType<diesel::sql_types::BigInt>
        + diesel::sql_types::HasSqlType<diesel::sql_types::Timestamp>,
    str: diesel::serialize::ToSql<diesel::sql_types::Text, DB>,
    i32: diesel::serialize::ToSql<diesel::sql_types::Integer, DB>,
    i64: diesel::serialize::ToSql<diesel::sql_types::BigInt, DB>,
    NaiveDateTime: diesel::serialize::ToSql<diesel::sql_types::Timestamp, DB>,
{
    fn walk_ast<'b>(
        &'b self,
        mut out: diesel::query_builder::AstPass<'_, 'b, DB>,
    ) -> QueryResult<()> {
        use diesel::sql_types::{BigInt, Integer, Nullable, Text, Timestamp};
        let mut args = self.args.iter();
        let mut pieces = self.sql.split('?');
        if let Some(first) = pieces.next() {
            out.push_sql(first);
        }
        for piece in pieces {
            match args.next() {
                Some(Arg::Text(v)) => out.push_bind_param::<Text, str>(v)?,
                Some(Arg::OptText(v)) => out.push_bind_param::<Nullable<Text>, _>(v)?,
                Some(Arg::Int(v)) => out.push_bind_param::<Integer, _>(v)?,
                Some(Arg::BigInt(v)) => out.push_bind_param::<BigInt, _>(v)?,
                Some(Arg::Time(v)) => out.push_bind_param::<Timestamp, _>(v)?,
                Some(Arg::OptTime(v)) => out.push_bind_param::<Nullable<Timestamp>, _>(v)?,
                None => {
                    return Err(diesel::result::Error::QueryBuilderError(
                        "a fixed statement has more markers than binds".into(),
                    ));
                }
            }
            out.push_sql(piece);
        }
        Ok(())
    }
}

/// The fenced run update of a write that does not end the run.
const UPDATE_RUN_SQL: &str = "UPDATE runs SET updated_at = ? \
     WHERE id = ? AND user_id = ? AND lease_epoch = ? AND status = ? \
     RETURNING cancel_requested, step_count";

/// The fenced run update of the write that ends the run.
const FINISH_RUN_SQL: &str = "UPDATE runs SET status = ?, error = ?, finished_at = ?, \
     lease_owner = NULL, lease_expires_at = NULL, updated_at = ? \
     WHERE id = ? AND user_id = ? AND lease_epoch = ? AND status = ? \
     RETURNING cancel_requested, step_count";

/// The fenced run update of the write that parks the run: back to the queue, lease given up,
/// claimable at `available_at`.
const PARK_RUN_SQL: &str = "UPDATE runs SET status = ?, available_at = ?, lease_owner = NULL, \
     lease_expires_at = NULL, updated_at = ? \
     WHERE id = ? AND user_id = ? AND lease_epoch = ? AND status = ? \
     RETURNING cancel_requested, step_count";

/// A step's state, inserted or replaced (the same text on both backends).
const UPSERT_STEP_SQL: &str = "INSERT INTO run_steps (run_id, step_index, user_id, step_id, \
     status, output_json, error, attempts, latency_ms, started_at, finished_at, updated_at) \
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
     ON CONFLICT (run_id, step_index) DO UPDATE SET user_id = excluded.user_id, \
     step_id = excluded.step_id, status = excluded.status, output_json = excluded.output_json, \
     error = excluded.error, attempts = excluded.attempts, latency_ms = excluded.latency_ms, \
     started_at = excluded.started_at, finished_at = excluded.finished_at, \
     updated_at = excluded.updated_at";

/// One execution-log row (a write usually carries one; more go through diesel's multi-row
/// insert).
const INSERT_LOG_SQL: &str = "INSERT INTO execution_logs (id, plan_id, run_id, user_id, \
     plan_name, step_number, step_id, provider, action, attempt, status, message, latency_ms, \
     output_preview, error, \"timestamp\", created_at) \
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";

/// Runs a fixed statement on whichever backend `conn` is.
fn execute_fixed(conn: &mut DbConn, q: Fixed<'_, ()>) -> Result<usize, StorageError> {
    Ok(match conn {
        DbConn::Pg(c) => q.execute(c)?,
        DbConn::Sqlite(c) => q.execute(c)?,
    })
}

impl Database {
    /// Commits a queued run for a worker to pick up (`async: true`, webhooks), through the
    /// group-commit writer (answered after the commit).
    /// On PostgreSQL, workers listening on [`crate::RUNS_CHANNEL`] are told at commit.
    pub async fn enqueue_run(&self, user: &UserId, run: &NewRun) -> Result<RunRow, StorageError> {
        let record = RunRecord::new(user, run, None)?;
        let record = self
            .inner
            .writer
            .insert(NewRunJob {
                user: user.clone(),
                record: Box::new(record),
                lease_ttl: None,
                notify: true,
            })
            .await?;
        record.into_new_row(run.steps.clone(), run.input.clone())
    }

    /// Commits a run that the caller executes itself (inline `POST /api/execute`), already
    /// running under `lease` with epoch 1; a crash leaves it to be taken over when the lease
    /// expires. Returns what the engine executes.
    pub async fn start_run(
        &self,
        user: &UserId,
        run: &NewRun,
        lease: &Lease,
    ) -> Result<RunSnapshot, StorageError> {
        self.start_run_at(user, run.clone(), lease)
            .await
            .map(|(snapshot, _)| snapshot)
    }

    /// [`Database::start_run`] taking the run by value, also answering when it was committed
    /// (its `created_at` and `started_at`), so the caller can describe the run without reading
    /// it back. The row goes through the group-commit writer (answered after the commit).
    pub async fn start_run_at(
        &self,
        user: &UserId,
        run: NewRun,
        lease: &Lease,
    ) -> Result<(RunSnapshot, DateTime<Utc>), StorageError> {
        // Stamped with the application clock here; on PostgreSQL the writer restamps it with
        // the database clock of the transaction that commits it.
        let record = RunRecord::new(user, &run, Some((lease, now())))?;
        let record = self
            .inner
            .writer
            .insert(NewRunJob {
                user: user.clone(),
                record: Box::new(record),
                lease_ttl: Some(lease.ttl),
                notify: false,
            })
            .await?;
        // The snapshot is built from what was just written, not decoded back from it.
        let snapshot = RunSnapshot {
            run_id: RunId(record.id),
            plan_id: run.plan_id,
            user_id: user.clone(),
            plan_name: run.plan_name,
            states: pending_states(&run.steps),
            steps: run.steps,
            input: run.input,
            epoch: record.lease_epoch,
            trigger: run.trigger,
            cancel: CancelSignal::default(),
        };
        Ok((snapshot, to_utc(record.created_at)))
    }

    /// The user's run `id` with its step states, or `None`.
    pub async fn run_by_id(
        &self,
        user: &UserId,
        id: &RunId,
    ) -> Result<Option<RunRow>, StorageError> {
        let (user, id) = (user.clone(), id.clone());
        self.run(move |conn| {
            transaction(conn, Scope::User(&user), Mode::Read, |conn| {
                load_run(conn, &user, &id)
            })
        })
        .await
    }

    /// The user's runs of plan `plan`, newest first.
    pub async fn list_runs_for_plan(
        &self,
        user: &UserId,
        plan: &PlanId,
        page: &PageRequest,
    ) -> Result<Page<RunRow>, StorageError> {
        let filter = RunFilter {
            plan_id: Some(plan.clone()),
            ..RunFilter::default()
        };
        self.list_runs(user, &filter, page).await
    }

    /// The user's runs matching `filter`, newest first (an index on `(user_id, created_at)`
    /// serves the page; the filters narrow it).
    pub async fn list_runs(
        &self,
        user: &UserId,
        filter: &RunFilter,
        page: &PageRequest,
    ) -> Result<Page<RunRow>, StorageError> {
        let position = page.position()?;
        let limit = page.clamped_limit();
        let (user, filter) = (user.clone(), filter.clone());
        self.run(move |conn| {
            transaction(conn, Scope::User(&user), Mode::Read, |conn| {
                let mut query = runs::table
                    .filter(runs::user_id.eq(user.as_str()))
                    .select(RunRecord::as_select())
                    .order((runs::created_at.desc(), runs::id.desc()))
                    .limit(limit + 1)
                    .into_boxed();
                if let Some(plan) = &filter.plan_id {
                    query = query.filter(runs::plan_id.eq(plan.as_str().to_owned()));
                }
                if !filter.statuses.is_empty() {
                    let statuses: Vec<&str> = filter.statuses.iter().map(|s| s.as_str()).collect();
                    query = query.filter(runs::status.eq_any(statuses));
                }
                if let Some(trigger) = filter.trigger {
                    query = query.filter(runs::trigger_kind.eq(trigger.as_str()));
                }
                if let Some(after) = filter.created_after {
                    query = query.filter(runs::created_at.ge(to_naive(after)));
                }
                if let Some(before) = filter.created_before {
                    query = query.filter(runs::created_at.lt(to_naive(before)));
                }
                if let Some(c) = position {
                    query = query.filter(
                        runs::created_at
                            .lt(c.created_at)
                            .or(runs::created_at.eq(c.created_at).and(runs::id.lt(c.id))),
                    );
                }
                let records = query.load(conn)?;
                let page = paginate(records, limit, |r| (r.created_at, r.id.clone()), Ok)?;
                Ok(Page {
                    items: load_runs(conn, page.items)?,
                    next_cursor: page.next_cursor,
                })
            })
        })
        .await
    }

    /// Cancels the user's run: a queued run at once, a running one at its next step boundary
    /// (its executor sees `cancel_requested` in the next write's answer). `None` when missing.
    pub async fn cancel_run(
        &self,
        user: &UserId,
        id: &RunId,
    ) -> Result<Option<CancelOutcome>, StorageError> {
        let (user, id) = (user.clone(), id.clone());
        self.run(move |conn| {
            transaction(conn, Scope::User(&user), Mode::Write, |conn| {
                let target = runs::table
                    .filter(runs::user_id.eq(user.as_str()))
                    .filter(runs::id.eq(id.as_str()));
                let Some(status) = target
                    .select(runs::status)
                    .first::<String>(conn)
                    .optional()?
                else {
                    return Ok(None);
                };
                let at = now();
                let outcome = match parse_status(&status)? {
                    RunStatus::Queued => {
                        diesel::update(target)
                            .set((
                                runs::status.eq(RunStatus::Cancelled.as_str()),
                                runs::cancel_requested.eq(true),
                                runs::finished_at.eq(Some(at)),
                                runs::updated_at.eq(at),
                            ))
                            .execute(conn)?;
                        CancelOutcome::Cancelled
                    }
                    RunStatus::Running => {
                        diesel::update(target)
                            .set((runs::cancel_requested.eq(true), runs::updated_at.eq(at)))
                            .execute(conn)?;
                        CancelOutcome::Requested
                    }
                    done => CancelOutcome::AlreadyFinished(done),
                };
                Ok(Some(outcome))
            })
        })
        .await
    }

    /// Claims up to `request.limit` runs for a worker: queued runs first by age, and running
    /// runs whose lease expired (a takeover: takeover count + 1). Each claimed run gets a new
    /// epoch and a lease from database time. Runs whose lease expired with the takeover cap
    /// used up are failed instead. PostgreSQL locks with `FOR UPDATE SKIP LOCKED`, so workers
    /// racing never claim the same run; SQLite serialises claims with `BEGIN IMMEDIATE`.
    pub async fn claim_runs(&self, request: &ClaimRequest) -> Result<ClaimOutcome, StorageError> {
        let request = request.clone();
        let lease_ttl = request.ttl;
        let limit = i64::try_from(request.limit.clamp(1, 1000)).unwrap_or(1000);
        let cap = i32::try_from(request.max_takeovers).unwrap_or(i32::MAX);
        self.run(move |conn| {
            transaction(conn, Scope::Scheduler, Mode::Write, |conn| {
                let at = db_now(conn)?;
                let expires = lease_end(at, lease_ttl)?;
                let mut outcome = ClaimOutcome::default();

                // Expired leases with no takeover left: fail them, with a new epoch so the lost
                // worker's writes are rejected.
                let doomed = pick(conn, PickKind::Abandoned { at, cap }, 100)?;
                if !doomed.is_empty() {
                    let ids: Vec<&str> = doomed.iter().map(|p| p.0.as_str()).collect();
                    diesel::update(runs::table.filter(runs::id.eq_any(&ids)))
                        .set((
                            runs::status.eq(RunStatus::Failed.as_str()),
                            runs::error.eq(Some(TAKEOVER_CAP_MESSAGE)),
                            runs::lease_epoch.eq(runs::lease_epoch + 1),
                            runs::lease_owner.eq(None::<String>),
                            runs::lease_expires_at.eq(None::<NaiveDateTime>),
                            runs::finished_at.eq(Some(at)),
                            runs::updated_at.eq(at),
                        ))
                        .execute(conn)?;
                    outcome.abandoned = doomed
                        .into_iter()
                        .map(|(id, user, _, takeovers)| AbandonedRun {
                            run_id: RunId(id),
                            user_id: UserId(user),
                            takeover_count: u32::try_from(takeovers).unwrap_or(0),
                        })
                        .collect();
                }

                let per_user = i64::from(request.max_running_per_user);
                let picked = pick(conn, PickKind::Claimable { at, cap, per_user }, limit)?;
                if picked.is_empty() {
                    return Ok(outcome);
                }
                let (expired, queued): (Vec<_>, Vec<_>) = picked
                    .iter()
                    .partition(|p| p.2 == RunStatus::Running.as_str());
                for (group, takeover) in [(queued, 0), (expired, 1)] {
                    if group.is_empty() {
                        continue;
                    }
                    let ids: Vec<&str> = group.iter().map(|p| p.0.as_str()).collect();
                    diesel::update(runs::table.filter(runs::id.eq_any(&ids)))
                        .set((
                            runs::status.eq(RunStatus::Running.as_str()),
                            runs::lease_owner.eq(Some(request.owner.as_str())),
                            runs::lease_epoch.eq(runs::lease_epoch + 1),
                            runs::lease_expires_at.eq(Some(expires)),
                            runs::takeover_count.eq(runs::takeover_count + takeover),
                            runs::started_at.eq(diesel::dsl::sql::<
                                diesel::sql_types::Nullable<diesel::sql_types::Timestamp>,
                            >(
                                "COALESCE(started_at, "
                            )
                            .bind::<diesel::sql_types::Timestamp, _>(at)
                            .sql(")")),
                            runs::updated_at.eq(at),
                        ))
                        .execute(conn)?;
                }
                let ids: Vec<&str> = picked.iter().map(|p| p.0.as_str()).collect();
                let records = runs::table
                    .filter(runs::id.eq_any(&ids))
                    .select(RunRecord::as_select())
                    .order((runs::created_at, runs::id))
                    .load(conn)?;
                for record in records {
                    let row = if record.lease_epoch == 1 {
                        // Its first lease: no executor ever held it, so it has no step rows
                        // (a write needs a running run's epoch), and the query is skipped.
                        let steps: Vec<Step> = crate::stored::decode_steps(&record.steps_json)?;
                        let states = pending_states(&steps);
                        record.into_row(steps, states)?
                    } else {
                        // Step states are read under the owner's scope (run_steps accepts no
                        // other).
                        let user = UserId(record.user_id.clone());
                        set_scope(conn, Scope::User(&user))?;
                        let Some(row) = load_runs(conn, vec![record])?.pop() else {
                            continue;
                        };
                        row
                    };
                    outcome.claimed.push(ClaimedRun {
                        lease_expires_at: to_utc(expires),
                        taken_over: picked
                            .iter()
                            .any(|p| p.0 == row.id.0 && p.2 == RunStatus::Running.as_str()),
                        takeover_count: row.takeover_count,
                        snapshot: row.into_snapshot(),
                    });
                }
                Ok(outcome)
            })
        })
        .await
    }

    /// Extends the lease of a run the caller holds under `epoch`; answers whether cancellation
    /// was requested. [`StorageError::StaleEpoch`] when the lease was lost.
    pub async fn heartbeat(
        &self,
        user: &UserId,
        id: &RunId,
        epoch: i64,
        lease_ttl: Duration,
    ) -> Result<WriteAck, StorageError> {
        let (user, id) = (user.clone(), id.clone());
        self.run(move |conn| {
            transaction(conn, Scope::User(&user), Mode::Write, |conn| {
                let at = db_now(conn)?;
                let fenced = diesel::update(
                    runs::table
                        .filter(runs::id.eq(id.as_str()))
                        .filter(runs::user_id.eq(user.as_str()))
                        .filter(runs::lease_epoch.eq(epoch))
                        .filter(runs::status.eq(RunStatus::Running.as_str())),
                )
                .set((
                    runs::lease_expires_at.eq(Some(lease_end(at, lease_ttl)?)),
                    runs::updated_at.eq(at),
                ))
                .returning(runs::cancel_requested)
                .get_result::<bool>(conn)
                .optional()?;
                match fenced {
                    Some(cancel_requested) => Ok(WriteAck { cancel_requested }),
                    None => Err(fence_failure(conn, &user, &id)),
                }
            })
        })
        .await
    }

    /// Gives a run the caller holds under `epoch` back to the queue (graceful shutdown); the
    /// next claim gives it a new epoch (and listening workers are told, on PostgreSQL).
    /// [`StorageError::StaleEpoch`] when the lease was lost.
    pub async fn release_run(
        &self,
        user: &UserId,
        id: &RunId,
        epoch: i64,
    ) -> Result<(), StorageError> {
        self.requeue(user, id, epoch, None).await
    }

    /// Parks a run the caller holds under `epoch`: it goes back to the queue, its lease given up,
    /// and no worker claims it before `delay` has passed on the database's clock (a step whose
    /// next retry is far off waits as a row, not in a worker's slot). Listening workers are
    /// told, so they can plan their wake-up. [`StorageError::StaleEpoch`] when the lease was
    /// lost.
    pub async fn park_run(
        &self,
        user: &UserId,
        id: &RunId,
        epoch: i64,
        delay: std::time::Duration,
    ) -> Result<(), StorageError> {
        self.requeue(user, id, epoch, Some(delay)).await
    }

    /// Puts a run held under `epoch` back in the queue, claimable at once or after `delay`.
    async fn requeue(
        &self,
        user: &UserId,
        id: &RunId,
        epoch: i64,
        delay: Option<std::time::Duration>,
    ) -> Result<(), StorageError> {
        let (user, id) = (user.clone(), id.clone());
        self.run(move |conn| {
            transaction(conn, Scope::User(&user), Mode::Write, |conn| {
                let at = db_now(conn)?;
                let until = delay.map(|d| lease_end(at, d)).transpose()?;
                let n = diesel::update(
                    runs::table
                        .filter(runs::id.eq(id.as_str()))
                        .filter(runs::user_id.eq(user.as_str()))
                        .filter(runs::lease_epoch.eq(epoch))
                        .filter(runs::status.eq(RunStatus::Running.as_str())),
                )
                .set((
                    runs::status.eq(RunStatus::Queued.as_str()),
                    runs::lease_owner.eq(None::<String>),
                    runs::lease_expires_at.eq(None::<NaiveDateTime>),
                    runs::available_at.eq(until),
                    runs::updated_at.eq(at),
                ))
                .execute(conn)?;
                if n == 0 {
                    return Err(fence_failure(conn, &user, &id));
                }
                notify_runs(conn)
            })
        })
        .await
    }

    /// One page of an archive of every user's runs created at or after `since`, oldest first,
    /// after the `(created_at, id)` position `after`: each run with its step states and its log
    /// rows (`pilot-server export-runs`). Runs are read in the scheduler's scope and each run's
    /// steps and logs in its owner's.
    pub async fn export_runs(
        &self,
        since: DateTime<Utc>,
        after: Option<(DateTime<Utc>, String)>,
        limit: usize,
    ) -> Result<Vec<(RunRow, Vec<crate::LogRow>)>, StorageError> {
        let since = to_naive(since);
        let limit = i64::try_from(limit.clamp(1, 1000)).unwrap_or(100);
        let after = after.map(|(at, id)| (to_naive(at), id));
        self.run(move |conn| {
            transaction(conn, Scope::Scheduler, Mode::Read, |conn| {
                let mut query = runs::table
                    .filter(runs::created_at.ge(since))
                    .select(RunRecord::as_select())
                    .order((runs::created_at, runs::id))
                    .limit(limit)
                    .into_boxed();
                if let Some((at, id)) = &after {
                    query = query.filter(
                        runs::created_at
                            .gt(*at)
                            .or(runs::created_at.eq(*at).and(runs::id.gt(id.clone()))),
                    );
                }
                let records: Vec<RunRecord> = query.load(conn)?;
                let mut out = Vec::with_capacity(records.len());
                for record in records {
                    let user = UserId(record.user_id.clone());
                    set_scope(conn, Scope::User(&user))?;
                    let Some(row) = load_runs(conn, vec![record])?.pop() else {
                        continue;
                    };
                    let logs = crate::logs::logs_of_run(conn, &user, &row.id)?;
                    out.push((row, logs));
                    set_scope(conn, Scope::Scheduler)?;
                }
                Ok(out)
            })
        })
        .await
    }

    /// Deletes up to `batch` finished runs (succeeded, failed or cancelled) of every user that
    /// ended before `cutoff`, with their step states; answers how many. Their execution-log rows
    /// stay (they have their own retention). Small batches keep each transaction short, so
    /// writers are never held up for long; call it until it answers less than `batch`.
    pub async fn prune_finished_runs(
        &self,
        cutoff: DateTime<Utc>,
        batch: usize,
    ) -> Result<u64, StorageError> {
        let cutoff = to_naive(cutoff);
        let batch = i64::try_from(batch.clamp(1, 10_000)).unwrap_or(1000);
        self.run(move |conn| {
            transaction(conn, Scope::Scheduler, Mode::Write, |conn| {
                let ids: Vec<String> = runs::table
                    .filter(runs::status.eq_any(["succeeded", "failed", "cancelled"]))
                    .filter(runs::finished_at.lt(cutoff))
                    .select(runs::id)
                    .order(runs::finished_at)
                    .limit(batch)
                    .load(conn)?;
                if ids.is_empty() {
                    return Ok(0);
                }
                let n = diesel::delete(runs::table.filter(runs::id.eq_any(&ids))).execute(conn)?;
                Ok(u64::try_from(n).unwrap_or(0))
            })
        })
        .await
    }

    /// Deletes up to `batch` finished runs of every plan beyond the newest `keep` finished runs
    /// of that plan (by creation time), with their step states; answers how many. Runs without
    /// a plan (ad-hoc and single-step runs) and unfinished runs are never counted or deleted.
    /// Call it until it answers less than `batch`.
    pub async fn prune_runs_beyond_count(
        &self,
        keep: u32,
        batch: usize,
    ) -> Result<u64, StorageError> {
        #[derive(diesel::QueryableByName)]
        struct Id {
            #[diesel(sql_type = diesel::sql_types::Text)]
            id: String,
        }
        let batch = batch.clamp(1, 10_000);
        // Both numbers come from this process's settings, never from a request.
        let sql = format!(
            "SELECT id FROM (SELECT id, ROW_NUMBER() OVER \
             (PARTITION BY plan_id ORDER BY created_at DESC, id DESC) AS newer \
             FROM runs WHERE plan_id IS NOT NULL \
             AND status IN ('succeeded', 'failed', 'cancelled')) ranked \
             WHERE newer > {keep} LIMIT {batch}"
        );
        self.run(move |conn| {
            transaction(conn, Scope::Scheduler, Mode::Write, |conn| {
                let ids: Vec<Id> = diesel::sql_query(&sql).load(conn)?;
                if ids.is_empty() {
                    return Ok(0);
                }
                let ids: Vec<String> = ids.into_iter().map(|r| r.id).collect();
                let n = diesel::delete(runs::table.filter(runs::id.eq_any(&ids))).execute(conn)?;
                Ok(u64::try_from(n).unwrap_or(0))
            })
        })
        .await
    }

    /// Queue counters across all users.
    pub async fn queue_stats(&self) -> Result<QueueStats, StorageError> {
        self.run(|conn| {
            transaction(conn, Scope::Scheduler, Mode::Read, |conn| {
                let count = |conn: &mut DbConn, status: RunStatus| -> Result<u64, StorageError> {
                    let n: i64 = runs::table
                        .filter(runs::status.eq(status.as_str()))
                        .count()
                        .get_result(conn)?;
                    Ok(u64::try_from(n).unwrap_or(0))
                };
                let queued = count(conn, RunStatus::Queued)?;
                let running = count(conn, RunStatus::Running)?;
                let next: Option<NaiveDateTime> = runs::table
                    .filter(runs::status.eq(RunStatus::Running.as_str()))
                    .select(diesel::dsl::min(runs::lease_expires_at))
                    .first(conn)?;
                Ok(QueueStats {
                    queued,
                    running,
                    next_lease_expiry: next.map(to_utc),
                })
            })
        })
        .await
    }
}

/// Tells workers listening on [`crate::RUNS_CHANNEL`] that a run was queued or a schedule
/// changed (at commit), so they look at the queue and the next due time again.
pub(crate) fn notify_runs(conn: &mut DbConn) -> Result<(), StorageError> {
    if let DbConn::Pg(c) = conn {
        diesel::connection::SimpleConnection::batch_execute(
            c,
            &format!("SELECT pg_notify('{}', '')", crate::RUNS_CHANNEL),
        )?;
    }
    Ok(())
}

/// One pending state per step.
fn pending_states(steps: &[Step]) -> Vec<StepState> {
    steps
        .iter()
        .map(|s| StepState::pending(s.id.clone()))
        .collect()
}

#[derive(Clone, Copy)]
enum PickKind {
    /// Queued runs, and running runs whose lease expired with takeovers left, within the
    /// per-user cap (0: none).
    Claimable {
        at: NaiveDateTime,
        cap: i32,
        per_user: i64,
    },
    /// Running runs whose lease expired with no takeover left.
    Abandoned { at: NaiveDateTime, cap: i32 },
}

/// The claim order: round-robin between users, oldest first within each. Every user's oldest
/// claimable run comes before any user's second, so one user's flood of queued runs delays
/// another user's run by at most one claim. The window runs over the claimable rows (queued,
/// or with an expired lease); rows are locked afterwards, by id, because PostgreSQL allows no
/// `FOR UPDATE` with a window function.
///
/// With a per-user cap (`{p4}` > 0), a user's runs are claimed only while those of theirs
/// already running (live leases) plus the ones taken in this claim stay within it.
const FAIR_ORDER: &str = "SELECT id FROM ( \
       SELECT r.id, r.created_at, \
         ROW_NUMBER() OVER (PARTITION BY r.user_id ORDER BY r.created_at, r.id) AS turn, \
         COALESCE(busy.n, 0) AS running \
       FROM runs r \
       LEFT JOIN (SELECT user_id, COUNT(*) AS n FROM runs \
                  WHERE status = 'running' AND lease_expires_at >= {p1} GROUP BY user_id) busy \
         ON busy.user_id = r.user_id \
       WHERE (r.status = 'queued' AND (r.available_at IS NULL OR r.available_at <= {p1})) \
          OR (r.status = 'running' AND r.lease_expires_at < {p1} AND r.takeover_count < {p2}) \
     ) claimable WHERE {p4} = 0 OR turn + running <= {p4} \
     ORDER BY turn, created_at, id LIMIT {p3}";

#[derive(QueryableByName)]
struct CandidateId {
    #[diesel(sql_type = diesel::sql_types::Text)]
    id: String,
}

/// The ids of up to `limit` claimable runs in the fair claim order ([`FAIR_ORDER`]).
fn fair_candidates(
    conn: &mut DbConn,
    at: NaiveDateTime,
    cap: i32,
    limit: i64,
    per_user: i64,
) -> Result<Vec<String>, StorageError> {
    use diesel::sql_types::{BigInt, Integer, Timestamp};
    let (p1, p2, p3, p4) = match conn {
        DbConn::Pg(_) => ("$1", "$2", "$3", "$4"),
        DbConn::Sqlite(_) => ("?1", "?2", "?3", "?4"),
    };
    let sql = FAIR_ORDER
        .replace("{p1}", p1)
        .replace("{p2}", p2)
        .replace("{p3}", p3)
        .replace("{p4}", p4);
    let query = diesel::sql_query(sql)
        .bind::<Timestamp, _>(at)
        .bind::<Integer, _>(cap)
        .bind::<BigInt, _>(limit)
        .bind::<BigInt, _>(per_user);
    let rows: Vec<CandidateId> = query.load(conn)?;
    Ok(rows.into_iter().map(|r| r.id).collect())
}

/// Selects (id, user_id, status, takeover_count) of runs to change, locking them on PostgreSQL
/// and skipping rows another worker holds: claimable runs in the fair order, abandoned ones
/// oldest first.
fn pick(
    conn: &mut DbConn,
    kind: PickKind,
    limit: i64,
) -> Result<Vec<(String, String, String, i32)>, StorageError> {
    let running = RunStatus::Running.as_str();
    let queued = RunStatus::Queued.as_str();
    let base = runs::table
        .select((runs::id, runs::user_id, runs::status, runs::takeover_count))
        .order((runs::created_at, runs::id))
        .limit(limit);
    // FOR UPDATE cannot ride on a boxed query, so each case is spelled out per backend.
    Ok(match kind {
        PickKind::Claimable { at, cap, per_user } => {
            let order = fair_candidates(conn, at, cap, limit, per_user)?;
            if order.is_empty() {
                return Ok(Vec::new());
            }
            // The same conditions again: a row may have changed since it was read.
            let query = base.filter(runs::id.eq_any(order.clone())).filter(
                runs::status
                    .eq(queued)
                    .and(runs::available_at.is_null().or(runs::available_at.le(at)))
                    .or(runs::status
                        .eq(running)
                        .and(runs::lease_expires_at.lt(at))
                        .and(runs::takeover_count.lt(cap))),
            );
            let mut rows: Vec<(String, String, String, i32)> = match conn {
                DbConn::Pg(c) => query.for_update().skip_locked().load(c)?,
                DbConn::Sqlite(c) => query.load(c)?,
            };
            rows.sort_by_key(|row| order.iter().position(|id| *id == row.0));
            rows
        }
        PickKind::Abandoned { at, cap } => {
            let query = base
                .filter(runs::status.eq(running))
                .filter(runs::lease_expires_at.lt(at))
                .filter(runs::takeover_count.ge(cap));
            match conn {
                DbConn::Pg(c) => query.for_update().skip_locked().load(c)?,
                DbConn::Sqlite(c) => query.load(c)?,
            }
        }
    })
}
