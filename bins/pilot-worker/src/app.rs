//! The worker's wiring: the parsed configuration becomes a database handle with its keyring, the
//! provider registry, the guarded HTTP client, a metered engine and the scheduler's worker, with
//! a small `/metrics` listener beside it. SIGTERM or SIGINT starts the drain.

use std::sync::Arc;

use anyhow::Context as _;
use pilot_boot::{OpenOptions, open_database};
use pilot_scheduler::{EngineSetup, SchedulerMetrics, Worker, build_engine};
use pilot_telemetry::Metrics;
use tokio::sync::Notify;

use crate::cli::Cli;
use crate::metrics_http;

/// Runs the worker until SIGTERM or SIGINT, then drains.
pub(crate) fn run(cli: Cli) -> anyhow::Result<()> {
    pilot_boot::run_to_end(serve(cli))
}

async fn serve(cli: Cli) -> anyhow::Result<()> {
    let pool_size = cli.pool_size.unwrap_or_else(|| {
        u32::try_from(cli.worker.concurrency.saturating_add(4)).unwrap_or(u32::MAX)
    });
    // Migrations run on SQLite (the worker may start before the server), and on PostgreSQL
    // only when an owner URL is given.
    let options = OpenOptions {
        need_keys: true,
        migrate_postgres: false,
        pool_size: Some(pool_size),
    };
    let db = open_database(&cli.database, &cli.keys, options).await?;
    let http = Arc::new(cli.providers.outbound()?);
    let registry = Arc::new(cli.providers.registry()?);

    let mut metrics = Metrics::new();
    let scheduler_metrics = SchedulerMetrics::register(metrics.registry_mut());
    let metrics = Arc::new(metrics);
    let engine = build_engine(EngineSetup {
        db: db.clone(),
        registry: registry.clone(),
        http,
        config: cli.engine.config(),
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

    let mut config = cli
        .worker
        .config(cli.name.clone().unwrap_or_else(default_name));
    config.fire_schedules = !cli.no_fire;
    config.execute_runs = !cli.no_execute;
    tracing::info!(name = %config.owner, database = db.backend().as_str(), "pilot-worker starting");

    // Nothing in this process adds work, so the in-process signal is never notified: wake-ups
    // come from LISTEN (PostgreSQL) or the idle poll.
    let worker =
        Worker::new(config, db, engine, Arc::new(Notify::new())).with_metrics(scheduler_metrics);
    worker
        .run(pilot_boot::shutdown_signal())
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
