//! Admin routes (bearer token, docs/protocol.md §6): `GET agents`, `stats`, `inspect`, and Prometheus
//! text at `metrics` (docs/design.md §6).

use atp_wasm::ErrorCode;
use axum::http::{header, HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::{auth, query, Shared};
use crate::error::{reject, ApiError};

/// `GET agents` → `{"agents":["a@d",…]}`, registered agents, oldest first.
pub async fn agents(axum::extract::State(st): Shared, headers: HeaderMap) -> Result<impl IntoResponse, ApiError> {
    auth::admin(&st, &headers)?;
    Ok(Json(json!({"agents": st.store.agents().await?})))
}

/// `GET stats`: the reference's body (docs/protocol.md §6 "/stats body"); `agents` lists registered agents.
pub async fn stats(axum::extract::State(st): Shared, headers: HeaderMap) -> Result<impl IntoResponse, ApiError> {
    auth::admin(&st, &headers)?;
    let (queue, _) = st.store.counts().await?;
    let agents = st.store.agents().await?;
    Ok(Json(st.metrics.stats_json(&st.domain, &queue, agents)))
}

/// `GET inspect?nonce=N` → the newest stored message with that nonce, in the reference's shape.
pub async fn inspect(
    axum::extract::State(st): Shared,
    headers: HeaderMap,
    uri: Uri,
) -> Result<impl IntoResponse, ApiError> {
    auth::admin(&st, &headers)?;
    let q = query(&uri);
    let Some(nonce) = q.get("nonce").filter(|n| !n.is_empty()) else {
        return Err(reject(400, ErrorCode::BadRequest, "Missing 'nonce' parameter"));
    };
    let Some(m) = st.store.inspect(nonce).await? else {
        return Err(reject(404, ErrorCode::NotFound, format!("Message {nonce} not found")));
    };
    Ok(Json(json!({
        "nonce": m.nonce, "from": m.from, "to": m.to, "status": m.status, "created_at": m.created_at,
        "updated_at": m.updated_at, "retry_count": m.attempts, "next_retry_at": m.next_attempt_at, "error": m.error,
        // atp's names for the same facts (the delivery engine's view)
        "attempts": m.attempts, "next_attempt_at": m.next_attempt_at, "last_error": m.error,
    })))
}

/// `GET metrics` (also at `/metrics`): Prometheus text exposition format.
pub async fn metrics(axum::extract::State(st): Shared, headers: HeaderMap) -> Result<Response, ApiError> {
    auth::admin(&st, &headers)?;
    let (queue, agents) = st.store.counts().await?;
    let text = st.metrics.prometheus(&queue, agents);
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response())
}
