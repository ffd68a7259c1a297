//! Execution semantics with the scripted provider over a memory store: writes
//! per run, references, retries and their timing on tokio's paused clock, timeouts,
//! skip-after-failure, continue_on_error, `when`, cancellation, fencing, resumption and the
//! idempotency key.

// Marks the whole file as test code, so helpers outside #[test] functions may unwrap.

use std::time::Duration;

use crate::support::{Answer, Harness, Scripted, exact_retry, scripted, snapshot};
use pilot_core::{CredentialKind, RetryPolicy, RunStatus, StepState, StepStatus, TriggerKind};
use pilot_engine::{EngineConfig, EngineError, idempotency_key};
use pilot_registry::{ProviderError, ProviderOutput};
use serde_json::{Value, json};

fn retryable(message: &str) -> Answer {
    Answer::Err(ProviderError::retryable(message))
}

fn statuses(states: &[StepState]) -> Vec<StepStatus> {
    states.iter().map(|s| s.status).collect()
}

fn row(step: &str, attempt: u32, status: &str) -> (String, u32, String) {
    (step.to_owned(), attempt, status.to_owned())
}

#[tokio::test]
async fn three_succeeding_steps_cost_three_writes() {
    let h = Harness::new();
    h.script.push([
        Answer::Ok(json!({"a": 1})),
        Answer::Ok(json!({"b": 2})),
        Answer::Ok(json!("c")),
    ]);
    let snap = h.start(
        vec![
            scripted("one", json!({})),
            scripted("two", json!({})),
            scripted("three", json!({})),
        ],
        json!({}),
    );
    let run_id = snap.run_id.clone();
    let outcome = h.engine.execute_plan(snap).await.unwrap();

    assert_eq!(outcome.status, RunStatus::Succeeded);
    assert_eq!(outcome.error, None);
    assert_eq!(outcome.states[1].output, Some(json!({"b": 2})));
    assert_eq!(h.store.write_count(), 3);
    let stored = h.store.run(&run_id).unwrap();
    assert_eq!(stored.status, RunStatus::Succeeded);
    assert_eq!(stored.states, outcome.states);
    assert_eq!(
        h.log_summary(),
        vec![
            row("one", 1, "succeeded"),
            row("two", 1, "succeeded"),
            row("three", 1, "succeeded")
        ]
    );
    let logs = h.logs();
    assert_eq!(logs[2].output_preview.as_deref(), Some("\"c\""));
    assert_eq!(logs[1].step_number, 1);
    assert_eq!(logs[0].plan_name, "test plan");
}

#[tokio::test]
async fn references_resolve_against_input_ids_indexes_run_and_plan() {
    let h = Harness::new();
    h.script
        .push([Answer::Ok(json!({"n": 5, "list": [1, 2], "name": "x"}))]);
    let snap = h.start(
        vec![
            scripted("first", json!({})),
            scripted(
                "second",
                json!({
                    "number": "${steps.first.output.n}",
                    "list": "${steps.0.output.list}",
                    "text": "n=${steps.first.output.n} of ${steps.first.output.list}",
                    "nested": {"deep": ["${input.who}"]},
                    "run": "${run.id}",
                    "plan": "${plan.id}",
                    "escaped": "$${literal}",
                }),
            ),
        ],
        json!({"who": {"id": 7}}),
    );
    h.engine.execute_plan(snap).await.unwrap();
    let calls = h.script.calls();
    assert_eq!(
        calls[1].params,
        json!({
            "number": 5,
            "list": [1, 2],
            "text": "n=5 of [1,2]",
            "nested": {"deep": [{"id": 7}]},
            "run": "run-1",
            "plan": "plan-1",
            "escaped": "${literal}",
        })
    );
}

#[tokio::test]
async fn a_missing_path_fails_the_step_with_a_clear_error() {
    let h = Harness::new();
    h.script.push([Answer::Ok(json!({"n": 5}))]);
    let snap = h.start(
        vec![
            scripted("first", json!({})),
            scripted("second", json!({"x": "${steps.first.output.missing}"})),
        ],
        json!({}),
    );
    let outcome = h.engine.execute_plan(snap).await.unwrap();
    assert_eq!(outcome.status, RunStatus::Failed);
    let error = outcome.states[1].error.clone().unwrap();
    assert!(
        error.contains("'x'") && error.contains("missing"),
        "{error}"
    );
    assert_eq!(h.script.calls().len(), 1, "the provider is not called");
    assert_eq!(outcome.states[1].attempts, 0);
}

#[tokio::test(start_paused = true)]
async fn retryable_failures_back_off_with_growing_delays() {
    let h = Harness::new();
    h.script.push([
        retryable("503 from upstream"),
        retryable("503 again"),
        Answer::Ok(json!("ok")),
    ]);
    let mut flaky = scripted("flaky", json!({}));
    flaky.retry = Some(exact_retry(3));
    let snap = h.start(vec![flaky], json!({}));
    let outcome = h.engine.execute_plan(snap).await.unwrap();

    assert_eq!(outcome.status, RunStatus::Succeeded);
    assert_eq!(outcome.states[0].attempts, 3);
    assert_eq!(
        h.log_summary(),
        vec![
            row("flaky", 1, "retrying"),
            row("flaky", 2, "retrying"),
            row("flaky", 3, "succeeded")
        ]
    );
    let logs = h.logs();
    assert_eq!(logs[0].error.as_deref(), Some("503 from upstream"));
    let calls = h.script.calls();
    assert_eq!(calls[1].at - calls[0].at, Duration::from_millis(500));
    assert_eq!(calls[2].at - calls[1].at, Duration::from_millis(1000));
    // Each retried attempt's row is written alone; the last with the state and the run's end.
    assert_eq!(h.store.write_count(), 3);
    // The key is the same for every attempt.
    let key = idempotency_key("run-1", "flaky");
    assert!(calls.iter().all(|c| c.idempotency_key == key));
}

