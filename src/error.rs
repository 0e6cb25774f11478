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

use crate::engine;

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

    /// 404 for a collection that does not exist (the engine's wording).
    pub fn no_collection(name: &str) -> Self {
        engine::Error::no_collection(name).into()
    }

    /// 404 for a record that does not exist, or that the caller may not
    /// read (the engine's wording).
    pub fn no_record(collection: &str, key: &str) -> Self {
        engine::Error::no_record(collection, key).into()
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

/// The one place where the engine's errors become HTTP answers.
impl From<engine::Error> for ApiError {
    fn from(error: engine::Error) -> Self {
        use engine::Error;
        match error {
            Error::Invalid { code, message } => ApiError::BadRequest { code, message },
            Error::InvalidFilter(error) => ApiError::InvalidFilter {
                message: error.message,
                column: error.column,
            },
            Error::SignInRequired(message) => ApiError::Unauthorized(message),
            Error::Refused(message) => ApiError::Forbidden(message),
            Error::NotFound(message) => ApiError::NotFound(message),
            Error::Conflict(message) => ApiError::Conflict(message),
            Error::TooManyStreams(message) => ApiError::TooManyStreams(message),
            Error::RateLimited(message) => ApiError::RateLimited(message),
            Error::CursorUnavailable { reason, message } => {
                ApiError::CursorUnavailable { reason, message }
            }
            Error::Unavailable => ApiError::Unavailable,
            Error::Overloaded(message) => ApiError::Overloaded(message),
            Error::Internal(cause) => ApiError::Internal(cause),
        }
    }
}

/// The engine's own failures, through [`engine::Error`].
macro_rules! through_engine_error {
    ($($source:ty),*) => {$(
        impl From<$source> for ApiError {
            fn from(error: $source) -> Self {
                engine::Error::from(error).into()
            }
        }
    )*};
}

through_engine_error!(
    crate::identity::AuthError,
    crate::filter::FilterError,
    crate::store::StoreError,
    crate::collection::InvalidName
);

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
