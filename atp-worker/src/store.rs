//! The worker's storage: the core relay's storage traits ([`AgentStore`], [`MessageStore`] and its
//! [`DedupStore`], [`CounterStore`]) as calls to the domain's Durable Object ([`crate::object`]),
//! plus the queue operations the delivery engine uses ([`crate::delivery`]), and the waiting of
//! inbox streams and long polls ([`InboxWatch`]) in the object ([`crate::waiters`],
//! docs/design.md §5c).
//!
//! Each trait method is one [`Call`], run by the object in one SQLite transaction; so a message and
//! its dedup row are stored together or not at all (docs/design.md §1.5). A call that got no
//! answer (the object could not be reached, or its answer was lost) may have committed: for a
//! write that is "outcome unknown" (docs/protocol.md §6.4), and the client retries with the same
//! nonce, which the dedup row answers as a repeat.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use atp_wasm::delivery::Backoff;
use atp_wasm::env::{ContentHash, DedupStore, StoreError};
use atp_wasm::relay::store::{
    AgentStore, CounterStore, InboxRow, MessageInfo, MessageStatus, MessageStore, NewMessage, QueueCounts, Stored,
    Usage,
};
use atp_wasm::relay::stream::{InboxWatch, InboxWatcher};
use serde_json::{json, Map, Value};

use crate::clock::Clock;
use crate::object::{hash_from_hex, hash_hex, Ack, Call, Kind, NewRow, Outbound, Outcome, Reply, Settle};
use crate::waiters::{WatchAnswer, WatchRequest};
use crate::worker::Isolate;

/// How long a message being attempted stays out of the sweep's way (its lease), in seconds. A
/// message queued by a submission starts leased: the attempt right after the 202 is its own.
pub const LEASE_SECS: i64 = 120;

/// How long a dedup row is kept: the 5-day retry horizon plus a day of clock skew and in-flight
/// retries.
pub const DEDUP_TTL_SECS: i64 = atp_wasm::retry::DEFAULT_HORIZON_SECS + 86_400;

/// The domain's Durable Object, as the worker reaches it.
#[allow(async_fn_in_trait)]
pub trait Objects {
    /// Runs `call` in the object. An error with `outcome_unknown` means no answer came back (the
    /// call may have committed); without, the object refused it and nothing was written.
    async fn call(&self, call: &Call) -> Result<Reply, StoreError>;
    /// Waits in the object, at most `w.timeout`, for a row of `w.agent`'s inbox after
    /// `w.after_id` ([`crate::waiters`]).
    async fn watch(&self, w: &WatchRequest) -> Result<WatchAnswer, StoreError>;
    /// Waits `d` in the worker (its own timer): when the object cannot hold a waiter.
    async fn pause(&self, d: Duration);
}

/// The worker's store for one invocation.
pub struct Store<O> {
    pub objects: O,
    clock: Clock,
    iso: Rc<Isolate>,
    /// Messages this invocation queued, for the attempt right after the 202.
    queued: RefCell<Vec<Outbound>>,
}

/// An answer of the wrong kind (a worker and an object of different versions).
fn unexpected(call: &str, _: &Reply) -> StoreError {
    StoreError::new(format!("the domain object answered {call} with another kind of answer"))
}

/// A read or a write whose outcome is known either way (nothing is half-done: one transaction).
fn known(e: StoreError) -> StoreError {
    StoreError { outcome_unknown: false, ..e }
}

impl<O: Objects> Store<O> {
    pub fn new(objects: O, clock: Clock, iso: Rc<Isolate>) -> Self {
        Store { objects, clock, iso, queued: RefCell::default() }
    }

    /// A call whose failure never matters beyond "not done" (reads, idempotent writes).
    async fn read(&self, call: Call) -> Result<Reply, StoreError> {
        self.objects.call(&call).await.map_err(known)
    }

    async fn count(&self, call: Call) -> Result<u64, StoreError> {
        match self.read(call).await? {
            Reply::Count(n) => Ok(n),
            r => Err(unexpected("a count", &r)),
        }
    }

    /// The queued message this invocation stored under `nonce` (once): the attempt after the 202.
    pub fn take_queued(&self, nonce: &str) -> Option<Outbound> {
        let mut q = self.queued.borrow_mut();
        let i = q.iter().position(|o| o.nonce == nonce)?;
        Some(q.swap_remove(i))
    }

    /// Claims due outbound messages (of `domain` only, if given) under a lease of [`LEASE_SECS`].
    pub async fn claim(&self, max: usize, domain: Option<&str>) -> Result<Vec<Outbound>, StoreError> {
        let now = self.clock.now();
        let call = Call::Claim { now, max: max as i64, lease_until: now + LEASE_SECS, domain: domain.map(Into::into) };
        match self.read(call).await? {
            Reply::Claimed(v) => Ok(v),
            r => Err(unexpected("claim", &r)),
        }
    }

    /// Records what an attempt of a claimed message came to.
    pub async fn settle(&self, o: &Outbound, attempts: u32, settle: Settle) -> Result<(), StoreError> {
        let call = Call::Settle { id: o.id, attempts, now: self.clock.now(), settle };
        self.read(call).await.map(drop)
    }

