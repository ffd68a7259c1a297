//! The one guarded outbound HTTP client (four layers: URL preflight, a checking resolver, redirects by hand, no proxy):
//! (a) a URL preflight ([`check_url`]: http/https, no userinfo, IP literals classified after
//! unwrapping IPv4-mapped, NAT64 and 6to4 forms); (b) a resolver that refuses a name when any of
//! its addresses is blocked and pins the checked addresses; (c) redirects followed by hand, at
//! most `max_redirects`, every hop checked again and credential headers dropped when the origin
//! changes; (d) no proxy. Every provider sends through [`OutboundClient::send`].
//!
//! The client holds two reqwest clients, each built once and reused (connection pooling): the
//! guarded one for user-supplied URLs, and one for trusted requests (operator-configured base
//! URLs) that resolves without checking. They are separate so a connection pooled for a
//! trusted local model server can never be reused by a user's request to the same host.

mod address;
mod headers;
mod resolve;
mod status;
#[cfg(any(test, feature = "test-support"))]
pub mod testing;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use pilot_core::Secret;
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, LOCATION};
use url::{Origin, Url};

use crate::ProviderError;
use resolve::GuardedResolver;

pub use address::{check_ip, check_url, parse_allowlist};
pub use reqwest::Method;
pub use resolve::{Lookup, StaticLookup, SystemLookup};
pub use status::classify_status;

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

impl OutboundRequest {
    /// A request with no headers, no body, a 30 s budget, untrusted.
    pub fn new(method: Method, url: Url) -> Self {
        Self {
            method,
            url,
            headers: Vec::new(),
            credential_headers: Vec::new(),
            credential_origin: None,
            body: None,
            timeout: Duration::from_secs(30),
            trusted: false,
        }
    }
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

impl OutboundResponse {
    /// The first value of header `name` (give it lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
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
    /// The operator configuration (allowlist, TLS roots) cannot be used.
    #[error("invalid outbound configuration: {0}")]
    InvalidConfig(String),
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
    /// For user-supplied URLs: the resolver checks every address.
    guarded: reqwest::Client,
    /// For operator-configured URLs: resolves without checking.
    trusted: reqwest::Client,
}

impl OutboundClient {
    /// Builds the client with the system resolver.
    pub fn new(config: OutboundConfig) -> Result<Self, OutboundError> {
        Self::with_lookup(config, Arc::new(SystemLookup))
    }

