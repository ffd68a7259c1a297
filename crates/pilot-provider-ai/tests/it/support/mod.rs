//! What the tests share: the scriptable fake server of `pilot_registry::testing` (on
//! 127.0.0.1:0, recording every request) with the OpenAI-compatible answers the tests script,
//! the stored key, and a step context holding the caller's credentials.

// Each test binary uses a different part of this module.
use std::sync::Arc;
use std::time::Duration;

use pilot_core::{Credential, CredentialKind, RunId, Secret, UserId};
pub(crate) use pilot_registry::testing::{FakeServer, Reply};
use pilot_registry::{OutboundClient, OutboundConfig, ProviderContext};
use serde_json::json;

/// The key the tests store; it must never appear in an error, output or metadata.
pub(crate) const KEY: &str = "sk-test-4f1c9e2a7b3d";

/// Starts a fake server answering `script` (its last reply repeats).
pub(crate) async fn serve(script: Vec<Reply>) -> FakeServer {
    FakeServer::start(script).await.unwrap()
}

/// `http://127.0.0.1:PORT/v1`, the base URL the provider is configured with.
pub(crate) fn base_url(server: &FakeServer) -> url::Url {
    server.url("/v1")
}

/// A chat completion answering `content`, with usage 12 + 5 = 17 tokens.
pub(crate) fn completion(content: &str) -> Reply {
    Reply::json(
        200,
        &json!({
            "id": "chatcmpl-abc123",
            "object": "chat.completion",
            "created": 1_700_000_000,
            "model": "gpt-4o-mini-2024-07-18",
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }],
            "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17},
        }),
    )
}

/// The shared outbound client with the default configuration: no allowlist, since AI base
/// URLs are trusted operator configuration.
pub(crate) fn client() -> Arc<OutboundClient> {
    Arc::new(OutboundClient::new(OutboundConfig::default()).unwrap())
}

/// A context for step `chat` holding `credentials` and a 5 s budget.
pub(crate) fn context(credentials: Vec<Credential>) -> ProviderContext {
    let mut ctx = ProviderContext::new(UserId::new(), RunId::new(), "chat", client());
    ctx.credentials = credentials;
    ctx.timeout = Duration::from_secs(5);
    ctx
}

/// The caller's stored key for `provider`.
pub(crate) fn credential(provider: &str, kind: CredentialKind, secret: &str) -> Credential {
    Credential {
        provider: provider.into(),
        kind,
        secret: Secret::new(secret),
        origin: None,
        integration: None,
        header_name: None,
    }
}
