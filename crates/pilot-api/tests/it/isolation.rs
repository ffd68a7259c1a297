//! The tenant-isolation matrix (docs/RELIABILITY.md), generated from the route table: every route
//! that takes an id, called with {another user's id, a random id, a malformed id, the caller's
//! own id}, on both backends. Another user's object must be indistinguishable from a missing
//! one (same status, same body), and nothing of its owner may change. A route whose operation
//! this file does not know fails the test, so a new route cannot skip the matrix.

use crate::support::{Req, User, World, error_of, fingerprint, send};
use pilot_api::{ParamKind, RouteInfo};
use serde_json::{Value, json};

const RANDOM_ID: &str = "6d1b0f3e-8f0a-4c4e-9a53-2f1d9b1c7e42";

/// Alice's objects, fresh for each route.
struct Fixture {
    plan: String,
    run: String,
    integration: String,
    hook: String,
    hook_token: String,
    credential: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    Other,
    Random,
    Malformed,
    Own,
}

/// The body a route needs to succeed for its owner, and the status it then answers. Every
/// route with a path parameter must be listed here.
fn own_case(route: &RouteInfo) -> (Option<Value>, u16) {
    match route.operation_id {
        "getPlan" | "listPlanHooks" | "listPlanRuns" | "unschedulePlan" | "getRun"
        | "getStepOutput" | "cancelRun" | "getIntegration" | "getCredentials"
        | "deleteCredentials" => (None, 200),
        "deletePlanHook" | "deleteIntegration" => (None, 204),
        // The fixture's run of the plan is still queued: deleting it needs `force`.
        "deletePlan" => (None, 409),
        "createPlanHook" => (None, 201),
        "updatePlan" => (Some(crate::support::logic_plan("renamed")), 200),
        "schedulePlan" => (Some(json!({ "cron": "0 * * * *" })), 200),
        "updateIntegration" => (
            Some(json!({ "name": "crm2", "base_url": "https://api.example.com" })),
            200,
        ),
        "putCredential" => (
            Some(
                json!({ "type": "bearer", "value": "bob-or-alice", "origin": "https://api.example.com" }),
            ),
            200,
        ),
        "inboundHook" => (Some(json!({ "a": 1 })), 202),
        other => panic!("route {other} takes an id but has no row in the isolation matrix"),
    }
}

fn value(kind: ParamKind, variant: Variant, fx: &Fixture) -> String {
    match (kind, variant) {
        (ParamKind::Provider, Variant::Random) => "no_such_provider".to_owned(),
        (ParamKind::Provider, Variant::Malformed) => "bad%21name".to_owned(),
        (ParamKind::Provider, _) => "custom_api".to_owned(),
        // The step of the fixture's run (the run id carries the variant).
        (ParamKind::Step, _) => "only".to_owned(),
        (ParamKind::HookToken, Variant::Random) => {
            "hook_kC2vB1fJ3mYwq9sX0aT7uR4eL6nD8hG5pZ1oI2cV3bN".to_owned()
        }
        (ParamKind::HookToken, Variant::Malformed) => "not-a-token".to_owned(),
        (ParamKind::HookToken, _) => fx.hook_token.clone(),
        (_, Variant::Random) => RANDOM_ID.to_owned(),
        (_, Variant::Malformed) => "not-an-id".to_owned(),
        (ParamKind::Plan, _) => fx.plan.clone(),
        (ParamKind::Run, _) => fx.run.clone(),
        (ParamKind::Integration, _) => fx.integration.clone(),
        (ParamKind::Hook, _) => fx.hook.clone(),
        (kind, _) => panic!("no fixture for {kind:?}"),
    }
}

fn path(route: &RouteInfo, variant: Variant, fx: &Fixture) -> String {
    let mut path = route.path.to_owned();
    for (name, kind) in route.params {
        path = path.replace(&format!("{{{name}}}"), &value(*kind, variant, fx));
    }
    path
}

