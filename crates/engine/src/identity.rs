//! Who is calling: a verified identity and its claims.
//!
//! A leaf module: configuration, rules and the routes all speak of callers,
//! and none of them needs to know how a token is verified (see `auth`).

use std::sync::Arc;

use serde_json::Value as Json;

/// A verified caller.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    /// `sub`, or `ID` for SurrealDB record-access tokens.
    pub user_id: String,
    /// The `name` claim, if any.
    pub name: Option<String>,
    /// Whether the `role` claim is `admin`: admins pass every rule.
    pub admin: bool,
    /// Every claim, as rules see them (`$auth.<claim>`).
    pub claims: Json,
    /// `exp`, in seconds since the Unix epoch.
    pub expires_at: Option<u64>,
    /// `iat`, in seconds since the Unix epoch: a sign-out by an admin
    /// refuses the tokens issued at or before it.
    pub issued_at: Option<u64>,
}

/// Who is calling: a verified identity, or nobody.
pub type Caller = Option<Arc<Identity>>;

/// The claims rules see as `$auth`: none for an anonymous caller.
pub fn claims_of(caller: &Caller) -> &Json {
    static NONE: Json = Json::Null;
    caller.as_ref().map_or(&NONE, |identity| &identity.claims)
}

/// Why a token was refused. The message never contains the token.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum AuthError {
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token's signature or algorithm does not match this server's key")]
    BadSignature,
    #[error("the token is for another audience")]
    WrongAudience,
    #[error("the token is from another issuer")]
    WrongIssuer,
    #[error("the token is malformed: {0}")]
    Malformed(String),
    #[error("the Authorization header must be `Bearer <token>`; no other scheme is accepted")]
    NotBearer,
    #[error(
        "the token says it was issued in the future (`iat` more than {0} s ahead of this server's clock)"
    )]
    IssuedInFuture(u64),
    #[error(
        "the token's {0} repeats the key `{1}`: a token that two parsers could read differently is refused"
    )]
    DuplicateKey(&'static str, String),
    #[error("send one Authorization header, not several")]
    TwoAuthorizations,
    #[error("the credentials sent name different users (`{0}` and `{1}`): send one")]
    Disagree(String, String),
}

impl Identity {
    /// The identity a verified token's claims describe.
    pub fn from_claims(claims: Json) -> Result<Identity, AuthError> {
        if !claims.is_object() {
            return Err(AuthError::Malformed("the claims are not an object".into()));
        }
        // SurrealDB record-access tokens carry the record id in `ID`.
        let user_id = match (claims.get("sub"), claims.get("ID")) {
            (Some(Json::String(sub)), _) if !sub.is_empty() => sub.clone(),
            (_, Some(Json::String(id))) if !id.is_empty() => id.clone(),
            _ => {
                return Err(AuthError::Malformed(
                    "it names no user (`sub` or `ID`)".into(),
                ));
            }
        };
        // Rules read the user id as `$auth.sub` whichever claim carried it.
        let mut claims = claims;
        if let Some(map) = claims.as_object_mut() {
            map.entry("sub")
                .or_insert_with(|| Json::String(user_id.clone()));
        }
        Ok(Identity {
            user_id,
            name: claims.get("name").and_then(Json::as_str).map(str::to_owned),
            admin: claims.get("role").and_then(Json::as_str) == Some("admin"),
            expires_at: claims.get("exp").and_then(unix_seconds),
            issued_at: claims.get("iat").and_then(unix_seconds),
            claims,
        })
    }
}

/// A NumericDate claim in whole seconds. JWT allows fractions (and common
/// libraries issue them), so they are rounded down: a token then expires,
/// and counts as issued, a fraction of a second early, never late.
fn unix_seconds(claim: &Json) -> Option<u64> {
    match claim.as_u64() {
        Some(seconds) => Some(seconds),
        None => claim
            .as_f64()
            .filter(|seconds| seconds.is_finite() && *seconds >= 0.0)
            // Saturates at u64::MAX for absurdly large values.
            .map(|seconds| seconds.floor() as u64),
    }
}
