//! Runs: their status, per-step state, the execution-log record, and the one write the engine
//! makes to persistence ([`RunWrite`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{PlanId, RunId, Step, UserId};

/// The life of a run: queued -> running -> succeeded | failed | cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Committed and waiting for a worker.
    Queued,
    /// Claimed under a lease.
    Running,
    /// Every step succeeded or was skipped.
    Succeeded,
    /// A step failed (without continue_on_error), or the run timed out or ran out of takeovers.
    Failed,
    /// Cancelled by its owner.
    Cancelled,
}

impl RunStatus {
    /// Every status, in life order.
    pub const ALL: [RunStatus; 5] = [
        Self::Queued,
        Self::Running,
        Self::Succeeded,
        Self::Failed,
        Self::Cancelled,
    ];

    /// The wire and storage name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// Parses the wire and storage name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Whether the run is over.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

/// How a run was started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TriggerKind {
    /// `POST /api/execute`.
    Api,
    /// A cron schedule's tick.
    Schedule,
    /// An inbound webhook.
    Webhook,
    /// `POST /api/execute-step` (a one-step run).
    Step,
}

impl TriggerKind {
    /// The wire and storage name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Api => "api",
            Self::Schedule => "schedule",
            Self::Webhook => "webhook",
            Self::Step => "step",
        }
    }

    /// Parses the wire and storage name.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Api, Self::Schedule, Self::Webhook, Self::Step]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

/// The outcome of one step within a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// Not finished yet (never started, or in flight when its worker died).
    Pending,
    /// Finished with an output.
    Succeeded,
    /// Failed after its last attempt.
    Failed,
    /// Not run: its `when` was false, or an earlier step failed.
    Skipped,
}

impl StepStatus {
    /// The wire and storage name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Skipped => "skipped",
        }
    }

    /// Whether the step is over (it will not run again for this run).
    pub fn is_finished(self) -> bool {
        !matches!(self, Self::Pending)
    }
}

/// The persisted state of one step of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepState {
    /// The step's id.
    pub step_id: String,
    /// Where it is.
    pub status: StepStatus,
    /// The output, secrets redacted (set when succeeded).
    #[serde(default)]
    pub output: Option<Value>,
    /// The last error (set when failed).
    #[serde(default)]
    pub error: Option<String>,
    /// Attempts made.
    pub attempts: u32,
    /// Wall time of all attempts, in ms.
    pub latency_ms: u64,
    /// When the first attempt started.
    #[serde(default)]
    pub started_at: Option<DateTime<Utc>>,
    /// When the step finished.
    #[serde(default)]
    pub finished_at: Option<DateTime<Utc>>,
}

impl StepState {
    /// A step that has not run yet.
    pub fn pending(step_id: impl Into<String>) -> Self {
        Self {
            step_id: step_id.into(),
            status: StepStatus::Pending,
            output: None,
            error: None,
            attempts: 0,
            latency_ms: 0,
            started_at: None,
            finished_at: None,
        }
    }
}

/// Everything the engine needs to execute (or resume) a run. `states` holds one entry per step
/// (missing entries are pending); finished steps are never executed again.
#[derive(Debug, Clone)]
pub struct RunSnapshot {
    /// The run.
    pub run_id: RunId,
    /// The plan it came from (`None` for ad-hoc plans and execute-step).
    pub plan_id: Option<PlanId>,
    /// The owner; every credential lookup and log row is scoped to it.
    pub user_id: UserId,
    /// Copied into each log row.
    pub plan_name: String,
    /// The steps as they were when the run was created.
    pub steps: Vec<Step>,
    /// `${input}`.
    pub input: Value,
    /// Per-step state so far.
    pub states: Vec<StepState>,
    /// The lease epoch this executor holds; every write carries it.
    pub epoch: i64,
    /// How the run was started.
    pub trigger: TriggerKind,
    /// Whether its owner asked to cancel it: set from the stored flag when the run is claimed,
    /// and by whoever learns of a request while it runs (a write's or a heartbeat's answer).
    pub cancel: CancelSignal,
}

