#![doc = include_str!("../README.md")]

// Evaluations are stopped by unwinding out of the interpreter (see `budget.rs`); with
// `panic = "abort"` that would end the process instead.
#[cfg(panic = "abort")]
compile_error!("pilot-provider-logic needs panic = \"unwind\" to stop runaway jq evaluations");

mod budget;
mod compile;
mod convert;
mod engine;
mod error;
mod eval;
mod limits;
mod natives;
mod pool;
mod provider;
mod rewrite;

pub use engine::JqEngine;
pub use error::JqError;
pub use limits::JqLimits;
pub use provider::{LogicProvider, register, register_with};
