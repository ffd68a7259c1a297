//! Fresh migrated databases for tests (feature `test-support`), for this crate and for the API
//! and scheduler crates.
//!
//! SQLite: a file in a temporary directory. PostgreSQL (when `PILOT_TEST_POSTGRES_URL` names a
//! superuser connection, e.g. `postgres://postgres@127.0.0.1:5432/test`): once per test process,
//! an owner role and an application role (both NOSUPERUSER, NOBYPASSRLS, names carrying the
//! process id and a random suffix) and a template database migrated by the owner with the app
//! role granted; then per test a database cloned from it (`CREATE DATABASE x TEMPLATE t`),
//! dropped when the [`TestDb`] is dropped. The handle connects as the application role, so row-
//! level security really applies. Databases and roles left by dead test processes (their pid is
//! no longer running) are swept by name prefix when a process first needs PostgreSQL.
//!
//! Without `PILOT_TEST_POSTGRES_URL`, PostgreSQL tests print `SKIPPED: PILOT_TEST_POSTGRES_URL
//! not set` and do nothing, except under `CI=true`, where they fail.
//!
//! The slowest tests (several processes, crashes, outages) ask [`slow_tests_enabled`] first:
//! they run under `PILOT_SLOW_TESTS=1` or `CI=true` (`.ci/run` sets both), and otherwise print
//! a SKIPPED line, so a developer's `cargo test` stays quick.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use diesel::RunQueryDsl;
use diesel::connection::SimpleConnection;

pub use crate::config::Backend;
use crate::conn::{DbConn, establish};
use crate::{Database, DbConfig, Keyring, SqliteSync, StorageError, migrate};

/// The environment variable naming the PostgreSQL superuser URL tests use.
pub const POSTGRES_URL_ENV: &str = "PILOT_TEST_POSTGRES_URL";
/// Every database and role these helpers create starts with this.
pub const NAME_PREFIX: &str = "pilot_t_";

/// A fresh, migrated database of one backend, with a [`Database`] handle (keyring included)
/// connected as the application role. Dropping it drops the PostgreSQL database.
pub struct TestDb {
    db: Option<Database>,
    backend: Backend,
    url: String,
    owner_url: Option<String>,
    keyring: Keyring,
    pg: Option<PgDatabase>,
    _dir: Option<tempfile::TempDir>,
}

struct PgDatabase {
    admin_url: String,
    name: String,
    app_role: String,
}

impl std::fmt::Debug for TestDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestDb")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

/// The PostgreSQL URL from the environment. `None` (after printing a loud SKIPPED line) when it
/// is not set; panics when it is not set and `CI=true`.
#[allow(clippy::disallowed_methods, clippy::print_stderr)]
pub fn postgres_url() -> Option<String> {
    match std::env::var(POSTGRES_URL_ENV) {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            let ci = std::env::var("CI")
                .map(|v| v == "true" || v == "1")
                .unwrap_or(false);
            assert!(
                !ci,
                "{POSTGRES_URL_ENV} must be set when CI=true: the PostgreSQL tests cannot be skipped in CI"
            );
            eprintln!("SKIPPED: {POSTGRES_URL_ENV} not set");
            None
        }
    }
}

/// The environment variable that turns the slow multi-process tests on.
pub const SLOW_TESTS_ENV: &str = "PILOT_SLOW_TESTS";

/// Whether the slow multi-process test `name` should run: yes under `PILOT_SLOW_TESTS=1` or
/// `CI=true`; otherwise it prints a loud SKIPPED line saying how to run it.
#[allow(clippy::disallowed_methods, clippy::print_stderr)]
pub fn slow_tests_enabled(name: &str) -> bool {
    let on = |var: &str| std::env::var(var).is_ok_and(|v| v == "1" || v == "true");
    if on(SLOW_TESTS_ENV) || on("CI") {
        return true;
    }
    eprintln!("SKIPPED: {name} is a slow multi-process test; run it with {SLOW_TESTS_ENV}=1");
    false
}

impl TestDb {
    /// A fresh database of `backend`; `None` only for PostgreSQL when it is not configured.
    pub async fn new(backend: Backend) -> Option<TestDb> {
        match backend {
            Backend::Sqlite => Some(Self::sqlite().await),
            Backend::Postgres => Self::postgres().await,
        }
    }

