//! The dashboard API's one error type, with its HTTP status and JSON body
//! (`{"error": "..."}`), shared by every handler module.
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Every failure of the API, with its HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No or wrong token.
    #[error("authentication required: log in, or send 'Authorization: Bearer <token>'")]
    Unauthorized,
    /// Unknown job, dataset or file.
    #[error("{0}")]
    NotFound(String),
    /// Malformed request.
    #[error("{0}")]
    BadRequest(String),
    /// The name is taken, or the job is not in a state that allows it.
    #[error("{0}")]
    Conflict(String),
    /// An upload limit was exceeded.
    #[error("{0}")]
    TooLarge(String),
    /// The path lies outside the data directory.
    #[error("{0}")]
    Forbidden(String),
    /// Too many requests of this kind at once (uploads); try again later.
    #[error("{0}")]
    Busy(String),
    /// The master refused the job.
    #[error("cannot start the job: {0}")]
    Master(#[from] crate::master::MasterError),
    /// File system failure.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
}

impl ApiError {
    /// An I/O error with context.
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ApiError {
        let what = what.into();
        move |source| ApiError::Io { what, source }
    }

    fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::Busy(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Master(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Io { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut msg = self.to_string();
        let mut src = std::error::Error::source(&self);
        // `Io` already prints its source.
        if matches!(self, ApiError::Io { .. }) {
            src = None;
        }
        while let Some(s) = src {
            msg.push_str(": ");
            msg.push_str(&s.to_string());
            src = s.source();
        }
        if self.status().is_server_error() {
            tracing::error!(error = %msg, "dashboard request failed");
        }
        (self.status(), Json(json!({ "error": msg }))).into_response()
    }
}
