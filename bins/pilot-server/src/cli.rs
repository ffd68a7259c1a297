//! The command line: every setting as a flag with an environment-variable fallback, parsed once
//! by clap. Values of secret settings (database URLs, which may carry passwords, and master
//! keys) are never shown by `--help`: their env values are hidden.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, CommandFactory as _, FromArgMatches as _, Parser, Subcommand};
use pilot_boot::{
    DatabaseArgs, EngineArgs, KeyArgs, LogArgs, ProviderArgs, WorkerArgs, parse_duration,
};

/// Pilot: a self-hosted automation server. Without a subcommand it serves the API (and runs an
/// embedded worker) on the embedded SQLite default under ./pilot-data.
#[derive(Debug, Parser)]
#[command(name = "pilot-server", version, about, long_about = None)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) config: Config,

    /// Serving's settings, given before any subcommand (serving is the default) or after
    /// `serve`.
    #[command(flatten)]
    pub(crate) serve: ServeArgs,

    #[command(subcommand)]
    pub(crate) command: Option<Command>,
}

impl Cli {
    /// Parses the process's arguments, exiting with clap's message on an error. Serving's
    /// settings go either before any subcommand or after `serve`: given before `serve` they
    /// would be silently replaced by the subcommand's own, so that is refused.
    pub(crate) fn parse_args() -> Self {
        match Self::check(Self::command().get_matches()) {
            Ok(cli) => cli,
            Err(e) => e.exit(),
        }
    }

    fn check(matches: clap::ArgMatches) -> Result<Self, clap::Error> {
        if matches.subcommand_name() == Some("serve") {
            let before: Vec<String> = ServeArgs::augment_args(clap::Command::new("serve"))
                .get_arguments()
                .map(|a| a.get_id().to_string())
                .filter(|id| {
                    matches.value_source(id) == Some(clap::parser::ValueSource::CommandLine)
                })
                .collect();
            if let Some(id) = before.first() {
                return Err(Self::command().error(
                    clap::error::ErrorKind::ArgumentConflict,
                    format!(
                        "--{} is a serving setting given before `serve`: put it after `serve` \
                         (or leave `serve` out: serving is the default)",
                        id.replace('_', "-")
                    ),
                ));
            }
        }
        Self::from_arg_matches(&matches)
    }
}

/// Settings every subcommand reads: the database, its keys, and logging.
#[derive(Debug, Args)]
pub(crate) struct Config {
    #[command(flatten)]
    pub(crate) database: DatabaseArgs,

    #[command(flatten)]
    pub(crate) keys: KeyArgs,

    #[command(flatten)]
    pub(crate) log: LogArgs,
}

/// Settings of serving: the API, the providers, the engine and the embedded worker.
#[derive(Debug, Args)]
#[command(next_help_heading = "Serving")]
pub(crate) struct ServeArgs {
    /// Address to listen on (port 0 picks a free one; the bound address is printed).
    #[arg(long, env = "PILOT_BIND", default_value = "127.0.0.1:8080")]
    pub(crate) bind: SocketAddr,

    /// Largest request body accepted, in bytes (larger ones get 413).
    #[arg(long, env = "PILOT_BODY_LIMIT", default_value_t = pilot_api::DEFAULT_BODY_LIMIT)]
    pub(crate) body_limit: usize,

    /// Do not run the embedded worker (run `pilot-worker` processes instead).
    #[arg(long, env = "PILOT_NO_WORKER")]
    pub(crate) no_worker: bool,

    /// HTTP worker threads (0: one per CPU core).
    #[arg(long, env = "PILOT_HTTP_WORKERS", default_value_t = 0)]
    pub(crate) http_workers: usize,

    /// Above this many queued runs, async submissions (`async: true`, inbound webhooks) get 503
    /// with Retry-After instead of growing the queue without bound; 0: no limit.
    #[arg(long, env = "PILOT_MAX_QUEUE_DEPTH", default_value_t = pilot_api::DEFAULT_MAX_QUEUE_DEPTH)]
    pub(crate) max_queue_depth: u64,

    /// Failed authentications allowed per minute from one client address (and with one token
    /// prefix); past it, tokens not seen to succeed get 429 without a lookup. 0: no limit.
    #[arg(long, env = "PILOT_AUTH_FAILURES_PER_MINUTE", default_value_t = pilot_api::ApiSettings::default().auth_failures_per_minute)]
    pub(crate) auth_failures_per_minute: u32,

    /// API requests allowed per minute per user (429 with RateLimit headers past it). 0: no
    /// limit.
    #[arg(long, env = "PILOT_REQUESTS_PER_MINUTE", default_value_t = pilot_api::ApiSettings::default().requests_per_minute)]
    pub(crate) requests_per_minute: u32,

