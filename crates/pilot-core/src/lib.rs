#![doc = include_str!("../README.md")]

mod error;
mod ids;
mod memory;
mod plan;
mod provider;
pub mod redact;
mod run;
mod secret;
mod store;
pub mod template;
mod units;
mod validate;

pub use error::{StoreError, ValidationError};
pub use ids::{PlanId, RunId, ScheduleId, UserId, new_id};
pub use memory::{MemoryRun, MemoryStore};
pub use plan::{DEFAULT_STEP_TIMEOUT_MS, Plan, RetryPolicy, Step, Trigger, is_valid_step_id};
pub use provider::ProviderResult;
pub use run::{
    CancelSignal, LogRecord, RunEnd, RunFinish, RunSnapshot, RunStatus, RunWrite, StepKey,
    StepState, StepStatus, TriggerKind, WriteAck,
};
pub use secret::{Credential, CredentialKind, Integration, Secret};
pub use store::{CredentialStore, RunStore};
pub use units::human_size;
pub use validate::{ActionSpec, Catalogue, ParamSpec, validate_plan, validate_step};
