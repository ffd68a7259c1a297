//! Database configuration, built once by a binary (from clap flags and env vars) and passed in.

use std::time::Duration;

/// Which database engine a handle talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// A SQLite file (the embedded default).
    Sqlite,
    /// PostgreSQL (production; several workers on several machines).
    Postgres,
}

impl Backend {
    /// `sqlite` or `postgres`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }
}

/// SQLite's `synchronous` pragma. `Full` survives a power loss for every answered request;
/// `Normal` (in WAL mode) may lose the last commits on power loss, never on a process crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SqliteSync {
    /// `synchronous=FULL`, the default.
    #[default]
    Full,
    /// `synchronous=NORMAL`, opt-in (`PILOT_SQLITE_SYNC=normal`).
    Normal,
}

impl SqliteSync {
    /// Parses `full` or `normal` (case-insensitive).
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "full" => Some(Self::Full),
            "normal" => Some(Self::Normal),
            _ => None,
        }
    }
}

/// How to open a [`crate::Database`]. Build it with [`DbConfig::new`] and set fields.
#[derive(Clone)]
#[non_exhaustive]
pub struct DbConfig {
    /// `postgres://...`/`postgresql://...`, `sqlite://path`, `sqlite:path`, or a plain file path
    /// (SQLite). The connection the server and workers use (the application role on PostgreSQL).
    pub url: String,
    /// Most connections the pool holds.
    pub pool_size: u32,
    /// How long a caller waits for a pooled connection before [`crate::StorageError::Unavailable`].
    pub connect_timeout: Duration,
    /// SQLite durability (ignored on PostgreSQL).
    pub sqlite_sync: SqliteSync,
    /// Run pending migrations when opening.
    pub run_migrations: bool,
    /// The owner role's URL on PostgreSQL: migrations and log pruning use it. `None` means the
    /// owner also serves (one-machine setup) and `url` is used.
    pub migration_url: Option<String>,
    /// Most run writes the group-commit writer applies in one transaction.
    pub write_batch_max: usize,
}

impl DbConfig {
    /// A configuration for `url` with the defaults: pool of 8, 5 s connect timeout,
    /// `synchronous=FULL`, migrations run at open, batches of up to 256 writes.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            pool_size: 8,
            connect_timeout: Duration::from_secs(5),
            sqlite_sync: SqliteSync::Full,
            run_migrations: true,
            migration_url: None,
            write_batch_max: 256,
        }
    }

    /// Which backend `url` names, or an error for an unknown scheme.
    pub fn backend(&self) -> Result<Backend, crate::StorageError> {
        backend_of(&self.url)
    }
}

impl std::fmt::Debug for DbConfig {
    // URLs may carry passwords: show only the backend.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbConfig")
            .field("backend", &backend_of(&self.url).ok())
            .field("pool_size", &self.pool_size)
            .field("sqlite_sync", &self.sqlite_sync)
            .field("run_migrations", &self.run_migrations)
            .field(
                "migration_url",
                &self.migration_url.as_ref().map(|_| "[set]"),
            )
            .finish_non_exhaustive()
    }
}

/// The backend a URL names: a `postgres(ql)://` scheme is PostgreSQL, `sqlite:` or a path
/// without a scheme is SQLite, anything else is an error.
pub(crate) fn backend_of(url: &str) -> Result<Backend, crate::StorageError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(Backend::Postgres);
    }
    if url.starts_with("sqlite:") || !url.contains("://") {
        return Ok(Backend::Sqlite);
    }
    let scheme = url.split("://").next().unwrap_or_default();
    Err(crate::StorageError::Config(format!(
        "unsupported database URL scheme '{scheme}'"
    )))
}

/// The file path of a SQLite URL: `sqlite://path`, `sqlite:path` or a bare path.
pub(crate) fn sqlite_path(url: &str) -> &str {
    url.strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_is_chosen_by_scheme() {
        let check =
            |url: &str, expect: Option<Backend>| assert_eq!(backend_of(url).ok(), expect, "{url}");
        check("postgres://u@127.0.0.1/db", Some(Backend::Postgres));
        check("postgresql://u@127.0.0.1/db", Some(Backend::Postgres));
        check("sqlite:///var/lib/pilot/pilot.db", Some(Backend::Sqlite));
        check("sqlite:pilot.db", Some(Backend::Sqlite));
        check("./pilot-data/pilot.db", Some(Backend::Sqlite));
        check("mysql://u@127.0.0.1/db", None);
        check("http://127.0.0.1/", None);
        assert_eq!(sqlite_path("sqlite:///tmp/x.db"), "/tmp/x.db");
        assert_eq!(sqlite_path("sqlite:x.db"), "x.db");
        assert_eq!(sqlite_path("x.db"), "x.db");
        assert_eq!(SqliteSync::parse("NORMAL"), Some(SqliteSync::Normal));
        assert_eq!(SqliteSync::parse("off"), None);
    }

    #[test]
    fn debug_hides_urls() {
        let mut config = DbConfig::new("postgres://app:hunter2@127.0.0.1/db");
        config.migration_url = Some("postgres://owner:hunter3@127.0.0.1/db".into());
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter"), "{shown}");
    }
}
