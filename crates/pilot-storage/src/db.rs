//! The database handle: a pool, the backend it talks to, the group-commit writer, and the one
//! entry point (`run`) that moves blocking diesel work off the async runtime. Handlers, the
//! engine and the scheduler only ever see async methods on [`Database`].

use std::sync::Arc;

use diesel::RunQueryDsl;

use crate::config::{Backend, DbConfig, SqliteSync, backend_of, sqlite_path};
use crate::conn::{DbConn, Pool, build_pool, establish};
use crate::crypto::Keyring;
use crate::writer::Writer;
use crate::{StorageError, migrate};

/// Writer threads on PostgreSQL (see `open_blocking`).
const WRITER_SHARDS_POSTGRES: usize = 2;

/// A handle on the database; cheap to clone (all clones share one pool and one writer).
#[derive(Clone)]
pub struct Database {
    pub(crate) inner: Arc<Inner>,
    pub(crate) keyring: Option<Arc<Keyring>>,
}

pub(crate) struct Inner {
    pub(crate) pool: Pool,
    pub(crate) backend: Backend,
    /// The owner role's URL (migrations, log pruning); `None` when the owner serves.
    pub(crate) owner_url: Option<String>,
    pub(crate) sqlite_sync: SqliteSync,
    pub(crate) writer: Writer,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("backend", &self.inner.backend)
            .field("keyring", &self.keyring)
            .finish_non_exhaustive()
    }
}

impl Database {
    /// Opens the pool (failing with the driver's own error when the database is unreachable),
    /// runs pending migrations when `config.run_migrations` is set, and starts the group-commit
    /// writer. For SQLite the file and its directory are created if missing.
    pub async fn open(config: &DbConfig) -> Result<Database, StorageError> {
        let config = config.clone();
        let db = tokio::task::spawn_blocking(move || Self::open_blocking(&config))
            .await
            .map_err(|e| StorageError::Database(format!("storage task failed: {e}")))??;
        Ok(db)
    }

    fn open_blocking(config: &DbConfig) -> Result<Database, StorageError> {
        let backend = backend_of(&config.url)?;
        if let Some(owner) = &config.migration_url
            && backend_of(owner)? != backend
        {
            return Err(StorageError::Config(
                "the migration URL names another backend".to_owned(),
            ));
        }
        if backend == Backend::Sqlite {
            let path = std::path::Path::new(sqlite_path(&config.url));
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
        }
        if config.run_migrations {
            let url = config.migration_url.as_deref().unwrap_or(&config.url);
            let mut conn = establish(url, backend, config.sqlite_sync)?;
            migrate::run_pending(&mut conn)?;
            // Two roles: the owner grants the serving role (the user named in the main URL)
            // what it needs, so an upgrade that adds a table needs no manual step.
            if let (Some(owner), Some(app)) = (&config.migration_url, url_user(&config.url))
                && url_user(owner).as_deref() != Some(app.as_str())
                && backend == Backend::Postgres
            {
                grant(&mut conn, &app)?;
            }
        }
        let pool = build_pool(
            &config.url,
            backend,
            config.sqlite_sync,
            config.pool_size,
            config.connect_timeout,
        )?;
        // PostgreSQL spends most of a write in round trips: two writer threads overlap them
        // while each still gathers enough writes to batch (with 4, each saw so few at a time
        // that there was about one commit per write). SQLite has one writer at a time anyway.
        let shards = match backend {
            Backend::Postgres => WRITER_SHARDS_POSTGRES,
            Backend::Sqlite => 1,
        };
        let writer = Writer::start(pool.clone(), config.write_batch_max.max(1), shards)?;
        Ok(Database {
            inner: Arc::new(Inner {
                pool,
                backend,
                owner_url: config.migration_url.clone(),
                sqlite_sync: config.sqlite_sync,
                writer,
            }),
            keyring: None,
        })
    }

    /// The same handle with a keyring for credential encryption.
    pub fn with_keyring(mut self, keyring: Keyring) -> Database {
        self.keyring = Some(Arc::new(keyring));
        self
    }

    /// The keyring, if one was given.
    pub fn keyring(&self) -> Option<&Keyring> {
        self.keyring.as_deref()
    }

