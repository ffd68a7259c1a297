//! A real plan end to end through the engine, the logic provider and the guarded HTTP client:
//! logic.transform -> logic.template -> webhook.post delivers the expected JSON body to a local
//! server, which answers 503 once and then 200; both attempts carry the same Idempotency-Key.
//! The server listens on 127.0.0.1 and the outbound allowlist opens 127.0.0.1/32 only.

// Marks the whole file as test code, so helpers outside #[test] functions may unwrap.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use pilot_core::{
    MemoryStore, RetryPolicy, RunId, RunSnapshot, RunStatus, Step, StepStatus, TriggerKind, UserId,
};
use pilot_engine::{Engine, EngineConfig, EngineParts, idempotency_key};
use pilot_registry::{OutboundClient, OutboundConfig, Registry, parse_allowlist};
use serde_json::{Map, Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// One request the hook received: its headers (names lower-case) and body.
#[derive(Debug, Clone)]
struct Received {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A one-request-per-connection HTTP/1.1 server on 127.0.0.1 answering the given statuses in
/// order (the last one repeats).
async fn hook(statuses: &[u16]) -> (SocketAddr, Arc<Mutex<Vec<Received>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received = Arc::new(Mutex::new(Vec::new()));
    let script = Arc::new(Mutex::new(
        statuses.iter().copied().collect::<VecDeque<u16>>(),
    ));
    let log = received.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut buffer = Vec::new();
            let mut chunk = [0u8; 4096];
            let (head_end, length) = loop {
                let n = stream.read(&mut chunk).await.unwrap();
                assert!(n > 0, "the client closed before sending a request");
                buffer.extend_from_slice(&chunk[..n]);
                if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buffer[..end]).to_ascii_lowercase();
                    let length = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .map_or(0, |v| v.trim().parse::<usize>().unwrap());
                    break (end + 4, length);
                }
            };
            while buffer.len() < head_end + length {
                let n = stream.read(&mut chunk).await.unwrap();
                assert!(n > 0, "the client closed mid-body");
                buffer.extend_from_slice(&chunk[..n]);
            }
            let head = String::from_utf8_lossy(&buffer[..head_end - 4]).into_owned();
            let headers = head
                .lines()
                .skip(1)
                .filter_map(|l| l.split_once(':'))
                .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
                .collect();
            let body = buffer[head_end..head_end + length].to_vec();
            log.lock().unwrap().push(Received { headers, body });
            let status = {
                let mut script = script.lock().unwrap();
                if script.len() > 1 {
                    script.pop_front().unwrap()
                } else {
                    script[0]
                }
            };
            let answer = if status == 200 {
                "{\"accepted\":true}"
            } else {
                "{\"error\":\"busy\"}"
            };
            let response = format!(
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                answer.len()
            );
            stream.write_all(response.as_bytes()).await.unwrap();
        }
    });
    (addr, received)
}

fn step(id: &str, provider: &str, action: &str, params: Value) -> Step {
    let Value::Object(params) = params else {
        panic!("params must be an object")
    };
    Step {
        id: id.into(),
        provider: provider.into(),
        action: action.into(),
        params: params as Map<String, Value>,
        retry: None,
        timeout_ms: None,
        when: None,
        continue_on_error: false,
    }
}

#[tokio::test]
async fn transform_template_webhook_delivers_json_with_a_stable_idempotency_key() {
    let (addr, received) = hook(&[503, 200]).await;

    let mut registry = Registry::new();
    pilot_provider_logic::register(&mut registry).unwrap();
    pilot_provider_http::register(&mut registry).unwrap();
    let config = OutboundConfig {
        allow: parse_allowlist("127.0.0.1/32").unwrap(),
        ..OutboundConfig::default()
    };
    let store = Arc::new(MemoryStore::new());
    let engine = Engine::new(EngineParts {
        registry: Arc::new(registry),
        runs: store.clone(),
        credentials: store.clone(),
        http: Arc::new(OutboundClient::new(config).unwrap()),
        config: EngineConfig::default(),
    });

    let mut notify = step(
        "notify",
        "webhook",
        "post",
        json!({
            "url": format!("http://{addr}/orders"),
            "body": {
                "text": "${steps.summary.output}",
                "count": "${steps.totals.output.count}",
                "total": "${steps.totals.output.total}",
                "ids": "${steps.totals.output.ids}"
            },
            "headers": {"X-Source": "pilot"}
        }),
    );
    notify.retry = Some(RetryPolicy {
        max_attempts: 3,
        base_ms: 10,
        jitter: false,
        ..RetryPolicy::default()
    });
    let steps = vec![
        step(
            "totals",
            "logic",
            "transform",
            json!({
                "expression": "{count: (.orders | length), total: (.orders | map(.amount) | add), ids: (.orders | map(.id))}",
                "input": "${input}"
            }),
        ),
        step(
            "summary",
            "logic",
            "template",
            json!({"template": "${steps.totals.output.count} orders for ${input.customer}, ${steps.totals.output.total} in total"}),
        ),
        notify,
    ];
    let snapshot = RunSnapshot {
        run_id: RunId::from("run-webhook"),
        plan_id: Some("plan-webhook".into()),
        user_id: UserId::from("alice"),
        plan_name: "notify on orders".into(),
        steps,
        input: json!({"customer": "Ada", "orders": [{"id": "a1", "amount": 3}, {"id": "b2", "amount": 4.5}]}),
        states: Vec::new(),
        epoch: 1,
        trigger: TriggerKind::Api,
        cancel: Default::default(),
    };
    store.insert_run(&snapshot);

    let outcome = engine.execute_plan(snapshot).await.unwrap();
    assert_eq!(outcome.status, RunStatus::Succeeded, "{:?}", outcome.error);
    let statuses: Vec<StepStatus> = outcome.states.iter().map(|s| s.status).collect();
    assert_eq!(statuses, vec![StepStatus::Succeeded; 3]);
    let output = outcome.states[2].output.clone().unwrap();
    assert_eq!(output["status"], 200);
    assert_eq!(output["body"], json!({"accepted": true}));

    let received = received.lock().unwrap().clone();
    assert_eq!(received.len(), 2, "503 once, then 200");
    let expected = json!({
        "text": "2 orders for Ada, 7.5 in total",
        "count": 2,
        "total": 7.5,
        "ids": ["a1", "b2"]
    });
    let key = idempotency_key("run-webhook", "notify");
    for request in &received {
        assert_eq!(
            serde_json::from_slice::<Value>(&request.body).unwrap(),
            expected
        );
        assert_eq!(request.header("content-type"), Some("application/json"));
        assert_eq!(request.header("x-source"), Some("pilot"));
        assert_eq!(request.header("idempotency-key"), Some(key.as_str()));
    }

    let attempts: Vec<(String, u32, String)> = store
        .logs()
        .into_iter()
        .filter(|l| l.step_id == "notify")
        .map(|l| (l.step_id, l.attempt, l.status))
        .collect();
    assert_eq!(
        attempts,
        vec![
            ("notify".into(), 1, "retrying".into()),
            ("notify".into(), 2, "succeeded".into())
        ]
    );
}
