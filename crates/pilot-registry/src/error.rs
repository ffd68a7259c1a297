//! Provider errors, classified so the engine knows whether a retry can help.

use std::time::Duration;

/// A provider call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProviderError {
    /// A retry may succeed: connect or timeout errors, 408, 429, 5xx.
    #[error("{message}")]
    Retryable {
        /// What happened; never contains a secret.
        message: String,
        /// The server asked to wait this long (Retry-After).
        retry_after: Option<Duration>,
    },
    /// A retry cannot help: bad params, missing credential, 4xx.
    #[error("{0}")]
    Permanent(String),
}

impl ProviderError {
    /// A retryable error without a server-given delay.
    pub fn retryable(message: impl Into<String>) -> Self {
        Self::Retryable {
            message: message.into(),
            retry_after: None,
        }
    }

    /// A permanent error.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self::Permanent(message.into())
    }

    /// Whether the engine may retry.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Retryable { .. })
    }

    /// The delay the server asked for, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Retryable { retry_after, .. } => *retry_after,
            Self::Permanent(_) => None,
        }
    }
}

/// Building the registry failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// Two providers were registered under one name.
    #[error("provider '{0}' is registered twice")]
    Duplicate(String),
}
