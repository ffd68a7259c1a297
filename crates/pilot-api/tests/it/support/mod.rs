//! What the route tests share: a fresh database per test on each backend, the real route table
//! mounted with actix-web's test tools, two users (Alice and Bob) with tokens, real providers
//! (webhook, custom_api, logic, and the AI vendors pointed at a local fake), and a client helper
//! that answers status and JSON. Outgoing requests may reach 127.0.0.1 only.

use std::sync::Arc;

use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::Method;
use actix_web::http::header::{self, HeaderValue};
use actix_web::test::TestRequest;
use actix_web::web::Data;
use actix_web::{App, test};
use pilot_api::{ApiSettings, AppParts, AppState};
use pilot_core::UserId;
use pilot_registry::testing::{FakeServer, Reply as FakeReply};
use pilot_registry::{OutboundClient, OutboundConfig, Registry, parse_allowlist};
use pilot_storage::testing::{Backend, TestDb};
use pilot_telemetry::Metrics;
use serde_json::{Value, json};

/// The body limit the tests configure (small, so 413 is cheap to provoke).
pub(crate) const BODY_LIMIT: usize = 64 * 1024;

/// One backend's world: the database, the state, and two users.
pub(crate) struct World {
    pub(crate) db: TestDb,
    pub(crate) state: AppState,
    pub(crate) alice: User,
    pub(crate) bob: User,
    /// The fake OpenAI-compatible server behind `openai` and `groq`.
    pub(crate) ai: FakeServer,
}

/// A user and a live token.
#[derive(Clone)]
pub(crate) struct User {
    pub(crate) id: UserId,
    pub(crate) token: String,
}

/// An answer: status, headers we look at, the body as JSON (or `Value::Null` when empty or not
/// JSON) and the matched route pattern.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) body: Value,
    pub(crate) text: String,
    pub(crate) allow: Option<String>,
    pub(crate) retry_after: Option<String>,
    pub(crate) pattern: Option<String>,
}

impl World {
    /// A world on `backend`, or `None` when PostgreSQL is not configured (after the loud skip).
    pub(crate) async fn new(backend: Backend) -> Option<World> {
        let db = TestDb::new(backend).await?;
        // The AI vendors answer from a local fake: one chat completion whose content is a
        // valid plan (what `POST /api/plans/generate` asks for).
        let plan = json!({ "name": "Generated", "steps": [{ "id": "a", "provider": "logic", "action": "set", "params": { "value": 1 } }] });
        let completion = json!({
            "id": "chatcmpl-fake", "object": "chat.completion", "created": 1_700_000_000, "model": "fake",
            "choices": [{ "index": 0, "message": { "role": "assistant", "content": plan.to_string() }, "finish_reason": "stop" }],
            "usage": { "prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20 }
        });
        let ai = FakeServer::start(vec![FakeReply::json(200, &completion); 2])
            .await
            .unwrap();
        let mut registry = Registry::new();
        pilot_provider_ai::register(
            &mut registry,
            &pilot_provider_ai::AiConfig {
                openai_base_url: Some(ai.url("/v1")),
                groq_base_url: Some(ai.url("/v1")),
            },
        )
        .unwrap();
        pilot_provider_http::register(&mut registry).unwrap();
        pilot_provider_logic::register(&mut registry).unwrap();
        let http = OutboundClient::new(OutboundConfig {
            allow: parse_allowlist("127.0.0.1/32").unwrap(),
            ..OutboundConfig::default()
        })
        .unwrap();
        let state = AppState::new(AppParts {
            db: db.db().clone(),
            registry: Arc::new(registry),
            http: Arc::new(http),
            engine: pilot_engine::EngineConfig::default(),
            metrics: Metrics::new(),
            settings: ApiSettings {
                body_limit: BODY_LIMIT,
                ..ApiSettings::default()
            },
        });
        let alice = user(&db, "alice").await;
        let bob = user(&db, "bob").await;
        Some(World {
            db,
            state,
            alice,
            bob,
            ai,
        })
    }

    /// Every configured backend's world (SQLite always, PostgreSQL when configured).
    pub(crate) async fn all() -> Vec<World> {
        let mut out = Vec::new();
        for backend in [Backend::Sqlite, Backend::Postgres] {
            out.extend(World::new(backend).await);
        }
        out
    }

    /// The backend's name, for failure messages.
    pub(crate) fn backend(&self) -> &'static str {
        match self.db.backend() {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }

    /// The app: the real route table over this world's state.
    pub(crate) async fn app(
        &self,
    ) -> impl Service<
        actix_http::Request,
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
    > {
        app_for(self.state.clone()).await
    }
}

/// The real route table over `state`, as `pilot_api::config` mounts it.
pub(crate) async fn app_for(
    state: AppState,
) -> impl Service<
    actix_http::Request,
    Response = ServiceResponse<impl MessageBody>,
    Error = actix_web::Error,
> {
    test::init_service(
        App::new()
            .app_data(Data::new(state))
            .configure(pilot_api::config),
    )
    .await
}

async fn user(db: &TestDb, name: &str) -> User {
    let row = db.db().create_user(name, false).await.unwrap();
    let (_, token) = db.db().create_token(&row.id, "test").await.unwrap();
    User {
        id: row.id,
        token: token.expose().to_owned(),
    }
}

/// A request to send.
pub(crate) struct Req {
    pub(crate) method: Method,
    pub(crate) path: String,
    pub(crate) auth: Option<String>,
    pub(crate) content_type: Option<String>,
    pub(crate) body: Vec<u8>,
}

impl Req {
    pub(crate) fn new(method: &str, path: impl Into<String>) -> Req {
        Req {
            method: Method::from_bytes(method.as_bytes()).unwrap(),
            path: path.into(),
            auth: None,
            content_type: None,
            body: Vec::new(),
        }
    }

