#![doc = include_str!("../README.md")]

use std::sync::Arc;

use async_trait::async_trait;
use pilot_core::{RunStore, RunWrite, StoreError, WriteAck};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Every metric a Pilot process exports, in one Prometheus registry. Other parts of the process
/// (the scheduler) add theirs with [`Metrics::registry_mut`] before the state is built.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    runs: Family<RunLabels, Counter>,
    attempts: Family<AttemptLabels, Counter>,
    step_latency: Family<ProviderLabels, Histogram>,
    queue_depth: Gauge,
    http_requests: Family<HttpLabels, Counter>,
    provider_panics: Counter,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RunLabels {
    status: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct AttemptLabels {
    provider: String,
    status: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ProviderLabels {
    provider: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct HttpLabels {
    method: String,
    route: String,
    status: String,
}

fn latency_histogram() -> Histogram {
    // 5 ms to about 82 s.
    Histogram::new(exponential_buckets(0.005, 2.0, 15))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry holding Pilot's run, step and HTTP metrics.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("pilot");
        let runs = Family::<RunLabels, Counter>::default();
        let attempts = Family::<AttemptLabels, Counter>::default();
        let step_latency = Family::<ProviderLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let queue_depth = Gauge::default();
        let http_requests = Family::<HttpLabels, Counter>::default();
        let provider_panics = Counter::default();
        registry.register(
            "provider_panics",
            "Provider calls that panicked (each failed its attempt; the worker went on)",
            provider_panics.clone(),
        );
        registry.register(
            "runs_finished",
            "Runs that reached a terminal status, by status",
            runs.clone(),
        );
        registry.register(
            "step_attempts",
            "Step attempts recorded in the execution log, by provider and status",
            attempts.clone(),
        );
        registry.register(
            "step_latency_seconds",
            "Duration of step attempts, by provider",
            step_latency.clone(),
        );
        registry.register(
            "queue_depth",
            "Runs committed and waiting for a worker (sampled at scrape time)",
            queue_depth.clone(),
        );
        registry.register(
            "http_requests",
            "HTTP requests answered, by method, route pattern and status",
            http_requests.clone(),
        );
        Self {
            registry,
            runs,
            attempts,
            step_latency,
            queue_depth,
            http_requests,
            provider_panics,
        }
    }

    /// The registry, for other components to register their metrics in.
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// Counts one step attempt (or skipped step) and observes its latency.
    fn record_attempt(&self, provider: &str, status: &str, latency_ms: u64) {
        self.attempts
            .get_or_create(&AttemptLabels {
                provider: provider.to_owned(),
                status: status.to_owned(),
            })
            .inc();
        if status != "skipped" {
            #[allow(clippy::cast_precision_loss)]
            let seconds = latency_ms as f64 / 1000.0;
            self.step_latency
                .get_or_create(&ProviderLabels {
                    provider: provider.to_owned(),
                })
                .observe(seconds);
        }
    }

    /// Counts a run that ended with `status` outside the engine (a cancelled queued run).
    pub fn record_run_finished(&self, status: &str) {
        self.runs
            .get_or_create(&RunLabels {
                status: status.to_owned(),
            })
            .inc();
    }

    /// Sets the queue depth gauge.
    pub fn set_queue_depth(&self, depth: u64) {
        self.queue_depth
            .set(i64::try_from(depth).unwrap_or(i64::MAX));
    }

    /// Brings the provider-panic counter up to `total`, the registry's own count (sampled at
    /// scrape time, so the registry needs no handle on the metrics).
    pub fn sync_provider_panics(&self, total: u64) {
        let seen = self.provider_panics.get();
        if total > seen {
            self.provider_panics.inc_by(total - seen);
        }
    }

    /// Counts an answered HTTP request. `route` is the matched pattern (`/api/plans/{id}`) or
    /// `unmatched`, never the raw path.
    pub fn record_request(&self, method: &str, route: &str, status: u16) {
        self.http_requests
            .get_or_create(&HttpLabels {
                method: method.to_owned(),
                route: route.to_owned(),
                status: status.to_string(),
            })
            .inc();
    }

    /// The registry in the Prometheus text format.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// A [`RunStore`] that records [`Metrics`] for each write the inner store accepted.
#[derive(Clone)]
pub struct MeteredRunStore {
    inner: Arc<dyn RunStore>,
    metrics: Arc<Metrics>,
}

impl MeteredRunStore {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn RunStore>, metrics: Arc<Metrics>) -> Self {
        Self { inner, metrics }
    }
}

#[async_trait]
impl RunStore for MeteredRunStore {
    async fn write(&self, write: RunWrite) -> Result<WriteAck, StoreError> {
        // Keep only what the labels need: the write itself moves into the inner store.
        let attempts: Vec<(String, String, u64)> = write
            .logs
            .iter()
            .map(|l| (l.provider.clone(), l.status.clone(), l.latency_ms))
            .collect();
        let finished = write.finished_status();
        let ack = self.inner.write(write).await?;
        for (provider, status, latency_ms) in &attempts {
            self.metrics.record_attempt(provider, status, *latency_ms);
        }
        if let Some(status) = finished {
            self.metrics.record_run_finished(status.as_str());
        }
        Ok(ack)
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use pilot_core::{LogRecord, MemoryStore, RunEnd, RunFinish, RunId, RunStatus, UserId};

    use super::*;

    fn log(provider: &str, status: &str) -> LogRecord {
        LogRecord {
            plan_id: None,
            run_id: RunId::from("r"),
            user_id: UserId::from("secret-user-id"),
            plan_name: "Secret plan name".into(),
            step_number: 0,
            step_id: "a".into(),
            provider: provider.into(),
            action: "post".into(),
            attempt: 1,
            status: status.into(),
            message: None,
            latency_ms: 120,
            output_preview: None,
            error: None,
            timestamp: Utc::now(),
        }
    }

    #[tokio::test]
    async fn writes_are_counted_without_user_data_in_labels() {
        let memory = Arc::new(MemoryStore::new());
        let metrics = Arc::new(Metrics::new());
        let store = MeteredRunStore::new(memory.clone(), metrics.clone());
        let snapshot = pilot_core::RunSnapshot {
            run_id: RunId::from("r"),
            plan_id: None,
            user_id: UserId::from("secret-user-id"),
            plan_name: "Secret plan name".into(),
            steps: Vec::new(),
            input: serde_json::Value::Null,
            states: Vec::new(),
            epoch: 1,
            trigger: pilot_core::TriggerKind::Api,
            cancel: pilot_core::CancelSignal::default(),
        };
        memory.insert_run(&snapshot);
        store
            .write(RunWrite {
                run_id: RunId::from("r"),
                user_id: UserId::from("secret-user-id"),
                epoch: 1,
                logs: vec![log("webhook", "failed"), log("webhook", "succeeded")],
                steps: Vec::new(),
                end: Some(RunEnd::Finish(RunFinish {
                    status: RunStatus::Succeeded,
                    error: None,
                })),
            })
            .await
            .unwrap();
        let text = metrics.encode().unwrap();
        assert!(
            text.contains("pilot_step_attempts_total{provider=\"webhook\",status=\"failed\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("pilot_runs_finished_total{status=\"succeeded\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("pilot_step_latency_seconds_count{provider=\"webhook\"} 2"),
            "{text}"
        );
        assert!(!text.contains("secret"), "{text}");
    }
}
