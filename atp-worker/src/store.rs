//! The worker's storage: the core relay's storage traits ([`AgentStore`], [`MessageStore`] and its
//! [`DedupStore`]) over three KV namespaces (layout in [`crate::layout`]), plus the outbound queue
//! and per-domain backoff that the cron sweep works on ([`crate::delivery`]).
//!
//! KV has no transactions (docs/design.md §1.5 asks for them; §4 says what the worker does
//! instead): [`MessageStore::store_message`] writes the message (inbox entry or queue entry) first,
//! then its dedup record, then its `inspect` record. A failure of the first write stored nothing;
//! a failure after it is "outcome unknown" (docs/protocol.md §6.4): the client retries with the
//! same nonce, and at worst the message is stored twice (a duplicate in the inbox, or a second
//! transfer that the receiver's idempotency absorbs). There are no conditional puts either, so
//! the dedup check is the pipeline's read and two registrations of one id in the same instant may
//! both succeed.

use std::cell::RefCell;
use std::rc::Rc;

use atp_wasm::delivery::Backoff;
use atp_wasm::env::{ContentHash, DedupStore, StoreError};
use atp_wasm::relay::store::{
    within_page, Ack, AgentStore, InboxRow, MessageInfo, MessageStatus, MessageStore, NewMessage, QueueCounts, Stored,
    Usage,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::clock::{random_u32, Clock};
use crate::kv::{list_all, Kv, Put};
use crate::layout::{self, day_of};
use crate::worker::Isolate;

/// How long a dedup record is kept: the 5-day retry horizon plus a day of clock skew and
/// in-flight retries.
pub const DEDUP_TTL_SECS: u64 = atp_wasm::retry::DEFAULT_HORIZON_SECS as u64 + 86_400;

/// How long a message being attempted stays out of the sweep's way (its lease), in seconds. A
/// message queued by a submission starts leased: the attempt right after the 202 is its own.
pub const LEASE_SECS: i64 = 120;

/// Most keys counted by `stats` (each 1000 costs one list operation).
const MAX_COUNTED: usize = 10_000;

/// A registered agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRecord {
    /// argon2id PHC string.
    pub hash: String,
    pub created_at: i64,
}

/// An outbound message in the queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueEntry {
    pub nonce: String,
    /// The local sender.
    pub from: String,
    pub to: String,
    /// The destination domain.
    pub domain: String,
    /// When it was accepted (Unix seconds): the retry policy's age counts from here.
    pub created_at: i64,
    /// Attempts made so far.
    pub attempts: u32,
    pub last_error: Option<String>,
    /// The message as accepted (unsigned JSON); signed at each attempt.
    pub message: String,
}

/// The three namespaces.
pub struct Namespaces<K> {
    pub agents: K,
    pub mail: K,
    pub queue: K,
}

/// The worker's store for one invocation: the namespaces, the clock (inbox ids are milliseconds)
/// and the isolate (day markers already written; the facts `stats` adds).
pub struct KvStore<K> {
    pub ns: Namespaces<K>,
    clock: Clock,
    iso: Rc<Isolate>,
    /// Messages this invocation queued, by nonce, for the attempt right after the 202.
    queued: RefCell<Vec<(String, QueueEntry)>>,
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::new(format!("unreadable {what}: {e}"))
}

/// A failure after the message's first write: it may be stored (docs/protocol.md §6.4).
fn outcome_unknown(e: StoreError) -> StoreError {
    StoreError { outcome_unknown: true, ..e }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

async fn get_json<K: Kv, T: for<'de> Deserialize<'de>>(kv: &K, key: &str, what: &str) -> Result<Option<T>, StoreError> {
    match kv.get(key).await? {
        None => Ok(None),
        Some(text) => serde_json::from_str(&text).map(Some).map_err(|e| corrupt(what, e)),
    }
}

fn to_json<T: Serialize>(v: &T, what: &str) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| corrupt(what, e))
}

impl<K: Kv> KvStore<K> {
    pub fn new(ns: Namespaces<K>, clock: Clock, iso: Rc<Isolate>) -> Self {
        KvStore { ns, clock, iso, queued: RefCell::default() }
    }

