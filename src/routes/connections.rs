//! `/api/v1/realtime/connections/{id}/subscriptions`: adding and removing
//! subscriptions of an open stream (see [`crate::connections`]).

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{Client, JsonBody, PathParams};
use crate::AppState;
use crate::connections::{Change, NewSubscription, Requester, Route, not_yours};
use crate::error::ApiError;

/// The header an anonymous caller proves it owns a stream with.
const SECRET_HEADER: &str = "x-connection-secret";

pub async fn add(
    State(state): State<AppState>,
    Client { caller, .. }: Client,
    PathParams(id): PathParams<String>,
    headers: HeaderMap,
    JsonBody(new): JsonBody<NewSubscription>,
) -> Result<Response, ApiError> {
    let subscription = new.id()?.to_string();
    let requester = requester(&caller, &headers)?;
    change(&state, &id, requester, subscription, Change::Add(new)).await
}

pub async fn remove(
    State(state): State<AppState>,
    Client { caller, .. }: Client,
    PathParams((id, subscription)): PathParams<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let requester = requester(&caller, &headers)?;
    let change_of = Change::Remove {
        id: subscription.clone(),
    };
    change(&state, &id, requester, subscription, change_of).await
}

fn requester(caller: &crate::identity::Caller, headers: &HeaderMap) -> Result<Requester, ApiError> {
    let secret = match headers.get(SECRET_HEADER) {
        Some(value) => Some(value.to_str().map_err(|_| {
            ApiError::Unauthorized(format!(
                "`{SECRET_HEADER}` is not a secret this server gave"
            ))
        })?),
        None => None,
    };
    match Requester::of(caller, secret) {
        Requester::Nobody => Err(ApiError::Unauthorized(format!(
            "sign in as the stream's user, or send its `connection_secret` in `{SECRET_HEADER}`"
        ))),
        requester => Ok(requester),
    }
}

/// Applies `change` to stream `id` here, answering with its outcome (200),
/// or sends it to the node that holds the stream (202: the outcome arrives
/// on the stream).
async fn change(
    state: &AppState,
    id: &str,
    requester: Requester,
    subscription: String,
    change: Change,
) -> Result<Response, ApiError> {
    match state.connections.route(id, &requester)? {
        Route::Here(commands) => {
            let (reply, outcome) = tokio::sync::oneshot::channel();
            let command = Box::new(crate::connections::Command { change, reply });
            commands.send(command).await.map_err(|_| not_yours(id))?;
            // No answer: the stream ended before it took the change.
            let answer = outcome.await.map_err(|_| not_yours(id))??;
            Ok((
                StatusCode::OK,
                Json(json!({"connection": id, "subscription": answer})),
            )
                .into_response())
        }
        // One database per node: no other node can hold it.
        Route::Elsewhere if state.config.embedded_db() => Err(not_yours(id).into()),
        Route::Elsewhere => {
            let data = json!({"connection": id, "requester": requester, "change": change});
            state.store.forward_subscription_change(data).await?;
            let body = json!({
                "connection": id,
                "subscription": {"id": subscription},
                "forwarded": true,
            });
            Ok((StatusCode::ACCEPTED, Json(body)).into_response())
        }
    }
}
