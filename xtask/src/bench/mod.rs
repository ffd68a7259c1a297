//! `cargo xtask bench`: measures Pilot against this machine's own limits.
//!
//! It builds the release binaries, starts everything it needs itself (servers on a temporary
//! SQLite file and on fresh PostgreSQL databases, standalone workers, a fast webhook sink on
//! 127.0.0.1, its own load generator), runs each scenario of the table, measures the
//! machine's limits with the same generator and databases, prints one table (figure, target,
//! measured, share of the tightest limit, pass/short) and the correctness counters, and writes
//! JSON under target/bench/.
//!
//! `--quick` runs every scenario briefly on the debug build and judges only correctness (CI
//! calls it, so the harness cannot rot); it exits non-zero when a counter is wrong. Speed
//! verdicts never change the exit status. PostgreSQL scenarios are skipped with a loud message
//! when PostgreSQL does not answer, except under `--quick` with `CI=true`, where that fails.
//!
//! Layout: [`pilot`] is the one place that knows Pilot's flags and API; [`http`], [`sink`],
//! [`load`] and [`stats`] are the generic load machinery; [`db`] reads the databases back;
//! [`limits`] measures the machine; [`scenarios`] are the rows; [`report`] prints.

mod db;
mod http;
mod limits;
mod load;
mod pilot;
mod report;
mod scenarios;
mod sink;
mod stats;
mod system;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, bail};
use serde::Serialize;

use self::db::{Backend, Database, Postgres};
use self::limits::Limit;
use self::load::Until;
use self::pilot::{Binaries, Server, ServerSpec, Worker};
use self::report::ScenarioReport;
use self::sink::Sink;

const USAGE: &str =
    "usage: cargo xtask bench [--quick] [--only ID,...] [--no-build] [--keep] [--wrap 'CMD ARGS']
  --quick      every scenario briefly on the debug build; checks correctness only
  --only       run only scenarios whose id contains one of these words
               (limits, execute-sqlite, chain-sqlite, dispatch-sqlite, idle-sqlite,
                execute-postgres, chain-postgres, dispatch-postgres, dispatch-postgres-worker,
                schedules-postgres, idle-postgres)
  --no-build   use the binaries already built
  --keep       keep the work directory and PostgreSQL databases
  --wrap       run pilot-server under a command, e.g. 'valgrind --tool=callgrind'
PostgreSQL: PILOT_BENCH_POSTGRES_URL, else PILOT_TEST_POSTGRES_URL, else
postgres://postgres@127.0.0.1:5432/test (a superuser; loopback only).";

/// The command line.
#[derive(Debug, Default)]
struct Options {
    quick: bool,
    build: bool,
    only: Vec<String>,
    keep: bool,
    wrap: Option<String>,
}

fn parse_args(args: &[String]) -> Result<Options> {
    let mut options = Options {
        build: true,
        ..Options::default()
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => options.quick = true,
            "--no-build" => options.build = false,
            "--keep" => options.keep = true,
            "--only" => {
                let list = args.next().context("--only needs a list of scenario ids")?;
                options.only.extend(
                    list.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned),
                );
            }
            "--wrap" => options.wrap = Some(args.next().context("--wrap needs a command")?.clone()),
            "-h" | "--help" => bail!("{USAGE}"),
            other => bail!("unknown argument '{other}'\n{USAGE}"),
        }
    }
    Ok(options)
}

/// How much each scenario does: the full run's sizes, or `--quick`'s.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Sizes {
    /// Judge speed (false under `--quick`).
    pub(crate) judge: bool,
    /// Concurrent clients of the throughput scenarios.
    pub(crate) clients: usize,
    #[serde(skip)]
    pub(crate) warmup: Until,
    #[serde(skip)]
    pub(crate) measure: Until,
    pub(crate) chain_steps: usize,
    pub(crate) chain_warmup: u64,
    pub(crate) chain_runs: u64,
    pub(crate) dispatch_runs: u64,
    pub(crate) dispatch_gap: Duration,
    /// How long queued runs may take to finish before the missing ones count as lost.
    pub(crate) finish_timeout: Duration,
    pub(crate) schedules: u64,
    pub(crate) schedule_workers: usize,
    pub(crate) idle_schedules: u64,
    pub(crate) idle_settle: Duration,
    pub(crate) idle_window: Duration,
    pub(crate) limit_window: Duration,
}

