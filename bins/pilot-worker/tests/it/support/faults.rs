//! Fault injectors of the `faults` tests, beside the shared helpers of `support`: a TCP proxy in
//! front of PostgreSQL that can cut every connection and refuse new ones (a database restart or
//! a network cut, as the worker sees it), an HTTP server that holds chosen paths until told and
//! records every call with its `Idempotency-Key` (the ledger), and this test binary started
//! again as a child process playing a server. Everything listens on 127.0.0.1 and connects only
//! to loopback addresses.

use std::collections::HashSet;
use std::io::{BufRead as _, BufReader, Read as _};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use crate::support::wait_for;

// ---- TCP proxy -------------------------------------------------------------------------------

/// A TCP proxy on 127.0.0.1 forwarding to a loopback `upstream`. [`TcpProxy::cut`] resets every
/// proxied connection and closes the listening socket (new connections are refused);
/// [`TcpProxy::restore`] listens again on the same port.
pub(crate) struct TcpProxy {
    addr: SocketAddr,
    up: watch::Sender<bool>,
    /// Counts completed phase changes (bound after a restore, everything closed after a cut).
    phase: watch::Receiver<u64>,
    accepted: Arc<Mutex<usize>>,
    task: JoinHandle<()>,
}

impl TcpProxy {
    /// Starts forwarding to `upstream`, which must be a loopback address.
    pub(crate) async fn start(upstream: SocketAddr) -> Self {
        assert!(
            upstream.ip().is_loopback(),
            "the proxy forwards only to loopback addresses, not {upstream}"
        );
        let listener = bind_reusable("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let (up, up_rx) = watch::channel(true);
        let (phase_tx, phase) = watch::channel(0u64);
        let accepted = Arc::new(Mutex::new(0));
        let task = tokio::spawn(proxy_loop(
            listener,
            addr,
            upstream,
            up_rx,
            phase_tx,
            accepted.clone(),
        ));
        let mut phase = phase;
        phase.wait_for(|p| *p >= 1).await.unwrap();
        Self {
            addr,
            up,
            phase,
            accepted,
            task,
        }
    }

    /// Where clients connect.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many client connections were accepted so far.
    pub(crate) fn accepted(&self) -> usize {
        *self.accepted.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Resets every proxied connection (both sides) and stops listening; returns once done.
    pub(crate) async fn cut(&mut self) {
        self.change(false).await;
    }

    /// Listens again on the same port; returns once bound.
    pub(crate) async fn restore(&mut self) {
        self.change(true).await;
    }

    async fn change(&mut self, up: bool) {
        let before = *self.phase.borrow_and_update();
        self.up.send_replace(up);
        tokio::time::timeout(
            Duration::from_secs(30),
            self.phase.wait_for(|p| *p > before),
        )
        .await
        .expect("the proxy did not change state within 30 s")
        .unwrap();
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A listener with SO_REUSEADDR, so the port can be bound again right after it was closed.
fn bind_reusable(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(128)
}

async fn proxy_loop(
    first: TcpListener,
    addr: SocketAddr,
    upstream: SocketAddr,
    mut up: watch::Receiver<bool>,
    phase: watch::Sender<u64>,
    accepted: Arc<Mutex<usize>>,
) {
    let mut listener = Some(first);
    loop {
        let current = match listener.take() {
            Some(l) => l,
            None => {
                // Restoring: the port was ours a moment ago; retry while the kernel frees it.
                let mut tries = 0;
                loop {
                    match bind_reusable(addr) {
                        Ok(l) => break l,
                        Err(e) => {
                            tries += 1;
                            assert!(tries < 100, "cannot listen on {addr} again: {e}");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
            }
        };
        phase.send_modify(|p| *p += 1);
        let mut pipes = JoinSet::new();
        loop {
            tokio::select! {
                got = current.accept() => {
                    let Ok((client, _)) = got else { continue };
                    *accepted.lock().unwrap_or_else(PoisonError::into_inner) += 1;
                    pipes.spawn(pipe(client, upstream));
                }
                _ = up.wait_for(|u| !*u) => break,
                Some(_) = pipes.join_next(), if !pipes.is_empty() => {}
            }
        }
        // The cut: no more listening, every connection reset.
        drop(current);
        pipes.shutdown().await;
        phase.send_modify(|p| *p += 1);
        if up.wait_for(|u| *u).await.is_err() {
            return;
        }
    }
}

/// Copies bytes both ways until either side closes. Zero linger: when the task is aborted (a
/// cut), both sockets are reset rather than closed politely.
async fn pipe(mut client: TcpStream, upstream: SocketAddr) {
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = client.set_zero_linger();
    let _ = server.set_zero_linger();
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
}

/// The `host:port` a PostgreSQL URL points at (port 5432 when it names none).
pub(crate) fn postgres_addr(url: &str) -> SocketAddr {
    let parsed = url::Url::parse(url).unwrap();
    let host = parsed.host_str().unwrap();
    let port = parsed.port().unwrap_or(5432);
    let ip: std::net::IpAddr = if host == "localhost" {
        std::net::Ipv4Addr::LOCALHOST.into()
    } else {
        host.parse()
            .expect("the test database URL names an IP address")
    };
    SocketAddr::new(ip, port)
}

/// `url` pointed at `addr` instead of its own host and port.
pub(crate) fn via(url: &str, addr: SocketAddr) -> String {
    let mut parsed = url::Url::parse(url).unwrap();
    parsed.set_ip_host(addr.ip()).unwrap();
    parsed.set_port(Some(addr.port())).unwrap();
    parsed.to_string()
}

// ---- holding HTTP server ---------------------------------------------------------------------

/// One call the [`HoldServer`] received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Call {
    /// Its number, from 1, in arrival order (the answer's body is `{"call": n}`).
    pub(crate) n: usize,
    /// The request target.
    pub(crate) path: String,
    /// The `Idempotency-Key` header ("" when absent).
    pub(crate) key: String,
    /// Whether the whole answer was written to the connection.
    pub(crate) answered: bool,
}

/// An HTTP/1.1 server answering every request `200 {"call": n}`, except that requests to a
/// held path wait until the path is released. It records every call in arrival order.
pub(crate) struct HoldServer {
    addr: SocketAddr,
    state: Arc<HoldState>,
    task: JoinHandle<()>,
}

struct HoldState {
    calls: Mutex<Vec<Call>>,
    held: Mutex<HashSet<String>>,
    /// Bumped whenever a path is released.
    released: watch::Sender<u64>,
}

impl HoldServer {
    /// Starts on 127.0.0.1 at a free port.
    pub(crate) async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(HoldState {
            calls: Mutex::new(Vec::new()),
            held: Mutex::new(HashSet::new()),
            released: watch::channel(0).0,
        });
        let task = tokio::spawn(hold_accept(listener, state.clone()));
        Self { addr, state, task }
    }

    /// `http://<addr><path>`.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// From now on, requests to `path` wait for [`HoldServer::release`].
    pub(crate) fn hold(&self, path: &str) {
        self.state
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(path.to_owned());
    }

    /// Answers the waiting requests to `path`, and later ones at once.
    pub(crate) fn release(&self, path: &str) {
        self.state
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(path);
        self.state.released.send_modify(|n| *n += 1);
    }

    /// Every call so far, in arrival order.
    pub(crate) fn calls(&self) -> Vec<Call> {
        self.state
            .calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The calls to `path`.
    pub(crate) fn calls_to(&self, path: &str) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.path == path)
            .collect()
    }

    /// Waits until `path` has received `n` calls.
    pub(crate) async fn wait_calls(&self, path: &str, n: usize) {
        wait_for(
            &format!("{n} call(s) to {path}"),
            Duration::from_secs(30),
            || async { (self.calls_to(path).len() >= n).then_some(()) },
        )
        .await;
    }

    /// Waits until `n` calls to `path` were answered.
    pub(crate) async fn wait_answered(&self, path: &str, n: usize) {
        wait_for(
            &format!("{n} answer(s) to {path}"),
            Duration::from_secs(30),
            || async {
                let answered = self.calls_to(path).iter().filter(|c| c.answered).count();
                (answered >= n).then_some(())
            },
        )
        .await;
    }
}

impl Drop for HoldServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn hold_accept(listener: TcpListener, state: Arc<HoldState>) {
    // Connection tasks live in the set: aborting this task aborts them all.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            got = listener.accept() => {
                let Ok((stream, _)) = got else { continue };
                connections.spawn(hold_serve(stream, state.clone()));
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn hold_serve(mut stream: TcpStream, state: Arc<HoldState>) {
    let mut buffer = Vec::new();
    loop {
        let Some((path, key)) = read_head_and_body(&mut stream, &mut buffer).await else {
            return;
        };
        let n = {
            let mut calls = state.calls.lock().unwrap_or_else(PoisonError::into_inner);
            let n = calls.len() + 1;
            calls.push(Call {
                n,
                path: path.clone(),
                key,
                answered: false,
            });
            calls.len()
        };
        let mut released = state.released.subscribe();
        loop {
            let held = state
                .held
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .contains(&path);
            if !held {
                break;
            }
            if released.changed().await.is_err() {
                return;
            }
        }
        let body = format!("{{\"call\":{n}}}");
        let answer = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        if stream.write_all(answer.as_bytes()).await.is_err() || stream.flush().await.is_err() {
            return;
        }
        if let Some(call) = state
            .calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(n - 1)
        {
            call.answered = true;
        }
    }
}

/// Reads one request; answers its target and `Idempotency-Key`, `None` when the connection ends.
async fn read_head_and_body(
    stream: &mut TcpStream,
    buffer: &mut Vec<u8>,
) -> Option<(String, String)> {
    let head_end = loop {
        if let Some(pos) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos;
        }
        if buffer.len() > 64 * 1024 || !read_more(stream, buffer).await {
            return None;
        }
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let path = lines.next()?.split(' ').nth(1)?.to_owned();
    let mut key = String::new();
    let mut length = 0usize;
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            match name.trim().to_ascii_lowercase().as_str() {
                "idempotency-key" => value.trim().clone_into(&mut key),
                "content-length" => length = value.trim().parse().unwrap_or(0),
                _ => {}
            }
        }
    }
    let end = head_end + 4 + length;
    while buffer.len() < end {
        if !read_more(stream, buffer).await {
            return None;
        }
    }
    buffer.drain(..end);
    Some((path, key))
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

// ---- this test binary as a child process -----------------------------------------------------

/// This test binary run again as a child executing one test (`--exact`) with `env` set; the
/// test sees the variables and plays a server instead, printing `LISTENING <addr>` once bound.
/// Its stderr goes to a file printed when the test fails; it is killed (SIGKILL) when dropped.
pub(crate) struct SelfChild {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl SelfChild {
    /// Starts the child and waits (30 s at most) for its address.
    pub(crate) async fn start(test: &str, env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("child.log");
        let mut command = Command::new(std::env::current_exe().unwrap());
        command
            .args(["--exact", test, "--nocapture", "--test-threads", "1"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap());
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel();
        // libtest prints the test's name first, on the same line. The rest of stdout is read
        // and dropped, so the child never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut tx = Some(tx);
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 0 {
                if let Some((_, addr)) = line.split_once("LISTENING ")
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(addr.trim().to_owned());
                }
                line.clear();
            }
        });
        let addr = match tokio::time::timeout(Duration::from_secs(30), rx).await {
            Ok(Ok(addr)) => addr.parse().unwrap(),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the child did not start within 30 s; its log:\n{}",
                    read_log(&log)
                );
            }
        };
        Self {
            child,
            addr,
            log,
            _dir: dir,
        }
    }

    /// Where the child listens.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// SIGKILL, and waits for the process to be gone.
    pub(crate) fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Whether it still runs.
    pub(crate) fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// The child's log so far.
    pub(crate) fn log(&self) -> String {
        read_log(&self.log)
    }
}

impl Drop for SelfChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- log of the child server ----\n{}", self.log());
        }
    }
}

