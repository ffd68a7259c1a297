#![doc = include_str!("../README.md")]

mod context;
mod error;
mod outbound;
mod provider;
mod registry;

pub use context::ProviderContext;
pub use error::{ProviderError, RegistryError};
pub use outbound::{
    Method, OutboundClient, OutboundConfig, OutboundError, OutboundRequest, OutboundResponse,
    classify_status,
};
pub use provider::{Evaluator, Provider, ProviderDescription, ProviderOutput};
pub use registry::Registry;
