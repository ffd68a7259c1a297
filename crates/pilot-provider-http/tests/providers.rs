//! The `webhook` and `custom_api` providers against fake servers on 127.0.0.1 (through the
//! registry, as the engine calls them): what is sent (method, URL, headers, body, the
//! Idempotency-Key, the credential only to its origin), what comes back, and how failures are
//! classified. The outbound allowlist opens 127.0.0.1/32 only; names resolve through a static
//! table, never DNS.

// Marks the whole file as test code, so helpers outside #[test] functions may unwrap.
#![cfg(test)]

use std::sync::Arc;
use std::time::Duration;

use pilot_core::{Credential, CredentialKind, Integration, MemoryStore, RunId, Secret, UserId};
use pilot_registry::testing::{FakeServer, Reply};
use pilot_registry::{
    OutboundClient, OutboundConfig, ProviderContext, ProviderError, ProviderOutput, Registry,
    StaticLookup, parse_allowlist,
};
use serde_json::{Value, json};

struct Harness {
    registry: Registry,
    store: Arc<MemoryStore>,
    ctx: ProviderContext,
}

fn harness() -> Harness {
    let lookup = StaticLookup::new()
        .with("api.test", ["127.0.0.1".parse().unwrap()])
        .with("inside.test", ["10.0.0.7".parse().unwrap()]);
    let config = OutboundConfig {
        allow: parse_allowlist("127.0.0.1/32").unwrap(),
        max_response_bytes: 64 * 1024,
        ..OutboundConfig::default()
    };
    let http = Arc::new(OutboundClient::with_lookup(config, Arc::new(lookup)).unwrap());
    let store = Arc::new(MemoryStore::new());
    let mut ctx = ProviderContext::new(UserId::from("u1"), RunId::from("run-1"), "call", http);
    ctx.idempotency_key = "run-1:call".into();
    ctx.timeout = Duration::from_secs(10);
    ctx.store = Some(store.clone());
    let mut registry = Registry::new();
    pilot_provider_http::register(&mut registry).unwrap();
    Harness {
        registry,
        store,
        ctx,
    }
}

impl Harness {
    async fn run(
        &self,
        provider: &str,
        action: &str,
        params: Value,
    ) -> Result<ProviderOutput, ProviderError> {
        self.registry
            .execute(provider, action, &params, &self.ctx)
            .await
    }

    fn integration(&self, name: &str, base_url: &str, default_headers: &[(&str, &str)]) {
        self.store.add_integration(
            &self.ctx.user_id,
            Integration {
                name: name.into(),
                base_url: base_url.into(),
                auth_scheme: Some(CredentialKind::ApiKey),
                auth_header: None,
                default_headers: default_headers
                    .iter()
                    .map(|(n, v)| ((*n).into(), (*v).into()))
                    .collect(),
            },
        );
    }

    fn credential(
        &mut self,
        kind: CredentialKind,
        secret: &str,
        integration: Option<&str>,
        origin: Option<&str>,
    ) {
        self.ctx.credentials.push(Credential {
            provider: "custom_api".into(),
            kind,
            secret: Secret::new(secret),
            origin: origin.map(str::to_owned),
            integration: integration.map(str::to_owned),
            header_name: None,
        });
    }
}

#[test]
fn both_providers_register_with_their_actions() {
    let registry = harness().registry;
    let names: Vec<(&str, Vec<&str>)> = registry
        .list()
        .map(|d| {
            (
                d.name.as_str(),
                d.actions.iter().map(|a| a.name.as_str()).collect(),
            )
        })
        .collect();
    assert_eq!(
        names,
        vec![
            ("webhook", vec!["post", "send"]),
            ("custom_api", vec!["request"])
        ]
    );
    assert!(
        registry
            .describe("webhook")
            .unwrap()
            .credential_types
            .is_empty()
    );
    assert!(
        registry
            .describe("custom_api")
            .unwrap()
            .credential_types
            .contains(&CredentialKind::Bearer)
    );
    let mut again = registry.clone();
    assert!(pilot_provider_http::register(&mut again).is_err());
}

