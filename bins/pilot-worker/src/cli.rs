//! The command line: every setting as a flag with an environment-variable fallback, parsed once
//! by clap. The names match pilot-server's where the setting is the same (database, keys,
//! outbound allowlist, AI base URLs, logs), so one environment serves both. Secret values
//! (database URLs, which may carry passwords, and master keys) are never shown by `--help`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

/// pilot-worker: fires due schedules and executes queued runs from the shared database. Run any
/// number of them against one PostgreSQL database; each tick creates exactly one run and each
/// run is executed by one worker at a time (with takeover after a crash).
#[derive(Debug, Parser)]
#[command(name = "pilot-worker", version, about, long_about = None)]
pub(crate) struct Cli {
    /// Database URL: `postgres://user:pass@host/db`, or a SQLite file (`sqlite://path` or a
    /// plain path). Default: the file `pilot.db` in the data directory (the server's default).
    #[arg(long, env = "PILOT_DATABASE_URL", hide_env_values = true)]
    pub(crate) database_url: Option<String>,

    /// File holding the database URL (instead of PILOT_DATABASE_URL).
    #[arg(long, env = "PILOT_DATABASE_URL_FILE", conflicts_with = "database_url")]
    pub(crate) database_url_file: Option<PathBuf>,

    /// Owner-role URL to run pending migrations at start (PostgreSQL two-role setup). Without
    /// it a PostgreSQL worker expects the server (or `pilot-server migrate`) to have migrated.
    #[arg(long, env = "PILOT_MIGRATION_DATABASE_URL", hide_env_values = true)]
    pub(crate) migration_database_url: Option<String>,

    /// Directory of the embedded SQLite database and its generated master key.
    #[arg(long, env = "PILOT_DATA_DIR", default_value = "pilot-data")]
    pub(crate) data_dir: PathBuf,

    /// Master key for credential decryption: base64 of 32 bytes (key id `k1`).
    #[arg(long, env = "PILOT_MASTER_KEY", hide_env_values = true)]
    pub(crate) master_key: Option<String>,

    /// File holding the master key (instead of PILOT_MASTER_KEY).
    #[arg(long, env = "PILOT_MASTER_KEY_FILE")]
    pub(crate) master_key_file: Option<PathBuf>,

    /// Several master keys, `id:base64,id:base64` (during a rotation).
    #[arg(long, env = "PILOT_MASTER_KEYS", hide_env_values = true)]
    pub(crate) master_keys: Option<String>,

    /// File holding PILOT_MASTER_KEYS's value.
    #[arg(long, env = "PILOT_MASTER_KEYS_FILE")]
    pub(crate) master_keys_file: Option<PathBuf>,

    /// Which of PILOT_MASTER_KEYS is active.
    #[arg(long, env = "PILOT_ACTIVE_KEY_ID")]
    pub(crate) active_key_id: Option<String>,

    /// SQLite durability: `full` (default) or `normal`.
    #[arg(long, env = "PILOT_SQLITE_SYNC", value_enum, default_value_t = SqliteSync::Full)]
    pub(crate) sqlite_sync: SqliteSync,

    /// Address ranges outgoing requests may reach despite the default block of loopback,
    /// private, link-local and metadata addresses: comma-separated CIDRs.
    #[arg(long, env = "PILOT_OUTBOUND_ALLOW", default_value = "")]
    pub(crate) outbound_allow: String,

    /// Base URL of an OpenAI-compatible server for the `openai` provider (trusted config).
    #[arg(long, env = "PILOT_OPENAI_BASE_URL")]
    pub(crate) openai_base_url: Option<url::Url>,

    /// Base URL for the `groq` provider (trusted config).
    #[arg(long, env = "PILOT_GROQ_BASE_URL")]
    pub(crate) groq_base_url: Option<url::Url>,

    /// The name this worker holds leases under (shown on runs). Default: `host:pid`.
    #[arg(long, env = "PILOT_WORKER_NAME")]
    pub(crate) name: Option<String>,

    /// Most runs executed at the same time.
    #[arg(long, env = "PILOT_WORKER_CONCURRENCY", default_value_t = 8)]
    pub(crate) concurrency: usize,

    /// How long a run's lease lasts without a heartbeat (heartbeats go every third of it): a
    /// crashed worker's run is taken over this long after its last heartbeat. E.g. `30s`.
    #[arg(long, env = "PILOT_LEASE_TTL", value_parser = parse_duration, default_value = "30s")]
    pub(crate) lease_ttl: Duration,

