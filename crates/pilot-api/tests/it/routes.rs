//! Every route's happy path, on both storage backends, through the real route table: a user's
//! whole journey from integrations and credentials to plans, runs, logs, schedules and webhooks.
//! The test records which route patterns it reached and fails if any route of the table was
//! left out, so a new route without a happy path here is noticed.

use std::collections::BTreeSet;

use crate::support::{Req, World, send};
use pilot_registry::testing::{FakeServer, Reply as FakeReply};
use serde_json::{Value, json};

#[actix_web::test]
async fn every_route_works_on_every_backend() {
    for world in World::all().await {
        journey(&world).await;
    }
}

async fn journey(world: &World) {
    let backend = world.backend();
    let app = world.app().await;
    let alice = &world.alice;
    let mut reached: BTreeSet<(String, String)> = BTreeSet::new();
    let fake = FakeServer::start(vec![FakeReply::json(200, &json!({ "ok": true })); 16])
        .await
        .unwrap();

    macro_rules! call {
        ($req:expr, $status:expr) => {{
            let req = $req;
            let method = req.method.to_string();
            let reply = send(&app, req).await;
            assert_eq!(
                reply.status, $status,
                "[{backend}] {method} {:?}: {}",
                reply.pattern, reply.text
            );
            if let Some(p) = &reply.pattern {
                reached.insert((method, p.clone()));
            }
            reply
        }};
    }

    // System routes.
    let health = call!(Req::get("/api/health"), 200);
    assert_eq!(health.body["status"], "ok");
    let ready = call!(Req::get("/api/ready"), 200);
    assert_eq!(ready.body["database"], backend);
    let doc = call!(Req::get("/api/openapi.json"), 200);
    assert_eq!(doc.body["openapi"], "3.1.0");
    let providers = call!(Req::get("/api/providers").by(alice), 200);
    let names: Vec<&str> = providers.body["providers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["openai", "groq", "webhook", "custom_api", "logic"]);

    // Integrations.
    let created = call!(
        Req::post("/api/custom-integrations")
            .by(alice)
            .json(&json!({
                "name": "crm", "base_url": fake.origin(), "auth_scheme": "bearer",
                "default_headers": { "Accept": "application/json" }
            })),
        201
    );
    let integration = created.body["id"].as_str().unwrap().to_owned();
    call!(
        Req::get(format!("/api/custom-integrations/{integration}")).by(alice),
        200
    );
    let list = call!(Req::get("/api/custom-integrations").by(alice), 200);
    assert_eq!(list.body["items"].as_array().unwrap().len(), 1);
    let updated =
        call!(
        Req::put(format!("/api/custom-integrations/{integration}")).by(alice).json(&json!({
            "name": "crm", "base_url": format!("{}/v2", fake.origin()), "auth_scheme": "bearer"
        })),
        200
    );
    assert!(updated.body["base_url"].as_str().unwrap().ends_with("/v2"));

    // Credentials: write-only.
    let secret = "sk-live-super-secret-value";
    let stored = call!(
        Req::post("/api/provider-credentials/custom_api")
            .by(alice)
            .json(&json!({
                "type": "bearer", "value": secret, "integration": "crm"
            })),
        200
    );
    assert_eq!(stored.body["origin"], fake.origin());
    assert!(!stored.text.contains(secret));
    let status = call!(
        Req::get("/api/provider-credentials/custom_api").by(alice),
        200
    );
    assert_eq!(status.body["configured"], true);
    assert!(!status.text.contains(secret));

    // A draft plan from plain English, with the caller's own model key (not saved).
    call!(
        Req::post("/api/provider-credentials/openai")
            .by(alice)
            .json(&json!({ "type": "api_key", "value": "sk-test" })),
        200
    );
    let draft = call!(
        Req::post("/api/plans/generate")
            .by(alice)
            .json(&json!({ "prompt": "set a value" })),
        200
    );
    assert!(draft.text.contains("Generated"), "{}", draft.text);
    assert!(!draft.text.contains("sk-test"));
    assert_eq!(
        world.ai.requests()[0].header("authorization"),
        Some("Bearer sk-test")
    );

    // Plans.
    let plan_body = crate::support::webhook_plan("Notify", fake.url("/orders").as_ref());
    // Checked first, saving nothing: the same plan is valid; a broken one lists every problem.
    let checked = call!(
        Req::post("/api/plans/validate").by(alice).json(&plan_body),
        200
    );
    assert_eq!(checked.body["valid"], true, "{}", checked.text);
    let broken = call!(
        Req::post("/api/plans/validate").by(alice).json(&json!({ "name": "b", "steps": [
            { "id": "one", "provider": "logic", "action": "transform", "params": { "expresion": ".a" } },
            { "id": "two", "provider": "webhook", "action": "post", "params": { "url": "http://10.0.0.9/x", "body": {} } },
            { "id": "three", "provider": "nope", "action": "x", "params": {} }
        ] })),
        200
    );
    assert_eq!(broken.body["valid"], false);
    let fields: Vec<&str> = broken.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap_or(""))
        .collect();
    for field in [
        "steps[0].params.expression",
        "steps[0].params.expresion",
        "steps[1].params.url",
        "steps[2].provider",
    ] {
        assert!(fields.contains(&field), "{field} missing from {fields:?}");
    }
    let plan = call!(Req::post("/api/plans").by(alice).json(&plan_body), 201);
    assert_eq!(plan.body["required_providers"], json!(["logic", "webhook"]));
    let plan_id = plan.body["id"].as_str().unwrap().to_owned();
    call!(Req::get(format!("/api/plans/{plan_id}")).by(alice), 200);
    let plans = call!(Req::get("/api/plans?limit=10").by(alice), 200);
    assert_eq!(plans.body["items"][0]["id"], plan_id.as_str());
    let mut replaced = plan_body.clone();
    replaced["name"] = json!("Notify (v2)");
    replaced["trigger"] =
        json!({ "type": "cron", "cron": "0 9 * * 1-5", "timezone": "Europe/Paris" });
    let replaced = call!(
        Req::put(format!("/api/plans/{plan_id}"))
            .by(alice)
            .json(&replaced),
        200
    );
    assert_eq!(replaced.body["name"], "Notify (v2)");

    // Inline execution: every step's outcome comes back, the fake saw the shaped body.
    let run = call!(
        Req::post("/api/execute")
            .by(alice)
            .json(&json!({ "plan_id": plan_id, "input": { "id": 7 } })),
        200
    );
    assert_eq!(run.body["status"], "succeeded", "{}", run.text);
    assert_eq!(run.body["steps"][1]["status"], "succeeded");
    assert_eq!(run.body["steps"][1]["output"]["status"], 200);
    let received = fake.requests();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].json(), json!({ "order": { "id": 7 } }));
    let run_id = run.body["id"].as_str().unwrap().to_owned();
    // The inline answer is built from the engine's outcome, not read back: it must say what
    // the stored run says (only the run's finished_at may differ by the answer's moment).
    let stored = call!(Req::get(format!("/api/runs/{run_id}")).by(alice), 200);
    let without_finish = |v: &serde_json::Value| {
        let mut v = v.clone();
        v.as_object_mut().unwrap().remove("finished_at");
        v
    };
    assert_eq!(without_finish(&run.body), without_finish(&stored.body));
    assert!(stored.body["finished_at"].is_string());
    let step_id = stored.body["steps"][1]["id"].as_str().unwrap().to_owned();
    let whole = call!(
        Req::get(format!("/api/runs/{run_id}/steps/{step_id}/output")).by(alice),
        200
    );
    assert_eq!(whole.body["output"], stored.body["steps"][1]["output"]);
    assert_eq!(whole.body["status"], "succeeded");
    assert!(stored.body["steps"][1].get("output_truncated").is_none());

    // An output over 64 KiB is left out of the run's view, with its size; the step's own
    // route gives it whole.
    let large = call!(
        Req::post("/api/execute").by(alice).json(&json!({
            "plan": { "name": "large", "steps": [
                { "id": "big", "provider": "logic", "action": "transform",
                  "params": { "expression": "[range(0; 15000)]", "input": null } }
            ] }
        })),
        200
    );
    let step = &large.body["steps"][0];
    assert_eq!(step["status"], "succeeded", "{}", large.text);
    assert_eq!(step["output"], json!(null));
    assert_eq!(step["output_truncated"], true);
    let big: Vec<u32> = (0..15_000).collect();
    let big = json!(big);
    assert_eq!(
        step["output_bytes"],
        serde_json::to_vec(&big).unwrap().len()
    );
    assert!(serde_json::to_vec(&big).unwrap().len() > 64 * 1024);
    let large_id = large.body["id"].as_str().unwrap();
    let stored_large = call!(Req::get(format!("/api/runs/{large_id}")).by(alice), 200);
    assert_eq!(stored_large.body["steps"][0]["output_truncated"], true);
    assert!(
        stored_large.text.len() < 4096,
        "{} bytes",
        stored_large.text.len()
    );
    let whole = call!(
        Req::get(format!("/api/runs/{large_id}/steps/big/output")).by(alice),
        200
    );
    assert_eq!(whole.body["output"], json!(big));
    call!(
        Req::get(format!("/api/runs/{large_id}/steps/nope/output")).by(alice),
        404
    );
    let runs = call!(
        Req::get(format!("/api/plans/{plan_id}/runs")).by(alice),
        200
    );
    assert_eq!(runs.body["items"][0]["id"], run_id.as_str());

    // One log row per attempt.
    let logs = call!(
        Req::get(format!("/api/execution-logs?run_id={run_id}")).by(alice),
        200
    );
    let rows = logs.body["items"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{}", logs.text);
    assert!(rows.iter().all(|r| r["status"] == "succeeded"));
    call!(
        Req::get(format!("/api/execution-logs?plan_id={plan_id}&limit=1")).by(alice),
        200
    );

    // Runs across plans.
    let across = call!(
        Req::get("/api/runs?status=succeeded,failed&limit=5").by(alice),
        200
    );
    assert!(
        !across.body["items"].as_array().unwrap().is_empty(),
        "{}",
        across.text
    );

    // Queued execution, then cancel it before any worker runs it.
    let accepted = call!(
        Req::post("/api/execute")
            .by(alice)
            .json(&json!({ "plan_id": plan_id, "async": true })),
        202
    );
    assert_eq!(accepted.body["status"], "queued");
    let queued = accepted.body["run_id"].as_str().unwrap().to_owned();
    let cancelled = call!(
        Req::post(format!("/api/runs/{queued}/cancel")).by(alice),
        200
    );
    assert_eq!(cancelled.body["status"], "cancelled");

    // One step with given params, recorded like a run.
    let step = call!(
        Req::post("/api/execute-step").by(alice).json(&json!({
            "provider": "logic", "action": "transform", "params": { "expression": ".a + 1", "input": { "a": 41 } }
        })),
        200
    );
    assert_eq!(step.body["success"], true, "{}", step.text);
    assert_eq!(step.body["output"], 42);
    let step_run = step.body["run_id"].as_str().unwrap();
    let step_logs = call!(
        Req::get(format!("/api/execution-logs?run_id={step_run}")).by(alice),
        200
    );
    assert_eq!(step_logs.body["items"].as_array().unwrap().len(), 1);

    // Schedules: from the stored cron trigger, listed, previewed, removed.
    let schedule = call!(
        Req::post(format!("/api/plans/{plan_id}/schedule")).by(alice),
        200
    );
    assert_eq!(schedule.body["cron"], "0 9 * * 1-5");
    assert_eq!(schedule.body["timezone"], "Europe/Paris");
    assert!(schedule.body["next_run_at"].is_string());
    let jobs = call!(Req::get("/api/scheduler/jobs").by(alice), 200);
    assert_eq!(jobs.body["items"][0]["plan_id"], plan_id.as_str());
    let preview = call!(
        Req::get("/api/scheduler/preview?cron=30%202%20*%20*%20*&timezone=America/New_York&count=3&after=2025-03-08T00:00:00Z").by(alice),
        200
    );
    assert_eq!(
        preview.body["fires"],
        json!([
            "2025-03-08T02:30:00-05:00",
            "2025-03-09T03:00:00-04:00",
            "2025-03-10T02:30:00-04:00"
        ])
    );
    let removed = call!(
        Req::post(format!("/api/plans/{plan_id}/unschedule")).by(alice),
        200
    );
    assert_eq!(removed.body["unscheduled"], true);

    // Webhooks: issue a token, start the plan with a JSON body, revoke the token.
    let hook = call!(
        Req::post(format!("/api/plans/{plan_id}/hooks")).by(alice),
        201
    );
    let token = hook.body["token"].as_str().unwrap().to_owned();
    let hook_id = hook.body["id"].as_str().unwrap().to_owned();
    let hooks = call!(
        Req::get(format!("/api/plans/{plan_id}/hooks")).by(alice),
        200
    );
    assert!(!hooks.text.contains(&token));
    let started = call!(
        Req::post(format!("/api/hooks/{token}")).json(&json!({ "from": "outside" })),
        202
    );
    let hook_run = started.body["run_id"].as_str().unwrap();
    let queued = call!(Req::get(format!("/api/runs/{hook_run}")).by(alice), 200);
    assert_eq!(queued.body["trigger"], "webhook");
    assert_eq!(queued.body["input"], json!({ "from": "outside" }));
    call!(
        Req::delete(format!("/api/plans/{plan_id}/hooks/{hook_id}")).by(alice),
        204
    );

    // Metrics count what ran, with no user data in labels.
    let metrics = call!(Req::get("/metrics"), 200);
    assert!(
        metrics
            .text
            .contains("pilot_step_attempts_total{provider=\"webhook\",status=\"succeeded\"}"),
        "{}",
        metrics.text
    );
    assert!(
        metrics.text.contains("pilot_queue_depth 1"),
        "{}",
        metrics.text
    );
    assert!(!metrics.text.contains("alice") && !metrics.text.contains("Notify"));

    // Deletions.
    let deleted = call!(
        Req::delete("/api/provider-credentials/custom_api").by(alice),
        200
    );
    assert_eq!(deleted.body["deleted"], 1);
    call!(
        Req::delete(format!("/api/custom-integrations/{integration}")).by(alice),
        204
    );
    // The webhook's run is still queued: deleting needs force (which cancels it).
    call!(Req::delete(format!("/api/plans/{plan_id}")).by(alice), 409);
    call!(
        Req::delete(format!("/api/plans/{plan_id}?force=true")).by(alice),
        204
    );
    call!(Req::get(format!("/api/plans/{plan_id}")).by(alice), 404);

    let expected: BTreeSet<(String, String)> = pilot_api::routes()
        .map(|r| (r.verb.as_str().to_owned(), r.path.to_owned()))
        .collect();
    let missing: Vec<_> = expected.difference(&reached).collect();
    assert!(
        missing.is_empty(),
        "[{backend}] routes without a happy path: {missing:?}"
    );
}