#[actix_web::test]
async fn another_users_objects_are_indistinguishable_from_missing_ones() {
    for world in World::all().await {
        let app = world.app().await;
        let mut checked = 0;
        for route in pilot_api::routes().filter(|r| !r.params.is_empty()) {
            check_route(&world, &app, &route).await;
            checked += 1;
        }
        assert!(checked >= 18, "the matrix covered only {checked} routes");
    }
}

async fn check_route<S, B>(world: &World, app: &S, route: &RouteInfo)
where
    S: actix_web::dev::Service<
            actix_http::Request,
            Response = actix_web::dev::ServiceResponse<B>,
            Error = actix_web::Error,
        >,
    B: actix_web::body::MessageBody,
{
    let backend = world.backend();
    let fx = fixture(app, &world.alice).await;
    let (body, own_status) = own_case(route);
    let kinds: Vec<ParamKind> = route.params.iter().map(|(_, k)| *k).collect();
    let provider_route = kinds.contains(&ParamKind::Provider);
    let token_route = kinds.contains(&ParamKind::HookToken);
    let label = format!("[{backend}] {} {}", route.verb.as_str(), route.path);

    let request = |variant: Variant, user: &User| {
        let mut req = Req::new(route.verb.as_str(), path(route, variant, &fx));
        if route.auth {
            req = req.by(user);
        }
        if let Some(body) = &body {
            req = req.json(body);
        }
        req
    };

    let mut missing_bodies = Vec::new();
    for variant in [Variant::Random, Variant::Malformed] {
        let before = fingerprint(app, &world.alice).await;
        let reply = send(app, request(variant, &world.bob)).await;
        assert_eq!(reply.status, 404, "{label} {variant:?}: {}", reply.text);
        let (code, _, _) = error_of(&reply);
        assert_eq!(code, "not_found", "{label} {variant:?}");
        assert_eq!(
            fingerprint(app, &world.alice).await,
            before,
            "{label} {variant:?} changed Alice's data"
        );
        missing_bodies.push(reply.text);
    }
    if !provider_route {
        assert_eq!(
            missing_bodies[0], missing_bodies[1],
            "{label}: random and malformed ids answer differently"
        );
    }

    // Bob with Alice's ids.
    if !token_route {
        if provider_route {
            // Start Bob with no credentials of his own, so each expectation is exact.
            world
                .db
                .db()
                .delete_credentials(&world.bob.id, "custom_api")
                .await
                .unwrap();
        }
        let before = fingerprint(app, &world.alice).await;
        let reply = send(app, request(Variant::Other, &world.bob)).await;
        if provider_route {
            // A provider is a catalogue entry: Bob acts on his own credentials, never Alice's.
            assert!(
                !reply.text.contains(&fx.credential),
                "{label}: Bob saw Alice's credential: {}",
                reply.text
            );
            match route.operation_id {
                "getCredentials" => assert_eq!(reply.body["configured"], false, "{label}"),
                "deleteCredentials" => assert_eq!(reply.status, 404, "{label}"),
                "putCredential" => assert_eq!(reply.status, 200, "{label}: {}", reply.text),
                other => panic!("provider route {other} has no expectation"),
            }
        } else {
            assert_eq!(reply.status, 404, "{label} other: {}", reply.text);
            assert_eq!(
                reply.text, missing_bodies[0],
                "{label}: another user's object answers unlike a missing one"
            );
        }
        assert_eq!(
            fingerprint(app, &world.alice).await,
            before,
            "{label}: Bob's request changed Alice's data"
        );
    }

    // Alice with her own ids.
    let reply = send(app, request(Variant::Own, &world.alice)).await;
    assert_eq!(reply.status, own_status, "{label} own: {}", reply.text);
}

