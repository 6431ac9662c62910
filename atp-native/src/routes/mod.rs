//! The HTTP API under `/.well-known/atp/v1/` (docs/protocol.md §6), with the reference's JSON shapes and
//! status codes. Unknown paths and methods answer JSON 404 / 405 too, and every refusal goes through
//! [`crate::error::ApiError`].
//!
//! | route | module |
//! |---|---|
//! | `POST message` | [`message`] |
//! | `POST register`, `GET messages` | [`agents`] |
//! | `GET agents`, `stats`, `inspect`, `metrics` (admin) | [`admin`] |
//! | `GET capabilities`, `health` | [`info`] |
//! | the web app at `/` (`--web`), CORS (`--cors-origin`) | [`web`] |

pub mod admin;
pub mod agents;
pub mod auth;
pub mod info;
pub mod message;
pub mod web;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use atp_wasm::pipeline::InboundConfig;
use atp_wasm::ErrorCode;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Uri};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use http_body_util::BodyExt;

use crate::cli::Registration;
use crate::credentials::CredentialCache;
use crate::error::{reject, ApiError};
use crate::metrics::Metrics;
use crate::resolver::ServerResolver;
use crate::store::Store;

/// The path prefix of every route.
pub const PREFIX: &str = "/.well-known/atp/v1";

/// Everything a request needs.
pub struct AppState {
    /// Our domain (lowercase).
    pub domain: String,
    pub inbound: InboundConfig,
    pub store: Store,
    pub resolver: Arc<ServerResolver>,
    /// Wakes the delivery engine when a message for another domain was queued.
    pub delivery_wake: Arc<tokio::sync::Notify>,
    pub admin_token: Option<String>,
    pub registration: Registration,
    pub credentials: CredentialCache,
    pub metrics: Metrics,
    /// The web app's directory (`--web`), served at `/`.
    pub web: Option<web::WebRoot>,
    /// The origins whose pages may call the API (`--cors-origin`).
    pub cors: web::Cors,
}

pub type Shared = State<Arc<AppState>>;

/// The router with every route of docs/protocol.md §6 (and `/metrics`).
pub fn router(state: Arc<AppState>) -> Router {
    let api = Router::new()
        .route("/message", post(message::post_message))
        .route("/register", post(agents::register))
        .route("/messages", get(agents::inbox))
        .route("/agents", get(admin::agents))
        .route("/stats", get(admin::stats))
        .route("/inspect", get(admin::inspect))
        .route("/metrics", get(admin::metrics))
        .route("/capabilities", get(info::capabilities))
        .route("/health", get(info::health));
    Router::new()
        .nest(PREFIX, api)
        .route("/metrics", get(admin::metrics))
        .fallback(web::serve)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), web::cors))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

pub(crate) async fn not_found() -> ApiError {
    reject(404, ErrorCode::NotFound, "Not Found")
}

async fn method_not_allowed() -> ApiError {
    reject(405, ErrorCode::BadRequest, "Method Not Allowed")
}

/// Counts every response (status, latency, the error code of a refusal).
async fn observe(State(st): Shared, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let resp = next.run(req).await;
    if let Some(code) = resp.extensions().get::<ErrorCode>() {
        st.metrics.rejected(*code);
    }
    st.metrics.observe(resp.status().as_u16(), started.elapsed());
    resp
}

/// The reference's 400 for an over-long body (docs/protocol.md §2).
pub fn too_large(max: usize) -> ApiError {
    ApiError(atp_wasm::Rejection::new(400, ErrorCode::MessageTooLarge, "Message too large").with("max_size", max))
}

/// Reads a request body of at most `max` bytes. The limit is enforced while reading (a declared
/// `Content-Length` over it is refused before reading anything), so an oversized body is never
/// buffered whole (fixing docs/protocol.md §12 item 15).
pub async fn read_body(headers: &HeaderMap, body: Body, max: usize) -> Result<Bytes, ApiError> {
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(too_large(max));
    }
    match http_body_util::Limited::new(body, max).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large(max)),
        Err(e) => Err(reject(400, ErrorCode::BadRequest, format!("Could not read the request body: {e}"))),
    }
}

/// Query parameters, leniently decoded (a malformed query never fails the request by itself).
pub fn query(uri: &Uri) -> HashMap<String, String> {
    form_urlencoded::parse(uri.query().unwrap_or("").as_bytes()).into_owned().collect()
}

/// An optional integer query parameter in `0..=i64::MAX`; anything else is a 400 (the reference
/// silently ignored such values, docs/protocol.md §6).
pub fn int_param(q: &HashMap<String, String>, name: &str, default: i64) -> Result<i64, ApiError> {
    match q.get(name) {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .ok_or_else(|| reject(400, ErrorCode::BadRequest, format!("'{name}' must be a non-negative integer"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parsing_is_lenient_and_ints_strict() {
        let q = query(&"/x?limit=5&after_id=%ZZ&agent_id=a%40b".parse().unwrap());
        assert_eq!(q["agent_id"], "a@b");
        assert_eq!(int_param(&q, "limit", 50).unwrap(), 5);
        assert!(int_param(&q, "after_id", 0).is_err());
        assert_eq!(int_param(&q, "missing", 50).unwrap(), 50);
        let q = query(&"/x?limit=-1".parse().unwrap());
        assert!(int_param(&q, "limit", 50).is_err());
        assert!(query(&"/x".parse().unwrap()).is_empty());
    }

    #[tokio::test]
    async fn bodies_are_limited_while_reading() {
        let h = HeaderMap::new();
        assert_eq!(read_body(&h, Body::from("abc"), 3).await.unwrap(), "abc");
        let e = read_body(&h, Body::from("abcd"), 3).await.unwrap_err();
        assert_eq!((e.0.status, e.0.error.as_str()), (400, "Message too large"));
        let mut declared = HeaderMap::new();
        declared.insert(header::CONTENT_LENGTH, "1000".parse().unwrap());
        assert!(read_body(&declared, Body::empty(), 3).await.is_err());
    }
}
