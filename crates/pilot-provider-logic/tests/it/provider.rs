//! The `logic` provider and the `when` evaluator as the engine sees them: through a
//! [`Registry`] filled by `register`.

use std::sync::Arc;
use std::time::Duration;

use pilot_core::{Catalogue, RunId, UserId};
use pilot_provider_logic::{JqLimits, register, register_with};
use pilot_registry::{OutboundClient, OutboundConfig, ProviderContext, ProviderError, Registry};
use serde_json::{Value, json};

fn registry() -> Registry {
    let mut registry = Registry::new();
    assert_eq!(register(&mut registry), Ok(()));
    registry
}

fn context() -> ProviderContext {
    let Ok(http) = OutboundClient::new(OutboundConfig::default()) else {
        panic!("the HTTP client does not build");
    };
    ProviderContext::new(UserId::new(), RunId::new(), "step", Arc::new(http))
}

/// Runs `logic.<action>` with `params`: `Ok(output)` or `Err((retryable, message))`.
async fn run(registry: &Registry, action: &str, params: Value) -> Result<Value, (bool, String)> {
    match registry.execute("logic", action, &params, &context()).await {
        Ok(out) => Ok(out.output),
        Err(e) => Err((e.is_retryable(), e.to_string())),
    }
}

/// An action's name and its params' names, types and whether they are required.
type Signature<'a> = (&'a str, Vec<(&'a str, &'a str, bool)>);