#[tokio::test(start_paused = true)]
async fn jittered_delays_stay_within_half_and_all_of_the_nominal_delay() {
    let h = Harness::new();
    h.script.push([
        retryable("1"),
        retryable("2"),
        retryable("3"),
        Answer::Ok(json!(1)),
    ]);
    let mut flaky = scripted("flaky", json!({}));
    flaky.retry = Some(RetryPolicy {
        max_attempts: 4,
        ..RetryPolicy::default()
    });
    let snap = h.start(vec![flaky], json!({}));
    h.engine.execute_plan(snap).await.unwrap();
    let calls = h.script.calls();
    for (n, nominal_ms) in [(1, 500), (2, 1000), (3, 2000)] {
        let delay = calls[n].at - calls[n - 1].at;
        let nominal = Duration::from_millis(nominal_ms);
        assert!(
            delay <= nominal && delay >= nominal / 2,
            "delay {n}: {delay:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_permanent_failure_is_not_retried_and_skips_later_steps() {
    let h = Harness::new();
    h.script
        .push([Answer::Err(ProviderError::permanent("400 bad request"))]);
    let snap = h.start(
        vec![
            scripted("bad", json!({})),
            scripted("later", json!({})),
            scripted("last", json!({})),
        ],
        json!({}),
    );
    let run_id = snap.run_id.clone();
    let outcome = h.engine.execute_plan(snap).await.unwrap();

    assert_eq!(h.script.calls().len(), 1);
    assert_eq!(outcome.status, RunStatus::Failed);
    assert_eq!(
        outcome.error.as_deref(),
        Some("step 'bad' failed: 400 bad request")
    );
    assert_eq!(
        statuses(&outcome.states),
        vec![StepStatus::Failed, StepStatus::Skipped, StepStatus::Skipped]
    );
    assert_eq!(
        h.log_summary(),
        vec![
            row("bad", 1, "failed"),
            row("later", 0, "skipped"),
            row("last", 0, "skipped")
        ]
    );
    let stored = h.store.run(&run_id).unwrap();
    assert_eq!(stored.status, RunStatus::Failed);
    assert_eq!(stored.error, outcome.error);
    assert_eq!(stored.states, outcome.states);
}

#[tokio::test(start_paused = true)]
async fn exhausted_retries_fail_the_step() {
    let h = Harness::new();
    h.script.push([
        retryable("down"),
        retryable("down"),
        retryable("still down"),
    ]);
    let snap = h.start(vec![scripted("s", json!({}))], json!({}));
    let outcome = h.engine.execute_plan(snap).await.unwrap();
    assert_eq!(
        h.script.calls().len(),
        3,
        "the default policy makes 3 attempts"
    );
    assert_eq!(outcome.status, RunStatus::Failed);
    assert_eq!(outcome.states[0].error.as_deref(), Some("still down"));
    assert_eq!(
        h.log_summary(),
        vec![
            row("s", 1, "retrying"),
            row("s", 2, "retrying"),
            row("s", 3, "failed")
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_honoured_within_the_budget() {
    // Waiting in the executor (a caller that cannot park the run).
    let config = EngineConfig {
        park_retries_after: None,
        ..EngineConfig::default()
    };
    let h = Harness::with(config, |_, _| {});
    h.script.push([
        Answer::Err(ProviderError::Retryable {
            message: "429".into(),
            retry_after: Some(Duration::from_secs(7)),
        }),
        Answer::Ok(json!(1)),
    ]);
    let snap = h.start(vec![scripted("s", json!({}))], json!({}));
    let outcome = h.engine.execute_plan(snap).await.unwrap();
    assert_eq!(outcome.status, RunStatus::Succeeded);
    let calls = h.script.calls();
    assert_eq!(calls[1].at - calls[0].at, Duration::from_secs(7));
}

#[tokio::test(start_paused = true)]
async fn retry_after_beyond_the_budget_fails_now() {
    let h = Harness::new();
    h.script.push([Answer::Err(ProviderError::Retryable {
        message: "429".into(),
        retry_after: Some(Duration::from_secs(10)),
    })]);
    // Budget: 3 attempts of 1 s plus delays of 0.5 s and 1 s = 4.5 s.
    let mut step = scripted("s", json!({}));
    step.timeout_ms = Some(1000);
    let snap = h.start(vec![step], json!({}));
    let outcome = h.engine.execute_plan(snap).await.unwrap();
    assert_eq!(h.script.calls().len(), 1);
    assert_eq!(outcome.status, RunStatus::Failed);
    let error = outcome.states[0].error.clone().unwrap();
    assert!(
        error.starts_with("429 (the server asked to retry after 10000 ms"),
        "{error}"
    );
    assert_eq!(h.log_summary(), vec![row("s", 1, "failed")]);
}

#[tokio::test(start_paused = true)]
async fn a_slow_attempt_times_out_and_is_retried() {
    let h = Harness::new();
    let slow = Answer::After(Duration::from_secs(60), Box::new(Answer::Ok(json!("late"))));
    h.script.push([slow, Answer::Ok(json!("quick"))]);
    let mut step = scripted("s", json!({}));
    step.timeout_ms = Some(100);
    step.retry = Some(exact_retry(2));
    let snap = h.start(vec![step], json!({}));
    let outcome = h.engine.execute_plan(snap).await.unwrap();

    assert_eq!(outcome.status, RunStatus::Succeeded);
    assert_eq!(outcome.states[0].output, Some(json!("quick")));
    let logs = h.logs();
    assert_eq!(logs[0].status, "retrying");
    assert_eq!(logs[0].error.as_deref(), Some("timed out after 100 ms"));
    assert_eq!(logs[0].latency_ms, 100);
    let calls = h.script.calls();
    assert_eq!(calls[0].timeout, Duration::from_millis(100));
    // 100 ms of attempt, then the 500 ms backoff.
    assert_eq!(calls[1].at - calls[0].at, Duration::from_millis(600));
}

#[tokio::test(start_paused = true)]
async fn the_run_timeout_fails_the_run_despite_continue_on_error() {
    let config = EngineConfig {
        run_timeout: Duration::from_secs(2),
        ..EngineConfig::default()
    };
    let h = Harness::with(config, |_, _| {});
    h.script.push([Answer::After(
        Duration::from_secs(5),
        Box::new(Answer::Ok(json!(1))),
    )]);
    let mut slow = scripted("slow", json!({}));
    slow.continue_on_error = true;
    let snap = h.start(vec![slow, scripted("next", json!({}))], json!({}));
    let outcome = h.engine.execute_plan(snap).await.unwrap();

    assert_eq!(
        h.script.calls().len(),
        1,
        "no retry after the run timed out"
    );
    assert_eq!(h.script.calls()[0].timeout, Duration::from_secs(2));
    assert_eq!(outcome.status, RunStatus::Failed);
    assert_eq!(
        outcome.error.as_deref(),
        Some("step 'slow' failed: the run exceeded its timeout of 2000 ms")
    );
    assert_eq!(
        statuses(&outcome.states),
        vec![StepStatus::Failed, StepStatus::Skipped]
    );
}

#[tokio::test]
async fn a_resumed_run_skips_finished_steps_and_reads_their_stored_outputs() {
    let h = Harness::new();
    let steps = vec![
        scripted("a", json!({})),
        scripted("b", json!({})),
        scripted(
            "c",
            json!({"from_a": "${steps.a.output.v}", "from_b": "${steps.1.output}"}),
        ),
    ];
    let finished = |id: &str, output: Value| StepState {
        status: StepStatus::Succeeded,
        output: Some(output),
        attempts: 1,
        ..StepState::pending(id)
    };
    let mut snap = snapshot(
        steps,
        json!({}),
        vec![finished("a", json!({"v": 1})), finished("b", json!([2]))],
    );
    snap.epoch = 4;
    h.store.insert_run(&snap);
    let outcome = h.engine.execute_plan(snap).await.unwrap();

    assert_eq!(h.script.call_steps(), vec!["c"]);
    assert_eq!(
        h.script.calls()[0].params,
        json!({"from_a": 1, "from_b": [2]})
    );
    assert_eq!(outcome.status, RunStatus::Succeeded);
    assert_eq!(h.store.write_count(), 1);
    assert_eq!(h.log_summary(), vec![row("c", 1, "succeeded")]);
}

#[tokio::test]
async fn a_resumed_run_with_a_stored_failure_skips_the_rest() {
    let h = Harness::new();
    let failed = StepState {
        status: StepStatus::Failed,
        error: Some("boom".into()),
        attempts: 3,
        ..StepState::pending("a")
    };
    let snap = snapshot(
        vec![scripted("a", json!({})), scripted("b", json!({}))],
        json!({}),
        vec![failed],
    );
    h.store.insert_run(&snap);
    let outcome = h.engine.execute_plan(snap).await.unwrap();
    assert!(h.script.calls().is_empty());
    assert_eq!(outcome.status, RunStatus::Failed);
    assert_eq!(outcome.error.as_deref(), Some("step 'a' failed: boom"));
    assert_eq!(h.log_summary(), vec![row("b", 0, "skipped")]);
}

#[tokio::test]
async fn continue_on_error_goes_on_and_a_reference_to_the_failed_step_fails_clearly() {
    let h = Harness::new();
    h.script
        .push([Answer::Err(ProviderError::permanent("nope"))]);
    let mut optional = scripted("optional", json!({}));
    optional.continue_on_error = true;
    let snap = h.start(
        vec![
            optional,
            scripted("independent", json!({"x": 1})),
            scripted("dependent", json!({"y": "${steps.optional.output}"})),
        ],
        json!({}),
    );
    let outcome = h.engine.execute_plan(snap).await.unwrap();

    assert_eq!(h.script.call_steps(), vec!["optional", "independent"]);
    assert_eq!(
        statuses(&outcome.states),
        vec![
            StepStatus::Failed,
            StepStatus::Succeeded,
            StepStatus::Failed
        ]
    );
    let error = outcome.states[2].error.clone().unwrap();
    assert!(error.contains("optional"), "names the step: {error}");
    assert_eq!(outcome.status, RunStatus::Failed);
    assert!(
        outcome
            .error
            .unwrap()
            .starts_with("step 'dependent' failed")
    );
}

#[tokio::test]
async fn continue_on_error_alone_leaves_the_run_succeeded() {
    let h = Harness::new();
    h.script
        .push([Answer::Err(ProviderError::permanent("nope"))]);
    let mut optional = scripted("optional", json!({}));
    optional.continue_on_error = true;
    let snap = h.start(vec![optional, scripted("next", json!({}))], json!({}));
    let outcome = h.engine.execute_plan(snap).await.unwrap();
    assert_eq!(outcome.status, RunStatus::Succeeded);
    assert_eq!(outcome.states[0].status, StepStatus::Failed);
}

#[tokio::test]
async fn when_false_or_null_skips_and_any_other_value_runs() {
    let cases = [
        ("false", false),
        ("null", false),
        ("true", true),
        ("zero", true),
    ];
    for (expr, runs) in cases {
        let h = Harness::new();
        let mut guarded = scripted("guarded", json!({}));
        guarded.when = Some(expr.into());
        let snap = h.start(vec![guarded, scripted("after", json!({}))], json!({}));
        let outcome = h.engine.execute_plan(snap).await.unwrap();
        assert_eq!(outcome.status, RunStatus::Succeeded, "{expr}");
        let expect = if runs {
            vec!["guarded", "after"]
        } else {
            vec!["after"]
        };
        assert_eq!(h.script.call_steps(), expect, "{expr}");
        let status = if runs {
            StepStatus::Succeeded
        } else {
            StepStatus::Skipped
        };
        assert_eq!(outcome.states[0].status, status, "{expr}");
        assert_eq!(h.store.write_count(), 2, "{expr}");
    }
}

#[tokio::test]
async fn when_sees_input_and_earlier_outputs() {
    let h = Harness::new();
    h.script.push([Answer::Ok(json!({"k": 1}))]);
    let mut guarded = scripted("guarded", json!({}));
    guarded.when = Some("input.go".into());
    let snap = h.start(
        vec![scripted("first", json!({})), guarded],
        json!({"go": true}),
    );
    h.engine.execute_plan(snap).await.unwrap();
    assert_eq!(h.script.call_steps(), vec!["first", "guarded"]);
    let seen = h.evaluator.seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        vec![json!({"input": {"go": true}, "steps": {"first": {"output": {"k": 1}}}})]
    );
}

#[tokio::test]
async fn a_when_error_fails_the_step_permanently() {
    let h = Harness::new();
    let mut guarded = scripted("guarded", json!({}));
    guarded.when = Some("broken".into());
    let snap = h.start(vec![guarded], json!({}));
    let outcome = h.engine.execute_plan(snap).await.unwrap();
    assert!(h.script.calls().is_empty());
    assert_eq!(outcome.status, RunStatus::Failed);
    assert_eq!(
        outcome.states[0].error.as_deref(),
        Some("when: cannot evaluate broken")
    );
    assert_eq!(h.evaluator.seen.lock().unwrap().len(), 1, "evaluated once");
}

#[tokio::test]
async fn cancellation_stops_at_the_next_step_boundary() {
    let h = Harness::new();
    let snap = h.start(
        vec![
            scripted("a", json!({})),
            scripted("b", json!({})),
            scripted("c", json!({})),
        ],
        json!({}),
    );
    let run_id = snap.run_id.clone();
    // The request is seen in the answer to step a's write.
    h.store.request_cancel(&run_id);
    let outcome = h.engine.execute_plan(snap).await.unwrap();

    assert_eq!(h.script.call_steps(), vec!["a"]);
    assert_eq!(outcome.status, RunStatus::Cancelled);
    assert_eq!(
        statuses(&outcome.states),
        vec![
            StepStatus::Succeeded,
            StepStatus::Skipped,
            StepStatus::Skipped
        ]
    );
    assert_eq!(h.store.run(&run_id).unwrap().status, RunStatus::Cancelled);
    let logs = h.logs();
    assert_eq!(logs[1].status, "skipped");
    assert_eq!(
        logs[1].message.as_deref(),
        Some("skipped: the run was cancelled")
    );
}

#[tokio::test(start_paused = true)]
async fn a_stale_epoch_stops_the_run_and_nothing_more_is_written() {
    let h = Harness::new();
    h.script.push([
        Answer::Ok(json!(1)),
        Answer::After(Duration::from_secs(10), Box::new(Answer::Ok(json!(2)))),
    ]);
    let snap = h.start(
        vec![
            scripted("a", json!({})),
            scripted("b", json!({})),
            scripted("c", json!({})),
        ],
        json!({}),
    );
    let run_id = snap.run_id.clone();
    let engine = h.engine.clone();
    let task = tokio::spawn(async move { engine.execute_plan(snap).await });
    tokio::time::sleep(Duration::from_secs(5)).await;
    // Another worker takes the run over while step b is in flight.
    h.store.bump_epoch(&run_id).unwrap();
    let result = task.await.unwrap();

    assert!(matches!(result, Err(EngineError::Fenced)), "{result:?}");
    assert_eq!(h.script.call_steps(), vec!["a", "b"]);
    assert_eq!(h.store.write_count(), 1, "only step a's write landed");
    let stored = h.store.run(&run_id).unwrap();
    assert_eq!(stored.states[1].status, StepStatus::Pending);
    assert_eq!(stored.status, RunStatus::Running);
}

#[tokio::test(start_paused = true)]
async fn the_idempotency_key_survives_a_takeover() {
    let h = Harness::new();
    h.script.push([
        Answer::Ok(json!({"v": 1})),
        Answer::After(Duration::from_secs(10), Box::new(Answer::Ok(json!("lost")))),
        Answer::Ok(json!("second try")),
    ]);
    let steps = vec![
        scripted("a", json!({})),
        scripted("b", json!({"v": "${steps.a.output.v}"})),
    ];
    let snap = h.start(steps.clone(), json!({}));
    let run_id = snap.run_id.clone();
    let engine = h.engine.clone();
    let task = tokio::spawn(async move { engine.execute_plan(snap).await });
    tokio::time::sleep(Duration::from_secs(5)).await;
    let epoch = h.store.bump_epoch(&run_id).unwrap();
    assert!(matches!(task.await.unwrap(), Err(EngineError::Fenced)));

    // The new owner resumes from what the store holds.
    let stored = h.store.run(&run_id).unwrap();
    let mut resumed = snapshot(steps, json!({}), stored.states);
    resumed.epoch = epoch;
    let outcome = h.engine.execute_plan(resumed).await.unwrap();

    assert_eq!(outcome.status, RunStatus::Succeeded);
    assert_eq!(h.script.call_steps(), vec!["a", "b", "b"]);
    let calls = h.script.calls();
    assert_eq!(calls[1].idempotency_key, calls[2].idempotency_key);
    assert_eq!(calls[2].idempotency_key, idempotency_key("run-1", "b"));
    assert_ne!(calls[0].idempotency_key, calls[1].idempotency_key);
    assert_eq!(calls[2].params, json!({"v": 1}));
}

#[tokio::test]
async fn credentials_are_loaded_only_for_providers_that_declare_credential_types() {
    let h = Harness::with(EngineConfig::default(), |registry, script| {
        let mut vault = Scripted::new("vault", script);
        vault.credential_types = vec![CredentialKind::Bearer];
        registry.register(vault).unwrap();
    });
    let user = "alice".into();
    for provider in ["vault", "scripted"] {
        h.store.add_credential(
            &user,
            pilot_core::Credential {
                provider: provider.into(),
                kind: CredentialKind::Bearer,
                secret: pilot_core::Secret::new(format!("{provider}-secret")),
                origin: None,
                integration: None,
                header_name: None,
            },
        );
    }
    let snap = h.start(
        vec![
            scripted("plain", json!({})),
            crate::support::step("keyed", "vault", "call", json!({})),
        ],
        json!({}),
    );
    h.engine.execute_plan(snap).await.unwrap();
    let calls = h.script.calls();
    assert!(
        calls[0].secrets.is_empty(),
        "no credentials for a credential-less provider"
    );
    assert_eq!(calls[1].secrets, vec!["vault-secret"]);
    assert!(calls[1].has_store);
}

#[tokio::test]
async fn execute_step_answers_the_provider_result() {
    let h = Harness::new();
    h.script.push([Answer::Full(ProviderOutput {
        output: json!({"status": 200}),
        message: Some("sent".into()),
        metadata: json!({"http_status": 200}),
    })]);
    let mut snap = h.start(vec![scripted("only", json!({}))], json!({}));
    snap.trigger = TriggerKind::Step;
    let result = h.engine.execute_step(snap).await.unwrap();
    assert!(result.success);
    assert_eq!(result.output, json!({"status": 200}));
    assert_eq!(result.message.as_deref(), Some("sent"));
    assert_eq!(result.metadata, json!({"http_status": 200}));
    assert_eq!(result.error, None);
    assert_eq!(h.log_summary(), vec![row("only", 1, "succeeded")]);

    let h = Harness::new();
    h.script
        .push([Answer::Err(ProviderError::permanent("bad"))]);
    let snap = h.start(vec![scripted("only", json!({}))], json!({}));
    let result = h.engine.execute_step(snap).await.unwrap();
    assert!(!result.success);
    assert_eq!(result.output, Value::Null);
    assert_eq!(result.error.as_deref(), Some("bad"));
}

#[tokio::test]
async fn execute_step_refuses_anything_but_one_step() {
    let h = Harness::new();
    let snap = h.start(
        vec![scripted("a", json!({})), scripted("b", json!({}))],
        json!({}),
    );
    let result = h.engine.execute_step(snap).await;
    assert!(matches!(result, Err(EngineError::InvalidSnapshot(_))));
    assert_eq!(h.store.write_count(), 0);
}

#[tokio::test]
async fn mismatched_states_are_refused_before_anything_runs() {
    let h = Harness::new();
    let snap = snapshot(
        vec![scripted("a", json!({}))],
        json!({}),
        vec![StepState::pending("other")],
    );
    h.store.insert_run(&snap);
    let result = h.engine.execute_plan(snap).await;
    assert!(matches!(result, Err(EngineError::InvalidSnapshot(_))));
    assert!(h.script.calls().is_empty());
    assert_eq!(h.store.write_count(), 0);
}

#[tokio::test]
async fn an_empty_or_already_finished_run_writes_only_its_end() {
    let h = Harness::new();
    let snap = h.start(Vec::new(), json!({}));
    let run_id = snap.run_id.clone();
    let outcome = h.engine.execute_plan(snap).await.unwrap();
    assert_eq!(outcome.status, RunStatus::Succeeded);
    assert_eq!(h.store.write_count(), 1);
    assert_eq!(h.store.run(&run_id).unwrap().status, RunStatus::Succeeded);
}

#[tokio::test]
async fn a_large_output_is_stored_whole_and_previewed_in_one_kib() {
    let h = Harness::new();
    let big = json!({"text": "é".repeat(3000)});
    h.script.push([Answer::Ok(big.clone())]);
    let snap = h.start(vec![scripted("big", json!({}))], json!({}));
    let outcome = h.engine.execute_plan(snap).await.unwrap();
    assert_eq!(outcome.states[0].output, Some(big));
    let preview = h.logs()[0].output_preview.clone().unwrap();
    assert!(
        preview.len() <= 1024 && preview.len() > 1000,
        "{}",
        preview.len()
    );
    assert!(preview.starts_with("{\"text\":\"éé"));
}

#[tokio::test(start_paused = true)]
async fn an_unbounded_run_timeout_does_not_overflow_the_clock() {
    // An operator may configure "no run timeout" as a huge duration; the deadline saturates
    // instead of panicking, and retries still follow the policy.
    let config = EngineConfig {
        run_timeout: Duration::MAX,
        ..EngineConfig::default()
    };
    let h = Harness::with(config, |_, _| {});
    h.script.push([retryable("down"), Answer::Ok(json!(1))]);
    let snap = h.start(vec![scripted("s", json!({}))], json!({}));
    let outcome = h.engine.execute_plan(snap).await.unwrap();
    assert_eq!(outcome.status, RunStatus::Succeeded);
    assert_eq!(h.script.calls().len(), 2);
}

/// A credential store whose lookups fail with a chosen error.
struct BrokenCredentials(fn() -> pilot_core::StoreError);

#[async_trait::async_trait]
impl pilot_core::CredentialStore for BrokenCredentials {
    async fn credentials(
        &self,
        _user: &pilot_core::UserId,
        _provider: &str,
    ) -> Result<Vec<pilot_core::Credential>, pilot_core::StoreError> {
        Err((self.0)())
    }

    async fn integration(
        &self,
        _user: &pilot_core::UserId,
        _name: &str,
    ) -> Result<Option<pilot_core::Integration>, pilot_core::StoreError> {
        Err((self.0)())
    }
}

#[tokio::test(start_paused = true)]
async fn only_an_unavailable_credential_store_is_retried() {
    // (error, attempts made): an undecryptable credential will not decrypt on a second try.
    let check = |error: fn() -> pilot_core::StoreError, expect_attempts: u32| async move {
        let h = Harness::with(EngineConfig::default(), |registry, script| {
            let mut vault = Scripted::new("vault", script);
            vault.credential_types = vec![CredentialKind::Bearer];
            registry.register(vault).unwrap();
        });
        let mut parts = pilot_engine::EngineParts {
            registry: h.engine.registry().clone(),
            runs: h.store.clone(),
            credentials: std::sync::Arc::new(BrokenCredentials(error)),
            http: std::sync::Arc::new(
                pilot_registry::OutboundClient::new(pilot_registry::OutboundConfig::default())
                    .unwrap(),
            ),
            config: EngineConfig::default(),
        };
        parts.config.run_timeout = Duration::from_secs(600);
        let engine = pilot_engine::Engine::new(parts);
        let snap = h.start(
            vec![crate::support::step("keyed", "vault", "call", json!({}))],
            json!({}),
        );
        let outcome = engine.execute_plan(snap).await.unwrap();
        assert_eq!(outcome.status, RunStatus::Failed);
        assert_eq!(outcome.states[0].attempts, expect_attempts);
        assert!(h.script.calls().is_empty(), "the provider is never called");
    };
    check(
        || pilot_core::StoreError::Corrupt("authentication failed".into()),
        1,
    )
    .await;
    check(
        || pilot_core::StoreError::Unavailable("database down".into()),
        3,
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_cancel_request_seen_between_attempts_ends_the_run_cancelled() {
    let h = Harness::new();
    h.script.push([
        Answer::Err(ProviderError::retryable("down")),
        Answer::Err(ProviderError::retryable("down")),
    ]);
    let mut flaky = scripted("flaky", json!({}));
    flaky.retry = Some(exact_retry(5));
    let snap = h.start(vec![flaky, scripted("after", json!({}))], json!({}));
    let run_id = snap.run_id.clone();
    // The request is seen in the answer to the retried attempt's log write.
    h.store.request_cancel(&run_id);
    let outcome = h.engine.execute_plan(snap).await.unwrap();

    assert_eq!(h.script.call_steps(), vec!["flaky"], "no second attempt");
    assert_eq!(outcome.status, RunStatus::Cancelled);
    assert_eq!(
        statuses(&outcome.states),
        vec![StepStatus::Skipped, StepStatus::Skipped]
    );
    assert_eq!(h.store.run(&run_id).unwrap().status, RunStatus::Cancelled);
    let summary = h.log_summary();
    assert_eq!(summary[0], ("flaky".into(), 1, "retrying".into()));
    assert_eq!(summary[1].2, "skipped");
    assert_eq!(
        h.logs()[1].message.as_deref(),
        Some("skipped: the run was cancelled before attempt 2")
    );
}

#[tokio::test(start_paused = true)]
async fn a_cancel_raised_during_a_backoff_stops_the_next_attempt() {
    let h = Harness::new();
    h.script.push([
        Answer::Err(ProviderError::retryable("down")),
        Answer::Ok(json!(1)),
    ]);
    let mut flaky = scripted("flaky", json!({}));
    flaky.retry = Some(exact_retry(3));
    let snap = h.start(vec![flaky], json!({}));
    // What a heartbeat's answer does when the owner asks to cancel during the 500 ms backoff.
    let cancel = snap.cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        cancel.request();
    });
    let outcome = h.engine.execute_plan(snap).await.unwrap();
    assert_eq!(h.script.calls().len(), 1);
    assert_eq!(outcome.status, RunStatus::Cancelled);
}

#[tokio::test]
async fn a_run_claimed_with_a_cancel_request_runs_nothing() {
    let h = Harness::new();
    let snap = h.start(
        vec![scripted("a", json!({})), scripted("b", json!({}))],
        json!({}),
    );
    // A takeover or re-claim of a run whose owner asked to cancel it.
    let snap = pilot_core::RunSnapshot {
        cancel: pilot_core::CancelSignal::new(true),
        ..snap
    };
    let outcome = h.engine.execute_plan(snap).await.unwrap();
    assert!(h.script.calls().is_empty());
    assert_eq!(outcome.status, RunStatus::Cancelled);
    assert_eq!(
        statuses(&outcome.states),
        vec![StepStatus::Skipped, StepStatus::Skipped]
    );
}

/// A small engine configuration for the size limits.
fn limited(max_output_bytes: usize, max_run_state_bytes: usize) -> Harness {
    Harness::with(
        EngineConfig {
            max_output_bytes,
            max_run_state_bytes,
            ..EngineConfig::default()
        },
        |_, _| {},
    )
}

#[tokio::test]
async fn an_output_over_the_step_limit_fails_the_step_and_is_not_stored() {
    let h = limited(1000, 16_000);
    h.script.push([
        Answer::Ok(json!("x".repeat(998))),
        Answer::Ok(json!("x".repeat(999))),
    ]);
    let snap = h.start(
        vec![scripted("fits", json!({})), scripted("big", json!({}))],
        json!({}),
    );
    let run_id = snap.run_id.clone();
    let outcome = h.engine.execute_plan(snap).await.unwrap();
    assert_eq!(outcome.status, RunStatus::Failed);
    assert_eq!(
        outcome.states[0].status,
        StepStatus::Succeeded,
        "1000 bytes fit"
    );
    assert_eq!(outcome.states[1].status, StepStatus::Failed);
    assert_eq!(outcome.states[1].output, None);
    let error = outcome.states[1].error.clone().unwrap();
    assert!(
        error.contains("larger than the limit of 1000 bytes per step"),
        "{error}"
    );
    let stored = h.store.run(&run_id).unwrap();
    assert_eq!(stored.states[1].output, None);
    assert_eq!(h.logs()[1].output_preview, None);
}

#[tokio::test]
async fn the_run_state_limit_bounds_all_outputs_together_and_resolved_params() {
    let h = limited(1000, 2500);
    let big = json!("y".repeat(898)); // 900 bytes as JSON
    h.script.push([
        Answer::Ok(big.clone()),
        Answer::Ok(big.clone()),
        Answer::Ok(big.clone()),
    ]);
    let mut third = scripted("c", json!({}));
    third.continue_on_error = true;
    let copies: Vec<String> = (0..4).map(|_| "${steps.a.output}".to_owned()).collect();
    let amplify = scripted("amplify", json!({"copies": copies}));
    let snap = h.start(
        vec![
            scripted("a", json!({})),
            scripted("b", json!({})),
            third,
            amplify,
        ],
        json!({}),
    );
    let outcome = h.engine.execute_plan(snap).await.unwrap();
    assert_eq!(statuses(&outcome.states)[..2], [StepStatus::Succeeded; 2]);
    let third = outcome.states[2].error.clone().unwrap();
    assert!(
        third.contains("run's stored state past its limit of 2500 bytes"),
        "{third}"
    );
    let amplified = outcome.states[3].error.clone().unwrap();
    assert!(
        amplified.contains("resolved params would exceed 2500 bytes"),
        "{amplified}"
    );
    assert_eq!(h.script.calls().len(), 3, "the amplifying step never ran");
}

/// A provider whose call panics.
struct Panicky;

#[async_trait::async_trait]
impl pilot_registry::Provider for Panicky {
    fn describe(&self) -> pilot_registry::ProviderDescription {
        pilot_registry::ProviderDescription {
            name: "boom".into(),
            description: "Panics.".into(),
            actions: vec![pilot_core::ActionSpec {
                name: "call".into(),
                description: "Panics.".into(),
                params: Vec::new(),
                one_of: Vec::new(),
            }],
            credential_types: Vec::new(),
        }
    }

    async fn execute(
        &self,
        _action: &str,
        _params: &Value,
        _ctx: &pilot_registry::ProviderContext,
    ) -> Result<ProviderOutput, ProviderError> {
        panic!("index out of bounds in a provider");
    }
}

#[tokio::test]
async fn a_provider_panic_fails_its_attempt_and_the_run_goes_on() {
    let h = Harness::with(EngineConfig::default(), |registry, _| {
        registry.register(Panicky).unwrap();
    });
    let mut boom = crate::support::step("boom", "boom", "call", json!({}));
    boom.continue_on_error = true;
    boom.retry = Some(exact_retry(3));
    let snap = h.start(vec![boom, scripted("after", json!({}))], json!({}));
    let outcome = h.engine.execute_plan(snap).await.unwrap();

    assert_eq!(
        outcome.status,
        RunStatus::Succeeded,
        "continue_on_error applies"
    );
    assert_eq!(
        statuses(&outcome.states),
        vec![StepStatus::Failed, StepStatus::Succeeded]
    );
    let error = outcome.states[0].error.clone().unwrap();
    assert!(
        error.starts_with(
            "internal error: provider 'boom' panicked (index out of bounds in a provider)"
        ),
        "{error}"
    );
    assert_eq!(outcome.states[0].attempts, 1, "a panic is not retried");
    assert_eq!(h.logs()[0].error.as_deref(), Some(error.as_str()));
    assert_eq!(h.engine.registry().panic_count(), 1);

    // The same engine runs the next run as usual.
    let next = h.start(vec![scripted("again", json!({}))], json!({}));
    let next = pilot_core::RunSnapshot {
        run_id: pilot_core::RunId::from("run-2"),
        ..next
    };
    h.store.insert_run(&next);
    assert_eq!(
        h.engine.execute_plan(next).await.unwrap().status,
        RunStatus::Succeeded
    );
}

#[tokio::test(start_paused = true)]
async fn a_long_retry_delay_parks_the_run_and_a_resume_makes_the_next_attempt() {
    let h = Harness::new();
    h.script.push([
        Answer::Err(ProviderError::Retryable {
            message: "busy".into(),
            retry_after: Some(Duration::from_secs(60)),
        }),
        Answer::Ok(json!("done")),
    ]);
    let mut flaky = scripted("flaky", json!({}));
    flaky.retry = Some(exact_retry(3));
    let snap = h.start(vec![flaky, scripted("after", json!({}))], json!({}));
    let run_id = snap.run_id.clone();
    let outcome = h.engine.execute_plan(snap.clone()).await.unwrap();

    assert_eq!(outcome.status, RunStatus::Queued);
    assert_eq!(outcome.resume_after, Some(Duration::from_secs(60)));
    assert_eq!(h.script.calls().len(), 1, "no waiting in the executor");
    let stored = h.store.run(&run_id).unwrap();
    assert_eq!(
        stored.status,
        RunStatus::Running,
        "the caller parks it, not the engine"
    );
    assert_eq!(stored.states[0].status, StepStatus::Pending);
    assert_eq!(stored.states[0].attempts, 1);
    assert_eq!(
        h.log_summary(),
        vec![("flaky".into(), 1, "retrying".into())]
    );

    // Whoever claims it next resumes at attempt 2, with the same key.
    let resumed = pilot_core::RunSnapshot {
        states: stored.states,
        ..snap
    };
    let outcome = h.engine.execute_plan(resumed).await.unwrap();
    assert_eq!(outcome.status, RunStatus::Succeeded);
    assert_eq!(outcome.resume_after, None);
    assert_eq!(outcome.states[0].attempts, 2);
    let calls = h.script.calls();
    assert_eq!(calls.len(), 3);
    assert_eq!(calls[0].idempotency_key, calls[1].idempotency_key);
    assert_eq!(
        h.log_summary(),
        vec![
            ("flaky".into(), 1, "retrying".into()),
            ("flaky".into(), 2, "succeeded".into()),
            ("after".into(), 1, "succeeded".into()),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn execute_step_never_parks() {
    let h = Harness::new();
    h.script.push([
        Answer::Err(ProviderError::Retryable {
            message: "busy".into(),
            retry_after: Some(Duration::from_secs(20)),
        }),
        Answer::Ok(json!("done")),
    ]);
    let mut flaky = scripted("flaky", json!({}));
    flaky.retry = Some(exact_retry(2));
    let snap = h.start(vec![flaky], json!({}));
    let result = h.engine.execute_step(snap).await.unwrap();
    assert!(result.success);
    assert_eq!(result.output, json!("done"));
}
