//! Shared helpers of the scheduler's integration tests: an engine that executes webhook steps
//! against a local fake server, schedules, a worker running in the background, and (from
//! `pilot_scheduler::testing`, shared with the worker binary's tests) users, plans, runs and
//! waiting for the database to reach a state.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use pilot_core::{CredentialStore, PlanId, RunStore, UserId};
use pilot_engine::{Engine, EngineConfig, EngineParts};
use pilot_registry::{OutboundClient, OutboundConfig, Registry, parse_allowlist};
pub(crate) use pilot_scheduler::testing::{plan, post_step, run, runs_of, user, wait_for};
use pilot_scheduler::{Clock, SchedulerMetrics, Worker, WorkerConfig};
use pilot_storage::{Database, MisfirePolicy, OverlapPolicy, ScheduleRow, ScheduleSpec};
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;

/// An engine over `db` with the webhook provider, allowed to reach 127.0.0.1 only.
pub(crate) fn engine(db: &Database) -> Arc<Engine> {
    engine_with(db, EngineConfig::default())
}

/// [`engine`] with `config`.
pub(crate) fn engine_with(db: &Database, config: EngineConfig) -> Arc<Engine> {
    let mut registry = Registry::new();
    pilot_provider_http::register(&mut registry).unwrap();
    let http = OutboundClient::new(OutboundConfig {
        allow: parse_allowlist("127.0.0.1/32").unwrap(),
        ..OutboundConfig::default()
    })
    .unwrap();
    let runs: Arc<dyn RunStore> = Arc::new(db.clone());
    let credentials: Arc<dyn CredentialStore> = Arc::new(db.clone());
    Arc::new(Engine::new(EngineParts {
        registry: Arc::new(registry),
        runs,
        credentials,
        http: Arc::new(http),
        config,
    }))
}

/// Schedules `plan` with `cron` (UTC) from `next_run_at`.
pub(crate) async fn schedule(
    db: &Database,
    user: &UserId,
    plan: &PlanId,
    cron: &str,
    next_run_at: DateTime<Utc>,
    misfire: MisfirePolicy,
    overlap: OverlapPolicy,
) -> ScheduleRow {
    let spec = ScheduleSpec {
        cron: cron.to_owned(),
        timezone: "UTC".to_owned(),
        misfire,
        grace_seconds: 3600,
        overlap,
        next_run_at: Some(next_run_at),
        enabled: true,
    };
    db.upsert_schedule(user, plan, &spec)
        .await
        .unwrap()
        .unwrap()
}

/// Worker settings for tests: short leases, a quick idle poll.
pub(crate) fn config(name: &str) -> WorkerConfig {
    let mut config = WorkerConfig::new(name);
    config.lease_ttl = Duration::from_secs(2);
    config.idle_poll = Duration::from_millis(500);
    config.drain_grace = Duration::from_secs(5);
    config
}

/// A worker running in the background until [`Running::stop`].
pub(crate) struct Running {
    pub(crate) signal: Arc<Notify>,
    pub(crate) metrics: SchedulerMetrics,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Running {
    /// Starts a worker over `db` with `config`, reading due times from `clock`.
    pub(crate) fn start(db: &Database, config: WorkerConfig, clock: Arc<dyn Clock>) -> Self {
        Self::start_with(db, config, clock, engine(db))
    }

    /// [`Running::start`] executing with `engine`.
    pub(crate) fn start_with(
        db: &Database,
        config: WorkerConfig,
        clock: Arc<dyn Clock>,
        engine: Arc<Engine>,
    ) -> Self {
        let signal = Arc::new(Notify::new());
        let metrics = SchedulerMetrics::default();
        let worker = Worker::new(config, db.clone(), engine, signal.clone())
            .with_clock(clock)
            .with_metrics(metrics.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            worker
                .run(async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        Self {
            signal,
            metrics,
            stop: Some(stop),
            task,
        }
    }

    /// Asks the worker to stop and waits until it has drained.
    pub(crate) async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(30), &mut self.task)
            .await
            .unwrap()
            .unwrap();
    }
}
