//! Remote transfers (server → server) against the real binary: the matrix of docs/protocol.md §11.3,
//! with atp's fixed behaviour (docs/design.md §3). Transfers are signed here with test keys whose ATS
//! and ATK records the server reads from a `dns_override.toml` (`local_mode = true`).

mod common;

use atp_wasm::keys::DomainKey;
use atp_wasm::message::Message;
use atp_wasm::records::atk::AtkRecord;
use atp_wasm::sign::sign_message;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE};
use base64::Engine;
use common::*;
use serde_json::{json, Value};

/// gamma.test: ATS allows loopback, key seed 1. Other test domains for the failure cases.
fn overrides() -> Vec<(String, String)> {
    let atk = |k: &DomainKey| AtkRecord::new(*k.public_key().as_bytes()).to_string();
    let spki = key(5).public_key().to_spki_pem().unwrap();
    let spki_b64: String = spki.lines().filter(|l| !l.starts_with("-----")).collect();
    vec![
        ("ats._atp.gamma.test".into(), "v=atp1 allow=ip:127.0.0.1 deny=all".into()),
        ("default.atk._atp.gamma.test".into(), atk(&key(1))),
        // ATS deny: the sender's policy refuses our loopback source
        ("ats._atp.evil.test".into(), "v=atp1 deny=all".into()),
        ("default.atk._atp.evil.test".into(), atk(&key(2))),
        ("ats._atp.tenet.test".into(), "v=atp1 deny=ip:127.0.0.0/8 allow=all".into()),
        ("default.atk._atp.tenet.test".into(), atk(&key(2))),
        // ATS by the addresses of a host named in peers.toml
        ("ats._atp.delta.test".into(), "v=atp1 allow=domain:mx.delta.test deny=all".into()),
        ("default.atk._atp.delta.test".into(), atk(&key(3))),
        // a malformed ATS record: 5.7.27, not 500
        ("ats._atp.syntax.test".into(), "v=atp1 allow=ip:999.1.1.1".into()),
        ("default.atk._atp.syntax.test".into(), atk(&key(4))),
        // key records that do not work
        ("default.atk._atp.spki.test".into(), format!("v=atp1 k=ed25519 p={spki_b64}")),
        (
            "default.atk._atp.revoked.test".into(),
            AtkRecord { revoked: true, ..AtkRecord::new(*key(6).public_key().as_bytes()) }.to_string(),
        ),
        (
            "default.atk._atp.expired.test".into(),
            AtkRecord { expires: Some(1000), ..AtkRecord::new(*key(7).public_key().as_bytes()) }.to_string(),
        ),
        ("default.atk._atp.partial.test".into(), "v=atp1 k=ed25519".into()),
        // no records at all for unknown.test
    ]
}

fn start() -> Server {
    let home = tempfile::tempdir().unwrap();
    let dns = write_overrides(home.path(), &overrides());
    let peers = home.path().join("peers.toml");
    std::fs::write(&peers, "[\"mx.delta.test\"]\nhost = \"127.0.0.1\"\nip_addresses = [\"127.0.0.1\"]\n").unwrap();
    let o = Options::new("beta.test").config(&format!(
        "local_mode = true\npeers_file = \"{}\"\ndns_override_file = \"{}\"\n",
        peers.display(),
        dns.display()
    ));
    Server::start_in(o, home, free_port())
}

fn raw(from: &str, nonce: &str, ts: i64) -> Value {
    json!({"from": from, "to": "bob@beta.test", "timestamp": ts, "nonce": nonce, "type": "message",
           "payload": {"body": "hello", "x": [1, 2.5, {"y": null}], "f": 1e-05}})
}

fn gamma(nonce: &str) -> Value {
    raw("zed@gamma.test", nonce, now())
}

/// Signs `v` with `k` as `domain`'s server, then lets `f` tamper with the signed message.
fn sign_then(v: Value, k: &DomainKey, domain: &str, f: impl FnOnce(&mut Message)) -> String {
    let mut m = Message::from_value(v).unwrap();
    sign_message(&mut m, k, "default", domain, now()).unwrap();
    f(&mut m);
    m.to_json()
}

