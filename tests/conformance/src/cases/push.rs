//! Push delivery and acknowledgement (docs/protocol.md §6.5): the inbox stream (server-sent events,
//! resumed with `Last-Event-ID`), the long poll `GET messages?wait=`, and `POST messages/ack`.
//! atp's own routes: the reference has none (its expected failures). atp-native and atp-worker
//! (from the domain's Durable Object, docs/design.md §5c) both serve them.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::case;
use crate::http::Http;
use crate::kit::{nonce_of, Agent, Case, Ctx, Outcome};

pub fn cases() -> Vec<Case> {
    vec![
        case!("route.stream.events", "§6.5", "200 text/event-stream: backlog then live, data = GET messages", events),
        case!("route.stream.resume", "§6.5", "Last-Event-ID resumes: every message exactly once", resume),
        case!("route.stream.no_credential", "§6.5", "401 535 5.7.8", stream_no_credential),
        case!("route.stream.bad_last_event_id", "§6.5", "400 500 5.5.2", stream_bad_cursor),
        case!("route.messages.long_poll", "§6.5", "wait=N answers when a message comes", long_poll),
        case!("route.ack.up_to_id", "§6.5", "200 removed n; gone from GET messages", ack_up_to),
        case!("route.ack.not_yours", "§6.5", "404 550 5.1.0; the other agent's mail stays", ack_not_yours),
        case!("route.ack.bad_body", "§6.5", "400 500 5.5.2", ack_bad_body),
    ]
}

/// An open event stream, read chunk by chunk.
struct Events {
    resp: reqwest::Response,
    buf: String,
}

impl Events {
    /// The next event as (`id`, message JSON), comments skipped; an error after `secs` seconds.
    async fn next(&mut self, secs: u64) -> Result<(i64, Value), String> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            while let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let field = |name: &str| block.lines().find_map(|l| l.strip_prefix(name)).map(str::to_owned);
                if let Some(data) = field("data: ") {
                    if field("event: ").as_deref() != Some("message") {
                        return Err(format!("an event without `event: message`: {block:?}"));
                    }
                    let id = field("id: ").and_then(|i| i.parse().ok()).ok_or(format!("no numeric id: {block:?}"))?;
                    let v = serde_json::from_str(&data).map_err(|e| format!("data is not JSON ({e}): {data:?}"))?;
                    return Ok((id, v));
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.resp.chunk()).await {
                Err(_) => return Err(format!("no event within {secs} s")),
                Ok(Err(e)) => return Err(format!("stream failed: {e}")),
                Ok(Ok(None)) => return Err("the stream ended".into()),
                Ok(Ok(Some(b))) => self.buf.push_str(&String::from_utf8_lossy(&b)),
            }
        }
    }
}

/// Opens `who`'s stream, resuming after `last_event_id`: the stream, or the reply that refused it.
async fn open(cx: &Ctx, who: &Agent, last_event_id: Option<i64>) -> Result<Events, Outcome> {
    let mut req = cx.http.get("messages/stream").basic_auth(&who.id, Some(&who.password));
    if let Some(id) = last_event_id {
        req = req.header("Last-Event-ID", id.to_string());
    }
    let resp = req.send().await.map_err(|e| Outcome::fail(format!("no reply: {e}")))?;
    let ctype = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    if resp.status() != 200 || !ctype.starts_with("text/event-stream") {
        return Err(Outcome::fail(format!("{} {ctype}", resp.status())));
    }
    Ok(Events { resp, buf: String::new() })
}

/// A fresh agent of this case (so its inbox holds only the case's messages).
async fn fresh(cx: &Ctx, tag: &str) -> Result<Agent, Outcome> {
    let name = format!("conf-{}-{tag}", cx.run_id);
    let password = format!("pw-{tag}");
    let r = Http::send(cx.http.post("register").json(&json!({"agent_id": name, "password": password}))).await;
    match r {
        Ok(r) if r.status == 201 => {
            Ok(Agent { id: r.get("agent_id").and_then(Value::as_str).unwrap_or_default().to_owned(), password })
        }
        Ok(r) => Err(Outcome::fail(format!("register: {}", r.describe()))),
        Err(e) => Err(Outcome::fail(e.to_string())),
    }
}

