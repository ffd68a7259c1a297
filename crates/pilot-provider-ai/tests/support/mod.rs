//! A scriptable fake OpenAI-compatible server for the tests: an HTTP/1.1 listener on
//! 127.0.0.1:0 that records every request it receives (method, path, headers, body) and
//! answers each connection with the next reply of its script. It closes every connection after
//! one answer, so each request the client makes arrives on a fresh connection.

// Each test binary uses a different part of this module.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pilot_core::{Credential, CredentialKind, RunId, Secret, UserId};
use pilot_registry::{OutboundClient, OutboundConfig, ProviderContext};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// The key the tests store; it must never appear in an error, output or metadata.
pub(crate) const KEY: &str = "sk-test-4f1c9e2a7b3d";

/// One scripted answer.
#[derive(Debug, Clone)]
pub(crate) enum Reply {
    /// A complete HTTP response.
    Http {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    },
    /// These bytes, exactly, then the connection is closed.
    Raw(Vec<u8>),
    /// Read the request and never answer.
    Hang,
}

impl Reply {
    /// A JSON response.
    pub(crate) fn json(status: u16, body: Value) -> Self {
        Self::text(status, &body.to_string())
    }

    /// A response with a text body, labelled as JSON like most real servers do.
    pub(crate) fn text(status: u16, body: &str) -> Self {
        Self::Http {
            status,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: body.to_owned(),
        }
    }

    /// A chat completion answering `content`, with usage 12 + 5 = 17 tokens.
    pub(crate) fn completion(content: &str) -> Self {
        Self::json(
            200,
            json!({
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

    /// The same reply with one more header.
    pub(crate) fn with_header(mut self, name: &str, value: &str) -> Self {
        if let Self::Http { headers, .. } = &mut self {
            headers.push((name.into(), value.into()));
        }
        self
    }
}

/// A request as the server received it.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    pub(crate) method: String,
    pub(crate) path: String,
    /// Names lower-case.
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl Received {
    /// The first header called `name`.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

#[derive(Debug, Default)]
struct State {
    script: Mutex<VecDeque<Reply>>,
    received: Mutex<Vec<Received>>,
}

/// The running server; dropping it stops it and closes every connection it holds.
#[derive(Debug)]
pub(crate) struct FakeServer {
    addr: SocketAddr,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeServer {
    /// Starts a server that answers with `script`, one reply per connection, in order.
    pub(crate) async fn start(script: Vec<Reply>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            script: Mutex::new(script.into()),
            ..State::default()
        });
        let task = tokio::spawn(serve(listener, Arc::clone(&state)));
        Self { addr, state, task }
    }

    /// `http://127.0.0.1:PORT/v1`, the base URL the provider is configured with.
    pub(crate) fn base_url(&self) -> url::Url {
        url::Url::parse(&format!("http://{}/v1", self.addr)).unwrap()
    }

    /// `http://127.0.0.1:PORT`.
    pub(crate) fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request received so far.
    pub(crate) fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }
}

async fn serve(listener: TcpListener, state: Arc<State>) {
    // Connection tasks live in the set, so aborting this task aborts them too.
    let mut connections = JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        connections.spawn(answer(stream, Arc::clone(&state)));
    }
}

async fn answer(mut stream: TcpStream, state: Arc<State>) {
    let Some(request) = read_request(&mut stream).await else {
        return;
    };
    state.received.lock().unwrap().push(request);
    let reply = state.script.lock().unwrap().pop_front().unwrap_or_else(|| {
        Reply::json(
            500,
            json!({"error": {"message": "fake server: script exhausted"}}),
        )
    });
    let bytes = match reply {
        Reply::Hang => {
            // Hold the connection open without answering until the server is dropped.
            std::future::pending::<()>().await;
            return;
        }
        Reply::Raw(bytes) => bytes,
        Reply::Http {
            status,
            headers,
            body,
        } => {
            let mut head = format!(
                "HTTP/1.1 {status} Fake\r\nContent-Length: {}\r\nConnection: close\r\n",
                body.len()
            );
            for (name, value) in headers {
                head.push_str(&format!("{name}: {value}\r\n"));
            }
            head.push_str("\r\n");
            let mut bytes = head.into_bytes();
            bytes.extend_from_slice(body.as_bytes());
            bytes
        }
    };
    // The client may have given up already; that is not the server's failure.
    let _ = stream.write_all(&bytes).await;
    let _ = stream.shutdown().await;
}

/// Reads one request with a Content-Length body (what the outbound client sends).
async fn read_request(stream: &mut TcpStream) -> Option<Received> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buffer[..head_end].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap().split(' ');
    let method = request_line.next().unwrap().to_owned();
    let path = request_line.next().unwrap().to_owned();
    let headers: Vec<(String, String)> = lines
        .map(|line| {
            let (name, value) = line.split_once(':').unwrap();
            (name.trim().to_ascii_lowercase(), value.trim().to_owned())
        })
        .collect();
    assert!(
        !headers.iter().any(|(n, _)| n == "transfer-encoding"),
        "the fake server reads Content-Length bodies only"
    );
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map_or(0, |(_, v)| v.parse().unwrap());
    let mut body = buffer[head_end + 4..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some(Received {
        method,
        path,
        headers,
        body,
    })
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
