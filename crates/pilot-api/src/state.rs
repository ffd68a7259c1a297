//! The application state every handler shares: the database, the engine, the registry, the
//! metrics and the queue signal. It is built once (by the server, or by a test) from
//! [`AppParts`] and registered with `App::app_data(web::Data::new(state))`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use pilot_engine::{Engine, EngineConfig};
use pilot_registry::{OutboundClient, Registry};
use pilot_scheduler::{EngineSetup, SubmitConfig, Submitter, build_engine};
use pilot_storage::Database;
use pilot_telemetry::Metrics;
use tokio::sync::Notify;
use tokio_util::task::TaskTracker;

use crate::throttle::Throttle;

/// The request body limit when none is configured: 1 MiB.
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;

/// The lease an inline execution holds when none is configured: a worker may take the run
/// over this long after the API process last renewed it.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(30);

/// Operator settings of the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiSettings {
    /// Request bodies larger than this are refused with 413.
    pub body_limit: usize,
    /// The name this process holds leases under (shown on runs it executes inline).
    pub lease_owner: String,
    /// How long an inline execution's lease lasts between renewals.
    pub lease_ttl: Duration,
    /// Above this many queued runs, async submissions (`async: true`, inbound webhooks) are
    /// refused with 503 and `Retry-After` instead of growing the queue without bound; 0 never
    /// refuses.
    pub max_queue_depth: u64,
    /// Failed authentications allowed per minute from one client address (and with one token
    /// prefix); past it, tokens this process has not seen succeed get 429. 0: no limit.
    pub auth_failures_per_minute: u32,
    /// API requests allowed per minute per user (429 with `RateLimit-*` headers past it). 0: no
    /// limit.
    pub requests_per_minute: u32,
    /// Calls allowed per minute per inbound webhook token. 0: no limit.
    pub hook_calls_per_minute: u32,
}

/// The default of [`ApiSettings::max_queue_depth`].
pub const DEFAULT_MAX_QUEUE_DEPTH: u64 = 100_000;

impl Default for ApiSettings {
    fn default() -> Self {
        Self {
            body_limit: DEFAULT_BODY_LIMIT,
            lease_owner: format!("api:{}:{}", std::process::id(), pilot_core::new_id()),
            lease_ttl: DEFAULT_LEASE_TTL,
            max_queue_depth: DEFAULT_MAX_QUEUE_DEPTH,
            auth_failures_per_minute: 30,
            requests_per_minute: 6000,
            hook_calls_per_minute: 600,
        }
    }
}

/// What [`AppState`] is built from.
pub struct AppParts {
    /// The database (with its keyring, for credentials).
    pub db: Database,
    /// The installed providers (the binary registers them).
    pub registry: Arc<Registry>,
    /// The guarded outbound client providers send through.
    pub http: Arc<OutboundClient>,
    /// Engine settings.
    pub engine: EngineConfig,
    /// The metrics registry (other components may have added theirs).
    pub metrics: Metrics,
    /// API settings.
    pub settings: ApiSettings,
}

