//! Plan validation: the checks made when a plan is saved, so a run never starts with a plan
//! that cannot work. Every error names the step and the field at fault.

use serde::Serialize;
use serde_json::Value;

use crate::template::{self, ParamSeg, Root, StepRef};
use crate::{Plan, RetryPolicy, Step, ValidationError, is_valid_step_id};

/// The most steps a plan may have.
pub(crate) const MAX_STEPS: usize = 200;

/// The longest timeout (per attempt) and retry delay a step may ask for: one hour.
pub(crate) const MAX_TIMEOUT_MS: u64 = 3_600_000;

/// The most attempts a retry policy may ask for.
pub(crate) const MAX_ATTEMPTS: u32 = 10;

/// What a provider action accepts: the registry builds these, validation and `GET
/// /api/providers` read them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActionSpec {
    /// The action's name.
    pub name: String,
    /// One sentence on what it does.
    pub description: String,
    /// Its parameters.
    pub params: Vec<ParamSpec>,
    /// Groups of params of which at least one must be present (e.g. `[["url", "integration"]]`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub one_of: Vec<Vec<String>>,
}

/// One parameter of an action.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ParamSpec {
    /// The key in `params`.
    pub name: String,
    /// JSON type expected after template resolution: `string`, `integer`, `number`, `boolean`,
    /// `object`, `array` or `any`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Whether it must be present.
    pub required: bool,
    /// One sentence.
    pub description: String,
    /// What a literal string value must be beyond its JSON type, checked when the plan is
    /// saved: `jq` (an expression that compiles) or `url` (an http or https URL the outbound
    /// guard accepts). A value holding a `${...}` reference is checked at run time instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
}

impl ParamSpec {
    /// A parameter description.
    pub fn new(name: &str, kind: &str, required: bool, description: &str) -> Self {
        Self {
            name: name.to_owned(),
            kind: kind.to_owned(),
            required,
            description: description.to_owned(),
            format: None,
        }
    }

    /// The same param with a `format` checked on save (`jq` or `url`).
    pub fn with_format(mut self, format: &str) -> Self {
        self.format = Some(format.to_owned());
        self
    }
}

/// What validation needs to know about the installed providers.
pub trait Catalogue {
    /// The actions of `provider`, or `None` when no such provider is registered.
    fn actions(&self, provider: &str) -> Option<Vec<ActionSpec>>;

    /// Checks that `expr` is a valid `when` expression (jq syntax), without running it.
    fn check_expression(&self, expr: &str) -> Result<(), String>;

    /// Checks a literal URL param as the outbound guard will when the step runs (scheme, host,
    /// blocked address ranges). The default accepts every URL.
    fn check_url(&self, _url: &str) -> Result<(), String> {
        Ok(())
    }

    /// The registered provider names, listed in the error for an unknown provider. The default
    /// lists none.
    fn provider_names(&self) -> Vec<String> {
        Vec::new()
    }
}

