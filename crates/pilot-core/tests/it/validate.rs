//! Table tests of plan and step validation against a small fake catalogue: each bad plan must be
//! rejected with the step (by id, or `#index` when the id is the problem) and field named.

use pilot_core::{ActionSpec, Catalogue, ParamSpec, Plan, Step, validate_plan, validate_step};
use serde_json::{Value, json};

/// Three providers: `http` (one action with typed params), `logic` (two actions) and `hook`
/// (an action needing one of `url` or `integration`).
struct FakeCatalogue;

impl Catalogue for FakeCatalogue {
    fn actions(&self, provider: &str) -> Option<Vec<ActionSpec>> {
        let action = |name: &str, params: Vec<ParamSpec>, one_of: Vec<Vec<String>>| ActionSpec {
            name: name.to_owned(),
            description: format!("The {name} action."),
            params,
            one_of,
        };
        match provider {
            "http" => Some(vec![action(
                "request",
                vec![
                    ParamSpec::new("url", "string", true, "Where to."),
                    ParamSpec::new("count", "integer", false, "How many."),
                    ParamSpec::new("ratio", "number", false, "How much."),
                    ParamSpec::new("flag", "boolean", false, "Whether."),
                    ParamSpec::new("headers", "object", false, "Headers."),
                    ParamSpec::new("list", "array", false, "Items."),
                    ParamSpec::new("body", "any", false, "Anything."),
                ],
                Vec::new(),
            )]),
            "logic" => Some(vec![
                action(
                    "transform",
                    vec![
                        ParamSpec::new("expression", "string", true, "jq."),
                        ParamSpec::new("input", "any", false, "Data."),
                    ],
                    Vec::new(),
                ),
                action(
                    "template",
                    vec![ParamSpec::new("text", "string", true, "Text.")],
                    Vec::new(),
                ),
            ]),
            "hook" => Some(vec![action(
                "post",
                vec![
                    ParamSpec::new("url", "string", false, "Where to."),
                    ParamSpec::new("integration", "string", false, "Or a named integration."),
                ],
                vec![vec!["url".to_owned(), "integration".to_owned()]],
            )]),
            "checked" => Some(vec![action(
                "call",
                vec![
                    ParamSpec::new("expression", "string", false, "jq.").with_format("jq"),
                    ParamSpec::new("url", "string", false, "Where to.").with_format("url"),
                ],
                Vec::new(),
            )]),
            _ => None,
        }
    }

    fn check_url(&self, url: &str) -> Result<(), String> {
        if url.contains("blocked") {
            Err("the destination is blocked".to_owned())
        } else {
            Ok(())
        }
    }

    fn check_expression(&self, expr: &str) -> Result<(), String> {
        let open = expr.matches('(').count();
        let close = expr.matches(')').count();
        if open == close {
            Ok(())
        } else {
            Err("unbalanced parentheses".to_owned())
        }
    }

    fn provider_names(&self) -> Vec<String> {
        vec!["logic".to_owned(), "http".to_owned(), "hook".to_owned()]
    }
}

