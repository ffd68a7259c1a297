//! The one place a process builds its engine: over the database (runs and credentials), with
//! every run write passing the metrics decorator, so inline runs and claimed runs of the same
//! process are executed and counted by the same engine.

use std::sync::Arc;

use pilot_core::{CredentialStore, RunStore};
use pilot_engine::{Engine, EngineConfig, EngineParts};
use pilot_registry::{OutboundClient, Registry};
use pilot_storage::Database;
use pilot_telemetry::{MeteredRunStore, Metrics};

/// What an engine is built from.
pub struct EngineSetup {
    /// Where runs and credentials are.
    pub db: Database,
    /// The installed providers.
    pub registry: Arc<Registry>,
    /// The guarded outbound client providers send through.
    pub http: Arc<OutboundClient>,
    /// The engine's limits.
    pub config: EngineConfig,
    /// Where run and step metrics are counted.
    pub metrics: Arc<Metrics>,
}

/// The engine of a process: writes go to the database through [`MeteredRunStore`].
pub fn build_engine(setup: EngineSetup) -> Arc<Engine> {
    let db_store: Arc<dyn RunStore> = Arc::new(setup.db.clone());
    let runs: Arc<dyn RunStore> = Arc::new(MeteredRunStore::new(db_store, setup.metrics));
    let credentials: Arc<dyn CredentialStore> = Arc::new(setup.db);
    Arc::new(Engine::new(EngineParts {
        registry: setup.registry,
        runs,
        credentials,
        http: setup.http,
        config: setup.config,
    }))
}
