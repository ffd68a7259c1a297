//! The one guarded outbound HTTP client (RELIABILITY.md, "Outbound guard in four layers"):
//! a URL preflight, a resolver that checks and pins addresses, redirects followed by hand with
//! every hop re-checked, and no proxy. Every provider sends through [`OutboundClient::send`].
//!
//! NOTE: the API below is the contract the providers code against; the outbound issue fills in
//! the guard itself.

use std::time::Duration;

use bytes::Bytes;
use pilot_core::Secret;
use url::Url;

use crate::ProviderError;

pub use reqwest::Method;

/// Operator configuration of the outbound client.
#[derive(Debug, Clone)]
pub struct OutboundConfig {
    /// Address ranges opened despite the default block list (`PILOT_OUTBOUND_ALLOW`).
    pub allow: Vec<ipnet::IpNet>,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Response bodies larger than this fail the call.
    pub max_response_bytes: usize,
    /// Redirects followed at most.
    pub max_redirects: usize,
}

impl Default for OutboundConfig {
    fn default() -> Self {
        Self {
            allow: Vec::new(),
            connect_timeout: Duration::from_secs(10),
            max_response_bytes: 10 * 1024 * 1024,
            max_redirects: 5,
        }
    }
}

/// One request.
#[derive(Debug, Clone)]
pub struct OutboundRequest {
    /// The method.
    pub method: Method,
    /// The absolute URL.
    pub url: Url,
    /// Plain headers (validated: no CR/LF; Host, Content-Length, Transfer-Encoding and
    /// Connection are refused).
    pub headers: Vec<(String, String)>,
    /// Secret headers, sent only while the request's origin equals `credential_origin`
    /// (dropped on a redirect to another origin).
    pub credential_headers: Vec<(String, Secret)>,
    /// The origin (`scheme://host:port`) the credential headers are bound to.
    pub credential_origin: Option<String>,
    /// The body.
    pub body: Option<Bytes>,
    /// Total time budget, redirects included.
    pub timeout: Duration,
    /// Operator-configured URL (an AI vendor's base URL): the address guard is not applied,
    /// but redirects to another origin are refused.
    pub trusted: bool,
}

/// A response, its body read in full within the size cap.
#[derive(Debug, Clone)]
pub struct OutboundResponse {
    /// The status code.
    pub status: u16,
    /// Headers, names lower-case.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Bytes,
    /// The URL that answered (after redirects).
    pub url: Url,
}

/// An outbound call failed before a response was complete.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OutboundError {
    /// The URL is malformed or uses a scheme other than http/https, or has userinfo.
    #[error("invalid URL: {0}")]
    InvalidUrl(String),
    /// The destination address is not allowed.
    #[error("destination blocked: {0}")]
    Blocked(String),
    /// A header is malformed or may not be set.
    #[error("invalid header: {0}")]
    InvalidHeader(String),
    /// Connecting failed (retryable).
    #[error("connection failed: {0}")]
    Connect(String),
    /// The time budget ran out (retryable).
    #[error("timed out")]
    Timeout,
    /// The response body exceeded the size cap.
    #[error("response body exceeds {0} bytes")]
    TooLarge(usize),
    /// Too many redirects, or a redirect a trusted request may not follow.
    #[error("redirect refused: {0}")]
    Redirect(String),
    /// Any other transport failure (retryable).
    #[error("transport error: {0}")]
    Transport(String),
}

impl From<OutboundError> for ProviderError {
    fn from(e: OutboundError) -> Self {
        match e {
            OutboundError::Connect(_) | OutboundError::Timeout | OutboundError::Transport(_) => {
                ProviderError::retryable(e.to_string())
            }
            _ => ProviderError::permanent(e.to_string()),
        }
    }
}

/// The shared client.
#[derive(Debug)]
pub struct OutboundClient {
    config: OutboundConfig,
}

impl OutboundClient {
    /// Builds the client.
    pub fn new(config: OutboundConfig) -> Result<Self, OutboundError> {
        Ok(Self { config })
    }

    /// The configuration in force.
    pub fn config(&self) -> &OutboundConfig {
        &self.config
    }

    /// Sends a request through the guard.
    pub async fn send(&self, _request: OutboundRequest) -> Result<OutboundResponse, OutboundError> {
        Err(OutboundError::Transport("outbound client not implemented yet".into()))
    }
}

/// Maps a non-2xx response to the error the engine's retries follow: 408, 429 and 5xx are
/// retryable (429 and 503 honour `Retry-After`, seconds or an HTTP date), other statuses
/// permanent. `None` for 2xx.
pub fn classify_status(_response: &OutboundResponse) -> Option<ProviderError> {
    None
}
