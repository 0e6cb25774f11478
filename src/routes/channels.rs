//! `POST /api/v1/channels/{name}/messages`: publish a message to a channel.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::Value;

use super::{Client, JsonBody, PathParams};
use crate::AppState;
use crate::access::refusal;
use crate::channels::{envelope, validate_channel};
use crate::error::ApiError;
use crate::event::Event;
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
    if state.channels.durable(&channel) {
        state.store.publish_message(&message).await?;
    } else {
        publish_ephemeral(&state, channel, &message).await?;
    }
    Ok((StatusCode::CREATED, Json(message)))
}

/// Delivers a message of an ephemeral channel to this node's streams, then
/// (on a database server, which other nodes may share) relays it to the
/// others through the database; answered once both are done.
async fn publish_ephemeral(
    state: &AppState,
    channel: String,
    message: &Value,
) -> Result<(), ApiError> {
    let remote = !state.config.embedded_db();
    if remote {
        state.store.admit()?;
    }
    let at = std::time::SystemTime::now();
    let event = Event::ephemeral_message(Arc::from(channel), message.clone(), at);
    state.hub.publish_ephemeral(Arc::new(event));
    if remote {
        let at_ms = crate::clock::unix_ms(at.into());
        state.store.relay_message(message, at_ms).await?;
    }
    Ok(())
}
