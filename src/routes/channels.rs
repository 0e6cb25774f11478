//! `POST /api/v1/channels/{name}/messages`: publish a message to a channel;
//! `.../messages/batch`: a JSON array of messages, in one commit.

use std::sync::Arc;
use std::time::SystemTime;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::batches::failed_item;
use super::{Client, JsonBody, PathParams};
use crate::AppState;
use crate::access::refusal;
use crate::channels::{envelope, validate_channel};
use crate::error::ApiError;
use crate::event::Event;
use crate::identity::Caller;
use crate::rules::Access;

/// Publishes the body (any JSON) to the channel's subscribers, on every
/// node, as a `channel.message` event.
pub async fn publish(
    State(state): State<AppState>,
    Client { caller, ip, .. }: Client,
    PathParams(channel): PathParams<String>,
    JsonBody(body): JsonBody<Value>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    validate_channel(&channel)?;
    let message = judge(&state, &channel, &caller, body)?;
    state.publish_rate.check(publisher(&caller, ip), 1)?;
    deliver(&state, &channel, std::slice::from_ref(&message)).await?;
    Ok((StatusCode::CREATED, Json(message)))
}

/// `POST /api/v1/channels/{name}/messages/batch`: publishes each item of a
/// JSON array as a message, in order, in one commit, each item judged and
/// answered on its own (a route of its own, so that an array stays a valid
/// single message).
pub async fn publish_batch(
    State(state): State<AppState>,
    Client { caller, ip, .. }: Client,
    PathParams(channel): PathParams<String>,
    JsonBody(body): JsonBody<Value>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    validate_channel(&channel)?;
    let Value::Array(items) = body else {
        return Err(ApiError::bad_request(
            "invalid_body",
            "a batch is a JSON array of messages; send one message to .../messages",
        ));
    };
    let max = state.config.max_batch;
    if items.is_empty() || items.len() > max {
        return Err(ApiError::bad_request(
            "invalid_body",
            format!(
                "a batch holds 1 to {max} messages (--max-batch); this one holds {}",
                items.len()
            ),
        ));
    }
    let judged: Vec<Result<Value, ApiError>> = items
        .into_iter()
        .map(|message| judge(&state, &channel, &caller, message))
        .collect();
    let accepted: Vec<Value> = judged
        .iter()
        .filter_map(|item| item.as_ref().ok().cloned())
        .collect();
    if !accepted.is_empty() {
        state
            .publish_rate
            .check(publisher(&caller, ip), accepted.len())?;
        deliver(&state, &channel, &accepted).await?;
    }
    let all = accepted.len() == judged.len();
    let items: Vec<Value> = judged
        .into_iter()
        .map(|item| match item {
            Ok(message) => json!({"status": 201, "message": message}),
            Err(error) => failed_item(&error),
        })
        .collect();
    let status = if all {
        StatusCode::CREATED
    } else {
        StatusCode::MULTI_STATUS
    };
    Ok((status, Json(json!({ "items": items }))))
}

/// Whose allowance a message takes from (see `PublishRate`).
fn publisher(caller: &Caller, ip: Option<std::net::IpAddr>) -> String {
    match (caller, ip) {
        (Some(identity), _) => format!("user {}", identity.user_id),
        (None, Some(ip)) => format!("ip {ip}"),
        (None, None) => "anonymous".to_owned(),
    }
}

/// The envelope of `message` from `caller`, if it may go to `channel`: not
/// too large, and passing the channel's publish rule.
fn judge(
    state: &AppState,
    channel: &str,
    caller: &Caller,
    message: Value,
) -> Result<Value, ApiError> {
    let size = serde_json::to_vec(&message).map_or(0, |json| json.len());
    if size > state.config.max_message_bytes {
        return Err(ApiError::PayloadTooLarge(format!(
            "the message is {size} bytes of JSON; the most a channel message may be is {} (--max-message-bytes)",
            state.config.max_message_bytes
        )));
    }
    let message = envelope(channel, caller, message);
    let refused = match state.channels.publish(channel, caller) {
        Access::All => false,
        Access::Nothing => true,
        Access::Matching(rule) => !rule.matches(&message),
    };
    if refused {
        return Err(refusal(caller, &format!("publish to `{channel}`")).into());
    }
    Ok(message)
}

/// Publishes `messages` (envelopes) to `channel`, in order, in one commit:
/// written to the database for a durable channel; for an ephemeral one,
/// delivered to this node's streams and then (on a database server, which
/// other nodes may share) relayed to the others through the database.
/// Answered once that is done.
async fn deliver(state: &AppState, channel: &str, messages: &[Value]) -> Result<(), ApiError> {
    if state.channels.durable(channel) {
        state.store.publish_messages(messages).await?;
        return Ok(());
    }
    let remote = !state.config.embedded_db();
    if remote {
        // Before delivering anywhere, so that a refusal delivers nothing.
        state.store.admit()?;
    }
    let at = SystemTime::now();
    let channel: Arc<str> = Arc::from(channel);
    let events: Vec<Arc<Event>> = messages
        .iter()
        .map(|message| {
            Arc::new(Event::ephemeral_message(
                channel.clone(),
                message.clone(),
                at,
            ))
        })
        .collect();
    state.hub.publish_ephemeral(&events);
    if remote {
        let at_ms = crate::clock::unix_ms(at.into());
        state.store.relay_messages(messages, at_ms).await?;
    }
    Ok(())
}
