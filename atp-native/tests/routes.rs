//! Every route of docs/protocol.md §6 against the real binary (TLS, self-signed): shapes, status codes,
//! and every error path, all as JSON `{"error", "error_code", …}`.

mod common;

use common::*;
use serde_json::{json, Value};

fn msg(from: &str, to: &str, nonce: &str) -> Value {
    json!({"from": from, "to": to, "timestamp": now(), "nonce": nonce, "type": "message",
           "payload": {"body": "hi", "big": 123456789012345678901234567890u128, "f": 1e-05, "uni": "é中"}})
}

#[tokio::test]
async fn public_routes() {
    let s = Server::start("beta.test");
    let c = client();
    let (st, v) = call(c.get(s.url("health"))).await;
    assert_eq!(st, 200);
    assert_eq!(v, json!({"status": "healthy", "domain": "beta.test", "version": env!("CARGO_PKG_VERSION")}));
    let (st, v) = call(c.get(s.url("capabilities"))).await;
    assert_eq!(st, 200);
    assert_eq!(
        v,
        json!({"version": "1.0", "capabilities": ["message"], "protocols": ["atp/1"], "max_payload_size": 1048576})
    );
    // unknown paths and methods are JSON too
    assert_eq!(refusal(c.get(s.url("nothing"))).await, (404, "550 5.1.0".into()));
    assert_eq!(refusal(c.get(format!("https://{}/", s.addr()))).await.0, 404);
    assert_eq!(refusal(c.get(s.url("message"))).await.0, 405);
    assert_eq!(refusal(c.delete(s.url("messages"))).await.0, 405);
    assert_eq!(refusal(c.post(s.url("health"))).await.0, 405);
}

#[tokio::test]
async fn register_route() {
    let s = Server::start("beta.test");
    let c = client();
    let reg = |body: Value| c.post(s.url("register")).json(&body);
    let (st, v) = call(reg(json!({"agent_id": "Bob", "password": "pw"}))).await;
    assert_eq!((st, v), (201, json!({"status": "registered", "agent_id": "bob@beta.test"})));
    let (st, v) = call(reg(json!({"agent_id": "alice@BETA.test", "password": "pw"}))).await;
    assert_eq!((st, v["agent_id"].as_str()), (201, Some("alice@beta.test")));
    let (st, v) = call(reg(json!({"agent_id": "bob@beta.test", "password": "x"}))).await;
    assert_eq!((st, v["error_code"].as_str()), (409, Some("550 5.1.6")));
    assert!(v["error"].as_str().unwrap().contains("already registered"));
    for reserved in ["postmaster", "admin@beta.test", "Mailer-Daemon", "no-reply"] {
        let (st, v) = call(reg(json!({"agent_id": reserved, "password": "x"}))).await;
        assert_eq!(st, 403, "{reserved}");
        assert!(v["error"].as_str().unwrap().contains("reserved"), "{v}");
    }
    let (st, v) = call(reg(json!({"agent_id": "dave@alpha.test", "password": "x"}))).await;
    assert_eq!(st, 403);
    assert_eq!(v["error"], "Cannot register agent for domain 'alpha.test' on server 'beta.test'");
    for bad in [json!({"agent_id": "bad name", "password": "x"}), json!({"agent_id": "a@@b", "password": "x"})] {
        let (st, v) = call(reg(bad)).await;
        assert_eq!(st, 400);
        assert!(v["error"].as_str().unwrap().starts_with("Invalid agent_id format"), "{v}");
    }
    for missing in
        [json!({"agent_id": "x"}), json!({"password": "x"}), json!([]), json!({"agent_id": 1, "password": "x"})]
    {
        let (st, v) = call(reg(missing)).await;
        assert_eq!((st, v["error"].as_str()), (400, Some("Missing agent_id or password")));
    }
    assert_eq!(call(reg(json!({"agent_id": "e", "password": ""}))).await.0, 400);
    assert_eq!(call(reg(json!({"agent_id": "e", "password": "x".repeat(1025)}))).await.0, 400);
    let (st, v) = call(c.post(s.url("register")).body("{")).await;
    assert_eq!((st, v["error"].as_str()), (400, Some("Invalid JSON")));
    assert_eq!(call(c.post(s.url("register")).body(vec![0xffu8, 0xfe])).await.0, 400);
    let (st, v) = call(c.post(s.url("register")).body(vec![b' '; 20_000])).await;
    assert_eq!((st, v["error"].as_str()), (400, Some("Message too large")));
}

