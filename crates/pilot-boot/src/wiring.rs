//! What both binaries do with their settings: start tracing, open the database with its
//! keyring, build the provider registry and the guarded outbound client, run the async
//! runtime to the end, and wait for SIGTERM or SIGINT.

use std::future::Future;
use std::time::Duration;

use anyhow::Context as _;
use pilot_registry::{OutboundClient, OutboundConfig, Registry, parse_allowlist};
use pilot_storage::{Backend, Database, DbConfig, KeySource, Keyring};

use crate::args::{DatabaseArgs, KeyArgs, LogArgs, LogFormat, ProviderArgs, SqliteSync};

/// Starts tracing to stderr, as text (coloured on a terminal) or JSON lines.
pub fn init_tracing(log: &LogArgs) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(&log.log)
        .with_context(|| format!("invalid log filter '{}'", log.log))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let result = match log.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("cannot start logging: {e}"))
}

/// How [`open_database`] opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenOptions {
    /// Load the keyring even when no key is configured (a PostgreSQL process that encrypts or
    /// decrypts credentials); SQLite always loads it (its default key lives in the data
    /// directory).
    pub need_keys: bool,
    /// Run pending migrations when opening: always on SQLite; on PostgreSQL, with the owner
    /// role of the migration URL when one is given, else with the database URL's role.
    /// `false`: migrate on SQLite, and on PostgreSQL only when a migration URL is given.
    pub migrate_postgres: bool,
    /// Connections in the pool; `None` keeps storage's default.
    pub pool_size: Option<u32>,
}

/// Opens the database the settings name, with its keyring when one is needed or configured.
pub async fn open_database(
    database: &DatabaseArgs,
    keys: &KeyArgs,
    options: OpenOptions,
) -> anyhow::Result<Database> {
    let mut config = DbConfig::new(database.url()?);
    let backend = config.backend().context("PILOT_DATABASE_URL")?;
    config.sqlite_sync = match database.sqlite_sync {
        SqliteSync::Full => pilot_storage::SqliteSync::Full,
        SqliteSync::Normal => pilot_storage::SqliteSync::Normal,
    };
    config.migration_url = database.migration_database_url.clone();
    if !options.migrate_postgres {
        config.run_migrations = backend == Backend::Sqlite || config.migration_url.is_some();
    }
    if let Some(size) = options.pool_size {
        config.pool_size = size;
    }
    let keyring = if options.need_keys || keys.configured() || backend == Backend::Sqlite {
        Some(keyring(database, keys, backend)?)
    } else {
        None
    };
    let db = Database::open(&config)
        .await
        .context("opening the database")?;
    Ok(match keyring {
        Some(k) => db.with_keyring(k),
        None => db,
    })
}

/// The keyring from the key settings; the embedded SQLite default may use a key file in the
/// data directory (generated on first use).
fn keyring(database: &DatabaseArgs, keys: &KeyArgs, backend: Backend) -> anyhow::Result<Keyring> {
    let settings = keys.settings(&database.data_dir);
    let (keyring, source) = Keyring::from_settings(&settings, backend == Backend::Sqlite)?;
    if let KeySource::KeyFile(path) = source {
        tracing::info!(path = %path.display(), "using the master key file in the data directory");
    }
    Ok(keyring)
}

impl ProviderArgs {
    /// Every provider Pilot ships, configured by these settings.
    pub fn registry(&self) -> anyhow::Result<Registry> {
        let mut registry = Registry::new();
        let ai = pilot_provider_ai::AiConfig {
            openai_base_url: self.openai_base_url.clone(),
            groq_base_url: self.groq_base_url.clone(),
        };
        pilot_provider_ai::register(&mut registry, &ai)?;
        pilot_provider_http::register(&mut registry)?;
        pilot_provider_logic::register(&mut registry)?;
        Ok(registry)
    }

    /// The guarded outbound client every provider sends through.
    pub fn outbound(&self) -> anyhow::Result<OutboundClient> {
        let allow = parse_allowlist(&self.outbound_allow).context("PILOT_OUTBOUND_ALLOW")?;
        Ok(OutboundClient::new(OutboundConfig {
            allow,
            ..OutboundConfig::default()
        })?)
    }
}

/// Runs `work` on a multi-threaded runtime, then drops the runtime (and with it every task and
/// database handle) and waits, up to 10 s, for the last pooled PostgreSQL connection to close:
/// no thread may still be inside libpq when the process exits (its OpenSSL clean-up at exit
/// would pull locks from under it).
pub fn run_to_end<F>(work: F) -> anyhow::Result<()>
where
    F: Future<Output = anyhow::Result<()>>,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(work);
    drop(runtime);
    let open = pilot_storage::quiesce(Duration::from_secs(10));
    if open > 0 {
        tracing::warn!(open, "database connections were still open at exit");
    }
    result
}

/// Resolves on SIGTERM or SIGINT (logging which).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received"),
        () = term => tracing::info!("SIGTERM received"),
    }
}
