//! The webhook sink: a fast HTTP/1.1 server on 127.0.0.1 that answers every request with a
//! small JSON body and counts what it received.
//!
//! It is the far end of the benchmark plan's `webhook.post` step and part of the correctness
//! counters: every call is counted, and a second call carrying an `Idempotency-Key` already
//! seen is a duplicate (the same step of the same run delivered twice). It runs inside the
//! xtask process on the load generator's runtime, so its cost is visible, and small.

use std::collections::HashSet;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpListener, TcpStream};

use super::http::{parse_chunked, parse_head, read_more};

const ANSWER: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"ok\":true}";

/// What the sink has seen so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct SinkCounts {
    /// Requests answered.
    pub(crate) calls: u64,
    /// Requests whose `Idempotency-Key` had been seen before.
    pub(crate) duplicates: u64,
    /// Requests that were not HTTP the sink could read.
    pub(crate) malformed: u64,
}

impl SinkCounts {
    /// The counts since `earlier`.
    pub(crate) fn since(self, earlier: SinkCounts) -> SinkCounts {
        SinkCounts {
            calls: self.calls - earlier.calls,
            duplicates: self.duplicates - earlier.duplicates,
            malformed: self.malformed - earlier.malformed,
        }
    }
}

#[derive(Default)]
struct Counters {
    calls: AtomicU64,
    duplicates: AtomicU64,
    malformed: AtomicU64,
    keys: Mutex<HashSet<String>>,
}

/// A running sink.
pub(crate) struct Sink {
    addr: SocketAddr,
    counters: Arc<Counters>,
}

impl Sink {
    /// Starts a sink on a free port of 127.0.0.1, served by the current runtime.
    pub(crate) async fn start() -> io::Result<Sink> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let counters = Arc::new(Counters::default());
        let shared = counters.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let counters = shared.clone();
                tokio::spawn(async move {
                    if serve(stream, &counters).await.is_err() {
                        counters.malformed.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
        });
        Ok(Sink { addr, counters })
    }

    /// The sink's address.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A URL on the sink.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The counts so far.
    pub(crate) fn counts(&self) -> SinkCounts {
        SinkCounts {
            calls: self.counters.calls.load(Ordering::Relaxed),
            duplicates: self.counters.duplicates.load(Ordering::Relaxed),
            malformed: self.counters.malformed.load(Ordering::Relaxed),
        }
    }
}

/// Serves one connection until the peer closes it. A protocol error is an `Err`; a clean close
/// between requests is `Ok`.
async fn serve(mut stream: TcpStream, counters: &Counters) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut buf = Vec::with_capacity(4096);
    loop {
        let head = loop {
            if let Some(head) = parse_head(&buf, false)? {
                break head;
            }
            match read_more(&mut stream, &mut buf).await {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && buf.is_empty() => {
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset && buf.is_empty() => {
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
        };
        let used = if head.chunked {
            loop {
                if let Some((_, used)) = parse_chunked(&buf[head.len..])? {
                    break head.len + used;
                }
                read_more(&mut stream, &mut buf).await?;
            }
        } else {
            let length = head.content_length.unwrap_or(0);
            while buf.len() < head.len + length {
                read_more(&mut stream, &mut buf).await?;
            }
            head.len + length
        };
        buf.drain(..used);
        if let Some(key) = head.idempotency_key {
            let fresh = counters
                .keys
                .lock()
                .map(|mut keys| keys.insert(key))
                .unwrap_or(true);
            if !fresh {
                counters.duplicates.fetch_add(1, Ordering::Relaxed);
            }
        }
        counters.calls.fetch_add(1, Ordering::Relaxed);
        stream.write_all(ANSWER).await?;
        if head.close {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::http::{Conn, request};
    use super::*;

    fn keyed(key: &str) -> Vec<u8> {
        let body = b"{\"a\":1}";
        let mut out = format!(
            "POST /hook HTTP/1.1\r\nHost: x\r\nIdempotency-Key: {key}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        out.extend_from_slice(body);
        out
    }

    #[tokio::test]
    async fn counts_calls_and_duplicate_keys() {
        let sink = Sink::start().await.unwrap();
        let mut conn = Conn::new(sink.addr());
        for key in ["r1:w", "r2:w", "r1:w"] {
            let response = conn.send(&keyed(key)).await.unwrap();
            assert_eq!(
                (response.status, response.text().as_str()),
                (200, "{\"ok\":true}")
            );
        }
        // Requests without a key are counted but never duplicates.
        conn.send(&request("POST", "/hook", None, Some(b"{}")))
            .await
            .unwrap();
        conn.send(&request("GET", "/", None, None)).await.unwrap();
        let before = SinkCounts {
            calls: 1,
            duplicates: 0,
            malformed: 0,
        };
        assert_eq!(
            sink.counts(),
            SinkCounts {
                calls: 5,
                duplicates: 1,
                malformed: 0
            }
        );
        assert_eq!(
            sink.counts().since(before),
            SinkCounts {
                calls: 4,
                duplicates: 1,
                malformed: 0
            }
        );
    }

    #[tokio::test]
    async fn a_garbled_request_is_counted_as_malformed() {
        let sink = Sink::start().await.unwrap();
        let mut stream = TcpStream::connect(sink.addr()).await.unwrap();
        stream
            .write_all(b"POST / HTTP/1.1\r\nno colon here\r\n\r\n")
            .await
            .unwrap();
        let mut conn = Conn::new(sink.addr());
        conn.send(&request("GET", "/", None, None)).await.unwrap();
        // The garbled connection's task may finish after the good request: wait for it.
        for _ in 0..100 {
            if sink.counts().malformed == 1 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(
            sink.counts(),
            SinkCounts {
                calls: 1,
                duplicates: 0,
                malformed: 1
            }
        );
    }
}
