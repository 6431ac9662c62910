//! The `atp` binary on PostgreSQL (docs/design.md §5d): two nodes serving one domain from one
//! throwaway cluster (common/postgres.rs), the database chosen by `--database`, `ATP_DATABASE` and
//! `[store] url`, and the start-up refusals (a newer schema, a bad URL).

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::postgres::Postgres;
use common::*;
use serde_json::{json, Value};

/// Copies `from`'s domain key into `to` (how a second node gets the domain key).
fn copy_keys(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to.join("keys")).unwrap();
    for e in std::fs::read_dir(from.join("keys")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join("keys").join(e.file_name())).unwrap();
    }
}

fn message(from: &str, to: &str, nonce: &str) -> Value {
    json!({"from": from, "to": to, "timestamp": now(), "nonce": nonce, "type": "message", "payload": {"n": nonce}})
}

/// The nonces of an agent's inbox after `after`, and the page's `last_id`.
async fn inbox(s: &Server, agent: &str, pw: &str, after: i64, limit: usize) -> (Vec<String>, Option<i64>) {
    let (st, v) = call(
        client()
            .get(s.url(&format!("messages?agent_id={agent}&after_id={after}&limit={limit}")))
            .basic_auth(agent, Some(pw)),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let nonces = v["messages"].as_array().unwrap().iter().map(|m| m["nonce"].as_str().unwrap().to_owned()).collect();
    (nonces, v["last_id"].as_i64())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_serve_one_domain() {
    let pg = tokio::task::spawn_blocking(Postgres::start).await.unwrap();
    let url = pg.create_db("atp");
    let one = Server::with(Options::new("a.test").arg("--database").arg(&url));
    // The second node: its own home with the first node's key, the database from the environment.
    let home2 = tempfile::tempdir().unwrap();
    copy_keys(&one.home_path(), home2.path());
    let mut o2 = Options::new("a.test");
    o2.env.push(("ATP_DATABASE".into(), url.clone()));
    let two = Server::start_in(o2, home2, free_port());
    assert!(two.log().contains("Using the shared database postgres://postgres@127.0.0.1"), "{}", two.log());
    assert_eq!(
        std::fs::read(one.home_path().join("keys/default.key")).unwrap(),
        std::fs::read(two.home_path().join("keys/default.key")).unwrap(),
        "one domain key"
    );
    // Agents registered on either node exist on both; credentials are checked by either.
    register(&one, "alice@a.test", "alice-pw").await;
    register(&two, "bob@a.test", "bob-pw").await;
    let (st, v) =
        call(client().post(two.url("register")).json(&json!({"agent_id": "alice@a.test", "password": "x"}))).await;
    assert_eq!(st, 409, "taken on the other node: {v}");
    let c = client();
    for (i, s) in [&one, &two, &one, &two].into_iter().enumerate() {
        let m = message("alice@a.test", "bob@a.test", &format!("m{i}"));
        let (st, v) = call(c.post(s.url("message")).basic_auth("alice@a.test", Some("alice-pw")).json(&m)).await;
        assert_eq!(st, 202, "{v}");
        if i == 0 {
            // The same submission again, on the other node: answered 202, stored once.
            let (st, v) = call(c.post(two.url("message")).basic_auth("alice@a.test", Some("alice-pw")).json(&m)).await;
            assert_eq!(st, 202, "{v}");
        }
    }
    let (st, _) = call(c.post(two.url("message")).basic_auth("alice@a.test", Some("wrong")).json(&message(
        "alice@a.test",
        "bob@a.test",
        "w",
    )))
    .await;
    assert_eq!(st, 401);
    // bob reads on either node, with one cursor: ids per agent, in order, each message once.
    assert_eq!(
        inbox(&one, "bob@a.test", "bob-pw", 0, 500).await,
        (vec!["m0".into(), "m1".into(), "m2".into(), "m3".into()], Some(4))
    );
    let (page, last) = inbox(&one, "bob@a.test", "bob-pw", 0, 2).await;
    assert_eq!((page.len(), last), (2, Some(2)));
    assert_eq!(inbox(&two, "bob@a.test", "bob-pw", 2, 500).await, (vec!["m2".into(), "m3".into()], Some(4)));
    // Admin views describe the whole domain on each node.
    for s in [&one, &two] {
        let (_, stats) = call(c.get(s.url("stats")).bearer_auth(ADMIN)).await;
        assert_eq!(stats["agents"], json!(["alice@a.test", "bob@a.test"]), "{stats}");
        assert_eq!(stats["queue"]["delivered"], 4, "{stats}");
        let (_, info) = call(c.get(s.url("inspect?nonce=m3")).bearer_auth(ADMIN)).await;
        assert_eq!(info["status"], "delivered", "{info}");
    }
    // The counters are the domain's: `stats` on a node flushes its own counts and shows every
    // node's flushed ones. Node two's counts are in once it was asked; then either node shows the
    // sum (m0, m2 stored by one, m1, m3 and the repeat of m0 by two; the refusals on two).
    call(c.get(two.url("stats")).bearer_auth(ADMIN)).await;
    for s in [&one, &two] {
        let (_, stats) = call(c.get(s.url("stats")).bearer_auth(ADMIN)).await;
        let m = &stats["messages"];
        assert_eq!((m["delivered_local"].as_u64(), m["duplicates"].as_u64()), (Some(4), Some(1)), "{stats}");
        assert_eq!(
            (stats["rejections"]["535 5.7.8"].as_u64(), stats["rejections"]["550 5.1.6"].as_u64()),
            (Some(1), Some(1)),
            "{stats}"
        );
        let text = c.get(s.url("metrics")).bearer_auth(ADMIN).send().await.unwrap().text().await.unwrap();
        assert!(text.contains("atp_agents_registered_total 2\n"), "one registration on each node: {text}");
    }
    // `agent list` of the CLI asks a node; either answers for the domain.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_atp"))
        .args(["agent", "list", "--server", &format!("https://127.0.0.1:{}", two.port), "--admin-token", ADMIN])
        .arg("--no-verify")
        .env_remove("ATP_HOME")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("alice@a.test") && text.contains("bob@a.test"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // No SQLite file was made.
    assert!(!one.home_path().join("data/a.test.db").exists());
    drop((one, two, pg));
}

/// Starts `atp server start` expecting it to exit at once; returns its log.
fn start_fails(o: &Options) -> String {
    let home = tempfile::tempdir().unwrap();
    let mut cmd = Server::command(o, home.path(), free_port());
    cmd.stdin(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "atp did not exit");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!status.success());
    std::fs::read_to_string(home.path().join("server.log")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_a_newer_schema_and_a_bad_url() {
    let pg = tokio::task::spawn_blocking(Postgres::start).await.unwrap();
    let url = pg.create_db("atp");
    drop(Server::with(Options::new("a.test").arg("--database").arg(&url)));
    pg.psql("atp", "UPDATE atp_schema SET version = version + 1");
    let log = start_fails(&Options::new("a.test").arg("--database").arg(&url));
    assert!(log.contains("newer than this atp knows"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
    let log = start_fails(&Options::new("a.test").arg("--database").arg("mysql://u:secret@h/d"));
    assert!(log.contains("expected sqlite:///path or postgres://"), "{log}");
    assert!(!log.contains("secret"), "the password is not shown: {log}");
    // A database that does not answer: a clear error, the password not shown.
    let log = start_fails(&Options::new("a.test").arg("--database").arg("postgres://u:secret@127.0.0.1:1/atp"));
    assert!(log.contains("postgres://u:***@127.0.0.1:1/atp") && !log.contains("secret"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_urls_from_the_flag_and_config() {
    let dir = tempfile::tempdir().unwrap();
    let custom = dir.path().join("custom.db");
    let s = Server::with(Options::new("a.test").arg("--database").arg(&format!("sqlite://{}", custom.display())));
    register(&s, "alice@a.test", "pw").await;
    assert!(custom.exists() && !s.home_path().join("data/a.test.db").exists());
    drop(s);
    let other = dir.path().join("from-config.db");
    let s = Server::with(Options::new("a.test").config(&format!("[store]\nurl = \"sqlite://{}\"\n", other.display())));
    register(&s, "bob@a.test", "pw").await;
    assert!(other.exists());
    // The lock file still keeps one process per SQLite database.
    let log = start_fails(&Options::new("a.test").arg("--database").arg(&format!("sqlite://{}", other.display())));
    assert!(log.contains("in use by another atp server"), "{log}");
}

/// `atp store migrate`: a domain served from SQLite moves to PostgreSQL; after the move the
/// agent reads on with the cursor it had.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_migrate_moves_a_sqlite_home_to_postgres() {
    let pg = tokio::task::spawn_blocking(Postgres::start).await.unwrap();
    let url = pg.create_db("atp");
    let s = Server::start("a.test");
    register(&s, "alice@a.test", "alice-pw").await;
    register(&s, "bob@a.test", "bob-pw").await;
    let c = client();
    for i in 0..3 {
        let m = message("alice@a.test", "bob@a.test", &format!("s{i}"));
        let (st, v) = call(c.post(s.url("message")).basic_auth("alice@a.test", Some("alice-pw")).json(&m)).await;
        assert_eq!(st, 202, "{v}");
    }
    let (before, cursor) = inbox(&s, "bob@a.test", "bob-pw", 0, 2).await;
    let db = s.home_path().join("data/a.test.db");
    let migrate = |from: &str, to: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_atp"))
            .args(["store", "migrate", "--from", from, "--to", to])
            .env_remove("ATP_HOME")
            .output()
            .unwrap()
    };
    let sqlite_url = format!("sqlite://{}", db.display());
    let out = migrate(&sqlite_url, &url);
    assert!(!out.status.success(), "refused while the server runs");
    assert!(String::from_utf8_lossy(&out.stderr).contains("in use by another atp server"), "{out:?}");
    let home = s.stop();
    let out = migrate(&sqlite_url, &url);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Copied 2 agents, 3 messages, 3 dedup records"), "{text}");
    let s = Server::start_in(Options::new("a.test").arg("--database").arg(&url), home, free_port());
    assert_eq!(inbox(&s, "bob@a.test", "bob-pw", 0, 500).await.0.len(), 3);
    let (rest, _) = inbox(&s, "bob@a.test", "bob-pw", cursor.unwrap(), 500).await;
    assert_eq!((before.len(), rest), (2, vec!["s2".to_string()]), "the cursor stays valid");
    let m = message("alice@a.test", "bob@a.test", "s3");
    let (st, v) = call(c.post(s.url("message")).basic_auth("alice@a.test", Some("alice-pw")).json(&m)).await;
    assert_eq!(st, 202, "{v}");
    let out = migrate(&sqlite_url, &url);
    assert!(String::from_utf8_lossy(&out.stderr).contains("already holds"), "{out:?}");
    drop((s, pg));
}

/// A message accepted by one node wakes a long poll (and so a stream: the same inbox watch) waiting
/// on the other node at once: `NOTIFY atp_inbox` reaches every node (docs/design.md §5c, §5d).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_on_one_node_wakes_a_waiter_on_the_other() {
    let pg = tokio::task::spawn_blocking(Postgres::start).await.unwrap();
    let url = pg.create_db("atp");
    let one = Server::with(Options::new("a.test").arg("--database").arg(&url));
    let home2 = tempfile::tempdir().unwrap();
    copy_keys(&one.home_path(), home2.path());
    let two = Server::start_in(Options::new("a.test").arg("--database").arg(&url), home2, free_port());
    register(&one, "alice@a.test", "alice-pw").await;
    register(&one, "bob@a.test", "bob-pw").await;
    // bob waits on node two (at most 60 s); the poll holds a stream place while it waits.
    let poll = tokio::spawn({
        let url = two.url("messages?agent_id=bob@a.test&after_id=0&wait=60");
        async move {
            let started = Instant::now();
            let r = call(client().get(url).basic_auth("bob@a.test", Some("bob-pw"))).await;
            (r, started.elapsed())
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, stats) = call(client().get(two.url("stats")).bearer_auth(ADMIN)).await;
        if stats["streams"]["open"] == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "the long poll never started waiting: {stats}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let m = message("alice@a.test", "bob@a.test", "across");
    let (st, v) = call(client().post(one.url("message")).basic_auth("alice@a.test", Some("alice-pw")).json(&m)).await;
    assert_eq!(st, 202, "{v}");
    let ((st, v), waited) = poll.await.unwrap();
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["messages"][0]["nonce"], "across", "{v}");
    // Without the announcement the poll would have answered only at the end of its 60 s (then
    // reading the message anyway); woken, it answers at once. 30 s is far beyond any wake-up.
    assert!(waited < Duration::from_secs(30), "woken by the other node's commit, not by the timeout: {waited:?}");
    drop((one, two, pg));
}
