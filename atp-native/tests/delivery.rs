//! Delivery between two real atp servers on loopback (TLS, discovery through `--peers` /
//! `--dns-override`): delivery, retry after the peer was down, no duplicate after a lost 202,
//! bounce on a permanent 403, no stranded message after kill -9 of the sender mid-delivery
//! (docs/design.md §3). Faults the network cannot produce on demand go through [`common::proxy`].

mod common;

use std::time::Duration;

use common::proxy::{Proxy, DROP_ANSWER, FORWARD, HOLD};
use common::*;
use serde_json::{json, Value};

/// alpha.test (key 1) sends to beta.test (key 2) at `beta_port`; beta trusts alpha's records
/// unless `beta_ats` says otherwise.
struct Pair {
    alpha: Server,
    beta: Option<Server>,
    beta_home: Option<tempfile::TempDir>,
    beta_port: u16,
}

fn alpha_options(beta_port: u16, home: &std::path::Path) -> Options {
    let peers = write_peers(home, &[("beta.test", beta_port)]);
    Options::new("alpha.test")
        .arg("--peers")
        .arg(peers.to_str().unwrap())
        .arg("--retry-base")
        .arg("1")
        .arg("--retry-cap")
        .arg("2")
        .arg("--no-local-registry")
}

fn beta_options(home: &std::path::Path, ats: &str) -> Options {
    let dns = write_overrides(
        home,
        &[("ats._atp.alpha.test".into(), ats.into()), ("default.atk._atp.alpha.test".into(), atk_record(1))],
    );
    Options::new("beta.test").arg("--dns-override").arg(dns.to_str().unwrap()).arg("--no-local-registry")
}

impl Pair {
    /// Starts alpha (sending to `via` or beta's port) and, if `beta_up`, beta.
    fn start(beta_up: bool, ats: &str, via: Option<u16>) -> Pair {
        let beta_port = free_port();
        let home = tempfile::tempdir().unwrap();
        seed_key(home.path(), 2);
        let (beta, beta_home) = if beta_up {
            (Some(Server::start_in(beta_options(home.path(), ats), home, beta_port)), None)
        } else {
            (None, Some(home))
        };
        let alpha_home = tempfile::tempdir().unwrap();
        seed_key(alpha_home.path(), 1);
        let alpha =
            Server::start_in(alpha_options(via.unwrap_or(beta_port), alpha_home.path()), alpha_home, free_port());
        Pair { alpha, beta, beta_home, beta_port }
    }

    fn start_beta(&mut self, ats: &str) {
        let home = self.beta_home.take().expect("beta not started yet");
        let o = beta_options(home.path(), ats);
        self.beta = Some(Server::start_in(o, home, self.beta_port));
    }

    fn beta(&self) -> &Server {
        self.beta.as_ref().expect("beta is running")
    }
}

async fn setup(p: &Pair) {
    register(&p.alpha, "alice@alpha.test", "alice-pw").await;
    if let Some(b) = &p.beta {
        register(b, "bob@beta.test", "bob-pw").await;
    }
}

fn message(nonce: &str, payload: Value) -> Value {
    json!({"from": "alice@alpha.test", "to": "bob@beta.test", "timestamp": now(), "nonce": nonce,
           "type": "message", "payload": payload})
}

async fn submit(alpha: &Server, m: &Value) {
    let (st, v) =
        call(client().post(alpha.url("message")).basic_auth("alice@alpha.test", Some("alice-pw")).json(m)).await;
    assert_eq!(st, 202, "{v}");
}

async fn inbox(s: &Server, agent: &str, pw: &str) -> Vec<Value> {
    let (st, v) =
        call(client().get(s.url(&format!("messages?agent_id={agent}&limit=10000"))).basic_auth(agent, Some(pw))).await;
    assert_eq!(st, 200, "{v}");
    v["messages"].as_array().cloned().unwrap_or_default()
}

