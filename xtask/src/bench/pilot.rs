//! Everything the benchmark knows about Pilot itself, in one place: how to build and start
//! `pilot-server` and `pilot-worker` (flags, environment, the line that says it is ready, where
//! the first admin token is), the API calls it makes, and the plans it runs. When the API or the
//! binaries change, this file is the one to adapt.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use super::db::{Backend, Database};
use super::http::{self, Conn, Response};

/// A fixed master key for PostgreSQL runs (base64 of 32 bytes). Benchmark data only.
const BENCH_MASTER_KEY: &str = "YmVuY2htYXJrLWtleS1ub3QtYS1zZWNyZXQtMzJieXQ=";

/// The server prints this, followed by its address, when it accepts requests.
const READY_LINE: &str = "listening on http://";
/// The worker logs this when it starts its loop.
const WORKER_READY: &str = "pilot-worker starting";
/// The first start writes the admin's token to this file in the data directory.
const ADMIN_TOKEN_FILE: &str = "admin-token";

/// The text before the path of the admin token file in the first start's output.
const TOKEN_LINE: &str = "its API token is in ";

/// The address in the server's "listening" line.
fn listening_addr(line: &str) -> Option<SocketAddr> {
    let at = line.find(READY_LINE)?;
    line[at + READY_LINE.len()..].trim().parse().ok()
}

/// The admin token file named in the first start's output.
fn token_file_in(line: &str) -> Option<PathBuf> {
    let at = line.find(TOKEN_LINE)?;
    Some(PathBuf::from(line[at + TOKEN_LINE.len()..].trim()))
}

/// The two binaries under test.
#[derive(Debug, Clone)]
pub(crate) struct Binaries {
    pub(crate) server: PathBuf,
    pub(crate) worker: PathBuf,
    /// `release` or `debug`.
    pub(crate) profile: &'static str,
}

/// Builds both binaries (release, or the debug build for `--quick`) and returns their paths.
pub(crate) fn build(root: &Path, target_dir: &Path, release: bool, skip: bool) -> Result<Binaries> {
    let profile = if release { "release" } else { "debug" };
    if !skip {
        let mut cmd = Command::new("cargo");
        cmd.current_dir(root).args([
            "build",
            "--quiet",
            "-p",
            "pilot-server",
            "-p",
            "pilot-worker",
        ]);
        if release {
            cmd.arg("--release");
        }
        let status = cmd.status().context("running cargo build")?;
        if !status.success() {
            bail!("cargo build of pilot-server and pilot-worker ({profile}) failed");
        }
    }
    let bins = Binaries {
        server: target_dir.join(profile).join("pilot-server"),
        worker: target_dir.join(profile).join("pilot-worker"),
        profile,
    };
    for bin in [&bins.server, &bins.worker] {
        if !bin.exists() {
            bail!(
                "{} does not exist (build it, or drop --no-build)",
                bin.display()
            );
        }
    }
    Ok(bins)
}

/// A child process whose output goes to a log file, line by line, and to a channel while the
/// harness waits for it to be ready.
struct Proc {
    child: Child,
    log: PathBuf,
    /// Output lines until the process is ready; dropped then, so lines go to the log only.
    lines: Option<mpsc::Receiver<String>>,
}

