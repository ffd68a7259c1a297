//! The `chat` action against a local fake OpenAI-compatible server: what the server receives
//! (path, bearer key, idempotency key, JSON body) and how every kind of answer maps to an
//! output or a classified error, with the key never leaking.

// Marks the whole file as test code, so helpers outside #[test] functions may unwrap.

use std::time::Duration;

use crate::support::{FakeServer, KEY, Reply, base_url, completion, context, credential, serve};
use pilot_core::CredentialKind;
use pilot_provider_ai::{AiConfig, ChatProvider, OPENAI, Vendor, register};
use pilot_registry::{Provider, ProviderContext, ProviderError, ProviderOutput, Registry};
use serde_json::{Value, json};

/// `openai` and `groq` registered with both base URLs pointing at `server`.
fn registry(server: &FakeServer) -> Registry {
    let mut registry = Registry::new();
    let config = AiConfig {
        openai_base_url: Some(base_url(server)),
        groq_base_url: Some(base_url(server)),
    };
    register(&mut registry, &config).unwrap();
    registry
}

fn openai_context() -> ProviderContext {
    context(vec![credential("openai", CredentialKind::ApiKey, KEY)])
}

/// Runs `openai.chat` with `params` against a server answering `script`.
async fn chat(
    script: Vec<Reply>,
    params: Value,
) -> (FakeServer, Result<ProviderOutput, ProviderError>) {
    let server = serve(script).await;
    let result = registry(&server)
        .execute("openai", "chat", &params, &openai_context())
        .await;
    (server, result)
}

#[tokio::test]
async fn a_completion_sends_the_expected_request_and_returns_text_and_usage() {
    let ctx = openai_context();
    let server = serve(vec![completion("Hello!").header("x-request-id", "req_42")]).await;
    let params = json!({
        "prompt": "Say hello",
        "system": "Be brief.",
        "model": "gpt-4o",
        "temperature": 0.2,
        "max_tokens": 20,
        "stop": ["\n\n", "END"],
    });
    let out = registry(&server)
        .execute("openai", "chat", &params, &ctx)
        .await
        .unwrap();

    assert_eq!(out.output, json!("Hello!"));
    assert_eq!(
        out.metadata,
        json!({
            "model": "gpt-4o-mini-2024-07-18",
            "prompt_tokens": 12,
            "completion_tokens": 5,
            "total_tokens": 17,
            "finish_reason": "stop",
            "request_id": "req_42",
        })
    );
    assert_eq!(
        out.message.as_deref(),
        Some("gpt-4o-mini-2024-07-18: 17 tokens, finish_reason stop")
    );

    let received = server.requests();
    assert_eq!(received.len(), 1);
    let request = &received[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.target, "/v1/chat/completions");
    assert_eq!(
        request.header("authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert_eq!(
        request.header("idempotency-key"),
        Some(ctx.idempotency_key.as_str())
    );
    assert_eq!(
        request.json(),
        json!({
            "model": "gpt-4o",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Say hello"},
            ],
            "temperature": 0.2,
            "max_tokens": 20,
            "stop": ["\n\n", "END"],
        })
    );
}

