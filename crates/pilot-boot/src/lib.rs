#![doc = include_str!("../README.md")]

mod args;
mod wiring;

pub use args::{
    DatabaseArgs, EngineArgs, KeyArgs, LogArgs, LogFormat, ProviderArgs, SqliteSync, WorkerArgs,
    parse_duration,
};
pub use wiring::{OpenOptions, init_tracing, open_database, run_to_end, shutdown_signal};
