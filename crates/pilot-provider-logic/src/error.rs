//! What can go wrong when compiling or running a jq expression. Every message is written for
//! the plan's author and never contains more than a short excerpt of a value.

use std::time::Duration;

/// A jq expression could not be compiled or run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JqError {
    /// The expression is not valid jq, or uses something that does not exist here (such as
    /// `env`, `$ENV` or `input`).
    #[error("invalid jq expression: {0}")]
    Compile(String),
    /// The expression raised an error while running (`error(...)`, a type error...).
    #[error("jq error: {0}")]
    Runtime(String),
    /// The evaluation went past one of its bounds (steps, memory, nesting, string length,
    /// recursion depth, output size) and was stopped.
    #[error("jq evaluation stopped: {0}")]
    Limit(String),
    /// The evaluation did not finish within its wall-clock budget.
    #[error("jq evaluation did not finish within {} ms", .0.as_millis())]
    Timeout(Duration),
    /// Every evaluation thread stayed busy for the whole budget, so the evaluation never
    /// started. A later retry may succeed.
    #[error("jq evaluator busy: no evaluation thread became free within {} ms", .0.as_millis())]
    Busy(Duration),
    /// The evaluator itself failed (an evaluation thread could not be started, or the
    /// interpreter panicked). This is a bug or a resource problem of the server.
    #[error("jq evaluator failure: {0}")]
    Internal(String),
}

impl JqError {
    /// Whether trying the same evaluation later may succeed (only [`JqError::Busy`]).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Busy(_))
    }
}
