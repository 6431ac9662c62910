//! The worker end to end, natively: the core's relay over the worker's KV store, its delivery
//! queue and DoH cache, with in-memory KV, a hand-moved clock, and a fake network that answers DoH
//! queries from a zone table (real DNS wire format, built by hickory-proto) and transfers with a
//! scripted peer. The same code runs in workerd (tests/worker/run.sh).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use atp_wasm::http::{HttpError, HttpRequest, HttpResponse, HttpTransport};
use atp_wasm::keys::DomainKey;
use atp_wasm::message::Message;
use atp_wasm::records::atk::AtkRecord;
use atp_wasm::relay::ApiRequest;
use atp_wasm::sign::{sign_message, verify_message};
use atp_worker::clock::Clock;
use atp_worker::config::{seed_b64, Config};
use atp_worker::delivery::Processed;
use atp_worker::kv::{Kv, MemoryKv};
use atp_worker::store::Namespaces;
use atp_worker::worker::{Isolate, Worker};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use futures::executor::block_on;
use hickory_proto::op::{Message as Dns, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::svcb::{Alpn, SvcParamKey, SvcParamValue, SVCB};
use hickory_proto::rr::rdata::TXT;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use serde_json::{json, Value};

const DOH: &str = "https://doh.test/dns-query";
const T0: i64 = 1_795_545_000;

/// How the peer `mx.peer.test` answers transfers.
#[derive(Clone, Copy, PartialEq)]
enum Peer {
    Up,
    Down,
    Refuses,
}

/// The fake network: DoH from `zone`, transfers to the peer.
struct Net {
    zone: RefCell<HashMap<(String, RecordType), Vec<RData>>>,
    /// Names whose lookups fail (SERVFAIL).
    failing: RefCell<Vec<String>>,
    peer: Cell<Peer>,
    received: RefCell<Vec<Message>>,
    doh_queries: Cell<u32>,
}

impl Net {
    fn new() -> Rc<Net> {
        Rc::new(Net {
            zone: RefCell::default(),
            failing: RefCell::default(),
            peer: Cell::new(Peer::Up),
            received: RefCell::default(),
            doh_queries: Cell::new(0),
        })
    }

    fn add(&self, name: &str, data: RData) {
        let key = (name.to_ascii_lowercase(), data.record_type());
        self.zone.borrow_mut().entry(key).or_default().push(data);
    }

    fn dns(&self, req: &HttpRequest) -> HttpResponse {
        self.doh_queries.set(self.doh_queries.get() + 1);
        let q = req.url.split_once("?dns=").map(|(_, q)| q).unwrap_or("");
        let query = Dns::from_vec(&URL_SAFE_NO_PAD.decode(q).unwrap()).unwrap();
        let question = query.queries[0].clone();
        let name = question.name().to_ascii().trim_end_matches('.').to_ascii_lowercase();
        let mut m = Dns::new(0, MessageType::Response, OpCode::Query);
        let rows = self.zone.borrow().get(&(name.clone(), question.query_type())).cloned();
        let known = self.zone.borrow().keys().any(|(n, _)| *n == name);
        m.metadata.response_code = if self.failing.borrow().contains(&name) {
            ResponseCode::ServFail
        } else if rows.is_some() || known {
            ResponseCode::NoError
        } else {
            ResponseCode::NXDomain
        };
        m.add_query(question.clone());
        for data in rows.unwrap_or_default() {
            m.add_answers([Record::from_rdata(question.name().clone(), 300, data)]);
        }
        HttpResponse::new(200, Some("application/dns-message"), m.to_vec().unwrap())
    }
}

#[derive(Clone)]
struct Transport(Rc<Net>);

impl HttpTransport for Transport {
    async fn send(&self, req: HttpRequest) -> Result<HttpResponse, HttpError> {
        let net = &self.0;
        if req.url.starts_with(DOH) {
            return Ok(net.dns(&req));
        }
        assert_eq!(req.url, "https://mx.peer.test:7443/.well-known/atp/v1/message");
        assert_eq!(req.header_value("content-type"), Some("application/atp+json"));
        match net.peer.get() {
            Peer::Down => Err(HttpError("connection refused".into())),
            Peer::Refuses => {
                Ok(HttpResponse::json(403, r#"{"error":"ATK verification failed","error_code":"550 5.7.28"}"#))
            }
            Peer::Up => {
                net.received.borrow_mut().push(Message::parse(&req.body).unwrap());
                Ok(HttpResponse::json(202, r#"{"status":"accepted"}"#))
            }
        }
    }
}

fn relay_key() -> DomainKey {
    DomainKey::from_seed(&[1; 32])
}

fn peer_key() -> DomainKey {
    DomainKey::from_seed(&[2; 32])
}

fn txt(s: &str) -> RData {
    RData::TXT(TXT::new(vec![s.to_owned()]))
}

/// The test world: our relay `relay.test`, the peer domain `peer.test`.
struct World {
    net: Rc<Net>,
    time: Rc<Cell<i64>>,
    iso: Rc<Isolate>,
    stores: Rc<Namespaces<MemoryKv>>,
    vars: Vec<(&'static str, String)>,
}

/// Namespaces shared between the relays of successive "invocations".
struct SharedKv(Rc<Namespaces<MemoryKv>>, u8);

impl Kv for SharedKv {
    async fn get(&self, key: &str) -> Result<Option<String>, atp_wasm::env::StoreError> {
        self.ns().get(key).await
    }
    async fn put(&self, key: &str, value: &str, opts: atp_worker::kv::Put) -> Result<(), atp_wasm::env::StoreError> {
        self.ns().put(key, value, opts).await
    }
    async fn delete(&self, key: &str) -> Result<(), atp_wasm::env::StoreError> {
        self.ns().delete(key).await
    }
    async fn list(
        &self,
        prefix: &str,
        cursor: Option<String>,
        limit: u32,
    ) -> Result<atp_worker::kv::Page, atp_wasm::env::StoreError> {
        self.ns().list(prefix, cursor, limit).await
    }
}

impl SharedKv {
    fn ns(&self) -> &MemoryKv {
        match self.1 {
            0 => &self.0.agents,
            1 => &self.0.mail,
            _ => &self.0.queue,
        }
    }
}

impl World {
    fn new() -> World {
        let net = Net::new();
        let svcb = RData::SVCB(SVCB::new(
            1,
            Name::from_ascii("mx.peer.test.").unwrap(),
            vec![
                (SvcParamKey::Alpn, SvcParamValue::Alpn(Alpn(vec!["atp/1".into()]))),
                (SvcParamKey::Port, SvcParamValue::Port(7443)),
            ],
        ));
        net.add("_atp.peer.test", svcb);
        net.add("ats._atp.peer.test", txt("v=atp1 allow=ip:192.0.2.7 deny=all"));
        net.add("default.atk._atp.peer.test", txt(&AtkRecord::new(*peer_key().public_key().as_bytes()).to_string()));
        let time = Rc::new(Cell::new(T0 * 1000));
        World {
            net,
            iso: Rc::new(Isolate::new(T0 * 1000)),
            time,
            stores: Rc::new(Namespaces { agents: MemoryKv::new(), mail: MemoryKv::new(), queue: MemoryKv::new() }),
            vars: vec![
                ("DOMAIN", "relay.test".into()),
                ("DOMAIN_KEY", seed_b64(&[1; 32])),
                ("ADMIN_TOKEN", "tok".into()),
                ("DOH_URL", DOH.into()),
                ("RETRY_BASE", "10".into()),
                ("RETRY_CAP", "100".into()),
                ("MAX_AGE", "1000".into()),
                ("ARGON2_MEMORY_KIB", "64".into()),
                ("ARGON2_ITERATIONS", "1".into()),
            ],
        }
    }

    fn set(&mut self, name: &'static str, value: &str) {
        self.vars.retain(|(n, _)| *n != name);
        self.vars.push((name, value.into()));
    }

    /// A worker for one invocation (fresh subrequest budget, same KV and isolate).
    fn worker(&self) -> Worker<SharedKv, Transport> {
        let vars = self.vars.clone();
        let cfg = Config::from_lookup(|k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone())).unwrap();
        let ns = Namespaces {
            agents: SharedKv(self.stores.clone(), 0),
            mail: SharedKv(self.stores.clone(), 1),
            queue: SharedKv(self.stores.clone(), 2),
        };
        Worker::new(cfg, ns, Transport(self.net.clone()), Clock::manual(self.time.clone()), self.iso.clone())
    }

    fn now(&self) -> i64 {
        self.time.get() / 1000
    }

    fn advance(&self, secs: i64) {
        self.time.set(self.time.get() + secs * 1000);
    }

    fn call(&self, method: &str, path_query: &str, auth: Option<&str>, body: &str) -> (u16, Value, Option<Processed>) {
        let (path, query) = path_query.split_once('?').unwrap_or((path_query, ""));
        let mut headers = vec![("content-type".to_owned(), "application/json".to_owned())];
        if let Some(a) = auth {
            headers.push(("authorization".into(), a.into()));
        }
        let req = ApiRequest {
            method: method.into(),
            path: format!("/.well-known/atp/v1/{path}"),
            query: query.into(),
            headers,
            body: body.as_bytes().to_vec(),
            source_ip: Some("192.0.2.7".parse().unwrap()),
        };
        let worker = self.worker();
        let handled = block_on(worker.handle(&req));
        let follow = handled.queued.as_ref().map(|q| block_on(worker.deliver_now(q)).unwrap().unwrap());
        let body = &handled.response.body;
        let v = match handled.response.content_type.as_deref() {
            Some("application/json") => serde_json::from_slice(body).unwrap(),
            _ => Value::String(String::from_utf8_lossy(body).into_owned()),
        };
        (handled.response.status, v, follow)
    }

    fn register(&self, name: &str) {
        let (s, v, _) = self.call("POST", "register", None, &json!({"agent_id": name, "password": "pw"}).to_string());
        assert_eq!(s, 201, "{v}");
    }

    fn send(&self, from: &str, to: &str, body: &str) -> (u16, Value, Option<Processed>) {
        let msg = json!({"from": from, "to": to, "timestamp": self.now(), "nonce": atp_wasm::message::new_nonce(),
                         "type": "message", "payload": {"body": body}});
        self.call("POST", "message", Some(&basic(from)), &msg.to_string())
    }

    fn recv(&self, who: &str, query: &str) -> Value {
        let (s, v, _) = self.call("GET", &format!("messages{query}"), Some(&basic(who)), "");
        assert_eq!(s, 200, "{v}");
        v
    }

    fn inspect(&self, nonce: &str) -> Value {
        self.call("GET", &format!("inspect?nonce={nonce}"), Some("Bearer tok"), "").1
    }

    fn queue_keys(&self) -> Vec<String> {
        self.stores.queue.keys().into_iter().filter(|k| k.starts_with("q/")).collect()
    }
}

fn basic(who: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{who}:pw")))
}

#[test]
fn local_mail_and_the_recv_cursor() {
    let w = World::new();
    w.register("alice");
    w.register("bob");
    let mut nonces = Vec::new();
    for i in 0..3 {
        let (s, v, follow) = w.send("alice@relay.test", "bob@relay.test", &format!("m{i}"));
        assert_eq!((s, follow), (202, None), "{v}");
        nonces.push(v["nonce"].as_str().unwrap().to_owned());
        w.advance(1);
    }
    let all = w.recv("bob@relay.test", "");
    assert_eq!(all["count"], 3);
    let got: Vec<&str> = all["messages"].as_array().unwrap().iter().map(|m| m["nonce"].as_str().unwrap()).collect();
    assert_eq!(got, nonces);
    let page = w.recv("bob@relay.test", "?limit=2");
    assert_eq!(page["count"], 2);
    let rest = w.recv("bob@relay.test", &format!("?after_id={}", page["last_id"]));
    assert_eq!(rest["messages"][0]["nonce"], nonces[2].as_str());
    assert_eq!(rest["last_id"], all["last_id"]);
    assert_eq!(w.recv("bob@relay.test", &format!("?after_id={}", all["last_id"])), json!({"messages": [], "count": 0}));
    assert_eq!(w.recv("alice@relay.test", "")["count"], 0);
    assert_eq!(w.inspect(&nonces[0])["status"], "delivered");
    // no orphan mail, no impersonation
    let (s, v, _) = w.send("alice@relay.test", "ghost@relay.test", "x");
    assert_eq!((s, v["error_code"].as_str()), (404, Some("550 5.1.1")));
    let msg = json!({"from": "bob@relay.test", "to": "alice@relay.test", "timestamp": w.now(), "nonce": "n-x",
                     "type": "message", "payload": {}});
    let (s, v, _) = w.call("POST", "message", Some(&basic("alice@relay.test")), &msg.to_string());
    assert_eq!((s, v["error_code"].as_str()), (403, Some("553 5.7.1")));
}

#[test]
fn outbound_delivery_is_signed_and_cached_dns_is_reused() {
    let w = World::new();
    w.register("alice");
    let (s, v, follow) = w.send("alice@relay.test", "zed@peer.test", "hello");
    assert_eq!((s, follow), (202, Some(Processed::Delivered)), "{v}");
    let got = w.net.received.borrow()[0].clone();
    assert_eq!(got.payload, json!({"body": "hello"}));
    verify_message(&got, &relay_key().public_key()).expect("signed with DOMAIN_KEY");
    assert_eq!(got.signature.as_ref().unwrap().key_id, "default.atk._atp.relay.test");
    assert!(w.queue_keys().is_empty());
    let rec = w.inspect(v["nonce"].as_str().unwrap());
    assert_eq!((rec["status"].as_str(), rec["attempts"].as_u64()), (Some("delivered"), Some(1)));
    let queries = w.net.doh_queries.get();
    w.send("alice@relay.test", "zed@peer.test", "again");
    assert_eq!(w.net.doh_queries.get(), queries, "SVCB answer cached for its TTL");
    w.advance(301);
    w.send("alice@relay.test", "zed@peer.test", "later");
    assert!(w.net.doh_queries.get() > queries, "and asked again after it");
}

#[test]
fn retries_with_domain_backoff_then_delivers_from_the_sweep() {
    let w = World::new();
    w.register("alice");
    w.net.peer.set(Peer::Down);
    let (_, v, follow) = w.send("alice@relay.test", "zed@peer.test", "wait for me");
    let nonce = v["nonce"].as_str().unwrap().to_owned();
    let Some(Processed::Retry(next)) = follow else { panic!("{follow:?}") };
    assert!(next > w.now() && next <= w.now() + 10, "{next}");
    assert_eq!(w.queue_keys(), vec![format!("q/{next:012}/{nonce}")]);
    let rec = w.inspect(&nonce);
    assert_eq!(rec["status"], "failed");
    assert!(rec["last_error"].as_str().unwrap().starts_with("451 4.4.1: "), "{rec}");
    // Another message for the same domain meanwhile: deferred to the end of the backoff, untried.
    let (_, v2, follow2) = w.send("alice@relay.test", "zed@peer.test", "me too");
    assert!(matches!(follow2, Some(Processed::Deferred(_))), "{follow2:?}");
    // Nothing due yet.
    assert_eq!(block_on(w.worker().sweep()).unwrap().due, 0);
    w.net.peer.set(Peer::Up);
    w.advance(11);
    let report = block_on(w.worker().sweep()).unwrap();
    assert_eq!((report.due, report.delivered), (2, 2), "{report:?}");
    assert!(w.queue_keys().is_empty());
    assert_eq!(w.inspect(&nonce)["attempts"], 2);
    assert_eq!(w.inspect(v2["nonce"].as_str().unwrap())["status"], "delivered");
    assert_eq!(w.net.received.borrow().len(), 2);
    assert!(w.stores.queue.keys().iter().all(|k| !k.starts_with("b/")), "backoff reset");
}

#[test]
fn permanent_refusals_and_old_messages_bounce() {
    let w = World::new();
    w.register("alice");
    w.net.peer.set(Peer::Refuses);
    let (_, v, follow) = w.send("alice@relay.test", "zed@peer.test", "no");
    assert_eq!(follow, Some(Processed::Bounced));
    let nonce = v["nonce"].as_str().unwrap().to_owned();
    let rec = w.inspect(&nonce);
    assert_eq!(rec["status"], "bounced");
    assert_eq!(rec["error"], "550 5.7.28: ATK verification failed");
    let inbox = w.recv("alice@relay.test", "");
    let notice = &inbox["messages"][0];
    assert_eq!(notice["from"], "postmaster@relay.test");
    assert_eq!(notice["payload"]["original_nonce"], nonce.as_str());
    assert_eq!(notice["payload"]["error_code"], "550 5.7.28");
    assert_eq!(notice["payload"]["status"], 403);
    assert_eq!(notice["payload"]["subject"], format!("Delivery Failure: {nonce}"));

    // Down past MAX_AGE (1000 s): retried, then bounced with 554 5.4.7.
    w.net.peer.set(Peer::Down);
    let (_, v, _) = w.send("alice@relay.test", "zed@peer.test", "patience");
    let nonce = v["nonce"].as_str().unwrap().to_owned();
    let mut sweeps = 0;
    while w.inspect(&nonce)["status"] != "bounced" {
        w.advance(101);
        block_on(w.worker().sweep()).unwrap();
        sweeps += 1;
        assert!(sweeps < 30, "never bounced");
    }
    let inbox = w.recv("alice@relay.test", "");
    let notice = inbox["messages"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(notice["payload"]["error_code"], "554 5.4.7");
    assert!(notice["payload"]["error"].as_str().unwrap().contains("connection refused"), "{notice}");
    assert!(w.queue_keys().is_empty());

    // A domain without ATP records bounces at once.
    let (_, _, follow) = w.send("alice@relay.test", "x@nowhere.test", "?");
    assert_eq!(follow, Some(Processed::Bounced));
}

#[test]
fn inbound_transfers_are_verified_by_doh() {
    let w = World::new();
    w.register("alice");
    let signed = |payload: Value, key: &DomainKey| {
        let mut m = Message::parse(
            json!({"from": "zed@peer.test", "to": "alice@relay.test", "timestamp": w.now() - 3600,
                   "nonce": atp_wasm::message::new_nonce(), "type": "message", "payload": payload})
            .to_string()
            .as_bytes(),
        )
        .unwrap();
        sign_message(&mut m, key, "default", "peer.test", w.now()).unwrap();
        m
    };
    let m = signed(json!({"body": "hi"}), &peer_key());
    let (s, v, follow) = w.call("POST", "message", None, &m.to_json());
    assert_eq!((s, follow), (202, None), "{v}");
    assert_eq!(w.call("POST", "message", None, &m.to_json()).0, 202, "idempotent repeat");
    assert_eq!(w.recv("alice@relay.test", "")["count"], 1, "stored once");
    let mut tampered = signed(json!({"body": "a"}), &peer_key());
    tampered.payload = json!({"body": "b"});
    let (s, v, _) = w.call("POST", "message", None, &tampered.to_json());
    assert_eq!((s, v["error_code"].as_str()), (403, Some("550 5.7.28")));
    let (s, v, _) = w.call("POST", "message", None, &signed(json!({}), &relay_key()).to_json());
    assert_eq!((s, v["error_code"].as_str()), (403, Some("550 5.7.28")));
    let mut other = signed(json!({}), &peer_key());
    other.nonce = m.nonce.clone();
    sign_message(&mut other, &peer_key(), "default", "peer.test", w.now()).unwrap();
    let (s, v, _) = w.call("POST", "message", None, &other.to_json());
    assert_eq!((s, v["error_code"].as_str()), (400, Some("550 5.7.30")));
    let stats = w.call("GET", "stats", Some("Bearer tok"), "").1;
    assert_eq!(stats["security"]["atk_pass"], 2);
    assert_eq!(stats["security"]["atk_fail"], 2);
    assert_eq!(stats["security"]["ats_pass"], 2);
}

#[test]
fn the_sweep_respects_batch_and_subrequest_budget() {
    let mut w = World::new();
    w.register("alice");
    w.net.peer.set(Peer::Down);
    for i in 0..5 {
        w.send("alice@relay.test", &format!("u{i}@peer.test"), "x");
    }
    assert_eq!(w.queue_keys().len(), 5);
    w.net.peer.set(Peer::Up);
    w.advance(200);
    w.set("SWEEP_BATCH", "2");
    let r = block_on(w.worker().sweep()).unwrap();
    assert_eq!((r.due, r.delivered), (2, 2), "{r:?}");
    w.set("SWEEP_BATCH", "20");
    w.set("SUBREQUEST_BUDGET", "5");
    // DNS answers expired: the first attempt needs DoH lookups, then the budget runs out.
    w.advance(400);
    let r = block_on(w.worker().sweep()).unwrap();
    assert!(r.delivered >= 1 && r.not_attempted >= 1, "{r:?}");
    assert_eq!(w.queue_keys().len(), 3 - r.delivered, "the rest stay queued, untouched");
    w.set("SUBREQUEST_BUDGET", "45");
    let r = block_on(w.worker().sweep()).unwrap();
    assert_eq!(r.delivered, r.due);
    assert!(w.queue_keys().is_empty());
    assert_eq!(w.net.received.borrow().len(), 5);
}

#[test]
fn registration_policy_and_admin() {
    let mut w = World::new();
    w.set("REGISTRATION", "token");
    let body = json!({"agent_id": "amy", "password": "pw"}).to_string();
    let (s, v, _) = w.call("POST", "register", None, &body);
    assert_eq!((s, v["error_code"].as_str()), (401, Some("535 5.7.8")));
    assert_eq!(w.call("POST", "register", Some("Bearer tok"), &body).0, 201);
    w.set("REGISTRATION", "closed");
    let (s, v, _) = w.call("POST", "register", Some("Bearer tok"), &body);
    assert_eq!((s, v["error"].as_str()), (403, Some("Registration is closed")));
    assert_eq!(w.call("GET", "agents", Some("Bearer tok"), "").1, json!({"agents": ["amy@relay.test"]}));
    assert_eq!(w.call("GET", "agents", Some("Bearer bad"), "").0, 403);
    assert_eq!(w.call("DELETE", "agents", Some("Bearer tok"), "").0, 405);
    assert_eq!(w.call("GET", "nope", None, "").0, 404);
}

#[test]
fn every_core_route_is_served() {
    let w = World::new();
    w.register("alice");
    let (s, v, _) = w.call("GET", "whoami", Some(&basic("Alice@relay.test")), "");
    assert_eq!((s, v["agent_id"].as_str()), (200, Some("alice@relay.test")));
    assert_eq!(w.call("GET", "whoami", None, "").0, 401);
    let (s, v, _) = w.call("GET", "metrics", Some("Bearer tok"), "");
    let text = v.as_str().unwrap();
    assert!(s == 200 && text.contains("atp_agents 1\n") && text.contains("atp_agents_registered_total 1\n"), "{text}");
    assert_eq!(w.call("GET", "metrics", None, "").0, 401);
    let (s, v, _) = w.call("GET", "capabilities", None, "");
    assert_eq!((s, v["max_payload_size"].as_u64()), (200, Some(1_048_576)));
    let (s, v, _) = w.call("GET", "health", None, "");
    assert_eq!((s, v["domain"].as_str()), (200, Some("relay.test")));
    let stats = w.call("GET", "stats", Some("Bearer tok"), "").1;
    assert_eq!(stats["agents"], json!(["alice@relay.test"]));
    assert!(stats["dns_cache"].is_object() && stats["sweeps"] == 0, "{stats}");
    assert_eq!(stats["rejections"]["535 5.7.8"], 2, "refusals by code: {stats}");
}

/// Push and acknowledgement on the worker (docs/protocol.md §6.5): no stream on KV yet (a JSON 501),
/// a long poll answers at once, acknowledgement removes the agent's own messages only.
#[test]
fn stream_is_501_and_ack_works() {
    let w = World::new();
    w.register("alice");
    w.register("bob");
    let (s, v, _) = w.call("GET", "messages/stream", Some(&basic("alice@relay.test")), "");
    assert_eq!((s, v["error_code"].as_str()), (501, Some("502 5.5.1")), "{v}");
    assert_eq!(w.call("GET", "messages/stream", None, "").0, 401);
    w.send("alice@relay.test", "bob@relay.test", "one");
    w.send("alice@relay.test", "bob@relay.test", "two");
    w.send("bob@relay.test", "alice@relay.test", "for alice");
    let (s, v, _) = w.call("GET", "messages?wait=30", Some(&basic("bob@relay.test")), "");
    assert_eq!((s, v["count"].as_u64()), (200, Some(2)));
    let first = v["messages"][0].clone();
    let ids: Vec<i64> = {
        let (_, v1, _) = w.call("GET", "messages?limit=1", Some(&basic("bob@relay.test")), "");
        let (_, a, _) = w.call("GET", "messages", Some(&basic("alice@relay.test")), "");
        vec![v1["last_id"].as_i64().unwrap(), a["last_id"].as_i64().unwrap()]
    };
    let body = |v: serde_json::Value| v.to_string();
    let (s, v, _) = w.call("POST", "messages/ack", Some(&basic("bob@relay.test")), &body(json!({"ids": [ids[1]]})));
    assert_eq!((s, v["error_code"].as_str()), (404, Some("550 5.1.0")), "alice's message is not bob's: {v}");
    assert_eq!(w.call("GET", "messages", Some(&basic("alice@relay.test")), "").1["count"], 1);
    let (s, v, _) = w.call("POST", "messages/ack", Some(&basic("bob@relay.test")), &body(json!({"up_to_id": ids[0]})));
    assert_eq!((s, v["removed"].as_u64()), (200, Some(1)), "{v}");
    let (_, v, _) = w.call("GET", "messages", Some(&basic("bob@relay.test")), "");
    assert_eq!(v["count"], 1);
    assert_ne!(v["messages"][0], first);
}

#[test]
fn storage_failures_are_temporary_and_say_so() {
    let w = World::new();
    w.register("alice");
    w.register("bob");
    w.stores.mail.failing.set(true);
    let (s, v, _) = w.send("alice@relay.test", "bob@relay.test", "x");
    assert_eq!((s, v["storage"].as_str(), v["error_code"].as_str()), (503, Some("unavailable"), Some("451 4.3.0")));
    w.stores.mail.failing.set(false);
    w.stores.agents.failing.set(true);
    let body = json!({"agent_id": "carol", "password": "pw"}).to_string();
    let (s, v, _) = w.call("POST", "register", None, &body);
    assert_eq!((s, v["storage"].as_str()), (503, Some("unavailable")));
}

#[test]
fn a_temporary_ats_failure_is_counted_as_such() {
    let w = World::new();
    w.register("alice");
    w.net.failing.borrow_mut().push("ats._atp.peer.test".into());
    let mut m = Message::parse(
        json!({"from": "zed@peer.test", "to": "alice@relay.test", "timestamp": w.now(), "nonce": "n-ats",
               "type": "message", "payload": {}})
        .to_string()
        .as_bytes(),
    )
    .unwrap();
    sign_message(&mut m, &peer_key(), "default", "peer.test", w.now()).unwrap();
    let (s, v, _) = w.call("POST", "message", None, &m.to_json());
    assert_eq!((s, v["error_code"].as_str()), (451, Some("451 4.7.26")), "{v}");
    let stats = w.call("GET", "stats", Some("Bearer tok"), "").1;
    assert_eq!(
        (stats["security"]["ats_temperror"].as_u64(), stats["security"]["ats_fail"].as_u64()),
        (Some(1), Some(0))
    );
}
