//! Outbound delivery (docs/design.md §3, §4), with atp-native's rules on Workers primitives:
//!
//! * A local agent's message for another domain is queued in KV under a short lease
//!   (`q/<now + LEASE>/<nonce>`) and attempted right after the 202 is sent (`waitUntil`). A Cron
//!   trigger runs [`Relay::sweep`]: it lists `q/` (keys sort by due time), takes at most
//!   `SWEEP_BATCH` due messages, leases each (moves it to a later key) and attempts it. An attempt
//!   that dies mid-way is picked up again when its lease is due. KV is eventually consistent, so
//!   two sweeps may attempt one message twice; the receiver's idempotency (docs/design.md §3) makes that
//!   harmless.
//! * **Attempt:** sign with the domain key (`DOMAIN_KEY`, selector `KEY_SELECTOR`), discover the
//!   endpoints by DoH SVCB (`_atp` → `_agent` → SRV), POST `https://host:port/.well-known/atp/v1/message`
//!   to each until one answers.
//! * **Outcomes** ([`atp_wasm::retry`]): 2xx delivered; 4xx other than 408/429 permanent (bounce now
//!   with the receiver's error); 408/429/451/5xx, DNS failures, network errors, timeouts temporary;
//!   no ATP records permanent.
//! * **Backoff per domain** (`b/<domain>` in KV): a temporary failure blocks the destination for an
//!   exponentially growing, jittered, capped delay ([`RetryPolicy`]); its messages due meanwhile are
//!   moved to the end of the block without an attempt. An answer from the domain resets it.
//! * **Bounces**: refused for good, or still undelivered at `MAX_AGE`: a notice from
//!   `postmaster@<domain>` with `subject`, `body`, `original_nonce`, `error_code`, `status` and
//!   `error` lands in the sender's inbox.
//! * **Limits**: a sweep attempts at most `SWEEP_BATCH` messages, several destination domains at
//!   once (at most [`PARALLEL_DOMAINS`], Workers' simultaneous connections), and stops starting
//!   attempts when fewer than [`MIN_BUDGET`] subrequests are left.

use std::cell::RefCell;
use std::collections::HashMap;

use atp_wasm::env::StoreError;
use atp_wasm::http::{HttpRequest, HttpTransport};
use atp_wasm::message::Message;
use atp_wasm::records::svcb::{discover, DiscoveryError, Endpoint};
use atp_wasm::retry::{classify_status, Outcome, RetryPolicy};
use atp_wasm::sign::sign_message;
use serde_json::{json, Value};

use crate::budget::EXHAUSTED;
use crate::clock::{jitter, random_u32};
use crate::kv::Kv;
use crate::layout;
use crate::relay::{inc, Relay, LEASE_SECS};
use crate::store::{Backoff, QueueEntry, Record};

/// Destination domains attempted at once by a sweep.
pub const PARALLEL_DOMAINS: usize = 6;
/// Subrequests an attempt may need when nothing is cached (three DoH lookups and the transfer).
pub const MIN_BUDGET: u32 = 4;

/// Why an attempt did not deliver.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub outcome: Outcome,
    /// The receiver's HTTP status, if it answered.
    pub status: Option<u16>,
    /// The receiver's `error_code`, or ours for failures before an answer.
    pub error_code: String,
    pub error: String,
    /// The invocation ran out of subrequests: not the destination's fault.
    pub out_of_budget: bool,
}

impl Failure {
    fn before_answer(outcome: Outcome, code: &str, error: String) -> Self {
        let out_of_budget = error.contains(EXHAUSTED);
        Failure { outcome, status: None, error_code: code.into(), error, out_of_budget }
    }
}

/// What became of one queued message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Processed {
    Delivered,
    Bounced,
    /// Failed temporarily; next attempt at this time.
    Retry(i64),
    /// Not attempted: its domain is backing off until this time.
    Deferred(i64),
    /// Not attempted: no subrequests left in this invocation.
    NoBudget,
    /// Gone from the queue already (another sweep took it).
    Gone,
}

/// What a sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepReport {
    pub due: usize,
    pub delivered: usize,
    pub bounced: usize,
    pub retried: usize,
    pub deferred: usize,
    pub not_attempted: usize,
}

