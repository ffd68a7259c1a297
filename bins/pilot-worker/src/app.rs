//! The worker's wiring: the parsed configuration becomes a database handle with its keyring, the
//! provider registry, the guarded HTTP client, a metered engine and the scheduler's worker, with
//! a small `/metrics` listener beside it. SIGTERM or SIGINT starts the drain.

use std::sync::Arc;

use anyhow::Context as _;
use pilot_engine::EngineConfig;
use pilot_registry::{OutboundClient, OutboundConfig, Registry, parse_allowlist};
use pilot_scheduler::{EngineSetup, SchedulerMetrics, Worker, WorkerConfig, build_engine};
use pilot_storage::{Backend, Database, DbConfig, KeySettings, KeySource, Keyring};
use pilot_telemetry::Metrics;
use tokio::sync::Notify;

use crate::cli::{Cli, LogFormat, SqliteSync};
use crate::metrics_http;

/// Starts tracing to stderr, as text or JSON lines.
pub(crate) fn init_tracing(cli: &Cli) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log)
        .with_context(|| format!("invalid log filter '{}'", cli.log))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match cli.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("cannot start logging: {e}"))
}

/// Runs the worker until SIGTERM or SIGINT, then drains.
pub(crate) fn run(cli: Cli) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(serve(cli));
    // Every task, and with them every database handle, is gone once the runtime is dropped;
    // then no thread may still be inside libpq when the process exits (its OpenSSL clean-up at
    // exit would pull locks from under it).
    drop(runtime);
    let open = pilot_storage::quiesce(std::time::Duration::from_secs(10));
    if open > 0 {
        tracing::warn!(open, "database connections were still open at exit");
    }
    result
}

async fn serve(cli: Cli) -> anyhow::Result<()> {
    let db = open(&cli).await?;
    let allow = parse_allowlist(&cli.outbound_allow).context("PILOT_OUTBOUND_ALLOW")?;
    let http = Arc::new(OutboundClient::new(OutboundConfig {
        allow,
        ..OutboundConfig::default()
    })?);
    let registry = Arc::new(registry(&cli)?);

    let mut metrics = Metrics::new();
    let scheduler_metrics = SchedulerMetrics::register(metrics.registry_mut());
    let metrics = Arc::new(metrics);
    let engine = build_engine(EngineSetup {
        db: db.clone(),
        registry: registry.clone(),
        http,
        config: EngineConfig {
            max_output_bytes: cli.max_output_bytes,
            max_run_state_bytes: cli.max_run_state_bytes,
            ..EngineConfig::default()
        },
        metrics: metrics.clone(),
    });

    let listener = match cli.metrics_bind.0 {
        Some(addr) => Some(
            metrics_http::serve(addr, metrics.clone(), db.clone(), registry)
                .await?
                .1,
        ),
        None => None,
    };

    let mut config = WorkerConfig::new(cli.name.clone().unwrap_or_else(default_name));
    config.concurrency = cli.concurrency;
    config.lease_ttl = cli.lease_ttl;
    config.max_takeovers = cli.max_takeovers;
    config.max_running_per_user = cli.max_running_per_user;
    config.retain_runs = cli.retain_runs;
    config.retain_logs = cli.retain_logs;
    config.drain_grace = cli.drain_grace;
    config.idle_poll = cli.idle_poll;
    config.misfire_threshold = cli.misfire_threshold;
    config.fire_schedules = !cli.no_fire;
    config.execute_runs = !cli.no_execute;
    tracing::info!(name = %config.owner, database = db.backend().as_str(), "pilot-worker starting");

    // Nothing in this process adds work, so the in-process signal is never notified: wake-ups
    // come from LISTEN (PostgreSQL) or the idle poll.
    let worker =
        Worker::new(config, db, engine, Arc::new(Notify::new())).with_metrics(scheduler_metrics);
    worker
        .run(shutdown_signal())
        .await
        .context("the worker failed")?;
    if let Some(listener) = listener {
        listener.abort();
    }
    Ok(())
}

/// `host:pid`, unique enough to tell workers apart on runs.
fn default_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".to_owned());
    format!("{host}:{}", std::process::id())
}

/// The database URL: the flag, the file, or the embedded default.
fn database_url(cli: &Cli) -> anyhow::Result<String> {
    if let Some(url) = &cli.database_url {
        return Ok(url.clone());
    }
    if let Some(path) = &cli.database_url_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the database URL from {}", path.display()))?;
        return Ok(text.trim().to_owned());
    }
    Ok(format!(
        "sqlite://{}",
        cli.data_dir.join("pilot.db").display()
    ))
}

/// Opens the database with its keyring. Migrations run on SQLite (the worker may start before
/// the server) and on PostgreSQL only when an owner URL is given.
async fn open(cli: &Cli) -> anyhow::Result<Database> {
    let mut config = DbConfig::new(database_url(cli)?);
    let backend = config.backend().context("PILOT_DATABASE_URL")?;
    config.sqlite_sync = match cli.sqlite_sync {
        SqliteSync::Full => pilot_storage::SqliteSync::Full,
        SqliteSync::Normal => pilot_storage::SqliteSync::Normal,
    };
    config.migration_url = cli.migration_database_url.clone();
    config.run_migrations = backend == Backend::Sqlite || config.migration_url.is_some();
    let pool = cli
        .pool_size
        .unwrap_or_else(|| u32::try_from(cli.concurrency.saturating_add(4)).unwrap_or(u32::MAX));
    config.pool_size = pool;
    let keyring = keyring(cli, backend)?;
    let db = Database::open(&config)
        .await
        .context("opening the database")?;
    Ok(db.with_keyring(keyring))
}

/// The keyring from the key settings (pilot-storage's `Keyring::from_settings`, shared with
/// the other binary); the embedded SQLite default may use a key file in the data directory.
fn keyring(cli: &Cli, backend: Backend) -> anyhow::Result<Keyring> {
    let settings = KeySettings {
        master_key: cli.master_key.clone(),
        master_key_file: cli.master_key_file.clone(),
        master_keys: cli.master_keys.clone(),
        master_keys_file: cli.master_keys_file.clone(),
        active_key_id: cli.active_key_id.clone(),
        data_dir: cli.data_dir.clone(),
    };
    let (keyring, source) = Keyring::from_settings(&settings, backend == Backend::Sqlite)?;
    if let KeySource::KeyFile(path) = source {
        tracing::info!(path = %path.display(), "using the master key file in the data directory");
    }
    Ok(keyring)
}

/// The installed providers, as pilot-server installs them.
fn registry(cli: &Cli) -> anyhow::Result<Registry> {
    let mut registry = Registry::new();
    let ai = pilot_provider_ai::AiConfig {
        openai_base_url: cli.openai_base_url.clone(),
        groq_base_url: cli.groq_base_url.clone(),
    };
    pilot_provider_ai::register(&mut registry, &ai)?;
    pilot_provider_http::register(&mut registry)?;
    pilot_provider_logic::register(&mut registry)?;
    Ok(registry)
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
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
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received: draining"),
        () = term => tracing::info!("SIGTERM received: draining"),
    }
}
