//! Operations: readiness, Prometheus metrics and the admins' statistics.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde_json::{Value, json};

use super::Client;
use crate::AppState;
use crate::access::require_admin;
use crate::error::ApiError;

/// How long `/readyz` waits for the database.
const READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// `GET /readyz`: 200 only while the database answers (503 otherwise,
/// whatever the reason, within 2 s).
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    if !state.store.is_available() {
        return Err(ApiError::Unavailable);
    }
    match tokio::time::timeout(READY_TIMEOUT, state.store.ping()).await {
        Ok(Ok(())) => Ok(Json(json!({"status": "ready"}))),
        Ok(Err(error)) => {
            tracing::warn!(%error, "readiness check failed");
            Err(ApiError::Unavailable)
        }
        Err(_) => Err(ApiError::Unavailable),
    }
}

/// While the database server does not answer, API requests get a 503 at
/// once: the SurrealDB client would hold them until it has reconnected.
/// A stream request gets an empty stream with `retry:` instead (a browser
/// gives up on any other status). Health, readiness, metrics and the demo
/// page still answer; open streams stay open and go on once the database
/// is back.
pub async fn refuse_without_database(
    State(state): State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let path = request.uri().path();
    if !state.store.is_available() && path.starts_with("/api/") {
        if request.method() == axum::http::Method::GET && path.starts_with("/api/v1/realtime") {
            return super::realtime::come_back_later(state.config.retry);
        }
        return ApiError::Unavailable.into_response();
    }
    next.run(request).await
}

/// `GET /metrics`: counts only (no record data), for a Prometheus scraper.
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let text = state.metrics.render(
        state.hub.stats(),
        &state.limits.counts(),
        state.hub.subscriptions().1,
        &crate::metrics::Ingest {
            backlog: state.store.writes().backlog(),
            overloaded: state.store.overloaded_writes(),
        },
    );
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
}

/// `GET /api/v1/stats` (admins): connections, users and event rates.
pub async fn stats(
    State(state): State<AppState>,
    Client { caller, .. }: Client,
) -> Result<Json<Value>, ApiError> {
    require_admin(&caller, "read the statistics")?;
    let open = state.limits.counts();
    let (_, subscriptions) = state.hub.subscriptions();
    let stats = state.hub.stats();
    let load =
        |counter: &std::sync::atomic::AtomicU64| counter.load(std::sync::atomic::Ordering::Relaxed);
    Ok(Json(json!({
        "total_connections": open.total,
        "authenticated_connections": open.authenticated,
        "anonymous_connections": open.total - open.authenticated,
        "unique_users": open.unique_users,
        "subscriptions": subscriptions,
        "subscriptions_per_connection": if open.total == 0 { 0.0 } else { subscriptions as f64 / open.total as f64 },
        "events_published": load(&stats.events_published),
        "events_delivered": load(&stats.events_delivered),
        "events_replayed": state.metrics.streams.replayed.get(),
        "lagging_closes": load(&stats.lagging_closes),
        "events_per_second": state.metrics.rates(),
        "uptime_seconds": state.metrics.uptime().as_secs(),
    })))
}
