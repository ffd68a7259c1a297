//! The JSON wire form of plans as the API reads and shows them, apart from pilot-core's types:
//! a step, its retry policy, a trigger, and an ad-hoc plan. Each converts to and from the core
//! type the engine executes, so a new member of `Step` (graph edges, loops, waits) is added to
//! the API here on purpose, with its documentation, never by a derive alone.
//!
//! The shapes are those documented in docs/API.md: unknown members are refused (400 naming
//! the member), optional members are omitted when unset.

use pilot_core::{Plan, RetryPolicy, Step, Trigger};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A step, as `POST /api/plans`, `POST /api/execute` and the plan views carry it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StepBody {
    id: String,
    provider: String,
    action: String,
    #[serde(default)]
    params: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    retry: Option<RetryBody>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    when: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    continue_on_error: bool,
}

impl From<StepBody> for Step {
    fn from(step: StepBody) -> Self {
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

impl From<Step> for StepBody {
    fn from(step: Step) -> Self {
        Self {
            id: step.id,
            provider: step.provider,
            action: step.action,
            params: step.params,
            retry: step.retry.map(RetryBody::from),
            timeout_ms: step.timeout_ms,
            when: step.when,
            continue_on_error: step.continue_on_error,
        }
    }
}

/// The core steps of wire steps.
pub(crate) fn steps_in(steps: Vec<StepBody>) -> Vec<Step> {
    steps.into_iter().map(Step::from).collect()
}

/// The wire steps of core steps.
pub(crate) fn steps_out(steps: Vec<Step>) -> Vec<StepBody> {
    steps.into_iter().map(StepBody::from).collect()
}

/// A step's retry policy; a member left out takes its default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RetryBody {
    max_attempts: u32,
    base_ms: u64,
    factor: f64,
    cap_ms: u64,
    jitter: bool,
}

impl Default for RetryBody {
    fn default() -> Self {
        Self::from(RetryPolicy::default())
    }
}

impl From<RetryBody> for RetryPolicy {
    fn from(r: RetryBody) -> Self {
        Self {
            max_attempts: r.max_attempts,
            base_ms: r.base_ms,
            factor: r.factor,
            cap_ms: r.cap_ms,
            jitter: r.jitter,
        }
    }
}

impl From<RetryPolicy> for RetryBody {
    fn from(r: RetryPolicy) -> Self {
        Self {
            max_attempts: r.max_attempts,
            base_ms: r.base_ms,
            factor: r.factor,
            cap_ms: r.cap_ms,
            jitter: r.jitter,
        }
    }
}

/// How a plan is meant to be started: `{"type": "manual"}`, `{"type": "webhook"}` or
/// `{"type": "cron", "cron": "...", "timezone": "..."}`. Read it through [`strict_trigger`]:
/// serde alone would accept unknown members beside a unit variant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum TriggerBody {
    Manual,
    Cron {
        cron: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timezone: Option<String>,
    },
    Webhook,
}

impl From<TriggerBody> for Trigger {
    fn from(t: TriggerBody) -> Self {
        match t {
            TriggerBody::Manual => Self::Manual,
            TriggerBody::Cron { cron, timezone } => Self::Cron { cron, timezone },
            TriggerBody::Webhook => Self::Webhook,
        }
    }
}

impl From<Trigger> for TriggerBody {
    fn from(t: Trigger) -> Self {
        match t {
            Trigger::Manual => Self::Manual,
            Trigger::Cron { cron, timezone } => Self::Cron { cron, timezone },
            Trigger::Webhook => Self::Webhook,
        }
    }
}

/// Reads an optional trigger refusing unknown members. `TriggerBody` is an internally tagged
/// enum, and serde ignores `deny_unknown_fields` for its unit variants (`{"type": "webhook",
/// "cron": "..."}` would be accepted and the `cron` silently dropped), so the members are
/// checked here first.
pub(crate) fn strict_trigger<'de, D>(deserializer: D) -> Result<Option<TriggerBody>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    use serde::de::Error as _;
    let Some(value) = Option::<Value>::deserialize(deserializer)? else {
        return Ok(None);
    };
    if let Some(members) = value.as_object() {
        let allowed: &[&str] = match members.get("type").and_then(Value::as_str) {
            Some("cron") => &["type", "cron", "timezone"],
            _ => &["type"],
        };
        if let Some(unknown) = members.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(D::Error::custom(format!(
                "unknown field `{unknown}`, expected one of {}",
                allowed
                    .iter()
                    .map(|a| format!("`{a}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }
    serde_json::from_value(value)
        .map(Some)
        .map_err(D::Error::custom)
}

/// An ad-hoc plan, as `POST /api/execute` takes it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PlanBody {
    name: String,
    steps: Vec<StepBody>,
}

impl From<PlanBody> for Plan {
    fn from(plan: PlanBody) -> Self {
        Self {
            name: plan.name,
            steps: steps_in(plan.steps),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// The wire form is the one the API has always answered: a step written by pilot-core's
    /// own serialisation (what earlier releases sent) reads back to the same step, and is
    /// written again byte for byte.
    #[test]
    fn the_wire_form_matches_what_the_api_has_always_answered() {
        let text = r#"{"id":"shape","provider":"logic","action":"transform","params":{"expression":".a"},"retry":{"max_attempts":5,"base_ms":100,"factor":1.5,"cap_ms":2000,"jitter":false},"timeout_ms":1500,"when":".input.ok","continue_on_error":true}"#;
        let body: StepBody = serde_json::from_str(text).unwrap();
        let step = Step::from(body.clone());
        assert_eq!(step.retry.as_ref().map(|r| r.max_attempts), Some(5));
        assert_eq!(serde_json::to_string(&StepBody::from(step)).unwrap(), text);
        let plain: StepBody =
            serde_json::from_value(json!({"id": "a", "provider": "webhook", "action": "post"}))
                .unwrap();
        assert_eq!(
            serde_json::to_value(&plain).unwrap(),
            json!({"id": "a", "provider": "webhook", "action": "post", "params": {}})
        );
        let partial: RetryBody = serde_json::from_value(json!({"max_attempts": 2})).unwrap();
        assert_eq!(
            RetryPolicy::from(partial).base_ms,
            RetryPolicy::default().base_ms
        );
    }

    #[test]
    fn unknown_members_are_refused() {
        let e = serde_json::from_value::<StepBody>(
            json!({"id": "a", "provider": "webhook", "action": "post", "needs": ["b"]}),
        )
        .unwrap_err();
        assert!(e.to_string().contains("needs"), "{e}");
        #[derive(Debug, Deserialize)]
        struct Holder {
            #[serde(default, deserialize_with = "strict_trigger")]
            trigger: Option<TriggerBody>,
        }
        let e = serde_json::from_value::<Holder>(
            json!({"trigger": {"type": "webhook", "cron": "* * * * *"}}),
        )
        .unwrap_err();
        assert!(e.to_string().contains("`cron`"), "{e}");
        let ok: Holder =
            serde_json::from_value(json!({"trigger": {"type": "cron", "cron": "0 * * * *"}}))
                .unwrap();
        assert!(matches!(ok.trigger, Some(TriggerBody::Cron { .. })));
    }
}
