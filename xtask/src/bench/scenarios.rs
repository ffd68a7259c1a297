//! The benchmark's scenarios, each against a server the caller started: what load it
//! sends, what it measures, and the correctness counters it reads back from the database.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use super::db::{Backend, Database, Postgres};
use super::http::{Conn, Response};
use super::load::{self, Job, LoadReport, Until};
use super::pilot::{Api, Server, plans};
use super::report::{Counters, Figure, ScenarioReport, Target};
use super::stats::Samples;
use super::{Ctx, system};

/// Creates one plan and returns its id.
pub(crate) fn create_plan(ctx: &Ctx, api: &Api, name: &str, steps: &Value) -> Result<String> {
    let bytes = api.create_plan(name, steps);
    ctx.rt.block_on(async {
        let mut conn = Conn::new(api.addr());
        let response = api.send(&mut conn, &bytes).await?;
        Api::created_plan_id(&response).map_err(anyhow::Error::msg)
    })
}

/// Inline executions of one plan, each with its own input.
struct Execute {
    api: Api,
    plan_id: String,
    input: fn(u64) -> Value,
}

impl Job for Execute {
    fn request(&self, i: u64) -> Vec<u8> {
        self.api.execute(&self.plan_id, &(self.input)(i), false)
    }

    fn check(&self, _: u64, response: &Response) -> Result<(), String> {
        Api::succeeded(response)
    }
}

/// Creates plans, keeping each one's id by request number.
struct CreatePlans {
    api: Api,
    steps: Value,
    ids: Mutex<Vec<Option<String>>>,
}

impl Job for CreatePlans {
    fn request(&self, i: u64) -> Vec<u8> {
        self.api
            .create_plan(&format!("bench plan {i}"), &self.steps)
    }

    fn check(&self, i: u64, response: &Response) -> Result<(), String> {
        let id = Api::created_plan_id(response)?;
        if let Ok(mut ids) = self.ids.lock()
            && let Some(slot) = ids.get_mut(i as usize)
        {
            *slot = Some(id);
        }
        Ok(())
    }
}

/// Schedules plans with one cron expression.
struct Schedule {
    api: Api,
    ids: Vec<String>,
    cron: String,
}

impl Job for Schedule {
    fn request(&self, i: u64) -> Vec<u8> {
        let id = self
            .ids
            .get(i as usize)
            .map(String::as_str)
            .unwrap_or("missing");
        self.api.schedule(id, &self.cron)
    }

    fn check(&self, _: u64, response: &Response) -> Result<(), String> {
        Api::scheduled(response)
    }
}

/// Creates `n` light plans from `clients` connections; returns their ids and the load report.
fn create_plans(ctx: &Ctx, api: &Api, n: u64, clients: usize) -> Result<(Vec<String>, LoadReport)> {
    let job = Arc::new(CreatePlans {
        api: api.clone(),
        steps: plans::light(),
        ids: Mutex::new(vec![None; n as usize]),
    });
    let report = ctx
        .rt
        .block_on(load::run(api.addr(), clients, Until::Count(n), job.clone()));
    if report.errors > 0 {
        bail!(
            "creating {n} plans: {} failed, e.g. {:?}",
            report.errors,
            report.error_samples
        );
    }
    let ids = job
        .ids
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .iter()
        .flatten()
        .cloned()
        .collect();
    Ok((ids, report))
}

/// Schedules every plan in `ids` with `cron`.
fn schedule_plans(
    ctx: &Ctx,
    api: &Api,
    ids: Vec<String>,
    cron: &str,
    clients: usize,
) -> LoadReport {
    let n = ids.len() as u64;
    let job = Arc::new(Schedule {
        api: api.clone(),
        ids,
        cron: cron.to_owned(),
    });
    ctx.rt
        .block_on(load::run(api.addr(), clients, Until::Count(n), job))
}

fn plan_filter(plan_id: &str) -> String {
    format!("plan_id = '{}'", plan_id.replace('\'', ""))
}

/// Runs of one plan: all, succeeded, and not yet finished.
struct RunCounts {
    total: u64,
    succeeded: u64,
    unfinished: u64,
}

