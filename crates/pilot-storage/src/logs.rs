//! The execution log: one row per step attempt, appended only by run writes
//! ([`pilot_core::RunStore::write`]), read by the API with filters and cursor pagination, and
//! deleted only by [`Database::prune_logs`] (the operator's retention command), which runs as
//! the owner on PostgreSQL: the application role has no UPDATE or DELETE grant on the table.

use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;
use pilot_core::{PlanId, RunId, UserId};

use crate::conn::{DbConn, Mode, Scope, transaction};
use crate::page::{Page, PageRequest, after, paginate};
use crate::schema::execution_logs as logs;
use crate::time::{to_naive, to_utc};
use crate::{Database, StorageError};

/// One stored execution-log row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRow {
    /// The row's id.
    pub id: String,
    /// The plan (`None` for ad-hoc runs).
    pub plan_id: Option<PlanId>,
    /// The run.
    pub run_id: RunId,
    /// The owner.
    pub user_id: UserId,
    /// The plan's name at run time.
    pub plan_name: String,
    /// 0-based index of the step.
    pub step_number: u32,
    /// The step's id.
    pub step_id: String,
    /// The provider called.
    pub provider: String,
    /// The action called.
    pub action: String,
    /// 1-based attempt (0 for a skipped step).
    pub attempt: u32,
    /// `succeeded`, `failed`, `retrying` or `skipped`.
    pub status: String,
    /// A short summary.
    pub message: Option<String>,
    /// Time spent in the attempt.
    pub latency_ms: u64,
    /// At most 1 KiB of output, secrets redacted.
    pub output_preview: Option<String>,
    /// The error, secrets redacted.
    pub error: Option<String>,
    /// When the attempt ended.
    pub timestamp: DateTime<Utc>,
    /// When the row was written.
    pub created_at: DateTime<Utc>,
}

/// Which of the user's log rows to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogFilter {
    /// Only this plan's rows.
    pub plan_id: Option<PlanId>,
    /// Only this run's rows.
    pub run_id: Option<RunId>,
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = logs)]
struct LogRecord {
    id: String,
    plan_id: Option<String>,
    run_id: String,
    user_id: String,
    plan_name: String,
    step_number: i32,
    step_id: String,
    provider: String,
    action: String,
    attempt: i32,
    status: String,
    message: Option<String>,
    latency_ms: i64,
    output_preview: Option<String>,
    error: Option<String>,
    timestamp: NaiveDateTime,
    created_at: NaiveDateTime,
}

impl From<LogRecord> for LogRow {
    fn from(r: LogRecord) -> Self {
        Self {
            id: r.id,
            plan_id: r.plan_id.map(PlanId),
            run_id: RunId(r.run_id),
            user_id: UserId(r.user_id),
            plan_name: r.plan_name,
            step_number: u32::try_from(r.step_number).unwrap_or(0),
            step_id: r.step_id,
            provider: r.provider,
            action: r.action,
            attempt: u32::try_from(r.attempt).unwrap_or(0),
            status: r.status,
            message: r.message,
            latency_ms: u64::try_from(r.latency_ms).unwrap_or(0),
            output_preview: r.output_preview,
            error: r.error,
            timestamp: to_utc(r.timestamp),
            created_at: to_utc(r.created_at),
        }
    }
}

/// Every log row of `run` (owned by `user`), oldest first, read in the transaction `conn` is
/// in (which must be scoped to `user` on PostgreSQL).
pub(crate) fn logs_of_run(
    conn: &mut DbConn,
    user: &UserId,
    run: &RunId,
) -> Result<Vec<LogRow>, StorageError> {
    let rows: Vec<LogRecord> = logs::table
        .filter(logs::user_id.eq(user.as_str()))
        .filter(logs::run_id.eq(run.as_str()))
        .select(LogRecord::as_select())
        .order((logs::timestamp, logs::id))
        .load(conn)?;
    Ok(rows.into_iter().map(LogRow::from).collect())
}

