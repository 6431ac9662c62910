//! Push delivery and acknowledgement against the real binary (docs/protocol.md §6.5): the inbox
//! stream over TLS — backlog, a connection dropped in the middle of it and resumed with
//! `Last-Event-ID` (every message exactly once), live events woken by a local submission and by
//! an inbound transfer, the per-agent stream limit — the long poll, and `POST messages/ack`.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// beta.test, with gamma.test (key seed 1, ATS allows loopback) as a known sender, two streams per
/// agent.
fn start() -> Server {
    let home = tempfile::tempdir().unwrap();
    let dns = write_overrides(
        home.path(),
        &[
            ("ats._atp.gamma.test".into(), "v=atp1 allow=ip:127.0.0.1 deny=all".into()),
            ("default.atk._atp.gamma.test".into(), atk_record(1)),
        ],
    );
    let o = Options::new("beta.test").config(&format!(
        "local_mode = true\ndns_override_file = \"{}\"\n\n[limits]\nstreams_per_agent = 2\n",
        dns.display()
    ));
    Server::start_in(o, home, free_port())
}

fn message(from: &str, to: &str, body: &str) -> Value {
    json!({"from": from, "to": to, "timestamp": now(), "nonce": atp_wasm::message::new_nonce(),
           "type": "message", "payload": {"body": body}})
}

async fn submit(s: &Server, who: &str, to: &str, body: &str) {
    let (st, v) = call(client().post(s.url("message")).basic_auth(who, Some("pw")).json(&message(who, to, body))).await;
    assert_eq!(st, 202, "{v}");
}

/// An open event stream, read chunk by chunk.
struct Events {
    resp: reqwest::Response,
    buf: String,
}

impl Events {
    async fn open(s: &Server, who: &str, last_event_id: Option<i64>) -> Events {
        let mut req = client().get(s.url("messages/stream")).basic_auth(who, Some("pw"));
        if let Some(id) = last_event_id {
            req = req.header("Last-Event-ID", id.to_string());
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        assert_eq!(resp.headers()["cache-control"], "no-cache");
        Events { resp, buf: String::new() }
    }

    /// The next event (`id`, message JSON), skipping comments; panics after `secs` seconds.
    async fn next(&mut self, secs: u64) -> (i64, Value) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            while let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let id = block.lines().find_map(|l| l.strip_prefix("id: "));
                let data = block.lines().find_map(|l| l.strip_prefix("data: "));
                if let (Some(id), Some(data)) = (id, data) {
                    assert!(block.contains("\nevent: message\n"), "{block}");
                    return (id.parse().unwrap(), serde_json::from_str(data).unwrap());
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let chunk = tokio::time::timeout(left, self.resp.chunk()).await.expect("an event in time");
            self.buf.push_str(std::str::from_utf8(&chunk.unwrap().expect("the stream goes on")).unwrap());
        }
    }
}

