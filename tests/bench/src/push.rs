//! Push delivery (docs/protocol.md §6.5).
//!
//! * `--push N`: submit → event latency at light load. The recipient's inbox stream is open; N
//!   messages are submitted one after another, each timed from just before its `POST message` to
//!   the arrival of its event on the stream. With `--to`/`--to-server` the message crosses two
//!   servers (submission to one, transfer, stream on the other). Beside it, the same with today's
//!   polling (`GET messages` every `--poll-ms`, as `atp recv --follow` did): `--poll-rounds` rounds.
//! * `--streams N --server-pid PID`: the memory of N open streams — the server's VmRSS before and
//!   after opening N streams (one TLS connection each) — and the time one message takes to reach
//!   all N (fan-out).

use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::json;

use crate::{percentile, register, send, unix_now, Args, Error, Shared, Target};

/// An open inbox stream: its body, read frame by frame.
struct Stream {
    body: Incoming,
    buf: String,
    _conn: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl Stream {
    async fn open(target: &Target, agent: &str, password: &str) -> Result<Stream, Error> {
        let mut sender = target.connect().await?;
        sender.ready().await?;
        let req = hyper::Request::builder()
            .uri("/.well-known/atp/v1/messages/stream")
            .header("host", &target.host)
            .header("authorization", basic(agent, password))
            .body(Full::new(Bytes::new()))?;
        let resp = sender.send_request(req).await?;
        if resp.status() != 200 {
            let status = resp.status();
            let body = resp.into_body().collect().await?.to_bytes();
            return Err(format!("stream: {status} {}", String::from_utf8_lossy(&body)).into());
        }
        let mut s = Stream { body: resp.into_body(), buf: String::new(), _conn: sender };
        // The opening comment: the stream is established.
        s.more(Duration::from_secs(30)).await?;
        Ok(s)
    }

    /// Reads one more frame into the buffer.
    async fn more(&mut self, within: Duration) -> Result<(), Error> {
        let frame = tokio::time::timeout(within, self.body.frame()).await.map_err(|_| "stream: no data in time")?;
        let frame = frame.ok_or("stream ended")??;
        if let Some(d) = frame.data_ref() {
            self.buf.push_str(&String::from_utf8_lossy(d));
        }
        Ok(())
    }

    /// Waits until an event naming `nonce` has arrived.
    async fn until(&mut self, nonce: &str, within: Duration) -> Result<(), Error> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(at) = self.buf.find(nonce) {
                if let Some(end) = self.buf[at..].find("\n\n") {
                    self.buf.drain(..at + end + 2);
                    return Ok(());
                }
            }
            self.more(deadline.saturating_duration_since(Instant::now())).await?;
        }
    }
}

fn basic(agent: &str, password: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{agent}:{password}")))
}

/// Submits one message from the bench agent to `to`; 202 or an error.
async fn submit(
    sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    base: &Shared,
    to: &str,
    nonce: &str,
) -> Result<(), Error> {
    let msg = json!({"from": base.agent_id, "to": to, "timestamp": unix_now(), "nonce": nonce, "type": "message",
                     "payload": {"subject": "push bench", "body": base.filler}});
    let (status, body) =
        send(sender, &base.target, "POST", "message", Some(&base.auth), Bytes::from(serde_json::to_vec(&msg)?)).await?;
    if status != 202 {
        return Err(format!("submit: {status} {}", String::from_utf8_lossy(&body)).into());
    }
    Ok(())
}

