#![doc = include_str!("../README.md")]

mod chat;
mod error;
mod params;
mod protocol;
mod vendor;

pub use chat::ChatProvider;
pub use error::AiError;
pub use vendor::{AiConfig, GROQ, OPENAI, Vendor, register};