#[actix_web::test]
async fn credentials_never_come_back_in_any_encoding() {
    for world in World::all().await {
        let app = world.app().await;
        let secret = "p@ss:w0rd/with+chars&more";
        // Raw, base64 (= base64url here, unpadded), hex, percent-encoded.
        let encodings = [
            secret,
            "cEBzczp3MHJkL3dpdGgrY2hhcnMmbW9yZQ",
            "704073733a773072642f776974682b6368617273266d6f7265",
            "p%40ss%3Aw0rd%2Fwith%2Bchars%26more",
        ];
        for (provider, body) in [
            ("openai", json!({ "type": "api_key", "value": secret })),
            (
                "custom_api",
                json!({ "type": "basic", "value": secret, "origin": "https://api.example.com" }),
            ),
        ] {
            let stored = send(
                &app,
                Req::post(format!("/api/provider-credentials/{provider}"))
                    .by(&world.alice)
                    .json(&body),
            )
            .await;
            assert_eq!(stored.status, 200, "{}", stored.text);
            let read = send(
                &app,
                Req::get(format!("/api/provider-credentials/{provider}")).by(&world.alice),
            )
            .await;
            for text in [&stored.text, &read.text] {
                for encoded in encodings {
                    assert!(!text.contains(encoded), "{provider}: {text}");
                }
            }
            // The response type has no field that could hold it.
            let item = &read.body["credentials"][0];
            let keys: BTreeSet<&str> = item
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect();
            assert_eq!(
                keys,
                [
                    "created_at",
                    "expires_at",
                    "header_name",
                    "id",
                    "integration",
                    "origin",
                    "type",
                    "updated_at"
                ]
                .into()
            );
        }
        // A bad value is refused without being echoed.
        let bad = send(
            &app,
            Req::post("/api/provider-credentials/openai")
                .by(&world.alice)
                .json(&json!({ "type": "api_key", "value": "abc\r\nX-Evil: 1" })),
        )
        .await;
        assert_eq!(bad.status, 400);
        assert!(!bad.text.contains("X-Evil"), "{}", bad.text);
    }
}