#[tokio::test]
async fn webhook_post_sends_json_with_the_idempotency_key_and_returns_the_answer() {
    let server = FakeServer::start(vec![
        Reply::json(201, &json!({"id": 7}))
            .header("x-request-id", "r1")
            .header("set-cookie", "a=1")
            .header("set-cookie", "b=2"),
    ])
    .await
    .unwrap();
    let h = harness();
    let out = h
        .run(
            "webhook",
            "post",
            json!({"url": server.url("/hook").as_str(), "body": {"total": 3, "items": ["a"]}, "headers": {"X-Source": "pilot", "X-Count": 2}}),
        )
        .await
        .unwrap();
    assert_eq!(out.output["status"], 201);
    assert_eq!(out.output["body"], json!({"id": 7}));
    assert_eq!(out.output["headers"]["x-request-id"], "r1");
    assert_eq!(out.output["headers"]["set-cookie"], "a=1, b=2");
    assert_eq!(out.metadata["status"], 201);

    let seen = &server.requests()[0];
    assert_eq!(
        (seen.method.as_str(), seen.target.as_str()),
        ("POST", "/hook")
    );
    assert_eq!(seen.json(), json!({"total": 3, "items": ["a"]}));
    assert_eq!(seen.header("content-type"), Some("application/json"));
    assert_eq!(seen.header("idempotency-key"), Some("run-1:call"));
    assert_eq!(seen.header("x-source"), Some("pilot"));
    assert_eq!(seen.header("x-count"), Some("2"));
}

#[tokio::test]
async fn webhook_send_uses_the_method_and_encodes_text_bodies() {
    let server = FakeServer::start(vec![Reply::text(200, "plain answer")])
        .await
        .unwrap();
    let h = harness();
    let url = server.url("/x");
    let cases = [
        (
            json!({"method": "put", "url": url.as_str(), "body": "hello"}),
            "PUT",
            "hello",
            Some("text/plain; charset=utf-8"),
        ),
        (
            json!({"method": "PATCH", "url": url.as_str(), "body": "{\"a\":1}", "headers": {"content-type": "application/json"}}),
            "PATCH",
            "{\"a\":1}",
            Some("application/json"),
        ),
        (
            json!({"method": "DELETE", "url": url.as_str()}),
            "DELETE",
            "",
            None,
        ),
        (
            json!({"method": "GET", "url": url.as_str(), "body": null, "headers": {"Idempotency-Key": "mine"}}),
            "GET",
            "",
            None,
        ),
    ];
    for (i, (params, method, body, content_type)) in cases.into_iter().enumerate() {
        let out = h.run("webhook", "send", params).await.unwrap();
        assert_eq!(out.output["body"], "plain answer");
        let seen = &server.requests()[i];
        assert_eq!(seen.method, method);
        assert_eq!(String::from_utf8_lossy(&seen.body), body);
        assert_eq!(seen.header("content-type"), content_type);
        let keys: Vec<&str> = seen
            .headers
            .iter()
            .filter(|(n, _)| n == "idempotency-key")
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(keys, vec!["run-1:call"], "exactly the engine's key");
    }
}

