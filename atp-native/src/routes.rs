//! The HTTP API under `/.well-known/atp/v1/` (protocol.md §6), with the reference's JSON shapes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

use atp_wasm::env::{Clock, StaticResolver, SystemClock};
use atp_wasm::identity::AgentId;
use atp_wasm::pipeline::{self, AtsVerdict, InboundConfig, Origin};
use atp_wasm::ErrorCode;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Value};

use crate::api_error::{reject, ApiError};
use crate::credentials::{hash_password, secrets_equal, verify_password, CredentialCache};
use crate::store::{status, NewMessage, Store, Stored};

/// Who may register agents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Registration {
    /// Anyone (the reference's behaviour).
    Open,
    /// Only with the admin token.
    Token,
    /// Nobody.
    Closed,
}

/// In-memory counters (the reference's `/stats`; reset on restart).
#[derive(Default)]
pub struct Counters {
    pub received: AtomicU64,
    pub delivered_local: AtomicU64,
    pub queued: AtomicU64,
    pub duplicates: AtomicU64,
    pub rejected: AtomicU64,
    pub ats_pass: AtomicU64,
    pub ats_neutral: AtomicU64,
    pub atk_pass: AtomicU64,
    pub credential_pass: AtomicU64,
    pub credential_fail: AtomicU64,
}

/// Everything a request needs.
pub struct AppState {
    pub domain: String,
    pub inbound: InboundConfig,
    pub store: Store,
    pub resolver: StaticResolver,
    pub admin_token: Option<String>,
    pub registration: Registration,
    pub cache: CredentialCache,
    pub counters: Counters,
    pub started: Instant,
}

type Shared = State<Arc<AppState>>;

/// The router with every route of protocol.md §6.
pub fn router(state: Arc<AppState>) -> Router {
    let limit = state.inbound.max_size;
    Router::new()
        .route("/.well-known/atp/v1/message", post(message))
        .route("/.well-known/atp/v1/register", post(register))
        .route("/.well-known/atp/v1/messages", get(messages))
        .route("/.well-known/atp/v1/agents", get(agents))
        .route("/.well-known/atp/v1/stats", get(stats))
        .route("/.well-known/atp/v1/inspect", get(inspect))
        .route("/.well-known/atp/v1/capabilities", get(capabilities))
        .route("/.well-known/atp/v1/health", get(health))
        .fallback(|| async { reject(404, ErrorCode::NotFound, "Not Found") })
        .method_not_allowed_fallback(|| async { reject(405, ErrorCode::BadRequest, "Method Not Allowed") })
        // Bodies are capped while being read; one byte over the limit is refused by the handler.
        .layer(DefaultBodyLimit::max(limit + 1))
        .with_state(state)
}

fn too_large(max: usize) -> ApiError {
    ApiError(atp_wasm::Rejection::new(400, ErrorCode::MessageTooLarge, "Message too large").with("max_size", max))
}

/// Reads the body, turning an over-long one into the reference's 400.
async fn body_bytes(req: axum::extract::Request, max: usize) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(req.into_body(), max + 1).await.map_err(|_| too_large(max))
}

/// `Authorization: Basic` → the agent id (lowercased) after checking its password.
async fn authenticate(st: &AppState, headers: &HeaderMap) -> Result<AgentId, ApiError> {
    let fail = |msg: &str| reject(401, ErrorCode::AuthFailed, msg.to_owned());
    let header = headers.get("authorization").and_then(|h| h.to_str().ok());
    let Some(encoded) = header.and_then(|h| h.strip_prefix("Basic ")) else {
        return Err(fail("Credential required"));
    };
    let decoded = STANDARD.decode(encoded.trim()).ok().and_then(|b| String::from_utf8(b).ok());
    let Some((user, password)) = decoded.as_deref().and_then(|d| d.split_once(':')) else {
        return Err(fail("Invalid Authorization header"));
    };
    let id = AgentId::parse(user).map_err(|_| fail("Credential verification failed"))?;
    let key = id.to_string();
    if st.cache.check(&key, password) {
        st.counters.credential_pass.fetch_add(1, Relaxed);
        return Ok(id);
    }
    let hash = st.store.agent_hash(&key).await?;
    let password = password.to_owned();
    let (ok, password) = tokio::task::spawn_blocking(move || {
        // An unknown agent still costs one hash, so timing does not reveal which ids exist.
        let phc = hash.unwrap_or_else(|| DUMMY_HASH.with(|h| h.clone()));
        (verify_password(&password, &phc), password)
    })
    .await
    .map_err(|e| reject(503, ErrorCode::TempFailure, e.to_string()))?;
    if !ok {
        st.counters.credential_fail.fetch_add(1, Relaxed);
        return Err(fail("Credential verification failed"));
    }
    st.cache.remember(&key, &password);
    st.counters.credential_pass.fetch_add(1, Relaxed);
    Ok(id)
}