struct Peer {
    s: Server,
    c: reqwest::Client,
}

impl Peer {
    async fn new() -> Peer {
        let s = start();
        register(&s, "bob", "bobpw").await;
        Peer { s, c: client() }
    }

    /// POSTs a transfer body as another server does (no Authorization).
    async fn post(&self, body: String) -> (u16, Value) {
        call(self.c.post(self.s.url("message")).header("content-type", "application/atp+json").body(body)).await
    }

    async fn code(&self, body: String) -> (u16, String) {
        let (st, v) = self.post(body).await;
        assert!(v["error"].is_string(), "{v}");
        (st, v["error_code"].as_str().unwrap_or_default().to_owned())
    }

    async fn inbox(&self) -> Vec<Value> {
        let (st, v) = call(self.c.get(self.s.url("messages")).basic_auth("bob@beta.test", Some("bobpw"))).await;
        assert_eq!(st, 200);
        v["messages"].as_array().unwrap().clone()
    }
}

#[tokio::test]
async fn valid_transfer_repeat_and_replay() {
    let p = Peer::new().await;
    let ts = now();
    let body = signed(raw("zed@gamma.test", "r-1", ts), &key(1), "gamma.test");
    let (st, v) = p.post(body.clone()).await;
    assert_eq!((st, v["status"].as_str(), v["nonce"].as_str()), (202, Some("accepted"), Some("r-1")), "{v}");
    // an exact repeat (a retry after a lost 202), even re-signed later: 202 and one inbox copy
    assert_eq!(p.post(body).await.0, 202);
    let resigned = sign_then(raw("zed@gamma.test", "r-1", ts), &key(1), "gamma.test", |m| {
        m.signature.as_mut().unwrap().timestamp += 3600;
    });
    assert_eq!(p.post(resigned).await.0, 202);
    // the same nonce with other content is a replay
    let mut other = raw("zed@gamma.test", "r-1", ts);
    other["payload"] = json!("other");
    let (st, v) = p.post(signed(other, &key(1), "gamma.test")).await;
    assert_eq!((st, v["error"].as_str(), v["error_code"].as_str()), (400, Some("Replay detected"), Some("550 5.7.30")));
    // another sender domain may use the same nonce (dedup is per sender domain)
    let mut delta = raw("zed@delta.test", "r-1", now());
    delta["payload"] = json!("from delta");
    assert_eq!(p.post(signed(delta, &key(3), "delta.test")).await.0, 202);

    let inbox = p.inbox().await;
    assert_eq!(inbox.len(), 2, "{inbox:?}");
    let m = &inbox[0];
    assert_eq!((m["from"].as_str(), m["nonce"].as_str()), (Some("zed@gamma.test"), Some("r-1")));
    assert_eq!(m["signature"]["key_id"], "default.atk._atp.gamma.test", "the signature is stored as received");
    // the stored copy still verifies against the sender's key
    atp_wasm::sign::verify_message(&Message::from_value(m.clone()).unwrap(), &key(1).public_key()).unwrap();

    let (_, stats) = call(p.c.get(p.s.url("stats")).bearer_auth(ADMIN)).await;
    assert_eq!(stats["security"]["ats_pass"], 4, "accepted transfers: {stats}");
    assert_eq!(stats["security"]["atk_pass"], 4);
    assert_eq!(stats["messages"]["duplicates"], 2);
    assert_eq!(stats["security"]["replay_blocked"], 1);
}

