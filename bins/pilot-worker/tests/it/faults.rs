//! The fault cases of docs/RELIABILITY.md not covered by the other process tests, each with its
//! "nothing lost" check against a ledger of the calls a local server received:
//!
//! - the database connection cut and restored mid-run (a TCP proxy in front of PostgreSQL resets
//!   every connection of a `pilot-worker` process and refuses new ones for a few seconds), and
//!   the same cut lasting while another worker takes the run over: the cut-off worker, alive
//!   and holding a provider's answer, is fenced when it reconnects;
//! - SQLite killed mid-write (a server process on a SQLite file under async load, SIGKILLed at a
//!   random moment, then restarted on the same file);
//! - a crash between "the provider answered" and "the output was persisted".
//!
//! The server process of the SQLite case is this test binary run again as a child (see
//! api_crash.rs): it serves the real pilot-api route table with an embedded worker, wired as
//! pilot-server wires them, but with the 2 s lease the other process tests use, so a takeover
//! after the kill does not wait 30 s.

#[path = "support/faults.rs"]
mod fault_kit;
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, SubsecRound as _, Utc};
use fault_kit::{HoldServer, SelfChild, TcpProxy};
use pilot_api::{ApiSettings, AppParts, AppState, ServerConfig};
use pilot_core::{PlanId, RunId, RunStatus, StepStatus, TriggerKind, UserId};
use pilot_cron::CronSchedule;
use pilot_registry::testing::{FakeServer, Reply};
use pilot_registry::{OutboundClient, OutboundConfig, Registry, parse_allowlist};
use pilot_scheduler::testing::check_ledger;
use pilot_scheduler::{SchedulerMetrics, Worker, WorkerConfig};
use pilot_storage::{
    Database, DbConfig, Keyring, MisfirePolicy, NewRun, OverlapPolicy, RunRow, ScheduleSpec,
};
use pilot_telemetry::Metrics;

use crate::support::*;