    pub(crate) fn get(path: impl Into<String>) -> Req {
        Req::new("GET", path)
    }

    pub(crate) fn post(path: impl Into<String>) -> Req {
        Req::new("POST", path)
    }

    pub(crate) fn put(path: impl Into<String>) -> Req {
        Req::new("PUT", path)
    }

    pub(crate) fn delete(path: impl Into<String>) -> Req {
        Req::new("DELETE", path)
    }

    /// As `user`.
    pub(crate) fn by(mut self, user: &User) -> Req {
        self.auth = Some(format!("Bearer {}", user.token));
        self
    }

    /// With this raw Authorization header.
    pub(crate) fn authorization(mut self, value: &str) -> Req {
        self.auth = Some(value.to_owned());
        self
    }

    /// With a JSON body.
    pub(crate) fn json(mut self, body: &Value) -> Req {
        self.content_type = Some("application/json".to_owned());
        self.body = serde_json::to_vec(body).unwrap();
        self
    }

    /// With raw bytes and a content type (or none).
    pub(crate) fn raw(mut self, content_type: Option<&str>, body: impl Into<Vec<u8>>) -> Req {
        self.content_type = content_type.map(str::to_owned);
        self.body = body.into();
        self
    }
}

/// Sends `req` to `app`.
pub(crate) async fn send<S, B>(app: &S, req: Req) -> Reply
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let mut builder = TestRequest::default().method(req.method).uri(&req.path);
    if let Some(auth) = req.auth {
        builder =
            builder.insert_header((header::AUTHORIZATION, HeaderValue::from_str(&auth).unwrap()));
    }
    if let Some(ct) = req.content_type {
        builder = builder.insert_header((header::CONTENT_TYPE, ct));
    }
    if !req.body.is_empty() {
        builder = builder.set_payload(req.body);
    }
    let response = test::call_service(app, builder.to_request()).await;
    let status = response.status().as_u16();
    let pattern = response.request().match_pattern();
    let allow = response
        .headers()
        .get(header::ALLOW)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let retry_after = response
        .headers()
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let bytes = test::read_body(response).await;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Reply {
        status,
        body,
        text,
        allow,
        retry_after,
        pattern,
    }
}

/// Asserts the one error shape and returns `(code, message, details)`.
pub(crate) fn error_of(reply: &Reply) -> (String, String, Value) {
    let error = reply
        .body
        .get("error")
        .and_then(Value::as_object)
        .unwrap_or_else(|| panic!("not an error body ({}): {}", reply.status, reply.text));
    assert_eq!(
        error.len(),
        3,
        "error has exactly code, message, details: {}",
        reply.text
    );
    let code = error["code"].as_str().expect("code is a string").to_owned();
    let message = error["message"]
        .as_str()
        .expect("message is a string")
        .to_owned();
    (code, message, error["details"].clone())
}

/// A plan body whose one webhook step posts to `url`.
pub(crate) fn webhook_plan(name: &str, url: &str) -> Value {
    json!({
        "name": name,
        "steps": [
            { "id": "shape", "provider": "logic", "action": "transform", "params": { "expression": "{order: .}", "input": "${input}" } },
            { "id": "notify", "provider": "webhook", "action": "post", "params": { "url": url, "body": "${steps.shape.output}" } }
        ]
    })
}

/// A plan body with one logic step (no network).
pub(crate) fn logic_plan(name: &str) -> Value {
    json!({
        "name": name,
        "steps": [ { "id": "only", "provider": "logic", "action": "set", "params": { "value": 1 } } ]
    })
}

/// A cheap fingerprint of everything `user` can see through the API: their plans (with each
/// plan's runs and webhook tokens), execution logs, integrations, schedules and credentials.
/// Equal fingerprints before and after a request mean the request changed nothing of theirs.
pub(crate) async fn fingerprint<S, B>(app: &S, user: &User) -> String
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let mut out = String::new();
    let plans = send(app, Req::get("/api/plans?limit=200").by(user)).await;
    assert_eq!(plans.status, 200, "{}", plans.text);
    out.push_str(&plans.text);
    for plan in plans.body["items"].as_array().unwrap() {
        let id = plan["id"].as_str().unwrap();
        for what in ["runs", "hooks"] {
            let r = send(app, Req::get(format!("/api/plans/{id}/{what}")).by(user)).await;
            out.push_str(&r.text);
        }
    }
    for path in [
        "/api/execution-logs?limit=200",
        "/api/custom-integrations?limit=200",
        "/api/scheduler/jobs?limit=200",
    ] {
        let r = send(app, Req::get(path).by(user)).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text);
        out.push_str(&r.text);
    }
    for provider in ["openai", "groq", "custom_api"] {
        let r = send(
            app,
            Req::get(format!("/api/provider-credentials/{provider}")).by(user),
        )
        .await;
        out.push_str(&r.text);
    }
    out
}