/// Validates a plan against the catalogue: step ids valid and unique, known providers and
/// actions, required params present, templates well formed and referring only to earlier
/// steps, `when` expressions valid. Returns every problem found.
pub fn validate_plan(plan: &Plan, catalogue: &dyn Catalogue) -> Result<(), Vec<ValidationError>> {
    let mut errors = Vec::new();
    if plan.name.trim().is_empty() {
        errors.push(ValidationError {
            step: None,
            field: Some("name".to_owned()),
            message: "the plan needs a name".to_owned(),
        });
    }
    if plan.steps.is_empty() {
        errors.push(ValidationError::plan("a plan needs at least one step"));
    }
    if plan.steps.len() > MAX_STEPS {
        // Checking thousands of steps is work a rejected plan should not cost.
        errors.push(ValidationError::plan(format!(
            "a plan has at most {MAX_STEPS} steps; this one has {}",
            plan.steps.len()
        )));
        return Err(errors);
    }
    let all_ids: Vec<&str> = plan.steps.iter().map(|step| step.id.as_str()).collect();
    let mut earlier: Vec<&str> = Vec::with_capacity(plan.steps.len());
    for (index, step) in plan.steps.iter().enumerate() {
        let context = StepContext {
            index,
            earlier: &earlier,
            all_ids: &all_ids,
        };
        check_step(step, &context, catalogue, &mut errors);
        if is_valid_step_id(&step.id) && !earlier.contains(&step.id.as_str()) {
            earlier.push(&step.id);
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// Validates one step that runs at position `index` after steps with `earlier_ids` (the same
/// checks as [`validate_plan`] makes for each step; its id must differ from the earlier ones).
/// `/api/execute-step` calls it with no earlier ids, so any step reference is an error there.
pub fn validate_step(
    step: &Step,
    index: usize,
    earlier_ids: &[&str],
    catalogue: &dyn Catalogue,
) -> Result<(), Vec<ValidationError>> {
    let mut errors = Vec::new();
    let context = StepContext {
        index,
        earlier: earlier_ids,
        all_ids: &[],
    };
    check_step(step, &context, catalogue, &mut errors);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// Where a step sits: its index, the ids before it, and every id of its plan (empty for a lone
/// step), which tells a reference to a later step from one to an unknown step.
struct StepContext<'a> {
    index: usize,
    earlier: &'a [&'a str],
    all_ids: &'a [&'a str],
}

fn check_step(
    step: &Step,
    context: &StepContext<'_>,
    catalogue: &dyn Catalogue,
    errors: &mut Vec<ValidationError>,
) {
    let index = context.index;
    let label = if is_valid_step_id(&step.id) {
        step.id.clone()
    } else {
        format!("#{index}")
    };
    let mut report = |field: &str, message: String| {
        errors.push(ValidationError::step(label.clone(), field, message));
    };

    if !is_valid_step_id(&step.id) {
        report(
            "id",
            format!(
                "invalid step id '{}': an id starts with a letter and has at most 64 letters, \
                 digits, '_' or '-'",
                shown(&step.id)
            ),
        );
    } else if let Some(first) = context.earlier.iter().position(|id| *id == step.id) {
        report(
            "id",
            format!(
                "duplicate step id '{}': step #{first} already uses it",
                step.id
            ),
        );
    }

    check_action(step, catalogue, &mut report);
    check_templates(step, context, &mut report);

    if let Some(when) = &step.when {
        if when.trim().is_empty() {
            report("when", "the `when` expression is empty".to_owned());
        } else if let Err(message) = catalogue.check_expression(when) {
            report("when", format!("invalid jq expression: {message}"));
        }
    }
    if let Some(retry) = &step.retry {
        check_retry(retry, &mut report);
    }
    if let Some(timeout) = step.timeout_ms
        && (timeout == 0 || timeout > MAX_TIMEOUT_MS)
    {
        report(
            "timeout_ms",
            format!("timeout_ms must be between 1 and {MAX_TIMEOUT_MS}; it is {timeout}"),
        );
    }
}

/// Provider and action known, required params present, literal params of the right type.
fn check_action(step: &Step, catalogue: &dyn Catalogue, report: &mut dyn FnMut(&str, String)) {
    let Some(actions) = catalogue.actions(&step.provider) else {
        let mut known = catalogue.provider_names();
        known.sort();
        let listed = if known.is_empty() {
            String::new()
        } else {
            format!("; known providers: {}", known.join(", "))
        };
        report(
            "provider",
            format!("unknown provider '{}'{listed}", shown(&step.provider)),
        );
        return;
    };
    let Some(action) = actions.iter().find(|action| action.name == step.action) else {
        let names: Vec<&str> = actions.iter().map(|action| action.name.as_str()).collect();
        report(
            "action",
            format!(
                "unknown action '{}' for provider '{}'; its actions: {}",
                shown(&step.action),
                step.provider,
                names.join(", ")
            ),
        );
        return;
    };
    for spec in &action.params {
        match step.params.get(&spec.name) {
            None if spec.required => {
                report(
                    &format!("params.{}", spec.name),
                    "required param missing".to_owned(),
                );
            }
            None => {}
            Some(value) => {
                if let Some(found) = type_mismatch(&spec.kind, value) {
                    report(
                        &format!("params.{}", spec.name),
                        format!("expected {}, found {found}", spec.kind),
                    );
                } else if let (Some(format), Value::String(text)) = (&spec.format, value)
                    && !text.contains("${")
                {
                    let checked = match format.as_str() {
                        "jq" => catalogue
                            .check_expression(text)
                            .map_err(|e| format!("the jq expression does not compile: {e}")),
                        "url" => catalogue.check_url(text),
                        _ => Ok(()),
                    };
                    if let Err(message) = checked {
                        report(&format!("params.{}", spec.name), message);
                    }
                }
            }
        }
    }
    for name in step.params.keys() {
        if !action.params.iter().any(|spec| &spec.name == name) {
            let known: Vec<&str> = action
                .params
                .iter()
                .map(|spec| spec.name.as_str())
                .collect();
            report(
                &format!("params.{}", shown(name)),
                format!(
                    "unknown param for {}.{}; its params: {}",
                    step.provider,
                    step.action,
                    known.join(", ")
                ),
            );
        }
    }
    for group in &action.one_of {
        if !group.is_empty() && !group.iter().any(|name| step.params.contains_key(name)) {
            report(
                "params",
                format!("one of these params is required: {}", group.join(", ")),
            );
        }
    }
}

/// What a literal value is when it does not fit `kind` (`None` when it fits, when `kind` is
/// `any` or unknown, and for a string that is exactly one reference, typed at run time).
fn type_mismatch(kind: &str, value: &Value) -> Option<&'static str> {
    let fits = match kind {
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        "object" => value.is_object(),
        "array" => value.is_array(),
        _ => true,
    };
    if fits {
        return None;
    }
    if let Value::String(text) = value {
        // A string that is one reference takes the type of what it finds; a malformed one is
        // reported by the template check.
        match template::parse(text) {
            Ok(parsed) if parsed.as_single_ref().is_some() => return None,
            Err(_) => return None,
            Ok(_) => {}
        }
    }
    Some(match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a number with a fraction",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    })
}

/// Every template in the params parses, and every step reference points at an earlier step.
fn check_templates(step: &Step, context: &StepContext<'_>, report: &mut dyn FnMut(&str, String)) {
    let mut path = Vec::new();
    for (key, value) in &step.params {
        path.clear();
        path.push(ParamSeg::Key(key.as_str()));
        let walked = template::walk_strings(value, &mut path, &mut |at, text| {
            let field = template::format_param_path("params", at);
            let parsed = match template::parse(text) {
                Ok(parsed) => parsed,
                Err(err) => {
                    report(
                        &field,
                        format!("bad template at byte {}: {}", err.position, err.message),
                    );
                    return;
                }
            };
            for reference in parsed.references() {
                if let Root::Step(target) = &reference.root
                    && let Some(problem) = check_step_ref(target, context)
                {
                    report(&field, format!("{reference} {problem}"));
                }
            }
        });
        if let Err(at) = walked {
            let field = format!("params.{at}");
            report(&field, template::depth_error().message);
        }
    }
}

/// Why a step reference is not to an earlier step, if it is not.
fn check_step_ref(target: &StepRef, context: &StepContext<'_>) -> Option<String> {
    match target {
        StepRef::Index(index) => {
            if *index < context.index {
                None
            } else if *index == context.index {
                Some("refers to this step itself; only earlier steps' outputs exist".to_owned())
            } else if *index < context.all_ids.len() {
                Some(format!(
                    "refers to step #{index}, which runs later; only earlier steps' outputs exist"
                ))
            } else {
                Some(format!(
                    "refers to step #{index}, but there is no such earlier step"
                ))
            }
        }
        StepRef::Id(id) => {
            if context.earlier.contains(&id.as_str()) {
                None
            } else if context
                .all_ids
                .get(context.index)
                .is_some_and(|own| own == id)
            {
                Some("refers to this step itself; only earlier steps' outputs exist".to_owned())
            } else if context.all_ids.contains(&id.as_str()) {
                Some(format!(
                    "refers to step '{id}', which runs later; only earlier steps' outputs exist"
                ))
            } else {
                Some(format!(
                    "refers to step '{id}', but there is no such earlier step"
                ))
            }
        }
    }
}

fn check_retry(retry: &RetryPolicy, report: &mut dyn FnMut(&str, String)) {
    if !(1..=MAX_ATTEMPTS).contains(&retry.max_attempts) {
        report(
            "retry.max_attempts",
            format!(
                "max_attempts must be between 1 and {MAX_ATTEMPTS}; it is {}",
                retry.max_attempts
            ),
        );
    }
    if !(retry.factor.is_finite() && retry.factor >= 1.0) {
        report(
            "retry.factor",
            format!("factor must be at least 1; it is {}", retry.factor),
        );
    }
    if retry.cap_ms > MAX_TIMEOUT_MS {
        report(
            "retry.cap_ms",
            format!(
                "cap_ms must be at most {MAX_TIMEOUT_MS}; it is {}",
                retry.cap_ms
            ),
        );
    }
    if retry.base_ms > retry.cap_ms {
        report(
            "retry.base_ms",
            format!(
                "base_ms ({}) must not exceed cap_ms ({})",
                retry.base_ms, retry.cap_ms
            ),
        );
    }
}

/// A user-supplied name cut to 64 characters for an error message.
fn shown(text: &str) -> String {
    let mut out: String = text.chars().take(64).collect();
    if out.len() < text.len() {
        out.push_str("...");
    }
    out
}
