//! A scriptable HTTP/1.1 server on a loopback address, for the tests of this crate and of the
//! provider crates (feature `test-support`). It answers requests with a script of [`Reply`]s
//! (the last one repeats; a test may replace the script at any time), records every request
//! and counts accepted connections, so a test can prove a guarded request never reached it. It
//! can also misbehave on purpose: drip a body slowly, reset the connection mid-body, never
//! answer, or send a body without a length.
//!
//! It binds only what it is given (127.0.0.1:0 by default): tests never leave 127.0.0.0/8.

use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// The largest request head the server reads.
const MAX_HEAD: usize = 64 * 1024;

/// One scripted answer.
#[derive(Debug, Clone)]
pub struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    behaviour: Behaviour,
    /// Answered only once this gate is open.
    gate: Option<ReplyGate>,
}

/// Holds back the replies made with [`Reply::after`] until [`ReplyGate::open`] is called, so a
/// test decides when a request in flight gets its answer. Clones share one gate.
#[derive(Debug, Clone)]
pub struct ReplyGate(Arc<tokio::sync::Semaphore>);

impl Default for ReplyGate {
    fn default() -> Self {
        Self::new()
    }
}

impl ReplyGate {
    /// A closed gate.
    pub fn new() -> Self {
        Self(Arc::new(tokio::sync::Semaphore::new(0)))
    }

    /// Opens the gate: every held reply, and every later one, is answered.
    pub fn open(&self) {
        self.0.close();
    }

    async fn wait(&self) {
        // A closed semaphore fails every acquire at once: that is the open gate.
        let _ = self.0.acquire().await;
    }
}

#[derive(Debug, Clone)]
enum Behaviour {
    /// Status, headers with Content-Length, body.
    Complete,
    /// The body in `chunk`-byte pieces, `pause` apart.
    Drip { chunk: usize, pause: Duration },
    /// Content-Length announces the whole body, but the connection is reset after `sent` bytes.
    ResetAfter { sent: usize },
    /// No Content-Length: the body ends when the connection closes.
    UntilClose,
    /// Reads the request and never answers.
    Hang,
}

