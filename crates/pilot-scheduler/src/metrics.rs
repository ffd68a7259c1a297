//! The scheduler's Prometheus metrics. They are registered into the registry the process
//! exports (the server's `/metrics`, or pilot-worker's own listener), and no label ever carries
//! a user id, a plan name or a run id: only fixed words.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// One label with a fixed value.
type Label = [(&'static str, &'static str); 1];

/// Handles on every scheduler metric; cheap to clone (clones share the values).
#[derive(Debug, Clone)]
pub struct SchedulerMetrics {
    fire_lag: Histogram,
    missed: Family<Label, Counter>,
    fired: Counter,
    queue_depth: Gauge,
    running: Gauge,
    claimed: Counter,
    takeovers: Counter,
    abandoned: Counter,
    leases_lost: Counter,
    finished: Family<Label, Counter>,
    released: Counter,
    parked: Counter,
    looks: Counter,
}

impl Default for SchedulerMetrics {
    fn default() -> Self {
        Self {
            // 1 ms to about 65 s, doubling: a fire is normally a few ms late.
            fire_lag: Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                0.001, 2.0, 17,
            )),
            missed: Family::default(),
            fired: Counter::default(),
            queue_depth: Gauge::default(),
            running: Gauge::default(),
            claimed: Counter::default(),
            takeovers: Counter::default(),
            abandoned: Counter::default(),
            leases_lost: Counter::default(),
            finished: Family::default(),
            released: Counter::default(),
            parked: Counter::default(),
            looks: Counter::default(),
        }
    }
}

impl SchedulerMetrics {
    /// Metrics registered under the `scheduler_` prefix in `registry`, which the process
    /// creates with the prefix `pilot` (`Registry::with_prefix("pilot")`, as pilot-api's
    /// `Metrics` does): the names become `pilot_scheduler_*`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        let r = registry.sub_registry_with_prefix("scheduler");
        r.register(
            "fire_lag_seconds",
            "How late each scheduled run was created after its tick",
            metrics.fire_lag.clone(),
        );
        r.register(
            "missed_fires",
            "Ticks that created no run, by reason (misfire: late beyond the policy; overlap: the previous run was still active)",
            metrics.missed.clone(),
        );
        r.register("fires", "Runs created by schedules", metrics.fired.clone());
        r.register(
            "queue_depth",
            "Runs waiting for a worker (all users), as last seen",
            metrics.queue_depth.clone(),
        );
        r.register(
            "runs_in_flight",
            "Runs this process is executing",
            metrics.running.clone(),
        );
        r.register(
            "runs_claimed",
            "Runs this process claimed (queued or taken over)",
            metrics.claimed.clone(),
        );
        r.register(
            "takeovers",
            "Runs this process took over after their previous worker's lease expired",
            metrics.takeovers.clone(),
        );
        r.register(
            "runs_abandoned",
            "Runs failed because their lease expired more often than the takeover cap",
            metrics.abandoned.clone(),
        );
        r.register(
            "leases_lost",
            "Runs this process stopped because another worker took them over",
            metrics.leases_lost.clone(),
        );
        r.register(
            "runs_finished",
            "Runs this process finished, by status",
            metrics.finished.clone(),
        );
        r.register(
            "runs_released",
            "Runs this process gave back to the queue (shutdown grace ran out, or a write failed)",
            metrics.released.clone(),
        );
        r.register(
            "runs_parked",
            "Runs this process parked in the queue until a step's next attempt (a long retry delay)",
            metrics.parked.clone(),
        );
        r.register(
            "database_looks",
            "Times the worker looked at the database to decide what to do (one read query each)",
            metrics.looks.clone(),
        );
        metrics
    }

    pub(crate) fn looked(&self) {
        self.looks.inc();
    }

    pub(crate) fn observe_fire_lag(&self, seconds: f64) {
        self.fired.inc();
        self.fire_lag.observe(seconds.max(0.0));
    }

    pub(crate) fn missed(&self, reason: &'static str, n: u64) {
        if n > 0 {
            self.missed.get_or_create(&[("reason", reason)]).inc_by(n);
        }
    }

    pub(crate) fn set_queue_depth(&self, n: u64) {
        self.queue_depth.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    pub(crate) fn run_started(&self, taken_over: bool) {
        self.claimed.inc();
        self.running.inc();
        if taken_over {
            self.takeovers.inc();
        }
    }

    pub(crate) fn run_ended(&self) {
        self.running.dec();
    }

    pub(crate) fn abandoned(&self, n: u64) {
        self.abandoned.inc_by(n);
    }

    pub(crate) fn lease_lost(&self) {
        self.leases_lost.inc();
    }

    pub(crate) fn finished(&self, status: &'static str) {
        self.finished.get_or_create(&[("status", status)]).inc();
    }

    pub(crate) fn released(&self) {
        self.released.inc();
    }

    pub(crate) fn parked(&self) {
        self.parked.inc();
    }

    /// Runs this process parked so far.
    pub fn parked_count(&self) -> u64 {
        self.parked.get()
    }

    /// Times the worker looked at the database so far: its idle cost.
    pub fn look_count(&self) -> u64 {
        self.looks.get()
    }

    /// Takeovers counted so far (for tests and logs).
    pub fn takeover_count(&self) -> u64 {
        self.takeovers.get()
    }

    /// Runs created by schedules so far.
    pub fn fire_count(&self) -> u64 {
        self.fired.get()
    }

    /// Ticks dropped for `reason` (`misfire` or `overlap`) so far.
    pub fn missed_count(&self, reason: &'static str) -> u64 {
        self.missed.get_or_create(&[("reason", reason)]).get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exported_names_carry_no_identifiers() {
        let mut registry = Registry::with_prefix("pilot");
        let metrics = SchedulerMetrics::register(&mut registry);
        metrics.observe_fire_lag(0.02);
        metrics.missed("misfire", 3);
        metrics.run_started(true);
        metrics.finished("succeeded");
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for needle in [
            "pilot_scheduler_fire_lag_seconds_bucket",
            "pilot_scheduler_missed_fires_total{reason=\"misfire\"} 3",
            "pilot_scheduler_takeovers_total 1",
            "pilot_scheduler_runs_finished_total{status=\"succeeded\"} 1",
            "pilot_scheduler_queue_depth 0",
        ] {
            assert!(text.contains(needle), "{needle} missing from\n{text}");
        }
        assert_eq!(metrics.missed_count("misfire"), 3);
        assert_eq!(metrics.takeover_count(), 1);
    }
}
