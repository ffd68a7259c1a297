//! The engine's public face: its two entry points ([`Engine::execute_plan`] for runs,
//! [`Engine::execute_step`] for `/api/execute-step`), built from [`EngineParts`] and answering
//! [`RunOutcome`] (both in `parts.rs`, which the step loop uses without this module).

use std::sync::Arc;

use pilot_core::{ProviderResult, RunSnapshot, StepStatus};
use pilot_registry::Registry;
use serde_json::Value;

use crate::EngineError;
use crate::parts::{EngineConfig, EngineParts, RunOutcome};
use crate::run;

/// Executes runs. Cheap to clone; every clone shares the same parts.
#[derive(Debug, Clone)]
pub struct Engine {
    parts: Arc<EngineParts>,
}

impl Engine {
    /// An engine over `parts`.
    pub fn new(parts: EngineParts) -> Self {
        Self {
            parts: Arc::new(parts),
        }
    }

    /// The registry the engine executes with (for validation by callers).
    pub fn registry(&self) -> &Arc<Registry> {
        &self.parts.registry
    }

    /// The engine's settings.
    pub fn config(&self) -> &EngineConfig {
        &self.parts.config
    }

    /// Executes (or resumes) a run that the caller holds the lease of, under `snapshot.epoch`.
    /// Finished steps in `snapshot.states` are not executed again; their stored outputs feed
    /// later references. Every attempt is logged and every finished step is persisted as the run
    /// goes; the last write carries the run's end.
    ///
    /// A failing step is not an error: it is in the outcome. An error means the executor stopped
    /// before the end: it lost its lease ([`EngineError::Fenced`]) or could not write.
    pub async fn execute_plan(&self, snapshot: RunSnapshot) -> Result<RunOutcome, EngineError> {
        run::execute(&self.parts, snapshot, true)
            .await
            .map(|(outcome, _)| outcome)
    }

    /// Executes a one-step run (`/api/execute-step`) with the same logging, retries and
    /// redaction as any run, and answers in the seed's `ProviderResult` shape: the redacted
    /// output, the provider's message and metadata (redacted), or the error. A step skipped by
    /// its `when` is a success with a `null` output.
    pub async fn execute_step(&self, snapshot: RunSnapshot) -> Result<ProviderResult, EngineError> {
        if snapshot.steps.len() != 1 {
            return Err(EngineError::InvalidSnapshot(format!(
                "a single-step run needs exactly one step, got {}",
                snapshot.steps.len()
            )));
        }
        // Its caller waits for the answer: it never parks.
        let (mut outcome, last) = run::execute(&self.parts, snapshot, false).await?;
        let state = outcome.states.pop();
        let (message, metadata) = last.unwrap_or((None, Value::Null));
        Ok(match state {
            Some(state) => ProviderResult {
                success: state.status != StepStatus::Failed,
                output: state.output.unwrap_or(Value::Null),
                message,
                metadata,
                error: state.error,
            },
            None => ProviderResult {
                success: false,
                output: Value::Null,
                message,
                metadata,
                error: outcome.error,
            },
        })
    }
}
