//! A quick measurement of the run-write path (not a test): `RUNS` runs executed at once, each
//! making the engine's three writes (step state + log row, twice, then the finish), through
//! group commit. Run it in release mode:
//!
//! ```text
//! cargo run --release -p pilot-storage --features test-support --example write_throughput [sqlite|postgres] [runs] [concurrency]
//! ```
//!
//! PostgreSQL needs `PILOT_TEST_POSTGRES_URL`.
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use pilot_core::{
    LogRecord, RunEnd, RunFinish, RunStatus, RunStore, RunWrite, StepKey, StepState, StepStatus,
};
use pilot_storage::testing::{Backend, TestDb};
use pilot_storage::{Lease, NewRun};
use serde_json::json;
use tokio::sync::Semaphore;

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let backend = match args.get(1).map(String::as_str) {
        Some("postgres") => Backend::Postgres,
        _ => Backend::Sqlite,
    };
    let runs: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(5000);
    let concurrency: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(256);
    let Some(t) = TestDb::new(backend).await else {
        return;
    };
    let db = t.db().clone();
    let user = db.create_user("bench", false).await.unwrap().id;
    let steps: Vec<pilot_core::Step> = ["a", "b"]
        .iter()
        .map(|id| {
            serde_json::from_value(json!({"id": id, "provider": "logic", "action": "noop"}))
                .unwrap()
        })
        .collect();
    let new_run = NewRun {
        plan_id: None,
        plan_name: "bench".into(),
        steps,
        input: json!({}),
        trigger: pilot_core::TriggerKind::Api,
        schedule_id: None,
        scheduled_for: None,
    };
    let lease = Lease {
        owner: "bench".into(),
        ttl: Duration::from_secs(600),
    };
    let mut snapshots = Vec::with_capacity(runs);
    for _ in 0..runs {
        snapshots.push(db.start_run(&user, &new_run, &lease).await.unwrap());
    }

    let gate = Arc::new(Semaphore::new(concurrency));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(runs);
    for snap in snapshots {
        let db = db.clone();
        let gate = gate.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire().await.unwrap();
            for (i, id) in ["a", "b"].iter().enumerate() {
                let state = StepState {
                    step_id: (*id).into(),
                    status: StepStatus::Succeeded,
                    output: Some(json!({"ok": true, "i": i})),
                    error: None,
                    attempts: 1,
                    latency_ms: 1,
                    started_at: Some(chrono::Utc::now()),
                    finished_at: Some(chrono::Utc::now()),
                };
                let log = LogRecord {
                    plan_id: None,
                    run_id: snap.run_id.clone(),
                    user_id: snap.user_id.clone(),
                    plan_name: "bench".into(),
                    step_number: u32::try_from(i).unwrap(),
                    step_id: (*id).into(),
                    provider: "logic".into(),
                    action: "noop".into(),
                    attempt: 1,
                    status: "succeeded".into(),
                    message: None,
                    latency_ms: 1,
                    output_preview: Some("{\"ok\":true}".into()),
                    error: None,
                    timestamp: chrono::Utc::now(),
                };
                db.write(RunWrite {
                    run_id: snap.run_id.clone(),
                    user_id: snap.user_id.clone(),
                    epoch: snap.epoch,
                    logs: vec![log],
                    steps: vec![(StepKey::step(i), state)],
                    end: None,
                })
                .await
                .unwrap();
            }
            db.write(RunWrite {
                run_id: snap.run_id.clone(),
                user_id: snap.user_id.clone(),
                epoch: snap.epoch,
                logs: vec![],
                steps: Vec::new(),
                end: Some(RunEnd::Finish(RunFinish {
                    status: RunStatus::Succeeded,
                    error: None,
                })),
            })
            .await
            .unwrap();
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let writes = runs * 3;
    println!(
        "{}: {runs} runs, {writes} writes in {elapsed:.2} s: {:.0} writes/s, {:.0} runs/s (concurrency {concurrency})",
        backend.as_str(),
        writes as f64 / elapsed,
        runs as f64 / elapsed
    );
}
