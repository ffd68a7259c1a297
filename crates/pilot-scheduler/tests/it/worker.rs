//! Executing runs, against real databases (SQLite, and PostgreSQL when
//! `PILOT_TEST_POSTGRES_URL` is set): queued runs woken by the in-process signal, takeover of an
//! expired lease and its cap, a worker that lost its lease stopping without writing,
//! an inline run (submitted with `Submitter`) that lost its lease stopping at once, cancellation
//! at a step boundary, and the shutdown drain. The steps call a local fake server
//! that records every request with its `Idempotency-Key`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pilot_core::{RunId, RunStatus, StepStatus, TriggerKind, UserId};
use pilot_registry::testing::{FakeServer, Reply};
use pilot_scheduler::{InlineEnd, SubmitConfig, Submitter, SystemClock};
use pilot_storage::testing::TestDb;
use pilot_storage::{ClaimRequest, Database, NewRun, RunRow, TAKEOVER_CAP_MESSAGE};

use crate::support::*;

fn ok() -> Reply {
    Reply::json(200, &serde_json::json!({ "ok": true }))
}

/// A reply whose body takes about `total` to arrive.
fn slow(total: Duration) -> Reply {
    Reply::json(200, &serde_json::json!({ "ok": "slow....." })).drip(1, total / 20)
}