#[actix_web::test]
async fn a_fake_server_sees_only_the_callers_secret() {
    for world in World::all().await {
        let app = world.app().await;
        let fake = FakeServer::start(vec![FakeReply::json(200, &json!({})); 4])
            .await
            .unwrap();
        for (user, secret) in [
            (&world.alice, "alice-secret-1"),
            (&world.bob, "bob-secret-2"),
        ] {
            let r = send(
                &app,
                Req::post("/api/provider-credentials/custom_api")
                    .by(user)
                    .json(&json!({ "type": "bearer", "value": secret, "origin": fake.origin() })),
            )
            .await;
            assert_eq!(r.status, 200, "{}", r.text);
        }
        let step = json!({ "provider": "custom_api", "action": "request", "params": { "url": fake.url("/me").to_string() } });
        for (user, secret, other) in [
            (&world.bob, "bob-secret-2", "alice-secret-1"),
            (&world.alice, "alice-secret-1", "bob-secret-2"),
        ] {
            let before = fake.requests().len();
            let r = send(&app, Req::post("/api/execute-step").by(user).json(&step)).await;
            assert_eq!(r.status, 200, "{}", r.text);
            assert_eq!(r.body["success"], true, "{}", r.text);
            let seen = &fake.requests()[before];
            let auth = seen.header("authorization").unwrap_or_default();
            assert_eq!(auth, format!("Bearer {secret}"));
            assert!(!format!("{seen:?}").contains(other));
            assert!(
                !r.text.contains(secret),
                "the output must not carry the secret: {}",
                r.text
            );
        }
    }
}

