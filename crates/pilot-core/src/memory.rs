//! An in-memory implementation of the persistence traits, for tests of the engine and of
//! anything above it that does not need a database. It enforces the same fencing rule as
//! storage: a write under a stale epoch changes nothing.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;

use crate::{
    Credential, CredentialStore, Integration, LogRecord, RunId, RunSnapshot, RunStatus, RunStore,
    RunWrite, StepState, StoreError, UserId, WriteAck,
};

/// A run as the memory store keeps it.
#[derive(Debug, Clone)]
pub struct MemoryRun {
    /// The owner.
    pub user_id: UserId,
    /// Current status.
    pub status: RunStatus,
    /// Current lease epoch.
    pub epoch: i64,
    /// Per-step state.
    pub states: Vec<StepState>,
    /// Why the run failed.
    pub error: Option<String>,
    /// Whether cancellation was requested.
    pub cancel_requested: bool,
}

#[derive(Debug, Default)]
struct Inner {
    runs: HashMap<RunId, MemoryRun>,
    logs: Vec<LogRecord>,
    credentials: Vec<(UserId, Credential)>,
    integrations: Vec<(UserId, Integration)>,
    writes: usize,
}

/// Runs, logs, credentials and integrations in a mutex.
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A poisoned lock only means a test panicked while holding it; the data is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a run as running under `snapshot.epoch`, with its states so far.
    pub fn insert_run(&self, snapshot: &RunSnapshot) {
        let mut states = snapshot.states.clone();
        for step in snapshot.steps.iter().skip(states.len()) {
            states.push(StepState::pending(step.id.clone()));
        }
        self.lock().runs.insert(
            snapshot.run_id.clone(),
            MemoryRun {
                user_id: snapshot.user_id.clone(),
                status: RunStatus::Running,
                epoch: snapshot.epoch,
                states,
                error: None,
                cancel_requested: false,
            },
        );
    }

    /// The run's current record.
    pub fn run(&self, id: &RunId) -> Option<MemoryRun> {
        self.lock().runs.get(id).cloned()
    }

    /// Moves the run to a new lease epoch, as a takeover does; returns the new epoch.
    pub fn bump_epoch(&self, id: &RunId) -> Option<i64> {
        let mut inner = self.lock();
        let run = inner.runs.get_mut(id)?;
        run.epoch += 1;
        Some(run.epoch)
    }

    /// Asks for the run to be cancelled.
    pub fn request_cancel(&self, id: &RunId) {
        if let Some(run) = self.lock().runs.get_mut(id) {
            run.cancel_requested = true;
        }
    }

    /// Every log row written, in order.
    pub fn logs(&self) -> Vec<LogRecord> {
        self.lock().logs.clone()
    }

    /// How many writes were applied.
    pub fn write_count(&self) -> usize {
        self.lock().writes
    }

    /// Stores a credential for `user`.
    pub fn add_credential(&self, user: &UserId, credential: Credential) {
        self.lock().credentials.push((user.clone(), credential));
    }

    /// Stores a custom integration for `user`.
    pub fn add_integration(&self, user: &UserId, integration: Integration) {
        self.lock().integrations.push((user.clone(), integration));
    }
}

#[async_trait]
impl RunStore for MemoryStore {
    async fn write(&self, write: RunWrite) -> Result<WriteAck, StoreError> {
        let mut inner = self.lock();
        let run = inner
            .runs
            .get_mut(&write.run_id)
            .ok_or(StoreError::NotFound)?;
        if run.user_id != write.user_id {
            return Err(StoreError::NotFound);
        }
        if run.epoch != write.epoch {
            return Err(StoreError::StaleEpoch);
        }
        for (key, _) in &write.steps {
            if key.index >= run.states.len() || key.item.is_some() {
                return Err(StoreError::Conflict(format!(
                    "step key {key:?} is not a step of this run"
                )));
            }
        }
        for (key, state) in write.steps {
            run.states[key.index] = state;
        }
        match write.end {
            Some(crate::RunEnd::Finish(finish)) => {
                run.status = finish.status;
                run.error = finish.error;
            }
            Some(crate::RunEnd::Park { .. }) => run.status = crate::RunStatus::Queued,
            None => {}
        }
        let ack = WriteAck {
            cancel_requested: run.cancel_requested,
        };
        inner.logs.extend(write.logs);
        inner.writes += 1;
        Ok(ack)
    }
}

#[async_trait]
impl CredentialStore for MemoryStore {
    async fn credentials(
        &self,
        user: &UserId,
        provider: &str,
    ) -> Result<Vec<Credential>, StoreError> {
        Ok(self
            .lock()
            .credentials
            .iter()
            .filter(|(u, c)| u == user && c.provider == provider)
            .map(|(_, c)| c.clone())
            .collect())
    }

    async fn integration(
        &self,
        user: &UserId,
        name: &str,
    ) -> Result<Option<Integration>, StoreError> {
        Ok(self
            .lock()
            .integrations
            .iter()
            .find(|(u, i)| u == user && i.name == name)
            .map(|(_, i)| i.clone()))
    }
}
