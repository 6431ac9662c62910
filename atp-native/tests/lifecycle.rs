//! The server as a process: configuration precedence (flags > `ATP_*` > config.toml > defaults),
//! start-up errors, registration policies, durability across a crash, two domains in one home,
//! graceful shutdown on SIGTERM, and the domain's counters across a restart.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

fn msg(from: &str, to: &str, nonce: &str) -> serde_json::Value {
    json!({"from": from, "to": to, "timestamp": now(), "nonce": nonce, "type": "message", "payload": {"body": nonce}})
}

/// Runs `atp server start` expecting it to fail; returns its output.
fn start_fails(args: &[&str], config: Option<&str>) -> String {
    let home = tempfile::tempdir().unwrap();
    if let Some(c) = config {
        std::fs::write(home.path().join("config.toml"), c).unwrap();
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_atp"))
        .args(["server", "start", "--host", "127.0.0.1", "--home"])
        .arg(home.path())
        .args(args)
        .env_remove("ATP_DOMAIN")
        .env_remove("ATP_HOME")
        .output()
        .unwrap();
    assert!(!out.status.success(), "should have failed: {out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn start_up_errors() {
    assert!(start_fails(&[], None).contains("no domain"));
    assert!(start_fails(&["--domain", "bad_domain"], None).contains("--domain"));
    assert!(start_fails(&["--domain", "a.test", "--registration", "token"], None).contains("admin token"));
    assert!(start_fails(&["--domain", "a.test"], Some("local_mode = [")).contains("config.toml"));
    assert!(start_fails(&["--domain", "a.test"], Some("local_mode = true\ndns_override_file = \"/nope.toml\"\n"))
        .contains("/nope.toml"));
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port().to_string();
    assert!(start_fails(&["--domain", "a.test", "--port", &port], None).contains("cannot listen"));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_atp")).arg("--version").output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("atp {}", env!("CARGO_PKG_VERSION")));
}

#[tokio::test]
async fn configuration_precedence() {
    // everything from config.toml
    let port = free_port();
    let mut o = Options::new("ignored.test").config(&format!(
        "[server]\ndomain = \"file.test\"\nport = {port}\nadmin_token = \"file-token\"\nmax_message_size = 4096\n"
    ));
    o.flags = false;
    o.args.clear();
    let s = Server::start_in(o, tempfile::tempdir().unwrap(), port);
    let c = client();
    let (_, v) = call(c.get(s.url("health"))).await;
    assert_eq!(v["domain"], "file.test");
    let (_, v) = call(c.get(s.url("capabilities"))).await;
    assert_eq!(v["max_payload_size"], 4096, "[server] max_message_size is honoured");
    assert_eq!(call(c.get(s.url("agents")).bearer_auth("file-token")).await.0, 200);
    let (st, v) = call(c.post(s.url("message")).body(vec![b' '; 5000])).await;
    assert_eq!((st, v["max_size"].as_u64()), (400, Some(4096)));
    drop(s);

    // the environment beats the file, a flag beats the environment
    let port = free_port();
    let mut o = Options::new("flag.test").config("[server]\ndomain = \"file.test\"\nadmin_token = \"file-token\"\n");
    o.flags = false;
    o.args = vec!["--domain".into(), "flag.test".into(), "--port".into(), port.to_string()];
    o.env = vec![("ATP_ADMIN_TOKEN".into(), "env-token".into()), ("ATP_DOMAIN".into(), "env.test".into())];
    let s = Server::start_in(o, tempfile::tempdir().unwrap(), port);
    let (_, v) = call(c.get(s.url("health"))).await;
    assert_eq!(v["domain"], "flag.test");
    assert_eq!(call(c.get(s.url("agents")).bearer_auth("env-token")).await.0, 200);
    assert_eq!(call(c.get(s.url("agents")).bearer_auth("file-token")).await.0, 403);
}

#[tokio::test]
async fn registration_policies() {
    let c = client();
    let body = json!({"agent_id": "alice", "password": "pw"});

    let s = Server::with(Options::new("beta.test").arg("--registration").arg("token"));
    let (st, v) = call(c.post(s.url("register")).json(&body)).await;
    assert_eq!((st, v["error"].as_str()), (401, Some("Admin authentication required")));
    assert_eq!(call(c.post(s.url("register")).bearer_auth("wrong").json(&body)).await.0, 403);
    let (st, v) = call(c.post(s.url("register")).bearer_auth(ADMIN).json(&body)).await;
    assert_eq!((st, v["agent_id"].as_str()), (201, Some("alice@beta.test")));
    drop(s);

    let mut o = Options::new("beta.test");
    o.env = vec![("ATP_REGISTRATION".into(), "closed".into())];
    let s = Server::with(o);
    let (st, v) = call(c.post(s.url("register")).bearer_auth(ADMIN).json(&body)).await;
    assert_eq!(
        (st, v["error"].as_str(), v["error_code"].as_str()),
        (403, Some("Registration is closed"), Some("550 5.7.0"))
    );
}

#[tokio::test]
async fn accepted_means_committed() {
    let s = Server::start("beta.test");
    let c = client();
    register(&s, "alice", "pw").await;
    register(&s, "bob", "pw").await;
    let post = || c.post(s.url("message")).basic_auth("alice@beta.test", Some("pw"));
    let msgs: Vec<_> = (0..50).map(|i| msg("alice@beta.test", "bob@beta.test", &format!("c-{i}"))).collect();
    let tasks: Vec<_> = msgs.iter().map(|m| tokio::spawn(post().json(m).send())).collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap().status(), 202);
    }
    assert_eq!(call(post().json(&msg("alice@beta.test", "zed@gamma.test", "q-1"))).await.0, 202);
    // SIGKILL right after the last 202: no graceful anything
    let home = s.stop();
    let s = Server::start_in(Options::new("beta.test"), home, free_port());
    let (st, v) = call(c.get(s.url("messages?limit=500")).basic_auth("bob@beta.test", Some("pw"))).await;
    assert_eq!((st, v["count"].as_u64()), (200, Some(50)), "every accepted message survived");
    // the message for another domain survived too (the delivery engine may already have bounced
    // it: gamma.test publishes no ATP service)
    let (st, v) = call(c.get(s.url("inspect?nonce=q-1")).bearer_auth(ADMIN)).await;
    assert_eq!(st, 200, "{v}");
    assert!(["queued", "delivering", "failed", "bounced"].contains(&v["status"].as_str().unwrap()), "{v}");
    // the dedup memory survived too: an exact repeat is accepted and not stored again
    let (st, _) = call(c.post(s.url("message")).basic_auth("alice@beta.test", Some("pw")).json(&msgs[0])).await;
    assert_eq!(st, 202);
    let (_, stats) = call(c.get(s.url("stats")).bearer_auth(ADMIN)).await;
    assert_eq!(stats["messages"]["duplicates"], 1);
    assert_eq!(call(c.get(s.url("messages?limit=500")).basic_auth("bob@beta.test", Some("pw"))).await.1["count"], 50);
}