    pub async fn agent(&self, id: &str) -> Result<Option<AgentRecord>, StoreError> {
        get_json(&self.ns.agents, &layout::agent_key(id), "agent record").await
    }

    // ---- inbox ----

    /// Puts a message into `agent`'s inbox under a new id (see [`layout::inbox_id`]) and returns
    /// the id. The isolate remembers the day markers it has written, so a busy inbox does not
    /// rewrite its marker on every message (KV allows one write per second per key).
    pub async fn put_inbox(&self, agent: &str, json: &str) -> Result<i64, StoreError> {
        let id = layout::inbox_id(self.clock.now_ms(), random_u32());
        self.ns.mail.put(&layout::inbox_key(agent, id), json, Put::forever()).await?;
        let marker = layout::day_marker_key(agent, day_of(id));
        if !self.iso.known_days.borrow().contains(&marker) {
            if self.ns.mail.get(&marker).await?.is_none() {
                self.ns.mail.put(&marker, "1", Put::forever()).await?;
            }
            let mut known = self.iso.known_days.borrow_mut();
            if known.len() > 10_000 {
                known.clear();
            }
            known.insert(marker);
        }
        Ok(id)
    }

    // ---- message records ----

    /// Stores what `inspect` shows of a message (`m/<nonce>`); its `status` is `delivered` (in a
    /// local inbox, or transferred), `queued`, `failed` (waiting for a retry) or `bounced`.
    pub async fn put_record(&self, rec: &MessageInfo) -> Result<(), StoreError> {
        self.ns.mail.put(&layout::record_key(&rec.nonce), &to_json(rec, "message record")?, Put::forever()).await
    }

    // ---- queue ----

    pub async fn put_entry(&self, due: i64, entry: &QueueEntry) -> Result<String, StoreError> {
        let key = layout::queue_key(due, &entry.nonce);
        self.ns.queue.put(&key, &to_json(entry, "queue entry")?, Put::forever()).await?;
        Ok(key)
    }

    pub async fn entry(&self, key: &str) -> Result<Option<QueueEntry>, StoreError> {
        get_json(&self.ns.queue, key, "queue entry").await
    }

    pub async fn delete_entry(&self, key: &str) -> Result<(), StoreError> {
        self.ns.queue.delete(key).await
    }

    /// The queue key and entry of a message this invocation queued (once).
    pub fn take_queued(&self, nonce: &str) -> Option<(String, QueueEntry)> {
        let mut q = self.queued.borrow_mut();
        let i = q.iter().position(|(_, e)| e.nonce == nonce)?;
        Some(q.swap_remove(i))
    }

    /// Queue keys due at `now` (oldest first), at most `max`.
    pub async fn due(&self, now: i64, max: usize) -> Result<Vec<String>, StoreError> {
        let mut out = Vec::new();
        let mut cursor = None;
        loop {
            let limit = (max as u32).clamp(1, crate::kv::MAX_PAGE);
            let page = self.ns.queue.list(layout::QUEUE_PREFIX, cursor, limit).await?;
            for k in page.keys {
                match layout::parse_queue_key(&k.name) {
                    Some((due, _)) if due <= now => out.push(k.name),
                    Some(_) => return Ok(out),
                    None => {}
                }
                if out.len() >= max {
                    return Ok(out);
                }
            }
            match page.cursor {
                Some(c) => cursor = Some(c),
                None => return Ok(out),
            }
        }
    }

    pub async fn backoff(&self, domain: &str) -> Result<Backoff, StoreError> {
        match self.ns.queue.get(&layout::backoff_key(domain)).await? {
            None => Ok(Backoff::default()),
            Some(text) => Ok(serde_json::from_str(&text).unwrap_or_default()),
        }
    }

    /// Stores a domain's backoff; kept a day past its end so a flapping domain keeps its count.
    pub async fn set_backoff(&self, domain: &str, b: Backoff, now: i64) -> Result<(), StoreError> {
        let key = layout::backoff_key(domain);
        if b.failures == 0 {
            return self.ns.queue.delete(&key).await;
        }
        let ttl = (b.blocked_until - now).max(0) as u64 + 86_400;
        self.ns.queue.put(&key, &to_json(&b, "backoff")?, Put::ttl(ttl)).await
    }
}

