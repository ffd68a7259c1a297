//! Serving the API over HTTP: binding, the access log, graceful shutdown.
//!
//! The access log records the matched route pattern (`/api/plans/{id}`) next to the path, and
//! for inbound webhooks it replaces the path with `/api/hooks/[redacted]`: the token in that
//! path is a credential and never reaches a log. Queries are not logged. Each answered request
//! is also counted in `pilot_http_requests_total` by method, pattern and status.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use actix_web::HttpMessage as _;
use actix_web::body::MessageBody;
use actix_web::dev::{ServerHandle, ServiceRequest, ServiceResponse};
use actix_web::middleware::{Next, from_fn};
use actix_web::web::Data;
use actix_web::{App, HttpServer};

use crate::AppState;

/// How to serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// The address to listen on (`127.0.0.1:8080`; port 0 picks a free port).
    pub bind: SocketAddr,
    /// HTTP worker threads; 0 means one per CPU core.
    pub workers: usize,
    /// How long a graceful shutdown waits for requests in flight.
    pub shutdown_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            workers: 0,
            shutdown_timeout: Duration::from_secs(30),
        }
    }
}

/// Serving failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The address could not be bound (in use, not permitted...).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The server stopped with an I/O error.
    #[error("the HTTP server failed: {0}")]
    Io(#[from] std::io::Error),
}

/// A server bound to its address, not yet serving.
pub struct BoundServer {
    server: actix_web::dev::Server,
    addr: SocketAddr,
    shutdown_timeout: Duration,
}

impl std::fmt::Debug for BoundServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoundServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// Binds the API's HTTP server: the route table, the state and the access log. Signals are
/// left to the caller, which passes a shutdown future to [`BoundServer::run`].
pub fn bind(state: AppState, config: &ServerConfig) -> Result<BoundServer, ServeError> {
    let data = Data::new(state);
    let mut server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .wrap(from_fn(access_log))
            .configure(crate::config)
    })
    .disable_signals()
    .shutdown_timeout(config.shutdown_timeout.as_secs());
    if config.workers > 0 {
        server = server.workers(config.workers);
    }
    let server = server
        .bind(config.bind)
        .map_err(|source| ServeError::Bind {
            addr: config.bind,
            source,
        })?;
    let addr = server.addrs().first().copied().unwrap_or(config.bind);
    Ok(BoundServer {
        server: server.run(),
        addr,
        shutdown_timeout: config.shutdown_timeout,
    })
}

impl BoundServer {
    /// The address actually bound (the free port when port 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `shutdown` completes, then stops gracefully: no new connections, requests
    /// in flight get up to the shutdown timeout to finish.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), ServeError> {
        let handle: ServerHandle = self.server.handle();
        let server = self.server;
        tokio::pin!(server);
        tokio::select! {
            result = &mut server => return result.map_err(ServeError::Io),
            () = shutdown => {
                tracing::info!(timeout_s = self.shutdown_timeout.as_secs(), "shutting down the HTTP server");
            }
        }
        // The server future carries out the stop: poll both together.
        let ((), result) = tokio::join!(handle.stop(true), server);
        result.map_err(ServeError::Io)
    }
}

/// The request path as the access log shows it. An inbound webhook's token is a credential, so
/// any path under `/api/hooks/` is logged as `/api/hooks/[redacted]`, whether or not it matched a
/// route (a trailing slash or an extra segment must not leak it either), and any segment that
/// looks like a webhook or API token pasted into the wrong URL is replaced by `[redacted]`.
fn loggable_path(path: &str) -> String {
    let trimmed = path.trim_start_matches('/');
    if trimmed.starts_with("api/hooks/") {
        return "/api/hooks/[redacted]".to_owned();
    }
    let looks_like_token = |segment: &str| {
        let lower = segment.to_ascii_lowercase();
        lower.starts_with(pilot_storage::HOOK_TOKEN_PREFIX)
            || lower.starts_with(pilot_storage::TOKEN_PREFIX)
    };
    path.split('/')
        .map(|segment| {
            if looks_like_token(segment) {
                "[redacted]"
            } else {
                segment
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// The access log and request counter.
async fn access_log(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let method = req.method().as_str().to_owned();
    let pattern = req.match_pattern();
    let path = loggable_path(req.path());
    let state = req.app_data::<Data<AppState>>().cloned();
    let mut result = next.call(req).await;
    // An authenticated request's place in its user's budget (the Caller extractor left it).
    if let Ok(res) = &mut result {
        let decision = res
            .request()
            .extensions()
            .get::<crate::throttle::Decision>()
            .copied();
        if let Some(d) = decision.filter(|d| d.limit > 0) {
            let headers = res.headers_mut();
            let values: [(&'static str, String); 3] = [
                ("ratelimit-limit", d.limit.to_string()),
                ("ratelimit-remaining", d.remaining.to_string()),
                ("ratelimit-reset", d.reset.to_string()),
            ];
            for (name, value) in values {
                if let Ok(value) = actix_web::http::header::HeaderValue::from_str(&value) {
                    headers.insert(
                        actix_web::http::header::HeaderName::from_static(name),
                        value,
                    );
                }
            }
        }
    }
    let status = match &result {
        Ok(res) => res.status().as_u16(),
        Err(e) => e.as_response_error().status_code().as_u16(),
    };
    let route = pattern.as_deref().unwrap_or("unmatched");
    if let Some(state) = state {
        state.metrics().record_request(&method, route, status);
    }
    let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    tracing::info!(target: "pilot_api::access", %method, %path, %route, status, latency_ms, "request");
    result
}

#[cfg(test)]
mod tests {
    use super::loggable_path;

    #[test]
    fn tokens_never_reach_the_access_log() {
        let check = |path: &str, expect: &str| assert_eq!(loggable_path(path), expect, "{path}");
        check("/api/plans/0f8fad5b", "/api/plans/0f8fad5b");
        check("/api/hooks/hook_abc", "/api/hooks/[redacted]");
        // Unmatched forms of a hook path: a trailing slash, an extra segment, doubled slashes.
        check("/api/hooks/hook_abc/", "/api/hooks/[redacted]");
        check("/api/hooks/abc/x", "/api/hooks/[redacted]");
        check("//api/hooks/abc", "/api/hooks/[redacted]");
        // A token pasted into another URL.
        check("/api/plans/hook_abc", "/api/plans/[redacted]");
        check("/api/runs/PILOT_abc/cancel", "/api/runs/[redacted]/cancel");
    }
}
