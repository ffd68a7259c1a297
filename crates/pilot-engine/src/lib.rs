#![doc = include_str!("../README.md")]

mod backoff;
mod engine;
mod error;
mod preview;
mod run;

pub use engine::{Engine, EngineConfig, EngineParts, RunOutcome, idempotency_key};
pub use error::EngineError;