#[tokio::test]
async fn statuses_map_to_outcomes() {
    let server = FakeServer::start(vec![
        Reply::json(422, &json!({"error": "total must be positive"})),
        Reply::text(503, "maintenance"),
        Reply::text(200, "ok"),
        Reply::status(429).header("retry-after", "2"),
        Reply::status(408),
    ])
    .await
    .unwrap();
    let h = harness();
    let params = json!({"url": server.url("/").as_str(), "body": {}});
    let mut outcomes = Vec::new();
    for _ in 0..5 {
        outcomes.push(
            h.run("webhook", "post", params.clone())
                .await
                .map(|o| o.output["status"].clone()),
        );
    }
    assert_eq!(
        outcomes[0],
        Err(ProviderError::permanent(
            "HTTP 422 Unprocessable Entity: {\"error\":\"total must be positive\"}"
        ))
    );
    assert_eq!(
        outcomes[1],
        Err(ProviderError::retryable(
            "HTTP 503 Service Unavailable: maintenance"
        ))
    );
    assert_eq!(outcomes[2], Ok(json!(200)), "5xx then success");
    assert_eq!(
        outcomes[3],
        Err(ProviderError::Retryable {
            message: "HTTP 429 Too Many Requests".into(),
            retry_after: Some(Duration::from_secs(2))
        })
    );
    assert!(outcomes[4].as_ref().unwrap_err().is_retryable());
    // The same key on every attempt of the step.
    let keys: Vec<Option<String>> = server
        .requests()
        .iter()
        .map(|r| r.header("idempotency-key").map(str::to_owned))
        .collect();
    assert_eq!(keys, vec![Some("run-1:call".to_owned()); 5]);
}

#[tokio::test]
async fn transport_failures_are_classified() {
    let h = harness();
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let refused = h
        .run(
            "webhook",
            "post",
            json!({"url": format!("http://127.0.0.1:{port}/")}),
        )
        .await
        .unwrap_err();
    assert!(
        refused.is_retryable() && refused.to_string().contains("connection failed"),
        "{refused}"
    );

    let huge = FakeServer::start(vec![Reply::text(200, &"z".repeat(100_000))])
        .await
        .unwrap();
    let too_large = h
        .run("webhook", "post", json!({"url": huge.url("/").as_str()}))
        .await
        .unwrap_err();
    assert_eq!(
        too_large,
        ProviderError::permanent("response body exceeds 65536 bytes")
    );

    let reset = FakeServer::start(vec![Reply::text(200, &"r".repeat(5000)).reset_after(100)])
        .await
        .unwrap();
    let err = h
        .run("webhook", "post", json!({"url": reset.url("/").as_str()}))
        .await
        .unwrap_err();
    assert!(
        err.is_retryable() && err.to_string().contains("transport error"),
        "{err}"
    );

    let slow = FakeServer::start(vec![
        Reply::text(200, &"s".repeat(200)).drip(1, Duration::from_millis(20)),
    ])
    .await
    .unwrap();
    let mut h = h;
    h.ctx.timeout = Duration::from_millis(300);
    let err = h
        .run("webhook", "post", json!({"url": slow.url("/").as_str()}))
        .await
        .unwrap_err();
    assert_eq!(err, ProviderError::retryable("timed out"));

    let hang = FakeServer::start(vec![Reply::hang()]).await.unwrap();
    let err = h
        .run("webhook", "post", json!({"url": hang.url("/").as_str()}))
        .await
        .unwrap_err();
    assert_eq!(err, ProviderError::retryable("timed out"));
}

