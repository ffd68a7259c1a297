//! The worker: one loop that fires due schedules and claims runs, and the tasks that execute
//! them. It never polls in a tight loop: after each look at the database (one query,
//! [`Database::wake_info`]) it sleeps until the earliest of the next due tick, the next lease
//! expiry (a takeover may be due then), a free execution slot when runs are waiting, a wake-up
//! (the in-process signal the API notifies, or PostgreSQL `LISTEN`), or the idle poll interval.
//!
//! Shutdown: the loop stops firing and claiming at once; runs in flight get the drain grace to
//! finish; the ones still running after it are stopped and released back to the queue, where
//! another worker claims them with a new epoch.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use pilot_engine::Engine;
use pilot_storage::{ClaimRequest, Database, RUNS_CHANNEL, WakeInfo};
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use crate::SchedulerError;
use crate::clock::{Clock, SystemClock};
use crate::config::WorkerConfig;
use crate::execute::{RunContext, execute_claimed};
use crate::firing::fire_pass;
use crate::metrics::SchedulerMetrics;

/// The PostgreSQL channel told when schedules change (storage's [`RUNS_CHANNEL`] is told when
/// runs are queued).
const SCHEDULES_CHANNEL: &str = "pilot_schedules";

/// After a lease's expiry (database time), how much later the worker looks, so the expiry has
/// certainly passed on the database's clock too.
const EXPIRY_MARGIN: Duration = Duration::from_millis(50);

/// How soon to look again at a lease that expired but could not be claimed (another worker
/// holds it locked while it takes it over).
const PAST_EXPIRY_RETRY: Duration = Duration::from_millis(500);

/// The longest wait after a database error before trying again.
const MAX_ERROR_BACKOFF: Duration = Duration::from_secs(5);

/// Released runs get this long to reach the database after the drain grace ran out.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(10);

/// A scheduler-worker: fires schedules and executes runs until told to stop.
pub struct Worker {
    config: WorkerConfig,
    db: Database,
    engine: Arc<Engine>,
    signal: Arc<Notify>,
    clock: Arc<dyn Clock>,
    metrics: SchedulerMetrics,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("config", &self.config)
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

impl Worker {
    /// A worker over `db` executing with `engine`. `signal` is notified (`notify_one`) by
    /// whoever adds work in this process (the API after committing a queued run or changing a
    /// schedule); it wakes the worker at once instead of at its next poll. The clock is the
    /// system's and the metrics are registered nowhere until [`Worker::with_metrics`].
    pub fn new(
        config: WorkerConfig,
        db: Database,
        engine: Arc<Engine>,
        signal: Arc<Notify>,
    ) -> Self {
        Self {
            config,
            db,
            engine,
            signal,
            clock: Arc::new(SystemClock),
            metrics: SchedulerMetrics::default(),
        }
    }