/// A run's cancellation request as its executor knows it. Clones share one flag, so the lease
/// keeper can raise it for the engine; the engine ends the run `cancelled` at its next boundary
/// (a step, an attempt).
#[derive(Debug, Clone, Default)]
pub struct CancelSignal(Arc<AtomicBool>);

impl CancelSignal {
    /// A signal already raised when `requested`.
    pub fn new(requested: bool) -> Self {
        Self(Arc::new(AtomicBool::new(requested)))
    }

    /// Raises the signal (it never goes down again).
    pub fn request(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// Whether cancellation was requested.
    pub fn is_requested(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// One execution-log row: one step attempt (or one skipped step). Append-only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogRecord {
    /// The plan (`None` for ad-hoc runs).
    pub plan_id: Option<PlanId>,
    /// The run.
    pub run_id: RunId,
    /// The owner.
    pub user_id: UserId,
    /// The plan's name at run time.
    pub plan_name: String,
    /// 0-based index of the step in the plan.
    pub step_number: u32,
    /// The step's id.
    pub step_id: String,
    /// The provider called.
    pub provider: String,
    /// The action called.
    pub action: String,
    /// 1-based attempt number (0 for a skipped step).
    pub attempt: u32,
    /// `succeeded`, `failed`, `retrying` or `skipped`.
    pub status: String,
    /// A short summary.
    pub message: Option<String>,
    /// Time spent in this attempt.
    pub latency_ms: u64,
    /// At most 1 KiB of the output, secrets redacted.
    pub output_preview: Option<String>,
    /// The error, secrets redacted.
    pub error: Option<String>,
    /// When the attempt ended.
    pub timestamp: DateTime<Utc>,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub struct RunFinish {
    /// A terminal status.
    pub status: RunStatus,
    /// Why it failed, if it did.
    pub error: Option<String>,
}

/// Which state of a run a write addresses: a step by its index in the plan, and for a step that
/// runs once per item of a list, which item. Storage keeps step states today (`item` is
/// `None`); per-item states are refused until their storage exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StepKey {
    /// The step's index in the plan.
    pub index: usize,
    /// The item's index, for a step that runs per item.
    pub item: Option<usize>,
}

impl StepKey {
    /// The key of the whole step at `index`.
    pub fn step(index: usize) -> Self {
        Self { index, item: None }
    }
}

/// How an executor leaves a run with its last write.
#[derive(Debug, Clone, PartialEq)]
pub enum RunEnd {
    /// The run ended.
    Finish(RunFinish),
    /// The run waits: it goes back to the queue, its lease given up, claimable again after
    /// `resume_after`; whoever claims it then resumes where it stopped.
    Park {
        /// How long from now the run waits.
        resume_after: std::time::Duration,
    },
}

/// One atomic write of an executing run: log rows, step states, and optionally how the
/// executor leaves the run. Storage applies it in one transaction only when `epoch` is still
/// the run's lease epoch, and may group several runs' writes into one commit.
#[derive(Debug, Clone)]
pub struct RunWrite {
    /// The run.
    pub run_id: RunId,
    /// Its owner (storage scopes the write by it).
    pub user_id: UserId,
    /// The lease epoch the writer holds.
    pub epoch: i64,
    /// Execution-log rows to append.
    pub logs: Vec<LogRecord>,
    /// New step states, by key (several steps of a graph may settle in one write).
    pub steps: Vec<(StepKey, StepState)>,
    /// The run's end, or its parking.
    pub end: Option<RunEnd>,
}

impl RunWrite {
    /// The terminal status this write ends the run with, if it finishes it.
    pub fn finished_status(&self) -> Option<RunStatus> {
        match &self.end {
            Some(RunEnd::Finish(finish)) => Some(finish.status),
            _ => None,
        }
    }
}

/// What storage answers to a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WriteAck {
    /// The owner asked to cancel the run: the engine stops at the next step boundary.
    pub cancel_requested: bool,
}
