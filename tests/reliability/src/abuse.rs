//! Scenario `abuse` (issue 14; docs/design.md §5b): one server, `alpha.rel`, attacked from one
//! source address (127.0.0.2) with everything at once —
//!
//! * **idle TLS connections**: `--abuse-idle` tasks each keep trying to hold a connection open
//!   (handshake, then nothing);
//! * **slowloris**: `--abuse-slowloris` tasks each send an HTTP/1.1 head one byte a second;
//! * **password guessing**: `--abuse-guessers` concurrent clients (32 per HTTP/2 connection)
//!   trying wrong passwords for the legitimate agent;
//! * **big-inbox reads**: `--abuse-readers` clients paging (`GET messages?limit=500`) through an
//!   inbox of `--abuse-inbox` messages of `--abuse-message-kb` KB —
//!
//! while a legitimate agent on 127.0.0.1 keeps submitting to a friend on the same server and
//! reading the friend's inbox. Reported: the legitimate agent's submit p50/p99 and failures, the
//! server's peak RSS (`VmHWM`), and what the attackers got. Passes when the legitimate agent had no
//! failure and its p99 and the peak RSS are under their bounds, every 202 is in the inbox exactly
//! once, and the connection limits held: attacking connections never exceeded the per-address
//! cap, connections over it were closed at once (not after a handshake timeout), idle ones were
//! closed within the idle timeout and slowloris heads within the header timeout (+ `--abuse-margin`),
//! wrong passwords were never accepted, and (with `--expect-429`) the guessers got 429s.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;
use tokio::sync::watch;

use crate::client::{Api, Outcome, PASSWORD};
use crate::load::{Inbox, Ledger, Tally};
use crate::report::Row;
use crate::servers::{Launch, Server};
use crate::{Error, Rng};

/// Where every attacking socket is bound.
const ATTACKER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
/// The legitimate agent and its friend (both on 127.0.0.1).
const LEGIT: &str = "agent@alpha.rel";
const FRIEND: &str = "friend@alpha.rel";
/// The agent with the big inbox.
const BULK: &str = "bulk@alpha.rel";
/// Guessers per HTTP/2 connection.
const GUESSERS_PER_CONN: usize = 32;

/// Settings of the scenario.
#[derive(Debug, Clone)]
pub struct Abuse {
    pub idle: usize,
    pub slowloris: usize,
    pub guessers: usize,
    pub readers: usize,
    pub inbox_messages: usize,
    pub message_bytes: usize,
    pub attack: Duration,
    /// The server's `[limits]`: per-address cap and timeouts (seconds).
    pub per_ip: usize,
    pub header_timeout: u64,
    pub idle_timeout: u64,
    pub handshake_timeout: u64,
    /// Slack on the timeouts' checks.
    pub margin: Duration,
    pub max_p99: Duration,
    pub max_rss_mib: f64,
    pub expect_429: bool,
    pub label: String,
}

/// What one kind of raw attacking connection got.
#[derive(Debug, Default)]
struct Conns {
    attempts: u64,
    admitted: u64,
    /// Closed by the server before or during the handshake: seconds from the TCP connect.
    refused: Vec<f64>,
    /// Admitted and later closed by the server: seconds from the handshake (idle) or from the
    /// first byte (slowloris).
    closed_after: Vec<f64>,
    /// Still open when the attack stopped: for how long.
    open_at_end: Vec<f64>,
    /// A slowloris head the server answered instead of cutting.
    answered: u64,
    connect_errors: u64,
    first_errors: Vec<String>,
}

impl Conns {
    fn error(&mut self, e: String) {
        self.connect_errors += 1;
        if self.first_errors.len() < 3 {
            self.first_errors.push(e);
        }
    }
}

/// What the guessers got.
#[derive(Debug, Default)]
struct Guesses {
    statuses: HashMap<u16, u64>,
    retry_after: u64,
    errors: u64,
    first_errors: Vec<String>,
}

