//! The relay itself, independent of the Workers runtime: the HTTP routes under
//! `/.well-known/atp/v1/` (docs/protocol.md §6, with atp-native's fixes) and the delivery of queued
//! messages ([`crate::delivery`]). State lives behind [`Kv`], HTTP goes out through the core's
//! [`HttpTransport`], so the whole relay runs natively in tests with an in-memory store and canned
//! peers, and in workerd with Workers KV and `fetch` ([`crate::cf`]).
//!
//! | route | what |
//! |---|---|
//! | `POST message` | a local agent's submission (Basic credential) or a remote server's transfer (ATS via `CF-Connecting-IP`, ATK via DoH), checked by the core's pipeline ([`atp_wasm::pipeline`]) |
//! | `POST register` | a new agent (argon2id hash in KV) under the `REGISTRATION` policy |
//! | `GET messages` | the agent's inbox after `after_id`, at most `limit` (default 50, at most 500), with `last_id` |
//! | `GET agents`, `stats`, `inspect` | admin (bearer `ADMIN_TOKEN`) |
//! | `GET capabilities`, `health` | public |
//!
//! Every refusal is the reference's JSON error shape with the stable `error_code`
//! ([`atp_wasm::Rejection`]); unknown paths are JSON 404, wrong methods JSON 405.

use std::cell::{Cell, OnceCell, RefCell};
use std::collections::HashSet;
use std::net::IpAddr;
use std::rc::Rc;

use atp_wasm::doh::{DohMethod, DohResolver};
use atp_wasm::env::StoreError;
use atp_wasm::http::{HttpResponse, HttpTransport};
use atp_wasm::identity::AgentId;
use atp_wasm::pipeline::{self, AtsVerdict, InboundConfig, Origin};
use atp_wasm::{ErrorCode, Rejection};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Value};

use crate::budget::{Budget, Budgeted};
use crate::clock::{random_u32, Clock};
use crate::config::{Config, Registration};
use crate::credentials::{hash_password, secrets_equal, verify_password, CredentialCache};
use crate::dnscache::{Cached, DnsCache};
use crate::kv::Kv;
use crate::layout;
use crate::store::{AgentRecord, QueueEntry, Record, Stores};

/// The path prefix of every route.
pub const PREFIX: &str = "/.well-known/atp/v1";
/// Largest `POST register` body.
pub const MAX_REGISTER_BODY: usize = 16 * 1024;
/// Longest password accepted.
pub const MAX_PASSWORD_LEN: usize = 1024;
/// `limit` of `GET messages` when none is given, and its maximum.
pub const DEFAULT_LIMIT: i64 = 50;
pub const MAX_LIMIT: i64 = 500;
/// How long a message being attempted stays out of the sweep's way (its lease), in seconds.
pub const LEASE_SECS: i64 = 120;

/// Counters of this isolate (reset when Cloudflare recycles it; `stats` says so).
#[derive(Debug, Default)]
pub struct Stats {
    pub received: Cell<u64>,
    pub delivered_local: Cell<u64>,
    pub queued: Cell<u64>,
    pub duplicates: Cell<u64>,
    pub forwarded: Cell<u64>,
    pub delivery_failed: Cell<u64>,
    pub bounced: Cell<u64>,
    pub ats_pass: Cell<u64>,
    pub ats_fail: Cell<u64>,
    pub ats_neutral: Cell<u64>,
    pub atk_pass: Cell<u64>,
    pub atk_fail: Cell<u64>,
    pub replay_blocked: Cell<u64>,
    pub credential_pass: Cell<u64>,
    pub credential_fail: Cell<u64>,
    pub sweeps: Cell<u64>,
}

pub(crate) fn inc(c: &Cell<u64>) {
    c.set(c.get() + 1);
}

/// What one isolate keeps in memory between invocations.
#[derive(Debug)]
pub struct Isolate {
    pub started_ms: i64,
    pub dns: Rc<RefCell<DnsCache>>,
    pub credentials: RefCell<CredentialCache>,
    pub known_days: RefCell<HashSet<String>>,
    pub dummy_hash: OnceCell<String>,
    pub stats: Stats,
}

