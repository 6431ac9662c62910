//! The agent routes: `POST register` and `GET messages` (docs/protocol.md §6, §7).

use atp_wasm::env::{Clock, SystemClock};
use atp_wasm::identity::AgentId;
use atp_wasm::ErrorCode;
use axum::body::Body;
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::{auth, int_param, query, read_body, Shared};
use crate::cli::Registration;
use crate::credentials::hash_password;
use crate::error::{reject, ApiError};

/// Largest `POST register` body.
const MAX_REGISTER_BODY: usize = 16 * 1024;
/// Longest password accepted (argon2 hashes anything, but a bound keeps requests cheap).
pub const MAX_PASSWORD_LEN: usize = 1024;
/// Most messages one `GET messages` returns (the reference had no maximum, docs/protocol.md §12 item 15).
pub const MAX_LIMIT: i64 = 500;
/// `limit` when the request names none (the reference's default).
pub const DEFAULT_LIMIT: i64 = 50;

/// `POST register` `{"agent_id": "name" | "name@<our domain>", "password": "…"}` → 201
/// `{"status":"registered","agent_id":"name@domain"}`. A short name is completed with our domain;
/// another domain or a reserved name is 403, a taken id 409. The registration policy
/// (`--registration`) decides who may call it.
pub async fn register(
    axum::extract::State(st): Shared,
    headers: HeaderMap,
    body: Body,
) -> Result<impl IntoResponse, ApiError> {
    match st.registration {
        Registration::Open => {}
        Registration::Token => auth::admin(&st, &headers)?,
        Registration::Closed => return Err(reject(403, ErrorCode::Forbidden, "Registration is closed")),
    }
    let body = read_body(&headers, body, MAX_REGISTER_BODY).await?;
    let v: Value = serde_json::from_slice(&body).map_err(|_| reject(400, ErrorCode::BadRequest, "Invalid JSON"))?;
    let (Some(name), Some(password)) =
        (v.get("agent_id").and_then(Value::as_str), v.get("password").and_then(Value::as_str))
    else {
        return Err(reject(400, ErrorCode::BadRequest, "Missing agent_id or password"));
    };
    if password.is_empty() || password.len() > MAX_PASSWORD_LEN {
        return Err(reject(400, ErrorCode::BadRequest, format!("Password must be 1 to {MAX_PASSWORD_LEN} bytes")));
    }
    let id = AgentId::parse_or_complete(name, &st.domain)
        .map_err(|e| reject(400, ErrorCode::BadRequest, format!("Invalid agent_id format: {e}")))?;
    if id.domain() != st.domain {
        return Err(reject(
            403,
            ErrorCode::Forbidden,
            format!("Cannot register agent for domain '{}' on server '{}'", id.domain(), st.domain),
        ));
    }
    if id.is_reserved() {
        return Err(reject(
            403,
            ErrorCode::Forbidden,
            format!("Agent ID '{}' is reserved and cannot be registered", id.local()),
        ));
    }
    let pw = password.to_owned();
    let hash = tokio::task::spawn_blocking(move || hash_password(&pw))
        .await
        .map_err(|e| reject(503, ErrorCode::TempFailure, e.to_string()))?
        .map_err(|e| reject(503, ErrorCode::TempFailure, e))?;
    if !st.store.insert_agent(&id.to_string(), &hash, SystemClock.now()).await? {
        return Err(reject(409, ErrorCode::Conflict, format!("Agent {id} already registered")));
    }
    st.metrics.registered.inc();
    tracing::info!(agent = %id, "agent registered");
    Ok((StatusCode::CREATED, Json(json!({"status": "registered", "agent_id": id.to_string()}))))
}

/// `GET messages?after_id=N&limit=M` (Basic credential): the agent's inbox after row `after_id`,
/// oldest first → `{"messages":[…],"count":n,"last_id":id}` (`last_id` only when non-empty).
/// `limit` defaults to 50 and is capped at [`MAX_LIMIT`]; a non-integer or negative `limit` or
/// `after_id` is a 400. Nothing is deleted: the cursor lives in the client, as in the reference.
pub async fn inbox(axum::extract::State(st): Shared, headers: HeaderMap, uri: Uri) -> Result<Response, ApiError> {
    let who = auth::agent(&st, &headers, "Credential required").await?;
    let q = query(&uri);
    let limit = int_param(&q, "limit", DEFAULT_LIMIT)?.min(MAX_LIMIT);
    let after = int_param(&q, "after_id", 0)?;
    let rows = st.store.inbox(&who.to_string(), after, limit).await?;
    // The stored texts are already JSON (numbers kept exactly): splice them in without re-parsing.
    let mut out = String::with_capacity(64 + rows.iter().map(|r| r.json.len() + 1).sum::<usize>());
    out.push_str("{\"messages\":[");
    for (i, r) in rows.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&r.json);
    }
    out.push_str(&format!("],\"count\":{}", rows.len()));
    if let Some(last) = rows.last() {
        out.push_str(&format!(",\"last_id\":{}", last.id));
    }
    out.push('}');
    Ok(([(header::CONTENT_TYPE, "application/json")], out).into_response())
}
