#![doc = include_str!("../README.md")]

mod clock;
mod config;
mod engine;
mod error;
mod execute;
mod fire_plan;
mod firing;
mod metrics;
mod submit;
mod worker;

#[cfg(feature = "test-support")]
pub mod testing;

pub use crate::clock::{Clock, ClockSleep, ManualClock, SystemClock};
pub use crate::config::WorkerConfig;
pub use crate::engine::{EngineSetup, build_engine};
pub use crate::error::SchedulerError;
pub use crate::metrics::SchedulerMetrics;
pub use crate::submit::{Inline, InlineEnd, SubmitConfig, SubmitError, Submitter};
pub use crate::worker::Worker;
