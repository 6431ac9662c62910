//! Outbound delivery on Workers primitives (docs/design.md §3, §4): the core's state machine
//! ([`atp_wasm::delivery`]: attempt, settle, per-domain backoff, bounce notice) applied to the
//! outbound rows of the domain's object ([`crate::object`]).
//!
//! * A local agent's message for another domain is stored leased (`delivering` for
//!   [`crate::store::LEASE_SECS`]) and attempted right after the 202 is sent (`waitUntil`,
//!   [`Worker::deliver_now`]). A Cron trigger runs [`Worker::sweep`]: it claims at most
//!   `SWEEP_BATCH` due messages — the object marks them leased in the claiming transaction, so two
//!   sweeps never attempt one message — and attempts them. An attempt that dies mid-way is claimed
//!   again when its lease is over (the receiver's idempotency absorbs a transfer made twice).
//! * **Backoff per domain** (the object's `backoff` table, [`Backoff`]): a destination backing off
//!   has its claimed messages released to the end of the block without an attempt; an answer from
//!   it resets the backoff and **wakes** its waiting messages: they are due at once and attempted in
//!   the same invocation, budget permitting ([`Worker::wake`]).
//! * **Subrequest budget** ([`crate::budget`]): an attempt that failed because the invocation ran
//!   out of subrequests is not the destination's fault: the message is due again at once, with no
//!   attempt counted and no backoff (the one rule of the worker's own).
//! * **Limits**: a sweep claims at most `SWEEP_BATCH` messages, attempts several destination
//!   domains at once (at most [`PARALLEL_DOMAINS`], Workers' simultaneous connections), a wake at
//!   most [`WAKE_BATCH`] more; attempts stop when fewer than [`MIN_BUDGET`] subrequests are left.

use std::cell::RefCell;
use std::collections::HashMap;

use atp_wasm::delivery::{self, attempt, bounce_notice, Backoff, Bounced, Failure, Settlement, Signer};
use atp_wasm::env::StoreError;
use atp_wasm::http::HttpTransport;
use atp_wasm::relay::Queued;
use atp_wasm::retry::Outcome;

use crate::budget::EXHAUSTED;
use crate::clock::jitter;
use crate::object::{Outbound, Settle};
use crate::store::Objects;
use crate::worker::Worker;

/// Destination domains attempted at once by a sweep.
pub const PARALLEL_DOMAINS: usize = 6;
/// Subrequests an attempt may need when nothing is cached (three DoH lookups and the transfer).
pub const MIN_BUDGET: u32 = 4;
/// Most woken messages one wake claims and attempts in the invocation that woke them (the rest
/// are due, for the next sweep).
pub const WAKE_BATCH: usize = 50;

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
            Processed::NoBudget => self.not_attempted += 1,
        }
    }
}

/// Destination domains' backoff as this invocation knows it.
type Domains = RefCell<HashMap<String, Backoff>>;

/// Whether a failure is the invocation running out of subrequests (nothing reached the destination).
fn out_of_budget(result: &Result<(), Failure>) -> bool {
    matches!(result, Err(f) if f.status.is_none() && f.error.contains(EXHAUSTED))
}

