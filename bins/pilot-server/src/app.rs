//! The server's wiring: turning the parsed configuration into a database handle, a keyring, a
//! provider registry and the API state, then serving, or running one operator subcommand.
//!
//! This is the one place that knows every crate: providers are registered here because
//! pilot-api must not depend on provider crates.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, bail};
use pilot_api::{ApiSettings, AppParts, AppState, ServerConfig};
use pilot_boot::{OpenOptions, open_database};
use pilot_storage::Database;
use pilot_telemetry::Metrics;

use crate::cli::{
    Cli, Command, Config, KeysCommand, LogsCommand, ServeArgs, TokensCommand, UsersCommand,
};

/// The name of the first admin's token file in the data directory.
pub(crate) const ADMIN_TOKEN_FILE: &str = "admin-token";

/// Runs the command the operator asked for.
pub(crate) fn run(cli: Cli) -> anyhow::Result<()> {
    pilot_boot::run_to_end(async move {
        match cli.command {
            None => serve(&cli.config, &cli.serve).await,
            Some(Command::Serve(args)) => serve(&cli.config, &args).await,
            Some(Command::Migrate { grant_app_role }) => {
                migrate(&cli.config, grant_app_role.as_deref()).await
            }
            Some(Command::Users(UsersCommand::Create { name, admin })) => {
                let db = open(&cli.config, false).await?;
                let user = db
                    .create_user(&name, admin)
                    .await
                    .context("creating the user")?;
                say(&format!("created user '{}' (id {})", user.name, user.id));
                say(&format!(
                    "create a token with: pilot-server tokens create --user {}",
                    user.name
                ));
                Ok(())
            }
            Some(Command::Tokens(TokensCommand::Create { user, label, out })) => {
                let db = open(&cli.config, false).await?;
                let found = db
                    .user_by_name(&user)
                    .await?
                    .with_context(|| format!("no user named '{user}'"))?;
                let (row, token) = db
                    .create_token(&found.id, &label)
                    .await
                    .context("creating the token")?;
                match out {
                    Some(path) => {
                        write_secret_file(&path, token.expose())?;
                        say(&format!(
                            "token {} for '{user}' written to {}",
                            row.id,
                            path.display()
                        ));
                    }
                    None => {
                        // Asked for explicitly, shown once: the operator's terminal is its only copy.
                        say(token.expose());
                    }
                }
                Ok(())
            }
            Some(Command::Tokens(TokensCommand::Revoke { id, user })) => {
                let db = open(&cli.config, false).await?;
                let found = db
                    .user_by_name(&user)
                    .await?
                    .with_context(|| format!("no user named '{user}'"))?;
                if !db.revoke_token(&found.id, &id).await? {
                    bail!("user '{user}' has no live token with id '{id}'");
                }
                say(&format!("revoked token {id}"));
                Ok(())
            }
            Some(Command::Keys(KeysCommand::Rotate)) => {
                let db = open(&cli.config, true).await?;
                let report = db.rotate_keys(100).await.context("rotating keys")?;
                let active = db
                    .keyring()
                    .map(|k| k.active_key_id().to_owned())
                    .unwrap_or_default();
                say(&format!(
                    "re-encrypted {} credential(s) under key '{active}'",
                    report.rotated
                ));
                Ok(())
            }
            Some(Command::ExportRuns { since }) => {
                let db = open(&cli.config, false).await?;
                let mut after = None;
                let mut count = 0u64;
                let mut out = std::io::stdout().lock();
                loop {
                    let page = db.export_runs(since, after.clone(), 200).await?;
                    let Some((last, _)) = page.last() else { break };
                    after = Some((last.created_at, last.id.as_str().to_owned()));
                    for (run, logs) in &page {
                        writeln!(out, "{}", export_line(run, logs))
                            .context("writing the archive to stdout")?;
                        count += 1;
                    }
                }
                drop(out);
                tracing::info!(runs = count, "export finished");
                Ok(())
            }
            Some(Command::Backup { to }) => {
                let db = open(&cli.config, false).await?;
                let bytes = db
                    .backup_to(&to)
                    .await
                    .with_context(|| format!("backing up to {}", to.display()))?;
                say(&format!(
                    "backup written to {} ({bytes} bytes); keep the master key with it, apart",
                    to.display()
                ));
                Ok(())
            }
            Some(Command::Logs(LogsCommand::Prune { older_than })) => {
                let db = open(&cli.config, false).await?;
                let cutoff = chrono::Duration::from_std(older_than)
                    .ok()
                    .and_then(|age| chrono::Utc::now().checked_sub_signed(age))
                    .context("--older-than reaches before the start of time")?;
                let n = db
                    .prune_logs(cutoff)
                    .await
                    .context("pruning execution logs")?;
                say(&format!(
                    "deleted {n} execution-log row(s) older than {cutoff}"
                ));
                Ok(())
            }
        }
    })
}