fn run_counts(db: &Database, plan_id: &str) -> Result<RunCounts> {
    let rows = db.query(&format!(
        "SELECT count(*), \
                sum(CASE WHEN status = 'succeeded' THEN 1 ELSE 0 END), \
                sum(CASE WHEN status IN ('queued', 'running') THEN 1 ELSE 0 END) \
         FROM runs WHERE {}",
        plan_filter(plan_id)
    ))?;
    let row = rows.first().context("no answer")?;
    let n = |i: usize| row.get(i).and_then(|t| t.parse::<u64>().ok()).unwrap_or(0);
    Ok(RunCounts {
        total: n(0),
        succeeded: n(1),
        unfinished: n(2),
    })
}

/// Execution-log rows of one plan, and how many repeat a (run, step, attempt).
fn log_counts(db: &Database, plan_id: &str) -> Result<(u64, u64)> {
    let filter = plan_filter(plan_id);
    let rows = db.count(&format!(
        "SELECT count(*) FROM execution_logs WHERE {filter}"
    ))?;
    let repeated = db.count(&format!(
        "SELECT count(*) - count(DISTINCT run_id || ':' || step_id || ':' || attempt) FROM execution_logs WHERE {filter}"
    ))?;
    Ok((rows, repeated))
}

/// Succeeded step states of one plan's runs.
fn succeeded_steps(db: &Database, plan_id: &str) -> Result<u64> {
    db.count(&format!(
        "SELECT count(*) FROM run_steps WHERE status = 'succeeded' AND run_id IN (SELECT id FROM runs WHERE {})",
        plan_filter(plan_id)
    ))
}

