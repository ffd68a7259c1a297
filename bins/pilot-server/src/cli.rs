//! The command line: every setting as a flag with an environment-variable fallback, parsed once
//! by clap. Values of secret settings (database URLs, which may carry passwords, and master
//! keys) are never shown by `--help`: their env values are hidden.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Pilot: a self-hosted automation server. Without a subcommand it serves the API (and runs an
/// embedded worker) on the embedded SQLite default under ./pilot-data.
#[derive(Debug, Parser)]
#[command(name = "pilot-server", version, about, long_about = None)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) config: Config,

    #[command(flatten)]
    pub(crate) serve: ServeArgs,

    #[command(subcommand)]
    pub(crate) command: Option<Command>,
}

/// Settings shared by every subcommand. `Debug` is written by hand: database URLs may carry
/// passwords and master keys are secrets, so it shows only whether they are set.
#[derive(Args)]
pub(crate) struct Config {
    /// Database URL: `postgres://user:pass@host/db`, or a SQLite file (`sqlite://path` or a
    /// plain path). Default: a SQLite file `pilot.db` in the data directory.
    #[arg(
        long,
        global = true,
        env = "PILOT_DATABASE_URL",
        hide_env_values = true
    )]
    pub(crate) database_url: Option<String>,

    /// File holding the database URL (instead of PILOT_DATABASE_URL).
    #[arg(
        long,
        global = true,
        env = "PILOT_DATABASE_URL_FILE",
        conflicts_with = "database_url"
    )]
    pub(crate) database_url_file: Option<PathBuf>,

    /// Owner-role database URL used to run migrations (PostgreSQL two-role setup). Default: the
    /// database URL.
    #[arg(
        long,
        global = true,
        env = "PILOT_MIGRATION_DATABASE_URL",
        hide_env_values = true
    )]
    pub(crate) migration_database_url: Option<String>,

    /// Directory for the embedded database, the generated master key and the first admin token.
    #[arg(
        long,
        global = true,
        env = "PILOT_DATA_DIR",
        default_value = "pilot-data"
    )]
    pub(crate) data_dir: PathBuf,

    /// Master key for credential encryption: base64 of 32 bytes (key id `k1`). Without any key
    /// setting, the embedded SQLite default generates one into the data directory.
    #[arg(long, global = true, env = "PILOT_MASTER_KEY", hide_env_values = true)]
    pub(crate) master_key: Option<String>,

    /// File holding the master key (instead of PILOT_MASTER_KEY).
    #[arg(long, global = true, env = "PILOT_MASTER_KEY_FILE")]
    pub(crate) master_key_file: Option<PathBuf>,

    /// Several master keys, `id:base64,id:base64`, for rotation; new values use the active one.
    #[arg(long, global = true, env = "PILOT_MASTER_KEYS", hide_env_values = true)]
    pub(crate) master_keys: Option<String>,

    /// File holding PILOT_MASTER_KEYS's value.
    #[arg(long, global = true, env = "PILOT_MASTER_KEYS_FILE")]
    pub(crate) master_keys_file: Option<PathBuf>,

    /// Which of PILOT_MASTER_KEYS encrypts new values.
    #[arg(long, global = true, env = "PILOT_ACTIVE_KEY_ID")]
    pub(crate) active_key_id: Option<String>,

    /// SQLite durability: `full` (default; an answered request survives a power loss) or
    /// `normal` (faster; the last commits may be lost on power loss, never on a crash).
    #[arg(long, global = true, env = "PILOT_SQLITE_SYNC", value_enum, default_value_t = SqliteSync::Full)]
    pub(crate) sqlite_sync: SqliteSync,

    /// Log format.
    #[arg(long, global = true, env = "PILOT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub(crate) log_format: LogFormat,

    /// Log filter (tracing `EnvFilter` syntax), e.g. `info` or `pilot_api=debug,info`.
    #[arg(long, global = true, env = "PILOT_LOG", default_value = "info")]
    pub(crate) log: String,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = |v: &Option<String>| v.as_ref().map(|_| "[set]");
        f.debug_struct("Config")
            .field("database_url", &set(&self.database_url))
            .field("database_url_file", &self.database_url_file)
            .field("migration_database_url", &set(&self.migration_database_url))
            .field("data_dir", &self.data_dir)
            .field("master_key", &set(&self.master_key))
            .field("master_key_file", &self.master_key_file)
            .field("master_keys", &set(&self.master_keys))
            .field("master_keys_file", &self.master_keys_file)
            .field("active_key_id", &self.active_key_id)
            .field("sqlite_sync", &self.sqlite_sync)
            .field("log_format", &self.log_format)
            .field("log", &self.log)
            .finish()
    }
}