#[tokio::test]
async fn signature_failures() {
    let p = Peer::new().await;
    let k = key(1);
    let g = |n: &str| gamma(n);
    let atk_sig = (403, "550 5.7.28".to_string());
    let atk_key = (403, "550 5.7.29".to_string());
    // tampered payload
    assert_eq!(p.code(sign_then(g("s1"), &k, "gamma.test", |m| m.payload = json!("tampered"))).await, atk_sig);
    // key_id of another domain
    let (st, v) = p
        .post(sign_then(g("s2"), &k, "gamma.test", |m| {
            m.signature.as_mut().unwrap().key_id = "default.atk._atp.delta.test".into()
        }))
        .await;
    assert_eq!((st, v["error_code"].as_str()), (403, Some("550 5.7.28")));
    assert!(v["error_message"].as_str().unwrap().contains("mismatch"), "{v}");
    // key_id without .atk._atp.
    let bad_id =
        sign_then(g("s3"), &k, "gamma.test", |m| m.signature.as_mut().unwrap().key_id = "default.gamma.test".into());
    assert_eq!(p.code(bad_id).await, atk_sig);
    // no signature, or signature null
    let (st, v) = p.post(g("s4").to_string()).await;
    assert_eq!(
        (st, v["error"].as_str(), v["error_code"].as_str()),
        (403, Some("ATK verification failed"), Some("550 5.7.28"))
    );
    assert_eq!(v["error_message"], "Message has no signature");
    let mut null_sig = g("s5");
    null_sig["signature"] = Value::Null;
    assert_eq!(p.code(null_sig.to_string()).await, atk_sig);
    // unpadded and URL-safe base64
    let reencode = |n: &str, f: fn(&[u8]) -> String| {
        sign_then(g(n), &k, "gamma.test", move |m| {
            let s = m.signature.as_mut().unwrap();
            s.signature = f(&STANDARD.decode(&s.signature).unwrap());
        })
    };
    assert_eq!(p.code(reencode("s6", |b| STANDARD_NO_PAD.encode(b))).await, atk_sig);
    // (find a signature whose URL-safe form differs from the standard one)
    let mut n = 0;
    let urlsafe = loop {
        n += 1;
        let body = sign_then(g(&format!("s7-{n}")), &k, "gamma.test", |_| {});
        let m = Message::parse(body.as_bytes()).unwrap();
        let sig = &m.signature.as_ref().unwrap().signature;
        if sig.contains('+') || sig.contains('/') {
            break reencode(&format!("s7-{n}"), |b| URL_SAFE.encode(b));
        }
    };
    assert_eq!(p.code(urlsafe).await, atk_sig);
    // algorithm other than ed25519 (atp checks it; the reference did not)
    assert_eq!(
        p.code(sign_then(g("s8"), &k, "gamma.test", |m| m.signature.as_mut().unwrap().algorithm = "rsa".into())).await,
        atk_sig
    );
    // signed with the wrong key
    assert_eq!(p.code(signed(g("s9"), &key(9), "gamma.test")).await, atk_sig);
    // mixed-case from: signed as sent → 403; signed lowercased → 202 (docs/protocol.md §3)
    let mut mixed = g("s10");
    mixed["from"] = json!("Zed@Gamma.test");
    let mut m = Message::from_value(mixed.clone()).unwrap();
    let canonical_as_sent = m.canonical().unwrap();
    let sig = k.sign(canonical_as_sent.as_bytes());
    m.signature = Some(atp_wasm::SignatureEnvelope {
        key_id: "default.atk._atp.gamma.test".into(),
        algorithm: "ed25519".into(),
        signature: STANDARD.encode(sig),
        headers: vec!["from".into()],
        timestamp: now(),
    });
    assert_eq!(p.code(m.to_json()).await, atk_sig);
    mixed["nonce"] = json!("s11");
    let lower_signed = sign_then(mixed, &k, "gamma.test", |m| m.from = "Zed@Gamma.test".into());
    assert!(lower_signed.contains("Zed@Gamma.test"));
    assert_eq!(p.post(lower_signed).await.0, 202);
    // mixed-case to is kept as signed
    let mut upper_to = g("s12");
    upper_to["to"] = json!("BOB@Beta.Test");
    assert_eq!(p.post(signed(upper_to, &k, "gamma.test")).await.0, 202);
    // cc/routing are covered by the signature and kept; an unsigned extra key is dropped
    let mut rich = g("s13");
    rich["cc"] = json!(["carol@beta.test", "dan@gamma.test"]);
    rich["routing"] = json!({"via": ["gamma.test"], "hops": 1});
    let mut with_extra: Value = serde_json::from_str(&signed(rich, &k, "gamma.test")).unwrap();
    with_extra["extra"] = json!({"not": "signed"});
    assert_eq!(p.post(with_extra.to_string()).await.0, 202);
    // an extra key that was signed (sender believed it counts) fails
    let mut extra_signed = g("s14");
    extra_signed["extra"] = json!(1);
    let mut m = Message::from_value(extra_signed.clone()).unwrap();
    let mut signable = m.signable_value();
    signable["extra"] = json!(1);
    let sig = k.sign(atp_wasm::canonical::canonicalize(&signable).unwrap().as_bytes());
    m.signature = Some(atp_wasm::SignatureEnvelope {
        key_id: "default.atk._atp.gamma.test".into(),
        algorithm: "ed25519".into(),
        signature: STANDARD.encode(sig),
        headers: vec![],
        timestamp: now(),
    });
    assert_eq!(p.code(m.to_json()).await, atk_sig);
    // headers list and envelope timestamp are decorative
    assert_eq!(
        p.post(sign_then(g("s15"), &k, "gamma.test", |m| {
            let s = m.signature.as_mut().unwrap();
            s.headers = vec!["foo".into()];
            s.timestamp = 0;
        }))
        .await
        .0,
        202
    );

    // key records
    let from = |d: &str, n: &str| raw(&format!("x@{d}"), n, now());
    let (st, v) = p.post(signed(from("unknown.test", "k1"), &key(8), "unknown.test")).await;
    assert_eq!((st, v["error_code"].as_str()), (403, Some("550 5.7.29")), "unknown domain");
    assert!(v["error_message"].as_str().unwrap().contains("not found"), "{v}");
    assert_eq!(p.code(signed(from("spki.test", "k2"), &key(5), "spki.test")).await, atk_sig, "SPKI p=");
    assert_eq!(p.code(signed(from("revoked.test", "k3"), &key(6), "revoked.test")).await, atk_key, "t=s");
    assert_eq!(p.code(signed(from("expired.test", "k4"), &key(7), "expired.test")).await, atk_key, "x= past");
    assert_eq!(p.code(signed(from("partial.test", "k5"), &key(7), "partial.test")).await, atk_key, "no p=");

    let inbox = p.inbox().await;
    let nonces: Vec<&str> = inbox.iter().map(|m| m["nonce"].as_str().unwrap()).collect();
    assert_eq!(nonces, ["s11", "s12", "s13", "s15"]);
    assert_eq!(inbox[0]["from"], "zed@gamma.test", "from stored lowercased");
    assert_eq!(inbox[1]["to"], "BOB@Beta.Test", "to stored as signed");
    assert_eq!(inbox[2]["cc"], json!(["carol@beta.test", "dan@gamma.test"]));
    assert_eq!(inbox[2]["routing"], json!({"via": ["gamma.test"], "hops": 1}));
    assert!(inbox[2].get("extra").is_none());
    let (_, stats) = call(p.c.get(p.s.url("stats")).bearer_auth(ADMIN)).await;
    assert!(stats["security"]["atk_fail"].as_u64().unwrap() >= 14, "{stats}");
}