/// Waits until no run of the plan is queued or running, or `timeout` passed.
fn wait_finished(
    db: &Database,
    plan_id: &str,
    expected: u64,
    timeout: Duration,
) -> Result<RunCounts> {
    let deadline = Instant::now() + timeout;
    loop {
        let counts = run_counts(db, plan_id)?;
        if (counts.total >= expected && counts.unfinished == 0) || Instant::now() >= deadline {
            return Ok(counts);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// CPU time used by the server and by the harness (load generator and sink) over a phase.
struct CpuMeter {
    pid: u32,
    server: Option<f64>,
    harness: Option<f64>,
    /// PostgreSQL: the server's backend processes and their CPU so far.
    backends: Vec<(u32, f64)>,
}

/// CPU use over a phase: seconds of CPU each side used, and the phase's length.
struct CpuUse {
    server: Option<f64>,
    harness: Option<f64>,
    database: Option<f64>,
    seconds: f64,
}

impl CpuMeter {
    /// Starts measuring the server `pid` and, on PostgreSQL, the backends serving `db`.
    fn start(pid: u32, db: &Database) -> CpuMeter {
        let backends = db
            .backend_pids()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|p| Some((p, system::cpu_seconds(p)?)))
            .collect();
        CpuMeter {
            pid,
            server: system::cpu_seconds(pid),
            harness: system::cpu_seconds(std::process::id()),
            backends,
        }
    }

    fn stop(self, seconds: f64) -> CpuUse {
        let delta = |before: Option<f64>, pid: u32| Some(system::cpu_seconds(pid)? - before?);
        // Backends that ended during the phase are left out (their CPU is not readable).
        let database = (!self.backends.is_empty()).then(|| {
            self.backends
                .iter()
                .filter_map(|&(p, before)| delta(Some(before), p))
                .sum::<f64>()
        });
        CpuUse {
            server: delta(self.server, self.pid),
            harness: delta(self.harness, std::process::id()),
            database,
            seconds,
        }
    }
}

impl CpuUse {
    /// Server CPU per run, and each side's share of the machine's cores.
    fn figures(&self, runs: u64) -> Vec<Figure> {
        let mut out = Vec::new();
        if let Some(server) = self.server {
            if runs > 0 {
                out.push(Figure::info(
                    "server CPU per run",
                    "ms",
                    server * 1000.0 / runs as f64,
                ));
            }
            out.push(Figure::info("server CPU", "cores", server / self.seconds));
        }
        if let Some(database) = self.database {
            out.push(Figure::info(
                "PostgreSQL backends CPU",
                "cores",
                database / self.seconds,
            ));
        }
        if let Some(harness) = self.harness {
            out.push(Figure::info(
                "harness CPU (load + sink)",
                "cores",
                harness / self.seconds,
            ));
        }
        out
    }
}

/// 3-step plan (transform, template, webhook to the sink) via inline `POST /api/execute` from
/// many clients: throughput, latency, and that every run was recorded and delivered once.
pub(crate) fn execute(ctx: &Ctx, server: &Server, db: &Database) -> Result<ScenarioReport> {
    let backend = db.backend();
    let (id, target_rps, target_p99) = match backend {
        Backend::Sqlite => ("execute-sqlite", 2_000.0, 50.0),
        Backend::Postgres => ("execute-postgres", 1_000.0, 100.0),
    };
    let clients = ctx.sizes.clients;
    let mut report = ScenarioReport::new(
        id,
        &format!(
            "3-step plan via POST /api/execute, {}, {clients} clients",
            backend.label()
        ),
    );
    let api = server.api().clone();
    let plan_id = create_plan(
        ctx,
        &api,
        "bench 3-step",
        &plans::three_step(&ctx.sink.url("/hook")),
    )?;
    let before = ctx.sink.counts();
    let job = Arc::new(Execute {
        api: api.clone(),
        plan_id: plan_id.clone(),
        input: plans::three_step_input,
    });
    let warm = ctx.rt.block_on(load::run(
        api.addr(),
        clients,
        ctx.sizes.warmup,
        job.clone(),
    ));
    let cpu = CpuMeter::start(server.pid(), db);
    let main = ctx
        .rt
        .block_on(load::run(api.addr(), clients, ctx.sizes.measure, job));
    let cpu = cpu.stop(main.seconds);
    let sink = ctx.sink.counts().since(before);
    let runs = run_counts(db, &plan_id)?;
    let (logs, repeated_logs) = log_counts(db, &plan_id)?;

    let judge = ctx.sizes.judge;
    let failed_requests = warm.errors + main.errors;
    report.figures = vec![
        Figure::new(
            "runs/s",
            "",
            main.ok as f64 / main.seconds,
            Some(Target::AtLeast(target_rps)),
            judge,
        )
        .of_limit(ctx.limits.tightest(backend)),
        Figure::info("latency p50", "ms", main.latency.p50_ms),
        Figure::new(
            "latency p99",
            "ms",
            main.latency.p99_ms,
            Some(Target::AtMost(target_p99)),
            judge,
        ),
        Figure::new(
            "errors",
            "",
            failed_requests as f64,
            Some(Target::AtMost(0.0)),
            judge,
        ),
    ];
    report.figures.extend(cpu.figures(main.ok));
    report.set_counters(Counters {
        runs_requested: warm.sent + main.sent,
        runs_recorded: runs.succeeded,
        sink_calls: Some(sink.calls),
        duplicates: sink.duplicates + repeated_logs,
        errors: failed_requests + (runs.total - runs.succeeded) + sink.malformed,
    });
    if logs != 3 * runs.succeeded {
        report.problems.push(format!(
            "{logs} execution-log rows for {} succeeded runs (expected 3 each)",
            runs.succeeded
        ));
    }
    for sample in warm.error_samples.iter().chain(&main.error_samples).take(3) {
        report.problems.push(format!("e.g. {sample}"));
    }
    report.details = json!({"plan_id": plan_id, "warmup": warm, "measure": main, "log_rows": logs});
    Ok(report)
}

/// One plan of `steps` sequential light steps, each persisted: end-to-end latency of inline
/// executions, one at a time.
pub(crate) fn chain(
    ctx: &Ctx,
    server: &Server,
    db: &Database,
    steps: usize,
) -> Result<ScenarioReport> {
    let backend = db.backend();
    let id = match backend {
        Backend::Sqlite => "chain-sqlite",
        Backend::Postgres => "chain-postgres",
    };
    let mut report = ScenarioReport::new(
        id,
        &format!(
            "one plan of {steps} sequential logic.transform steps, {}",
            backend.label()
        ),
    );
    let api = server.api().clone();
    let plan_id = create_plan(ctx, &api, "bench chain", &plans::chain(steps))?;
    let job = Arc::new(Execute {
        api: api.clone(),
        plan_id: plan_id.clone(),
        input: |i| json!(i),
    });
    let warm = ctx.rt.block_on(load::run(
        api.addr(),
        1,
        Until::Count(ctx.sizes.chain_warmup),
        job.clone(),
    ));
    let main = ctx.rt.block_on(load::run(
        api.addr(),
        1,
        Until::Count(ctx.sizes.chain_runs),
        job,
    ));
    let runs = run_counts(db, &plan_id)?;
    let (logs, repeated_logs) = log_counts(db, &plan_id)?;
    let step_states = succeeded_steps(db, &plan_id)?;

    // The target is the embedded default's (SQLite); PostgreSQL's figure is shown for context.
    let judge = ctx.sizes.judge && backend == Backend::Sqlite;
    let target = (backend == Backend::Sqlite).then_some(Target::AtMost(50.0));
    report.figures = vec![
        Figure::new("end to end p50", "ms", main.latency.p50_ms, target, judge),
        Figure::info("end to end p99", "ms", main.latency.p99_ms),
        Figure::info(
            "per step (p50 / steps)",
            "ms",
            main.latency.p50_ms / steps as f64,
        ),
    ];
    report.set_counters(Counters {
        runs_requested: warm.sent + main.sent,
        runs_recorded: runs.succeeded,
        sink_calls: None,
        duplicates: repeated_logs,
        errors: warm.errors + main.errors + (runs.total - runs.succeeded),
    });
    let expected = steps as u64 * runs.succeeded;
    if logs != expected || step_states != expected {
        report.problems.push(format!(
            "{logs} log rows and {step_states} succeeded step states for {} runs of {steps} steps",
            runs.succeeded
        ));
    }
    for sample in warm.error_samples.iter().chain(&main.error_samples).take(3) {
        report.problems.push(format!("e.g. {sample}"));
    }
    report.details = json!({"plan_id": plan_id, "measure": main, "steps": steps});
    Ok(report)
}

/// Queued run to running on an idle worker: async executions one at a time with a pause
/// between them, then each run's `started_at - created_at` from the database.
pub(crate) fn dispatch(
    ctx: &Ctx,
    server: &Server,
    db: &Database,
    worker: &str,
) -> Result<ScenarioReport> {
    let backend = db.backend();
    let id = match (backend, worker) {
        (Backend::Sqlite, _) => "dispatch-sqlite".to_owned(),
        (Backend::Postgres, "embedded") => "dispatch-postgres".to_owned(),
        (Backend::Postgres, _) => "dispatch-postgres-worker".to_owned(),
    };
    let mut report = ScenarioReport::new(
        &id,
        &format!(
            "queued run to running on an idle worker, {}, {worker}",
            backend.label()
        ),
    );
    let api = server.api().clone();
    let plan_id = create_plan(ctx, &api, "bench dispatch", &plans::light())?;
    let n = ctx.sizes.dispatch_runs;
    let gap = ctx.sizes.dispatch_gap;
    let (sent, failures) = ctx.rt.block_on(async {
        let mut conn = Conn::new(api.addr());
        let mut failures = Vec::new();
        for i in 0..n {
            let bytes = api.execute(&plan_id, &json!(i), true);
            match conn.send(&bytes).await {
                Ok(response) => {
                    if let Err(e) = Api::queued_run_id(&response) {
                        failures.push(e);
                    }
                }
                Err(e) => failures.push(format!("transport: {e}")),
            }
            tokio::time::sleep(gap).await;
        }
        (n, failures)
    });
    let runs = wait_finished(db, &plan_id, n, ctx.sizes.finish_timeout)?;
    let mut lags = Samples::default();
    for ms in db.numbers(&format!(
        "SELECT {} FROM runs WHERE {} AND started_at IS NOT NULL",
        db.ms_between("created_at", "started_at"),
        plan_filter(&plan_id)
    ))? {
        lags.push_ms(ms);
    }
    let lag = lags.summary();
    let judge = ctx.sizes.judge;
    report.figures = vec![
        Figure::new(
            "dispatch p50",
            "ms",
            lag.p50_ms,
            Some(Target::AtMost(5.0)),
            judge,
        ),
        Figure::new(
            "dispatch p99",
            "ms",
            lag.p99_ms,
            Some(Target::AtMost(20.0)),
            judge,
        ),
        Figure::info("dispatch max", "ms", lag.max_ms),
    ];
    report.set_counters(Counters {
        runs_requested: sent,
        runs_recorded: runs.succeeded,
        sink_calls: None,
        duplicates: runs.total.saturating_sub(sent),
        errors: failures.len() as u64 + (runs.total - runs.succeeded),
    });
    for sample in failures.iter().take(3) {
        report.problems.push(format!("e.g. {sample}"));
    }
    report.details =
        json!({"plan_id": plan_id, "runs": n, "gap_ms": gap.as_millis() as u64, "lag": lag});
    Ok(report)
}

/// Seconds since the Unix epoch.
fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// A UTC instant as `YYYY-MM-DD HH:MM:SS` (how both backends compare timestamps).
pub(crate) fn utc_text(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// A 6-field cron expression (seconds first) firing daily at `secs`'s UTC time of day.
pub(crate) fn daily_cron_at(secs: u64) -> String {
    let rem = secs % 86_400;
    format!("{} {} {} * * *", rem % 60, rem % 3600 / 60, rem / 3600)
}

/// Many schedules due on the same second, fired by standalone workers: every tick exactly one
/// run, and the lag from the due second to the run's creation.
pub(crate) fn schedules(
    ctx: &Ctx,
    server: &Server,
    db: &Database,
    n: u64,
    workers: usize,
) -> Result<ScenarioReport> {
    let mut report = ScenarioReport::new(
        "schedules-postgres",
        &format!(
            "{n} schedules due on the same second, {workers} pilot-workers, {}",
            db.backend().label()
        ),
    );
    let api = server.api().clone();
    let clients = 16;
    let started = Instant::now();
    let (ids, created) = create_plans(ctx, &api, n, clients)?;
    // Scheduling a plan costs more than creating it (measured: about 2.5 times): leave room
    // for that and a margin, so every schedule is saved before its fire time.
    let lead = (created.seconds * 4.0 + 5.0).max(4.0);
    let fire = (now_secs() + lead).ceil() as u64;
    let cron = daily_cron_at(fire);
    let scheduled = schedule_plans(ctx, &api, ids, &cron, clients);
    let setup_seconds = started.elapsed().as_secs_f64();
    let setup_left = fire as f64 - now_secs();
    if setup_left < 0.5 {
        report.problems.push(format!(
            "setting up took too long: the last schedule was saved {:.1} s before its fire time \
             (at least 0.5 s needed)",
            setup_left
        ));
    }
    // Wait for the fire time, then for every run to finish.
    let wait_until = fire as f64 + if ctx.sizes.judge { 180.0 } else { 30.0 };
    let fire_text = utc_text(fire);
    let mut finished_at = None;
    loop {
        let done = db.count("SELECT count(*) FROM runs WHERE schedule_id IS NOT NULL AND status NOT IN ('queued', 'running')")?;
        if done >= n {
            finished_at = Some(now_secs());
            break;
        }
        if now_secs() > wait_until {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let total = db.count("SELECT count(*) FROM runs WHERE schedule_id IS NOT NULL")?;
    let distinct =
        db.count("SELECT count(DISTINCT schedule_id) FROM runs WHERE schedule_id IS NOT NULL")?;
    let succeeded = db.count(
        "SELECT count(*) FROM runs WHERE schedule_id IS NOT NULL AND status = 'succeeded'",
    )?;
    let off_tick = db.count(&format!(
        "SELECT count(*) FROM runs WHERE schedule_id IS NOT NULL AND scheduled_for <> '{fire_text}'"
    ))?;
    let not_advanced = db.count(&format!(
        "SELECT count(*) FROM schedules WHERE enabled AND (next_run_at IS NULL OR next_run_at <= '{fire_text}')"
    ))?;
    let mut lags = Samples::default();
    for ms in db.numbers(&format!(
        "SELECT {} FROM runs WHERE schedule_id IS NOT NULL",
        db.ms_between("scheduled_for", "created_at")
    ))? {
        lags.push_ms(ms);
    }
    let lag = lags.summary();
    let drained = db.number(&format!(
        "SELECT max({}) FROM runs WHERE schedule_id IS NOT NULL",
        db.ms_between("scheduled_for", "finished_at")
    ))?;
    let judge = ctx.sizes.judge;
    report.figures = vec![
        Figure::new(
            "runs per tick",
            "",
            distinct as f64,
            Some(Target::AtLeast(n as f64)),
            judge,
        ),
        Figure::info("fire lag p50", "ms", lag.p50_ms),
        Figure::new(
            "fire lag p99",
            "ms",
            lag.p99_ms,
            Some(Target::AtMost(1000.0)),
            judge,
        ),
        Figure::info("fire lag max", "ms", lag.max_ms),
        Figure::info("all runs finished after", "s", drained / 1000.0),
    ];
    report.set_counters(Counters {
        runs_requested: n,
        runs_recorded: succeeded,
        sink_calls: None,
        duplicates: total - distinct,
        errors: created.errors + scheduled.errors + (total - succeeded) + off_tick + not_advanced,
    });
    if off_tick > 0 {
        report.problems.push(format!(
            "{off_tick} runs are for another tick than {fire_text}"
        ));
    }
    if not_advanced > 0 {
        report.problems.push(format!(
            "{not_advanced} schedules did not move past {fire_text}"
        ));
    }
    if finished_at.is_none() {
        report
            .problems
            .push("not every run finished in time".to_owned());
    }
    for sample in scheduled.error_samples.iter().take(3) {
        report.problems.push(format!("e.g. {sample}"));
    }
    report.details = json!({
        "fire_at": fire_text, "create": created, "schedule": scheduled,
        "setup_seconds": setup_seconds,
        "lag": lag,
    });
    Ok(report)
}

/// An idle server with many enabled schedules (none due): database queries per second and
/// memory.
pub(crate) fn idle(
    ctx: &Ctx,
    server: &Server,
    db: &Database,
    pg: Option<&Postgres>,
) -> Result<ScenarioReport> {
    let backend = db.backend();
    let n = ctx.sizes.idle_schedules;
    let id = match backend {
        Backend::Sqlite => "idle-sqlite",
        Backend::Postgres => "idle-postgres",
    };
    let mut report = ScenarioReport::new(
        id,
        &format!(
            "idle server with {n} enabled schedules, {}",
            backend.label()
        ),
    );
    let api = server.api().clone();
    let (ids, created) = create_plans(ctx, &api, n, 8)?;
    // Yearly: nothing becomes due while the server is watched.
    let scheduled = schedule_plans(ctx, &api, ids, "0 0 1 1 *", 8);
    std::thread::sleep(ctx.sizes.idle_settle);
    let pid = server.pid();
    let window = ctx.sizes.idle_window;
    let tx_before = match (pg, db.pg_name()) {
        (Some(pg), Some(name)) => Some(pg.transactions(name)?),
        _ => None,
    };
    let switches_before = system::context_switches(pid);
    let t0 = Instant::now();
    std::thread::sleep(window);
    let seconds = t0.elapsed().as_secs_f64();
    let switches_after = system::context_switches(pid);
    let tx_after = match (pg, db.pg_name()) {
        (Some(pg), Some(name)) => Some(pg.transactions(name)?),
        _ => None,
    };
    let rss_mb = system::rss_kib(pid).map(|kib| kib as f64 / 1024.0);
    let judge = ctx.sizes.judge;
    if let (Some(a), Some(b)) = (tx_before, tx_after) {
        report.figures.push(Figure::new(
            "database transactions/s",
            "",
            b.saturating_sub(a) as f64 / seconds,
            Some(Target::AtMost(1.0)),
            judge,
        ));
    }
    match rss_mb {
        Some(mb) => report.figures.push(Figure::new(
            "RSS",
            "MB",
            mb,
            Some(Target::AtMost(30.0)),
            judge,
        )),
        None => report.problems.push(format!(
            "cannot read the server's RSS from /proc/{pid}/status"
        )),
    }
    if let (Some(a), Some(b)) = (switches_before, switches_after) {
        report.figures.push(Figure::info(
            "thread wake-ups/s",
            "",
            b.saturating_sub(a) as f64 / seconds,
        ));
    }
    let enabled = db.count("SELECT count(*) FROM schedules WHERE enabled")?;
    let fired = db.count("SELECT count(*) FROM runs")?;
    report.set_counters(Counters {
        runs_requested: n,
        runs_recorded: enabled,
        sink_calls: None,
        duplicates: 0,
        errors: created.errors + scheduled.errors + fired,
    });
    if fired > 0 {
        report
            .problems
            .push(format!("{fired} runs were created while nothing was due"));
    }
    report.details = json!({
        "schedules": n, "window_seconds": seconds,
        "note": "runs requested/recorded count schedules created/enabled here",
    });
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_text_and_cron_name_the_same_second() {
        let check = |secs: u64, text: &str, cron: &str| {
            assert_eq!(utc_text(secs), text, "{secs}");
            assert_eq!(daily_cron_at(secs), cron, "{secs}");
        };
        check(0, "1970-01-01 00:00:00", "0 0 0 * * *");
        check(951_782_400, "2000-02-29 00:00:00", "0 0 0 * * *");
        check(1_764_135_045, "2025-11-26 05:30:45", "45 30 5 * * *");
        check(4_102_444_799, "2099-12-31 23:59:59", "59 59 23 * * *");
    }
}
