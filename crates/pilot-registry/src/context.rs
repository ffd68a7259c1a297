//! What a provider receives besides its params: who is calling, the idempotency key, the
//! caller's credentials for this provider, the per-attempt timeout and the shared HTTP client.

use std::sync::Arc;
use std::time::Duration;

use pilot_core::redact::Redactor;
use pilot_core::{Credential, CredentialStore, Integration, RunId, UserId};

use crate::{OutboundClient, ProviderError};

/// The context of one provider call.
#[derive(Clone)]
pub struct ProviderContext {
    /// The caller; every lookup is scoped to it.
    pub user_id: UserId,
    /// The run this call belongs to.
    pub run_id: RunId,
    /// The step's id.
    pub step_id: String,
    /// Stable across retries and takeovers of this step of this run; sent as
    /// `Idempotency-Key` by HTTP providers.
    pub idempotency_key: String,
    /// The caller's decrypted credentials for this provider (empty for providers that declare
    /// no credential types).
    pub credentials: Vec<Credential>,
    /// This attempt's time budget.
    pub timeout: Duration,
    /// The shared guarded HTTP client.
    pub http: Arc<OutboundClient>,
    /// Where custom integrations are looked up (scoped to `user_id`).
    pub store: Option<Arc<dyn CredentialStore>>,
}

impl std::fmt::Debug for ProviderContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderContext")
            .field("user_id", &self.user_id)
            .field("run_id", &self.run_id)
            .field("step_id", &self.step_id)
            .field("credentials", &self.credentials.len())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl ProviderContext {
    /// A context with no credentials and no store, for library use and tests.
    pub fn new(user_id: UserId, run_id: RunId, step_id: &str, http: Arc<OutboundClient>) -> Self {
        let idempotency_key = idempotency_key(run_id.as_str(), step_id);
        Self {
            user_id,
            run_id,
            step_id: step_id.to_owned(),
            idempotency_key,
            credentials: Vec::new(),
            timeout: Duration::from_secs(30),
            http,
            store: None,
        }
    }

    /// A redactor for this call's credentials: what a provider applies to any text from the
    /// remote side before it cuts it (`classify_status` takes it).
    pub fn redactor(&self) -> Redactor {
        Redactor::for_credentials(&self.credentials)
    }

    /// The caller's custom integration called `name`.
    pub async fn integration(&self, name: &str) -> Result<Option<Integration>, ProviderError> {
        let Some(store) = &self.store else {
            return Ok(None);
        };
        store
            .integration(&self.user_id, name)
            .await
            .map_err(|e| ProviderError::retryable(format!("looking up integration '{name}': {e}")))
    }
}

/// The `Idempotency-Key` of one step of one run: the same across retries and takeovers, so a
/// remote service can deduplicate a step that ran twice.
pub fn idempotency_key(run_id: &str, step_id: &str) -> String {
    format!("{run_id}:{step_id}")
}