/// The shared state of every handler. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    db: Database,
    registry: Arc<Registry>,
    http: Arc<OutboundClient>,
    submitter: Submitter,
    metrics: Arc<Metrics>,
    settings: ApiSettings,
    /// Where run executions and other outbound I/O started by requests run (see
    /// [`AppState::spawn_work`]): the runtime the state was built on.
    runtime: Option<tokio::runtime::Handle>,
    /// That work, so a shutdown can wait for it.
    work: TaskTracker,
    throttle: Throttle,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("db", &self.inner.db)
            .field("registry", &self.inner.registry)
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// Builds the state, its engine (`pilot_scheduler::build_engine`: every write metered) and
    /// its run submitter. The embedded worker should execute with [`AppState::engine`] and wake
    /// on [`AppState::queue_signal`].
    pub fn new(parts: AppParts) -> Self {
        let metrics = Arc::new(parts.metrics);
        let engine = build_engine(EngineSetup {
            db: parts.db.clone(),
            registry: parts.registry.clone(),
            http: parts.http.clone(),
            config: parts.engine,
            metrics: metrics.clone(),
        });
        let submitter = Submitter::new(
            parts.db.clone(),
            engine,
            Arc::new(Notify::new()),
            SubmitConfig {
                lease_owner: parts.settings.lease_owner.clone(),
                lease_ttl: parts.settings.lease_ttl,
                max_queue_depth: parts.settings.max_queue_depth,
            },
        );
        let throttle = Throttle::new(
            parts.settings.auth_failures_per_minute,
            parts.settings.requests_per_minute,
            parts.settings.hook_calls_per_minute,
        );
        Self {
            inner: Arc::new(Inner {
                db: parts.db,
                registry: parts.registry,
                http: parts.http,
                submitter,
                metrics,
                settings: parts.settings,
                runtime: tokio::runtime::Handle::try_current().ok(),
                work: TaskTracker::new(),
                throttle,
            }),
        }
    }

    /// The database.
    pub fn db(&self) -> &Database {
        &self.inner.db
    }

    /// The engine (metered); the embedded worker executes claimed runs with it.
    pub fn engine(&self) -> &Arc<Engine> {
        self.inner.submitter.engine()
    }

    /// Where every new run is submitted (queued or inline).
    pub(crate) fn submitter(&self) -> &Submitter {
        &self.inner.submitter
    }

    /// The installed providers.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.inner.registry
    }

    /// The guarded outbound client.
    pub fn outbound(&self) -> &Arc<OutboundClient> {
        &self.inner.http
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    /// Notified after the API commits a queued run (async execute, inbound webhook): the
    /// embedded worker waits on it instead of polling.
    pub fn queue_signal(&self) -> &Arc<Notify> {
        self.inner.submitter.queue_signal()
    }

    /// The API settings.
    pub fn settings(&self) -> &ApiSettings {
        &self.inner.settings
    }

    /// Runs `work` (a run's execution, a model call) on the runtime this state was built on,
    /// not on the HTTP worker's: actix stops its workers' runtimes at shutdown, and outbound
    /// connections pooled there would die under a run still using them (an in-flight step failed
    /// and was retried, repeating its side effect). The work goes on if the client hangs up;
    /// [`AppState::drain_work`] waits for it.
    pub(crate) fn spawn_work<F>(&self, work: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match &self.inner.runtime {
            Some(handle) => self.inner.work.spawn_on(work, handle),
            None => self.inner.work.spawn(work),
        }
    }

    /// The request throttles.
    pub(crate) fn throttle(&self) -> &Throttle {
        &self.inner.throttle
    }

    /// Waits until the work that requests started has ended (a shutdown calls it after the HTTP
    /// server stopped, before the process exits). Work started afterwards is not waited for.
    pub async fn drain_work(&self) {
        self.inner.work.close();
        self.inner.work.wait().await;
    }
}

/// What plans are validated against when they are saved or run: the registry's providers and
/// expression language, and this server's outbound guard for literal URLs, so a URL the guard
/// would refuse at run time is refused on save, naming the setting that opens it.
pub(crate) struct ApiCatalogue<'a> {
    registry: &'a Registry,
    outbound: &'a OutboundClient,
}

impl AppState {
    /// The catalogue plans are validated against.
    pub(crate) fn catalogue(&self) -> ApiCatalogue<'_> {
        ApiCatalogue {
            registry: &self.inner.registry,
            outbound: &self.inner.http,
        }
    }
}

impl pilot_core::Catalogue for ApiCatalogue<'_> {
    fn actions(&self, provider: &str) -> Option<Vec<pilot_core::ActionSpec>> {
        self.registry.actions(provider)
    }

    fn check_expression(&self, expr: &str) -> Result<(), String> {
        self.registry.check_expression(expr)
    }

    fn provider_names(&self) -> Vec<String> {
        self.registry.provider_names()
    }

    fn check_url(&self, text: &str) -> Result<(), String> {
        let url = url::Url::parse(text).map_err(|e| format!("is not a valid URL: {e}"))?;
        self.outbound.check_url(&url).map_err(|e| match e {
            pilot_registry::OutboundError::Blocked(why) => format!(
                "the destination is blocked: {why}; the operator can open an address range \
                 with PILOT_OUTBOUND_ALLOW"
            ),
            other => other.to_string(),
        })
    }
}
