//! `POST /api/v1/channels/{name}/messages`: publish a message to a channel.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::Value;

use super::{Client, JsonBody, PathParams};
use crate::AppState;
use crate::channels::{envelope, validate_channel};
use crate::error::ApiError;
use crate::rules::{Access, refusal};

/// Publishes the body (any JSON) to the channel's subscribers, on every
/// node, as a `channel.message` event.
pub async fn publish(
    State(state): State<AppState>,
    Client { caller, .. }: Client,
    PathParams(channel): PathParams<String>,
    JsonBody(message): JsonBody<Value>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    validate_channel(&channel)?;
    let message = envelope(&channel, &caller, message);
    let refused = match state.channels.publish(&channel, &caller) {
        Access::All => false,
        Access::Nothing => true,
        Access::Matching(rule) => !rule.matches(&message),
    };
    if refused {
        return Err(refusal(&caller, &format!("publish to `{channel}`")));
    }
    state.store.publish_message(&message).await?;
    Ok((StatusCode::CREATED, Json(message)))
}
