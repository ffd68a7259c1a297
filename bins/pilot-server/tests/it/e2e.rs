//! End to end: the real `pilot-server` binary on a free port with a fresh SQLite file, driven
//! over HTTP exactly as the README shows. First start writes the admin token to a 0600 file
//! (never to stdout or the logs); a plan with a webhook step and an authenticated custom_api
//! step runs against a local receiver; the execution log has one row per attempt; the stored
//! credential cannot be read in the database file; SIGTERM stops the server cleanly.

use std::io::{BufRead as _, BufReader, Read as _};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use pilot_registry::testing::{FakeServer, Reply, ReplyGate};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// The server process; killed if a test fails before stopping it.
struct Server {
    child: Child,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(data_dir: &std::path::Path) -> (Server, SocketAddr, std::sync::mpsc::Receiver<String>) {
    start_with(data_dir, &[])
}

/// [`start`] with extra environment variables.
fn start_with(
    data_dir: &std::path::Path,
    env: &[(&str, &str)],
) -> (Server, SocketAddr, std::sync::mpsc::Receiver<String>) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_pilot-server"));
    for (name, _) in std::env::vars() {
        if name.starts_with("PILOT_") {
            command.env_remove(name);
        }
    }
    command.envs(env.iter().copied());
    let mut child = command
        .env("PILOT_DATA_DIR", data_dir)
        .env("PILOT_BIND", "127.0.0.1:0")
        .env("PILOT_OUTBOUND_ALLOW", "127.0.0.1/32")
        .env("PILOT_LOG", "info")
        .env("PILOT_LOG_FORMAT", "json")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start pilot-server");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let server = Server { child };
    let mut seen = Vec::new();
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_else(|_| {
                panic!("the server did not report its address; stdout so far: {seen:?}")
            });
        if let Some(addr) = line.strip_prefix("Pilot listening on http://") {
            let addr = addr.trim().parse().unwrap();
            // Keep every stdout line for the secrecy checks.
            let (all_tx, all_rx) = std::sync::mpsc::channel();
            for l in seen.drain(..) {
                all_tx.send(l).unwrap();
            }
            all_tx.send(line.clone()).unwrap();
            std::thread::spawn(move || {
                while let Ok(l) = rx.recv() {
                    if all_tx.send(l).is_err() {
                        break;
                    }
                }
            });
            return (server, addr, all_rx);
        }
        seen.push(line);
    }
}

