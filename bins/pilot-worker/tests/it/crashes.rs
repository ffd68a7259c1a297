//! Real `pilot-worker` processes against one PostgreSQL database, with the faults of
//! docs/RELIABILITY.md delivered as signals: SIGKILL during step 2 of 3 (taken over, finished, no
//! finished step repeated), SIGSTOP past the lease then SIGCONT (the frozen worker changes
//! nothing), and SIGTERM (the drain finishes or releases the run in flight). The steps call a
//! local fake server that records each call with its `Idempotency-Key`: the ledger.

use std::time::{Duration, Instant};

use pilot_core::{RunId, RunStatus, StepStatus, TriggerKind, UserId};
use pilot_registry::testing::{FakeServer, Reply};
use pilot_storage::{Database, NewRun, RunRow};

use crate::support::*;

fn ok() -> Reply {
    Reply::json(200, &serde_json::json!({ "ok": true }))
}

async fn three_step_run(db: &Database, user: &UserId, server: &FakeServer) -> RunId {
    let steps = vec![
        post_step("one", server.url("/1").as_str()),
        post_step("two", server.url("/2").as_str()),
        post_step("three", server.url("/3").as_str()),
    ];
    let run = NewRun {
        plan_id: None,
        plan_name: "three steps".to_owned(),
        steps,
        input: serde_json::json!({}),
        trigger: TriggerKind::Api,
        schedule_id: None,
        scheduled_for: None,
    };
    db.enqueue_run(user, &run).await.unwrap().id
}

async fn wait_status(db: &Database, user: &UserId, id: &RunId, status: RunStatus) -> RunRow {
    wait_for(
        &format!("run to be {status:?}"),
        Duration::from_secs(40),
        || async {
            let row = run(db, user, id).await;
            (row.status == status).then_some(row)
        },
    )
    .await
}

async fn wait_requests(server: &FakeServer, n: usize) {
    wait_for(
        &format!("{n} requests at the fake server"),
        Duration::from_secs(30),
        || async { (server.requests().len() >= n).then_some(()) },
    )
    .await;
}

