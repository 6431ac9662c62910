//! Outbound delivery on Workers primitives (docs/design.md §3, §4): the core's state machine
//! ([`atp_wasm::delivery`]: attempt, settle, per-domain backoff, bounce notice) applied to the KV
//! queue.
//!
//! * A local agent's message for another domain is queued in KV under a short lease
//!   (`q/<now + LEASE>/<nonce>`, [`crate::store::LEASE_SECS`]) and attempted right after the 202
//!   is sent (`waitUntil`, [`Worker::deliver_now`]). A Cron trigger runs [`Worker::sweep`]: it lists
//!   `q/` (keys sort by due time), takes at most `SWEEP_BATCH` due messages, leases each (moves it
//!   to a later key) and attempts it. An attempt that dies mid-way is picked up again when its
//!   lease is due. KV is eventually consistent, so two sweeps may attempt one message twice; the
//!   receiver's idempotency (docs/design.md §3) makes that harmless.
//! * **Backoff per domain** (`b/<domain>` in KV, [`Backoff`]): a destination backing off has its
//!   due messages moved to the end of the block without an attempt; an answer from it resets it.
//! * **Subrequest budget** ([`crate::budget`]): an attempt that failed because the invocation ran
//!   out of subrequests is not the destination's fault: the message is due again at once, with no
//!   attempt counted and no backoff (the one rule of the worker's own).
//! * **Limits**: a sweep attempts at most `SWEEP_BATCH` messages, several destination domains at
//!   once (at most [`PARALLEL_DOMAINS`], Workers' simultaneous connections), and stops starting
//!   attempts when fewer than [`MIN_BUDGET`] subrequests are left.

use std::cell::RefCell;
use std::collections::HashMap;

use atp_wasm::delivery::{self, attempt, bounce_notice, Backoff, Bounced, Failure, Settlement, Signer};
use atp_wasm::env::StoreError;
use atp_wasm::http::HttpTransport;
use atp_wasm::relay::store::MessageInfo;
use atp_wasm::relay::Queued;
use atp_wasm::retry::Outcome;

use crate::budget::EXHAUSTED;
use crate::clock::jitter;
use crate::kv::Kv;
use crate::layout;
use crate::store::{QueueEntry, LEASE_SECS};
use crate::worker::Worker;

/// Destination domains attempted at once by a sweep.
pub const PARALLEL_DOMAINS: usize = 6;
/// Subrequests an attempt may need when nothing is cached (three DoH lookups and the transfer).
pub const MIN_BUDGET: u32 = 4;

/// What became of one queued message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Processed {
    Delivered,
    Bounced,
    /// Failed temporarily; next attempt at this time.
    Retry(i64),
    /// Not attempted: its domain is backing off until this time.
    Deferred(i64),
    /// Not attempted, or failed for want of subrequests in this invocation.
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

/// Destination domains' backoff as this invocation knows it.
type Domains = RefCell<HashMap<String, Backoff>>;

/// Whether a failure is the invocation running out of subrequests (nothing reached the destination).
fn out_of_budget(result: &Result<(), Failure>) -> bool {
    matches!(result, Err(f) if f.status.is_none() && f.error.contains(EXHAUSTED))
}

