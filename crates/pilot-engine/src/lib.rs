#![doc = include_str!("../README.md")]

mod backoff;
mod engine;
mod error;
mod limits;
mod parts;
mod preview;
mod run;

pub use engine::Engine;
pub use error::EngineError;
pub use parts::{EngineConfig, EngineParts, RunOutcome};
pub use pilot_registry::idempotency_key;
