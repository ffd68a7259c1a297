//! Embedded migrations, one set per backend with identical names. The set that runs is always
//! the one matching the connection's variant.

use diesel::Connection;
use diesel::connection::{AnsiTransactionManager, TransactionManager};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use crate::StorageError;
use crate::conn::DbConn;

const POSTGRES: EmbeddedMigrations = embed_migrations!("../../migrations/postgres");
const SQLITE: EmbeddedMigrations = embed_migrations!("../../migrations/sqlite");

fn migration_error(e: impl std::fmt::Display) -> StorageError {
    StorageError::Migration(e.to_string())
}

/// Runs every pending migration; returns how many ran. Processes starting at once (a server and
/// its workers) take turns: the whole run holds SQLite's write lock (`BEGIN IMMEDIATE`) or a
/// PostgreSQL advisory lock, so the second one finds nothing left to do instead of failing on
/// "table already exists". Each migration runs inside as a savepoint.
pub(crate) fn run_pending(conn: &mut DbConn) -> Result<usize, StorageError> {
    match conn {
        DbConn::Pg(c) => locked(c, "BEGIN; SELECT pg_advisory_xact_lock(7283900121)", |c| {
            c.run_pending_migrations(POSTGRES)
                .map(|m| m.len())
                .map_err(migration_error)
        }),
        DbConn::Sqlite(c) => locked(c, "BEGIN IMMEDIATE", |c| {
            c.run_pending_migrations(SQLITE)
                .map(|m| m.len())
                .map_err(migration_error)
        }),
    }
}

/// Runs `f` in a transaction opened with `begin`.
fn locked<C, T>(
    conn: &mut C,
    begin: &str,
    f: impl FnOnce(&mut C) -> Result<T, StorageError>,
) -> Result<T, StorageError>
where
    C: Connection<TransactionManager = AnsiTransactionManager>,
{
    AnsiTransactionManager::begin_transaction_sql(conn, begin)?;
    match f(conn) {
        Ok(value) => {
            AnsiTransactionManager::commit_transaction(conn)?;
            Ok(value)
        }
        Err(e) => {
            let _ = AnsiTransactionManager::rollback_transaction(conn);
            Err(e)
        }
    }
}

/// Reverts every applied migration (tests prove up, down, up).
#[cfg(test)]
pub(crate) fn revert_all(conn: &mut DbConn) -> Result<usize, StorageError> {
    let reverted = match conn {
        DbConn::Pg(c) => c
            .revert_all_migrations(POSTGRES)
            .map_err(migration_error)?
            .len(),
        DbConn::Sqlite(c) => c
            .revert_all_migrations(SQLITE)
            .map_err(migration_error)?
            .len(),
    };
    Ok(reverted)
}