enum Expect {
    Ok(Value),
    Permanent(&'static str),
}

async fn check_all(registry: &Registry, action: &str, cases: Vec<(Value, Expect)>) {
    let mut failures = Vec::new();
    for (params, expect) in cases {
        let got = run(registry, action, params.clone()).await;
        let ok = match (&got, &expect) {
            (Ok(value), Expect::Ok(want)) => value == want,
            (Err((false, msg)), Expect::Permanent(part)) => msg.contains(part),
            _ => false,
        };
        if !ok {
            failures.push(format!("{action} {params}: got {got:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn transform() {
    use Expect::{Ok, Permanent};
    let registry = registry();
    let cases = vec![
        (
            json!({"expression": ".a", "input": {"a": [1, 2]}}),
            Ok(json!([1, 2])),
        ),
        (
            json!({"expression": ".a | map(. * 10)", "input": {"a": [1, 2]}}),
            Ok(json!([10, 20])),
        ),
        (
            json!({"expression": "{n: (.items | length)}", "input": {"items": [1, 2, 3]}}),
            Ok(json!({"n": 3})),
        ),
        (json!({"expression": "."}), Ok(json!(null))),
        (json!({"expression": "empty", "input": 1}), Ok(json!(null))),
        (
            json!({"expression": ".[]", "input": [1, 2], "all": true}),
            Ok(json!([1, 2])),
        ),
        (json!({"expression": "empty", "all": true}), Ok(json!([]))),
        (
            json!({"expression": ".[]", "input": [1, 2], "all": null}),
            Permanent("more than one output"),
        ),
        (
            json!({"expression": ".[]", "input": [1, 2]}),
            Permanent("set `all: true`"),
        ),
        (
            json!({"expression": "error(\"bad input\")"}),
            Permanent("jq error: bad input"),
        ),
        (
            json!({"expression": ".a |"}),
            Permanent("invalid jq expression: syntax error"),
        ),
        (
            json!({"expression": "env.HOME"}),
            Permanent("no access to the server's environment"),
        ),
        (
            json!({"expression": "def f: 1 + f; f"}),
            Permanent("stopped: it recursed too deeply"),
        ),
        (
            json!({"expression": "\"x\" * 1000000000"}),
            Permanent("string longer than"),
        ),
        (json!({"input": 1}), Permanent("`expression` is required")),
        (
            json!({"expression": 5}),
            Permanent("`expression` must be a string"),
        ),
        (
            json!({"expression": ".", "all": "yes"}),
            Permanent("`all` must be a boolean"),
        ),
    ];
    check_all(&registry, "transform", cases).await;
}

#[tokio::test]
async fn template() {
    use Expect::{Ok, Permanent};
    let registry = registry();
    let cases = vec![
        (json!({"template": "Hello, Ada!"}), Ok(json!("Hello, Ada!"))),
        (json!({"template": ""}), Ok(json!(""))),
        (json!({"template": "{\"a\": 1}"}), Ok(json!("{\"a\": 1}"))),
        (
            json!({"template": "{\"a\": [1, true]}", "json": true}),
            Ok(json!({"a": [1, true]})),
        ),
        (json!({"template": "42", "json": true}), Ok(json!(42))),
        (
            json!({"template": "\"text\"", "json": true}),
            Ok(json!("text")),
        ),
        (
            json!({"template": "{\"a\": 1}", "json": false}),
            Ok(json!("{\"a\": 1}")),
        ),
        // A whole-value reference already resolved to a typed value.
        (json!({"template": 42}), Ok(json!("42"))),
        (json!({"template": {"a": [1]}}), Ok(json!("{\"a\":[1]}"))),
        (
            json!({"template": {"a": [1]}, "json": true}),
            Ok(json!({"a": [1]})),
        ),
        (
            json!({"template": "{\"a\": 1", "json": true}),
            Permanent("not valid JSON"),
        ),
        (
            json!({"template": "hello", "json": true}),
            Permanent("not valid JSON"),
        ),
        (
            json!({"template": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[", "json": true}),
            Permanent("not valid JSON"),
        ),
        (json!({"json": true}), Permanent("`template` is required")),
        (
            json!({"template": "x", "json": "yes"}),
            Permanent("`json` must be a boolean"),
        ),
    ];
    check_all(&registry, "template", cases).await;
}

#[tokio::test]
async fn set() {
    use Expect::{Ok, Permanent};
    let registry = registry();
    let cases = vec![
        (
            json!({"value": {"a": 1, "b": [true, null]}}),
            Ok(json!({"a": 1, "b": [true, null]})),
        ),
        (json!({"value": null}), Ok(json!(null))),
        (json!({"value": "text"}), Ok(json!("text"))),
        (json!({}), Permanent("`value` is required")),
    ];
    check_all(&registry, "set", cases).await;
}

#[tokio::test]
async fn description_matches_the_actions() {
    let registry = registry();
    let description = registry.describe("logic").expect("registered");
    assert!(description.credential_types.is_empty());
    let actions: Vec<Signature<'_>> = description
        .actions
        .iter()
        .map(|a| {
            (
                a.name.as_str(),
                a.params
                    .iter()
                    .map(|p| (p.name.as_str(), p.kind.as_str(), p.required))
                    .collect(),
            )
        })
        .collect();
    assert_eq!(
        actions,
        vec![
            (
                "transform",
                vec![
                    ("expression", "string", true),
                    ("input", "any", false),
                    ("all", "boolean", false)
                ]
            ),
            (
                "template",
                vec![("template", "string", true), ("json", "boolean", false)]
            ),
            ("set", vec![("value", "any", true)]),
        ]
    );
    assert!(matches!(
        registry
            .execute("logic", "nope", &json!({}), &context())
            .await,
        Err(ProviderError::Permanent(_))
    ));
    // Registering twice is refused like any duplicate provider.
    let mut twice = registry.clone();
    assert!(register(&mut twice).is_err());
}

#[tokio::test]
async fn when_evaluator() {
    let registry = registry();
    let evaluator = registry.evaluator().expect("installed");
    let input = json!({"input": {"n": 5}, "steps": {"fetch": {"output": {"status": 200, "items": [3, 4]}}}});
    let cases: Vec<(&str, Result<Value, &str>)> = vec![
        (".input.n > 3", Ok(json!(true))),
        (".steps.fetch.output.status == 404", Ok(json!(false))),
        (".steps.fetch.output.items | length", Ok(json!(2))),
        (".steps.fetch.output.items[]", Ok(json!(3))),
        (".steps.missing.output", Ok(json!(null))),
        ("empty", Ok(json!(null))),
        ("error(\"no\")", Err("jq error: no")),
        (
            "\"x\" * 1000000000",
            Err("stopped: it built a string longer than"),
        ),
        ("def f: 1 + f; f", Err("stopped: it recursed too deeply")),
        ("$ENV", Err("invalid jq expression")),
    ];
    for (expr, want) in cases {
        let got = evaluator.eval(expr, input.clone()).await;
        match (&got, want) {
            (Ok(value), Ok(want)) => assert_eq!(value, &want, "{expr}"),
            (Err(msg), Err(part)) => assert!(msg.contains(part), "{expr}: {msg}"),
            (got, _) => panic!("{expr}: {got:?}"),
        }
    }
    // `check` compiles without running, and validation reaches it through the catalogue.
    assert_eq!(evaluator.check("def f: f; f"), Ok(()));
    assert!(evaluator.check(".a ==").is_err());
    assert_eq!(registry.check_expression(".input.n > 3"), Ok(()));
    assert!(
        registry
            .check_expression("env")
            .is_err_and(|e| e.contains("no access"))
    );
}

#[tokio::test]
async fn the_step_timeout_shortens_the_budget() {
    let mut registry = Registry::new();
    let limits = JqLimits {
        timeout: Duration::from_secs(30),
        max_steps: u64::MAX,
        ..JqLimits::default()
    };
    assert_eq!(register_with(&mut registry, limits), Ok(()));
    let mut ctx = context();
    ctx.timeout = Duration::from_millis(200);
    let got = registry
        .execute(
            "logic",
            "transform",
            &json!({"expression": "def f: f; f"}),
            &ctx,
        )
        .await;
    match got {
        Err(ProviderError::Permanent(msg)) => {
            assert!(msg.contains("did not finish within 200 ms"), "{msg}")
        }
        other => panic!("{other:?}"),
    }
}