/// (path, idempotency key) of every call the fake server received, in order.
fn ledger(server: &FakeServer) -> Vec<(String, String)> {
    server
        .requests()
        .iter()
        .map(|r| {
            (
                r.target.clone(),
                r.header("idempotency-key").unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn expected_ledger(id: &RunId, paths: &[(&str, &str)]) -> Vec<(String, String)> {
    paths
        .iter()
        .map(|(path, step)| ((*path).to_owned(), format!("{id}:{step}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_during_step_two_is_taken_over_and_no_finished_step_repeats() {
    if !pilot_storage::testing::slow_tests_enabled(
        "crashes::a_worker_killed_during_step_two_is_taken_over_and_no_finished_step_repeats",
    ) {
        return;
    }
    let Some(t) = postgres().await else { return };
    let db = t.db().clone();
    // Step 2's first call never answers: the worker is killed while it waits.
    let server = FakeServer::start(vec![ok(), Reply::hang(), ok()])
        .await
        .unwrap();
    let user = user(&db).await;
    let id = three_step_run(&db, &user, &server).await;

    let mut first = WorkerProcess::start(&t, "first", &[]);
    wait_requests(&server, 2).await;
    let before = run(&db, &user, &id).await;
    assert_eq!(before.states[0].status, StepStatus::Succeeded);
    assert_eq!(
        before.states[1].status,
        StepStatus::Pending,
        "step 2 is in flight"
    );
    first.signal("KILL");
    first.wait_exit(Duration::from_secs(10)).await;
    let killed = Instant::now();

    let _second = WorkerProcess::start(&t, "second", &[]);
    let row = wait_status(&db, &user, &id, RunStatus::Succeeded).await;
    let took = killed.elapsed();
    assert_eq!(row.takeover_count, 1);
    assert_eq!(row.lease_epoch, before.lease_epoch + 1);
    assert!(row.states.iter().all(|s| s.status == StepStatus::Succeeded));
    // The ledger: steps 1 and 3 once, step 2 twice with the same key.
    assert_eq!(
        ledger(&server),
        expected_ledger(
            &id,
            &[("/1", "one"), ("/2", "two"), ("/2", "two"), ("/3", "three")]
        )
    );
    eprintln!("takeover after SIGKILL: run finished {took:?} after the kill (lease 2 s)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_frozen_past_its_lease_changes_nothing_when_it_wakes() {
    if !pilot_storage::testing::slow_tests_enabled(
        "crashes::a_worker_frozen_past_its_lease_changes_nothing_when_it_wakes",
    ) {
        return;
    }
    let Some(t) = postgres().await else { return };
    let db = t.db().clone();
    let server = FakeServer::start(vec![ok(), Reply::hang(), ok()])
        .await
        .unwrap();
    let user = user(&db).await;
    let id = three_step_run(&db, &user, &server).await;

    let mut frozen = WorkerProcess::start(&t, "frozen", &[]);
    wait_requests(&server, 2).await;
    frozen.signal("STOP");
    // The lease (2 s) runs out while it is stopped; another worker takes the run over.
    let heir = WorkerProcess::start(&t, "heir", &[]);
    let done = wait_status(&db, &user, &id, RunStatus::Succeeded).await;
    let logs = log_count(&db, &user, &id).await;
    drop(heir);

    frozen.signal("CONT");
    // Long enough for several heartbeats and a step's worth of progress.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = run(&db, &user, &id).await;
    assert_eq!(after, done, "the woken worker changed the run");
    assert_eq!(
        log_count(&db, &user, &id).await,
        logs,
        "the woken worker wrote log rows"
    );
    assert_eq!(
        ledger(&server),
        expected_ledger(
            &id,
            &[("/1", "one"), ("/2", "two"), ("/2", "two"), ("/3", "three")]
        )
    );
    assert!(frozen.is_running(), "the woken worker is still serving");
    assert!(
        frozen.log().contains("lease lost"),
        "the woken worker noticed it lost the lease"
    );
    frozen.signal("TERM");
    assert!(frozen.wait_exit(Duration::from_secs(10)).await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_run_in_flight_finish() {
    if !pilot_storage::testing::slow_tests_enabled("crashes::sigterm_lets_the_run_in_flight_finish")
    {
        return;
    }
    let Some(t) = postgres().await else { return };
    let db = t.db().clone();
    // Step 2 takes about 1.5 s.
    let slow = Reply::json(200, &serde_json::json!({ "ok": "slow...." }))
        .drip(1, Duration::from_millis(100));
    let server = FakeServer::start(vec![ok(), slow, ok()]).await.unwrap();
    let user = user(&db).await;
    let id = three_step_run(&db, &user, &server).await;

    let mut worker = WorkerProcess::start(&t, "draining", &["--drain-grace", "20s"]);
    wait_requests(&server, 2).await;
    worker.signal("TERM");
    assert!(worker.wait_exit(Duration::from_secs(25)).await.success());
    let row = run(&db, &user, &id).await;
    assert_eq!(
        row.status,
        RunStatus::Succeeded,
        "the run finished during the drain"
    );
    assert_eq!(
        ledger(&server),
        expected_ledger(&id, &[("/1", "one"), ("/2", "two"), ("/3", "three")])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_releases_a_run_that_outlasts_the_grace_period() {
    if !pilot_storage::testing::slow_tests_enabled(
        "crashes::sigterm_releases_a_run_that_outlasts_the_grace_period",
    ) {
        return;
    }
    let Some(t) = postgres().await else { return };
    let db = t.db().clone();
    let server = FakeServer::start(vec![ok(), Reply::hang(), ok()])
        .await
        .unwrap();
    let user = user(&db).await;
    let id = three_step_run(&db, &user, &server).await;

    let mut worker = WorkerProcess::start(&t, "impatient", &["--drain-grace", "300ms"]);
    wait_requests(&server, 2).await;
    worker.signal("TERM");
    assert!(worker.wait_exit(Duration::from_secs(15)).await.success());
    let released = run(&db, &user, &id).await;
    assert_eq!(
        released.status,
        RunStatus::Queued,
        "released back to the queue"
    );
    assert_eq!(
        released.states[0].status,
        StepStatus::Succeeded,
        "finished steps stay finished"
    );

    let _next = WorkerProcess::start(&t, "next", &[]);
    let row = wait_status(&db, &user, &id, RunStatus::Succeeded).await;
    assert_eq!(row.takeover_count, 0);
    assert_eq!(
        ledger(&server),
        expected_ledger(
            &id,
            &[("/1", "one"), ("/2", "two"), ("/2", "two"), ("/3", "three")]
        )
    );
}
