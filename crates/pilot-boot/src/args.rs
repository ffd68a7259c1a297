//! The settings both binaries read, as clap argument groups: every one a flag with an
//! environment-variable fallback, with the same name and meaning in each binary. The database,
//! key and log groups are `global` (every subcommand of pilot-server reads them); the others
//! are flattened only where they are read. Values of secret settings (database URLs, which may
//! carry passwords, and master keys) are never shown by `--help` (their env values are hidden)
//! nor by `Debug`, which says only whether they are set.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use pilot_engine::EngineConfig;
use pilot_scheduler::WorkerConfig;
use pilot_storage::KeySettings;

/// Where the database is.
#[derive(Args, Clone)]
#[command(next_help_heading = "Database")]
pub struct DatabaseArgs {
    /// Database URL: `postgres://user:pass@host/db`, or a SQLite file (`sqlite://path` or a
    /// plain path). Default: a SQLite file `pilot.db` in the data directory.
    #[arg(
        long,
        global = true,
        env = "PILOT_DATABASE_URL",
        hide_env_values = true
    )]
    pub database_url: Option<String>,

    /// File holding the database URL (instead of PILOT_DATABASE_URL).
    #[arg(
        long,
        global = true,
        env = "PILOT_DATABASE_URL_FILE",
        conflicts_with = "database_url"
    )]
    pub database_url_file: Option<PathBuf>,

    /// Owner-role database URL used to run migrations (PostgreSQL two-role setup). Default: the
    /// database URL.
    #[arg(
        long,
        global = true,
        env = "PILOT_MIGRATION_DATABASE_URL",
        hide_env_values = true
    )]
    pub migration_database_url: Option<String>,

    /// Directory for the embedded database, the generated master key and the first admin token.
    #[arg(
        long,
        global = true,
        env = "PILOT_DATA_DIR",
        default_value = "pilot-data"
    )]
    pub data_dir: PathBuf,

    /// SQLite durability: `full` (default; an answered request survives a power loss) or
    /// `normal` (faster; the last commits may be lost on power loss, never on a crash).
    #[arg(long, global = true, env = "PILOT_SQLITE_SYNC", value_enum, default_value_t = SqliteSync::Full)]
    pub sqlite_sync: SqliteSync,
}

impl std::fmt::Debug for DatabaseArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseArgs")
            .field("database_url", &set(&self.database_url))
            .field("database_url_file", &self.database_url_file)
            .field("migration_database_url", &set(&self.migration_database_url))
            .field("data_dir", &self.data_dir)
            .field("sqlite_sync", &self.sqlite_sync)
            .finish()
    }
}

impl DatabaseArgs {
    /// The database URL: the flag, the file, or the embedded default.
    pub fn url(&self) -> anyhow::Result<String> {
        use anyhow::Context as _;
        if let Some(url) = &self.database_url {
            return Ok(url.clone());
        }
        if let Some(path) = &self.database_url_file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading the database URL from {}", path.display()))?;
            return Ok(text.trim().to_owned());
        }
        Ok(format!(
            "sqlite://{}",
            self.data_dir.join("pilot.db").display()
        ))
    }
}

/// The master keys credentials are encrypted with.
#[derive(Args, Clone)]
#[command(next_help_heading = "Master keys")]
pub struct KeyArgs {
    /// Master key for credential encryption: base64 of 32 bytes (key id `k1`). Without any key
    /// setting, the embedded SQLite default generates one into the data directory.
    #[arg(long, global = true, env = "PILOT_MASTER_KEY", hide_env_values = true)]
    pub master_key: Option<String>,

    /// File holding the master key (instead of PILOT_MASTER_KEY).
    #[arg(long, global = true, env = "PILOT_MASTER_KEY_FILE")]
    pub master_key_file: Option<PathBuf>,

    /// Several master keys, `id:base64,id:base64`, for rotation; new values use the active one.
    #[arg(long, global = true, env = "PILOT_MASTER_KEYS", hide_env_values = true)]
    pub master_keys: Option<String>,

    /// File holding PILOT_MASTER_KEYS's value.
    #[arg(long, global = true, env = "PILOT_MASTER_KEYS_FILE")]
    pub master_keys_file: Option<PathBuf>,

