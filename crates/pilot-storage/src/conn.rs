//! Connections: the `MultiConnection` enum over PostgreSQL and SQLite, the r2d2 manager that picks
//! the backend by URL scheme (reporting the real connection error and applying SQLite's
//! PRAGMAs), and the transaction helper every query goes through. The helper is where the two
//! backends' safety rules live: SQLite transactions that write start with `BEGIN IMMEDIATE`
//! (a deferred BEGIN loses writers on the lock upgrade), and every PostgreSQL transaction sets
//! its row-level-security scope with a transaction-local `set_config`, so a pooled connection
//! never carries one user's id into the next transaction.

use std::time::Duration;

use diesel::connection::{AnsiTransactionManager, SimpleConnection, TransactionManager};
use diesel::pg::PgConnection;
use diesel::sqlite::SqliteConnection;
use diesel::{Connection, ConnectionError};
use pilot_core::UserId;

use crate::StorageError;
use crate::config::{Backend, SqliteSync, sqlite_path};

/// One connection to either backend. Queries written once against it run on both; the few that
/// must differ match on the variant.
#[derive(diesel::MultiConnection)]
pub(crate) enum DbConn {
    Pg(PgConnection),
    Sqlite(SqliteConnection),
}

pub(crate) type Pool = r2d2::Pool<Manager>;

/// How long a SQLite connection waits for the write lock before giving up.
const SQLITE_BUSY_TIMEOUT_MS: u32 = 30_000;

/// Opens connections for the pool.
#[derive(Debug)]
pub(crate) struct Manager {
    url: String,
    backend: Backend,
    sync: SqliteSync,
}

impl Manager {
    pub(crate) fn new(url: &str, backend: Backend, sync: SqliteSync) -> Self {
        Self {
            url: url.to_owned(),
            backend,
            sync,
        }
    }
}

/// Opens one connection, choosing the backend by the URL's scheme, so the caller sees the
/// driver's own error (e.g. "password authentication failed") rather than a generic one.
pub(crate) fn establish(
    url: &str,
    backend: Backend,
    sync: SqliteSync,
) -> Result<DbConn, ConnectionError> {
    match backend {
        Backend::Postgres => PgConnection::establish(url).map(DbConn::Pg),
        Backend::Sqlite => {
            let mut conn = SqliteConnection::establish(sqlite_path(url))?;
            let sync = match sync {
                SqliteSync::Full => "FULL",
                SqliteSync::Normal => "NORMAL",
            };
            conn.batch_execute(&format!(
                "PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}; PRAGMA journal_mode = WAL; \
                 PRAGMA synchronous = {sync}; PRAGMA foreign_keys = ON;"
            ))
            .map_err(ConnectionError::CouldntSetupConfiguration)?;
            Ok(DbConn::Sqlite(conn))
        }
    }
}

impl r2d2::ManageConnection for Manager {
    type Connection = DbConn;
    type Error = ConnectionError;

    fn connect(&self) -> Result<DbConn, ConnectionError> {
        establish(&self.url, self.backend, self.sync)
    }

    fn is_valid(&self, conn: &mut DbConn) -> Result<(), ConnectionError> {
        conn.batch_execute("SELECT 1")
            .map_err(ConnectionError::CouldntSetupConfiguration)
    }

    fn has_broken(&self, conn: &mut DbConn) -> bool {
        std::thread::panicking()
            || <DbConn as Connection>::TransactionManager::is_broken_transaction_manager(conn)
    }
}

/// Builds the pool; fails with the driver's error when the first connection cannot be opened.
pub(crate) fn build_pool(
    url: &str,
    backend: Backend,
    sync: SqliteSync,
    size: u32,
    timeout: Duration,
) -> Result<Pool, StorageError> {
    if size == 0 {
        return Err(StorageError::Config(
            "pool size must be at least 1".to_owned(),
        ));
    }
    let manager = Manager::new(url, backend, sync);
    // Open one connection eagerly so a wrong URL or password fails here with its real error.
    let probe = r2d2::ManageConnection::connect(&manager)?;
    drop(probe);
    r2d2::Pool::builder()
        .max_size(size)
        .min_idle(Some(1))
        .connection_timeout(timeout)
        .error_handler(Box::new(r2d2::NopErrorHandler))
        .build(manager)
        .map_err(StorageError::from)
}

/// Whose rows a transaction may touch on PostgreSQL (row-level security); SQLite ignores it and
/// relies on the `user_id` filter every query carries.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Scope<'a> {
    /// One user's rows: `pilot.user_id`.
    User(&'a UserId),
    /// The queue: runs and schedules of every user (`pilot.scheduler`).
    Scheduler,
    /// No user: only the SECURITY DEFINER functions answer.
    Anonymous,
}

/// Whether the transaction writes (SQLite then takes the write lock up front).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Read,
    Write,
}

/// Runs `f` in one transaction under `scope`: BEGIN IMMEDIATE for SQLite writes, the RLS
/// setting on PostgreSQL, commit on `Ok`, rollback on `Err`.
pub(crate) fn transaction<T>(
    conn: &mut DbConn,
    scope: Scope<'_>,
    mode: Mode,
    f: impl FnOnce(&mut DbConn) -> Result<T, StorageError>,
) -> Result<T, StorageError> {
    match conn {
        DbConn::Sqlite(c) => {
            let begin = if mode == Mode::Write {
                "BEGIN IMMEDIATE"
            } else {
                "BEGIN"
            };
            AnsiTransactionManager::begin_transaction_sql(c, begin)?;
        }
        DbConn::Pg(c) => {
            let sql = format!("BEGIN; {}", scope_sql(scope));
            AnsiTransactionManager::begin_transaction_sql(c, &sql)?;
        }
    }
    match f(conn) {
        Ok(value) => {
            <DbConn as Connection>::TransactionManager::commit_transaction(conn)?;
            Ok(value)
        }
        Err(e) => {
            // The rollback's own failure would hide the real error; the pool discards a
            // connection whose transaction manager is broken.
            let _ = <DbConn as Connection>::TransactionManager::rollback_transaction(conn);
            Err(e)
        }
    }
}

/// Switches the RLS scope inside an open transaction (the group-commit writer applies several
/// users' writes in one transaction). A no-op on SQLite.
pub(crate) fn set_scope(conn: &mut DbConn, scope: Scope<'_>) -> Result<(), StorageError> {
    if let DbConn::Pg(c) = conn {
        c.batch_execute(&scope_sql(scope))?;
    }
    Ok(())
}

/// The statement that sets a scope. The user id is inlined (one round trip with BEGIN), so it
/// is checked to be a plain id first.
fn scope_sql(scope: Scope<'_>) -> String {
    match scope {
        Scope::User(user) => {
            // An id that is not one of ours cannot own anything: scope to nobody.
            let id = if is_plain_id(user.as_str()) { user.as_str() } else { "" };
            format!("SELECT set_config('pilot.user_id', '{id}', true), set_config('pilot.scheduler', '', true)")
        }
        Scope::Scheduler => "SELECT set_config('pilot.user_id', '', true), set_config('pilot.scheduler', 'on', true)"
            .to_owned(),
        Scope::Anonymous => "SELECT set_config('pilot.user_id', '', true), set_config('pilot.scheduler', '', true)"
            .to_owned(),
    }
}

/// Ids this crate generates: UUID text. Anything else is rejected before it reaches SQL.
pub(crate) fn is_plain_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}
