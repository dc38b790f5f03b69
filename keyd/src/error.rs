//! keyd's errors: [`Error`] for everything below the HTTP layer, and [`ApiError`], the one
//! type every handler returns, which renders the contract's error body
//! (`{"error": {"code", "message", "field"?}}`), logs 500s and never leaks internals.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// Failures of storage, configuration and start-up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A stored row that keyd itself could not have written (edited by hand, or corrupt).
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("the operating system's random number generator failed")]
    Random,
}

impl Error {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }

    /// True when the database refused a write because a unique key already exists.
    pub fn is_unique_violation(&self) -> bool {
        match self {
            Self::Db(sqlx::Error::Database(e)) => e.is_unique_violation(),
            _ => false,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An HTTP error answer. Messages are written for the person calling the API: they say
/// what was wrong and, where it helps, what to do. They never contain secrets.
#[derive(Debug)]
pub enum ApiError {
    /// 400, naming the offending field.
    Invalid {
        field: String,
        message: String,
    },
    /// 400 for a malformed body or query that cannot be tied to one field.
    BadRequest(String),
    /// 401 with `WWW-Authenticate`.
    Unauthenticated(&'static str),
    NotFound(String),
    Conflict(String),
    PayloadTooLarge,
    TooManyRequests {
        retry_after: u64,
    },
    Unavailable(&'static str),
    /// 500: logged with its cause, answered without it.
    Internal(Error),
}

impl ApiError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::Invalid { .. } | Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(e) if e.is_unique_violation() => StatusCode::CONFLICT,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        Self::Internal(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let (code, message, field) = match &self {
            Self::Invalid { field, message } => {
                ("invalid_argument", message.clone(), Some(field.clone()))
            }
            Self::BadRequest(m) => ("invalid_argument", m.clone(), None),
            Self::Unauthenticated(m) => ("unauthenticated", (*m).to_owned(), None),
            Self::NotFound(m) => ("not_found", m.clone(), None),
            Self::Conflict(m) => ("conflict", m.clone(), None),
            Self::PayloadTooLarge => (
                "payload_too_large",
                "request body is too large".to_owned(),
                None,
            ),
            Self::TooManyRequests { .. } => (
                "too_many_requests",
                "too many failed authentication attempts from this address: retry later".to_owned(),
                None,
            ),
            Self::Unavailable(m) => ("unavailable", (*m).to_owned(), None),
            Self::Internal(e) if e.is_unique_violation() => {
                ("conflict", "the object already exists".to_owned(), None)
            }
            Self::Internal(e) => {
                tracing::error!(error = %e, "internal error");
                (
                    "internal",
                    "internal error: see keyd's log".to_owned(),
                    None,
                )
            }
        };
        let mut err = serde_json::json!({ "code": code, "message": message });
        if let (Some(f), Some(obj)) = (field, err.as_object_mut()) {
            obj.insert("field".into(), serde_json::Value::String(f));
        }
        let mut resp = (status, axum::Json(serde_json::json!({ "error": err }))).into_response();
        match &self {
            Self::Unauthenticated(_) => {
                resp.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"keyd\""),
                );
            }
            Self::TooManyRequests { retry_after } => {
                if let Ok(v) = HeaderValue::from_str(&retry_after.to_string()) {
                    resp.headers_mut().insert(header::RETRY_AFTER, v);
                }
            }
            _ => {}
        }
        resp
    }
}