#[tokio::test]
async fn two_domains_share_one_home() {
    // both servers on the same --home
    let home = tempfile::tempdir().unwrap();
    let shared = home.path().to_owned();
    let start = |domain: &str| {
        let o = Options::new(domain);
        let port = free_port();
        let mut cmd = Server::command(&o, &shared, port);
        let log = shared.join(format!("{domain}.log"));
        cmd.stderr(std::fs::File::create(&log).unwrap());
        let child = cmd.spawn().unwrap();
        (child, port, log)
    };
    let (mut ca, pa, la) = start("alpha.test");
    let (mut cb, pb, lb) = start("beta.test");
    let wait = |log: &std::path::Path| {
        for _ in 0..500 {
            if std::fs::read_to_string(log).unwrap_or_default().contains("Starting ATP Server") {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("{}", std::fs::read_to_string(log).unwrap_or_default());
    };
    wait(&la);
    wait(&lb);
    let c = client();
    let url = |port: u16, p: &str| format!("https://127.0.0.1:{port}/.well-known/atp/v1/{p}");
    for (port, domain) in [(pa, "alpha.test"), (pb, "beta.test")] {
        let (st, v) = call(c.post(url(port, "register")).json(&json!({"agent_id": "same", "password": "pw"}))).await;
        assert_eq!((st, v["agent_id"].as_str().unwrap().to_owned()), (201, format!("same@{domain}")));
        let (_, v) = call(c.get(url(port, "agents")).bearer_auth(ADMIN)).await;
        assert_eq!(v["agents"], json!([format!("same@{domain}")]));
    }
    assert!(shared.join("data/alpha.test.db").exists() && shared.join("data/beta.test.db").exists());
    let _ = ca.kill();
    let _ = cb.kill();
    let _ = ca.wait();
    let _ = cb.wait();
}

#[tokio::test]
async fn graceful_shutdown_on_sigterm() {
    let mut s = Server::start("beta.test");
    let c = client();
    register(&s, "alice", "pw").await;
    // an idle HTTP/1.1 keep-alive connection is closed at once; an idle h2 connection may hold the
    // drain for its 10 s at most
    let h1 = reqwest::Client::builder().danger_accept_invalid_certs(true).http1_only().build().unwrap();
    assert_eq!(call(h1.get(s.url("health"))).await.0, 200);
    let t0 = std::time::Instant::now();
    let status = s.terminate(Duration::from_secs(20)).expect("exits after SIGTERM");
    assert!(t0.elapsed() < Duration::from_secs(5), "took {:?}", t0.elapsed());
    assert!(status.success(), "{status:?}\n{}", s.log());
    let log = s.log();
    assert!(log.contains("shutdown signal") && log.contains("stopped"), "{log}");
    // restarting in the same home works and keeps the agent
    let home = s.stop();
    let s = Server::start_in(Options::new("beta.test"), home, free_port());
    let (_, v) = call(c.get(s.url("agents")).bearer_auth(ADMIN)).await;
    assert_eq!(v["agents"], json!(["alice@beta.test"]));
}

/// The domain's counters are in the database (docs/design.md §4 "Counters"): what a server counted
/// is flushed at shutdown (or every second), and `stats` / `metrics` after a restart show it, with
/// the new process's counts added.
#[tokio::test]
async fn counters_survive_a_restart() {
    let mut s = Server::start("beta.test");
    let c = client();
    register(&s, "alice", "pw").await;
    let post = |s: &Server| c.post(s.url("message")).basic_auth("alice@beta.test", Some("pw"));
    let m = msg("alice@beta.test", "alice@beta.test", "k-1");
    assert_eq!(call(post(&s).json(&m)).await.0, 202);
    assert_eq!(call(post(&s).json(&m)).await.0, 202, "an exact repeat");
    let (st, _) = call(c.get(s.url("messages")).basic_auth("alice@beta.test", Some("wrong"))).await;
    assert_eq!(st, 401);
    // No `stats` before the restart: the counts reach the database by the server's own flushes.
    assert!(s.terminate(Duration::from_secs(20)).expect("exits after SIGTERM").success(), "{}", s.log());
    let home = s.stop();
    let s = Server::start_in(Options::new("beta.test"), home, free_port());
    let (_, stats) = call(c.get(s.url("stats")).bearer_auth(ADMIN)).await;
    let counts = |v: &serde_json::Value| {
        let m = &v["messages"];
        (m["received"].as_u64(), m["delivered_local"].as_u64(), m["duplicates"].as_u64())
    };
    assert_eq!(counts(&stats), (Some(2), Some(1), Some(1)), "{stats}");
    assert_eq!(stats["rejections"]["535 5.7.8"], 1, "{stats}");
    // This process's counts add to them.
    assert_eq!(call(post(&s).json(&msg("alice@beta.test", "alice@beta.test", "k-2"))).await.0, 202);
    let (_, stats) = call(c.get(s.url("stats")).bearer_auth(ADMIN)).await;
    assert_eq!(counts(&stats), (Some(3), Some(2), Some(1)), "{stats}");
    let text = c.get(s.url("metrics")).bearer_auth(ADMIN).send().await.unwrap().text().await.unwrap();
    assert!(text.contains("atp_messages_delivered_local_total 2\n"), "{text}");
}
