//! Executing one run under a lease: the engine does the steps; this module keeps the lease alive
//! (a heartbeat every third of the lease), stops the engine the moment the lease is known or
//! feared lost, and gives the run back to the queue when a shutdown's grace period runs out.
//! The guard ([`hold_lease`]) serves claimed runs here and inline runs (`crate::submit`) alike.
//!
//! The lease guard: the run's future is polled only while this process knows its lease is
//! valid by its own monotonic clock (the last successful heartbeat's send time plus the lease
//! length). A process that was frozen (SIGSTOP, a long GC-like pause, a suspended VM) therefore
//! does not take one more step when it wakes: it first renews the lease, and if another worker
//! took the run over meanwhile (a new epoch) it drops the run without touching it. Storage
//! fences every write by the epoch as well, so even a step already in flight cannot change the
//! new owner's state.

use std::future::{Future, poll_fn};
use std::pin::pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Poll;
use std::time::Duration;

use pilot_core::{CancelSignal, RunEnd, RunFinish, RunId, RunStatus, RunStore, RunWrite, UserId};
use pilot_engine::{Engine, EngineError, RunOutcome};
use pilot_storage::{ClaimedRun, Database, StorageError};
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{Instrument, error, info, info_span, warn};

use crate::metrics::SchedulerMetrics;

/// What every run task shares.
#[derive(Clone)]
pub(crate) struct RunContext {
    pub(crate) db: Database,
    pub(crate) engine: Arc<Engine>,
    pub(crate) metrics: SchedulerMetrics,
    pub(crate) lease_ttl: Duration,
    /// Turns true when the shutdown grace ran out: release the run now.
    pub(crate) release: watch::Receiver<bool>,
}

/// Executes `claimed` (whose lease was requested at `claimed_at`) to its end, its lease's loss,
/// or a shutdown's release.
pub(crate) async fn execute_claimed(ctx: RunContext, claimed: ClaimedRun, claimed_at: Instant) {
    let span = info_span!(
        "leased_run",
        run_id = %claimed.snapshot.run_id,
        epoch = claimed.snapshot.epoch,
        takeovers = claimed.takeover_count,
    );
    ctx.metrics.run_started(claimed.taken_over);
    run_under_lease(&ctx, claimed, claimed_at)
        .instrument(span)
        .await;
    ctx.metrics.run_ended();
}

async fn run_under_lease(ctx: &RunContext, claimed: ClaimedRun, claimed_at: Instant) {
    let snapshot = claimed.snapshot;
    let (user, run_id, epoch) = (
        snapshot.user_id.clone(),
        snapshot.run_id.clone(),
        snapshot.epoch,
    );
    if claimed.taken_over {
        warn!(
            takeover_count = claimed.takeover_count,
            "took over a run whose lease had expired"
        );
    }
    let lease = LeaseHold {
        db: &ctx.db,
        ttl: ctx.lease_ttl,
        user: &user,
        run_id: &run_id,
        epoch,
        cancel: snapshot.cancel.clone(),
        leased_at: claimed_at,
    };
    let end = hold_lease(
        lease,
        Some(ctx.release.clone()),
        ctx.engine.execute_plan(snapshot),
    )
    .await;

    match end {
        Guarded::Done(Ok(RunOutcome {
            resume_after: Some(delay),
            ..
        })) => match ctx.db.park_run(&user, &run_id, epoch, delay).await {
            Ok(()) => {
                ctx.metrics.parked();
                info!(
                    delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                    "run parked: its slot is free until the next attempt"
                );
            }
            Err(e) => {
                warn!(error = %e, "could not park the run; it will be taken over when its lease expires")
            }
        },
        Guarded::Done(Ok(outcome)) => {
            ctx.metrics.finished(outcome.status.as_str());
            info!(status = outcome.status.as_str(), "run finished");
        }
        Guarded::Done(Err(EngineError::Fenced)) | Guarded::LeaseLost => {
            ctx.metrics.lease_lost();
            warn!("lease lost: another worker owns the run now; stopped without writing");
        }
        Guarded::Done(Err(EngineError::InvalidSnapshot(message))) => {
            // The run can never execute: fail it with the reason rather than retrying it.
            let write = RunWrite {
                run_id: run_id.clone(),
                user_id: user.clone(),
                epoch,
                logs: Vec::new(),
                steps: Vec::new(),
                end: Some(RunEnd::Finish(RunFinish {
                    status: RunStatus::Failed,
                    error: Some(format!("invalid run: {message}")),
                })),
            };
            match ctx.db.write(write).await {
                Ok(_) => ctx.metrics.finished(RunStatus::Failed.as_str()),
                Err(e) => error!(error = %e, "could not fail an invalid run"),
            }
        }
        Guarded::Done(Err(e)) => {
            // The run stays as last written; its lease runs out and a takeover resumes it at
            // the first unfinished step (bounded by the takeover cap).
            error!(error = %e, "run stopped before its end; it will be taken over when its lease expires");
        }
        Guarded::Released => match ctx.db.release_run(&user, &run_id, epoch).await {
            Ok(()) => {
                ctx.metrics.released();
                info!("shutdown: run released back to the queue");
            }
            Err(e) => {
                warn!(error = %e, "shutdown: could not release the run; it will be taken over")
            }
        },
    }
}