impl SweepReport {
    fn add(&mut self, p: Processed) {
        match p {
            Processed::Delivered => self.delivered += 1,
            Processed::Bounced => self.bounced += 1,
            Processed::Retry(_) => self.retried += 1,
            Processed::Deferred(_) => self.deferred += 1,
            Processed::NoBudget | Processed::Gone => self.not_attempted += 1,
        }
    }
}

type Domains = RefCell<HashMap<String, Backoff>>;

/// The bounce notice for `entry` (docs/protocol.md §8.3 plus `error_code`, `status`, `error`), signed
/// like any message of ours, from `postmaster@<domain>` to the original sender.
pub fn bounce_notice(
    domain: &str,
    entry: &QueueEntry,
    f: &Failure,
    now: i64,
    key: &atp_wasm::keys::DomainKey,
    selector: &str,
) -> Message {
    let payload = json!({
        "subject": format!("Delivery Failure: {}", entry.nonce),
        "body": format!("Message to {} could not be delivered. Error: {}", entry.to, f.error),
        "original_nonce": entry.nonce,
        "error_code": f.error_code,
        "status": f.status,
        "error": f.error,
    });
    let mut msg = Message {
        from: format!("postmaster@{domain}"),
        to: entry.from.clone(),
        timestamp: now,
        nonce: atp_wasm::message::new_nonce(),
        kind: "message".into(),
        payload,
        signature: None,
        cc: Vec::new(),
        routing: None,
    };
    let _ = sign_message(&mut msg, key, selector, domain, now);
    msg
}

/// The transfer URL of an endpoint.
pub fn transfer_url(scheme: &str, ep: &Endpoint) -> String {
    let host = if ep.host.contains(':') { format!("[{}]", ep.host) } else { ep.host.clone() };
    format!("{scheme}://{host}:{}/.well-known/atp/v1/message", ep.port)
}

/// Temporary-failure bookkeeping of a domain: one more failure per backoff period.
pub fn domain_failed(b: Backoff, now: i64, policy: &RetryPolicy, jitter: f64) -> Backoff {
    if b.blocked_until > now {
        return b;
    }
    let failures = b.failures.saturating_add(1);
    Backoff { failures, blocked_until: now + policy.delay_secs(failures, jitter) as i64 }
}

impl<K: Kv, T: HttpTransport + Clone> Relay<K, T> {
    /// Signs and transfers one message.
    async fn deliver(&self, entry: &QueueEntry) -> Result<(), Failure> {
        let mut msg = Message::parse(entry.message.as_bytes()).map_err(|e| {
            Failure::before_answer(Outcome::Permanent, "554 5.6.0", format!("stored message unreadable: {e}"))
        })?;
        sign_message(&mut msg, &self.cfg.key, &self.cfg.selector, &self.cfg.domain, self.clock.now()).map_err(|e| {
            Failure::before_answer(Outcome::Permanent, "554 5.6.0", format!("message cannot be signed: {e}"))
        })?;
        let endpoints = discover(&self.resolver, &entry.domain).await.map_err(|e| match e {
            DiscoveryError::Dns(e) => Failure::before_answer(Outcome::Temporary, "451 4.4.3", e.to_string()),
            e => Failure::before_answer(Outcome::Permanent, "550 5.1.2", e.to_string()),
        })?;
        let body = msg.to_json();
        let mut last = String::from("no endpoint");
        for ep in &endpoints {
            let url = transfer_url(&self.cfg.outbound_scheme, ep);
            let req = HttpRequest::post(&url, "application/atp+json", body.clone());
            match self.outbound.send(req).await {
                Ok(resp) => {
                    let status = resp.status;
                    return match classify_status(status) {
                        Outcome::Delivered => Ok(()),
                        outcome => {
                            let v: Value = serde_json::from_slice(&resp.body).unwrap_or_default();
                            let text = |k: &str| {
                                v.get(k).and_then(Value::as_str).map(|s| s.chars().take(500).collect::<String>())
                            };
                            Err(Failure {
                                outcome,
                                status: Some(status),
                                error_code: text("error_code").unwrap_or_default(),
                                error: text("error")
                                    .or_else(|| text("detail"))
                                    .unwrap_or_else(|| format!("HTTP {status}")),
                                out_of_budget: false,
                            })
                        }
                    };
                }
                Err(e) => {
                    last = format!("{url}: {e}");
                    if e.0.contains(EXHAUSTED) {
                        break;
                    }
                }
            }
        }
        Err(Failure::before_answer(Outcome::Temporary, "451 4.4.1", last))
    }