impl Reply {
    /// An empty answer with `status`.
    pub fn status(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            behaviour: Behaviour::Complete,
            gate: None,
        }
    }

    /// A JSON answer.
    pub fn json(status: u16, body: &serde_json::Value) -> Self {
        Self::status(status)
            .header("content-type", "application/json")
            .body(body.to_string())
    }

    /// A plain-text answer.
    pub fn text(status: u16, body: &str) -> Self {
        Self::status(status)
            .header("content-type", "text/plain; charset=utf-8")
            .body(body)
    }

    /// A redirect to `location`.
    pub fn redirect(status: u16, location: &str) -> Self {
        Self::status(status).header("location", location)
    }

    /// Never answers (the client's timeout must fire).
    pub fn hang() -> Self {
        Self {
            behaviour: Behaviour::Hang,
            ..Self::status(200)
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Sends the body `chunk` bytes at a time, `pause` apart.
    pub fn drip(mut self, chunk: usize, pause: Duration) -> Self {
        self.behaviour = Behaviour::Drip {
            chunk: chunk.max(1),
            pause,
        };
        self
    }

    /// Announces the whole body, sends `sent` bytes of it, then resets the connection.
    pub fn reset_after(mut self, sent: usize) -> Self {
        self.behaviour = Behaviour::ResetAfter { sent };
        self
    }

    /// Answers only once `gate` is open.
    pub fn after(mut self, gate: &ReplyGate) -> Self {
        self.gate = Some(gate.clone());
        self
    }

    /// Sends no Content-Length and closes the connection after the body.
    pub fn until_close(mut self) -> Self {
        self.behaviour = Behaviour::UntilClose;
        self
    }
}

/// One request as the server received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// The method.
    pub method: String,
    /// The request target (path and query).
    pub target: String,
    /// Headers in arrival order, names lower-case.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl RecordedRequest {
    /// The first value of header `name` (lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON (`null` when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// A running fake server; it stops when dropped.
#[derive(Debug)]
pub struct FakeServer {
    addr: SocketAddr,
    state: Arc<State>,
    task: JoinHandle<()>,
}

#[derive(Debug, Default)]
struct State {
    script: Mutex<VecDeque<Reply>>,
    requests: Mutex<Vec<RecordedRequest>>,
    connections: AtomicUsize,
}

impl FakeServer {
    /// Starts a server on 127.0.0.1 at a free port.
    pub async fn start(script: Vec<Reply>) -> io::Result<Self> {
        Self::start_on(IpAddr::V4(Ipv4Addr::LOCALHOST), script).await
    }

    /// Starts a server on `ip` (a loopback address) at a free port.
    pub async fn start_on(ip: IpAddr, script: Vec<Reply>) -> io::Result<Self> {
        let listener = TcpListener::bind(SocketAddr::new(ip, 0)).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            script: Mutex::new(script.into()),
            ..State::default()
        });
        let task = tokio::spawn(accept_loop(listener, state.clone()));
        Ok(Self { addr, state, task })
    }

    /// Replaces what is left of the script with `script`, for a test that scripts the server
    /// after starting it (or scripts it again between requests).
    pub fn set_script(&self, script: Vec<Reply>) {
        *self
            .state
            .script
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = script.into();
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr><path>`.
    pub fn url(&self, path: &str) -> url::Url {
        let text = format!("http://{}{path}", self.addr);
        url::Url::parse(&text).unwrap_or_else(|e| panic!("bad test URL {text}: {e}"))
    }

    /// `http://<addr>` (an origin string).
    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// How many connections were accepted so far.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<State>) {
    // Connection tasks live in the set, so aborting this task drops (and aborts) them all.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                state.connections.fetch_add(1, Ordering::SeqCst);
                connections.spawn(serve(stream, state.clone()));
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Serves requests on one connection until the client closes it or a reply ends it.
async fn serve(mut stream: TcpStream, state: Arc<State>) {
    let mut buffer = Vec::new();
    loop {
        let Some(request) = read_request(&mut stream, &mut buffer).await else {
            return;
        };
        state
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(request);
        let reply = {
            let mut script = state.script.lock().unwrap_or_else(PoisonError::into_inner);
            if script.len() > 1 {
                script.pop_front()
            } else {
                script.front().cloned()
            }
        };
        let reply = reply.unwrap_or_else(|| Reply::text(500, "the fake server's script is empty"));
        if !write_reply(&mut stream, &reply).await {
            return;
        }
    }
}

/// Reads one request (head and Content-Length body); `None` when the connection ends.
async fn read_request(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Option<RecordedRequest> {
    let head_end = loop {
        if let Some(pos) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos;
        }
        if buffer.len() > MAX_HEAD || !read_more(stream, buffer).await {
            return None;
        }
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let method = request_line.next()?.to_owned();
    let target = request_line.next()?.to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0);
    let body_start = head_end + 4;
    while buffer.len() < body_start + length {
        if !read_more(stream, buffer).await {
            return None;
        }
    }
    let body = buffer[body_start..body_start + length].to_vec();
    buffer.drain(..body_start + length);
    Some(RecordedRequest {
        method,
        target,
        headers,
        body,
    })
}

async fn read_more(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 8192];
    match stream.read(&mut chunk).await {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buffer.extend_from_slice(&chunk[..n]);
            true
        }
    }
}

/// Writes `reply`; `false` when the connection must not serve another request.
async fn write_reply(stream: &mut TcpStream, reply: &Reply) -> bool {
    if let Some(gate) = &reply.gate {
        gate.wait().await;
    }
    if let Behaviour::Hang = reply.behaviour {
        std::future::pending::<()>().await;
    }
    let reason = reqwest::StatusCode::from_u16(reply.status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Unknown");
    let mut head = format!("HTTP/1.1 {} {reason}\r\n", reply.status);
    for (name, value) in &reply.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    match reply.behaviour {
        Behaviour::UntilClose => head.push_str("connection: close\r\n"),
        _ => head.push_str(&format!("content-length: {}\r\n", reply.body.len())),
    }
    head.push_str("\r\n");
    if stream.write_all(head.as_bytes()).await.is_err() {
        return false;
    }
    let result = match &reply.behaviour {
        Behaviour::Complete | Behaviour::Hang => stream.write_all(&reply.body).await,
        Behaviour::UntilClose => {
            let _ = stream.write_all(&reply.body).await;
            let _ = stream.shutdown().await;
            return false;
        }
        Behaviour::Drip { chunk, pause } => {
            for piece in reply.body.chunks(*chunk) {
                if stream.write_all(piece).await.is_err() || stream.flush().await.is_err() {
                    return false;
                }
                tokio::time::sleep(*pause).await;
            }
            Ok(())
        }
        Behaviour::ResetAfter { sent } => {
            let _ = stream
                .write_all(&reply.body[..(*sent).min(reply.body.len())])
                .await;
            let _ = stream.flush().await;
            // A zero linger makes the close send RST instead of FIN.
            let _ = stream.set_zero_linger();
            return false;
        }
    };
    result.is_ok()
}