impl<O: Objects, T: HttpTransport + Clone> Worker<O, T> {
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
        self.store.set_backoff(domain, b).await
    }

    /// Attempts a claimed message (unless its domain is backing off or the budget is spent) and
    /// settles the outcome. `woken`: set when the attempt's answer ended the domain's backoff.
    pub async fn process(
        &self,
        o: &Outbound,
        domains: &Domains,
        woken: &RefCell<bool>,
    ) -> Result<Processed, StoreError> {
        let now = self.clock.now();
        let b = self.backoff_of(&o.domain, domains).await?;
        if b.blocks(now) {
            self.store.settle(o, o.attempts, Settle::Release { next_at: b.blocked_until }).await?;
            return Ok(Processed::Deferred(b.blocked_until));
        }
        if self.budget.remaining() < MIN_BUDGET {
            self.store.settle(o, o.attempts, Settle::Release { next_at: now }).await?;
            return Ok(Processed::NoBudget);
        }
        let scheme = &self.cfg.outbound_scheme;
        let result = attempt(&o.json, &o.domain, self.signer(), now, &self.resolver, &self.outbound, scheme).await;
        self.settle(o, result, domains, woken).await
    }

    /// Applies the core's [`delivery::settle`] to the message, the domain's backoff and the
    /// counters.
    async fn settle(
        &self,
        o: &Outbound,
        result: Result<(), Failure>,
        domains: &Domains,
        woken: &RefCell<bool>,
    ) -> Result<Processed, StoreError> {
        let now = self.clock.now();
        let stats = &self.iso.relay.stats;
        if out_of_budget(&result) {
            self.store.settle(o, o.attempts, Settle::Release { next_at: now }).await?;
            return Ok(Processed::NoBudget);
        }
        let mut backoff = self.backoff_of(&o.domain, domains).await?;
        if Failure::answered(&result) && backoff.failures > 0 {
            backoff = Backoff::default();
            self.set_backoff(&o.domain, backoff, domains).await?;
            *woken.borrow_mut() = true;
        }
        if matches!(&result, Err(f) if f.outcome == Outcome::Temporary) {
            stats.delivery_failed.inc();
            backoff = backoff.failed(now, &self.cfg.policy, jitter());
            self.set_backoff(&o.domain, backoff, domains).await?;
        }
        let attempts = o.attempts.saturating_add(1);
        match delivery::settle(result, o.created_at, o.attempts, backoff, &self.cfg.policy, now, jitter()) {
            Settlement::Delivered => {
                self.store.settle(o, attempts, Settle::Delivered).await?;
                stats.forwarded.inc();
                Ok(Processed::Delivered)
            }
            Settlement::Retry { next_at, error } => {
                self.store.settle(o, attempts, Settle::Retry { next_at, error }).await?;
                Ok(Processed::Retry(next_at))
            }
            Settlement::Bounce(f) => {
                let original = Bounced { nonce: &o.nonce, from: &o.from, to: &o.to };
                let notice = bounce_notice(original, &f, self.signer(), now);
                let row = self.store.notice_row(&notice.nonce, &notice.from, &o.from, notice.to_json());
                let settle = Settle::Bounced { error: f.describe(), notice: Box::new(row) };
                self.store.settle(o, attempts, settle).await?;
                stats.bounced.inc();
                Ok(Processed::Bounced)
            }
        }
    }

    /// Attempts a domain's messages one after the other; when an answer ends the domain's
    /// backoff, its waiting messages are woken and attempted too (at most [`WAKE_BATCH`]).
    async fn process_domain(&self, list: &[Outbound], domains: &Domains) -> Vec<Result<Processed, StoreError>> {
        let woken = RefCell::new(false);
        let mut out = Vec::new();
        for o in list {
            out.push(self.process(o, domains, &woken).await);
        }
        if woken.replace(false) {
            if let Some(domain) = list.first().map(|o| o.domain.as_str()) {
                out.extend(self.wake(domain, domains).await);
            }
        }
        out
    }

    /// Wakes `domain`'s waiting messages (due now) and attempts them, at most [`WAKE_BATCH`].
    pub async fn wake(&self, domain: &str, domains: &Domains) -> Vec<Result<Processed, StoreError>> {
        if let Err(e) = self.store.wake(domain).await {
            return vec![Err(e)];
        }
        if self.budget.remaining() < MIN_BUDGET {
            return Vec::new();
        }
        let claimed = match self.store.claim(WAKE_BATCH, Some(domain)).await {
            Ok(c) => c,
            Err(e) => return vec![Err(e)],
        };
        let woken = RefCell::new(false);
        let mut out = Vec::new();
        for o in &claimed {
            out.push(self.process(o, domains, &woken).await);
        }
        out
    }

    /// The attempt right after a submission (run in `waitUntil`): the message the store just
    /// queued. `None` if this invocation did not queue it.
    pub async fn deliver_now(&self, queued: &Queued) -> Result<Option<Processed>, StoreError> {
        let Some(o) = self.store.take_queued(&queued.nonce) else {
            return Ok(None);
        };
        let mut results = self.process_domain(std::slice::from_ref(&o), &RefCell::default()).await.into_iter();
        results.next().transpose()
    }

    /// One cron run: attempts the due messages, at most `SWEEP_BATCH`, several domains at once,
    /// and prunes dedup rows past their horizon.
    pub async fn sweep(&self) -> Result<SweepReport, StoreError> {
        self.iso.sweeps.set(self.iso.sweeps.get() + 1);
        self.store.prune().await?;
        let claimed = self.store.claim(self.cfg.sweep_batch, None).await?;
        let mut report = SweepReport { due: claimed.len(), ..Default::default() };
        // Group by destination domain, keeping the due order inside each group.
        let mut groups: Vec<(String, Vec<Outbound>)> = Vec::new();
        for o in claimed {
            match groups.iter_mut().find(|(d, _)| *d == o.domain) {
                Some((_, list)) => list.push(o),
                None => groups.push((o.domain.clone(), vec![o])),
            }
        }
        let domains: Domains = RefCell::default();
        let domains = &domains;
        for chunk in groups.chunks(PARALLEL_DOMAINS) {
            let results =
                futures_util::future::join_all(chunk.iter().map(|(_, list)| self.process_domain(list, domains))).await;
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