thread_local! {
    static DUMMY_HASH: String = hash_password("unused dummy password").unwrap_or_default();
}

fn check_admin(st: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(token) = &st.admin_token else {
        return Err(reject(
            403,
            ErrorCode::Forbidden,
            "Admin access not configured (set admin_token in server config)",
        ));
    };
    let given = headers.get("authorization").and_then(|h| h.to_str().ok()).and_then(|h| h.strip_prefix("Bearer "));
    match given {
        None => Err(reject(401, ErrorCode::AuthFailed, "Admin authentication required")),
        Some(g) if secrets_equal(g.trim(), token) => Ok(()),
        Some(_) => Err(reject(403, ErrorCode::Forbidden, "Invalid admin token")),
    }
}

/// `POST message`: a local submission (Basic credential) or a remote transfer (ATS + ATK).
async fn message(
    State(st): Shared,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: axum::extract::Request,
) -> Result<impl IntoResponse, ApiError> {
    let headers = req.headers().clone();
    let body = body_bytes(req, st.inbound.max_size).await?;
    st.counters.received.fetch_add(1, Relaxed);
    let now = SystemClock.now();
    let result = async {
        let inbound = pipeline::parse_inbound(&body, &st.inbound)?;
        let span = tracing::info_span!("message", nonce = %inbound.message.nonce);
        let _enter = span.enter();
        let accepted = match inbound.origin {
            Origin::Local => {
                let who = authenticate(&st, &headers).await?;
                pipeline::verify_local_submission(inbound, &who, &st.inbound, now, &st.store).await?
            }
            Origin::Remote => {
                let a = pipeline::verify_remote(inbound, peer.ip(), &st.inbound, now, &st.resolver, &st.store).await?;
                st.counters.atk_pass.fetch_add(1, Relaxed);
                match a.ats {
                    AtsVerdict::Pass => st.counters.ats_pass.fetch_add(1, Relaxed),
                    _ => st.counters.ats_neutral.fetch_add(1, Relaxed),
                };
                a
            }
        };
        let local = accepted.is_for_local_domain(&st.domain);
        if local && st.store.agent_hash(&accepted.recipient.to_string()).await?.is_none() {
            return Err(reject(404, ErrorCode::UnknownRecipient, "Unknown recipient"));
        }
        let nonce = accepted.message.nonce.clone();
        let stored = if accepted.duplicate {
            Stored::Duplicate
        } else {
            st.store
                .insert_message(NewMessage {
                    nonce: nonce.clone(),
                    sender_domain: accepted.sender.domain().to_owned(),
                    from_id: accepted.sender.to_string(),
                    to_id: accepted.recipient.to_string(),
                    json: accepted.message.to_json(),
                    status: if local { status::DELIVERED } else { status::QUEUED },
                    content_hash: accepted.content_hash,
                    now,
                })
                .await?
        };
        match stored {
            Stored::New(id) => {
                let c = if local { &st.counters.delivered_local } else { &st.counters.queued };
                c.fetch_add(1, Relaxed);
                tracing::info!(id, to = %accepted.recipient, "accepted");
            }
            Stored::Duplicate => {
                st.counters.duplicates.fetch_add(1, Relaxed);
                tracing::info!("duplicate of an accepted message; not stored again");
            }
            Stored::Replay => {
                return Err(reject(400, ErrorCode::Replay, "Replay detected"));
            }
        }
        Ok((StatusCode::ACCEPTED, Json(json!({"status": "accepted", "nonce": nonce, "timestamp": now}))))
    }
    .await;
    if let Err(e) = &result {
        st.counters.rejected.fetch_add(1, Relaxed);
        tracing::info!(status = e.0.status, code = %e.0.code, error = %e.0.error, "rejected");
    }
    result
}

