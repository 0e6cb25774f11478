//! API errors: one enum, each variant with its status, rendered as
//! `{"error": {"code", "message"}}`.
//!
//! Internal errors become an opaque 500; the real cause rides along in the
//! response extensions and is logged once, by [`log_internal_errors`].

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Json, extract::Request, middleware::Next};
use serde_json::json;

/// Everything a handler can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is malformed (body, name, id, parameter).
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    /// 400: the filter expression does not parse.
    #[error("{message}")]
    InvalidFilter { message: String, column: usize },
    /// 401: no valid credentials, where they are required.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: the caller is known but a rule refuses it.
    #[error("{0}")]
    Forbidden(String),
    /// 404: no such collection, record or route.
    #[error("{0}")]
    NotFound(String),
    /// 405: the route exists but not with this method.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// 409: the collection or record already exists.
    #[error("{0}")]
    Conflict(String),
    /// 429: a limit on open streams is reached.
    #[error("{0}")]
    TooManyStreams(String),
    /// 429: a publisher exceeds its rate (sent with `Retry-After: 1`).
    #[error("{0}")]
    RateLimited(String),
    /// 413: the body is larger than `--max-body-bytes`.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// 410: a change page's cursor can no longer be served (the same
    /// reasons a stream's `reset` gives).
    #[error("{message}")]
    CursorUnavailable {
        reason: &'static str,
        message: String,
    },
    /// 422: a well-formed request that cannot be done as asked (an
    /// idempotency key used with another request).
    #[error("{0}")]
    Unprocessable(String),
    /// 503: the database does not answer.
    #[error("the database is unavailable")]
    Unavailable,
    /// 503 with `Retry-After`: this node has accepted more changes than its
    /// streams have been sent (see `--max-backlog`).
    #[error("{0}")]
    Overloaded(String),
    /// 500: anything else. The message is never shown to clients.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            code,
            message: message.into(),
        }
    }

    /// 404 for a collection that does not exist: the one wording.
    pub fn no_collection(name: &str) -> Self {
        ApiError::NotFound(format!("no collection named `{name}`"))
    }

    /// 404 for a record that does not exist, or that the caller may not
    /// read (the two look the same): the one wording.
    pub fn no_record(collection: &str, key: &str) -> Self {
        ApiError::NotFound(format!("no record `{key}` in `{collection}`"))
    }

    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } | ApiError::InvalidFilter { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::TooManyStreams(_) | ApiError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::CursorUnavailable { .. } => StatusCode::GONE,
            ApiError::Unavailable | ApiError::Overloaded(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The error's JSON body, `{"error": {"code", "message", ...}}`; a
    /// 500's message is opaque.
    pub fn body(&self) -> serde_json::Value {
        let code = self.code();
        match self {
            ApiError::Internal(_) => {
                json!({"error": {"code": code, "message": "internal server error"}})
            }
            ApiError::InvalidFilter { message, column } => {
                json!({"error": {"code": code, "message": message, "column": column}})
            }
            ApiError::CursorUnavailable { reason, message } => {
                json!({"error": {"code": code, "message": message, "reason": reason}})
            }
            other => json!({"error": {"code": code, "message": other.to_string()}}),
        }
    }

    /// The stable code clients read.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest { code, .. } => code,
            ApiError::InvalidFilter { .. } => "invalid_filter",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::Conflict(_) => "conflict",
            ApiError::Unprocessable(_) => "idempotency_key_reused",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::TooManyStreams(_) => "too_many_streams",
            ApiError::RateLimited(_) => "rate_limited",
            ApiError::CursorUnavailable { .. } => "cursor_unavailable",
            ApiError::Unavailable => "unavailable",
            ApiError::Overloaded(_) => "overloaded",
            ApiError::Internal(_) => "internal",
        }
    }
}

