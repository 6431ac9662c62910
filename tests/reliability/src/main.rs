//! `atp-reliability`: reliability suites for atp (issue 9), driving real release `atp` processes
//! on loopback with TLS — `alpha.rel` (the sender's server) and `beta.rel` (the recipient's):
//!
//! * `crash` — `kill -9` of either server at a random moment under load, restart, every 202
//!   delivered exactly once ([`crash`]);
//! * `peer-down` — the recipient's server down for `--down-secs`, then back: all delivered once
//!   ([`peer_down`]);
//! * `storage` — a full, then read-only data directory: clear refusals, never a false 202
//!   ([`storage`]; root only);
//! * `cluster` — two nodes of one domain on one PostgreSQL: one killed -9 holding leases, the
//!   survivor takes them over; PostgreSQL restarted under load ([`cluster`]);
//! * `abuse` — idle connections, slowloris, password guessing and big-inbox reads at once from
//!   127.0.0.2 while a legitimate agent on 127.0.0.1 keeps working ([`abuse`]).
//!
//! `tests/reliability/run.sh` builds everything and runs the long version; `--short` there (or
//! `RELIABILITY_SHORT=1`) the CI one. Rows go to `--results` as JSON lines; `--table FILE` prints
//! them as a Markdown table.

mod abuse;
mod client;
mod cluster;
mod crash;
mod load;
mod peer_down;
mod read_only;
mod report;
mod servers;
mod storage;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::report::Row;
use crate::servers::Launch;

/// Why the suite could not run a scenario.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Msg(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Http(#[from] reqwest::Error),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    Crash,
    PeerDown,
    Storage,
    Abuse,
    Cluster,
}

#[derive(Parser, Debug)]
#[command(
    about = "Reliability suites for atp: kill -9 under load, a peer down then back, full and read-only disks, abuse"
)]
struct Args {
    /// The `atp` binary to test (a release build).
    #[arg(long, required_unless_present = "table")]
    atp: Option<PathBuf>,
    /// Scenarios to run (comma-separated or repeated) [default: all].
    #[arg(long, value_enum, value_delimiter = ',')]
    scenario: Vec<Scenario>,
    /// Crash trials.
    #[arg(long, default_value_t = 20)]
    trials: u32,
    /// Seconds of load per crash trial (the kill and the restart fall inside).
    #[arg(long, default_value_t = 6.0)]
    trial_secs: f64,
    /// Concurrent submitting clients.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Seconds to wait for the last deliveries after a crash trial or the storage scenario.
    #[arg(long, default_value_t = 120)]
    drain_secs: u64,
    /// Seconds the recipient's server stays down in `peer-down`.
    #[arg(long, default_value_t = 600)]
    down_secs: u64,
    /// Milliseconds each client waits between submissions in `peer-down`.
    #[arg(long, default_value_t = 50)]
    down_pace_ms: u64,
    /// Seconds after the restart by which everything must have arrived in `peer-down`
    /// [default: 1.5 × min(retry cap, down secs) + 60].
    #[arg(long)]
    down_deadline: Option<u64>,
    /// `--retry-base` of both servers (seconds).
    #[arg(long, default_value_t = 1)]
    retry_base: u64,
    /// `--retry-cap` of both servers (seconds).
    #[arg(long, default_value_t = 5)]
    retry_cap: u64,
    /// Size of the tmpfs of the `storage` scenario.
    #[arg(long, default_value = "64m")]
    tmpfs_size: String,
    /// `cluster`: `--lease-seconds` of the two nodes.
    #[arg(long, default_value_t = 3)]
    lease_secs: u64,
    /// `cluster`: seconds PostgreSQL stays down.
    #[arg(long, default_value_t = 3.0)]
    pg_down_secs: f64,
    /// Working directory (homes and server logs; kept) [default: a new directory in $TMPDIR].
    #[arg(long)]
    work: Option<PathBuf>,
    /// Append the result rows to this JSON-lines file.
    #[arg(long)]
    results: Option<PathBuf>,
    /// Seed of the random kill moments [default: the clock].
    #[arg(long)]
    seed: Option<u64>,
    /// `abuse`: tasks holding idle TLS connections from 127.0.0.2.
    #[arg(long, default_value_t = 2000)]
    abuse_idle: usize,
    /// `abuse`: slowloris connections (a head byte a second).
    #[arg(long, default_value_t = 50)]
    abuse_slowloris: usize,
    /// `abuse`: concurrent wrong-password clients.
    #[arg(long, default_value_t = 128)]
    abuse_guessers: usize,
    /// `abuse`: parallel readers of the big inbox (`GET messages?limit=500`).
    #[arg(long, default_value_t = 8)]
    abuse_readers: usize,
    /// `abuse`: messages in the big inbox.
    #[arg(long, default_value_t = 120)]
    abuse_inbox: usize,
    /// `abuse`: size of each big-inbox message (KB).
    #[arg(long, default_value_t = 900)]
    abuse_message_kb: usize,
    /// `abuse`: seconds of attack.
    #[arg(long, default_value_t = 90)]
    abuse_secs: u64,
    /// `abuse`: the server's `max_connections_per_ip`.
    #[arg(long, default_value_t = 64)]
    abuse_per_ip: usize,
    /// `abuse`: the server's `header_read_timeout` (seconds).
    #[arg(long, default_value_t = 10)]
    abuse_header_timeout: u64,
    /// `abuse`: the server's `idle_timeout` (seconds).
    #[arg(long, default_value_t = 60)]
    abuse_idle_timeout: u64,
    /// `abuse`: slack (seconds) on the idle and header timeouts' checks.
    #[arg(long, default_value_t = 10)]
    abuse_margin: u64,
    /// `abuse`: bound on the legitimate agent's submit p99 (ms).
    #[arg(long, default_value_t = 250)]
    abuse_max_p99_ms: u64,
    /// `abuse`: bound on the server's peak RSS (MiB).
    #[arg(long, default_value_t = 256.0)]
    abuse_max_rss_mib: f64,
    /// `abuse`: require 429 answers to the password guessing (failed-login rate limiting).
    #[arg(long)]
    expect_429: bool,
    /// Print the Markdown table of a results file and exit (status 1 if a row failed).
    #[arg(long, value_name = "FILE")]
    table: Option<PathBuf>,
}

