//! Decrypted credentials as the engine hands them to a provider. A [`Secret`] cannot be printed
//! or serialised: its `Debug` says `[redacted]` and it has no `Serialize` impl, so no response
//! or log type can hold one by accident.

use serde::{Deserialize, Serialize};

/// A secret value (API key, token, password). Read it with [`Secret::expose`] at the last
/// moment, when building the outgoing request.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself; call only where it leaves the process in a request.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// How a credential is presented to the remote service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialKind {
    /// An API key; for AI vendors sent as a bearer token, for custom APIs in a header.
    ApiKey,
    /// `Authorization: Bearer <secret>`.
    Bearer,
    /// `Authorization: Basic base64(<secret>)`, the secret being `user:password`.
    Basic,
    /// A custom header carrying the secret (header name stored with the credential).
    Header,
    /// An OAuth access token, sent as a bearer token.
    OauthToken,
}

impl CredentialKind {
    /// Every kind, in a stable order.
    pub const ALL: [CredentialKind; 5] = [
        Self::ApiKey,
        Self::Bearer,
        Self::Basic,
        Self::Header,
        Self::OauthToken,
    ];

    /// The wire and storage name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ApiKey => "api_key",
            Self::Bearer => "bearer",
            Self::Basic => "basic",
            Self::Header => "header",
            Self::OauthToken => "oauth_token",
        }
    }

    /// Parses the wire and storage name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// One decrypted credential of the calling user.
#[derive(Debug, Clone)]
pub struct Credential {
    /// The provider it is stored for (`openai`, `custom_api`, ...).
    pub provider: String,
    /// How it is presented.
    pub kind: CredentialKind,
    /// The secret itself.
    pub secret: Secret,
    /// For custom_api: the one origin (`scheme://host:port`) it may be sent to.
    pub origin: Option<String>,
    /// For custom_api: the custom integration it belongs to, by name.
    pub integration: Option<String>,
    /// For `api_key`/`header` kinds on custom APIs: the header that carries it.
    pub header_name: Option<String>,
}

/// A user's custom integration: a named API with a base URL, an auth scheme and default headers.
/// It holds no secret; the credential for it is stored separately.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Integration {
    /// Unique per user.
    pub name: String,
    /// `https://api.example.com/v1`; requests append their path to it.
    pub base_url: String,
    /// How the integration's credential is attached, when it has one.
    pub auth_scheme: Option<CredentialKind>,
    /// Header for `api_key`/`header` schemes (default `X-API-Key`).
    pub auth_header: Option<String>,
    /// Sent with every request (not secret).
    pub default_headers: Vec<(String, String)>,
}
