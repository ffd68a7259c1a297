//! The registry: providers by name, their descriptions, and the `when` evaluator.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::FutureExt as _;

use pilot_core::{ActionSpec, Catalogue};
use serde_json::Value;

use crate::{
    Evaluator, Provider, ProviderContext, ProviderDescription, ProviderError, ProviderOutput,
    RegistryError,
};

/// Every installed provider, in registration order.
#[derive(Default, Clone)]
pub struct Registry {
    providers: Vec<(ProviderDescription, Arc<dyn Provider>)>,
    by_name: HashMap<String, usize>,
    evaluator: Option<Arc<dyn Evaluator>>,
    /// Provider calls that panicked (each failed its attempt instead).
    panics: Arc<AtomicU64>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.providers.iter().map(|(d, _)| &d.name))
            .finish()
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a provider under the name its description gives.
    pub fn register(&mut self, provider: impl Provider + 'static) -> Result<(), RegistryError> {
        let description = provider.describe();
        if self.by_name.contains_key(&description.name) {
            return Err(RegistryError::Duplicate(description.name));
        }
        self.by_name
            .insert(description.name.clone(), self.providers.len());
        self.providers.push((description, Arc::new(provider)));
        Ok(())
    }

    /// Installs the expression language used by `when` conditions.
    pub fn set_evaluator(&mut self, evaluator: Arc<dyn Evaluator>) {
        self.evaluator = Some(evaluator);
    }

    /// The expression language, when one is installed.
    pub fn evaluator(&self) -> Option<&Arc<dyn Evaluator>> {
        self.evaluator.as_ref()
    }

    /// Every provider's description, in registration order.
    pub fn list(&self) -> impl Iterator<Item = &ProviderDescription> {
        self.providers.iter().map(|(d, _)| d)
    }

    /// One provider's description.
    pub fn describe(&self, name: &str) -> Option<&ProviderDescription> {
        self.by_name.get(name).map(|&i| &self.providers[i].0)
    }

    /// How many provider calls panicked since this registry was built (a metric).
    pub fn panic_count(&self) -> u64 {
        self.panics.load(Ordering::Relaxed)
    }

    /// Runs `provider.action`. An unknown provider or action is a permanent error. A provider
    /// that panics fails this attempt with a permanent internal error (and is counted in
    /// [`Registry::panic_count`]): the executor, its worker and every other run go on. The
    /// panic is caught where the call is polled, so it costs no task of its own.
    pub async fn execute(
        &self,
        provider: &str,
        action: &str,
        params: &Value,
        ctx: &ProviderContext,
    ) -> Result<ProviderOutput, ProviderError> {
        let Some(&index) = self.by_name.get(provider) else {
            return Err(ProviderError::permanent(format!(
                "unknown provider '{provider}'"
            )));
        };
        let (description, implementation) = &self.providers[index];
        if !description.actions.iter().any(|a| a.name == action) {
            return Err(ProviderError::permanent(format!(
                "provider '{provider}' has no action '{action}'"
            )));
        }
        let call = AssertUnwindSafe(implementation.execute(action, params, ctx));
        match call.catch_unwind().await {
            Ok(result) => result,
            Err(payload) => {
                self.panics.fetch_add(1, Ordering::Relaxed);
                let what = payload
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "no message".to_owned());
                tracing::error!(
                    provider,
                    action,
                    "a provider call panicked; the attempt failed"
                );
                Err(ProviderError::permanent(format!(
                    "internal error: provider '{provider}' panicked ({what}); this is a bug in \
                     the provider, not in your plan"
                )))
            }
        }
    }
}

impl Catalogue for Registry {
    fn actions(&self, provider: &str) -> Option<Vec<ActionSpec>> {
        self.describe(provider).map(|d| d.actions.clone())
    }

    fn provider_names(&self) -> Vec<String> {
        self.list().map(|d| d.name.clone()).collect()
    }

    fn check_expression(&self, expr: &str) -> Result<(), String> {
        match &self.evaluator {
            Some(evaluator) => evaluator.check(expr),
            None => Err("no expression language is installed (register the logic provider)".into()),
        }
    }
}
