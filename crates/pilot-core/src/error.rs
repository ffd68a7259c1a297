//! The errors pilot-core defines: plan validation and the persistence traits.

use serde::Serialize;

/// A plan (or a single step) failed validation. It names the step and the parameter at fault so
/// the API can answer 400 with a message a user can act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{}", self.render())]
pub struct ValidationError {
    /// The step's id (or its 0-based index as text when the id itself is the problem).
    pub step: Option<String>,
    /// The parameter or field at fault, e.g. `params.url` or `id`.
    pub field: Option<String>,
    /// What is wrong, as a sentence.
    pub message: String,
}

impl ValidationError {
    /// An error about the plan as a whole.
    pub fn plan(message: impl Into<String>) -> Self {
        Self {
            step: None,
            field: None,
            message: message.into(),
        }
    }

    /// An error about one field of one step.
    pub fn step(
        step: impl Into<String>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            step: Some(step.into()),
            field: Some(field.into()),
            message: message.into(),
        }
    }

    fn render(&self) -> String {
        match (&self.step, &self.field) {
            (Some(s), Some(f)) => format!("step '{s}', {f}: {}", self.message),
            (Some(s), None) => format!("step '{s}': {}", self.message),
            (None, Some(f)) => format!("{f}: {}", self.message),
            (None, None) => self.message.clone(),
        }
    }
}

/// A persistence operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The write carried a lease epoch that is no longer the run's: another worker owns the run
    /// now, and nothing was changed.
    #[error("stale lease: the run is owned by a newer lease epoch")]
    StaleEpoch,
    /// The object does not exist (or belongs to another user, which looks the same).
    #[error("not found")]
    NotFound,
    /// The write conflicts with existing data (a unique constraint).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The database could not be reached or failed; the message never contains secrets.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// A stored value could not be decoded or decrypted.
    #[error("corrupt or undecryptable stored value: {0}")]
    Corrupt(String),
}
