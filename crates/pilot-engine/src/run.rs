//! The executor of one run: steps in order, finished steps never again, `when`,
//! parameter resolution, retries with backoff, timeouts, skip-after-failure, cancellation at step
//! boundaries, and the writes that make it durable.
//!
//! Writes are few and carry the lease epoch: a retryable failure that will be retried writes its
//! log row alone (a crash must not lose it); a finished step writes its last log row and its
//! state in one [`RunWrite`]; the write of the last unfinished step also carries the run's end,
//! so a plan of n steps that all succeed at the first attempt costs n writes. A stale epoch
//! stops the executor at once ([`EngineError::Fenced`]).

use std::time::Duration;

use chrono::{DateTime, Utc};
use pilot_core::template::{self, Scope};
use pilot_core::{
    CancelSignal, Credential, LogRecord, PlanId, RunEnd, RunFinish, RunId, RunSnapshot, RunStatus,
    RunWrite, Step, StepKey, StepState, StepStatus, StoreError, UserId,
};
use pilot_registry::{ProviderContext, ProviderError, ProviderOutput};
use serde_json::{Map, Value};
use tokio::time::Instant;
use tracing::{Instrument, debug, info, info_span, warn};

use pilot_registry::idempotency_key;

use crate::limits;
use crate::parts::{EngineParts, RunOutcome};
use crate::{EngineError, backoff, preview};
use pilot_core::redact::Redactor;

/// The message and metadata of the last step executed (what `/api/execute-step` answers).
pub(crate) type LastResult = (Option<String>, Value);

/// Executes `snapshot` to its end (or until fenced).
pub(crate) async fn execute(
    parts: &EngineParts,
    snapshot: RunSnapshot,
    may_park: bool,
) -> Result<(RunOutcome, Option<LastResult>), EngineError> {
    let span = info_span!(
        "run",
        run_id = %snapshot.run_id,
        trigger = snapshot.trigger.as_str(),
        steps = snapshot.steps.len(),
        epoch = snapshot.epoch,
    );
    execute_in_span(parts, snapshot, may_park)
        .instrument(span)
        .await
}

/// Why the remaining steps are skipped.
enum Halt {
    /// A step failed (or the run timed out): the run fails with this error.
    Failed(String),
    /// The owner cancelled the run.
    Cancelled,
}

/// What executing one step produced.
struct StepDone {
    state: StepState,
    log: LogRecord,
    /// The run's deadline passed: the run fails whatever the step's continue_on_error says.
    run_timed_out: bool,
    /// The provider's message and metadata, redacted.
    last: LastResult,
    /// A cancellation request ended the step between two attempts: the run ends cancelled.
    cancelled: bool,
    /// The step's next attempt is this far off: the run parks (`state` is pending, with the
    /// attempts made so far).
    parked: Option<Duration>,
}

impl StepDone {
    /// A step's end with no provider answer to pass on.
    fn quiet(state: StepState, log: LogRecord) -> Self {
        Self {
            state,
            log,
            run_timed_out: false,
            last: (None, Value::Null),
            cancelled: false,
            parked: None,
        }
    }
}

/// The run-wide facts every step and write needs.
struct Executor<'a> {
    parts: &'a EngineParts,
    run_id: RunId,
    plan_id: Option<PlanId>,
    user_id: UserId,
    plan_name: String,
    epoch: i64,
    deadline: Instant,
    cancel: CancelSignal,
    /// Whether a long retry delay may park the run (not for callers waiting on the answer).
    may_park: bool,
    secrets: RunSecrets,
    /// Bytes of compact JSON the run's step outputs take so far.
    state_bytes: usize,
}

/// The caller's credentials this execution has loaded, by provider, and one redactor over all
/// of them. Every step's output, preview, message and error is redacted with every secret the
/// run used, so a later step that re-assembles a secret an earlier step's server echoed in
/// pieces stores nothing of it either. After a takeover, the providers of the finished steps are
/// loaded again before the next step's outcome is redacted.
#[derive(Default)]
struct RunSecrets {
    loaded: Vec<(String, Vec<Credential>)>,
    redactor: Redactor,
}

