//! Runaway and hostile expressions: each one ends with a clear error within its bound, and the
//! evaluator keeps working afterwards (the process is still up and the thread is free).

use std::time::Duration;

use pilot_provider_logic::{JqEngine, JqError, JqLimits};
use serde_json::{Value, json};

/// Small budgets, so each runaway ends quickly even in a debug build; a generous clock, so
/// the bound that ends it is the one under test, not the deadline.
fn limits() -> JqLimits {
    JqLimits {
        timeout: Duration::from_secs(60),
        max_steps: 300_000,
        max_alloc_bytes: 16 << 20,
        max_string_bytes: 1 << 20,
        ..JqLimits::default()
    }
}

/// Runs `expr` (all outputs) and checks that it failed with a limit error whose message
/// contains `part`, then that the engine still answers.
async fn check(engine: &JqEngine, expr: &str, part: &str) -> Option<String> {
    let got = engine.all(expr, Value::Null).await;
    let failure = match &got {
        Err(JqError::Limit(msg)) if msg.contains(part) => None,
        other => Some(format!(
            "{expr}: expected a limit error containing {part:?}, got {other:?}"
        )),
    };
    let after = engine.single(".", json!("still up")).await;
    failure.or_else(|| {
        (after != Ok(json!("still up"))).then(|| format!("{expr}: engine broken after: {after:?}"))
    })
}

