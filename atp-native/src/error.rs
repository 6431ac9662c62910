//! The one place where a protocol [`Rejection`] becomes an HTTP response (docs/design.md §6): every
//! error is JSON `{"error", "error_code", …extras}` (the reference's shape, docs/protocol.md §6, with
//! the code always present) under the rejection's status. The code also travels in the response's
//! extensions, so the metrics layer counts refusals by code. A body refused as too large is not read
//! to its end, so that answer also closes the connection.

use atp_wasm::{ErrorCode, Rejection};
use axum::http::{header, HeaderValue, StatusCode};
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
    /// Storage trouble is temporary for the client (retry later), never a 500 (docs/design.md §3), and
    /// says what it is in a stable `storage` field: a full disk is `507` `"storage": "full"`, a
    /// read-only data directory `503` `"read_only"`, anything else (I/O error, …) `503`
    /// `"unavailable"`; the `error_code` is always `451 4.3.0` (temporary local failure), so a
    /// sending server retries instead of bouncing.
    ///
    /// All of these mean "not stored", except `503` `"storage": "outcome_unknown"`: the disk
    /// failed while the write was being committed, so it may be stored after all
    /// (docs/protocol.md §6.4). Retrying with the same nonce and content is safe: an exact repeat
    /// is answered 202 and stored once. Its `cause` says what the disk did.
    fn from(e: crate::store::DbError) -> Self {
        use crate::store::Fault;
        tracing::error!(error = %e, outcome_unknown = e.outcome_unknown(), "storage failure");
        let cause = match e.fault() {
            Fault::Full => "full",
            Fault::ReadOnly => "read_only",
            Fault::Other => "unavailable",
        };
        if e.outcome_unknown() {
            let error = "The server's disk failed while storing this; it may or may not be stored. \
                         Retry later with the same nonce and content: an exact repeat is stored once";
            let r = Rejection::new(503, ErrorCode::TempFailure, error).with("storage", "outcome_unknown");
            return ApiError(r.with("cause", cause));
        }
        let (status, error) = match e.fault() {
            Fault::Full => (507, "Insufficient storage on the server, retry later"),
            Fault::ReadOnly => (503, "The server's storage is read-only, retry later"),
            Fault::Other => (503, "Storage unavailable, retry later"),
        };
        ApiError(Rejection::new(status, ErrorCode::TempFailure, error).with("storage", cause))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = (status, Json(self.0.to_json())).into_response();
        if self.0.code == ErrorCode::MessageTooLarge {
            // The rest of the body is not read, so the connection cannot carry another request.
            resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp.extensions_mut().insert(self.0.code);
        resp
    }
}

/// Shorthand for a rejection.
pub fn reject(status: u16, code: ErrorCode, error: impl Into<String>) -> ApiError {
    ApiError(Rejection::new(status, code, error))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejection_becomes_json_with_its_status_and_code() {
        let resp =
            ApiError(Rejection::new(403, ErrorCode::AtsFail, "ATS validation failed").with("x", 1)).into_response();
        assert_eq!(resp.status(), StatusCode::FORBIDDEN);
        assert_eq!(resp.headers()["content-type"], "application/json");
        assert_eq!(resp.extensions().get::<ErrorCode>(), Some(&ErrorCode::AtsFail));
        let resp = reject(451, ErrorCode::TempFailure, "later").into_response();
        assert_eq!(resp.status().as_u16(), 451);
        assert!(resp.headers().get("connection").is_none());
        let resp = reject(400, ErrorCode::MessageTooLarge, "Message too large").into_response();
        assert_eq!(resp.headers()["connection"], "close");
    }

    /// The JSON body of a storage failure's answer.
    fn storage_answer(e: crate::store::DbError) -> (u16, serde_json::Value) {
        let r = ApiError::from(e).0;
        (r.status, r.to_json())
    }

    #[test]
    fn storage_failures_say_what_they_are() {
        use crate::store::DbError;
        use rusqlite::ffi;
        let sqlite = |code| DbError::Sqlite(rusqlite::Error::SqliteFailure(ffi::Error::new(code), None));
        let (status, body) = storage_answer(sqlite(ffi::SQLITE_FULL));
        assert_eq!(
            (status, body["storage"].as_str(), body["error_code"].as_str()),
            (507, Some("full"), Some("451 4.3.0"))
        );
        let (status, body) = storage_answer(sqlite(ffi::SQLITE_READONLY));
        assert_eq!((status, body["storage"].as_str()), (503, Some("read_only")));
        let (status, body) = storage_answer(sqlite(ffi::SQLITE_IOERR));
        assert_eq!((status, body["storage"].as_str()), (503, Some("unavailable")));
        let (status, body) = storage_answer(DbError::WriterGone);
        assert_eq!((status, body["storage"].as_str()), (503, Some("unavailable")));
        let commit = |unknown| {
            DbError::Commit(crate::store::writer::CommitFailure {
                message: "disk I/O error".into(),
                fault: crate::store::Fault::ReadOnly,
                unknown,
            })
        };
        let (status, body) = storage_answer(commit(true));
        assert_eq!(
            (status, body["storage"].as_str(), body["cause"].as_str(), body["error_code"].as_str()),
            (503, Some("outcome_unknown"), Some("read_only"), Some("451 4.3.0"))
        );
        assert_eq!(storage_answer(commit(false)).1["storage"], "read_only");
        let enospc = DbError::Lock { path: "x".into(), source: std::io::Error::from_raw_os_error(libc::ENOSPC) };
        assert_eq!(storage_answer(enospc).0, 507);
    }
}
