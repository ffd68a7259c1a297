//! Run submission, the one way a new run enters the system whoever asks for it (the REST API's
//! execute and execute-step, inbound webhooks, and any later caller): look up the stored plan
//! (refusing one that is paused), build the run, then either commit it queued and wake a worker
//! (accepted means durable), or start it under this process's lease and execute it inline
//! under the same lease guard as a worker's claimed runs ([`crate::execute`]), so an inline run
//! whose lease is lost stops at once, exactly as a worker's does.
//!
//! No HTTP here: callers map [`SubmitError`] to their own answers.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use pilot_core::{PlanId, RunId, RunSnapshot, TriggerKind, UserId};
use pilot_engine::{Engine, EngineError, RunOutcome};
use pilot_storage::{Database, Lease, NewRun, PlanRow, RunRow, StorageError};
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::{Instrument as _, info_span, warn};

use crate::execute::{Guarded, LeaseHold, hold_lease};

/// How long a sampled queue depth is trusted before the next submission samples it again.
const QUEUE_SAMPLE_TTL: Duration = Duration::from_secs(1);

/// Settings of a [`Submitter`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubmitConfig {
    /// The name this process holds inline runs' leases under (shown on the runs).
    pub lease_owner: String,
    /// How long an inline run's lease lasts between renewals; a worker may take the run over
    /// this long after this process last renewed it.
    pub lease_ttl: Duration,
    /// Above this many queued runs, queued submissions are refused ([`SubmitError::QueueFull`])
    /// instead of growing the queue without bound; 0 never refuses.
    pub max_queue_depth: u64,
}

/// Why a submission was refused. Nothing was committed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SubmitError {
    /// The user has no plan with that id.
    #[error("plan not found")]
    PlanNotFound,
    /// The plan's status is `paused`: it does not run until it is set active again.
    #[error("plan '{name}' is paused")]
    Paused {
        /// The plan's id.
        plan_id: PlanId,
        /// The plan's name.
        name: String,
    },
    /// The queue is deeper than [`SubmitConfig::max_queue_depth`].
    #[error("the queue holds {max} or more runs")]
    QueueFull {
        /// The configured limit.
        max: u64,
    },
    /// The database refused or failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// A run executed inline, as far as this executor took it.
#[derive(Debug)]
pub struct Inline<T> {
    /// The run's id.
    pub run_id: RunId,
    /// The lease epoch this process executed it under.
    pub epoch: i64,
    /// When the run was committed as running (its `created_at` and `started_at`).
    pub started_at: DateTime<Utc>,
    /// How the execution ended here.
    pub end: InlineEnd<T>,
}

/// How an inline execution ended in this process.
#[derive(Debug)]
pub enum InlineEnd<T> {
    /// The engine returned. For a plan whose next attempt is far off, the outcome carries
    /// `resume_after` and the run has been parked: a worker resumes it.
    Done(Result<T, EngineError>),
    /// The lease moved to another executor before the engine returned: this process stopped
    /// without writing more; the stored run (and its new owner) decide its end.
    LeaseLost,
}

impl<T> InlineEnd<T> {
    /// The engine's result, a lost lease reading as the engine's own [`EngineError::Fenced`]
    /// (both mean: another executor owns the run now).
    pub fn into_result(self) -> Result<T, EngineError> {
        match self {
            Self::Done(result) => result,
            Self::LeaseLost => Err(EngineError::Fenced),
        }
    }
}

/// Submits runs. Cheap to clone; one per process, shared by every caller.
#[derive(Clone)]
pub struct Submitter {
    inner: Arc<Inner>,
}

struct Inner {
    db: Database,
    engine: Arc<Engine>,
    queue_signal: Arc<Notify>,
    config: SubmitConfig,
    /// The queue depth as last sampled, plus the submissions accepted since, and when.
    queue: Mutex<(u64, Option<std::time::Instant>)>,
}

