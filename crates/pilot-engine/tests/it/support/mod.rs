//! Shared test fixtures: a scripted provider whose answers come from a queue and which records
//! what it received, a scripted `when` evaluator, and a harness wiring both into an engine over
//! a [`MemoryStore`].

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use pilot_core::{
    ActionSpec, CredentialKind, LogRecord, MemoryStore, RetryPolicy, RunId, RunSnapshot, Step,
    StepState, TriggerKind, UserId,
};
use pilot_engine::{Engine, EngineConfig, EngineParts};
use pilot_registry::{
    Evaluator, OutboundClient, OutboundConfig, Provider, ProviderContext, ProviderDescription,
    ProviderError, ProviderOutput, Registry,
};
use serde_json::{Map, Value, json};
use tokio::time::Instant;

/// The scripted provider's name and its one action.
pub(crate) const SCRIPTED: &str = "scripted";
pub(crate) const ACTION: &str = "call";

/// One scripted answer.
#[derive(Clone)]
pub(crate) enum Answer {
    /// Succeed with this output.
    Ok(Value),
    /// Succeed with output, message and metadata.
    Full(ProviderOutput),
    /// Fail with this error.
    Err(ProviderError),
    /// Wait this long (on tokio's clock), then answer.
    After(Duration, Box<Answer>),
    /// Succeed with the params received, the caller's secrets echoed by `echo`.
    Echo,
}

/// What one call received.
#[derive(Debug, Clone)]
pub(crate) struct Call {
    pub(crate) step_id: String,
    pub(crate) params: Value,
    pub(crate) idempotency_key: String,
    pub(crate) secrets: Vec<String>,
    pub(crate) timeout: Duration,
    pub(crate) at: Instant,
    pub(crate) has_store: bool,
}

/// The shared state of a scripted provider: its queue and its call record.
#[derive(Clone, Default)]
pub(crate) struct Script {
    answers: Arc<Mutex<VecDeque<Answer>>>,
    calls: Arc<Mutex<Vec<Call>>>,
}

impl Script {
    /// Queues answers; when the queue is empty the provider echoes its params.
    pub(crate) fn push(&self, answers: impl IntoIterator<Item = Answer>) {
        self.answers.lock().unwrap().extend(answers);
    }

    pub(crate) fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    pub(crate) fn call_steps(&self) -> Vec<String> {
        self.calls().into_iter().map(|c| c.step_id).collect()
    }
}

/// A provider answering from a [`Script`]. `echo` (for `Answer::Echo`) builds an output that
/// repeats the caller's secrets.
pub(crate) struct Scripted {
    pub(crate) name: String,
    pub(crate) credential_types: Vec<CredentialKind>,
    pub(crate) script: Script,
    pub(crate) echo: fn(&[String]) -> Value,
}

impl Scripted {
    pub(crate) fn new(name: &str, script: &Script) -> Self {
        Self {
            name: name.to_owned(),
            credential_types: Vec::new(),
            script: script.clone(),
            echo: |_| Value::Null,
        }
    }
}

#[async_trait]
impl Provider for Scripted {
    fn describe(&self) -> ProviderDescription {
        ProviderDescription {
            name: self.name.clone(),
            description: "Answers from a test script.".into(),
            actions: vec![ActionSpec {
                name: ACTION.into(),
                description: "Answers the next scripted answer.".into(),
                params: Vec::new(),
                one_of: Vec::new(),
            }],
            credential_types: self.credential_types.clone(),
        }
    }

    async fn execute(
        &self,
        _action: &str,
        params: &Value,
        ctx: &ProviderContext,
    ) -> Result<ProviderOutput, ProviderError> {
        let secrets: Vec<String> = ctx
            .credentials
            .iter()
            .map(|c| c.secret.expose().to_owned())
            .collect();
        self.script.calls.lock().unwrap().push(Call {
            step_id: ctx.step_id.clone(),
            params: params.clone(),
            idempotency_key: ctx.idempotency_key.clone(),
            secrets: secrets.clone(),
            timeout: ctx.timeout,
            at: Instant::now(),
            has_store: ctx.store.is_some(),
        });
        let next = self.script.answers.lock().unwrap().pop_front();
        let mut answer = next.unwrap_or(Answer::Ok(params.clone()));
        loop {
            match answer {
                Answer::Ok(output) => {
                    return Ok(ProviderOutput {
                        output,
                        ..Default::default()
                    });
                }
                Answer::Full(output) => return Ok(output),
                Answer::Err(error) => return Err(error),
                Answer::Echo => {
                    return Ok(ProviderOutput {
                        output: (self.echo)(&secrets),
                        ..Default::default()
                    });
                }
                Answer::After(delay, then) => {
                    tokio::time::sleep(delay).await;
                    answer = *then;
                }
            }
        }
    }
}

