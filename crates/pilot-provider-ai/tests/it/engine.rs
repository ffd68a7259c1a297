//! An openai step inside a real run: the engine loads the caller's key from the store, retries
//! a 429 with the same idempotency key, a logic.template step reads `${steps.chat.output}`,
//! and a second openai step reads the template's output.

// Marks the whole file as test code, so helpers outside #[test] functions may unwrap.

use std::sync::Arc;

use crate::support::{KEY, Reply, base_url, client, completion, credential, serve};
use pilot_core::{
    CredentialKind, MemoryStore, RetryPolicy, RunId, RunSnapshot, RunStatus, Step, StepStatus,
    TriggerKind, UserId,
};
use pilot_engine::{Engine, EngineConfig, EngineParts, idempotency_key};
use pilot_provider_ai::{AiConfig, register};
use pilot_registry::Registry;
use serde_json::{Value, json};

fn step(id: &str, provider: &str, action: &str, params: Value) -> Step {
    serde_json::from_value(json!({
        "id": id,
        "provider": provider,
        "action": action,
        "params": params,
        "retry": RetryPolicy { max_attempts: 3, base_ms: 1, factor: 2.0, cap_ms: 10, jitter: false },
    }))
    .unwrap()
}

#[tokio::test]
async fn a_later_step_reads_the_chat_output_through_the_engine() {
    let server = serve(vec![
        Reply::json(429, &json!({"error": {"message": "Rate limit reached"}}))
            .header("Retry-After", "0"),
        completion("Paris"),
        completion("C'est Paris."),
    ])
    .await;

    let mut registry = Registry::new();
    let config = AiConfig {
        openai_base_url: Some(base_url(&server)),
        groq_base_url: None,
    };
    register(&mut registry, &config).unwrap();
    pilot_provider_logic::register(&mut registry).unwrap();
    let store = Arc::new(MemoryStore::new());
    let user = UserId::new();
    store.add_credential(&user, credential("openai", CredentialKind::ApiKey, KEY));
    let engine = Engine::new(EngineParts {
        registry: Arc::new(registry),
        runs: store.clone(),
        credentials: store.clone(),
        http: client(),
        config: EngineConfig::default(),
    });

    let snapshot = RunSnapshot {
        run_id: RunId::new(),
        plan_id: None,
        user_id: user,
        plan_name: "capital".into(),
        steps: vec![
            step(
                "chat",
                "openai",
                "chat",
                json!({"prompt": "Capital of ${input.country}? One word.", "max_tokens": 5}),
            ),
            step(
                "summary",
                "logic",
                "template",
                json!({"template": "The capital of ${input.country} is ${steps.chat.output}."}),
            ),
            step(
                "translate",
                "openai",
                "chat",
                json!({"system": "Answer in French.", "prompt": "Say: ${steps.summary.output}"}),
            ),
        ],
        input: json!({"country": "France"}),
        states: Vec::new(),
        epoch: 1,
        trigger: TriggerKind::Api,
        cancel: Default::default(),
    };
    store.insert_run(&snapshot);
    let outcome = engine.execute_plan(snapshot.clone()).await.unwrap();

    assert_eq!(outcome.status, RunStatus::Succeeded, "{:?}", outcome.error);
    let outputs: Vec<_> = outcome
        .states
        .iter()
        .map(|s| (s.status, s.output.clone()))
        .collect();
    assert_eq!(
        outputs,
        [
            (StepStatus::Succeeded, Some(json!("Paris"))),
            (
                StepStatus::Succeeded,
                Some(json!("The capital of France is Paris."))
            ),
            (StepStatus::Succeeded, Some(json!("C'est Paris."))),
        ]
    );
    assert_eq!(outcome.states[0].attempts, 2);

    let received = server.requests();
    assert_eq!(received.len(), 3);
    let chat_key = idempotency_key(snapshot.run_id.as_str(), "chat");
    let keys: Vec<_> = received
        .iter()
        .map(|r| r.header("idempotency-key").unwrap_or_default().to_owned())
        .collect();
    assert_eq!(keys[0], chat_key);
    assert_eq!(keys[1], chat_key);
    assert_ne!(keys[2], chat_key);
    for request in &received {
        assert_eq!(
            request.header("authorization"),
            Some(format!("Bearer {KEY}").as_str())
        );
    }
    assert_eq!(
        received[0].json()["messages"],
        json!([{"role": "user", "content": "Capital of France? One word."}])
    );
    assert_eq!(
        received[2].json()["messages"],
        json!([
            {"role": "system", "content": "Answer in French."},
            {"role": "user", "content": "Say: The capital of France is Paris."},
        ])
    );

    let logs: Vec<_> = store
        .logs()
        .into_iter()
        .map(|l| (l.step_id, l.attempt, l.status))
        .collect();
    assert_eq!(
        logs,
        [
            ("chat".to_owned(), 1, "retrying".to_owned()),
            ("chat".to_owned(), 2, "succeeded".to_owned()),
            ("summary".to_owned(), 1, "succeeded".to_owned()),
            ("translate".to_owned(), 1, "succeeded".to_owned()),
        ]
    );
    assert!(store.logs().iter().all(|l| !format!("{l:?}").contains(KEY)));
}