/// `POST register`: `{"agent_id", "password"}` → 201.
async fn register(
    State(st): Shared,
    headers: HeaderMap,
    req: axum::extract::Request,
) -> Result<impl IntoResponse, ApiError> {
    match st.registration {
        Registration::Open => {}
        Registration::Token => check_admin(&st, &headers)?,
        Registration::Closed => return Err(reject(403, ErrorCode::Forbidden, "Registration is closed")),
    }
    let body = body_bytes(req, st.inbound.max_size).await?;
    let v: Value = serde_json::from_slice(&body).map_err(|_| reject(400, ErrorCode::BadRequest, "Invalid JSON"))?;
    let (Some(name), Some(password)) = (v["agent_id"].as_str(), v["password"].as_str()) else {
        return Err(reject(400, ErrorCode::BadRequest, "Missing agent_id or password"));
    };
    if password.is_empty() || password.len() > 1024 {
        return Err(reject(400, ErrorCode::BadRequest, "Password must be 1 to 1024 bytes"));
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
    tracing::info!(agent = %id, "registered");
    Ok((StatusCode::CREATED, Json(json!({"status": "registered", "agent_id": id.to_string()}))))
}

/// Most messages one `GET messages` returns.
pub const MAX_LIMIT: i64 = 500;

fn int_param(q: &HashMap<String, String>, name: &str, default: i64) -> Result<i64, ApiError> {
    match q.get(name) {
        None => Ok(default),
        Some(v) => v
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .ok_or_else(|| reject(400, ErrorCode::BadRequest, format!("'{name}' must be a non-negative integer"))),
    }
}

/// `GET messages`: the authenticated agent's inbox after `after_id`.
async fn messages(
    State(st): Shared,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Result<impl IntoResponse, ApiError> {
    let who = authenticate(&st, &headers).await?;
    let limit = int_param(&q, "limit", 50)?.min(MAX_LIMIT);
    let after = int_param(&q, "after_id", 0)?;
    let rows = st.store.inbox(&who.to_string(), after, limit).await?;
    let last_id = rows.last().map(|r| r.id);
    let list: Vec<Value> = rows.iter().filter_map(|r| serde_json::from_str(&r.json).ok()).collect();
    let mut body = json!({"messages": list, "count": rows.len()});
    if let Some(id) = last_id {
        body["last_id"] = json!(id);
    }
    Ok(Json(body))
}

async fn agents(State(st): Shared, headers: HeaderMap) -> Result<impl IntoResponse, ApiError> {
    check_admin(&st, &headers)?;
    Ok(Json(json!({"agents": st.store.agents().await?})))
}

async fn stats(State(st): Shared, headers: HeaderMap) -> Result<impl IntoResponse, ApiError> {
    check_admin(&st, &headers)?;
    let counts = st.store.counts().await?;
    let c = &st.counters;
    let n = |a: &AtomicU64| a.load(Relaxed);
    let queue: serde_json::Map<String, Value> = ["queued", "delivering", "delivered", "failed", "bounced"]
        .iter()
        .map(|s| {
            let count = counts.by_status.iter().find(|(k, _)| k == s).map_or(0, |(_, v)| *v);
            ((*s).to_owned(), json!(count))
        })
        .collect();
    Ok(Json(json!({
        "uptime": st.started.elapsed().as_secs(),
        "messages": {"received": n(&c.received), "delivered_local": n(&c.delivered_local), "forwarded": 0,
                     "queued": n(&c.queued), "duplicates": n(&c.duplicates), "rejected": n(&c.rejected),
                     "delivery_success": 0, "delivery_failed": 0, "bounced": 0},
        "security": {"ats_pass": n(&c.ats_pass), "ats_fail": 0, "ats_neutral": n(&c.ats_neutral),
                     "atk_pass": n(&c.atk_pass), "atk_fail": 0, "replay_blocked": 0,
                     "credential_pass": n(&c.credential_pass), "credential_fail": n(&c.credential_fail)},
        "queue": queue,
        "agents": counts.agents,
        "domain": st.domain,
    })))
}

async fn inspect(
    State(st): Shared,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Result<impl IntoResponse, ApiError> {
    check_admin(&st, &headers)?;
    let Some(nonce) = q.get("nonce") else {
        return Err(reject(400, ErrorCode::BadRequest, "Missing 'nonce' parameter"));
    };
    let Some(m) = st.store.inspect(nonce).await? else {
        return Err(reject(404, ErrorCode::NotFound, format!("Message {nonce} not found")));
    };
    Ok(Json(json!({
        "nonce": m.nonce, "from": m.from, "to": m.to, "status": m.status, "created_at": m.created_at,
        "updated_at": m.updated_at, "retry_count": m.attempts, "next_retry_at": m.next_attempt_at, "error": m.error,
    })))
}

async fn capabilities(State(st): Shared) -> impl IntoResponse {
    Json(json!({"version": "1.0", "capabilities": ["message"], "protocols": [atp_wasm::ALPN_ATP],
                "max_payload_size": st.inbound.max_size}))
}

async fn health(State(st): Shared) -> impl IntoResponse {
    Json(json!({"status": "healthy", "domain": st.domain, "version": env!("CARGO_PKG_VERSION")}))
}
