//! `GET /api/v1/presence`: who is online, and who a stream is present as.

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use super::Client;
use super::realtime::StreamParams;
use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::presence::PresentUser;
use crate::rules::{Access, refusal};

/// What `caller` may see of presence (the `--presence-rule`, bound to it):
/// 401/403 if nothing.
pub fn presence_access(state: &AppState, caller: &Caller) -> Result<Access, ApiError> {
    let rule = state.config.presence_rule.trim();
    let rule = (!rule.eq_ignore_ascii_case("null")).then_some(rule);
    match Access::of(rule, caller) {
        Access::Nothing => Err(refusal(caller, "see who is online")),
        access => Ok(access),
    }
}

/// Who a stream is present as: its token's user, or the `user_id` and
/// `user_name` it asks for where that is allowed; `None` for an anonymous
/// stream that names no one.
pub fn present_as(
    state: &AppState,
    caller: &Caller,
    params: &StreamParams,
) -> Result<Option<PresentUser>, ApiError> {
    let asked = params
        .user_id
        .as_deref()
        .map(str::trim)
        .filter(|id| !id.is_empty());
    if asked.is_some() || params.user_name.is_some() {
        let allowed = match caller {
            Some(identity) => identity.admin,
            None => state.config.anonymous_presence,
        };
        if !allowed {
            return Err(ApiError::Forbidden(
                "`user_id` and `user_name` are for admins (and anonymous clients, with --anonymous-presence)".into(),
            ));
        }
        if asked.is_some_and(|id| id.len() > 256)
            || params
                .user_name
                .as_ref()
                .is_some_and(|name| name.len() > 256)
        {
            return Err(ApiError::bad_request(
                "invalid_query",
                "`user_id` and `user_name` are at most 256 bytes",
            ));
        }
    }
    let token_user = caller.as_ref().map(|identity| PresentUser {
        user_id: identity.user_id.clone(),
        user_name: identity.name.clone(),
    });
    Ok(match asked {
        Some(user_id) => Some(PresentUser {
            user_id: user_id.to_owned(),
            user_name: params.user_name.clone(),
        }),
        None => token_user.map(|user| PresentUser {
            user_name: params.user_name.clone().or(user.user_name),
            ..user
        }),
    })
}

/// The users online on every node, as the presence rule lets the caller see them.
pub async fn list(
    State(state): State<AppState>,
    Client { caller, .. }: Client,
) -> Result<Json<Value>, ApiError> {
    let access = presence_access(&state, &caller)?;
    let mut users = state.store.presence_list().await?;
    users.retain(|user| access.allows(user));
    Ok(Json(json!({ "count": users.len(), "users": users })))
}
