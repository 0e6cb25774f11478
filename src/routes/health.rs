//! Health, the demo page and the API contract.

use axum::Json;
use axum::http::header;
use axum::response::{Html, IntoResponse};
use serde_json::{Value, json};

/// `GET /healthz`: 200 once the server is serving.
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /`: the demo page (compiled in, so the binary runs from anywhere).
pub async fn demo_page() -> Html<&'static str> {
    Html(include_str!("../../static/index.html"))
}

/// `GET /openapi.yaml`: the HTTP contract.
pub async fn openapi() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/yaml")],
        include_str!("../../openapi.yaml"),
    )
}
