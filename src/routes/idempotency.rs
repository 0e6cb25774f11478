//! `Idempotency-Key` on write routes: a retry with the same key by the same
//! caller, within `--idempotency-window`, gets the first answer again and
//! writes nothing; the same key with another request is a 422.
//!
//! The key is claimed in the database before the write runs, and the
//! answer kept there after it, so retries are safe across nodes and
//! restarts. The request runs in a task of its own: a client that hangs up
//! after the write committed still finds its answer kept when it retries.
//! A request that failed in a way worth retrying (5xx, 429) frees its key.
//! If a node dies while the request runs, the key answers 409 until its
//! window passes: it is never written twice.

use axum::body::{Body, to_bytes};
use axum::extract::{FromRequestParts, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::Client;
use crate::AppState;
use crate::error::ApiError;
use crate::store::Claim;

/// The request header.
pub const HEADER: &str = "idempotency-key";
/// The response header that marks an answer given again.
const REPLAYED: &str = "idempotent-replayed";
/// The longest key.
const MAX_KEY: usize = 255;

/// The middleware (see the module docs); requests without the header, and
/// reads, pass straight through.
pub async fn idempotent(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let writes = matches!(
        *request.method(),
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    );
    let Some(key) = request.headers().get(HEADER).filter(|_| writes).cloned() else {
        return next.run(request).await;
    };
    match with_key(state, key, request, next).await {
        Ok(response) | Err(response) => response,
    }
}

async fn with_key(
    state: AppState,
    key: HeaderValue,
    request: Request,
    next: Next,
) -> Result<Response, Response> {
    let refuse = |error: ApiError| error.into_response();
    let key = key
        .to_str()
        .ok()
        .filter(|key| (1..=MAX_KEY).contains(&key.len()))
        .ok_or_else(|| {
            refuse(ApiError::bad_request(
                "invalid_idempotency_key",
                format!("an Idempotency-Key is 1 to {MAX_KEY} visible ASCII characters"),
            ))
        })?
        .to_owned();
    let (mut parts, body) = request.into_parts();
    // Keys are per caller (a user, or an anonymous caller's address):
    // another caller's key is another key.
    let client = Client::from_request_parts(&mut parts, &state)
        .await
        .map_err(refuse)?;
    let caller = match (&client.caller, client.ip) {
        (Some(identity), _) => format!("user {}", identity.user_id),
        (None, Some(ip)) => format!("anonymous at {ip}"),
        (None, None) => "anonymous".to_owned(),
    };
    let body = to_bytes(body, state.config.max_body_bytes)
        .await
        .map_err(|_| {
            refuse(ApiError::PayloadTooLarge(format!(
                "a request with an Idempotency-Key is at most {} bytes (--max-body-bytes)",
                state.config.max_body_bytes
            )))
        })?;
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    let fingerprint = hash(&[
        parts.method.as_str().as_bytes(),
        parts.uri.path().as_bytes(),
        parts.uri.query().unwrap_or_default().as_bytes(),
        content_type.as_bytes(),
        &body,
    ]);
    let owner = format!("{caller}\n{key}");
    let id = hash(&[owner.as_bytes()]);
    let expires = crate::clock::unix_now() + state.config.idempotency_window.as_secs();
    let claim = state
        .store
        .claim_key(&id, &owner, &fingerprint, expires)
        .await
        .map_err(|error| refuse(error.into()))?;
    match claim {
        Claim::First => {}
        Claim::Running { request } | Claim::Answered { request, .. } if request != fingerprint => {
            return Err(refuse(ApiError::Unprocessable(
                "this Idempotency-Key was used with another request: use a new key for a new request".into(),
            )));
        }
        Claim::Running { .. } => {
            return Err(refuse(ApiError::Conflict(
                "a request with this Idempotency-Key is still running; retry in a moment".into(),
            )));
        }
        Claim::Answered {
            status,
            content_type,
            body,
            ..
        } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
            let mut response = (status, body).into_response();
            let headers = response.headers_mut();
            if let Ok(value) = HeaderValue::from_str(&content_type) {
                headers.insert(header::CONTENT_TYPE, value);
            }
            headers.insert(REPLAYED, HeaderValue::from_static("true"));
            return Ok(response);
        }
    }
    // In a task of its own, so that the answer is kept even if the client
    // has gone.
    let request = Request::from_parts(parts, Body::from(body));
    let task = tokio::spawn(async move {
        let response = next.run(request).await;
        let status = response.status();
        let (mut parts, body) = response.into_parts();
        let Ok(body) = to_bytes(body, usize::MAX).await else {
            let _ = state.store.release_key(&id).await;
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        };
        let retryable = status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS;
        let kept = match (retryable, std::str::from_utf8(&body)) {
            (false, Ok(text)) => {
                let content_type = parts
                    .headers
                    .get(header::CONTENT_TYPE)
                    .and_then(|value| value.to_str().ok())
                    .unwrap_or_default();
                state
                    .store
                    .keep_answer(&id, status.as_u16(), content_type, text)
                    .await
            }
            _ => state.store.release_key(&id).await,
        };
        if let Err(error) = kept {
            tracing::warn!(%error, "keeping an idempotent answer failed");
        }
        parts.headers.remove(header::CONTENT_LENGTH);
        Response::from_parts(parts, Body::from(body))
    });
    task.await
        .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// A hex digest of `parts`, each length-prefixed so that no two lists of
/// parts collide by concatenation.
fn hash(parts: &[&[u8]]) -> String {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    for part in parts {
        hasher.update(&(part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    format!("{:032x}", hasher.digest128())
}