    async fn backoff_of(&self, domain: &str, domains: &Domains) -> Result<Backoff, StoreError> {
        if let Some(b) = domains.borrow().get(domain) {
            return Ok(*b);
        }
        let b = self.stores.backoff(domain).await?;
        domains.borrow_mut().insert(domain.to_owned(), b);
        Ok(b)
    }

    async fn set_backoff(&self, domain: &str, b: Backoff, domains: &Domains) -> Result<(), StoreError> {
        domains.borrow_mut().insert(domain.to_owned(), b);
        self.stores.set_backoff(domain, b, self.clock.now()).await
    }

    /// Moves a queue entry to a new due time (new key first, then the old one goes).
    async fn move_entry(&self, key: &str, due: i64, entry: &QueueEntry) -> Result<String, StoreError> {
        let new_key = layout::queue_key(due, &entry.nonce);
        if new_key != key {
            self.stores.put_entry(due, entry).await?;
            self.stores.delete_entry(key).await?;
        }
        Ok(new_key)
    }

    fn record(&self, entry: &QueueEntry, status: &str, next: Option<i64>, error: Option<String>) -> Record {
        Record {
            nonce: entry.nonce.clone(),
            from: entry.from.clone(),
            to: entry.to.clone(),
            status: status.into(),
            created_at: entry.created_at,
            updated_at: self.clock.now(),
            attempts: entry.attempts,
            next_attempt_at: next,
            error,
        }
    }

    /// Attempts the queued message at `key` (unless its domain is backing off or the budget is
    /// spent) and settles the outcome.
    pub async fn process(&self, key: String, entry: QueueEntry, domains: &Domains) -> Result<Processed, StoreError> {
        let now = self.clock.now();
        let b = self.backoff_of(&entry.domain, domains).await?;
        if b.blocked_until > now {
            self.move_entry(&key, b.blocked_until, &entry).await?;
            return Ok(Processed::Deferred(b.blocked_until));
        }
        if self.budget.remaining() < MIN_BUDGET {
            return Ok(Processed::NoBudget);
        }
        let lease = self.move_entry(&key, now + LEASE_SECS, &entry).await?;
        let result = self.deliver(&entry).await;
        self.settle(&lease, entry, result, domains).await
    }

    async fn settle(
        &self,
        key: &str,
        mut entry: QueueEntry,
        result: Result<(), Failure>,
        domains: &Domains,
    ) -> Result<Processed, StoreError> {
        let now = self.clock.now();
        let stats = &self.iso.stats;
        if let Err(f) = &result {
            if f.out_of_budget {
                // Not the destination's fault: due again at once, nothing counted.
                self.move_entry(key, now, &entry).await?;
                return Ok(Processed::NoBudget);
            }
        }
        let answered = match &result {
            Ok(()) => true,
            Err(f) => f.status.is_some() && f.outcome == Outcome::Permanent,
        };
        if answered && self.backoff_of(&entry.domain, domains).await?.failures > 0 {
            self.set_backoff(&entry.domain, Backoff::default(), domains).await?;
        }
        entry.attempts = entry.attempts.saturating_add(1);
        match result {
            Ok(()) => {
                self.stores.put_record(&self.record(&entry, "delivered", None, None)).await?;
                self.stores.delete_entry(key).await?;
                inc(&stats.forwarded);
                Ok(Processed::Delivered)
            }
            Err(f) if f.outcome == Outcome::Permanent => self.bounce(key, &entry, f).await,
            Err(f) => {
                inc(&stats.delivery_failed);
                let policy = self.cfg.policy;
                let b = domain_failed(self.backoff_of(&entry.domain, domains).await?, now, &policy, jitter());
                self.set_backoff(&entry.domain, b, domains).await?;
                let n = entry.attempts.max(b.failures);
                match policy.next_attempt(entry.created_at, now, n, jitter()) {
                    Some(next) => {
                        let deadline = entry.created_at + policy.max_age_secs as i64;
                        let next = next.max(b.blocked_until.min(deadline));
                        let error = format!("{}: {}", f.error_code, f.error);
                        entry.last_error = Some(error.clone());
                        self.stores.put_record(&self.record(&entry, "failed", Some(next), Some(error))).await?;
                        // The entry's content changed (attempts, last error): rewrite it even at the same key.
                        let new_key = layout::queue_key(next, &entry.nonce);
                        self.stores.put_entry(next, &entry).await?;
                        if new_key != key {
                            self.stores.delete_entry(key).await?;
                        }
                        Ok(Processed::Retry(next))
                    }
                    None => {
                        let expired = Failure {
                            outcome: Outcome::Permanent,
                            status: f.status,
                            error_code: "554 5.4.7".into(),
                            error: format!("undeliverable for {} s; last error: {}", policy.max_age_secs, f.error),
                            out_of_budget: false,
                        };
                        self.bounce(key, &entry, expired).await
                    }
                }
            }
        }
    }