#[tokio::test]
async fn ats_outcomes() {
    let p = Peer::new().await;
    let from = |d: &str, n: &str| raw(&format!("x@{d}"), n, now());
    let (st, v) = p.post(signed(from("evil.test", "a1"), &key(2), "evil.test")).await;
    assert_eq!(
        (st, v["error"].as_str(), v["error_code"].as_str()),
        (403, Some("ATS validation failed"), Some("550 5.7.26"))
    );
    assert_eq!(v["matched_directive"], "deny=all", "{v}");
    let (st, v) = p.post(signed(from("tenet.test", "a2"), &key(2), "tenet.test")).await;
    assert_eq!((st, v["matched_directive"].as_str()), (403, Some("deny=ip:127.0.0.0/8")));
    assert_eq!(
        p.post(signed(from("delta.test", "a3"), &key(3), "delta.test")).await.0,
        202,
        "allow=domain: via peers.toml"
    );
    assert_eq!(p.code(signed(from("syntax.test", "a4"), &key(4), "syntax.test")).await, (403, "550 5.7.27".into()));
    // no X-Forwarded-For trust: the header cannot move the source address out of loopback
    let body = signed(from("tenet.test", "a5"), &key(2), "tenet.test");
    let r = p.c.post(p.s.url("message")).header("x-forwarded-for", "10.1.2.3").body(body).send().await.unwrap();
    assert_eq!(r.status(), 403, "still judged as 127.0.0.1");
    let body = signed(gamma("a6"), &key(1), "gamma.test");
    let r = p.c.post(p.s.url("message")).header("x-forwarded-for", "10.1.2.3").body(body).send().await.unwrap();
    assert_eq!(r.status(), 202, "gamma allows 127.0.0.1 whatever the header says");
    let (_, stats) = call(p.c.get(p.s.url("stats")).bearer_auth(ADMIN)).await;
    assert_eq!(stats["security"]["ats_fail"], 4, "{stats}");
}

