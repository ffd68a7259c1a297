//! Why a chat call failed. Each variant knows whether a retry can help; the registry's
//! [`ProviderError`], which the engine's retries follow, is built from that.

use std::time::Duration;

use pilot_registry::{OutboundError, ProviderError};

/// A chat call failed. No variant ever holds the caller's key: server messages are redacted
/// before they are stored here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AiError {
    /// The step asked for an action other than `chat`.
    #[error("{provider} has no action '{action}' (it has: chat)")]
    UnknownAction {
        /// The vendor's name.
        provider: &'static str,
        /// The action asked for.
        action: String,
    },
    /// A param is missing, has the wrong type or is out of range (permanent).
    #[error("param '{param}' {reason}")]
    InvalidParam {
        /// The param at fault, with an index for message entries (`messages[1].role`).
        param: String,
        /// What is wrong, phrased to follow the param's name.
        reason: String,
    },
    /// The caller has stored no credential for this vendor (permanent).
    #[error(
        "{provider} needs an API key: store one with POST /api/provider-credentials/{provider} \
         and the body {{\"type\":\"api_key\",\"value\":\"<your key>\"}}"
    )]
    MissingCredential {
        /// The vendor's name.
        provider: &'static str,
    },
    /// The stored credential cannot be sent in a header (permanent).
    #[error(
        "the {provider} credential is not a usable API key (it must be printable ASCII without \
         spaces): store it again with POST /api/provider-credentials/{provider}"
    )]
    InvalidCredential {
        /// The vendor's name.
        provider: &'static str,
    },
    /// The operator-configured base URL cannot take the `/chat/completions` path (permanent).
    #[error("the {provider} base URL is unusable: {reason}")]
    InvalidBaseUrl {
        /// The vendor's name.
        provider: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// No complete response arrived: connect failure, timeout, refused redirect, body too
    /// large. Retryable when the transport error is.
    #[error("{provider}: {cause}")]
    Transport {
        /// The vendor's name.
        provider: &'static str,
        /// The outbound client's error.
        cause: OutboundError,
    },
    /// The server refused the request: 400 (unknown model, context too long), 401, 403, 404...
    /// Retrying cannot help.
    #[error("{provider} refused the request with HTTP {status}{}{}", detail(.message), key_hint(.status, .provider))]
    Rejected {
        /// The vendor's name.
        provider: &'static str,
        /// The HTTP status.
        status: u16,
        /// The server's own message, redacted and truncated; may be empty.
        message: String,
    },
    /// The server is rate limiting, overloaded or failing (408, 429, 5xx): a retry may succeed,
    /// after `retry_after` when the server said so.
    #[error("{provider} is unavailable (HTTP {status}){}", detail(.message))]
    Unavailable {
        /// The vendor's name.
        provider: &'static str,
        /// The HTTP status.
        status: u16,
        /// The server's own message, redacted and truncated; may be empty.
        message: String,
        /// The server's `Retry-After`.
        retry_after: Option<Duration>,
    },
    /// A 2xx response that is not a usable chat completion: not JSON, truncated, no choices,
    /// fields of the wrong type (permanent: a chat call costs money, so it is not repeated
    /// blindly).
    #[error("{provider} sent an invalid chat completion: {reason}")]
    MalformedResponse {
        /// The vendor's name.
        provider: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The model declined to answer (permanent).
    #[error("the {provider} model refused to answer: {message}")]
    Refused {
        /// The vendor's name.
        provider: &'static str,
        /// The model's refusal, redacted and truncated.
        message: String,
    },
    /// JSON mode was asked for and the answer is not a JSON value (permanent).
    #[error("{provider} answered in JSON mode with text that is not JSON: {reason}")]
    InvalidJsonAnswer {
        /// The vendor's name.
        provider: &'static str,
        /// What the parser said, with a hint when the answer was cut short.
        reason: String,
    },
}

impl AiError {
    /// Whether the engine may retry.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Unavailable { .. } => true,
            Self::Transport { cause, .. } => ProviderError::from(cause.clone()).is_retryable(),
            _ => false,
        }
    }

    /// The delay the server asked for, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Unavailable { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

impl AiError {
    /// The registry's error for this one, its message passed through `scrub` (the provider
    /// redacts the caller's key there).
    pub(crate) fn into_provider_error(self, scrub: impl FnOnce(String) -> String) -> ProviderError {
        let message = scrub(self.to_string());
        if self.is_retryable() {
            ProviderError::Retryable {
                message,
                retry_after: self.retry_after(),
            }
        } else {
            ProviderError::Permanent(message)
        }
    }
}

impl From<AiError> for ProviderError {
    fn from(e: AiError) -> Self {
        e.into_provider_error(|message| message)
    }
}

/// After a 401: where the key is replaced.
fn key_hint(status: &u16, provider: &str) -> String {
    if *status == 401 {
        format!(" (check the key stored with POST /api/provider-credentials/{provider})")
    } else {
        String::new()
    }
}

/// `": <message>"`, or nothing when the server gave no message.
fn detail(message: &str) -> String {
    if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_follows_the_variant() {
        let unavailable = AiError::Unavailable {
            provider: "openai",
            status: 429,
            message: "slow down".into(),
            retry_after: Some(Duration::from_secs(7)),
        };
        let e = ProviderError::from(unavailable);
        assert!(e.is_retryable());
        assert_eq!(e.retry_after(), Some(Duration::from_secs(7)));
        assert_eq!(e.to_string(), "openai is unavailable (HTTP 429): slow down");

        let timeout = AiError::Transport {
            provider: "groq",
            cause: OutboundError::Timeout,
        };
        assert!(ProviderError::from(timeout).is_retryable());
        let redirect = AiError::Transport {
            provider: "groq",
            cause: OutboundError::Redirect("x".into()),
        };
        assert!(!ProviderError::from(redirect).is_retryable());

        let rejected = AiError::Rejected {
            provider: "openai",
            status: 401,
            message: String::new(),
        };
        let e = ProviderError::from(rejected);
        assert!(!e.is_retryable());
        assert_eq!(
            e.to_string(),
            "openai refused the request with HTTP 401 (check the key stored with POST /api/provider-credentials/openai)"
        );
    }

    #[test]
    fn missing_credential_names_the_endpoint_and_body() {
        let e = AiError::MissingCredential { provider: "groq" }.to_string();
        assert!(e.contains("POST /api/provider-credentials/groq"), "{e}");
        assert!(
            e.contains(r#"{"type":"api_key","value":"<your key>"}"#),
            "{e}"
        );
    }
}