#[tokio::test]
async fn submit_and_receive() {
    let s = Server::start("beta.test");
    let c = client();
    register(&s, "alice", "alicepw").await;
    register(&s, "bob", "bob:pw:with:colons").await;
    let send = |m: &Value, user: &str, pw: &str| c.post(s.url("message")).basic_auth(user, Some(pw)).json(m);

    let m1 = msg("alice@beta.test", "bob@beta.test", "msg-1");
    let before = now();
    let (st, v) = call(send(&m1, "alice@beta.test", "alicepw")).await;
    assert_eq!((st, v["status"].as_str(), v["nonce"].as_str()), (202, Some("accepted"), Some("msg-1")));
    let ts = v["timestamp"].as_i64().unwrap();
    assert!(ts >= before && ts <= now(), "the server's time: {v}");
    // mixed-case from, recipient and username are normalised
    let mut m2 = msg("Alice@Beta.TEST", "BOB@beta.test", "msg-2");
    m2["extra"] = json!("dropped");
    m2["cc"] = json!(["carol@elsewhere.test"]);
    m2["routing"] = json!({"hops": [1]});
    assert_eq!(call(send(&m2, "ALICE@beta.test", "alicepw")).await.0, 202);

    let inbox = |q: &str| c.get(s.url(&format!("messages{q}"))).basic_auth("bob@beta.test", Some("bob:pw:with:colons"));
    let (st, v) = call(inbox("")).await;
    assert_eq!((st, v["count"].as_u64()), (200, Some(2)), "{v}");
    let first = &v["messages"][0];
    assert_eq!(first["from"], "alice@beta.test");
    assert_eq!(first["to"], "bob@beta.test");
    assert_eq!(first["type"], "message");
    assert!(first.get("signature").is_none(), "local mail is unsigned");
    // number text kept exactly (arbitrary precision, Python float repr)
    assert_eq!(first["payload"]["big"].to_string(), "123456789012345678901234567890");
    assert_eq!(first["payload"]["f"].to_string(), m1["payload"]["f"].to_string());
    assert_eq!(first["payload"]["uni"], "é中");
    let second = &v["messages"][1];
    assert_eq!((second["from"].as_str(), second["to"].as_str()), (Some("alice@beta.test"), Some("BOB@beta.test")));
    assert_eq!(second["cc"], json!(["carol@elsewhere.test"]));
    assert_eq!(second["routing"], json!({"hops": [1]}));
    assert!(second.get("extra").is_none());
    let last = v["last_id"].as_i64().unwrap();

    // cursor and limit
    let (_, v) = call(inbox(&format!("?after_id={last}"))).await;
    assert_eq!(v, json!({"messages": [], "count": 0}));
    let (_, v) = call(inbox("?limit=1")).await;
    assert_eq!((v["count"].as_u64(), v["messages"][0]["nonce"].as_str()), (Some(1), Some("msg-1")));
    let (_, v) = call(inbox(&format!("?limit=1&after_id={}", v["last_id"]))).await;
    assert_eq!(v["messages"][0]["nonce"], "msg-2");
    assert_eq!(call(inbox("?limit=0")).await.1["count"], 0);
    assert_eq!(call(inbox("?limit=100000")).await.1["count"], 2, "capped, not refused");
    assert_eq!(call(inbox("?agent_id=alice@beta.test")).await.1["count"], 2, "agent_id is ignored");
    for bad in ["?limit=x", "?limit=-1", "?after_id=1.5", "?after_id=abc", "?limit=99999999999999999999"] {
        assert_eq!(refusal(inbox(bad)).await, (400, "500 5.5.2".into()), "{bad}");
    }
    // alice's inbox is empty (to_id is exact)
    let (_, v) = call(c.get(s.url("messages")).basic_auth("alice@beta.test", Some("alicepw"))).await;
    assert_eq!(v["count"], 0);
}

