//! The databases the benchmark runs Pilot on, and how it reads them back.
//!
//! The harness counts what was recorded straight from the database (runs, step states,
//! execution-log rows, schedules), because counting through the API under test would trust
//! what is being checked. It talks to the databases through their own command-line clients
//! (`sqlite3`, `psql`) so xtask needs no database driver: only pilot-storage knows diesel.
//!
//! PostgreSQL: each server gets a fresh database owned by a fresh login role (not a
//! superuser, so row-level security binds it as it binds a one-machine deployment), both named
//! `pilot_bench_<pid>_<n>` and dropped afterwards. Leftovers of runs whose process is gone are
//! dropped when a run starts.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context as _, Result, bail};

/// The two storage backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// The name shown in reports.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Sqlite => "SQLite",
            Self::Postgres => "PostgreSQL",
        }
    }
}

/// The separator between columns in the clients' output (ASCII unit separator).
const SEP: &str = "\u{1f}";

/// One database a Pilot server runs on.
pub(crate) struct Database {
    backend: Backend,
    /// What `PILOT_DATABASE_URL` is set to.
    url: String,
    /// SQLite: the file; PostgreSQL: the superuser URL of this database, for counting.
    target: String,
    /// PostgreSQL: the server's admin URL and the database and role to drop.
    cleanup: Option<(String, String)>,
    keep: bool,
}

impl Database {
    /// A SQLite database in a new file `path` (the server creates it).
    pub(crate) fn sqlite(path: &Path) -> Database {
        Database {
            backend: Backend::Sqlite,
            url: format!("sqlite://{}", path.display()),
            target: path.display().to_string(),
            cleanup: None,
            keep: false,
        }
    }

    pub(crate) fn backend(&self) -> Backend {
        self.backend
    }

    /// The URL Pilot connects with.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// What the harness's client opens: the SQLite file, or a superuser URL of this database.
    pub(crate) fn client_target(&self) -> &str {
        &self.target
    }

    /// PostgreSQL: the database's name.
    pub(crate) fn pg_name(&self) -> Option<&str> {
        self.cleanup.as_ref().map(|(_, name)| name.as_str())
    }

    /// PostgreSQL: the process ids of the backends connected to this database as its own role
    /// (the server's and workers' pools; not the harness's superuser sessions). Empty on SQLite.
    pub(crate) fn backend_pids(&self) -> Result<Vec<u32>> {
        let Some((_, name)) = &self.cleanup else {
            return Ok(Vec::new());
        };
        let rows = self.query(&format!(
            "SELECT pid FROM pg_stat_activity WHERE datname = '{name}' AND usename = '{name}'"
        ))?;
        Ok(rows
            .iter()
            .filter_map(|r| r.first()?.parse().ok())
            .collect())
    }