    /// Which backend this handle talks to.
    pub fn backend(&self) -> Backend {
        self.inner.backend
    }

    /// Runs pending migrations as the owner (the migration URL, or the main one).
    pub async fn migrate(&self) -> Result<(), StorageError> {
        self.with_owner(|conn| migrate::run_pending(conn).map(|_| ()))
            .await
    }

    /// Checks that the database answers (the readiness probe).
    pub async fn ping(&self) -> Result<(), StorageError> {
        self.run(|conn| {
            diesel::sql_query("SELECT 1").execute(conn)?;
            Ok(())
        })
        .await
    }

    /// PostgreSQL: grants the application role what it needs on every table and function
    /// (SELECT/INSERT/UPDATE/DELETE, but only SELECT/INSERT on execution_logs), as the owner.
    /// Run after migrations; a no-op on SQLite.
    pub async fn grant_app_role(&self, role: &str) -> Result<(), StorageError> {
        if self.backend() == Backend::Sqlite {
            return Ok(());
        }
        if !crate::conn::is_plain_id(role) {
            return Err(StorageError::InvalidInput(
                "a role name must be letters, digits, '_' or '-'".to_owned(),
            ));
        }
        let role = role.to_owned();
        self.with_owner(move |conn| grant(conn, &role)).await
    }

    /// The one entry point for blocking work: checks a connection out of the pool and runs `f`
    /// on the blocking thread pool.
    pub(crate) async fn run<T, F>(&self, f: F) -> Result<T, StorageError>
    where
        T: Send + 'static,
        F: FnOnce(&mut DbConn) -> Result<T, StorageError> + Send + 'static,
    {
        let pool = self.inner.pool.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = pool.get()?;
            f(&mut conn)
        })
        .await
        .map_err(|e| StorageError::Database(format!("storage task failed: {e}")))?
    }

    /// Like [`Database::run`], on a fresh owner connection (migrations, pruning). Without a
    /// migration URL the owner is the serving role and a pooled connection is used.
    pub(crate) async fn with_owner<T, F>(&self, f: F) -> Result<T, StorageError>
    where
        T: Send + 'static,
        F: FnOnce(&mut DbConn) -> Result<T, StorageError> + Send + 'static,
    {
        let Some(url) = self.inner.owner_url.clone() else {
            return self.run(f).await;
        };
        let backend = self.inner.backend;
        let sync = self.inner.sqlite_sync;
        tokio::task::spawn_blocking(move || {
            let mut conn = establish(&url, backend, sync)?;
            f(&mut conn)
        })
        .await
        .map_err(|e| StorageError::Database(format!("storage task failed: {e}")))?
    }

    /// The keyring, or [`StorageError::NoKeyring`].
    pub(crate) fn require_keyring(&self) -> Result<Arc<Keyring>, StorageError> {
        self.keyring.clone().ok_or(StorageError::NoKeyring)
    }
}

/// Runs the migration-provided grant function for `role` (PostgreSQL, as the owner).
fn grant(conn: &mut DbConn, role: &str) -> Result<(), StorageError> {
    diesel::sql_query("SELECT pilot_grant_app($1)")
        .bind::<diesel::sql_types::Text, _>(role)
        .execute(conn)?;
    Ok(())
}

/// The user named in a `postgres://user[:password]@host/...` URL, when it is a plain name.
fn url_user(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let (userinfo, _) = rest.split('/').next()?.rsplit_once('@')?;
    let user = userinfo.split(':').next()?;
    crate::conn::is_plain_id(user).then(|| user.to_owned())
}

#[cfg(test)]
mod tests {
    use super::url_user;

    #[test]
    fn user_is_read_from_postgres_urls() {
        let check =
            |url: &str, expect: Option<&str>| assert_eq!(url_user(url).as_deref(), expect, "{url}");
        check(
            "postgres://pilot_app@127.0.0.1:5432/pilot",
            Some("pilot_app"),
        );
        check("postgres://pilot_app:p%40ss@db/pilot", Some("pilot_app"));
        check("postgresql://127.0.0.1/pilot", None);
        check("postgres://we%22ird@db/pilot", None);
        check("postgres://a@b@db/pilot", None);
        check("not a url", None);
    }
}