#[tokio::test]
async fn credential_errors() {
    let s = Server::start("beta.test");
    let c = client();
    register(&s, "alice", "alicepw").await;
    register(&s, "bob", "bobpw").await;
    let m = |n: &str| msg("alice@beta.test", "bob@beta.test", n);
    let post = || c.post(s.url("message"));
    let get = || c.get(s.url("messages"));

    let (st, v) = call(post().json(&m("n1"))).await;
    assert_eq!(
        (st, v["error"].as_str(), v["error_code"].as_str()),
        (401, Some("Credential required for local agent"), Some("535 5.7.8"))
    );
    let (st, v) = call(get()).await;
    assert_eq!((st, v["error"].as_str()), (401, Some("Credential required")));
    assert_eq!(call(post().bearer_auth("x").json(&m("n2"))).await.1["error"], "Credential required for local agent");
    for header in ["Basic !!!", "Basic bm9jb2xvbg==", "Basic /w==", "Basic"] {
        let (st, v) = call(get().header("authorization", header)).await;
        assert_eq!(st, 401, "{header}");
        assert!(v["error"].as_str().unwrap().starts_with("Invalid Authorization header") || header == "Basic", "{v}");
    }
    let bad_bytes = reqwest::header::HeaderValue::from_bytes(b"Basic \xff\xfe").unwrap();
    assert_eq!(call(get().header("authorization", bad_bytes)).await.0, 401, "non-UTF-8 header");
    async fn wrong(s: &Server, user: &str, pw: &str) -> (u16, String) {
        let (st, v) = call(client().get(s.url("messages")).basic_auth(user, Some(pw))).await;
        (st, v["error"].as_str().unwrap_or("").to_owned())
    }
    let failed = (401, "Credential verification failed".to_string());
    assert_eq!(wrong(&s, "alice@beta.test", "nope").await, failed);
    assert_eq!(wrong(&s, "ghost@beta.test", "alicepw").await, failed);
    assert_eq!(wrong(&s, "alice", "alicepw").await, failed, "full id needed");
    assert_eq!(wrong(&s, "not an id", "x").await.0, 401);
    // the cache never accepts a wrong password for a cached agent
    assert_eq!(wrong(&s, "alice@beta.test", "alicepw").await.0, 200);
    assert_eq!(wrong(&s, "alice@beta.test", "alicepw2").await.0, 401);
    // sender must match the credential
    let (st, v) = call(post().basic_auth("bob@beta.test", Some("bobpw")).json(&m("n3"))).await;
    assert_eq!((st, v["error_code"].as_str()), (403, Some("553 5.7.1")));
}

#[tokio::test]
async fn message_format_errors() {
    let s = Server::start("beta.test");
    let c = client();
    register(&s, "alice", "pw").await;
    let post = |body: Vec<u8>| c.post(s.url("message")).basic_auth("alice@beta.test", Some("pw")).body(body);
    let big = vec![b' '; 1_048_577];
    let (st, v) = call(post(big)).await;
    assert_eq!((st, v), (400, json!({"error": "Message too large", "error_code": "552 5.3.4", "max_size": 1048576})));
    // exactly at the limit is read (and then refused as malformed JSON, not as too large)
    let (st, v) = call(post(vec![b' '; 1_048_576])).await;
    assert_eq!((st, v["error"].as_str()), (400, Some("Invalid message format")));
    for bad in [&b"{"[..], b"[]", b"42", b"null", b"\"s\"", b"{\"from\":\"a@b.c\"}", b"\xff\xfe", b""] {
        let (st, v) = call(post(bad.to_vec())).await;
        assert_eq!(st, 400, "{:?}: {v}", String::from_utf8_lossy(bad));
        assert_eq!(v["error_code"], "550 5.6.0", "{v}");
    }
    let base = msg("alice@beta.test", "alice@beta.test", "f1");
    let variant = |f: &dyn Fn(&mut Value)| {
        let mut v = base.clone();
        f(&mut v);
        serde_json::to_vec(&v).unwrap()
    };
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (variant(&|v| drop(v.as_object_mut().unwrap().remove("nonce"))), "550 5.6.0"),
        (variant(&|v| v["timestamp"] = json!("1800000000")), "550 5.6.0"),
        (variant(&|v| v["timestamp"] = json!(1.5)), "550 5.6.0"),
        (variant(&|v| v["nonce"] = json!("")), "550 5.6.0"),
        (variant(&|v| v["cc"] = json!("x")), "550 5.6.0"),
        (variant(&|v| v["signature"] = json!({"key_id": "x"})), "550 5.6.0"),
        (variant(&|v| v["from"] = json!("alice@beta.test\n")), "553 5.1.7"),
        (variant(&|v| v["from"] = json!("no-at-sign")), "553 5.1.7"),
        (variant(&|v| v["to"] = json!("bob@@beta.test")), "553 5.1.3"),
    ];
    for (body, code) in cases {
        let (st, v) = call(post(body.clone())).await;
        assert_eq!((st, v["error_code"].as_str()), (400, Some(code)), "{}", String::from_utf8_lossy(&body));
    }
    let (st, v) = call(post(variant(&|v| drop(v.as_object_mut().unwrap().remove("nonce"))))).await;
    assert_eq!((st, v["details"].as_str()), (400, Some("[400] Missing required field: 'nonce'")));
    // local submissions keep the tight window
    let (st, v) = call(post(variant(&|v| v["timestamp"] = json!(now() - 400)))).await;
    assert_eq!((st, v["error"].as_str()), (400, Some("Replay detected")));
    assert_eq!(call(post(variant(&|v| v["timestamp"] = json!(now() + 120)))).await.0, 400);
    // a client's signature on a submission is dropped, not checked
    let (st, _) = call(post(variant(&|v| {
        v["signature"] = json!({"key_id": "k", "algorithm": "rsa", "signature": "zz", "headers": [], "timestamp": 0})
    })))
    .await;
    assert_eq!(st, 202);
    let (_, v) = call(c.get(s.url("messages")).basic_auth("alice@beta.test", Some("pw"))).await;
    assert!(v["messages"][0].get("signature").is_none(), "{v}");
}

