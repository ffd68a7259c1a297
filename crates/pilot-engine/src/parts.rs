//! What an engine is made of ([`EngineParts`], [`EngineConfig`]) and what a run's execution
//! answers ([`RunOutcome`]): the types the entry points (`engine.rs`) and the step loop
//! (`run.rs`) share, so neither module imports the other's.

use std::sync::Arc;
use std::time::Duration;

use pilot_core::{CredentialStore, RunStatus, RunStore, StepState};
use pilot_registry::{OutboundClient, Registry};

/// Operator settings of the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    /// A run that has not finished after this long (counted from when this executor started or
    /// resumed it) fails; its current attempt is cut off and later steps are skipped.
    pub run_timeout: Duration,
    /// The per-attempt timeout of a step that sets no `timeout_ms`.
    pub default_step_timeout: Duration,
    /// The most bytes of an output kept in an execution-log row's preview.
    pub preview_limit: usize,
    /// The most bytes (compact JSON) one step's output may take; a larger output fails the step.
    pub max_output_bytes: usize,
    /// The most bytes all of a run's step outputs may take together, and the most a step's
    /// resolved params may take; beyond it the step fails.
    pub max_run_state_bytes: usize,
    /// A retry delay longer than this parks the run ([`RunOutcome::resume_after`]) instead of
    /// holding its executor's slot while it waits; `None` never parks.
    pub park_retries_after: Option<Duration>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            run_timeout: Duration::from_secs(3600),
            default_step_timeout: Duration::from_secs(30),
            preview_limit: 1024,
            max_output_bytes: 1024 * 1024,
            max_run_state_bytes: 16 * 1024 * 1024,
            park_retries_after: Some(Duration::from_secs(5)),
        }
    }
}

/// Everything the engine is built from.
#[derive(Clone)]
pub struct EngineParts {
    /// The installed providers and the `when` evaluator.
    pub registry: Arc<Registry>,
    /// Where run progress and execution-log rows go.
    pub runs: Arc<dyn RunStore>,
    /// Where callers' credentials and custom integrations are looked up.
    pub credentials: Arc<dyn CredentialStore>,
    /// The shared guarded HTTP client handed to providers.
    pub http: Arc<OutboundClient>,
    /// Settings.
    pub config: EngineConfig,
}

impl std::fmt::Debug for EngineParts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineParts")
            .field("registry", &self.registry)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// How a run ended, as the executor saw it (the store holds the same facts).
#[derive(Debug, Clone, PartialEq)]
pub struct RunOutcome {
    /// `Succeeded`, `Failed` or `Cancelled`.
    pub status: RunStatus,
    /// Every step's final state, outputs redacted.
    pub states: Vec<StepState>,
    /// Why the run failed, naming the step.
    pub error: Option<String>,
    /// The run is parked, not ended (`status` is `Queued`): a step's next attempt is due after
    /// this long. Its progress is written; the executor gives the run back to the queue until
    /// then (`Database::park_run`), and whoever claims it next resumes at that attempt.
    pub resume_after: Option<Duration>,
}
