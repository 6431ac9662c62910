//! The agent routes (docs/protocol.md §6.1, §7): `POST register`, `GET messages`, `GET whoami`.

use std::time::Duration;

use serde_json::{json, Value};

use crate::env::{Clock, Resolver};
use crate::error::{ErrorCode, Rejection};
use crate::identity::AgentId;
use crate::relay::credentials::PasswordHasher;
use crate::relay::store::{AgentStore, MessageStore};
use crate::relay::stream::{self, InboxWatch, InboxWatcher};
use crate::relay::{api, ApiRequest, Handled, Query, Relay};

/// Longest password accepted (argon2 hashes anything, but a bound keeps requests cheap).
pub const MAX_PASSWORD_LEN: usize = 1024;

impl<S: AgentStore + MessageStore, R: Resolver, H: PasswordHasher, C: Clock, W: InboxWatch> Relay<'_, S, R, H, C, W> {
    /// `POST register` `{"agent_id": "name" | "name@<our domain>", "password": "…"}` → 201
    /// `{"status":"registered","agent_id":"name@domain"}`. A short name is completed with our
    /// domain; another domain or a reserved name is 403, a taken id 409 (checked before the
    /// argon2 run, and again atomically by the store).
    pub(super) async fn register(&self, req: &ApiRequest) -> Result<Handled, Rejection> {
        let bad = |m: String| Rejection::new(ErrorCode::BadRequest, m);
        let v: Value = serde_json::from_slice(&req.body).map_err(|_| bad("Invalid JSON".into()))?;
        let (Some(name), Some(password)) =
            (v.get("agent_id").and_then(Value::as_str), v.get("password").and_then(Value::as_str))
        else {
            return Err(bad("Missing agent_id or password".into()));
        };
        if password.is_empty() || password.len() > MAX_PASSWORD_LEN {
            return Err(bad(format!("Password must be 1 to {MAX_PASSWORD_LEN} bytes")));
        }
        let domain = &self.cfg.domain;
        let id = AgentId::parse_or_complete(name, domain).map_err(|e| bad(format!("Invalid agent_id format: {e}")))?;
        if id.domain() != domain {
            return Err(Rejection::new(
                ErrorCode::Forbidden,
                format!("Cannot register agent for domain '{}' on server '{domain}'", id.domain()),
            ));
        }
        if id.is_reserved() {
            return Err(Rejection::new(
                ErrorCode::Forbidden,
                format!("Agent ID '{}' is reserved and cannot be registered", id.local()),
            ));
        }
        let key = id.to_string();
        let taken = || Rejection::new(ErrorCode::Conflict, format!("Agent {id} already registered"));
        if self.store.agent_exists(&key).await? {
            return Err(taken());
        }
        let hash = self.hasher.hash(password).await.map_err(|e| Rejection::new(ErrorCode::Unavailable, e))?;
        if !self.store.insert_agent(&key, &hash, self.clock.now()).await? {
            return Err(taken());
        }
        self.state.stats.registered.inc();
        Ok(Handled::json(201, &json!(api::Registered { status: "registered".into(), agent_id: key })))
    }

    /// `GET messages?after_id=N&limit=M`: the agent's inbox after row `after_id`, oldest first →
    /// `{"messages":[…],"count":n,"last_id":id}` (`last_id` only when non-empty). `limit`
    /// defaults to 50 and is capped at 500, the page at 8 MiB of messages (one larger message
    /// still comes, alone); a non-integer or negative `limit` or `after_id` is a 400. Nothing is
    /// deleted by reading: the cursor lives in the client, as in the reference (acknowledgement is
    /// `POST messages/ack`).
    ///
    /// `wait=SECONDS` (atp's own, docs/protocol.md §6.5) makes an empty page a long poll: the
    /// answer comes as soon as a message is committed to the inbox, or after `wait` seconds
    /// (at most [`stream::MAX_WAIT_SECS`]) with an empty page. A waiting poll holds one of the
    /// agent's stream places; a home that cannot wait answers at once.
    pub(super) async fn inbox(&self, who: &AgentId, q: &Query) -> Result<Handled, Rejection> {
        let pages = self.cfg.pages;
        let limit = (q.int("limit", pages.default_limit as i64)? as u64).min(pages.max_limit as u64) as usize;
        let after = q.int("after_id", 0)?;
        let wait = q.int("wait", 0)?.min(stream::MAX_WAIT_SECS);
        let agent = who.to_string();
        let mut rows = self.store.inbox(&agent, after, limit, pages.max_bytes).await?;
        if rows.is_empty() && wait > 0 && self.inbox.available() {
            let _slot = self.state.streams.take(&agent, self.cfg.streams)?;
            // Watch first, then read again: a commit between the two reads is not missed.
            let mut watcher = self.inbox.watch(&agent);
            let deadline = self.clock.now().saturating_add(wait);
            loop {
                rows = self.store.inbox(&agent, after, limit, pages.max_bytes).await?;
                let left = deadline.saturating_sub(self.clock.now());
                if !rows.is_empty() || left <= 0 || !watcher.wait(after, Duration::from_secs(left as u64)).await {
                    break;
                }
            }
        }
        // The stored texts are JSON already (numbers kept exactly): splice them in.
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
        Ok(Handled::body(200, "application/json", out))
    }
}