/// A `when` evaluator for tests: the expression is looked up in a fixed table (`true`, `false`,
/// `null`, `fail`, `input.go` reads `.input.go`), and every document it saw is recorded.
#[derive(Clone, Default)]
pub(crate) struct TableEvaluator {
    pub(crate) seen: Arc<Mutex<Vec<Value>>>,
}

#[async_trait]
impl Evaluator for TableEvaluator {
    fn check(&self, _expr: &str) -> Result<(), String> {
        Ok(())
    }

    async fn eval(&self, expr: &str, input: Value) -> Result<Value, String> {
        let answer = match expr {
            "true" => Ok(json!(true)),
            "false" => Ok(json!(false)),
            "null" => Ok(Value::Null),
            "zero" => Ok(json!(0)),
            "input.go" => Ok(input["input"]["go"].clone()),
            _ => Err(format!("cannot evaluate {expr}")),
        };
        self.seen.lock().unwrap().push(input);
        answer
    }
}

/// An engine over a memory store with the scripted provider registered as `scripted`.
pub(crate) struct Harness {
    pub(crate) engine: Engine,
    pub(crate) store: Arc<MemoryStore>,
    pub(crate) script: Script,
    pub(crate) evaluator: TableEvaluator,
}

impl Harness {
    pub(crate) fn new() -> Self {
        Self::with(EngineConfig::default(), |_, _| {})
    }

    /// A harness whose registry `extra` may extend (after `scripted` and the table evaluator are
    /// installed).
    pub(crate) fn with(config: EngineConfig, extra: impl FnOnce(&mut Registry, &Script)) -> Self {
        let script = Script::default();
        let evaluator = TableEvaluator::default();
        let mut registry = Registry::new();
        registry.register(Scripted::new(SCRIPTED, &script)).unwrap();
        registry.set_evaluator(Arc::new(evaluator.clone()));
        extra(&mut registry, &script);
        let store = Arc::new(MemoryStore::new());
        let http = Arc::new(OutboundClient::new(OutboundConfig::default()).unwrap());
        let engine = Engine::new(EngineParts {
            registry: Arc::new(registry),
            runs: store.clone(),
            credentials: store.clone(),
            http,
            config,
        });
        Self {
            engine,
            store,
            script,
            evaluator,
        }
    }

    /// A snapshot of a fresh run of `steps` for user `alice`, registered in the store.
    pub(crate) fn start(&self, steps: Vec<Step>, input: Value) -> RunSnapshot {
        let snapshot = snapshot(steps, input, Vec::new());
        self.store.insert_run(&snapshot);
        snapshot
    }

    /// The log rows as (step id, attempt, status).
    pub(crate) fn log_summary(&self) -> Vec<(String, u32, String)> {
        self.store
            .logs()
            .into_iter()
            .map(|l| (l.step_id, l.attempt, l.status))
            .collect()
    }

    pub(crate) fn logs(&self) -> Vec<LogRecord> {
        self.store.logs()
    }
}

/// A run snapshot (not registered anywhere).
pub(crate) fn snapshot(steps: Vec<Step>, input: Value, states: Vec<StepState>) -> RunSnapshot {
    RunSnapshot {
        run_id: RunId::from("run-1"),
        plan_id: Some("plan-1".into()),
        user_id: UserId::from("alice"),
        plan_name: "test plan".into(),
        steps,
        input,
        states,
        epoch: 1,
        trigger: TriggerKind::Api,
        cancel: Default::default(),
    }
}

/// A step calling `provider.action` with `params` (an object).
pub(crate) fn step(id: &str, provider: &str, action: &str, params: Value) -> Step {
    let params: Map<String, Value> = match params {
        Value::Object(map) => map,
        Value::Null => Map::new(),
        other => panic!("params must be an object, got {other}"),
    };
    Step {
        id: id.to_owned(),
        provider: provider.to_owned(),
        action: action.to_owned(),
        params,
        retry: None,
        timeout_ms: None,
        when: None,
        continue_on_error: false,
    }
}

/// A step of the scripted provider.
pub(crate) fn scripted(id: &str, params: Value) -> Step {
    step(id, SCRIPTED, ACTION, params)
}

/// A retry policy without jitter, so delays are exact.
pub(crate) fn exact_retry(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        jitter: false,
        ..RetryPolicy::default()
    }
}
