//! Helpers shared by the scheduler's tests and the worker binary's multi-process tests (feature
//! `test-support`): users, plans of webhook steps and their runs read back, waiting for the
//! database to reach a state, and the ledger check that proves no persisted step ran twice.
//! They serve tests only, so they panic on anything unexpected instead of returning errors.

use std::collections::HashMap;
use std::fmt::Debug;
use std::future::Future;
use std::time::Duration;

use pilot_core::{PlanId, RetryPolicy, RunId, Step, UserId};
use pilot_storage::{Database, NewPlan, PageRequest, RunRow};

/// A webhook step posting `{"step": id}` to `url`, with one attempt and a 20 s timeout.
pub fn post_step(id: &str, url: &str) -> Step {
    let mut params = serde_json::Map::new();
    params.insert("url".to_owned(), url.into());
    params.insert("body".to_owned(), serde_json::json!({ "step": id }));
    Step {
        id: id.to_owned(),
        provider: "webhook".to_owned(),
        action: "post".to_owned(),
        params,
        retry: Some(RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        }),
        timeout_ms: Some(20_000),
        when: None,
        continue_on_error: false,
    }
}

/// A user with a unique name.
pub async fn user(db: &Database) -> UserId {
    let name = format!("u-{}", pilot_core::new_id());
    ok(db.create_user(&name, false).await, "create a user").id
}

/// A stored, active plan of `steps`.
pub async fn plan(db: &Database, user: &UserId, name: &str, steps: Vec<Step>) -> PlanId {
    let plan = NewPlan {
        name: name.to_owned(),
        original_prompt: None,
        steps,
        plain_english_steps: Vec::new(),
        required_providers: vec!["webhook".to_owned()],
        trigger: None,
        status: "active".to_owned(),
    };
    ok(db.create_plan(user, &plan).await, "create a plan").id
}

/// Every run of `plan`, oldest first.
pub async fn runs_of(db: &Database, user: &UserId, plan: &PlanId) -> Vec<RunRow> {
    let mut out = Vec::new();
    let mut page = PageRequest::first(500);
    loop {
        let got = ok(
            db.list_runs_for_plan(user, plan, &page).await,
            "list the runs of a plan",
        );
        out.extend(got.items);
        match got.next_cursor {
            Some(c) => page = PageRequest::after(500, c),
            None => break,
        }
    }
    out.reverse();
    out
}

/// One run, which must exist.
pub async fn run(db: &Database, user: &UserId, id: &RunId) -> RunRow {
    ok(db.run_by_id(user, id).await, "read a run").unwrap_or_else(|| panic!("run {id} is gone"))
}

/// Polls `probe` every 50 ms until it answers `Some`, failing after `limit`.
pub async fn wait_for<T, F, Fut>(what: &str, limit: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Checks the ledger of webhook calls, `(path, Idempotency-Key)` pairs, against `runs`: each
/// call's key is `<run id>:<step id>` of a known run and step and went to that step's URL; each
/// step of each run was called at least once; and a run repeats step calls only as often as it
/// changed hands (a takeover re-executes at most the one step in flight). Answers how many
/// repeated calls there were in all.
pub fn check_ledger(calls: &[(String, String)], runs: &[RunRow]) -> usize {
    let by_id: HashMap<&str, &RunRow> = runs.iter().map(|r| (r.id.as_str(), r)).collect();
    let mut count: HashMap<&str, usize> = HashMap::new();
    for (path, key) in calls {
        let (run_id, step_id) = key
            .split_once(':')
            .unwrap_or_else(|| panic!("a call to {path} has no usable key: '{key}'"));
        let run = by_id
            .get(run_id)
            .unwrap_or_else(|| panic!("a call to {path} names an unknown run: '{key}'"));
        let step = run
            .steps
            .iter()
            .find(|s| s.id == step_id)
            .unwrap_or_else(|| panic!("a call to {path} names an unknown step: '{key}'"));
        let url = step.params["url"].as_str().unwrap_or_default();
        assert!(
            url.ends_with(path.as_str()),
            "{key} called {path}, not {url}"
        );
        *count.entry(key.as_str()).or_default() += 1;
    }
    let mut total = 0;
    for run in runs {
        let mut repeats = 0;
        for step in &run.steps {
            let key = format!("{}:{}", run.id, step.id);
            let n = count.get(key.as_str()).copied().unwrap_or(0);
            assert!(n >= 1, "step {key} of a finished run was never called");
            repeats += n - 1;
        }
        assert!(
            repeats <= run.takeover_count as usize,
            "run {} repeated {repeats} step call(s) but changed hands {} time(s): a persisted step ran again",
            run.id,
            run.takeover_count
        );
        total += repeats;
    }
    total
}

/// The value of `result`, or a panic naming what failed.
fn ok<T, E: Debug>(result: Result<T, E>, what: &str) -> T {
    result.unwrap_or_else(|e| panic!("{what}: {e:?}"))
}
