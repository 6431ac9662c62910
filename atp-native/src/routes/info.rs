//! Public information routes (docs/protocol.md §6): `GET capabilities` and `GET health`.

use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;

use super::Shared;

/// `GET capabilities` (the reference's body; `max_payload_size` is the limit actually enforced).
pub async fn capabilities(axum::extract::State(st): Shared) -> impl IntoResponse {
    Json(json!({
        "version": "1.0",
        "capabilities": ["message"],
        "protocols": [atp_wasm::ALPN_ATP],
        "max_payload_size": st.inbound.max_size,
    }))
}

/// `GET health`; `version` is this crate's version (the reference's was hard-coded and stale).
pub async fn health(axum::extract::State(st): Shared) -> impl IntoResponse {
    Json(json!({"status": "healthy", "domain": st.domain, "version": env!("CARGO_PKG_VERSION")}))
}