impl<K: Kv> KvStore<K> {
    /// Counts a message of `bytes` into `agent`'s usage record (`u/<agent>`). KV has no atomic
    /// increment, so concurrent writers may lose a count: on KV the quota is approximate (it
    /// still bounds an inbox within a few messages); a failure here never fails the stored message.
    async fn add_usage(&self, agent: &str, bytes: usize) {
        let Ok(mut u) = MessageStore::usage(self, agent).await else { return };
        u.messages += 1;
        u.bytes += bytes as u64;
        let text = json!({"messages": u.messages, "bytes": u.bytes}).to_string();
        let _ = self.ns.mail.put(&layout::usage_key(agent), &text, Put::forever()).await;
    }
}

impl<K: Kv> KvStore<K> {
    /// Deletes the inbox rows of `agent` (its own keys only) and takes them off its usage record
    /// (approximate, as [`KvStore::add_usage`]).
    async fn remove_inbox(&self, agent: &str, rows: &[InboxRow]) -> Result<u64, StoreError> {
        for r in rows {
            self.ns.mail.delete(&layout::inbox_key(agent, r.id)).await?;
        }
        if !rows.is_empty() {
            let mut u = MessageStore::usage(self, agent).await?;
            u.messages = u.messages.saturating_sub(rows.len() as u64);
            u.bytes = u.bytes.saturating_sub(rows.iter().map(|r| r.json.len() as u64).sum());
            let text = json!({"messages": u.messages, "bytes": u.bytes}).to_string();
            self.ns.mail.put(&layout::usage_key(agent), &text, Put::forever()).await?;
        }
        Ok(rows.len() as u64)
    }
}

impl<K: Kv> DedupStore for KvStore<K> {
    async fn seen(&self, sender_domain: &str, nonce: &str) -> Result<Option<ContentHash>, StoreError> {
        Ok(self.ns.mail.get(&layout::dedup_key(sender_domain, nonce)).await?.as_deref().and_then(unhex))
    }
}

impl<K: Kv> AgentStore for KvStore<K> {
    async fn agent_hash(&self, id: &str) -> Result<Option<String>, StoreError> {
        Ok(self.agent(id).await?.map(|a| a.hash))
    }

    /// Check-then-write: KV has no conditional put, so two registrations of one id in the same
    /// instant may both succeed (the later hash wins).
    async fn insert_agent(&self, id: &str, hash: &str, now: i64) -> Result<bool, StoreError> {
        if self.agent(id).await?.is_some() {
            return Ok(false);
        }
        let rec = AgentRecord { hash: hash.to_owned(), created_at: now };
        let opts = Put::forever().with_metadata(json!({"created_at": now}));
        self.ns.agents.put(&layout::agent_key(id), &to_json(&rec, "agent record")?, opts).await?;
        Ok(true)
    }

    /// Registered agents, oldest first (by the `created_at` in each key's list metadata).
    async fn agent_ids(&self) -> Result<Vec<String>, StoreError> {
        let keys = list_all(&self.ns.agents, layout::AGENTS_PREFIX, MAX_COUNTED).await?;
        let mut agents: Vec<(i64, String)> = keys
            .into_iter()
            .filter_map(|k| {
                let id = k.name.strip_prefix(layout::AGENTS_PREFIX)?.to_owned();
                let created = k.metadata.as_ref().and_then(|m| m.get("created_at")).and_then(Value::as_i64);
                Some((created.unwrap_or(0), id))
            })
            .collect();
        agents.sort();
        Ok(agents.into_iter().map(|(_, id)| id).collect())
    }
}

impl<K: Kv> MessageStore for KvStore<K> {
    /// The agent's usage record (approximate on KV, see [`KvStore::add_usage`]).
    async fn usage(&self, agent: &str) -> Result<Usage, StoreError> {
        let Some(text) = self.ns.mail.get(&layout::usage_key(agent)).await? else {
            return Ok(Usage::default());
        };
        let v: Value = serde_json::from_str(&text).unwrap_or_default();
        let n = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
        Ok(Usage { messages: n("messages"), bytes: n("bytes") })
    }

