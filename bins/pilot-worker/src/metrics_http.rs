//! The worker's own `/metrics` listener, served by hyper (already in the tree under the
//! outbound HTTP client), because a worker serves nothing else and should not carry the API's
//! web framework. `GET /metrics` answers the Prometheus text format (the queue depth sampled at
//! scrape time, like the server's); `GET /health` answers `ok`; anything else 404.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::CONTENT_TYPE;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use pilot_registry::Registry;
use pilot_storage::Database;
use pilot_telemetry::Metrics;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A client gets this long to send its request head.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// What a scrape needs: the metrics, and what is sampled when one arrives.
struct Scrape {
    metrics: Arc<Metrics>,
    db: Database,
    registry: Arc<Registry>,
}

/// Binds `addr` and serves in the background; returns the bound address and the task.
pub(crate) async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    db: Database,
    registry: Arc<Registry>,
) -> anyhow::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} for /metrics"))?;
    let bound = listener.local_addr().unwrap_or(addr);
    tracing::info!(addr = %bound, "metrics listening on http://{bound}/metrics");
    let scrape = Arc::new(Scrape {
        metrics,
        db,
        registry,
    });
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let scrape = scrape.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request| {
                    let scrape = scrape.clone();
                    async move { Ok::<_, Infallible>(scrape.answer(&request).await) }
                });
                let connection = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(READ_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), service);
                if let Err(e) = connection.await {
                    tracing::debug!(error = %e, "metrics connection failed");
                }
            });
        }
    });
    Ok((bound, task))
}

impl Scrape {
    async fn answer(&self, request: &Request<Incoming>) -> Response<Full<Bytes>> {
        match (request.method(), request.uri().path()) {
            (&Method::GET, "/metrics") => {
                if let Ok(info) = self.db.wake_info().await {
                    self.metrics.set_queue_depth(info.queued);
                }
                self.metrics
                    .sync_provider_panics(self.registry.panic_count());
                match self.metrics.encode() {
                    Ok(text) => reply(
                        StatusCode::OK,
                        "text/plain; version=0.0.4; charset=utf-8",
                        text,
                    ),
                    Err(_) => reply(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "text/plain",
                        "encoding failed\n".to_owned(),
                    ),
                }
            }
            (&Method::GET, "/health") => reply(StatusCode::OK, "text/plain", "ok\n".to_owned()),
            _ => reply(
                StatusCode::NOT_FOUND,
                "text/plain",
                "not found\n".to_owned(),
            ),
        }
    }
}

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    response
}

#[cfg(test)]
mod tests {
    use pilot_storage::testing::TestDb;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nhost: worker\r\nconnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        answer
    }

    #[tokio::test]
    async fn metrics_health_and_anything_else() {
        let test_db = TestDb::sqlite().await;
        let metrics = Arc::new(Metrics::new());
        metrics.record_run_finished("succeeded");
        let local = SocketAddr::from(([127, 0, 0, 1], 0));
        let (addr, task) = serve(
            local,
            metrics,
            test_db.db().clone(),
            Arc::new(Registry::new()),
        )
        .await
        .unwrap();

        let scrape = get(addr, "/metrics").await;
        assert!(scrape.starts_with("HTTP/1.1 200 OK"), "{scrape}");
        assert!(scrape.contains("text/plain; version=0.0.4"), "{scrape}");
        assert!(
            scrape.contains("pilot_runs_finished_total{status=\"succeeded\"} 1"),
            "{scrape}"
        );
        assert!(scrape.contains("pilot_queue_depth 0"), "{scrape}");

        let health = get(addr, "/health").await;
        assert!(
            health.starts_with("HTTP/1.1 200 OK") && health.ends_with("ok\n"),
            "{health}"
        );
        let other = get(addr, "/api/runs").await;
        assert!(other.starts_with("HTTP/1.1 404"), "{other}");
        task.abort();
    }
}