    /// A fresh SQLite database in a temporary directory.
    pub async fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
        let url = format!("sqlite://{}", dir.path().join("pilot.db").display());
        let keyring = random_keyring();
        let db = Database::open(&test_config(&url, None))
            .await
            .unwrap_or_else(|e| panic!("open test SQLite database: {e}"))
            .with_keyring(keyring.clone());
        TestDb {
            db: Some(db),
            backend: Backend::Sqlite,
            url,
            owner_url: None,
            keyring,
            pg: None,
            _dir: Some(dir),
        }
    }

    /// A fresh PostgreSQL database cloned from this process's migrated template; `None` when
    /// `PILOT_TEST_POSTGRES_URL` is not set (panics under `CI=true`).
    pub async fn postgres() -> Option<TestDb> {
        let admin = postgres_url()?;
        let clone = tokio::task::spawn_blocking(move || clone_database(&admin))
            .await
            .unwrap_or_else(|e| panic!("clone task: {e}"))
            .unwrap_or_else(|e| panic!("create test PostgreSQL database: {e}"));
        let keyring = random_keyring();
        let mut config = test_config(&clone.app_url, Some(clone.owner_url.clone()));
        config.run_migrations = false;
        let db = Database::open(&config)
            .await
            .unwrap_or_else(|e| panic!("open test PostgreSQL database: {e}"))
            .with_keyring(keyring.clone());
        Some(TestDb {
            db: Some(db),
            backend: Backend::Postgres,
            url: clone.app_url,
            owner_url: Some(clone.owner_url),
            keyring,
            pg: Some(PgDatabase {
                admin_url: clone.admin_url,
                name: clone.name,
                app_role: clone.app_role,
            }),
            _dir: None,
        })
    }

    /// SQLite, then PostgreSQL when configured.
    pub async fn all() -> Vec<TestDb> {
        let mut out = vec![Self::sqlite().await];
        out.extend(Self::postgres().await);
        out
    }

    /// The handle (application role on PostgreSQL), with a keyring.
    pub fn db(&self) -> &Database {
        // Present until drop.
        self.db
            .as_ref()
            .unwrap_or_else(|| unreachable!("the database handle lives until drop"))
    }

    /// Which backend this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The application URL (a `sqlite://` path for SQLite).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The owner role's URL (PostgreSQL only).
    pub fn owner_url(&self) -> Option<&str> {
        self.owner_url.as_deref()
    }

    /// The superuser URL (PostgreSQL only).
    pub fn admin_url(&self) -> Option<&str> {
        self.pg.as_ref().map(|p| p.admin_url.as_str())
    }

    /// PostgreSQL: the superuser's URL (from `PILOT_TEST_POSTGRES_URL`, whatever database it
    /// names) pointed at this test's database, for tampering with and inspecting rows past
    /// row-level security.
    pub fn superuser_url(&self) -> Option<String> {
        let pg = self.pg.as_ref()?;
        with_db(&pg.admin_url, &pg.name).ok()
    }

    /// The application role's name (PostgreSQL only).
    pub fn app_role(&self) -> Option<&str> {
        self.pg.as_ref().map(|p| p.app_role.as_str())
    }

    /// A configuration that opens another handle on the same database (a second worker, the
    /// server binary), without running migrations.
    pub fn config(&self) -> DbConfig {
        let mut config = test_config(&self.url, self.owner_url.clone());
        config.run_migrations = false;
        config
    }

    /// The keyring the handle uses.
    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Close our pool first; FORCE then ends any connection a test still holds elsewhere.
        self.db = None;
        if let Some(pg) = &self.pg
            && let Ok(mut conn) = establish(&pg.admin_url, Backend::Postgres, SqliteSync::Full)
        {
            let _ = conn.batch_execute(&format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                pg.name
            ));
        }
    }
}

fn test_config(url: &str, owner: Option<String>) -> DbConfig {
    let mut config = DbConfig::new(url);
    config.pool_size = 4;
    config.migration_url = owner;
    config
}

fn random_keyring() -> Keyring {
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).unwrap_or_else(|e| panic!("randomness: {e}"));
    Keyring::from_raw(&[("k1", key)], "k1").unwrap_or_else(|e| panic!("keyring: {e}"))
}

/// This process's roles and migrated template.
struct Template {
    suffix: String,
    owner_role: String,
    app_role: String,
    name: String,
}

struct Clone {
    admin_url: String,
    owner_url: String,
    app_url: String,
    app_role: String,
    name: String,
}

static TEMPLATE: OnceLock<Mutex<Option<Template>>> = OnceLock::new();
static COUNTER: AtomicU64 = AtomicU64::new(0);

fn admin_conn(admin_url: &str) -> Result<DbConn, StorageError> {
    Ok(establish(admin_url, Backend::Postgres, SqliteSync::Full)?)
}

fn clone_database(admin_url: &str) -> Result<Clone, StorageError> {
    let lock = TEMPLATE.get_or_init(|| Mutex::new(None));
    // Serialise template creation and cloning within the process.
    let mut guard = lock.lock().unwrap_or_else(|e| e.into_inner());
    if guard.is_none() {
        *guard = Some(create_template(admin_url)?);
    }
    let template = guard
        .as_ref()
        .ok_or_else(|| StorageError::Config("no template".to_owned()))?;
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = format!("{NAME_PREFIX}{}_{n}", template.suffix);
    let mut admin = admin_conn(admin_url)?;
    admin.batch_execute(&format!(
        "CREATE DATABASE \"{name}\" TEMPLATE \"{}\" OWNER \"{}\"",
        template.name, template.owner_role
    ))?;
    Ok(Clone {
        admin_url: admin_url.to_owned(),
        owner_url: with_user_and_db(admin_url, &template.owner_role, &name)?,
        app_url: with_user_and_db(admin_url, &template.app_role, &name)?,
        app_role: template.app_role.clone(),
        name,
    })
}

