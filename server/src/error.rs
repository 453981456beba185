//! Errors a request can meet, answered as OpenAI's error object with the matching status.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// Malformed JSON, wrong types or values out of range (400).
    #[error("{message}")]
    BadRequest {
        message: String,
        param: Option<&'static str>,
    },
    /// The prompt does not fit the context (400).
    #[error(
        "This model's maximum context length is {capacity} tokens, but the prompt has {tokens} tokens (one position must stay free for the answer)"
    )]
    PromptTooLong { tokens: usize, capacity: usize },
    /// A model this server does not serve (404).
    #[error("The model `{asked}` does not exist; this server serves `{served}`")]
    UnknownModel { asked: String, served: String },
    /// Every slot is busy and the queue is full (503, with Retry-After).
    #[error(
        "The server is busy: {running} requests running and {queued} queued (limit {limit}); retry later"
    )]
    Busy {
        running: usize,
        queued: usize,
        limit: usize,
    },
    /// The engine failed or stopped (500).
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    pub fn bad(message: impl Into<String>, param: Option<&'static str>) -> Self {
        ApiError::BadRequest {
            message: message.into(),
            param,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } | ApiError::PromptTooLong { .. } => StatusCode::BAD_REQUEST,
            ApiError::UnknownModel { .. } => StatusCode::NOT_FOUND,
            ApiError::Busy { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// OpenAI's `{"error": {message, type, param, code}}`.
    pub fn body(&self) -> serde_json::Value {
        let (kind, param, code) = match self {
            ApiError::BadRequest { param, .. } => ("invalid_request_error", *param, None),
            ApiError::PromptTooLong { .. } => (
                "invalid_request_error",
                Some("messages"),
                Some("context_length_exceeded"),
            ),
            ApiError::UnknownModel { .. } => (
                "invalid_request_error",
                Some("model"),
                Some("model_not_found"),
            ),
            ApiError::Busy { .. } => ("server_busy", None, None),
            ApiError::Internal(_) => ("server_error", None, None),
        };
        json!({"error": {"message": self.to_string(), "type": kind, "param": param, "code": code}})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status(), axum::Json(self.body())).into_response();
        if matches!(self, ApiError::Busy { .. }) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}