impl Isolate {
    pub fn new(started_ms: i64) -> Self {
        Isolate {
            started_ms,
            dns: Rc::default(),
            credentials: RefCell::default(),
            known_days: RefCell::default(),
            dummy_hash: OnceCell::new(),
            stats: Stats::default(),
        }
    }
}

/// An HTTP request as the relay sees it. Header names are lowercase.
#[derive(Debug, Clone, Default)]
pub struct ApiRequest {
    pub method: String,
    pub path: String,
    /// The query string, without `?`.
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The client's address (`CF-Connecting-IP`).
    pub source_ip: Option<IpAddr>,
}

impl ApiRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// A response, and a queued message to attempt once the response is sent (`waitUntil`).
#[derive(Debug)]
pub struct Handled {
    pub response: HttpResponse,
    pub follow_up: Option<(String, QueueEntry)>,
}

impl From<HttpResponse> for Handled {
    fn from(response: HttpResponse) -> Self {
        Handled { response, follow_up: None }
    }
}

type R<T> = Result<T, Rejection>;

/// The JSON response of a rejection.
pub fn rejection_response(r: &Rejection) -> HttpResponse {
    json_response(r.status, &r.to_json())
}

pub fn json_response(status: u16, v: &Value) -> HttpResponse {
    HttpResponse::new(status, Some("application/json"), serde_json::to_vec(v).unwrap_or_default())
}

fn reject(status: u16, code: ErrorCode, error: impl Into<String>) -> Rejection {
    Rejection::new(status, code, error)
}

/// Storage trouble is temporary for the client (retry later), never a 500.
pub fn store_err(e: StoreError) -> Rejection {
    reject(503, ErrorCode::TempFailure, "Storage unavailable, retry later").with("details", e.0)
}

/// The reference's 400 for an over-long body (docs/protocol.md §2).
pub fn too_large(max: usize) -> Rejection {
    reject(400, ErrorCode::MessageTooLarge, "Message too large").with("max_size", max)
}