#[tokio::test]
async fn idempotency_and_replays_of_submissions() {
    let s = Server::start("beta.test");
    let c = client();
    register(&s, "alice", "pw").await;
    register(&s, "bob", "pw").await;
    let send = |m: &Value| c.post(s.url("message")).basic_auth("alice@beta.test", Some("pw")).json(m);
    let m = msg("alice@beta.test", "bob@beta.test", "dup-1");
    assert_eq!(call(send(&m)).await.0, 202);
    let (st, v) = call(send(&m)).await;
    assert_eq!((st, v["nonce"].as_str()), (202, Some("dup-1")), "an exact repeat is accepted again");
    let mut other = m.clone();
    other["payload"] = json!("other content");
    let (st, v) = call(send(&other)).await;
    assert_eq!((st, v["error"].as_str(), v["error_code"].as_str()), (400, Some("Replay detected"), Some("550 5.7.30")));
    // concurrent identical copies: all 202, one stored
    let m = msg("alice@beta.test", "bob@beta.test", "dup-2");
    let tasks: Vec<_> = (0..20).map(|_| tokio::spawn(send(&m).send())).collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap().status().as_u16(), 202);
    }
    let (_, v) = call(c.get(s.url("messages")).basic_auth("bob@beta.test", Some("pw"))).await;
    assert_eq!(v["count"], 2, "one copy each: {v}");
    let (_, stats) = call(c.get(s.url("stats")).bearer_auth(ADMIN)).await;
    assert_eq!(stats["messages"]["duplicates"], 20);
    assert_eq!(stats["security"]["replay_blocked"], 1);
}

