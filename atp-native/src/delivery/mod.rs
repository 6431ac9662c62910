//! The delivery engine (docs/design.md §3 "per-destination delivery", fixing docs/protocol.md §8.1-§8.3 and
//! §12 items 1-3): messages our agents sent to other domains wait in the queue
//! ([`crate::store::queue`]) and are transferred, signed with the domain key, to the endpoint that
//! discovery names (SVCB `_atp` → `_agent` → SRV, docs/protocol.md §5.1).
//!
//! * **Scheduling.** One dispatcher leases due rows in batches (oldest due first) and starts one task
//!   per row; up to [`MAX_IN_FLIGHT`] attempts run at once across all domains, and at most
//!   `per_domain_concurrency` per destination domain, so one slow domain never stalls the others.
//!   A new message wakes the dispatcher at once (no polling delay).
//! * **Outcomes** ([`atp_wasm::retry`]): 2xx delivered; 4xx other than 408/429 permanent (bounce now,
//!   with the receiver's error); 408/429/451/5xx, DNS failures, connection errors and timeouts
//!   temporary; a domain without ATP records permanent.
//! * **Backoff per domain.** A temporary failure blocks the destination domain for an exponentially
//!   growing, jittered, capped delay; its other messages are not attempted meanwhile (their leases
//!   are given back). The first answer from the domain resets the backoff and makes its waiting
//!   messages due at once.
//! * **Bounces.** A message still undelivered at the maximum age, or refused for good, is marked
//!   `bounced` and a notice from `postmaster@<our domain>` with the reference's payload fields
//!   (`subject`, `body`, `original_nonce`) plus `error_code`, `status` and `error` lands in the
//!   sender's inbox, in the same transaction.
//! * **Crash safety.** A claimed row carries a lease (`--lease-seconds`); rows leased by a previous
//!   run are released at start-up, and on a shared database (docs/design.md §5d) a lease that ran
//!   out — its node died — is taken over by any node, so a kill -9 mid-attempt never strands a
//!   message. The receiver's idempotency (docs/design.md §3) makes the repeated attempt harmless.
//! * **Shared backoff.** A domain's backoff is written to the database (it survives a restart, and
//!   every node of a domain sees it within [`BACKOFF_REFRESH`]).

pub mod transport;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use atp_wasm::delivery::{self as machine, Backoff, Bounced, Failure, Settlement, Signer};
use atp_wasm::env::{Clock, SystemClock};
use atp_wasm::keys::DomainKey;
use atp_wasm::retry::RetryPolicy;
use tokio::sync::{Notify, Semaphore};
use tracing::Instrument;

use crate::routes::AppState;
use crate::store::queue::{Claimed, QueueOp};
use crate::store::{NewMessage, Status};
use transport::Transport;

/// Attempts in flight at once, all domains together.
pub const MAX_IN_FLIGHT: usize = 1024;
/// Rows leased per claim.
const CLAIM_BATCH: usize = 256;
/// How often the dispatcher reads the backoffs other nodes (or earlier runs) recorded.
const BACKOFF_REFRESH: Duration = Duration::from_secs(1);
/// Longest sleep of the dispatcher between looks at the queue.
const IDLE_POLL: Duration = Duration::from_secs(1);

/// Backoff state of one destination domain ([`Backoff`], the core's rule) and its attempt slots.
struct DomainState {
    backoff: Backoff,
    slots: Arc<Semaphore>,
}

/// The engine; one per server.
pub struct Engine {
    st: Arc<AppState>,
    transport: Transport,
    key: DomainKey,
    selector: String,
    policy: RetryPolicy,
    per_domain: usize,
    no_verify: bool,
    /// How long a claimed row belongs to this node (a crash frees it after this, or at restart).
    lease_secs: i64,
    domains: Mutex<HashMap<String, DomainState>>,
    in_flight: AtomicUsize,
    wake: Arc<Notify>,
}

/// A random number in `[0, 1)` for backoff jitter.
fn jitter() -> f64 {
    let mut b = [0u8; 4];
    let _ = getrandom::getrandom(&mut b);
    u32::from_le_bytes(b) as f64 / (u32::MAX as f64 + 1.0)
}

impl Engine {
    pub fn new(
        st: Arc<AppState>,
        transport: Transport,
        key: DomainKey,
        settings: &crate::config::Settings,
        wake: Arc<Notify>,
    ) -> Arc<Self> {
        Arc::new(Engine {
            st,
            transport,
            key,
            selector: settings.key_selector.clone(),
            policy: settings.delivery.policy,
            per_domain: settings.delivery.per_domain_concurrency,
            no_verify: settings.delivery.no_verify_peers,
            lease_secs: settings.delivery.lease_secs,
            domains: Mutex::default(),
            in_flight: AtomicUsize::new(0),
            wake,
        })
    }

