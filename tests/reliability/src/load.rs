//! Load and accounting: concurrent clients submitting messages with unique nonces, the ledger of
//! what each submission got, the recipient's inbox as counts per nonce, and the tally that
//! compares them (every 202 exactly once; a submission without an answer at most once).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::client::{Api, Outcome};
use crate::servers::{RECIPIENT, SENDER};
use crate::Error;

/// What the submissions got.
#[derive(Debug, Default)]
pub struct Ledger {
    /// Answered 202: each must arrive exactly once.
    pub accepted: HashSet<String>,
    /// No answer (connection refused or reset, timeout): may arrive, at most once.
    pub uncertain: HashSet<String>,
    /// Submissions that timed out (a hang, not a refusal).
    pub timeouts: u64,
    /// Refused with the JSON error shape: status → count; the nonces may arrive at most once.
    pub refused: HashMap<u16, u64>,
    pub refused_nonces: HashSet<String>,
    /// Answered "outcome unknown" (a disk failure while committing): nonce → the timestamp it
    /// was sent with, for the retry ([`Ledger::retry_unknown`]) that must settle it.
    pub unknown: HashMap<String, u64>,
    /// How many "outcome unknown" answers were settled by a retry (202).
    pub unknown_settled: u64,
    /// Refusals without the JSON error shape (or a 500): `status body`, the first few.
    pub unclear: Vec<String>,
    pub unclear_count: u64,
    /// The first refusal bodies seen per status (for the report).
    pub samples: HashMap<u16, String>,
    /// The first errors of submissions without an answer.
    pub failures: Vec<String>,
}

impl Ledger {
    /// Records one outcome.
    pub fn record(&mut self, nonce: String, outcome: Outcome) {
        match outcome {
            Outcome::Accepted => {
                self.accepted.insert(nonce);
            }
            Outcome::Refused { status, body, clear } => {
                if clear && status != 500 {
                    *self.refused.entry(status).or_default() += 1;
                    self.samples.entry(status).or_insert(body);
                } else {
                    self.unclear_count += 1;
                    if self.unclear.len() < 5 {
                        self.unclear.push(format!("{status} {body}"));
                    }
                }
                self.refused_nonces.insert(nonce);
            }
            Outcome::Unknown { timestamp, body } => {
                self.samples.entry(503).or_insert(body);
                self.unknown.insert(nonce, timestamp);
            }
            Outcome::Failed { timeout, error } => {
                if timeout {
                    self.timeouts += 1;
                }
                if self.failures.len() < 3 {
                    self.failures.push(error);
                }
                self.uncertain.insert(nonce);
            }
        }
    }

    /// Adds another ledger's entries.
    pub fn merge(&mut self, o: Ledger) {
        self.accepted.extend(o.accepted);
        self.uncertain.extend(o.uncertain);
        self.timeouts += o.timeouts;
        for (s, n) in o.refused {
            *self.refused.entry(s).or_default() += n;
        }
        self.refused_nonces.extend(o.refused_nonces);
        self.unknown.extend(o.unknown);
        self.unknown_settled += o.unknown_settled;
        for (s, b) in o.samples {
            self.samples.entry(s).or_insert(b);
        }
        self.unclear_count += o.unclear_count;
        for f in o.failures {
            if self.failures.len() < 3 {
                self.failures.push(f);
            }
        }
        for u in o.unclear {
            if self.unclear.len() < 5 {
                self.unclear.push(u);
            }
        }
    }
}