    /// Runs `sql` and returns the rows of its last statement, each as its columns' text (NULL
    /// is the empty string).
    pub(crate) fn query(&self, sql: &str) -> Result<Vec<Vec<String>>> {
        let output = match self.backend {
            Backend::Sqlite => Command::new("sqlite3")
                .args([
                    "-batch",
                    "-bail",
                    "-noheader",
                    "-separator",
                    SEP,
                    "-cmd",
                    ".timeout 10000",
                ])
                .arg(&self.target)
                .arg(sql)
                .stdin(Stdio::null())
                .output()
                .context("running sqlite3 (is it installed?)")?,
            Backend::Postgres => psql(&self.target, sql)?,
        };
        if !output.status.success() {
            bail!(
                "{} failed on `{}`: {}",
                self.backend.label(),
                sql,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(rows(&String::from_utf8_lossy(&output.stdout)))
    }

    /// Runs `sql` and reads the first column of its first row as a number (NULL is 0).
    pub(crate) fn number(&self, sql: &str) -> Result<f64> {
        let rows = self.query(sql)?;
        let text = rows
            .first()
            .and_then(|r| r.first())
            .map(String::as_str)
            .unwrap_or("");
        if text.is_empty() {
            return Ok(0.0);
        }
        text.parse()
            .with_context(|| format!("`{sql}` returned '{text}', not a number"))
    }

    /// Like [`Database::number`], for counts.
    pub(crate) fn count(&self, sql: &str) -> Result<u64> {
        Ok(self.number(sql)?.max(0.0) as u64)
    }

    /// Runs `sql` and reads the first column of every row as a number (NULLs skipped).
    pub(crate) fn numbers(&self, sql: &str) -> Result<Vec<f64>> {
        let mut out = Vec::new();
        for row in self.query(sql)? {
            let text = row.first().map(String::as_str).unwrap_or("");
            if !text.is_empty() {
                out.push(
                    text.parse()
                        .with_context(|| format!("`{sql}` returned '{text}', not a number"))?,
                );
            }
        }
        Ok(out)
    }

    /// An SQL expression for the milliseconds from timestamp column `from` to `to`.
    pub(crate) fn ms_between(&self, from: &str, to: &str) -> String {
        match self.backend {
            // Stored as UTC text; julianday keeps about 50 microseconds of precision today.
            Backend::Sqlite => format!("((julianday({to}) - julianday({from})) * 86400000.0)"),
            Backend::Postgres => format!("(extract(epoch from ({to} - {from})) * 1000.0)"),
        }
    }

    /// Leaves the PostgreSQL database and role in place when dropped (for `--keep`).
    pub(crate) fn keep(&mut self) {
        self.keep = true;
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        if let Some((admin, name)) = &self.cleanup {
            drop_database(admin, name);
        }
    }
}

/// Splits client output into rows and columns.
fn rows(stdout: &str) -> Vec<Vec<String>> {
    stdout
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| l.split(SEP).map(str::to_owned).collect())
        .collect()
}

fn psql(url: &str, sql: &str) -> Result<std::process::Output> {
    Command::new("psql")
        .args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-F",
            SEP,
            "-d",
            url,
            "-c",
            sql,
        ])
        .env("PGCONNECT_TIMEOUT", "5")
        .stdin(Stdio::null())
        .output()
        .context("running psql (is it installed?)")
}

/// The PostgreSQL server the benchmark may use, through a superuser URL.
pub(crate) struct Postgres {
    admin_url: String,
}

static NEXT_DB: AtomicU32 = AtomicU32::new(0);

impl Postgres {
    /// The server at `admin_url` (a superuser, e.g. `postgres://postgres@127.0.0.1:5432/test`).
    /// Only loopback addresses are accepted: the benchmark talks to nothing else.
    pub(crate) fn new(admin_url: &str) -> Result<Postgres> {
        let (_, host_port, _) = split_url(admin_url)?;
        let host = host_port
            .rsplit_once(':')
            .map_or(host_port.as_str(), |(h, _)| h);
        if host != "127.0.0.1" {
            bail!("the benchmark connects only to 127.0.0.1, not to '{host}' ({admin_url})");
        }
        Ok(Postgres {
            admin_url: admin_url.to_owned(),
        })
    }

    /// The URL, for messages (it carries no password on this machine; strip one anyway).
    pub(crate) fn shown_url(&self) -> String {
        match split_url(&self.admin_url) {
            Ok((user, host, db)) => format!(
                "postgres://{}@{host}/{db}",
                user.split(':').next().unwrap_or("")
            ),
            Err(_) => "(unparsable URL)".to_owned(),
        }
    }

    /// Whether the server answers a query; the error says why not.
    pub(crate) fn check(&self) -> Result<()> {
        let output = psql(&self.admin_url, "SELECT 1")?;
        if output.status.success() {
            Ok(())
        } else {
            bail!("{}", String::from_utf8_lossy(&output.stderr).trim())
        }
    }

