//! Firing, against real databases (SQLite, and PostgreSQL when `PILOT_TEST_POSTGRES_URL` is
//! set): one run per tick however many schedulers race, misfire and overlap policies after
//! simulated downtime, and clock jumps. Time is a [`ManualClock`] the tests move by hand.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use pilot_core::{RunStatus, UserId};
use pilot_registry::testing::{FakeServer, Reply};
use pilot_scheduler::ManualClock;
use pilot_storage::testing::TestDb;
use pilot_storage::{Database, MisfirePolicy, OverlapPolicy, RunRow};

use crate::support::*;

fn at(h: u32, m: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 6, 2, h, m, s).unwrap()
}

fn ticks(runs: &[RunRow]) -> Vec<DateTime<Utc>> {
    let mut ticks: Vec<_> = runs.iter().map(|r| r.scheduled_for.unwrap()).collect();
    ticks.sort();
    ticks
}

/// A worker that fires but does not execute, so fired runs stay queued for inspection.
fn firing_only(name: &str) -> pilot_scheduler::WorkerConfig {
    let mut config = config(name);
    config.execute_runs = false;
    config
}

/// Waits until the schedule of `plan` has `next_run_at == next`.
async fn wait_next_run_at(
    db: &Database,
    user: &UserId,
    plan: &pilot_core::PlanId,
    next: DateTime<Utc>,
) {
    wait_for(
        "next_run_at to advance",
        Duration::from_secs(20),
        || async {
            let row = db.schedule_for_plan(user, plan).await.unwrap().unwrap();
            (row.spec.next_run_at == Some(next)).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_schedulers_and_two_workers_make_exactly_one_run_per_tick() {
    for t in TestDb::all().await {
        race_200(&t).await;
    }
}

async fn race_200(t: &TestDb) {
    const SCHEDULES: usize = 200;
    let server = FakeServer::start(vec![Reply::json(200, &serde_json::json!({ "ok": true }))])
        .await
        .unwrap();
    let db = t.db().clone();
    // The second scheduler has its own pool: its transactions really race the first one's.
    let db2 = Database::open(&t.config())
        .await
        .unwrap()
        .with_keyring(t.keyring().clone());
    let user = user(&db).await;
    let tick = at(10, 0, 0);
    let mut plans = Vec::new();
    for i in 0..SCHEDULES {
        let plan = plan(
            &db,
            &user,
            &format!("p{i}"),
            vec![post_step("ping", server.url("/ping").as_str())],
        )
        .await;
        schedule(
            &db,
            &user,
            &plan,
            "0 * * * *",
            tick,
            MisfirePolicy::Coalesce,
            OverlapPolicy::Allow,
        )
        .await;
        plans.push(plan);
    }
    let clock = ManualClock::new(tick - chrono::Duration::seconds(1));
    let mut config_a = config("scheduler-a");
    let mut config_b = config("scheduler-b");
    // Small batches, so the two schedulers interleave their firing transactions.
    config_a.fire_batch = 16;
    config_b.fire_batch = 16;
    let a = Running::start(&db, config_a, Arc::new(clock.clone()));
    let b = Running::start(&db2, config_b, Arc::new(clock.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    clock.set(tick);

    wait_for("every run to finish", Duration::from_secs(60), || async {
        (server.requests().len() >= SCHEDULES).then_some(())
    })
    .await;
    let mut total = 0;
    for plan in &plans {
        let runs = wait_for("the run to finish", Duration::from_secs(20), || async {
            let runs = runs_of(&db, &user, plan).await;
            runs.iter().all(|r| r.status.is_terminal()).then_some(runs)
        })
        .await;
        assert_eq!(
            ticks(&runs),
            vec![tick],
            "{:?}: one run for the tick",
            t.backend()
        );
        assert_eq!(runs[0].status, RunStatus::Succeeded);
        total += runs.len();
    }
    assert_eq!(total, SCHEDULES);
    assert_eq!(
        a.metrics.fire_count() + b.metrics.fire_count(),
        SCHEDULES as u64
    );
    let mut keys: Vec<String> = server
        .requests()
        .iter()
        .map(|r| r.header("idempotency-key").unwrap().to_owned())
        .collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), SCHEDULES, "each run called its step once");
    assert_eq!(server.requests().len(), SCHEDULES);
    wait_next_run_at(&db, &user, &plans[0], at(11, 0, 0)).await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misfires_after_downtime_follow_each_schedules_policy() {
    for t in TestDb::all().await {
        let db = t.db().clone();
        let user = user(&db).await;
        let coalesce = plan(
            &db,
            &user,
            "coalesce",
            vec![post_step("a", "http://127.0.0.1:9/")],
        )
        .await;
        let skip = plan(
            &db,
            &user,
            "skip",
            vec![post_step("a", "http://127.0.0.1:9/")],
        )
        .await;
        schedule(
            &db,
            &user,
            &coalesce,
            "0 * * * *",
            at(10, 0, 0),
            MisfirePolicy::Coalesce,
            OverlapPolicy::Allow,
        )
        .await;
        schedule(
            &db,
            &user,
            &skip,
            "0 * * * *",
            at(10, 0, 0),
            MisfirePolicy::Skip,
            OverlapPolicy::Allow,
        )
        .await;

        // Nothing ran from 09:30 to 12:30: the 10:00, 11:00 and 12:00 ticks were missed.
        let clock = ManualClock::new(at(12, 30, 0));
        let worker = Running::start(&db, firing_only("misfire"), Arc::new(clock.clone()));
        wait_next_run_at(&db, &user, &coalesce, at(13, 0, 0)).await;
        wait_next_run_at(&db, &user, &skip, at(13, 0, 0)).await;
        assert_eq!(
            ticks(&runs_of(&db, &user, &coalesce).await),
            vec![at(12, 0, 0)],
            "one catch-up run"
        );
        assert!(
            runs_of(&db, &user, &skip).await.is_empty(),
            "skip runs nothing late"
        );
        assert_eq!(worker.metrics.missed_count("misfire"), 2 + 3);

        // Back to normal: the next tick fires on both.
        clock.set(at(13, 0, 1));
        wait_next_run_at(&db, &user, &coalesce, at(14, 0, 0)).await;
        wait_next_run_at(&db, &user, &skip, at(14, 0, 0)).await;
        assert_eq!(
            ticks(&runs_of(&db, &user, &coalesce).await),
            vec![at(12, 0, 0), at(13, 0, 0)]
        );
        assert_eq!(ticks(&runs_of(&db, &user, &skip).await), vec![at(13, 0, 0)]);
        worker.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forward_clock_jump_acts_like_downtime() {
    for t in TestDb::all().await {
        let db = t.db().clone();
        let user = user(&db).await;
        let plan = plan(
            &db,
            &user,
            "jump",
            vec![post_step("a", "http://127.0.0.1:9/")],
        )
        .await;
        schedule(
            &db,
            &user,
            &plan,
            "*/5 * * * *",
            at(10, 0, 0),
            MisfirePolicy::Coalesce,
            OverlapPolicy::Allow,
        )
        .await;
        let clock = ManualClock::new(at(10, 0, 0));
        let worker = Running::start(&db, firing_only("jump"), Arc::new(clock.clone()));
        wait_next_run_at(&db, &user, &plan, at(10, 5, 0)).await;
        // The clock leaps two hours: one coalesced run, not 24.
        clock.set(at(12, 2, 0));
        wait_next_run_at(&db, &user, &plan, at(12, 5, 0)).await;
        assert_eq!(
            ticks(&runs_of(&db, &user, &plan).await),
            vec![at(10, 0, 0), at(12, 0, 0)]
        );
        assert_eq!(worker.metrics.missed_count("misfire"), 23);
        worker.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backward_clock_jump_never_fires_a_tick_twice() {
    for t in TestDb::all().await {
        let db = t.db().clone();
        let user = user(&db).await;
        let plan = plan(
            &db,
            &user,
            "back",
            vec![post_step("a", "http://127.0.0.1:9/")],
        )
        .await;
        schedule(
            &db,
            &user,
            &plan,
            "* * * * *",
            at(10, 0, 0),
            MisfirePolicy::Coalesce,
            OverlapPolicy::Allow,
        )
        .await;
        let clock = ManualClock::new(at(10, 0, 0));
        let worker = Running::start(&db, firing_only("back"), Arc::new(clock.clone()));
        wait_next_run_at(&db, &user, &plan, at(10, 1, 0)).await;
        // Back half an hour, then forward again to just before the next tick.
        clock.set(at(9, 30, 0));
        tokio::time::sleep(Duration::from_millis(1200)).await;
        clock.set(at(10, 0, 30));
        tokio::time::sleep(Duration::from_millis(1200)).await;
        assert_eq!(ticks(&runs_of(&db, &user, &plan).await), vec![at(10, 0, 0)]);
        clock.set(at(10, 1, 0));
        wait_next_run_at(&db, &user, &plan, at(10, 2, 0)).await;
        assert_eq!(
            ticks(&runs_of(&db, &user, &plan).await),
            vec![at(10, 0, 0), at(10, 1, 0)]
        );
        worker.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlap_skip_skips_ticks_while_the_previous_run_is_active() {
    for t in TestDb::all().await {
        let db = t.db().clone();
        let user = user(&db).await;
        let skip = plan(
            &db,
            &user,
            "skip",
            vec![post_step("a", "http://127.0.0.1:9/")],
        )
        .await;
        let allow = plan(
            &db,
            &user,
            "allow",
            vec![post_step("a", "http://127.0.0.1:9/")],
        )
        .await;
        schedule(
            &db,
            &user,
            &skip,
            "* * * * *",
            at(10, 0, 0),
            MisfirePolicy::Coalesce,
            OverlapPolicy::Skip,
        )
        .await;
        schedule(
            &db,
            &user,
            &allow,
            "* * * * *",
            at(10, 0, 0),
            MisfirePolicy::Coalesce,
            OverlapPolicy::Allow,
        )
        .await;
        let clock = ManualClock::new(at(10, 0, 0));
        // Nothing executes: the first runs stay queued, i.e. active.
        let worker = Running::start(&db, firing_only("overlap"), Arc::new(clock.clone()));
        wait_next_run_at(&db, &user, &skip, at(10, 1, 0)).await;
        wait_next_run_at(&db, &user, &allow, at(10, 1, 0)).await;

        clock.set(at(10, 1, 0));
        wait_next_run_at(&db, &user, &skip, at(10, 2, 0)).await;
        wait_next_run_at(&db, &user, &allow, at(10, 2, 0)).await;
        let skipped = runs_of(&db, &user, &skip).await;
        assert_eq!(
            ticks(&skipped),
            vec![at(10, 0, 0)],
            "10:01 skipped: the 10:00 run is still queued"
        );
        assert_eq!(
            ticks(&runs_of(&db, &user, &allow).await),
            vec![at(10, 0, 0), at(10, 1, 0)]
        );
        assert_eq!(worker.metrics.missed_count("overlap"), 1);

        // Once the previous run is over, the next tick fires again.
        db.cancel_run(&user, &skipped[0].id).await.unwrap().unwrap();
        clock.set(at(10, 2, 0));
        wait_next_run_at(&db, &user, &skip, at(10, 3, 0)).await;
        assert_eq!(
            ticks(&runs_of(&db, &user, &skip).await),
            vec![at(10, 0, 0), at(10, 2, 0)]
        );
        worker.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_schedule_stops_without_blocking_the_others() {
    for t in TestDb::all().await {
        let db = t.db().clone();
        let user = user(&db).await;
        let broken = plan(
            &db,
            &user,
            "broken",
            vec![post_step("a", "http://127.0.0.1:9/")],
        )
        .await;
        let healthy = plan(
            &db,
            &user,
            "healthy",
            vec![post_step("a", "http://127.0.0.1:9/")],
        )
        .await;
        // Storage trusts the API to validate; a row written otherwise must not jam the queue.
        schedule(
            &db,
            &user,
            &broken,
            "not a cron",
            at(10, 0, 0),
            MisfirePolicy::Coalesce,
            OverlapPolicy::Allow,
        )
        .await;
        schedule(
            &db,
            &user,
            &healthy,
            "0 * * * *",
            at(10, 0, 0),
            MisfirePolicy::Coalesce,
            OverlapPolicy::Allow,
        )
        .await;
        let clock = ManualClock::new(at(10, 0, 0));
        let worker = Running::start(&db, firing_only("broken"), Arc::new(clock.clone()));
        wait_next_run_at(&db, &user, &healthy, at(11, 0, 0)).await;
        let stopped = wait_for(
            "the broken schedule to stop",
            Duration::from_secs(20),
            || async {
                let row = db.schedule_for_plan(&user, &broken).await.unwrap().unwrap();
                row.spec.next_run_at.is_none().then_some(row)
            },
        )
        .await;
        assert!(stopped.last_run_id.is_none());
        assert!(runs_of(&db, &user, &broken).await.is_empty());
        assert_eq!(
            ticks(&runs_of(&db, &user, &healthy).await),
            vec![at(10, 0, 0)]
        );
        worker.stop().await;
    }
}

/// A paused plan's ticks pass without runs, each counted as missed with reason `paused` (in
/// metrics and on the schedule); once active again it fires from the next tick.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_plans_ticks_pass_without_runs() {
    for t in TestDb::all().await {
        let db = t.db().clone();
        let user = user(&db).await;
        let id = plan(
            &db,
            &user,
            "paused",
            vec![post_step("a", "http://127.0.0.1:9/")],
        )
        .await;
        let mut row = db.plan(&user, &id).await.unwrap().unwrap();
        row.plan.status = "paused".to_owned();
        db.update_plan(&user, &id, &row.plan)
            .await
            .unwrap()
            .unwrap();
        schedule(
            &db,
            &user,
            &id,
            "* * * * *",
            at(10, 0, 0),
            MisfirePolicy::Coalesce,
            OverlapPolicy::Allow,
        )
        .await;
        let clock = ManualClock::new(at(10, 0, 0));
        let worker = Running::start(&db, firing_only("paused"), Arc::new(clock.clone()));
        wait_next_run_at(&db, &user, &id, at(10, 1, 0)).await;
        clock.set(at(10, 1, 0));
        wait_next_run_at(&db, &user, &id, at(10, 2, 0)).await;
        assert!(
            runs_of(&db, &user, &id).await.is_empty(),
            "no run while paused"
        );
        assert_eq!(worker.metrics.missed_count("paused"), 2);
        let listed = db
            .list_schedules(&user, &pilot_storage::PageRequest::first(10))
            .await
            .unwrap()
            .items;
        assert_eq!(listed[0].missed_paused, 2);
        assert_eq!(listed[0].plan_status, "paused");

        // Active again: the next tick fires.
        row.plan.status = "active".to_owned();
        db.update_plan(&user, &id, &row.plan)
            .await
            .unwrap()
            .unwrap();
        clock.set(at(10, 2, 0));
        wait_next_run_at(&db, &user, &id, at(10, 3, 0)).await;
        assert_eq!(ticks(&runs_of(&db, &user, &id).await), vec![at(10, 2, 0)]);
        worker.stop().await;
    }
}
