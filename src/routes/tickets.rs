//! `POST /api/v1/realtime/tickets`: single-use tickets that open one stream,
//! so that long-lived tokens stay out of URLs (`EventSource` cannot send
//! headers, and URLs end up in proxy logs and browser history).

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::Client;
use crate::AppState;
use crate::clock::format_time;
use crate::clock::unix_now;
use crate::error::ApiError;

/// How long a ticket can wait to be used.
pub const TICKET_LIFETIME: Duration = Duration::from_secs(30);

pub async fn create(
    State(state): State<AppState>,
    Client { caller, .. }: Client,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Some(identity) = caller else {
        return Err(ApiError::Unauthorized(
            "a ticket is issued to a signed-in caller: send a token".into(),
        ));
    };
    let ticket = format!("{:032x}", rand::random::<u128>());
    let expires = unix_now() + TICKET_LIFETIME.as_secs();
    state
        .store
        .create_ticket(&ticket, &identity.claims, expires)
        .await?;
    let expires_at = time::OffsetDateTime::from_unix_timestamp(expires as i64)
        .map(format_time)
        .unwrap_or_default();
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "ticket": ticket,
            "expires_at": expires_at,
            "expires_in": TICKET_LIFETIME.as_secs(),
        })),
    ))
}