/// One archived run: the run, its steps' states and its log rows (outputs and previews are
/// stored redacted, so the archive holds no secret).
fn export_line(run: &pilot_storage::RunRow, logs: &[pilot_storage::LogRow]) -> serde_json::Value {
    let steps: Vec<serde_json::Value> = run
        .steps
        .iter()
        .zip(&run.states)
        .map(|(step, state)| {
            serde_json::json!({
                "id": step.id, "provider": step.provider, "action": step.action,
                "status": state.status.as_str(), "output": state.output, "error": state.error,
                "attempts": state.attempts, "latency_ms": state.latency_ms,
                "started_at": state.started_at, "finished_at": state.finished_at,
            })
        })
        .collect();
    let logs: Vec<serde_json::Value> = logs
        .iter()
        .map(|l| {
            serde_json::json!({
                "id": l.id, "step_number": l.step_number, "step_id": l.step_id,
                "provider": l.provider, "action": l.action, "attempt": l.attempt,
                "status": l.status, "message": l.message, "latency_ms": l.latency_ms,
                "output_preview": l.output_preview, "error": l.error, "timestamp": l.timestamp,
            })
        })
        .collect();
    serde_json::json!({
        "id": run.id.as_str(), "user_id": run.user_id.as_str(),
        "plan_id": run.plan_id.as_ref().map(|p| p.as_str()), "plan_name": run.plan_name,
        "trigger": run.trigger.as_str(), "status": run.status.as_str(), "error": run.error,
        "input": run.input, "created_at": run.created_at, "started_at": run.started_at,
        "finished_at": run.finished_at, "steps": steps, "logs": logs,
    })
}

/// Prints one line on stdout (operator output; never a secret unless asked for).
fn say(line: &str) {
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}

/// Opens the database (running pending migrations), with a keyring when `need_keys` or when
/// one is configured.
async fn open(config: &Config, need_keys: bool) -> anyhow::Result<Database> {
    let options = OpenOptions {
        need_keys,
        migrate_postgres: true,
        pool_size: None,
    };
    open_database(&config.database, &config.keys, options).await
}

async fn migrate(config: &Config, grant: Option<&str>) -> anyhow::Result<()> {
    let db = open(config, false).await?;
    db.migrate().await.context("running migrations")?;
    if let Some(role) = grant {
        db.grant_app_role(role)
            .await
            .context("granting the application role")?;
        say(&format!("granted role '{role}'"));
    }
    say("migrations are up to date");
    Ok(())
}

/// On a database without users: creates `admin`, writes its token to a 0600 file in the data
/// directory and prints that file's path with a curl line that reads it. The token itself is
/// never printed or logged.
async fn first_start(db: &Database, data_dir: &Path, bound: &str) -> anyhow::Result<()> {
    if db.user_count().await? > 0 {
        return Ok(());
    }
    let user = match db.create_user("admin", true).await {
        Ok(user) => user,
        // Another server sharing the database created it first.
        Err(pilot_storage::StorageError::Conflict(_)) => return Ok(()),
        Err(e) => return Err(e).context("creating the first admin user"),
    };
    let (_, token) = db.create_token(&user.id, "first start").await?;
    let path = data_dir.join(ADMIN_TOKEN_FILE);
    write_secret_file(&path, token.expose())?;
    let shown = std::path::absolute(&path).unwrap_or(path);
    say(&format!(
        "First start: created the admin user; its API token is in {}",
        shown.display()
    ));
    say(&format!(
        "Try: curl -H \"Authorization: Bearer $(cat {})\" http://{bound}/api/providers",
        shown.display()
    ));
    Ok(())
}

