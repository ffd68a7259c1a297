//! The real binaries on the real clock: two `pilot-worker` processes against one PostgreSQL
//! database keep a 6-field every-second schedule exact (one run per second, no gap, no
//! duplicate), and turn 200 schedules due on the same tick into exactly 200 runs.

use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use pilot_core::RunStatus;
use pilot_cron::CronSchedule;
use pilot_registry::testing::{FakeServer, Reply};
use pilot_storage::{MisfirePolicy, OverlapPolicy, RunRow, ScheduleSpec};

use crate::support::*;

fn spec(cron: &str, next_run_at: DateTime<Utc>) -> ScheduleSpec {
    ScheduleSpec {
        cron: cron.to_owned(),
        timezone: "UTC".to_owned(),
        misfire: MisfirePolicy::Coalesce,
        grace_seconds: 3600,
        overlap: OverlapPolicy::Allow,
        next_run_at: Some(next_run_at),
        enabled: true,
    }
}

fn ticks(runs: &[RunRow]) -> Vec<DateTime<Utc>> {
    let mut ticks: Vec<_> = runs.iter().filter_map(|r| r.scheduled_for).collect();
    ticks.sort();
    ticks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_every_second_schedule_fires_once_per_second_without_gaps() {
    if !pilot_storage::testing::slow_tests_enabled(
        "end_to_end::an_every_second_schedule_fires_once_per_second_without_gaps",
    ) {
        return;
    }
    let Some(t) = postgres().await else { return };
    let db = t.db().clone();
    let server = FakeServer::start(vec![Reply::json(200, &serde_json::json!({ "ok": true }))])
        .await
        .unwrap();
    let user = user(&db).await;
    let plan = plan(
        &db,
        &user,
        "every second",
        vec![post_step("tick", server.url("/tick").as_str())],
    )
    .await;
    let cron = CronSchedule::parse("* * * * * *", "UTC").unwrap();
    // The first tick leaves the workers time to start.
    let first = cron
        .next_after(Utc::now() + chrono::Duration::seconds(2))
        .unwrap();
    db.upsert_schedule(&user, &plan, &spec(cron.expression(), first))
        .await
        .unwrap()
        .unwrap();
    let _a = WorkerProcess::start(&t, "e2e-a", &[]);
    let _b = WorkerProcess::start(&t, "e2e-b", &[]);

    let last = first + chrono::Duration::seconds(10);
    let runs = wait_for(
        "ten seconds of ticks to run",
        Duration::from_secs(40),
        || async {
            let runs = runs_of(&db, &user, &plan).await;
            let done = runs
                .iter()
                .filter(|r| r.scheduled_for.is_some_and(|s| s <= last))
                .count()
                == 11
                && runs
                    .iter()
                    .all(|r| r.scheduled_for.is_some_and(|s| s > last) || r.status.is_terminal());
            done.then_some(runs)
        },
    )
    .await;
    let window: Vec<RunRow> = runs
        .into_iter()
        .filter(|r| r.scheduled_for.is_some_and(|s| s <= last))
        .collect();
    let expected: Vec<DateTime<Utc>> = (0..=10)
        .map(|i| first + chrono::Duration::seconds(i))
        .collect();
    assert_eq!(
        ticks(&window),
        expected,
        "one run per second, no gap, no duplicate"
    );
    assert!(window.iter().all(|r| r.status == RunStatus::Succeeded));
    let lags: Vec<i64> = window
        .iter()
        .map(|r| (r.created_at - r.scheduled_for.unwrap_or(r.created_at)).num_milliseconds())
        .collect();
    eprintln!("every-second schedule, two workers: fire lag (ms) per tick {lags:?}");
    let mut keys: Vec<String> = server
        .requests()
        .iter()
        .map(|r| r.header("idempotency-key").unwrap_or_default().to_owned())
        .collect();
    let calls = keys.len();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), calls, "no run called its step twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_worker_processes_turn_200_schedules_due_on_one_tick_into_200_runs() {
    if !pilot_storage::testing::slow_tests_enabled(
        "end_to_end::two_worker_processes_turn_200_schedules_due_on_one_tick_into_200_runs",
    ) {
        return;
    }
    const SCHEDULES: usize = 200;
    let Some(t) = postgres().await else { return };
    let db = t.db().clone();
    let server = FakeServer::start(vec![Reply::json(200, &serde_json::json!({ "ok": true }))])
        .await
        .unwrap();
    let user = user(&db).await;
    let tick = (Utc::now() + chrono::Duration::seconds(4)).trunc_subsecs(0);
    let mut plans = Vec::new();
    for i in 0..SCHEDULES {
        let plan = plan(
            &db,
            &user,
            &format!("p{i}"),
            vec![post_step("ping", server.url("/ping").as_str())],
        )
        .await;
        db.upsert_schedule(&user, &plan, &spec("0 0 * * * *", tick))
            .await
            .unwrap()
            .unwrap();
        plans.push(plan);
    }
    let _a = WorkerProcess::start(&t, "race-a", &["--concurrency", "16"]);
    let _b = WorkerProcess::start(&t, "race-b", &["--concurrency", "16"]);

    wait_for("200 step calls", Duration::from_secs(60), || async {
        (server.requests().len() >= SCHEDULES).then_some(())
    })
    .await;
    for plan in &plans {
        let runs = wait_for("the run to finish", Duration::from_secs(20), || async {
            let runs = runs_of(&db, &user, plan).await;
            runs.iter().all(|r| r.status.is_terminal()).then_some(runs)
        })
        .await;
        assert_eq!(ticks(&runs), vec![tick], "exactly one run for the tick");
        assert_eq!(runs[0].status, RunStatus::Succeeded);
    }
    assert_eq!(server.requests().len(), SCHEDULES, "no run executed twice");
}