    /// Makes `domain`'s waiting messages due now; returns how many were waiting.
    pub async fn wake(&self, domain: &str) -> Result<u64, StoreError> {
        self.count(Call::Wake { domain: domain.into(), now: self.clock.now() }).await
    }

    pub async fn backoff(&self, domain: &str) -> Result<Backoff, StoreError> {
        match self.read(Call::Backoff { domain: domain.into() }).await? {
            Reply::Backoff(b) => Ok(b),
            r => Err(unexpected("backoff", &r)),
        }
    }

    pub async fn set_backoff(&self, domain: &str, backoff: Backoff) -> Result<(), StoreError> {
        self.read(Call::SetBackoff { domain: domain.into(), backoff }).await.map(drop)
    }

    /// Removes dedup rows past their horizon ([`DEDUP_TTL_SECS`]), a batch at a time.
    pub async fn prune(&self) -> Result<u64, StoreError> {
        self.count(Call::Prune { before: self.clock.now() - DEDUP_TTL_SECS }).await
    }

    /// Removes the agent's inbox messages selected by `ack` — never another agent's — and frees
    /// their quota; returns how many were removed. Dedup rows stay (a repeat is still answered as
    /// one). (Issue 18's `MessageStore::ack`.)
    pub async fn ack(&self, agent: &str, ack: &Ack) -> Result<u64, StoreError> {
        self.count(Call::Ack { agent: agent.into(), ack: ack.clone() }).await
    }

    /// Removes inbox messages stored before `before` (Unix seconds); returns how many. (Issue
    /// 18's `MessageStore::expire`.)
    pub async fn expire(&self, before: i64) -> Result<u64, StoreError> {
        self.count(Call::Expire { before }).await
    }

    /// A message for `agent`'s inbox that no client sent (a bounce notice), as [`Settle::Bounced`]
    /// stores it.
    pub fn notice_row(&self, nonce: &str, from: &str, agent: &str, json: String) -> NewRow {
        let now = self.clock.now();
        NewRow {
            nonce: nonce.into(),
            sender_domain: from.rsplit_once('@').map(|(_, d)| d.to_owned()).unwrap_or_default(),
            from_id: from.into(),
            to_id: agent.into(),
            json,
            kind: Kind::Inbox,
            content_hash: hash_hex(&[0; 32]),
            now,
            lease_until: now,
        }
    }
}

/// Streams and long polls wait in the domain's object, which wakes them once a row of the agent's
/// inbox has committed (docs/design.md §5c).
impl<O: Objects + Clone> InboxWatch for Store<O> {
    type Watcher = ObjectWatcher<O>;

    fn watch(&self, agent: &str) -> ObjectWatcher<O> {
        ObjectWatcher { objects: self.objects.clone(), agent: agent.to_owned() }
    }
}

/// One stream's (or long poll's) watcher: each wait one `/watch` call to the object.
pub struct ObjectWatcher<O> {
    objects: O,
    agent: String,
}

impl<O: Objects> InboxWatcher for ObjectWatcher<O> {
    /// The object checks for a row after `after_id` and registers the waiter in one turn, so
    /// nothing committed since the caller's read is missed. When the object is full or cannot be
    /// reached, the time is waited out here (no busy loop) and the caller reads again: a long poll
    /// still answers within its `wait`, a stream sends its heartbeat.
    async fn wait(&mut self, after_id: i64, timeout: Duration) -> bool {
        let w = WatchRequest { agent: self.agent.clone(), after_id, timeout };
        match self.objects.watch(&w).await {
            Ok(WatchAnswer::Woken) => true,
            Ok(WatchAnswer::Timeout) => false,
            Ok(WatchAnswer::Full) | Err(_) => {
                self.objects.pause(timeout).await;
                false
            }
        }
    }
}

impl<O: Objects> DedupStore for Store<O> {
    async fn seen(&self, sender_domain: &str, nonce: &str) -> Result<Option<ContentHash>, StoreError> {
        match self.read(Call::Seen { sender_domain: sender_domain.into(), nonce: nonce.into() }).await? {
            Reply::Text(h) => Ok(h.as_deref().and_then(hash_from_hex)),
            r => Err(unexpected("seen", &r)),
        }
    }
}

impl<O: Objects> AgentStore for Store<O> {
    async fn agent_hash(&self, id: &str) -> Result<Option<String>, StoreError> {
        match self.read(Call::AgentHash { id: id.into() }).await? {
            Reply::Text(h) => Ok(h),
            r => Err(unexpected("agent_hash", &r)),
        }
    }

    /// One `INSERT OR IGNORE` in the object: of concurrent registrations of one id, one wins.
    async fn insert_agent(&self, id: &str, hash: &str, now: i64) -> Result<bool, StoreError> {
        match self.read(Call::InsertAgent { id: id.into(), hash: hash.into(), now }).await? {
            Reply::Bool(b) => Ok(b),
            r => Err(unexpected("insert_agent", &r)),
        }
    }