/// Settings of `serve` (also accepted before any subcommand, since serving is the default).
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on (port 0 picks a free one; the bound address is printed).
    #[arg(
        long,
        global = true,
        env = "PILOT_BIND",
        default_value = "127.0.0.1:8080"
    )]
    pub(crate) bind: SocketAddr,

    /// Largest request body accepted, in bytes (larger ones get 413).
    #[arg(long, global = true, env = "PILOT_BODY_LIMIT", default_value_t = pilot_api::DEFAULT_BODY_LIMIT)]
    pub(crate) body_limit: usize,

    /// Address ranges outgoing requests may reach despite the default block of loopback,
    /// private, link-local and metadata addresses: comma-separated CIDRs, e.g. `10.1.0.0/16`.
    #[arg(long, global = true, env = "PILOT_OUTBOUND_ALLOW", default_value = "")]
    pub(crate) outbound_allow: String,

    /// Base URL of an OpenAI-compatible server for the `openai` provider (trusted config).
    #[arg(long, global = true, env = "PILOT_OPENAI_BASE_URL")]
    pub(crate) openai_base_url: Option<url::Url>,

    /// Base URL for the `groq` provider (trusted config).
    #[arg(long, global = true, env = "PILOT_GROQ_BASE_URL")]
    pub(crate) groq_base_url: Option<url::Url>,

    /// Do not run the embedded worker (run `pilot-worker` processes instead).
    #[arg(long, global = true, env = "PILOT_NO_WORKER")]
    pub(crate) no_worker: bool,

    /// HTTP worker threads (0: one per CPU core).
    #[arg(long, global = true, env = "PILOT_HTTP_WORKERS", default_value_t = 0)]
    pub(crate) http_workers: usize,

    /// The most bytes (compact JSON) one step's output may take; a larger output fails the step.
    #[arg(long, global = true, env = "PILOT_MAX_OUTPUT_BYTES",
          default_value_t = pilot_engine::EngineConfig::default().max_output_bytes)]
    pub(crate) max_output_bytes: usize,

    /// The most bytes all step outputs of one run may take together, and a step's resolved
    /// params at most; beyond it the step fails.
    #[arg(long, global = true, env = "PILOT_MAX_RUN_STATE_BYTES",
          default_value_t = pilot_engine::EngineConfig::default().max_run_state_bytes)]
    pub(crate) max_run_state_bytes: usize,

    /// Above this many queued runs, async submissions (`async: true`, inbound webhooks) get 503
    /// with Retry-After instead of growing the queue without bound; 0: no limit.
    #[arg(long, global = true, env = "PILOT_MAX_QUEUE_DEPTH", default_value_t = pilot_api::DEFAULT_MAX_QUEUE_DEPTH)]
    pub(crate) max_queue_depth: u64,

    /// Failed authentications allowed per minute from one client address (and with one token
    /// prefix); past it, tokens not seen to succeed get 429 without a lookup. 0: no limit.
    #[arg(long, global = true, env = "PILOT_AUTH_FAILURES_PER_MINUTE", default_value_t = pilot_api::ApiSettings::default().auth_failures_per_minute)]
    pub(crate) auth_failures_per_minute: u32,

    /// API requests allowed per minute per user (429 with RateLimit headers past it). 0: no
    /// limit.
    #[arg(long, global = true, env = "PILOT_REQUESTS_PER_MINUTE", default_value_t = pilot_api::ApiSettings::default().requests_per_minute)]
    pub(crate) requests_per_minute: u32,

    /// Calls allowed per minute per inbound webhook. 0: no limit.
    #[arg(long, global = true, env = "PILOT_HOOK_CALLS_PER_MINUTE", default_value_t = pilot_api::ApiSettings::default().hook_calls_per_minute)]
    pub(crate) hook_calls_per_minute: u32,

    /// Most runs of one user the embedded worker (and any worker) lets execute at once; 0: no
    /// cap.
    #[arg(
        long,
        global = true,
        env = "PILOT_MAX_RUNNING_PER_USER",
        default_value_t = 0
    )]
    pub(crate) max_running_per_user: u32,

    /// The embedded worker deletes finished runs (with their step states) older than this, e.g.
    /// `90d`, every hour in small batches; kept when unset.
    #[arg(long, global = true, env = "PILOT_RETAIN_RUNS", value_parser = parse_age)]
    pub(crate) retain_runs: Option<chrono::Duration>,

    /// The embedded worker deletes execution-log rows older than this, e.g. `90d`, every hour
    /// (as the migration URL's owner role on PostgreSQL); kept when unset.
    #[arg(long, global = true, env = "PILOT_RETAIN_LOGS", value_parser = parse_age)]
    pub(crate) retain_logs: Option<chrono::Duration>,

    /// Takeovers allowed per run: a run whose worker died (its lease expired) more often than
    /// this is quarantined, failed with a message saying so, instead of crashing the next worker.
    #[arg(long, global = true, env = "PILOT_MAX_TAKEOVERS", default_value_t = pilot_scheduler::WorkerConfig::DEFAULT_MAX_TAKEOVERS)]
    pub(crate) max_takeovers: u32,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Serve the API (the default).
    Serve,
    /// Run pending database migrations and exit.
    Migrate {
        /// PostgreSQL: grant this application role what it needs after migrating.
        #[arg(long)]
        grant_app_role: Option<String>,
    },
    /// Manage users.
    #[command(subcommand)]
    Users(UsersCommand),
    /// Manage API tokens.
    #[command(subcommand)]
    Tokens(TokensCommand),
    /// Manage master keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Manage execution logs.
    #[command(subcommand)]
    Logs(LogsCommand),
    /// Write a consistent copy of the SQLite database to a new file while the server runs
    /// (PostgreSQL: use pg_dump). The copy is a complete database: restore it by pointing
    /// `--database-url` (or the data directory) at it, with the same master key.
    Backup {
        /// The file to create (it must not exist).
        #[arg(long)]
        to: std::path::PathBuf,
    },
    /// Write every user's runs created since a time, with their steps and execution-log rows,
    /// as one JSON object a line on stdout (an archive to keep before pruning), oldest first.
    ExportRuns {
        /// An RFC 3339 time (`2026-11-01T00:00:00Z`) or an age (`30d`, `12h`).
        #[arg(long, value_parser = parse_since)]
        since: chrono::DateTime<chrono::Utc>,
    },
}