/// How work held under a lease ended.
pub(crate) enum Guarded<T> {
    /// The work returned.
    Done(T),
    /// Another executor owns the run now (or it is gone): the work was dropped where it was.
    LeaseLost,
    /// The release signal was raised (a shutdown's grace ran out): the work was dropped, and
    /// the caller gives the run back.
    Released,
}

/// A lease just taken on a run, and what keeping it needs.
pub(crate) struct LeaseHold<'a> {
    pub(crate) db: &'a Database,
    pub(crate) ttl: Duration,
    pub(crate) user: &'a UserId,
    pub(crate) run_id: &'a RunId,
    pub(crate) epoch: i64,
    /// Raised when a heartbeat's answer says the owner asked to cancel the run: the engine ends
    /// it at its next boundary.
    pub(crate) cancel: CancelSignal,
    /// When the lease was requested: it is certainly valid for `ttl` from then.
    pub(crate) leased_at: Instant,
}

/// Drives `work` while holding the lease: a heartbeat every third of the lease, and `work` is
/// polled only while the lease is known to be valid by this process's clock. Ends when `work`
/// returns, when the lease is lost, or when `release` turns true (or its sender is dropped:
/// nobody will wait for the work). Every executor of runs, inline or queued, goes through here.
pub(crate) async fn hold_lease<T>(
    lease: LeaseHold<'_>,
    mut release: Option<watch::Receiver<bool>>,
    work: impl Future<Output = T>,
) -> Guarded<T> {
    let (user, run_id, epoch) = (lease.user, lease.run_id, lease.epoch);
    let every = lease.ttl / 3;
    let lease = Lease {
        db: lease.db,
        ttl: lease.ttl,
        valid_until: Mutex::new(lease.leased_at + lease.ttl),
        cancel: lease.cancel,
    };
    let mut work = pin!(work);
    // Polls the work only while the lease is known to be valid.
    let mut guarded = pin!(poll_fn(|cx| {
        if Instant::now() >= lease.valid_until() {
            return Poll::Ready(None);
        }
        work.as_mut().poll(cx).map(Some)
    }));
    let mut heartbeat = tokio::time::interval_at(Instant::now() + every, every);
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            () = async {
                match release.as_mut() {
                    Some(release) => drop(release.wait_for(|r| *r).await),
                    None => std::future::pending().await,
                }
            } => return Guarded::Released,
            _ = heartbeat.tick() => {
                if lease.renew(user, run_id, epoch).await == Renewal::Lost {
                    return Guarded::LeaseLost;
                }
            }
            polled = &mut guarded => match polled {
                Some(result) => return Guarded::Done(result),
                None => match lease.renew(user, run_id, epoch).await {
                    Renewal::Lost => return Guarded::LeaseLost,
                    Renewal::Renewed => {}
                    // The database did not answer: the work stays paused until it does.
                    Renewal::Unknown => tokio::time::sleep(Duration::from_millis(250)).await,
                },
            },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Renewal {
    Renewed,
    Lost,
    Unknown,
}

/// The lease a task holds, as far as this process knows.
struct Lease<'a> {
    db: &'a Database,
    ttl: Duration,
    /// By this process's monotonic clock, the lease is certainly valid before this instant.
    valid_until: Mutex<Instant>,
    cancel: CancelSignal,
}

impl Lease<'_> {
    fn valid_until(&self) -> Instant {
        *self
            .valid_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    async fn renew(&self, user: &UserId, run_id: &RunId, epoch: i64) -> Renewal {
        let sent = Instant::now();
        match self.db.heartbeat(user, run_id, epoch, self.ttl).await {
            Ok(ack) => {
                if ack.cancel_requested {
                    self.cancel.request();
                }
                *self
                    .valid_until
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = sent + self.ttl;
                Renewal::Renewed
            }
            Err(StorageError::StaleEpoch | StorageError::NotFound) => Renewal::Lost,
            Err(e) => {
                warn!(error = %e, "heartbeat failed; the lease is kept while it is valid");
                Renewal::Unknown
            }
        }
    }
}