/// What the readers got.
#[derive(Debug, Default)]
struct Reads {
    pages: u64,
    bytes: u64,
    statuses: HashMap<u16, u64>,
    errors: u64,
    first_errors: Vec<String>,
}

/// Shared by the raw attackers.
#[derive(Clone)]
struct Raw {
    port: u16,
    tls: Arc<rustls::ClientConfig>,
    stop: watch::Receiver<bool>,
    /// Attacking raw connections open now (handshake done, not yet seen closed), and the most.
    open: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
}

pub async fn run(a: &Abuse, launch: &Launch, dir: &Path, rng: &mut Rng) -> Result<Row, Error> {
    let started = Instant::now();
    let mut notes = Vec::new();
    let want_fds = (a.idle + a.slowloris + a.guessers + a.readers + 256) as u64;
    let fds = raise_nofile();
    let idle_tasks = if fds < want_fds {
        let n = a.idle.saturating_sub((want_fds - fds) as usize);
        notes.push(format!("open-file limit {fds}: {n} idle connections instead of {}", a.idle));
        n
    } else {
        a.idle
    };

    let mut server =
        Server::new(launch, "alpha.rel", &dir.join("alpha"), &dir.join("alpha.log"), &dir.join("registry"))?;
    std::fs::write(
        server.home.join("config.toml"),
        format!(
            "[limits]\nmax_connections_per_ip = {}\nheader_read_timeout = {}\nidle_timeout = {}\nhandshake_timeout = {}\n",
            a.per_ip, a.header_timeout, a.idle_timeout, a.handshake_timeout
        ),
    )?;
    server.start().await?;
    let port = server.port;
    let pid = server.pid().ok_or_else(|| Error::Msg("the server has no process id".into()))?;
    let api = server.api(Duration::from_secs(30))?;
    for agent in [LEGIT, FRIEND, BULK] {
        api.register(agent).await?;
    }
    eprintln!("  {}: filling {BULK}'s inbox: {} × {} KB", a.label, a.inbox_messages, a.message_bytes / 1000);
    fill_inbox(port, a.inbox_messages, a.message_bytes).await?;
    let rss_before = status_kib(pid, "VmRSS:").unwrap_or(0) as f64 / 1024.0;

    // The legitimate agent has been working before the attack (its credential is verified and
    // cached, as an active agent's is), and the attackers' HTTP clients connect before the flood.
    if !matches!(api.submit(LEGIT, FRIEND, "warm-up").await, Outcome::Accepted) {
        return Err(Error::Msg("the legitimate agent's first submission failed".into()));
    }
    api.inbox_page(FRIEND, 0).await?;
    let (stop_tx, stop) = watch::channel(false);
    let readers: Vec<reqwest::Client> = (0..a.readers).map(|_| attacker_client()).collect::<Result<_, _>>()?;
    for r in &readers {
        let _ = read_page(r, port, 0, 1).await;
    }
    let guess_clients: Vec<reqwest::Client> =
        (0..a.guessers.div_ceil(GUESSERS_PER_CONN)).map(|_| attacker_client()).collect::<Result<_, _>>()?;
    for c in &guess_clients {
        let _ = guess(c, port, "warm-up").await;
    }

    eprintln!(
        "  {}: attack for {} s from {ATTACKER}: {idle_tasks} idle, {} slowloris, {} guessers, {} readers",
        a.label,
        a.attack.as_secs(),
        a.slowloris,
        a.guessers,
        a.readers
    );
    let rss_peak_sampled = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (peak, mut stop) = (rss_peak_sampled.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                if let Some(kib) = status_kib(pid, "VmRSS:") {
                    peak.fetch_max(kib, Ordering::Relaxed);
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                    _ = stop.changed() => return,
                }
            }
        })
    };
    let legit = tokio::spawn(legit_agent(api.clone(), stop.clone()));

    let reads = Arc::new(Mutex::new(Reads::default()));
    let mut tasks = Vec::new();
    for r in readers {
        tasks.push(tokio::spawn(reader(r, port, reads.clone(), stop.clone())));
    }
    let guesses = Arc::new(Mutex::new(Guesses::default()));
    for g in 0..a.guessers {
        let c = guess_clients[g % guess_clients.len()].clone();
        tasks.push(tokio::spawn(guesser(c, port, g, guesses.clone(), stop.clone())));
    }
    let raw = Raw {
        port,
        tls: Arc::new(tls_config()),
        stop: stop.clone(),
        open: Arc::new(AtomicUsize::new(0)),
        peak: Arc::new(AtomicUsize::new(0)),
    };
    let slow = Arc::new(Mutex::new(Conns::default()));
    for _ in 0..a.slowloris {
        tasks.push(tokio::spawn(slowloris(raw.clone(), slow.clone())));
    }
    let idle = Arc::new(Mutex::new(Conns::default()));
    for _ in 0..idle_tasks {
        let delay = Duration::from_millis(rng.below(2000));
        tasks.push(tokio::spawn(idle_conn(raw.clone(), idle.clone(), delay, rng.next_u64())));
    }

    let attack_start = Instant::now();
    let (server_cpu0, own_cpu0) = (cpu_secs(pid), own_cpu_secs());
    let load_before = loadavg();
    while attack_start.elapsed() < a.attack {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if server.exited().is_some() {
            break;
        }
    }
    let (server_cpu, own_cpu) = (cpu_secs(pid) - server_cpu0, own_cpu_secs() - own_cpu0);
    let attack_secs = attack_start.elapsed().as_secs_f64();
    let _ = stop_tx.send(true);
    let (ledger, submits, read_failures, legit_errors) = legit.await.map_err(|e| Error::Msg(e.to_string()))?;
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(30), t).await;
    }
    let _ = sampler.await;
    let alive = server.exited().is_none() && api.healthy().await;
    let peak_rss = status_kib(pid, "VmHWM:").unwrap_or(0).max(rss_peak_sampled.load(Ordering::Relaxed)) as f64 / 1024.0;

    // Nothing accepted lost: the friend's whole inbox.
    let mut inbox = Inbox::new();
    let mut after = 0;
    loop {
        let (nonces, last) = api.inbox_page(FRIEND, after).await?;
        if nonces.is_empty() {
            break;
        }
        after = last;
        for n in nonces {
            *inbox.counts.entry(n).or_default() += 1;
        }
    }
    let t = Tally::of(&ledger, &inbox, "legit-");

    // The figures.
    let mut lat: Vec<f64> = submits.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    lat.sort_by(f64::total_cmp);
    let (p50, p99, max) = (pct(&lat, 50.0), pct(&lat, 99.0), lat.last().copied().unwrap_or(0.0));
    let failures = submits.len() as u64 - t.accepted + read_failures;
    let idle = std::mem::take(&mut *idle.lock().unwrap_or_else(|p| p.into_inner()));
    let slow = std::mem::take(&mut *slow.lock().unwrap_or_else(|p| p.into_inner()));
    let guesses = std::mem::take(&mut *guesses.lock().unwrap_or_else(|p| p.into_inner()));
    let reads = std::mem::take(&mut *reads.lock().unwrap_or_else(|p| p.into_inner()));
    let peak_open = raw.peak.load(Ordering::Relaxed);
    let n401 = guesses.statuses.get(&401).copied().unwrap_or(0);
    let n429 = guesses.statuses.get(&429).copied().unwrap_or(0);
    let accepted_wrong: u64 = guesses.statuses.iter().filter(|(s, _)| (200..300).contains(*s)).map(|(_, n)| n).sum();

    // The checks.
    let mut problems = Vec::new();
    if !alive {
        problems.push("the server did not survive".to_owned());
    }
    if failures > 0 {
        problems.push(format!("{failures} legitimate requests failed: {}", legit_errors.join(" | ")));
    }
    if lat.is_empty() || p99 > a.max_p99.as_secs_f64() * 1000.0 {
        problems.push(format!("legitimate submit p99 {p99:.0} ms (bound {} ms)", a.max_p99.as_millis()));
    }
    if peak_rss > a.max_rss_mib {
        problems.push(format!("server peak RSS {peak_rss:.0} MiB (bound {:.0} MiB)", a.max_rss_mib));
    }
    if !t.exact() {
        problems.push(format!("{} accepted lost, {} duplicates, {} strays", t.lost, t.duplicates, t.strays));
    }
    if peak_open > a.per_ip {
        problems.push(format!("{peak_open} attacking connections open at once (per-address cap {})", a.per_ip));
    }
    let refused: Vec<f64> = idle.refused.iter().chain(&slow.refused).copied().collect();
    let mut sorted_refused = refused.clone();
    sorted_refused.sort_by(f64::total_cmp);
    let refused_p50 = pct(&sorted_refused, 50.0);
    if idle_tasks + a.slowloris > a.per_ip {
        if refused.is_empty() {
            problems.push("no connection over the per-address cap was refused".into());
        } else if refused_p50 > 1.0 {
            problems
                .push(format!("connections over the cap were closed after {refused_p50:.1} s (median), not at once"));
        }
    }
    let idle_bound = (a.idle_timeout as f64) + a.margin.as_secs_f64();
    let header_bound = (a.header_timeout as f64) + a.margin.as_secs_f64();
    let idle_late = idle.closed_after.iter().chain(&idle.open_at_end).filter(|&&s| s > idle_bound).count();
    if idle_late > 0 {
        problems.push(format!("{idle_late} idle connections open longer than {idle_bound:.0} s"));
    }
    if idle_tasks > 0 && a.attack.as_secs_f64() > idle_bound && idle.closed_after.is_empty() {
        problems.push("no idle connection was closed by the server".into());
    }
    let slow_late = slow.closed_after.iter().chain(&slow.open_at_end).filter(|&&s| s > header_bound).count();
    if slow_late > 0 || slow.answered > 0 {
        problems.push(format!(
            "{slow_late} slowloris heads not cut within {header_bound:.0} s, {} answered",
            slow.answered
        ));
    }
    if a.slowloris > 0 && a.attack.as_secs_f64() > header_bound && slow.closed_after.is_empty() {
        problems.push("no slowloris connection was cut".into());
    }
    if accepted_wrong > 0 {
        problems.push(format!("{accepted_wrong} wrong passwords accepted"));
    }
    if a.guessers > 0 && n401 + n429 == 0 {
        problems.push("the guessers got no 401 or 429".into());
    }
    if a.expect_429 && n429 == 0 {
        problems.push("the guessers got no 429 (--expect-429)".into());
    }
    if a.readers > 0 && reads.bytes == 0 {
        problems.push("the readers read nothing".into());
    }

    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let max_of = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    notes.push(format!(
        "legitimate agent: {} submits, p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.0} ms, {failures} failures",
        submits.len()
    ));
    notes.push(format!("server peak RSS (VmHWM) {peak_rss:.0} MiB ({rss_before:.0} MiB before the attack)"));
    notes.push(format!(
        "CPU during the attack: server {server_cpu:.0} s, this process (attackers, legitimate agent) {own_cpu:.0} s, in {attack_secs:.0} s; load average {load_before} before, {} after",
        loadavg()
    ));
    notes.push(format!(
        "idle: {} attempts, {} admitted, {} refused at once (median {:.0} ms), closed after ≤ {:.1} s (idle timeout {} s), {} connect errors",
        idle.attempts,
        idle.admitted,
        idle.refused.len(),
        pct(&sorted_refused, 50.0) * 1000.0,
        max_of(&idle.closed_after),
        a.idle_timeout,
        idle.connect_errors
    ));
    notes.push(format!(
        "slowloris: {} admitted, {} cut after ≤ {:.1} s (header timeout {} s), {} refused",
        slow.admitted,
        slow.closed_after.len(),
        max_of(&slow.closed_after),
        a.header_timeout,
        slow.refused.len()
    ));
    notes.push(format!("attacking connections open at once: at most {peak_open} (per-address cap {})", a.per_ip));
    let mut st: Vec<_> = guesses.statuses.iter().map(|(s, n)| format!("{n} × {s}")).collect();
    st.sort();
    notes.push(format!(
        "guessing: {} ({} with Retry-After), {} connection errors",
        if st.is_empty() { "no answers".into() } else { st.join(", ") },
        guesses.retry_after,
        guesses.errors
    ));
    let mut rs: Vec<_> = reads.statuses.iter().map(|(s, n)| format!("{n} × {s}")).collect();
    rs.sort();
    notes.push(format!(
        "big-inbox reads: {} pages, {:.0} MiB ({}), {} errors",
        reads.pages,
        mib(reads.bytes),
        rs.join(", "),
        reads.errors
    ));
    for e in idle.first_errors.iter().chain(&slow.first_errors).chain(&guesses.first_errors).chain(&reads.first_errors)
    {
        notes.push(format!("attacker error: {e}"));
    }
    let pass = problems.is_empty();
    notes.extend(problems);
    for n in &notes {
        eprintln!("  {}: {n}", a.label);
    }
    let mut row = Row::new(&a.label, 1, &t, started.elapsed(), pass, notes);
    row.0["p50_ms"] = serde_json::json!(p50);
    row.0["p99_ms"] = serde_json::json!(p99);
    row.0["failures"] = serde_json::json!(failures);
    row.0["peak_rss_mib"] = serde_json::json!(peak_rss);
    row.0["server_cpu_s"] = serde_json::json!(server_cpu);
    row.0["attacker_cpu_s"] = serde_json::json!(own_cpu);
    row.0["guesses_401"] = serde_json::json!(n401);
    row.0["guesses_429"] = serde_json::json!(n429);
    Ok(row)
}

