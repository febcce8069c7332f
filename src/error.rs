//! Errors at the HTTP edge: one type, mapped to a status and a short JSON reason.
//!
//! Inner modules keep their own `thiserror` enums (parse, store, deliver, config); this is the
//! only place they become HTTP answers, and `into_response` has no side effects.

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header::RETRY_AFTER},
    response::{IntoResponse, Response},
};
use serde_json::json;

use crate::pipeline::parse::EnvelopeError;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    BadBody(#[from] EnvelopeError),
    #[error("body exceeds the limit of {0} bytes")]
    TooLarge(usize),
    #[error("content type `{0}` is not JSON")]
    UnsupportedType(String),
    #[error("content encoding `{0}` is not supported; send identity")]
    UnsupportedEncoding(String),
    #[error("body not received in time")]
    BodyTimeout,
    #[error("body could not be read")]
    BodyRead,
    #[error("token not accepted for this service")]
    Unauthorized,
    #[error("not found")]
    NotFound,
    #[error("invalid service name")]
    BadService,
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error")]
    Internal,
}

impl AppError {
    pub fn status(&self) -> StatusCode {
        match self {
            AppError::BadBody(EnvelopeError::TooManyRecords { .. }) | AppError::TooLarge(_) => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            AppError::BadBody(_) | AppError::BodyRead | AppError::BadService => {
                StatusCode::BAD_REQUEST
            }
            AppError::UnsupportedType(_) | AppError::UnsupportedEncoding(_) => {
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            }
            AppError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            AppError::Unauthorized => StatusCode::UNAUTHORIZED,
            AppError::NotFound => StatusCode::NOT_FOUND,
            AppError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            AppError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut resp = (status, Json(json!({ "error": self.to_string() }))).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_static("5"));
        }
        resp
    }
}
