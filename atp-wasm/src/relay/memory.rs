//! An in-memory store implementing every storage trait of the relay: for tests (here and in the
//! homes) and for trying the relay without a database. Bounded only by the caller.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use crate::env::{ContentHash, DedupStore, StoreError};
use crate::relay::store::{
    within_page, Ack, AgentStore, CounterStore, InboxRow, MessageInfo, MessageStatus, MessageStore, NewMessage,
    QueueCounts, Stored, Usage,
};

#[derive(Debug, Default)]
struct Inner {
    agents: Vec<(String, String)>,
    /// Row id → (message, status).
    messages: BTreeMap<i64, (NewMessage, String)>,
    dedup: HashMap<(String, String), ContentHash>,
    next_id: i64,
    counters: BTreeMap<String, u64>,
}

/// Agents, messages and dedup records in memory.
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
    /// When set, every call fails with this error (tests of storage failures).
    pub failing: Mutex<Option<StoreError>>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> Result<T, StoreError> {
        if let Some(e) = self.failing.lock().ok().and_then(|f| f.clone()) {
            return Err(e);
        }
        let mut inner = self.inner.lock().map_err(|_| StoreError::new("memory store poisoned"))?;
        Ok(f(&mut inner))
    }

    /// Makes every later call fail with `e` (or work again with `None`).
    pub fn fail_with(&self, e: Option<StoreError>) {
        if let Ok(mut f) = self.failing.lock() {
            *f = e;
        }
    }
}

impl DedupStore for MemoryStore {
    async fn seen(&self, sender_domain: &str, nonce: &str) -> Result<Option<ContentHash>, StoreError> {
        self.with(|i| i.dedup.get(&(sender_domain.to_owned(), nonce.to_owned())).copied())
    }
}

impl AgentStore for MemoryStore {
    async fn agent_hash(&self, id: &str) -> Result<Option<String>, StoreError> {
        self.with(|i| i.agents.iter().find(|(a, _)| a == id).map(|(_, h)| h.clone()))
    }
    async fn insert_agent(&self, id: &str, hash: &str, _now: i64) -> Result<bool, StoreError> {
        self.with(|i| {
            if i.agents.iter().any(|(a, _)| a == id) {
                return false;
            }
            i.agents.push((id.to_owned(), hash.to_owned()));
            true
        })
    }
    async fn agent_ids(&self) -> Result<Vec<String>, StoreError> {
        self.with(|i| i.agents.iter().map(|(a, _)| a.clone()).collect())
    }
}

impl MessageStore for MemoryStore {
    async fn store_message(&self, m: NewMessage) -> Result<Stored, StoreError> {
        self.with(|i| {
            let key = (m.sender_domain.clone(), m.nonce.clone());
            if let Some(h) = i.dedup.get(&key) {
                return if *h == m.content_hash { Stored::Duplicate } else { Stored::Replay };
            }
            i.dedup.insert(key, m.content_hash);
            i.next_id += 1;
            let id = i.next_id;
            let status = m.status.as_str().to_owned();
            i.messages.insert(id, (m, status));
            Stored::New(id)
        })
    }

    async fn inbox(
        &self,
        agent: &str,
        after_id: i64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<InboxRow>, StoreError> {
        self.with(|i| {
            let rows = i
                .messages
                .range(after_id.saturating_add(1)..)
                .filter(|(_, (m, s))| m.to_id == agent && s == MessageStatus::Delivered.as_str())
                .map(|(id, (m, _))| InboxRow { id: *id, json: m.json.clone() });
            within_page(rows, limit, max_bytes)
        })
    }

    async fn message_info(&self, nonce: &str) -> Result<Option<MessageInfo>, StoreError> {
        self.with(|i| {
            i.messages.values().rev().find(|(m, _)| m.nonce == nonce).map(|(m, s)| MessageInfo {
                nonce: m.nonce.clone(),
                from: m.from_id.clone(),
                to: m.to_id.clone(),
                status: s.clone(),
                created_at: m.now,
                updated_at: m.now,
                ..MessageInfo::default()
            })
        })
    }

    async fn usage(&self, agent: &str) -> Result<Usage, StoreError> {
        self.with(|i| {
            let mut u = Usage::default();
            for (m, s) in i.messages.values() {
                if m.to_id == agent && s == MessageStatus::Delivered.as_str() {
                    u.messages += 1;
                    u.bytes += m.json.len() as u64;
                }
            }
            u
        })
    }

    async fn ack(&self, agent: &str, ack: &Ack) -> Result<u64, StoreError> {
        self.with(|i| {
            let selected = |id: i64, m: &NewMessage, s: &str| {
                m.to_id == agent
                    && s == MessageStatus::Delivered.as_str()
                    && match ack {
                        Ack::UpTo(n) => id <= *n,
                        Ack::Ids(ids) => ids.contains(&id),
                    }
            };
            let before = i.messages.len();
            i.messages.retain(|id, (m, s)| !selected(*id, m, s));
            (before - i.messages.len()) as u64
        })
    }

    async fn expire(&self, before: i64) -> Result<u64, StoreError> {
        self.with(|i| {
            let n = i.messages.len();
            i.messages.retain(|_, (m, s)| !(s == MessageStatus::Delivered.as_str() && m.now < before));
            (n - i.messages.len()) as u64
        })
    }

    async fn queue_counts(&self) -> Result<QueueCounts, StoreError> {
        self.with(|i| {
            let mut c = QueueCounts::default();
            for (_, s) in i.messages.values() {
                *c.by_status.entry(s.clone()).or_default() += 1;
            }
            c
        })
    }
}

impl CounterStore for MemoryStore {
    async fn add_counters(&self, now: i64, deltas: &[(String, u64)]) -> Result<(), StoreError> {
        self.with(|i| {
            i.counters.entry(crate::relay::counters::STARTED_AT.to_owned()).or_insert(now.max(0) as u64);
            for (k, d) in deltas {
                let v = i.counters.entry(k.clone()).or_default();
                *v = v.saturating_add(*d);
            }
        })
    }

    async fn counters(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.with(|i| i.counters.iter().map(|(k, v)| (k.clone(), *v)).collect())
    }
}
