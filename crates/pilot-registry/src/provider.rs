//! The provider trait: a named capability with actions, a parameter schema and an async
//! `execute`.

use async_trait::async_trait;
use pilot_core::{ActionSpec, CredentialKind};
use serde::Serialize;
use serde_json::Value;

use crate::{ProviderContext, ProviderError};

/// What a provider offers, as `GET /api/providers` shows it and validation checks it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProviderDescription {
    /// The name steps use (`webhook`).
    pub name: String,
    /// One sentence.
    pub description: String,
    /// Its actions and their params.
    pub actions: Vec<ActionSpec>,
    /// The credential types it can use; empty when it needs none. The engine loads the
    /// caller's credentials only for providers that list some.
    pub credential_types: Vec<CredentialKind>,
}

/// A successful call's result.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ProviderOutput {
    /// The step's output, what `${steps.<id>.output}` reads.
    pub output: Value,
    /// A short summary for the log.
    pub message: Option<String>,
    /// Provider-specific facts (usage, status...), an object or null.
    pub metadata: Value,
}

/// A provider: a unit struct (or one holding operator configuration) registered once.
#[async_trait]
pub trait Provider: Send + Sync {
    /// Its description; called once at registration.
    fn describe(&self) -> ProviderDescription;

    /// Runs `action` with resolved `params`. Must not panic on any input.
    async fn execute(
        &self,
        action: &str,
        params: &Value,
        ctx: &ProviderContext,
    ) -> Result<ProviderOutput, ProviderError>;
}

/// The expression language of `when` conditions (jq), installed into the registry by the logic
/// provider crate so the engine and validation can use it without depending on that crate.
#[async_trait]
pub trait Evaluator: Send + Sync {
    /// Checks the syntax of `expr` without running it.
    fn check(&self, expr: &str) -> Result<(), String>;

    /// Runs `expr` over `input` within the evaluator's bounds and returns its first output
    /// (`null` when it yields none).
    async fn eval(&self, expr: &str, input: Value) -> Result<Value, String>;
}