#[tokio::test]
async fn bad_params_and_guarded_urls_are_permanent_errors() {
    let blocked = FakeServer::start_on(
        "127.0.0.2".parse().unwrap(),
        vec![Reply::text(200, "reached")],
    )
    .await
    .unwrap();
    let ok = FakeServer::start(vec![Reply::text(200, "ok")])
        .await
        .unwrap();
    let h = harness();
    let p = blocked.addr().port();
    let cases = [
        ("webhook", "post", json!({}), "param 'url' is required"),
        (
            "webhook",
            "post",
            json!({"url": "not a url"}),
            "param 'url' is not a valid URL",
        ),
        (
            "webhook",
            "post",
            json!({"url": "ftp://127.0.0.1/"}),
            "scheme 'ftp' is not allowed",
        ),
        (
            "webhook",
            "post",
            json!({"url": "http://169.254.169.254/latest/meta-data/"}),
            "cloud metadata",
        ),
        (
            "webhook",
            "post",
            json!({"url": "http://[fd00:ec2::254]/"}),
            "cloud metadata",
        ),
        (
            "webhook",
            "post",
            json!({"url": "http://inside.test/"}),
            "inside.test resolves to 10.0.0.7",
        ),
        (
            "webhook",
            "post",
            json!({"url": format!("http://127.0.0.2:{p}/")}),
            "loopback",
        ),
        (
            "webhook",
            "post",
            json!({"url": format!("http://0x7f000002:{p}/")}),
            "loopback",
        ),
        (
            "webhook",
            "post",
            json!({"url": format!("http://[::ffff:127.0.0.2]:{p}/")}),
            "embeds 127.0.0.2",
        ),
        (
            "webhook",
            "post",
            json!({"url": ok.url("/").as_str(), "headers": {"X-A": "1\r\nX-B: 2"}}),
            "CR, LF or NUL",
        ),
        (
            "webhook",
            "post",
            json!({"url": ok.url("/").as_str(), "headers": {"Host": "evil.test"}}),
            "'Host' is set by the HTTP client",
        ),
        (
            "webhook",
            "post",
            json!({"url": ok.url("/").as_str(), "headers": {"X-A": ["1"]}}),
            "must be a string, number or boolean",
        ),
        (
            "webhook",
            "post",
            json!({"url": ok.url("/").as_str(), "method": "PUT"}),
            "param 'method' is not a param of webhook.post",
        ),
        (
            "webhook",
            "send",
            json!({"url": ok.url("/").as_str()}),
            "param 'method' is required",
        ),
        (
            "webhook",
            "send",
            json!({"url": ok.url("/").as_str(), "method": "OPTIONS"}),
            "must be GET, POST, PUT, PATCH or DELETE",
        ),
        ("webhook", "fire", json!({}), "has no action 'fire'"),
        (
            "custom_api",
            "request",
            json!({}),
            "param 'url' or param 'integration' is required",
        ),
        (
            "custom_api",
            "request",
            json!({"url": ok.url("/").as_str(), "integration": "x"}),
            "not both",
        ),
        (
            "custom_api",
            "request",
            json!({"url": ok.url("/").as_str(), "path": "/x"}),
            "param 'path' goes with 'integration'",
        ),
        (
            "custom_api",
            "request",
            json!({"integration": "nope"}),
            "no custom integration named 'nope'",
        ),
        (
            "custom_api",
            "request",
            json!({"url": ok.url("/").as_str(), "query": [1]}),
            "param 'query' must be an object",
        ),
        (
            "custom_api",
            "request",
            json!({"url": ok.url("/").as_str(), "query": {"a": {"b": 1}}}),
            "the value of 'a' must be",
        ),
    ];
    for (provider, action, params, fragment) in cases {
        let err = h.run(provider, action, params.clone()).await.unwrap_err();
        assert!(
            !err.is_retryable() && err.to_string().contains(fragment),
            "{params}: {err}"
        );
    }
    assert_eq!(blocked.connections(), 0);
    assert_eq!(ok.connections(), 0);
}

#[tokio::test]
async fn custom_api_calls_an_integration_with_its_credential_headers_and_query() {
    let server = FakeServer::start(vec![Reply::json(200, &json!({"users": [{"id": 1}]}))])
        .await
        .unwrap();
    let mut h = harness();
    h.integration(
        "crm",
        server.url("/api/v2/").as_str(),
        &[("Accept", "application/json"), ("X-Tenant", "t1")],
    );
    h.credential(
        CredentialKind::ApiKey,
        "crm-key-123",
        Some("crm"),
        Some(&server.origin()),
    );
    let out = h
        .run(
            "custom_api",
            "request",
            json!({
                "integration": "crm",
                "path": "/users",
                "method": "post",
                "query": {"q": "a b&c", "limit": 10, "active": true, "skip": null},
                "headers": {"x-tenant": "t2"},
                "body": {"name": "Ada"}
            }),
        )
        .await
        .unwrap();
    assert_eq!(out.output["body"], json!({"users": [{"id": 1}]}));
    let seen = &server.requests()[0];
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.target, "/api/v2/users?active=true&limit=10&q=a+b%26c");
    assert_eq!(seen.header("x-api-key"), Some("crm-key-123"));
    assert_eq!(seen.header("accept"), Some("application/json"));
    assert_eq!(
        seen.header("x-tenant"),
        Some("t2"),
        "step headers override the integration's"
    );
    assert_eq!(seen.header("idempotency-key"), Some("run-1:call"));
    assert_eq!(seen.json(), json!({"name": "Ada"}));
}