    /// Which of PILOT_MASTER_KEYS encrypts new values.
    #[arg(long, global = true, env = "PILOT_ACTIVE_KEY_ID")]
    pub active_key_id: Option<String>,
}

impl std::fmt::Debug for KeyArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyArgs")
            .field("master_key", &set(&self.master_key))
            .field("master_key_file", &self.master_key_file)
            .field("master_keys", &set(&self.master_keys))
            .field("master_keys_file", &self.master_keys_file)
            .field("active_key_id", &self.active_key_id)
            .finish()
    }
}

impl KeyArgs {
    /// Whether any key is configured (a file or a value).
    pub fn configured(&self) -> bool {
        self.master_key.is_some()
            || self.master_key_file.is_some()
            || self.master_keys.is_some()
            || self.master_keys_file.is_some()
    }

    /// pilot-storage's key settings; `data_dir` is where the embedded default keeps its key.
    pub fn settings(&self, data_dir: &std::path::Path) -> KeySettings {
        KeySettings {
            master_key: self.master_key.clone(),
            master_key_file: self.master_key_file.clone(),
            master_keys: self.master_keys.clone(),
            master_keys_file: self.master_keys_file.clone(),
            active_key_id: self.active_key_id.clone(),
            data_dir: data_dir.to_path_buf(),
        }
    }
}

/// `[set]` for a secret that is set: `Debug` never shows its value.
fn set(value: &Option<String>) -> Option<&'static str> {
    value.as_ref().map(|_| "[set]")
}

/// How the process logs.
#[derive(Debug, Args, Clone)]
#[command(next_help_heading = "Logging")]
pub struct LogArgs {
    /// Log format.
    #[arg(long, global = true, env = "PILOT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Log filter (tracing `EnvFilter` syntax), e.g. `info` or `pilot_api=debug,info`.
    #[arg(long, global = true, env = "PILOT_LOG", default_value = "info")]
    pub log: String,
}

/// What providers may reach, and where the AI providers send.
#[derive(Debug, Args, Clone)]
#[command(next_help_heading = "Providers")]
pub struct ProviderArgs {
    /// Address ranges outgoing requests may reach despite the default block of loopback,
    /// private, link-local and metadata addresses: comma-separated CIDRs, e.g. `10.1.0.0/16`.
    #[arg(long, env = "PILOT_OUTBOUND_ALLOW", default_value = "")]
    pub outbound_allow: String,

    /// Base URL of an OpenAI-compatible server for the `openai` provider (trusted config).
    #[arg(long, env = "PILOT_OPENAI_BASE_URL")]
    pub openai_base_url: Option<url::Url>,

    /// Base URL for the `groq` provider (trusted config).
    #[arg(long, env = "PILOT_GROQ_BASE_URL")]
    pub groq_base_url: Option<url::Url>,
}

/// The engine's limits.
#[derive(Debug, Args, Clone)]
#[command(next_help_heading = "Engine limits")]
pub struct EngineArgs {
    /// The longest one run may execute in all (its steps and retries) before it fails.
    #[arg(long, env = "PILOT_RUN_TIMEOUT", value_parser = parse_duration,
          default_value = "1h")]
    pub run_timeout: Duration,

    /// A step's timeout when the step sets no `timeout_ms`.
    #[arg(long, env = "PILOT_STEP_TIMEOUT", value_parser = parse_duration,
          default_value = "30s")]
    pub step_timeout: Duration,

    /// The most bytes (compact JSON) one step's output may take; a larger output fails the step.
    #[arg(long, env = "PILOT_MAX_OUTPUT_BYTES",
          default_value_t = EngineConfig::default().max_output_bytes)]
    pub max_output_bytes: usize,

    /// The most bytes all step outputs of one run may take together, and a step's resolved
    /// params at most; beyond it the step fails.
    #[arg(long, env = "PILOT_MAX_RUN_STATE_BYTES",
          default_value_t = EngineConfig::default().max_run_state_bytes)]
    pub max_run_state_bytes: usize,
}

