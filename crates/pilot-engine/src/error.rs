//! The engine's error: only what stops an executor. A failing step is not an error here: it is
//! recorded in the run (its state, its log rows) and reported in the run's outcome.

use pilot_core::StoreError;

/// Why the engine stopped executing a run before finishing it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The store answered that this executor's lease epoch is stale: another worker owns the
    /// run now. The executor stopped at once and wrote nothing more.
    #[error("fenced: the run's lease moved to another executor")]
    Fenced,
    /// A write failed for another reason. The run stays as last written (running), so its lease
    /// expires and a takeover resumes it at the first unfinished step.
    #[error("writing the run's progress failed: {0}")]
    Store(StoreError),
    /// The snapshot does not describe an executable run (states that do not match the steps, or
    /// not exactly one step for a single-step run). Nothing was written.
    #[error("invalid run snapshot: {0}")]
    InvalidSnapshot(String),
}

impl From<StoreError> for EngineError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::StaleEpoch => Self::Fenced,
            other => Self::Store(other),
        }
    }
}