#[tokio::test]
async fn timestamps_policy_and_format() {
    let p = Peer::new().await;
    let k = key(1);
    let at = |n: &str, ts: i64| signed(raw("zed@gamma.test", n, ts), &k, "gamma.test");
    // the retry horizon (5 days) replaces the reference's 300 s window
    assert_eq!(p.post(at("t1", now() - 400)).await.0, 202);
    assert_eq!(p.post(at("t2", now() - 4 * 86_400)).await.0, 202);
    let (st, v) = p.post(at("t3", now() - 6 * 86_400)).await;
    assert_eq!((st, v["error"].as_str(), v["error_code"].as_str()), (400, Some("Replay detected"), Some("550 5.7.31")));
    assert_eq!(p.post(at("t4", now() + 120)).await.0, 400, "too far in the future");
    // string timestamp: 400, not 500
    let mut s = gamma("t5");
    s["timestamp"] = json!(now().to_string());
    assert_eq!(p.code(s.to_string()).await, (400, "550 5.6.0".into()));
    // relay to another domain is refused (no open relay)
    let mut relay = gamma("t6");
    relay["to"] = json!("carol@alpha.test");
    let (st, v) = p.post(signed(relay, &k, "gamma.test")).await;
    assert_eq!((st, v["error"].as_str(), v["error_code"].as_str()), (403, Some("Relaying denied"), Some("550 5.7.1")));
    // a message "from" our own domain without a credential
    let mut own = gamma("t7");
    own["from"] = json!("mallory@beta.test");
    let (st, v) = p.post(own.to_string()).await;
    assert_eq!((st, v["error"].as_str()), (401, Some("Credential required for local agent")));
    // unknown local recipient: refused 404 550 5.1.1 (no orphan mail)
    let mut ghost = gamma("t8");
    ghost["to"] = json!("ghost@beta.test");
    let (st, v) = p.post(signed(ghost, &k, "gamma.test")).await;
    assert_eq!(
        (st, v["error"].as_str(), v["error_code"].as_str()),
        (404, Some("Unknown recipient"), Some("550 5.1.1"))
    );
    // format errors before any check
    for bad in ["{", "[]", "42", "{\"from\":\"zed@gamma.test\"}", ""] {
        assert_eq!(p.code(bad.into()).await, (400, "550 5.6.0".into()), "{bad:?}");
    }
    let (st, v) = p.post(" ".repeat(1_048_577)).await;
    assert_eq!((st, v["error"].as_str(), v["max_size"].as_u64()), (400, Some("Message too large"), Some(1_048_576)));
    let inbox = p.inbox().await;
    let nonces: Vec<&str> = inbox.iter().map(|m| m["nonce"].as_str().unwrap()).collect();
    assert_eq!(nonces, ["t1", "t2"]);
}
