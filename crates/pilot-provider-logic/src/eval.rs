//! One evaluation on an evaluation thread: input conversion, the run under a budget, output
//! conversion, and the translation of every way it can end into a [`JqError`].

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Duration;

use jaq_core::{Ctx, Vars};
use serde_json::Value;

use crate::budget::{Budget, Env, Interrupt, Pilot, Stop};
use crate::compile::Filter;
use crate::convert::{OutputSink, error_message, from_json};
use crate::{JqError, JqLimits};

/// Which outputs the caller wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outputs {
    /// The first output, or null when there is none (`when` conditions).
    First,
    /// Exactly one output (null when there is none); a second one is an error.
    Single,
    /// All of them.
    All,
}

/// Runs `filter` over `input` within `budget`. Never panics and never unwinds: a stop
/// requested by the budget and any panic of the interpreter are caught here.
pub(crate) fn evaluate(
    filter: &Filter,
    input: Value,
    outputs: Outputs,
    budget: &Budget,
    limits: &JqLimits,
    timeout: Duration,
) -> Result<Vec<Value>, JqError> {
    let run = catch_unwind(AssertUnwindSafe(|| {
        run(filter, input, outputs, budget, limits)
    }));
    match run {
        Ok(result) => result,
        Err(payload) if payload.is::<Interrupt>() => Err(stopped(budget, timeout)),
        Err(_) => Err(JqError::Internal("the jq interpreter panicked".into())),
    }
}

/// The error for an evaluation the budget stopped.
fn stopped(budget: &Budget, timeout: Duration) -> JqError {
    match budget.stopped() {
        Some(Stop::Timeout) | Some(Stop::Cancelled) => JqError::Timeout(timeout),
        Some(stop) => JqError::Limit(stop.to_string()),
        None => JqError::Internal("the evaluation stopped without a reason".into()),
    }
}

fn run(
    filter: &Filter,
    input: Value,
    outputs: Outputs,
    budget: &Budget,
    limits: &JqLimits,
) -> Result<Vec<Value>, JqError> {
    let input = from_json(input, limits.max_depth).map_err(JqError::Limit)?;
    let ctx = Ctx::<Pilot>::new(Env::new(&filter.lut, budget), Vars::new([]));
    let results = filter.id.run((ctx, input));
    let mut sink = OutputSink::new(limits.max_output_bytes, limits.max_output_depth);
    let mut values = Vec::new();
    for result in results {
        let value = match result {
            Ok(value) => value,
            Err(exception) => {
                return Err(match exception.get_err() {
                    Ok(error) => JqError::Runtime(error_message(error)),
                    Err(_) => JqError::Internal("the jq interpreter ended abnormally".into()),
                });
            }
        };
        if values.len() == limits.max_outputs {
            return Err(JqError::Limit(format!(
                "it produced more than {} outputs",
                limits.max_outputs
            )));
        }
        if outputs == Outputs::Single && !values.is_empty() {
            return Err(JqError::Runtime(
                "the expression produced more than one output; set `all: true` to collect them into an array, or wrap it in [...]"
                    .into(),
            ));
        }
        values.push(sink.convert(&value)?);
        if outputs == Outputs::First {
            break;
        }
    }
    Ok(values)
}
