//! One error type for the HTTP API: user errors keep their status and are not logged;
//! internal errors become a plain 500 and are logged once, here.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{message}")]
    User { status: StatusCode, code: &'static str, message: String },
    #[error("rate limited")]
    RateLimited { retry_after_secs: u64 },
    /// The server refuses work it cannot queue (503 + `Retry-After`): a full password queue.
    #[error("busy")]
    Busy { retry_after_secs: u64 },
    /// A refusal with its own code that lifts at a known time (`Retry-After`): a spent budget.
    #[error("{message}")]
    Later { status: StatusCode, code: &'static str, message: String, retry_after_secs: u64 },
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl AppError {
    pub fn user(status: StatusCode, code: &'static str, message: impl Into<String>) -> AppError {
        AppError::User { status, code, message: message.into() }
    }
    pub fn unauthorized() -> AppError {
        AppError::user(StatusCode::UNAUTHORIZED, "unauthorized", "sign in or send a bearer token")
    }
    pub fn not_found(what: &str) -> AppError {
        AppError::user(StatusCode::NOT_FOUND, "not_found", format!("{what} not found"))
    }
    pub fn invalid(code: &'static str, message: impl Into<String>) -> AppError {
        AppError::user(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }
}

impl From<crate::store::StoreError> for AppError {
    fn from(e: crate::store::StoreError) -> AppError {
        match e {
            // The account was deleted while the request ran.
            crate::store::StoreError::Gone => AppError::unauthorized(),
            e => AppError::Internal(anyhow::Error::new(e)),
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        match self {
            AppError::User { status, code, message } => {
                (status, Json(json!({"error": code, "message": message}))).into_response()
            }
            AppError::RateLimited { retry_after_secs } => retry_later(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("too many requests; retry in {retry_after_secs} s"),
                retry_after_secs,
            ),
            AppError::Busy { retry_after_secs } => retry_later(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                format!("the server is busy; retry in {retry_after_secs} s"),
                retry_after_secs,
            ),
            AppError::Later { status, code, message, retry_after_secs } => {
                retry_later(status, code, message, retry_after_secs)
            }
            AppError::Internal(err) => {
                tracing::error!(error = format!("{err:#}"), "internal error");
                (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({"error": "internal", "message": "internal error"})))
                    .into_response()
            }
        }
    }
}

/// A refusal the client may retry: the JSON error with `retry_after`, and `Retry-After`.
fn retry_later(status: StatusCode, code: &str, message: String, retry_after_secs: u64) -> Response {
    let body = json!({"error": code, "message": message, "retry_after": retry_after_secs});
    let mut r = (status, Json(body)).into_response();
    r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
    r
}