impl RunSecrets {
    fn has(&self, provider: &str) -> bool {
        self.loaded.iter().any(|(p, _)| p == provider)
    }

    /// The credentials of `provider` (only those go to its calls).
    fn of(&self, provider: &str) -> Vec<Credential> {
        self.loaded
            .iter()
            .find(|(p, _)| p == provider)
            .map(|(_, c)| c.clone())
            .unwrap_or_default()
    }
}

async fn execute_in_span(
    parts: &EngineParts,
    snapshot: RunSnapshot,
    may_park: bool,
) -> Result<(RunOutcome, Option<LastResult>), EngineError> {
    let RunSnapshot {
        run_id,
        plan_id,
        user_id,
        plan_name,
        mut steps,
        input,
        mut states,
        epoch,
        trigger: _,
        cancel,
    } = snapshot;
    check_states(&steps, &mut states)?;
    let state_bytes = states
        .iter()
        .filter_map(|state| state.output.as_ref())
        .map(|output| limits::json_size_within(output, usize::MAX).unwrap_or(0))
        .sum();
    let mut exec = Executor {
        parts,
        run_id,
        plan_id,
        user_id,
        plan_name,
        epoch,
        deadline: deadline_after(parts.config.run_timeout),
        cancel,
        may_park,
        secrets: RunSecrets::default(),
        state_bytes,
    };
    let last_pending = states.iter().rposition(|s| !s.status.is_finished());
    let mut halt: Option<Halt> = None;
    let mut last: Option<LastResult> = None;
    info!(resume_at = ?states.iter().position(|s| !s.status.is_finished()), "run started");

    for index in 0..steps.len() {
        let (before, rest) = steps.split_at_mut(index);
        let step = &mut rest[0];
        if states[index].status.is_finished() {
            // Resumption: a stored failure that stopped the run still stops it.
            if halt.is_none()
                && states[index].status == StepStatus::Failed
                && !step.continue_on_error
            {
                halt = Some(Halt::Failed(step_error(
                    &step.id,
                    states[index].error.as_deref(),
                )));
            }
            continue;
        }
        let is_last = Some(index) == last_pending;
        if halt.is_none() && exec.cancel.is_requested() {
            info!("cancellation requested: skipping the remaining steps");
            halt = Some(Halt::Cancelled);
        }
        if let Some(reason) = &halt {
            let message = match reason {
                Halt::Failed(_) => "skipped: an earlier step failed",
                Halt::Cancelled => "skipped: the run was cancelled",
            };
            let (state, log) = exec.skipped(index, step, message);
            let end = is_last.then(|| RunEnd::Finish(finish(&halt)));
            exec.write(vec![log], vec![(StepKey::step(index), state.clone())], end)
                .await?;
            states[index] = state;
            continue;
        }

        let span = info_span!(
            "step",
            index,
            step_id = %step.id,
            provider = %step.provider,
            action = %step.action,
        );
        let made = states[index].attempts;
        let done = exec
            .run_step(index, before, step, &input, &states[..index], made)
            .instrument(span)
            .await?;
        if let Some(delay) = done.parked {
            let settled = vec![(StepKey::step(index), done.state.clone())];
            exec.write(vec![done.log], settled, None).await?;
            states[index] = done.state;
            info!(
                delay_ms = millis(delay),
                "run parked until the step's next attempt"
            );
            return Ok((
                RunOutcome {
                    status: RunStatus::Queued,
                    states,
                    error: None,
                    resume_after: Some(delay),
                },
                None,
            ));
        }
        if done.cancelled {
            halt = Some(Halt::Cancelled);
        } else if done.state.status == StepStatus::Failed
            && (done.run_timed_out || !step.continue_on_error)
        {
            halt = Some(Halt::Failed(step_error(
                &step.id,
                done.state.error.as_deref(),
            )));
        }
        let end = is_last.then(|| RunEnd::Finish(finish(&halt)));
        let settled = vec![(StepKey::step(index), done.state.clone())];
        exec.write(vec![done.log], settled, end).await?;
        states[index] = done.state;
        last = Some(done.last);
    }

    if last_pending.is_none() {
        // Nothing was left to run (an empty plan, or a resumed run whose steps all finished but
        // whose end was not written): write the end alone.
        let end = RunEnd::Finish(finish(&halt));
        exec.write(Vec::new(), Vec::new(), Some(end)).await?;
    }
    let RunFinish { status, error } = finish(&halt);
    info!(status = status.as_str(), "run finished");
    Ok((
        RunOutcome {
            status,
            states,
            error,
            resume_after: None,
        },
        last,
    ))
}

