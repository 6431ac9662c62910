//! The one place where protocol rejections become HTTP responses (design.md §6): every error is
//! JSON `{"error", "error_code", …}` with the rejection's status.

use atp_wasm::{ErrorCode, Rejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

/// A rejection on its way to the client.
#[derive(Debug)]
pub struct ApiError(pub Rejection);

impl From<Rejection> for ApiError {
    fn from(r: Rejection) -> Self {
        ApiError(r)
    }
}

impl From<crate::store::DbError> for ApiError {
    fn from(e: crate::store::DbError) -> Self {
        tracing::error!(error = %e, "storage failure");
        ApiError(Rejection::new(503, ErrorCode::TempFailure, "Storage unavailable, retry later"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(self.0.to_json())).into_response()
    }
}

/// Shorthand for a rejection.
pub fn reject(status: u16, code: ErrorCode, error: impl Into<String>) -> ApiError {
    ApiError(Rejection::new(status, code, error))
}