/// xorshift64*: the kill moments and victims (reproducible with `--seed`).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Uniform in [0, n).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    if let Some(file) = &args.table {
        return match report::read(file) {
            Ok(rows) => {
                print!("{}", report::table(&rows));
                exit(rows.iter().all(Row::passed))
            }
            Err(e) => {
                eprintln!("Error: {}: {e}", file.display());
                std::process::ExitCode::FAILURE
            }
        };
    }
    let Some(atp) = args.atp.clone() else { return std::process::ExitCode::FAILURE };
    let atp = std::fs::canonicalize(&atp).unwrap_or(atp);
    let launch = Launch { atp, retry_base: args.retry_base, retry_cap: args.retry_cap };
    let work = args.work.clone().unwrap_or_else(|| {
        let stamp =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        std::env::temp_dir().join(format!("atp-reliability-{stamp}-{}", std::process::id()))
    });
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1)
    });
    let scenarios = if args.scenario.is_empty() {
        vec![Scenario::Crash, Scenario::PeerDown, Scenario::Storage, Scenario::Abuse, Scenario::Cluster]
    } else {
        args.scenario.clone()
    };
    eprintln!(
        "atp-reliability: {} (retry base {} s, cap {} s), seed {seed}, work dir {} (server logs: <scenario>/*.log)",
        launch.atp.display(),
        launch.retry_base,
        launch.retry_cap,
        work.display()
    );
    let mut rng = Rng::new(seed);
    let mut rows = Vec::new();
    for sc in scenarios {
        let (name, result) = match sc {
            Scenario::Crash => {
                eprintln!("== crash: {} trials of {} s, {} clients", args.trials, args.trial_secs, args.clients);
                let c = crash::Crash {
                    trials: args.trials,
                    trial_secs: args.trial_secs,
                    clients: args.clients,
                    drain_secs: args.drain_secs,
                };
                ("crash", crash::run(&c, &launch, &work.join("crash"), &mut rng).await)
            }
            Scenario::PeerDown => {
                eprintln!("== peer-down: {} s", args.down_secs);
                let deadline =
                    args.down_deadline.unwrap_or_else(|| (1.5 * args.retry_cap.min(args.down_secs) as f64) as u64 + 60);
                let p = peer_down::PeerDown {
                    down_secs: args.down_secs,
                    clients: args.clients,
                    pace: Duration::from_millis(args.down_pace_ms),
                    deadline: Duration::from_secs(deadline),
                };
                ("peer-down", peer_down::run(&p, &launch, &work.join("peer-down")).await)
            }
            Scenario::Storage => {
                eprintln!("== storage: tmpfs of {}", args.tmpfs_size);
                let s = storage::Storage { size: args.tmpfs_size.clone(), drain_secs: args.drain_secs };
                ("storage", storage::run(&s, &launch, &work.join("storage")).await)
            }
            Scenario::Cluster => {
                eprintln!("== cluster: two nodes on one PostgreSQL, lease {} s", args.lease_secs);
                let c = cluster::Cluster {
                    clients: args.clients,
                    lease_secs: args.lease_secs,
                    pg_down_secs: args.pg_down_secs,
                    drain_secs: args.drain_secs,
                };
                ("cluster", cluster::run(&c, &launch, &work.join("cluster")).await)
            }
            Scenario::Abuse => {
                let a = abuse::Abuse {
                    idle: args.abuse_idle,
                    slowloris: args.abuse_slowloris,
                    guessers: args.abuse_guessers,
                    readers: args.abuse_readers,
                    inbox_messages: args.abuse_inbox,
                    message_bytes: args.abuse_message_kb * 1000,
                    attack: Duration::from_secs(args.abuse_secs),
                    per_ip: args.abuse_per_ip,
                    header_timeout: args.abuse_header_timeout,
                    idle_timeout: args.abuse_idle_timeout,
                    handshake_timeout: 10,
                    margin: Duration::from_secs(args.abuse_margin),
                    max_p99: Duration::from_millis(args.abuse_max_p99_ms),
                    max_rss_mib: args.abuse_max_rss_mib,
                    expect_429: args.expect_429,
                    label: format!("abuse {} s", args.abuse_secs),
                };
                eprintln!("== {}", a.label);
                ("abuse", abuse::run(&a, &launch, &work.join("abuse"), &mut rng).await)
            }
        };
        let row = result.unwrap_or_else(|e| {
            eprintln!("  {name}: error: {e}");
            Row::failed(name, &e.to_string())
        });
        rows.push(row);
    }
    if let Some(file) = &args.results {
        if let Err(e) = report::append(file, &rows) {
            eprintln!("Error: {}: {e}", file.display());
        }
    }
    print!("{}", report::table(&rows));
    exit(rows.iter().all(Row::passed))
}

fn exit(ok: bool) -> std::process::ExitCode {
    if ok {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}
