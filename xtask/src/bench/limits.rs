//! The machine's own limits, measured in the same run so Pilot's figures can be read as a
//! fraction of what this (possibly noisy, shared) machine can do at all:
//!
//! - the sink alone: requests per second the load generator and the sink manage with nothing
//!   in between (every run of the 3-step plan costs one such exchange, plus the API request);
//! - single-row durable commits per second: autocommit `INSERT`s of one row, on SQLite (WAL,
//!   `synchronous=FULL`, the file next to the server's) and on PostgreSQL (the same server and
//!   settings Pilot uses, `fsync` and `synchronous_commit` as configured), from 1 client and
//!   from as many clients as the load phases use.
//!
//! The commit limits use the databases' own clients (`sqlite3`, `psql`), one process per
//! client, each fed a long script of `INSERT` statements. The rate is the growth of the row
//! count between two readings taken after the clients started, so start-up costs are not in
//! it; the clients are then killed.

use std::io::Write as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use serde::Serialize;

use super::db::Database;
use super::http::{Response, request};
use super::load::{self, Job, LoadReport, Until};
use super::sink::Sink;

/// One measured limit.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Limit {
    pub(crate) name: String,
    pub(crate) clients: usize,
    pub(crate) per_second: f64,
}

/// Posts to the sink with a unique `Idempotency-Key`, as the server's webhook step does.
struct SinkJob;

impl Job for SinkJob {
    fn request(&self, i: u64) -> Vec<u8> {
        let body = format!("{{\"text\":\"order {i}: 21\",\"run\":\"limit-{i}\"}}");
        let mut bytes = request("POST", "/hook", None, Some(body.as_bytes()));
        // The key goes right after the request line.
        let key = format!("Idempotency-Key: limit-{i}:notify\r\n");
        let at = bytes.iter().position(|&b| b == b'\n').map_or(0, |p| p + 1);
        bytes.splice(at..at, key.into_bytes());
        bytes
    }

    fn check(&self, _: u64, response: &Response) -> Result<(), String> {
        if response.status == 200 {
            Ok(())
        } else {
            Err(format!("sink answered {}", response.status))
        }
    }
}

/// Requests per second against the sink alone.
pub(crate) async fn sink_alone(sink: &Sink, clients: usize, duration: Duration) -> LoadReport {
    load::run(
        sink.addr(),
        clients,
        Until::Time(duration),
        Arc::new(SinkJob),
    )
    .await
}

/// Single-row durable commits per second on SQLite in `dir`, from `clients` processes.
pub(crate) fn sqlite_commits(dir: &Path, clients: usize, duration: Duration) -> Result<f64> {
    let path = dir.join(format!("commit-limit-{clients}.db"));
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    let db = Database::sqlite(&path);
    db.query("PRAGMA journal_mode=WAL; CREATE TABLE bench_commit (id INTEGER PRIMARY KEY, v INTEGER NOT NULL)")?;
    let script = dir.join("commit-limit-sqlite.sql");
    write_script(
        &script,
        "PRAGMA journal_mode=WAL;\nPRAGMA synchronous=FULL;\nPRAGMA busy_timeout=60000;\n",
        clients,
        duration,
    )?;
    let spawn = || -> Result<Child> {
        Command::new("sqlite3")
            .arg("-batch")
            .arg(&path)
            .stdin(std::fs::File::open(&script)?)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting sqlite3")
    };
    let rate = measure(clients, duration, spawn, || {
        db.count("SELECT count(*) FROM bench_commit")
    });
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    rate
}

/// Single-row durable commits per second on PostgreSQL database `db`, from `clients`
/// connections (one `psql` each).
pub(crate) fn postgres_commits(
    db: &Database,
    dir: &Path,
    clients: usize,
    duration: Duration,
) -> Result<f64> {
    db.query("DROP TABLE IF EXISTS bench_commit; CREATE TABLE bench_commit (id bigserial PRIMARY KEY, v integer NOT NULL)")?;
    let script = dir.join("commit-limit-postgres.sql");
    write_script(&script, "", clients, duration)?;
    let spawn = || -> Result<Child> {
        Command::new("psql")
            .args([
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                db.client_target(),
                "-f",
            ])
            .arg(&script)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting psql")
    };
    let rate = measure(clients, duration, spawn, || {
        db.count("SELECT count(*) FROM bench_commit")
    });
    let _ = db.query("DROP TABLE IF EXISTS bench_commit");
    rate
}

/// The most commits per second any client could plausibly reach here; scripts hold enough
/// statements for that rate.
const MAX_RATE: f64 = 30_000.0;

fn write_script(path: &Path, preamble: &str, clients: usize, duration: Duration) -> Result<()> {
    let per_client =
        ((MAX_RATE * (duration.as_secs_f64() + 2.0)) / clients.max(1) as f64).ceil() as usize;
    let mut file = std::io::BufWriter::new(
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
    );
    file.write_all(preamble.as_bytes())?;
    for _ in 0..per_client.max(1000) {
        file.write_all(b"INSERT INTO bench_commit (v) VALUES (1);\n")?;
    }
    file.flush()?;
    Ok(())
}

/// Starts `clients` processes, reads the row count once they commit (after a ramp-up) and
/// again after `duration`, kills the processes and returns the rate in between.
fn measure(
    clients: usize,
    duration: Duration,
    spawn: impl Fn() -> Result<Child>,
    count: impl Fn() -> Result<u64>,
) -> Result<f64> {
    let mut children = Vec::with_capacity(clients);
    let result = (|| -> Result<f64> {
        for _ in 0..clients.max(1) {
            children.push(spawn()?);
        }
        // Start counting once the clients commit (starting processes and connections takes a
        // while on a busy machine), after a short ramp-up.
        let ramp_until = Instant::now() + Duration::from_secs(10);
        let first = count()?;
        while count()? == first {
            if Instant::now() > ramp_until {
                bail!("no commits went through within 10 s of starting the clients");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(300).min(duration / 2));
        let (c0, t0) = (count()?, Instant::now());
        std::thread::sleep(duration);
        let (c1, t1) = (count()?, Instant::now());
        for child in &mut children {
            if let Ok(Some(status)) = child.try_wait() {
                // Out of statements (or failed): the count stopped growing early.
                bail!("a client exited during the measurement ({status})");
            }
        }
        if c1 <= c0 {
            bail!("no commits went through ({c0} rows before and after)");
        }
        Ok((c1 - c0) as f64 / (t1 - t0).as_secs_f64())
    })();
    for child in &mut children {
        let _ = child.kill();
        let _ = child.wait();
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_sink_limit_counts_every_exchange() {
        let sink = Sink::start().await.unwrap();
        let report = sink_alone(&sink, 2, Duration::from_millis(100)).await;
        assert!(report.ok > 0);
        assert_eq!(report.errors, 0, "{:?}", report.error_samples);
        let counts = sink.counts();
        assert_eq!((counts.calls, counts.duplicates), (report.sent, 0));
    }

    #[test]
    fn sqlite_commits_are_measured() {
        let dir = std::env::temp_dir().join(format!("xtask-bench-limits-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let rate = sqlite_commits(&dir, 2, Duration::from_millis(300)).unwrap();
        assert!(rate > 0.0);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
