//! Helpers of the multi-process tests: real `pilot-worker` processes against a fresh PostgreSQL
//! database, signals sent with `kill(1)`, and (from `pilot_scheduler::testing`, shared with the
//! scheduler's tests) plans whose steps call a local fake server and waiting for the database
//! to reach a state. A worker's log goes to a file that is printed when the test fails.

use std::io::Read as _;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use pilot_core::{RunId, UserId};
pub(crate) use pilot_scheduler::testing::{plan, post_step, run, runs_of, user, wait_for};
use pilot_storage::testing::TestDb;
use pilot_storage::{Database, Keyring, LogFilter, PageRequest};

/// A fresh PostgreSQL database, or `None` (with a loud SKIPPED line) when
/// `PILOT_TEST_POSTGRES_URL` is not set; under `CI=true` a missing URL fails instead.
pub(crate) async fn postgres() -> Option<TestDb> {
    TestDb::postgres().await
}

/// A `pilot-worker` child process; killed (SIGKILL) when dropped.
pub(crate) struct WorkerProcess {
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl WorkerProcess {
    /// Starts `pilot-worker` on the test database with 2 s leases, a 500 ms idle poll, no
    /// metrics listener, and `extra` arguments.
    pub(crate) fn start(t: &TestDb, name: &str, extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join(format!("{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_pilot-worker"));
        command
            .env_clear()
            .env("PILOT_DATABASE_URL", t.url())
            .env("PILOT_MASTER_KEY", Keyring::generate_key_base64().unwrap())
            .env("PILOT_OUTBOUND_ALLOW", "127.0.0.1/32")
            .env("PILOT_DATA_DIR", dir.path())
            .env("PILOT_LOG", "info,pilot_scheduler=debug")
            .args([
                "--name",
                name,
                "--lease-ttl",
                "2s",
                "--idle-poll",
                "500ms",
                "--metrics-bind",
                "off",
            ])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file);
        let child = command.spawn().unwrap();
        Self {
            child,
            log,
            _dir: dir,
        }
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (`KILL`, `STOP`, `CONT`, `TERM`).
    pub(crate) fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Whether the process is still running.
    pub(crate) fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Waits for the process to exit, failing after `limit`.
    pub(crate) async fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the worker did not exit within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The worker's log so far.
    pub(crate) fn log(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = std::fs::File::open(&self.log) {
            let _ = file.read_to_string(&mut text);
        }
        text
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- log of {} ----\n{}", self.log.display(), self.log());
        }
    }
}

/// How many execution-log rows the run has.
pub(crate) async fn log_count(db: &Database, user: &UserId, id: &RunId) -> usize {
    let filter = LogFilter {
        plan_id: None,
        run_id: Some(id.clone()),
    };
    db.list_logs(user, &filter, &PageRequest::first(500))
        .await
        .unwrap()
        .items
        .len()
}