/// `--push N`: the latency rows (stream, then polling).
pub async fn latency(args: &Args, base: &Shared, rounds: usize) -> Result<serde_json::Value, Error> {
    let two = args.to.is_some();
    let (to, to_target) = match (&args.to, &args.to_server) {
        (Some(to), Some(server)) => (to.clone(), Target::new(server)?),
        _ => {
            let agent = format!("push-{:x}@{}", base.run_id, args.domain);
            register(&base.target, &agent, &args.password).await?;
            (agent, Target::new(&args.server)?)
        }
    };
    let mut sender = base.target.connect().await?;
    let mut stream = Stream::open(&to_target, &to, &args.password).await?;
    // One message first, not measured (connections, caches, the destination's backoff warm).
    submit(&mut sender, base, &to, &format!("push-{:x}-warm", base.run_id)).await?;
    stream.until(&format!("push-{:x}-warm", base.run_id), Duration::from_secs(60)).await?;
    let mut lat = Vec::with_capacity(rounds);
    for i in 0..rounds {
        let nonce = format!("push-{:x}-{i}", base.run_id);
        let t0 = Instant::now();
        submit(&mut sender, base, &to, &nonce).await?;
        stream.until(&nonce, Duration::from_secs(60)).await?;
        lat.push(t0.elapsed().as_micros().min(u32::MAX as u128) as u32);
    }
    lat.sort_unstable();

    // Today's polling, beside it: GET messages every poll_ms after the cursor.
    let mut poller = to_target.connect().await?;
    let auth = basic(&to, &args.password);
    let inbox = |after: i64| format!("messages?after_id={after}&limit=500");
    let (_, body) = send(&mut poller, &to_target, "GET", &inbox(0), Some(&auth), Bytes::new()).await?;
    let mut after = last_id(&body)?.unwrap_or(0);
    // The poller runs on its own schedule; each message is submitted at another point of the
    // interval (spread evenly over it), as a message arrives at any time for a real poller.
    let mut polled = Vec::new();
    let mut last_poll = Instant::now();
    for i in 0..args.poll_rounds {
        let nonce = format!("poll-{:x}-{i}", base.run_id);
        let offset = args.poll_ms * (2 * i as u64 + 1) / (2 * args.poll_rounds.max(1) as u64);
        tokio::time::sleep_until((last_poll + Duration::from_millis(offset)).into()).await;
        let t0 = Instant::now();
        submit(&mut sender, base, &to, &nonce).await?;
        loop {
            tokio::time::sleep_until((last_poll + Duration::from_millis(args.poll_ms)).into()).await;
            last_poll = Instant::now();
            let (status, body) = send(&mut poller, &to_target, "GET", &inbox(after), Some(&auth), Bytes::new()).await?;
            if status != 200 {
                return Err(format!("poll: {status}").into());
            }
            after = last_id(&body)?.unwrap_or(after);
            if String::from_utf8_lossy(&body).contains(&nonce) {
                break;
            }
            if t0.elapsed() > Duration::from_secs(60) {
                return Err("poll: the message did not come".into());
            }
        }
        polled.push(t0.elapsed().as_micros().min(u32::MAX as u128) as u32);
    }
    polled.sort_unstable();
    let servers = if two { "two servers" } else { "one server" };
    eprintln!(
        "{:<10} push ({servers}) submit→event p50 {:.2} ms p99 {:.2} ms ({rounds} rounds); polling every {} ms: \
         p50 {:.1} ms p99 {:.1} ms ({} rounds)",
        args.label,
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        args.poll_ms,
        percentile(&polled, 0.5),
        percentile(&polled, 0.99),
        args.poll_rounds,
    );
    Ok(json!({
        "label": args.label, "mode": "push", "servers": if two { 2 } else { 1 }, "rounds": rounds,
        "p50_ms": percentile(&lat, 0.5), "p99_ms": percentile(&lat, 0.99),
        "poll_ms": args.poll_ms, "poll_rounds": args.poll_rounds,
        "poll_p50_ms": percentile(&polled, 0.5), "poll_p99_ms": percentile(&polled, 0.99),
    }))
}

fn last_id(body: &[u8]) -> Result<Option<i64>, Error> {
    let v: serde_json::Value = serde_json::from_slice(body)?;
    Ok(v["last_id"].as_i64())
}

fn vm_rss_kb(pid: u32) -> Result<u64, Error> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).ok_or("no VmRSS")?;
    Ok(line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).ok_or("bad VmRSS")?)
}

/// `--streams N`: the server's extra memory for N open streams, and one message's fan-out to all.
pub async fn memory(args: &Args, base: &Shared, n: usize, pid: u32) -> Result<serde_json::Value, Error> {
    let agent = format!("streams-{:x}@{}", base.run_id, args.domain);
    register(&base.target, &agent, &args.password).await?;
    let before = vm_rss_kb(pid)?;
    let mut streams = Vec::with_capacity(n);
    let mut opening = tokio::task::JoinSet::new();
    let mut next = 0;
    while streams.len() < n {
        while next < n && opening.len() < 32 {
            let (target, agent, pw) = (Target::new(&args.server)?, agent.clone(), args.password.clone());
            opening.spawn(async move { Stream::open(&target, &agent, &pw).await });
            next += 1;
        }
        let s = opening.join_next().await.ok_or("no stream task")?.map_err(|e| e.to_string())??;
        streams.push(s);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = vm_rss_kb(pid)?;
    // One message; every stream must see it.
    let nonce = format!("fanout-{:x}", base.run_id);
    let mut sender = base.target.connect().await?;
    let t0 = Instant::now();
    submit(&mut sender, base, &agent, &nonce).await?;
    let mut waiting = tokio::task::JoinSet::new();
    for mut s in streams {
        let nonce = nonce.clone();
        waiting.spawn(async move { s.until(&nonce, Duration::from_secs(60)).await.map(|()| s) });
    }
    let mut reached = Vec::with_capacity(n);
    while let Some(r) = waiting.join_next().await {
        reached.push(r.map_err(|e| e.to_string())??);
    }
    let fanout_ms = t0.elapsed().as_secs_f64() * 1000.0;
    let extra_mib = (after.saturating_sub(before)) as f64 / 1024.0;
    eprintln!(
        "{:<10} {n} open streams: server RSS {:.1} → {:.1} MiB (+{extra_mib:.1} MiB, {:.1} KiB each); \
         one message reached all {} in {fanout_ms:.0} ms",
        args.label,
        before as f64 / 1024.0,
        after as f64 / 1024.0,
        (after.saturating_sub(before)) as f64 / n as f64,
        reached.len(),
    );
    Ok(json!({
        "label": args.label, "mode": "streams", "streams": n, "rss_before_kb": before, "rss_after_kb": after,
        "extra_mib": extra_mib, "fanout_ms": fanout_ms, "reached": reached.len(),
    }))
}
