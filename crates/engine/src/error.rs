//! What the engine fails with, in its own terms: `livehub` gives each kind
//! its HTTP status in one place (`livehub::error`).

use crate::collection::InvalidName;
use crate::filter::FilterError;
use crate::identity::AuthError;
use crate::store::StoreError;

/// Everything a call of the engine can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed (a name, a parameter, a body); `code` is
    /// the stable code clients read.
    #[error("{message}")]
    Invalid { code: &'static str, message: String },
    /// The filter expression does not parse.
    #[error("{0}")]
    InvalidFilter(FilterError),
    /// A rule refuses an anonymous caller: signing in may help.
    #[error("{0}")]
    SignInRequired(String),
    /// A rule refuses a caller who is signed in.
    #[error("{0}")]
    Refused(String),
    /// No such collection, record or stream (or one the caller may not
    /// see: the two look the same).
    #[error("{0}")]
    NotFound(String),
    /// It exists already, or the state it was asked of has changed.
    #[error("{0}")]
    Conflict(String),
    /// A limit on open streams is reached.
    #[error("{0}")]
    TooManyStreams(String),
    /// A publisher exceeds its rate; it may try again in a second.
    #[error("{0}")]
    RateLimited(String),
    /// Changes after a cursor can no longer all be served (`reason` is the
    /// one a stream's `reset` gives).
    #[error("{message}")]
    CursorUnavailable {
        reason: &'static str,
        message: String,
    },
    /// The database does not answer.
    #[error("the database is unavailable")]
    Unavailable,
    /// This node has accepted more changes than its streams have been sent;
    /// it may take more in a second.
    #[error("{0}")]
    Overloaded(String),
    /// Anything else: a bug or a database failure, never the caller's doing.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl Error {
    pub(crate) fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        Error::Invalid {
            code,
            message: message.into(),
        }
    }

    /// The stable code clients read (in an HTTP error body, or in a
    /// stream's `subscription.refused` event).
    pub(crate) fn code(&self) -> &'static str {
        match self {
            Error::Invalid { code, .. } => code,
            Error::InvalidFilter(_) => "invalid_filter",
            Error::SignInRequired(_) => "unauthorized",
            Error::Refused(_) => "forbidden",
            Error::NotFound(_) => "not_found",
            Error::Conflict(_) => "conflict",
            Error::TooManyStreams(_) => "too_many_streams",
            Error::RateLimited(_) => "rate_limited",
            Error::CursorUnavailable { .. } => "cursor_unavailable",
            Error::Unavailable => "unavailable",
            Error::Overloaded(_) => "overloaded",
            Error::Internal(_) => "internal",
        }
    }

    /// A collection that does not exist: the one wording.
    pub fn no_collection(name: &str) -> Self {
        Error::NotFound(format!("no collection named `{name}`"))
    }

    /// A record that does not exist, or that the caller may not read (the
    /// two look the same): the one wording.
    pub fn no_record(collection: &str, key: &str) -> Self {
        Error::NotFound(format!("no record `{key}` in `{collection}`"))
    }
}

/// A token that does not check out: signing in again may help, except
/// when the request itself is ambiguous.
impl From<AuthError> for Error {
    fn from(error: AuthError) -> Self {
        match error {
            AuthError::TwoAuthorizations => {
                Error::invalid("invalid_credentials", error.to_string())
            }
            error => Error::SignInRequired(error.to_string()),
        }
    }
}

impl From<FilterError> for Error {
    fn from(error: FilterError) -> Self {
        Error::InvalidFilter(error)
    }
}

/// Names that do not check out are the client's mistake.
impl From<InvalidName> for Error {
    fn from(error: InvalidName) -> Self {
        let code = match error {
            InvalidName::Collection(_) => "invalid_name",
            InvalidName::Record(_) => "invalid_id",
        };
        Error::invalid(code, error.to_string())
    }
}

/// The one place where the store's failures become the engine's.
impl From<StoreError> for Error {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NoCollection(name) => Error::no_collection(name.as_str()),
            StoreError::NoRecord { collection, key } => {
                Error::no_record(collection.as_str(), key.as_str())
            }
            StoreError::CollectionExists(_)
            | StoreError::RecordExists { .. }
            | StoreError::Conflict => Error::Conflict(error.to_string()),
            StoreError::Refused { .. } => Error::Refused(error.to_string()),
            StoreError::Unavailable => Error::Unavailable,
            StoreError::Overloaded { .. } => Error::Overloaded(error.to_string()),
            StoreError::Database(error) => error.into(),
            StoreError::Unexpected(message) => Error::Internal(anyhow::anyhow!(message)),
        }
    }
}

impl From<surrealdb::Error> for Error {
    fn from(error: surrealdb::Error) -> Self {
        if error.is_connection() {
            tracing::warn!(error = %error, "database connection error");
            return Error::Unavailable;
        }
        Error::Internal(anyhow::Error::new(error))
    }
}