impl std::fmt::Debug for Submitter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Submitter")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl Submitter {
    /// A submitter executing inline runs with `engine` and waking the in-process worker with
    /// `queue_signal` after each queued run commits.
    pub fn new(
        db: Database,
        engine: Arc<Engine>,
        queue_signal: Arc<Notify>,
        config: SubmitConfig,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                db,
                engine,
                queue_signal,
                config,
                queue: Mutex::new((0, None)),
            }),
        }
    }

    /// The engine inline runs are executed with.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.inner.engine
    }

    /// Notified after a queued run commits.
    pub fn queue_signal(&self) -> &Arc<Notify> {
        &self.inner.queue_signal
    }

    /// The run of `user`'s stored plan `plan_id` with `input`, ready to submit; refuses a plan
    /// that does not exist or is paused.
    pub async fn stored_plan_run(
        &self,
        user: &UserId,
        plan_id: &PlanId,
        input: serde_json::Value,
        trigger: TriggerKind,
    ) -> Result<NewRun, SubmitError> {
        let row = self
            .inner
            .db
            .plan(user, plan_id)
            .await?
            .ok_or(SubmitError::PlanNotFound)?;
        runnable(row, input, trigger)
    }

    /// Commits `run` queued and wakes a worker. The run is durable when this returns.
    pub async fn enqueue(&self, user: &UserId, run: &NewRun) -> Result<RunRow, SubmitError> {
        self.admit_queued().await?;
        let row = self.inner.db.enqueue_run(user, run).await?;
        // Committed: now wake a worker.
        self.inner.queue_signal.notify_one();
        Ok(row)
    }

    /// Starts `run` under this process's lease and executes its plan inline. A run whose next
    /// attempt is far off is parked (given back to the queue for a worker) before this returns.
    pub async fn execute_inline(
        &self,
        user: &UserId,
        run: NewRun,
    ) -> Result<Inline<RunOutcome>, SubmitError> {
        let inline = self
            .run_inline(user, run, |engine, snapshot| async move {
                engine.execute_plan(snapshot).await
            })
            .await?;
        if let InlineEnd::Done(Ok(RunOutcome {
            resume_after: Some(delay),
            ..
        })) = &inline.end
        {
            // A step's next attempt is far off: the run waits in the queue, and a worker
            // resumes it.
            match self
                .inner
                .db
                .park_run(user, &inline.run_id, inline.epoch, *delay)
                .await
            {
                Ok(()) => self.inner.queue_signal.notify_one(),
                // Another executor took the run over meanwhile: the stored run decides.
                Err(StorageError::StaleEpoch) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(inline)
    }

    /// Starts `run` under this process's lease and drives `work` (an execution of the run's
    /// snapshot by the engine) under the lease guard: heartbeats every third of the lease, and
    /// the work is dropped the moment the lease is known or feared lost.
    pub async fn run_inline<T, F, Fut>(
        &self,
        user: &UserId,
        run: NewRun,
        work: F,
    ) -> Result<Inline<T>, SubmitError>
    where
        F: FnOnce(Arc<Engine>, RunSnapshot) -> Fut,
        Fut: Future<Output = Result<T, EngineError>>,
    {
        let lease = Lease {
            owner: self.inner.config.lease_owner.clone(),
            ttl: self.inner.config.lease_ttl,
        };
        let leased_at = Instant::now();
        let (snapshot, started_at) = self.inner.db.start_run_at(user, run, &lease).await?;
        let (run_id, epoch, cancel) = (
            snapshot.run_id.clone(),
            snapshot.epoch,
            snapshot.cancel.clone(),
        );
        let span = info_span!("inline_run", run_id = %run_id);
        let hold = LeaseHold {
            db: &self.inner.db,
            ttl: lease.ttl,
            user,
            run_id: &run_id,
            epoch,
            cancel,
            leased_at,
        };
        // An inline run is never released: a shutdown waits for it.
        let guarded = hold_lease(hold, None, work(self.inner.engine.clone(), snapshot))
            .instrument(span)
            .await;
        let end = match guarded {
            Guarded::Done(result) => InlineEnd::Done(result),
            Guarded::LeaseLost | Guarded::Released => {
                warn!(run_id = %run_id, "inline run: lease lost to another executor; stopped without writing");
                InlineEnd::LeaseLost
            }
        };
        Ok(Inline {
            run_id,
            epoch,
            started_at,
            end,
        })
    }

    /// Admits one queued submission, or refuses it when the queue is deeper than
    /// [`SubmitConfig::max_queue_depth`]. The depth is sampled from the database at most once
    /// a second (and counted up by each submission admitted in between), so the check costs no
    /// query on the hot path.
    async fn admit_queued(&self) -> Result<(), SubmitError> {
        let max = self.inner.config.max_queue_depth;
        if max == 0 {
            return Ok(());
        }
        let fresh = |sampled: Option<std::time::Instant>| {
            sampled.is_some_and(|at| at.elapsed() < QUEUE_SAMPLE_TTL)
        };
        let known = {
            let queue = self.queue_lock();
            fresh(queue.1).then_some(queue.0)
        };
        let depth = match known {
            Some(depth) => depth,
            None => {
                let sampled = self.inner.db.wake_info().await?.queued;
                let mut queue = self.queue_lock();
                *queue = (sampled, Some(std::time::Instant::now()));
                sampled
            }
        };
        if depth >= max {
            return Err(SubmitError::QueueFull { max });
        }
        self.queue_lock().0 += 1;
        Ok(())
    }

    fn queue_lock(&self) -> std::sync::MutexGuard<'_, (u64, Option<std::time::Instant>)> {
        self.inner
            .queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// The run of a stored plan, unless the plan is paused.
fn runnable(
    row: PlanRow,
    input: serde_json::Value,
    trigger: TriggerKind,
) -> Result<NewRun, SubmitError> {
    if row.plan.status == "paused" {
        return Err(SubmitError::Paused {
            plan_id: row.id,
            name: row.plan.name,
        });
    }
    Ok(NewRun {
        plan_id: Some(row.id),
        plan_name: row.plan.name,
        steps: row.plan.steps,
        input,
        trigger,
        schedule_id: None,
        scheduled_for: None,
    })
}