impl Database {
    /// The user's log rows, newest first (by attempt time), optionally for one plan or run.
    pub async fn list_logs(
        &self,
        user: &UserId,
        filter: &LogFilter,
        page: &PageRequest,
    ) -> Result<Page<LogRow>, StorageError> {
        let position = page.position()?;
        let limit = page.clamped_limit();
        let (user, filter) = (user.clone(), filter.clone());
        self.run(move |conn| {
            transaction(conn, Scope::User(&user), Mode::Read, |conn| {
                let mut query = logs::table
                    .filter(logs::user_id.eq(user.as_str()))
                    .select(LogRecord::as_select())
                    .order((logs::timestamp.desc(), logs::id.desc()))
                    .limit(limit + 1)
                    .into_boxed();
                if let Some(plan) = &filter.plan_id {
                    query = query.filter(logs::plan_id.eq(plan.as_str()));
                }
                if let Some(run) = &filter.run_id {
                    query = query.filter(logs::run_id.eq(run.as_str()));
                }
                if let Some(c) = position {
                    query = query.filter(after(logs::timestamp, logs::id, c));
                }
                let rows = query.load(conn)?;
                paginate(
                    rows,
                    limit,
                    |r| (r.timestamp, r.id.clone()),
                    |r| Ok(LogRow::from(r)),
                )
            })
        })
        .await
    }

    /// Deletes every log row (of every user) older than `older_than`; returns how many. The
    /// only path that deletes log rows. On PostgreSQL it runs as the owner role under the
    /// transaction-local `pilot.maintenance = 'prune'` scope that the owner's delete policy needs.
    ///
    /// On SQLite the file then gives the space back: the freed pages are released
    /// (`PRAGMA incremental_vacuum`; a database made before incremental auto-vacuum was on is
    /// converted once with a full `VACUUM`) and the WAL is checkpointed and truncated, so the
    /// file shrinks by about what was deleted.
    pub async fn prune_logs(&self, older_than: DateTime<Utc>) -> Result<u64, StorageError> {
        let cutoff = to_naive(older_than);
        let deleted = self.delete_logs_before(cutoff).await?;
        if self.backend() == crate::Backend::Sqlite && deleted > 0 {
            self.run(|conn| {
                let DbConn::Sqlite(c) = conn else {
                    return Ok(());
                };
                compact_sqlite(c)
            })
            .await?;
        }
        Ok(deleted)
    }

    async fn delete_logs_before(&self, cutoff: chrono::NaiveDateTime) -> Result<u64, StorageError> {
        self.with_owner(move |conn| {
            transaction(conn, Scope::Anonymous, Mode::Write, |conn| {
                if let DbConn::Pg(c) = conn {
                    diesel::connection::SimpleConnection::batch_execute(
                        c,
                        "SELECT set_config('pilot.maintenance', 'prune', true)",
                    )?;
                }
                let n =
                    diesel::delete(logs::table.filter(logs::timestamp.lt(cutoff))).execute(conn)?;
                Ok(u64::try_from(n).unwrap_or(0))
            })
        })
        .await
    }
}

#[derive(diesel::QueryableByName)]
struct AutoVacuum {
    #[diesel(sql_type = diesel::sql_types::Integer)]
    auto_vacuum: i32,
}

/// Gives a SQLite file's free pages back to the file system and truncates its WAL.
fn compact_sqlite(conn: &mut diesel::SqliteConnection) -> Result<(), StorageError> {
    use diesel::connection::SimpleConnection as _;
    let mode: AutoVacuum = diesel::sql_query("PRAGMA auto_vacuum").get_result(conn)?;
    if mode.auto_vacuum != 2 {
        // Incremental auto-vacuum takes effect with a VACUUM: once, the first time.
        tracing::info!("converting the SQLite file to incremental auto-vacuum (a one-time VACUUM)");
        conn.batch_execute("PRAGMA auto_vacuum = INCREMENTAL; VACUUM;")?;
    } else {
        conn.batch_execute("PRAGMA incremental_vacuum;")?;
    }
    conn.batch_execute("PRAGMA wal_checkpoint(TRUNCATE);")?;
    Ok(())
}