/// Writes a secret to `path` with mode 0600, replacing an older file atomically: the new file is
/// created exclusively under a temporary name, then renamed.
fn write_secret_file(path: &Path, secret: &str) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let temp: PathBuf = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("secret"),
        std::process::id()
    ));
    let _ = std::fs::remove_file(&temp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(&temp)
        .with_context(|| format!("creating {}", temp.display()))?;
    file.write_all(secret.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    std::fs::rename(&temp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

async fn serve(config: &Config, serve: &ServeArgs) -> anyhow::Result<()> {
    let data_dir = &config.database.data_dir;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating the data directory {}", data_dir.display()))?;
    let db = open(config, true).await?;
    let http = Arc::new(serve.providers.outbound()?);
    let registry = Arc::new(serve.providers.registry()?);
    // The embedded worker's metrics join the API's registry, so /metrics serves them too.
    let mut metrics = Metrics::new();
    let scheduler_metrics = pilot_scheduler::SchedulerMetrics::register(metrics.registry_mut());
    let settings = ApiSettings {
        body_limit: serve.body_limit,
        lease_ttl: serve.worker.lease_ttl,
        max_queue_depth: serve.max_queue_depth,
        auth_failures_per_minute: serve.auth_failures_per_minute,
        requests_per_minute: serve.requests_per_minute,
        hook_calls_per_minute: serve.hook_calls_per_minute,
        ..ApiSettings::default()
    };
    let state = AppState::new(AppParts {
        db: db.clone(),
        registry,
        http,
        engine: serve.engine.config(),
        metrics,
        settings,
    });

    let server_config = ServerConfig {
        bind: serve.bind,
        workers: serve.http_workers,
        ..ServerConfig::default()
    };
    let server = pilot_api::bind(state.clone(), &server_config)?;
    let bound = server.local_addr().to_string();
    first_start(&db, data_dir, &bound).await?;

    // One shutdown signal for everything: the HTTP server and the embedded worker.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        pilot_boot::shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };

    // The embedded worker (unless --no-worker) runs on this runtime over the same database and
    // the metered engine; the API's queue signal wakes it after a queued run commits, and the
    // shutdown signal makes it stop claiming and drain. Shutdown waits for the drain.
    let worker: Option<tokio::task::JoinHandle<()>> = if serve.no_worker {
        tracing::info!("embedded worker disabled (--no-worker)");
        None
    } else {
        let worker_config = serve
            .worker
            .config(format!("server:{}", std::process::id()));
        let worker = pilot_scheduler::Worker::new(
            worker_config,
            state.db().clone(),
            state.engine().clone(),
            state.queue_signal().clone(),
        )
        .with_metrics(scheduler_metrics);
        let stop = stopped(stop_rx.clone());
        Some(tokio::spawn(async move {
            if let Err(e) = worker.run(stop).await {
                tracing::error!(error = %e, "the embedded worker could not start");
            }
        }))
    };

    say(&format!("Pilot listening on http://{bound}"));
    tracing::info!(addr = %bound, database = db.backend().as_str(), "serving");
    server.run(stopped(stop_rx)).await?;
    tracing::info!("HTTP server stopped; waiting for the runs in flight");
    // Inline runs whose requests timed out during the stop go on to their end (their outbound
    // connections live on this runtime, which outlives the HTTP workers).
    state.drain_work().await;
    if let Some(worker) = worker {
        let _ = worker.await;
    }
    tracing::info!("stopped");
    Ok(())
}