    async fn agent_ids(&self) -> Result<Vec<String>, StoreError> {
        match self.read(Call::AgentIds).await? {
            Reply::Ids(v) => Ok(v),
            r => Err(unexpected("agent_ids", &r)),
        }
    }
}

/// The domain's counters, in the object's `counters` table (the core's [`CounterStore`]).
impl<O: Objects> CounterStore for Store<O> {
    async fn add_counters(&self, now: i64, deltas: &[(String, u64)]) -> Result<(), StoreError> {
        self.read(Call::AddCounters { now, deltas: deltas.to_vec() }).await.map(drop)
    }

    async fn counters(&self) -> Result<Vec<(String, u64)>, StoreError> {
        match self.read(Call::Counters).await? {
            Reply::Counters(v) => Ok(v),
            r => Err(unexpected("counters", &r)),
        }
    }
}

impl<O: Objects> MessageStore for Store<O> {
    async fn usage(&self, agent: &str) -> Result<Usage, StoreError> {
        match self.read(Call::Usage { agent: agent.into() }).await? {
            Reply::Usage { messages, bytes } => Ok(Usage { messages, bytes }),
            r => Err(unexpected("usage", &r)),
        }
    }

    /// The message, its dedup row and (local) its inbox usage in one transaction; a message for
    /// another domain is stored leased for the attempt right after the 202 ([`Store::take_queued`])
    /// and claimable by a sweep once the lease is over.
    async fn store_message(&self, m: NewMessage) -> Result<Stored, StoreError> {
        let row = NewRow {
            nonce: m.nonce,
            sender_domain: m.sender_domain,
            from_id: m.from_id,
            to_id: m.to_id,
            json: m.json,
            kind: match m.status {
                MessageStatus::Delivered => Kind::Inbox,
                MessageStatus::Queued => Kind::Outbound,
            },
            content_hash: hash_hex(&m.content_hash),
            now: m.now,
            lease_until: m.now + LEASE_SECS,
        };
        let reply = self.objects.call(&Call::Store(row.clone())).await?;
        let Reply::Stored(outcome) = reply else { return Err(unexpected("store", &reply)) };
        Ok(match outcome {
            Outcome::New(id) => {
                if row.kind == Kind::Outbound {
                    let domain = row.to_id.rsplit_once('@').map(|(_, d)| d.to_ascii_lowercase()).unwrap_or_default();
                    let (nonce, from, to, json) = (row.nonce, row.from_id, row.to_id, row.json);
                    let o = Outbound { id, nonce, from, to, domain, created_at: m.now, attempts: 0, json };
                    self.queued.borrow_mut().push(o);
                }
                Stored::New(id)
            }
            Outcome::Duplicate => Stored::Duplicate,
            Outcome::Replay => Stored::Replay,
        })
    }

    async fn inbox(
        &self,
        agent: &str,
        after_id: i64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<InboxRow>, StoreError> {
        let call = Call::Inbox {
            agent: agent.into(),
            after_id,
            limit: limit.min(i64::MAX as usize) as i64,
            max_bytes: max_bytes.min(i64::MAX as usize) as i64,
        };
        match self.read(call).await? {
            Reply::Rows(rows) => Ok(rows.into_iter().map(|(id, json)| InboxRow { id, json }).collect()),
            r => Err(unexpected("inbox", &r)),
        }
    }

    async fn message_info(&self, nonce: &str) -> Result<Option<MessageInfo>, StoreError> {
        match self.read(Call::MessageInfo { nonce: nonce.into() }).await? {
            Reply::Info(i) => Ok(i),
            r => Err(unexpected("message_info", &r)),
        }
    }

    /// Rows per status, and `due`: outbound messages an attempt may claim now.
    async fn queue_counts(&self) -> Result<QueueCounts, StoreError> {
        match self.read(Call::QueueCounts { now: self.clock.now() }).await? {
            Reply::Counts(by_status) => Ok(QueueCounts { by_status }),
            r => Err(unexpected("queue_counts", &r)),
        }
    }

    /// Acknowledgement (docs/protocol.md §6.5): the object removes the agent's rows in one
    /// transaction ([`Store::ack`]).
    async fn ack(&self, agent: &str, ack: &atp_wasm::relay::store::Ack) -> Result<u64, StoreError> {
        let ack = match ack {
            atp_wasm::relay::store::Ack::UpTo(n) => Ack::UpTo(*n),
            atp_wasm::relay::store::Ack::Ids(ids) => Ack::Ids(ids.clone()),
        };
        Store::ack(self, agent, &ack).await
    }

    async fn expire(&self, before: i64) -> Result<u64, StoreError> {
        Store::expire(self, before).await
    }

    /// The worker's own facts: the DoH cache and the cron sweeps of this isolate.
    fn extra_stats(&self) -> Map<String, Value> {
        let dns = self.iso.dns.borrow();
        let v = json!({
            "dns_cache": {"entries": dns.len(), "hits": dns.hits, "misses": dns.misses},
            "sweeps": self.iso.sweeps.get(),
        });
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }
}