impl Sizes {
    fn full() -> Sizes {
        Sizes {
            judge: true,
            clients: 32,
            warmup: Until::Time(Duration::from_secs(2)),
            measure: Until::Time(Duration::from_secs(10)),
            chain_steps: 40,
            chain_warmup: 5,
            chain_runs: 50,
            dispatch_runs: 200,
            dispatch_gap: Duration::from_millis(20),
            finish_timeout: Duration::from_secs(60),
            schedules: 10_000,
            schedule_workers: 2,
            idle_schedules: 1_000,
            // PostgreSQL backends report their statistics up to 10 s after going idle: the
            // setup's transactions must land before the window opens.
            idle_settle: Duration::from_secs(15),
            idle_window: Duration::from_secs(60),
            limit_window: Duration::from_secs(3),
        }
    }

    fn quick() -> Sizes {
        Sizes {
            judge: false,
            clients: 8,
            warmup: Until::Count(16),
            measure: Until::Count(100),
            chain_steps: 40,
            chain_warmup: 1,
            chain_runs: 3,
            dispatch_runs: 20,
            dispatch_gap: Duration::from_millis(10),
            finish_timeout: Duration::from_secs(10),
            schedules: 100,
            schedule_workers: 2,
            idle_schedules: 50,
            idle_settle: Duration::from_millis(500),
            idle_window: Duration::from_secs(2),
            limit_window: Duration::from_millis(300),
        }
    }
}

/// The machine's limits, best of the measurements.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Limits {
    pub(crate) measured: Vec<Limit>,
}

impl Limits {
    fn best(&self, prefix: &str) -> Option<f64> {
        self.measured
            .iter()
            .filter(|l| l.name.starts_with(prefix))
            .map(|l| l.per_second)
            .reduce(f64::max)
    }

    /// The tightest limit for a backend's end-to-end runs: the sink's request rate or the
    /// database's best commit rate, whichever is lower.
    pub(crate) fn tightest(&self, backend: Backend) -> Option<(String, f64)> {
        let db = match backend {
            Backend::Sqlite => ("SQLite commits/s", self.best("sqlite")),
            Backend::Postgres => ("PostgreSQL commits/s", self.best("postgres")),
        };
        let sink = ("sink req/s", self.best("sink"));
        [db, sink]
            .into_iter()
            .filter_map(|(name, v)| v.map(|v| (name.to_owned(), v)))
            .reduce(|a, b| if b.1 < a.1 { b } else { a })
    }
}

/// What every scenario shares.
pub(crate) struct Ctx {
    pub(crate) rt: tokio::runtime::Runtime,
    pub(crate) sizes: Sizes,
    pub(crate) sink: Sink,
    pub(crate) limits: Limits,
    bins: Binaries,
    work: PathBuf,
    wrap: Option<String>,
    keep: bool,
    only: Vec<String>,
}

impl Ctx {
    fn wanted(&self, id: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|w| id.contains(w.as_str()))
    }

    fn any_wanted(&self, ids: &[&str]) -> bool {
        ids.iter().any(|id| self.wanted(id))
    }

    fn server(&self, db: &Database, name: &str, embedded_worker: bool) -> Result<Server> {
        Server::start(
            &self.bins,
            &ServerSpec {
                db,
                dir: self.work.join(name),
                embedded_worker,
                wrap: self.wrap.as_deref(),
            },
        )
    }

    fn fresh_pg(&self, pg: &Postgres) -> Result<Database> {
        let mut db = pg.fresh_database()?;
        if self.keep {
            db.keep();
        }
        Ok(db)
    }
}

/// Everything written to target/bench/*.json.
#[derive(Serialize)]
struct Results<'a> {
    mode: &'static str,
    command: String,
    started_unix: u64,
    seconds: f64,
    machine: system::Machine,
    versions: serde_json::Value,
    durability: serde_json::Value,
    sizes: &'a Sizes,
    limits: &'a Limits,
    scenarios: &'a [ScenarioReport],
    correct: bool,
}

