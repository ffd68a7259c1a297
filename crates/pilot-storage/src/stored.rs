//! The stored form of a plan's steps (`plans.plan_json`, `runs.steps_json`), apart from
//! pilot-core's types: a change to `Step` (a new field for graphs, loops or waits) must change
//! this file on purpose, and every row ever written stays readable.
//!
//! Versions:
//! - unversioned: a bare JSON array of steps, as written before the form had a version (every
//!   row of the first release). Read as version 1; rows are not rewritten.
//! - `{"v": 1, "steps": [...]}`: what this release writes. A step is `id`, `provider`,
//!   `action`, `params`, and optionally `retry`, `timeout_ms`, `when`, `continue_on_error`.
//!
//! A row of a newer version (written by a later release during a rolling upgrade) is refused
//! with a message saying so, never half-read: unknown members are errors, not ignored, so a
//! step is never executed without a part of its meaning.

use pilot_core::{RetryPolicy, Step};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::StorageError;

/// The version this release writes.
pub(crate) const STEPS_VERSION: u32 = 1;

/// Encodes `steps` in the current stored form.
pub(crate) fn encode_steps(steps: &[Step]) -> Result<String, StorageError> {
    let out = StepsOut {
        v: STEPS_VERSION,
        steps: steps.iter().map(StepOut::from).collect(),
    };
    Ok(serde_json::to_string(&out)?)
}

/// Decodes steps stored in any version this release reads.
pub(crate) fn decode_steps(text: &str) -> Result<Vec<Step>, StorageError> {
    let steps = if text.trim_start().starts_with('[') {
        serde_json::from_str::<Vec<StepIn>>(text)?
    } else {
        let versioned: StepsIn = serde_json::from_str(text)?;
        if versioned.v != STEPS_VERSION {
            return Err(StorageError::Corrupt(format!(
                "stored steps have version {}, and this release reads up to version \
                 {STEPS_VERSION}: upgrade this process to the release that wrote them",
                versioned.v
            )));
        }
        versioned.steps
    };
    Ok(steps.into_iter().map(Step::from).collect())
}

#[derive(Serialize)]
struct StepsOut<'a> {
    v: u32,
    steps: Vec<StepOut<'a>>,
}

#[derive(Serialize)]
struct StepOut<'a> {
    id: &'a str,
    provider: &'a str,
    action: &'a str,
    params: &'a Map<String, Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry: Option<RetryStored>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timeout_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    when: Option<&'a str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    continue_on_error: bool,
}

impl<'a> From<&'a Step> for StepOut<'a> {
    fn from(step: &'a Step) -> Self {
        Self {
            id: &step.id,
            provider: &step.provider,
            action: &step.action,
            params: &step.params,
            retry: step.retry.as_ref().map(RetryStored::from),
            timeout_ms: step.timeout_ms,
            when: step.when.as_deref(),
            continue_on_error: step.continue_on_error,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StepsIn {
    v: u32,
    steps: Vec<StepIn>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StepIn {
    id: String,
    provider: String,
    action: String,
    #[serde(default)]
    params: Map<String, Value>,
    #[serde(default)]
    retry: Option<RetryStored>,
    #[serde(default)]
    timeout_ms: Option<u64>,
    #[serde(default)]
    when: Option<String>,
    #[serde(default)]
    continue_on_error: bool,
}

impl From<StepIn> for Step {
    fn from(step: StepIn) -> Self {
        Self {
            id: step.id,
            provider: step.provider,
            action: step.action,
            params: step.params,
            retry: step.retry.map(RetryPolicy::from),
            timeout_ms: step.timeout_ms,
            when: step.when,
            continue_on_error: step.continue_on_error,
        }
    }
}

/// A retry policy as stored: every member written; a missing one reads as the default.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RetryStored {
    max_attempts: u32,
    base_ms: u64,
    factor: f64,
    cap_ms: u64,
    jitter: bool,
}

impl Default for RetryStored {
    fn default() -> Self {
        Self::from(&RetryPolicy::default())
    }
}

impl From<&RetryPolicy> for RetryStored {
    fn from(p: &RetryPolicy) -> Self {
        Self {
            max_attempts: p.max_attempts,
            base_ms: p.base_ms,
            factor: p.factor,
            cap_ms: p.cap_ms,
            jitter: p.jitter,
        }
    }
}

impl From<RetryStored> for RetryPolicy {
    fn from(p: RetryStored) -> Self {
        Self {
            max_attempts: p.max_attempts,
            base_ms: p.base_ms,
            factor: p.factor,
            cap_ms: p.cap_ms,
            jitter: p.jitter,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Rows exactly as the first release wrote them (a bare array, `serde_json::to_string` of
    /// `Vec<Step>`): a plain step, and one with every optional member.
    const FIRST_RELEASE: &str = r#"[{"id":"fetch","provider":"webhook","action":"post","params":{"url":"http://127.0.0.1:9/x","body":{"n":"${input.n}"}}},{"id":"shape","provider":"logic","action":"transform","params":{"expression":".a"},"retry":{"max_attempts":5,"base_ms":100,"factor":1.5,"cap_ms":2000,"jitter":false},"timeout_ms":1500,"when":".input.ok","continue_on_error":true}]"#;

    fn expected() -> Vec<Step> {
        let mut params = Map::new();
        params.insert("url".into(), json!("http://127.0.0.1:9/x"));
        params.insert("body".into(), json!({"n": "${input.n}"}));
        let first = Step {
            id: "fetch".into(),
            provider: "webhook".into(),
            action: "post".into(),
            params,
            retry: None,
            timeout_ms: None,
            when: None,
            continue_on_error: false,
        };
        let mut params = Map::new();
        params.insert("expression".into(), json!(".a"));
        let second = Step {
            id: "shape".into(),
            provider: "logic".into(),
            action: "transform".into(),
            params,
            retry: Some(RetryPolicy {
                max_attempts: 5,
                base_ms: 100,
                factor: 1.5,
                cap_ms: 2000,
                jitter: false,
            }),
            timeout_ms: Some(1500),
            when: Some(".input.ok".into()),
            continue_on_error: true,
        };
        vec![first, second]
    }

    #[test]
    fn rows_of_the_first_release_read_as_they_were_written() {
        assert_eq!(decode_steps(FIRST_RELEASE).unwrap(), expected());
    }

    #[test]
    fn this_release_writes_a_versioned_form_and_reads_it_back() {
        let text = encode_steps(&expected()).unwrap();
        let value: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["v"], json!(1));
        // The steps inside are the first release's shape: only the envelope is new.
        let inner: Value = serde_json::from_str(FIRST_RELEASE).unwrap();
        assert_eq!(value["steps"], inner);
        assert_eq!(decode_steps(&text).unwrap(), expected());
    }

    #[test]
    fn a_newer_version_or_an_unknown_member_is_refused_not_half_read() {
        let newer = r#"{"v":2,"steps":[{"id":"a","provider":"webhook","action":"post"}]}"#;
        let e = decode_steps(newer).unwrap_err().to_string();
        assert!(e.contains("version 2") && e.contains("upgrade"), "{e}");
        let unknown =
            r#"{"v":1,"steps":[{"id":"a","provider":"webhook","action":"post","needs":["b"]}]}"#;
        let e = decode_steps(unknown).unwrap_err().to_string();
        assert!(e.contains("needs"), "{e}");
        assert!(decode_steps("").is_err());
        assert!(
            decode_steps(r#"{"steps":[]}"#).is_err(),
            "the version is required"
        );
    }
}