/// Pads `states` with pending entries and checks they belong to `steps`.
fn check_states(steps: &[Step], states: &mut Vec<StepState>) -> Result<(), EngineError> {
    if states.len() > steps.len() {
        return Err(EngineError::InvalidSnapshot(format!(
            "{} step states for {} steps",
            states.len(),
            steps.len()
        )));
    }
    if let Some((step, state)) = steps
        .iter()
        .zip(states.iter())
        .find(|(step, state)| step.id != state.step_id)
    {
        return Err(EngineError::InvalidSnapshot(format!(
            "state of step '{}' found where step '{}' is",
            state.step_id, step.id
        )));
    }
    for step in &steps[states.len()..] {
        states.push(StepState::pending(step.id.clone()));
    }
    Ok(())
}

/// The run's end given why it stopped (nothing: it succeeded).
fn finish(halt: &Option<Halt>) -> RunFinish {
    match halt {
        None => RunFinish {
            status: RunStatus::Succeeded,
            error: None,
        },
        Some(Halt::Failed(error)) => RunFinish {
            status: RunStatus::Failed,
            error: Some(error.clone()),
        },
        Some(Halt::Cancelled) => RunFinish {
            status: RunStatus::Cancelled,
            error: None,
        },
    }
}

/// The run's error for a failed step.
fn step_error(step_id: &str, error: Option<&str>) -> String {
    format!(
        "step '{step_id}' failed: {}",
        error.unwrap_or("no error recorded")
    )
}

/// The step being run and when it started.
struct Current<'s> {
    index: usize,
    step: &'s Step,
    started: Instant,
    started_at: DateTime<Utc>,
}

/// How one attempt went.
enum Attempt {
    Succeeded(ProviderOutput),
    Failed(ProviderError),
    /// Cut off by the run's deadline, not by the step's own timeout.
    RunTimedOut,
}

