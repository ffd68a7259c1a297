//! The seed's standardised provider response, kept as the wire shape of `/api/execute-step`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What one provider call produced: the seed's `ProviderResult`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProviderResult {
    /// Whether the call succeeded.
    pub success: bool,
    /// The step's output (JSON), `null` on failure.
    pub output: Value,
    /// A short human-readable summary.
    #[serde(default)]
    pub message: Option<String>,
    /// Provider-specific facts (token usage, HTTP status, model...).
    #[serde(default)]
    pub metadata: Value,
    /// The error message on failure.
    #[serde(default)]
    pub error: Option<String>,
}