#[tokio::test]
async fn custom_api_credentials_are_bound_to_their_origin() {
    let home = FakeServer::start(vec![Reply::text(200, "home")])
        .await
        .unwrap();
    let elsewhere = FakeServer::start(vec![Reply::text(200, "elsewhere")])
        .await
        .unwrap();
    let mut h = harness();
    h.integration("home", home.url("/base").as_str(), &[]);
    h.credential(
        CredentialKind::Bearer,
        "home-token-1",
        Some("home"),
        Some(&home.origin()),
    );
    h.credential(
        CredentialKind::Basic,
        "ann:pw-elsewhere",
        None,
        Some(&elsewhere.origin()),
    );
    h.credential(CredentialKind::ApiKey, "unbound-key-9", None, None);

    // By integration, by full URL to the same origin, by name resolving to it: the bearer token.
    h.run(
        "custom_api",
        "request",
        json!({"integration": "home", "path": "/a"}),
    )
    .await
    .unwrap();
    h.run(
        "custom_api",
        "request",
        json!({"url": home.url("/other").as_str()}),
    )
    .await
    .unwrap();
    // To the origin stored with the basic credential: that one.
    h.run(
        "custom_api",
        "request",
        json!({"url": elsewhere.url("/e").as_str()}),
    )
    .await
    .unwrap();
    // A host name is another origin even when it resolves to the same address: nothing.
    let by_name = format!("http://api.test:{}/n", home.addr().port());
    h.run("custom_api", "request", json!({"url": by_name}))
        .await
        .unwrap();

    let auth = |server: &FakeServer| -> Vec<Option<String>> {
        server
            .requests()
            .iter()
            .map(|r| r.header("authorization").map(str::to_owned))
            .collect()
    };
    assert_eq!(
        auth(&home),
        vec![
            Some("Bearer home-token-1".into()),
            Some("Bearer home-token-1".into()),
            None
        ]
    );
    assert_eq!(
        auth(&elsewhere),
        vec![Some("Basic YW5uOnB3LWVsc2V3aGVyZQ==".into())]
    );
    for request in home.requests().iter().chain(elsewhere.requests().iter()) {
        assert_eq!(
            request.header("x-api-key"),
            None,
            "the unbound key is never sent"
        );
    }
}

/// A credential stays bound to the origin it was stored for: an integration moved to another
/// host (or deleted and re-created there under the same name) does not take it along, and the
/// step says to store the credential again.
#[tokio::test]
async fn a_moved_integration_does_not_carry_its_credential() {
    let stored_for = FakeServer::start(vec![]).await.unwrap();
    let moved_to = FakeServer::start(vec![Reply::text(200, "attacker"); 2])
        .await
        .unwrap();
    let mut h = harness();
    h.integration("rb", moved_to.url("/").as_str(), &[]);
    h.credential(
        CredentialKind::Header,
        "rb-secret-header-value-0123456789",
        Some("rb"),
        Some(&stored_for.origin()),
    );
    let err = h
        .run(
            "custom_api",
            "request",
            json!({"integration": "rb", "path": "/x"}),
        )
        .await
        .unwrap_err();
    assert!(!err.is_retryable());
    let message = err.to_string();
    assert!(message.contains(&stored_for.origin()), "{message}");
    assert!(message.contains(&moved_to.origin()), "{message}");
    assert!(message.contains("store it again"), "{message}");
    // Neither by integration nor by its new URL does the secret reach the new host.
    h.run(
        "custom_api",
        "request",
        json!({"url": moved_to.url("/y").as_str()}),
    )
    .await
    .unwrap();
    assert_eq!(moved_to.requests().len(), 1);
    for request in moved_to.requests() {
        for (_, value) in &request.headers {
            assert!(
                !value.contains("rb-secret"),
                "secret sent to the new origin"
            );
        }
    }
    assert!(stored_for.requests().is_empty());
}