async fn enqueue(db: &Database, user: &UserId, steps: Vec<pilot_core::Step>) -> RunId {
    let run = NewRun {
        plan_id: None,
        plan_name: "adhoc".to_owned(),
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
        Duration::from_secs(30),
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

fn keys(server: &FakeServer) -> Vec<String> {
    server
        .requests()
        .iter()
        .map(|r| r.header("idempotency-key").unwrap_or_default().to_owned())
        .collect()
}

/// Claims `id` as a worker that then vanishes (never heartbeats).
async fn claim_as_ghost(db: &Database, ttl: Duration, cap: u32) {
    let outcome = db
        .claim_runs(&ClaimRequest {
            owner: "ghost".to_owned(),
            limit: 10,
            ttl,
            max_takeovers: cap,
            max_running_per_user: 0,
        })
        .await
        .unwrap();
    assert_eq!(outcome.claimed.len(), 1, "the ghost claims the run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_run_is_executed_when_the_signal_wakes_the_worker() {
    for t in TestDb::all().await {
        let db = t.db().clone();
        let server = FakeServer::start(vec![ok()]).await.unwrap();
        let user = user(&db).await;
        let mut cfg = config("signal");
        // Without the signal the worker would look only every minute.
        cfg.idle_poll = Duration::from_secs(60);
        let worker = Running::start(&db, cfg, Arc::new(SystemClock));
        tokio::time::sleep(Duration::from_millis(200)).await;
        let id = enqueue(
            &db,
            &user,
            vec![
                post_step("one", server.url("/1").as_str()),
                post_step("two", server.url("/2").as_str()),
            ],
        )
        .await;
        worker.signal.notify_one();
        let row = wait_status(&db, &user, &id, RunStatus::Succeeded).await;
        assert!(row.states.iter().all(|s| s.status == StepStatus::Succeeded));
        assert_eq!(
            keys(&server),
            vec![format!("{id}:one"), format!("{id}:two")]
        );
        assert_eq!(row.takeover_count, 0);
        worker.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_workers_run_is_taken_over_after_its_lease_expires() {
    for t in TestDb::all().await {
        let db = t.db().clone();
        let server = FakeServer::start(vec![ok()]).await.unwrap();
        let user = user(&db).await;
        let id = enqueue(
            &db,
            &user,
            vec![post_step("one", server.url("/1").as_str())],
        )
        .await;
        let ttl = Duration::from_secs(1);
        let claimed = Instant::now();
        claim_as_ghost(&db, ttl, 3).await;
        let worker = Running::start(&db, config("heir"), Arc::new(SystemClock));
        let row = wait_status(&db, &user, &id, RunStatus::Succeeded).await;
        let elapsed = claimed.elapsed();
        assert_eq!(row.takeover_count, 1);
        assert_eq!(row.lease_epoch, 2, "the takeover moved the fencing epoch");
        assert_eq!(worker.metrics.takeover_count(), 1);
        assert_eq!(keys(&server), vec![format!("{id}:one")]);
        // Promise 4: resumed within the lease plus the worker's reaction time. The bound is
        // loose on purpose (a busy CI machine); the docs state the measured numbers.
        assert!(
            elapsed < ttl + Duration::from_secs(5),
            "taken over after {elapsed:?}"
        );
        assert!(
            elapsed >= ttl,
            "taken over after {elapsed:?}, before the lease expired"
        );
        eprintln!(
            "{:?}: lease {ttl:?}; the heir finished the run {elapsed:?} after the ghost's claim",
            t.backend()
        );
        worker.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_over_the_takeover_cap_fails_with_a_clear_message() {
    for t in TestDb::all().await {
        let db = t.db().clone();
        let server = FakeServer::start(vec![ok()]).await.unwrap();
        let user = user(&db).await;
        let id = enqueue(
            &db,
            &user,
            vec![post_step("one", server.url("/1").as_str())],
        )
        .await;
        let ttl = Duration::from_millis(300);
        claim_as_ghost(&db, ttl, 1).await;
        tokio::time::sleep(ttl + Duration::from_millis(100)).await;
        // A second ghost takes it over (the one takeover the cap allows) and vanishes too.
        claim_as_ghost(&db, ttl, 1).await;
        // The default cap: a run whose worker died twice is quarantined.
        let cfg = config("capped");
        assert_eq!(cfg.max_takeovers, 1);
        let worker = Running::start(&db, cfg, Arc::new(SystemClock));
        let row = wait_status(&db, &user, &id, RunStatus::Failed).await;
        assert_eq!(row.error.as_deref(), Some(TAKEOVER_CAP_MESSAGE));
        assert_eq!(row.takeover_count, 1);
        assert!(
            server.requests().is_empty(),
            "a capped run executes nothing more"
        );
        worker.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_lost_its_lease_stops_and_the_new_owner_finishes() {
    for t in TestDb::all().await {
        let db = t.db().clone();
        // The first call hangs (its worker loses the lease meanwhile); the retry answers.
        let server = FakeServer::start(vec![Reply::hang(), ok()]).await.unwrap();
        let user = user(&db).await;
        let id = enqueue(
            &db,
            &user,
            vec![post_step("one", server.url("/1").as_str())],
        )
        .await;
        let worker = Running::start(&db, config("loser"), Arc::new(SystemClock));
        wait_requests(&server, 1).await;
        let before = run(&db, &user, &id).await;
        // The lease moves away under the worker: it goes back to the queue and gets a new epoch
        // at its next claim.
        db.release_run(&user, &id, before.lease_epoch)
            .await
            .unwrap();
        worker.signal.notify_one();
        let row = wait_status(&db, &user, &id, RunStatus::Succeeded).await;
        assert_eq!(row.lease_epoch, before.lease_epoch + 1);
        assert_eq!(worker.metrics.takeover_count(), 0);
        // The same step twice, with the same key: at least once, deduplicable.
        assert_eq!(
            keys(&server),
            vec![format!("{id}:one"), format!("{id}:one")]
        );
        worker.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inline_run_that_lost_its_lease_stops_at_once_and_the_new_owner_finishes() {
    for t in TestDb::all().await {
        let db = t.db().clone();
        // The inline executor's call hangs (it loses the lease meanwhile); the new owner's
        // call answers.
        let server = FakeServer::start(vec![Reply::hang(), ok()]).await.unwrap();
        let user = user(&db).await;
        let mut step = post_step("one", server.url("/1").as_str());
        // An executor that ignored its lease would sit in this call for two minutes, then
        // retry it.
        step.timeout_ms = Some(120_000);
        let plan_id = plan(&db, &user, "inline", vec![step]).await;
        let submitter = Submitter::new(
            db.clone(),
            engine(&db),
            Arc::new(tokio::sync::Notify::new()),
            SubmitConfig {
                lease_owner: "inline".to_owned(),
                lease_ttl: Duration::from_millis(900),
                max_queue_depth: 0,
            },
        );
        let new_run = submitter
            .stored_plan_run(&user, &plan_id, serde_json::json!({}), TriggerKind::Api)
            .await
            .unwrap();
        let inline = tokio::spawn({
            let (submitter, user) = (submitter.clone(), user.clone());
            async move { submitter.execute_inline(&user, new_run).await.unwrap() }
        });
        wait_requests(&server, 1).await;
        let before = runs_of(&db, &user, &plan_id).await.remove(0);
        assert_eq!(before.status, RunStatus::Running);
        // The lease moves away under the inline executor, and a worker takes the run over.
        db.release_run(&user, &before.id, before.lease_epoch)
            .await
            .unwrap();
        let worker = Running::start(&db, config("taker"), Arc::new(SystemClock));
        worker.signal.notify_one();
        let inline = tokio::time::timeout(Duration::from_secs(30), inline)
            .await
            .expect("the inline executor stops at its next heartbeat, not when its call ends")
            .unwrap();
        assert!(
            matches!(inline.end, InlineEnd::LeaseLost),
            "{:?}",
            inline.end
        );
        assert_eq!(inline.run_id, before.id);

        let row = wait_status(&db, &user, &before.id, RunStatus::Succeeded).await;
        assert_eq!(row.lease_epoch, before.lease_epoch + 1);
        // One call by each executor, with the same key; only the new owner's attempt is logged.
        let id = &before.id;
        assert_eq!(
            keys(&server),
            vec![format!("{id}:one"), format!("{id}:one")]
        );
        assert_eq!(log_rows(&db, &user).await, 1);
        worker.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancellation_stops_a_run_at_the_next_step_boundary() {
    for t in TestDb::all().await {
        let db = t.db().clone();
        let server = FakeServer::start(vec![slow(Duration::from_millis(800)), ok()])
            .await
            .unwrap();
        let user = user(&db).await;
        let steps = vec![
            post_step("one", server.url("/1").as_str()),
            post_step("two", server.url("/2").as_str()),
        ];
        // A queued run cancelled before any worker sees it never executes.
        let queued = enqueue(&db, &user, steps.clone()).await;
        db.cancel_run(&user, &queued).await.unwrap().unwrap();
        let running = enqueue(&db, &user, steps).await;
        let worker = Running::start(&db, config("cancel"), Arc::new(SystemClock));
        wait_requests(&server, 1).await;
        db.cancel_run(&user, &running).await.unwrap().unwrap();
        let row = wait_status(&db, &user, &running, RunStatus::Cancelled).await;
        assert_eq!(
            row.states[0].status,
            StepStatus::Succeeded,
            "the step in flight finished"
        );
        assert_eq!(row.states[1].status, StepStatus::Skipped);
        assert_eq!(
            keys(&server),
            vec![format!("{running}:one")],
            "step two never ran; the cancelled run never started"
        );
        assert_eq!(run(&db, &user, &queued).await.status, RunStatus::Cancelled);
        worker.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_a_run_finish_within_the_grace_period() {
    for t in TestDb::all().await {
        let db = t.db().clone();
        let server = FakeServer::start(vec![slow(Duration::from_millis(1000))])
            .await
            .unwrap();
        let user = user(&db).await;
        let id = enqueue(
            &db,
            &user,
            vec![post_step("one", server.url("/1").as_str())],
        )
        .await;
        let worker = Running::start(&db, config("drain"), Arc::new(SystemClock));
        wait_requests(&server, 1).await;
        worker.stop().await;
        // stop() returned after the drain: the run is already over.
        let row = run(&db, &user, &id).await;
        assert_eq!(row.status, RunStatus::Succeeded);
        assert_eq!(server.requests().len(), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_releases_a_run_that_outlasts_the_grace_period() {
    for t in TestDb::all().await {
        let db = t.db().clone();
        let server = FakeServer::start(vec![Reply::hang(), ok()]).await.unwrap();
        let user = user(&db).await;
        let id = enqueue(
            &db,
            &user,
            vec![post_step("one", server.url("/1").as_str())],
        )
        .await;
        let mut cfg = config("impatient");
        cfg.drain_grace = Duration::from_millis(300);
        let first = Running::start(&db, cfg, Arc::new(SystemClock));
        wait_requests(&server, 1).await;
        first.stop().await;
        let released = run(&db, &user, &id).await;
        assert_eq!(
            released.status,
            RunStatus::Queued,
            "released back to the queue"
        );
        assert_eq!(released.lease_owner, None);

        let second = Running::start(&db, config("successor"), Arc::new(SystemClock));
        let row = wait_status(&db, &user, &id, RunStatus::Succeeded).await;
        assert_eq!(
            row.takeover_count, 0,
            "a released run is claimed, not taken over"
        );
        assert_eq!(
            keys(&server),
            vec![format!("{id}:one"), format!("{id}:one")]
        );
        second.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_worker_looks_at_the_database_rarely() {
    for t in TestDb::all().await {
        let db = t.db().clone();
        // The defaults an operator gets.
        let worker = Running::start(
            &db,
            pilot_scheduler::WorkerConfig::new("idle"),
            Arc::new(SystemClock),
        );
        tokio::time::sleep(Duration::from_secs(6)).await;
        let looks = worker.metrics.look_count();
        // One look at start, one after LISTEN connects (PostgreSQL), one per 5 s idle poll:
        // well under the promised "about one query per second".
        assert!(
            (1..=4).contains(&looks),
            "{:?}: {looks} looks in 6 s",
            t.backend()
        );
        worker.stop().await;
    }
}

/// A step whose next attempt is far off parks its run: the worker's only slot is free for
/// another user's run meanwhile, and the parked run resumes at its next attempt (same
/// idempotency key) when its time comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_retry_parks_the_run_and_frees_the_slot_for_other_users() {
    for t in TestDb::all().await {
        let db = t.db().clone();
        let server = FakeServer::start(vec![Reply::status(429).header("retry-after", "2"), ok()])
            .await
            .unwrap();
        let alice = user(&db).await;
        let bob = user(&db).await;
        let mut cfg = config("parking");
        cfg.concurrency = 1;
        let engine = engine_with(
            &db,
            pilot_engine::EngineConfig {
                park_retries_after: Some(Duration::from_millis(500)),
                ..pilot_engine::EngineConfig::default()
            },
        );
        let worker = Running::start_with(&db, cfg, Arc::new(SystemClock), engine);
        let mut step = post_step("call", server.url("/a").as_str());
        step.retry = Some(pilot_core::RetryPolicy {
            max_attempts: 2,
            ..pilot_core::RetryPolicy::default()
        });
        let slow = enqueue(&db, &alice, vec![step]).await;
        worker.signal.notify_one();
        wait_requests(&server, 1).await;
        let parked = wait_status(&db, &alice, &slow, RunStatus::Queued).await;
        assert_eq!(parked.states[0].status, StepStatus::Pending);
        assert_eq!(parked.states[0].attempts, 1);
        assert_eq!(parked.lease_owner, None, "the lease was given up");

        // Bob's run gets the only slot while Alice's waits for its retry.
        let quick = enqueue(
            &db,
            &bob,
            vec![post_step("call", server.url("/b").as_str())],
        )
        .await;
        worker.signal.notify_one();
        wait_status(&db, &bob, &quick, RunStatus::Succeeded).await;
        assert_eq!(
            run(&db, &alice, &slow).await.status,
            RunStatus::Queued,
            "still parked when Bob's run finished"
        );

        let done = wait_status(&db, &alice, &slow, RunStatus::Succeeded).await;
        assert_eq!(done.states[0].attempts, 2);
        let paths: Vec<String> = server.requests().iter().map(|r| r.target.clone()).collect();
        assert_eq!(paths, vec!["/a", "/b", "/a"]);
        let keys = keys(&server);
        assert_eq!(
            keys[0], keys[2],
            "the retry carries the same idempotency key"
        );
        assert_eq!(worker.metrics.parked_count(), 1);
        worker.stop().await;
    }
}

/// The retention pass deletes finished runs and log rows older than the settings, in batches,
/// and leaves unfinished runs alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_old_finished_runs_and_log_rows() {
    for t in TestDb::all().await {
        let db = t.db().clone();
        let server = FakeServer::start(vec![ok()]).await.unwrap();
        let user = user(&db).await;
        let done = enqueue(
            &db,
            &user,
            vec![post_step("one", server.url("/1").as_str())],
        )
        .await;
        let mut cfg = config("keeper");
        cfg.retain_runs = Some(Duration::from_millis(1));
        cfg.retain_logs = Some(Duration::from_millis(1));
        cfg.retention_every = Duration::from_millis(100);
        let worker = Running::start(&db, cfg, Arc::new(SystemClock));
        worker.signal.notify_one();
        wait_for(
            "the run to be deleted once finished",
            Duration::from_secs(30),
            || async {
                db.run_by_id(&user, &done)
                    .await
                    .unwrap()
                    .is_none()
                    .then_some(())
            },
        )
        .await;
        wait_for(
            "its log rows to be deleted",
            Duration::from_secs(30),
            || async { (log_rows(&db, &user).await == 0).then_some(()) },
        )
        .await;
        worker.stop().await;
        // A queued run is not finished: it stays.
        let waiting = enqueue(
            &db,
            &user,
            vec![post_step("one", server.url("/2").as_str())],
        )
        .await;
        let pruned = db
            .prune_finished_runs(chrono::Utc::now() + chrono::Duration::days(1), 100)
            .await
            .unwrap();
        assert_eq!(pruned, 0);
        assert!(db.run_by_id(&user, &waiting).await.unwrap().is_some());
    }
}

/// With a count per plan, the retention pass keeps each plan's newest finished runs only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_keeps_the_newest_finished_runs_of_each_plan() {
    for t in TestDb::all().await {
        let db = t.db().clone();
        let server = FakeServer::start(vec![ok(), ok()]).await.unwrap();
        let user = user(&db).await;
        let plan_id = plan(
            &db,
            &user,
            "counted",
            vec![post_step("one", server.url("/1").as_str())],
        )
        .await;
        let mut cfg = config("counter");
        cfg.retain_runs_per_plan = Some(1);
        cfg.retention_every = Duration::from_millis(100);
        let worker = Running::start(&db, cfg, Arc::new(SystemClock));
        let mut ids = Vec::new();
        for _ in 0..2 {
            let run = db
                .enqueue_run(
                    &user,
                    &NewRun {
                        plan_id: Some(plan_id.clone()),
                        plan_name: "counted".to_owned(),
                        steps: vec![post_step("one", server.url("/1").as_str())],
                        input: serde_json::json!({}),
                        trigger: TriggerKind::Api,
                        schedule_id: None,
                        scheduled_for: None,
                    },
                )
                .await
                .unwrap();
            worker.signal.notify_one();
            wait_status(&db, &user, &run.id, RunStatus::Succeeded).await;
            ids.push(run.id);
        }
        wait_for(
            "the older run to be deleted",
            Duration::from_secs(30),
            || async {
                db.run_by_id(&user, &ids[0])
                    .await
                    .unwrap()
                    .is_none()
                    .then_some(())
            },
        )
        .await;
        assert!(
            db.run_by_id(&user, &ids[1]).await.unwrap().is_some(),
            "the newest stays"
        );
        worker.stop().await;
    }
}

async fn log_rows(db: &Database, user: &UserId) -> usize {
    db.list_logs(
        user,
        &pilot_storage::LogFilter::default(),
        &pilot_storage::PageRequest::first(100),
    )
    .await
    .unwrap()
    .items
    .len()
}