/// One HTTP/1.1 request on a fresh connection; answers the status and the JSON body.
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> (u16, Value) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let payload = body.map(|b| b.to_string()).unwrap_or_default();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        payload.len()
    );
    if body.is_some() {
        head.push_str("Content-Type: application/json\r\n");
    }
    if let Some(token) = token {
        head.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(payload.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_journey_against_the_real_binary() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("pilot-data");
    let (mut server, addr, stdout) = start(&data_dir);

    // The token file: present, 0600, and the token is not on stdout.
    let token_path = data_dir.join("admin-token");
    let token = std::fs::read_to_string(&token_path)
        .unwrap()
        .trim()
        .to_owned();
    assert!(token.starts_with("pilot_"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&token_path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    let receiver = FakeServer::start(vec![
        Reply::json(200, &json!({ "received": true })),
        Reply::json(200, &json!({ "customer": "ada" })),
    ])
    .await
    .unwrap();
    let secret = "crm-secret-6f1d2c9a8b7e";
    let (status, body) = http(
        addr,
        "POST",
        "/api/provider-credentials/custom_api",
        Some(&token),
        Some(&json!({ "type": "bearer", "value": secret, "origin": receiver.origin() })),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    let plan = json!({
        "name": "Order notifications",
        "steps": [
            { "id": "notify", "provider": "webhook", "action": "post",
              "params": { "url": receiver.url("/hook").to_string(), "body": { "order": "${input.order}" } } },
            { "id": "lookup", "provider": "custom_api", "action": "request",
              "params": { "url": receiver.url("/customers/1").to_string(), "method": "GET" } }
        ]
    });
    let (status, created) = http(addr, "POST", "/api/plans", Some(&token), Some(&plan)).await;
    assert_eq!(status, 201, "{created}");
    let plan_id = created["id"].as_str().unwrap();

    let (status, run) = http(
        addr,
        "POST",
        "/api/execute",
        Some(&token),
        Some(&json!({ "plan_id": plan_id, "input": { "order": 42 } })),
    )
    .await;
    assert_eq!(status, 200, "{run}");
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(
        run["steps"][1]["output"]["body"],
        json!({ "customer": "ada" })
    );
    let received = receiver.requests();
    assert_eq!(received.len(), 2);
    assert_eq!(received[0].json(), json!({ "order": 42 }));
    assert_eq!(
        received[1].header("authorization"),
        Some(format!("Bearer {secret}").as_str())
    );

    let run_id = run["id"].as_str().unwrap();
    let (status, logs) = http(
        addr,
        "GET",
        &format!("/api/execution-logs?run_id={run_id}"),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(status, 200, "{logs}");
    let rows = logs["items"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "one row per attempt: {logs}");
    assert!(!logs.to_string().contains(secret));

    // The stored credential is not readable in the database files, in any common encoding.
    let mut stored = Vec::new();
    for name in ["pilot.db", "pilot.db-wal"] {
        if let Ok(mut f) = std::fs::File::open(data_dir.join(name)) {
            f.read_to_end(&mut stored).unwrap();
        }
    }
    assert!(stored.len() > 4096, "the database file should exist");
    let hex: String = secret.bytes().map(|b| format!("{b:02x}")).collect();
    for needle in [
        secret.as_bytes(),
        hex.as_bytes(),
        b"Y3JtLXNlY3JldC02ZjFkMmM5YThiN2U",
    ] {
        assert!(
            !stored.windows(needle.len()).any(|w| w == needle),
            "found {:?} in the database",
            String::from_utf8_lossy(needle)
        );
    }

    // SIGTERM: a graceful stop with a zero exit status.
    let pid = server.child.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    let mut exit = None;
    for _ in 0..300 {
        if let Some(status) = server.child.try_wait().unwrap() {
            exit = Some(status);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let exit = exit.expect("the server stops within 30 s of SIGTERM");
    assert!(exit.success(), "exit status {exit:?}");

    // Neither stdout nor the logs ever carried the token or the credential.
    let out: Vec<String> = stdout.try_iter().collect();
    let mut err = String::new();
    server
        .child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(
        out.iter()
            .any(|l| l.contains("admin-token") && l.contains("curl")),
        "{out:?}"
    );
    for text in [out.join("\n"), err.clone()] {
        assert!(!text.contains(&token), "the admin token leaked");
        assert!(!text.contains(secret), "the credential leaked");
    }
    assert!(
        err.contains("\"route\":\"/api/execute\""),
        "JSON access log expected: {err}"
    );
}

#[test]
fn help_never_shows_secret_values() {
    let output = Command::new(env!("CARGO_BIN_EXE_pilot-server"))
        .arg("--help")
        .env(
            "PILOT_MASTER_KEY",
            "c2VjcmV0LWtleS1zZWNyZXQta2V5LXNlY3JldC1rZXk=",
        )
        .env(
            "PILOT_DATABASE_URL",
            "postgres://app:hunter2@db.internal/pilot",
        )
        .env(
            "PILOT_MIGRATION_DATABASE_URL",
            "postgres://owner:hunter3@db.internal/pilot",
        )
        .env(
            "PILOT_MASTER_KEYS",
            "k2:c2VjcmV0LWtleS1zZWNyZXQta2V5LXNlY3JldC1rZXk=",
        )
        .output()
        .unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    assert!(help.contains("PILOT_MASTER_KEY"), "{help}");
    assert!(help.contains("PILOT_OUTBOUND_ALLOW"), "{help}");
    for secret in ["c2VjcmV0", "hunter2", "hunter3"] {
        assert!(!help.contains(secret), "--help shows a secret: {help}");
    }
}

/// Waits (30 s at most) until `ready` answers something.
async fn wait_until<T>(what: &str, mut ready: impl FnMut() -> Option<T>) -> T {
    for _ in 0..600 {
        if let Some(value) = ready() {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

/// A graceful stop lets a step in flight finish on the connection it started on: outbound I/O
/// of runs lives on the server's runtime, which outlives the HTTP workers, so no pooled
/// connection dies under the step and the receiver gets the POST once. (Before, a connection
/// opened by an inline run on an HTTP worker's runtime was reused by the embedded worker and
/// died when that runtime stopped: the step failed, was retried, and the POST arrived twice.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_does_not_repeat_a_step_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("pilot-data");
    let (mut server, addr, _stdout) = start_with(&data_dir, &[("PILOT_HTTP_WORKERS", "1")]);
    let token = std::fs::read_to_string(data_dir.join("admin-token"))
        .unwrap()
        .trim()
        .to_owned();
    let stderr = server.child.stderr.take().unwrap();
    let (log_tx, log_rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if log_tx.send(line).is_err() {
                break;
            }
        }
    });

    let receiver = FakeServer::start(vec![Reply::json(200, &json!({ "ok": true }))])
        .await
        .unwrap();
    let plan = json!({ "name": "notify", "steps": [
        { "id": "post", "provider": "webhook", "action": "post",
          "params": { "url": receiver.url("/hook").as_str(), "body": { "n": "${input.n}" } } }
    ]});
    let (status, created) = http(addr, "POST", "/api/plans", Some(&token), Some(&plan)).await;
    assert_eq!(status, 201, "{created}");
    let plan_id = created["id"].as_str().unwrap().to_owned();

    // An inline run: its request opens a keep-alive connection to the receiver.
    let (status, run) = http(
        addr,
        "POST",
        "/api/execute",
        Some(&token),
        Some(&json!({ "plan_id": plan_id, "input": { "n": 1 } })),
    )
    .await;
    assert_eq!(status, 200, "{run}");
    assert_eq!(run["status"], "succeeded");

    // A queued run for the embedded worker; the receiver holds its answer.
    let gate = ReplyGate::new();
    receiver.set_script(vec![Reply::json(200, &json!({ "ok": true })).after(&gate)]);
    let (status, queued) = http(
        addr,
        "POST",
        "/api/execute",
        Some(&token),
        Some(&json!({ "plan_id": plan_id, "input": { "n": 2 }, "async": true })),
    )
    .await;
    assert_eq!(status, 202, "{queued}");
    wait_until("the queued run's POST", || {
        (receiver.requests().len() == 2).then_some(())
    })
    .await;

    // Stop gracefully; once the HTTP workers are gone, let the receiver answer.
    let pid = server.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    wait_until("the HTTP server to stop", || {
        log_rx
            .try_iter()
            .any(|l| l.contains("HTTP server stopped"))
            .then_some(())
    })
    .await;
    gate.open();
    let exit = wait_until("the server to exit", || server.child.try_wait().unwrap()).await;
    assert!(exit.success(), "exit status {exit:?}");

    let bodies: Vec<Value> = receiver.requests().iter().map(|r| r.json()).collect();
    assert_eq!(
        bodies,
        vec![json!({ "n": 1 }), json!({ "n": 2 })],
        "each run's POST arrived exactly once"
    );
}