    /// Calls allowed per minute per inbound webhook. 0: no limit.
    #[arg(long, env = "PILOT_HOOK_CALLS_PER_MINUTE", default_value_t = pilot_api::ApiSettings::default().hook_calls_per_minute)]
    pub(crate) hook_calls_per_minute: u32,

    #[command(flatten)]
    pub(crate) providers: ProviderArgs,

    #[command(flatten)]
    pub(crate) engine: EngineArgs,

    /// The embedded worker's settings; `--lease-ttl` is also the lease of inline runs.
    #[command(flatten)]
    pub(crate) worker: WorkerArgs,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Serve the API (the default).
    Serve(Box<ServeArgs>),
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
        #[arg(long, value_parser = parse_duration)]
        older_than: std::time::Duration,
    },
}

/// `--since`: an RFC 3339 time, or an age counted back from now (`30d`, `12h`).
pub(crate) fn parse_since(text: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    if let Ok(at) = chrono::DateTime::parse_from_rfc3339(text.trim()) {
        return Ok(at.with_timezone(&chrono::Utc));
    }
    parse_duration(text)
        .ok()
        .and_then(|age| chrono::Duration::from_std(age).ok())
        .and_then(|age| chrono::Utc::now().checked_sub_signed(age))
        .ok_or_else(|| {
            format!(
                "'{}' is neither an age (30d, 12h) nor an RFC 3339 time such as \
                 2026-11-01T00:00:00Z",
                text.trim()
            )
        })
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
    fn since_takes_a_time_or_an_age() {
        let at = parse_since("2026-11-01T00:00:00Z").unwrap();
        assert_eq!(at.to_rfc3339(), "2026-11-01T00:00:00+00:00");
        let ago = chrono::Utc::now() - parse_since("30d").unwrap();
        assert!(
            (ago - chrono::Duration::days(30)).num_seconds().abs() < 60,
            "{ago}"
        );
        for bad in ["", "yesterday", "30", "2026-11-01"] {
            let e = parse_since(bad).unwrap_err();
            assert!(e.contains("RFC 3339"), "{bad}: {e}");
        }
    }

    /// The long help of the subcommand at `path` (empty: the top level).
    fn help(path: &[&str]) -> String {
        let mut command = Cli::command();
        // Builds every subcommand, with the global arguments propagated to it.
        command.build();
        for name in path {
            command = command.find_subcommand(name).unwrap().clone();
        }
        command.render_long_help().to_string()
    }

    #[test]
    fn a_subcommands_help_lists_only_what_it_reads() {
        let serving = [
            "--bind",
            "--outbound-allow",
            "--lease-ttl",
            "--concurrency",
            "--run-timeout",
        ];
        for path in [&[][..], &["serve"][..]] {
            let text = help(path);
            for flag in serving
                .iter()
                .chain(&["--database-url", "--master-key", "--log"])
            {
                assert!(text.contains(flag), "{path:?} --help lacks {flag}");
            }
        }
        for path in [
            &["users", "create"][..],
            &["logs", "prune"][..],
            &["migrate"][..],
        ] {
            let text = help(path);
            assert!(text.contains("--database-url"), "{path:?}: {text}");
            for flag in serving {
                assert!(
                    !text.contains(flag),
                    "{path:?} --help lists {flag}, which it ignores"
                );
            }
        }
    }

    #[test]
    fn serve_takes_its_settings_after_the_subcommand_too() {
        let cli = Cli::try_parse_from([
            "pilot-server",
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--lease-ttl",
            "10s",
        ])
        .unwrap();
        let Some(Command::Serve(args)) = cli.command else {
            panic!("not serve: {:?}", cli.command);
        };
        assert_eq!(args.bind.port(), 0);
        assert_eq!(args.worker.lease_ttl, std::time::Duration::from_secs(10));
        assert!(
            Cli::try_parse_from([
                "pilot-server",
                "users",
                "create",
                "x",
                "--bind",
                "127.0.0.1:0"
            ])
            .is_err()
        );
        // Before `serve`, a serving setting would be replaced by serve's own: refused.
        let before =
            Cli::command().get_matches_from(["pilot-server", "--bind", "127.0.0.1:0", "serve"]);
        let e = Cli::check(before).unwrap_err().to_string();
        assert!(e.contains("--bind") && e.contains("after `serve`"), "{e}");
        let plain = Cli::command().get_matches_from(["pilot-server", "--bind", "127.0.0.1:0"]);
        assert_eq!(Cli::check(plain).unwrap().serve.bind.port(), 0);
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