impl EngineArgs {
    /// The engine configuration these settings describe.
    pub fn config(&self) -> EngineConfig {
        EngineConfig {
            run_timeout: self.run_timeout,
            default_step_timeout: self.step_timeout,
            max_output_bytes: self.max_output_bytes,
            max_run_state_bytes: self.max_run_state_bytes,
            ..EngineConfig::default()
        }
    }
}

/// How a worker (pilot-worker, or pilot-server's embedded one) executes and fires.
#[derive(Debug, Args, Clone)]
#[command(next_help_heading = "Worker")]
pub struct WorkerArgs {
    /// Most runs the worker executes at the same time.
    #[arg(long, env = "PILOT_WORKER_CONCURRENCY", value_parser = parse_concurrency,
          default_value_t = WorkerConfig::new("").concurrency)]
    pub concurrency: usize,

    /// How long a run's lease lasts without a heartbeat (heartbeats go every third of it): a
    /// crashed process's run is taken over this long after its last heartbeat. E.g. `30s`.
    #[arg(long, env = "PILOT_LEASE_TTL", value_parser = parse_lease, default_value = "30s")]
    pub lease_ttl: Duration,

    /// Takeovers allowed per run: a run whose worker died (its lease expired) more often than
    /// this is quarantined, failed with a message saying so, instead of crashing the next worker.
    #[arg(long, env = "PILOT_MAX_TAKEOVERS", default_value_t = WorkerConfig::DEFAULT_MAX_TAKEOVERS)]
    pub max_takeovers: u32,

    /// Most runs of one user executing at once, across every worker; 0: no cap.
    #[arg(long, env = "PILOT_MAX_RUNNING_PER_USER", default_value_t = 0)]
    pub max_running_per_user: u32,

    /// Delete finished runs (with their step states) older than this, e.g. `90d`, every hour
    /// in small batches; kept when unset.
    #[arg(long, env = "PILOT_RETAIN_RUNS", value_parser = parse_duration)]
    pub retain_runs: Option<Duration>,

    /// Delete execution-log rows older than this, e.g. `90d`, every hour (as the migration
    /// URL's owner role on PostgreSQL); kept when unset.
    #[arg(long, env = "PILOT_RETAIN_LOGS", value_parser = parse_duration)]
    pub retain_logs: Option<Duration>,

    /// Keep at most this many finished runs of each plan (the newest); older ones are deleted
    /// with their step states every hour, in small batches. Kept when unset.
    #[arg(long, env = "PILOT_RETAIN_RUNS_PER_PLAN", value_parser = clap::value_parser!(u32).range(1..))]
    pub retain_runs_per_plan: Option<u32>,

    /// After SIGTERM, how long runs in flight may take to finish before they are released.
    #[arg(long, env = "PILOT_DRAIN_GRACE", value_parser = parse_duration, default_value = "30s")]
    pub drain_grace: Duration,

    /// The longest the worker sleeps without looking at the database (one query per look).
    /// PostgreSQL wakes it with LISTEN/NOTIFY before that; SQLite shared with another process
    /// relies on it.
    #[arg(long, env = "PILOT_IDLE_POLL", value_parser = parse_duration, default_value = "5s")]
    pub idle_poll: Duration,

    /// A tick older than this when fired counts as missed (the schedule's misfire policy
    /// applies).
    #[arg(long, env = "PILOT_MISFIRE_THRESHOLD", value_parser = parse_duration, default_value = "15s")]
    pub misfire_threshold: Duration,
}

impl WorkerArgs {
    /// The worker configuration these settings describe, for a worker named `owner`.
    pub fn config(&self, owner: impl Into<String>) -> WorkerConfig {
        let mut config = WorkerConfig::new(owner);
        config.concurrency = self.concurrency;
        config.lease_ttl = self.lease_ttl;
        config.max_takeovers = self.max_takeovers;
        config.max_running_per_user = self.max_running_per_user;
        config.retain_runs = self.retain_runs;
        config.retain_logs = self.retain_logs;
        config.retain_runs_per_plan = self.retain_runs_per_plan;
        config.drain_grace = self.drain_grace;
        config.idle_poll = self.idle_poll;
        config.misfire_threshold = self.misfire_threshold;
        config
    }
}

/// SQLite durability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SqliteSync {
    /// synchronous=FULL
    Full,
    /// synchronous=NORMAL
    Normal,
}