#[actix_web::test]
async fn every_documented_route_is_mounted_and_nothing_else_is() {
    let world = World::new(pilot_storage::testing::Backend::Sqlite)
        .await
        .unwrap();
    let app = world.app().await;
    let doc = send(&app, Req::get("/api/openapi.json")).await.body;
    let mut documented = 0;
    for (path, methods) in doc["paths"].as_object().unwrap() {
        let concrete = path
            .replace("{id}", "0f8fad5b-d9cb-469f-a165-70867728950e")
            .replace("{hook_id}", "0f8fad5b-d9cb-469f-a165-70867728950e")
            .replace("{token}", "hook_x")
            .replace("{provider}", "webhook");
        for method in methods.as_object().unwrap().keys() {
            documented += 1;
            let reply = send(
                &app,
                Req::new(&method.to_ascii_uppercase(), concrete.clone()),
            )
            .await;
            assert_eq!(
                reply.pattern.as_deref(),
                Some(path.as_str()),
                "{method} {path} is documented but not mounted"
            );
            assert_ne!(reply.status, 405, "{method} {path}: {}", reply.text);
        }
    }
    assert_eq!(documented, pilot_api::routes().count());
    // A path outside the table is the JSON 404, a known path with another method the JSON 405.
    let unknown = send(&app, Req::get("/api/unknown")).await;
    assert_eq!(
        (unknown.status, unknown.body["error"]["code"].clone()),
        (404, Value::from("not_found"))
    );
    let wrong = send(&app, Req::new("PATCH", "/api/plans")).await;
    assert_eq!(wrong.status, 405);
    assert_eq!(wrong.allow.as_deref(), Some("GET, POST"));
}

/// Forms the OpenAPI document allows and Schemathesis sends: each must be accepted as documented.
#[actix_web::test]
async fn documented_edge_forms_are_accepted() {
    let world = World::new(pilot_storage::testing::Backend::Sqlite)
        .await
        .unwrap();
    let app = world.app().await;
    let alice = &world.alice;
    // A cron trigger's time zone may be null (UTC).
    let mut plan = crate::support::logic_plan("nullable zone");
    plan["trigger"] = json!({ "type": "cron", "cron": "0 9 * * *", "timezone": null });
    let created = send(&app, Req::post("/api/plans").by(alice).json(&plan)).await;
    assert_eq!(created.status, 201, "{}", created.text);
    assert_eq!(
        created.body["trigger"],
        json!({ "type": "cron", "cron": "0 9 * * *" })
    );
    // An empty query value counts as absent (the seed's `?plan_id=&run_id=&limit=&cursor=`).
    let listed = send(&app, Req::get("/api/plans?limit=&cursor=").by(alice)).await;
    assert_eq!(listed.status, 200, "{}", listed.text);
    assert_eq!(listed.body["items"].as_array().map(Vec::len), Some(1));
    for path in [
        "/api/scheduler/jobs?limit=",
        "/api/execution-logs?plan_id=&run_id=&limit=&cursor=",
    ] {
        let reply = send(&app, Req::get(path).by(alice)).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.text);
        assert!(reply.body["items"].is_array(), "{path}: {}", reply.text);
    }
}