#[tokio::test]
async fn a_cross_origin_redirect_drops_the_api_key() {
    let b = FakeServer::start(vec![Reply::json(200, &json!({"landed": true}))])
        .await
        .unwrap();
    let a = FakeServer::start(vec![Reply::redirect(302, b.url("/landing").as_str())])
        .await
        .unwrap();
    let mut h = harness();
    h.integration("svc", a.url("/").as_str(), &[]);
    h.credential(
        CredentialKind::ApiKey,
        "svc-key-42",
        Some("svc"),
        Some(&a.origin()),
    );
    let out = h
        .run(
            "custom_api",
            "request",
            json!({"integration": "svc", "path": "/start"}),
        )
        .await
        .unwrap();
    assert_eq!(out.output["body"], json!({"landed": true}));
    assert_eq!(out.metadata["url"], b.url("/landing").as_str());
    assert_eq!(a.requests()[0].header("x-api-key"), Some("svc-key-42"));
    assert_eq!(b.requests()[0].header("x-api-key"), None);
    assert_eq!(
        b.requests()[0].header("idempotency-key"),
        Some("run-1:call")
    );
}

/// The provider pattern docs/PROVIDERS.md shows ("Writing an HTTP-based provider"), kept
/// compiling and working here.
async fn notify(
    ctx: &ProviderContext,
    url: &str,
    text: &str,
) -> Result<ProviderOutput, ProviderError> {
    use pilot_registry::{Method, OutboundRequest, classify_status};

    let url = url::Url::parse(url)
        .map_err(|e| ProviderError::permanent(format!("param 'url' is not a valid URL: {e}")))?;
    let mut request = OutboundRequest::new(Method::POST, url);
    request.headers = vec![
        ("Content-Type".into(), "text/plain; charset=utf-8".into()),
        ("Idempotency-Key".into(), ctx.idempotency_key.clone()),
    ];
    request.body = Some(text.to_owned().into());
    request.timeout = ctx.timeout;
    let response = ctx.http.send(request).await?;
    if let Some(error) = classify_status(&response, &ctx.redactor()) {
        return Err(error);
    }
    Ok(ProviderOutput {
        output: json!({ "status": response.status }),
        message: Some(format!("HTTP {}", response.status)),
        metadata: Value::Null,
    })
}

#[tokio::test]
async fn the_documented_provider_pattern_works() {
    let server = FakeServer::start(vec![Reply::status(204), Reply::status(500)])
        .await
        .unwrap();
    let h = harness();
    let out = notify(&h.ctx, server.url("/n").as_str(), "hello")
        .await
        .unwrap();
    assert_eq!(out.output, json!({"status": 204}));
    let err = notify(&h.ctx, server.url("/n").as_str(), "again")
        .await
        .unwrap_err();
    assert!(err.is_retryable());
    let err = notify(&h.ctx, "http://169.254.169.254/", "x")
        .await
        .unwrap_err();
    assert!(
        !err.is_retryable() && err.to_string().contains("metadata"),
        "{err}"
    );
    assert_eq!(server.requests()[0].body, b"hello");
    assert_eq!(
        server.requests()[0].header("idempotency-key"),
        Some("run-1:call")
    );
}
