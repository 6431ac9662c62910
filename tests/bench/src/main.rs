//! `atp-bench`: a load generator for ATP servers (ours and the reference), measuring **local
//! submission** — `POST /.well-known/atp/v1/message` with an agent's Basic credential (docs/protocol.md §6,
//! §7) — throughput and latency at several concurrency levels.
//!
//! Each concurrent worker owns one TLS connection (HTTP/1.1 keep-alive, like the reference's CLI and
//! SDK) and sends submissions back to back: a fresh nonce, the current timestamp, a small payload,
//! from the bench agent to itself, so the server delivers into a local inbox and must commit before
//! answering 202 (docs/design.md §3). Only 202 answers count; anything else is an error and the first few
//! are printed. A warm-up period precedes each measured period.
//!
//! With `--recv N` it measures the **recv drain** instead (docs/protocol.md §6 `GET messages`): it preloads
//! N messages into a fresh agent's inbox (`--preload-concurrency` submissions in flight), then times
//! reading them all back in pages of `--page` with the `after_id` cursor, `--passes` times (nothing is
//! ever deleted, so every pass reads the same N), and reports the median pass.
//!
//! Output: one JSON object per concurrency level on stdout (tests/bench/run.sh turns them into a
//! Markdown table), and a human-readable line per level on stderr.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use serde_json::json;

mod push;
mod recv;

#[derive(Parser, Debug)]
#[command(name = "atp-bench", about = "Local-submission load test for an ATP server")]
struct Args {
    /// Server address, host:port (TLS; the certificate is not verified).
    #[arg(long)]
    server: String,
    /// The server's domain; the bench agent is `<agent>@<domain>`.
    #[arg(long)]
    domain: String,
    /// Local part of the bench agent (registered if missing).
    #[arg(long, default_value = "bench")]
    agent: String,
    #[arg(long, default_value = "bench-password")]
    password: String,
    /// Concurrency levels, comma separated.
    #[arg(long, default_value = "1,16,64", value_delimiter = ',')]
    concurrency: Vec<usize>,
    /// Measured seconds per level.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Warm-up seconds per level (not measured).
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// A label for the output (e.g. `atp`, `reference`).
    #[arg(long, default_value = "server")]
    label: String,
    /// Payload body size in bytes.
    #[arg(long, default_value_t = 256)]
    body_size: usize,
    /// End-to-end mode: send to this agent of another domain (instead of to the bench agent) and
    /// measure delivery into its inbox on --to-server (sustained rate, submit→readable latency, loss).
    #[arg(long, requires = "to_server")]
    to: Option<String>,
    /// The recipient's server, ip:port (TLS, not verified).
    #[arg(long)]
    to_server: Option<String>,
    /// Seconds to wait after sending stops for the last messages to arrive.
    #[arg(long, default_value_t = 60.0)]
    drain: f64,
    /// Recv-drain mode: preload this many messages into a fresh agent's inbox, then time reading
    /// them back with `GET messages` (no submission levels are run).
    #[arg(long)]
    recv: Option<u64>,
    /// Recv-drain mode: page size (`limit`) of each `GET messages`.
    #[arg(long, default_value_t = 100)]
    page: u64,
    /// Recv-drain mode: how many times the whole inbox is read (the median pass is reported).
    #[arg(long, default_value_t = 3)]
    passes: usize,
    /// Recv-drain mode: submissions in flight while preloading.
    #[arg(long, default_value_t = 16)]
    preload_concurrency: usize,
    /// Push mode (docs/protocol.md §6.5): submit → stream event latency over this many messages,
    /// one at a time (with --to/--to-server: across two servers); then polling beside it.
    #[arg(long)]
    push: Option<usize>,
    /// Push mode: milliseconds between polls of the polling comparison (`atp recv --follow` polled
    /// every 1000 ms).
    #[arg(long, default_value_t = 1000)]
    poll_ms: u64,
    /// Push mode: messages timed with polling.
    #[arg(long, default_value_t = 10)]
    poll_rounds: usize,
    /// Streams mode: open this many inbox streams and report the server's extra RSS (needs
    /// --server-pid) and one message's fan-out to all of them.
    #[arg(long, requires = "server_pid")]
    streams: Option<usize>,
    /// The server's process id (streams mode reads its /proc/<pid>/status).
    #[arg(long)]
    server_pid: Option<u32>,
}

