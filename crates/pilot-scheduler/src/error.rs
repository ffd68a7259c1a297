//! The scheduler's error: what stops a worker from starting or keeps it from doing its work.
//! A failing run is not an error here (it is recorded on the run), and a database that is down
//! for a while is not one either: the worker logs it, backs off and tries again.

use pilot_storage::StorageError;

/// Why a worker could not start or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SchedulerError {
    /// The worker configuration is unusable (the message says which setting and why).
    #[error("invalid worker configuration: {0}")]
    Config(String),
    /// A storage operation failed in a way the worker cannot recover from on its own.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Registering the worker's metrics failed (a name registered twice).
    #[error("metrics: {0}")]
    Metrics(String),
}
