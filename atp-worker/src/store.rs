//! Typed access to the relay's state in its three KV namespaces (layout in [`crate::layout`]).

use std::cell::RefCell;
use std::collections::HashSet;

use atp_wasm::env::{ContentHash, DedupStore, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::kv::{list_all, Kv, Put};
use crate::layout::{self, day_of};

/// How long a dedup record is kept: the 5-day retry horizon plus a day of clock skew and
/// in-flight retries.
pub const DEDUP_TTL_SECS: u64 = atp_wasm::retry::DEFAULT_HORIZON_SECS as u64 + 86_400;

/// Most keys counted by `stats` (each 1000 costs one list operation).
const MAX_COUNTED: usize = 10_000;

/// A registered agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRecord {
    /// argon2id PHC string.
    pub hash: String,
    pub created_at: i64,
}

/// What `inspect` shows of a message (the reference's fields plus atp's names).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub nonce: String,
    pub from: String,
    pub to: String,
    /// `delivered` (in a local inbox, or transferred), `queued`, `failed` (waiting for a retry),
    /// `bounced`.
    pub status: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub attempts: u32,
    pub next_attempt_at: Option<i64>,
    pub error: Option<String>,
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

/// Backoff state of a destination domain (docs/design.md §3 "per-destination delivery").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backoff {
    pub failures: u32,
    pub blocked_until: i64,
}

/// The three namespaces.
pub struct Stores<K> {
    pub agents: K,
    pub mail: K,
    pub queue: K,
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError(format!("unreadable {what}: {e}"))
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

impl<K: Kv> Stores<K> {
    // ---- agents ----

    pub async fn agent(&self, id: &str) -> Result<Option<AgentRecord>, StoreError> {
        match self.agents.get(&layout::agent_key(id)).await? {
            None => Ok(None),
            Some(text) => serde_json::from_str(&text).map(Some).map_err(|e| corrupt("agent record", e)),
        }
    }

    /// Registers an agent; `false` if the id is taken. (Check-then-write: KV has no conditional
    /// put, so two registrations of one id in the same instant may both succeed; the later wins.)
    pub async fn insert_agent(&self, id: &str, rec: &AgentRecord) -> Result<bool, StoreError> {
        if self.agent(id).await?.is_some() {
            return Ok(false);
        }
        let text = serde_json::to_string(rec).map_err(|e| corrupt("agent record", e))?;
        let opts = Put::forever().with_metadata(json!({"created_at": rec.created_at}));
        self.agents.put(&layout::agent_key(id), &text, opts).await?;
        Ok(true)
    }

    /// Registered agents, oldest first.
    pub async fn agent_ids(&self) -> Result<Vec<String>, StoreError> {
        let keys = list_all(&self.agents, layout::AGENTS_PREFIX, MAX_COUNTED).await?;
        let mut agents: Vec<(i64, String)> = keys
            .into_iter()
            .filter_map(|k| {
                let id = k.name.strip_prefix(layout::AGENTS_PREFIX)?.to_owned();
                let created = k.metadata.as_ref().and_then(|m| m.get("created_at")).and_then(|v| v.as_i64());
                Some((created.unwrap_or(0), id))
            })
            .collect();
        agents.sort();
        Ok(agents.into_iter().map(|(_, id)| id).collect())
    }

    // ---- inbox ----

    /// Puts a message into `agent`'s inbox under `id` (see [`layout::inbox_id`]); `known_days`
    /// remembers the day markers this isolate has already written, so a busy inbox does not
    /// rewrite its marker on every message (KV allows one write per second per key).
    pub async fn put_inbox(
        &self,
        agent: &str,
        id: i64,
        json: &str,
        known_days: &RefCell<HashSet<String>>,
    ) -> Result<(), StoreError> {
        self.mail.put(&layout::inbox_key(agent, id), json, Put::forever()).await?;
        let marker = layout::day_marker_key(agent, day_of(id));
        if !known_days.borrow().contains(&marker) {
            if self.mail.get(&marker).await?.is_none() {
                self.mail.put(&marker, "1", Put::forever()).await?;
            }
            let mut known = known_days.borrow_mut();
            if known.len() > 10_000 {
                known.clear();
            }
            known.insert(marker);
        }
        Ok(())
    }

