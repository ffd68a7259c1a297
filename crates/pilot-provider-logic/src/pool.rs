//! The evaluation threads and the cache of compiled expressions.
//!
//! Every parse, compile and evaluation runs on one of at most `workers` dedicated threads,
//! each with a stack of `stack_bytes` (jaq recurses on the native stack; the budget stops an
//! evaluation at half of it, see `budget.rs`). Threads are started on demand and live until
//! the last [`JqEngine`](crate::JqEngine) handle is dropped and the queue empties.
//!
//! A caller that gives up (its deadline passed) sets the job's cancel flag; the evaluation
//! sees it within a few thousand steps and stops. An evaluation stuck inside a single native
//! operation cannot see it: its thread is then abandoned to finish on its own, but it stays
//! one of the `workers` threads, so runaway evaluations can never hold more threads than that;
//! meanwhile other jobs wait in the queue, and give up with [`JqError::Busy`] when their own
//! deadline passes before a thread is free.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::budget::Budget;
use crate::compile::{Filter, compile};
use crate::eval::{Outputs, evaluate};
use crate::{JqError, JqLimits};

/// What a job asks for.
pub(crate) enum Task {
    /// Compile only.
    Check,
    /// Compile and run over the input.
    Run(Value, Outputs),
}

/// Where the answer goes.
pub(crate) enum Reply {
    Async(tokio::sync::oneshot::Sender<Result<Vec<Value>, JqError>>),
    Blocking(mpsc::SyncSender<Result<Vec<Value>, JqError>>),
}

impl Reply {
    fn send(self, result: Result<Vec<Value>, JqError>) {
        // The caller may have given up already; then nobody needs the answer.
        match self {
            Self::Async(tx) => drop(tx.send(result)),
            Self::Blocking(tx) => drop(tx.send(result)),
        }
    }
}

/// What the caller and the evaluation thread share about one job.
#[derive(Default)]
pub(crate) struct JobState {
    pub(crate) started: AtomicBool,
    pub(crate) cancel: Arc<AtomicBool>,
}

pub(crate) struct Job {
    pub(crate) expr: String,
    pub(crate) task: Task,
    pub(crate) deadline: Instant,
    /// The time budget the deadline came from (for error messages).
    pub(crate) timeout: Duration,
    pub(crate) state: Arc<JobState>,
    pub(crate) reply: Reply,
}

/// The queue, the threads serving it, and the cache.
pub(crate) struct Pool {
    limits: Arc<JqLimits>,
    sender: mpsc::Sender<Job>,
    receiver: Arc<Mutex<mpsc::Receiver<Job>>>,
    cache: Arc<Cache>,
    /// Threads started and still running.
    threads: Arc<AtomicUsize>,
    /// Jobs submitted and not yet finished.
    load: Arc<AtomicUsize>,
}

impl Pool {
    pub(crate) fn new(mut limits: JqLimits) -> Self {
        // Parsing is not interrupted by the budget, and jaq's parser recurses once per nesting
        // level: a debug build needs up to about 8 KiB of stack per byte of the longest
        // accepted expression (measured with 8000 nested unary minus signs).
        limits.stack_bytes = limits
            .stack_bytes
            .max(limits.max_expression_bytes.saturating_mul(8 << 10));
        let (sender, receiver) = mpsc::channel();
        Self {
            cache: Arc::new(Cache::new(limits.cache_entries)),
            limits: Arc::new(limits),
            sender,
            receiver: Arc::new(Mutex::new(receiver)),
            threads: Arc::new(AtomicUsize::new(0)),
            load: Arc::new(AtomicUsize::new(0)),
        }
    }

    pub(crate) fn limits(&self) -> &JqLimits {
        &self.limits
    }

    /// Queues a job, starting a thread when every running one is taken.
    pub(crate) fn submit(&self, job: Job) -> Result<(), JqError> {
        let load = self.load.fetch_add(1, Ordering::SeqCst) + 1;
        if load > self.threads.load(Ordering::SeqCst) {
            self.spawn();
        }
        if self.threads.load(Ordering::SeqCst) == 0 {
            self.load.fetch_sub(1, Ordering::SeqCst);
            return Err(JqError::Internal(
                "no evaluation thread could be started".into(),
            ));
        }
        if self.sender.send(job).is_err() {
            self.load.fetch_sub(1, Ordering::SeqCst);
            return Err(JqError::Internal(
                "every evaluation thread has ended".into(),
            ));
        }
        Ok(())
    }