async fn inspect(s: &Server, nonce: &str) -> Value {
    let (st, v) = call(client().get(s.url(&format!("inspect?nonce={nonce}"))).bearer_auth(ADMIN)).await;
    assert_eq!(st, 200, "{v}");
    v
}

async fn wait_status(s: &Server, nonce: &str, status: &str, secs: u64) -> Value {
    eventually(secs, || async {
        let v = inspect(s, nonce).await;
        (v["status"] == status).then_some(v)
    })
    .await
    .unwrap_or_else(|| panic!("{nonce} never became {status}: {}\nlog:\n{}", "", s.log()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_signed_and_counts_it() {
    let p = Pair::start(true, "v=atp1 allow=ip:127.0.0.1 deny=all", None);
    setup(&p).await;
    let payload = json!({"body": "Hello Bob", "subject": "hi", "n": 1.5, "big": 123456789012345678901234567890u128});
    submit(&p.alpha, &message("d-1", payload.clone())).await;
    let v = wait_status(&p.alpha, "d-1", "delivered", 20).await;
    assert_eq!(v["retry_count"], 1, "one attempt: {v}");
    let got = inbox(p.beta(), "bob@beta.test", "bob-pw").await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["payload"], payload);
    assert_eq!(got[0]["signature"]["key_id"], "default.atk._atp.alpha.test");
    // the stored copy verifies with alpha's key
    let m = atp_wasm::message::Message::from_value(got[0].clone()).unwrap();
    atp_wasm::sign::verify_message(&m, &key(1).public_key()).unwrap();
    let (_, stats) = call(client().get(p.alpha.url("stats")).bearer_auth(ADMIN)).await;
    assert_eq!(stats["messages"]["forwarded"], 1, "{stats}");
    assert_eq!(stats["queue"]["delivered"], 1, "{stats}");
    let (_, stats) = call(client().get(p.beta().url("stats")).bearer_auth(ADMIN)).await;
    assert_eq!((stats["security"]["ats_pass"].as_u64(), stats["security"]["atk_pass"].as_u64()), (Some(1), Some(1)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_until_the_peer_is_back() {
    let mut p = Pair::start(false, "v=atp1 allow=ip:127.0.0.1 deny=all", None);
    setup(&p).await;
    for i in 0..5 {
        submit(&p.alpha, &message(&format!("r-{i}"), json!({"body": i}))).await;
    }
    // the peer is down: attempts fail, the messages wait with the error recorded
    let v = eventually(20, || async {
        let v = inspect(&p.alpha, "r-0").await;
        (v["status"] == "failed").then_some(v)
    })
    .await
    .expect("r-0 waits for a retry");
    assert!(v["retry_count"].as_i64().unwrap() >= 1, "{v}");
    assert!(v["next_retry_at"].as_i64().unwrap() >= v["updated_at"].as_i64().unwrap(), "{v}");
    assert!(v["error"].as_str().unwrap().contains("451"), "{v}");
    let (_, stats) = call(client().get(p.alpha.url("stats")).bearer_auth(ADMIN)).await;
    assert!(stats["messages"]["delivery_failed"].as_u64().unwrap() >= 1, "{stats}");

    p.start_beta("v=atp1 allow=ip:127.0.0.1 deny=all");
    register(p.beta(), "bob@beta.test", "bob-pw").await;
    for i in 0..5 {
        wait_status(&p.alpha, &format!("r-{i}"), "delivered", 30).await;
    }
    let got = inbox(p.beta(), "bob@beta.test", "bob-pw").await;
    let mut nonces: Vec<_> = got.iter().map(|m| m["nonce"].as_str().unwrap().to_owned()).collect();
    nonces.sort();
    assert_eq!(nonces, (0..5).map(|i| format!("r-{i}")).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_202_does_not_duplicate() {
    let beta_port = free_port();
    let proxy = Proxy::start(beta_port, Duration::ZERO);
    proxy.set(DROP_ANSWER);
    let beta_home = tempfile::tempdir().unwrap();
    seed_key(beta_home.path(), 2);
    let beta =
        Server::start_in(beta_options(beta_home.path(), "v=atp1 allow=ip:127.0.0.1 deny=all"), beta_home, beta_port);
    let alpha_home = tempfile::tempdir().unwrap();
    seed_key(alpha_home.path(), 1);
    let alpha = Server::start_in(alpha_options(proxy.port, alpha_home.path()), alpha_home, free_port());
    register(&alpha, "alice@alpha.test", "alice-pw").await;
    register(&beta, "bob@beta.test", "bob-pw").await;

    submit(&alpha, &message("lost-1", json!({"body": "once"}))).await;
    // the receiver stored it, the sender never heard
    eventually(20, || async { (inbox(&beta, "bob@beta.test", "bob-pw").await.len() == 1).then_some(()) })
        .await
        .expect("beta stored the message");
    eventually(20, || async { (inspect(&alpha, "lost-1").await["status"] == "failed").then_some(()) })
        .await
        .expect("alpha saw no answer and waits to retry");
    proxy.set(FORWARD);
    let v = wait_status(&alpha, "lost-1", "delivered", 30).await;
    assert!(v["retry_count"].as_i64().unwrap() >= 2, "{v}");
    assert!(proxy.dropped.load(std::sync::atomic::Ordering::SeqCst) >= 1);
    let got = inbox(&beta, "bob@beta.test", "bob-pw").await;
    assert_eq!(got.len(), 1, "exactly once: {got:?}");
    let (_, stats) = call(client().get(beta.url("stats")).bearer_auth(ADMIN)).await;
    assert!(stats["messages"]["duplicates"].as_u64().unwrap() >= 1, "the retry was answered as a repeat: {stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_403_bounces_with_the_receivers_error() {
    // beta reads alpha's ATS as "nobody may send": 403 5.7.26
    let p = Pair::start(true, "v=atp1 deny=all", None);
    setup(&p).await;
    submit(&p.alpha, &message("b-1", json!({"body": "refused"}))).await;
    let v = wait_status(&p.alpha, "b-1", "bounced", 20).await;
    assert_eq!(v["retry_count"], 1, "bounced at the first answer: {v}");
    assert!(v["error"].as_str().unwrap().contains("5.7.26"), "{v}");
    let notices = inbox(&p.alpha, "alice@alpha.test", "alice-pw").await;
    assert_eq!(notices.len(), 1, "{notices:?}");
    let n = &notices[0];
    assert_eq!(n["from"], "postmaster@alpha.test");
    assert_eq!(n["payload"]["subject"], "Delivery Failure: b-1");
    assert_eq!(n["payload"]["original_nonce"], "b-1");
    assert_eq!(n["payload"]["status"], 403);
    assert!(n["payload"]["error_code"].as_str().unwrap().contains("5.7.26"), "{n}");
    assert!(n["payload"]["body"].as_str().unwrap().starts_with("Message to bob@beta.test could not be delivered"));
    assert!(inbox(p.beta(), "bob@beta.test", "bob-pw").await.is_empty());
    let (_, stats) = call(client().get(p.alpha.url("stats")).bearer_auth(ADMIN)).await;
    assert_eq!(stats["messages"]["bounced"], 1, "{stats}");
    assert_eq!(stats["queue"]["bounced"], 1, "{stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_domain_bounces_and_unknown_recipient_bounces() {
    let p = Pair::start(true, "v=atp1 allow=ip:127.0.0.1 deny=all", None);
    setup(&p).await;
    let mut m = message("u-1", json!({"body": "nobody home"}));
    m["to"] = json!("carol@beta.test");
    submit(&p.alpha, &m).await;
    let v = wait_status(&p.alpha, "u-1", "bounced", 20).await;
    assert!(v["error"].as_str().unwrap().contains("5.1.1"), "{v}");
    let mut m = message("u-2", json!({"body": "no such domain"}));
    m["to"] = json!("dave@nowhere.invalid");
    submit(&p.alpha, &m).await;
    let v = wait_status(&p.alpha, "u-2", "bounced", 20).await;
    assert!(v["error"].as_str().unwrap().contains("no ATP service"), "{v}");
    assert_eq!(inbox(&p.alpha, "alice@alpha.test", "alice-pw").await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_delivery_strands_nothing() {
    let beta_port = free_port();
    let proxy = Proxy::start(beta_port, Duration::from_secs(3));
    proxy.set(HOLD);
    let beta_home = tempfile::tempdir().unwrap();
    seed_key(beta_home.path(), 2);
    let beta =
        Server::start_in(beta_options(beta_home.path(), "v=atp1 allow=ip:127.0.0.1 deny=all"), beta_home, beta_port);
    // alpha's home is a subdirectory, so its options (peers.toml) live beside it across the restart
    let alpha_dir = tempfile::tempdir().unwrap();
    let alpha_home = tempfile::TempDir::new_in(alpha_dir.path()).unwrap();
    seed_key(alpha_home.path(), 1);
    let alpha_port = free_port();
    let o = || alpha_options(proxy.port, alpha_dir.path());
    let alpha = Server::start_in(o(), alpha_home, alpha_port);
    register(&alpha, "alice@alpha.test", "alice-pw").await;
    register(&beta, "bob@beta.test", "bob-pw").await;
    const N: usize = 40;
    for i in 0..N {
        submit(&alpha, &message(&format!("k-{i}"), json!({"body": i}))).await;
    }
    // attempts are in flight (held by the proxy): kill the sender now
    let delivering = eventually(10, || async {
        let (_, stats) = call(client().get(alpha.url("stats")).bearer_auth(ADMIN)).await;
        let n = stats["queue"]["delivering"].as_i64().unwrap_or(0);
        (n > 0).then_some(n)
    })
    .await;
    assert!(delivering.is_some(), "nothing in flight to kill; log:\n{}", alpha.log());
    let home = alpha.stop();
    proxy.set(FORWARD);
    let alpha = Server::start_in(o(), home, alpha_port);
    let got = eventually(60, || async {
        let got = inbox(&beta, "bob@beta.test", "bob-pw").await;
        (got.len() >= N).then_some(got)
    })
    .await
    .unwrap_or_else(|| panic!("not everything arrived; alpha log:\n{}", alpha.log()));
    let mut nonces: Vec<_> = got.iter().map(|m| m["nonce"].as_str().unwrap().to_owned()).collect();
    nonces.sort();
    nonces.dedup();
    assert_eq!((got.len(), nonces.len()), (N, N), "each message exactly once");
    for i in 0..N {
        wait_status(&alpha, &format!("k-{i}"), "delivered", 20).await;
    }
    assert!(alpha.log().contains("released messages a previous run was delivering"), "{}", alpha.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_past_the_maximum_age_bounces() {
    // beta never comes up; alpha gives up after 3 s
    let beta_port = free_port();
    let home = tempfile::tempdir().unwrap();
    seed_key(home.path(), 1);
    let o = alpha_options(beta_port, home.path()).arg("--max-age").arg("3");
    let alpha = Server::start_in(o, home, free_port());
    register(&alpha, "alice@alpha.test", "alice-pw").await;
    submit(&alpha, &message("old-1", json!({"body": "too late"}))).await;
    let v = wait_status(&alpha, "old-1", "bounced", 30).await;
    assert!(v["retry_count"].as_i64().unwrap() >= 2, "retried before giving up: {v}");
    assert!(v["last_error"].as_str().unwrap().starts_with("554 5.4.7: undeliverable for 3 s"), "{v}");
    let notices = inbox(&alpha, "alice@alpha.test", "alice-pw").await;
    assert_eq!(notices.len(), 1);
    assert_eq!(notices[0]["payload"]["error_code"], "554 5.4.7");
    assert!(notices[0]["payload"]["error"].as_str().unwrap().contains("last error: "), "{}", notices[0]);
}
