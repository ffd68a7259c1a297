//! A plan through the real logic provider and its jq `when` evaluator: logic.transform ->
//! logic.template -> the scripted provider, which must receive typed values through
//! `${steps.<id>.output...}`.

// Marks the whole file as test code, so helpers outside #[test] functions may unwrap.

use crate::support::{Harness, scripted, step};
use pilot_core::{RunStatus, StepStatus};
use pilot_engine::EngineConfig;
use serde_json::json;

fn harness() -> Harness {
    Harness::with(EngineConfig::default(), |registry, _| {
        pilot_provider_logic::register(registry).unwrap();
    })
}

#[tokio::test]
async fn transform_then_template_then_a_provider_receives_typed_values() {
    let h = harness();
    let steps = vec![
        step(
            "total",
            "logic",
            "transform",
            json!({"expression": "{sum: (.items | map(.price) | add), n: (.items | length)}", "input": "${input}"}),
        ),
        step(
            "render",
            "logic",
            "template",
            json!({
                "template": "{\"total\": ${steps.total.output.sum}, \"label\": \"${steps.total.output.n} items for ${input.customer}\"}",
                "json": true,
            }),
        ),
        scripted(
            "use",
            json!({
                "total": "${steps.render.output.total}",
                "label": "${steps.render.output.label}",
                "whole": "${steps.1.output}",
                "count": "${steps.total.output.n}",
            }),
        ),
    ];
    let input = json!({"customer": "ada", "items": [{"price": 2}, {"price": 3.5}]});
    let snap = h.start(steps, input);
    let outcome = h.engine.execute_plan(snap).await.unwrap();

    assert_eq!(outcome.status, RunStatus::Succeeded, "{:?}", outcome.error);
    assert_eq!(outcome.states[0].output, Some(json!({"sum": 5.5, "n": 2})));
    let calls = h.script.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(
        calls[0].params,
        json!({
            "total": 5.5,
            "label": "2 items for ada",
            "whole": {"total": 5.5, "label": "2 items for ada"},
            "count": 2,
        })
    );
    assert_eq!(h.store.write_count(), 3);
}

#[tokio::test]
async fn jq_when_conditions_run_or_skip_steps() {
    let h = harness();
    let guarded = |id: &str, when: &str| {
        let mut s = scripted(id, json!({}));
        s.when = Some(when.into());
        s
    };
    let steps = vec![
        step("value", "logic", "set", json!({"value": {"n": 7}})),
        guarded("big", ".steps.value.output.n > 5"),
        guarded("small", ".steps.value.output.n < 5"),
        guarded("absent", ".input.missing"),
        guarded("flagged", ".input.flag"),
    ];
    let snap = h.start(steps, json!({"flag": "yes"}));
    let outcome = h.engine.execute_plan(snap).await.unwrap();

    assert_eq!(outcome.status, RunStatus::Succeeded);
    assert_eq!(h.script.call_steps(), vec!["big", "flagged"]);
    let statuses: Vec<StepStatus> = outcome.states.iter().map(|s| s.status).collect();
    assert_eq!(
        statuses,
        vec![
            StepStatus::Succeeded,
            StepStatus::Succeeded,
            StepStatus::Skipped,
            StepStatus::Skipped,
            StepStatus::Succeeded,
        ]
    );
}

#[tokio::test]
async fn a_failing_jq_when_fails_the_step() {
    let h = harness();
    let mut s = scripted("guarded", json!({}));
    s.when = Some("error(\"no\")".into());
    let snap = h.start(vec![s], json!({}));
    let outcome = h.engine.execute_plan(snap).await.unwrap();
    assert_eq!(outcome.status, RunStatus::Failed);
    assert!(h.script.calls().is_empty());
    let error = outcome.states[0].error.clone().unwrap();
    assert!(error.starts_with("when: "), "{error}");
}
