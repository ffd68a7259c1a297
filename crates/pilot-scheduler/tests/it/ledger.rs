//! A ledger checker in the style of Jepsen's total-queue, against real databases (SQLite, and
//! PostgreSQL when `PILOT_TEST_POSTGRES_URL` is set). Two workers fire a handful of schedules
//! over a window of a [`ManualClock`] and execute those runs and a stream of queued ones
//! (what an async `POST /api/execute` commits), while the test disturbs them: one worker is
//! frozen while it holds a lease until the other has taken its run over, then thawed; later the
//! other worker crashes and is restarted. The test records every accepted run, every expected
//! tick and every call the fake server receives, and checks at the end:
//!
//! - lost = none: every accepted run and every expected tick has a run, and each succeeded;
//! - duplicated = none: one run per tick, one run per accepted request;
//! - repeated step calls only where a run changed hands, never more than its takeovers, and
//!   always with the same `Idempotency-Key` (`<run id>:<step id>`).
//!
//! Each worker runs on its own thread with a single-threaded runtime, which makes both faults
//! exact in process: a task that blocks that thread freezes the whole worker (loop, heartbeats,
//! steps), as SIGSTOP would; dropping the runtime drops every task of the worker at once, as
//! SIGKILL would (queries already handed to the database's blocking threads still finish, as
//! they would on a database server whose client died).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SubsecRound as _, Utc};
use pilot_core::{PlanId, RunId, RunStatus, TriggerKind, UserId};
use pilot_cron::CronSchedule;
use pilot_registry::testing::{FakeServer, Reply};
use pilot_scheduler::testing::check_ledger;
use pilot_scheduler::{ManualClock, SchedulerMetrics, Worker};
use pilot_storage::testing::TestDb;
use pilot_storage::{Database, Keyring, MisfirePolicy, NewRun, OverlapPolicy, RunRow};
use tokio::sync::{Notify, oneshot};

use crate::support::*;

/// The schedules: every second, every 2 s, every 5 s (6-field expressions, seconds first).
const CRONS: [&str; 3] = ["* * * * * *", "*/2 * * * * *", "*/5 * * * * *"];
/// Seconds of the manual clock the workers fire schedules over.
const WINDOW: i64 = 24;
/// Queued runs committed per second of the window.
const QUEUED_PER_SECOND: usize = 2;

/// How a [`WorkerThread`] ends.
enum End {
    /// Shutdown: stop claiming, drain, return.
    Drain,
    /// Crash: every task of the worker dropped where it stands.
    Crash,
}

