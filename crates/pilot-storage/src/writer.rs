//! Group commit for run writes. The engine makes about three writes per run; committing each
//! alone would cap SQLite at its fsync rate (about 7,000 commits/s at `synchronous=FULL` here).
//! Instead every [`pilot_core::RunStore::write`] is queued to a writer thread that takes whatever
//! has accumulated (up to `batch_max`), applies all of it in ONE transaction on one connection
//! (each write still checks its own lease epoch; a stale one is answered `StaleEpoch` without
//! failing the others), commits once, and then answers every caller. If the batch transaction
//! fails as a whole, each write is retried alone so one bad write cannot fail its neighbours.
//!
//! PostgreSQL gets several writer threads (a run's writes always go to the same one, so they
//! stay ordered); SQLite has a single writer anyway and gets one.

use std::hash::{Hash, Hasher};
use std::sync::mpsc;

use pilot_core::{RunWrite, UserId, WriteAck};
use tokio::sync::oneshot;

use crate::StorageError;
use crate::conn::{DbConn, Mode, Pool, Scope, set_scope, transaction};
use crate::runs::apply_write;

type Reply = oneshot::Sender<Result<WriteAck, StorageError>>;

struct Job {
    write: RunWrite,
    reply: Reply,
}

/// Handle on the writer threads; dropping it stops them once their queues are drained.
pub(crate) struct Writer {
    shards: Vec<mpsc::Sender<Job>>,
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

    /// Queues `write` and waits for its outcome.
    pub(crate) async fn submit(&self, write: RunWrite) -> Result<WriteAck, StorageError> {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        write.run_id.hash(&mut hasher);
        let shard = usize::try_from(hasher.finish() % self.shards.len() as u64).unwrap_or(0);
        let (reply, answer) = oneshot::channel();
        let stopped = || StorageError::Unavailable("the storage writer has stopped".to_owned());
        self.shards
            .get(shard)
            .ok_or_else(stopped)?
            .send(Job { write, reply })
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

fn apply_batch(pool: &Pool, batch: Vec<Job>) {
    let mut conn = match pool.get() {
        Ok(conn) => conn,
        Err(e) => {
            let e = StorageError::from(e);
            for job in batch {
                let _ = job
                    .reply
                    .send(Err(StorageError::Unavailable(e.to_string())));
            }
            return;
        }
    };
    let together = transaction(&mut conn, Scope::Anonymous, Mode::Write, |conn| {
        let mut outcomes = Vec::with_capacity(batch.len());
        // On PostgreSQL a scope change is a round trip: make it only when the user changes.
        let mut scoped: Option<&UserId> = None;
        for job in &batch {
            let user = &job.write.user_id;
            if scoped != Some(user) {
                set_scope(conn, Scope::User(user))?;
                scoped = Some(user);
            }
            match apply_write(conn, &job.write) {
                Ok(ack) => outcomes.push(Ok(ack)),
                Err(e) if is_isolated(&e) => outcomes.push(Err(e)),
                Err(e) => return Err(e),
            }
        }
        Ok(outcomes)
    });
    match together {
        Ok(outcomes) => {
            for (job, outcome) in batch.into_iter().zip(outcomes) {
                // The caller may have gone away (its future dropped); the write stands.
                let _ = job.reply.send(outcome);
            }
        }
        Err(e) if batch.len() == 1 => {
            if let Some(job) = batch.into_iter().next() {
                let _ = job.reply.send(Err(e));
            }
        }
        Err(_) => {
            for job in batch {
                let outcome = apply_alone(&mut conn, &job.write);
                let _ = job.reply.send(outcome);
            }
        }
    }
}

fn apply_alone(conn: &mut DbConn, write: &RunWrite) -> Result<WriteAck, StorageError> {
    transaction(conn, Scope::User(&write.user_id), Mode::Write, |conn| {
        apply_write(conn, write)
    })
}