#[tokio::test]
async fn runaway_expressions_stop_at_their_bound() {
    let engine = JqEngine::new(limits());
    let steps = "more than 300000 steps";
    let memory = "allocated more than";
    let cases: Vec<(&str, &str)> = vec![
        // Infinite loops and generators.
        ("def f: f; f", steps),
        ("[range(1e9)]", steps),
        ("[limit(1e9; repeat(1))]", steps),
        ("last(range(1e18))", steps),
        ("repeat(1) | empty", steps),
        ("[range(0; 10; 0)]", steps),
        ("until(false; .)", steps),
        ("0 | [recurse(. + 1)]", steps),
        // Recursion on the native stack.
        ("def f: 1 + f; f", "recursed too deeply"),
        ("def f: [f]; f", "recursed too deeply"),
        ("def f: {a: f}; f", "recursed too deeply"),
        ("def f: (f | .) + 1; f", "recursed too deeply"),
        // Values that grow without bound.
        ("\"x\" * 1000000000", "string longer than 1048576 bytes"),
        (
            "\"x\" * 100000000000000000000",
            "string longer than 1048576 bytes",
        ),
        (
            "reduce range(40) as $i (\"x\"; . + .)",
            "string longer than 1048576 bytes",
        ),
        (
            "reduce range(40) as $i (\"x\"; \"\\(.)\\(.)\")",
            "string longer than 1048576 bytes",
        ),
        ("reduce range(40) as $i ([1]; . + .)", memory),
        ("reduce range(60) as $i (1; [., .]) | tojson", steps),
        ("reduce range(60) as $i (1; {a: ., b: .}) | length", memory),
        ("reduce range(30) as $i ([1, 2]; .[] = .)", steps),
        ("[range(100000)] as $a | [range(100) | $a] | length", steps),
        (
            "reduce range(100000) as $i (null; [.])",
            "nested deeper than 512 levels",
        ),
        (
            "(\"[\" * 100000) | fromjson",
            "nested deeper than 512 levels",
        ),
        (
            "reduce range(20) as $i (12345678901234567890; . * .)",
            "integer wider than 65536 bits",
        ),
        ("[range(200000)] as $a | $a | contains($a)", steps),
        ("(\"a\" * 100000) | test(\"a\" * 50000)", steps),
        ("(\"a\" * 1000000) | explode | length", memory),
        (
            "[range(3000)] | tostring | . * 1000",
            "string longer than 1048576 bytes",
        ),
    ];
    let mut failures = Vec::new();
    for (expr, part) in cases {
        failures.extend(check(&engine, expr, part).await);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn a_runaway_expression_stops_at_the_deadline() {
    let engine = JqEngine::new(JqLimits {
        timeout: Duration::from_millis(300),
        max_steps: u64::MAX,
        ..limits()
    });
    for expr in ["def f: f; f", "[limit(1e9; repeat(1))] | length"] {
        assert_eq!(
            engine.all(expr, Value::Null).await,
            Err(JqError::Timeout(Duration::from_millis(300))),
            "{expr}"
        );
    }
    assert_eq!(engine.single(".a", json!({"a": 1})).await, Ok(json!(1)));
}

#[tokio::test]
async fn deeply_nested_expressions_are_rejected_before_compiling() {
    let engine = JqEngine::new(limits());
    let nested = |open: &str, inner: &str, close: &str, n: usize| {
        format!("{}{inner}{}", open.repeat(n), close.repeat(n))
    };
    let cases = [
        (nested("[", "1", "]", 3000), "nests deeper than 400 levels"),
        (
            nested("{a: ", "1", "}", 1500),
            "nests deeper than 400 levels",
        ),
        (
            nested("\"\\(", "1", ")\"", 1300),
            "nests deeper than 400 levels",
        ),
        (nested("-", "1", "", 8000), "nests deeper than 400 levels"),
        (
            nested("1 | ", "1", "", 2000),
            "nests deeper than 400 levels",
        ),
        (
            nested("try ", "1", "", 2000),
            "nests deeper than 400 levels",
        ),
        (
            nested(". as $x | ", "1", "", 800),
            "nests deeper than 400 levels",
        ),
        (nested("[", "1", "]", 5000), "longer than 8192 bytes"),
    ];
    for (expr, part) in cases {
        match engine.check(&expr) {
            Err(JqError::Compile(msg)) => assert!(msg.contains(part), "{msg}"),
            other => panic!("{}…: {other:?}", &expr[..20]),
        }
    }
    assert_eq!(engine.check(&nested("[", "1", "]", 100)), Ok(()));
    // Parentheses only group: they add no level to the parsed expression.
    assert_eq!(engine.check(&nested("(", "1", ")", 3000)), Ok(()));
}

#[tokio::test]
async fn outputs_are_bounded() {
    let engine = JqEngine::new(JqLimits {
        max_outputs: 1000,
        max_output_bytes: 64 << 10,
        ..limits()
    });
    let cases = [
        ("range(1001)", "more than 1000 outputs"),
        ("\"x\" * 40000 | ., .", "larger than 64 KiB"),
        ("[range(20000)]", "larger than 64 KiB"),
        (
            "reduce range(200) as $i (0; [.])",
            "nested deeper than 128 levels",
        ),
    ];
    for (expr, part) in cases {
        match engine.all(expr, Value::Null).await {
            Err(JqError::Limit(msg)) => assert!(msg.contains(part), "{expr}: {msg}"),
            other => panic!("{expr}: {other:?}"),
        }
    }
    assert_eq!(
        engine
            .all("range(1000)", Value::Null)
            .await
            .map(|v| v.len()),
        Ok(1000)
    );
    // 128 levels is exactly what serde_json reads back.
    let deepest = engine
        .single("reduce range(127) as $i (0; [.])", Value::Null)
        .await;
    let text = deepest.map(|v| v.to_string());
    assert!(text.is_ok_and(|t| serde_json::from_str::<Value>(&t).is_ok()));
}

#[tokio::test]
async fn inputs_are_bounded() {
    let engine = JqEngine::new(JqLimits {
        max_depth: 64,
        ..limits()
    });
    let mut deep = json!(1);
    for _ in 0..100 {
        deep = json!([deep]);
    }
    match engine.single(".", deep).await {
        Err(JqError::Limit(msg)) => {
            assert!(msg.contains("input is nested deeper than 64"), "{msg}")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn legitimate_work_fits_the_default_bounds() {
    let engine = JqEngine::default();
    let items: Vec<Value> = (0..20_000)
        .map(|i| json!({"id": i, "name": format!("item {i}"), "tags": ["a", "b"]}))
        .collect();
    let input = json!({"items": items});
    let cases = [
        (
            ".items | map(select(.id % 2 == 0) | {id, label: \"#\\(.id): \\(.name)\"}) | length",
            json!(10_000),
        ),
        ("[.items[].name] | join(\",\") | length", json!(208_889)),
        (
            ".items | group_by(.id % 10) | map(length)",
            json!(vec![2000; 10]),
        ),
        (
            "reduce .items[] as $i ({}; .[$i.name] = $i.id) | length",
            json!(20_000),
        ),
        (".items | sort_by(-.id) | .[0].id", json!(19_999)),
        ("[.items[] | .tags | join(\"\")] | unique", json!(["ab"])),
        // Growing an accumulator in place is charged for what is added, not for copying it
        // each time (which would be quadratic and exceed the memory budget).
        (
            "reduce range(50000) as $i ([]; . + [$i]) | length",
            json!(50_000),
        ),
        (
            "reduce range(50000) as $i (\"\"; . + \"ab\") | length",
            json!(100_000),
        ),
        (
            "reduce range(20000) as $i ({}; . + {\"k\\($i)\": $i}) | length",
            json!(20_000),
        ),
        (
            "reduce range(20000) as $i ({}; .[\"k\\($i)\"] = $i) | length",
            json!(20_000),
        ),
    ];
    for (expr, want) in cases {
        assert_eq!(engine.single(expr, input.clone()).await, Ok(want), "{expr}");
    }
}

#[tokio::test]
async fn a_busy_evaluator_gives_up_cleanly() {
    // One thread: a runaway occupies it, so a second evaluation cannot start before its own,
    // shorter deadline.
    let engine = JqEngine::new(JqLimits {
        workers: 1,
        timeout: Duration::from_secs(5),
        max_steps: u64::MAX,
        ..limits()
    });
    let runaway = engine.all_within("def f: f; f", Value::Null, Duration::from_millis(800));
    let waiting = engine.all_within(".", Value::Null, Duration::from_millis(100));
    let (runaway, waiting) = tokio::join!(runaway, waiting);
    assert_eq!(runaway, Err(JqError::Timeout(Duration::from_millis(800))));
    assert_eq!(waiting, Err(JqError::Busy(Duration::from_millis(100))));
    assert!(JqError::Busy(Duration::ZERO).is_transient());
    // The thread is free again.
    assert_eq!(engine.single(".", json!(3)).await, Ok(json!(3)));
}
