//! The worker's own `/metrics` listener: a few lines of HTTP/1.1 over tokio, because a worker
//! serves nothing else and should not carry a web framework's configuration. `GET /metrics`
//! answers the Prometheus text format (the queue depth sampled at scrape time, like the
//! server's); `GET /health` answers `ok`; anything else 404. One request per connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use pilot_api::Metrics;
use pilot_registry::Registry;
use pilot_storage::Database;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// The largest request head read.
const MAX_HEAD: usize = 8 * 1024;

/// A client gets this long to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Binds `addr` and serves in the background.
pub(crate) async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    db: Database,
    registry: Arc<Registry>,
) -> anyhow::Result<JoinHandle<()>> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} for /metrics"))?;
    let bound = listener.local_addr().unwrap_or(addr);
    tracing::info!(addr = %bound, "metrics listening on http://{bound}/metrics");
    Ok(tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (metrics, db, registry) = (metrics.clone(), db.clone(), registry.clone());
            tokio::spawn(async move {
                if let Err(e) = answer(stream, &metrics, &db, &registry).await {
                    tracing::debug!(error = %e, "metrics request failed");
                }
            });
        }
    }))
}

async fn answer(
    mut stream: TcpStream,
    metrics: &Metrics,
    db: &Database,
    registry: &Registry,
) -> std::io::Result<()> {
    let head = tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream))
        .await
        .map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::TimedOut, "request head too slow")
        })??;
    let mut parts = head.split_whitespace();
    let (method, path) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let (status, content_type, body) = match (method, path) {
        ("GET", "/metrics") => {
            if let Ok(info) = db.wake_info().await {
                metrics.set_queue_depth(info.queued);
            }
            metrics.sync_provider_panics(registry.panic_count());
            match metrics.encode() {
                Ok(text) => ("200 OK", "text/plain; version=0.0.4; charset=utf-8", text),
                Err(_) => (
                    "500 Internal Server Error",
                    "text/plain",
                    "encoding failed\n".to_owned(),
                ),
            }
        }
        ("GET", "/health") => ("200 OK", "text/plain", "ok\n".to_owned()),
        _ => ("404 Not Found", "text/plain", "not found\n".to_owned()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// Reads up to the end of the request head; returns its first line.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<String> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buffer.windows(4).any(|w| w == b"\r\n\r\n") {
        if buffer.len() > MAX_HEAD {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "request head too large",
            ));
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&buffer);
    Ok(text.lines().next().unwrap_or_default().to_owned())
}