/// Above the configured queue depth, async submissions are refused with 503 and Retry-After,
/// and nothing is queued; inline runs still run.
#[actix_web::test]
async fn async_submissions_over_the_queue_limit_get_503_with_retry_after() {
    for world in World::all().await {
        let state = state_with(
            &world,
            pilot_api::ApiSettings {
                max_queue_depth: 2,
                ..pilot_api::ApiSettings::default()
            },
        );
        let app = crate::support::app_for(state).await;
        let alice = &world.alice;
        let plan = json!({ "plan": { "name": "q", "steps": [
            { "id": "a", "provider": "logic", "action": "set", "params": { "value": 1 } }] },
            "async": true });
        for _ in 0..2 {
            let queued = send(&app, Req::post("/api/execute").by(alice).json(&plan)).await;
            assert_eq!(queued.status, 202, "{}: {}", world.backend(), queued.text);
        }
        let refused = send(&app, Req::post("/api/execute").by(alice).json(&plan)).await;
        assert_eq!(refused.status, 503, "{}: {}", world.backend(), refused.text);
        let (code, message, _) = crate::support::error_of(&refused);
        assert_eq!(code, "queue_full");
        assert!(message.contains("2 runs"), "{message}");
        assert_eq!(refused.retry_after.as_deref(), Some("5"));
        assert_eq!(
            world.db.db().queue_stats().await.unwrap().queued,
            2,
            "nothing was queued"
        );
        // Inline runs do not queue and still run.
        let inline = json!({ "plan": plan["plan"].clone() });
        let ran = send(&app, Req::post("/api/execute").by(alice).json(&inline)).await;
        assert_eq!(ran.status, 200, "{}", ran.text);
    }
}

/// A state over `world`'s database and registry with other settings.
fn state_with(world: &World, settings: pilot_api::ApiSettings) -> pilot_api::AppState {
    pilot_api::AppState::new(pilot_api::AppParts {
        db: world.db.db().clone(),
        registry: world.state.registry().clone(),
        http: world.state.outbound().clone(),
        engine: pilot_engine::EngineConfig::default(),
        metrics: pilot_telemetry::Metrics::new(),
        settings,
    })
}

/// Failed authentication is throttled per address (429 with Retry-After, no database lookup)
/// while a token that already worked keeps working; each user has a request budget with
/// `RateLimit-*` headers; each inbound webhook a call budget.
#[actix_web::test]
async fn throttles_answer_429_and_leave_valid_tokens_alone() {
    for world in World::all().await {
        let app = crate::support::app_for(state_with(
            &world,
            pilot_api::ApiSettings {
                auth_failures_per_minute: 3,
                requests_per_minute: 5,
                hook_calls_per_minute: 2,
                ..pilot_api::ApiSettings::default()
            },
        ))
        .await;
        let (alice, bob) = (&world.alice, &world.bob);
        // Alice's token works once before the attack.
        assert_eq!(
            send(&app, Req::get("/api/plans").by(alice)).await.status,
            200
        );
        for n in 0..3 {
            let bad = Req::get("/api/plans").authorization(&format!("Bearer pilot_bad{n}"));
            assert_eq!(send(&app, bad).await.status, 401);
        }
        let throttled = send(
            &app,
            Req::get("/api/plans").authorization("Bearer pilot_bad9"),
        )
        .await;
        assert_eq!(throttled.status, 429, "{}", throttled.text);
        assert_eq!(crate::support::error_of(&throttled).0, "auth_throttled");
        assert!(throttled.retry_after.is_some());
        // The known-good token is unaffected by the address's failures.
        let ok = send(&app, Req::get("/api/plans").by(alice)).await;
        assert_eq!(ok.status, 200, "{}", ok.text);

        // Bob's budget: 5 requests a minute, then 429 with the headers.
        let _ = bob;
        let app = crate::support::app_for(state_with(
            &world,
            pilot_api::ApiSettings {
                requests_per_minute: 5,
                hook_calls_per_minute: 2,
                ..pilot_api::ApiSettings::default()
            },
        ))
        .await;
        for _ in 0..5 {
            assert_eq!(send(&app, Req::get("/api/plans").by(bob)).await.status, 200);
        }
        let limited = send(&app, Req::get("/api/plans").by(bob)).await;
        assert_eq!(limited.status, 429, "{}", limited.text);
        let (code, message, _) = crate::support::error_of(&limited);
        assert_eq!(code, "rate_limited");
        assert!(message.contains("5 requests"), "{message}");
        assert!(limited.retry_after.is_some());
        assert_eq!(
            send(&app, Req::get("/api/plans").by(alice)).await.status,
            200,
            "another user's budget is their own"
        );

        // An inbound webhook: 2 calls a minute.
        let plan = send(
            &app,
            Req::post("/api/plans")
                .by(alice)
                .json(&json!({ "name": "h", "steps": [
                { "id": "a", "provider": "logic", "action": "set", "params": { "value": 1 } }] })),
        )
        .await;
        let plan_id = plan.body["id"].as_str().unwrap().to_owned();
        let hook = send(
            &app,
            Req::post(format!("/api/plans/{plan_id}/hooks")).by(alice),
        )
        .await;
        let path = hook.body["path"].as_str().unwrap().to_owned();
        for _ in 0..2 {
            let called = send(&app, Req::post(path.clone()).json(&json!({}))).await;
            assert_eq!(called.status, 202, "{}", called.text);
        }
        let refused = send(&app, Req::post(path.clone()).json(&json!({}))).await;
        assert_eq!(refused.status, 429, "{}", refused.text);
    }
}

