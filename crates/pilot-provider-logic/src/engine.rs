//! The public face of the evaluator: [`JqEngine`], a cheap-to-clone handle that compiles and
//! runs jq expressions on the bounded evaluation threads, and its [`Evaluator`] implementation
//! for `when` conditions.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pilot_registry::Evaluator;
use serde_json::Value;

use crate::eval::Outputs;
use crate::pool::{Job, JobState, Pool, Reply, Task};
use crate::{JqError, JqLimits};

/// How long after its deadline a caller still waits for the evaluation thread's own answer
/// (which is a clearer error) before giving up on it.
const GRACE: Duration = Duration::from_millis(100);

/// A bounded jq evaluator (jaq, without access to the process environment).
///
/// Clones share the evaluation threads and the cache of compiled expressions.
#[derive(Clone)]
pub struct JqEngine {
    pool: Arc<Pool>,
}

impl std::fmt::Debug for JqEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JqEngine")
            .field("limits", self.pool.limits())
            .finish_non_exhaustive()
    }
}

impl Default for JqEngine {
    fn default() -> Self {
        Self::new(JqLimits::default())
    }
}

impl JqEngine {
    /// An engine with these limits. Threads are started on first use.
    pub fn new(limits: JqLimits) -> Self {
        Self {
            pool: Arc::new(Pool::new(limits)),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &JqLimits {
        self.pool.limits()
    }

    /// Checks that `expr` compiles, without running it. Blocks the calling thread while an
    /// evaluation thread compiles it (about a millisecond; longer only when every thread is
    /// busy). Inside a multi-threaded Tokio runtime the wait is announced with
    /// `block_in_place`, so other tasks move to other threads meanwhile.
    pub fn check(&self, expr: &str) -> Result<(), JqError> {
        self.wait(expr, Task::Check, self.limits().timeout)
            .map(drop)
    }

    /// Runs `expr` over `input` and returns its first output, or null when it has none.
    pub async fn first(&self, expr: &str, input: Value) -> Result<Value, JqError> {
        let outputs = self
            .run(expr, input, Outputs::First, self.limits().timeout)
            .await?;
        Ok(outputs.into_iter().next().unwrap_or(Value::Null))
    }

    /// Runs `expr` over `input` and returns its only output, null when it has none, and an
    /// error when it has more than one.
    pub async fn single(&self, expr: &str, input: Value) -> Result<Value, JqError> {
        self.single_within(expr, input, self.limits().timeout).await
    }

    /// [`single`](Self::single) with a shorter time budget (never a longer one than the
    /// engine's limit).
    pub async fn single_within(
        &self,
        expr: &str,
        input: Value,
        timeout: Duration,
    ) -> Result<Value, JqError> {
        let outputs = self.run(expr, input, Outputs::Single, timeout).await?;
        Ok(outputs.into_iter().next().unwrap_or(Value::Null))
    }

    /// Runs `expr` over `input` and returns all its outputs.
    pub async fn all(&self, expr: &str, input: Value) -> Result<Vec<Value>, JqError> {
        self.all_within(expr, input, self.limits().timeout).await
    }

    /// [`all`](Self::all) with a shorter time budget (never a longer one than the engine's
    /// limit).
    pub async fn all_within(
        &self,
        expr: &str,
        input: Value,
        timeout: Duration,
    ) -> Result<Vec<Value>, JqError> {
        self.run(expr, input, Outputs::All, timeout).await
    }

    /// Runs `expr` over `input` and returns all its outputs, blocking the calling thread (for
    /// use outside an async runtime).
    pub fn all_blocking(&self, expr: &str, input: Value) -> Result<Vec<Value>, JqError> {
        self.wait(expr, Task::Run(input, Outputs::All), self.limits().timeout)
    }

    fn job(
        &self,
        expr: &str,
        task: Task,
        timeout: Duration,
        reply: Reply,
    ) -> Result<(Instant, Arc<JobState>), JqError> {
        let timeout = timeout.min(self.limits().timeout);
        let deadline = Instant::now() + timeout;
        let state = Arc::new(JobState::default());
        let job = Job {
            expr: expr.to_owned(),
            task,
            deadline,
            timeout,
            state: state.clone(),
            reply,
        };
        self.pool.submit(job)?;
        Ok((deadline, state))
    }

    async fn run(
        &self,
        expr: &str,
        input: Value,
        outputs: Outputs,
        timeout: Duration,
    ) -> Result<Vec<Value>, JqError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (deadline, state) =
            self.job(expr, Task::Run(input, outputs), timeout, Reply::Async(tx))?;
        let waited = tokio::time::timeout_at((deadline + GRACE).into(), rx).await;
        match waited {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(JqError::Internal(
                "the evaluation thread ended without an answer".into(),
            )),
            Err(_) => Err(give_up(&state, timeout.min(self.limits().timeout))),
        }
    }

    fn wait(&self, expr: &str, task: Task, timeout: Duration) -> Result<Vec<Value>, JqError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let (deadline, state) = self.job(expr, task, timeout, Reply::Blocking(tx))?;
        let receive =
            || rx.recv_timeout((deadline + GRACE).saturating_duration_since(Instant::now()));
        let received = match tokio::runtime::Handle::try_current() {
            Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(receive)
            }
            _ => receive(),
        };
        match received {
            Ok(result) => result,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                Err(give_up(&state, timeout.min(self.limits().timeout)))
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Err(JqError::Internal(
                "the evaluation thread ended without an answer".into(),
            )),
        }
    }
}

/// The caller stops waiting: the job is cancelled (the thread stops it at its next check),
/// and the error says whether it ever started.
fn give_up(state: &JobState, timeout: Duration) -> JqError {
    state.cancel.store(true, Ordering::SeqCst);
    if state.started.load(Ordering::SeqCst) {
        JqError::Timeout(timeout)
    } else {
        JqError::Busy(timeout)
    }
}

/// `when` conditions: jq over `{input, steps}`, first output or null.
#[async_trait]
impl Evaluator for JqEngine {
    fn check(&self, expr: &str) -> Result<(), String> {
        JqEngine::check(self, expr).map_err(|e| e.to_string())
    }

    async fn eval(&self, expr: &str, input: Value) -> Result<Value, String> {
        self.first(expr, input).await.map_err(|e| e.to_string())
    }
}
