//! Connections: the `MultiConnection` enum over PostgreSQL and SQLite, the r2d2 manager that picks
//! the backend by URL scheme (reporting the real connection error and applying SQLite's
//! PRAGMAs), and the transaction helper every query goes through. The helper is where the two
//! backends' safety rules live: SQLite transactions that write start with `BEGIN IMMEDIATE`
//! (a deferred BEGIN loses writers on the lock upgrade), and every PostgreSQL transaction sets
//! its row-level-security scope with a transaction-local `set_config`, so a pooled connection
//! never carries one user's id into the next transaction.

use std::ops::{Deref, DerefMut};
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

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

/// A pooled connection: the driver's own, and for PostgreSQL its place in the count of live
/// libpq connections that [`quiesce`] waits for.
pub(crate) struct Tracked {
    conn: DbConn,
    _live: Option<LiveGuard>,
}

impl Deref for Tracked {
    type Target = DbConn;
    fn deref(&self) -> &DbConn {
        &self.conn
    }
}

impl DerefMut for Tracked {
    fn deref_mut(&mut self) -> &mut DbConn {
        &mut self.conn
    }
}

/// The live PostgreSQL connections of this process's pools, counted from the moment one starts
/// to connect until it is dropped. r2d2 opens (and, when the pool is already gone, drops)
/// connections on its own threads; libpq uses OpenSSL, whose clean-up at process exit frees
/// locks such a thread may still be using, which crashed processes at exit. So a binary calls
/// [`quiesce`] before it returns from `main`: no new connection starts, and it waits until the
/// last one is closed.
static LIVE: Gate = Gate {
    state: Mutex::new(GateState {
        closed: false,
        live: 0,
    }),
    changed: Condvar::new(),
};

struct Gate {
    state: Mutex<GateState>,
    changed: Condvar,
}

struct GateState {
    closed: bool,
    live: usize,
}

/// One counted connection; dropping it uncounts it.
struct LiveGuard;

impl Gate {
    fn enter(&'static self) -> Result<LiveGuard, ConnectionError> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.closed {
            return Err(ConnectionError::BadConnection(
                "the process is shutting down: no new database connections".to_owned(),
            ));
        }
        state.live += 1;
        Ok(LiveGuard)
    }
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        let mut state = LIVE.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.live = state.live.saturating_sub(1);
        LIVE.changed.notify_all();
    }
}

/// Stops new PostgreSQL connections in this process and waits (at most `timeout`) until every
/// live one is closed, so no thread is inside libpq when the process exits. Call it once, last,
/// after every [`crate::Database`] handle is dropped (after the async runtime is shut down).
/// Answers how many connections were still open when it gave up (0: all closed).
pub fn quiesce(timeout: Duration) -> usize {
    let deadline = Instant::now() + timeout;
    let mut state = LIVE.state.lock().unwrap_or_else(PoisonError::into_inner);
    state.closed = true;
    while state.live > 0 {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        state = LIVE
            .changed
            .wait_timeout(state, left)
            .unwrap_or_else(PoisonError::into_inner)
            .0;
    }
    state.live
}

/// How long a SQLite connection waits for the write lock before giving up.
const SQLITE_BUSY_TIMEOUT_MS: u32 = 30_000;

/// Opens connections for the pool. Its `Debug` (which r2d2's `Pool` prints) leaves the URL out:
/// it may carry a password.
pub(crate) struct Manager {
    url: String,
    backend: Backend,
    sync: SqliteSync,
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manager")
            .field("backend", &self.backend)
            .field("sync", &self.sync)
            .finish_non_exhaustive()
    }
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
/// driver's own error (e.g. "password authentication failed") rather than a generic one. libpq
/// quotes the URL, or the malformed part of it, when it cannot parse it (`invalid
/// percent-encoded token: "<password>"`), so the URL's password is scrubbed from that error.
pub(crate) fn establish(
    url: &str,
    backend: Backend,
    sync: SqliteSync,
) -> Result<DbConn, ConnectionError> {
    match backend {
        Backend::Postgres => PgConnection::establish(url)
            .map(DbConn::Pg)
            .map_err(|e| scrub_connection_error(e, url)),
        Backend::Sqlite => {
            let mut conn = SqliteConnection::establish(sqlite_path(url))?;
            let sync = match sync {
                SqliteSync::Full => "FULL",
                SqliteSync::Normal => "NORMAL",
            };
            conn.batch_execute(&format!(
                "PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}; PRAGMA auto_vacuum = INCREMENTAL; \
                 PRAGMA journal_mode = WAL; \
                 PRAGMA synchronous = {sync}; PRAGMA foreign_keys = ON;"
            ))
            .map_err(ConnectionError::CouldntSetupConfiguration)?;
            Ok(DbConn::Sqlite(conn))
        }
    }
}

impl r2d2::ManageConnection for Manager {
    type Connection = Tracked;
    type Error = ConnectionError;

