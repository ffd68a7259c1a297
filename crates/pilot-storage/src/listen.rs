//! PostgreSQL `LISTEN`, for workers that should wake when work is added instead of polling.
//! Written by the scheduler's issue; it lives here because only this crate knows diesel.
//!
//! diesel runs no asynchronous LISTEN loop, but `PgConnection::notifications_iter` reads what
//! the server already pushed (libpq's `PQconsumeInput`: a local socket read, never a query). A
//! dedicated thread holds one pooled connection that has run `LISTEN`, reads it every
//! [`LISTEN_POLL`] and wakes the caller's [`Notify`] when a notification arrived. An idle
//! listener therefore costs the database nothing, and the thread a non-blocking `recv` per poll.
//! Blocking on the socket instead would need libpq's descriptor, which diesel does not expose
//! (and this workspace forbids `unsafe`); the poll is short because it is the dispatch latency
//! of standalone workers (at 100 ms it made a queued run wait 26 ms at the median). When the connection breaks, the thread wakes
//! the caller (a notification may have been lost), waits a second and listens again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use diesel::RunQueryDsl;
use tokio::sync::Notify;

use crate::conn::{DbConn, Manager};
use crate::{Backend, Database, StorageError};

/// How often the listening thread reads its connection: a queued run waits half of it on
/// average before a standalone worker hears of it. An idle listener wakes this often (a local
/// socket read each, about a microsecond of CPU; no query).
pub const LISTEN_POLL: Duration = Duration::from_millis(2);

/// How long the thread waits before listening again after the connection broke.
const RECONNECT_DELAY: Duration = Duration::from_secs(1);

/// A running listener; dropping it stops the thread (within [`LISTEN_POLL`]).
#[derive(Debug)]
pub struct Listener {
    stop: Arc<AtomicBool>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Database {
    /// Listens on `channels` (plain identifiers) and calls `wake.notify_one()` for every batch
    /// of notifications, and after every reconnection. `None` on SQLite, which has no LISTEN:
    /// callers poll instead. Holds one connection of the pool while it runs.
    pub fn listen(
        &self,
        channels: &[&str],
        wake: Arc<Notify>,
    ) -> Result<Option<Listener>, StorageError> {
        if self.backend() != Backend::Postgres {
            return Ok(None);
        }
        if channels.is_empty()
            || !channels
                .iter()
                .all(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
        {
            return Err(StorageError::InvalidInput(
                "channel names must be lower-case letters and '_'".to_owned(),
            ));
        }
        let sql: Vec<String> = channels.iter().map(|c| format!("LISTEN {c}")).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let pool = self.inner.pool.clone();
        let thread_stop = stop.clone();
        std::thread::Builder::new()
            .name("pilot-listen".to_owned())
            .spawn(move || {
                while !thread_stop.load(Ordering::Relaxed) {
                    match pool.get() {
                        Ok(mut conn) => listen_until_broken(&mut conn, &sql, &wake, &thread_stop),
                        Err(e) => {
                            tracing::warn!(error = %e, "LISTEN: no database connection; retrying")
                        }
                    }
                    if !thread_stop.load(Ordering::Relaxed) {
                        std::thread::sleep(RECONNECT_DELAY);
                    }
                }
            })
            .map_err(StorageError::Io)?;
        Ok(Some(Listener { stop }))
    }
}

/// Listens on one connection until it breaks or `stop` is set.
fn listen_until_broken(
    conn: &mut r2d2::PooledConnection<Manager>,
    sql: &[String],
    wake: &Notify,
    stop: &AtomicBool,
) {
    let DbConn::Pg(pg) = &mut ***conn else { return };
    for statement in sql {
        if let Err(e) = diesel::sql_query(statement.as_str()).execute(pg) {
            tracing::warn!(error = %e, "LISTEN failed; retrying");
            return;
        }
    }
    tracing::debug!("listening for queue notifications");
    // Anything sent while we were not listening is lost: let the caller look once.
    wake.notify_one();
    loop {
        if stop.load(Ordering::Relaxed) {
            // The connection goes back to the pool: leave it as it was found.
            let _ = diesel::sql_query("UNLISTEN *").execute(pg);
            return;
        }
        let mut woke = false;
        for notification in pg.notifications_iter() {
            match notification {
                Ok(_) => woke = true,
                Err(e) => {
                    tracing::warn!(error = %e, "LISTEN connection lost; reconnecting");
                    wake.notify_one();
                    return;
                }
            }
        }
        if woke {
            wake.notify_one();
        }
        std::thread::sleep(LISTEN_POLL);
    }
}