/// `users ...`
#[derive(Debug, Subcommand)]
pub(crate) enum UsersCommand {
    /// Create a user.
    Create {
        /// The user's unique name.
        name: String,
        /// Make the user an administrator.
        #[arg(long)]
        admin: bool,
    },
}

/// `tokens ...`
#[derive(Debug, Subcommand)]
pub(crate) enum TokensCommand {
    /// Create an API token for a user. The token is written to `--out` (mode 0600) or, without
    /// it, printed once on stdout.
    Create {
        /// The user's name.
        #[arg(long)]
        user: String,
        /// A label to recognise the token by.
        #[arg(long, default_value = "cli")]
        label: String,
        /// Write the token to this file (created with mode 0600) instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Revoke a token by its id.
    Revoke {
        /// The token's id.
        id: String,
        /// The token owner's name.
        #[arg(long)]
        user: String,
    },
}

/// `keys ...`
#[derive(Debug, Subcommand)]
pub(crate) enum KeysCommand {
    /// Re-encrypt every stored credential under the active key (resumable).
    Rotate,
}

/// `logs ...`
#[derive(Debug, Subcommand)]
pub(crate) enum LogsCommand {
    /// Delete execution-log rows older than a duration (the only path that deletes them).
    Prune {
        /// Age, e.g. `90d`, `12h`, `2w`, `30m`.
        #[arg(long, value_parser = parse_age)]
        older_than: chrono::Duration,
    },
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

/// Parses `<n><unit>` with unit `s`, `m`, `h`, `d` or `w`.
/// `--since`: an RFC 3339 time, or an age counted back from now.
pub(crate) fn parse_since(text: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    if let Ok(at) = chrono::DateTime::parse_from_rfc3339(text.trim()) {
        return Ok(at.with_timezone(&chrono::Utc));
    }
    parse_age(text)
        .map(|age| chrono::Utc::now() - age)
        .map_err(|e| format!("{e}; or give an RFC 3339 time such as 2026-11-01T00:00:00Z"))
}

pub(crate) fn parse_age(text: &str) -> Result<chrono::Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("'{text}' needs a unit: s, m, h, d or w (e.g. 90d)"))?;
    let (number, unit) = text.split_at(split);
    let n: i64 = number
        .parse()
        .map_err(|_| format!("'{text}' does not start with a number"))?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 604_800,
        other => return Err(format!("unknown unit '{other}': use s, m, h, d or w")),
    };
    n.checked_mul(seconds)
        .filter(|s| *s > 0)
        .and_then(chrono::Duration::try_seconds)
        .ok_or_else(|| format!("'{text}' is out of range"))
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
    fn ages() {
        assert_eq!(parse_age("90d").unwrap(), chrono::Duration::days(90));
        assert_eq!(parse_age("2w").unwrap(), chrono::Duration::weeks(2));
        assert_eq!(parse_age("30m").unwrap(), chrono::Duration::minutes(30));
        for bad in ["", "d", "10", "10y", "-1d", "0d", "99999999999999999d"] {
            assert!(parse_age(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn debug_output_never_shows_secret_settings() {
        let cli = Cli::try_parse_from([
            "pilot-server",
            "--database-url",
            "postgres://pilot:db-pass-123@db/pilot",
            "--migration-database-url",
            "postgres://owner:owner-pass-456@db/pilot",
            "--master-key",
            "bWFzdGVyLWtleS1zZWNyZXQ=",
        ])
        .unwrap();
        let shown = format!("{cli:?} {cli:#?}");
        for secret in ["db-pass-123", "owner-pass-456", "bWFzdGVyLWtleS1zZWNyZXQ="] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("[set]"));
    }

    #[test]
    fn serve_is_the_default() {
        let cli = Cli::try_parse_from(["pilot-server"]).unwrap();
        assert!(cli.command.is_none());
        let cli =
            Cli::try_parse_from(["pilot-server", "logs", "prune", "--older-than", "7d"]).unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::Logs(LogsCommand::Prune { .. }))
        ));
    }
}
