//! Recv drain (docs/protocol.md §6 `GET messages`): how fast an agent can pull a full inbox.
//!
//! A fresh agent (`drain-<run>@<domain>`, so its inbox starts empty) receives `n` messages from the
//! bench agent, submitted with `--preload-concurrency` in flight; then one TLS connection reads the
//! inbox back page by page (`limit=--page`, `after_id` = the previous page's `last_id`) until a page
//! comes back short. Every pass must return exactly the `n` preloaded messages, each once, or the
//! run fails. Nothing is deleted by reading, so each pass reads the same inbox.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;
use serde_json::json;

use crate::{register, send, unix_now, Args, Error, Shared, Target};

/// Preloads the inbox, then times `args.passes` full reads; returns the JSON row.
pub async fn run(args: &Args, base: &Arc<Shared>, n: u64) -> Result<serde_json::Value, Error> {
    let target = Arc::new(Target::new(&args.server)?);
    let agent = format!("drain-{:x}@{}", base.run_id, args.domain);
    register(&target, &agent, &args.password).await?;
    let auth = format!("Basic {}", STANDARD.encode(format!("{agent}:{}", args.password)));
    let prefix = format!("drain-{:x}-", base.run_id);

    let t0 = Instant::now();
    preload(base, &target, &agent, &prefix, n, args.preload_concurrency.max(1)).await?;
    let preload_s = t0.elapsed().as_secs_f64();

    let mut secs = Vec::new();
    let mut pages = 0;
    for _ in 0..args.passes.max(1) {
        let (s, p) = read_all(&target, &agent, &auth, &prefix, n, args.page.max(1)).await?;
        secs.push(s);
        pages = p;
    }
    let mut sorted = secs.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    eprintln!(
        "{:<10} recv drain {n} messages in {pages} pages of {}: median {:.3} s → {:.1} msgs/s \
         (passes {secs:.3?} s; preload {preload_s:.1} s at {} in flight)",
        args.label,
        args.page,
        median,
        n as f64 / median,
        args.preload_concurrency,
    );
    Ok(json!({
        "label": args.label, "mode": "recv", "messages": n, "page": args.page, "pages": pages,
        "passes_s": secs, "seconds": median, "throughput": n as f64 / median,
        "preload_s": preload_s, "preload_per_s": n as f64 / preload_s,
        "preload_concurrency": args.preload_concurrency,
    }))
}

/// Submits `n` messages from the bench agent to `agent`, `concurrency` at a time; any answer other
/// than 202 fails the run (after one retry on a fresh connection for a transport error).
async fn preload(
    base: &Arc<Shared>,
    target: &Arc<Target>,
    agent: &str,
    prefix: &str,
    n: u64,
    concurrency: usize,
) -> Result<(), Error> {
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (next, target, base) = (next.clone(), target.clone(), base.clone());
        let (agent, prefix) = (agent.to_owned(), prefix.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut sender = target.connect().await?;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok::<(), Error>(());
                }
                let msg = json!({
                    "from": base.agent_id, "to": agent, "timestamp": unix_now(), "nonce": format!("{prefix}{i}"),
                    "type": "message", "payload": {"subject": "drain", "body": base.filler, "seq": i},
                });
                let body = Bytes::from(serde_json::to_vec(&msg)?);
                let answer = match send(&mut sender, &target, "POST", "message", Some(&base.auth), body.clone()).await {
                    Ok(a) => a,
                    Err(_) => {
                        sender = target.connect().await?;
                        send(&mut sender, &target, "POST", "message", Some(&base.auth), body).await?
                    }
                };
                if answer.0 != 202 {
                    return Err(format!("preload: {} {}", answer.0, String::from_utf8_lossy(&answer.1)).into());
                }
            }
        }));
    }
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    Ok(())
}

/// Reads the whole inbox once over one fresh connection; returns (seconds, pages requested).
async fn read_all(
    target: &Target,
    agent: &str,
    auth: &str,
    prefix: &str,
    n: u64,
    page: u64,
) -> Result<(f64, u64), Error> {
    let mut sender = target.connect().await?;
    let t0 = Instant::now();
    let (mut after, mut got, mut pages) = (0i64, 0u64, 0u64);
    let mut seen = std::collections::HashSet::new();
    loop {
        let path = format!("messages?agent_id={agent}&after_id={after}&limit={page}");
        let (status, body) = send(&mut sender, target, "GET", &path, Some(auth), Bytes::new()).await?;
        pages += 1;
        if status != 200 {
            return Err(format!("recv: {status} {}", String::from_utf8_lossy(&body)).into());
        }
        let v: serde_json::Value = serde_json::from_slice(&body)?;
        let msgs = v["messages"].as_array().ok_or("recv: no messages array")?;
        for m in msgs {
            let nonce = m["nonce"].as_str().unwrap_or_default();
            if !nonce.starts_with(prefix) || !seen.insert(nonce.to_owned()) {
                return Err(format!("recv: unexpected or repeated message {nonce}").into());
            }
            got += 1;
        }
        if (msgs.len() as u64) < page {
            break;
        }
        after = v["last_id"].as_i64().ok_or("recv: a full page without last_id")?;
    }
    let secs = t0.elapsed().as_secs_f64();
    if got != n {
        return Err(format!("recv: read {got} messages, {n} were preloaded").into());
    }
    Ok((secs, pages))
}