    async fn bounce(&self, key: &str, entry: &QueueEntry, f: Failure) -> Result<Processed, StoreError> {
        let now = self.clock.now();
        let notice = bounce_notice(&self.cfg.domain, entry, &f, now, &self.cfg.key, &self.cfg.selector);
        let id = layout::inbox_id(self.clock.now_ms(), random_u32());
        self.stores.put_inbox(&entry.from, id, &notice.to_json(), &self.iso.known_days).await?;
        self.stores
            .put_record(&Record {
                nonce: notice.nonce.clone(),
                from: notice.from.clone(),
                to: notice.to.clone(),
                status: "delivered".into(),
                created_at: now,
                updated_at: now,
                attempts: 0,
                next_attempt_at: None,
                error: None,
            })
            .await?;
        let error = format!("{}: {}", f.error_code, f.error);
        self.stores.put_record(&self.record(entry, "bounced", None, Some(error))).await?;
        self.stores.delete_entry(key).await?;
        inc(&self.iso.stats.bounced);
        Ok(Processed::Bounced)
    }

    /// The attempt right after a submission (run in `waitUntil`).
    pub async fn deliver_now(&self, key: String, entry: QueueEntry) -> Result<Processed, StoreError> {
        self.process(key, entry, &RefCell::default()).await
    }

    /// One cron run: attempts the due messages, at most `SWEEP_BATCH`, several domains at once.
    pub async fn sweep(&self) -> Result<SweepReport, StoreError> {
        inc(&self.iso.stats.sweeps);
        let now = self.clock.now();
        let keys = self.stores.due(now, self.cfg.sweep_batch).await?;
        let mut report = SweepReport { due: keys.len(), ..Default::default() };
        let entries = futures_util::future::join_all(keys.iter().map(|k| self.stores.entry(k))).await;
        // Group by destination domain, keeping the due order inside each group.
        let mut groups: Vec<(String, Vec<(String, QueueEntry)>)> = Vec::new();
        for (key, entry) in keys.into_iter().zip(entries) {
            let Some(entry) = entry? else {
                report.add(Processed::Gone);
                continue;
            };
            match groups.iter_mut().find(|(d, _)| *d == entry.domain) {
                Some((_, list)) => list.push((key, entry)),
                None => groups.push((entry.domain.clone(), vec![(key, entry)])),
            }
        }
        let domains: Domains = RefCell::default();
        let domains = &domains;
        for chunk in groups.chunks(PARALLEL_DOMAINS) {
            let results = futures_util::future::join_all(chunk.iter().map(|(_, list)| async move {
                let mut out = Vec::new();
                for (key, entry) in list {
                    out.push(self.process(key.clone(), entry.clone(), domains).await);
                }
                out
            }))
            .await;
            for p in results.into_iter().flatten() {
                report.add(p?);
            }
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_domain_backoff() {
        let ep = Endpoint { host: "mx.a.test".into(), port: 7443, alpn: vec![] };
        assert_eq!(transfer_url("https", &ep), "https://mx.a.test:7443/.well-known/atp/v1/message");
        let ep6 = Endpoint { host: "::1".into(), port: 9, alpn: vec![] };
        assert_eq!(transfer_url("http", &ep6), "http://[::1]:9/.well-known/atp/v1/message");
        let p = RetryPolicy { base_secs: 10, cap_secs: 100, max_age_secs: 1000 };
        let b = domain_failed(Backoff::default(), 50, &p, 0.0);
        assert_eq!(b, Backoff { failures: 1, blocked_until: 55 });
        assert_eq!(domain_failed(b, 54, &p, 0.0), b, "one failure per backoff period");
        assert_eq!(domain_failed(b, 55, &p, 0.0), Backoff { failures: 2, blocked_until: 65 });
    }
}
