//! `GET /api/v1/presence`: who is online.

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use super::Client;
use crate::AppState;
use crate::error::ApiError;

/// The users online on every node, as the presence rule lets the caller see them.
pub async fn list(
    State(state): State<AppState>,
    Client { caller, .. }: Client,
) -> Result<Json<Value>, ApiError> {
    let access = state.presence_rule.access(&caller)?;
    let mut users = state.store.presence_list().await?;
    users.retain(|user| access.allows(user));
    Ok(Json(json!({ "count": users.len(), "users": users })))
}
