//! Starts the real `atp` binary with TLS on a free loopback port and exercises its routes.

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use atp_wasm::keys::DomainKey;
use atp_wasm::message::Message;
use atp_wasm::records::atk::AtkRecord;
use atp_wasm::sign::sign_message;
use serde_json::{json, Value};

struct Server {
    child: Child,
    base: String,
    _home: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// The sender domain gamma.test publishes (through the server's dns_override.toml) an ATS policy
/// allowing loopback and this key.
fn gamma_key() -> DomainKey {
    DomainKey::from_seed(&[42; 32])
}

async fn start() -> Server {
    let home = tempfile::tempdir().unwrap();
    let dns = home.path().join("dns_override.toml");
    let mut f = std::fs::File::create(&dns).unwrap();
    writeln!(f, "[\"ats._atp.gamma.test\"]\nrecord = \"v=atp1 allow=ip:127.0.0.1 deny=all\"").unwrap();
    writeln!(
        f,
        "[\"default.atk._atp.gamma.test\"]\nrecord = \"{}\"",
        AtkRecord::new(*gamma_key().public_key().as_bytes())
    )
    .unwrap();
    writeln!(f, "[\"ats._atp.evil.test\"]\nrecord = \"v=atp1 deny=all\"").unwrap();
    std::fs::write(
        home.path().join("config.toml"),
        format!("local_mode = true\ndns_override_file = \"{}\"\n", dns.display()),
    )
    .unwrap();
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_atp"))
        .args(["server", "start", "--domain", "beta.test", "--host", "127.0.0.1", "--admin-token", "tok"])
        .args(["--port", &port.to_string(), "--home"])
        .arg(home.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let server = Server { child, base: format!("https://127.0.0.1:{port}/.well-known/atp/v1"), _home: home };
    for _ in 0..100 {
        if client().get(format!("{}/health", server.base)).send().await.is_ok() {
            return server;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("server did not start");
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().danger_accept_invalid_certs(true).build().unwrap()
}

async fn call(req: reqwest::RequestBuilder) -> (u16, Value) {
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text:?}")))
}

#[tokio::test]
async fn routes_policies_and_errors() {
    let s = start().await;
    let c = client();
    let url = |p: &str| format!("{}/{p}", s.base);

    let (st, body) = call(c.get(url("health"))).await;
    assert_eq!((st, body["status"].as_str(), body["domain"].as_str()), (200, Some("healthy"), Some("beta.test")));
    let (st, body) = call(c.get(url("capabilities"))).await;
    assert_eq!((st, body["max_payload_size"].as_u64()), (200, Some(1_048_576)));

    // registration
    let reg = |id: &str, pw: &str| c.post(url("register")).json(&json!({"agent_id": id, "password": pw}));
    let (st, body) = call(reg("Bob", "bobpw")).await;
    assert_eq!((st, body["agent_id"].as_str()), (201, Some("bob@beta.test")));
    assert_eq!(call(reg("alice@beta.test", "alicepw")).await.0, 201);
    assert_eq!(call(reg("bob", "x")).await.0, 409);
    assert_eq!(call(reg("postmaster", "x")).await.0, 403);
    assert_eq!(call(reg("dave@alpha.test", "x")).await.0, 403);
    assert_eq!(call(reg("bad name", "x")).await.0, 400);
    assert_eq!(call(c.post(url("register")).body("{")).await.0, 400);

    // local submission, then recv
    let msg = |nonce: &str, to: &str| {
        json!({"from": "alice@beta.test", "to": to, "timestamp": now(), "nonce": nonce, "type": "message",
               "payload": {"body": "hi", "big": 123456789012345678901234567890u128, "f": 1e-05}})
    };
    let send = |m: &Value, user: &str, pw: &str| c.post(url("message")).basic_auth(user, Some(pw)).json(m);
    let m1 = msg("msg-1", "bob@beta.test");
    let (st, body) = call(send(&m1, "alice@beta.test", "alicepw")).await;
    assert_eq!((st, body["status"].as_str()), (202, Some("accepted")), "{body}");
    assert_eq!(call(send(&m1, "Alice@Beta.test", "alicepw")).await.0, 202, "idempotent repeat; usernames normalised");
    let mut other = m1.clone();
    other["payload"] = json!("other");
    assert_eq!(call(send(&other, "alice@beta.test", "alicepw")).await.1["error_code"], "550 5.7.30");
    assert_eq!(call(send(&msg("m2", "bob@beta.test"), "alice@beta.test", "wrong")).await.0, 401);
    assert_eq!(call(c.post(url("message")).json(&msg("m3", "bob@beta.test"))).await.0, 401);
    assert_eq!(call(send(&msg("m4", "bob@beta.test"), "bob@beta.test", "bobpw")).await.0, 403, "sender mismatch");
    let (st, body) = call(send(&msg("m5", "ghost@beta.test"), "alice@beta.test", "alicepw")).await;
    assert_eq!((st, body["error_code"].as_str()), (404, Some("550 5.1.1")));
    assert_eq!(call(send(&msg("m6", "carol@alpha.test"), "alice@beta.test", "alicepw")).await.0, 202, "queued");

    let (st, body) = call(c.get(url("messages")).basic_auth("bob@beta.test", Some("bobpw"))).await;
    assert_eq!((st, body["count"].as_u64()), (200, Some(1)));
    assert_eq!(body["messages"][0]["payload"]["big"].to_string(), "123456789012345678901234567890");
    assert_eq!(body["messages"][0]["payload"]["f"].to_string(), m1["payload"]["f"].to_string(), "number text kept");
    let last = body["last_id"].as_i64().unwrap();
    let (_, body) =
        call(c.get(url(&format!("messages?after_id={last}"))).basic_auth("bob@beta.test", Some("bobpw"))).await;
    assert_eq!(body["count"], 0);
    assert!(body.get("last_id").is_none());
    assert_eq!(call(c.get(url("messages?limit=x")).basic_auth("bob@beta.test", Some("bobpw"))).await.0, 400);
    assert_eq!(call(c.get(url("messages")).basic_auth("bob@beta.test", Some("nope"))).await.0, 401);
    assert_eq!(call(c.get(url("messages")).header("authorization", "Basic !!!")).await.0, 401);

    // remote transfers through the core pipeline
    let transfer = |v: Value| {
        let mut m = Message::from_value(v).unwrap();
        sign_message(&mut m, &gamma_key(), "default", "gamma.test", now()).unwrap();
        c.post(url("message")).header("content-type", "application/atp+json").body(m.to_json())
    };
    let remote = |nonce: &str, ts: i64| {
        json!({"from": "Zed@gamma.test", "to": "bob@beta.test", "timestamp": ts, "nonce": nonce, "type": "message",
               "payload": {"x": [1, 2.5]}, "cc": ["carol@beta.test"], "routing": {"hops": 1}, "extra": true})
    };
    assert_eq!(call(transfer(remote("r1", now()))).await.0, 202);
    assert_eq!(call(transfer(remote("r1", now()))).await.0, 202, "a retry after a lost 202");
    assert_eq!(call(transfer(remote("r2", now() - 400))).await.0, 202, "retry horizon, not 300 s");
    assert_eq!(call(transfer(remote("r3", now() - 6 * 86_400))).await.0, 400);
    let mut relay = remote("r4", now());
    relay["to"] = json!("carol@alpha.test");
    assert_eq!(call(transfer(relay)).await.1["error_code"], "550 5.7.1");
    let mut m = Message::from_value(remote("r5", now())).unwrap();
    sign_message(&mut m, &gamma_key(), "default", "gamma.test", now()).unwrap();
    m.payload = json!("tampered");
    assert_eq!(call(c.post(url("message")).body(m.to_json())).await.1["error_code"], "550 5.7.28");
    let mut unknown = remote("r6", now());
    unknown["from"] = json!("x@unknown.test");
    let mut m = Message::from_value(unknown).unwrap();
    sign_message(&mut m, &gamma_key(), "default", "unknown.test", now()).unwrap();
    assert_eq!(call(c.post(url("message")).body(m.to_json())).await.1["error_code"], "550 5.7.29");
    let mut evil = remote("r7", now());
    evil["from"] = json!("x@evil.test");
    assert_eq!(call(transfer(evil)).await.1["error_code"], "550 5.7.26");

    let (_, body) =
        call(c.get(url(&format!("messages?after_id={last}"))).basic_auth("bob@beta.test", Some("bobpw"))).await;
    assert_eq!(body["count"], 2, "r1 once and r2: {body}");
    let first = &body["messages"][0];
    assert_eq!((first["nonce"].as_str(), first["from"].as_str()), (Some("r1"), Some("zed@gamma.test")));
    assert_eq!(first["cc"], json!(["carol@beta.test"]));
    assert!(first.get("extra").is_none());
    // the stored copy still verifies
    let stored = Message::from_value(first.clone()).unwrap();
    atp_wasm::sign::verify_message(&stored, &gamma_key().public_key()).unwrap();

    // format errors
    let big = vec![b'x'; 1_048_577];
    let (st, body) = call(c.post(url("message")).body(big)).await;
    assert_eq!((st, body["error"].as_str()), (400, Some("Message too large")));
    for bad in ["{", "[]", "42", "{\"from\":\"a@b.c\"}"] {
        assert_eq!(call(c.post(url("message")).body(bad)).await.0, 400, "{bad}");
    }

    // admin routes
    assert_eq!(call(c.get(url("agents"))).await.0, 401);
    assert_eq!(call(c.get(url("agents")).bearer_auth("nope")).await.0, 403);
    let (st, body) = call(c.get(url("agents")).bearer_auth("tok")).await;
    assert_eq!((st, body["agents"].clone()), (200, json!(["bob@beta.test", "alice@beta.test"])));
    let (_, body) = call(c.get(url("stats")).bearer_auth("tok")).await;
    assert_eq!((body["agents"].as_u64(), body["queue"]["queued"].as_u64()), (Some(2), Some(1)));
    let (st, body) = call(c.get(url("inspect?nonce=m6")).bearer_auth("tok")).await;
    assert_eq!((st, body["status"].as_str()), (200, Some("queued")));
    assert_eq!(call(c.get(url("inspect?nonce=zzz")).bearer_auth("tok")).await.0, 404);
    assert_eq!(call(c.get(url("inspect")).bearer_auth("tok")).await.0, 400);
    assert_eq!(call(c.get(url("nothing"))).await.0, 404);
    assert_eq!(call(c.get(url("message"))).await.0, 405);
}

#[tokio::test]
async fn tls_1_3_only() {
    let s = start().await;
    let old = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .max_tls_version(reqwest::tls::Version::TLS_1_2)
        .build()
        .unwrap();
    assert!(old.get(format!("{}/health", s.base)).send().await.is_err(), "TLS 1.2 must be refused");
}