    /// A message for a local inbox goes into it; one for another domain into the queue under a
    /// lease (`q/<now + LEASE>/<nonce>`), attempted right after the 202 ([`KvStore::take_queued`])
    /// and by the sweep if that attempt dies. Then the dedup and `inspect` records (see the module
    /// documentation for what a failure means).
    async fn store_message(&self, m: NewMessage) -> Result<Stored, StoreError> {
        let (id, next_attempt_at) = match m.status {
            MessageStatus::Delivered => {
                let id = self.put_inbox(&m.to_id, &m.json).await?;
                self.add_usage(&m.to_id, m.json.len()).await;
                (id, None)
            }
            MessageStatus::Queued => {
                let entry = QueueEntry {
                    nonce: m.nonce.clone(),
                    from: m.from_id.clone(),
                    to: m.to_id.clone(),
                    domain: m.to_id.rsplit_once('@').map(|(_, d)| d).unwrap_or_default().to_owned(),
                    created_at: m.now,
                    attempts: 0,
                    last_error: None,
                    message: m.json.clone(),
                };
                let key = self.put_entry(m.now + LEASE_SECS, &entry).await?;
                self.queued.borrow_mut().push((key, entry));
                (0, Some(m.now))
            }
        };
        let dedup = layout::dedup_key(&m.sender_domain, &m.nonce);
        self.ns.mail.put(&dedup, &hex(&m.content_hash), Put::ttl(DEDUP_TTL_SECS)).await.map_err(outcome_unknown)?;
        let rec = MessageInfo {
            nonce: m.nonce,
            from: m.from_id,
            to: m.to_id,
            status: m.status.as_str().into(),
            created_at: m.now,
            updated_at: m.now,
            next_attempt_at,
            ..MessageInfo::default()
        };
        self.put_record(&rec).await.map_err(outcome_unknown)?;
        Ok(Stored::New(id))
    }

