//! The worker end to end, natively: the core's relay over the worker's store, its delivery queue
//! and DoH cache, with the domain's object over a real SQLite file (`atp_worker::local`), a
//! hand-moved clock, and a fake network that answers DoH queries from a zone table (real DNS wire
//! format, built by hickory-proto) and transfers with a scripted peer. The same code runs in
//! workerd (tests/worker/run.sh). Native only: the object runs on a SQLite file.
#![cfg(not(target_arch = "wasm32"))]

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use atp_wasm::http::{HttpError, HttpRequest, HttpResponse, HttpTransport};
use atp_wasm::keys::DomainKey;
use atp_wasm::message::Message;
use atp_wasm::records::atk::AtkRecord;
use atp_wasm::relay::store::MessageStore;
use atp_wasm::relay::stream;
use atp_wasm::relay::ApiRequest;
use atp_wasm::sign::{sign_message, verify_message};
use atp_worker::clock::Clock;
use atp_worker::config::{seed_b64, Config};
use atp_worker::delivery::Processed;
use atp_worker::local::LocalObject;
use atp_worker::object::Ack;
use atp_worker::sql::{Sql, Value as SqlValue};
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
    object: Rc<LocalObject>,
    _dir: tempfile::TempDir,
    vars: Vec<(&'static str, String)>,
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
        let dir = tempfile::tempdir().unwrap();
        let object = LocalObject::open(&dir.path().join("relay.test.sqlite")).unwrap();
        World {
            net,
            iso: Rc::new(Isolate::new(T0 * 1000)),
            time,
            object,
            _dir: dir,
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

    /// A worker for one invocation (fresh subrequest budget, same object and isolate).
    fn worker(&self) -> Worker<Rc<LocalObject>, Transport> {
        let vars = self.vars.clone();
        let cfg = Config::from_lookup(|k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone())).unwrap();
        Worker::new(
            cfg,
            self.object.clone(),
            Transport(self.net.clone()),
            Clock::manual(self.time.clone()),
            self.iso.clone(),
        )
    }

    /// A query on the object's database.
    fn sql(&self, q: &str) -> Vec<Vec<SqlValue>> {
        self.object.domain.sql.exec(q, &[]).unwrap()
    }

    fn now(&self) -> i64 {
        self.time.get() / 1000
    }

    fn advance(&self, secs: i64) {
        self.time.set(self.time.get() + secs * 1000);
    }

    fn request(&self, method: &str, path_query: &str, auth: Option<&str>, body: &str) -> ApiRequest {
        let (path, query) = path_query.split_once('?').unwrap_or((path_query, ""));
        let mut headers = vec![("content-type".to_owned(), "application/json".to_owned())];
        if let Some(a) = auth {
            headers.push(("authorization".into(), a.into()));
        }
        ApiRequest {
            method: method.into(),
            path: format!("/.well-known/atp/v1/{path}"),
            query: query.into(),
            headers,
            body: body.as_bytes().to_vec(),
            source_ip: Some("192.0.2.7".parse().unwrap()),
        }
    }

    fn call(&self, method: &str, path_query: &str, auth: Option<&str>, body: &str) -> (u16, Value, Option<Processed>) {
        let req = self.request(method, path_query, auth, body);
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

    /// Outbound messages not settled yet, as `(nonce, due)`.
    fn waiting(&self) -> Vec<(String, i64)> {
        self.sql("SELECT nonce, next_attempt_at FROM messages WHERE status IN ('queued', 'failed', 'delivering') ORDER BY id")
            .into_iter()
            .map(|r| (r[0].text(), r[1].int()))
            .collect()
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
    assert!(w.waiting().is_empty());
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
    assert_eq!(w.waiting(), vec![(nonce.clone(), next)]);
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
    assert!(w.waiting().is_empty());
    assert_eq!(w.inspect(&nonce)["attempts"], 2);
    assert_eq!(w.inspect(v2["nonce"].as_str().unwrap())["status"], "delivered");
    assert_eq!(w.net.received.borrow().len(), 2);
    assert!(w.sql("SELECT domain FROM domain_backoff").is_empty(), "backoff reset");
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
    assert!(w.waiting().is_empty());

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
    assert_eq!(w.waiting().len(), 5);
    w.net.peer.set(Peer::Up);
    w.advance(200);
    // DNS answers expired: the first attempt needs DoH lookups, then the budget runs out. Its
    // answer ends the domain's backoff and wakes the others, which wait for subrequests.
    w.set("SUBREQUEST_BUDGET", "5");
    let r = block_on(w.worker().sweep()).unwrap();
    assert!(r.due == 5 && r.delivered >= 1 && r.not_attempted >= 1, "{r:?}");
    assert_eq!(r.delivered + r.not_attempted, 5, "{r:?}");
    assert_eq!(w.waiting().len(), 5 - r.delivered, "the rest stay queued, untouched");
    assert!(w.sql("SELECT domain FROM domain_backoff").is_empty());
    w.set("SUBREQUEST_BUDGET", "45");
    w.set("SWEEP_BATCH", "1");
    let left = w.waiting().len();
    let r = block_on(w.worker().sweep()).unwrap();
    assert_eq!((r.due, r.delivered), (1, 1), "{r:?}");
    assert_eq!(w.waiting().len(), left - 1);
    w.set("SWEEP_BATCH", "20");
    let r = block_on(w.worker().sweep()).unwrap();
    assert_eq!((r.due, r.delivered), (left - 1, left - 1), "{r:?}");
    assert!(w.waiting().is_empty());
    assert_eq!(w.net.received.borrow().len(), 5);
}

#[test]
fn a_domain_that_answers_again_wakes_its_waiting_messages_at_once() {
    let w = World::new();
    w.register("alice");
    w.net.peer.set(Peer::Down);
    let (_, v, _) = w.send("alice@relay.test", "zed@peer.test", "first");
    let first = v["nonce"].as_str().unwrap().to_owned();
    // Its own next attempt is far off (as after many failures); the domain's backoff ends sooner.
    w.object.domain.sql.exec("UPDATE messages SET next_attempt_at = next_attempt_at + 1000", &[]).unwrap();
    let due = w.waiting()[0].1;
    w.advance(11);
    assert_eq!(block_on(w.worker().sweep()).unwrap().due, 0, "not due: due at {due}, now {}", w.now());
    // The peer is back: a new message is attempted at once, and its answer wakes the first.
    w.net.peer.set(Peer::Up);
    let (_, _, follow) = w.send("alice@relay.test", "zed@peer.test", "second");
    assert_eq!(follow, Some(Processed::Delivered));
    assert_eq!(w.inspect(&first)["status"], "delivered", "woken and delivered before its own due time");
    assert!(w.waiting().is_empty());
    assert_eq!(w.net.received.borrow().len(), 2);
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

/// Push and acknowledgement on the worker (docs/protocol.md §6.5): the stream's backlog, then (the
/// local object does not wait) a heartbeat, then the next message; its place among the agent's
/// streams; a long poll with mail answers at once; acknowledgement removes the agent's own
/// messages only.
#[test]
fn stream_long_poll_and_ack() {
    let w = World::new();
    w.register("alice");
    w.register("bob");
    assert_eq!(w.call("GET", "messages/stream", None, "").0, 401);
    let (s, v, _) = w.call("GET", "messages/stream", Some(&basic("bob@relay.test")), "");
    assert_eq!(s, 200, "{v}");
    w.send("alice@relay.test", "bob@relay.test", "one");
    w.send("alice@relay.test", "bob@relay.test", "two");
    w.send("bob@relay.test", "alice@relay.test", "for alice");
    let worker = w.worker();
    let mut req = w.request("GET", "messages/stream", Some(&basic("bob@relay.test")), "");
    req.headers.push(("last-event-id".into(), "0".into()));
    let handled = block_on(worker.handle(&req));
    assert_eq!(handled.response.content_type.as_deref(), Some(stream::CONTENT_TYPE));
    let mut events = worker.inbox_stream(handled.stream.expect("an accepted stream"));
    assert_eq!(w.iso.relay.streams.open("bob@relay.test"), 1, "the stream holds a place");
    let mut next = || block_on(events.next(&worker.store)).expect("a chunk");
    assert!(next().starts_with(": atp inbox stream"));
    let (one, two) = (next(), next());
    assert!(one.contains("\"one\"") && two.contains("\"two\"") && one.starts_with("id: "), "{one}{two}");
    assert_eq!(next(), stream::HEARTBEAT_CHUNK, "nothing more: the wait timed out");
    w.send("alice@relay.test", "bob@relay.test", "three");
    assert!(next().contains("\"three\""));
    drop(events);
    assert_eq!(w.iso.relay.streams.open("bob@relay.test"), 0, "a dropped stream gives its place back");

    let (s, v, _) = w.call("GET", "messages?wait=30", Some(&basic("bob@relay.test")), "");
    assert_eq!((s, v["count"].as_u64()), (200, Some(3)));
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
    assert_eq!(v["count"], 2);
    assert_ne!(v["messages"][0], first);
}

/// The worker's watcher asks the object for a row after the caller's last id: woken when there is
/// one, a time-out when not (the local object does not wait), and a time-out when the object
/// cannot be reached (the worker then waits out the time itself, crate::store::ObjectWatcher).
#[test]
fn a_watch_is_woken_by_a_newer_row_only() {
    use atp_wasm::relay::stream::{InboxWatch, InboxWatcher};
    let w = World::new();
    w.register("alice");
    w.register("bob");
    let worker = w.worker();
    let mut watcher = worker.store.watch("bob@relay.test");
    let wait = std::time::Duration::from_secs(15);
    assert!(!block_on(watcher.wait(0, wait)), "an empty inbox");
    w.send("alice@relay.test", "bob@relay.test", "one");
    let last = w.recv("bob@relay.test", "")["last_id"].as_i64().unwrap();
    assert!(block_on(watcher.wait(0, wait)), "a row after 0");
    assert!(!block_on(watcher.wait(last, wait)), "nothing after the last id");
    w.object.failing.set(true);
    assert!(!block_on(watcher.wait(0, wait)), "an unreachable object: a time-out, no busy loop");
}

#[test]
fn storage_failures_are_temporary_and_say_so() {
    let w = World::new();
    w.register("alice");
    w.register("bob");
    // The credential is cached: the failure hits the submission's own storage calls.
    w.recv("alice@relay.test", "");
    w.object.failing.set(true);
    let (s, v, _) = w.send("alice@relay.test", "bob@relay.test", "x");
    assert_eq!((s, v["storage"].as_str(), v["error_code"].as_str()), (503, Some("unavailable"), Some("451 4.3.0")));
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

#[test]
fn ack_and_expire_remove_inbox_messages_and_free_the_quota() {
    let w = World::new();
    w.register("alice");
    w.register("bob");
    for i in 0..3 {
        w.send("alice@relay.test", "bob@relay.test", &format!("m{i}"));
        w.advance(10);
    }
    w.send("bob@relay.test", "alice@relay.test", "to alice");
    // Inbox ids, page by page of one (`last_id`).
    let ids_of = |agent: &str| {
        let mut ids = Vec::new();
        let mut after = 0;
        loop {
            let v = w.recv(agent, &format!("?limit=1&after_id={after}"));
            let Some(id) = v["last_id"].as_i64() else { return ids };
            ids.push(id);
            after = id;
        }
    };
    let ids = ids_of("bob@relay.test");
    let alice_id = ids_of("alice@relay.test")[0];
    let worker = w.worker();
    let usage = |agent: &str| block_on(worker.store.usage(agent)).unwrap();
    assert_eq!(usage("bob@relay.test").messages, 3);
    assert_eq!(block_on(worker.store.ack("bob@relay.test", &Ack::UpTo(ids[0]))).unwrap(), 1);
    assert_eq!(block_on(worker.store.ack("bob@relay.test", &Ack::Ids(vec![ids[1], alice_id]))).unwrap(), 1);
    assert_eq!(w.recv("bob@relay.test", "")["count"], 1);
    assert_eq!(w.recv("alice@relay.test", "")["count"], 1, "never another agent's");
    assert_eq!(usage("bob@relay.test").messages, 1);
    // Expire everything stored before the last message to alice.
    assert_eq!(block_on(worker.store.expire(w.now() - 5)).unwrap(), 1, "bob's last, stored 10 s before alice's");
    assert_eq!((usage("bob@relay.test").messages, usage("bob@relay.test").bytes), (0, 0));
    assert_eq!(w.recv("alice@relay.test", "")["count"], 1);
}

#[test]
fn counters_are_global_across_isolates() {
    let mut w = World::new();
    w.register("alice");
    w.register("bob");
    for i in 0..2 {
        assert_eq!(w.send("alice@relay.test", "bob@relay.test", &format!("m{i}")).0, 202);
    }
    // The first isolate flushes (cf.rs does so in `waitUntil`, FLUSH_DELAY after counting) …
    block_on(w.worker().flush_counters()).unwrap();
    // … and a fresh isolate, which counted nothing itself, shows the domain's totals.
    w.advance(60);
    w.iso = Rc::new(Isolate::new(w.time.get()));
    let stats = w.call("GET", "stats", Some("Bearer tok"), "").1;
    assert_eq!(
        (stats["messages"]["received"].as_u64(), stats["messages"]["delivered_local"].as_u64()),
        (Some(2), Some(2))
    );
    assert_eq!(stats["uptime"], 60, "counted from the first flush");
    let text = w.call("GET", "metrics", Some("Bearer tok"), "").1;
    let text = text.as_str().unwrap();
    assert!(text.contains("atp_messages_delivered_local_total 2\n"), "{text}");
    assert!(text.contains("atp_agents_registered_total 2\n"), "{text}");
    // Refusals are global too; a refusal counted by this isolate shows once flushed by `stats`.
    assert_eq!(w.call("GET", "stats", None, "").0, 401);
    let stats = w.call("GET", "stats", Some("Bearer tok"), "").1;
    assert_eq!(stats["rejections"]["535 5.7.8"], 1, "{stats}");
}
