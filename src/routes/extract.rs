//! Extractors whose rejections use the API's error shape, so a malformed
//! body, path or query is a JSON 400 (or 413) like every other error.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::Method;
use axum::http::request::Parts;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::AppState;
use crate::auth::credentials;
use crate::error::ApiError;
use crate::identity::{AuthError, Caller, Identity};

/// Like `axum::Json`.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct JsonBody<T>(pub T);

/// Like [`JsonBody`], for a body that must be a JSON object (a struct):
/// serde reads a struct from an array too, filling its fields in order, so
/// `[null, null]` would pass for one.
pub struct ObjectBody<T>(pub T);

impl<T, S> FromRequest<S> for ObjectBody<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let JsonBody(fields) =
            JsonBody::<serde_json::Map<String, serde_json::Value>>::from_request(request, state)
                .await?;
        T::deserialize(serde_json::Value::Object(fields))
            .map(ObjectBody)
            .map_err(|error| {
                ApiError::bad_request("invalid_body", format!("the body does not fit: {error}"))
            })
    }
}

/// Like `axum::extract::Path`.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct PathParams<T>(pub T);

/// Like `axum::extract::Query`.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct QueryParams<T>(pub T);

/// Who is calling and from where. Credentials are looked for as
/// [`credentials`] says; none means an anonymous caller, but a credential
/// that does not verify is a 401, never anonymous or passed over for
/// another. A ticket (`?ticket=`) is accepted on the stream routes only,
/// and left for the stream to redeem (with a token beside it, both must
/// name one user).
pub struct Client {
    pub caller: Caller,
    /// The peer address (the proxy's, behind a proxy).
    pub ip: Option<IpAddr>,
    /// A ticket on a stream route, redeemed by the stream once the request
    /// is otherwise valid (so a typo in a filter does not spend it); see
    /// [`redeem_ticket`].
    pub ticket: Option<String>,
}

/// The query parameters that may carry credentials.
#[derive(Deserialize, Default)]
struct CredentialParams {
    token: Option<String>,
    ticket: Option<String>,
}

impl FromRequestParts<AppState> for Client {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        // Behind a trusted proxy, the address it says it forwarded for.
        let ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|info| {
                state
                    .config
                    .trusted_proxies
                    .client(info.0.ip(), &parts.headers)
            });
        // A credential must be read exactly as sent: a query that does not
        // decode (a repeated `token`, say) is refused, never anonymous.
        let params: CredentialParams = serde_urlencoded::from_str(parts.uri.query().unwrap_or(""))
            .map_err(|error| {
                ApiError::bad_request(
                    "invalid_query",
                    format!("the query does not decode: {error}"),
                )
            })?;
        // Cookies authenticate reads only (streams above all: `EventSource`
        // sends cookies but no headers). A browser attaches cookies to
        // requests that other sites make, so a write must carry its token
        // itself: no cross-site page can then act as the user.
        let reading = parts.method == Method::GET || parts.method == Method::HEAD;
        let found = credentials(
            &parts.headers,
            reading.then_some(state.config.auth_cookie.as_str()),
            params.token.as_deref(),
            params.ticket.as_deref(),
        )?;
        // Every token sent must verify (and not be revoked), and they must
        // all name one user; the first is the caller.
        let mut caller: Caller = None;
        for token in found.tokens {
            let identity = state.auth.verify(token)?;
            refuse_revoked(state, &identity)?;
            match &caller {
                None => caller = Some(Arc::new(identity)),
                Some(first) if first.user_id != identity.user_id => {
                    return Err(AuthError::Disagree(
                        first.user_id.clone(),
                        identity.user_id.clone(),
                    )
                    .into());
                }
                Some(_) => {}
            }
        }
        let mut ticket = None;
        if let Some(found_ticket) = found.ticket {
            let path = parts.uri.path();
            let stream_route = path == "/api/v1/realtime"
                || path
                    .strip_prefix("/api/v1/realtime/")
                    .is_some_and(|rest| !rest.contains('/'));
            if !stream_route || parts.method != Method::GET {
                return Err(ApiError::Unauthorized(
                    "a ticket opens a stream (GET /api/v1/realtime…) and nothing else".into(),
                ));
            }
            ticket = Some(found_ticket.to_owned());
        }
        Ok(Client { caller, ip, ticket })
    }
}

/// The identity a ticket was issued for; it works once, within its life.
pub async fn redeem_ticket(state: &AppState, ticket: &str) -> Result<Identity, ApiError> {
    let refused = || ApiError::Unauthorized("the ticket is unknown, used or expired".into());
    if ticket.len() > 128 {
        return Err(refused());
    }
    let (claims, expires) = state
        .store
        .redeem_ticket(ticket)
        .await?
        .ok_or_else(refused)?;
    let now = crate::clock::unix_now();
    if expires < now {
        return Err(refused());
    }
    let identity = Identity::from_claims(claims).map_err(|_| refused())?;
    if identity.expires_at.is_some_and(|exp| exp < now) {
        return Err(AuthError::Expired.into());
    }
    refuse_revoked(state, &identity)?;
    Ok(identity)
}

/// The caller of a stream that came with `ticket`: the ticket's identity,
/// which must name the same user as a token sent with it, if any.
pub async fn stream_caller(
    state: &AppState,
    caller: Caller,
    ticket: Option<&str>,
) -> Result<Caller, ApiError> {
    let Some(ticket) = ticket else {
        return Ok(caller);
    };
    let identity = redeem_ticket(state, ticket).await?;
    if let Some(token) = &caller
        && token.user_id != identity.user_id
    {
        return Err(AuthError::Disagree(token.user_id.clone(), identity.user_id).into());
    }
    Ok(Some(Arc::new(identity)))
}

/// 401 for a token issued before an admin signed its user out.
pub fn refuse_revoked(state: &AppState, identity: &Identity) -> Result<(), ApiError> {
    if state
        .hub
        .revocations()
        .is_revoked(&identity.user_id, identity.issued_at)
    {
        return Err(ApiError::Unauthorized(
            "the token was revoked: an admin signed this user out; sign in again".into(),
        ));
    }
    Ok(())
}