    /// Up to `limit` messages of `agent`'s inbox with ids above `after_id`, oldest first, as
    /// `(id, json)`. Stops early at a listed message whose value cannot be read yet (eventual
    /// consistency), so a client's cursor never skips it.
    pub async fn inbox(&self, agent: &str, after_id: i64, limit: usize) -> Result<Vec<(i64, String)>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let first_day = day_of(after_id);
        let days: Vec<i64> = list_all(&self.mail, &layout::day_marker_prefix(agent), usize::MAX)
            .await?
            .iter()
            .filter_map(|k| layout::parse_day_marker(&k.name))
            .filter(|d| *d >= first_day)
            .collect();
        let mut ids = Vec::new();
        'days: for day in days {
            let mut cursor = None;
            loop {
                let page = self.mail.list(&layout::inbox_day_prefix(agent, day), cursor, crate::kv::MAX_PAGE).await?;
                for k in &page.keys {
                    match layout::parse_inbox_key(&k.name) {
                        Some(id) if id > after_id => {
                            ids.push(id);
                            if ids.len() >= limit {
                                break 'days;
                            }
                        }
                        _ => {}
                    }
                }
                match page.cursor {
                    Some(c) => cursor = Some(c),
                    None => break,
                }
            }
        }
        let values =
            futures_util::future::join_all(ids.iter().map(|id| self.mail.get_owned(layout::inbox_key(agent, *id))))
                .await;
        let mut out = Vec::with_capacity(ids.len());
        for (id, value) in ids.into_iter().zip(values) {
            match value? {
                Some(json) => out.push((id, json)),
                None => break,
            }
        }
        Ok(out)
    }

    // ---- message records ----

    pub async fn record(&self, nonce: &str) -> Result<Option<Record>, StoreError> {
        match self.mail.get(&layout::record_key(nonce)).await? {
            None => Ok(None),
            Some(text) => serde_json::from_str(&text).map(Some).map_err(|e| corrupt("message record", e)),
        }
    }

    pub async fn put_record(&self, rec: &Record) -> Result<(), StoreError> {
        let text = serde_json::to_string(rec).map_err(|e| corrupt("message record", e))?;
        self.mail.put(&layout::record_key(&rec.nonce), &text, Put::forever()).await
    }

    // ---- dedup ----

    /// Remembers an accepted message for the retry horizon.
    pub async fn remember(&self, sender_domain: &str, nonce: &str, hash: &ContentHash) -> Result<(), StoreError> {
        self.mail.put(&layout::dedup_key(sender_domain, nonce), &hex(hash), Put::ttl(DEDUP_TTL_SECS)).await
    }

    // ---- queue ----

    pub async fn put_entry(&self, due: i64, entry: &QueueEntry) -> Result<String, StoreError> {
        let key = layout::queue_key(due, &entry.nonce);
        let text = serde_json::to_string(entry).map_err(|e| corrupt("queue entry", e))?;
        self.queue.put(&key, &text, Put::forever()).await?;
        Ok(key)
    }

    pub async fn entry(&self, key: &str) -> Result<Option<QueueEntry>, StoreError> {
        match self.queue.get(key).await? {
            None => Ok(None),
            Some(text) => serde_json::from_str(&text).map(Some).map_err(|e| corrupt("queue entry", e)),
        }
    }

    pub async fn delete_entry(&self, key: &str) -> Result<(), StoreError> {
        self.queue.delete(key).await
    }

    /// Queue keys due at `now` (oldest first), at most `max`.
    pub async fn due(&self, now: i64, max: usize) -> Result<Vec<String>, StoreError> {
        let mut out = Vec::new();
        let mut cursor = None;
        loop {
            let page =
                self.queue.list(layout::QUEUE_PREFIX, cursor, (max as u32).clamp(1, crate::kv::MAX_PAGE)).await?;
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

    /// `(waiting, due now)` in the queue, counted up to a bound.
    pub async fn queue_counts(&self, now: i64) -> Result<(usize, usize), StoreError> {
        let keys = list_all(&self.queue, layout::QUEUE_PREFIX, MAX_COUNTED).await?;
        let due = keys.iter().filter(|k| layout::parse_queue_key(&k.name).is_some_and(|(d, _)| d <= now)).count();
        Ok((keys.len(), due))
    }

    pub async fn backoff(&self, domain: &str) -> Result<Backoff, StoreError> {
        match self.queue.get(&layout::backoff_key(domain)).await? {
            None => Ok(Backoff::default()),
            Some(text) => Ok(serde_json::from_str(&text).unwrap_or_default()),
        }
    }

    /// Stores a domain's backoff; kept a day past its end so a flapping domain keeps its count.
    pub async fn set_backoff(&self, domain: &str, b: Backoff, now: i64) -> Result<(), StoreError> {
        let key = layout::backoff_key(domain);
        if b.failures == 0 {
            return self.queue.delete(&key).await;
        }
        let ttl = (b.blocked_until - now).max(0) as u64 + 86_400;
        let text = serde_json::to_string(&b).map_err(|e| corrupt("backoff", e))?;
        self.queue.put(&key, &text, Put::ttl(ttl)).await
    }
}

/// Helper so `join_all` can own its keys.
trait GetOwned {
    async fn get_owned(&self, key: String) -> Result<Option<String>, StoreError>;
}

impl<K: Kv> GetOwned for K {
    async fn get_owned(&self, key: String) -> Result<Option<String>, StoreError> {
        self.get(&key).await
    }
}

impl<K: Kv> DedupStore for Stores<K> {
    async fn seen(&self, sender_domain: &str, nonce: &str) -> Result<Option<ContentHash>, StoreError> {
        Ok(self.mail.get(&layout::dedup_key(sender_domain, nonce)).await?.as_deref().and_then(unhex))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::MemoryKv;
    use futures::executor::block_on;

    fn stores() -> Stores<MemoryKv> {
        Stores { agents: MemoryKv::new(), mail: MemoryKv::new(), queue: MemoryKv::new() }
    }

    #[test]
    fn inbox_cursor_across_days() {
        let s = stores();
        let known = RefCell::new(HashSet::new());
        let day = 86_400_000i64;
        let base = 1_795_545_211_000i64;
        let ids: Vec<i64> =
            [base, base + 1, base + day, base + 3 * day, base + 3 * day + 5].iter().map(|ms| ms * 1000).collect();
        block_on(async {
            for (i, id) in ids.iter().enumerate() {
                s.put_inbox("bob@x.test", *id, &format!("{{\"n\":{i}}}"), &known).await.unwrap();
            }
            s.put_inbox("carol@x.test", ids[2] + 1, "{}", &known).await.unwrap();
            let all = s.inbox("bob@x.test", 0, 50).await.unwrap();
            assert_eq!(all.iter().map(|(id, _)| *id).collect::<Vec<_>>(), ids);
            assert_eq!(all[4].1, "{\"n\":4}");
            let two = s.inbox("bob@x.test", 0, 2).await.unwrap();
            assert_eq!(two.len(), 2);
            let next = s.inbox("bob@x.test", two[1].0, 2).await.unwrap();
            assert_eq!(next.iter().map(|(id, _)| *id).collect::<Vec<_>>(), vec![ids[2], ids[3]]);
            let last = s.inbox("bob@x.test", ids[3], 50).await.unwrap();
            assert_eq!(last.len(), 1);
            assert!(s.inbox("bob@x.test", ids[4], 50).await.unwrap().is_empty());
            assert!(s.inbox("bob@x.test", 0, 0).await.unwrap().is_empty());
            assert_eq!(s.inbox("carol@x.test", 0, 50).await.unwrap().len(), 1);
            // the day markers were written once each
            let markers = s.mail.keys().into_iter().filter(|k| k.starts_with("x/bob")).count();
            assert_eq!(markers, 3);
        });
    }

    #[test]
    fn agents_in_registration_order_and_no_double_registration() {
        let s = stores();
        block_on(async {
            let rec = |t| AgentRecord { hash: "h".into(), created_at: t };
            assert!(s.insert_agent("zed@x.test", &rec(1)).await.unwrap());
            assert!(s.insert_agent("amy@x.test", &rec(2)).await.unwrap());
            assert!(!s.insert_agent("zed@x.test", &rec(3)).await.unwrap());
            assert_eq!(s.agent_ids().await.unwrap(), ["zed@x.test", "amy@x.test"]);
            assert_eq!(s.agent("zed@x.test").await.unwrap().unwrap().created_at, 1);
            assert!(s.agent("nobody@x.test").await.unwrap().is_none());
        });
    }

    #[test]
    fn queue_due_order_and_dedup() {
        let s = stores();
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
            assert_eq!(s.queue_counts(250).await.unwrap(), (3, 2));
            assert_eq!(s.entry(&k).await.unwrap().unwrap().nonce, "early");
            s.delete_entry(&k).await.unwrap();
            assert!(s.entry(&k).await.unwrap().is_none());

            assert_eq!(s.seen("y.test", "n1").await.unwrap(), None);
            s.remember("y.test", "n1", &[0xab; 32]).await.unwrap();
            assert_eq!(s.seen("y.test", "n1").await.unwrap(), Some([0xab; 32]));

            let b = Backoff { failures: 2, blocked_until: 500 };
            s.set_backoff("y.test", b, 100).await.unwrap();
            assert_eq!(s.backoff("y.test").await.unwrap(), b);
            s.set_backoff("y.test", Backoff::default(), 100).await.unwrap();
            assert_eq!(s.backoff("y.test").await.unwrap(), Backoff::default());
        });
    }
}