/// One expected error: step, field and a part of the message (`-` for none).
type Expected = (&'static str, &'static str, &'static str);

/// A valid step with the given id and params for `http.request`.
fn http(id: &str, params: Value) -> Value {
    json!({"id": id, "provider": "http", "action": "request", "params": params})
}

fn ok_step(id: &str) -> Value {
    http(id, json!({"url": "https://example.test/"}))
}

/// Validates a plan with `steps` and compares the errors with `expect`: one `(step, field,
/// message part)` per error, in order, where `-` stands for "none".
fn check(steps: Value, expect: &[(&str, &str, &str)]) {
    check_plan(json!({"name": "test plan", "steps": steps}), expect);
}

fn check_plan(plan: Value, expect: &[(&str, &str, &str)]) {
    let parsed: Plan = match serde_json::from_value(plan.clone()) {
        Ok(parsed) => parsed,
        Err(err) => panic!("not a plan: {err}: {plan}"),
    };
    let errors = match validate_plan(&parsed, &FakeCatalogue) {
        Ok(()) => Vec::new(),
        Err(errors) => errors,
    };
    let got: Vec<(String, String, String)> = errors
        .iter()
        .map(|e| {
            let step = e.step.clone().unwrap_or_else(|| "-".to_owned());
            let field = e.field.clone().unwrap_or_else(|| "-".to_owned());
            (step, field, e.message.clone())
        })
        .collect();
    let matches = got.len() == expect.len()
        && got
            .iter()
            .zip(expect)
            .all(|((step, field, message), (es, ef, em))| {
                step == es && field == ef && message.contains(em)
            });
    assert!(
        matches,
        "plan {plan}\n  got:      {got:#?}\n  expected: {expect:#?}"
    );
}

#[test]
fn valid_plans_pass() {
    check(json!([ok_step("a")]), &[]);
    check(
        json!([
            ok_step("fetch"),
            http("use", json!({
                "url": "${steps.fetch.output.url}",
                "count": "${steps.0.output.count}",
                "ratio": 2,
                "flag": "${input.flag}",
                "headers": {"x": "${run.id} ${plan.id}"},
                "list": ["${steps.fetch.output}"],
                "body": "anything $${not a ref}",
            })),
            {"id": "t", "provider": "logic", "action": "transform",
             "params": {"expression": ".a", "input": "${steps.use.output}"},
             "when": "(.input.x == 1)", "retry": {"max_attempts": 10, "factor": 1.0,
             "base_ms": 0, "cap_ms": 3_600_000}, "timeout_ms": 3_600_000,
             "continue_on_error": true},
            {"id": "h", "provider": "hook", "action": "post", "params": {"integration": "mine"}},
        ]),
        &[],
    );
}

#[test]
fn plan_level_problems() {
    check(json!([]), &[("-", "-", "at least one step")]);
    check_plan(
        json!({"name": " ", "steps": [ok_step("a")]}),
        &[("-", "name", "needs a name")],
    );
    let many: Vec<Value> = (0..201).map(|i| ok_step(&format!("s{i}"))).collect();
    check(
        json!(many),
        &[("-", "-", "at most 200 steps; this one has 201")],
    );
    let enough: Vec<Value> = (0..200).map(|i| ok_step(&format!("s{i}"))).collect();
    check(json!(enough), &[]);
}

#[test]
fn step_table() {
    let cases: Vec<(Value, Vec<Expected>)> = vec![
        // Ids: invalid ones are named by index.
        (
            json!([ok_step("1st")]),
            vec![("#0", "id", "invalid step id '1st'")],
        ),
        (
            json!([ok_step("a"), ok_step("")]),
            vec![("#1", "id", "invalid step id ''")],
        ),
        (
            json!([ok_step("a b")]),
            vec![("#0", "id", "starts with a letter")],
        ),
        (json!([ok_step("_a")]), vec![("#0", "id", "invalid")]),
        (
            json!([ok_step(&"a".repeat(65))]),
            vec![("#0", "id", "at most 64")],
        ),
        (
            json!([ok_step("a"), ok_step("a")]),
            vec![("a", "id", "duplicate step id 'a': step #0")],
        ),
        // Providers and actions.
        (
            json!([ok_step("a"), {"id": "b", "provider": "nope", "action": "x"}]),
            vec![(
                "b",
                "provider",
                "unknown provider 'nope'; known providers: hook, http, logic",
            )],
        ),
        (
            json!([{"id": "a", "provider": "logic", "action": "run"}]),
            vec![(
                "a",
                "action",
                "unknown action 'run' for provider 'logic'; its actions: transform, template",
            )],
        ),
        // A param the action does not declare (a typo) is named.
        (
            json!([http("a", json!({"url": "https://example.com", "bdoy": 1}))]),
            vec![("a", "params.bdoy", "unknown param for")],
        ),
        // Required params, one_of groups.
        (
            json!([http("a", json!({}))]),
            vec![("a", "params.url", "required param missing")],
        ),
        (
            json!([{"id": "a", "provider": "hook", "action": "post", "params": {}}]),
            vec![(
                "a",
                "params",
                "one of these params is required: url, integration",
            )],
        ),
        (
            json!([{"id": "a", "provider": "hook", "action": "post", "params": {"url": "u"}}]),
            vec![],
        ),
        // Literal types; whole-string templates are typed at run time.
        (
            json!([http("a", json!({"url": "u", "count": "5"}))]),
            vec![("a", "params.count", "expected integer, found a string")],
        ),
        (
            json!([http("a", json!({"url": "u", "count": 1.5}))]),
            vec![(
                "a",
                "params.count",
                "expected integer, found a number with a fraction",
            )],
        ),
        (
            json!([http("a", json!({"url": 7}))]),
            vec![("a", "params.url", "expected string, found a number")],
        ),
        (
            json!([http(
                "a",
                json!({"url": "u", "flag": "true", "headers": [], "list": {}, "ratio": null})
            )]),
            vec![
                ("a", "params.ratio", "expected number, found null"),
                ("a", "params.flag", "expected boolean, found a string"),
                ("a", "params.headers", "expected object, found an array"),
                ("a", "params.list", "expected array, found an object"),
            ],
        ),
        (
            json!([http(
                "a",
                json!({"url": "u", "count": "${input.n}", "flag": "${input.f}"})
            )]),
            vec![],
        ),
        (
            json!([http("a", json!({"url": "u", "count": "n ${input.n}"}))]),
            vec![("a", "params.count", "expected integer, found a string")],
        ),
        (
            json!([http("a", json!({"url": "u", "body": [1, {"x": null}]}))]),
            vec![],
        ),
        // Templates: syntax errors name the param path and position.
        (
            json!([http(
                "a",
                json!({"url": "u", "body": {"items": [1, "x ${input."]}})
            )]),
            vec![(
                "a",
                "params.body.items[1]",
                "bad template at byte 2: unterminated",
            )],
        ),
        (
            json!([http("a", json!({"url": "${env.HOME}"}))]),
            vec![(
                "a",
                "params.url",
                "bad template at byte 2: unknown root 'env'",
            )],
        ),
        (
            json!([http(
                "a",
                json!({"url": "u", "body": {"odd key": "${steps.x}"}})
            )]),
            vec![(
                "a",
                r#"params.body["odd key"]"#,
                "at byte 9: expected `.output`",
            )],
        ),
        // References: only to earlier steps, by id or index.
        (
            json!([http("a", json!({"url": "${steps.b.output}"})), ok_step("b")]),
            vec![(
                "a",
                "params.url",
                "${steps.b.output} refers to step 'b', which runs later",
            )],
        ),
        (
            json!([http("a", json!({"url": "${steps.a.output}"}))]),
            vec![("a", "params.url", "refers to this step itself")],
        ),
        (
            json!([
                ok_step("a"),
                http("b", json!({"url": "${steps.zz.output}"}))
            ]),
            vec![(
                "b",
                "params.url",
                "refers to step 'zz', but there is no such earlier step",
            )],
        ),
        (
            json!([ok_step("a"), http("b", json!({"url": "${steps.1.output}"}))]),
            vec![("b", "params.url", "refers to this step itself")],
        ),
        (
            json!([
                http("a", json!({"url": "x${steps.1.output}"})),
                ok_step("b")
            ]),
            vec![("a", "params.url", "refers to step #1, which runs later")],
        ),
        (
            json!([ok_step("a"), http("b", json!({"url": "${steps.7.output}"}))]),
            vec![(
                "b",
                "params.url",
                "refers to step #7, but there is no such earlier step",
            )],
        ),
        (
            json!([
                ok_step("a"),
                http("b", json!({"url": "${steps.0.output} ${steps.a.output.x}"}))
            ]),
            vec![],
        ),
        // A reference to an earlier step whose id is invalid goes by index only.
        (
            json!([ok_step("9"), http("b", json!({"url": "${steps.0.output}"}))]),
            vec![("#0", "id", "invalid step id '9'")],
        ),
        // `when` is jq, checked by the catalogue, and never parsed as a template.
        (
            json!([{"id": "a", "provider": "logic", "action": "template", "params": {"text": "t"},
                    "when": "(.x"}]),
            vec![("a", "when", "invalid jq expression: unbalanced parentheses")],
        ),
        (
            json!([{"id": "a", "provider": "logic", "action": "template", "params": {"text": "t"},
                    "when": "  "}]),
            vec![("a", "when", "empty")],
        ),
        (
            json!([{"id": "a", "provider": "logic", "action": "template", "params": {"text": "t"},
                    "when": "\"${\" == .x"}]),
            vec![],
        ),
        // Retry policy and timeout bounds.
        (
            json!([{"id": "a", "provider": "logic", "action": "template", "params": {"text": "t"},
                    "retry": {"max_attempts": 0}}]),
            vec![("a", "retry.max_attempts", "between 1 and 10; it is 0")],
        ),
        (
            json!([{"id": "a", "provider": "logic", "action": "template", "params": {"text": "t"},
                    "retry": {"max_attempts": 11, "factor": 0.5}}]),
            vec![
                ("a", "retry.max_attempts", "it is 11"),
                ("a", "retry.factor", "at least 1; it is 0.5"),
            ],
        ),
        (
            json!([{"id": "a", "provider": "logic", "action": "template", "params": {"text": "t"},
                    "retry": {"base_ms": 5000, "cap_ms": 1000}}]),
            vec![(
                "a",
                "retry.base_ms",
                "base_ms (5000) must not exceed cap_ms (1000)",
            )],
        ),
        (
            json!([{"id": "a", "provider": "logic", "action": "template", "params": {"text": "t"},
                    "retry": {"cap_ms": 3_600_001}}]),
            vec![("a", "retry.cap_ms", "at most 3600000")],
        ),
        (
            json!([{"id": "a", "provider": "logic", "action": "template", "params": {"text": "t"},
                    "timeout_ms": 0}]),
            vec![("a", "timeout_ms", "between 1 and 3600000; it is 0")],
        ),
        (
            json!([{"id": "a", "provider": "logic", "action": "template", "params": {"text": "t"},
                    "timeout_ms": 3_600_001}]),
            vec![("a", "timeout_ms", "it is 3600001")],
        ),
        // Every problem is reported, not only the first.
        (
            json!([
                http("2x", json!({"url": "${steps.later.output}"})),
                {"id": "later", "provider": "ghost", "action": "x", "timeout_ms": 0},
            ]),
            vec![
                ("#0", "id", "invalid step id '2x'"),
                (
                    "#0",
                    "params.url",
                    "refers to step 'later', which runs later",
                ),
                ("later", "provider", "unknown provider 'ghost'"),
                ("later", "timeout_ms", "between 1"),
            ],
        ),
    ];
    for (steps, expect) in cases {
        check(steps, &expect);
    }
}

#[test]
fn long_names_are_cut_in_messages() {
    let long = "p".repeat(5000);
    let steps = json!([{"id": "a", "provider": long, "action": "x"}]);
    let plan: Plan = serde_json::from_value(json!({"name": "n", "steps": steps})).unwrap();
    let errors = validate_plan(&plan, &FakeCatalogue).unwrap_err();
    assert_eq!(errors.len(), 1);
    assert!(errors[0].message.len() < 200, "{}", errors[0].message);
}

/// Validates a lone step as `/api/execute-step` does, returning `(step, field, message)` each.
fn lone(step: Value, earlier: &[&str]) -> Vec<(Option<String>, Option<String>, String)> {
    let step: Step = match serde_json::from_value(step.clone()) {
        Ok(parsed) => parsed,
        Err(err) => panic!("not a step: {err}: {step}"),
    };
    match validate_step(&step, earlier.len(), earlier, &FakeCatalogue) {
        Ok(()) => Vec::new(),
        Err(errors) => errors
            .into_iter()
            .map(|e| (e.step, e.field, e.message))
            .collect(),
    }
}

#[test]
fn a_lone_step_may_not_refer_to_steps() {
    assert_eq!(lone(ok_step("a"), &[]), vec![]);
    assert_eq!(
        lone(http("a", json!({"url": "${input.url} ${run.id}"})), &[]),
        vec![]
    );

    let errors = lone(http("a", json!({"url": "${steps.0.output}"})), &[]);
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].0.as_deref(), Some("a"));
    assert_eq!(errors[0].1.as_deref(), Some("params.url"));
    assert!(
        errors[0].2.contains("refers to this step itself"),
        "{errors:?}"
    );

    let errors = lone(http("a", json!({"url": "${steps.b.output}"})), &[]);
    assert!(errors[0].2.contains("no such earlier step"), "{errors:?}");

    let errors = lone(ok_step("1x"), &[]);
    assert_eq!(errors[0].0.as_deref(), Some("#0"));
}