async fn fixture<S, B>(app: &S, alice: &User) -> Fixture
where
    S: actix_web::dev::Service<
            actix_http::Request,
            Response = actix_web::dev::ServiceResponse<B>,
            Error = actix_web::Error,
        >,
    B: actix_web::body::MessageBody,
{
    let plan = send(
        app,
        Req::post("/api/plans")
            .by(alice)
            .json(&crate::support::logic_plan("mine")),
    )
    .await;
    assert_eq!(plan.status, 201, "{}", plan.text);
    let plan_id = plan.body["id"].as_str().unwrap().to_owned();
    let run = send(
        app,
        Req::post("/api/execute")
            .by(alice)
            .json(&json!({ "plan_id": plan_id, "async": true })),
    )
    .await;
    assert_eq!(run.status, 202, "{}", run.text);
    let integration = send(
        app,
        Req::post("/api/custom-integrations")
            .by(alice)
            .json(&json!({ "name": format!("crm-{}", &plan_id[..8]), "base_url": "https://api.example.com" })),
    )
    .await;
    assert_eq!(integration.status, 201, "{}", integration.text);
    let hook = send(
        app,
        Req::post(format!("/api/plans/{plan_id}/hooks")).by(alice),
    )
    .await;
    assert_eq!(hook.status, 201, "{}", hook.text);
    let credential = send(
        app,
        Req::post("/api/provider-credentials/custom_api")
            .by(alice)
            .json(&json!({ "type": "bearer", "value": "alice-secret", "origin": "https://alice.example.com" })),
    )
    .await;
    assert_eq!(credential.status, 200, "{}", credential.text);
    Fixture {
        plan: plan_id,
        run: run.body["run_id"].as_str().unwrap().to_owned(),
        integration: integration.body["id"].as_str().unwrap().to_owned(),
        hook: hook.body["id"].as_str().unwrap().to_owned(),
        hook_token: hook.body["token"].as_str().unwrap().to_owned(),
        credential: credential.body["id"].as_str().unwrap().to_owned(),
    }
}

#[actix_web::test]
async fn lists_show_only_the_callers_objects() {
    for world in World::all().await {
        let app = world.app().await;
        let fx = fixture(&app, &world.alice).await;
        let scheduled = send(
            &app,
            Req::post(format!("/api/plans/{}/schedule", fx.plan))
                .by(&world.alice)
                .json(&json!({ "cron": "0 * * * *" })),
        )
        .await;
        assert_eq!(scheduled.status, 200);
        let executed = send(
            &app,
            Req::post("/api/execute")
                .by(&world.alice)
                .json(&json!({ "plan_id": fx.plan })),
        )
        .await;
        assert_eq!(executed.status, 200, "{}", executed.text);
        let alice_ids = [&fx.plan, &fx.run, &fx.integration, &fx.hook, &fx.credential];
        let mut lists = 0;
        for route in pilot_api::routes()
            .filter(|r| r.auth && r.params.is_empty() && r.verb == pilot_api::Verb::Get)
        {
            let path = match route.operation_id {
                "previewSchedule" => continue,
                "listExecutionLogs" => format!("{}?plan_id={}", route.path, fx.plan),
                _ => route.path.to_owned(),
            };
            // Alice sees her objects, Bob sees none of them.
            let own = send(&app, Req::get(path.clone()).by(&world.alice)).await;
            assert_eq!(own.status, 200, "{path}: {}", own.text);
            let bob = send(&app, Req::get(path.clone()).by(&world.bob)).await;
            assert_eq!(bob.status, 200, "{path}: {}", bob.text);
            for id in alice_ids {
                assert!(
                    !bob.text.contains(id.as_str()),
                    "[{}] {path}: Bob sees {id}",
                    world.backend()
                );
            }
            if let Some(items) = bob.body.get("items") {
                assert_eq!(items, &Value::Array(Vec::new()), "{path}");
                assert_ne!(
                    own.body["items"],
                    Value::Array(Vec::new()),
                    "{path}: Alice should see hers"
                );
                lists += 1;
            }
        }
        assert_eq!(
            lists, 5,
            "plans, runs, logs, integrations and jobs are checked"
        );
    }
}
