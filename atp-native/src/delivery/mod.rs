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
//! * **Crash safety.** A claimed row carries a lease; rows leased by a previous run are released at
//!   start-up, so a kill -9 mid-attempt never strands a message. The receiver's idempotency
//!   (docs/design.md §3) makes the repeated attempt harmless.

pub mod transport;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use atp_wasm::env::{Clock, SystemClock};
use atp_wasm::keys::DomainKey;
use atp_wasm::message::Message;
use atp_wasm::records::svcb::{discover, DiscoveryError};
use atp_wasm::retry::{classify_status, Outcome, RetryPolicy};
use atp_wasm::sign::sign_message;
use serde_json::json;
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
/// How long a claimed row belongs to this process (a crash frees it after this, or at restart).
const LEASE_SECS: i64 = 300;
/// Longest sleep of the dispatcher between looks at the queue.
const IDLE_POLL: Duration = Duration::from_secs(1);

/// Why an attempt did not deliver.
#[derive(Debug, Clone)]
pub struct Failure {
    pub outcome: Outcome,
    /// The receiver's HTTP status, if it answered.
    pub status: Option<u16>,
    /// The receiver's `error_code`, or ours for failures before an answer.
    pub error_code: String,
    /// What went wrong, for `inspect` and the bounce notice.
    pub error: String,
}

impl Failure {
    fn before_answer(outcome: Outcome, code: &str, error: String) -> Self {
        Failure { outcome, status: None, error_code: code.into(), error }
    }
}