/// Sends `n` messages from A to `to`; their nonces.
async fn send(cx: &Ctx, to: &Agent, n: usize) -> Result<Vec<String>, Outcome> {
    let mut nonces = Vec::new();
    for _ in 0..n {
        let m = cx.message(&cx.a.id, &to.id);
        let o = cx.accepted(cx.submit(&cx.a, m.to_string()).await, &nonce_of(&m));
        if !o.passed() {
            return Err(o);
        }
        nonces.push(nonce_of(&m));
    }
    Ok(nonces)
}

async fn events(cx: &Ctx) -> Outcome {
    run(async {
        let who = fresh(cx, "sse").await?;
        send(cx, &who, 2).await?;
        let mut s = open(cx, &who, None).await?;
        let mut got = vec![s.next(30).await.map_err(Outcome::fail)?, s.next(30).await.map_err(Outcome::fail)?];
        let live = send(cx, &who, 1).await?;
        got.push(s.next(30).await.map_err(|e| Outcome::fail(format!("live: {e}")))?);
        let inbox = cx.inbox(&who).await.map_err(Outcome::fail)?;
        let data: Vec<Value> = got.iter().map(|(_, v)| v.clone()).collect();
        if data != inbox {
            return Err(Outcome::fail("event data differs from GET messages"));
        }
        if got[2].1["nonce"] != json!(live[0]) || !got.windows(2).all(|w| w[0].0 < w[1].0) {
            return Err(Outcome::fail(format!("ids {:?}", got.iter().map(|g| g.0).collect::<Vec<_>>())));
        }
        Ok("2 backlog + 1 live event, data = GET messages".to_owned())
    })
    .await
}

async fn resume(cx: &Ctx) -> Outcome {
    run(async {
        let who = fresh(cx, "resume").await?;
        let sent = send(cx, &who, 4).await?;
        let mut s = open(cx, &who, None).await?;
        let (first, _) = s.next(30).await.map_err(Outcome::fail)?;
        drop(s);
        let mut s = open(cx, &who, Some(first)).await?;
        let mut ids = vec![first];
        let mut nonces = Vec::new();
        for _ in 1..sent.len() {
            let (id, v) = s.next(30).await.map_err(Outcome::fail)?;
            ids.push(id);
            nonces.push(v["nonce"].as_str().unwrap_or_default().to_owned());
        }
        if nonces != sent[1..] || !ids.windows(2).all(|w| w[0] < w[1]) {
            return Err(Outcome::fail(format!("after Last-Event-ID {first}: ids {ids:?}")));
        }
        Ok(format!("dropped after id {first}, resumed: 3 more, none twice"))
    })
    .await
}

async fn stream_no_credential(cx: &Ctx) -> Outcome {
    cx.refusal(Http::send(cx.http.get("messages/stream")).await, 401, "535 5.7.8")
}

async fn stream_bad_cursor(cx: &Ctx) -> Outcome {
    let req = cx.http.get("messages/stream").basic_auth(&cx.a.id, Some(&cx.a.password)).header("Last-Event-ID", "x1");
    cx.refusal(Http::send(req).await, 400, "500 5.5.2")
}

async fn long_poll(cx: &Ctx) -> Outcome {
    run(async {
        let who = fresh(cx, "poll").await?;
        let req = cx.http.get("messages?wait=20").basic_auth(&who.id, Some(&who.password));
        let poll = tokio::spawn(Http::send(req));
        // Still waiting with an empty inbox (a poll that answered at once fails here).
        tokio::time::sleep(Duration::from_millis(500)).await;
        if poll.is_finished() {
            let r = poll.await.map_err(|e| Outcome::fail(e.to_string()))?;
            return Err(Outcome::fail(format!("answered an empty inbox at once: {:?}", r.map(|r| r.text))));
        }
        let started = Instant::now();
        let sent = send(cx, &who, 1).await?;
        let r = poll.await.map_err(|e| Outcome::fail(e.to_string()))?.map_err(|e| Outcome::fail(e.to_string()))?;
        let took = started.elapsed();
        let nonce = r.get("messages").and_then(|m| m.get(0)).and_then(|m| m.get("nonce")).cloned();
        if r.status != 200 || nonce != Some(json!(sent[0])) || took >= Duration::from_secs(15) {
            return Err(Outcome::fail(format!("{} after {took:?}: {}", r.status, r.text)));
        }
        Ok(format!("pending after 0.5 s; 200 with the message {:.1} s after the submission", took.as_secs_f64()))
    })
    .await
}