#[test]
fn a_step_after_earlier_ones() {
    let step = http("c", json!({"url": "${steps.a.output} ${steps.1.output}"}));
    assert_eq!(lone(step.clone(), &["a", "b"]), vec![]);
    let errors = lone(ok_step("b"), &["a", "b"]);
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].2.contains("duplicate step id 'b': step #1"),
        "{errors:?}"
    );
    let errors = lone(http("c", json!({"url": "${steps.2.output}"})), &["a", "b"]);
    assert!(
        errors[0].2.contains("refers to this step itself"),
        "{errors:?}"
    );
}

#[test]
fn errors_render_with_step_and_field() {
    let plan: Plan =
        serde_json::from_value(json!({"name": "n", "steps": [ok_step("9lives")]})).unwrap();
    let errors = validate_plan(&plan, &FakeCatalogue).unwrap_err();
    assert!(
        errors[0]
            .to_string()
            .starts_with("step '#0', id: invalid step id '9lives'")
    );
}

#[test]
fn literal_params_with_a_format_are_checked_on_save_and_templated_ones_at_run_time() {
    let step = |params: Value| json!([{"id": "a", "provider": "checked", "action": "call", "params": params}]);
    check(
        step(json!({"expression": "map(.x", "url": "http://blocked.test/"})),
        &[
            (
                "a",
                "params.expression",
                "the jq expression does not compile: unbalanced",
            ),
            ("a", "params.url", "the destination is blocked"),
        ],
    );
    check(
        step(json!({"expression": "map(.x)", "url": "http://fine.test/"})),
        &[],
    );
    // A reference is resolved at run time, and checked then.
    check(
        step(json!({"expression": "${input.expr}", "url": "${input.blocked_url}"})),
        &[],
    );
}