#[tokio::test]
async fn json_mode_asks_for_a_json_object_and_returns_the_parsed_value() {
    let messages = json!([
        {"role": "system", "content": "Answer in JSON."},
        {"role": "user", "content": "Two colours?"},
        {"role": "assistant", "content": "Which format?"},
        {"role": "user", "content": "JSON, key colours."},
    ]);
    let (server, result) = chat(
        vec![completion(r#"{"colours": ["red", "blue"]}"#)],
        json!({"messages": messages, "json": true}),
    )
    .await;
    let out = result.unwrap();
    assert_eq!(out.output, json!({"colours": ["red", "blue"]}));
    // Without an x-request-id header the body's id is the request id.
    assert_eq!(out.metadata["request_id"], json!("chatcmpl-abc123"));

    let body = server.requests()[0].json();
    assert_eq!(body["model"], json!("gpt-4o-mini"));
    assert_eq!(body["messages"], messages);
    assert_eq!(body["response_format"], json!({"type": "json_object"}));
    assert!(
        body.get("temperature").is_none()
            && body.get("max_tokens").is_none()
            && body.get("stop").is_none()
    );
}

/// What a failed call must look like.
struct Expect {
    retryable: bool,
    retry_after: Option<Duration>,
    contains: &'static str,
}

const fn permanent(contains: &'static str) -> Expect {
    Expect {
        retryable: false,
        retry_after: None,
        contains,
    }
}

const fn retryable(contains: &'static str, retry_after: Option<Duration>) -> Expect {
    Expect {
        retryable: true,
        retry_after,
        contains,
    }
}

async fn check(reply: Reply, params: Value, expect: Expect) {
    let (server, result) = chat(vec![reply.clone()], params).await;
    let err = result.unwrap_err();
    let message = err.to_string();
    assert_eq!(err.is_retryable(), expect.retryable, "{reply:?}: {message}");
    assert_eq!(
        err.retry_after(),
        expect.retry_after,
        "{reply:?}: {message}"
    );
    assert!(
        message.contains(expect.contains),
        "{reply:?}: {message:?} lacks {:?}",
        expect.contains
    );
    assert!(!message.contains(KEY), "{message}");
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn error_answers_are_classified_with_the_servers_message() {
    let prompt = || json!({"prompt": "hi"});
    let error = |status, message: &str| {
        Reply::json(
            status,
            &json!({"error": {"message": message, "type": "x", "code": null}}),
        )
    };
    let cases = [
        (
            error(401, "Incorrect API key provided."),
            permanent("openai refused the request with HTTP 401: Incorrect API key provided."),
        ),
        (
            error(403, "Project does not have access to model."),
            permanent("HTTP 403: Project does not have access"),
        ),
        (
            error(400, "This model's maximum context length is 128000 tokens."),
            permanent("HTTP 400: This model's maximum context length"),
        ),
        (
            error(404, "The model `gpt-9` does not exist."),
            permanent("HTTP 404: The model `gpt-9` does not exist."),
        ),
        (
            error(429, "Rate limit reached.").header("Retry-After", "7"),
            retryable(
                "openai is unavailable (HTTP 429): Rate limit reached.",
                Some(Duration::from_secs(7)),
            ),
        ),
        (
            error(500, "The server had an error."),
            retryable("(HTTP 500): The server had an error.", None),
        ),
        (
            Reply::text(502, "<html><body>Bad gateway</body></html>"),
            retryable("(HTTP 502): <html><body>Bad gateway</body></html>", None),
        ),
        (
            Reply::text(503, ""),
            retryable("openai is unavailable (HTTP 503)", None),
        ),
        (
            Reply::text(200, "this is not json"),
            permanent("openai sent an invalid chat completion: the body is not JSON"),
        ),
        (
            Reply::text(200, r#"{"id":"c","choices":[{"message":{"content":"Hel"#),
            permanent("the body is cut short"),
        ),
        (Reply::text(200, ""), permanent("the body is empty")),
        (
            Reply::json(200, &json!({"choices": []})),
            permanent("'choices' is empty"),
        ),
        (
            Reply::json(200, &json!({"object": "list"})),
            permanent("'choices' is missing"),
        ),
        (
            Reply::json(200, &json!({"choices": [{"message": {"content": 7}}]})),
            permanent("unexpected shape (invalid type: integer `7`, expected a string"),
        ),
        (
            Reply::json(
                200,
                &json!({"choices": [{"message": {"content": "x"}}], "usage": {"total_tokens": "lots"}}),
            ),
            permanent("unexpected shape"),
        ),
        (
            Reply::json(
                200,
                &json!({"choices": [{"message": {"content": null, "refusal": "I can't help with that."}}]}),
            ),
            permanent("the openai model refused to answer: I can't help with that."),
        ),
    ];
    for (reply, expect) in cases {
        check(reply, prompt(), expect).await;
    }
    // A long server message is cut to 500 characters.
    let (_server, result) = chat(
        vec![Reply::json(
            400,
            &json!({"error": {"message": "y".repeat(5000)}}),
        )],
        prompt(),
    )
    .await;
    let message = result.unwrap_err().to_string();
    assert!(
        message.len() < 600 && message.ends_with("y..."),
        "{message}"
    );
}

#[tokio::test]
async fn a_json_mode_answer_that_is_not_json_is_permanent() {
    let json_mode = json!({"prompt": "Give JSON", "json": true});
    check(
        completion("Sure! Here it is: {"),
        json_mode.clone(),
        permanent("answered in JSON mode with text that is not JSON"),
    )
    .await;

    let cut = Reply::json(
        200,
        &json!({"choices": [{"message": {"content": "{\"a\": [1, 2"}, "finish_reason": "length"}]}),
    );
    check(cut, json_mode, permanent("cut at max_tokens, raise it")).await;
}

#[tokio::test]
async fn rate_limited_then_success_keeps_the_idempotency_key() {
    let ctx = openai_context();
    let server = serve(vec![
        Reply::json(
            429,
            &json!({"error": {"message": "Rate limit reached for requests"}}),
        )
        .header("Retry-After", "2"),
        completion("Finally."),
    ])
    .await;
    let registry = registry(&server);
    let params = json!({"prompt": "hi"});

    let first = registry
        .execute("openai", "chat", &params, &ctx)
        .await
        .unwrap_err();
    assert!(first.is_retryable(), "{first}");
    assert_eq!(first.retry_after(), Some(Duration::from_secs(2)));
    let second = registry
        .execute("openai", "chat", &params, &ctx)
        .await
        .unwrap();
    assert_eq!(second.output, json!("Finally."));

    let keys: Vec<_> = server
        .requests()
        .iter()
        .map(|r| r.header("idempotency-key").map(str::to_owned))
        .collect();
    assert_eq!(
        keys,
        [
            Some(ctx.idempotency_key.clone()),
            Some(ctx.idempotency_key.clone())
        ]
    );
}

#[tokio::test]
async fn a_server_that_never_answers_is_a_retryable_timeout() {
    let server = serve(vec![Reply::hang()]).await;
    let mut ctx = openai_context();
    ctx.timeout = Duration::from_millis(300);
    let err = registry(&server)
        .execute("openai", "chat", &json!({"prompt": "hi"}), &ctx)
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(err.to_string().contains("timed out"), "{err}");
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn a_body_cut_off_by_a_closed_connection_is_an_error() {
    // Content-Length announces 400 bytes; the connection ends after `{"choices":[`.
    let body = format!("{{\"choices\":[{}", " ".repeat(388));
    let cut = Reply::status(200)
        .header("content-type", "application/json")
        .body(body)
        .reset_after(12);
    let (_server, result) = chat(vec![cut], json!({"prompt": "hi"})).await;
    let err = result.unwrap_err();
    assert!(err.is_retryable(), "{err}");
}

#[tokio::test]
async fn the_key_never_leaks_even_when_the_server_echoes_it() {
    let echoed = format!(
        "Incorrect API key provided: {KEY}. You can find your API key at https://example.test."
    );
    let hex = format!("bad key {}", hex_encode(KEY));
    let cases = [
        Reply::json(401, &json!({"error": {"message": echoed}})),
        Reply::text(401, &format!("Authorization: Bearer {KEY}")),
        Reply::json(400, &json!({"error": {"message": hex}})),
        Reply::json(
            200,
            &json!({"choices": [{"message": {"content": "x"}}], "usage": {"total_tokens": KEY}}),
        ),
        Reply::json(200, &json!({"error": {"message": format!("bad {KEY}")}})),
        Reply::json(
            200,
            &json!({"choices": [{"message": {"content": null, "refusal": KEY}}]}),
        ),
    ];
    for reply in cases {
        let (_server, result) = chat(vec![reply.clone()], json!({"prompt": "hi"})).await;
        let message = result.unwrap_err().to_string();
        assert!(message.contains("[redacted]"), "{reply:?}: {message}");
        assert!(
            !message.contains(KEY) && !message.contains(&hex_encode(KEY)),
            "{reply:?}: {message}"
        );
    }

    // Redaction comes before truncation, so a cut through the key cannot leave part of it.
    let straddling = format!("{}{KEY}", "x".repeat(495));
    let (_server, result) = chat(
        vec![Reply::json(401, &json!({"error": {"message": straddling}}))],
        json!({"prompt": "hi"}),
    )
    .await;
    let message = result.unwrap_err().to_string();
    assert!(
        message.contains("x[reda...") && !message.contains(&KEY[..6]),
        "{message}"
    );

    // A model (or a server) repeating the key in its answer does not leak it either.
    let reply = completion(&format!("your key is {KEY}")).header("x-request-id", KEY);
    let (_server, result) = chat(vec![reply], json!({"prompt": "hi"})).await;
    let out = result.unwrap();
    assert_eq!(out.output, json!("your key is [redacted]"));
    assert_eq!(out.metadata["request_id"], json!("[redacted]"));
    let (_server, result) = chat(
        vec![completion(&format!(r#"{{"{KEY}": ["{KEY}"]}}"#))],
        json!({"prompt": "json", "json": true}),
    )
    .await;
    assert_eq!(
        result.unwrap().output,
        json!({"[redacted]": ["[redacted]"]})
    );
}

fn hex_encode(text: &str) -> String {
    text.bytes().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn a_missing_or_unusable_credential_is_permanent_and_nothing_is_sent() {
    let cases = [
        (
            vec![],
            "openai needs an API key: store one with POST /api/provider-credentials/openai and the body {\"type\":\"api_key\",\"value\":\"<your key>\"}",
        ),
        (
            vec![credential("groq", CredentialKind::ApiKey, KEY)],
            "openai needs an API key",
        ),
        (
            vec![credential("openai", CredentialKind::Basic, "user:pass")],
            "openai needs an API key",
        ),
        (
            vec![credential("openai", CredentialKind::ApiKey, "   ")],
            "the openai credential is not a usable API key",
        ),
        (
            vec![credential(
                "openai",
                CredentialKind::ApiKey,
                "sk-a\r\nX-Evil: 1",
            )],
            "the openai credential is not a usable API key",
        ),
        (
            vec![credential("openai", CredentialKind::ApiKey, "sk-clé")],
            "the openai credential is not a usable API key",
        ),
    ];
    for (credentials, want) in cases {
        let server = serve(vec![completion("x")]).await;
        let ctx = context(credentials);
        let err = registry(&server)
            .execute("openai", "chat", &json!({"prompt": "hi"}), &ctx)
            .await
            .unwrap_err();
        assert!(!err.is_retryable());
        assert!(err.to_string().contains(want), "{err}");
        assert!(!err.to_string().contains("sk-"), "{err}");
        assert!(server.requests().is_empty());
    }
}

#[tokio::test]
async fn bad_params_and_unknown_actions_fail_before_any_request() {
    let server = serve(vec![]).await;
    let provider = ChatProvider::new(OPENAI, Some(base_url(&server)));
    let ctx = openai_context();
    let err = provider
        .execute("chat", &json!({"prompt": "hi", "temperature": 3}), &ctx)
        .await
        .unwrap_err();
    assert_eq!(
        err,
        ProviderError::permanent("param 'temperature' must be from 0 to 2, not 3")
    );
    let err = provider
        .execute("complete", &json!({"prompt": "hi"}), &ctx)
        .await
        .unwrap_err();
    assert_eq!(
        err,
        ProviderError::permanent("openai has no action 'complete' (it has: chat)")
    );
    assert!(server.requests().is_empty());
}

#[tokio::test]
async fn groq_uses_its_key_its_base_url_and_its_default_model() {
    let server = serve(vec![completion("fast")]).await;
    // A stored key is trimmed, and an openai key is never sent to groq.
    let ctx = context(vec![
        credential("openai", CredentialKind::ApiKey, "sk-openai-only"),
        credential("groq", CredentialKind::Bearer, &format!("  {KEY}\n")),
    ]);
    let out = registry(&server)
        .execute("groq", "chat", &json!({"prompt": "hi"}), &ctx)
        .await
        .unwrap();
    assert_eq!(out.output, json!("fast"));
    let request = &server.requests()[0];
    assert_eq!(request.target, "/v1/chat/completions");
    assert_eq!(
        request.header("authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );
    assert_eq!(request.json()["model"], json!("llama-3.3-70b-versatile"));
}

#[tokio::test]
async fn another_compatible_vendor_is_a_few_lines() {
    const LOCAL: Vendor = Vendor {
        name: "local",
        description: "A local OpenAI-compatible model server.",
        default_base_url: "http://127.0.0.1:11434/v1",
        default_model: "llama3.2",
        credential_types: &[CredentialKind::ApiKey],
    };
    let server = serve(vec![completion("local answer")]).await;
    let mut registry = Registry::new();
    registry
        .register(ChatProvider::new(LOCAL, Some(base_url(&server))))
        .unwrap();

    let ctx = context(vec![credential("local", CredentialKind::ApiKey, KEY)]);
    let out = registry
        .execute("local", "chat", &json!({"prompt": "hi"}), &ctx)
        .await
        .unwrap();
    assert_eq!(out.output, json!("local answer"));
    assert_eq!(server.requests()[0].json()["model"], json!("llama3.2"));
    assert_eq!(
        registry.describe("local").unwrap().description,
        LOCAL.description
    );
}

#[tokio::test]
async fn a_redirect_to_another_origin_is_refused_and_the_key_stays_home() {
    let elsewhere = serve(vec![completion("stolen")]).await;
    let location = format!("{}/v1/chat/completions", elsewhere.origin());
    let server = serve(vec![Reply::text(307, "").header("Location", &location)]).await;
    let err = registry(&server)
        .execute(
            "openai",
            "chat",
            &json!({"prompt": "hi"}),
            &openai_context(),
        )
        .await
        .unwrap_err();
    assert!(!err.is_retryable(), "{err}");
    assert!(err.to_string().contains("redirect"), "{err}");
    assert_eq!(server.requests().len(), 1);
    assert!(elsewhere.requests().is_empty());
}

#[tokio::test]
async fn an_unusable_base_url_fails_each_step_without_quoting_it() {
    let base = url::Url::parse("https://admin:hunter2@127.0.0.1:9/v1").unwrap();
    let provider = ChatProvider::new(OPENAI, Some(base));
    let err = provider
        .execute("chat", &json!({"prompt": "hi"}), &openai_context())
        .await
        .unwrap_err();
    assert_eq!(
        err,
        ProviderError::permanent(
            "the openai base URL is unusable: it holds a user name or password; keys belong in credentials"
        )
    );
}
