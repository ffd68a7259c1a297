//! The `${...}` template language (SPEC section 3): a closed lookup grammar, never evaluated.
//!
//! Grammar: `${steps.<ref>.output<path>}`, `${input<path>}`, `${run.id}`, `${plan.id}`, where
//! `<ref>` is a step id or a 0-based index and `<path>` is any number of `.field` and `[n]`
//! segments. `$${` is a literal `${`. A parameter that is exactly one reference keeps the JSON
//! type of the value; a reference inside a longer string is rendered into it (objects and
//! arrays as compact JSON). Only step params are templated, and a resolved value is never
//! parsed again, so stored outputs cannot inject references.

use serde_json::Value;

/// A parsed template string: literal text and references, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    /// The parts in order.
    pub parts: Vec<Part>,
}

/// A piece of a template string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// Text copied as is (with `$${` already unescaped to `${`).
    Literal(String),
    /// A `${...}` reference.
    Ref(Reference),
}

/// One `${...}` reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// What it starts from.
    pub root: Root,
    /// The path below the root (below `output` for step references).
    pub path: Vec<PathSegment>,
}

/// The start of a reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Root {
    /// `steps.<ref>.output`.
    Step(StepRef),
    /// `input`.
    Input,
    /// `run.id`.
    RunId,
    /// `plan.id`.
    PlanId,
}

/// How a reference names a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepRef {
    /// By id.
    Id(String),
    /// By 0-based index.
    Index(usize),
}

/// One segment of a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathSegment {
    /// `.name`.
    Field(String),
    /// `[n]`.
    Index(usize),
}

/// A template string is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at byte {position}: {message}")]
pub struct TemplateError {
    /// Byte offset in the string where the problem is.
    pub position: usize,
    /// What is wrong.
    pub message: String,
}

/// A reference could not be resolved at run time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ResolveError {
    /// The parameter path (e.g. `body.items[0]`) whose template failed.
    pub param: String,
    /// What is missing, naming the reference.
    pub message: String,
}

/// The values references resolve against.
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    /// `${input}`.
    pub input: &'a Value,
    /// `${run.id}`.
    pub run_id: &'a str,
    /// `${plan.id}` (`None` for ad-hoc runs: referencing it is an error).
    pub plan_id: Option<&'a str>,
    /// Earlier steps in order: id and output (`None` when the step produced none, e.g. it was
    /// skipped or failed with continue_on_error).
    pub steps: &'a [(&'a str, Option<&'a Value>)],
}

/// Parses one string.
pub fn parse(_text: &str) -> Result<Template, TemplateError> {
    unimplemented!("template helper")
}

/// Every reference in a params value (strings at any depth), with the param path each sits at.
/// The error names the param path.
pub fn references(_params: &Value) -> Result<Vec<(String, Reference)>, (String, TemplateError)> {
    unimplemented!("template helper")
}

/// Resolves every string in `params` (at any depth) against `scope`.
pub fn resolve(_params: &Value, _scope: &Scope<'_>) -> Result<Value, ResolveError> {
    unimplemented!("template helper")
}