struct Target {
    addr: SocketAddr,
    host: String,
    tls: tokio_rustls::TlsConnector,
    server_name: ServerName<'static>,
}

type Error = Box<dyn std::error::Error + Send + Sync>;

impl Target {
    fn new(server: &str) -> Result<Self, Error> {
        let addr: SocketAddr = server.parse().map_err(|e| format!("--server {server}: {e} (use ip:port)"))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(atp_testkit::AnyCert::new(provider))
            .with_no_client_auth();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Target {
            addr,
            host: server.to_owned(),
            tls: tokio_rustls::TlsConnector::from(Arc::new(cfg)),
            server_name: ServerName::IpAddress(addr.ip().into()),
        })
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, Error> {
        let tcp = tokio::net::TcpStream::connect(self.addr).await?;
        tcp.set_nodelay(true)?;
        let tls = self.tls.connect(self.server_name.clone(), tcp).await?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }
}

/// One request; returns (status, body).
async fn send(
    sender: &mut SendRequest<Full<Bytes>>,
    target: &Target,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: Bytes,
) -> Result<(u16, Bytes), Error> {
    sender.ready().await?;
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(format!("/.well-known/atp/v1/{path}"))
        .header("host", &target.host)
        .header("content-type", "application/atp+json");
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    let resp = sender.send_request(req.body(Full::new(body))?).await?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

fn unix_micros() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

#[derive(Default)]
struct WorkerResult {
    latencies_us: Vec<u32>,
    errors: u64,
}

struct Shared {
    target: Target,
    agent_id: String,
    /// The recipient (the bench agent itself, or --to).
    to: String,
    /// Submissions answered 202 while measuring (end-to-end mode counts what must arrive).
    accepted: std::sync::atomic::AtomicU64,
    auth: String,
    filler: String,
    measuring: AtomicBool,
    stop: AtomicBool,
    /// Every worker has finished (its last answer is counted).
    done: AtomicBool,
    printed_errors: AtomicU32,
    run_id: u64,
}

async fn worker(shared: Arc<Shared>, n: usize) -> Result<WorkerResult, Error> {
    let mut sender = shared.target.connect().await?;
    let mut out = WorkerResult::default();
    let mut seq: u64 = 0;
    while !shared.stop.load(Ordering::Relaxed) {
        seq += 1;
        let measuring = shared.measuring.load(Ordering::Relaxed);
        let msg = json!({
            "from": shared.agent_id, "to": shared.to, "timestamp": unix_now(),
            "nonce": format!("bench-{:x}-{n}-{seq}", shared.run_id), "type": "message",
            "payload": {"subject": "bench", "body": shared.filler, "sent_us": unix_micros(), "measured": measuring},
        });
        let body = Bytes::from(serde_json::to_vec(&msg)?);
        let t0 = Instant::now();
        let result = send(&mut sender, &shared.target, "POST", "message", Some(&shared.auth), body).await;
        let us = t0.elapsed().as_micros().min(u32::MAX as u128) as u32;
        match result {
            Ok((202, _)) => {
                if measuring {
                    out.latencies_us.push(us);
                    shared.accepted.fetch_add(1, Ordering::Relaxed);
                }
            }
            other => {
                if measuring {
                    out.errors += 1;
                }
                if shared.printed_errors.fetch_add(1, Ordering::Relaxed) < 5 {
                    match &other {
                        Ok((s, b)) => eprintln!("  non-202 answer: {s} {}", String::from_utf8_lossy(b)),
                        Err(e) => eprintln!("  request failed: {e}"),
                    }
                }
                if other.is_err() {
                    // The connection is unusable; open a new one.
                    sender = shared.target.connect().await?;
                }
            }
        }
    }
    Ok(out)
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)] as f64 / 1000.0
}