impl<K: Kv, T: HttpTransport + Clone> Worker<K, T> {
    fn signer(&self) -> Signer<'_> {
        Signer { domain: self.cfg.domain(), key: &self.cfg.key, selector: &self.cfg.selector }
    }

    async fn backoff_of(&self, domain: &str, domains: &Domains) -> Result<Backoff, StoreError> {
        if let Some(b) = domains.borrow().get(domain) {
            return Ok(*b);
        }
        let b = self.store.backoff(domain).await?;
        domains.borrow_mut().insert(domain.to_owned(), b);
        Ok(b)
    }

    async fn set_backoff(&self, domain: &str, b: Backoff, domains: &Domains) -> Result<(), StoreError> {
        domains.borrow_mut().insert(domain.to_owned(), b);
        self.store.set_backoff(domain, b, self.clock.now()).await
    }

    /// Moves a queue entry to a new due time (new key first, then the old one goes). `rewrite`:
    /// the entry changed, so it is written even when the key stays.
    async fn move_entry(&self, key: &str, due: i64, entry: &QueueEntry, rewrite: bool) -> Result<String, StoreError> {
        let new_key = layout::queue_key(due, &entry.nonce);
        if new_key != key || rewrite {
            self.store.put_entry(due, entry).await?;
        }
        if new_key != key {
            self.store.delete_entry(key).await?;
        }
        Ok(new_key)
    }

    fn record(&self, entry: &QueueEntry, status: &str, next: Option<i64>, error: Option<String>) -> MessageInfo {
        MessageInfo {
            nonce: entry.nonce.clone(),
            from: entry.from.clone(),
            to: entry.to.clone(),
            status: status.into(),
            created_at: entry.created_at,
            updated_at: self.clock.now(),
            attempts: i64::from(entry.attempts),
            next_attempt_at: next,
            error,
        }
    }

    /// Attempts the queued message at `key` (unless its domain is backing off or the budget is
    /// spent) and settles the outcome.
    pub async fn process(&self, key: String, entry: QueueEntry, domains: &Domains) -> Result<Processed, StoreError> {
        let now = self.clock.now();
        let b = self.backoff_of(&entry.domain, domains).await?;
        if b.blocks(now) {
            self.move_entry(&key, b.blocked_until, &entry, false).await?;
            return Ok(Processed::Deferred(b.blocked_until));
        }
        if self.budget.remaining() < MIN_BUDGET {
            return Ok(Processed::NoBudget);
        }
        let lease = self.move_entry(&key, now + LEASE_SECS, &entry, false).await?;
        let scheme = &self.cfg.outbound_scheme;
        let result =
            attempt(&entry.message, &entry.domain, self.signer(), now, &self.resolver, &self.outbound, scheme).await;
        self.settle(&lease, entry, result, domains).await
    }

    /// Applies the core's [`delivery::settle`] to the queue, the records and the counters.
    async fn settle(
        &self,
        key: &str,
        mut entry: QueueEntry,
        result: Result<(), Failure>,
        domains: &Domains,
    ) -> Result<Processed, StoreError> {
        let now = self.clock.now();
        let stats = &self.iso.relay.stats;
        if out_of_budget(&result) {
            self.move_entry(key, now, &entry, false).await?;
            return Ok(Processed::NoBudget);
        }
        let mut backoff = self.backoff_of(&entry.domain, domains).await?;
        if Failure::answered(&result) && backoff.failures > 0 {
            backoff = Backoff::default();
            self.set_backoff(&entry.domain, backoff, domains).await?;
        }
        if matches!(&result, Err(f) if f.outcome == Outcome::Temporary) {
            stats.delivery_failed.inc();
            backoff = backoff.failed(now, &self.cfg.policy, jitter());
            self.set_backoff(&entry.domain, backoff, domains).await?;
        }
        let attempts = entry.attempts;
        entry.attempts = attempts.saturating_add(1);
        match delivery::settle(result, entry.created_at, attempts, backoff, &self.cfg.policy, now, jitter()) {
            Settlement::Delivered => {
                self.store.put_record(&self.record(&entry, "delivered", None, None)).await?;
                self.store.delete_entry(key).await?;
                stats.forwarded.inc();
                Ok(Processed::Delivered)
            }
            Settlement::Retry { next_at, error } => {
                entry.last_error = Some(error.clone());
                self.store.put_record(&self.record(&entry, "failed", Some(next_at), Some(error))).await?;
                self.move_entry(key, next_at, &entry, true).await?;
                Ok(Processed::Retry(next_at))
            }
            Settlement::Bounce(f) => self.bounce(key, &entry, f).await,
        }
    }

    /// The core's bounce notice into the sender's inbox; the message is done.
    async fn bounce(&self, key: &str, entry: &QueueEntry, f: Failure) -> Result<Processed, StoreError> {
        let now = self.clock.now();
        let original = Bounced { nonce: &entry.nonce, from: &entry.from, to: &entry.to };
        let notice = bounce_notice(original, &f, self.signer(), now);
        self.store.put_inbox(&entry.from, &notice.to_json()).await?;
        let notice_record = MessageInfo {
            nonce: notice.nonce.clone(),
            from: notice.from.clone(),
            to: notice.to.clone(),
            status: "delivered".into(),
            created_at: now,
            updated_at: now,
            ..MessageInfo::default()
        };
        self.store.put_record(&notice_record).await?;
        self.store.put_record(&self.record(entry, "bounced", None, Some(f.describe()))).await?;
        self.store.delete_entry(key).await?;
        self.iso.relay.stats.bounced.inc();
        Ok(Processed::Bounced)
    }

    /// The attempt right after a submission (run in `waitUntil`): the message the store just
    /// queued. `None` if this invocation did not queue it.
    pub async fn deliver_now(&self, queued: &Queued) -> Result<Option<Processed>, StoreError> {
        let Some((key, entry)) = self.store.take_queued(&queued.nonce) else {
            return Ok(None);
        };
        self.process(key, entry, &RefCell::default()).await.map(Some)
    }

    /// One cron run: attempts the due messages, at most `SWEEP_BATCH`, several domains at once.
    pub async fn sweep(&self) -> Result<SweepReport, StoreError> {
        self.iso.sweeps.set(self.iso.sweeps.get() + 1);
        let now = self.clock.now();
        let keys = self.store.due(now, self.cfg.sweep_batch).await?;
        let mut report = SweepReport { due: keys.len(), ..Default::default() };
        let entries = futures_util::future::join_all(keys.iter().map(|k| self.store.entry(k))).await;
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
    fn only_a_spent_budget_is_out_of_budget() {
        let f = |status, error: &str| {
            Err(Failure { status, ..Failure::before_answer(Outcome::Temporary, "451 4.4.1", error) })
        };
        assert!(out_of_budget(&f(None, &format!("https://mx.peer.test:7443/.well-known/atp/v1/message: {EXHAUSTED}"))));
        assert!(out_of_budget(&f(
            None,
            &format!("DNS lookup of _atp.peer.test failed: DoH request failed: {EXHAUSTED}")
        )));
        assert!(!out_of_budget(&f(None, "connection refused")));
        assert!(!out_of_budget(&f(Some(503), EXHAUSTED)), "an answer reached the destination");
        assert!(!out_of_budget(&Ok(())));
    }
}