/// Entry point.
pub(crate) fn run(root: &Path, args: &[String]) -> Result<()> {
    let options = parse_args(args)?;
    let env = Environment::read();
    let started = SystemTime::now();
    let target_dir = env
        .target_dir
        .clone()
        .map(|p| if p.is_absolute() { p } else { root.join(p) })
        .unwrap_or_else(|| root.join("target"));
    let out_dir = target_dir.join("bench");
    remove_stale_work_dirs(&out_dir);
    let work = out_dir.join(format!("work-{}", std::process::id()));
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let machine = system::Machine::describe();
    let sizes = if options.quick {
        Sizes::quick()
    } else {
        Sizes::full()
    };
    let mode = if options.quick { "quick" } else { "full" };
    say(&format!(
        "bench ({mode}): building pilot-server and pilot-worker"
    ));
    let build_started = std::time::Instant::now();
    let bins = pilot::build(root, &target_dir, !options.quick, !options.build)?;
    say(&format!(
        "bench: built in {:.0} s",
        build_started.elapsed().as_secs_f64()
    ));
    let bench_started = std::time::Instant::now();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the load generator's runtime")?;
    let sink = rt.block_on(Sink::start()).context("starting the sink")?;
    let pg = postgres(&env, options.quick)?;
    let mut ctx = Ctx {
        rt,
        sizes,
        sink,
        limits: Limits::default(),
        bins,
        work: work.clone(),
        wrap: options.wrap.clone(),
        keep: options.keep,
        only: options.only.clone(),
    };

    let mut reports = Vec::new();
    measure_limits(&mut ctx, pg.as_ref(), &mut reports);
    sqlite_suite(&ctx, &mut reports);
    postgres_suite(&ctx, pg.as_ref(), &mut reports);

    let correct = reports.iter().all(ScenarioReport::correct);
    print_tables(&ctx, &reports, mode)?;
    say(&format!(
        "bench: scenarios and limits took {:.0} s (build excluded)",
        bench_started.elapsed().as_secs_f64()
    ));

    let versions = versions(root, pg.as_ref());
    let durability = durability(pg.as_ref());
    let results = Results {
        mode,
        command: format!("cargo xtask bench {}", args.join(" "))
            .trim()
            .to_owned(),
        started_unix: started
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        seconds: started.elapsed().map_or(0.0, |d| d.as_secs_f64()),
        machine,
        versions,
        durability,
        sizes: &ctx.sizes,
        limits: &ctx.limits,
        scenarios: &reports,
        correct,
    };
    let json = serde_json::to_string_pretty(&results)?;
    let partial = if options.only.is_empty() {
        ""
    } else {
        "-partial"
    };
    let file = out_dir.join(format!("{mode}{partial}-{}.json", results.started_unix));
    std::fs::write(&file, &json).with_context(|| format!("writing {}", file.display()))?;
    if partial.is_empty() {
        std::fs::write(out_dir.join(format!("latest-{mode}.json")), &json)?;
    }
    say(&format!("bench: results written to {}", file.display()));
    if !options.keep {
        let _ = std::fs::remove_dir_all(&work);
    } else {
        say(&format!("bench: work directory kept at {}", work.display()));
    }
    if !correct {
        let failed: Vec<&str> = reports
            .iter()
            .filter(|r| !r.correct())
            .map(|r| r.id.as_str())
            .collect();
        bail!("correctness failures in: {}", failed.join(", "));
    }
    Ok(())
}

/// Prints the results, the correctness counters and the limits as Markdown tables on stdout.
fn print_tables(ctx: &Ctx, reports: &[ScenarioReport], mode: &str) -> Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let profile = ctx.bins.profile;
    writeln!(
        out,
        "\n## Results ({mode}, {profile} build)\n\n{}",
        report::table(reports)
    )?;
    writeln!(out, "## Correctness\n\n{}", report::counters_table(reports))?;
    writeln!(
        out,
        "## Machine limits (same run)\n\n{}",
        limits_table(&ctx.limits)
    )?;
    Ok(())
}