    /// Runs `sql` as the superuser on the admin database.
    pub(crate) fn query(&self, sql: &str) -> Result<Vec<Vec<String>>> {
        let output = psql(&self.admin_url, sql)?;
        if !output.status.success() {
            bail!(
                "PostgreSQL failed on `{sql}`: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(rows(&String::from_utf8_lossy(&output.stdout)))
    }

    /// One setting's value (`fsync`, `synchronous_commit`, `server_version`...).
    pub(crate) fn setting(&self, name: &str) -> Result<String> {
        let rows = self.query(&format!("SHOW {name}"))?;
        Ok(rows
            .first()
            .and_then(|r| r.first())
            .cloned()
            .unwrap_or_default())
    }

    /// Creates a fresh role and database owned by it, both named `pilot_bench_<pid>_<n>`.
    pub(crate) fn fresh_database(&self) -> Result<Database> {
        let name = format!(
            "pilot_bench_{}_{}",
            std::process::id(),
            NEXT_DB.fetch_add(1, Ordering::Relaxed)
        );
        self.query(&format!("CREATE ROLE {name} LOGIN NOSUPERUSER NOBYPASSRLS"))?;
        if let Err(e) = self.query(&format!("CREATE DATABASE {name} OWNER {name}")) {
            drop_database(&self.admin_url, &name);
            return Err(e);
        }
        let (_, host_port, _) = split_url(&self.admin_url)?;
        Ok(Database {
            backend: Backend::Postgres,
            url: format!("postgres://{name}@{host_port}/{name}"),
            target: with_database(&self.admin_url, &name)?,
            cleanup: Some((self.admin_url.clone(), name)),
            keep: false,
        })
    }

    /// Drops the databases and roles of earlier runs whose process no longer exists.
    pub(crate) fn drop_leftovers(&self) -> Result<Vec<String>> {
        let mut dropped = Vec::new();
        let names = self.query(
            "SELECT datname FROM pg_database WHERE datname LIKE 'pilot\\_bench\\_%' \
             UNION SELECT rolname FROM pg_roles WHERE rolname LIKE 'pilot\\_bench\\_%'",
        )?;
        for row in names {
            let Some(name) = row.into_iter().next() else {
                continue;
            };
            let pid = name
                .trim_start_matches("pilot_bench_")
                .split('_')
                .next()
                .unwrap_or("");
            let alive = !pid.is_empty() && Path::new("/proc").join(pid).exists();
            if !alive && !dropped.contains(&name) {
                drop_database(&self.admin_url, &name);
                dropped.push(name);
            }
        }
        Ok(dropped)
    }

    /// Transactions committed and rolled back in database `name` so far (PostgreSQL's
    /// statistics, flushed by each backend at most once a second).
    pub(crate) fn transactions(&self, name: &str) -> Result<u64> {
        let rows = self.query(&format!(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = '{name}'"
        ))?;
        let text = rows
            .first()
            .and_then(|r| r.first())
            .cloned()
            .unwrap_or_default();
        text.parse()
            .with_context(|| format!("no statistics for database {name}"))
    }
}

fn drop_database(admin_url: &str, name: &str) {
    // Best effort: a failure leaves a leftover that the next run drops.
    let _ = psql(
        admin_url,
        &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
    );
    let _ = psql(admin_url, &format!("DROP ROLE IF EXISTS {name}"));
}

/// Splits `postgres://user@host:port/db?query` into (user, host:port, db).
fn split_url(url: &str) -> Result<(String, String, String)> {
    let rest = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
        .with_context(|| format!("not a postgres:// URL: {url}"))?;
    let rest = rest.split('?').next().unwrap_or(rest);
    let (authority, db) = rest.split_once('/').unwrap_or((rest, ""));
    let (user, host) = authority.rsplit_once('@').unwrap_or(("", authority));
    if host.is_empty() {
        bail!("no host in {url}");
    }
    Ok((user.to_owned(), host.to_owned(), db.to_owned()))
}

/// The same URL naming another database.
fn with_database(url: &str, name: &str) -> Result<String> {
    let (user, host, _) = split_url(url)?;
    let query = url
        .split_once('?')
        .map(|(_, q)| format!("?{q}"))
        .unwrap_or_default();
    let user = if user.is_empty() {
        String::new()
    } else {
        format!("{user}@")
    };
    Ok(format!("postgres://{user}{host}/{name}{query}"))
}

/// A fresh SQLite file path under `dir`.
pub(crate) fn sqlite_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.db"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_and_rename() {
        let check = |url: &str, expect: (&str, &str, &str)| {
            let (u, h, d) = split_url(url).unwrap();
            assert_eq!((u.as_str(), h.as_str(), d.as_str()), expect, "{url}");
        };
        check(
            "postgres://postgres@127.0.0.1:5432/test",
            ("postgres", "127.0.0.1:5432", "test"),
        );
        check(
            "postgresql://u:p@127.0.0.1/db?sslmode=disable",
            ("u:p", "127.0.0.1", "db"),
        );
        check("postgres://127.0.0.1:5432", ("", "127.0.0.1:5432", ""));
        assert!(split_url("mysql://x/y").is_err());
        assert_eq!(
            with_database(
                "postgres://postgres@127.0.0.1:5432/test?sslmode=disable",
                "b1"
            )
            .unwrap(),
            "postgres://postgres@127.0.0.1:5432/b1?sslmode=disable"
        );
        assert!(Postgres::new("postgres://postgres@10.0.0.5:5432/test").is_err());
        assert_eq!(
            Postgres::new("postgres://u:secret@127.0.0.1:5432/t")
                .unwrap()
                .shown_url(),
            "postgres://u@127.0.0.1:5432/t"
        );
    }