/// Log format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The shortest lease a worker accepts: heartbeats go every third of it.
const MIN_LEASE: Duration = Duration::from_millis(300);

/// `--lease-ttl`: a duration of at least 300 ms (refused here rather than by the worker at
/// start, which would leave a server serving without its embedded worker).
fn parse_lease(text: &str) -> Result<Duration, String> {
    let lease = parse_duration(text)?;
    if lease < MIN_LEASE {
        return Err(format!(
            "'{}' is too short: a lease lasts at least 300ms",
            text.trim()
        ));
    }
    Ok(lease)
}

/// `--concurrency`: at least 1.
fn parse_concurrency(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!(
            "'{}' is not a number of runs of at least 1",
            text.trim()
        )),
    }
}

/// Parses `<n><unit>` with unit `ms`, `s`, `m`, `h`, `d` or `w`, e.g. `500ms`, `30s`, `90d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("'{text}' needs a unit: ms, s, m, h, d or w (e.g. 30s, 90d)"))?;
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
        "w" => 604_800_000,
        other => return Err(format!("unknown unit '{other}': use ms, s, m, h, d or w")),
    };
    n.checked_mul(millis)
        .filter(|ms| *ms > 0)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("'{text}' is out of range"))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

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
        check("2w", Some(Duration::from_secs(14 * 86_400)));
        check(" 30m ", Some(Duration::from_secs(1800)));
        for bad in [
            "",
            "s",
            "d",
            "10",
            "0s",
            "0d",
            "-1s",
            "10y",
            "3x",
            "99999999999999999999h",
            "99999999999999999d",
        ] {
            check(bad, None);
        }
    }

    /// Every group at once, as a binary would flatten them.
    #[derive(Debug, Parser)]
    struct All {
        #[command(flatten)]
        database: DatabaseArgs,
        #[command(flatten)]
        keys: KeyArgs,
        #[command(flatten)]
        log: LogArgs,
        #[command(flatten)]
        providers: ProviderArgs,
        #[command(flatten)]
        engine: EngineArgs,
        #[command(flatten)]
        worker: WorkerArgs,
    }

    #[test]
    fn settings_a_worker_would_refuse_are_refused_on_the_command_line() {
        for args in [
            ["pilot", "--lease-ttl", "100ms"],
            ["pilot", "--concurrency", "0"],
            ["pilot", "--concurrency", "many"],
        ] {
            let e = All::try_parse_from(args).unwrap_err().to_string();
            assert!(e.contains(args[1]), "{args:?}: {e}");
        }
        let ok =
            All::try_parse_from(["pilot", "--lease-ttl", "300ms", "--concurrency", "1"]).unwrap();
        assert_eq!(ok.worker.lease_ttl, Duration::from_millis(300));
        assert_eq!(ok.worker.concurrency, 1);
    }

    #[test]
    fn defaults_are_the_libraries_defaults() {
        let all = All::try_parse_from(["pilot"]).unwrap();
        assert_eq!(all.engine.config(), EngineConfig::default());
        assert_eq!(all.worker.config("w"), WorkerConfig::new("w"));
        assert_eq!(
            all.database.url().unwrap(),
            format!(
                "sqlite://{}",
                PathBuf::from("pilot-data/pilot.db").display()
            )
        );
    }

    #[test]
    fn debug_output_never_shows_secret_settings() {
        let all = All::try_parse_from([
            "pilot",
            "--database-url",
            "postgres://pilot:db-pass-123@db/pilot",
            "--migration-database-url",
            "postgres://owner:owner-pass-456@db/pilot",
            "--master-key",
            "bWFzdGVyLWtleS1zZWNyZXQ=",
            "--master-keys",
            "k2:c2Vjb25kLWtleS1zZWNyZXQ=",
        ])
        .unwrap();
        let shown = format!("{all:?} {all:#?}");
        for secret in [
            "db-pass-123",
            "owner-pass-456",
            "bWFzdGVyLWtleS1zZWNyZXQ=",
            "c2Vjb25kLWtleS1zZWNyZXQ=",
        ] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("[set]"));
    }

    #[test]
    fn secrets_stay_out_of_help() {
        use clap::CommandFactory;
        let command = All::command();
        command.clone().debug_assert();
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