    fn connect(&self) -> Result<Tracked, ConnectionError> {
        let live = match self.backend {
            Backend::Postgres => Some(LIVE.enter()?),
            Backend::Sqlite => None,
        };
        let conn = establish(&self.url, self.backend, self.sync)?;
        Ok(Tracked { conn, _live: live })
    }

    /// Checked at every checkout, so it must not cost a round trip (r2d2's usual `SELECT 1` was
    /// five statements per run). On PostgreSQL it reads what the server already sent (libpq's
    /// `PQconsumeInput`: one non-blocking socket read, never a query), which fails once the
    /// server closed the connection (a restart, an idle timeout), so a dead connection is dropped
    /// before anyone uses it. Pooled connections never `LISTEN` (the listener `UNLISTEN`s
    /// before giving its connection back), so no notification is lost here. A SQLite
    /// connection is a local file handle and does not go stale.
    fn is_valid(&self, conn: &mut Tracked) -> Result<(), ConnectionError> {
        match &mut conn.conn {
            // Read twice: a server ending the connection sends its last message and then closes,
            // and one read may take the message without reaching the end of the stream.
            DbConn::Pg(pg) => (0..2)
                .find_map(|_| pg.notifications_iter().find_map(Result::err))
                .map_or(Ok(()), |e| {
                    Err(ConnectionError::CouldntSetupConfiguration(e))
                }),
            DbConn::Sqlite(_) => Ok(()),
        }
    }

    fn has_broken(&self, conn: &mut Tracked) -> bool {
        std::thread::panicking()
            || <DbConn as Connection>::TransactionManager::is_broken_transaction_manager(
                &mut conn.conn,
            )
    }
}

/// `e` with every secret of `url` (its password, raw and percent-decoded, and any `password=`
/// query value) replaced, so a connection error can be logged.
fn scrub_connection_error(e: ConnectionError, url: &str) -> ConnectionError {
    let secrets = url_secrets(url);
    let scrub = |message: String| {
        secrets.iter().fold(message, |m, secret| {
            m.replace(secret.as_str(), "[redacted]")
        })
    };
    match e {
        ConnectionError::BadConnection(m) => ConnectionError::BadConnection(scrub(m)),
        ConnectionError::InvalidConnectionUrl(m) => ConnectionError::InvalidConnectionUrl(scrub(m)),
        other => other,
    }
}

/// The secrets a PostgreSQL URL may carry, longest first (so a longer form is replaced whole
/// before a shorter one that it contains).
fn url_secrets(url: &str) -> Vec<String> {
    let mut raw: Vec<&str> = Vec::new();
    if let Some((_, rest)) = url.split_once("://") {
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        if let Some((userinfo, _)) = authority.rsplit_once('@')
            && let Some((_, password)) = userinfo.split_once(':')
        {
            raw.push(password);
        }
    }
    if let Some((_, query)) = url.split_once('?') {
        for pair in query.split(['&', '#']) {
            if let Some(("password", value)) = pair.split_once('=') {
                raw.push(value);
            }
        }
    }
    let mut secrets: Vec<String> = Vec::new();
    for secret in raw.into_iter().filter(|s| !s.is_empty()) {
        secrets.push(secret.to_owned());
        let decoded = percent_decode(secret);
        if decoded != secret {
            secrets.push(decoded);
        }
    }
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    secrets
}

/// `%XX` sequences decoded (lossily, malformed ones kept as they are).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
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

#[cfg(test)]
mod tests {
    use super::*;

    /// libpq rejects these URLs while parsing (no connection is attempted) and quotes them, or
    /// the password, in its error.
    #[test]
    fn connection_errors_never_echo_the_password() {
        let check = |url: &str, secrets: &[&str]| {
            let Err(e) = establish(url, Backend::Postgres, SqliteSync::Full) else {
                panic!("{url} should not connect");
            };
            let shown = format!("{e} {e:?}");
            for secret in secrets {
                assert!(!shown.contains(secret), "{url}: {shown}");
            }
            assert!(shown.contains("[redacted]"), "{url}: {shown}");
        };
        check(
            "postgres://app:hun%zzter2@127.0.0.1:5432/db",
            &["hun", "zzter2"],
        );
        check("postgres://app:hunter2@[::1/db", &["hunter2"]);
        check(
            "postgres://app:p%40ss%2Fword@[::1/db",
            &["p%40ss", "p@ss/word"],
        );
        check(
            "postgres://app@127.0.0.1:5432/db?password=s3cr%zz",
            &["s3cr"],
        );
    }

    #[test]
    fn manager_debug_hides_the_url() {
        let manager = Manager::new(
            "postgres://app:hunter2@127.0.0.1/db",
            Backend::Postgres,
            SqliteSync::Full,
        );
        let shown = format!("{manager:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn percent_decoding_keeps_malformed_sequences() {
        let check =
            |input: &str, expect: &str| assert_eq!(percent_decode(input), expect, "{input}");
        check("p%40ss", "p@ss");
        check("100%", "100%");
        check("%zz%4", "%zz%4");
        check("%C3%A9", "\u{e9}");
    }
}
