#![doc = include_str!("../README.md")]

mod custom_api;
mod request;
mod webhook;

use pilot_registry::{Registry, RegistryError};

pub use custom_api::{CustomApi, DEFAULT_KEY_HEADER};
pub use webhook::Webhook;

/// Registers this crate's providers, in order: `webhook`, `custom_api`.
pub fn register(registry: &mut Registry) -> Result<(), RegistryError> {
    registry.register(Webhook)?;
    registry.register(CustomApi)?;
    Ok(())
}