fn read_log(path: &std::path::Path) -> String {
    let mut text = String::new();
    if let Ok(mut file) = std::fs::File::open(path) {
        let _ = file.read_to_string(&mut text);
    }
    text
}

/// One `POST` with `connection: close`; the status and body, or `None` when the connection
/// failed or the answer was cut short (the server died mid-answer).
pub(crate) async fn post(
    addr: SocketAddr,
    path: &str,
    token: &str,
    body: &str,
) -> Option<(u16, String)> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        let request = format!(
            "POST {path} HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {token}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.ok()?;
        let text = String::from_utf8(response).ok()?;
        let (head, body) = text.split_once("\r\n\r\n")?;
        let status: u16 = head.split_whitespace().nth(1)?.parse().ok()?;
        let length: usize = head
            .split("\r\n")
            .filter_map(|l| l.split_once(':'))
            .find(|(n, _)| n.trim().eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.trim().parse().ok())?;
        (body.len() == length).then(|| (status, body.to_owned()))
    };
    tokio::time::timeout(Duration::from_secs(15), exchange)
        .await
        .ok()
        .flatten()
}

/// `PRAGMA integrity_check` on the SQLite file at `path`, with the `sqlite3` shell (or Python's
/// sqlite3 module): its answer, or `None` (after a loud SKIPPED line) when neither is installed;
/// under `CI=true` a missing tool fails instead.
#[allow(
    clippy::disallowed_methods,
    reason = "reads CI like the storage test helpers"
)]
pub(crate) fn integrity_check(path: &std::path::Path) -> Option<String> {
    // A busy timeout: a connection closing elsewhere may hold the lock for a moment while it
    // checkpoints.
    let shell = Command::new("sqlite3")
        .args(["-cmd", ".timeout 10000"])
        .arg(path)
        .arg("PRAGMA integrity_check;")
        .output();
    let output = match shell {
        Ok(out) => out,
        Err(_) => {
            let script = "import sqlite3, sys\nc = sqlite3.connect(sys.argv[1], timeout=10)\nprint('\\n'.join(r[0] for r in c.execute('PRAGMA integrity_check')))";
            match Command::new("python3")
                .args(["-c", script])
                .arg(path)
                .output()
            {
                Ok(out) => out,
                Err(_) => {
                    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
                    assert!(
                        !ci,
                        "neither sqlite3 nor python3 is installed: the integrity check cannot run under CI=true"
                    );
                    eprintln!(
                        "SKIPPED: integrity check (neither sqlite3 nor python3 is installed)"
                    );
                    return None;
                }
            }
        }
    };
    assert!(
        output.status.success(),
        "integrity check failed to run: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Some(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}