    /// Builds the client with another resolver (tests use a [`StaticLookup`], so no test asks
    /// a real DNS server).
    pub fn with_lookup(
        config: OutboundConfig,
        lookup: Arc<dyn Lookup>,
    ) -> Result<Self, OutboundError> {
        let tls = tls_config()?;
        let guarded = GuardedResolver {
            lookup: lookup.clone(),
            allow: Some(config.allow.clone().into()),
        };
        let trusted = GuardedResolver {
            lookup,
            allow: None,
        };
        Ok(Self {
            guarded: build_client(&config, tls.clone(), guarded)?,
            trusted: build_client(&config, tls, trusted)?,
            config,
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &OutboundConfig {
        &self.config
    }

    /// Checks a user-supplied URL against the preflight and this client's allowlist (for
    /// validating a URL when it is saved; [`OutboundClient::send`] checks it again).
    pub fn check_url(&self, url: &Url) -> Result<(), OutboundError> {
        check_url(url, &self.config.allow)
    }

    /// Sends a request through the guard, following redirects by hand, and reads the body
    /// within the size cap, all within `request.timeout`.
    pub async fn send(&self, request: OutboundRequest) -> Result<OutboundResponse, OutboundError> {
        let budget = request.timeout;
        match tokio::time::timeout(budget, self.send_within_budget(request)).await {
            Ok(result) => result,
            Err(_) => Err(OutboundError::Timeout),
        }
    }

    async fn send_within_budget(
        &self,
        request: OutboundRequest,
    ) -> Result<OutboundResponse, OutboundError> {
        let OutboundRequest {
            mut method,
            mut url,
            headers,
            credential_headers,
            credential_origin,
            mut body,
            trusted,
            timeout: _,
        } = request;
        let mut plain = headers::plain_headers(&headers)?;
        let secrets = headers::secret_headers(&credential_headers)?;
        let credential_origin = match credential_origin {
            Some(origin) if !secrets.is_empty() => Some(parse_origin(&origin)?),
            _ => None,
        };
        let first_origin = url.origin();
        let client = if trusted {
            &self.trusted
        } else {
            &self.guarded
        };
        let mut redirects = 0;
        loop {
            if trusted {
                address::check_url_shape(&url)?;
            } else {
                check_url(&url, &self.config.allow)?;
            }
            let mut hop_headers = plain.clone();
            if credential_origin.as_ref() == Some(&url.origin()) {
                for (name, value) in &secrets {
                    hop_headers.insert(name.clone(), value.clone());
                }
            }
            let mut builder = client
                .request(method.clone(), url.clone())
                .headers(hop_headers);
            if let Some(body) = &body {
                builder = builder.body(body.clone());
            }
            let response = builder.send().await.map_err(transport_error)?;
            let status = response.status();
            let location = response.headers().get(LOCATION);
            let Some(location) = location.filter(|_| is_redirect(status)) else {
                return read_response(response, url, self.config.max_response_bytes).await;
            };
            if redirects == self.config.max_redirects {
                return Err(OutboundError::Redirect(format!(
                    "more than {} redirects",
                    self.config.max_redirects
                )));
            }
            let next = location
                .to_str()
                .ok()
                .and_then(|location| url.join(location).ok())
                .ok_or_else(|| {
                    OutboundError::Redirect("the Location header is not a URL".into())
                })?;
            if trusted && next.origin() != first_origin {
                return Err(OutboundError::Redirect(format!(
                    "a request to a configured base URL may not be redirected to another origin ({})",
                    next.origin().ascii_serialization()
                )));
            }
            if switches_to_get(status, &method) {
                method = Method::GET;
                body = None;
                remove_all(&mut plain, headers::BODY_HEADERS);
            }
            if next.origin() != url.origin() {
                remove_all(&mut plain, headers::SENSITIVE);
            }
            tracing::debug!(
                status = status.as_u16(),
                hop = redirects + 1,
                "following a redirect"
            );
            url = next;
            redirects += 1;
        }
    }
}

/// The rustls configuration: the ring provider and the platform's root certificates (no
/// process-wide provider is installed, so embedding programs keep their own choice).
fn tls_config() -> Result<rustls::ClientConfig, OutboundError> {
    use rustls_platform_verifier::BuilderVerifierExt;

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls_error = |e: rustls::Error| OutboundError::InvalidConfig(format!("TLS setup: {e}"));
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(tls_error)?
        .with_platform_verifier()
        .map_err(tls_error)?
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tls)
}

fn build_client(
    config: &OutboundConfig,
    tls: rustls::ClientConfig,
    resolver: GuardedResolver,
) -> Result<reqwest::Client, OutboundError> {
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .dns_resolver(resolver)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .connect_timeout(config.connect_timeout)
        .user_agent(concat!("pilot/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| {
            OutboundError::InvalidConfig(format!("building the HTTP client: {}", chain(&e)))
        })
}

/// Reads the response body chunk by chunk, refusing it once it passes `max` bytes.
async fn read_response(
    mut response: reqwest::Response,
    url: Url,
    max: usize,
) -> Result<OutboundResponse, OutboundError> {
    if response
        .content_length()
        .is_some_and(|len| len > max as u64)
    {
        return Err(OutboundError::TooLarge(max));
    }
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect();
    let capacity = response.content_length().map_or(0, |len| len as usize);
    let mut body = BytesMut::with_capacity(capacity);
    while let Some(chunk) = response.chunk().await.map_err(transport_error)? {
        if body.len() + chunk.len() > max {
            return Err(OutboundError::TooLarge(max));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(OutboundResponse {
        status,
        headers,
        body: body.freeze(),
        url,
    })
}

fn is_redirect(status: StatusCode) -> bool {
    matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308)
}

/// Whether a redirect turns the request into a body-less GET, as browsers do: 303 for every
/// method but HEAD, 301 and 302 for POST. 307 and 308 keep the method and the body.
fn switches_to_get(status: StatusCode, method: &Method) -> bool {
    match status.as_u16() {
        303 => *method != Method::HEAD && *method != Method::GET,
        301 | 302 => *method == Method::POST,
        _ => false,
    }
}

fn remove_all(headers: &mut HeaderMap, names: &[&str]) {
    for name in names {
        headers.remove(*name);
    }
}

/// Parses a credential's origin (`scheme://host:port`, a path is ignored).
fn parse_origin(text: &str) -> Result<Origin, OutboundError> {
    let url = Url::parse(text)
        .map_err(|_| OutboundError::InvalidUrl("the credential origin is not a URL".into()))?;
    address::check_url_shape(&url)?;
    Ok(url.origin())
}

/// Maps a reqwest error, recovering the resolver's own refusal from the error chain. The URL is
/// left out of the message.
fn transport_error(error: reqwest::Error) -> OutboundError {
    let mut source = std::error::Error::source(&error);
    while let Some(inner) = source {
        if let Some(own) = inner.downcast_ref::<OutboundError>() {
            return own.clone();
        }
        source = inner.source();
    }
    // A connect timeout is a connect failure; only the request's own budget is `Timeout`.
    let connect = error.is_connect();
    if error.is_timeout() && !connect {
        return OutboundError::Timeout;
    }
    let detail = chain(&error.without_url());
    if connect {
        OutboundError::Connect(detail)
    } else {
        OutboundError::Transport(detail)
    }
}

/// An error and its sources, joined with ": ", repeats left out.
fn chain(error: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current = Some(error);
    while let Some(e) = current {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        current = e.source();
    }
    parts.join(": ")
}
