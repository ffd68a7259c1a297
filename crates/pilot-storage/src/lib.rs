#![doc = include_str!("../README.md")]

mod backup;
mod config;
mod conn;
mod credentials;
mod crypto;
mod db;
mod error;
mod firing;
mod hooks;
mod integrations;
mod listen;
mod logs;
mod migrate;
mod page;
mod plans;
mod runs;
mod schedules;
mod schema;
mod store;
mod stored;
mod time;
mod users;
mod writer;

#[cfg(any(test, feature = "test-support"))]
pub mod testing;

#[cfg(test)]
mod tests;

pub use config::{Backend, DbConfig, SqliteSync};
pub use conn::quiesce;
pub use credentials::{CredentialInfo, NewCredential, RotationReport};
pub use crypto::{DEFAULT_KEY_ID, KEY_FILE_NAME, KeySettings, KeySource, Keyring};
pub use db::Database;
pub use error::StorageError;
pub use firing::{DueSchedule, FireDecision, FiredRun, FiringReport, RUNS_CHANNEL, WakeInfo};
pub use hooks::{HOOK_TOKEN_PREFIX, HookRow};
pub use integrations::IntegrationRow;
pub use listen::{LISTEN_POLL, Listener};
pub use logs::{LogFilter, LogRow};
pub use page::{DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, Page, PageRequest};
pub use plans::{NewPlan, PlanDeletion, PlanRow};
pub use runs::{
    AbandonedRun, CancelOutcome, ClaimOutcome, ClaimRequest, ClaimedRun, Lease, NewRun, QueueStats,
    RunFilter, RunRow, TAKEOVER_CAP_MESSAGE,
};
pub use schedules::{
    DEFAULT_GRACE_SECONDS, MisfirePolicy, OverlapPolicy, ScheduleListing, ScheduleRow, ScheduleSpec,
};
pub use users::{TOKEN_PREFIX, TokenRow, UserRow};
