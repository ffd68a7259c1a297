//! The `logic` provider: `transform` (jq over JSON), `template` (a rendered string, optionally
//! parsed as JSON) and `set` (a value as it is), and the `register` functions that install it
//! with the `when` evaluator.

use std::sync::Arc;

use async_trait::async_trait;
use pilot_core::{ActionSpec, ParamSpec};
use pilot_registry::{
    Provider, ProviderContext, ProviderDescription, ProviderError, ProviderOutput, Registry,
    RegistryError,
};
use serde_json::Value;

use crate::{JqEngine, JqError, JqLimits};

/// Installs the `logic` provider and the jq `when` evaluator, with the default limits.
pub fn register(registry: &mut Registry) -> Result<(), RegistryError> {
    register_with(registry, JqLimits::default())
}

/// [`register`] with the operator's limits. The provider and the `when` evaluator share one
/// engine (its threads and its cache).
pub fn register_with(registry: &mut Registry, limits: JqLimits) -> Result<(), RegistryError> {
    let engine = JqEngine::new(limits);
    registry.register(LogicProvider::new(engine.clone()))?;
    registry.set_evaluator(Arc::new(engine));
    Ok(())
}

/// Data shaping without any I/O.
#[derive(Debug, Clone)]
pub struct LogicProvider {
    engine: JqEngine,
}

impl LogicProvider {
    /// The provider, running jq on `engine`.
    pub fn new(engine: JqEngine) -> Self {
        Self { engine }
    }
}

#[async_trait]
impl Provider for LogicProvider {
    fn describe(&self) -> ProviderDescription {
        let limits = self.engine.limits();
        ProviderDescription {
            name: "logic".into(),
            description: "Shapes data without any I/O: jq transforms, string templates and literal values.".into(),
            actions: vec![
                ActionSpec {
                    name: "transform".into(),
                    description: format!(
                        "Runs a jq expression (jaq) over `input` and returns its output. No access to the environment, \
                         files or input streams; bounded to {} ms, {} steps and {} MiB of values.",
                        limits.timeout.as_millis(),
                        limits.max_steps,
                        limits.max_alloc_bytes >> 20
                    ),
                    params: vec![
                        ParamSpec::new("expression", "string", true, "The jq expression, e.g. `.items | map(.name)`.").with_format("jq"),
                        ParamSpec::new("input", "any", false, "The JSON value the expression reads as `.` (default null)."),
                        ParamSpec::new(
                            "all",
                            "boolean",
                            false,
                            "When true, returns every output as an array; otherwise the expression must produce at most one \
                             output, which is returned (null for none). Default false.",
                        ),
                    ],
                    one_of: Vec::new(),
                },
                ActionSpec {
                    name: "template".into(),
                    description: "Returns `template` after `${...}` references are resolved: a string, or with `json: true` \
                                  the JSON value that string spells."
                        .into(),
                    params: vec![
                        ParamSpec::new(
                            "template",
                            "string",
                            true,
                            "The text with `${...}` references. A template that is one whole reference to a non-string value \
                             renders as that value's JSON text.",
                        ),
                        ParamSpec::new(
                            "json",
                            "boolean",
                            false,
                            "When true, parses the rendered text as JSON and returns the value (failing if it is not JSON). \
                             Default false.",
                        ),
                    ],
                    one_of: Vec::new(),
                },
                ActionSpec {
                    name: "set".into(),
                    description: "Returns `value` as it is (after `${...}` resolution), e.g. to build an object from earlier \
                                  outputs."
                        .into(),
                    params: vec![ParamSpec::new("value", "any", true, "The value to return.")],
                    one_of: Vec::new(),
                },
            ],
            credential_types: Vec::new(),
        }
    }

    async fn execute(
        &self,
        action: &str,
        params: &Value,
        ctx: &ProviderContext,
    ) -> Result<ProviderOutput, ProviderError> {
        match action {
            "transform" => self.transform(params, ctx).await,
            "template" => template(params),
            "set" => set(params),
            other => Err(ProviderError::permanent(format!(
                "logic has no action '{other}'"
            ))),
        }
    }
}

impl LogicProvider {
    async fn transform(
        &self,
        params: &Value,
        ctx: &ProviderContext,
    ) -> Result<ProviderOutput, ProviderError> {
        let expression = match params.get("expression") {
            Some(Value::String(e)) => e,
            Some(_) => {
                return Err(ProviderError::permanent(
                    "logic.transform: `expression` must be a string",
                ));
            }
            None => {
                return Err(ProviderError::permanent(
                    "logic.transform: `expression` is required",
                ));
            }
        };
        let input = params.get("input").cloned().unwrap_or(Value::Null);
        let all = flag(params, "all", "logic.transform")?;
        let (output, count) = if all {
            let outputs = self
                .engine
                .all_within(expression, input, ctx.timeout)
                .await
                .map_err(provider_error)?;
            let count = outputs.len();
            (Value::Array(outputs), count)
        } else {
            let output = self
                .engine
                .single_within(expression, input, ctx.timeout)
                .await
                .map_err(provider_error)?;
            (output, 1)
        };
        let message = if all {
            format!("{count} outputs")
        } else {
            "1 output".to_owned()
        };
        Ok(ProviderOutput {
            output,
            message: Some(message),
            metadata: Value::Null,
        })
    }
}

fn template(params: &Value) -> Result<ProviderOutput, ProviderError> {
    let json = flag(params, "json", "logic.template")?;
    let text = match params.get("template") {
        None => {
            return Err(ProviderError::permanent(
                "logic.template: `template` is required",
            ));
        }
        Some(Value::String(text)) => text.clone(),
        // A whole-value reference to a non-string: as JSON, it already is the value.
        Some(value) if json => {
            return Ok(ProviderOutput {
                output: value.clone(),
                ..ProviderOutput::default()
            });
        }
        Some(value) => value.to_string(),
    };
    let output = if json {
        serde_json::from_str(&text).map_err(|e| {
            ProviderError::permanent(format!(
                "logic.template: the rendered template is not valid JSON: {e}"
            ))
        })?
    } else {
        Value::String(text)
    };
    Ok(ProviderOutput {
        output,
        message: None,
        metadata: Value::Null,
    })
}

fn set(params: &Value) -> Result<ProviderOutput, ProviderError> {
    match params.get("value") {
        Some(value) => Ok(ProviderOutput {
            output: value.clone(),
            message: None,
            metadata: Value::Null,
        }),
        None => Err(ProviderError::permanent("logic.set: `value` is required")),
    }
}

/// An optional boolean param, false when absent or null.
fn flag(params: &Value, name: &str, action: &str) -> Result<bool, ProviderError> {
    match params.get(name) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(ProviderError::permanent(format!(
            "{action}: `{name}` must be a boolean"
        ))),
    }
}

/// Every jq failure is permanent (the same expression fails the same way) except a busy
/// evaluator.
fn provider_error(error: JqError) -> ProviderError {
    if error.is_transient() {
        ProviderError::retryable(format!("logic.transform: {error}"))
    } else {
        ProviderError::permanent(format!("logic.transform: {error}"))
    }
}
