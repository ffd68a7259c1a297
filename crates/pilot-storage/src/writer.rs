//! Group commit for run writes. The engine makes about three writes per run; committing each
//! alone would cap SQLite at its fsync rate (about 7,000 commits/s at `synchronous=FULL` here).
//! Instead every [`pilot_core::RunStore::write`] is queued to a writer thread that takes whatever
//! has accumulated (up to `batch_max`), applies all of it in ONE transaction on one connection
//! (each write still checks its own lease epoch; a stale one is answered `StaleEpoch` without
//! failing the others), commits once, and then answers every caller. If the batch transaction
//! fails as a whole, each job is retried alone so one bad write cannot fail its neighbours.
//!
//! New runs (`Database::start_run`, `Database::enqueue_run`) go through the same thread: on
//! SQLite a second writer on a pooled connection would fight this one for the single write lock
//! (SQLite's busy handler sleeps 1 to 100 ms per lost round), and here the run row shares the
//! batch's commit instead. The caller is answered only after the commit (accepted means
//! durable). On PostgreSQL a batch that starts runs reads the database clock once (the
//! transaction's `now()`) for all of their leases, and a batch that queues runs sends one
//! `pg_notify` inside the same transaction, so listeners hear of them at commit.
//!
//! PostgreSQL may get several writer threads (a run's writes always go to the same one, so they
//! stay ordered); SQLite has a single writer anyway and gets one.

use std::hash::{Hash, Hasher};
use std::sync::mpsc;

use pilot_core::{RunWrite, UserId, WriteAck};
use tokio::sync::oneshot;

use crate::StorageError;
use crate::conn::{DbConn, Mode, Pool, Scope, set_scope, transaction};
use crate::runs::{NewRunJob, RunRecord, apply_write, insert_run, notify_runs, restamp_lease};
use crate::time::db_now;

enum Job {
    Write {
        write: RunWrite,
        reply: oneshot::Sender<Result<WriteAck, StorageError>>,
    },
    Insert {
        run: NewRunJob,
        reply: oneshot::Sender<Result<Box<RunRecord>, StorageError>>,
    },
}

impl Job {
    fn user(&self) -> &UserId {
        match self {
            Job::Write { write, .. } => &write.user_id,
            Job::Insert { run, .. } => &run.user,
        }
    }
}

/// What applying a job gave, before its caller is answered.
enum Done {
    Write(WriteAck),
    Insert,
}

/// Handle on the writer threads; dropping it stops them once their queues are drained.
pub(crate) struct Writer {
    shards: Vec<mpsc::Sender<Job>>,
}

fn stopped() -> StorageError {
    StorageError::Unavailable("the storage writer has stopped".to_owned())
}

impl Writer {
    /// Starts `shards` writer threads over `pool`.
    pub(crate) fn start(
        pool: Pool,
        batch_max: usize,
        shards: usize,
    ) -> Result<Writer, StorageError> {
        let mut senders = Vec::with_capacity(shards.max(1));
        for n in 0..shards.max(1) {
            let (tx, rx) = mpsc::channel::<Job>();
            let pool = pool.clone();
            std::thread::Builder::new()
                .name(format!("pilot-storage-writer-{n}"))
                .spawn(move || writer_loop(&pool, &rx, batch_max))?;
            senders.push(tx);
        }
        Ok(Writer { shards: senders })
    }

    /// The queue of the shard that owns run `run_id`.
    fn shard(&self, run_id: &str) -> Result<&mpsc::Sender<Job>, StorageError> {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        run_id.hash(&mut hasher);
        let shard = usize::try_from(hasher.finish() % self.shards.len() as u64).unwrap_or(0);
        self.shards.get(shard).ok_or_else(stopped)
    }

