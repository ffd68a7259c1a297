//! Plans and steps: what a user stores and what a run executes (a run keeps its own snapshot of
//! the steps, so editing a plan never changes a run in flight).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The executable definition of a plan: its name and ordered steps. The stored row around it
/// (owner, prompt, timestamps...) belongs to storage and the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// Shown in logs and lists; never templated.
    pub name: String,
    /// Executed in order.
    pub steps: Vec<Step>,
}

/// One step: a call to one provider action with templated params.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// Matches `[A-Za-z][A-Za-z0-9_-]{0,63}`; unique within the plan.
    pub id: String,
    /// A registered provider name, e.g. `webhook`.
    pub provider: String,
    /// One of the provider's actions, e.g. `post`.
    pub action: String,
    /// The action's parameters; string values may contain `${...}` references.
    #[serde(default)]
    pub params: Map<String, Value>,
    /// Overrides the default retry policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
    /// Per-attempt timeout; default 30 s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// A jq expression over `{input, steps: {<id>: {output}}}`; the step runs when it yields a
    /// value other than `false` or `null`, and is recorded as skipped otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    /// When true, a failure of this step does not fail the run.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub continue_on_error: bool,
}

/// Default per-attempt timeout of a step.
pub const DEFAULT_STEP_TIMEOUT_MS: u64 = 30_000;

impl Step {
    /// The per-attempt timeout in milliseconds.
    pub fn timeout_ms(&self) -> u64 {
        self.timeout_ms.unwrap_or(DEFAULT_STEP_TIMEOUT_MS)
    }

    /// The retry policy in force for this step.
    pub fn retry_policy(&self) -> RetryPolicy {
        self.retry.clone().unwrap_or_default()
    }
}

/// Exponential backoff with jitter, applied to retryable errors only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryPolicy {
    /// Attempts in total, including the first (1 = no retry). At most 10.
    pub max_attempts: u32,
    /// Delay before the second attempt.
    pub base_ms: u64,
    /// Each further delay is multiplied by this.
    pub factor: f64,
    /// No delay exceeds this.
    pub cap_ms: u64,
    /// Randomise each delay (full jitter between half and all of it).
    pub jitter: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            base_ms: 500,
            factor: 2.0,
            cap_ms: 30_000,
            jitter: true,
        }
    }
}

/// How a plan is meant to be started; a cron trigger is the default for `/schedule`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Trigger {
    /// Run on demand over the API.
    Manual,
    /// Run on a cron schedule.
    Cron {
        /// 5 or 6 fields, crontab semantics.
        cron: String,
        /// IANA zone name; UTC when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timezone: Option<String>,
    },
    /// Run from an inbound webhook.
    Webhook,
}

/// Whether `id` is a valid step id: a leading ASCII letter, then up to 63 letters, digits, `_`
/// or `-`. The leading letter means an id never reads as a step index.
pub fn is_valid_step_id(id: &str) -> bool {
    let bytes = id.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 64
        && bytes[0].is_ascii_alphabetic()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-')
}
