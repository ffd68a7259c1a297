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
mod wire;

pub use error::ApiError;

/// The API's routes, for `App::configure`: the server and the tests mount the API with
/// `App::new().app_data(web::Data::new(state)).configure(pilot_api::config)`. The OpenAPI
/// document is generated from the route table here, at the root, and handed to its route as
/// app data, so the route table, the handlers and the generator import one another in one
/// direction only (generator -> table -> handlers).
pub fn config(cfg: &mut actix_web::web::ServiceConfig) {
    let document = handlers::system::OpenApiDocument(openapi::document());
    cfg.app_data(actix_web::web::Data::new(document));
    routes::mount(cfg);
}

pub use routes::{ParamKind, RouteInfo, Verb, routes};
pub use server::{BoundServer, ServeError, ServerConfig, bind};
pub use state::{
    ApiSettings, AppParts, AppState, DEFAULT_BODY_LIMIT, DEFAULT_LEASE_TTL, DEFAULT_MAX_QUEUE_DEPTH,
};
