#![doc = include_str!("../README.md")]

mod error;
mod extract;
mod generate;
mod handlers;
mod openapi;
mod routes;
mod server;
mod state;
mod throttle;

pub use error::ApiError;

pub use routes::{ParamKind, RouteInfo, Verb, config, routes};
pub use server::{BoundServer, ServeError, ServerConfig, bind};
pub use state::{
    ApiSettings, AppParts, AppState, DEFAULT_BODY_LIMIT, DEFAULT_LEASE_TTL, DEFAULT_MAX_QUEUE_DEPTH,
};