/// A paused plan does not run on demand or from its webhooks (409), and runs again once active.
#[actix_web::test]
async fn a_paused_plan_does_not_run() {
    for world in World::all().await {
        let app = world.app().await;
        let alice = &world.alice;
        let step =
            json!([{ "id": "a", "provider": "logic", "action": "set", "params": { "value": 1 } }]);
        let plan = send(
            &app,
            Req::post("/api/plans")
                .by(alice)
                .json(&json!({ "name": "p", "steps": step, "status": "paused" })),
        )
        .await;
        assert_eq!(plan.status, 201, "{}", plan.text);
        let id = plan.body["id"].as_str().unwrap().to_owned();
        let hook = send(&app, Req::post(format!("/api/plans/{id}/hooks")).by(alice)).await;
        let path = hook.body["path"].as_str().unwrap().to_owned();
        for req in [
            Req::post("/api/execute")
                .by(alice)
                .json(&json!({ "plan_id": id })),
            Req::post("/api/execute")
                .by(alice)
                .json(&json!({ "plan_id": id, "async": true })),
            Req::post(path.clone()).json(&json!({})),
        ] {
            let refused = send(&app, req).await;
            assert_eq!(refused.status, 409, "{}: {}", world.backend(), refused.text);
            let (code, message, _) = crate::support::error_of(&refused);
            assert_eq!(code, "conflict");
            assert!(message.contains("paused"), "{message}");
        }
        let runs = send(&app, Req::get(format!("/api/plans/{id}/runs")).by(alice)).await;
        assert_eq!(
            runs.body["items"].as_array().unwrap().len(),
            0,
            "nothing ran"
        );

        let active = send(
            &app,
            Req::put(format!("/api/plans/{id}"))
                .by(alice)
                .json(&json!({ "name": "p", "steps": step, "status": "active" })),
        )
        .await;
        assert_eq!(active.status, 200, "{}", active.text);
        let ran = send(
            &app,
            Req::post("/api/execute")
                .by(alice)
                .json(&json!({ "plan_id": id })),
        )
        .await;
        assert_eq!(ran.status, 200, "{}", ran.text);
        assert_eq!(
            send(&app, Req::post(path).json(&json!({}))).await.status,
            202
        );
    }
}

/// The plan's trigger is the one truth about its schedule: saving a cron trigger schedules the
/// plan, changing it reschedules, another trigger unschedules; `/schedule` with a body stores
/// the trigger, `/unschedule` makes it manual; the plan shows its next fires.
#[actix_web::test]
async fn a_cron_trigger_schedules_the_plan_on_save() {
    for world in World::all().await {
        let app = world.app().await;
        let alice = &world.alice;
        let step =
            json!([{ "id": "a", "provider": "logic", "action": "set", "params": { "value": 1 } }]);
        let body = |trigger: Value| json!({ "name": "c", "steps": step, "trigger": trigger });
        let jobs = || async {
            let listed = send(&app, Req::get("/api/scheduler/jobs").by(alice)).await;
            listed.body["items"].as_array().unwrap().clone()
        };

        let plan = send(
            &app,
            Req::post("/api/plans").by(alice).json(&body(
                json!({ "type": "cron", "cron": "0 9 * * 1-5", "timezone": "Europe/Paris" }),
            )),
        )
        .await;
        assert_eq!(plan.status, 201, "{}", plan.text);
        let id = plan.body["id"].as_str().unwrap().to_owned();
        assert_eq!(plan.body["next_fires"].as_array().unwrap().len(), 5);
        let first = plan.body["next_fires"][0].as_str().unwrap().to_owned();
        assert!(first.contains("T09:00:00+0"), "{first}");
        let listed = jobs().await;
        assert_eq!(
            listed.len(),
            1,
            "{}: scheduled by the save",
            world.backend()
        );
        assert_eq!(listed[0]["cron"], "0 9 * * 1-5");
        assert_eq!(listed[0]["timezone"], "Europe/Paris");
        assert_eq!(listed[0]["plan_status"], "active");

        // A new expression reschedules.
        let changed = send(
            &app,
            Req::put(format!("/api/plans/{id}"))
                .by(alice)
                .json(&body(json!({ "type": "cron", "cron": "*/15 * * * *" }))),
        )
        .await;
        assert_eq!(changed.status, 200, "{}", changed.text);
        let listed = jobs().await;
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0]["cron"], "*/15 * * * *");
        assert_eq!(listed[0]["timezone"], "UTC");

        // Manual unschedules.
        let manual = send(
            &app,
            Req::put(format!("/api/plans/{id}"))
                .by(alice)
                .json(&body(json!({ "type": "manual" }))),
        )
        .await;
        assert_eq!(manual.status, 200);
        assert!(jobs().await.is_empty());
        assert_eq!(manual.body["next_fires"], json!([]));

        // /schedule with a body stores the trigger; /unschedule makes it manual again.
        let scheduled = send(
            &app,
            Req::post(format!("/api/plans/{id}/schedule"))
                .by(alice)
                .json(&json!({ "cron": "30 7 * * *", "timezone": "UTC" })),
        )
        .await;
        assert_eq!(scheduled.status, 200, "{}", scheduled.text);
        let read = send(&app, Req::get(format!("/api/plans/{id}")).by(alice)).await;
        assert_eq!(
            read.body["trigger"],
            json!({ "type": "cron", "cron": "30 7 * * *", "timezone": "UTC" })
        );
        assert_eq!(read.body["next_fires"].as_array().unwrap().len(), 5);
        let unscheduled = send(
            &app,
            Req::post(format!("/api/plans/{id}/unschedule")).by(alice),
        )
        .await;
        assert_eq!(unscheduled.body["unscheduled"], true);
        let read = send(&app, Req::get(format!("/api/plans/{id}")).by(alice)).await;
        assert_eq!(read.body["trigger"], json!({ "type": "manual" }));
        assert!(jobs().await.is_empty());
    }
}

