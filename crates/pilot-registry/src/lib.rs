#![doc = include_str!("../README.md")]

mod context;
mod error;
mod outbound;
mod provider;
mod registry;

pub use context::{ProviderContext, idempotency_key};
pub use error::{ProviderError, RegistryError};
#[cfg(any(test, feature = "test-support"))]
pub use outbound::testing;
pub use outbound::{
    Lookup, Method, OutboundClient, OutboundConfig, OutboundError, OutboundRequest,
    OutboundResponse, StaticLookup, SystemLookup, check_ip, check_url, classify_status,
    parse_allowlist,
};
pub use provider::{Evaluator, Provider, ProviderDescription, ProviderOutput};
pub use registry::Registry;