    /// The same worker reading due times from `clock` (tests move a manual one).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The same worker recording into `metrics` (see [`SchedulerMetrics::register`]).
    pub fn with_metrics(mut self, metrics: SchedulerMetrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Runs until `shutdown` resolves, then drains: no more firing or claiming, runs in flight
    /// finish within the drain grace or are released back to the queue. Database outages are
    /// logged and retried, not returned; an error means the worker could not start.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), SchedulerError> {
        self.config.validate()?;
        let wake = Arc::new(Notify::new());
        let _listener = if self.config.execute_runs || self.config.fire_schedules {
            match self
                .db
                .listen(&[RUNS_CHANNEL, SCHEDULES_CHANNEL], wake.clone())
            {
                Ok(listener) => listener,
                Err(e) => {
                    warn!(error = %e, "LISTEN unavailable; polling every {:?}", self.config.idle_poll);
                    None
                }
            }
        } else {
            None
        };
        let forward = {
            let (signal, wake) = (self.signal.clone(), wake.clone());
            tokio::spawn(async move {
                loop {
                    signal.notified().await;
                    wake.notify_one();
                }
            })
        };
        let retention = (self.config.retain_runs.is_some()
            || self.config.retain_logs.is_some()
            || self.config.retain_runs_per_plan.is_some())
        .then(|| tokio::spawn(retention_loop(self.db.clone(), self.config.clone())));
        let (release_tx, release_rx) = watch::channel(false);
        let mut state = LoopState {
            slots: Arc::new(Semaphore::new(self.config.concurrency)),
            slot_freed: Arc::new(Notify::new()),
            tasks: JoinSet::new(),
            ctx: RunContext {
                db: self.db.clone(),
                engine: self.engine.clone(),
                metrics: self.metrics.clone(),
                lease_ttl: self.config.lease_ttl,
                release: release_rx,
            },
        };
        info!(
            owner = %self.config.owner,
            concurrency = self.config.concurrency,
            lease_ttl_ms = self.config.lease_ttl.as_millis() as u64,
            fire = self.config.fire_schedules,
            execute = self.config.execute_runs,
            "worker started"
        );

        let mut shutdown = std::pin::pin!(shutdown);
        let mut errors = 0u32;
        loop {
            while let Some(joined) = state.tasks.try_join_next() {
                if let Err(e) = joined {
                    error!(error = %e, "a run task panicked");
                }
            }
            let wait = match self.step(&mut state).await {
                Ok(Step::Again) => {
                    errors = 0;
                    continue;
                }
                Ok(Step::Sleep(wait)) => {
                    errors = 0;
                    wait
                }
                Err(e) => {
                    errors = errors.saturating_add(1);
                    let backoff =
                        Duration::from_millis(250u64 << errors.min(5)).min(MAX_ERROR_BACKOFF);
                    if errors == 1 {
                        warn!(error = %e, "database unavailable; retrying");
                    }
                    Wait {
                        until: Instant::now() + backoff,
                        fire_at: None,
                        slot: false,
                    }
                }
            };
            let clock = self.clock.clone();
            let fire_sleep = async {
                match wait.fire_at {
                    Some(at) => clock.sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = &mut shutdown => break,
                _ = wake.notified() => debug!("woken"),
                _ = state.slot_freed.notified(), if wait.slot => {}
                _ = tokio::time::sleep_until(wait.until) => {}
                _ = fire_sleep => {}
            }
        }

        info!(
            in_flight = state.tasks.len(),
            "worker stopping: no more firing or claiming"
        );
        forward.abort();
        if let Some(retention) = retention {
            retention.abort();
        }
        drain(&mut state.tasks, self.config.drain_grace, &release_tx).await;
        info!("worker stopped");
        Ok(())
    }

    /// One look at the database and what follows from it: fire, claim, or decide how long to
    /// sleep.
    async fn step(&self, state: &mut LoopState) -> Result<Step, pilot_storage::StorageError> {
        let asked = Instant::now();
        self.metrics.looked();
        let info = self.db.wake_info().await?;
        self.metrics.set_queue_depth(info.queued);
        let now = self.clock.now();

        if self.config.fire_schedules && info.next_fire_at.is_some_and(|t| t <= now) {
            let report = fire_pass(
                &self.db,
                now,
                self.config.fire_batch,
                self.config.misfire_threshold,
                &self.metrics,
            )
            .await?;
            // Look again: the pass added runs, and there may be more due schedules.
            return Ok(if report.claimed > 0 {
                Step::Again
            } else {
                Step::Sleep(self.sleep_plan(&info, asked, now, state.slots.available_permits() > 0))
            });
        }

        let claimable = info.queued > 0 || info.next_lease_expiry.is_some_and(|t| t <= info.db_now);
        if self.config.execute_runs && claimable {
            let free = state.slots.available_permits();
            if free > 0 {
                let claimed = self.claim(state, free).await?;
                if claimed == free {
                    return Ok(Step::Again);
                }
            }
        }
        Ok(Step::Sleep(self.sleep_plan(
            &info,
            asked,
            now,
            state.slots.available_permits() > 0,
        )))
    }

    /// Claims up to `limit` runs and starts a task for each; answers how many were claimed.
    async fn claim(
        &self,
        state: &mut LoopState,
        limit: usize,
    ) -> Result<usize, pilot_storage::StorageError> {
        let claimed_at = Instant::now();
        let outcome = self
            .db
            .claim_runs(&ClaimRequest {
                owner: self.config.owner.clone(),
                limit,
                ttl: self.config.lease_ttl,
                max_takeovers: self.config.max_takeovers,
                max_running_per_user: self.config.max_running_per_user,
            })
            .await?;
        if !outcome.abandoned.is_empty() {
            self.metrics.abandoned(outcome.abandoned.len() as u64);
            for run in &outcome.abandoned {
                error!(run_id = %run.run_id, takeovers = run.takeover_count, "run failed: its lease expired more often than the takeover cap allows");
            }
        }
        let count = outcome.claimed.len();
        for claimed in outcome.claimed {
            let Ok(permit) = state.slots.clone().try_acquire_owned() else {
                // Cannot happen (we claimed no more than the free slots), but a run without a
                // slot must not be dropped: run it anyway.
                warn!("claimed more runs than free slots");
                state
                    .tasks
                    .spawn(execute_claimed(state.ctx.clone(), claimed, claimed_at));
                continue;
            };
            let (ctx, freed) = (state.ctx.clone(), state.slot_freed.clone());
            state.tasks.spawn(async move {
                execute_claimed(ctx, claimed, claimed_at).await;
                drop(permit);
                freed.notify_one();
            });
        }
        Ok(count)
    }

    /// How long to sleep after a look that found nothing to do now.
    fn sleep_plan(
        &self,
        info: &WakeInfo,
        asked: Instant,
        now: DateTime<Utc>,
        free_slot: bool,
    ) -> Wait {
        let mut until = Instant::now() + self.config.idle_poll;
        let mut slot = false;
        if self.config.execute_runs {
            if !free_slot {
                // Every slot is busy: nothing can be claimed before one frees.
                slot = true;
            } else {
                if let Some(expiry) = info.next_lease_expiry {
                    // Lease expiries are on the database's clock: measure from when we asked.
                    // An expiry already past is one another worker is claiming right now: look
                    // again shortly, not at once.
                    let ahead = (expiry - info.db_now).to_std().unwrap_or(Duration::ZERO);
                    let at = if ahead.is_zero() {
                        Instant::now() + PAST_EXPIRY_RETRY
                    } else {
                        asked + ahead + EXPIRY_MARGIN
                    };
                    until = until.min(at);
                }
                if let Some(available) = info.next_available {
                    // A parked run becomes claimable then (also on the database's clock).
                    let ahead = (available - info.db_now).to_std().unwrap_or(Duration::ZERO);
                    until = until.min(asked + ahead + EXPIRY_MARGIN);
                }
            }
        }
        let fire_at = if self.config.fire_schedules {
            info.next_fire_at.filter(|t| *t > now)
        } else {
            None
        };
        Wait {
            until,
            fire_at,
            slot,
        }
    }
}

struct LoopState {
    slots: Arc<Semaphore>,
    slot_freed: Arc<Notify>,
    tasks: JoinSet<()>,
    ctx: RunContext,
}

enum Step {
    /// Something happened: look again at once.
    Again,
    /// Nothing to do now: sleep.
    Sleep(Wait),
}

/// What ends a sleep.
struct Wait {
    /// The idle poll, or a lease expiry.
    until: Instant,
    /// The next due tick, on the scheduler's clock.
    fire_at: Option<DateTime<Utc>>,
    /// Wake when an execution slot frees.
    slot: bool,
}

/// Lets runs in flight finish within `grace`, then releases the rest and waits for them.
async fn drain(tasks: &mut JoinSet<()>, grace: Duration, release: &watch::Sender<bool>) {
    if tasks.is_empty() {
        return;
    }
    let finished =
        tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
    if finished.is_ok() {
        info!("every run in flight finished");
        return;
    }
    warn!(
        remaining = tasks.len(),
        "drain grace ran out: releasing the remaining runs"
    );
    release.send_replace(true);
    let released = tokio::time::timeout(RELEASE_TIMEOUT, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if released.is_err() {
        warn!(
            remaining = tasks.len(),
            "some runs could not be released in time; their leases will expire"
        );
        tasks.abort_all();
    }
}

/// Finished runs and log rows deleted per retention transaction.
const RETENTION_BATCH: usize = 500;

/// Applies the retention settings every `retention_every`, in small batches: old finished runs
/// (with their step states), finished runs beyond each plan's newest `retain_runs_per_plan`,
/// then old execution-log rows. Errors are logged and retried at the
/// next pass.
async fn retention_loop(db: Database, config: WorkerConfig) {
    let mut every = tokio::time::interval(config.retention_every);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let now = chrono::Utc::now();
        if let Some(keep) = config
            .retain_runs
            .and_then(|d| chrono::Duration::from_std(d).ok())
        {
            let mut deleted = 0u64;
            loop {
                match db.prune_finished_runs(now - keep, RETENTION_BATCH).await {
                    Ok(n) => {
                        deleted += n;
                        if n < RETENTION_BATCH as u64 {
                            break;
                        }
                    }
                    Err(e) => {
                        warn!(error = %e, "retention: deleting old runs failed; trying again at the next pass");
                        break;
                    }
                }
            }
            if deleted > 0 {
                info!(deleted, "retention: old finished runs deleted");
            }
        }
        if let Some(keep) = config.retain_runs_per_plan {
            let mut deleted = 0u64;
            loop {
                match db.prune_runs_beyond_count(keep, RETENTION_BATCH).await {
                    Ok(n) => {
                        deleted += n;
                        if n < RETENTION_BATCH as u64 {
                            break;
                        }
                    }
                    Err(e) => {
                        warn!(error = %e, "retention: deleting runs beyond the per-plan count failed; trying again at the next pass");
                        break;
                    }
                }
            }
            if deleted > 0 {
                info!(
                    deleted,
                    keep, "retention: runs beyond each plan's newest kept deleted"
                );
            }
        }
        if let Some(keep) = config
            .retain_logs
            .and_then(|d| chrono::Duration::from_std(d).ok())
        {
            match db.prune_logs(now - keep).await {
                Ok(0) => {}
                Ok(deleted) => info!(deleted, "retention: old execution-log rows deleted"),
                Err(e) => {
                    warn!(error = %e, "retention: deleting old log rows failed; trying again at the next pass")
                }
            }
        }
    }
}