    /// At most `limit` messages of `agent`'s inbox with ids above `after_id`, oldest first: the
    /// day markers at or after the cursor's day, then each day's keys. Stops early at a listed
    /// message whose value cannot be read yet (eventual consistency), so a cursor never skips it.
    async fn inbox(
        &self,
        agent: &str,
        after_id: i64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<InboxRow>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mail = &self.ns.mail;
        let first_day = day_of(after_id);
        let days: Vec<i64> = list_all(mail, &layout::day_marker_prefix(agent), usize::MAX)
            .await?
            .iter()
            .filter_map(|k| layout::parse_day_marker(&k.name))
            .filter(|d| *d >= first_day)
            .collect();
        let mut ids = Vec::new();
        'days: for day in days {
            let mut cursor = None;
            loop {
                let page = mail.list(&layout::inbox_day_prefix(agent, day), cursor, crate::kv::MAX_PAGE).await?;
                for id in page.keys.iter().filter_map(|k| layout::parse_inbox_key(&k.name)).filter(|id| *id > after_id)
                {
                    ids.push(id);
                    if ids.len() >= limit {
                        break 'days;
                    }
                }
                match page.cursor {
                    Some(c) => cursor = Some(c),
                    None => break,
                }
            }
        }
        let keys: Vec<String> = ids.iter().map(|id| layout::inbox_key(agent, *id)).collect();
        let values = futures_util::future::join_all(keys.iter().map(|k| mail.get(k))).await;
        let mut rows = Vec::with_capacity(ids.len());
        for (id, value) in ids.into_iter().zip(values) {
            match value? {
                Some(json) => rows.push(InboxRow { id, json }),
                None => break,
            }
        }
        Ok(within_page(rows, limit, max_bytes))
    }

    /// Acknowledgement (docs/protocol.md §6.5): the selected rows of `agent`'s inbox — read from
    /// its own keys, so never another agent's — are deleted.
    async fn ack(&self, agent: &str, ack: &Ack) -> Result<u64, StoreError> {
        let mut rows = Vec::new();
        match ack {
            Ack::Ids(ids) => {
                for id in ids {
                    if let Some(json) = self.ns.mail.get(&layout::inbox_key(agent, *id)).await? {
                        rows.push(InboxRow { id: *id, json });
                    }
                }
            }
            Ack::UpTo(max) => {
                let mut after = 0;
                loop {
                    let page = self.inbox(agent, after, 1000, usize::MAX).await?;
                    let done = page.len() < 1000 || page.last().is_some_and(|r| r.id >= *max);
                    after = page.last().map_or(after, |r| r.id);
                    rows.extend(page.into_iter().filter(|r| r.id <= *max));
                    if done {
                        break;
                    }
                }
            }
        }
        self.remove_inbox(agent, &rows).await
    }

    /// Retention: inbox ids carry their time (unix ms × 1000, [`layout::inbox_id`]), so a row
    /// stored before `before` is one with an id below `before` × 10^6, agent by agent.
    async fn expire(&self, before: i64) -> Result<u64, StoreError> {
        let mut n = 0;
        for agent in self.agent_ids().await? {
            n += self.ack(&agent, &Ack::UpTo(before.saturating_mul(1_000_000) - 1)).await?;
        }
        Ok(n)
    }

    async fn message_info(&self, nonce: &str) -> Result<Option<MessageInfo>, StoreError> {
        get_json(&self.ns.mail, &layout::record_key(nonce), "message record").await
    }

    /// `queued`: messages in the queue (waiting for a first attempt or a retry); `due`: those due
    /// now. Counted up to a bound; delivered and bounced messages are not counted (no KV scan).
    async fn queue_counts(&self) -> Result<QueueCounts, StoreError> {
        let now = self.clock.now();
        let keys = list_all(&self.ns.queue, layout::QUEUE_PREFIX, MAX_COUNTED).await?;
        let due = keys.iter().filter(|k| layout::parse_queue_key(&k.name).is_some_and(|(d, _)| d <= now)).count();
        let mut c = QueueCounts::default();
        c.by_status.insert("queued".into(), keys.len() as i64);
        c.by_status.insert("due".into(), due as i64);
        Ok(c)
    }

    /// The worker's own facts: the DoH cache, the cron sweeps of this isolate.
    fn extra_stats(&self) -> Map<String, Value> {
        let dns = self.iso.dns.borrow();
        let v = json!({
            "dns_cache": {"entries": dns.len(), "hits": dns.hits, "misses": dns.misses},
            "sweeps": self.iso.sweeps.get(),
            "counters": "per isolate (reset when the isolate is recycled); queue and agents from KV",
        });
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::MemoryKv;
    use futures::executor::block_on;
    use std::cell::Cell;

    fn store(t: &Rc<Cell<i64>>) -> KvStore<MemoryKv> {
        let ns = Namespaces { agents: MemoryKv::new(), mail: MemoryKv::new(), queue: MemoryKv::new() };
        KvStore::new(ns, Clock::manual(t.clone()), Rc::new(Isolate::new(0)))
    }

    fn message(nonce: &str, to: &str, status: MessageStatus) -> NewMessage {
        NewMessage {
            nonce: nonce.into(),
            sender_domain: "x.test".into(),
            from_id: "amy@x.test".into(),
            to_id: to.into(),
            json: format!("{{\"nonce\":\"{nonce}\"}}"),
            status,
            content_hash: [0xab; 32],
            now: 1_795_545_211,
        }
    }

    #[test]
    fn ack_and_expire_remove_only_the_agents_rows() {
        let t = Rc::new(Cell::new(1_000_000));
        let s = store(&t);
        let mut ids = Vec::new();
        for (n, to) in [("a1", "a@w.test"), ("b1", "b@w.test"), ("a2", "a@w.test"), ("a3", "a@w.test")] {
            t.set(t.get() + 1000);
            let Stored::New(id) = block_on(s.store_message(message(n, to, MessageStatus::Delivered))).unwrap() else {
                panic!()
            };
            ids.push(id);
        }
        block_on(s.insert_agent("a@w.test", "h", 1)).unwrap();
        block_on(s.insert_agent("b@w.test", "h", 2)).unwrap();
        let len = message("a1", "", MessageStatus::Delivered).json.len() as u64;
        assert_eq!(block_on(s.ack("a@w.test", &Ack::Ids(vec![ids[1], ids[0]]))).unwrap(), 1, "b's row stays");
        assert_eq!(block_on(s.usage("a@w.test")).unwrap(), Usage { messages: 2, bytes: 2 * len });
        assert_eq!(block_on(s.ack("a@w.test", &Ack::UpTo(ids[2]))).unwrap(), 1);
        let left = |a: &str| block_on(s.inbox(a, 0, 10, usize::MAX)).unwrap().iter().map(|r| r.id).collect::<Vec<_>>();
        assert_eq!((left("a@w.test"), left("b@w.test")), (vec![ids[3]], vec![ids[1]]));
        // Expiry by the time in the ids: b's row (stored at 1,002,000 ms) goes, a's last stays.
        assert_eq!(block_on(s.expire(1_003)).unwrap(), 1);
        assert_eq!((left("a@w.test"), left("b@w.test")), (vec![ids[3]], vec![]));
    }

    #[test]
    fn inbox_cursor_across_days() {
        let t = Rc::new(Cell::new(0));
        let s = store(&t);
        let day = 86_400_000i64;
        let base = 1_795_545_211_000i64;
        let mut ids = Vec::new();
        for (i, ms) in [base, base + 1, base + day, base + 3 * day, base + 3 * day + 5].into_iter().enumerate() {
            t.set(ms);
            ids.push(block_on(s.put_inbox("bob@x.test", &format!("{{\"n\":{i}}}"))).unwrap());
        }
        block_on(s.put_inbox("carol@x.test", "{}")).unwrap();
        let page = |after, limit, bytes| {
            let r = block_on(s.inbox("bob@x.test", after, limit, bytes)).unwrap();
            r.into_iter().map(|r| (r.id, r.json)).collect::<Vec<_>>()
        };
        let all = page(0, 50, usize::MAX);
        assert_eq!(all.iter().map(|r| r.0).collect::<Vec<_>>(), ids);
        assert_eq!(all[4].1, "{\"n\":4}");
        let two = page(0, 2, usize::MAX);
        assert_eq!(two.len(), 2);
        let next = page(two[1].0, 2, usize::MAX);
        assert_eq!(next.iter().map(|r| r.0).collect::<Vec<_>>(), vec![ids[2], ids[3]]);
        assert_eq!(page(ids[3], 50, usize::MAX).len(), 1);
        assert!(page(ids[4], 50, usize::MAX).is_empty());
        assert!(page(0, 0, usize::MAX).is_empty());
        assert_eq!(page(0, 50, 10).len(), 1, "the byte limit, the first message always");
        assert_eq!(block_on(s.inbox("carol@x.test", 0, 50, usize::MAX)).unwrap().len(), 1);
        // the day markers were written once each
        let markers = s.ns.mail.keys().into_iter().filter(|k| k.starts_with("x/bob")).count();
        assert_eq!(markers, 3);
    }

    #[test]
    fn agents_in_registration_order_and_no_double_registration() {
        let s = store(&Rc::default());
        block_on(async {
            assert!(s.insert_agent("zed@x.test", "h1", 1).await.unwrap());
            assert!(s.insert_agent("amy@x.test", "h2", 2).await.unwrap());
            assert!(!s.insert_agent("zed@x.test", "h3", 3).await.unwrap());
            assert_eq!(s.agent_ids().await.unwrap(), ["zed@x.test", "amy@x.test"]);
            assert_eq!(s.agent_hash("zed@x.test").await.unwrap().as_deref(), Some("h1"));
            assert_eq!(s.agent("zed@x.test").await.unwrap().unwrap().created_at, 1);
            assert!(!s.agent_exists("nobody@x.test").await.unwrap());
        });
    }

    #[test]
    fn messages_are_stored_with_their_dedup_and_inspect_records() {
        let t = Rc::new(Cell::new(1_795_545_211_000));
        let s = store(&t);
        block_on(async {
            let Stored::New(id) = s.store_message(message("n1", "bob@x.test", MessageStatus::Delivered)).await.unwrap()
            else {
                panic!()
            };
            assert_eq!(s.inbox("bob@x.test", 0, 50, usize::MAX).await.unwrap()[0].id, id);
            assert_eq!(s.seen("x.test", "n1").await.unwrap(), Some([0xab; 32]));
            assert_eq!(s.seen("y.test", "n1").await.unwrap(), None);
            let info = s.message_info("n1").await.unwrap().unwrap();
            assert_eq!((info.status.as_str(), info.to.as_str()), ("delivered", "bob@x.test"));

            s.store_message(message("n2", "zed@y.test", MessageStatus::Queued)).await.unwrap();
            let (key, entry) = s.take_queued("n2").unwrap();
            assert_eq!(key, layout::queue_key(1_795_545_211 + LEASE_SECS, "n2"), "queued under a lease");
            assert_eq!((entry.domain.as_str(), entry.attempts), ("y.test", 0));
            assert!(s.take_queued("n2").is_none(), "taken once");
            assert_eq!(s.entry(&key).await.unwrap(), Some(entry));
            let info = s.message_info("n2").await.unwrap().unwrap();
            assert_eq!((info.status.as_str(), info.next_attempt_at), ("queued", Some(1_795_545_211)));
            let c = s.queue_counts().await.unwrap();
            assert_eq!((c.get("queued"), c.get("due")), (1, 0));
            t.set(t.get() + LEASE_SECS * 1000);
            assert_eq!(s.queue_counts().await.unwrap().get("due"), 1);
            assert_eq!(s.due(t.get() / 1000, 10).await.unwrap(), vec![key]);
        });
    }

    #[test]
    fn a_failure_after_the_first_write_is_outcome_unknown() {
        let s = store(&Rc::new(Cell::new(1_795_545_211_000)));
        block_on(async {
            s.ns.queue.failing.set(true);
            let e = s.store_message(message("n1", "zed@y.test", MessageStatus::Queued)).await.unwrap_err();
            assert!(!e.outcome_unknown, "nothing written");
            assert_eq!(e.to_rejection().status(), 503);
            s.ns.queue.failing.set(false);
            s.ns.mail.failing.set(true);
            let e = s.store_message(message("n2", "zed@y.test", MessageStatus::Queued)).await.unwrap_err();
            assert!(e.outcome_unknown, "queued, but no dedup record");
            assert_eq!(e.to_rejection().extra["storage"], "outcome_unknown");
        });
    }

    #[test]
    fn queue_order_and_backoff() {
        let s = store(&Rc::default());
        let entry = |n: &str| QueueEntry {
            nonce: n.into(),
            from: "a@x.test".into(),
            to: "b@y.test".into(),
            domain: "y.test".into(),
            created_at: 0,
            attempts: 0,
            last_error: None,
            message: "{}".into(),
        };
        block_on(async {
            s.put_entry(300, &entry("late")).await.unwrap();
            let k = s.put_entry(100, &entry("early")).await.unwrap();
            s.put_entry(200, &entry("mid")).await.unwrap();
            assert_eq!(s.due(250, 10).await.unwrap(), vec![k.clone(), layout::queue_key(200, "mid")]);
            assert_eq!(s.due(250, 1).await.unwrap(), vec![k.clone()]);
            assert_eq!(s.due(50, 10).await.unwrap(), Vec::<String>::new());
            assert_eq!(s.entry(&k).await.unwrap().unwrap().nonce, "early");
            s.delete_entry(&k).await.unwrap();
            assert!(s.entry(&k).await.unwrap().is_none());

            let b = Backoff { failures: 2, blocked_until: 500 };
            s.set_backoff("y.test", b, 100).await.unwrap();
            assert_eq!(s.backoff("y.test").await.unwrap(), b);
            s.set_backoff("y.test", Backoff::default(), 100).await.unwrap();
            assert_eq!(s.backoff("y.test").await.unwrap(), Backoff::default());
        });
    }
}
