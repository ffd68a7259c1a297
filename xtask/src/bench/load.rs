//! The load generator: a closed loop of N clients, each on its own keep-alive connection, each
//! sending its next request as soon as the previous answer arrived, for a duration or until a
//! number of requests was sent.
//!
//! What a request is and what counts as success is the [`Job`]'s business, so the same loop
//! drives the sink alone (the machine's HTTP limit), `POST /api/execute`, and the setup of
//! thousands of plans. A request is never retried: each one sent is counted once, as answered
//! correctly or as an error.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::http::{Conn, Response};
use super::stats::{Samples, Summary};

/// One kind of request the generator sends.
pub(crate) trait Job: Send + Sync + 'static {
    /// The bytes of request number `i` (numbered from 0 across all clients).
    fn request(&self, i: u64) -> Vec<u8>;
    /// Whether the answer to request `i` is a success; the error names what was wrong.
    fn check(&self, i: u64, response: &Response) -> Result<(), String>;
}

/// When the generator stops.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Until {
    /// After this many requests in total.
    Count(u64),
    /// When this much time has passed (requests in flight finish).
    Time(Duration),
}

/// What one load phase did.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct LoadReport {
    /// Requests sent.
    pub(crate) sent: u64,
    /// Answers the job accepted.
    pub(crate) ok: u64,
    /// Transport failures and rejected answers.
    pub(crate) errors: u64,
    /// The first few errors, for the report.
    pub(crate) error_samples: Vec<String>,
    /// Wall time from the first request to the last answer, in seconds.
    pub(crate) seconds: f64,
    /// Answered requests per second.
    pub(crate) per_second: f64,
    /// Latency of answered requests (accepted or not).
    pub(crate) latency: Summary,
    /// Clients (concurrent connections).
    pub(crate) clients: usize,
}

/// Runs `job` from `clients` concurrent connections to `addr` until `until`.
pub(crate) async fn run<J: Job>(
    addr: SocketAddr,
    clients: usize,
    until: Until,
    job: Arc<J>,
) -> LoadReport {
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = match until {
        Until::Time(d) => Some(start + d),
        Until::Count(_) => None,
    };
    let limit = match until {
        Until::Count(n) => n,
        Until::Time(_) => u64::MAX,
    };
    let mut tasks = Vec::with_capacity(clients);
    for _ in 0..clients.max(1) {
        let (job, next) = (job.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::new(addr);
            let mut out = ClientOutcome::default();
            loop {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= limit {
                    break;
                }
                let bytes = job.request(i);
                let sent_at = Instant::now();
                out.sent += 1;
                match conn.send(&bytes).await {
                    Ok(response) => {
                        out.latency.push(sent_at.elapsed());
                        match job.check(i, &response) {
                            Ok(()) => out.ok += 1,
                            Err(e) => out.error(e),
                        }
                    }
                    Err(e) => {
                        out.error(format!("transport: {e}"));
                        // Do not spin on a refused connection.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
            out
        }));
    }
    let mut total = ClientOutcome::default();
    for task in tasks {
        match task.await {
            Ok(out) => total.absorb(out),
            Err(e) => total.error(format!("client task failed: {e}")),
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let answered = total.latency.len() as f64;
    LoadReport {
        sent: total.sent,
        ok: total.ok,
        errors: total.errors,
        error_samples: total.samples,
        seconds,
        per_second: if seconds > 0.0 {
            answered / seconds
        } else {
            0.0
        },
        latency: total.latency.summary(),
        clients,
    }
}

/// The most error messages kept per phase.
const MAX_SAMPLES: usize = 5;

#[derive(Default)]
struct ClientOutcome {
    sent: u64,
    ok: u64,
    errors: u64,
    samples: Vec<String>,
    latency: Samples,
}

impl ClientOutcome {
    fn error(&mut self, message: String) {
        self.errors += 1;
        if self.samples.len() < MAX_SAMPLES {
            self.samples.push(message);
        }
    }

    fn absorb(&mut self, other: ClientOutcome) {
        self.sent += other.sent;
        self.ok += other.ok;
        self.errors += other.errors;
        for s in other.samples {
            if self.samples.len() < MAX_SAMPLES {
                self.samples.push(s);
            }
        }
        self.latency.merge(other.latency);
    }
}

#[cfg(test)]
mod tests {
    use super::super::http::request;
    use super::super::sink::Sink;
    use super::*;

    /// Posts to the sink with a unique key per request; request 3 is "rejected" by the check.
    struct Keyed;

    impl Job for Keyed {
        fn request(&self, i: u64) -> Vec<u8> {
            let mut bytes = request("POST", "/hook", None, Some(b"{}"));
            let at = bytes.windows(2).position(|w| w == b"\r\n").unwrap() + 2;
            bytes.splice(at..at, format!("Idempotency-Key: k{i}\r\n").into_bytes());
            bytes
        }

        fn check(&self, i: u64, response: &Response) -> Result<(), String> {
            if i == 3 {
                return Err("three is rejected".into());
            }
            if response.status == 200 {
                Ok(())
            } else {
                Err(format!("status {}", response.status))
            }
        }
    }

    #[tokio::test]
    async fn a_counted_run_sends_exactly_that_many() {
        let sink = Sink::start().await.unwrap();
        let report = run(sink.addr(), 4, Until::Count(50), Arc::new(Keyed)).await;
        assert_eq!((report.sent, report.ok, report.errors), (50, 49, 1));
        assert_eq!(report.error_samples, vec!["three is rejected".to_owned()]);
        assert_eq!(report.latency.count, 50);
        let counts = sink.counts();
        assert_eq!(
            (counts.calls, counts.duplicates, counts.malformed),
            (50, 0, 0)
        );
    }

    #[tokio::test]
    async fn a_timed_run_stops_and_counts_every_request() {
        let sink = Sink::start().await.unwrap();
        let report = run(
            sink.addr(),
            2,
            Until::Time(Duration::from_millis(100)),
            Arc::new(Keyed),
        )
        .await;
        assert!(report.sent > 3, "{report:?}");
        assert_eq!(report.ok + report.errors, report.sent);
        assert_eq!(sink.counts().calls, report.sent);
    }

    #[tokio::test]
    async fn refused_connections_are_errors_not_hangs() {
        // A port that was free a moment ago: nothing listens there now.
        let addr = {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            listener.local_addr().unwrap()
        };
        let report = run(addr, 2, Until::Count(4), Arc::new(Keyed)).await;
        assert_eq!((report.sent, report.ok, report.errors), (4, 0, 4));
        assert!(
            report.error_samples[0].starts_with("transport:"),
            "{:?}",
            report.error_samples
        );
    }
}
