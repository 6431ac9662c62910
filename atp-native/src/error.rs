//! The one place where the relay's answers become axum responses (docs/design.md §6): a
//! [`Handled`] keeps its status, body and headers, and a refusal's error code travels in the
//! response's extensions, so the metrics layer counts refusals by code. Refusals of the glue
//! itself (a body too large, a path outside the API) go through the core's
//! [`Handled::rejection`] too: every error is the same JSON shape.

use atp_wasm::relay::Handled;
use atp_wasm::{ErrorCode, Rejection};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// A rejection on its way to the client.
#[derive(Debug)]
pub struct ApiError(pub Rejection);

impl From<Rejection> for ApiError {
    fn from(r: Rejection) -> Self {
        ApiError(r)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        into_response(Handled::rejection(&self.0))
    }
}

/// Shorthand for a rejection.
pub fn reject(code: ErrorCode, error: impl Into<String>) -> ApiError {
    ApiError(Rejection::new(code, error))
}

/// The relay's answer as an axum response.
pub fn into_response(h: Handled) -> Response {
    let status = StatusCode::from_u16(h.response.status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    let content_type = h.response.content_type.unwrap_or_else(|| "application/octet-stream".into());
    let mut resp = (status, [(axum::http::header::CONTENT_TYPE, content_type)], h.response.body).into_response();
    for (name, value) in h.headers {
        if let (Ok(n), Ok(v)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            resp.headers_mut().insert(n, v);
        }
    }
    if let Some(code) = h.code {
        resp.extensions_mut().insert(code);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejection_becomes_json_with_its_status_and_code() {
        let resp = reject(ErrorCode::AtsFail, "ATS validation failed").into_response();
        assert_eq!(resp.status(), StatusCode::FORBIDDEN);
        assert_eq!(resp.headers()["content-type"], "application/json");
        assert_eq!(resp.extensions().get::<ErrorCode>(), Some(&ErrorCode::AtsFail));
        let resp = reject(ErrorCode::TempFailure, "later").into_response();
        assert_eq!(resp.status().as_u16(), 451);
        assert!(resp.headers().get("connection").is_none());
        let resp = ApiError(atp_wasm::relay::api::too_large(3)).into_response();
        assert_eq!(resp.headers()["connection"], "close");
    }

    /// The JSON body of a storage failure's answer, through the core's one mapping.
    fn storage_answer(e: crate::store::DbError) -> (u16, serde_json::Value) {
        let r = atp_wasm::env::StoreError::from(e).to_rejection();
        (r.status(), r.to_json())
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