/// The cause of a 500, carried from the handler to the logging layer.
#[derive(Clone)]
struct InternalCause(Arc<anyhow::Error>);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = self.body();
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        if let ApiError::RateLimited(_) | ApiError::Overloaded(_) = self {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("1"),
            );
        }
        if let ApiError::Internal(cause) = self {
            response
                .extensions_mut()
                .insert(InternalCause(Arc::new(cause)));
        }
        response
    }
}

/// Logs the cause of every 500 exactly once.
pub async fn log_internal_errors(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    if let Some(InternalCause(cause)) = response.extensions().get::<InternalCause>() {
        tracing::error!(%method, %path, error = format!("{cause:#}"), "request failed");
    }
    response
}

impl From<crate::identity::AuthError> for ApiError {
    fn from(error: crate::identity::AuthError) -> Self {
        match error {
            crate::identity::AuthError::TwoAuthorizations => {
                ApiError::bad_request("invalid_credentials", error.to_string())
            }
            error => ApiError::Unauthorized(error.to_string()),
        }
    }
}

impl From<crate::filter::FilterError> for ApiError {
    fn from(error: crate::filter::FilterError) -> Self {
        ApiError::InvalidFilter {
            message: error.message,
            column: error.column,
        }
    }
}

/// The one place where the store's failures become HTTP answers.
impl From<crate::store::StoreError> for ApiError {
    fn from(error: crate::store::StoreError) -> Self {
        use crate::store::StoreError;
        match error {
            StoreError::NoCollection(name) => ApiError::no_collection(name.as_str()),
            StoreError::NoRecord { collection, key } => {
                ApiError::no_record(collection.as_str(), key.as_str())
            }
            StoreError::CollectionExists(_)
            | StoreError::RecordExists { .. }
            | StoreError::Conflict => ApiError::Conflict(error.to_string()),
            StoreError::Refused { .. } => ApiError::Forbidden(error.to_string()),
            StoreError::Unavailable => ApiError::Unavailable,
            StoreError::Overloaded { .. } => ApiError::Overloaded(error.to_string()),
            StoreError::Database(error) => error.into(),
            StoreError::Unexpected(message) => ApiError::Internal(anyhow::anyhow!(message)),
        }
    }
}

/// Names that do not check out are the client's mistake.
impl From<crate::collection::InvalidName> for ApiError {
    fn from(error: crate::collection::InvalidName) -> Self {
        use crate::collection::InvalidName;
        let code = match error {
            InvalidName::Collection(_) => "invalid_name",
            InvalidName::Record(_) => "invalid_id",
        };
        ApiError::bad_request(code, error.to_string())
    }
}

impl From<surrealdb::Error> for ApiError {
    fn from(error: surrealdb::Error) -> Self {
        if error.is_connection() {
            tracing::warn!(error = %error, "database connection error");
            return ApiError::Unavailable;
        }
        ApiError::Internal(anyhow::Error::new(error))
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            return ApiError::PayloadTooLarge("the request body is too large".into());
        }
        let message = match &rejection {
            JsonRejection::MissingJsonContentType(_) => {
                "expected a JSON body with `Content-Type: application/json`".to_owned()
            }
            other => other.body_text(),
        };
        ApiError::bad_request("invalid_body", message)
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError::bad_request("invalid_path", rejection.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::bad_request("invalid_query", rejection.body_text())
    }
}

/// Fallback for unknown routes: a JSON 404 like every other error.
pub async fn route_not_found() -> ApiError {
    ApiError::NotFound("no such route".into())
}

/// Turns axum's bare 405 into the JSON error shape.
pub async fn json_method_not_allowed(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    if response.status() == StatusCode::METHOD_NOT_ALLOWED
        && !response
            .headers()
            .contains_key(axum::http::header::CONTENT_TYPE)
    {
        let mut json = ApiError::MethodNotAllowed.into_response();
        if let Some(allow) = response.headers().get(axum::http::header::ALLOW) {
            json.headers_mut()
                .insert(axum::http::header::ALLOW, allow.clone());
        }
        return json;
    }
    response
}