fn create_template(admin_url: &str) -> Result<Template, StorageError> {
    let mut admin = admin_conn(admin_url)?;
    sweep(&mut admin);
    let mut random = [0u8; 4];
    getrandom::fill(&mut random).map_err(|e| StorageError::Config(e.to_string()))?;
    let suffix = format!("{}_{}", std::process::id(), hex::encode(random));
    let owner_role = format!("{NAME_PREFIX}{suffix}_owner");
    let app_role = format!("{NAME_PREFIX}{suffix}_app");
    let name = format!("{NAME_PREFIX}{suffix}_tpl");
    admin.batch_execute(&format!(
        "CREATE ROLE \"{owner_role}\" LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE; \
         CREATE ROLE \"{app_role}\" LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;"
    ))?;
    admin.batch_execute(&format!(
        "CREATE DATABASE \"{name}\" OWNER \"{owner_role}\""
    ))?;
    {
        let mut owner = establish(
            &with_user_and_db(admin_url, &owner_role, &name)?,
            Backend::Postgres,
            SqliteSync::Full,
        )?;
        migrate::run_pending(&mut owner)?;
        diesel::sql_query("SELECT pilot_grant_app($1)")
            .bind::<diesel::sql_types::Text, _>(&app_role)
            .execute(&mut owner)?;
    }
    Ok(Template {
        suffix,
        owner_role,
        app_role,
        name,
    })
}

#[derive(diesel::QueryableByName)]
struct Name {
    #[diesel(sql_type = diesel::sql_types::Text)]
    name: String,
}

/// Drops databases and roles whose creating process is gone (the pid in their name is not
/// running). Errors are ignored: another process may be sweeping the same leftovers.
fn sweep(admin: &mut DbConn) {
    let dead = |name: &str| -> bool {
        let Some(rest) = name.strip_prefix(NAME_PREFIX) else {
            return false;
        };
        let Some(pid) = rest.split('_').next().and_then(|p| p.parse::<u32>().ok()) else {
            return false;
        };
        pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists()
    };
    let like = format!("{}%", NAME_PREFIX.replace('_', "\\_"));
    let databases: Vec<Name> =
        diesel::sql_query("SELECT datname::text AS name FROM pg_database WHERE datname LIKE $1")
            .bind::<diesel::sql_types::Text, _>(&like)
            .load(admin)
            .unwrap_or_default();
    for db in databases.iter().filter(|d| dead(&d.name)) {
        let _ = admin.batch_execute(&format!(
            "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
            db.name
        ));
    }
    let roles: Vec<Name> =
        diesel::sql_query("SELECT rolname::text AS name FROM pg_roles WHERE rolname LIKE $1")
            .bind::<diesel::sql_types::Text, _>(&like)
            .load(admin)
            .unwrap_or_default();
    for role in roles.iter().filter(|r| dead(&r.name)) {
        let _ = admin.batch_execute(&format!("DROP ROLE IF EXISTS \"{}\"", role.name));
    }
}

/// `url` (`postgres://user:pass@host:port/db?query`) with another database, everything else
/// kept.
fn with_db(url: &str, db: &str) -> Result<String, StorageError> {
    let (scheme, authority, query) = split_url(url)?;
    Ok(join_url(scheme, authority, db, query))
}

/// `postgres://user@host:port/db?query` with another user (no password: local trust auth) and
/// database.
fn with_user_and_db(url: &str, user: &str, db: &str) -> Result<String, StorageError> {
    let (scheme, authority, query) = split_url(url)?;
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    Ok(join_url(scheme, &format!("{user}@{host}"), db, query))
}

/// A URL's scheme, authority (`user:pass@host:port`) and query; the path is dropped.
fn split_url(url: &str) -> Result<(&str, &str, Option<&str>), StorageError> {
    let bad = || StorageError::Config(format!("{POSTGRES_URL_ENV} is not a postgres:// URL"));
    let (scheme, rest) = url.split_once("://").ok_or_else(bad)?;
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, Some(q)),
        None => (rest, None),
    };
    let authority = rest.split('/').next().ok_or_else(bad)?;
    Ok((scheme, authority, query))
}

fn join_url(scheme: &str, authority: &str, db: &str, query: Option<&str>) -> String {
    match query {
        Some(q) => format!("{scheme}://{authority}/{db}?{q}"),
        None => format!("{scheme}://{authority}/{db}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_rewritten_whatever_database_they_name() {
        for (url, expect) in [
            (
                "postgres://postgres@127.0.0.1:5432/test",
                "postgres://postgres@127.0.0.1:5432/x",
            ),
            (
                "postgres://postgres@127.0.0.1:5432/postgres",
                "postgres://postgres@127.0.0.1:5432/x",
            ),
            (
                "postgresql://u:p@h/testdb?sslmode=disable",
                "postgresql://u:p@h/x?sslmode=disable",
            ),
            ("postgres://u@h", "postgres://u@h/x"),
        ] {
            assert_eq!(with_db(url, "x").unwrap(), expect, "{url}");
        }
        assert_eq!(
            with_user_and_db("postgres://postgres:pw@h:1/postgres?a=b", "r", "x").unwrap(),
            "postgres://r@h:1/x?a=b"
        );
    }
}
