//! The worker's settings, built once by a binary (flags and environment) and passed in. The
//! defaults are the numbers docs/OPERATIONS.md states.

use std::time::Duration;

/// How a worker fires schedules and executes runs.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerConfig {
    /// The lease holder's name shown on runs it holds, e.g. `host:pid`.
    pub owner: String,
    /// Most runs executed at the same time.
    pub concurrency: usize,
    /// How long a lease lasts without a heartbeat. Heartbeats go out every third of it, so a
    /// dead worker's run is taken over at most this long after its last heartbeat.
    pub lease_ttl: Duration,
    /// Takeovers allowed per run; a run whose lease expires once more fails with a message
    /// saying so.
    pub max_takeovers: u32,
    /// Most runs of one user executing at once across every worker; 0 for no cap. With a cap,
    /// one user's burst leaves slots for the others even when every user's runs are long.
    pub max_running_per_user: u32,
    /// Finished runs older than this are deleted (with their step states) by this worker's
    /// retention pass; `None` keeps them.
    pub retain_runs: Option<Duration>,
    /// Execution-log rows older than this are deleted by the retention pass (as the owner role
    /// where one is configured); `None` keeps them.
    pub retain_logs: Option<Duration>,
    /// Keep at most this many finished runs of each plan (the newest); older ones are deleted
    /// with their step states. Unset: no count limit.
    pub retain_runs_per_plan: Option<u32>,
    /// How often the retention pass runs (when any retention is set).
    pub retention_every: Duration,
    /// Whether this worker fires due schedules (every worker may: the firing transaction makes
    /// exactly one run per tick however many race).
    pub fire_schedules: bool,
    /// Whether this worker executes runs.
    pub execute_runs: bool,
    /// Most schedules claimed by one firing transaction.
    pub fire_batch: usize,
    /// A tick older than this at its firing pass misfired (the schedule's misfire policy
    /// applies); younger ticks are ordinary scheduler latency and always run.
    pub misfire_threshold: Duration,
    /// The longest the worker sleeps without looking at the database, for wake-ups it cannot be
    /// told about (another process on SQLite, a lost notification). Each look costs one query.
    pub idle_poll: Duration,
    /// After a shutdown request, how long runs in flight may take to finish before they are
    /// released back to the queue.
    pub drain_grace: Duration,
}

impl WorkerConfig {
    /// Takeovers allowed per run by default: one. A run in flight when its worker died is
    /// resumed once; if its worker dies again it is quarantined (failed, saying why), since it
    /// may be what crashed them, instead of taking down every worker in turn.
    pub const DEFAULT_MAX_TAKEOVERS: u32 = 1;

    /// The defaults for a worker called `owner`: 8 runs at a time, 30 s leases, 1 takeover,
    /// firing and executing, 15 s misfire threshold, 5 s idle poll, 30 s drain grace.
    pub fn new(owner: impl Into<String>) -> Self {
        Self {
            owner: owner.into(),
            concurrency: 8,
            lease_ttl: Duration::from_secs(30),
            max_takeovers: Self::DEFAULT_MAX_TAKEOVERS,
            max_running_per_user: 0,
            retain_runs: None,
            retain_logs: None,
            retain_runs_per_plan: None,
            retention_every: Duration::from_secs(3600),
            fire_schedules: true,
            execute_runs: true,
            fire_batch: 256,
            misfire_threshold: Duration::from_secs(15),
            idle_poll: Duration::from_secs(5),
            drain_grace: Duration::from_secs(30),
        }
    }

    /// The interval between heartbeats: a third of the lease.
    pub fn heartbeat_interval(&self) -> Duration {
        self.lease_ttl / 3
    }

    /// Checks the settings make sense together.
    pub(crate) fn validate(&self) -> Result<(), crate::SchedulerError> {
        let fail = |m: &str| Err(crate::SchedulerError::Config(m.to_owned()));
        if self.owner.is_empty() {
            return fail("the worker needs a name");
        }
        if self.concurrency == 0 {
            return fail("concurrency must be at least 1");
        }
        if self.lease_ttl < Duration::from_millis(300) {
            return fail("the lease must last at least 300 ms");
        }
        if self.fire_batch == 0 {
            return fail("the firing batch must be at least 1");
        }
        if self.idle_poll.is_zero() {
            return fail("the idle poll interval must be positive");
        }
        Ok(())
    }
}
