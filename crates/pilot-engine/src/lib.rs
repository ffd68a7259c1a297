#![doc = include_str!("../README.md")]

mod backoff;
mod engine;
mod error;
mod limits;
mod preview;
mod run;

pub use engine::{Engine, EngineConfig, EngineParts, RunOutcome};
pub use error::EngineError;
pub use pilot_registry::idempotency_key;