    #[test]
    fn client_output_splits_into_rows() {
        assert_eq!(
            rows("1\u{1f}a\n\n2\u{1f}\n"),
            vec![
                vec!["1".to_owned(), "a".to_owned()],
                vec!["2".to_owned(), String::new()]
            ]
        );
    }

    #[test]
    fn sqlite_queries_count_and_time() {
        let dir = std::env::temp_dir().join(format!("xtask-bench-db-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = sqlite_path(&dir, "t");
        let _ = std::fs::remove_file(&path);
        let db = Database::sqlite(&path);
        db.query("CREATE TABLE r (a TEXT, b TEXT); INSERT INTO r VALUES ('2025-01-01 00:00:00.000000', '2025-01-01 00:00:01.250000'), ('2025-01-01 00:00:00', NULL)").unwrap();
        assert_eq!(db.count("SELECT count(*) FROM r").unwrap(), 2);
        assert_eq!(
            db.count("SELECT sum(1) FROM r WHERE a = 'none'").unwrap(),
            0
        );
        let ms = db
            .numbers(&format!("SELECT {} FROM r", db.ms_between("a", "b")))
            .unwrap();
        assert_eq!(ms.len(), 1);
        assert!((ms[0] - 1250.0).abs() < 0.5, "{ms:?}");
        assert!(db.query("SELECT nope").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// PostgreSQL, when `PILOT_TEST_POSTGRES_URL` names one (skipped loudly otherwise, and a
    /// failure under `CI=true`, like the other crates' PostgreSQL tests).
    #[allow(clippy::disallowed_methods)]
    fn test_postgres() -> Option<Postgres> {
        match std::env::var("PILOT_TEST_POSTGRES_URL") {
            Ok(url) if !url.trim().is_empty() => Some(Postgres::new(&url).unwrap()),
            _ => {
                let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
                assert!(!ci, "PILOT_TEST_POSTGRES_URL must be set when CI=true");
                eprintln!("SKIPPED: PILOT_TEST_POSTGRES_URL not set");
                None
            }
        }
    }

    #[test]
    fn a_fresh_postgres_database_is_owned_by_its_own_role_and_dropped() {
        let Some(pg) = test_postgres() else { return };
        pg.check().unwrap();
        let db = pg.fresh_database().unwrap();
        let name = db.pg_name().unwrap().to_owned();
        assert!(
            db.url()
                .starts_with(&format!("postgres://{name}@127.0.0.1")),
            "{}",
            db.url()
        );
        let plain = format!(
            "SELECT count(*) FROM pg_roles WHERE rolname = '{name}' AND NOT rolsuper AND NOT rolbypassrls"
        );
        assert_eq!(db.count(&plain).unwrap(), 1);
        let owner = pg
            .query(&format!(
                "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = '{name}'"
            ))
            .unwrap();
        assert_eq!(owner, vec![vec![name.clone()]]);
        db.query("CREATE TABLE r (a timestamp, b timestamp); INSERT INTO r VALUES ('2025-01-01 00:00:00', '2025-01-01 00:00:00.5')").unwrap();
        assert_eq!(
            db.numbers(&format!("SELECT {} FROM r", db.ms_between("a", "b")))
                .unwrap(),
            vec![500.0]
        );
        assert!(pg.transactions(&name).is_ok());
        drop(db);
        let left = pg
            .query(&format!("SELECT count(*) FROM pg_database WHERE datname = '{name}' UNION ALL SELECT count(*) FROM pg_roles WHERE rolname = '{name}'"))
            .unwrap();
        assert_eq!(left, vec![vec!["0".to_owned()], vec!["0".to_owned()]]);
    }
}
