//! The HTTP API, one module per resource. `openapi.yaml` is its contract.

mod collections;
mod extract;
mod health;
mod realtime;
mod records;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::get;
use tower_http::trace::TraceLayer;

use crate::AppState;
use crate::error::{json_method_not_allowed, log_internal_errors, route_not_found};

pub use extract::{JsonBody, PathParams, QueryParams};

/// Every route of the service.
pub fn router(state: AppState) -> Router {
    let max_body_bytes = state.config.max_body_bytes;
    Router::new()
        .route("/", get(health::demo_page))
        .route("/healthz", get(health::healthz))
        .route("/openapi.yaml", get(health::openapi))
        .route(
            "/api/v1/collections",
            get(collections::list).post(collections::create),
        )
        .route(
            "/api/v1/collections/{name}",
            get(collections::show)
                .patch(collections::update)
                .delete(collections::remove),
        )
        .route(
            "/api/v1/collections/{name}/records",
            get(records::list).post(records::create),
        )
        .route(
            "/api/v1/collections/{name}/records/{id}",
            get(records::show)
                .patch(records::merge)
                .put(records::replace)
                .delete(records::remove),
        )
        .route("/api/v1/realtime", get(realtime::stream_all))
        .route("/api/v1/realtime/{name}", get(realtime::stream_collection))
        .fallback(route_not_found)
        .layer(middleware::from_fn(json_method_not_allowed))
        .layer(middleware::from_fn(log_internal_errors))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        // Failures are logged once, with their cause, by `log_internal_errors`.
        .layer(TraceLayer::new_for_http().on_failure(()))
        .with_state(state)
}
