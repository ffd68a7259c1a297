//! Shared helpers of the scheduler's integration tests: an engine that executes webhook steps
//! against a local fake server, users, plans and schedules, a worker running in the background,
//! and waiting for the database to reach a state.

#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr,
    reason = "shared by several test binaries, each using a part; tests fail on the unexpected"
)]

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use pilot_core::{CredentialStore, PlanId, RetryPolicy, RunId, RunStore, Step, UserId};
use pilot_engine::{Engine, EngineConfig, EngineParts};
use pilot_registry::{OutboundClient, OutboundConfig, Registry, parse_allowlist};
use pilot_scheduler::{Clock, SchedulerMetrics, Worker, WorkerConfig};
use pilot_storage::{
    Database, MisfirePolicy, NewPlan, OverlapPolicy, PageRequest, RunRow, ScheduleRow, ScheduleSpec,
};
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;

/// An engine over `db` with the webhook provider, allowed to reach 127.0.0.1 only.
pub(crate) fn engine(db: &Database) -> Arc<Engine> {
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
        config: EngineConfig::default(),
    }))
}

/// A webhook step posting to `url`, with one attempt and a short timeout unless retried.
pub(crate) fn post_step(id: &str, url: &str) -> Step {
    let params = serde_json::json!({ "url": url, "body": { "step": id } });
    Step {
        id: id.to_owned(),
        provider: "webhook".to_owned(),
        action: "post".to_owned(),
        params: params.as_object().unwrap().clone(),
        retry: Some(RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        }),
        timeout_ms: Some(20_000),
        when: None,
        continue_on_error: false,
    }
}

/// A user with a unique name.
pub(crate) async fn user(db: &Database) -> UserId {
    db.create_user(&format!("u-{}", pilot_core::new_id()), false)
        .await
        .unwrap()
        .id
}

/// A stored plan of `steps`.
pub(crate) async fn plan(db: &Database, user: &UserId, name: &str, steps: Vec<Step>) -> PlanId {
    let plan = NewPlan {
        name: name.to_owned(),
        original_prompt: None,
        steps,
        plain_english_steps: Vec::new(),
        required_providers: vec!["webhook".to_owned()],
        trigger: None,
        status: "active".to_owned(),
    };
    db.create_plan(user, &plan).await.unwrap().id
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

/// Every run of `plan`, oldest first.
pub(crate) async fn runs_of(db: &Database, user: &UserId, plan: &PlanId) -> Vec<RunRow> {
    let mut out = Vec::new();
    let mut page = PageRequest::first(500);
    loop {
        let got = db.list_runs_for_plan(user, plan, &page).await.unwrap();
        out.extend(got.items);
        match got.next_cursor {
            Some(c) => page = PageRequest::after(500, c),
            None => break,
        }
    }
    out.reverse();
    out
}

/// One run.
pub(crate) async fn run(db: &Database, user: &UserId, id: &RunId) -> RunRow {
    db.run_by_id(user, id).await.unwrap().unwrap()
}

/// Polls `probe` every 50 ms until it answers `Some`, failing after `limit`.
pub(crate) async fn wait_for<T, F, Fut>(what: &str, limit: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
        let signal = Arc::new(Notify::new());
        let metrics = SchedulerMetrics::default();
        let worker = Worker::new(config, db.clone(), engine(db), signal.clone())
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