impl Proc {
    fn spawn(mut cmd: Command, log: PathBuf) -> Result<Proc> {
        // The harness's own PILOT_* settings must not leak into what it measures; only what
        // the harness set for this process applies.
        let set: Vec<std::ffi::OsString> = cmd.get_envs().map(|(k, _)| k.to_owned()).collect();
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("PILOT_") && !set.contains(&key) {
                cmd.env_remove(&key);
            }
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {:?}", cmd.get_program()))?;
        let file =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let (tx, lines) = mpsc::channel();
        let streams: [Box<dyn std::io::Read + Send>; 2] = [
            Box::new(child.stdout.take().context("no stdout")?),
            Box::new(child.stderr.take().context("no stderr")?),
        ];
        for stream in streams {
            let (tx, mut file) = (tx.clone(), file.try_clone()?);
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let _ = writeln!(file, "{line}");
                    let _ = tx.send(line);
                }
            });
        }
        Ok(Proc {
            child,
            log,
            lines: Some(lines),
        })
    }

    /// Waits for a line for which `ready` returns a value; later lines go to the log only.
    fn wait_for<T>(
        &mut self,
        timeout: Duration,
        mut ready: impl FnMut(&str) -> Option<T>,
    ) -> Result<T> {
        let deadline = Instant::now() + timeout;
        let lines = self.lines.take().context("already waited for readiness")?;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left.min(Duration::from_millis(200))) {
                Ok(line) => {
                    if let Some(value) = ready(&line) {
                        return Ok(value);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                // Output closed: only the exit status or the deadline can end the wait now.
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
            if let Some(status) = self.child.try_wait()? {
                // Let the output threads finish writing the log before showing its end.
                let until = Instant::now() + Duration::from_secs(2);
                while Instant::now() < until
                    && !matches!(
                        lines.recv_timeout(Duration::from_millis(50)),
                        Err(mpsc::RecvTimeoutError::Disconnected)
                    )
                {}
                bail!(
                    "exited with {status} before it was ready; its output:\n{}",
                    self.tail()
                );
            }
            if Instant::now() >= deadline {
                bail!("not ready after {timeout:?}; its output:\n{}", self.tail());
            }
        }
    }

    /// The last lines of the log, for error messages.
    fn tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then SIGKILL when it has not exited within `grace`. Under a `--wrap` command
    /// (strace, valgrind's launcher) the server may be a child of the process started: children
    /// are signalled first, so the wrapper sees its server exit and finishes its report.
    fn stop(&mut self, grace: Duration) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let deadline = Instant::now() + grace;
        let wrapped = children(self.child.id());
        for pid in &wrapped {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        while wrapped
            .iter()
            .any(|pid| Path::new(&format!("/proc/{pid}")).exists())
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        if !wrapped.is_empty() {
            // The wrapper writes its report once its server is gone: let it finish.
            let settle = (Instant::now() + Duration::from_secs(5)).min(deadline);
            while Instant::now() < settle {
                if matches!(self.child.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        for pid in children(self.child.id()) {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

/// The child processes of `pid` (from /proc; empty when there are none or it is gone).
fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for task in tasks.flatten() {
        let text = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        out.extend(
            text.split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok()),
        );
    }
    out
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(10));
    }
}

/// How a server is started.
pub(crate) struct ServerSpec<'a> {
    pub(crate) db: &'a Database,
    /// The data directory (created); also where the log goes.
    pub(crate) dir: PathBuf,
    /// Run the embedded worker.
    pub(crate) embedded_worker: bool,
    /// A command the server runs under, for profiling (`valgrind --tool=callgrind ...`).
    pub(crate) wrap: Option<&'a str>,
}

/// A running `pilot-server`.
pub(crate) struct Server {
    proc: Proc,
    api: Api,
}

impl Server {
    /// Starts a server on a free port of 127.0.0.1 and waits until it answers, with the
    /// default durability (SQLite `synchronous=FULL`) and outbound calls allowed to
    /// 127.0.0.1 (where the sink listens).
    pub(crate) fn start(bins: &Binaries, spec: &ServerSpec<'_>) -> Result<Server> {
        std::fs::create_dir_all(&spec.dir)
            .with_context(|| format!("creating {}", spec.dir.display()))?;
        let mut cmd = match spec.wrap.map(str::split_whitespace) {
            Some(mut words) => {
                let mut cmd = Command::new(words.next().unwrap_or("env"));
                cmd.args(words).arg(&bins.server);
                cmd
            }
            None => Command::new(&bins.server),
        };
        cmd.current_dir(&spec.dir)
            .env("PILOT_DATABASE_URL", spec.db.url())
            .env("PILOT_DATA_DIR", &spec.dir)
            .env("PILOT_BIND", "127.0.0.1:0")
            .env("PILOT_OUTBOUND_ALLOW", "127.0.0.1/32")
            .env("PILOT_SQLITE_SYNC", "full")
            // The load comes from one user: the per-user request budget (6,000 a minute by
            // default) would measure the throttle, not Pilot.
            .env("PILOT_REQUESTS_PER_MINUTE", "0")
            .env("PILOT_HOOK_CALLS_PER_MINUTE", "0");
        if spec.db.backend() == Backend::Postgres {
            cmd.env("PILOT_MASTER_KEY", BENCH_MASTER_KEY);
        }
        if !spec.embedded_worker {
            cmd.env("PILOT_NO_WORKER", "true");
        }
        let mut proc = Proc::spawn(cmd, spec.dir.join("server.log"))?;
        let started = (|| -> Result<Server> {
            let mut token_file = spec.dir.join(ADMIN_TOKEN_FILE);
            let addr = proc.wait_for(Duration::from_secs(120), |line| {
                if let Some(path) = token_file_in(line) {
                    token_file = path;
                }
                listening_addr(line)
            })?;
            let token = std::fs::read_to_string(&token_file)
                .with_context(|| format!("reading the admin token from {}", token_file.display()))?
                .trim()
                .to_owned();
            Ok(Server {
                proc,
                api: Api { addr, token },
            })
        })();
        started.context("pilot-server")
    }

    pub(crate) fn api(&self) -> &Api {
        &self.api
    }

    pub(crate) fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// Whether the process is still running.
    pub(crate) fn alive(&mut self) -> bool {
        self.proc.alive()
    }

    /// The server's log file.
    pub(crate) fn log(&self) -> &Path {
        &self.proc.log
    }

    /// Stops the server (SIGTERM, then SIGKILL after 15 s).
    pub(crate) fn stop(mut self) {
        self.proc.stop(Duration::from_secs(15));
    }
}

/// A running `pilot-worker`.
pub(crate) struct Worker {
    proc: Proc,
}

impl Worker {
    /// Starts a standalone worker on `db` and waits until its loop runs.
    pub(crate) fn start(bins: &Binaries, db: &Database, dir: &Path, name: &str) -> Result<Worker> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut cmd = Command::new(&bins.worker);
        cmd.current_dir(dir)
            .env("PILOT_DATABASE_URL", db.url())
            .env("PILOT_DATA_DIR", dir)
            .env("PILOT_OUTBOUND_ALLOW", "127.0.0.1/32")
            .env("PILOT_SQLITE_SYNC", "full")
            .env("PILOT_WORKER_NAME", name)
            .env("PILOT_WORKER_METRICS_BIND", "127.0.0.1:0");
        if db.backend() == Backend::Postgres {
            cmd.env("PILOT_MASTER_KEY", BENCH_MASTER_KEY);
        }
        let mut proc = Proc::spawn(cmd, dir.join(format!("{name}.log")))?;
        proc.wait_for(Duration::from_secs(60), |line| {
            line.contains(WORKER_READY).then_some(())
        })
        .with_context(|| format!("pilot-worker {name}"))?;
        Ok(Worker { proc })
    }

    /// Whether the process is still running.
    pub(crate) fn alive(&mut self) -> bool {
        self.proc.alive()
    }

    /// Stops the worker (SIGTERM; it drains; SIGKILL after 40 s).
    pub(crate) fn stop(mut self) {
        self.proc.stop(Duration::from_secs(40));
    }
}

