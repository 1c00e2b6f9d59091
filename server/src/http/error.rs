//! The one error type every handler returns, rendered as a Matrix error body.

use std::time::Duration;

use axum::response::{IntoResponse, Response};
use http::StatusCode;
use ruma::api::{
    OutgoingResponse,
    client::uiaa::UiaaInfo,
    error::{
        ErrorBody, ErrorKind, LimitExceededErrorData, RetryAfter, StandardErrorBody,
        UnknownTokenErrorData,
    },
};

/// A failure that a client sees as a Matrix error; internal causes are logged, never leaked.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A spec error with its status, errcode and a human-readable message.
    #[error("{status} {kind:?}: {message}")]
    Matrix {
        status: StatusCode,
        kind: ErrorKind,
        message: String,
    },
    /// An error whose body carries more than `errcode` and `error`, or a namespaced errcode.
    #[error("{status} {errcode}: {message}")]
    Detailed {
        status: StatusCode,
        errcode: &'static str,
        message: String,
        extra: serde_json::Map<String, serde_json::Value>,
    },
    /// User-interactive authentication must continue (401 with flows and session).
    #[error("user-interactive authentication required")]
    Uia(Box<UiaaInfo>),
    /// Something on the server side broke (database down, I/O); reported as 500 `M_UNKNOWN`.
    #[error("internal error: {0:#}")]
    Internal(#[from] anyhow::Error),
}

/// Shorthand for results of handlers and services.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Any spec error.
    pub fn new(status: StatusCode, kind: ErrorKind, message: impl Into<String>) -> Self {
        Self::Matrix {
            status,
            kind,
            message: message.into(),
        }
    }
    /// 403 `M_FORBIDDEN`.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, ErrorKind::Forbidden, message)
    }
    /// 400 `M_BAD_JSON`: the body is JSON but not the shape the endpoint needs.
    pub fn bad_json(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorKind::BadJson, message)
    }
    /// 400 `M_NOT_JSON`.
    pub fn not_json() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            ErrorKind::NotJson,
            "The request body is not valid JSON",
        )
    }
    /// 400 `M_UNKNOWN`, for refusals the spec has no errcode for.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorKind::Unknown, message)
    }
    /// 400 `M_INVALID_PARAM`.
    pub fn invalid_param(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorKind::InvalidParam, message)
    }
    /// 400 `M_MISSING_PARAM`.
    pub fn missing_param(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorKind::MissingParam, message)
    }
    /// 404 `M_NOT_FOUND`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, ErrorKind::NotFound, message)
    }
    /// 404 `M_UNRECOGNIZED`: no such endpoint.
    pub fn unrecognized() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            ErrorKind::Unrecognized,
            "Unrecognized request",
        )
    }
    /// 405 `M_UNRECOGNIZED`: the endpoint exists but not with this method.
    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            ErrorKind::Unrecognized,
            "This endpoint does not accept this HTTP method",
        )
    }
    /// 401 `M_MISSING_TOKEN`.
    pub fn missing_token() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            ErrorKind::MissingToken,
            "Missing access token",
        )
    }
    /// 401 `M_UNKNOWN_TOKEN`; `soft_logout` when a refreshable token merely expired.
    pub fn unknown_token(soft_logout: bool) -> Self {
        let mut data = UnknownTokenErrorData::new();
        data.soft_logout = soft_logout;
        let message = if soft_logout {
            "Access token has expired"
        } else {
            "Unrecognised access token"
        };
        Self::new(
            StatusCode::UNAUTHORIZED,
            ErrorKind::UnknownToken(data),
            message,
        )
    }
    /// 429 `M_LIMIT_EXCEEDED` with the time after which a retry may succeed.
    pub fn limit_exceeded(retry_after: Duration) -> Self {
        let mut data = LimitExceededErrorData::new();
        data.retry_after = Some(RetryAfter::Delay(retry_after));
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::LimitExceeded(data),
            "Too many requests",
        )
    }
    /// 413 `M_TOO_LARGE`.
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::TooLarge,
            format!("Request body is larger than the limit of {limit} bytes"),
        )
    }
}

impl From<sqlx::Error> for Error {
    fn from(err: sqlx::Error) -> Self {
        Self::Internal(anyhow::Error::new(err).context("database"))
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let rendered = match self {
            Error::Matrix {
                status,
                kind,
                message,
            } => ruma::api::error::Error::new(
                status,
                ErrorBody::Standard(StandardErrorBody::new(kind, message)),
            )
            .try_into_http_response::<bytes::BytesMut>(),
            Error::Detailed {
                status,
                errcode,
                message,
                mut extra,
            } => {
                extra.insert("errcode".to_owned(), errcode.into());
                extra.insert("error".to_owned(), message.into());
                return (status, axum::Json(serde_json::Value::Object(extra))).into_response();
            }
            Error::Uia(info) => {
                // `completed` is written even when empty (ruma leaves it out): Synapse sends
                // it, and SyTest and some clients read it.
                let mut body = serde_json::to_value(&*info).unwrap_or_default();
                if let Some(object) = body.as_object_mut() {
                    object
                        .entry("completed")
                        .or_insert_with(|| serde_json::json!([]));
                }
                return (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response();
            }
            Error::Internal(err) => {
                tracing::error!(error = %format!("{err:#}"), "internal error while handling a request");
                ruma::api::error::Error::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    ErrorBody::Standard(StandardErrorBody::new(
                        ErrorKind::Unknown,
                        "Internal server error".to_owned(),
                    )),
                )
                .try_into_http_response::<bytes::BytesMut>()
            }
        };
        match rendered {
            Ok(response) => response
                .map(|body| axum::body::Body::from(body.freeze()))
                .into_response(),
            Err(err) => {
                tracing::error!(%err, "failed to serialize an error response");
                StatusCode::INTERNAL_SERVER_ERROR.into_response()
            }
        }
    }
}