/// A plan with queued runs is not deleted (409) unless `force=true`, which cancels them.
#[actix_web::test]
async fn deleting_a_plan_with_queued_runs_needs_force() {
    for world in World::all().await {
        let app = world.app().await;
        let alice = &world.alice;
        let step =
            json!([{ "id": "a", "provider": "logic", "action": "set", "params": { "value": 1 } }]);
        let plan = send(
            &app,
            Req::post("/api/plans")
                .by(alice)
                .json(&json!({ "name": "d", "steps": step })),
        )
        .await;
        let id = plan.body["id"].as_str().unwrap().to_owned();
        let queued = send(
            &app,
            Req::post("/api/execute")
                .by(alice)
                .json(&json!({ "plan_id": id, "async": true })),
        )
        .await;
        let run_id = queued.body["run_id"].as_str().unwrap().to_owned();

        let busy = send(&app, Req::delete(format!("/api/plans/{id}")).by(alice)).await;
        assert_eq!(busy.status, 409, "{}: {}", world.backend(), busy.text);
        assert!(crate::support::error_of(&busy).1.contains("force=true"));
        assert_eq!(
            send(&app, Req::get(format!("/api/plans/{id}")).by(alice))
                .await
                .status,
            200
        );

        let bad = send(
            &app,
            Req::delete(format!("/api/plans/{id}?force=yes")).by(alice),
        )
        .await;
        assert_eq!(bad.status, 400);

        let forced = send(
            &app,
            Req::delete(format!("/api/plans/{id}?force=true")).by(alice),
        )
        .await;
        assert_eq!(forced.status, 204, "{}", forced.text);
        assert_eq!(
            send(&app, Req::get(format!("/api/plans/{id}")).by(alice))
                .await
                .status,
            404
        );
        let run = send(&app, Req::get(format!("/api/runs/{run_id}")).by(alice)).await;
        assert_eq!(run.body["status"], "cancelled", "{}", run.text);
    }
}

/// Mistakes are caught on save with a message that says what to do; a templated URL is checked
/// when the step runs, with the same guard.
#[actix_web::test]
async fn literal_urls_and_jq_are_checked_on_save() {
    for world in World::all().await {
        let app = world.app().await;
        let alice = &world.alice;
        let save = |steps: Value| {
            Req::post("/api/plans")
                .by(alice)
                .json(&json!({ "name": "v", "steps": steps }))
        };
        let blocked = send(
            &app,
            save(json!([{ "id": "a", "provider": "webhook", "action": "post",
            "params": { "url": "http://192.168.1.20/hook", "body": {} } }])),
        )
        .await;
        assert_eq!(blocked.status, 400, "{}", blocked.text);
        let (_, message, details) = crate::support::error_of(&blocked);
        assert_eq!(details["field"], "steps[0].params.url");
        assert!(message.contains("PILOT_OUTBOUND_ALLOW"), "{message}");
        assert!(message.contains("192.168.1.20"), "{message}");

        let jq = send(
            &app,
            save(
                json!([{ "id": "shape", "provider": "logic", "action": "transform",
            "params": { "expression": "{a: .b", "input": {} } }]),
            ),
        )
        .await;
        assert_eq!(jq.status, 400, "{}", jq.text);
        let (_, message, _) = crate::support::error_of(&jq);
        assert!(
            message.contains("step 'shape'") && message.contains("does not compile"),
            "{message}"
        );

        // Templated: saved; the guard refuses it when the step runs.
        let templated = send(
            &app,
            save(json!([{ "id": "a", "provider": "webhook", "action": "post",
            "params": { "url": "${input.url}", "body": {} } }])),
        )
        .await;
        assert_eq!(templated.status, 201, "{}", templated.text);
        let id = templated.body["id"].as_str().unwrap();
        let ran = send(
            &app,
            Req::post("/api/execute").by(alice).json(&json!({
            "plan_id": id, "input": { "url": "http://192.168.1.20/hook" } })),
        )
        .await;
        assert_eq!(ran.body["status"], "failed", "{}", ran.text);
        let error = ran.body["steps"][0]["error"].as_str().unwrap();
        assert!(error.contains("192.168.1.20"), "{error}");
    }
}

