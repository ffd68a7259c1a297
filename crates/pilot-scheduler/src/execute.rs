//! Executing one run under a lease: the engine does the steps; this module keeps the lease alive
//! (a heartbeat every third of the lease), stops the engine the moment the lease is known or
//! feared lost, and gives the run back to the queue when a shutdown's grace period runs out.
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

use pilot_core::{RunFinish, RunStatus, RunStore, RunWrite};
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

/// How a run task ended.
enum End {
    /// The engine returned.
    Done(Result<RunOutcome, EngineError>),
    /// Another worker owns the run now.
    LeaseLost,
    /// Shutdown: the run goes back to the queue.
    Release,
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
    let lease = Lease {
        ctx,
        valid_until: Mutex::new(claimed_at + ctx.lease_ttl),
        cancel: snapshot.cancel.clone(),
    };
    let mut release = ctx.release.clone();

    let end = {
        let mut run = pin!(ctx.engine.execute_plan(snapshot));
        // Polls the run only while the lease is known to be valid.
        let mut guarded = pin!(poll_fn(|cx| {
            if Instant::now() >= lease.valid_until() {
                return Poll::Ready(None);
            }
            run.as_mut().poll(cx).map(Some)
        }));
        let every = ctx.lease_ttl / 3;
        let mut heartbeat = tokio::time::interval_at(Instant::now() + every, every);
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                // Also when the worker is gone (the sender dropped): nobody will wait for us.
                _ = async { drop(release.wait_for(|r| *r).await) } => break End::Release,
                _ = heartbeat.tick() => {
                    if lease.renew(&user, &run_id, epoch).await == Renewal::Lost {
                        break End::LeaseLost;
                    }
                }
                polled = &mut guarded => match polled {
                    Some(result) => break End::Done(result),
                    None => match lease.renew(&user, &run_id, epoch).await {
                        Renewal::Lost => break End::LeaseLost,
                        Renewal::Renewed => {}
                        // The database did not answer: the run stays paused until it does.
                        Renewal::Unknown => tokio::time::sleep(Duration::from_millis(250)).await,
                    },
                },
            }
        }
    };

    match end {
        End::Done(Ok(RunOutcome {
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
        End::Done(Ok(outcome)) => {
            ctx.metrics.finished(outcome.status.as_str());
            info!(status = outcome.status.as_str(), "run finished");
        }
        End::Done(Err(EngineError::Fenced)) | End::LeaseLost => {
            ctx.metrics.lease_lost();
            warn!("lease lost: another worker owns the run now; stopped without writing");
        }
        End::Done(Err(EngineError::InvalidSnapshot(message))) => {
            // The run can never execute: fail it with the reason rather than retrying it.
            let write = RunWrite {
                run_id: run_id.clone(),
                user_id: user.clone(),
                epoch,
                logs: Vec::new(),
                step: None,
                finish: Some(RunFinish {
                    status: RunStatus::Failed,
                    error: Some(format!("invalid run: {message}")),
                }),
            };
            match ctx.db.write(write).await {
                Ok(_) => ctx.metrics.finished(RunStatus::Failed.as_str()),
                Err(e) => error!(error = %e, "could not fail an invalid run"),
            }
        }
        End::Done(Err(e)) => {
            // The run stays as last written; its lease runs out and a takeover resumes it at
            // the first unfinished step (bounded by the takeover cap).
            error!(error = %e, "run stopped before its end; it will be taken over when its lease expires");
        }
        End::Release => match ctx.db.release_run(&user, &run_id, epoch).await {
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Renewal {
    Renewed,
    Lost,
    Unknown,
}

/// The lease this task holds, as far as this process knows.
struct Lease<'a> {
    ctx: &'a RunContext,
    /// By this process's monotonic clock, the lease is certainly valid before this instant.
    valid_until: Mutex<Instant>,
    /// Raised when a heartbeat's answer says the owner asked to cancel the run: the engine ends
    /// it at its next boundary.
    cancel: pilot_core::CancelSignal,
}

impl Lease<'_> {
    fn valid_until(&self) -> Instant {
        *self
            .valid_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    async fn renew(
        &self,
        user: &pilot_core::UserId,
        run_id: &pilot_core::RunId,
        epoch: i64,
    ) -> Renewal {
        let sent = Instant::now();
        match self
            .ctx
            .db
            .heartbeat(user, run_id, epoch, self.ctx.lease_ttl)
            .await
        {
            Ok(ack) => {
                if ack.cancel_requested {
                    self.cancel.request();
                }
                *self
                    .valid_until
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = sent + self.ctx.lease_ttl;
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