impl Executor<'_> {
    /// Runs step `index` to its end: `when`, params, attempts; writes the log rows of retried
    /// attempts and returns the last row and the final state for the caller to write.
    /// `made` attempts were made before (a run resumed after it parked): the next is `made + 1`.
    async fn run_step(
        &mut self,
        index: usize,
        before: &[Step],
        step: &mut Step,
        input: &Value,
        earlier: &[StepState],
        made: u32,
    ) -> Result<StepDone, EngineError> {
        let params = std::mem::take(&mut step.params);
        let step: &Step = step;
        let current = Current {
            index,
            step,
            started: Instant::now(),
            started_at: Utc::now(),
        };
        if current.started >= self.deadline {
            let mut done = self.failed(
                &current,
                0,
                self.run_timeout_error(),
                Some("the run timed out"),
            );
            done.run_timed_out = true;
            return Ok(done);
        }

        if let Some(expr) = step.when.as_ref().filter(|_| made == 0) {
            match self.when_holds(expr, input, before, earlier).await {
                Ok(true) => {}
                Ok(false) => {
                    debug!("when condition false or null: skipped");
                    let (state, log) =
                        self.skipped(index, step, "skipped: its when condition was false or null");
                    return Ok(StepDone::quiet(state, log));
                }
                Err(e) => {
                    let error = self.secrets.redactor.redact_string(format!("when: {e}"));
                    return Ok(self.failed(&current, 0, error, Some("the when condition failed")));
                }
            }
        }

        let params = if params.values().any(has_template) {
            let outputs: Vec<(&str, Option<&Value>)> = before
                .iter()
                .zip(earlier)
                .map(|(s, state)| (s.id.as_str(), state.output.as_ref()))
                .collect();
            let scope = Scope {
                input,
                run_id: self.run_id.as_str(),
                plan_id: self.plan_id.as_ref().map(PlanId::as_str),
                steps: &outputs,
            };
            match template::resolve_params_within(
                &params,
                &scope,
                self.parts.config.max_run_state_bytes,
            ) {
                Ok(resolved) => Value::Object(resolved),
                Err(e) => {
                    let error = self.secrets.redactor.redact_string(e.to_string());
                    return Ok(self.failed(
                        &current,
                        0,
                        error,
                        Some("a parameter could not be resolved"),
                    ));
                }
            }
        } else {
            Value::Object(params)
        };

        self.attempt_step(&current, before, params, made).await
    }

    /// The attempt loop of one step whose params are resolved: calls the provider, retries a
    /// retryable error with backoff (or parks the run when the next attempt is far off), and
    /// ends at success, a permanent error, the last attempt, a cancellation or the run's
    /// deadline.
    async fn attempt_step(
        &mut self,
        current: &Current<'_>,
        before: &[Step],
        params: Value,
        made: u32,
    ) -> Result<StepDone, EngineError> {
        let (index, step) = (current.index, current.step);
        let attempt_timeout = step.timeout_ms.map_or(
            self.parts.config.default_step_timeout,
            Duration::from_millis,
        );
        let mut ctx = ProviderContext {
            user_id: self.user_id.clone(),
            run_id: self.run_id.clone(),
            step_id: step.id.clone(),
            idempotency_key: idempotency_key(self.run_id.as_str(), &step.id),
            credentials: Vec::new(),
            timeout: attempt_timeout,
            http: self.parts.http.clone(),
            store: Some(self.parts.credentials.clone()),
        };
        let policy = step.retry_policy();
        let attempts = backoff::attempts(&policy);
        let budget = backoff::step_budget(&policy, attempt_timeout);
        let seed = backoff::seed(self.run_id.as_str(), index);
        let mut credentials_loaded = self.unloaded(before, step).next().is_none();
        if credentials_loaded {
            ctx.credentials = self.secrets.of(&step.provider);
        }
        let mut redactor = self.secrets.redactor.clone();

        let mut attempt = made + 1;
        loop {
            let call_started = Instant::now();
            let run_left = self.deadline.saturating_duration_since(call_started);
            ctx.timeout = attempt_timeout.min(run_left);
            debug!(attempt, timeout_ms = millis(ctx.timeout), "attempt started");
            let outcome = if run_left.is_zero() {
                Attempt::RunTimedOut
            } else if !credentials_loaded {
                match self.load_credentials(before, step).await {
                    Ok(()) => {
                        redactor = self.secrets.redactor.clone();
                        ctx.credentials = self.secrets.of(&step.provider);
                        credentials_loaded = true;
                        self.call(step, &params, &ctx, attempt_timeout).await
                    }
                    Err(e) => {
                        let message = format!("loading the caller's credentials failed: {e}");
                        // Only an unreachable store may answer differently later; a value that
                        // cannot be decrypted will not, so it is not retried.
                        Attempt::Failed(match e {
                            StoreError::Unavailable(_) => ProviderError::retryable(message),
                            _ => ProviderError::permanent(message),
                        })
                    }
                }
            } else {
                self.call(step, &params, &ctx, attempt_timeout).await
            };
            let latency = call_started.elapsed();

            let error = match outcome {
                Attempt::Succeeded(output) => {
                    return Ok(self.succeeded(current, attempt, latency, output, &redactor));
                }
                Attempt::RunTimedOut => {
                    let mut done = self.failed(
                        current,
                        attempt,
                        self.run_timeout_error(),
                        Some("the run timed out"),
                    );
                    done.run_timed_out = true;
                    done.log.latency_ms = millis(latency);
                    return Ok(done);
                }
                Attempt::Failed(error) => error,
            };

            let message = redactor.redact_string(error.to_string());
            warn!(attempt, retryable = error.is_retryable(), error = %message, "attempt failed");
            let (error, summary) = if !error.is_retryable() {
                (message, "failed: the error is not retryable".to_owned())
            } else if attempt >= attempts {
                (message, format!("failed after {attempt} attempts"))
            } else {
                match self.retry_delay(&policy, attempt, seed, &error, current.started, budget) {
                    Ok(delay) => {
                        let parks = self.parks(delay);
                        let log = LogRecord {
                            latency_ms: millis(latency),
                            error: Some(message),
                            message: Some(format!(
                                "attempt {attempt} of {attempts} failed; retrying in {} ms{}",
                                millis(delay),
                                if parks {
                                    " (the run waits in the queue)"
                                } else {
                                    ""
                                }
                            )),
                            ..self.log(index, step, attempt, "retrying")
                        };
                        if parks {
                            let state = StepState {
                                attempts: attempt,
                                started_at: Some(current.started_at),
                                ..StepState::pending(step.id.clone())
                            };
                            return Ok(StepDone {
                                parked: Some(delay),
                                ..StepDone::quiet(state, log)
                            });
                        }
                        self.write(vec![log], Vec::new(), None).await?;
                        if !self.cancel.is_requested() {
                            tokio::time::sleep(delay).await;
                        }
                        attempt += 1;
                        if self.cancel.is_requested() {
                            info!(attempt, "cancellation requested: no further attempt");
                            let (state, log) = self.skipped(
                                index,
                                step,
                                &format!("skipped: the run was cancelled before attempt {attempt}"),
                            );
                            return Ok(StepDone {
                                cancelled: true,
                                ..StepDone::quiet(state, log)
                            });
                        }
                        continue;
                    }
                    Err(why) => (
                        format!("{message} ({why})"),
                        format!("failed after {attempt} attempts"),
                    ),
                }
            };
            let mut done = self.failed(current, attempt, error, Some(&summary));
            done.log.latency_ms = millis(latency);
            return Ok(done);
        }
    }

    /// The credential-declaring providers of `step` and the steps before it whose credentials
    /// this execution has not loaded yet.
    fn unloaded<'s>(
        &'s self,
        before: &'s [Step],
        step: &'s Step,
    ) -> impl Iterator<Item = &'s str> + 's {
        before
            .iter()
            .chain(std::iter::once(step))
            .map(|s| s.provider.as_str())
            .filter(|provider| {
                !self.secrets.has(provider)
                    && self
                        .parts
                        .registry
                        .describe(provider)
                        .is_some_and(|d| !d.credential_types.is_empty())
            })
    }

    /// Loads the caller's credentials of every provider [`Self::unloaded`] names and rebuilds
    /// the run's redactor over all of them.
    async fn load_credentials(&mut self, before: &[Step], step: &Step) -> Result<(), StoreError> {
        let mut providers: Vec<String> = self.unloaded(before, step).map(str::to_owned).collect();
        providers.dedup();
        for provider in providers {
            if self.secrets.has(&provider) {
                continue;
            }
            let credentials = self
                .parts
                .credentials
                .credentials(&self.user_id, &provider)
                .await?;
            self.secrets.loaded.push((provider, credentials));
        }
        let all: Vec<Credential> = self
            .secrets
            .loaded
            .iter()
            .flat_map(|(_, c)| c.iter().cloned())
            .collect();
        self.secrets.redactor = Redactor::for_credentials(&all);
        Ok(())
    }

    /// One provider call under the attempt's timeout.
    async fn call(
        &self,
        step: &Step,
        params: &Value,
        ctx: &ProviderContext,
        step_timeout: Duration,
    ) -> Attempt {
        let call = self
            .parts
            .registry
            .execute(&step.provider, &step.action, params, ctx);
        match tokio::time::timeout(ctx.timeout, call).await {
            Ok(Ok(output)) => Attempt::Succeeded(output),
            Ok(Err(error)) => Attempt::Failed(error),
            Err(_) if ctx.timeout < step_timeout => Attempt::RunTimedOut,
            Err(_) => Attempt::Failed(ProviderError::retryable(format!(
                "timed out after {} ms",
                millis(ctx.timeout)
            ))),
        }
    }

    /// Whether waiting `delay` for the next attempt parks the run.
    fn parks(&self, delay: Duration) -> bool {
        self.may_park
            && self
                .parts
                .config
                .park_retries_after
                .is_some_and(|after| delay > after)
    }

    /// How long to wait before the next attempt, or why there will be none: a server-given
    /// delay is honoured only while it fits in the step's budget, and no delay may run past the
    /// run's deadline.
    fn retry_delay(
        &self,
        policy: &pilot_core::RetryPolicy,
        attempt: u32,
        seed: u64,
        error: &ProviderError,
        started: Instant,
        budget: Duration,
    ) -> Result<Duration, String> {
        let now = Instant::now();
        let delay = match error.retry_after() {
            Some(asked) => {
                let remaining = budget.saturating_sub(now - started);
                if asked >= remaining {
                    return Err(format!(
                        "the server asked to retry after {} ms, beyond the step's remaining time budget of {} ms",
                        millis(asked),
                        millis(remaining)
                    ));
                }
                asked
            }
            None => backoff::delay(policy, attempt, seed),
        };
        if delay >= self.deadline.saturating_duration_since(now) {
            return Err("no time left in the run for another attempt".to_owned());
        }
        Ok(delay)
    }

    /// Whether the step's `when` lets it run.
    async fn when_holds(
        &self,
        expr: &str,
        input: &Value,
        before: &[Step],
        earlier: &[StepState],
    ) -> Result<bool, String> {
        let Some(evaluator) = self.parts.registry.evaluator() else {
            return Err("no expression language is installed".to_owned());
        };
        let mut steps = Map::with_capacity(before.len());
        for (step, state) in before.iter().zip(earlier) {
            let mut entry = Map::with_capacity(1);
            entry.insert(
                "output".to_owned(),
                state.output.clone().unwrap_or(Value::Null),
            );
            steps.insert(step.id.clone(), Value::Object(entry));
        }
        let mut document = Map::with_capacity(2);
        document.insert("input".to_owned(), input.clone());
        document.insert("steps".to_owned(), Value::Object(steps));
        let value = evaluator.eval(expr, Value::Object(document)).await?;
        Ok(!matches!(value, Value::Null | Value::Bool(false)))
    }

    /// The final state and log row of a step that succeeded, its output redacted; a failure
    /// instead when the output is larger than a step's or the run's size limit allows.
    fn succeeded(
        &mut self,
        current: &Current<'_>,
        attempt: u32,
        latency: Duration,
        output: ProviderOutput,
        redactor: &Redactor,
    ) -> StepDone {
        let Current {
            index,
            step,
            started,
            started_at,
        } = *current;
        let ProviderOutput {
            mut output,
            message,
            mut metadata,
        } = output;
        redactor.redact_value(&mut output);
        let config = &self.parts.config;
        let room = config.max_run_state_bytes.saturating_sub(self.state_bytes);
        let limit = config.max_output_bytes.min(room);
        let Some(bytes) = limits::json_size_within(&output, limit) else {
            let error = if limit < config.max_output_bytes {
                format!(
                    "the output would take the run's stored state past its limit of {} \
                     (PILOT_MAX_RUN_STATE_BYTES); keep less in each step, e.g. select fields with a \
                     logic step",
                    pilot_core::human_size(config.max_run_state_bytes)
                )
            } else {
                format!(
                    "the output is larger than the limit of {} per step (PILOT_MAX_OUTPUT_BYTES); \
                     select the fields you need with a logic step or ask the service for less",
                    pilot_core::human_size(config.max_output_bytes)
                )
            };
            let mut done = self.failed(current, attempt, error, Some("the output is too large"));
            done.log.latency_ms = millis(latency);
            return done;
        };
        self.state_bytes = self.state_bytes.saturating_add(bytes);
        redactor.redact_value(&mut metadata);
        let message = message.map(|m| redactor.redact_string(m));
        let output_preview = preview::preview(&output, self.parts.config.preview_limit, redactor);
        let elapsed = millis(started.elapsed());
        info!(attempts = attempt, latency_ms = elapsed, "step succeeded");
        let log = LogRecord {
            message: message.clone(),
            latency_ms: millis(latency),
            output_preview: Some(output_preview),
            ..self.log(index, step, attempt, "succeeded")
        };
        let state = StepState {
            step_id: step.id.clone(),
            status: StepStatus::Succeeded,
            output: Some(output),
            error: None,
            attempts: attempt,
            latency_ms: elapsed,
            started_at: Some(started_at),
            finished_at: Some(log.timestamp),
        };
        StepDone {
            state,
            log,
            run_timed_out: false,
            last: (message, metadata),
            cancelled: false,
            parked: None,
        }
    }

    /// The final state and log row of a step that failed after `attempts` attempts (0 when no
    /// provider call was made: `when` or params failed). `error` is already redacted.
    fn failed(
        &self,
        current: &Current<'_>,
        attempts: u32,
        error: String,
        summary: Option<&str>,
    ) -> StepDone {
        let Current {
            index,
            step,
            started,
            started_at,
        } = *current;
        let elapsed = millis(started.elapsed());
        warn!(attempts, error = %error, "step failed");
        let log = LogRecord {
            message: summary.map(str::to_owned),
            error: Some(error.clone()),
            ..self.log(index, step, attempts, "failed")
        };
        let state = StepState {
            step_id: step.id.clone(),
            status: StepStatus::Failed,
            output: None,
            error: Some(error),
            attempts,
            latency_ms: elapsed,
            started_at: Some(started_at),
            finished_at: Some(log.timestamp),
        };
        StepDone::quiet(state, log)
    }

    /// The state and log row of a step that does not run.
    fn skipped(&self, index: usize, step: &Step, message: &str) -> (StepState, LogRecord) {
        debug!(step_id = %step.id, "{message}");
        let log = LogRecord {
            message: Some(message.to_owned()),
            ..self.log(index, step, 0, "skipped")
        };
        let state = StepState {
            status: StepStatus::Skipped,
            finished_at: Some(log.timestamp),
            ..StepState::pending(step.id.clone())
        };
        (state, log)
    }

    fn run_timeout_error(&self) -> String {
        format!(
            "the run exceeded its timeout of {} ms",
            millis(self.parts.config.run_timeout)
        )
    }

    /// A log row of this run with the step's facts and nothing else filled in.
    fn log(&self, index: usize, step: &Step, attempt: u32, status: &str) -> LogRecord {
        LogRecord {
            plan_id: self.plan_id.clone(),
            run_id: self.run_id.clone(),
            user_id: self.user_id.clone(),
            plan_name: self.plan_name.clone(),
            step_number: u32::try_from(index).unwrap_or(u32::MAX),
            step_id: step.id.clone(),
            provider: step.provider.clone(),
            action: step.action.clone(),
            attempt,
            status: status.to_owned(),
            message: None,
            latency_ms: 0,
            output_preview: None,
            error: None,
            timestamp: Utc::now(),
        }
    }

    /// One write under this executor's epoch; notes a cancellation request from the answer.
    async fn write(
        &mut self,
        logs: Vec<LogRecord>,
        steps: Vec<(StepKey, StepState)>,
        end: Option<RunEnd>,
    ) -> Result<(), EngineError> {
        let write = RunWrite {
            run_id: self.run_id.clone(),
            user_id: self.user_id.clone(),
            epoch: self.epoch,
            logs,
            steps,
            end,
        };
        match self.parts.runs.write(write).await {
            Ok(ack) => {
                if ack.cancel_requested {
                    self.cancel.request();
                }
                Ok(())
            }
            Err(e) => {
                let e = EngineError::from(e);
                warn!(error = %e, "write refused: the executor stops");
                Err(e)
            }
        }
    }
}

/// Whether any string in `value` may hold a reference (or a `$${` escape); params without one
/// are passed on as they are, without a resolving copy.
fn has_template(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains("${"),
        Value::Array(items) => items.iter().any(has_template),
        Value::Object(map) => map.values().any(has_template),
        Value::Null | Value::Bool(_) | Value::Number(_) => false,
    }
}

/// The run's deadline `timeout` from now; a timeout too large for the clock (an operator's "no
/// limit") saturates to a century instead of overflowing.
fn deadline_after(timeout: Duration) -> Instant {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);
    let now = Instant::now();
    now.checked_add(timeout.min(CENTURY)).unwrap_or(now)
}

/// A duration in whole milliseconds.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