async fn inbox(s: &Server, who: &str) -> Vec<Value> {
    let (st, v) = call(client().get(s.url("messages")).basic_auth(who, Some("pw"))).await;
    assert_eq!(st, 200);
    v["messages"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_resume_live_and_ack() {
    let s = start();
    let bob = register(&s, "bob", "pw").await;
    let alice = register(&s, "alice", "pw").await;
    for i in 1..=6 {
        submit(&s, &alice, &bob, &format!("backlog {i}")).await;
    }
    submit(&s, &bob, &alice, "for alice").await;

    // Drop the stream in the middle of the backlog, then resume with Last-Event-ID.
    let mut got = Vec::new();
    let mut ev = Events::open(&s, &bob, None).await;
    for _ in 0..3 {
        got.push(ev.next(30).await);
    }
    drop(ev);
    let mut ev = Events::open(&s, &bob, Some(got.last().unwrap().0)).await;
    for _ in 0..3 {
        got.push(ev.next(30).await);
    }
    // Live: a local submission, then an inbound transfer, each arrives without polling (the
    // fallback read comes only with the 15 s heartbeat).
    let started = Instant::now();
    submit(&s, &alice, &bob, "live local").await;
    got.push(ev.next(10).await);
    let transfer = signed(message("carol@gamma.test", &bob, "live transfer"), &key(1), "gamma.test");
    let (st, v) = call(client().post(s.url("message")).body(transfer)).await;
    assert_eq!(st, 202, "{v}");
    got.push(ev.next(10).await);
    assert!(started.elapsed() < Duration::from_secs(10), "live events took {:?}", started.elapsed());

    let page = inbox(&s, &bob).await;
    assert_eq!(page.len(), 8);
    let ids: Vec<i64> = got.iter().map(|(id, _)| *id).collect();
    let mut unique = ids.clone();
    unique.dedup();
    assert_eq!((unique.len(), ids.windows(2).all(|w| w[0] < w[1])), (8, true), "each exactly once, in order: {ids:?}");
    assert_eq!(got.iter().map(|(_, m)| m.clone()).collect::<Vec<_>>(), page, "data is what GET messages returns");
    assert_eq!(got[7].1["from"], "carol@gamma.test");

    // Acknowledge the first five: gone from GET messages; alice's message cannot be touched.
    let (st, v) =
        call(client().post(s.url("messages/ack")).basic_auth(&bob, Some("pw")).json(&json!({"up_to_id": ids[4]})))
            .await;
    assert_eq!((st, v), (200, json!({"status": "acknowledged", "removed": 5})));
    let alices = inbox(&s, &alice).await;
    assert_eq!(alices.len(), 1);
    let (st, v) = call(client().get(s.url("messages?after_id=0")).basic_auth(&alice, Some("pw"))).await;
    let alice_id = v["last_id"].as_i64().unwrap();
    assert_eq!(st, 200);
    let (st, code) =
        refusal(client().post(s.url("messages/ack")).basic_auth(&bob, Some("pw")).json(&json!({"ids": [alice_id]})))
            .await;
    assert_eq!((st, code.as_str()), (404, "550 5.1.0"));
    assert_eq!(inbox(&s, &alice).await, alices, "alice's mail untouched");
    let left = inbox(&s, &bob).await;
    assert_eq!(left, page[5..].to_vec());
    let (st, v) =
        call(client().post(s.url("messages/ack")).basic_auth(&bob, Some("pw")).json(&json!({"ids": [ids[5], ids[6]]})))
            .await;
    assert_eq!((st, v["removed"].as_u64()), (200, Some(2)));
    assert_eq!(inbox(&s, &bob).await, page[7..].to_vec());
    // A reconnect from the start now sees only what is left.
    drop(ev);
    let mut ev = Events::open(&s, &bob, Some(0)).await;
    assert_eq!(ev.next(30).await.0, ids[7]);
}

/// Waits (60 s at most: a closed stream is noticed when a heartbeat cannot be written, the second
/// one after the close at the latest) until the server counts
/// `n` open streams and long polls (`GET stats`).
async fn open_streams(s: &Server, n: u64) -> Option<u64> {
    eventually(60, || async {
        let (_, v) = call(client().get(s.url("stats")).bearer_auth(ADMIN)).await;
        let open = v["streams"]["open"].as_u64()?;
        (open == n).then_some(open)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_limits_and_long_poll() {
    let s = start();
    let bob = register(&s, "bob", "pw").await;
    let (st, code) = refusal(client().get(s.url("messages/stream"))).await;
    assert_eq!((st, code.as_str()), (401, "535 5.7.8"));
    let bad = client().get(s.url("messages/stream")).basic_auth(&bob, Some("pw")).header("Last-Event-ID", "abc");
    let (st, v) = call(bad).await;
    assert_eq!(
        (st, v["error_code"].as_str(), v["error"].as_str()),
        (400, Some("500 5.5.2"), Some("Invalid Last-Event-ID"))
    );
    let (st, code) =
        refusal(client().post(s.url("messages/ack")).basic_auth(&bob, Some("pw")).body("{\"ids\": \"x\"}")).await;
    assert_eq!((st, code.as_str()), (400, "500 5.5.2"));

    // Two streams at most for bob (the config says so); the third is refused until one closes.
    let one = Events::open(&s, &bob, None).await;
    let _two = Events::open(&s, &bob, None).await;
    let (st, v) = call(client().get(s.url("messages/stream")).basic_auth(&bob, Some("pw"))).await;
    assert_eq!((st, v["error_code"].as_str(), v["max_streams"].as_u64()), (429, Some("452 4.3.1"), Some(2)), "{v}");
    drop(one);
    // The server notices the closed connection by its next write at the latest (a heartbeat).
    assert_eq!(open_streams(&s, 1).await, Some(1), "the closed stream's place came back");
    let reopened = Events::open(&s, &bob, None).await;
    drop((reopened, _two));

    // The long poll answers as soon as a message is committed.
    let alice = register(&s, "alice", "pw").await;
    assert_eq!(open_streams(&s, 0).await, Some(0), "the closed streams are noticed");
    let poll = {
        let url = s.url("messages?after_id=0&wait=20");
        let bob = bob.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let r = call(client().get(url).basic_auth(&bob, Some("pw"))).await;
            (r, started.elapsed())
        })
    };
    // Wait until the poll is really waiting (it holds one stream place), then send.
    assert_eq!(open_streams(&s, 1).await, Some(1), "the long poll waits");
    submit(&s, &alice, &bob, "wake up").await;
    let ((st, v), took) = poll.await.unwrap();
    assert_eq!(open_streams(&s, 0).await, Some(0));
    assert_eq!((st, v["count"].as_u64()), (200, Some(1)), "{v}");
    assert!(took < Duration::from_secs(15), "answered when the message came, not at the end: {took:?}");
}

/// At shutdown (SIGTERM) an open stream ends cleanly — the body finishes, no reset — and a waiting
/// long poll answers 200 with an empty page, so neither holds the graceful drain; nothing of the
/// inbox is lost (a restarted server streams it from the cursor).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_and_long_polls_end_at_shutdown() {
    let mut s = start();
    let bob = register(&s, "bob", "pw").await;
    let alice = register(&s, "alice", "pw").await;
    submit(&s, &alice, &bob, "before").await;
    let mut ev = Events::open(&s, &bob, None).await;
    let (first, _) = ev.next(30).await;
    let poll = {
        let url = s.url(&format!("messages?after_id={first}&wait=60"));
        let bob = bob.clone();
        tokio::spawn(async move { call(client().get(url).basic_auth(&bob, Some("pw"))).await })
    };
    assert_eq!(open_streams(&s, 2).await, Some(2), "the stream and the long poll are open");
    let status = tokio::task::spawn_blocking(move || {
        let status = s.terminate(Duration::from_secs(60));
        (status, s)
    });
    // The stream's body ends (Ok(None)), it is not cut off by the drain's deadline (an error).
    let end = loop {
        match tokio::time::timeout(Duration::from_secs(60), ev.resp.chunk()).await.expect("the stream ends") {
            Ok(Some(chunk)) => assert!(!String::from_utf8_lossy(&chunk).contains("id: "), "no new event"),
            other => break other,
        }
    };
    assert!(matches!(end, Ok(None)), "the stream ended cleanly: {end:?}");
    let (st, v) = poll.await.unwrap();
    assert_eq!((st, v["count"].as_u64()), (200, Some(0)), "the long poll answered: {v}");
    let (status, s) = status.await.unwrap();
    assert!(status.is_some_and(|st| st.success()), "the server exited: {status:?}\n{}", s.log());
}