/// The API of one server: builds request bytes (so the load generator sends them as they are)
/// and makes the few calls the setup needs.
#[derive(Debug, Clone)]
pub(crate) struct Api {
    addr: SocketAddr,
    token: String,
}

impl Api {
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A request's bytes with the bearer token.
    pub(crate) fn request(&self, method: &str, path: &str, body: Option<&Value>) -> Vec<u8> {
        let body = body.map(Value::to_string);
        http::request(
            method,
            path,
            Some(&self.token),
            body.as_deref().map(str::as_bytes),
        )
    }

    /// `POST /api/plans`.
    pub(crate) fn create_plan(&self, name: &str, steps: &Value) -> Vec<u8> {
        self.request(
            "POST",
            "/api/plans",
            Some(&json!({"name": name, "steps": steps})),
        )
    }

    /// The plan id in a `POST /api/plans` answer.
    pub(crate) fn created_plan_id(response: &Response) -> Result<String, String> {
        if response.status != 201 && response.status != 200 {
            return Err(format!(
                "creating a plan: HTTP {}: {}",
                response.status,
                clip(&response.text())
            ));
        }
        let value: Value =
            serde_json::from_slice(&response.body).map_err(|e| format!("plan answer: {e}"))?;
        value["id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| "the plan answer has no id".to_owned())
    }

    /// `POST /api/plans/{id}/schedule` with a cron expression in UTC.
    pub(crate) fn schedule(&self, plan_id: &str, cron: &str) -> Vec<u8> {
        let body = json!({"cron": cron, "timezone": "UTC"});
        self.request(
            "POST",
            &format!("/api/plans/{plan_id}/schedule"),
            Some(&body),
        )
    }

    /// Whether a schedule answer is a success.
    pub(crate) fn scheduled(response: &Response) -> Result<(), String> {
        if (200..300).contains(&response.status) {
            Ok(())
        } else {
            Err(format!(
                "scheduling: HTTP {}: {}",
                response.status,
                clip(&response.text())
            ))
        }
    }

    /// `POST /api/execute` for a stored plan; `queued` asks for an async run (202).
    pub(crate) fn execute(&self, plan_id: &str, input: &Value, queued: bool) -> Vec<u8> {
        let mut body = json!({"plan_id": plan_id, "input": input});
        if queued {
            body["async"] = Value::Bool(true);
        }
        self.request("POST", "/api/execute", Some(&body))
    }

    /// Whether an inline execution's answer is a succeeded run. Cheap on purpose (it runs for
    /// every request of the load phase): the run's own `status` is the first one in the body.
    pub(crate) fn succeeded(response: &Response) -> Result<(), String> {
        if response.status != 200 {
            return Err(format!(
                "execute: HTTP {}: {}",
                response.status,
                clip(&response.text())
            ));
        }
        let text = std::str::from_utf8(&response.body)
            .map_err(|_| "execute: answer is not UTF-8".to_owned())?;
        match text.find("\"status\":\"") {
            Some(at) if text[at + 10..].starts_with("succeeded\"") => Ok(()),
            _ => Err(format!("execute: the run did not succeed: {}", clip(text))),
        }
    }

    /// The run id of a queued execution's answer (202).
    pub(crate) fn queued_run_id(response: &Response) -> Result<String, String> {
        if response.status != 202 {
            return Err(format!(
                "execute async: HTTP {}: {}",
                response.status,
                clip(&response.text())
            ));
        }
        let value: Value =
            serde_json::from_slice(&response.body).map_err(|e| format!("execute answer: {e}"))?;
        value["run_id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| "the 202 answer has no run_id".to_owned())
    }

    /// Sends one request on `conn`.
    pub(crate) async fn send(&self, conn: &mut Conn, bytes: &[u8]) -> Result<Response> {
        conn.send(bytes)
            .await
            .with_context(|| format!("calling the server at {}", self.addr))
    }
}

/// The start of a long text, for error messages.
fn clip(text: &str) -> String {
    let mut end = text.len().min(300);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// The plans the scenarios run.
pub(crate) mod plans {
    use serde_json::{Value, json};

    /// The issue's 3-step plan: a jq transform of the input, a string template, and a webhook
    /// POST of both to the sink.
    pub(crate) fn three_step(sink_url: &str) -> Value {
        json!([
            {"id": "shape", "provider": "logic", "action": "transform",
             "params": {"expression": "{order: .order, total: (.qty * .price)}", "input": "${input}"}},
            {"id": "text", "provider": "logic", "action": "template",
             "params": {"template": "order ${steps.shape.output.order}: ${steps.shape.output.total}"}},
            {"id": "notify", "provider": "webhook", "action": "post",
             "params": {"url": sink_url, "body": {"text": "${steps.text.output}", "run": "${run.id}"}}}
        ])
    }

    /// The input the 3-step plan's runs get.
    pub(crate) fn three_step_input(i: u64) -> Value {
        json!({"order": i, "qty": 3, "price": 7})
    }

    /// `n` light sequential steps, each a jq transform of the previous step's output.
    pub(crate) fn chain(n: usize) -> Value {
        let steps: Vec<Value> = (0..n)
            .map(|i| {
                let input = if i == 0 {
                    "${input}".to_owned()
                } else {
                    format!("${{steps.s{}.output}}", i - 1)
                };
                json!({"id": format!("s{i}"), "provider": "logic", "action": "transform",
                       "params": {"expression": ". + 1", "input": input}})
            })
            .collect();
        Value::Array(steps)
    }

    /// One light step: what dispatch latency and schedules run.
    pub(crate) fn light() -> Value {
        json!([{"id": "one", "provider": "logic", "action": "set", "params": {"value": 1}}])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16, body: &str) -> Response {
        Response {
            status,
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn answers_are_read() {
        assert_eq!(
            Api::created_plan_id(&response(201, r#"{"id":"p1","name":"x"}"#)),
            Ok("p1".to_owned())
        );
        assert!(
            Api::created_plan_id(&response(400, r#"{"error":{}}"#))
                .unwrap_err()
                .contains("HTTP 400")
        );
        assert!(Api::created_plan_id(&response(201, "{}")).is_err());
        let ok =
            r#"{"id":"r","plan_name":"b","status":"succeeded","steps":[{"status":"succeeded"}]}"#;
        assert_eq!(Api::succeeded(&response(200, ok)), Ok(()));
        let failed = r#"{"id":"r","status":"failed","steps":[{"status":"succeeded"}]}"#;
        assert!(Api::succeeded(&response(200, failed)).is_err());
        assert!(Api::succeeded(&response(503, ok)).is_err());
        assert_eq!(
            Api::queued_run_id(&response(202, r#"{"run_id":"r9","status":"queued"}"#)),
            Ok("r9".to_owned())
        );
        assert!(Api::queued_run_id(&response(200, r#"{"run_id":"r9"}"#)).is_err());
        assert_eq!(Api::scheduled(&response(200, "{}")), Ok(()));
        assert!(Api::scheduled(&response(422, "{}")).is_err());
    }

    #[test]
    fn the_server_output_is_read() {
        let addr = listening_addr("Pilot listening on http://127.0.0.1:34163");
        assert_eq!(addr, Some("127.0.0.1:34163".parse().unwrap()));
        assert_eq!(listening_addr("Pilot listening on http://nowhere"), None);
        assert_eq!(listening_addr("serving"), None);
        let line = "First start: created the admin user; its API token is in /d/admin-token";
        assert_eq!(token_file_in(line), Some(PathBuf::from("/d/admin-token")));
        assert_eq!(token_file_in("Try: curl ..."), None);
    }

    #[test]
    fn a_process_is_awaited_and_stopped() {
        let dir = std::env::temp_dir().join(format!("xtask-bench-proc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            "echo starting; echo Pilot listening on http://127.0.0.1:9; exec sleep 60",
        ]);
        let mut proc = Proc::spawn(cmd, dir.join("p.log")).unwrap();
        let addr = proc
            .wait_for(Duration::from_secs(10), listening_addr)
            .unwrap();
        assert_eq!(addr.port(), 9);
        assert!(proc.alive());
        proc.stop(Duration::from_secs(5));
        assert!(!proc.alive());
        let log = std::fs::read_to_string(dir.join("p.log")).unwrap();
        assert!(log.contains("starting"), "{log}");
        // A process that exits before it is ready is an error that shows its output.
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo cannot open the database; exit 3"]);
        let mut proc = Proc::spawn(cmd, dir.join("q.log")).unwrap();
        let e = proc
            .wait_for(Duration::from_secs(10), listening_addr)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("before it was ready") && e.contains("cannot open the database"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn plans_have_the_shapes_the_scenarios_need() {
        let chain = plans::chain(40);
        let steps = chain.as_array().unwrap();
        assert_eq!(steps.len(), 40);
        assert_eq!(steps[0]["params"]["input"], "${input}");
        assert_eq!(steps[39]["params"]["input"], "${steps.s38.output}");
        let three = plans::three_step("http://127.0.0.1:9/hook");
        assert_eq!(three[2]["params"]["url"], "http://127.0.0.1:9/hook");
        assert_eq!(plans::light().as_array().unwrap().len(), 1);
        assert_eq!(clip(&"é".repeat(200)).len(), 300);
    }
}
