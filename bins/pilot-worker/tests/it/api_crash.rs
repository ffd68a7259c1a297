//! Promise 1, "accepted means durable", across a crash: an API process answers 202 to an async
//! `POST /api/execute`, is killed with SIGKILL right after, and a `pilot-worker` started later
//! still executes the run.
//!
//! The API process is this test binary run again as a child (with an environment variable
//! saying so): it serves the real pilot-api route table over the test database, exactly as
//! pilot-server wires it, with no embedded worker. The same test function plays both roles, so
//! the child is never a test of its own.

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use pilot_api::{ApiSettings, AppParts, AppState, ServerConfig};
use pilot_core::{RunId, RunStatus};
use pilot_registry::testing::{FakeServer, Reply};
use pilot_registry::{OutboundClient, OutboundConfig, Registry, parse_allowlist};
use pilot_storage::{Database, DbConfig, Keyring};
use pilot_telemetry::Metrics;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::support::*;

/// Set in the child: the database URL it serves.
const CHILD_DB_ENV: &str = "PILOT_WORKER_TEST_API_CHILD_DB";
const TEST_NAME: &str = "api_crash::an_async_run_survives_the_api_process_being_killed_after_202";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_async_run_survives_the_api_process_being_killed_after_202() {
    if !pilot_storage::testing::slow_tests_enabled(
        "api_crash::an_async_run_survives_the_api_process_being_killed_after_202",
    ) {
        return;
    }
    #[allow(clippy::disallowed_methods)]
    if let Ok(url) = std::env::var(CHILD_DB_ENV) {
        serve_api_forever(&url).await;
        return;
    }
    let Some(t) = postgres().await else { return };
    let db = t.db().clone();
    let server = FakeServer::start(vec![Reply::json(200, &serde_json::json!({ "ok": true }))])
        .await
        .unwrap();
    let user = user(&db).await;
    let (_, token) = db.create_token(&user, "test").await.unwrap();
    let plan = plan(
        &db,
        &user,
        "async",
        vec![post_step("only", server.url("/only").as_str())],
    )
    .await;

    let mut api = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", TEST_NAME, "--nocapture", "--test-threads", "1"])
        .env(CHILD_DB_ENV, t.url())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = api.stdout.take().unwrap();
    // libtest prints the test's name first, on the same line.
    let read_addr = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find_map(|line| {
                line.split_once("LISTENING ")
                    .map(|(_, addr)| addr.trim().to_owned())
            })
    });
    let Ok(addr) = tokio::time::timeout(Duration::from_secs(30), read_addr).await else {
        api.kill().unwrap();
        panic!("the API child did not start within 30 s");
    };
    let addr = addr.unwrap().expect("the API child printed its address");

    let body = serde_json::json!({ "plan_id": plan, "async": true }).to_string();
    let (status, answer) = post(&addr, "/api/execute", token.expose(), &body).await;
    // Killed the moment the 202 is read: nothing after the answer can help the run.
    api.kill().unwrap();
    api.wait().unwrap();
    assert_eq!(status, 202, "{answer}");
    let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
    let id = RunId(answer["run_id"].as_str().unwrap().to_owned());
    assert_eq!(
        run(&db, &user, &id).await.status,
        RunStatus::Queued,
        "committed before the 202"
    );
    assert!(server.requests().is_empty());

    let _worker = WorkerProcess::start(&t, "after-crash", &[]);
    let row = wait_for("the run to succeed", Duration::from_secs(30), || async {
        let row = run(&db, &user, &id).await;
        (row.status == RunStatus::Succeeded).then_some(row)
    })
    .await;
    assert_eq!(row.takeover_count, 0);
    let keys: Vec<_> = server
        .requests()
        .iter()
        .map(|r| r.header("idempotency-key").unwrap_or_default().to_owned())
        .collect();
    assert_eq!(keys, vec![format!("{id}:only")]);
}

/// The child's role: the API over `url`, printing `LISTENING <addr>` once bound.
#[allow(clippy::print_stdout)]
async fn serve_api_forever(url: &str) {
    let mut config = DbConfig::new(url);
    config.run_migrations = false;
    let key = Keyring::generate_key_base64().unwrap();
    let db = Database::open(&config)
        .await
        .unwrap()
        .with_keyring(Keyring::from_master_key(&key).unwrap());
    let mut registry = Registry::new();
    pilot_provider_http::register(&mut registry).unwrap();
    let http = OutboundClient::new(OutboundConfig {
        allow: parse_allowlist("127.0.0.1/32").unwrap(),
        ..OutboundConfig::default()
    })
    .unwrap();
    let state = AppState::new(AppParts {
        db,
        registry: Arc::new(registry),
        http: Arc::new(http),
        engine: pilot_engine::EngineConfig::default(),
        metrics: Metrics::new(),
        settings: ApiSettings::default(),
    });
    let server = pilot_api::bind(
        state,
        &ServerConfig {
            bind: "127.0.0.1:0".parse().unwrap(),
            workers: 1,
            ..ServerConfig::default()
        },
    )
    .unwrap();
    println!("LISTENING {}", server.local_addr());
    server.run(std::future::pending()).await.unwrap();
}

/// A minimal HTTP/1.1 POST; answers the status and the body.
async fn post(addr: &str, path: &str, token: &str, body: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {token}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}