/// The `p`th percentile of sorted values (0 when empty).
fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// A field of `/proc/<pid>/status` in KiB.
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with(field))?;
    line[field.len()..].trim().trim_end_matches("kB").trim().parse().ok()
}

/// CPU seconds (user + system) a process has used.
fn cpu_secs(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0.0 };
    let f: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks: u64 =
        f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0) + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1);
    ticks as f64 / hz as f64
}

/// The 1-minute load average (other work on the machine shows there).
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_default()
}

/// CPU seconds this process has used.
fn own_cpu_secs() -> f64 {
    cpu_secs(std::process::id())
}

/// Raises this process's soft open-file limit to the hard one; returns the soft limit.
fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
        if lim.rlim_cur < lim.rlim_max && libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
            lim.rlim_cur = lim.rlim_max;
        }
    }
    #[allow(clippy::unnecessary_cast)]
    let cur = lim.rlim_cur as u64;
    cur
}

fn base(port: u16) -> String {
    format!("https://127.0.0.1:{port}/.well-known/atp/v1")
}

/// An HTTP client bound to the attacking address.
fn attacker_client() -> Result<reqwest::Client, Error> {
    Ok(reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .local_address(IpAddr::V4(ATTACKER))
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(60))
        .build()?)
}

/// `BULK` sends itself `n` messages of about `bytes` bytes (4 at a time, from 127.0.0.1).
async fn fill_inbox(port: u16, n: usize, bytes: usize) -> Result<(), Error> {
    let http = reqwest::Client::builder().danger_accept_invalid_certs(true).timeout(Duration::from_secs(60)).build()?;
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (http, next) = (http.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok(());
                }
                let body: String = (0..bytes).map(|k| (b'a' + ((k * 7 + i) % 26) as u8) as char).collect();
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                let msg = serde_json::json!({"from": BULK, "to": BULK, "timestamp": now, "nonce": format!("bulk-{i}"),
                                             "type": "message", "payload": {"subject": "bulk", "body": body}});
                let r = http
                    .post(format!("{}/message", base(port)))
                    .basic_auth(BULK, Some(PASSWORD))
                    .json(&msg)
                    .send()
                    .await?;
                let status = r.status().as_u16();
                if status != 202 {
                    let text = r.text().await.unwrap_or_default();
                    return Err(Error::Msg(format!("filling the big inbox: message {i}: {status} {text}")));
                }
            }
        }));
    }
    for t in tasks {
        t.await.map_err(|e| Error::Msg(e.to_string()))??;
    }
    Ok(())
}