/// Removes the work directories of earlier runs whose process is gone (an interrupted run
/// leaves its databases and logs behind).
fn remove_stale_work_dirs(out_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(out_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(pid) = name.strip_prefix("work-")
            && !Path::new("/proc").join(pid).exists()
        {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// A progress line on stderr.
fn say(line: &str) {
    eprintln!("{line}");
}

/// The environment the harness reads, once (xtask is a binary: this is its configuration).
struct Environment {
    target_dir: Option<PathBuf>,
    postgres_url: String,
    ci: bool,
}

impl Environment {
    #[allow(clippy::disallowed_methods)]
    fn read() -> Environment {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        Environment {
            target_dir: var("CARGO_TARGET_DIR").map(PathBuf::from),
            postgres_url: var("PILOT_BENCH_POSTGRES_URL")
                .or_else(|| var("PILOT_TEST_POSTGRES_URL"))
                .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/test".to_owned()),
            ci: var("CI").is_some_and(|v| v == "true" || v == "1"),
        }
    }
}

/// The PostgreSQL server to use, or `None` (loudly) when it does not answer.
fn postgres(env: &Environment, quick: bool) -> Result<Option<Postgres>> {
    let url = &env.postgres_url;
    let pg = Postgres::new(url)?;
    match pg.check() {
        Ok(()) => {
            let dropped = pg.drop_leftovers()?;
            if !dropped.is_empty() {
                say(&format!(
                    "bench: dropped leftovers of earlier runs: {}",
                    dropped.join(", ")
                ));
            }
            Ok(Some(pg))
        }
        Err(e) => {
            if quick && env.ci {
                bail!(
                    "PostgreSQL at {} does not answer, and CI=true: {e:#}",
                    pg.shown_url()
                );
            }
            say(&format!(
                "\n!!! PostgreSQL at {} does not answer: SKIPPING every PostgreSQL scenario !!!\n!!! ({e:#})\n",
                pg.shown_url()
            ));
            Ok(None)
        }
    }
}

/// Runs one scenario, timing it, and turns an error into a report that says so.
fn scenario(id: &str, title: &str, run: impl FnOnce() -> Result<ScenarioReport>) -> ScenarioReport {
    say(&format!("bench: {id} ..."));
    let started = std::time::Instant::now();
    let mut report = or_failed(id, title, run());
    report.seconds = started.elapsed().as_secs_f64();
    report
}

/// Turns a scenario's error into a report that says so.
fn or_failed(id: &str, title: &str, result: Result<ScenarioReport>) -> ScenarioReport {
    match result {
        Ok(report) => {
            let verdict = if report.problems.is_empty() {
                "ok"
            } else {
                "INCORRECT"
            };
            say(&format!("bench: {id}: {verdict}"));
            for f in &report.figures {
                say(&format!(
                    "    {}: {} {}",
                    f.name,
                    report::number(f.measured),
                    f.unit
                ));
            }
            for p in &report.problems {
                say(&format!("    problem: {p}"));
            }
            report
        }
        Err(e) => {
            say(&format!("bench: {id}: FAILED: {e:#}"));
            let mut report = ScenarioReport::new(id, title);
            report.problems.push(format!("harness: {e:#}"));
            report
        }
    }
}

fn skipped(id: &str, title: &str, why: &str) -> ScenarioReport {
    let mut report = ScenarioReport::new(id, title);
    report.skipped = Some(why.to_owned());
    report
}

/// The sink alone and single-row durable commits on both databases.
fn measure_limits(ctx: &mut Ctx, pg: Option<&Postgres>, reports: &mut Vec<ScenarioReport>) {
    // The throughput scenarios' shares need the limits.
    if !ctx.any_wanted(&["limits", "execute-sqlite", "execute-postgres"]) {
        return;
    }
    say("bench: measuring the machine's limits");
    let started = std::time::Instant::now();
    let window = ctx.sizes.limit_window;
    let clients = ctx.sizes.clients;
    let mut problems = Vec::new();
    let sink = ctx
        .rt
        .block_on(limits::sink_alone(&ctx.sink, clients, window));
    if sink.errors > 0 {
        problems.push(format!(
            "sink: {} errors, e.g. {:?}",
            sink.errors, sink.error_samples
        ));
    }
    ctx.limits.measured.push(Limit {
        name: format!("sink req/s, {}", clients_text(clients)),
        clients,
        per_second: sink.per_second,
    });
    let dir = ctx.work.join("limits");
    if let Err(e) = std::fs::create_dir_all(&dir) {
        problems.push(format!("creating {}: {e}", dir.display()));
    }
    for n in [1, clients] {
        match limits::sqlite_commits(&dir, n, window) {
            Ok(rate) => ctx.limits.measured.push(Limit {
                name: format!(
                    "sqlite commits/s (WAL, synchronous=FULL), {}",
                    clients_text(n)
                ),
                clients: n,
                per_second: rate,
            }),
            Err(e) => problems.push(format!("SQLite commits with {n} clients: {e:#}")),
        }
    }
    if let Some(pg) = pg {
        match ctx.fresh_pg(pg) {
            Ok(db) => {
                for n in [1, clients] {
                    match limits::postgres_commits(&db, &dir, n, window) {
                        Ok(rate) => ctx.limits.measured.push(Limit {
                            name: format!("postgres commits/s, {}", clients_text(n)),
                            clients: n,
                            per_second: rate,
                        }),
                        Err(e) => {
                            problems.push(format!("PostgreSQL commits with {n} clients: {e:#}"))
                        }
                    }
                }
            }
            Err(e) => problems.push(format!("PostgreSQL database for the commit limit: {e:#}")),
        }
    }
    for l in &ctx.limits.measured {
        say(&format!("    {}: {}", l.name, report::number(l.per_second)));
    }
    let mut report = ScenarioReport::new(
        "limits",
        "machine limits (same load generator, same databases)",
    );
    report.problems = problems;
    for p in &report.problems {
        say(&format!("    problem: {p}"));
    }
    report.details = serde_json::to_value(&ctx.limits).unwrap_or_default();
    report.seconds = started.elapsed().as_secs_f64();
    reports.push(report);
}

fn clients_text(n: usize) -> String {
    if n == 1 {
        "1 client".to_owned()
    } else {
        format!("{n} clients")
    }
}

fn limits_table(limits: &Limits) -> String {
    let mut out = String::from("| limit | per second |\n|---|---|\n");
    for l in &limits.measured {
        out.push_str(&format!(
            "| {} | {} |\n",
            l.name,
            report::number(l.per_second)
        ));
    }
    out
}

const SQLITE_IDS: [&str; 3] = ["execute-sqlite", "chain-sqlite", "dispatch-sqlite"];

/// SQLite: one server (embedded worker) for throughput, the 40-step chain and dispatch; a
/// fresh one for idle.
fn sqlite_suite(ctx: &Ctx, reports: &mut Vec<ScenarioReport>) {
    if ctx.any_wanted(&SQLITE_IDS) {
        let db = Database::sqlite(&db::sqlite_path(&ctx.work.join("sqlite"), "pilot"));
        let title = "SQLite server";
        match ctx.server(&db, "sqlite", true) {
            Ok(mut server) => {
                say(&format!(
                    "bench: SQLite server up (pid {}, log {})",
                    server.pid(),
                    server.log().display()
                ));
                if ctx.wanted("execute-sqlite") {
                    reports.push(scenario("execute-sqlite", title, || {
                        scenarios::execute(ctx, &server, &db)
                    }));
                }
                if ctx.wanted("chain-sqlite") {
                    let steps = ctx.sizes.chain_steps;
                    reports.push(scenario("chain-sqlite", title, || {
                        scenarios::chain(ctx, &server, &db, steps)
                    }));
                }
                if ctx.wanted("dispatch-sqlite") {
                    reports.push(scenario("dispatch-sqlite", title, || {
                        scenarios::dispatch(ctx, &server, &db, "embedded")
                    }));
                }
                check_alive(&mut server, reports);
                server.stop();
            }
            Err(e) => {
                for id in SQLITE_IDS.iter().filter(|id| ctx.wanted(id)) {
                    reports.push(or_failed(id, title, Err(anyhow::anyhow!("{e:#}"))));
                }
            }
        }
    }
    if ctx.wanted("idle-sqlite") {
        let db = Database::sqlite(&db::sqlite_path(&ctx.work.join("sqlite-idle"), "pilot"));
        reports.push(scenario("idle-sqlite", "idle server, SQLite", || {
            let server = ctx.server(&db, "sqlite-idle", true)?;
            idle_on(ctx, server, &db, None)
        }));
    }
}

const PG_IDS: [&str; 3] = ["execute-postgres", "chain-postgres", "dispatch-postgres"];

/// PostgreSQL: a server with its embedded worker for throughput, chain and dispatch; a server
/// without one plus standalone workers for dispatch through LISTEN/NOTIFY and the schedule
/// storm; a fresh one for idle. Each on its own fresh database.
fn postgres_suite(ctx: &Ctx, pg: Option<&Postgres>, reports: &mut Vec<ScenarioReport>) {
    let all = [
        "execute-postgres",
        "chain-postgres",
        "dispatch-postgres",
        "dispatch-postgres-worker",
        "schedules-postgres",
        "idle-postgres",
    ];
    let Some(pg) = pg else {
        for id in all.iter().filter(|id| ctx.wanted(id)) {
            reports.push(skipped(id, id, "PostgreSQL unreachable"));
        }
        return;
    };
    if PG_IDS.iter().any(|id| ctx.wanted(id)) {
        let title = "PostgreSQL server";
        let result = ctx
            .fresh_pg(pg)
            .and_then(|db| ctx.server(&db, "postgres", true).map(|s| (db, s)));
        match result {
            Ok((db, mut server)) => {
                say(&format!(
                    "bench: PostgreSQL server up (pid {}, database {})",
                    server.pid(),
                    db.pg_name().unwrap_or("")
                ));
                if ctx.wanted("execute-postgres") {
                    reports.push(scenario("execute-postgres", title, || {
                        scenarios::execute(ctx, &server, &db)
                    }));
                }
                if ctx.wanted("chain-postgres") {
                    let steps = ctx.sizes.chain_steps;
                    reports.push(scenario("chain-postgres", title, || {
                        scenarios::chain(ctx, &server, &db, steps)
                    }));
                }
                if ctx.wanted("dispatch-postgres") {
                    reports.push(scenario("dispatch-postgres", title, || {
                        scenarios::dispatch(ctx, &server, &db, "embedded")
                    }));
                }
                check_alive(&mut server, reports);
                server.stop();
                drop(db);
            }
            Err(e) => {
                for id in PG_IDS.iter().filter(|id| ctx.wanted(id)) {
                    reports.push(or_failed(id, title, Err(anyhow::anyhow!("{e:#}"))));
                }
            }
        }
    }
    if ctx.any_wanted(&["dispatch-postgres-worker", "schedules-postgres"]) {
        let title = "PostgreSQL with standalone workers";
        let n = ctx.sizes.schedule_workers;
        let result = (|| -> Result<(Database, Server, Vec<Worker>)> {
            let db = ctx.fresh_pg(pg)?;
            let server = ctx.server(&db, "postgres-workers", false)?;
            let mut workers = Vec::new();
            for i in 0..n {
                workers.push(Worker::start(
                    &ctx.bins,
                    &db,
                    &ctx.work.join("postgres-workers"),
                    &format!("worker-{i}"),
                )?);
            }
            Ok((db, server, workers))
        })();
        match result {
            Ok((db, mut server, mut workers)) => {
                say(&format!(
                    "bench: PostgreSQL server (no embedded worker) and {n} pilot-workers up"
                ));
                if ctx.wanted("dispatch-postgres-worker") {
                    reports.push(scenario("dispatch-postgres-worker", title, || {
                        scenarios::dispatch(ctx, &server, &db, &format!("{n} pilot-workers"))
                    }));
                }
                if ctx.wanted("schedules-postgres") {
                    let count = ctx.sizes.schedules;
                    reports.push(scenario("schedules-postgres", title, || {
                        scenarios::schedules(ctx, &server, &db, count, n)
                    }));
                }
                let dead = workers
                    .iter_mut()
                    .map(Worker::alive)
                    .filter(|alive| !alive)
                    .count();
                if dead > 0
                    && let Some(last) = reports.last_mut()
                {
                    last.problems
                        .push(format!("{dead} pilot-worker(s) exited during the scenario"));
                }
                check_alive(&mut server, reports);
                for w in workers {
                    w.stop();
                }
                server.stop();
                drop(db);
            }
            Err(e) => {
                for id in ["dispatch-postgres-worker", "schedules-postgres"]
                    .iter()
                    .filter(|id| ctx.wanted(id))
                {
                    reports.push(or_failed(id, title, Err(anyhow::anyhow!("{e:#}"))));
                }
            }
        }
    }
    if ctx.wanted("idle-postgres") {
        reports.push(scenario("idle-postgres", "idle server, PostgreSQL", || {
            let db = ctx.fresh_pg(pg)?;
            let server = ctx.server(&db, "postgres-idle", true)?;
            idle_on(ctx, server, &db, Some(pg))
        }));
    }
}

/// The idle scenario on its own server, which is stopped afterwards.
fn idle_on(
    ctx: &Ctx,
    mut server: Server,
    db: &Database,
    pg: Option<&Postgres>,
) -> Result<ScenarioReport> {
    let report = scenarios::idle(ctx, &server, db, pg);
    let alive = server.alive();
    server.stop();
    let mut report = report?;
    if !alive {
        report
            .problems
            .push("the server exited during the scenario".to_owned());
    }
    Ok(report)
}

/// A server that died mid-suite makes the last scenario incorrect.
fn check_alive(server: &mut Server, reports: &mut [ScenarioReport]) {
    if !server.alive()
        && let Some(last) = reports.last_mut()
    {
        last.problems
            .push(format!("the server exited; see {}", server.log().display()));
    }
}

fn versions(root: &Path, pg: Option<&Postgres>) -> serde_json::Value {
    let lock = std::fs::read_to_string(root.join("Cargo.lock")).unwrap_or_default();
    serde_json::json!({
        "pilot": env!("CARGO_PKG_VERSION"),
        "git": system::command_line("git", &["-C", &root.display().to_string(), "rev-parse", "--short", "HEAD"]),
        "rustc": system::command_line("rustc", &["--version"]),
        "sqlite_bundled_libsqlite3_sys": system::locked_version(&lock, "libsqlite3-sys"),
        "sqlite3_cli": system::command_line("sqlite3", &["--version"]),
        "postgres": pg.and_then(|pg| pg.setting("server_version").ok()),
        "actix_web": system::locked_version(&lock, "actix-web"),
        "diesel": system::locked_version(&lock, "diesel"),
        "tokio": system::locked_version(&lock, "tokio"),
    })
}

fn durability(pg: Option<&Postgres>) -> serde_json::Value {
    let setting = |name: &str| pg.and_then(|pg| pg.setting(name).ok());
    serde_json::json!({
        "sqlite": {"journal_mode": "WAL", "synchronous": "FULL (PILOT_SQLITE_SYNC=full, the default)"},
        "postgres": {
            "fsync": setting("fsync"),
            "synchronous_commit": setting("synchronous_commit"),
            "wal_sync_method": setting("wal_sync_method"),
            "full_page_writes": setting("full_page_writes"),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_parse() {
        let args = |a: &[&str]| parse_args(&a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>());
        let o = args(&["--quick", "--only", "execute,idle-sqlite", "--no-build"]).unwrap();
        assert!(o.quick && !o.build && !o.keep);
        assert_eq!(o.only, vec!["execute".to_owned(), "idle-sqlite".to_owned()]);
        assert!(args(&[]).unwrap().build);
        assert_eq!(
            args(&["--wrap", "valgrind --tool=callgrind"])
                .unwrap()
                .wrap
                .as_deref(),
            Some("valgrind --tool=callgrind")
        );
        assert!(args(&["--only"]).is_err());
        assert!(
            args(&["--fast"])
                .unwrap_err()
                .to_string()
                .contains("unknown argument")
        );
    }

    #[test]
    fn the_tightest_limit_is_the_lowest() {
        let limit = |name: &str, v: f64| Limit {
            name: name.to_owned(),
            clients: 1,
            per_second: v,
        };
        let limits = Limits {
            measured: vec![
                limit("sink req/s, 32 clients", 20_000.0),
                limit("sqlite commits/s, 1 clients", 5_000.0),
                limit("sqlite commits/s, 32 clients", 600.0),
                limit("postgres commits/s, 32 clients", 30_000.0),
            ],
        };
        assert_eq!(
            limits.tightest(Backend::Sqlite),
            Some(("SQLite commits/s".to_owned(), 5_000.0))
        );
        assert_eq!(
            limits.tightest(Backend::Postgres),
            Some(("sink req/s".to_owned(), 20_000.0))
        );
        assert_eq!(Limits::default().tightest(Backend::Sqlite), None);
    }
}
