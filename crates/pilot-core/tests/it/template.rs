//! Table tests of the `${...}` language: what parses (and into what), what is rejected (and at
//! which byte), and what resolution produces, including the errors that must never turn into an
//! empty string.

use pilot_core::template::{self, MAX_PATH_SEGMENTS, MAX_REFERENCES, Part, ResolveError, Scope};
use serde_json::{Value, json};

/// Parses `input` and compares a compact description of the result with `expect`: parts joined
/// by ` + ` (literals quoted, references in canonical form), or `err <byte>: <message part>`.
fn check(input: &str, expect: &str) {
    let got = match template::parse(input) {
        Ok(parsed) => parsed
            .parts
            .iter()
            .map(|part| match part {
                Part::Literal(text) => format!("{text:?}"),
                Part::Ref(reference) => reference.to_string(),
            })
            .collect::<Vec<_>>()
            .join(" + "),
        Err(err) => format!("err {}: {}", err.position, err.message),
    };
    if let Some(rest) = expect.strip_prefix("err ") {
        let (position, message) = rest.split_once(": ").unwrap_or((rest, ""));
        assert!(
            got.starts_with(&format!("err {position}: ")) && got.contains(message),
            "parse({input:?})\n  got:      {got}\n  expected: {expect}"
        );
    } else {
        assert_eq!(got, expect, "parse({input:?})");
    }
}

