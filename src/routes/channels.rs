//! `POST /api/v1/channels/{name}/messages`: publish a message to a channel.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::Value;

use super::{Client, JsonBody, PathParams};
use crate::AppState;
use crate::access::refusal;
use crate::channels::{envelope, validate_channel};
use crate::error::ApiError;
use crate::rules::Access;

/// Publishes the body (any JSON) to the channel's subscribers, on every
/// node, as a `channel.message` event.
pub async fn publish(
    State(state): State<AppState>,
    Client { caller, ip, .. }: Client,
    PathParams(channel): PathParams<String>,
    JsonBody(message): JsonBody<Value>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    validate_channel(&channel)?;
    let size = serde_json::to_vec(&message).map_or(0, |json| json.len());
    if size > state.config.max_message_bytes {
        return Err(ApiError::PayloadTooLarge(format!(
            "the message is {size} bytes of JSON; the most a channel message may be is {} (--max-message-bytes)",
            state.config.max_message_bytes
        )));
    }
    let message = envelope(&channel, &caller, message);
    let refused = match state.channels.publish(&channel, &caller) {
        Access::All => false,
        Access::Nothing => true,
        Access::Matching(rule) => !rule.matches(&message),
    };
    if refused {
        return Err(refusal(&caller, &format!("publish to `{channel}`")));
    }
    let publisher = match (&caller, ip) {
        (Some(identity), _) => format!("user {}", identity.user_id),
        (None, Some(ip)) => format!("ip {ip}"),
        (None, None) => "anonymous".to_owned(),
    };
    state.publish_rate.check(publisher)?;
    state.store.publish_message(&message).await?;
    Ok((StatusCode::CREATED, Json(message)))
}