    fn spawn(&self) {
        let running = self.threads.fetch_add(1, Ordering::SeqCst);
        if running >= self.limits.workers.max(1) {
            self.threads.fetch_sub(1, Ordering::SeqCst);
            return;
        }
        let worker = Worker {
            limits: self.limits.clone(),
            receiver: self.receiver.clone(),
            cache: self.cache.clone(),
            threads: self.threads.clone(),
            load: self.load.clone(),
        };
        let spawned = std::thread::Builder::new()
            .name("pilot-jq".into())
            .stack_size(self.limits.stack_bytes)
            .spawn(move || worker.serve());
        if spawned.is_err() {
            self.threads.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// One evaluation thread.
struct Worker {
    limits: Arc<JqLimits>,
    receiver: Arc<Mutex<mpsc::Receiver<Job>>>,
    cache: Arc<Cache>,
    threads: Arc<AtomicUsize>,
    load: Arc<AtomicUsize>,
}

impl Worker {
    fn serve(self) {
        // The top of this thread's stack, as the budget measures it.
        let marker = 0u8;
        let stack_base = (&raw const marker).addr();
        loop {
            let job = self
                .receiver
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .recv();
            // The queue closes when the last engine handle is dropped.
            let Ok(job) = job else { break };
            let Job {
                expr,
                task,
                deadline,
                timeout,
                state,
                reply,
            } = job;
            reply.send(self.run(&expr, task, (deadline, timeout), &state, stack_base));
            self.load.fetch_sub(1, Ordering::SeqCst);
        }
        self.threads.fetch_sub(1, Ordering::SeqCst);
    }

    fn run(
        &self,
        expr: &str,
        task: Task,
        (deadline, timeout): (Instant, Duration),
        state: &JobState,
        stack_base: usize,
    ) -> Result<Vec<Value>, JqError> {
        if state.cancel.load(Ordering::SeqCst) || Instant::now() >= deadline {
            return Err(JqError::Busy(timeout));
        }
        state.started.store(true, Ordering::SeqCst);
        let filter = self.cache.get_or_compile(expr, || {
            catch_unwind(AssertUnwindSafe(|| compile(expr, &self.limits)))
                .unwrap_or_else(|_| Err(JqError::Internal("the jq compiler panicked".into())))
        });
        let filter = filter.as_ref().as_ref().map_err(Clone::clone)?;
        match task {
            Task::Check => Ok(Vec::new()),
            Task::Run(input, outputs) => {
                let budget = Budget::new(&self.limits, deadline, state.cancel.clone(), stack_base);
                evaluate(filter, input, outputs, &budget, &self.limits, timeout)
            }
        }
    }
}

type Compiled = Arc<Result<Filter, JqError>>;

/// Compiled expressions by their text, at most `capacity` of them; the least recently used
/// one makes room for a new one.
struct Cache {
    entries: Mutex<HashMap<String, (Compiled, u64)>>,
    clock: AtomicU64,
    capacity: usize,
}

impl Cache {
    fn new(capacity: usize) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            clock: AtomicU64::new(0),
            capacity,
        }
    }

    fn get_or_compile(
        &self,
        expr: &str,
        compile: impl FnOnce() -> Result<Filter, JqError>,
    ) -> Compiled {
        let now = self.clock.fetch_add(1, Ordering::Relaxed);
        if let Some((compiled, used)) = self
            .entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(expr)
        {
            *used = now;
            return compiled.clone();
        }
        let compiled = Arc::new(compile());
        if self.capacity == 0 || matches!(*compiled, Err(JqError::Internal(_))) {
            return compiled;
        }
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= self.capacity {
            let oldest = entries
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                entries.remove(&oldest);
            }
        }
        entries.insert(expr.to_owned(), (compiled.clone(), now));
        compiled
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    #[test]
    fn cache_compiles_once_and_evicts_the_least_recently_used() {
        let cache = Cache::new(2);
        let limits = JqLimits::default();
        let compiles = Cell::new(0);
        let get = |expr: &str| {
            cache.get_or_compile(expr, || {
                compiles.set(compiles.get() + 1);
                compile(expr, &limits)
            })
        };
        assert!(get(".").is_ok());
        assert!(get(".").is_ok());
        assert_eq!(compiles.get(), 1);
        get(".a");
        get(".");
        get(".b"); // Evicts `.a`, the least recently used.
        assert_eq!(compiles.get(), 3);
        get(".");
        assert_eq!(compiles.get(), 3);
        get(".a");
        assert_eq!(compiles.get(), 4);
        // Failures are remembered too.
        assert!(get("1 +").is_err());
        assert!(get("1 +").is_err());
        assert_eq!(compiles.get(), 5);
    }
}
