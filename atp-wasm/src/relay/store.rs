//! The storage the relay needs, as small traits a home implements (docs/design.md §1 "How to add a
//! storage backend"): agents and their credentials ([`AgentStore`]), messages and inboxes
//! ([`MessageStore`], which also answers the pipeline's [`DedupStore`]), the domain's request
//! counters ([`CounterStore`]). The outbound queue is the delivery engine's ([`crate::delivery`]).
//!
//! Every method may fail with a [`StoreError`], which the relay answers as a temporary refusal
//! (docs/protocol.md §6.4), never a 500 and never a false 202.

use std::collections::BTreeMap;

use crate::env::{ContentHash, DedupStore, StoreError};

/// Where a stored message is (`messages.status`, docs/protocol.md §8.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageStatus {
    /// In a local inbox.
    Delivered,
    /// Waiting for the delivery engine (another domain).
    Queued,
}

impl MessageStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageStatus::Delivered => "delivered",
            MessageStatus::Queued => "queued",
        }
    }
}

/// A message to store, with its dedup key `(sender domain, nonce, content hash)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    pub nonce: String,
    pub sender_domain: String,
    pub from_id: String,
    pub to_id: String,
    /// The message as JSON text (numbers kept exactly as received).
    pub json: String,
    pub status: MessageStatus,
    pub content_hash: ContentHash,
    pub now: i64,
}

/// What storing a message did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// Stored under this inbox/row id.
    New(i64),
    /// An exact repeat of a message already accepted: nothing written.
    Duplicate,
    /// The nonce is taken by other content.
    Replay,
}

/// A stored message as an inbox page returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxRow {
    /// Strictly increasing per agent: the cursor (`after_id`, `last_id`).
    pub id: i64,
    pub json: String,
}

/// What `inspect` shows of a message (docs/protocol.md §6.1). Serializable, so that a store
/// without tables (atp-worker's KV) keeps it as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MessageInfo {
    pub nonce: String,
    pub from: String,
    pub to: String,
    pub status: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub attempts: i64,
    pub next_attempt_at: Option<i64>,
    pub error: Option<String>,
}

/// Message rows per status (`queued`, `delivering`, `delivered`, `failed`, `bounced`; a store may
/// add its own, e.g. `due`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueCounts {
    pub by_status: BTreeMap<String, i64>,
}

/// The statuses every store reports, zero when absent.
pub const STATUSES: [&str; 5] = ["queued", "delivering", "delivered", "failed", "bounced"];

impl QueueCounts {
    pub fn get(&self, status: &str) -> i64 {
        self.by_status.get(status).copied().unwrap_or(0)
    }
}

/// What an inbox holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub messages: u64,
    /// Bytes of message JSON.
    pub bytes: u64,
}

/// Which of an agent's inbox messages an acknowledgement removes (issue 18, docs/protocol.md §6.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ack {
    /// Every message of the agent's inbox with an id up to and including this one.
    UpTo(i64),
    /// These messages (ids of the agent's inbox; others are left alone).
    Ids(Vec<i64>),
}

/// Agents and their password hashes (docs/protocol.md §7).
#[allow(async_fn_in_trait)]
pub trait AgentStore {
    /// The PHC hash of an agent's password, `None` when there is no such agent.
    async fn agent_hash(&self, id: &str) -> Result<Option<String>, StoreError>;
    /// Whether the agent exists.
    async fn agent_exists(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.agent_hash(id).await?.is_some())
    }
    /// Registers an agent; `false` (nothing changed) when the id is taken. Atomic: of concurrent
    /// registrations of one id, one wins.
    async fn insert_agent(&self, id: &str, hash: &str, now: i64) -> Result<bool, StoreError>;
    /// Registered agents, oldest first.
    async fn agent_ids(&self) -> Result<Vec<String>, StoreError>;
}

/// Messages: inboxes, the outbound queue's rows as `inspect` sees them, and the dedup records.
#[allow(async_fn_in_trait)]
pub trait MessageStore: DedupStore {
    /// Stores a message durably — committed before this returns (docs/design.md §3) — with its
    /// dedup record, in one transaction where the backend has them.
    async fn store_message(&self, m: NewMessage) -> Result<Stored, StoreError>;
    /// An agent's inbox after row `after_id`, oldest first: at most `limit` rows, and no more rows
    /// once their JSON passed `max_bytes` in total (the first row always comes, however large).
    async fn inbox(
        &self,
        agent: &str,
        after_id: i64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<InboxRow>, StoreError>;
    /// The newest message stored under a nonce.
    async fn message_info(&self, nonce: &str) -> Result<Option<MessageInfo>, StoreError>;
    /// Rows per status, for `stats` and `metrics`.
    async fn queue_counts(&self) -> Result<QueueCounts, StoreError>;
    /// What an agent's inbox holds now, for its quota ([`crate::relay::Quota`]).
    async fn usage(&self, agent: &str) -> Result<Usage, StoreError>;
    /// Removes the agent's inbox messages selected by `ack` — never another agent's — and frees their
    /// quota; returns how many were removed. Dedup records stay (a repeat is still answered as one).
    async fn ack(&self, agent: &str, ack: &Ack) -> Result<u64, StoreError>;
    /// Removes inbox messages stored before `before` (unix seconds; `[store] retention_days`); returns
    /// how many.
    async fn expire(&self, before: i64) -> Result<u64, StoreError>;
    /// Facts of the home for `stats` besides the common ones (e.g. a DNS cache's hit counts).
    fn extra_stats(&self) -> serde_json::Map<String, serde_json::Value> {
        serde_json::Map::new()
    }
}

/// The domain's request counters, shared by every process serving it (docs/design.md §4
/// "Counters", [`crate::relay::counters`]): named totals, each process adding what it counted.
#[allow(async_fn_in_trait)]
pub trait CounterStore {
    /// Adds `deltas` (sorted by name, names from [`crate::relay::counters`]'s fixed set) to the
    /// totals, in one transaction where the backend has them; records
    /// [`crate::relay::counters::STARTED_AT`] as `now` unless it is there already.
    async fn add_counters(&self, now: i64, deltas: &[(String, u64)]) -> Result<(), StoreError>;
    /// Every stored total by name, [`crate::relay::counters::STARTED_AT`] included.
    async fn counters(&self) -> Result<Vec<(String, u64)>, StoreError>;
}

/// Keeps rows of `rows` (oldest first) within `limit` rows and `max_bytes` of JSON, the first one
/// always: the page rule of [`MessageStore::inbox`] for stores that read rows one by one.
pub fn within_page(rows: impl IntoIterator<Item = InboxRow>, limit: usize, max_bytes: usize) -> Vec<InboxRow> {
    let mut out = Vec::new();
    let mut bytes = 0usize;
    for row in rows.into_iter().take(limit) {
        if !out.is_empty() && bytes.saturating_add(row.json.len()) > max_bytes {
            break;
        }
        bytes = bytes.saturating_add(row.json.len());
        out.push(row);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: i64, len: usize) -> InboxRow {
        InboxRow { id, json: "x".repeat(len) }
    }

    #[test]
    fn pages_are_bounded_in_rows_and_bytes() {
        let rows = || (1..=10).map(|i| row(i, 100));
        assert_eq!(within_page(rows(), 3, 10_000).len(), 3);
        assert_eq!(within_page(rows(), 50, 250).len(), 2);
        // One row larger than the byte limit still comes, alone.
        assert_eq!(within_page([row(1, 1000), row(2, 1)], 50, 10).len(), 1);
        assert!(within_page(Vec::new(), 50, 10).is_empty());
    }
}
