//! Plan validation: the checks made when a plan is saved, so a run never starts with a plan
//! that cannot work. Every error names the step and the field at fault.

use serde::Serialize;

use crate::{Plan, ValidationError};

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
}

impl ParamSpec {
    /// A parameter description.
    pub fn new(name: &str, kind: &str, required: bool, description: &str) -> Self {
        Self {
            name: name.to_owned(),
            kind: kind.to_owned(),
            required,
            description: description.to_owned(),
        }
    }
}

/// What validation needs to know about the installed providers.
pub trait Catalogue {
    /// The actions of `provider`, or `None` when no such provider is registered.
    fn actions(&self, provider: &str) -> Option<Vec<ActionSpec>>;

    /// Checks that `expr` is a valid `when` expression (jq syntax), without running it.
    fn check_expression(&self, expr: &str) -> Result<(), String>;
}

/// Validates a plan against the catalogue: step ids valid and unique, known providers and
/// actions, required params present, templates well formed and referring only to earlier
/// steps, `when` expressions valid. Returns every problem found.
pub fn validate_plan(_plan: &Plan, _catalogue: &dyn Catalogue) -> Result<(), Vec<ValidationError>> {
    unimplemented!("template helper")
}
