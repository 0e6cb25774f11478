//! `/api/v1/admin`: announcements to every stream, and signing users out.
//! Both travel through the changefeed, so every node sharing the database
//! acts on them.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Client, ObjectBody, PathParams};
use crate::AppState;
use crate::access::require_admin;
use crate::clock::unix_now;
use crate::error::ApiError;
use crate::revocations::SignOut;

/// Longest announcement text.
const MAX_MESSAGE_LEN: usize = 4096;

/// Body of `POST /api/v1/admin/broadcast`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Announcement {
    /// What people should read.
    message: String,
    /// Anything for programs.
    #[serde(default)]
    data: Option<Value>,
}

/// Sends a `system.announcement` event to every open stream.
pub async fn broadcast(
    State(state): State<AppState>,
    Client { caller, .. }: Client,
    ObjectBody(body): ObjectBody<Announcement>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    require_admin(&caller, "broadcast")?;
    if body.message.trim().is_empty() || body.message.len() > MAX_MESSAGE_LEN {
        return Err(ApiError::bad_request(
            "invalid_body",
            format!("`message` must be 1 to {MAX_MESSAGE_LEN} bytes of text"),
        ));
    }
    let notice = json!({ "message": body.message, "data": body.data });
    state.store.announce(notice.clone()).await?;
    Ok((StatusCode::ACCEPTED, Json(notice)))
}

/// Signs a user out (`POST .../disconnect`): its open streams get
/// `forced_logout` and end, and its tokens issued until now are refused
/// from now on.
pub async fn sign_out(
    State(state): State<AppState>,
    Client { caller, .. }: Client,
    PathParams(user_id): PathParams<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    require_admin(&caller, "sign users out")?;
    if user_id.is_empty() || user_id.len() > 256 {
        return Err(ApiError::bad_request(
            "invalid_id",
            "a user id is 1 to 256 bytes",
        ));
    }
    let now = unix_now();
    state.store.sign_out(&user_id, now).await?;
    // This node refuses the user's tokens at once; others when the notice
    // reaches them (milliseconds).
    state.hub.revocations().note(&SignOut {
        user_id: user_id.clone(),
        revoked_before: now,
    });
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "user_id": user_id, "revoked_before": now })),
    ))
}