#[tokio::test]
async fn admin_routes() {
    // gamma.test's server is down (a closed port) and retried only after an hour, so the message
    // for it settles as `failed` with its error recorded.
    let home = tempfile::tempdir().unwrap();
    let peers = write_peers(home.path(), &[("gamma.test", free_port())]);
    let o = Options::new("beta.test").arg("--peers").arg(peers.to_str().unwrap()).arg("--retry-base").arg("3600");
    let s = Server::start_in(o, home, free_port());
    let c = client();
    register(&s, "bob", "pw").await;
    register(&s, "alice", "pw").await;
    let send = |m: &Value| c.post(s.url("message")).basic_auth("alice@beta.test", Some("pw")).json(m);
    assert_eq!(call(send(&msg("alice@beta.test", "bob@beta.test", "a1"))).await.0, 202);
    assert_eq!(call(send(&msg("alice@beta.test", "zed@gamma.test", "a2"))).await.0, 202);
    let inspect_a2 = || async { call(c.get(s.url("inspect?nonce=a2")).bearer_auth(ADMIN)).await.1 };
    eventually(20, || async { (inspect_a2().await["status"] == "failed").then_some(()) })
        .await
        .expect("the first attempt for a2 failed");

    for path in ["agents", "stats", "inspect?nonce=a1", "metrics"] {
        let (st, v) = call(c.get(s.url(path))).await;
        assert_eq!((st, v["error"].as_str()), (401, Some("Admin authentication required")), "{path}");
        let (st, v) = call(c.get(s.url(path)).bearer_auth("wrong")).await;
        assert_eq!((st, v["error"].as_str()), (403, Some("Invalid admin token")), "{path}");
        assert_eq!(call(c.get(s.url(path)).basic_auth(ADMIN, Some(""))).await.0, 401, "{path}");
    }
    let (st, v) = call(c.get(s.url("agents")).bearer_auth(ADMIN)).await;
    assert_eq!((st, v), (200, json!({"agents": ["bob@beta.test", "alice@beta.test"]})));

    let (st, v) = call(c.get(s.url("stats")).bearer_auth(ADMIN)).await;
    assert_eq!(st, 200);
    assert_eq!(v["domain"], "beta.test");
    assert_eq!(v["agents"], json!(["bob@beta.test", "alice@beta.test"]), "registered agents");
    assert_eq!(v["messages"]["received"], 2);
    assert_eq!(v["messages"]["delivered_local"], 1);
    assert_eq!(v["messages"]["queued"], 1);
    assert_eq!(v["queue"], json!({"queued": 0, "delivering": 0, "delivered": 1, "failed": 1, "bounced": 0}));
    assert_eq!(v["messages"]["delivery_failed"], 1);
    assert!(v["security"]["credential_pass"].as_u64().unwrap() >= 2);
    assert!(v["uptime"].is_u64());

    let (st, v) = call(c.get(s.url("inspect?nonce=a2")).bearer_auth(ADMIN)).await;
    assert_eq!(st, 200);
    assert_eq!((v["nonce"].as_str(), v["status"].as_str()), (Some("a2"), Some("failed")));
    assert_eq!((v["from"].as_str(), v["to"].as_str()), (Some("alice@beta.test"), Some("zed@gamma.test")));
    assert_eq!((v["retry_count"].as_i64(), v["attempts"].as_i64()), (Some(1), Some(1)));
    assert!(v["error"].as_str().unwrap().starts_with("451 4.4.1: "), "{v}");
    assert_eq!(v["error"], v["last_error"]);
    let next = v["next_retry_at"].as_i64().unwrap();
    assert!(next >= v["created_at"].as_i64().unwrap() + 1800 - 5, "half the base delay at least: {v}");
    assert_eq!(call(c.get(s.url("inspect?nonce=a1")).bearer_auth(ADMIN)).await.1["status"], "delivered");
    let (st, v) = call(c.get(s.url("inspect?nonce=zzz")).bearer_auth(ADMIN)).await;
    assert_eq!((st, v["error"].as_str()), (404, Some("Message zzz not found")));
    let (st, v) = call(c.get(s.url("inspect")).bearer_auth(ADMIN)).await;
    assert_eq!((st, v["error"].as_str()), (400, Some("Missing 'nonce' parameter")));

    // Prometheus text, under the prefix and at /metrics
    for url in [s.url("metrics"), format!("https://{}/metrics", s.addr())] {
        let r = c.get(url).bearer_auth(ADMIN).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
        let text = r.text().await.unwrap();
        assert!(text.contains("atp_messages_received_total 2\n"), "{text}");
        assert!(text.contains("atp_messages_delivered_local_total 1\n"));
        assert!(text.contains("atp_queue_messages{status=\"failed\"} 1\n"));
        assert!(text.contains("atp_agents 2\n"));
        assert!(text.contains("atp_rejections_total{code=\"535 5.7.8\"}"), "admin refusals counted: {text}");
        assert!(text.contains("atp_http_request_duration_seconds_count"));
    }
}

#[tokio::test]
async fn admin_not_configured() {
    let mut o = Options::new("beta.test");
    o.args.clear();
    let s = Server::with(o);
    let (st, v) = call(client().get(s.url("agents")).bearer_auth("anything")).await;
    assert_eq!(
        (st, v["error"].as_str()),
        (403, Some("Admin access not configured (set admin_token in server config)"))
    );
}