#[test]
fn parse_table() {
    let cases: &[(&str, &str)] = &[
        // Valid: literal text only.
        ("", ""),
        ("plain text", r#""plain text""#),
        ("a $ b $5 {x} }", r#""a $ b $5 {x} }""#),
        ("cost: $", r#""cost: $""#),
        ("héllo wörld", r#""héllo wörld""#),
        // Valid: `$${` escapes.
        ("$${input}", r#""${input}""#),
        ("$${", r#""${""#),
        ("a$${b}c", r#""a${b}c""#),
        ("$$${input.a}", r#""$${input.a}""#),
        ("$${input} ${input}", r#""${input} " + ${input}"#),
        // Valid: each root.
        ("${input}", "${input}"),
        ("${run.id}", "${run.id}"),
        ("${plan.id}", "${plan.id}"),
        ("${steps.fetch.output}", "${steps.fetch.output}"),
        ("${steps.0.output}", "${steps.0.output}"),
        ("${steps.12.output[3]}", "${steps.12.output[3]}"),
        ("${steps.a-1_b.output}", "${steps.a-1_b.output}"),
        // Valid: paths.
        ("${input.a.b}", "${input.a.b}"),
        ("${input.items[0].name}", "${input.items[0].name}"),
        (
            "${steps.fetch.output.body.items[0].name}",
            "${steps.fetch.output.body.items[0].name}",
        ),
        ("${input.a-b_c}", "${input.a-b_c}"),
        ("${input.2024}", "${input.2024}"),
        ("${input[0][1][2]}", "${input[0][1][2]}"),
        (r#"${input["a b"]}"#, r#"${input["a b"]}"#),
        (r#"${input["plain"]}"#, "${input.plain}"),
        (r#"${input["q\"x"]}"#, r#"${input["q\"x"]}"#),
        (r#"${input["back\\slash"]}"#, r#"${input["back\\slash"]}"#),
        (r#"${input["}"]}"#, r#"${input["}"]}"#),
        (r#"${input["${x}"]}"#, r#"${input["${x}"]}"#),
        (r#"${input["ü"]}"#, r#"${input["ü"]}"#),
        (r#"${input[""]}"#, r#"${input[""]}"#),
        // Valid: spaces only right inside the braces.
        ("${ input.a }", "${input.a}"),
        ("${  run.id}", "${run.id}"),
        // Valid: mixed text and references.
        ("Hello ${input.name}!", r#""Hello " + ${input.name} + "!""#),
        ("${input.a}${input.b}", "${input.a} + ${input.b}"),
        ("${input}$", r#"${input} + "$""#),
        ("é${input}é", r#""é" + ${input} + "é""#),
        // Malformed: unterminated, pointing at the opening `${`.
        ("${", "err 0: unterminated `${`"),
        ("abc ${input.a", "err 4: unterminated `${`"),
        ("${steps.0.output.x", "err 0: unterminated `${`"),
        ("ok ${input} ${input.", "err 12: unterminated `${`"),
        (r#"${input["a]}"#, "err 0: unterminated `${`"),
        ("${input[", "err 0: unterminated `${`"),
        ("${ ", "err 0: unterminated `${`"),
        // Malformed: empty reference and unknown roots.
        ("${}", "err 0: empty reference"),
        ("x${ }", "err 1: empty reference"),
        ("${foo}", "err 2: unknown root 'foo'"),
        ("${Input}", "err 2: unknown root 'Input'"),
        ("${env.HOME}", "err 2: unknown root 'env'"),
        ("${.a}", "err 2: expected a reference"),
        ("${input.a}${1+1}", "err 12: unknown root '1'"),
        ("${\"a\"}", "err 2: expected a reference"),
        // Malformed: steps without `.output` or with a bad ref.
        ("${steps.x}", "err 9: expected `.output`"),
        ("${steps.x.outputs}", "err 9: expected `.output`"),
        ("${steps.x.result}", "err 9: expected `.output`"),
        ("${steps.0}", "err 9: expected `.output`"),
        ("${steps}", "err 7: expected `.`"),
        ("${steps.}", "err 8: expected a step id or index"),
        ("${steps[0].output}", "err 7: expected `.`"),
        ("${steps.1a.output}", "err 8: invalid step reference"),
        ("${steps.01.output}", "err 8: leading zero"),
        ("${steps._x.output}", "err 8: invalid step id '_x'"),
        ("${steps.-x.output}", "err 8: invalid step id '-x'"),
        (
            "${steps.99999999999999999999999.output}",
            "err 8: too large",
        ),
        // Malformed: paths.
        ("${input.}", "err 8: a field name"),
        ("${input..a}", "err 8: a field name"),
        ("${input[]}", "err 8: a non-negative index"),
        ("${input[-1]}", "err 8: a non-negative index"),
        ("${input[a]}", "err 8: a non-negative index"),
        ("${input[1}", "err 9: expected `]`"),
        ("${input[1 ]}", "err 9: expected `]`"),
        ("${input[01]}", "err 8: leading zero"),
        ("${input[99999999999999999999999]}", "err 8: too large"),
        (r#"${input["a\n"]}"#, "err 10: unsupported escape"),
        ("${input.ü}", "err 8: a field name"),
        // Malformed: trailing garbage.
        ("${input.a b}", "err 10: found 'b'"),
        ("${input.a]}", "err 9: found ']'"),
        ("${input a}", "err 8: found 'a'"),
        ("${input.a.b(1)}", "err 11: found '('"),
        ("${input|tojson}", "err 7: found '|'"),
        ("${run.id.x}", "err 8: has no fields"),
        ("${run.id[0]}", "err 8: has no fields"),
        ("${run}", "err 5: expected `.id`"),
        ("${run.idx}", "err 5: expected `.id`"),
        ("${plan.name}", "err 6: expected `.id`"),
        // Malformed: nested `${`.
        ("${input.${x}}", "err 8: nested `${`"),
        ("${input${x}}", "err 7: nested `${`"),
        ("${${input}}", "err 2: nested `${`"),
    ];
    assert!(cases.len() >= 40);
    for (input, expect) in cases {
        check(input, expect);
    }
}

#[test]
fn reference_count_is_bounded() {
    let at_limit = "${input}".repeat(MAX_REFERENCES);
    assert_eq!(
        template::parse(&at_limit).map(|t| t.parts.len()).ok(),
        Some(MAX_REFERENCES)
    );

    let over = format!("{at_limit}x${{input}}");
    let position = at_limit.len() + 1;
    check(&over, &format!("err {position}: too many references"));
}

#[test]
fn path_length_is_bounded() {
    let at_limit = format!("${{input{}}}", ".a".repeat(MAX_PATH_SEGMENTS));
    check(&at_limit, &at_limit);

    let over = format!("${{input{}[0]}}", ".a".repeat(MAX_PATH_SEGMENTS));
    let position = "${input".len() + 2 * MAX_PATH_SEGMENTS;
    check(&over, &format!("err {position}: path too long"));
}

#[test]
fn step_ids_follow_the_id_rule_in_references() {
    let longest = format!("a{}", "b".repeat(63));
    check(
        &format!("${{steps.{longest}.output}}"),
        &format!("${{steps.{longest}.output}}"),
    );
    check(
        &format!("${{steps.{longest}b.output}}"),
        "err 8: invalid step id",
    );
}

#[test]
fn references_name_their_param_paths() {
    let params = json!({
        "url": "https://x/${input.id}",
        "body": {"items": [1, "${steps.fetch.output.a}"], "odd key": "${run.id}"},
        "plain": "no refs",
    });
    let mut found: Vec<(String, String)> = template::references(&params)
        .unwrap()
        .into_iter()
        .map(|(path, reference)| (path, reference.to_string()))
        .collect();
    found.sort();
    let expect = [
        ("body.items[1]", "${steps.fetch.output.a}"),
        (r#"body["odd key"]"#, "${run.id}"),
        ("url", "${input.id}"),
    ];
    let expect: Vec<(String, String)> = expect
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(found, expect);

    let bad = json!({"body": {"items": ["ok", "${input."]}});
    let (path, err) = template::references(&bad).unwrap_err();
    assert_eq!(path, "body.items[1]");
    assert_eq!(err.position, 0);
}

/// The scope every resolve case uses: input, three earlier steps (one without output), a run id
/// and a plan id.
fn with_scope<T>(plan_id: Option<&str>, run: impl FnOnce(&Scope<'_>) -> T) -> T {
    let input = json!({"name": "Ada", "tags": ["x", "y"], "n": null});
    let fetch = json!({
        "status": 200,
        "ok": true,
        "none": null,
        "count": 3,
        "ratio": 0.5,
        "body": {"items": [{"name": "first"}, {"name": "second"}], "text": "hi \"there\""},
        "list": [1, "two", {"three": 3}],
        "odd key": "odd",
    });
    let echoed = json!({"text": "${input.name}", "nested": {"t": "$${x}"}});
    let steps: [(&str, Option<&Value>); 3] = [
        ("fetch", Some(&fetch)),
        ("skipped", None),
        ("echo", Some(&echoed)),
    ];
    let scope = Scope {
        input: &input,
        run_id: "run-1",
        plan_id,
        steps: &steps,
    };
    run(&scope)
}

/// Resolves `params` and compares with `expect`: the resolved JSON, or for an error
/// `{"error_param": <param path>, "contains": [<message parts>]}`.
fn check_resolve(params: Value, expect: Value) {
    check_resolve_in(Some("plan-1"), params, expect);
}

fn check_resolve_in(plan_id: Option<&str>, params: Value, expect: Value) {
    let got: Result<Value, ResolveError> =
        with_scope(plan_id, |scope| template::resolve(&params, scope));
    match (got, expect.get("error_param")) {
        (Ok(value), None) => assert_eq!(value, expect, "resolve({params})"),
        (Err(err), Some(param)) => {
            assert_eq!(
                Some(err.param.as_str()),
                param.as_str(),
                "resolve({params}): {err}"
            );
            let parts = expect["contains"].as_array().into_iter().flatten();
            for part in parts.filter_map(Value::as_str) {
                assert!(
                    err.message.contains(part),
                    "resolve({params}): {err:?} lacks {part:?}"
                );
            }
            assert!(
                err.message.contains(&err.param),
                "the message names the param: {err:?}"
            );
        }
        (got, _) => panic!("resolve({params}): got {got:?}, expected {expect}"),
    }
}

fn error(param: &str, contains: &[&str]) -> Value {
    json!({"error_param": param, "contains": contains})
}

#[test]
fn resolve_table() {
    let cases: Vec<(Value, Value)> = vec![
        // A whole-value reference keeps its JSON type.
        (json!({"v": "${steps.fetch.output.count}"}), json!({"v": 3})),
        (
            json!({"v": "${steps.fetch.output.ratio}"}),
            json!({"v": 0.5}),
        ),
        (json!({"v": "${steps.fetch.output.ok}"}), json!({"v": true})),
        (
            json!({"v": "${steps.fetch.output.none}"}),
            json!({"v": null}),
        ),
        (
            json!({"v": "${steps.fetch.output.list}"}),
            json!({"v": [1, "two", {"three": 3}]}),
        ),
        (
            json!({"v": "${steps.fetch.output.body.items[1]}"}),
            json!({"v": {"name": "second"}}),
        ),
        (
            json!({"v": "${ steps.fetch.output.count }"}),
            json!({"v": 3}),
        ),
        (
            json!({"v": "${input}"}),
            json!({"v": {"name": "Ada", "tags": ["x", "y"], "n": null}}),
        ),
        (json!({"v": "${input.n}"}), json!({"v": null})),
        (
            json!({"v": r#"${steps.fetch.output["odd key"]}"#}),
            json!({"v": "odd"}),
        ),
        // Index references.
        (json!({"v": "${steps.0.output.status}"}), json!({"v": 200})),
        (
            json!({"v": "${steps.2.output.text}"}),
            json!({"v": "${input.name}"}),
        ),
        // References inside longer strings are rendered.
        (
            json!({"v": "n=${steps.fetch.output.count}"}),
            json!({"v": "n=3"}),
        ),
        (json!({"v": "hi ${input.name}!"}), json!({"v": "hi Ada!"})),
        (
            json!({"v": "${input.name}${input.name}"}),
            json!({"v": "AdaAda"}),
        ),
        (
            json!({"v": "[${steps.fetch.output.none}]"}),
            json!({"v": "[null]"}),
        ),
        (
            json!({"v": "ok=${steps.fetch.output.ok}"}),
            json!({"v": "ok=true"}),
        ),
        (
            json!({"v": "r=${steps.fetch.output.ratio}"}),
            json!({"v": "r=0.5"}),
        ),
        (
            json!({"v": "t: ${steps.fetch.output.body.text}"}),
            json!({"v": "t: hi \"there\""}),
        ),
        (
            json!({"v": "b=${steps.fetch.output.body.items[0]}"}),
            json!({"v": "b={\"name\":\"first\"}"}),
        ),
        (
            json!({"v": "l=${steps.fetch.output.list}"}),
            json!({"v": "l=[1,\"two\",{\"three\":3}]"}),
        ),
        (
            json!({"v": "run ${run.id} of ${plan.id}"}),
            json!({"v": "run run-1 of plan-1"}),
        ),
        (json!({"v": "${run.id}"}), json!({"v": "run-1"})),
        (json!({"v": "${plan.id}"}), json!({"v": "plan-1"})),
        // Escapes: `$${` is a literal `${` and is not resolved.
        (
            json!({"v": "$${input.name}"}),
            json!({"v": "${input.name}"}),
        ),
        (
            json!({"v": "$${input.name} is ${input.name}"}),
            json!({"v": "${input.name} is Ada"}),
        ),
        // No second rendering: a stored output holding `${...}` stays literal.
        (
            json!({"v": "${steps.echo.output.text}"}),
            json!({"v": "${input.name}"}),
        ),
        (
            json!({"v": "say ${steps.echo.output.text}"}),
            json!({"v": "say ${input.name}"}),
        ),
        (
            json!({"v": "${steps.echo.output.nested}"}),
            json!({"v": {"t": "$${x}"}}),
        ),
        (
            json!({"v": "${steps.echo.output}"}),
            json!({"v": {"text": "${input.name}", "nested": {"t": "$${x}"}}}),
        ),
        // Recursion through objects and arrays; other values and object keys are untouched.
        (
            json!({"body": {"items": ["${input.name}", 1, true, null, ["${input.tags[1]}"]]}}),
            json!({"body": {"items": ["Ada", 1, true, null, ["y"]]}}),
        ),
        (json!({"${input.name}": "k"}), json!({"${input.name}": "k"})),
        (
            json!({"plain": "no refs", "n": 1.25}),
            json!({"plain": "no refs", "n": 1.25}),
        ),
        (json!({}), json!({})),
        // Missing values fail, naming the param and the reference; never an empty string.
        (
            json!({"body": {"items": ["${steps.fetch.output.nope}"]}}),
            error(
                "body.items[0]",
                &["${steps.fetch.output.nope}", "no field 'nope'"],
            ),
        ),
        (
            json!({"v": "x ${steps.fetch.output.body.items[5].name}"}),
            error(
                "v",
                &[
                    "${steps.fetch.output.body.items[5].name}",
                    "index 5 is out of range",
                    "2 items",
                ],
            ),
        ),
        (
            json!({"v": "${steps.fetch.output.body.items.name}"}),
            error("v", &["is an array, not an object"]),
        ),
        (
            json!({"v": "${steps.fetch.output.count[0]}"}),
            error("v", &["is a number, not an array"]),
        ),
        (
            json!({"v": "${steps.fetch.output.count.x}"}),
            error("v", &["is a number, not an object"]),
        ),
        (
            json!({"v": "${input.n.x}"}),
            error("v", &["${input.n.x}", "is null"]),
        ),
        (
            json!({"v": "${input.missing}"}),
            error("v", &["${input.missing}", "no field 'missing'"]),
        ),
        (
            json!({"v": "${steps.skipped.output}"}),
            error("v", &["${steps.skipped.output}", "produced no output"]),
        ),
        (
            json!({"v": "${steps.1.output.x}"}),
            error("v", &["${steps.1.output.x}", "no output"]),
        ),
        (
            json!({"v": "${steps.later.output}"}),
            error("v", &["${steps.later.output}", "no such step"]),
        ),
        (
            json!({"v": "${steps.3.output}"}),
            error("v", &["${steps.3.output}", "no such step"]),
        ),
        (
            json!({"a": {"odd key": ["${input.zz}"]}}),
            error(r#"a["odd key"][0]"#, &["${input.zz}"]),
        ),
        (
            json!({"v": "bad ${input."}),
            error("v", &["bad template", "unterminated"]),
        ),
    ];
    for (params, expect) in cases {
        check_resolve(params, expect);
    }
}

#[test]
fn plan_id_without_a_plan_is_an_error() {
    check_resolve_in(
        None,
        json!({"v": "${plan.id}"}),
        error("v", &["${plan.id}", "no plan"]),
    );
    check_resolve_in(
        None,
        json!({"v": "p=${plan.id}"}),
        error("v", &["${plan.id}"]),
    );
    check_resolve_in(None, json!({"v": "${run.id}"}), json!({"v": "run-1"}));
}

#[test]
fn resolve_params_matches_resolve() {
    let params = json!({"a": "${steps.fetch.output.count}", "b": ["x ${input.name}"]});
    let map = params.as_object().unwrap().clone();
    with_scope(None, |scope| {
        let whole = template::resolve(&params, scope).unwrap();
        let by_map = template::resolve_params(&map, scope).unwrap();
        assert_eq!(whole, Value::Object(by_map));
    });
}

#[test]
fn resolution_size_is_bounded() {
    // Each reference copies a 1 MiB output; 100 of them would be 100 MiB.
    let big = json!({"blob": "z".repeat(1024 * 1024)});
    let steps: [(&str, Option<&Value>); 1] = [("big", Some(&big))];
    let input = Value::Null;
    let scope = Scope {
        input: &input,
        run_id: "r",
        plan_id: None,
        steps: &steps,
    };

    let few = json!({"v": vec!["${steps.big.output.blob}"; 10]});
    assert!(template::resolve(&few, &scope).is_ok());

    let many = json!({"v": vec!["${steps.big.output}"; 100]});
    let err = template::resolve(&many, &scope).unwrap_err();
    assert!(err.message.contains("would exceed"), "{err:?}");

    let rendered = json!({"v": vec!["x ${steps.big.output.blob}"; 100]});
    let err = template::resolve(&rendered, &scope).unwrap_err();
    assert!(err.message.contains("would exceed"), "{err:?}");
}
