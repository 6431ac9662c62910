//! The relay end to end over the in-memory store: routes, authentication, storage, counters.

use base64::Engine;
use futures::executor::block_on;
use serde_json::{json, Value};

use super::credentials::{Argon2Params, InlineHasher};
use super::memory::MemoryStore;
use super::*;
use crate::env::{FixedClock, StaticResolver, StoreError, StoreFault};
use crate::relay::store::MessageStore;

const NOW: i64 = 1_800_000_000;

pub(crate) struct World {
    pub cfg: RelayConfig,
    pub state: RelayState,
    pub store: MemoryStore,
    pub resolver: StaticResolver,
    pub hasher: InlineHasher,
    pub clock: FixedClock,
    pub inbox: TestWatch,
}

/// A watcher that never blocks: woken when [`TestWatch::wake`] was called since its last wait.
#[derive(Debug, Default)]
pub(crate) struct TestWatch {
    pub unavailable: bool,
    pub version: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

pub(crate) struct TestWatcher {
    seen: u64,
    version: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl TestWatch {
    pub fn wake(&self) {
        self.version.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl stream::InboxWatch for TestWatch {
    type Watcher = TestWatcher;
    fn available(&self) -> bool {
        !self.unavailable
    }
    fn watch(&self, _agent: &str) -> TestWatcher {
        TestWatcher { seen: self.version.load(std::sync::atomic::Ordering::SeqCst), version: self.version.clone() }
    }
}

impl stream::InboxWatcher for TestWatcher {
    async fn wait(&mut self, _after_id: i64, _timeout: std::time::Duration) -> bool {
        let now = self.version.load(std::sync::atomic::Ordering::SeqCst);
        let woken = now != self.seen;
        self.seen = now;
        woken
    }
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
            inbox: TestWatch::default(),
        }
    }

    pub fn call(&self, method: &str, route: &str, auth: Option<&str>, body: Value) -> (u16, Value) {
        let h = self.handle(method, route, &[("authorization", auth.unwrap_or(""))], body);
        let v = serde_json::from_slice(&h.response.body)
            .unwrap_or(Value::String(String::from_utf8_lossy(&h.response.body).into_owned()));
        (h.response.status, v)
    }

    /// The relay's whole answer to a request with these headers (empty values are left out).
    pub fn handle(&self, method: &str, route: &str, headers: &[(&str, &str)], body: Value) -> Handled {
        let (path, query) = route.split_once('?').unwrap_or((route, ""));
        let mut req = ApiRequest {
            method: method.into(),
            path: format!("{}{path}", api::PREFIX),
            query: query.into(),
            body: if body.is_null() { Vec::new() } else { body.to_string().into_bytes() },
            ..ApiRequest::default()
        };
        for (n, v) in headers.iter().filter(|(_, v)| !v.is_empty()) {
            req.headers.push(((*n).into(), (*v).into()));
        }
        let relay = Relay {
            cfg: &self.cfg,
            state: &self.state,
            store: &self.store,
            resolver: &self.resolver,
            hasher: &self.hasher,
            clock: &self.clock,
            inbox: &self.inbox,
        };
        block_on(relay.handle(&req))
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
        inbox: &w.inbox,
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
        inbox: &w.inbox,
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

/// The ids and `data:` JSON of the events in SSE chunks.
fn events(chunks: &[String]) -> Vec<(i64, Value)> {
    chunks
        .iter()
        .filter(|c| c.contains("event: message"))
        .map(|c| {
            let id = c.lines().find_map(|l| l.strip_prefix("id: ")).unwrap().parse().unwrap();
            let data = c.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
            (id, serde_json::from_str(data).unwrap())
        })
        .collect()
}

#[test]
fn acknowledgement_removes_only_the_agents_own_messages_and_frees_quota() {
    let mut w = World::new();
    w.cfg.quota = Quota { max_messages: 3, max_bytes: 1 << 20 };
    for a in ["bob", "carol"] {
        w.call("POST", "/register", None, json!({"agent_id": a, "password": "pw"}));
    }
    let (bob, carol) = (basic("bob@a.test", "pw"), basic("carol@a.test", "pw"));
    for n in ["b1", "b2", "b3"] {
        assert_eq!(w.call("POST", "/message", Some(&bob), msg("bob@a.test", "bob@a.test", n)).0, 202);
    }
    assert_eq!(w.call("POST", "/message", Some(&bob), msg("bob@a.test", "bob@a.test", "b4")).0, 507, "full");
    assert_eq!(w.call("POST", "/message", Some(&carol), msg("carol@a.test", "carol@a.test", "c1")).0, 202);
    let ids = |auth: &str| -> Vec<i64> {
        let v = w.call("GET", "/messages", Some(auth), Value::Null).1;
        v["messages"].as_array().unwrap().iter().map(|m| m["nonce"].as_str().unwrap()[1..].parse().unwrap()).collect()
    };
    assert_eq!(ids(&bob), [1, 2, 3]);
    // Carol's message is id 4: bob cannot remove it, and is told so.
    let (s, v) = w.call("POST", "/messages/ack", Some(&bob), json!({"ids": [4]}));
    assert_eq!((s, v["error_code"].as_str(), v["removed"].as_u64()), (404, Some("550 5.1.0"), Some(0)), "{v}");
    assert_eq!(ids(&carol), [1], "carol's mail untouched");
    // up_to_id removes bob's first two; a repeat removes nothing and is still fine.
    let (s, v) = w.call("POST", "/messages/ack", Some(&bob), json!({"up_to_id": 2}));
    assert_eq!((s, v), (200, json!({"status": "acknowledged", "removed": 2})));
    assert_eq!(w.call("POST", "/messages/ack", Some(&bob), json!({"up_to_id": 2})).1["removed"], 0);
    assert_eq!(ids(&bob), [3]);
    // The quota is freed: two more fit.
    for n in ["b5", "b6"] {
        assert_eq!(w.call("POST", "/message", Some(&bob), msg("bob@a.test", "bob@a.test", n)).0, 202, "{n}");
    }
    // Mixed ids: bob's own go, carol's stays; the answer says how many were not bob's.
    let (s, v) = w.call("POST", "/messages/ack", Some(&bob), json!({"ids": [3, 4, 3]}));
    assert_eq!((s, v["removed"].as_u64(), v["not_found"].as_u64()), (404, Some(1), Some(1)), "{v}");
    assert_eq!(ids(&carol), [1]);
    assert_eq!(ids(&bob), [5, 6]);
    assert_eq!(w.state.stats.acknowledged.get(), 3);
    // A repeat of an acknowledged message is still recognised as a repeat, not stored again.
    assert_eq!(w.call("POST", "/message", Some(&bob), msg("bob@a.test", "bob@a.test", "b1")).0, 202);
    assert_eq!(ids(&bob), [5, 6]);
    // Bad input: 400 with the code of a malformed request; no credential: 401.
    for body in [
        json!({}),
        json!({"up_to_id": 1, "ids": [1]}),
        json!({"ids": []}),
        json!({"ids": [0]}),
        json!({"up_to_id": -1}),
        json!({"ids": "1"}),
        json!({"up_to": 1}),
        json!([1]),
        json!({"ids": (1..=1001).collect::<Vec<i64>>()}),
    ] {
        let (s, v) = w.call("POST", "/messages/ack", Some(&bob), body.clone());
        assert_eq!((s, v["error_code"].as_str()), (400, Some("500 5.5.2")), "{body} → {v}");
    }
    assert_eq!(w.call("POST", "/messages/ack", None, json!({"up_to_id": 9})).0, 401);
    assert_eq!(ids(&bob), [5, 6], "nothing removed by refused requests");
}

#[test]
fn expiry_removes_old_inbox_messages() {
    let w = World::new();
    w.call("POST", "/register", None, json!({"agent_id": "bob", "password": "pw"}));
    let bob = basic("bob@a.test", "pw");
    w.call("POST", "/message", Some(&bob), msg("bob@a.test", "bob@a.test", "e1"));
    assert_eq!(block_on(w.store.expire(NOW)).unwrap(), 0, "stored at NOW: not before it");
    assert_eq!(block_on(w.store.expire(NOW + 1)).unwrap(), 1);
    assert_eq!(w.call("GET", "/messages", Some(&bob), Value::Null).1["count"], 0);
}

#[test]
fn stream_backlog_then_live_resumes_without_gap_or_duplicate() {
    let w = World::new();
    w.call("POST", "/register", None, json!({"agent_id": "bob", "password": "pw"}));
    let bob = basic("bob@a.test", "pw");
    for i in 1..=5 {
        w.call("POST", "/message", Some(&bob), msg("bob@a.test", "bob@a.test", &format!("s{i}")));
    }
    let open = |headers: &[(&str, &str)]| {
        let h = w.handle("GET", "/messages/stream", headers, Value::Null);
        assert_eq!(h.response.status, 200, "{}", String::from_utf8_lossy(&h.response.body));
        assert_eq!(h.response.content_type.as_deref(), Some("text/event-stream"));
        assert!(h.headers.contains(&("cache-control".into(), "no-cache".into())));
        let open = h.stream.expect("a stream");
        stream::InboxStream::new(open, stream::InboxWatch::watch(&w.inbox, "bob@a.test"), w.cfg.pages)
    };
    // Read the opening and two events, then drop the connection in the middle of the backlog.
    let mut s = open(&[("authorization", &bob)]);
    let mut got = Vec::new();
    let opening = block_on(s.next(&w.store)).unwrap();
    assert!(opening.starts_with(':') && opening.contains("retry: "), "{opening}");
    for _ in 0..2 {
        got.push(block_on(s.next(&w.store)).unwrap());
    }
    let last = events(&got).last().unwrap().0;
    assert_eq!(last, 2);
    assert_eq!(w.state.streams.open("bob@a.test"), 1);
    drop(s);
    assert_eq!(w.state.streams.open("bob@a.test"), 0, "a dropped stream gives its place back");
    // Reconnect with Last-Event-ID (it wins over after_id): the rest of the backlog, then silence.
    let mut s = open(&[("authorization", &bob), ("last-event-id", &last.to_string())]);
    block_on(s.next(&w.store)).unwrap();
    for _ in 0..3 {
        got.push(block_on(s.next(&w.store)).unwrap());
    }
    assert_eq!(block_on(s.next(&w.store)).as_deref(), Some(stream::HEARTBEAT_CHUNK), "idle: a heartbeat");
    // Live: a new message, then a wake.
    w.call("POST", "/message", Some(&bob), msg("bob@a.test", "bob@a.test", "s6"));
    w.inbox.wake();
    got.push(block_on(s.next(&w.store)).unwrap());
    let evs = events(&got);
    assert_eq!(evs.iter().map(|e| e.0).collect::<Vec<_>>(), [1, 2, 3, 4, 5, 6], "each exactly once");
    // Each event's data is the message exactly as GET messages returns it.
    let page = w.call("GET", "/messages", Some(&bob), Value::Null).1;
    assert_eq!(evs.iter().map(|e| e.1.clone()).collect::<Vec<_>>(), page["messages"].as_array().unwrap().clone());
    // after_id works as the starting point too.
    let mut s = w
        .handle("GET", "/messages/stream?after_id=5", &[("authorization", &bob)], Value::Null)
        .stream
        .map(|o| stream::InboxStream::new(o, stream::InboxWatch::watch(&w.inbox, "bob@a.test"), w.cfg.pages))
        .unwrap();
    block_on(s.next(&w.store));
    assert_eq!(events(&[block_on(s.next(&w.store)).unwrap()])[0].0, 6);
}

#[test]
fn stream_refusals_are_json() {
    let mut w = World::new();
    w.cfg.streams = stream::StreamLimits { per_agent: 2, total: 3 };
    for a in ["bob", "carol"] {
        w.call("POST", "/register", None, json!({"agent_id": a, "password": "pw"}));
    }
    let bob = basic("bob@a.test", "pw");
    let (s, v) = w.call("GET", "/messages/stream", None, Value::Null);
    assert_eq!((s, v["error_code"].as_str()), (401, Some("535 5.7.8")));
    for bad in ["x", "-1", "1.5", "99999999999999999999"] {
        let h = w.handle("GET", "/messages/stream", &[("authorization", &bob), ("last-event-id", bad)], Value::Null);
        let v: Value = serde_json::from_slice(&h.response.body).unwrap();
        assert_eq!((h.response.status, v["error_code"].as_str()), (400, Some("500 5.5.2")), "{bad}: {v}");
        assert_eq!(v["error"], "Invalid Last-Event-ID");
    }
    assert_eq!(w.call("GET", "/messages/stream?after_id=z", Some(&bob), Value::Null).0, 400);
    // Two streams for bob; a third is refused with its own code; carol gets the last place.
    let one = w.handle("GET", "/messages/stream", &[("authorization", &bob)], Value::Null);
    let two = w.handle("GET", "/messages/stream", &[("authorization", &bob)], Value::Null);
    assert!(one.stream.is_some() && two.stream.is_some());
    let (s, v) = w.call("GET", "/messages/stream", Some(&bob), Value::Null);
    assert_eq!((s, v["error_code"].as_str(), v["max_streams"].as_u64()), (429, Some("452 4.3.1"), Some(2)), "{v}");
    // A long poll holds a place too.
    assert_eq!(w.call("GET", "/messages?wait=5", Some(&bob), Value::Null).0, 429);
    let carol = basic("carol@a.test", "pw");
    let three = w.handle("GET", "/messages/stream", &[("authorization", &carol)], Value::Null);
    assert!(three.stream.is_some());
    let (s, v) = w.call("GET", "/messages/stream", Some(&carol), Value::Null);
    assert_eq!((s, v["max_streams"].as_u64()), (429, Some(3)), "the server's total");
    drop((one, three));
    assert!(w.handle("GET", "/messages/stream", &[("authorization", &bob)], Value::Null).stream.is_some());
    // A home that cannot wait: 501 for the stream, and a long poll answers at once.
    w.inbox.unavailable = true;
    let (s, v) = w.call("GET", "/messages/stream", Some(&carol), Value::Null);
    assert_eq!((s, v["error_code"].as_str()), (501, Some("502 5.5.1")));
    assert_eq!(w.call("GET", "/messages?wait=60", Some(&carol), Value::Null).1["count"], 0);
}

#[test]
fn long_poll_answers_when_there_is_mail() {
    let w = World::new();
    w.call("POST", "/register", None, json!({"agent_id": "bob", "password": "pw"}));
    let bob = basic("bob@a.test", "pw");
    // Nothing arrives: the (never blocking) watcher times out and the page is empty.
    let (s, v) = w.call("GET", "/messages?wait=3", Some(&bob), Value::Null);
    assert_eq!((s, v["count"].as_u64()), (200, Some(0)));
    assert_eq!(w.call("GET", "/messages?wait=x", Some(&bob), Value::Null).0, 400);
    w.call("POST", "/message", Some(&bob), msg("bob@a.test", "bob@a.test", "l1"));
    assert_eq!(w.call("GET", "/messages?wait=3", Some(&bob), Value::Null).1["count"], 1);
    assert_eq!(w.state.streams.open("bob@a.test"), 0);
}