fn hold_calls(server: &HoldServer) -> Vec<(String, String)> {
    server
        .calls()
        .into_iter()
        .map(|c| (c.path, c.key))
        .collect()
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

/// A server holding `/2`, a user, and their plan of three steps calling `/1`, `/2` and `/3`.
async fn three_step_scene(db: &Database) -> (HoldServer, UserId, PlanId) {
    let server = HoldServer::start().await;
    server.hold("/2");
    let user = user(db).await;
    let three = plan(
        db,
        &user,
        "three steps",
        vec![
            post_step("one", &server.url("/1")),
            post_step("two", &server.url("/2")),
            post_step("three", &server.url("/3")),
        ],
    )
    .await;
    (server, user, three)
}

/// The (path, key) pairs `server` received, in order, against what the three-step run `id`
/// should have made: each `(path, step id)` of `steps`.
fn assert_three_step_ledger(server: &HoldServer, id: &RunId, steps: &[(&str, &str)]) {
    let expect: Vec<(String, String)> = steps
        .iter()
        .map(|(path, step)| ((*path).to_owned(), format!("{id}:{step}")))
        .collect();
    assert_eq!(hold_calls(server), expect);
}

async fn wait_succeeded(db: &Database, user: &UserId, id: &RunId) -> RunRow {
    wait_for("the run to succeed", Duration::from_secs(45), || async {
        let row = run(db, user, id).await;
        assert!(
            !row.status.is_terminal() || row.status == RunStatus::Succeeded,
            "the run ended {:?}: {:?}",
            row.status,
            row.error
        );
        (row.status == RunStatus::Succeeded).then_some(row)
    })
    .await
}

// ---- 1. the database connection cut and restored mid-run -------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_mid_run_loses_no_run_tick_or_finished_step() {
    if !pilot_storage::testing::slow_tests_enabled(
        "faults::a_database_outage_mid_run_loses_no_run_tick_or_finished_step",
    ) {
        return;
    }
    let Some(t) = postgres().await else { return };
    let db = t.db().clone();
    let mut proxy = TcpProxy::start(fault_kit::postgres_addr(t.url())).await;
    let (server, user, three) = three_step_scene(&db).await;
    let late = plan(
        &db,
        &user,
        "late",
        vec![post_step("late", &server.url("/late"))],
    )
    .await;
    // An every-second schedule ticks right through the outage.
    let ticking = plan(
        &db,
        &user,
        "ticks",
        vec![post_step("tick", &server.url("/tick"))],
    )
    .await;
    let cron = CronSchedule::parse("* * * * * *", "UTC").unwrap();
    let first = cron
        .next_after(Utc::now() + chrono::Duration::seconds(1))
        .unwrap();
    let spec = ScheduleSpec {
        cron: cron.expression().to_owned(),
        timezone: "UTC".to_owned(),
        misfire: MisfirePolicy::Coalesce,
        grace_seconds: 3600,
        overlap: OverlapPolicy::Allow,
        next_run_at: Some(first),
        enabled: true,
    };
    db.upsert_schedule(&user, &ticking, &spec)
        .await
        .unwrap()
        .unwrap();
    let id = enqueue(&db, &user, &three).await;

    let through_proxy = fault_kit::via(t.url(), proxy.addr());
    let mut worker = WorkerProcess::start(&t, "cut-off", &["--database-url", &through_proxy]);
    server.wait_calls("/2", 1).await;
    let before = run(&db, &user, &id).await;
    assert_eq!(before.states[0].status, StepStatus::Succeeded);
    assert_eq!(before.states[1].status, StepStatus::Pending);
    assert!(
        proxy.accepted() > 0,
        "the worker connects through the proxy"
    );

    // The outage: every connection reset, new ones refused, for longer than the 2 s lease.
    proxy.cut().await;
    let mut accepted = Vec::new();
    for _ in 0..3 {
        // Accepted while the worker cannot see the database.
        accepted.push(enqueue(&db, &user, &late).await);
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    proxy.restore().await;
    let restored = Utc::now();
    server.release("/2");

    let done = wait_succeeded(&db, &user, &id).await;
    assert!(
        done.states
            .iter()
            .all(|s| s.status == StepStatus::Succeeded)
    );
    for late_id in &accepted {
        wait_succeeded(&db, &user, late_id).await;
    }
    // Every tick from the first to a few seconds after the outage has exactly one run.
    let last = restored.trunc_subsecs(0) + chrono::Duration::seconds(3);
    let expected: Vec<DateTime<Utc>> = std::iter::successors(Some(first), |t| {
        Some(*t + chrono::Duration::seconds(1)).filter(|t| *t <= last)
    })
    .collect();
    // Waits until the scheduler is past `last` and every tick up to it has finished.
    let tick_runs = wait_for(
        "the ticks through the outage to run",
        Duration::from_secs(45),
        || async {
            let runs = runs_of(&db, &user, &ticking).await;
            let past = runs.iter().any(|r| r.scheduled_for > Some(last));
            let settled = runs
                .iter()
                .filter(|r| r.scheduled_for <= Some(last))
                .all(|r| r.status.is_terminal());
            (past && settled).then_some(runs)
        },
    )
    .await;
    let mut per_tick: BTreeMap<DateTime<Utc>, usize> = BTreeMap::new();
    for r in &tick_runs {
        *per_tick.entry(r.scheduled_for.unwrap()).or_default() += 1;
        if r.scheduled_for <= Some(last) {
            assert_eq!(r.status, RunStatus::Succeeded, "{:?}", r.error);
        }
    }
    let missing: Vec<_> = expected
        .iter()
        .filter(|t| !per_tick.contains_key(t))
        .collect();
    assert!(missing.is_empty(), "ticks without a run: {missing:?}");
    assert!(
        per_tick.values().all(|n| *n == 1),
        "a tick ran twice: {per_tick:?}"
    );

    // No duplicated run of the three-step plan; its finished steps ran once, the step in flight
    // during the outage ran again only with the same key.
    assert_eq!(runs_of(&db, &user, &three).await.len(), 1);
    let calls = server.calls();
    let keys = |path: &str| -> Vec<String> {
        calls
            .iter()
            .filter(|c| c.path == path)
            .map(|c| c.key.clone())
            .collect()
    };
    assert_eq!(keys("/1"), vec![format!("{id}:one")]);
    assert_eq!(keys("/3"), vec![format!("{id}:three")]);
    let twos = keys("/2");
    assert!(twos.iter().all(|k| *k == format!("{id}:two")), "{twos:?}");
    if twos.len() > 1 {
        assert!(
            done.takeover_count >= 1,
            "step 2 repeated without a takeover"
        );
    }
    let mut finished = vec![done];
    for late_id in &accepted {
        finished.push(run(&db, &user, late_id).await);
    }
    finished.extend(
        tick_runs
            .into_iter()
            .filter(|r| r.status == RunStatus::Succeeded),
    );
    let ledger: Vec<(String, String)> = hold_calls(&server)
        .into_iter()
        .filter(|(_, key)| {
            finished
                .iter()
                .any(|r| key.starts_with(&format!("{}:", r.id)))
        })
        .collect();
    check_ledger(&ledger, &finished);

    // The worker lived through it and still serves.
    assert!(worker.is_running(), "the worker died in the outage");
    let after = enqueue(&db, &user, &late).await;
    wait_succeeded(&db, &user, &after).await;
    eprintln!(
        "outage: step 2 called {} time(s), takeovers {}, {} ticks checked",
        twos.len(),
        finished[0].takeover_count,
        expected.len()
    );
    worker.signal("TERM");
    assert!(worker.wait_exit(Duration::from_secs(30)).await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_cut_off_from_the_database_is_fenced_when_it_reconnects() {
    if !pilot_storage::testing::slow_tests_enabled(
        "faults::a_worker_cut_off_from_the_database_is_fenced_when_it_reconnects",
    ) {
        return;
    }
    let Some(t) = postgres().await else { return };
    let db = t.db().clone();
    let mut proxy = TcpProxy::start(fault_kit::postgres_addr(t.url())).await;
    let (server, user, three) = three_step_scene(&db).await;
    let id = enqueue(&db, &user, &three).await;

    let through_proxy = fault_kit::via(t.url(), proxy.addr());
    let mut cut_off = WorkerProcess::start(&t, "partitioned", &["--database-url", &through_proxy]);
    server.wait_calls("/2", 1).await;
    proxy.cut().await;
    // A worker that still sees the database takes the run over once the lease expires, and
    // calls step 2 again. Then both calls are answered: the cut-off worker holds an answer it
    // cannot persist.
    let heir = WorkerProcess::start(&t, "heir", &[]);
    server.wait_calls("/2", 2).await;
    server.release("/2");
    let done = wait_succeeded(&db, &user, &id).await;
    assert_eq!(done.takeover_count, 1);
    assert_eq!(done.lease_epoch, 2);
    let logs = log_count(&db, &user, &id).await;
    drop(heir);

    proxy.restore().await;
    wait_for(
        "the reconnected worker to notice it lost the lease",
        Duration::from_secs(30),
        || async { cut_off.log().contains("lease lost").then_some(()) },
    )
    .await;
    assert_eq!(
        run(&db, &user, &id).await,
        done,
        "the fenced worker changed the run"
    );
    assert_eq!(
        log_count(&db, &user, &id).await,
        logs,
        "the fenced worker wrote log rows"
    );
    assert_three_step_ledger(
        &server,
        &id,
        &[("/1", "one"), ("/2", "two"), ("/2", "two"), ("/3", "three")],
    );
    // Still serving, now that it sees the database again.
    assert!(cut_off.is_running());
    let late = plan(
        &db,
        &user,
        "late",
        vec![post_step("late", &server.url("/late"))],
    )
    .await;
    let after = enqueue(&db, &user, &late).await;
    wait_succeeded(&db, &user, &after).await;
    assert_eq!(run(&db, &user, &after).await.lease_epoch, 1);
    cut_off.signal("TERM");
    assert!(cut_off.wait_exit(Duration::from_secs(30)).await.success());
}

// ---- 2. SQLite killed mid-write --------------------------------------------------------------

const SQLITE_TEST: &str = "faults::sqlite_killed_under_async_load_keeps_every_accepted_run";
/// Set in the child: the SQLite URL it serves.
const CHILD_URL_ENV: &str = "PILOT_FAULTS_CHILD_SQLITE_URL";
/// Set in the child: its master key.
const CHILD_KEY_ENV: &str = "PILOT_FAULTS_CHILD_MASTER_KEY";

/// A small xorshift generator for the kill moments, which the test prints.
struct Random(u64);

impl Random {
    fn seeded() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        Self((nanos as u64) ^ (u64::from(std::process::id()) << 32) | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_killed_under_async_load_keeps_every_accepted_run() {
    if !pilot_storage::testing::slow_tests_enabled(
        "faults::sqlite_killed_under_async_load_keeps_every_accepted_run",
    ) {
        return;
    }
    #[allow(
        clippy::disallowed_methods,
        reason = "the child's role comes from its parent"
    )]
    if let (Ok(url), Ok(key)) = (std::env::var(CHILD_URL_ENV), std::env::var(CHILD_KEY_ENV)) {
        serve_sqlite_forever(&url, &key).await;
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pilot.db");
    let url = format!("sqlite://{}", file.display());
    let key = Keyring::generate_key_base64().unwrap();
    let sink = FakeServer::start(vec![Reply::json(200, &serde_json::json!({ "ok": true }))])
        .await
        .unwrap();
    let (user, plan, token) = {
        let db = Database::open(&DbConfig::new(url.as_str())).await.unwrap();
        let user = user(&db).await;
        let (_, token) = db.create_token(&user, "load").await.unwrap();
        let plan = plan(
            &db,
            &user,
            "sink",
            vec![post_step("only", sink.url("/sink").as_str())],
        )
        .await;
        (user, plan, token.expose().to_owned())
    };
    let body = serde_json::json!({ "plan_id": plan, "async": true }).to_string();
    let env = [(CHILD_URL_ENV, url.as_str()), (CHILD_KEY_ENV, key.as_str())];
    let mut random = Random::seeded();
    let accepted: Arc<Mutex<Vec<RunId>>> = Arc::new(Mutex::new(Vec::new()));

    for cycle in 1..=2 {
        let mut server = SelfChild::start(SQLITE_TEST, &env).await;
        let addr = server.addr();
        let before = accepted.lock().unwrap().len();
        let kill_after = 10 + random.below(150) as usize;
        let extra_ms = random.below(40);
        eprintln!("cycle {cycle}: SIGKILL after {kill_after} accepted runs + {extra_ms} ms");
        // Async executes from six clients until the server stops answering.
        let mut clients = tokio::task::JoinSet::new();
        for _ in 0..6 {
            let (accepted, token, body) = (accepted.clone(), token.clone(), body.clone());
            clients.spawn(async move {
                loop {
                    let Some((status, answer)) =
                        fault_kit::post(addr, "/api/execute", &token, &body).await
                    else {
                        return;
                    };
                    assert_eq!(status, 202, "{answer}");
                    let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
                    let id = RunId(answer["run_id"].as_str().unwrap().to_owned());
                    accepted.lock().unwrap().push(id);
                }
            });
        }
        wait_for(
            "the load to reach the kill point",
            Duration::from_secs(30),
            || async { (accepted.lock().unwrap().len() >= before + kill_after).then_some(()) },
        )
        .await;
        tokio::time::sleep(Duration::from_millis(extra_ms)).await;
        server.kill();
        tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(joined) = clients.join_next().await {
                joined.unwrap();
            }
        })
        .await
        .expect("the clients stop once the server is gone");
        // The file as the crash left it (copied: checking it must not recover it in place).
        let copy = tempfile::tempdir().unwrap();
        for suffix in ["", "-wal"] {
            let from = dir.path().join(format!("pilot.db{suffix}"));
            if from.exists() {
                std::fs::copy(&from, copy.path().join(format!("pilot.db{suffix}"))).unwrap();
            }
        }
        if let Some(answer) = fault_kit::integrity_check(&copy.path().join("pilot.db")) {
            assert_eq!(answer, "ok", "the crashed file is damaged (cycle {cycle})");
        }
    }

    // Restarted on the same file: every answered 202 is a run, and every run finishes.
    let mut server = SelfChild::start(SQLITE_TEST, &env).await;
    let mut config = DbConfig::new(url.as_str());
    config.run_migrations = false;
    let db = Database::open(&config).await.unwrap();
    let accepted: HashSet<RunId> = accepted.lock().unwrap().iter().cloned().collect();
    let runs = wait_for(
        "every run to finish after the restart",
        Duration::from_secs(45),
        || async {
            let runs = runs_of(&db, &user, &plan).await;
            runs.iter()
                .all(|r| r.status == RunStatus::Succeeded)
                .then_some(runs)
        },
    )
    .await;
    let stored: HashSet<RunId> = runs.iter().map(|r| r.id.clone()).collect();
    let lost: Vec<&RunId> = accepted.difference(&stored).collect();
    assert!(
        lost.is_empty(),
        "runs answered 202 but not stored: {lost:?}"
    );
    let calls: Vec<(String, String)> = sink
        .requests()
        .iter()
        .map(|r| {
            (
                r.target.clone(),
                r.header("idempotency-key").unwrap_or_default().to_owned(),
            )
        })
        .collect();
    check_ledger(&calls, &runs);
    let taken_over = runs.iter().filter(|r| r.takeover_count > 0).count();
    eprintln!(
        "{} runs answered 202, {} stored, {taken_over} taken over after a kill",
        accepted.len(),
        runs.len()
    );
    assert!(server.is_running());
    server.kill();
    drop(db);
    if let Some(answer) = fault_kit::integrity_check(&file) {
        assert_eq!(answer, "ok", "the database is damaged after the restarts");
    }
}

/// The child's role: the API and an embedded worker over the SQLite file at `url`, as
/// pilot-server wires them (synchronous=FULL, migrations at start), printing
/// `LISTENING <addr>` once bound.
#[allow(
    clippy::print_stdout,
    reason = "the parent reads the address from stdout"
)]
async fn serve_sqlite_forever(url: &str, key: &str) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("info,pilot_scheduler=debug")
        .with_writer(std::io::stderr)
        .try_init();
    let db = Database::open(&DbConfig::new(url))
        .await
        .unwrap()
        .with_keyring(Keyring::from_master_key(key).unwrap());
    let mut registry = Registry::new();
    pilot_provider_http::register(&mut registry).unwrap();
    let http = OutboundClient::new(OutboundConfig {
        allow: parse_allowlist("127.0.0.1/32").unwrap(),
        ..OutboundConfig::default()
    })
    .unwrap();
    let mut metrics = Metrics::new();
    let scheduler_metrics = SchedulerMetrics::register(metrics.registry_mut());
    let state = AppState::new(AppParts {
        db,
        registry: Arc::new(registry),
        http: Arc::new(http),
        engine: pilot_engine::EngineConfig::default(),
        metrics,
        settings: ApiSettings::default(),
    });
    let server = pilot_api::bind(
        state.clone(),
        &ServerConfig {
            bind: "127.0.0.1:0".parse().unwrap(),
            workers: 2,
            ..ServerConfig::default()
        },
    )
    .unwrap();
    let mut config = WorkerConfig::new(format!("server:{}", std::process::id()));
    config.lease_ttl = Duration::from_secs(2);
    config.idle_poll = Duration::from_millis(500);
    let worker = Worker::new(
        config,
        state.db().clone(),
        state.engine().clone(),
        state.queue_signal().clone(),
    )
    .with_metrics(scheduler_metrics);
    tokio::spawn(async move { worker.run(std::future::pending()).await.unwrap() });
    println!("LISTENING {}", server.local_addr());
    server.run(std::future::pending()).await.unwrap();
}