/// Query parameters, leniently decoded (`+` is a space, bad `%` escapes are kept as they are).
pub fn parse_query(q: &str) -> Vec<(String, String)> {
    fn decode(s: &str) -> String {
        let b = s.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < b.len() => {
                    match std::str::from_utf8(&b[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok()) {
                        Some(v) => {
                            out.push(v);
                            i += 2;
                        }
                        None => out.push(b'%'),
                    }
                }
                c => out.push(c),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn param<'a>(q: &'a [(String, String)], name: &str) -> Option<&'a str> {
    q.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// An optional integer parameter in `0..=i64::MAX`; anything else is a 400.
fn int_param(q: &[(String, String)], name: &str, default: i64) -> R<i64> {
    match param(q, name) {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .ok_or_else(|| reject(400, ErrorCode::BadRequest, format!("'{name}' must be a non-negative integer"))),
    }
}

/// The relay for one invocation.
pub struct Relay<K, T> {
    pub cfg: Config,
    pub stores: Stores<K>,
    pub(crate) outbound: Budgeted<T>,
    pub(crate) resolver: DohResolver<Cached<Budgeted<T>>>,
    pub(crate) budget: Budget,
    pub(crate) clock: Clock,
    pub(crate) iso: Rc<Isolate>,
    inbound: InboundConfig,
}

impl<K: Kv, T: HttpTransport + Clone> Relay<K, T> {
    /// A relay over `stores`, sending HTTP through `transport` (DoH and transfers).
    pub fn new(cfg: Config, stores: Stores<K>, transport: T, clock: Clock, iso: Rc<Isolate>) -> Self {
        let budget = Budget::new(cfg.subrequest_budget);
        let outbound = Budgeted::new(transport, budget.clone());
        let cached = Cached::new(outbound.clone(), iso.dns.clone(), clock.clone());
        let method = if cfg.doh_post { DohMethod::Post } else { DohMethod::Get };
        let resolver = DohResolver::new(cached, cfg.doh_url.clone(), method);
        let inbound = InboundConfig::new(&cfg.domain);
        Relay { cfg, stores, outbound, resolver, budget, clock, iso, inbound }
    }

    pub fn isolate(&self) -> &Isolate {
        &self.iso
    }

    /// Answers one request.
    pub async fn handle(&self, req: ApiRequest) -> Handled {
        match self.route(req).await {
            Ok(h) => h,
            Err(r) => rejection_response(&r).into(),
        }
    }

    async fn route(&self, req: ApiRequest) -> R<Handled> {
        let Some(route) = req.path.strip_prefix(PREFIX) else {
            return Err(reject(404, ErrorCode::NotFound, "Not Found"));
        };
        let wanted = match route {
            "/message" | "/register" => "POST",
            "/messages" | "/agents" | "/stats" | "/inspect" | "/capabilities" | "/health" => "GET",
            _ => return Err(reject(404, ErrorCode::NotFound, "Not Found")),
        };
        let method = req.method.to_ascii_uppercase();
        if method != wanted && !(wanted == "GET" && method == "HEAD") {
            return Err(reject(405, ErrorCode::BadRequest, "Method Not Allowed"));
        }
        Ok(match route {
            "/message" => return self.post_message(&req).await,
            "/register" => self.register(&req).await?,
            "/messages" => self.inbox(&req).await?,
            "/agents" => self.agents(&req).await?,
            "/stats" => self.stats(&req).await?,
            "/inspect" => self.inspect(&req).await?,
            "/capabilities" => json_response(
                200,
                &json!({
                    "version": "1.0",
                    "capabilities": ["message"],
                    "protocols": [atp_wasm::ALPN_ATP],
                    "max_payload_size": self.inbound.max_size,
                }),
            ),
            _ => json_response(
                200,
                &json!({"status": "healthy", "domain": self.cfg.domain, "version": env!("CARGO_PKG_VERSION")}),
            ),
        }
        .into())
    }

    // ---- authentication ----

    fn credentials<'r>(req: &'r ApiRequest, scheme: &str) -> Option<&'r str> {
        let (s, rest) = req.header("authorization")?.split_once(' ')?;
        s.eq_ignore_ascii_case(scheme).then(|| rest.trim())
    }

    /// Checks `Authorization: Basic base64(agent-id:password)` and returns the agent.
    async fn agent(&self, req: &ApiRequest, missing: &'static str) -> R<AgentId> {
        let stats = &self.iso.stats;
        let fail = |msg: &'static str| reject(401, ErrorCode::AuthFailed, msg);
        let Some(encoded) = Self::credentials(req, "Basic") else {
            return Err(fail(missing));
        };
        let decoded = STANDARD.decode(encoded).ok().and_then(|b| String::from_utf8(b).ok());
        let Some((user, password)) = decoded.as_deref().and_then(|d| d.split_once(':')) else {
            return Err(fail("Invalid Authorization header"));
        };
        let Ok(id) = AgentId::parse(user) else {
            inc(&stats.credential_fail);
            return Err(fail("Credential verification failed"));
        };
        let key = id.to_string();
        let now_ms = self.clock.now_ms();
        let tag = self.iso.credentials.borrow().tag(&key, password);
        if self.iso.credentials.borrow().is_fresh(&tag, now_ms) {
            inc(&stats.credential_pass);
            return Ok(id);
        }
        let hash = self.stores.agent(&key).await.map_err(store_err)?.map(|a| a.hash);
        let ok = match &hash {
            Some(phc) => verify_password(password, phc),
            None => {
                // The same work as for a real agent, then refuse: timing does not reveal agents.
                let _ = std::hint::black_box(verify_password(password, self.dummy_hash()));
                false
            }
        };
        if !ok {
            inc(&stats.credential_fail);
            return Err(fail("Credential verification failed"));
        }
        self.iso.credentials.borrow_mut().remember(tag, now_ms);
        inc(&stats.credential_pass);
        Ok(id)
    }

    fn dummy_hash(&self) -> &str {
        self.iso.dummy_hash.get_or_init(|| {
            hash_password("atp dummy password", self.cfg.argon2_memory_kib, self.cfg.argon2_iterations)
                .unwrap_or_default()
        })
    }

    /// Checks `Authorization: Bearer <ADMIN_TOKEN>` (docs/protocol.md §6 "Admin auth").
    fn admin(&self, req: &ApiRequest) -> R<()> {
        let Some(token) = &self.cfg.admin_token else {
            return Err(reject(403, ErrorCode::Forbidden, "Admin access not configured (set the ADMIN_TOKEN secret)"));
        };
        match Self::credentials(req, "Bearer") {
            None => Err(reject(401, ErrorCode::AuthFailed, "Admin authentication required")),
            Some(given) if secrets_equal(given, token) => Ok(()),
            Some(_) => Err(reject(403, ErrorCode::Forbidden, "Invalid admin token")),
        }
    }

    // ---- POST register ----

    async fn register(&self, req: &ApiRequest) -> R<HttpResponse> {
        match self.cfg.registration {
            Registration::Open => {}
            Registration::Token => self.admin(req)?,
            Registration::Closed => return Err(reject(403, ErrorCode::Forbidden, "Registration is closed")),
        }
        if req.body.len() > MAX_REGISTER_BODY {
            return Err(too_large(MAX_REGISTER_BODY));
        }
        let v: Value =
            serde_json::from_slice(&req.body).map_err(|_| reject(400, ErrorCode::BadRequest, "Invalid JSON"))?;
        let (Some(name), Some(password)) =
            (v.get("agent_id").and_then(Value::as_str), v.get("password").and_then(Value::as_str))
        else {
            return Err(reject(400, ErrorCode::BadRequest, "Missing agent_id or password"));
        };
        if password.is_empty() || password.len() > MAX_PASSWORD_LEN {
            return Err(reject(400, ErrorCode::BadRequest, format!("Password must be 1 to {MAX_PASSWORD_LEN} bytes")));
        }
        let id = AgentId::parse_or_complete(name, &self.cfg.domain)
            .map_err(|e| reject(400, ErrorCode::BadRequest, format!("Invalid agent_id format: {e}")))?;
        if id.domain() != self.cfg.domain {
            return Err(reject(
                403,
                ErrorCode::Forbidden,
                format!("Cannot register agent for domain '{}' on server '{}'", id.domain(), self.cfg.domain),
            ));
        }
        if id.is_reserved() {
            return Err(reject(
                403,
                ErrorCode::Forbidden,
                format!("Agent ID '{}' is reserved and cannot be registered", id.local()),
            ));
        }
        let key = id.to_string();
        if self.stores.agent(&key).await.map_err(store_err)?.is_some() {
            return Err(reject(409, ErrorCode::Conflict, format!("Agent {id} already registered")));
        }
        let hash = hash_password(password, self.cfg.argon2_memory_kib, self.cfg.argon2_iterations)
            .map_err(|e| reject(503, ErrorCode::TempFailure, e))?;
        let rec = AgentRecord { hash, created_at: self.clock.now() };
        if !self.stores.insert_agent(&key, &rec).await.map_err(store_err)? {
            return Err(reject(409, ErrorCode::Conflict, format!("Agent {id} already registered")));
        }
        Ok(json_response(201, &json!({"status": "registered", "agent_id": key})))
    }

    // ---- GET messages ----

    async fn inbox(&self, req: &ApiRequest) -> R<HttpResponse> {
        let who = self.agent(req, "Credential required").await?;
        let q = parse_query(&req.query);
        let limit = int_param(&q, "limit", DEFAULT_LIMIT)?.min(MAX_LIMIT);
        let after = int_param(&q, "after_id", 0)?;
        let rows = self.stores.inbox(&who.to_string(), after, limit as usize).await.map_err(store_err)?;
        // The stored texts are JSON already (numbers kept exactly): splice them in.
        let mut out = String::with_capacity(64 + rows.iter().map(|(_, j)| j.len() + 1).sum::<usize>());
        out.push_str("{\"messages\":[");
        for (i, (_, json)) in rows.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(json);
        }
        out.push_str(&format!("],\"count\":{}", rows.len()));
        if let Some((last, _)) = rows.last() {
            out.push_str(&format!(",\"last_id\":{last}"));
        }
        out.push('}');
        Ok(HttpResponse::new(200, Some("application/json"), out))
    }

    // ---- admin ----

    async fn agents(&self, req: &ApiRequest) -> R<HttpResponse> {
        self.admin(req)?;
        Ok(json_response(200, &json!({"agents": self.stores.agent_ids().await.map_err(store_err)?})))
    }

    async fn stats(&self, req: &ApiRequest) -> R<HttpResponse> {
        self.admin(req)?;
        let s = &self.iso.stats;
        let now = self.clock.now();
        let (waiting, due) = self.stores.queue_counts(now).await.map_err(store_err)?;
        let agents = self.stores.agent_ids().await.map_err(store_err)?;
        let dns = self.iso.dns.borrow();
        Ok(json_response(
            200,
            &json!({
                "uptime": (self.clock.now_ms() - self.iso.started_ms).max(0) / 1000,
                "messages": {
                    "received": s.received.get(),
                    "delivered_local": s.delivered_local.get(),
                    "forwarded": s.forwarded.get(),
                    "delivery_success": s.forwarded.get(),
                    "delivery_failed": s.delivery_failed.get(),
                    "bounced": s.bounced.get(),
                    "queued": s.queued.get(),
                    "duplicates": s.duplicates.get(),
                },
                "security": {
                    "ats_pass": s.ats_pass.get(),
                    "ats_fail": s.ats_fail.get(),
                    "ats_neutral": s.ats_neutral.get(),
                    "atk_pass": s.atk_pass.get(),
                    "atk_fail": s.atk_fail.get(),
                    "replay_blocked": s.replay_blocked.get(),
                    "credential_pass": s.credential_pass.get(),
                    "credential_fail": s.credential_fail.get(),
                },
                "queue": {"queued": waiting, "due": due},
                "dns_cache": {"entries": dns.len(), "hits": dns.hits, "misses": dns.misses},
                "sweeps": s.sweeps.get(),
                "counters": "per isolate (reset when the isolate is recycled); queue and agents from KV",
                "agents": agents,
                "domain": self.cfg.domain,
            }),
        ))
    }

    async fn inspect(&self, req: &ApiRequest) -> R<HttpResponse> {
        self.admin(req)?;
        let q = parse_query(&req.query);
        let Some(nonce) = param(&q, "nonce").filter(|n| !n.is_empty()) else {
            return Err(reject(400, ErrorCode::BadRequest, "Missing 'nonce' parameter"));
        };
        let Some(m) = self.stores.record(nonce).await.map_err(store_err)? else {
            return Err(reject(404, ErrorCode::NotFound, format!("Message {nonce} not found")));
        };
        Ok(json_response(
            200,
            &json!({
                "nonce": m.nonce, "from": m.from, "to": m.to, "status": m.status, "created_at": m.created_at,
                "updated_at": m.updated_at, "retry_count": m.attempts, "next_retry_at": m.next_attempt_at,
                "error": m.error, "attempts": m.attempts, "next_attempt_at": m.next_attempt_at, "last_error": m.error,
            }),
        ))
    }

    // ---- POST message ----

    async fn post_message(&self, req: &ApiRequest) -> R<Handled> {
        inc(&self.iso.stats.received);
        let inbound = pipeline::parse_inbound(&req.body, &self.inbound)?;
        let origin = inbound.origin;
        let result = self.accept(req, inbound).await;
        if let Err(r) = &result {
            self.count_refusal(origin, r);
        }
        result
    }

    fn count_refusal(&self, origin: Origin, r: &Rejection) {
        use ErrorCode::*;
        let s = &self.iso.stats;
        match r.code {
            Replay | StaleTimestamp => inc(&s.replay_blocked),
            AtsFail | AtsSyntax if origin == Origin::Remote => inc(&s.ats_fail),
            AtsTempError if origin == Origin::Remote => inc(&s.ats_neutral),
            AtkSignature | AtkKey | AtkTempError if origin == Origin::Remote => inc(&s.atk_fail),
            _ => {}
        }
    }

    async fn accept(&self, req: &ApiRequest, inbound: pipeline::Inbound) -> R<Handled> {
        let now = self.clock.now();
        let stats = &self.iso.stats;
        let accepted = match inbound.origin {
            Origin::Local => {
                let who = self.agent(req, "Credential required for local agent").await?;
                pipeline::verify_local_submission(inbound, &who, &self.inbound, now, &self.stores).await?
            }
            Origin::Remote => {
                let Some(source) = req.source_ip else {
                    return Err(reject(451, ErrorCode::TempFailure, "Source address unknown, retry later")
                        .with("details", "no CF-Connecting-IP header"));
                };
                let a =
                    pipeline::verify_remote(inbound, source, &self.inbound, now, &self.resolver, &self.stores).await?;
                inc(if a.ats == AtsVerdict::Pass { &stats.ats_pass } else { &stats.ats_neutral });
                inc(&stats.atk_pass);
                a
            }
        };
        let accepted_body =
            || json_response(202, &json!({"status": "accepted", "nonce": accepted.message.nonce, "timestamp": now}));
        if accepted.duplicate {
            inc(&stats.duplicates);
            return Ok(accepted_body().into());
        }
        let sender = accepted.sender.to_string();
        let recipient = accepted.recipient.to_string();
        let nonce = accepted.message.nonce.clone();
        let json = accepted.message.to_json();
        let record = |status: &str, next: Option<i64>| Record {
            nonce: nonce.clone(),
            from: sender.clone(),
            to: recipient.clone(),
            status: status.into(),
            created_at: now,
            updated_at: now,
            attempts: 0,
            next_attempt_at: next,
            error: None,
        };
        if accepted.is_for_local_domain(&self.cfg.domain) {
            if self.stores.agent(&recipient).await.map_err(store_err)?.is_none() {
                return Err(reject(404, ErrorCode::UnknownRecipient, "Unknown recipient")
                    .with("details", format!("no agent {recipient} on this server")));
            }
            let id = layout::inbox_id(self.clock.now_ms(), random_u32());
            self.stores.put_inbox(&recipient, id, &json, &self.iso.known_days).await.map_err(store_err)?;
            self.stores.put_record(&record("delivered", None)).await.map_err(store_err)?;
            self.stores.remember(accepted.sender.domain(), &nonce, &accepted.content_hash).await.map_err(store_err)?;
            inc(&stats.delivered_local);
            return Ok(accepted_body().into());
        }
        // A local agent's message for another domain: queue it under a lease and attempt it as
        // soon as the response is sent; the cron sweep picks it up if that attempt dies.
        let entry = QueueEntry {
            nonce: nonce.clone(),
            from: sender.clone(),
            to: recipient.clone(),
            domain: accepted.recipient.domain().to_owned(),
            created_at: now,
            attempts: 0,
            last_error: None,
            message: json.clone(),
        };
        let key = self.stores.put_entry(now + LEASE_SECS, &entry).await.map_err(store_err)?;
        self.stores.put_record(&record("queued", Some(now))).await.map_err(store_err)?;
        self.stores.remember(accepted.sender.domain(), &nonce, &accepted.content_hash).await.map_err(store_err)?;
        inc(&stats.queued);
        Ok(Handled { response: accepted_body(), follow_up: Some((key, entry)) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_decoding() {
        let q = parse_query("limit=5&after_id=%ZZ&agent_id=a%40b&x=1+2&&flag&pct=%4");
        assert_eq!(param(&q, "agent_id"), Some("a@b"));
        assert_eq!(param(&q, "after_id"), Some("%ZZ"));
        assert_eq!(param(&q, "x"), Some("1 2"));
        assert_eq!(param(&q, "flag"), Some(""));
        assert_eq!(param(&q, "pct"), Some("%4"));
        assert_eq!(int_param(&q, "limit", 50).unwrap(), 5);
        assert!(int_param(&q, "after_id", 0).is_err());
        assert_eq!(int_param(&q, "missing", 50).unwrap(), 50);
        assert!(int_param(&parse_query("limit=-1"), "limit", 50).is_err());
    }
}