async fn register(target: &Target, agent: &str, password: &str) -> Result<(), Error> {
    let mut sender = target.connect().await?;
    let body = Bytes::from(serde_json::to_vec(&json!({"agent_id": agent, "password": password}))?);
    let (status, resp) = send(&mut sender, target, "POST", "register", None, body).await?;
    match status {
        201 | 409 => Ok(()),
        _ => Err(format!("registering {agent}: {status} {}", String::from_utf8_lossy(&resp)).into()),
    }
}

/// What the recipient's inbox showed during an end-to-end run.
#[derive(Default)]
struct Arrivals {
    /// submit→readable latency of each measured message, µs.
    latencies_us: Vec<u64>,
    duplicates: u64,
    first: Option<Instant>,
    last: Option<Instant>,
}

/// Polls the recipient's inbox back to back until `stop` and everything measured arrived (or
/// the drain deadline passed).
async fn collect(
    target: Target,
    agent: String,
    auth: String,
    shared: Arc<Shared>,
    drain: Duration,
) -> Result<Arrivals, Error> {
    let mut sender = target.connect().await?;
    let mut out = Arrivals::default();
    let mut seen = std::collections::HashSet::new();
    let mut after = 0i64;
    let mut stop_at: Option<Instant> = None;
    let prefix = format!("bench-{:x}-", shared.run_id);
    loop {
        let path = format!("messages?agent_id={agent}&after_id={after}&limit=1000");
        let (status, body) = send(&mut sender, &target, "GET", &path, Some(&auth), Bytes::new()).await?;
        if status != 200 {
            return Err(format!("inbox: {status} {}", String::from_utf8_lossy(&body)).into());
        }
        let now_us = unix_micros();
        let v: serde_json::Value = serde_json::from_slice(&body)?;
        let msgs = v["messages"].as_array().cloned().unwrap_or_default();
        for m in &msgs {
            let nonce = m["nonce"].as_str().unwrap_or_default().to_owned();
            if !nonce.starts_with(&prefix) {
                continue; // an earlier level's message
            }
            if !seen.insert(nonce) {
                out.duplicates += 1;
                continue;
            }
            if m["payload"]["measured"] == true {
                let sent = m["payload"]["sent_us"].as_u64().unwrap_or(now_us);
                out.latencies_us.push(now_us.saturating_sub(sent));
                out.first.get_or_insert_with(Instant::now);
                out.last = Some(Instant::now());
            }
        }
        after = v["last_id"].as_i64().unwrap_or(after);
        if shared.done.load(Ordering::Acquire) {
            let deadline = *stop_at.get_or_insert_with(|| Instant::now() + drain);
            if out.latencies_us.len() as u64 >= shared.accepted.load(Ordering::Relaxed) || Instant::now() > deadline {
                return Ok(out);
            }
        }
        if msgs.is_empty() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

async fn run_level(args: &Args, base: &Arc<Shared>, concurrency: usize) -> Result<serde_json::Value, Error> {
    let shared = Arc::new(Shared {
        target: Target::new(&args.server)?,
        agent_id: base.agent_id.clone(),
        to: base.to.clone(),
        accepted: Default::default(),
        auth: base.auth.clone(),
        filler: base.filler.clone(),
        measuring: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        done: AtomicBool::new(false),
        printed_errors: AtomicU32::new(0),
        run_id: base.run_id ^ (concurrency as u64) << 32,
    });
    let collector = match (&args.to, &args.to_server) {
        (Some(to), Some(server)) => Some(tokio::spawn(collect(
            Target::new(server)?,
            to.clone(),
            format!("Basic {}", STANDARD.encode(format!("{to}:{}", args.password))),
            shared.clone(),
            Duration::from_secs_f64(args.drain),
        ))),
        _ => None,
    };
    let tasks: Vec<_> = (0..concurrency).map(|n| tokio::spawn(worker(shared.clone(), n))).collect();
    tokio::time::sleep(Duration::from_secs_f64(args.warmup)).await;
    shared.measuring.store(true, Ordering::Relaxed);
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(args.duration)).await;
    shared.measuring.store(false, Ordering::Relaxed);
    let elapsed = t0.elapsed().as_secs_f64();
    shared.stop.store(true, Ordering::Relaxed);
    let mut lat = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let r = t.await.map_err(|e| e.to_string())??;
        lat.extend(r.latencies_us);
        errors += r.errors;
    }
    lat.sort_unstable();
    let ok = lat.len() as u64;
    shared.done.store(true, Ordering::Release);
    if let Some(c) = collector {
        let a = c.await.map_err(|e| e.to_string())??;
        let mut e2e: Vec<u32> = a.latencies_us.iter().map(|&u| u.min(u32::MAX as u64) as u32).collect();
        e2e.sort_unstable();
        let delivered = e2e.len() as u64;
        // sustained: measured arrivals over the time from the start of measuring to the last one
        let span = a.last.map(|l| l.duration_since(t0).as_secs_f64()).unwrap_or(f64::NAN).max(elapsed);
        let row = json!({
            "label": args.label, "mode": "e2e", "concurrency": concurrency, "accepted": ok, "errors": errors,
            "delivered": delivered, "lost": ok.saturating_sub(delivered), "duplicates": a.duplicates,
            "seconds": span, "throughput": delivered as f64 / span, "submit_per_s": ok as f64 / elapsed,
            "p50_ms": percentile(&e2e, 0.50), "p99_ms": percentile(&e2e, 0.99),
        });
        eprintln!(
            "{:<10} e2e c={:<3} {:>9.1} delivered/s  submit→readable p50 {:>8.2} ms  p99 {:>8.2} ms  \
             ({delivered}/{ok} arrived, {} lost, {} duplicates)",
            args.label,
            concurrency,
            delivered as f64 / span,
            percentile(&e2e, 0.50),
            percentile(&e2e, 0.99),
            ok.saturating_sub(delivered),
            a.duplicates,
        );
        return Ok(row);
    }
    let row = json!({
        "label": args.label, "concurrency": concurrency, "ok": ok, "errors": errors,
        "seconds": elapsed, "throughput": ok as f64 / elapsed,
        "p50_ms": percentile(&lat, 0.50), "p99_ms": percentile(&lat, 0.99),
    });
    eprintln!(
        "{:<10} c={:<3} {:>9.1} msg/s  p50 {:>8.2} ms  p99 {:>8.2} ms  ({ok} ok, {errors} errors in {elapsed:.1} s)",
        args.label,
        concurrency,
        ok as f64 / elapsed,
        percentile(&lat, 0.50),
        percentile(&lat, 0.99),
    );
    Ok(row)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args = Args::parse();
    let target = Target::new(&args.server)?;
    let agent_id = format!("{}@{}", args.agent, args.domain);
    register(&target, &agent_id, &args.password).await?;
    if let (Some(to), Some(server)) = (&args.to, &args.to_server) {
        register(&Target::new(server)?, to, &args.password).await?;
    }
    let base = Arc::new(Shared {
        to: args.to.clone().unwrap_or_else(|| agent_id.clone()),
        accepted: Default::default(),
        target,
        auth: format!("Basic {}", STANDARD.encode(format!("{agent_id}:{}", args.password))),
        agent_id,
        filler: "x".repeat(args.body_size),
        measuring: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        done: AtomicBool::new(false),
        printed_errors: AtomicU32::new(0),
        run_id: SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0),
    });
    if let Some(n) = args.push {
        println!("{}", push::latency(&args, &base, n).await?);
        return Ok(());
    }
    if let (Some(n), Some(pid)) = (args.streams, args.server_pid) {
        println!("{}", push::memory(&args, &base, n, pid).await?);
        return Ok(());
    }
    if let Some(n) = args.recv {
        let row = recv::run(&args, &base, n).await?;
        println!("{row}");
        return Ok(());
    }
    for &c in &args.concurrency {
        let row = run_level(&args, &base, c.max(1)).await?;
        println!("{row}");
    }
    Ok(())
}
