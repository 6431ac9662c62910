//! The relay end to end over the in-memory store: routes, authentication, storage, counters.

use base64::Engine;
use futures::executor::block_on;
use serde_json::{json, Value};

use super::credentials::{Argon2Params, InlineHasher};
use super::memory::MemoryStore;
use super::*;
use crate::env::{FixedClock, StaticResolver, StoreError, StoreFault};

const NOW: i64 = 1_800_000_000;

pub(crate) struct World {
    pub cfg: RelayConfig,
    pub state: RelayState,
    pub store: MemoryStore,
    pub resolver: StaticResolver,
    pub hasher: InlineHasher,
    pub clock: FixedClock,
}

impl World {
    pub fn new() -> World {
        let mut cfg = RelayConfig::new("a.test");
        cfg.admin_token = Some("admintok".into());
        World {
            cfg,
            state: RelayState::new(NOW),
            store: MemoryStore::new(),
            resolver: StaticResolver::new(),
            hasher: InlineHasher(Argon2Params { memory_kib: 64, iterations: 1 }),
            clock: FixedClock(NOW),
        }
    }

    pub fn call(&self, method: &str, route: &str, auth: Option<&str>, body: Value) -> (u16, Value) {
        let (path, query) = route.split_once('?').unwrap_or((route, ""));
        let mut req = ApiRequest {
            method: method.into(),
            path: format!("{}{path}", api::PREFIX),
            query: query.into(),
            body: if body.is_null() { Vec::new() } else { body.to_string().into_bytes() },
            ..ApiRequest::default()
        };
        if let Some(a) = auth {
            req.headers.push(("authorization".into(), a.into()));
        }
        let relay = Relay {
            cfg: &self.cfg,
            state: &self.state,
            store: &self.store,
            resolver: &self.resolver,
            hasher: &self.hasher,
            clock: &self.clock,
        };
        let h = block_on(relay.handle(&req));
        let v = serde_json::from_slice(&h.response.body)
            .unwrap_or(Value::String(String::from_utf8_lossy(&h.response.body).into_owned()));
        (h.response.status, v)
    }
}

fn basic(user: &str, pw: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}")))
}

fn msg(from: &str, to: &str, nonce: &str) -> Value {
    json!({"from": from, "to": to, "timestamp": NOW, "nonce": nonce, "type": "message", "payload": {"body": "hi"}})
}

#[test]
fn register_whoami_send_and_read() {
    let w = World::new();
    let (s, v) = w.call("POST", "/register", None, json!({"agent_id": "bob", "password": "pw"}));
    assert_eq!((s, v["agent_id"].as_str()), (201, Some("bob@a.test")));
    assert_eq!(w.call("POST", "/register", None, json!({"agent_id": "bob", "password": "x"})).0, 409);
    let (s, v) = w.call("GET", "/whoami", Some(&basic("Bob@a.test", "pw")), Value::Null);
    assert_eq!((s, v["agent_id"].as_str()), (200, Some("bob@a.test")));
    assert_eq!(w.call("GET", "/whoami", Some(&basic("bob@a.test", "no")), Value::Null).0, 401);
    assert_eq!(w.call("GET", "/whoami", None, Value::Null).0, 401);

    let auth = basic("bob@a.test", "pw");
    let (s, v) = w.call("POST", "/message", Some(&auth), msg("bob@a.test", "bob@a.test", "n1"));
    assert_eq!((s, v["status"].as_str()), (202, Some("accepted")), "{v}");
    // An exact repeat is accepted again and stored once.
    assert_eq!(w.call("POST", "/message", Some(&auth), msg("bob@a.test", "bob@a.test", "n1")).0, 202);
    let (s, v) = w.call("GET", "/messages?after_id=0", Some(&auth), Value::Null);
    assert_eq!((s, v["count"].as_i64(), v["last_id"].as_i64()), (200, Some(1), Some(1)), "{v}");
    // An unknown local recipient is refused, a bad limit is a 400.
    assert_eq!(w.call("POST", "/message", Some(&auth), msg("bob@a.test", "nobody@a.test", "n2")).0, 404);
    assert_eq!(w.call("GET", "/messages?limit=x", Some(&auth), Value::Null).0, 400);
    assert!(w.state.stats.credential_cache_hits.get() > 0, "verified credentials are cached");
}