async fn ack_up_to(cx: &Ctx) -> Outcome {
    run(async {
        let who = fresh(cx, "ack").await?;
        let sent = send(cx, &who, 3).await?;
        let inbox = cx.inbox(&who).await.map_err(Outcome::fail)?;
        let ids = ids_of(cx, &who).await?;
        let r = Http::send(
            cx.http.post("messages/ack").basic_auth(&who.id, Some(&who.password)).json(&json!({"up_to_id": ids[1]})),
        )
        .await
        .map_err(|e| Outcome::fail(e.to_string()))?;
        if r.status != 200 || r.get("removed") != Some(&json!(2)) {
            return Err(Outcome::fail(r.describe() + " " + &r.text));
        }
        let left = cx.inbox(&who).await.map_err(Outcome::fail)?;
        if left != inbox[2..] || left[0]["nonce"] != json!(sent[2]) {
            return Err(Outcome::fail(format!("{} left", left.len())));
        }
        Ok("200 removed 2; 1 left in GET messages".to_owned())
    })
    .await
}

async fn ack_not_yours(cx: &Ctx) -> Outcome {
    run(async {
        let (mine, theirs) = (fresh(cx, "ack-m").await?, fresh(cx, "ack-t").await?);
        send(cx, &theirs, 1).await?;
        let before = cx.inbox(&theirs).await.map_err(Outcome::fail)?;
        let their_id = ids_of(cx, &theirs).await?[0];
        let r = Http::send(
            cx.http.post("messages/ack").basic_auth(&mine.id, Some(&mine.password)).json(&json!({"ids": [their_id]})),
        )
        .await;
        let o = cx.refusal(r, 404, "550 5.1.0");
        if !o.passed() {
            return Err(o);
        }
        if cx.inbox(&theirs).await.map_err(Outcome::fail)? != before {
            return Err(Outcome::fail("the other agent's message was removed"));
        }
        Ok(format!("{}; the other agent's mail stays", o.got))
    })
    .await
}

async fn ack_bad_body(cx: &Ctx) -> Outcome {
    let req =
        |body: &str| cx.http.post("messages/ack").basic_auth(&cx.a.id, Some(&cx.a.password)).body(body.to_owned());
    for body in ["{", "{}", "{\"ids\": []}", "{\"up_to_id\": -1}", "{\"up_to_id\": 1, \"ids\": [1]}"] {
        let o = cx.refusal(Http::send(req(body)).await, 400, "500 5.5.2");
        if !o.passed() {
            return Outcome::fail(format!("{body}: {}", o.got));
        }
    }
    Outcome::pass("400 500 5.5.2 for 5 malformed bodies")
}

/// The inbox ids of `who`'s messages (walking `last_id` one page at a time).
async fn ids_of(cx: &Ctx, who: &Agent) -> Result<Vec<i64>, Outcome> {
    let mut ids = Vec::new();
    let mut after = 0;
    loop {
        let q = format!("messages?limit=1&after_id={after}");
        let r = Http::send(cx.http.get(&q).basic_auth(&who.id, Some(&who.password)))
            .await
            .map_err(|e| Outcome::fail(e.to_string()))?;
        match r.get("last_id").and_then(Value::as_i64) {
            Some(id) => {
                ids.push(id);
                after = id;
            }
            None => return Ok(ids),
        }
    }
}

/// A case body that stops at the first failing step.
async fn run(f: impl std::future::Future<Output = Result<String, Outcome>>) -> Outcome {
    match f.await {
        Ok(got) => Outcome::pass(got),
        Err(o) => o,
    }
}