/// Backoff state of one destination domain.
struct DomainState {
    failures: u32,
    blocked_until: i64,
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
            domains: Mutex::default(),
            in_flight: AtomicUsize::new(0),
            wake,
        })
    }

    /// Domains backing off now.
    fn blocked(&self, now: i64) -> Vec<String> {
        let d = self.domains.lock().unwrap_or_else(|p| p.into_inner());
        d.iter().filter(|(_, s)| s.blocked_until > now).map(|(k, _)| k.clone()).collect()
    }

    fn slots(&self, domain: &str) -> Arc<Semaphore> {
        let mut d = self.domains.lock().unwrap_or_else(|p| p.into_inner());
        d.entry(domain.to_owned())
            .or_insert_with(|| DomainState {
                failures: 0,
                blocked_until: 0,
                slots: Arc::new(Semaphore::new(self.per_domain)),
            })
            .slots
            .clone()
    }

    fn blocked_until(&self, domain: &str) -> Option<i64> {
        let d = self.domains.lock().unwrap_or_else(|p| p.into_inner());
        d.get(domain).map(|s| s.blocked_until)
    }

    /// The domain answered: forget its failures. True if it was backing off.
    fn domain_answered(&self, domain: &str) -> bool {
        let mut d = self.domains.lock().unwrap_or_else(|p| p.into_inner());
        match d.get_mut(domain) {
            Some(s) if s.failures > 0 => {
                s.failures = 0;
                s.blocked_until = 0;
                true
            }
            _ => false,
        }
    }

    /// The domain failed temporarily: back off. Returns its consecutive failures and the time
    /// until which it is blocked.
    fn domain_failed(&self, domain: &str, now: i64) -> (u32, i64) {
        let mut d = self.domains.lock().unwrap_or_else(|p| p.into_inner());
        let s = d.entry(domain.to_owned()).or_insert_with(|| DomainState {
            failures: 0,
            blocked_until: 0,
            slots: Arc::new(Semaphore::new(self.per_domain)),
        });
        // Several attempts failing together count once per backoff period.
        if s.blocked_until <= now {
            s.failures = s.failures.saturating_add(1);
            s.blocked_until = now + self.policy.delay_secs(s.failures, jitter()) as i64;
        }
        (s.failures, s.blocked_until)
    }

    /// Runs until the task is aborted: releases the leases of a previous run, then dispatches.
    pub async fn run(self: Arc<Self>) {
        match self.st.store.queue(QueueOp::Recover { now: SystemClock.now() }).await {
            Ok(n) if n > 0 => tracing::info!(rows = n, "released messages a previous run was delivering"),
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "could not release the previous run's leases"),
        }
        loop {
            let now = SystemClock.now();
            let free = MAX_IN_FLIGHT.saturating_sub(self.in_flight.load(Ordering::Acquire));
            let mut full_batch = false;
            if free > 0 {
                let limit = free.min(CLAIM_BATCH);
                match self.st.store.claim(now, now + LEASE_SECS, limit, self.blocked(now)).await {
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

    /// Signs and transfers one message.
    async fn deliver(&self, row: &Claimed) -> Result<(), Failure> {
        let mut msg = Message::parse(row.json.as_bytes()).map_err(|e| {
            Failure::before_answer(Outcome::Permanent, "554 5.6.0", format!("stored message unreadable: {e}"))
        })?;
        sign_message(&mut msg, &self.key, &self.selector, &self.st.domain, SystemClock.now()).map_err(|e| {
            Failure::before_answer(Outcome::Permanent, "554 5.6.0", format!("message cannot be signed: {e}"))
        })?;
        let endpoints = discover(&*self.st.resolver, &row.dest_domain).await.map_err(|e| match e {
            DiscoveryError::Dns(e) => Failure::before_answer(Outcome::Temporary, "451 4.4.3", e.to_string()),
            e => Failure::before_answer(Outcome::Permanent, "550 5.1.2", e.to_string()),
        })?;
        let verify = !self.no_verify && !self.st.resolver.is_local_peer(&row.dest_domain).await;
        let body = msg.to_json();
        let mut last = String::from("no endpoint");
        for ep in &endpoints {
            match self.transport.post(ep, body.clone(), verify).await {
                Ok(a) => {
                    return match classify_status(a.status) {
                        Outcome::Delivered => Ok(()),
                        outcome => Err(Failure {
                            outcome,
                            status: Some(a.status),
                            error_code: a.error_code.unwrap_or_default(),
                            error: a.error.unwrap_or_else(|| format!("HTTP {}", a.status)),
                        }),
                    }
                }
                Err(e) => last = e,
            }
        }
        Err(Failure::before_answer(Outcome::Temporary, "451 4.4.1", last))
    }

    /// The queue transition for an attempt's result.
    async fn settle(&self, row: &Claimed, result: Result<(), Failure>) -> QueueOp {
        let now = SystemClock.now();
        let domain = &row.dest_domain;
        let answered = match &result {
            Ok(()) => true,
            Err(f) => f.status.is_some() && f.outcome == Outcome::Permanent,
        };
        if answered && self.domain_answered(domain) {
            tracing::info!(domain = %domain, "domain answers again: its waiting messages are due now");
            if let Err(e) = self.st.store.queue(QueueOp::Wake { domain: domain.clone(), now }).await {
                tracing::warn!(error = %e, "could not wake the domain's messages");
            }
        }
        match result {
            Ok(()) => {
                self.st.metrics.forwarded.inc();
                tracing::info!(nonce = %row.nonce, to = %row.to_id, "delivered");
                QueueOp::Delivered { id: row.id, now }
            }
            Err(f) if f.outcome == Outcome::Permanent => self.bounce(row, f, now),
            Err(f) => {
                self.st.metrics.delivery_failed.inc();
                let (failures, blocked_until) = self.domain_failed(domain, now);
                let attempts = row.attempts.saturating_add(1).max(failures);
                match self.policy.next_attempt(row.created_at, now, attempts, jitter()) {
                    Some(next_at) => {
                        let next_at = next_at.max(blocked_until.min(row.created_at + self.policy.max_age_secs as i64));
                        tracing::info!(nonce = %row.nonce, error = %f.error, retry_in = next_at - now, "temporary failure");
                        QueueOp::Retry { id: row.id, now, next_at, error: format!("{}: {}", f.error_code, f.error) }
                    }
                    None => {
                        let expired = Failure {
                            outcome: Outcome::Permanent,
                            status: f.status,
                            error_code: "554 5.4.7".into(),
                            error: format!("undeliverable for {} s; last error: {}", self.policy.max_age_secs, f.error),
                        };
                        self.bounce(row, expired, now)
                    }
                }
            }
        }
    }

    fn bounce(&self, row: &Claimed, f: Failure, now: i64) -> QueueOp {
        self.st.metrics.bounced.inc();
        tracing::warn!(nonce = %row.nonce, to = %row.to_id, error = %f.error, "bounced");
        let error = format!("{}: {}", f.error_code, f.error);
        let notice = bounce_notice(&self.st.domain, row, &f, now, &self.key, &self.selector);
        QueueOp::Bounce { id: row.id, now, error, notice: Box::new(notice) }
    }
}

/// The notice for a bounced message (docs/protocol.md §8.3, plus `error_code`, `status`, `error`),
/// from `postmaster@<domain>` into the original sender's inbox, signed like the reference's.
pub fn bounce_notice(
    domain: &str,
    row: &Claimed,
    f: &Failure,
    now: i64,
    key: &DomainKey,
    selector: &str,
) -> NewMessage {
    let payload = json!({
        "subject": format!("Delivery Failure: {}", row.nonce),
        "body": format!("Message to {} could not be delivered. Error: {}", row.to_id, f.error),
        "original_nonce": row.nonce,
        "error_code": f.error_code,
        "status": f.status,
        "error": f.error,
    });
    let from = format!("postmaster@{domain}");
    let mut msg = Message {
        from: from.clone(),
        to: row.from_id.clone(),
        timestamp: now,
        nonce: atp_wasm::message::new_nonce(),
        kind: "message".into(),
        payload,
        signature: None,
        cc: Vec::new(),
        routing: None,
    };
    let _ = sign_message(&mut msg, key, selector, domain, now);
    let content_hash = msg.content_hash().unwrap_or([0; 32]);
    NewMessage {
        nonce: msg.nonce.clone(),
        sender_domain: domain.to_owned(),
        from_id: from,
        to_id: row.from_id.clone(),
        json: msg.to_json(),
        status: Status::Delivered,
        content_hash,
        now,
    }
}