#[test]
fn routes_methods_and_admin() {
    let w = World::new();
    assert_eq!(w.call("GET", "/nothing", None, Value::Null).0, 404);
    let (s, v) = w.call("GET", "/register", None, Value::Null);
    assert_eq!((s, v["error_code"].as_str()), (405, Some("500 5.5.2")));
    assert_eq!(w.call("GET", "/health", None, Value::Null).1["domain"], "a.test");
    assert_eq!(w.call("GET", "/stats", None, Value::Null).0, 401);
    assert_eq!(w.call("GET", "/stats", Some("Bearer wrong"), Value::Null).0, 403);
    let (s, v) = w.call("GET", "/stats", Some("Bearer admintok"), Value::Null);
    assert_eq!((s, v["domain"].as_str()), (200, Some("a.test")));
    assert!(v["rejections"]["550 5.1.0"].as_u64() >= Some(1), "{v}");
    let (s, v) = w.call("GET", "/metrics", Some("Bearer admintok"), Value::Null);
    assert!(s == 200 && v.as_str().unwrap().contains("atp_agents 0"), "{v}");
    assert_eq!(w.call("GET", "/inspect", Some("Bearer admintok"), Value::Null).0, 400);
}

#[test]
fn queued_messages_wake_delivery_and_storage_failures_are_temporary() {
    let w = World::new();
    w.call("POST", "/register", None, json!({"agent_id": "bob", "password": "pw"}));
    let relay = Relay {
        cfg: &w.cfg,
        state: &w.state,
        store: &w.store,
        resolver: &w.resolver,
        hasher: &w.hasher,
        clock: &w.clock,
    };
    let req = ApiRequest {
        method: "POST".into(),
        path: api::MESSAGE.full_path(),
        headers: vec![("authorization".into(), basic("bob@a.test", "pw"))],
        body: msg("bob@a.test", "carol@b.test", "q1").to_string().into_bytes(),
        ..ApiRequest::default()
    };
    let h = block_on(relay.handle(&req));
    assert_eq!(h.response.status, 202);
    assert_eq!(h.queued, Some(Queued { nonce: "q1".into(), domain: "b.test".into() }));
    assert_eq!(h.nonce.as_deref(), Some("q1"));
    w.store.fail_with(Some(StoreError::with_fault(StoreFault::Full, false, "ENOSPC")));
    let (s, v) = w.call("POST", "/message", Some(&basic("bob@a.test", "pw")), msg("bob@a.test", "bob@a.test", "n9"));
    assert_eq!((s, v["storage"].as_str(), v["error_code"].as_str()), (507, Some("full"), Some("451 4.3.0")));
}

#[test]
fn quotas_and_failed_login_limits() {
    let mut w = World::new();
    w.cfg.quota = Quota { max_messages: 2, max_bytes: 1 << 20 };
    w.call("POST", "/register", None, json!({"agent_id": "bob", "password": "pw"}));
    let auth = basic("bob@a.test", "pw");
    for n in ["q1", "q2"] {
        assert_eq!(w.call("POST", "/message", Some(&auth), msg("bob@a.test", "bob@a.test", n)).0, 202);
    }
    let (s, v) = w.call("POST", "/message", Some(&auth), msg("bob@a.test", "bob@a.test", "q3"));
    assert_eq!((s, v["error_code"].as_str()), (507, Some("452 4.2.2")), "mailbox full is temporary");
    assert_eq!(w.call("GET", "/messages", Some(&auth), Value::Null).1["count"], 2, "nothing accepted was dropped");

    // Failed logins from one address: 429 with Retry-After, before any argon2 run; the agent's
    // cached credential keeps working from that address.
    let relay = Relay {
        cfg: &w.cfg,
        state: &w.state,
        store: &w.store,
        resolver: &w.resolver,
        hasher: &w.hasher,
        clock: &w.clock,
    };
    let from = |pw: &str| ApiRequest {
        method: "GET".into(),
        path: api::WHOAMI.full_path(),
        headers: vec![("authorization".into(), basic("bob@a.test", pw))],
        source_ip: Some("192.0.2.7".parse().unwrap()),
        ..ApiRequest::default()
    };
    let limit = w.state.logins.limits.per_address_agent;
    for _ in 0..limit {
        assert_eq!(block_on(relay.handle(&from("guess"))).response.status, 401);
    }
    let h = block_on(relay.handle(&from("guess")));
    assert_eq!((h.response.status, h.code), (429, Some(crate::ErrorCode::TooManyRequests)));
    assert!(h.headers.iter().any(|(n, _)| n == "retry-after"));
    assert_eq!(block_on(relay.handle(&from("pw"))).response.status, 200, "a cached credential is never limited");
}