/// The legitimate agent (its client connected before the attack): submits to its friend (20 ms
/// apart) and reads the friend's inbox every tenth time, until stopped. Returns the ledger, the
/// submit latencies, the failed reads and the first errors.
async fn legit_agent(api: Api, mut stop: watch::Receiver<bool>) -> (Ledger, Vec<Duration>, u64, Vec<String>) {
    let mut ledger = Ledger::default();
    let (mut lat, mut read_failures, mut errors) = (Vec::new(), 0, Vec::new());
    let (mut n, mut after) = (0u64, 0i64);
    while !*stop.borrow() {
        n += 1;
        let nonce = format!("legit-{n}");
        let t = Instant::now();
        let outcome = api.submit(LEGIT, FRIEND, &nonce).await;
        lat.push(t.elapsed());
        if !matches!(outcome, Outcome::Accepted) && errors.len() < 3 {
            errors.push(format!("submit: {outcome:?}"));
        }
        ledger.record(nonce, outcome);
        if n % 10 == 0 {
            match api.inbox_page(FRIEND, after).await {
                Ok((_, last)) => after = last,
                Err(e) => {
                    read_failures += 1;
                    if errors.len() < 3 {
                        errors.push(format!("read: {e}"));
                    }
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            _ = stop.changed() => {}
        }
    }
    (ledger, lat, read_failures, errors)
}

/// One page of `BULK`'s inbox: (status, bytes, last id).
async fn read_page(
    http: &reqwest::Client,
    port: u16,
    after: i64,
    limit: u32,
) -> Result<(u16, u64, Option<i64>), Error> {
    let r = http
        .get(format!("{}/messages", base(port)))
        .query(&[("agent_id", BULK), ("after_id", &after.to_string()), ("limit", &limit.to_string())])
        .basic_auth(BULK, Some(PASSWORD))
        .send()
        .await?;
    let status = r.status().as_u16();
    let body = r.bytes().await?;
    // `"last_id": N` near the end of the page (the message bodies are letters only).
    let last = find_last(&body, b"\"last_id\":").and_then(|i| {
        let digits: String = body[i..]
            .iter()
            .skip(10)
            .map(|&b| b as char)
            .skip_while(|c| c.is_whitespace())
            .take_while(|c| c.is_ascii_digit() || *c == '-')
            .collect();
        digits.parse().ok()
    });
    Ok((status, body.len() as u64, last))
}

fn find_last(hay: &[u8], needle: &[u8]) -> Option<usize> {
    (0..=hay.len().checked_sub(needle.len())?).rev().find(|&i| &hay[i..i + needle.len()] == needle)
}

/// A big-inbox reader: pages through `BULK`'s inbox (limit 500) over and over.
async fn reader(http: reqwest::Client, port: u16, reads: Arc<Mutex<Reads>>, mut stop: watch::Receiver<bool>) {
    let mut after = 0;
    while !*stop.borrow() {
        let got = tokio::select! {
            r = read_page(&http, port, after, 500) => r,
            _ = stop.changed() => return,
        };
        let failed = {
            let mut r = reads.lock().unwrap_or_else(|p| p.into_inner());
            match got {
                Ok((status, bytes, last)) => {
                    *r.statuses.entry(status).or_default() += 1;
                    r.bytes += bytes;
                    if status == 200 {
                        r.pages += 1;
                        after = match last {
                            Some(l) if l > after => l,
                            _ => 0,
                        };
                    }
                    false
                }
                Err(e) => {
                    r.errors += 1;
                    if r.first_errors.len() < 2 {
                        r.first_errors.push(format!("read: {e}"));
                    }
                    true
                }
            }
        };
        if failed {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// One wrong-password request for the legitimate agent: the status and whether it had
/// `Retry-After`.
async fn guess(http: &reqwest::Client, port: u16, password: &str) -> Result<(u16, bool), Error> {
    let r = http
        .get(format!("{}/messages", base(port)))
        .query(&[("agent_id", LEGIT), ("limit", "1")])
        .basic_auth(LEGIT, Some(password))
        .send()
        .await?;
    let status = r.status().as_u16();
    let retry_after = r.headers().contains_key("retry-after");
    let _ = r.bytes().await;
    Ok((status, retry_after))
}

/// A password guesser: wrong passwords back to back (an attacker ignores `Retry-After`).
async fn guesser(http: reqwest::Client, port: u16, id: usize, g: Arc<Mutex<Guesses>>, mut stop: watch::Receiver<bool>) {
    let mut n = 0u64;
    while !*stop.borrow() {
        n += 1;
        let password = format!("wrong-{id}-{n}");
        let got = tokio::select! {
            r = guess(&http, port, &password) => r,
            _ = stop.changed() => return,
        };
        let failed = got.is_err();
        {
            let mut g = g.lock().unwrap_or_else(|p| p.into_inner());
            match got {
                Ok((status, retry_after)) => {
                    *g.statuses.entry(status).or_default() += 1;
                    g.retry_after += u64::from(retry_after);
                }
                Err(e) => {
                    g.errors += 1;
                    if g.first_errors.len() < 2 {
                        g.first_errors.push(format!("guess: {e}"));
                    }
                }
            }
        }
        if failed {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

fn tls_config() -> rustls::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3 with ring")
        .dangerous()
        .with_custom_certificate_verifier(atp_testkit::AnyCert::new(provider))
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    cfg
}

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// How an attacking connection attempt went.
enum Attempt {
    Open(Box<Tls>),
    /// Closed by the server before the handshake finished: seconds since the TCP connect.
    Refused(f64),
    Failed(String),
}

async fn attempt(raw: &Raw) -> Attempt {
    let tcp = async {
        let sock = TcpSocket::new_v4()?;
        sock.bind(SocketAddr::new(IpAddr::V4(ATTACKER), 0))?;
        sock.connect(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), raw.port)).await
    };
    let tcp = match tcp.await {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Attempt::Refused(0.0),
        Err(e) => return Attempt::Failed(format!("connect: {e}")),
    };
    let connected = Instant::now();
    let name = rustls::pki_types::ServerName::try_from("alpha.rel").expect("a DNS name");
    match tokio_rustls::TlsConnector::from(raw.tls.clone()).connect(name, tcp).await {
        Ok(t) => Attempt::Open(Box::new(t)),
        Err(_) => Attempt::Refused(connected.elapsed().as_secs_f64()),
    }
}

/// Counts an attacking connection open (and the peak) until dropped.
struct Opened(Arc<AtomicUsize>);

impl Opened {
    fn new(raw: &Raw) -> Opened {
        let n = raw.open.fetch_add(1, Ordering::AcqRel) + 1;
        raw.peak.fetch_max(n, Ordering::AcqRel);
        Opened(raw.open.clone())
    }
}

impl Drop for Opened {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Waits `d` unless stopped first (true: stopped).
async fn pause(stop: &mut watch::Receiver<bool>, d: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => *stop.borrow(),
        _ = stop.changed() => true,
    }
}

/// One idle attacker: holds a TLS connection open without a request; reconnects when the server
/// closes it; backs off 1–2 s after a refusal.
async fn idle_conn(raw: Raw, stats: Arc<Mutex<Conns>>, delay: Duration, seed: u64) {
    let mut rng = Rng::new(seed);
    let mut stop = raw.stop.clone();
    if pause(&mut stop, delay).await {
        return;
    }
    while !*stop.borrow() {
        stats.lock().unwrap_or_else(|p| p.into_inner()).attempts += 1;
        match attempt(&raw).await {
            Attempt::Open(mut tls) => {
                let opened = Opened::new(&raw);
                let since = Instant::now();
                stats.lock().unwrap_or_else(|p| p.into_inner()).admitted += 1;
                let mut buf = [0u8; 512];
                let closed = tokio::select! {
                    _ = async { while matches!(tls.read(&mut buf).await, Ok(n) if n > 0) {} } => true,
                    _ = stop.changed() => false,
                };
                drop(opened);
                let mut s = stats.lock().unwrap_or_else(|p| p.into_inner());
                if closed {
                    s.closed_after.push(since.elapsed().as_secs_f64());
                } else {
                    s.open_at_end.push(since.elapsed().as_secs_f64());
                    return;
                }
            }
            Attempt::Refused(secs) => {
                stats.lock().unwrap_or_else(|p| p.into_inner()).refused.push(secs);
                if pause(&mut stop, Duration::from_millis(1000 + rng.below(1000))).await {
                    return;
                }
            }
            Attempt::Failed(e) => {
                stats.lock().unwrap_or_else(|p| p.into_inner()).error(e);
                if pause(&mut stop, Duration::from_millis(1000 + rng.below(1000))).await {
                    return;
                }
            }
        }
    }
}

/// One slowloris attacker: an HTTP/1.1 head one byte a second; reconnects when cut.
async fn slowloris(raw: Raw, stats: Arc<Mutex<Conns>>) {
    let mut head =
        b"GET /.well-known/atp/v1/health HTTP/1.1\r\nHost: alpha.rel\r\nUser-Agent: slowloris\r\nX-Slow: ".to_vec();
    head.extend(std::iter::repeat_n(b'a', 4000));
    let mut stop = raw.stop.clone();
    while !*stop.borrow() {
        stats.lock().unwrap_or_else(|p| p.into_inner()).attempts += 1;
        match attempt(&raw).await {
            Attempt::Open(mut tls) => {
                let opened = Opened::new(&raw);
                stats.lock().unwrap_or_else(|p| p.into_inner()).admitted += 1;
                let first = Instant::now();
                let mut sent = 0;
                let mut buf = [0u8; 512];
                // Some(true): cut; Some(false): answered; None: stopped.
                let end = loop {
                    if sent < head.len() {
                        if tls.write_all(&head[sent..=sent]).await.is_err() || tls.flush().await.is_err() {
                            break Some(true);
                        }
                        sent += 1;
                    }
                    tokio::select! {
                        r = tls.read(&mut buf) => match r {
                            Ok(0) | Err(_) => break Some(true),
                            Ok(_) => break Some(false),
                        },
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = stop.changed() => break None,
                    }
                };
                drop(opened);
                let mut s = stats.lock().unwrap_or_else(|p| p.into_inner());
                match end {
                    Some(true) => s.closed_after.push(first.elapsed().as_secs_f64()),
                    Some(false) => s.answered += 1,
                    None => {
                        s.open_at_end.push(first.elapsed().as_secs_f64());
                        return;
                    }
                }
            }
            Attempt::Refused(secs) => {
                stats.lock().unwrap_or_else(|p| p.into_inner()).refused.push(secs);
                if pause(&mut stop, Duration::from_millis(500)).await {
                    return;
                }
            }
            Attempt::Failed(e) => {
                stats.lock().unwrap_or_else(|p| p.into_inner()).error(e);
                if pause(&mut stop, Duration::from_millis(500)).await {
                    return;
                }
            }
        }
    }
}