impl Ledger {
    /// Retries every "outcome unknown" submission with the same nonce and content until it is
    /// answered 202 (then it counts as accepted: it must arrive exactly once) or `deadline`
    /// passes. Returns the answers of those that never got a 202 (each a failure of the server:
    /// a retry of an unknown outcome must be safe and, once the disk is back, accepted).
    pub async fn retry_unknown(&mut self, api: &Api, deadline: Duration) -> Vec<String> {
        let end = Instant::now() + deadline;
        let mut left = Vec::new();
        for (nonce, ts) in std::mem::take(&mut self.unknown) {
            loop {
                match api.submit_at(SENDER, RECIPIENT, &nonce, ts).await {
                    Outcome::Accepted => {
                        self.unknown_settled += 1;
                        self.accepted.insert(nonce);
                        break;
                    }
                    other if Instant::now() > end => {
                        left.push(format!("{nonce}: {other:?}"));
                        self.refused_nonces.insert(nonce);
                        break;
                    }
                    _ => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        }
        left
    }
}

/// Clients submitting from [`SENDER`] to [`RECIPIENT`] until stopped.
pub struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    ledger: Arc<Mutex<Ledger>>,
}

impl Load {
    /// Starts `clients` clients; nonces are `<prefix>-<client>-<n>`. With `pace`, each client
    /// waits that long between submissions; without, they submit back to back.
    pub fn start(api: &Api, prefix: &str, clients: usize, pace: Option<Duration>) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        let tasks = (0..clients)
            .map(|c| {
                let (api, stop, ledger, prefix) = (api.clone(), stop.clone(), ledger.clone(), prefix.to_owned());
                tokio::spawn(async move {
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        let nonce = format!("{prefix}-{c}-{n}");
                        let outcome = api.submit(SENDER, RECIPIENT, &nonce).await;
                        let failed = matches!(outcome, Outcome::Failed { .. });
                        if let Ok(mut l) = ledger.lock() {
                            l.record(nonce, outcome);
                        }
                        if failed {
                            // The server is down: do not spin.
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        } else if let Some(p) = pace {
                            tokio::time::sleep(p).await;
                        }
                    }
                })
            })
            .collect();
        Load { stop, tasks, ledger }
    }

    /// Submissions answered 202 so far.
    pub fn accepted(&self) -> usize {
        self.ledger.lock().map(|l| l.accepted.len()).unwrap_or(0)
    }

    /// Stops the clients (each finishes its submission in flight) and returns the ledger.
    pub async fn stop(self) -> Ledger {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
        std::mem::take(&mut *self.ledger.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// The recipient's inbox, read incrementally: how many times each nonce is there.
#[derive(Default)]
pub struct Inbox {
    pub counts: HashMap<String, u32>,
    after: i64,
}

impl Inbox {
    pub fn new() -> Inbox {
        Inbox::default()
    }

    /// Reads what arrived since the last call.
    pub async fn poll(&mut self, beta: &Api) -> Result<(), Error> {
        loop {
            let (nonces, last) = beta.inbox_page(RECIPIENT, self.after).await?;
            self.after = last;
            if nonces.is_empty() {
                return Ok(());
            }
            for n in nonces {
                *self.counts.entry(n).or_default() += 1;
            }
        }
    }

    fn missing(&self, accepted: &HashSet<String>) -> usize {
        accepted.iter().filter(|n| !self.counts.contains_key(*n)).count()
    }
}

/// How draining went.
#[derive(Debug)]
pub struct Drained {
    /// When the last accepted message arrived (None: some never did).
    pub all_arrived: Option<Instant>,
    /// Outbound rows alpha still had at the end, and bounces.
    pub queue_left: i64,
    pub bounced: i64,
}

/// Polls until every accepted message is in the inbox and alpha's queue is empty (so messages
/// whose submission got no answer but were stored are delivered too), or until `deadline`.
pub async fn drain(
    inbox: &mut Inbox,
    alpha: &Api,
    beta: &Api,
    accepted: &HashSet<String>,
    deadline: Duration,
) -> Result<Drained, Error> {
    let end = Instant::now() + deadline;
    let mut all_arrived = None;
    loop {
        if let Err(e) = inbox.poll(beta).await {
            if Instant::now() > end {
                return Err(e);
            }
        }
        if all_arrived.is_none() && inbox.missing(accepted) == 0 {
            all_arrived = Some(Instant::now());
        }
        let (queue_left, bounced) = alpha.queue().await.unwrap_or((-1, -1));
        if (all_arrived.is_some() && queue_left == 0) || Instant::now() > end {
            // One more read: whatever the last delivery brought.
            inbox.poll(beta).await?;
            return Ok(Drained { all_arrived, queue_left, bounced });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The comparison of a ledger with the inbox, for the nonces starting with a prefix.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    pub accepted: u64,
    /// Accepted and in the inbox (once or more).
    pub delivered: u64,
    pub lost: u64,
    /// Extra copies of any nonce (accepted or not).
    pub duplicates: u64,
    pub uncertain: u64,
    pub uncertain_arrived: u64,
    pub refused: u64,
    pub refused_arrived: u64,
    pub unclear: u64,
    pub timeouts: u64,
    /// Nonces in the inbox that were never submitted.
    pub strays: u64,
}

impl Tally {
    pub fn of(ledger: &Ledger, inbox: &Inbox, prefix: &str) -> Tally {
        let mut t = Tally {
            accepted: ledger.accepted.len() as u64,
            uncertain: ledger.uncertain.len() as u64,
            refused: ledger.refused.values().sum(),
            unclear: ledger.unclear_count,
            timeouts: ledger.timeouts,
            ..Tally::default()
        };
        for (nonce, &count) in &inbox.counts {
            if !nonce.starts_with(prefix) {
                continue;
            }
            t.duplicates += u64::from(count.saturating_sub(1));
            if ledger.accepted.contains(nonce) {
                t.delivered += 1;
            } else if ledger.uncertain.contains(nonce) {
                t.uncertain_arrived += 1;
            } else if ledger.refused_nonces.contains(nonce) {
                t.refused_arrived += 1;
            } else {
                t.strays += 1;
            }
        }
        t.lost = t.accepted - t.delivered;
        t
    }

    pub fn add(&mut self, o: &Tally) {
        self.accepted += o.accepted;
        self.delivered += o.delivered;
        self.lost += o.lost;
        self.duplicates += o.duplicates;
        self.uncertain += o.uncertain;
        self.uncertain_arrived += o.uncertain_arrived;
        self.refused += o.refused;
        self.refused_arrived += o.refused_arrived;
        self.unclear += o.unclear;
        self.timeouts += o.timeouts;
        self.strays += o.strays;
    }

    /// Exactly once for every 202, nothing from nowhere.
    pub fn exact(&self) -> bool {
        self.lost == 0 && self.duplicates == 0 && self.strays == 0
    }
}
