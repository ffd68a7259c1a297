//! The vendors that speak the OpenAI-compatible chat protocol, as data: a name, a default base
//! URL and model, and the credential kinds they accept. Adding a compatible vendor is one
//! constant here, one line in [`register`] and one field in [`AiConfig`].

use pilot_core::CredentialKind;
use pilot_registry::{Registry, RegistryError};
use url::Url;

use crate::ChatProvider;

/// An OpenAI-compatible chat vendor. Every field is static configuration; the operator may
/// replace the base URL (see [`AiConfig`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vendor {
    /// The provider name steps use (`openai`), also the name its credential is stored under.
    pub name: &'static str,
    /// One sentence for `GET /api/providers`.
    pub description: &'static str,
    /// Where `/chat/completions` is appended when the operator configures no other base URL.
    pub default_base_url: &'static str,
    /// The model used when a step names none.
    pub default_model: &'static str,
    /// The credential kinds whose secret is sent as `Authorization: Bearer <secret>`.
    pub credential_types: &'static [CredentialKind],
}

/// OpenAI, or any OpenAI-compatible server the operator points `PILOT_OPENAI_BASE_URL` at.
pub const OPENAI: Vendor = Vendor {
    name: "openai",
    description: "Chat completions from OpenAI, or from any OpenAI-compatible server the operator configures.",
    default_base_url: "https://api.openai.com/v1",
    default_model: "gpt-4o-mini",
    credential_types: &[CredentialKind::ApiKey, CredentialKind::Bearer],
};

/// Groq's OpenAI-compatible endpoint.
pub const GROQ: Vendor = Vendor {
    name: "groq",
    description: "Chat completions from Groq over its OpenAI-compatible API.",
    default_base_url: "https://api.groq.com/openai/v1",
    default_model: "llama-3.3-70b-versatile",
    credential_types: &[CredentialKind::ApiKey, CredentialKind::Bearer],
};

/// Operator configuration: the base URL of each vendor, when it is not the vendor's public
/// endpoint. The binary parses it (`PILOT_OPENAI_BASE_URL`, `PILOT_GROQ_BASE_URL`); these URLs
/// are trusted configuration, so a local model server needs no outbound allowlist entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AiConfig {
    /// Replaces `https://api.openai.com/v1`.
    pub openai_base_url: Option<Url>,
    /// Replaces `https://api.groq.com/openai/v1`.
    pub groq_base_url: Option<Url>,
}

/// Registers `openai` and `groq`, in that order.
pub fn register(registry: &mut Registry, config: &AiConfig) -> Result<(), RegistryError> {
    registry.register(ChatProvider::new(OPENAI, config.openai_base_url.clone()))?;
    registry.register(ChatProvider::new(GROQ, config.groq_base_url.clone()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_lists_both_vendors_with_chat_and_their_credential_types() {
        let mut registry = Registry::new();
        register(&mut registry, &AiConfig::default()).unwrap();
        let names: Vec<_> = registry.list().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["openai", "groq"]);
        for description in registry.list() {
            assert_eq!(description.actions.len(), 1);
            assert_eq!(description.actions[0].name, "chat");
            assert_eq!(description.actions[0].one_of, [["prompt", "messages"]]);
            let params: Vec<_> = description.actions[0]
                .params
                .iter()
                .map(|p| (p.name.as_str(), p.kind.as_str(), p.required))
                .collect();
            assert_eq!(
                params,
                [
                    ("model", "string", false),
                    ("prompt", "string", false),
                    ("messages", "array", false),
                    ("system", "string", false),
                    ("temperature", "number", false),
                    ("max_tokens", "integer", false),
                    ("stop", "any", false),
                    ("json", "boolean", false),
                ]
            );
            assert_eq!(
                description.credential_types,
                [CredentialKind::ApiKey, CredentialKind::Bearer]
            );
        }
    }

    #[test]
    fn the_model_param_names_each_vendors_default() {
        let mut registry = Registry::new();
        register(&mut registry, &AiConfig::default()).unwrap();
        for (name, model) in [
            ("openai", "gpt-4o-mini"),
            ("groq", "llama-3.3-70b-versatile"),
        ] {
            let model_param = &registry.describe(name).unwrap().actions[0].params[0];
            assert_eq!(
                model_param.description,
                format!("The model; default {model}.")
            );
        }
    }

    #[test]
    fn registering_twice_is_refused() {
        let mut registry = Registry::new();
        register(&mut registry, &AiConfig::default()).unwrap();
        let err = register(&mut registry, &AiConfig::default()).unwrap_err();
        assert_eq!(err, RegistryError::Duplicate("openai".into()));
    }
}