/// What `GET /api/plans/{id}` answers can be sent back unchanged to `PUT` (and to `POST`, which
/// makes a copy); a body naming another plan's id is a 409.
#[actix_web::test]
async fn a_plan_read_back_can_be_sent_back_unchanged() {
    for world in World::all().await {
        let app = world.app().await;
        let alice = &world.alice;
        let created = send(&app, Req::post("/api/plans").by(alice).json(&json!({ "name": "r",
            "steps": [{ "id": "a", "provider": "logic", "action": "set", "params": { "value": 1 } }],
            "trigger": { "type": "cron", "cron": "0 6 * * *" } }))).await;
        let id = created.body["id"].as_str().unwrap().to_owned();
        let read = send(&app, Req::get(format!("/api/plans/{id}")).by(alice)).await;
        let put = send(
            &app,
            Req::put(format!("/api/plans/{id}"))
                .by(alice)
                .json(&read.body),
        )
        .await;
        assert_eq!(put.status, 200, "{}: {}", world.backend(), put.text);
        assert_eq!(put.body["steps"], read.body["steps"]);
        let copy = send(&app, Req::post("/api/plans").by(alice).json(&read.body)).await;
        assert_eq!(copy.status, 201, "{}", copy.text);
        assert_ne!(
            copy.body["id"], read.body["id"],
            "a copy with an id of its own"
        );

        let mut other = read.body.clone();
        other["id"] = copy.body["id"].clone();
        let clash = send(
            &app,
            Req::put(format!("/api/plans/{id}")).by(alice).json(&other),
        )
        .await;
        assert_eq!(clash.status, 409, "{}", clash.text);
    }
}

/// `GET /api/runs` lists the caller's runs across plans with filters that combine, and refuses
/// malformed ones naming the parameter.
#[actix_web::test]
async fn runs_are_listed_across_plans_with_filters() {
    for world in World::all().await {
        let app = world.app().await;
        let (alice, bob) = (&world.alice, &world.bob);
        let step = |value: Value| {
            json!([{ "id": "a", "provider": "logic", "action": "transform",
            "params": { "expression": ".x | not", "input": { "x": value } } }])
        };
        let plan = |name: &str, steps: Value| {
            Req::post("/api/plans")
                .by(alice)
                .json(&json!({ "name": name, "steps": steps }))
        };
        let one = send(&app, plan("one", step(json!(true)))).await.body["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let two = send(
            &app,
            plan(
                "two",
                json!([{ "id": "a", "provider": "logic", "action": "transform",
            "params": { "expression": "error(\"no\")" } }]),
            ),
        )
        .await
        .body["id"]
            .as_str()
            .unwrap()
            .to_owned();
        for id in [&one, &one, &two] {
            let ran = send(
                &app,
                Req::post("/api/execute")
                    .by(alice)
                    .json(&json!({ "plan_id": id })),
            )
            .await;
            assert_eq!(ran.status, 200, "{}", ran.text);
        }
        let queued = send(
            &app,
            Req::post("/api/execute")
                .by(alice)
                .json(&json!({ "plan_id": two, "async": true })),
        )
        .await;
        assert_eq!(queued.status, 202);
        let ids = |path: &str| {
            let path = path.to_owned();
            let app = &app;
            async move {
                let listed = send(app, Req::get(path).by(alice)).await;
                assert_eq!(listed.status, 200, "{}", listed.text);
                listed.body["items"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| {
                        (
                            r["plan_name"].as_str().unwrap().to_owned(),
                            r["status"].as_str().unwrap().to_owned(),
                        )
                    })
                    .collect::<Vec<_>>()
            }
        };
        assert_eq!(ids("/api/runs").await.len(), 4);
        assert_eq!(
            ids("/api/runs?status=succeeded").await,
            vec![("one".into(), "succeeded".into()); 2]
        );
        assert_eq!(ids("/api/runs?status=failed,queued").await.len(), 2);
        assert_eq!(
            ids(&format!("/api/runs?plan_id={two}&status=queued")).await,
            vec![("two".into(), "queued".into())]
        );
        assert_eq!(ids("/api/runs?trigger=schedule").await.len(), 0);
        assert_eq!(
            ids("/api/runs?created_after=2999-01-01T00:00:00Z")
                .await
                .len(),
            0
        );
        assert_eq!(
            ids("/api/runs?created_before=2999-01-01T00:00:00Z&limit=3")
                .await
                .len(),
            3
        );
        // Paging: newest first, no run twice.
        let first = send(&app, Req::get("/api/runs?limit=3").by(alice)).await;
        let cursor = first.body["next_cursor"].as_str().unwrap().to_owned();
        let rest = send(
            &app,
            Req::get(format!("/api/runs?limit=3&cursor={cursor}")).by(alice),
        )
        .await;
        assert_eq!(rest.body["items"].as_array().unwrap().len(), 1);
        // Another user's runs are not there.
        let theirs = send(&app, Req::get("/api/runs").by(bob)).await;
        assert_eq!(theirs.body["items"].as_array().unwrap().len(), 0);
        for (query, field) in [
            ("status=done", "status"),
            ("plan_id=nope", "plan_id"),
            ("trigger=cron", "trigger"),
            ("created_after=yesterday", "created_after"),
        ] {
            let bad = send(&app, Req::get(format!("/api/runs?{query}")).by(alice)).await;
            assert_eq!(bad.status, 400, "{query}: {}", bad.text);
            assert_eq!(crate::support::error_of(&bad).2["field"], field, "{query}");
        }
    }
}
