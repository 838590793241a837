//! Errors: the server's own (start-up), and the JSON error every failed request gets.

use std::net::SocketAddr;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use jsearch::ErrorClass;

/// Why a server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A non-loopback address without a token.
    #[error(
        "{0} is reachable from other machines: give a token (--token TOKEN or JSEARCH_TOKEN) \
         that every API request must carry, or listen on 127.0.0.1"
    )]
    TokenRequired(SocketAddr),
    /// The address could not be bound (in use, not ours) or the listener failed.
    #[error("cannot listen on {0}: {1}")]
    Bind(SocketAddr, #[source] std::io::Error),
    /// The store or the model could not be opened.
    #[error(transparent)]
    Engine(#[from] jsearch::Error),
    /// Start-up failed otherwise.
    #[error("{0}")]
    Start(String),
}

/// A failed request: `{"error": {"code": "...", "message": "..."}}` with its status.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) code: &'static str,
    pub(crate) message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub(crate) fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

impl From<jsearch::Error> for ApiError {
    fn from(e: jsearch::Error) -> Self {
        let (status, code) = match e.class() {
            ErrorClass::BadInput => (StatusCode::BAD_REQUEST, "bad_request"),
            ErrorClass::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            ErrorClass::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ErrorClass::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        ApiError::new(status, code, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": {"code": self.code, "message": self.message}});
        (self.status, axum::Json(body)).into_response()
    }
}

/// An axum extractor's rejection (bad JSON, body too large, bad query string) as a JSON error
/// with the rejection's own status.
pub(crate) fn rejection(status: StatusCode, what: &str, detail: String) -> ApiError {
    // A body that parses but does not fit the request's shape (axum's 422) is a bad request
    // like any other: one status for every request mistake.
    let status = if status == StatusCode::UNPROCESSABLE_ENTITY {
        StatusCode::BAD_REQUEST
    } else {
        status
    };
    let code = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        s if s.is_server_error() => "internal",
        _ => "bad_request",
    };
    ApiError::new(status, code, format!("{what}: {detail}"))
}
