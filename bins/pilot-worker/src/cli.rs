//! The command line: every setting as a flag with an environment-variable fallback, parsed once
//! by clap. The groups shared with pilot-server (database, keys, providers, engine, worker,
//! logs) come from pilot-boot, so one environment serves both. Secret values
//! (database URLs, which may carry passwords, and master keys) are never shown by `--help`.

use std::net::SocketAddr;

use clap::Parser;
use pilot_boot::{DatabaseArgs, EngineArgs, KeyArgs, LogArgs, ProviderArgs, WorkerArgs};

/// pilot-worker: fires due schedules and executes queued runs from the shared database. Run any
/// number of them against one PostgreSQL database; each tick creates exactly one run and each
/// run is executed by one worker at a time (with takeover after a crash).
#[derive(Debug, Parser)]
#[command(name = "pilot-worker", version, about, long_about = None)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) database: DatabaseArgs,

    #[command(flatten)]
    pub(crate) keys: KeyArgs,

    #[command(flatten)]
    pub(crate) providers: ProviderArgs,

    #[command(flatten)]
    pub(crate) engine: EngineArgs,

    #[command(flatten)]
    pub(crate) worker: WorkerArgs,

    /// The name this worker holds leases under (shown on runs). Default: `host:pid`.
    #[arg(long, env = "PILOT_WORKER_NAME")]
    pub(crate) name: Option<String>,

    /// Do not fire schedules (only execute runs).
    #[arg(long, env = "PILOT_WORKER_NO_FIRE")]
    pub(crate) no_fire: bool,

    /// Do not execute runs (only fire schedules).
    #[arg(long, env = "PILOT_WORKER_NO_EXECUTE", conflicts_with = "no_fire")]
    pub(crate) no_execute: bool,

    /// Database connections in the pool. Default: concurrency + 4.
    #[arg(long, env = "PILOT_DB_POOL_SIZE")]
    pub(crate) pool_size: Option<u32>,

    /// Address of the Prometheus `/metrics` listener (port 0 picks a free one; the bound
    /// address is logged). `off` disables it.
    #[arg(long, env = "PILOT_WORKER_METRICS_BIND", default_value = "127.0.0.1:9187", value_parser = parse_bind)]
    pub(crate) metrics_bind: MetricsBind,

    #[command(flatten)]
    pub(crate) log: LogArgs,
}

/// Where the metrics listener binds; `None` when it is off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MetricsBind(pub(crate) Option<SocketAddr>);

/// Parses a socket address, or `off`.
fn parse_bind(text: &str) -> Result<MetricsBind, String> {
    if text.trim().eq_ignore_ascii_case("off") {
        return Ok(MetricsBind(None));
    }
    text.trim()
        .parse()
        .map(|a| MetricsBind(Some(a)))
        .map_err(|e| format!("'{text}' is not an address like 127.0.0.1:9187: {e}"))
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn metrics_listener_can_be_turned_off() {
        let cli = Cli::try_parse_from(["pilot-worker", "--metrics-bind", "off"]).unwrap();
        assert_eq!(cli.metrics_bind, MetricsBind(None));
        let cli = Cli::try_parse_from(["pilot-worker"]).unwrap();
        assert_eq!(
            cli.metrics_bind,
            MetricsBind(Some("127.0.0.1:9187".parse().unwrap()))
        );
    }
}