// ---- 3. a crash between "provider answered" and "output persisted" ---------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_the_providers_answer_repeats_that_step_with_the_same_key() {
    if !pilot_storage::testing::slow_tests_enabled(
        "faults::a_crash_after_the_providers_answer_repeats_that_step_with_the_same_key",
    ) {
        return;
    }
    let Some(t) = postgres().await else { return };
    let db = t.db().clone();
    let (server, user, three) = three_step_scene(&db).await;
    let id = enqueue(&db, &user, &three).await;

    let mut doomed = WorkerProcess::start(&t, "doomed", &[]);
    server.wait_calls("/2", 1).await;
    // Frozen while it waits, the worker cannot read the answer, let alone persist it: the
    // provider's side effect happens and its answer is delivered to the worker's socket, then
    // the worker dies.
    doomed.signal("STOP");
    server.release("/2");
    server.wait_answered("/2", 1).await;
    let before = run(&db, &user, &id).await;
    assert_eq!(before.states[0].status, StepStatus::Succeeded);
    assert_eq!(
        before.states[1].status,
        StepStatus::Pending,
        "step 2's answer is not persisted"
    );
    doomed.signal("KILL");
    doomed.wait_exit(Duration::from_secs(10)).await;

    let _heir = WorkerProcess::start(&t, "heir", &[]);
    let done = wait_succeeded(&db, &user, &id).await;
    assert_eq!(done.takeover_count, 1);
    // Step 1 once, step 2 again with the same key, step 3 once.
    assert_three_step_ledger(
        &server,
        &id,
        &[("/1", "one"), ("/2", "two"), ("/2", "two"), ("/3", "three")],
    );
    // The outcome recorded is the second call's answer: the first one died with the worker.
    let second = server.calls_to("/2")[1].n;
    assert_eq!(
        done.states[1].output.as_ref().unwrap()["body"]["call"],
        serde_json::json!(second)
    );
    assert_eq!(run(&db, &user, &id).await.states, done.states);
}
