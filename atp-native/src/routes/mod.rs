//! The axum glue of the relay (docs/design.md §1): every request under `/.well-known/atp/v1/`
//! (and `/metrics`) becomes an [`ApiRequest`] — its body read within the route's limit before
//! anything else, the client's address from the TCP peer — and goes to the core's
//! [`atp_wasm::relay::Relay`], which owns every route, its authentication and its answer. What
//! stays here is native only: the web app at `/` and CORS ([`web`]), HTTP metrics, waking the
//! delivery engine, and streaming an accepted `GET messages/stream` body chunk by chunk
//! ([`event_stream`]).

pub mod web;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use atp_wasm::env::SystemClock;
use atp_wasm::relay::stream::{InboxStream, InboxWatch, StreamOpen};
use atp_wasm::relay::{api, ApiRequest, Relay, RelayConfig, RelayState};
use atp_wasm::ErrorCode;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use http_body_util::BodyExt;

use crate::error::{into_response, reject, ApiError};
use crate::hasher::NativeHasher;
use crate::metrics::Metrics;
use crate::resolver::ServerResolver;
use crate::store::watch::InboxHub;
use crate::store::Backend;

/// Everything a request needs.
pub struct AppState {
    /// Our domain (lowercase).
    pub domain: String,
    /// The relay's configuration (limits, admin token, registration policy).
    pub relay: RelayConfig,
    /// The relay's counters and verified-credential cache.
    pub relay_state: RelayState,
    pub store: Backend,
    pub resolver: Arc<ServerResolver>,
    pub hasher: NativeHasher,
    /// Wakes the delivery engine when a message for another domain was queued.
    pub delivery_wake: Arc<tokio::sync::Notify>,
    /// HTTP-level metrics (responses, latency).
    pub metrics: Metrics,
    /// The web app's directory (`--web`), served at `/`.
    pub web: Option<web::WebRoot>,
    /// The origins whose pages may call the API (`--cors-origin`).
    pub cors: web::Cors,
}

impl AppState {
    /// The core's relay over this server's store, resolver, hasher and clock.
    pub fn relay(&self) -> Relay<'_, Backend, ServerResolver, NativeHasher, SystemClock, InboxHub> {
        Relay {
            cfg: &self.relay,
            state: &self.relay_state,
            store: &self.store,
            resolver: &self.resolver,
            hasher: &self.hasher,
            clock: &SystemClock,
            inbox: self.store.hub(),
        }
    }
}

pub type Shared = State<Arc<AppState>>;

/// The router: the API to the relay, `/` to the web app.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route(api::PREFIX, any(relay))
        .route(&format!("{}/{{*route}}", api::PREFIX), any(relay))
        .route("/metrics", any(relay))
        .fallback(web::serve)
        .layer(middleware::from_fn_with_state(state.clone(), web::cors))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// One API request, answered by the core's relay.
async fn relay(State(st): Shared, ConnectInfo(peer): ConnectInfo<SocketAddr>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let path = match parts.uri.path() {
        "/metrics" => api::METRICS.full_path(),
        p => p.to_owned(),
    };
    let glue_refusal = |r: ApiError| {
        st.relay_state.stats.rejected(r.0.code);
        r.into_response()
    };
    let route = match api::find(parts.method.as_str(), &path) {
        Ok(route) => route,
        Err(r) => return glue_refusal(ApiError(r)),
    };
    let body = match read_body(&parts.headers, body, route.body_limit()).await {
        Ok(b) => b,
        Err(e) => return glue_refusal(e),
    };
    let request = ApiRequest {
        method: parts.method.as_str().to_owned(),
        path,
        query: parts.uri.query().unwrap_or("").to_owned(),
        headers: parts
            .headers
            .iter()
            .filter_map(|(n, v)| Some((n.as_str().to_owned(), v.to_str().ok()?.to_owned())))
            .collect(),
        body: body.to_vec(),
        // The TCP peer, never X-Forwarded-For (docs/protocol.md §12.7); an IPv4 client of a
        // dual-stack listener shows up as IPv4, not ::ffff:a.b.c.d.
        source_ip: Some(peer.ip().to_canonical()),
    };
    let mut handled = st.relay().handle(&request).await;
    if let Some(nonce) = &handled.nonce {
        let status = handled.response.status;
        match handled.code {
            None => tracing::info!(%nonce, status, peer = %peer, "message accepted"),
            Some(code) => tracing::info!(%nonce, status, %code, peer = %peer, "message refused"),
        }
    }
    if handled.queued.is_some() {
        st.delivery_wake.notify_one();
    }
    if *route == api::METRICS && handled.response.status == 200 {
        handled.response.body.extend_from_slice(st.metrics.prometheus().as_bytes());
    }
    let stream = handled.stream.take();
    let mut resp = into_response(handled);
    if let Some(open) = stream {
        *resp.body_mut() = event_stream(st, open);
    }
    resp
}

/// The body of an accepted inbox stream (docs/protocol.md §6.5): the core's [`InboxStream`],
/// woken by the store's [`InboxHub`], each chunk sent as soon as it is made (no buffering: hyper
/// writes a frame when the body yields it). The watcher is registered here, before the stream's
/// first read; the stream ends when the client goes away (the body is dropped, and with it the
/// watcher and the agent's stream place), the store fails, or the server shuts down (the hub is
/// closed: the body ends cleanly, and the client resumes with its `Last-Event-ID`).
pub fn event_stream(st: Arc<AppState>, open: StreamOpen) -> Body {
    let watcher = st.store.hub().watch(&open.agent);
    let stream = InboxStream::new(open, watcher, st.relay.pages);
    Body::from_stream(futures_util::stream::unfold((st, stream), |(st, mut stream)| async move {
        let chunk = tokio::select! {
            biased;
            () = st.store.hub().closed() => None,
            chunk = stream.next(&st.store) => chunk,
        }?;
        Some((Ok::<_, std::convert::Infallible>(Bytes::from(chunk)), (st, stream)))
    }))
}

/// Counts every response (status, latency).
async fn observe(State(st): Shared, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let resp = next.run(req).await;
    st.metrics.observe(resp.status().as_u16(), started.elapsed());
    resp
}

/// Reads a request body of at most `max` bytes. The limit is enforced while reading (a declared
/// `Content-Length` over it is refused before reading anything), so an oversized body is never
/// buffered whole (fixing docs/protocol.md §12.15).
pub async fn read_body(headers: &HeaderMap, body: Body, max: usize) -> Result<Bytes, ApiError> {
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(ApiError(api::too_large(max)));
    }
    match http_body_util::Limited::new(body, max).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError(api::too_large(max))),
        Err(e) => Err(reject(ErrorCode::BadRequest, format!("Could not read the request body: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bodies_are_limited_while_reading() {
        let h = HeaderMap::new();
        assert_eq!(read_body(&h, Body::from("abc"), 3).await.unwrap(), "abc");
        let e = read_body(&h, Body::from("abcd"), 3).await.unwrap_err();
        assert_eq!((e.0.status(), e.0.error.as_str()), (400, "Message too large"));
        let mut declared = HeaderMap::new();
        declared.insert(header::CONTENT_LENGTH, "1000".parse().unwrap());
        assert!(read_body(&declared, Body::empty(), 3).await.is_err());
    }
}