    /// Takeovers allowed per run: a run whose worker died (its lease expired) more often than
    /// this is quarantined, failed with a message saying so, instead of crashing the next worker.
    #[arg(long, env = "PILOT_MAX_TAKEOVERS", default_value_t = pilot_scheduler::WorkerConfig::DEFAULT_MAX_TAKEOVERS)]
    pub(crate) max_takeovers: u32,

    /// Most runs of one user executing at once, across every worker; 0: no cap.
    #[arg(long, env = "PILOT_MAX_RUNNING_PER_USER", default_value_t = 0)]
    pub(crate) max_running_per_user: u32,

    /// Delete finished runs (with their step states) older than this, e.g. `90d`; kept when unset.
    #[arg(long, env = "PILOT_RETAIN_RUNS", value_parser = parse_duration)]
    pub(crate) retain_runs: Option<Duration>,

    /// Delete execution-log rows older than this, e.g. `90d` (as the migration URL's owner role
    /// on PostgreSQL); kept when unset.
    #[arg(long, env = "PILOT_RETAIN_LOGS", value_parser = parse_duration)]
    pub(crate) retain_logs: Option<Duration>,

    /// The most bytes (compact JSON) one step's output may take; a larger output fails the step.
    #[arg(long, env = "PILOT_MAX_OUTPUT_BYTES",
          default_value_t = pilot_engine::EngineConfig::default().max_output_bytes)]
    pub(crate) max_output_bytes: usize,

    /// The most bytes all step outputs of one run may take together, and a step's resolved
    /// params at most; beyond it the step fails.
    #[arg(long, env = "PILOT_MAX_RUN_STATE_BYTES",
          default_value_t = pilot_engine::EngineConfig::default().max_run_state_bytes)]
    pub(crate) max_run_state_bytes: usize,

    /// After SIGTERM, how long runs in flight may take to finish before they are released.
    #[arg(long, env = "PILOT_DRAIN_GRACE", value_parser = parse_duration, default_value = "30s")]
    pub(crate) drain_grace: Duration,

    /// The longest the worker sleeps without looking at the database (one query per look).
    /// PostgreSQL wakes it with LISTEN/NOTIFY before that; SQLite shared with another process
    /// relies on it.
    #[arg(long, env = "PILOT_IDLE_POLL", value_parser = parse_duration, default_value = "5s")]
    pub(crate) idle_poll: Duration,

    /// A tick older than this when fired counts as missed (the schedule's misfire policy
    /// applies).
    #[arg(long, env = "PILOT_MISFIRE_THRESHOLD", value_parser = parse_duration, default_value = "15s")]
    pub(crate) misfire_threshold: Duration,

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

    /// Log format.
    #[arg(long, env = "PILOT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub(crate) log_format: LogFormat,

    /// Log filter (tracing `EnvFilter` syntax), e.g. `info` or `pilot_scheduler=debug,info`.
    #[arg(long, env = "PILOT_LOG", default_value = "info")]
    pub(crate) log: String,
}

/// SQLite durability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum SqliteSync {
    /// synchronous=FULL
    Full,
    /// synchronous=NORMAL
    Normal,
}

/// Log format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Parses `<n><unit>` with unit `ms`, `s`, `m` or `h`, e.g. `500ms`, `30s`.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("'{text}' needs a unit: ms, s, m, h or d (e.g. 30s)"))?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("'{text}' does not start with a number"))?;
    let millis = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        other => return Err(format!("unknown unit '{other}': use ms, s, m, h or d")),
    };
    n.checked_mul(millis)
        .filter(|ms| *ms > 0)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("'{text}' is out of range"))
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
    fn durations() {
        let check = |text: &str, expect: Option<Duration>| {
            assert_eq!(parse_duration(text).ok(), expect, "{text}")
        };
        check("30s", Some(Duration::from_secs(30)));
        check("500ms", Some(Duration::from_millis(500)));
        check("2m", Some(Duration::from_secs(120)));
        check("1h", Some(Duration::from_secs(3600)));
        check("90d", Some(Duration::from_secs(90 * 86_400)));
        for bad in ["", "s", "30", "0s", "-1s", "3w", "99999999999999999999h"] {
            check(bad, None);
        }
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

    #[test]
    fn secrets_stay_out_of_help() {
        let command = Cli::command();
        for id in [
            "database_url",
            "migration_database_url",
            "master_key",
            "master_keys",
        ] {
            let arg = command.get_arguments().find(|a| a.get_id() == id).unwrap();
            assert!(
                arg.is_hide_env_values_set(),
                "{id} would show its env value in --help"
            );
        }
    }
}