    /// Domains backing off now.
    fn blocked(&self, now: i64) -> Vec<String> {
        let d = self.domains.lock().unwrap_or_else(|p| p.into_inner());
        d.iter().filter(|(_, s)| s.backoff.blocks(now)).map(|(k, _)| k.clone()).collect()
    }

    fn slots(&self, domain: &str) -> Arc<Semaphore> {
        let mut d = self.domains.lock().unwrap_or_else(|p| p.into_inner());
        d.entry(domain.to_owned())
            .or_insert_with(|| DomainState {
                backoff: Backoff::default(),
                slots: Arc::new(Semaphore::new(self.per_domain)),
            })
            .slots
            .clone()
    }

    fn blocked_until(&self, domain: &str) -> Option<i64> {
        let d = self.domains.lock().unwrap_or_else(|p| p.into_inner());
        d.get(domain).map(|s| s.backoff.blocked_until)
    }

    /// Takes the backoffs recorded in the database (by other nodes, or by an earlier run) that
    /// block longer than what this node knows.
    async fn refresh_backoffs(&self, now: i64) {
        match self.st.store.backoffs(now).await {
            Ok(rows) => {
                let mut d = self.domains.lock().unwrap_or_else(|p| p.into_inner());
                for (domain, b) in rows {
                    let s = d.entry(domain).or_insert_with(|| DomainState {
                        backoff: Backoff::default(),
                        slots: Arc::new(Semaphore::new(self.per_domain)),
                    });
                    if b.blocked_until > s.backoff.blocked_until {
                        s.backoff = b;
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not read the domains' backoff"),
        }
    }

    /// The domain answered: forget its failures. True if it was backing off.
    fn domain_answered(&self, domain: &str) -> bool {
        let mut d = self.domains.lock().unwrap_or_else(|p| p.into_inner());
        match d.get_mut(domain) {
            Some(s) if s.backoff.failures > 0 => {
                s.backoff = Backoff::default();
                true
            }
            _ => false,
        }
    }

    /// The domain failed temporarily: back off ([`Backoff::failed`]). Returns its new backoff.
    fn domain_failed(&self, domain: &str, now: i64) -> Backoff {
        let mut d = self.domains.lock().unwrap_or_else(|p| p.into_inner());
        let s = d.entry(domain.to_owned()).or_insert_with(|| DomainState {
            backoff: Backoff::default(),
            slots: Arc::new(Semaphore::new(self.per_domain)),
        });
        s.backoff = s.backoff.failed(now, &self.policy, jitter());
        s.backoff
    }

    /// Runs until the task is aborted: releases the leases of a previous run, then dispatches.
    pub async fn run(self: Arc<Self>) {
        match self.st.store.queue(QueueOp::Recover { now: SystemClock.now() }).await {
            Ok(n) if n > 0 => tracing::info!(rows = n, "released messages a previous run was delivering"),
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "could not release the previous run's leases"),
        }
        let mut refreshed: Option<tokio::time::Instant> = None;
        loop {
            let now = SystemClock.now();
            if refreshed.is_none_or(|t| t.elapsed() >= BACKOFF_REFRESH) {
                self.refresh_backoffs(now).await;
                refreshed = Some(tokio::time::Instant::now());
            }
            let free = MAX_IN_FLIGHT.saturating_sub(self.in_flight.load(Ordering::Acquire));
            let mut full_batch = false;
            if free > 0 {
                let limit = free.min(CLAIM_BATCH);
                match self.st.store.claim(now, now + self.lease_secs, limit, self.blocked(now)).await {
                    Ok(rows) => {
                        full_batch = rows.len() == limit;
                        for row in rows {
                            self.in_flight.fetch_add(1, Ordering::AcqRel);
                            tokio::spawn(self.clone().attempt(row));
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "could not claim queued messages"),
                }
            }
            if full_batch {
                continue;
            }
            // Until the next row of a domain that is not backing off is due (blocked domains are
            // looked at again within IDLE_POLL), or a new message / a finished attempt wakes us.
            let sleep = match self.st.store.next_due(self.blocked(now)).await {
                Ok(Some(t)) if t > now => Duration::from_secs((t - now) as u64).min(IDLE_POLL),
                Ok(Some(_)) => Duration::from_millis(100),
                _ => IDLE_POLL,
            };
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(sleep) => {}
            }
        }
    }

    /// One attempt for one row, then its settlement.
    async fn attempt(self: Arc<Self>, row: Claimed) {
        let span = tracing::info_span!("delivery", nonce = %row.nonce, to = %row.to_id, attempt = row.attempts + 1);
        let this = self.clone();
        async move {
            let domain = row.dest_domain.clone();
            let permit = this.slots(&domain).acquire_owned().await;
            let op = match this.blocked_until(&domain) {
                // The domain started backing off while this row waited: give it back untried.
                Some(until) if until > SystemClock.now() => QueueOp::Release { id: row.id, next_at: until },
                _ => {
                    let result = this.deliver(&row).await;
                    drop(permit);
                    this.settle(&row, result).await
                }
            };
            if let Err(e) = this.st.store.queue(op).await {
                tracing::error!(error = %e, "could not record the delivery outcome; the lease will expire");
            }
        }
        .instrument(span)
        .await;
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.wake.notify_one();
    }

    /// Signs and transfers one message ([`machine::attempt`]); certificates of local peers are not
    /// verified (docs/design.md §3).
    async fn deliver(&self, row: &Claimed) -> Result<(), Failure> {
        let verify = !self.no_verify && !self.st.resolver.is_local_peer(&row.dest_domain).await;
        let http = self.transport.http(verify);
        let resolver = &*self.st.resolver;
        machine::attempt(&row.json, &row.dest_domain, self.signer(), SystemClock.now(), resolver, http, "https").await
    }

    fn signer(&self) -> Signer<'_> {
        Signer { domain: &self.st.domain, key: &self.key, selector: &self.selector }
    }

    /// The queue transition for an attempt's result ([`machine::settle`]).
    async fn settle(&self, row: &Claimed, result: Result<(), Failure>) -> QueueOp {
        let now = SystemClock.now();
        let domain = &row.dest_domain;
        let stats = &self.st.relay_state.stats;
        if Failure::answered(&result) && self.domain_answered(domain) {
            tracing::info!(domain = %domain, "domain answers again: its waiting messages are due now");
            if let Err(e) = self.st.store.set_backoff(domain, None).await {
                tracing::warn!(error = %e, "could not clear the domain's backoff");
            }
            if let Err(e) = self.st.store.queue(QueueOp::Wake { domain: domain.clone(), now }).await {
                tracing::warn!(error = %e, "could not wake the domain's messages");
            }
        }
        let backoff = match &result {
            Err(f) if f.outcome == atp_wasm::retry::Outcome::Temporary => {
                stats.delivery_failed.inc();
                let before = self.blocked_until(domain);
                let backoff = self.domain_failed(domain, now);
                if before != Some(backoff.blocked_until) {
                    if let Err(e) = self.st.store.set_backoff(domain, Some(backoff)).await {
                        tracing::warn!(error = %e, "could not record the domain's backoff");
                    }
                }
                backoff
            }
            _ => Backoff::default(),
        };
        match machine::settle(result, row.created_at, row.attempts, backoff, &self.policy, now, jitter()) {
            Settlement::Delivered => {
                stats.forwarded.inc();
                tracing::info!(nonce = %row.nonce, to = %row.to_id, "delivered");
                QueueOp::Delivered { id: row.id, now }
            }
            Settlement::Retry { next_at, error } => {
                tracing::info!(nonce = %row.nonce, %error, retry_in = next_at - now, "temporary failure");
                QueueOp::Retry { id: row.id, now, next_at, error }
            }
            Settlement::Bounce(f) => self.bounce(row, f, now),
        }
    }

    fn bounce(&self, row: &Claimed, f: Failure, now: i64) -> QueueOp {
        self.st.relay_state.stats.bounced.inc();
        tracing::warn!(nonce = %row.nonce, to = %row.to_id, error = %f.error, "bounced");
        let original = Bounced { nonce: &row.nonce, from: &row.from_id, to: &row.to_id };
        let msg = machine::bounce_notice(original, &f, self.signer(), now);
        let notice = NewMessage {
            nonce: msg.nonce.clone(),
            sender_domain: self.st.domain.clone(),
            from_id: msg.from.clone(),
            to_id: msg.to.clone(),
            json: msg.to_json(),
            status: Status::Delivered,
            content_hash: msg.content_hash().unwrap_or([0; 32]),
            now,
        };
        QueueOp::Bounce { id: row.id, now, error: f.describe(), notice: Box::new(notice) }
    }
}