    /// Queues `write` and waits for its outcome.
    pub(crate) async fn submit(&self, write: RunWrite) -> Result<WriteAck, StorageError> {
        let (reply, answer) = oneshot::channel();
        self.shard(write.run_id.as_str())?
            .send(Job::Write { write, reply })
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// Queues a new run row and waits for its commit; answers the row as committed.
    pub(crate) async fn insert(&self, run: NewRunJob) -> Result<Box<RunRecord>, StorageError> {
        let (reply, answer) = oneshot::channel();
        self.shard(&run.record.id)?
            .send(Job::Insert { run, reply })
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

fn writer_loop(pool: &Pool, rx: &mpsc::Receiver<Job>, batch_max: usize) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < batch_max {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        apply_batch(pool, batch);
    }
}

/// Outcomes that change nothing and so may be answered without failing the batch.
fn is_isolated(e: &StorageError) -> bool {
    matches!(e, StorageError::StaleEpoch | StorageError::NotFound)
}

/// Answers one job's caller. The caller may have gone away (its future dropped); what was
/// committed stands.
fn answer(job: Job, outcome: Result<Done, StorageError>) {
    match job {
        Job::Write { reply, .. } => {
            let _ = reply.send(outcome.and_then(|done| match done {
                Done::Write(ack) => Ok(ack),
                Done::Insert => Err(StorageError::Database(
                    "the writer answered a write with an insert".to_owned(),
                )),
            }));
        }
        Job::Insert { run, reply } => {
            let _ = reply.send(outcome.map(|_| run.record));
        }
    }
}

fn apply_batch(pool: &Pool, mut batch: Vec<Job>) {
    let mut conn = match pool.get() {
        Ok(conn) => conn,
        Err(e) => {
            let e = StorageError::from(e);
            for job in batch {
                answer(job, Err(StorageError::Unavailable(e.to_string())));
            }
            return;
        }
    };
    let together = transaction(&mut conn, Scope::Anonymous, Mode::Write, |conn| {
        apply_jobs(conn, &mut batch)
    });
    match together {
        Ok(outcomes) => {
            for (job, outcome) in batch.into_iter().zip(outcomes) {
                answer(job, outcome);
            }
        }
        Err(e) if batch.len() == 1 => {
            if let Some(job) = batch.into_iter().next() {
                answer(job, Err(e));
            }
        }
        Err(_) => {
            for mut job in batch {
                let outcome = transaction(&mut conn, Scope::Anonymous, Mode::Write, |conn| {
                    let mut one = apply_jobs(conn, std::slice::from_mut(&mut job))?;
                    one.pop().unwrap_or_else(|| Err(stopped()))
                });
                answer(job, outcome);
            }
        }
    }
}

/// Applies `jobs` in the open transaction. An isolated failure (a stale epoch) is answered
/// without failing the others; any other error fails the transaction.
fn apply_jobs(
    conn: &mut DbConn,
    jobs: &mut [Job],
) -> Result<Vec<Result<Done, StorageError>>, StorageError> {
    let mut outcomes = Vec::with_capacity(jobs.len());
    // On PostgreSQL a scope change is a round trip: make it only when the user changes.
    let mut scoped: Option<UserId> = None;
    // The database clock of this transaction, read once for every lease it starts.
    let mut clock = None;
    let mut notify = false;
    for job in jobs.iter_mut() {
        if scoped.as_ref() != Some(job.user()) {
            set_scope(conn, Scope::User(job.user()))?;
            scoped = Some(job.user().clone());
        }
        match job {
            Job::Write { write, .. } => match apply_write(conn, write) {
                Ok(ack) => outcomes.push(Ok(Done::Write(ack))),
                Err(e) if is_isolated(&e) => outcomes.push(Err(e)),
                Err(e) => return Err(e),
            },
            Job::Insert { run, .. } => {
                if let (Some(ttl), DbConn::Pg(_)) = (run.lease_ttl, &*conn) {
                    let at = match clock {
                        Some(at) => at,
                        None => *clock.insert(db_now(conn)?),
                    };
                    restamp_lease(&mut run.record, at, ttl)?;
                }
                insert_run(conn, &run.record)?;
                notify |= run.notify;
                outcomes.push(Ok(Done::Insert));
            }
        }
    }
    if notify {
        notify_runs(conn)?;
    }
    Ok(outcomes)
}