/// A worker on its own thread and single-threaded runtime, over its own database pool.
struct WorkerThread {
    name: String,
    signal: Arc<Notify>,
    metrics: SchedulerMetrics,
    handle: tokio::runtime::Handle,
    end: Option<oneshot::Sender<End>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl WorkerThread {
    fn start(name: &str, t: &TestDb, clock: &ManualClock) -> Self {
        let mut db_config = t.config();
        db_config.pool_size = 8;
        let keyring: Keyring = t.keyring().clone();
        let mut config = config(name);
        config.concurrency = 4;
        // Ticks are fired on the manual clock, which runs faster than real time: a tick is
        // never a misfire here, whatever the machine's load. Takeovers may happen more often
        // than the disturbances cause when the machine is slow; the cap must not fail a run.
        config.misfire_threshold = Duration::from_secs(3600);
        config.max_takeovers = 20;
        let signal = Arc::new(Notify::new());
        let metrics = SchedulerMetrics::default();
        let (end, end_rx) = oneshot::channel::<End>();
        let (ready, ready_rx) = std::sync::mpsc::channel();
        let (clock, worker_signal, worker_metrics) =
            (clock.clone(), signal.clone(), metrics.clone());
        let thread = std::thread::Builder::new()
            .name(format!("worker-{name}"))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                let handle = runtime.handle().clone();
                runtime.block_on(async move {
                    let db = Database::open(&db_config)
                        .await
                        .unwrap()
                        .with_keyring(keyring);
                    let worker = Worker::new(config, db.clone(), engine(&db), worker_signal)
                        .with_clock(Arc::new(clock))
                        .with_metrics(worker_metrics);
                    ready.send(handle).unwrap();
                    let (drain, drained) = oneshot::channel::<()>();
                    let run = worker.run(async {
                        let _ = drained.await;
                    });
                    tokio::pin!(run);
                    tokio::select! {
                        result = &mut run => result.unwrap(),
                        end = end_rx => {
                            if let Ok(End::Drain) = end {
                                let _ = drain.send(());
                                run.await.unwrap();
                            }
                            // A crash: the worker's future is dropped here, with its run tasks.
                        }
                    }
                });
                runtime.shutdown_background();
            })
            .unwrap();
        let handle = ready_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the worker thread started");
        Self {
            name: name.to_owned(),
            signal,
            metrics,
            handle,
            end: Some(end),
            thread: Some(thread),
        }
    }

    /// Blocks the worker's only thread until the returned guard thaws it (or is dropped).
    async fn freeze(&self) -> Frozen {
        let (started, started_rx) = oneshot::channel();
        let (thaw, thaw_rx) = std::sync::mpsc::channel::<()>();
        self.handle.spawn(async move {
            let _ = started.send(());
            // Blocking on purpose: nothing else of this worker runs until it returns.
            let _ = thaw_rx.recv();
        });
        tokio::time::timeout(Duration::from_secs(30), started_rx)
            .await
            .expect("the worker froze")
            .unwrap();
        Frozen { _thaw: thaw }
    }

    /// Ends the worker and waits for its thread.
    async fn end(mut self, how: End) {
        if let Some(end) = self.end.take() {
            let _ = end.send(how);
        }
        if let Some(thread) = self.thread.take() {
            tokio::task::spawn_blocking(move || thread.join().unwrap())
                .await
                .unwrap();
        }
    }
}

impl Drop for WorkerThread {
    fn drop(&mut self) {
        // On a failing test: crash it, without waiting (a frozen worker would never answer).
        if let Some(end) = self.end.take() {
            let _ = end.send(End::Crash);
        }
    }
}

/// A frozen worker; dropping this thaws it.
struct Frozen {
    _thaw: std::sync::mpsc::Sender<()>,
}

/// What the test accepted: runs committed to the queue, and the schedules' plans.
struct Scene {
    user: UserId,
    queued_plan: PlanId,
    /// Per schedule: its plan and the ticks it must fire in the window.
    schedules: Vec<(PlanId, Vec<DateTime<Utc>>)>,
}

async fn scene(db: &Database, server: &FakeServer, base: DateTime<Utc>) -> Scene {
    let user = user(db).await;
    let step = |id: &str, path: &str| post_step(id, server.url(path).as_str());
    let queued_plan = plan(
        db,
        &user,
        "queued",
        vec![
            step("one", "/q/1"),
            step("two", "/q/2"),
            step("three", "/q/3"),
        ],
    )
    .await;
    let end = base + chrono::Duration::seconds(WINDOW);
    let mut schedules = Vec::new();
    for (i, cron) in CRONS.iter().enumerate() {
        let steps = vec![
            step("a", &format!("/s{i}/a")),
            step("b", &format!("/s{i}/b")),
        ];
        let plan = plan(db, &user, &format!("schedule {i}"), steps).await;
        let parsed = CronSchedule::parse(cron, "UTC").unwrap();
        let ticks: Vec<DateTime<Utc>> =
            std::iter::successors(parsed.next_after(base), |t| parsed.next_after(*t))
                .take_while(|t| *t <= end)
                .collect();
        schedule(
            db,
            &user,
            &plan,
            cron,
            ticks[0],
            MisfirePolicy::Coalesce,
            OverlapPolicy::Allow,
        )
        .await;
        schedules.push((plan, ticks));
    }
    Scene {
        user,
        queued_plan,
        schedules,
    }
}

async fn enqueue(db: &Database, user: &UserId, plan: &PlanId) -> RunId {
    let stored = db.plan(user, plan).await.unwrap().unwrap();
    let run = NewRun {
        plan_id: Some(plan.clone()),
        plan_name: stored.plan.name,
        steps: stored.plan.steps,
        input: serde_json::json!({}),
        trigger: TriggerKind::Api,
        schedule_id: None,
        scheduled_for: None,
    };
    db.enqueue_run(user, &run).await.unwrap().id
}

