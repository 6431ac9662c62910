//! wasm-bindgen tests of the npm package's client and DNS bindings (`AtpClient`, `resolveAtp`,
//! `dohQuery`, `verifyMessage` with DNS, `evaluateAts`, `dnsRecords`), run under Node and in headless
//! Chromium like tests/web.rs. The network is a fake `fetch` (a JavaScript ATP server in memory,
//! and a DoH server answering real DNS wire format built with hickory-proto), so the tests need
//! no server; tests/npm runs the packed package against real atp-native servers.
#![cfg(target_arch = "wasm32")]

use atp_wasm::js::{self, client::AtpClient, dns};
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::svcb::{Alpn, SvcParamKey, SvcParamValue, SVCB};
use hickory_proto::rr::rdata::{A, TXT};
use hickory_proto::rr::{Name, RData, Record};
use js_sys::{Array, Function, Object, Promise, Reflect, Uint8Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::wasm_bindgen_test;

#[wasm_bindgen(inline_js = r#"
const enc = (s) => new TextEncoder().encode(s);
const reply = (status, body, type = 'application/json') => ({
  status,
  headers: { get: (n) => (n.toLowerCase() === 'content-type' ? type : null) },
  arrayBuffer: async () => enc(typeof body === 'string' ? body : JSON.stringify(body)).buffer,
});
// An ATP server in memory with the reference's routes and JSON shapes (docs/protocol.md §6).
export function fakeServer(domain) {
  const agents = new Map();
  const inbox = [];
  const calls = [];
  let nextId = 1;
  const fetch = async (url, init) => {
    calls.push(url);
    const u = new URL(url);
    const route = u.pathname.replace('/.well-known/atp/v1/', '');
    const body = init.body ? JSON.parse(new TextDecoder().decode(init.body)) : null;
    const who = () => {
      const h = init.headers.authorization;
      if (!h || !h.startsWith('Basic ')) return null;
      const text = atob(h.slice(6));
      const i = text.indexOf(':');
      const id = text.slice(0, i);
      return agents.get(id) === text.slice(i + 1) ? id : null;
    };
    if (route === 'health') return reply(200, { status: 'healthy', domain, version: 'fake' });
    if (route === 'capabilities')
      return reply(200, { version: '1.0', capabilities: ['message'], protocols: ['atp/1'], max_payload_size: 1048576 });
    if (route === 'register' && init.method === 'POST') {
      const id = body.agent_id.includes('@') ? body.agent_id.toLowerCase() : `${body.agent_id}@${domain}`;
      if (agents.has(id)) return reply(409, { error: `Agent ${id} already registered`, error_code: '550 5.1.6' });
      agents.set(id, body.password);
      return reply(201, { status: 'registered', agent_id: id });
    }
    if (route === 'message' && init.method === 'POST') {
      if (init.headers['content-type'] !== 'application/atp+json') return reply(415, 'bad type', 'text/plain');
      const id = who();
      if (!id) return reply(401, { error: 'Credential verification failed', error_code: '535 5.7.8' });
      inbox.push({ id: nextId++, text: new TextDecoder().decode(init.body), to: body.to });
      return reply(202, { status: 'accepted', nonce: body.nonce, timestamp: 1 });
    }
    if (route === 'messages') {
      const id = who();
      if (!id) return reply(401, { error: 'Credential required', error_code: '535 5.7.8' });
      const after = Number(u.searchParams.get('after_id') ?? 0);
      const limit = Number(u.searchParams.get('limit') ?? 50);
      const rows = inbox.filter((r) => r.to === id && r.id > after).slice(0, limit);
      // Spliced like atp-native does: the stored texts, numbers kept exactly.
      const last = rows.length ? `,"last_id":${rows[rows.length - 1].id}` : '';
      return reply(200, `{"messages":[${rows.map((r) => r.text).join(',')}],"count":${rows.length}${last}}`);
    }
    return reply(404, 'Not Found', 'text/plain');
  };
  return { fetch, calls };
}
export function failingFetch() {
  return async () => {
    throw new TypeError('fetch failed', { cause: new Error('connect ECONNREFUSED 127.0.0.1:1') });
  };
}
// A DNS lookup function over a table { "name TYPE": [records] }; names listed in `broken` fail.
export function tableLookup(table, broken = []) {
  const calls = [];
  const lookup = async (name, type) => {
    calls.push(`${name} ${type}`);
    if (broken.includes(name)) throw new Error('SERVFAIL');
    return table[`${name} ${type}`] ?? [];
  };
  return { lookup, calls };
}
export function errorFields(e) {
  return [e instanceof Error, e.name, e.kind, e.status, e.code, e.message];
}
"#)]
extern "C" {
    #[wasm_bindgen(js_name = fakeServer)]
    fn fake_server(domain: &str) -> JsValue;
    #[wasm_bindgen(js_name = failingFetch)]
    fn failing_fetch() -> Function;
    #[wasm_bindgen(js_name = tableLookup)]
    fn table_lookup(table: &JsValue, broken: &JsValue) -> JsValue;
    #[wasm_bindgen(js_name = errorFields)]
    fn error_fields(e: &JsValue) -> Array;
}

fn get(obj: &JsValue, key: &str) -> JsValue {
    Reflect::get(obj, &JsValue::from_str(key)).unwrap()
}

fn obj(pairs: &[(&str, JsValue)]) -> JsValue {
    let o = Object::new();
    for (k, v) in pairs {
        Reflect::set(&o, &JsValue::from_str(k), v).unwrap();
    }
    o.into()
}

fn s(v: &str) -> JsValue {
    JsValue::from_str(v)
}

fn strings(v: &JsValue) -> Vec<String> {
    Array::from(v).iter().map(|x| x.as_string().unwrap()).collect()
}

async fn ok(p: Promise) -> JsValue {
    JsFuture::from(p).await.expect("the promise should resolve")
}

/// `[kind, status, code, message]` of the AtpError a promise rejects with.
async fn rejected(p: Promise) -> (String, f64, Option<String>, String) {
    let e = JsFuture::from(p).await.expect_err("the promise should reject");
    fields(&e)
}

fn fields(e: &JsValue) -> (String, f64, Option<String>, String) {
    let f = error_fields(e);
    assert_eq!(f.get(0).as_bool(), Some(true), "an Error");
    assert_eq!(f.get(1).as_string().as_deref(), Some("AtpError"));
    (f.get(2).as_string().unwrap(), f.get(3).as_f64().unwrap(), f.get(4).as_string(), f.get(5).as_string().unwrap())
}

fn client(server: &JsValue, agent: &str, password: &str) -> AtpClient {
    AtpClient::new(obj(&[
        ("agentId", s(agent)),
        ("password", s(password)),
        ("server", s("alpha.test")),
        ("fetch", get(server, "fetch")),
    ]))
    .unwrap()
}

#[wasm_bindgen_test]
async fn client_registers_sends_and_receives_with_a_cursor() {
    let server = fake_server("alpha.test");
    let alice = client(&server, "alice", "pw-a");
    let bob = client(&server, "Bob@Alpha.test", "pw:b");
    assert_eq!(alice.server(), "https://alpha.test:7443");
    assert_eq!(alice.agent_id(), None, "a short name needs the domain first");
    assert_eq!(bob.agent_id().as_deref(), Some("bob@alpha.test"));

    let reg = ok(alice.register()).await;
    assert_eq!(get(&reg, "agent_id").as_string().unwrap(), "alice@alpha.test");
    assert_eq!(alice.agent_id().as_deref(), Some("alice@alpha.test"));
    ok(bob.register()).await;
    let (kind, status, code, msg) = rejected(bob.register()).await;
    assert_eq!((kind.as_str(), status, code.as_deref()), ("http", 409.0, Some("550 5.1.6")));
    assert_eq!(msg, "Agent bob@alpha.test already registered");

    let health = ok(bob.health()).await;
    assert_eq!(get(&health, "domain").as_string().unwrap(), "alpha.test");
    let caps = ok(bob.capabilities()).await;
    assert_eq!(get(&caps, "max_payload_size").as_f64(), Some(1048576.0));

    let sent = ok(alice
        .send("BOB", obj(&[("subject", s("hi")), ("body", s("Hello Bob")), ("cc", Array::of1(&s("carol")).into())]))
        .unwrap())
    .await;
    assert_eq!(get(&sent, "status").as_string().unwrap(), "accepted");
    let nonce = get(&sent, "nonce").as_string().unwrap();
    assert!(nonce.starts_with("msg-") && nonce.len() == 36);
    let message = get(&sent, "message");
    assert_eq!(get(&message, "to").as_string().unwrap(), "bob@alpha.test");
    assert_eq!(strings(&get(&message, "cc")), ["carol@alpha.test"]);
    assert!((get(&sent, "timestamp").as_f64().unwrap() - js_sys::Date::now() / 1000.0).abs() < 60.0);
    // A payload is passed through as it is.
    let payload = js_sys::JSON::parse(r#"{"task":"sum","args":[1,2.5]}"#).unwrap();
    ok(bob.send("alice@alpha.test", obj(&[("payload", payload)])).unwrap()).await;
    ok(bob.send("alice", JsValue::UNDEFINED).unwrap()).await;

    let mail = ok(bob.recv(JsValue::UNDEFINED).unwrap()).await;
    let mail = Array::from(&mail);
    assert_eq!(mail.length(), 1);
    let m = mail.get(0);
    assert_eq!(get(&m, "from").as_string().unwrap(), "alice@alpha.test");
    assert_eq!(get(&get(&m, "payload"), "body").as_string().unwrap(), "Hello Bob");
    assert_eq!(get(&m, "nonce").as_string().unwrap(), nonce);
    assert_eq!(bob.cursor(), 1.0);
    assert_eq!(Array::from(&ok(bob.recv(JsValue::UNDEFINED).unwrap()).await).length(), 0);

    let alice_mail = Array::from(&ok(alice.recv(obj(&[("limit", JsValue::from(1))])).unwrap()).await);
    assert_eq!(alice_mail.length(), 1);
    assert_eq!(get(&get(&alice_mail.get(0), "payload"), "task").as_string().unwrap(), "sum");
    assert_eq!(alice.cursor(), 2.0);
    let raw = ok(alice.recv_raw(JsValue::UNDEFINED).unwrap()).await;
    let raw = strings(&raw);
    assert_eq!(raw.len(), 1);
    assert!(raw[0].contains(r#""payload":{}"#), "{}", raw[0]);
    // Re-reading from the start.
    let again = Array::from(&ok(bob.recv(obj(&[("after", JsValue::from(0))])).unwrap()).await);
    assert_eq!(again.length(), 1);
    let mut b = bob;
    b.set_cursor(0.0);
    assert_eq!(Array::from(&ok(b.recv(JsValue::UNDEFINED).unwrap()).await).length(), 1);

    let calls = strings(&get(&server, "calls"));
    // alice learnt the domain from register, bob's id was complete: only the explicit health call.
    assert_eq!(calls.iter().filter(|c| c.ends_with("/health")).count(), 1, "{calls:?}");
    assert!(
        calls.iter().any(|c| c == "https://alpha.test:7443/.well-known/atp/v1/messages?after_id=0&limit=1"),
        "{calls:?}"
    );
    assert!(calls.iter().any(|c| c == "https://alpha.test:7443/.well-known/atp/v1/messages?after_id=2"), "{calls:?}");
}

#[wasm_bindgen_test]
async fn client_errors_are_atp_errors() {
    let server = fake_server("alpha.test");
    let alice = client(&server, "alice", "pw-a");
    ok(alice.register()).await;
    let wrong = client(&server, "alice", "nope");
    let (kind, status, code, msg) = rejected(wrong.send("bob", JsValue::UNDEFINED).unwrap()).await;
    assert_eq!((kind.as_str(), status, code.as_deref()), ("http", 401.0, Some("535 5.7.8")));
    assert_eq!(msg, "Credential verification failed");
    let (kind, status, _, msg) = rejected(wrong.recv(JsValue::UNDEFINED).unwrap()).await;
    assert_eq!((kind.as_str(), status, msg.as_str()), ("http", 401.0, "Credential required"));

    let down = AtpClient::new(obj(&[("server", s("127.0.0.1:1")), ("fetch", failing_fetch().into())])).unwrap();
    let (kind, status, code, msg) = rejected(down.health()).await;
    assert_eq!((kind.as_str(), status, code), ("network", 0.0, None));
    assert_eq!(msg, "fetch failed: connect ECONNREFUSED 127.0.0.1:1");
    let insecure = AtpClient::new(obj(&[
        ("server", s("127.0.0.1:1")),
        ("verifyTls", JsValue::FALSE),
        ("fetch", failing_fetch().into()),
    ]))
    .unwrap();
    let (_, _, _, msg) = rejected(insecure.capabilities()).await;
    assert!(msg.contains("NODE_TLS_REJECT_UNAUTHORIZED=0"), "{msg}");

    let no_password = AtpClient::new(obj(&[("server", s("a.test")), ("agentId", s("a@a.test"))])).unwrap();
    let (kind, _, _, msg) = rejected(no_password.send("b@a.test", JsValue::UNDEFINED).unwrap()).await;
    assert_eq!((kind.as_str(), msg.as_str()), ("invalid", "no password given"));
    for bad in [
        obj(&[("server", s("ftp://a.test"))]),
        obj(&[("server", s("a.test")), ("agentId", s("a b"))]),
        obj(&[("agentId", s("a"))]),
        obj(&[("server", JsValue::from(5))]),
        obj(&[("server", s("a.test")), ("fetch", s("not a function"))]),
        JsValue::UNDEFINED,
    ] {
        let e = AtpClient::new(bad).err().expect("the constructor should throw");
        assert_eq!(fields(&e).0, "invalid");
    }
    let e = alice.send("bob", obj(&[("payload", JsValue::from(1)), ("body", s("x"))])).unwrap();
    assert_eq!(rejected(e).await.0, "invalid");
    assert_eq!(fields(&alice.recv(obj(&[("limit", JsValue::from(-1))])).err().unwrap()).0, "invalid");
    assert_eq!(fields(&alice.recv(obj(&[("wait", s("soon"))])).err().unwrap()).0, "invalid");
}

#[wasm_bindgen_test]
async fn recv_waits_by_polling() {
    let server = fake_server("alpha.test");
    let alice = client(&server, "alice", "pw-a");
    ok(alice.register()).await;
    let started = js_sys::Date::now();
    let got = ok(alice.recv(obj(&[("wait", JsValue::from(0.12)), ("pollInterval", JsValue::from(50))])).unwrap()).await;
    let waited = js_sys::Date::now() - started;
    assert_eq!(Array::from(&got).length(), 0);
    assert!((100.0..5000.0).contains(&waited), "waited {waited} ms");
    let polls = strings(&get(&server, "calls")).iter().filter(|c| c.contains("/messages?")).count();
    assert_eq!(polls, 4, "at 0, 50, 100 and 120 ms");
}

// ---------------------------------------------------------------------------------------------
// DNS

fn dns_name(s: &str) -> Name {
    Name::from_ascii(s).unwrap()
}

/// A DoH server answering from a table with real wire-format responses (hickory-proto).
fn doh_fetch(zone: Vec<(&'static str, RData)>) -> Function {
    let handler = move |url: String, init: JsValue| -> Promise {
        let body = get(&init, "body");
        let wire = if body.is_undefined() {
            use base64::Engine;
            let q = url.split_once("?dns=").unwrap().1;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(q).unwrap()
        } else {
            Uint8Array::new(&body).to_vec()
        };
        let q = Message::from_vec(&wire).unwrap();
        let (qname, qtype) = (q.queries[0].name().clone(), q.queries[0].query_type());
        let mut m = Message::new(0, MessageType::Response, OpCode::Query);
        m.metadata.response_code = ResponseCode::NoError;
        m.add_query(Query::query(qname.clone(), qtype));
        for (owner, data) in &zone {
            if dns_name(owner) == qname && data.record_type() == qtype {
                m.add_answer(Record::from_rdata(qname.clone(), 60, data.clone()));
            }
        }
        let bytes = Uint8Array::from(m.to_vec().unwrap().as_slice());
        let resp = obj(&[("status", JsValue::from(200))]);
        let buffer = bytes.buffer();
        let ab = Closure::once_into_js(move || Promise::resolve(&buffer));
        Reflect::set(&resp, &s("arrayBuffer"), &ab).unwrap();
        Promise::resolve(&resp)
    };
    Closure::<dyn Fn(String, JsValue) -> Promise>::new(handler).into_js_value().unchecked_into()
}

fn atp_svcb(target: &str, port: u16) -> RData {
    RData::SVCB(SVCB::new(
        1,
        dns_name(target),
        vec![
            (SvcParamKey::Alpn, SvcParamValue::Alpn(Alpn(vec!["atp/1".into()]))),
            (SvcParamKey::Port, SvcParamValue::Port(port)),
        ],
    ))
}

fn txt(text: &str) -> RData {
    RData::TXT(TXT::new(vec![text.into()]))
}

fn signed_message() -> (String, String, String) {
    let key = js::generate_domain_key().unwrap();
    let pem = get(&key, "privateKeyPem").as_string().unwrap();
    let public = get(&key, "publicKey").as_string().unwrap();
    let msg = format!(
        r#"{{"from":"alice@alpha.test","to":"bob@beta.test","timestamp":{},"nonce":"msg-dns-1","type":"message","payload":{{"n":12345678901234567890}}}}"#,
        (js_sys::Date::now() / 1000.0) as i64
    );
    (js::sign_message(&msg, &pem, "default", "alpha.test").unwrap(), public, pem)
}

#[wasm_bindgen_test]
async fn resolve_atp_over_doh_get_and_post() {
    let (_, public, _) = signed_message();
    let fetch = doh_fetch(vec![
        ("_atp.alpha.test.", atp_svcb("atp.alpha.test.", 17443)),
        ("ats._atp.alpha.test.", txt("v=spf1 -all")),
        ("ats._atp.alpha.test.", txt("v=atp1 allow=ip:192.0.2.1 deny=all")),
        ("default.atk._atp.alpha.test.", txt(&format!("v=atp1 k=ed25519 p={public}"))),
        ("atp.alpha.test.", RData::A(A::new(192, 0, 2, 1))),
    ]);
    for method in ["GET", "POST"] {
        let opts = obj(&[
            ("dohUrl", s("https://dns.test/dns-query")),
            ("dohMethod", s(method)),
            ("fetch", fetch.clone().into()),
        ]);
        let d = ok(dns::resolve_atp("Alpha.Test", opts.clone()).unwrap()).await;
        assert_eq!(get(&d, "domain").as_string().unwrap(), "alpha.test");
        let eps = Array::from(&get(&d, "endpoints"));
        assert_eq!(eps.length(), 1);
        assert_eq!(get(&eps.get(0), "url").as_string().unwrap(), "https://atp.alpha.test:17443");
        assert_eq!(strings(&get(&eps.get(0), "alpn")), ["atp/1"]);
        assert_eq!(get(&d, "ats").as_string().unwrap(), "v=atp1 allow=ip:192.0.2.1 deny=all");
        let keys = Array::from(&get(&d, "keys"));
        assert_eq!(keys.length(), 1);
        assert_eq!(get(&keys.get(0), "publicKey").as_string().unwrap(), public);
        assert_eq!(get(&keys.get(0), "keyId").as_string().unwrap(), "default.atk._atp.alpha.test");

        let svcb = ok(dns::doh_query("_atp.alpha.test", "SVCB", opts.clone()).unwrap()).await;
        assert_eq!(strings(&svcb), [r#"1 atp.alpha.test. alpn="atp/1" port=17443"#]);
        let a = ok(dns::doh_query("atp.alpha.test", "A", opts.clone()).unwrap()).await;
        assert_eq!(strings(&a), ["192.0.2.1"]);
        assert!(strings(&ok(dns::doh_query("none.test", "TXT", opts.clone()).unwrap()).await).is_empty());

        // Nothing published: no endpoints, no records.
        let none = ok(dns::resolve_atp("none.test", opts.clone()).unwrap()).await;
        assert_eq!(Array::from(&get(&none, "endpoints")).length(), 0);
        assert!(get(&none, "ats").is_null());
        // End to end: a signature checked against the key found over DoH.
        let (signed, _, _) = signed_message();
        let wrong = JsFuture::from(Promise::from(js::verify_message(s(&signed), opts.clone()).unwrap())).await;
        assert_eq!(fields(&wrong.unwrap_err()).2.as_deref(), Some("550 5.7.28"), "another key is published");
    }
    let bad = obj(&[("dohUrl", s("dns.test")), ("fetch", fetch.into())]);
    assert_eq!(fields(&dns::resolve_atp("a.test", bad).err().unwrap()).0, "invalid");
    let down = obj(&[("dohUrl", s("https://dns.test/q")), ("fetch", failing_fetch().into())]);
    let (kind, _, _, msg) = rejected(dns::resolve_atp("a.test", down).unwrap()).await;
    assert_eq!(kind, "dns");
    assert!(msg.contains("DoH request failed: fetch failed"), "{msg}");
}

#[wasm_bindgen_test]
async fn verify_message_with_a_lookup_function() {
    let (signed, public, _) = signed_message();
    assert_eq!(js::verify_message(s(&signed), s(&public)).unwrap(), JsValue::TRUE);
    let as_object = js_sys::JSON::parse(&signed).unwrap();
    // (An object loses the big integer's digits through JSON.stringify: the signature no longer matches.)
    let e = js::verify_message(as_object, s(&public)).err().unwrap();
    assert_eq!(fields(&e).2.as_deref(), Some("550 5.7.28"));

    let table = js_sys::JSON::parse(&format!(
        r#"{{"default.atk._atp.alpha.test TXT": ["v=spf1", "v=atp1 k=ed25519 p={public}"]}}"#
    ))
    .unwrap();
    let lookup = table_lookup(&table, &Array::new());
    let verified = ok(Promise::from(js::verify_message(s(&signed), get(&lookup, "lookup")).unwrap())).await;
    assert_eq!(verified, JsValue::TRUE);
    assert_eq!(strings(&get(&lookup, "calls")), ["default.atk._atp.alpha.test TXT"]);
    let via_options = obj(&[("lookup", get(&lookup, "lookup"))]);
    assert_eq!(ok(Promise::from(js::verify_message(s(&signed), via_options).unwrap())).await, JsValue::TRUE);

    let tampered = signed.replace("msg-dns-1", "msg-dns-2");
    let p = Promise::from(js::verify_message(s(&tampered), get(&lookup, "lookup")).unwrap());
    let (kind, status, code, msg) = rejected(p).await;
    assert_eq!(
        (kind.as_str(), status, code.as_deref(), msg.as_str()),
        ("verify", 403.0, Some("550 5.7.28"), "Signature verification failed")
    );
    let empty = table_lookup(&Object::new(), &Array::new());
    let (_, status, code, _) =
        rejected(Promise::from(js::verify_message(s(&signed), get(&empty, "lookup")).unwrap())).await;
    assert_eq!((status, code.as_deref()), (403.0, Some("550 5.7.29")));
    let broken = table_lookup(&Object::new(), &Array::of1(&s("default.atk._atp.alpha.test")));
    let (_, status, code, msg) =
        rejected(Promise::from(js::verify_message(s(&signed), get(&broken, "lookup")).unwrap())).await;
    assert_eq!((status, code.as_deref()), (451.0, Some("451 4.7.29")));
    assert!(msg.contains("SERVFAIL"), "{msg}");
    let e = js::verify_message(s(&signed), JsValue::from(5)).err().unwrap();
    assert_eq!(fields(&e).0, "invalid");
}

#[wasm_bindgen_test]
async fn evaluate_ats_and_lookup_resolution() {
    let table = js_sys::JSON::parse(
        r#"{"mx.alpha.test A": ["192.0.2.9"], "mx.alpha.test AAAA": ["2001:db8::9"],
            "_atp.beta.test SVCB": ["0 atp.host.test."], "atp.host.test SVCB": ["1 . port=8443"],
            "_atp._tcp.gamma.test SRV": ["1 0 0 mx.gamma.test."]}"#,
    )
    .unwrap();
    let lookup = get(&table_lookup(&table, &Array::new()), "lookup");
    let eval = |record: &str, ip: &str, dns: JsValue| js::evaluate_ats(record, ip, dns).unwrap();
    let rec = "v=atp1 deny=ip:10.0.0.0/8 allow=domain:mx.alpha.test deny=all";
    let r = ok(eval(rec, "192.0.2.9", lookup.clone())).await;
    assert_eq!(
        (get(&r, "result").as_string().unwrap(), get(&r, "directive").as_string().unwrap()),
        ("pass".into(), "allow=domain:mx.alpha.test".into())
    );
    let r = ok(eval(rec, "2001:db8::9", lookup.clone())).await;
    assert_eq!(get(&r, "result").as_string().unwrap(), "pass");
    let r = ok(eval(rec, "10.1.2.3", JsValue::UNDEFINED)).await;
    assert_eq!(get(&r, "directive").as_string().unwrap(), "deny=ip:10.0.0.0/8");
    let r = ok(eval(rec, "192.0.2.1", JsValue::UNDEFINED)).await;
    assert_eq!(get(&r, "result").as_string().unwrap(), "temperror", "domain: needs DNS");
    let r = ok(eval("v=atp1 allow=ip:192.0.2.1", "192.0.2.2", JsValue::UNDEFINED)).await;
    assert_eq!(get(&r, "result").as_string().unwrap(), "neutral");
    let r = ok(eval("v=spf1 -all", "192.0.2.2", JsValue::UNDEFINED)).await;
    assert_eq!(get(&r, "result").as_string().unwrap(), "permerror");
    assert!(!get(&r, "reason").as_string().unwrap().is_empty());
    assert_eq!(fields(&js::evaluate_ats(rec, "nope", JsValue::UNDEFINED).err().unwrap()).0, "invalid");

    // Discovery through a lookup function: alias chains, SVCB then SRV.
    let opts = obj(&[("lookup", lookup)]);
    let d = ok(dns::resolve_atp("beta.test", opts.clone()).unwrap()).await;
    assert_eq!(
        get(&Array::from(&get(&d, "endpoints")).get(0), "url").as_string().unwrap(),
        "https://atp.host.test:8443"
    );
    let d = ok(dns::resolve_atp("gamma.test", opts).unwrap()).await;
    assert_eq!(
        get(&Array::from(&get(&d, "endpoints")).get(0), "url").as_string().unwrap(),
        "https://mx.gamma.test:7443"
    );
}

#[wasm_bindgen_test]
fn dns_records_like_atp_dns_generate() {
    let key = js::generate_domain_key().unwrap();
    let pem = get(&key, "privateKeyPem").as_string().unwrap();
    let public = get(&key, "publicKey").as_string().unwrap();
    let lines = js::dns_records("Alpha.test", "192.0.2.7", &pem, obj(&[("port", JsValue::from(17443))])).unwrap();
    assert_eq!(
        lines,
        [
            r#"_atp.alpha.test. 3600 IN SVCB 1 atp.alpha.test. alpn="atp/1" port=17443"#.to_string(),
            "atp.alpha.test. 3600 IN A 192.0.2.7".into(),
            r#"ats._atp.alpha.test. 3600 IN TXT "v=atp1 allow=ip:192.0.2.7 deny=all""#.into(),
            format!(r#"default.atk._atp.alpha.test. 3600 IN TXT "v=atp1 k=ed25519 p={public}""#),
        ]
    );
    let by_public = js::dns_records("alpha.test", "2001:db8::7", &public, obj(&[("selector", s("k2"))])).unwrap();
    assert!(by_public[3].starts_with("k2.atk._atp.alpha.test. "));
    assert_eq!(by_public[1], "atp.alpha.test. 3600 IN AAAA 2001:db8::7");
    for (d, ip, k, o) in [
        ("bad domain", "192.0.2.7", public.as_str(), JsValue::UNDEFINED),
        ("a.test", "999.1.1.1", public.as_str(), JsValue::UNDEFINED),
        ("a.test", "192.0.2.7", "short", JsValue::UNDEFINED),
        ("a.test", "192.0.2.7", public.as_str(), obj(&[("port", JsValue::from(0))])),
        ("a.test", "192.0.2.7", public.as_str(), obj(&[("selector", s("a.b"))])),
    ] {
        assert_eq!(fields(&js::dns_records(d, ip, k, o).unwrap_err()).0, "invalid");
    }
}
