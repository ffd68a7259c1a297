//! Time as storage keeps it: naive UTC truncated to microseconds, so a value reads back equal
//! on both backends (PostgreSQL keeps microseconds; SQLite would keep nanoseconds as text).

use chrono::{DateTime, NaiveDateTime, SubsecRound, Utc};
use diesel::RunQueryDsl;

use crate::StorageError;
use crate::conn::DbConn;

/// The application clock, as stored.
pub(crate) fn now() -> NaiveDateTime {
    to_naive(Utc::now())
}

/// A UTC time as stored.
pub(crate) fn to_naive(t: DateTime<Utc>) -> NaiveDateTime {
    t.naive_utc().trunc_subsecs(6)
}

/// A stored time as UTC.
pub(crate) fn to_utc(t: NaiveDateTime) -> DateTime<Utc> {
    t.and_utc()
}

#[derive(diesel::QueryableByName)]
struct DbNow {
    #[diesel(sql_type = diesel::sql_types::Timestamp)]
    now: NaiveDateTime,
}

/// The database's clock, for lease expiry shared by workers on several machines. On SQLite (one
/// machine, one clock) it is the application clock.
pub(crate) fn db_now(conn: &mut DbConn) -> Result<NaiveDateTime, StorageError> {
    match conn {
        DbConn::Pg(c) => {
            let row: DbNow =
                diesel::sql_query("SELECT (now() AT TIME ZONE 'UTC') AS now").get_result(c)?;
            Ok(row.now.trunc_subsecs(6))
        }
        DbConn::Sqlite(_) => Ok(now()),
    }
}