/// Every run of the scene's plans.
async fn all_runs(db: &Database, scene: &Scene) -> Vec<RunRow> {
    let mut runs = runs_of(db, &scene.user, &scene.queued_plan).await;
    for (plan, _) in &scene.schedules {
        runs.extend(runs_of(db, &scene.user, plan).await);
    }
    runs
}

/// A run `owner` holds a lease on right now, if any.
async fn held_by(db: &Database, scene: &Scene, owner: &str) -> Option<RunRow> {
    all_runs(db, scene)
        .await
        .into_iter()
        .find(|r| r.status == RunStatus::Running && r.lease_owner.as_deref() == Some(owner))
}

async fn ledger_under_disturbances(t: &TestDb) {
    let db = t.db().clone();
    // Each call takes about 200 ms, so runs are in flight when the disturbances strike.
    let slow =
        Reply::json(200, &serde_json::json!({ "ok": true })).drip(3, Duration::from_millis(50));
    let server = FakeServer::start(vec![slow]).await.unwrap();
    let base = Utc::now().trunc_subsecs(0);
    let clock = ManualClock::new(base);
    let scene = scene(&db, &server, base).await;

    let a = WorkerThread::start("A", t, &clock);
    let mut b = Some(WorkerThread::start("B", t, &clock));
    let mut restarted: Option<WorkerThread> = None;
    let mut accepted: Vec<RunId> = Vec::new();
    // A's run while A is frozen; then the run once B took it over.
    let mut frozen: Option<(Frozen, RunRow)> = None;
    let mut victim: Option<RunRow> = None;
    // The loop round in which B crashed.
    let mut crashed_at: Option<u32> = None;
    let mut second = 0;
    let mut round = 0u32;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        round += 1;
        let in_window = second < WINDOW;
        if in_window {
            second += 1;
            clock.advance(Duration::from_secs(1));
        }
        // Queued work keeps coming through the window, and after it while A has not yet been
        // caught holding a lease.
        if in_window || victim.is_none() {
            for _ in 0..QUEUED_PER_SECOND {
                accepted.push(enqueue(&db, &scene.user, &scene.queued_plan).await);
            }
            for w in [Some(&a), b.as_ref(), restarted.as_ref()]
                .into_iter()
                .flatten()
            {
                w.signal.notify_one();
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;

        // Disturbance 1: from the 4th second, freeze A while it holds a lease (retried until it
        // does), and thaw it once B has taken that run over.
        if second >= 4 && victim.is_none() && frozen.is_none() {
            let ice = a.freeze().await;
            // Writes A handed to the database before the freeze land first.
            tokio::time::sleep(Duration::from_millis(100)).await;
            if let Some(held) = held_by(&db, &scene, &a.name).await {
                frozen = Some((ice, held));
            }
        }
        if let Some((_, held)) = &frozen {
            let now = run(&db, &scene.user, &held.id).await;
            if now.lease_epoch > held.lease_epoch {
                eprintln!(
                    "froze A holding run {} (epoch {}); thawed it once taken over (epoch {})",
                    held.id, held.lease_epoch, now.lease_epoch
                );
                victim = Some(now);
                frozen = None;
            } else if now.status.is_terminal() {
                // A write handed over before the freeze finished it after all: try again.
                frozen = None;
            }
        }
        // Disturbance 2: once A is thawed and past the window's middle, crash B; restart it
        // two rounds later.
        if frozen.is_none() && victim.is_some() && second >= WINDOW / 2 && crashed_at.is_none() {
            let held = match &b {
                Some(b) => held_by(&db, &scene, &b.name).await.map(|r| r.id),
                None => None,
            };
            eprintln!("crashing B at second {second} (holding {held:?})");
            b.take().unwrap().end(End::Crash).await;
            crashed_at = Some(round);
        }
        if let Some(at) = crashed_at
            && restarted.is_none()
            && round >= at + 2
        {
            restarted = Some(WorkerThread::start("B2", t, &clock));
        }
        if second >= WINDOW && victim.is_some() && restarted.is_some() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the disturbances did not complete within 90 s (froze A: {}, crashed B: {crashed_at:?})",
            victim.is_some()
        );
    }

    // Everything settles: every expected tick and every accepted run has a finished run.
    let expected_ticks: usize = scene.schedules.iter().map(|(_, t)| t.len()).sum();
    let runs = wait_for(
        "every run of the ledger to finish",
        Duration::from_secs(60),
        || async {
            let runs = all_runs(&db, &scene).await;
            let ticks = runs.iter().filter(|r| r.scheduled_for.is_some()).count();
            let settled = runs.iter().all(|r| r.status.is_terminal());
            (settled && ticks >= expected_ticks && runs.len() >= accepted.len() + expected_ticks)
                .then_some(runs)
        },
    )
    .await;
    let a_metrics = a.metrics.clone();
    let b2_metrics = restarted.as_ref().unwrap().metrics.clone();
    a.end(End::Drain).await;
    restarted.take().unwrap().end(End::Drain).await;
    // Drained workers wrote nothing more.
    assert_eq!(all_runs(&db, &scene).await, runs);

    // Lost: none. Duplicated: none.
    let by_id: HashMap<&RunId, &RunRow> = runs.iter().map(|r| (&r.id, r)).collect();
    for id in &accepted {
        let row = by_id
            .get(id)
            .unwrap_or_else(|| panic!("accepted run {id} is lost"));
        assert_eq!(
            row.status,
            RunStatus::Succeeded,
            "run {id}: {:?}",
            row.error
        );
    }
    let queued: HashSet<&RunId> = runs
        .iter()
        .filter(|r| r.plan_id.as_ref() == Some(&scene.queued_plan))
        .map(|r| &r.id)
        .collect();
    assert_eq!(
        queued.len(),
        accepted.len(),
        "runs appeared that nobody accepted"
    );
    for (plan, ticks) in &scene.schedules {
        let mut per_tick: BTreeMap<DateTime<Utc>, usize> = BTreeMap::new();
        for r in runs.iter().filter(|r| r.plan_id.as_ref() == Some(plan)) {
            assert_eq!(
                r.status,
                RunStatus::Succeeded,
                "tick run {}: {:?}",
                r.id,
                r.error
            );
            *per_tick.entry(r.scheduled_for.unwrap()).or_default() += 1;
        }
        let fired: Vec<DateTime<Utc>> = per_tick.keys().copied().collect();
        assert_eq!(&fired, ticks, "the ticks fired are not the ticks due");
        assert!(
            per_tick.values().all(|n| *n == 1),
            "a tick has several runs: {per_tick:?}"
        );
    }
    for metrics in [&a_metrics, &b2_metrics] {
        assert_eq!(metrics.missed_count("misfire"), 0);
        assert_eq!(metrics.missed_count("overlap"), 0);
    }

    // Repeated steps: only for runs that changed hands, with the same key.
    let calls: Vec<(String, String)> = server
        .requests()
        .iter()
        .map(|r| {
            (
                r.target.clone(),
                r.header("idempotency-key").unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let repeats = check_ledger(&calls, &runs);
    let victim = victim.unwrap();
    assert!(
        by_id[&victim.id].takeover_count >= 1,
        "the frozen worker's run was not taken over"
    );
    let takeovers: u32 = runs.iter().map(|r| r.takeover_count).sum();
    eprintln!(
        "{:?}: {} accepted runs, {expected_ticks} ticks, {} calls, {repeats} repeated, {takeovers} takeovers",
        t.backend(),
        accepted.len(),
        calls.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_sqlite_nothing_lost_or_duplicated_under_freeze_and_crash() {
    if !pilot_storage::testing::slow_tests_enabled(
        "ledger::ledger_sqlite_nothing_lost_or_duplicated_under_freeze_and_crash",
    ) {
        return;
    }
    ledger_under_disturbances(&TestDb::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_postgres_nothing_lost_or_duplicated_under_freeze_and_crash() {
    if !pilot_storage::testing::slow_tests_enabled(
        "ledger::ledger_postgres_nothing_lost_or_duplicated_under_freeze_and_crash",
    ) {
        return;
    }
    let Some(t) = TestDb::postgres().await else {
        return;
    };
    ledger_under_disturbances(&t).await;
}
