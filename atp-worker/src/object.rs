//! The domain's Durable Object as storage (docs/design.md §4 "State"): one SQLite database per
//! domain holding agents, inboxes, dedup records, the outbound queue, per-domain backoff and the
//! global counters — the relay's SQLite schema ([`atp_wasm::sqlite_schema`], atp-native's tables),
//! so the guarantees of docs/design.md §1.5 come from SQLite transactions as they do natively.
//!
//! The worker sends the object one [`Call`] per storage operation (JSON over the object's
//! `fetch`, `crate::cf`); the object runs it with [`Domain::call`] inside one transaction and
//! answers a [`Reply`]. Nothing here decides protocol behaviour: the relay ([`atp_wasm::relay`])
//! and the delivery state machine ([`atp_wasm::delivery`]) decide, this module stores.
//!
//! * **Atomic:** a registration is one `INSERT OR IGNORE` (of concurrent registrations of one id
//!   exactly one inserts); a message, its dedup row and its inbox usage are one transaction, which
//!   also decides between new, exact repeat and replay; a queue claim marks the rows it returns
//!   `delivering` under a lease in the same transaction, so two sweeps never claim one row.
//! * **Ordered:** inbox ids are `AUTOINCREMENT` row ids — strictly increasing in commit order, so a
//!   `recv` cursor never passes a message committed later.
//! * **Bounded:** an inbox page reads at most `limit` rows and at most `max_bytes` of JSON (sizes
//!   first, then only the rows that fit); a claim at most `max` rows; a prune at most
//!   [`PRUNE_BATCH`] dedup rows.

use std::cell::RefCell;
use std::collections::BTreeMap;

use atp_wasm::delivery::Backoff;
use atp_wasm::env::StoreError;
use atp_wasm::relay::store::{MessageInfo, Usage};
use serde::{Deserialize, Serialize};

use crate::sql::{Sql, Value};

/// Every schema step, in order (the number applied is kept in `atp_schema`): the relay's SQLite
/// schema, atp-native's tables ([`atp_wasm::sqlite_schema::MIGRATIONS`]; its fifth step, the
/// counters, was the object's own before, with the same table).
fn migrations() -> impl Iterator<Item = &'static str> {
    atp_wasm::sqlite_schema::MIGRATIONS.into_iter()
}

/// The statements of a schema step: `--` comments dropped, split at `;`.
fn statements(step: &str) -> Vec<String> {
    let text: String =
        step.lines().map(|l| l.split_once("--").map_or(l, |(code, _)| code)).collect::<Vec<_>>().join("\n");
    text.split(';').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

/// Most dedup rows one [`Call::Prune`] removes.
pub const PRUNE_BATCH: i64 = 1000;
/// Most ids one [`Ack::Ids`] may name.
pub const MAX_ACK_IDS: usize = 1000;

/// A message to store (the core's `NewMessage`, with the hash in hex and the queue's lease).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewRow {
    pub nonce: String,
    pub sender_domain: String,
    pub from_id: String,
    pub to_id: String,
    pub json: String,
    /// A local inbox's, or for another domain (stored `delivering` until `lease_until`, for the
    /// attempt right after the 202).
    pub kind: Kind,
    pub content_hash: String,
    pub now: i64,
    pub lease_until: i64,
}

/// Where a stored message goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    /// Into a local agent's inbox (`delivered`).
    Inbox,
    /// Into the outbound queue.
    Outbound,
}

/// What storing a message did (the dedup row decides, in the storing transaction).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Stored under this row id.
    New(i64),
    /// An exact repeat of a message stored before: nothing written.
    Duplicate,
    /// The nonce is taken by other content: nothing written.
    Replay,
}

/// Which of an agent's inbox messages an acknowledgement removes (issue 18's `Ack`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Ack {
    UpTo(i64),
    Ids(Vec<i64>),
}

/// A queued message claimed for an attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outbound {
    pub id: i64,
    pub nonce: String,
    pub from: String,
    pub to: String,
    pub domain: String,
    /// When it was accepted: the retry policy's age counts from here.
    pub created_at: i64,
    /// Attempts made so far.
    pub attempts: u32,
    /// The message as accepted (unsigned JSON); signed at each attempt.
    pub json: String,
}

/// How an attempt settled a claimed message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Settle {
    Delivered,
    /// Failed temporarily: due again at `next_at`.
    Retry {
        next_at: i64,
        error: String,
    },
    /// Not attempted (its domain backs off, or the invocation's budget is spent): due at `next_at`,
    /// attempts unchanged.
    Release {
        next_at: i64,
    },
    /// Given up: `notice` goes into the sender's inbox in the same transaction.
    Bounced {
        error: String,
        notice: Box<NewRow>,
    },
}

/// One storage operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Call {
    AgentHash {
        id: String,
    },
    InsertAgent {
        id: String,
        hash: String,
        now: i64,
    },
    AgentIds,
    Seen {
        sender_domain: String,
        nonce: String,
    },
    Store(NewRow),
    Inbox {
        agent: String,
        after_id: i64,
        limit: i64,
        max_bytes: i64,
    },
    Usage {
        agent: String,
    },
    MessageInfo {
        nonce: String,
    },
    QueueCounts {
        now: i64,
    },
    Ack {
        agent: String,
        ack: Ack,
    },
    Expire {
        before: i64,
    },
    /// Claims due queued messages (of `domain` only, if given), oldest due first.
    Claim {
        now: i64,
        max: i64,
        lease_until: i64,
        domain: Option<String>,
    },
    Settle {
        id: i64,
        attempts: u32,
        now: i64,
        settle: Settle,
    },
    /// Makes `domain`'s waiting messages due at `now` (it answered again).
    Wake {
        domain: String,
        now: i64,
    },
    Backoff {
        domain: String,
    },
    SetBackoff {
        domain: String,
        backoff: Backoff,
    },
    /// Removes dedup rows accepted before `before` (at most [`PRUNE_BATCH`]).
    Prune {
        before: i64,
    },
    AddCounters {
        now: i64,
        deltas: Vec<(String, u64)>,
    },
    Counters,
}

/// The answer to a [`Call`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Reply {
    Done,
    Text(Option<String>),
    Bool(bool),
    Ids(Vec<String>),
    Stored(Outcome),
    Rows(Vec<(i64, String)>),
    Usage { messages: u64, bytes: u64 },
    Info(Option<MessageInfo>),
    Counts(BTreeMap<String, i64>),
    Count(u64),
    Claimed(Vec<Outbound>),
    Backoff(Backoff),
    Counters(Vec<(String, u64)>),
}

/// The domain's storage over SQL.
pub struct Domain<S> {
    pub sql: S,
    /// Agents that got an inbox row in the call running now: woken once it has committed
    /// ([`Domain::take_delivered`], [`crate::waiters`]).
    delivered: RefCell<Vec<String>>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl<S: Sql> Domain<S> {
    /// The object over `sql`, its schema brought up to date.
    pub fn open(sql: S) -> Result<Self, StoreError> {
        let d = Domain { sql, delivered: RefCell::default() };
        d.migrate()?;
        Ok(d)
    }

    fn exec(&self, q: &str, params: &[Value]) -> Result<Vec<Vec<Value>>, StoreError> {
        self.sql.exec(q, params)
    }

    fn migrate(&self) -> Result<(), StoreError> {
        self.exec("CREATE TABLE IF NOT EXISTS atp_schema(version INTEGER NOT NULL)", &[])?;
        let rows = self.exec("SELECT version FROM atp_schema", &[])?;
        let version = rows.first().map_or(0, |r| r[0].int()) as usize;
        let steps = migrations().count();
        for step in migrations().skip(version) {
            for stmt in statements(step) {
                self.exec(&stmt, &[])?;
            }
        }
        if version == 0 {
            self.exec("INSERT INTO atp_schema(version) VALUES (?)", &[(steps as i64).into()])?;
        } else if version < steps {
            self.exec("UPDATE atp_schema SET version = ?", &[(steps as i64).into()])?;
        }
        Ok(())
    }

    /// The agents that got inbox rows since the last take, each once: after a call committed,
    /// their waiters are woken; after a call failed (rolled back), the list is dropped.
    pub fn take_delivered(&self) -> Vec<String> {
        self.delivered.take()
    }

    /// Whether `agent`'s inbox has a row after `after_id` (`/watch`: answer at once).
    pub fn has_after(&self, agent: &str, after_id: i64) -> Result<bool, StoreError> {
        let rows = self.exec(
            "SELECT 1 FROM messages WHERE to_id = ? AND status = 'delivered' AND dest_domain IS NULL AND id > ? LIMIT 1",
            &[agent.into(), after_id.into()],
        )?;
        Ok(!rows.is_empty())
    }

    /// Runs one call. The caller runs it inside one transaction (see [`crate::sql::Sql`]), then
    /// takes [`Domain::take_delivered`].
    pub fn call(&self, call: Call) -> Result<Reply, StoreError> {
        Ok(match call {
            Call::AgentHash { id } => {
                let rows = self.exec("SELECT password_hash FROM agents WHERE agent_id = ?", &[id.into()])?;
                Reply::Text(rows.first().map(|r| r[0].text()))
            }
            Call::InsertAgent { id, hash, now } => {
                let rows = self.exec(
                    "INSERT OR IGNORE INTO agents(agent_id, password_hash, created_at) VALUES (?, ?, ?) RETURNING agent_id",
                    &[id.into(), hash.into(), now.into()],
                )?;
                Reply::Bool(!rows.is_empty())
            }
            Call::AgentIds => {
                let rows = self.exec("SELECT agent_id FROM agents ORDER BY created_at, rowid", &[])?;
                Reply::Ids(rows.iter().map(|r| r[0].text()).collect())
            }
            Call::Seen { sender_domain, nonce } => Reply::Text(self.seen(&sender_domain, &nonce)?),
            Call::Store(row) => self.store(&row)?,
            Call::Inbox { agent, after_id, limit, max_bytes } => {
                Reply::Rows(self.inbox(&agent, after_id, limit, max_bytes)?)
            }
            Call::Usage { agent } => {
                let u = self.usage(&agent)?;
                Reply::Usage { messages: u.messages, bytes: u.bytes }
            }
            Call::MessageInfo { nonce } => Reply::Info(self.message_info(&nonce)?),
            Call::QueueCounts { now } => Reply::Counts(self.queue_counts(now)?),
            Call::Ack { agent, ack } => Reply::Count(self.ack(&agent, &ack)?),
            Call::Expire { before } => Reply::Count(self.expire(before)?),
            Call::Claim { now, max, lease_until, domain } => {
                Reply::Claimed(self.claim(now, max, lease_until, domain.as_deref())?)
            }
            Call::Settle { id, attempts, now, settle } => {
                self.settle(id, attempts, now, settle)?;
                Reply::Done
            }
            Call::Wake { domain, now } => {
                let rows = self.exec(
                    "UPDATE messages SET next_attempt_at = ?1 WHERE dest_domain = ?2 AND status IN ('queued', 'failed')
                     AND next_attempt_at > ?1 RETURNING id",
                    &[now.into(), domain.into()],
                )?;
                Reply::Count(rows.len() as u64)
            }
            Call::Backoff { domain } => {
                let rows =
                    self.exec("SELECT failures, blocked_until FROM domain_backoff WHERE domain = ?", &[domain.into()])?;
                Reply::Backoff(rows.first().map_or_else(Backoff::default, |r| Backoff {
                    failures: r[0].int().clamp(0, i64::from(u32::MAX)) as u32,
                    blocked_until: r[1].int(),
                }))
            }
            Call::SetBackoff { domain, backoff } => {
                if backoff.failures == 0 {
                    self.exec("DELETE FROM domain_backoff WHERE domain = ?", &[domain.into()])?;
                } else {
                    self.exec(
                        "INSERT INTO domain_backoff(domain, failures, blocked_until) VALUES (?, ?, ?)
                         ON CONFLICT(domain) DO UPDATE SET failures = excluded.failures, blocked_until = excluded.blocked_until",
                        &[domain.into(), i64::from(backoff.failures).into(), backoff.blocked_until.into()],
                    )?;
                }
                Reply::Done
            }
            Call::Prune { before } => {
                let rows = self.exec(
                    "DELETE FROM dedup WHERE (sender_domain, nonce) IN
                     (SELECT sender_domain, nonce FROM dedup WHERE accepted_at < ? LIMIT ?) RETURNING nonce",
                    &[before.into(), PRUNE_BATCH.into()],
                )?;
                Reply::Count(rows.len() as u64)
            }
            Call::AddCounters { now, deltas } => {
                use atp_wasm::sqlite_schema::counters::{ADD, SET_ONCE};
                self.exec(SET_ONCE, &[atp_wasm::relay::counters::STARTED_AT.into(), now.into()])?;
                for (name, n) in deltas {
                    self.exec(ADD, &[name.into(), (n.min(i64::MAX as u64) as i64).into()])?;
                }
                Reply::Done
            }
            Call::Counters => {
                let rows = self.exec(atp_wasm::sqlite_schema::counters::ALL, &[])?;
                Reply::Counters(rows.iter().map(|r| (r[0].text(), r[1].int().max(0) as u64)).collect())
            }
        })
    }

    fn seen(&self, sender_domain: &str, nonce: &str) -> Result<Option<String>, StoreError> {
        let rows = self.exec(
            "SELECT content_hash FROM dedup WHERE sender_domain = ? AND nonce = ?",
            &[sender_domain.into(), nonce.into()],
        )?;
        Ok(rows.first().map(|r| hex(&r[0].blob())))
    }

    /// A message with its dedup row (and its inbox usage): new, or an exact repeat / a replay
    /// decided by the dedup row, all in the caller's transaction.
    fn store(&self, m: &NewRow) -> Result<Reply, StoreError> {
        match self.seen(&m.sender_domain, &m.nonce)? {
            Some(h) if h == m.content_hash => return Ok(Reply::Stored(Outcome::Duplicate)),
            Some(_) => return Ok(Reply::Stored(Outcome::Replay)),
            None => {}
        }
        let hash = unhex(&m.content_hash).ok_or_else(|| StoreError::new("content hash is not 32 bytes of hex"))?;
        let id = self.insert(m)?;
        self.exec(
            "INSERT INTO dedup(sender_domain, nonce, content_hash, accepted_at) VALUES (?, ?, ?, ?)",
            &[m.sender_domain.as_str().into(), m.nonce.as_str().into(), Value::Blob(hash), m.now.into()],
        )?;
        Ok(Reply::Stored(Outcome::New(id)))
    }

    /// Inserts a message row: an inbox row (`delivered`, its usage counted) or an outbound one.
    fn insert(&self, m: &NewRow) -> Result<i64, StoreError> {
        let delivered = m.kind == Kind::Inbox;
        let (status, dest, next, lease) = if delivered {
            ("delivered", None, None, None)
        } else {
            let dest = m.to_id.rsplit_once('@').map(|(_, d)| d.to_ascii_lowercase()).unwrap_or_default();
            ("delivering", Some(dest), Some(m.now), Some(m.lease_until))
        };
        let rows = self.exec(
            "INSERT INTO messages(nonce, sender_domain, from_id, to_id, message_json, status, created_at, updated_at,
                                  next_attempt_at, lease_until, dest_domain)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            &[
                m.nonce.as_str().into(),
                m.sender_domain.as_str().into(),
                m.from_id.as_str().into(),
                m.to_id.as_str().into(),
                m.json.as_str().into(),
                status.into(),
                m.now.into(),
                m.now.into(),
                next.into(),
                lease.into(),
                dest.into(),
            ],
        )?;
        let id = rows.first().map(|r| r[0].int()).ok_or_else(|| StoreError::new("insert returned no id"))?;
        if delivered {
            self.add_usage(&m.to_id, 1, m.json.len() as i64)?;
            let mut agents = self.delivered.borrow_mut();
            if !agents.contains(&m.to_id) {
                agents.push(m.to_id.clone());
            }
        }
        Ok(id)
    }

    fn add_usage(&self, agent: &str, messages: i64, bytes: i64) -> Result<(), StoreError> {
        self.exec(
            "INSERT INTO inbox_usage(agent_id, messages, bytes) VALUES (?1, MAX(?2, 0), MAX(?3, 0))
             ON CONFLICT(agent_id) DO UPDATE SET messages = MAX(messages + ?2, 0), bytes = MAX(bytes + ?3, 0)",
            &[agent.into(), messages.into(), bytes.into()],
        )?;
        Ok(())
    }

    /// At most `limit` inbox rows after `after_id` and at most `max_bytes` of them (the first
    /// always): the sizes are read first, then only the rows that fit.
    fn inbox(&self, agent: &str, after_id: i64, limit: i64, max_bytes: i64) -> Result<Vec<(i64, String)>, StoreError> {
        if limit <= 0 {
            return Ok(Vec::new());
        }
        let sizes = self.exec(
            "SELECT id, length(CAST(message_json AS BLOB)) FROM messages
             WHERE to_id = ? AND status = 'delivered' AND dest_domain IS NULL AND id > ? ORDER BY id LIMIT ?",
            &[agent.into(), after_id.into(), limit.into()],
        )?;
        let mut last = None;
        let mut total = 0i64;
        for r in &sizes {
            let (id, len) = (r[0].int(), r[1].int());
            if last.is_some() && total.saturating_add(len) > max_bytes {
                break;
            }
            total = total.saturating_add(len);
            last = Some(id);
        }
        let Some(last) = last else { return Ok(Vec::new()) };
        let rows = self.exec(
            "SELECT id, message_json FROM messages
             WHERE to_id = ? AND status = 'delivered' AND dest_domain IS NULL AND id > ? AND id <= ? ORDER BY id",
            &[agent.into(), after_id.into(), last.into()],
        )?;
        Ok(rows.into_iter().map(|r| (r[0].int(), r[1].text())).collect())
    }

    fn usage(&self, agent: &str) -> Result<Usage, StoreError> {
        let rows = self.exec("SELECT messages, bytes FROM inbox_usage WHERE agent_id = ?", &[agent.into()])?;
        Ok(rows.first().map_or_else(Usage::default, |r| Usage {
            messages: r[0].int().max(0) as u64,
            bytes: r[1].int().max(0) as u64,
        }))
    }

    fn message_info(&self, nonce: &str) -> Result<Option<MessageInfo>, StoreError> {
        let rows = self.exec(
            "SELECT nonce, from_id, to_id, status, created_at, updated_at, attempts, next_attempt_at, last_error
             FROM messages WHERE nonce = ? ORDER BY id DESC LIMIT 1",
            &[nonce.into()],
        )?;
        Ok(rows.first().map(|r| MessageInfo {
            nonce: r[0].text(),
            from: r[1].text(),
            to: r[2].text(),
            status: r[3].text(),
            created_at: r[4].int(),
            updated_at: r[5].int(),
            attempts: r[6].int(),
            next_attempt_at: r[7].opt_int(),
            error: r[8].opt_text(),
        }))
    }

    /// Rows per status, and `due`: outbound rows an attempt may claim now.
    fn queue_counts(&self, now: i64) -> Result<BTreeMap<String, i64>, StoreError> {
        let mut out: BTreeMap<String, i64> = self
            .exec("SELECT status, COUNT(*) FROM messages GROUP BY status", &[])?
            .iter()
            .map(|r| (r[0].text(), r[1].int()))
            .collect();
        let due = self.exec(&format!("SELECT COUNT(*) FROM messages WHERE {DUE}"), &[now.into()])?;
        out.insert("due".into(), due.first().map_or(0, |r| r[0].int()));
        Ok(out)
    }

    /// Removes the agent's inbox rows selected by `ack` — never another agent's — and frees their
    /// quota; returns how many were removed. Dedup rows stay (a repeat is still answered as one).
    pub fn ack(&self, agent: &str, ack: &Ack) -> Result<u64, StoreError> {
        const INBOX: &str = "DELETE FROM messages WHERE to_id = ? AND status = 'delivered' AND dest_domain IS NULL";
        let rows = match ack {
            Ack::UpTo(id) => self.exec(
                &format!("{INBOX} AND id <= ? RETURNING length(CAST(message_json AS BLOB))"),
                &[agent.into(), (*id).into()],
            )?,
            Ack::Ids(ids) => {
                if ids.len() > MAX_ACK_IDS {
                    return Err(StoreError::new(format!("at most {MAX_ACK_IDS} ids per acknowledgement")));
                }
                let mut rows = Vec::new();
                for chunk in ids.chunks(100) {
                    let marks = vec!["?"; chunk.len()].join(", ");
                    let mut params: Vec<Value> = vec![agent.into()];
                    params.extend(chunk.iter().map(|i| Value::Int(*i)));
                    rows.extend(self.exec(
                        &format!("{INBOX} AND id IN ({marks}) RETURNING length(CAST(message_json AS BLOB))"),
                        &params,
                    )?);
                }
                rows
            }
        };
        if !rows.is_empty() {
            let bytes: i64 = rows.iter().map(|r| r[0].int()).sum();
            self.add_usage(agent, -(rows.len() as i64), -bytes)?;
        }
        Ok(rows.len() as u64)
    }

    /// Removes inbox rows stored before `before` (Unix seconds); returns how many.
    pub fn expire(&self, before: i64) -> Result<u64, StoreError> {
        let rows = self.exec(
            "DELETE FROM messages WHERE status = 'delivered' AND dest_domain IS NULL AND created_at < ?
             RETURNING to_id, length(CAST(message_json AS BLOB))",
            &[before.into()],
        )?;
        let mut per_agent: BTreeMap<String, (i64, i64)> = BTreeMap::new();
        for r in &rows {
            let e = per_agent.entry(r[0].text()).or_default();
            e.0 += 1;
            e.1 += r[1].int();
        }
        for (agent, (n, bytes)) in per_agent {
            self.add_usage(&agent, -n, -bytes)?;
        }
        Ok(rows.len() as u64)
    }

    /// Due outbound rows (of `domain` only, if given), oldest due first, at most `max`, each
    /// marked `delivering` until `lease_until` before this returns.
    fn claim(&self, now: i64, max: i64, lease_until: i64, domain: Option<&str>) -> Result<Vec<Outbound>, StoreError> {
        let rows = self.exec(
            &format!(
                "SELECT id, nonce, from_id, to_id, dest_domain, created_at, attempts, message_json FROM messages
                 WHERE ({DUE}) AND (?2 IS NULL OR dest_domain = ?2)
                 ORDER BY COALESCE(next_attempt_at, lease_until), id LIMIT ?3"
            ),
            &[now.into(), domain.into(), max.max(0).into()],
        )?;
        let out: Vec<Outbound> = rows
            .iter()
            .map(|r| Outbound {
                id: r[0].int(),
                nonce: r[1].text(),
                from: r[2].text(),
                to: r[3].text(),
                domain: r[4].text(),
                created_at: r[5].int(),
                attempts: r[6].int().clamp(0, i64::from(u32::MAX)) as u32,
                json: r[7].text(),
            })
            .collect();
        for o in &out {
            self.exec(
                "UPDATE messages SET status = 'delivering', lease_until = ? WHERE id = ?",
                &[lease_until.into(), o.id.into()],
            )?;
        }
        Ok(out)
    }

    fn settle(&self, id: i64, attempts: u32, now: i64, settle: Settle) -> Result<(), StoreError> {
        let attempts = i64::from(attempts);
        match settle {
            Settle::Delivered => self.exec(
                "UPDATE messages SET status = 'delivered', attempts = ?, updated_at = ?, next_attempt_at = NULL,
                 lease_until = NULL, last_error = NULL WHERE id = ?",
                &[attempts.into(), now.into(), id.into()],
            )?,
            Settle::Retry { next_at, error } => self.exec(
                "UPDATE messages SET status = 'failed', attempts = ?, updated_at = ?, next_attempt_at = ?,
                 lease_until = NULL, last_error = ? WHERE id = ?",
                &[attempts.into(), now.into(), next_at.into(), error.into(), id.into()],
            )?,
            Settle::Release { next_at } => self.exec(
                "UPDATE messages SET status = CASE WHEN attempts = 0 THEN 'queued' ELSE 'failed' END,
                 next_attempt_at = ?, lease_until = NULL WHERE id = ?",
                &[next_at.into(), id.into()],
            )?,
            Settle::Bounced { error, notice } => {
                self.insert(&notice)?;
                self.exec(
                    "UPDATE messages SET status = 'bounced', attempts = ?, updated_at = ?, next_attempt_at = NULL,
                     lease_until = NULL, last_error = ? WHERE id = ?",
                    &[attempts.into(), now.into(), error.into(), id.into()],
                )?
            }
        };
        Ok(())
    }
}

/// Outbound rows an attempt may claim at `?1`: waiting and due, or leased and the lease over.
const DUE: &str =
    "(status IN ('queued', 'failed') AND next_attempt_at <= ?1) OR (status = 'delivering' AND lease_until <= ?1)";

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() != 64 {
        return None;
    }
    (0..32).map(|i| u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()).collect()
}

/// The hex form of a content hash, as [`NewRow::content_hash`] and [`Call::Seen`] carry it.
pub fn hash_hex(hash: &[u8; 32]) -> String {
    hex(hash)
}

/// A content hash back from hex.
pub fn hash_from_hex(s: &str) -> Option<[u8; 32]> {
    unhex(s)?.try_into().ok()
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;
    use crate::sql::Sqlite;

    struct Db {
        d: Domain<Sqlite>,
        _dir: tempfile::TempDir,
    }

    fn db() -> Db {
        let dir = tempfile::tempdir().unwrap();
        let d = Domain::open(Sqlite::open(&dir.path().join("o.sqlite")).unwrap()).unwrap();
        Db { d, _dir: dir }
    }

    impl Db {
        fn call(&self, c: Call) -> Reply {
            self.d.sql.transaction(|| self.d.call(c)).unwrap()
        }
    }

    fn row(nonce: &str, to: &str, json: &str, hash: u8) -> NewRow {
        NewRow {
            nonce: nonce.into(),
            sender_domain: "x.test".into(),
            from_id: "amy@x.test".into(),
            to_id: to.into(),
            json: json.into(),
            kind: if to.ends_with("@r.test") { Kind::Inbox } else { Kind::Outbound },
            content_hash: hash_hex(&[hash; 32]),
            now: 1000,
            lease_until: 1120,
        }
    }

    fn stored(r: Reply) -> Outcome {
        match r {
            Reply::Stored(o) => o,
            r => panic!("{r:?}"),
        }
    }

    fn new_id(r: Reply) -> i64 {
        match stored(r) {
            Outcome::New(id) => id,
            o => panic!("{o:?}"),
        }
    }

    fn page(db: &Db, agent: &str, after: i64, limit: i64, bytes: i64) -> Vec<i64> {
        match db.call(Call::Inbox { agent: agent.into(), after_id: after, limit, max_bytes: bytes }) {
            Reply::Rows(r) => r.into_iter().map(|(id, _)| id).collect(),
            r => panic!("{r:?}"),
        }
    }

    fn usage(db: &Db, agent: &str) -> (u64, u64) {
        match db.call(Call::Usage { agent: agent.into() }) {
            Reply::Usage { messages, bytes } => (messages, bytes),
            r => panic!("{r:?}"),
        }
    }

    #[test]
    fn schema_applies_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("o.sqlite");
        drop(Domain::open(Sqlite::open(&path).unwrap()).unwrap());
        let d = Domain::open(Sqlite::open(&path).unwrap()).unwrap();
        let v = d.sql.exec("SELECT version FROM atp_schema", &[]).unwrap();
        assert_eq!(v, vec![vec![Value::Int(migrations().count() as i64)]]);
    }

    /// An object made before the counters table was the relay's schema step (the object's own
    /// fifth step, the same table) opens as it is, its counters kept; one at the step before gets
    /// the table.
    #[test]
    fn objects_with_the_old_counters_step_open() {
        const OLD_OBJECT_STEP: &str =
            "CREATE TABLE counters(name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID";
        let dir = tempfile::tempdir().unwrap();
        for (name, old_steps) in [("v5.sqlite", 5i64), ("v4.sqlite", 4)] {
            let path = dir.path().join(name);
            let sql = Sqlite::open(&path).unwrap();
            for step in atp_wasm::sqlite_schema::MIGRATIONS.iter().take(4) {
                for stmt in statements(step) {
                    sql.exec(&stmt, &[]).unwrap();
                }
            }
            if old_steps == 5 {
                sql.exec(OLD_OBJECT_STEP, &[]).unwrap();
                sql.exec("INSERT INTO counters(name, value) VALUES ('received', 4), ('started_at', 3)", &[]).unwrap();
            }
            sql.exec("CREATE TABLE atp_schema(version INTEGER NOT NULL)", &[]).unwrap();
            sql.exec("INSERT INTO atp_schema(version) VALUES (?)", &[old_steps.into()]).unwrap();
            drop(sql);
            let d = Domain::open(Sqlite::open(&path).unwrap()).unwrap();
            let v = d.sql.exec("SELECT version FROM atp_schema", &[]).unwrap();
            assert_eq!(v, vec![vec![Value::Int(5)]], "{name}");
            d.call(Call::AddCounters { now: 9, deltas: vec![("received".into(), 1)] }).unwrap();
            let want = if old_steps == 5 {
                [("received", 5), ("started_at", 3)]
            } else {
                [("received", 1), ("started_at", 9)]
            };
            let want = want.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect();
            assert_eq!(d.call(Call::Counters).unwrap(), Reply::Counters(want), "{name}");
        }
    }

    #[test]
    fn registration_inserts_once() {
        let db = db();
        let ins = |h: &str| db.call(Call::InsertAgent { id: "bo@r.test".into(), hash: h.into(), now: 5 });
        assert_eq!(ins("h1"), Reply::Bool(true));
        assert_eq!(ins("h2"), Reply::Bool(false));
        assert_eq!(db.call(Call::AgentHash { id: "bo@r.test".into() }), Reply::Text(Some("h1".into())));
        db.call(Call::InsertAgent { id: "al@r.test".into(), hash: "h".into(), now: 6 });
        assert_eq!(db.call(Call::AgentIds), Reply::Ids(vec!["bo@r.test".into(), "al@r.test".into()]));
    }

    #[test]
    fn a_message_its_dedup_row_and_usage_are_stored_together() {
        let db = db();
        let id1 = new_id(db.call(Call::Store(row("n1", "bo@r.test", "{\"a\":1}", 1))));
        assert_eq!(stored(db.call(Call::Store(row("n1", "bo@r.test", "{\"a\":1}", 1)))), Outcome::Duplicate);
        assert_eq!(stored(db.call(Call::Store(row("n1", "bo@r.test", "{\"a\":2}", 2)))), Outcome::Replay);
        assert_eq!(
            db.call(Call::Seen { sender_domain: "x.test".into(), nonce: "n1".into() }),
            Reply::Text(Some(hash_hex(&[1; 32])))
        );
        assert_eq!(db.call(Call::Seen { sender_domain: "y.test".into(), nonce: "n1".into() }), Reply::Text(None));
        assert_eq!(page(&db, "bo@r.test", 0, 50, 1 << 20), vec![id1], "stored once");
        assert_eq!(usage(&db, "bo@r.test"), (1, 7));
        // A call that fails after its first write leaves nothing behind.
        let failed = db.d.sql.transaction(|| {
            db.d.call(Call::Store(row("n2", "bo@r.test", "{}", 3)))?;
            Err::<(), _>(StoreError::new("fails after the writes"))
        });
        assert!(failed.is_err());
        assert_eq!(db.call(Call::Seen { sender_domain: "x.test".into(), nonce: "n2".into() }), Reply::Text(None));
        assert_eq!(page(&db, "bo@r.test", 0, 50, 1 << 20).len(), 1, "rolled back");
        assert_eq!(usage(&db, "bo@r.test"), (1, 7));
    }

    #[test]
    fn inbox_pages_are_exact_in_rows_and_bytes() {
        let db = db();
        let mut ids = Vec::new();
        for i in 0..6 {
            ids.push(new_id(db.call(Call::Store(row(&format!("n{i}"), "bo@r.test", &"x".repeat(100), i)))));
            db.call(Call::Store(row(&format!("c{i}"), "cy@r.test", "{}", 100 + i)));
        }
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "strictly increasing");
        assert_eq!(page(&db, "bo@r.test", 0, 50, 1 << 20), ids);
        assert_eq!(page(&db, "bo@r.test", 0, 4, 1 << 20), ids[..4]);
        assert_eq!(page(&db, "bo@r.test", ids[1], 50, 250), ids[2..4], "250 bytes hold two rows of 100");
        assert_eq!(page(&db, "bo@r.test", 0, 50, 10), ids[..1], "the first row always");
        assert!(page(&db, "bo@r.test", ids[5], 50, 1 << 20).is_empty());
        assert!(page(&db, "bo@r.test", 0, 0, 1 << 20).is_empty());
        assert_eq!(usage(&db, "bo@r.test"), (6, 600));
    }

    #[test]
    fn ack_removes_only_the_agents_messages_and_frees_quota() {
        let db = db();
        let ids: Vec<i64> =
            (0..5).map(|i| new_id(db.call(Call::Store(row(&format!("n{i}"), "bo@r.test", "{}", i))))).collect();
        let cy = new_id(db.call(Call::Store(row("c", "cy@r.test", "{}", 9))));
        let ack = |agent: &str, a: Ack| db.call(Call::Ack { agent: agent.into(), ack: a });
        assert_eq!(ack("bo@r.test", Ack::UpTo(ids[1])), Reply::Count(2));
        assert_eq!(ack("bo@r.test", Ack::Ids(vec![ids[3], cy, 999])), Reply::Count(1), "never another agent's");
        assert_eq!(page(&db, "bo@r.test", 0, 50, 1 << 20), vec![ids[2], ids[4]]);
        assert_eq!(page(&db, "cy@r.test", 0, 50, 1 << 20), vec![cy]);
        assert_eq!(usage(&db, "bo@r.test"), (2, 4));
        assert_eq!(ack("bo@r.test", Ack::UpTo(ids[1])), Reply::Count(0), "acknowledged once");
        assert_eq!(
            stored(db.call(Call::Store(row("n0", "bo@r.test", "{}", 0)))),
            Outcome::Duplicate,
            "dedup rows stay"
        );
        assert!(db.d.call(Call::Ack { agent: "bo@r.test".into(), ack: Ack::Ids(vec![1; MAX_ACK_IDS + 1]) }).is_err());
    }

    #[test]
    fn expire_removes_old_inbox_messages_only() {
        let db = db();
        let mut old = row("old", "bo@r.test", "{}", 1);
        old.now = 10;
        db.call(Call::Store(old));
        let mut out = row("out", "zed@y.test", "{}", 2);
        out.now = 10;
        db.call(Call::Store(out));
        db.call(Call::Store(row("new", "bo@r.test", "{}", 3)));
        assert_eq!(db.call(Call::Expire { before: 500 }), Reply::Count(1));
        assert_eq!(page(&db, "bo@r.test", 0, 50, 1 << 20).len(), 1);
        assert_eq!(usage(&db, "bo@r.test"), (1, 2));
        assert!(
            matches!(db.call(Call::MessageInfo { nonce: "out".into() }), Reply::Info(Some(_))),
            "the queue keeps its rows"
        );
    }

    /// `/watch` (crate::waiters): which agents a call delivered to, and whether an inbox has a row
    /// after an id — inbox rows only (a local message or a bounce notice), never outbound ones.
    #[test]
    fn calls_record_the_agents_they_delivered_to() {
        let db = db();
        assert!(!db.d.has_after("bo@r.test", 0).unwrap());
        let id = new_id(db.call(Call::Store(row("n1", "bo@r.test", "{}", 1))));
        db.call(Call::Store(row("n2", "bo@r.test", "{}", 2)));
        db.call(Call::Store(row("n3", "zed@y.test", "{}", 3)));
        assert_eq!(db.d.take_delivered(), ["bo@r.test"], "once, and not the outbound row's");
        assert!(db.d.take_delivered().is_empty(), "taken");
        assert!(db.d.has_after("bo@r.test", id).unwrap() && !db.d.has_after("bo@r.test", id + 1).unwrap());
        assert!(!db.d.has_after("zed@y.test", 0).unwrap(), "outbound rows are nobody's inbox");
        db.call(Call::Store(row("n1", "bo@r.test", "{}", 1)));
        assert!(db.d.take_delivered().is_empty(), "a repeat delivers nothing");
        let Reply::Claimed(out) = db.call(Call::Claim { now: 2000, max: 1, lease_until: 2100, domain: None }) else {
            panic!()
        };
        let notice = row("bounce", "amy@r.test", "{}", 4);
        db.call(Call::Settle {
            id: out[0].id,
            attempts: 1,
            now: 2000,
            settle: Settle::Bounced { error: "x".into(), notice: Box::new(notice) },
        });
        assert_eq!(db.d.take_delivered(), ["amy@r.test"], "a bounce notice wakes its sender");
    }

    #[test]
    fn claims_lease_rows_so_two_sweeps_never_share_one() {
        let db = db();
        for i in 0..3 {
            db.call(Call::Store(row(&format!("q{i}"), &format!("z{i}@y.test"), "{}", i)));
        }
        let claim = |now: i64, max: i64, domain: Option<&str>| match db.call(Call::Claim {
            now,
            max,
            lease_until: now + 120,
            domain: domain.map(Into::into),
        }) {
            Reply::Claimed(v) => v,
            r => panic!("{r:?}"),
        };
        assert!(claim(1000, 10, None).is_empty(), "leased for the attempt after the 202");
        let a = claim(1120, 2, None);
        let b = claim(1120, 10, None);
        assert_eq!((a.len(), b.len()), (2, 1));
        assert!(a.iter().all(|x| x.id != b[0].id));
        assert!(claim(1200, 10, None).is_empty(), "all leased");
        assert_eq!(a[0].domain, "y.test");
        let settle = |o: &Outbound, s: Settle| db.call(Call::Settle { id: o.id, attempts: 1, now: 1200, settle: s });
        settle(&a[0], Settle::Delivered);
        settle(&a[1], Settle::Retry { next_at: 5000, error: "451 4.4.1: down".into() });
        let notice = row("bounce-1", "amy@r.test", "{\"bounce\":1}", 0);
        settle(&b[0], Settle::Bounced { error: "550 5.1.1: no".into(), notice: Box::new(notice) });
        let info = |n: &str| match db.call(Call::MessageInfo { nonce: n.into() }) {
            Reply::Info(Some(i)) => i,
            r => panic!("{r:?}"),
        };
        assert_eq!(info(&a[0].nonce).status, "delivered");
        assert_eq!((info(&a[1].nonce).status.as_str(), info(&a[1].nonce).next_attempt_at), ("failed", Some(5000)));
        assert_eq!(info(&b[0].nonce).status, "bounced");
        assert_eq!(page(&db, "amy@r.test", 0, 50, 1 << 20).len(), 1, "the notice in the sender's inbox");
        // An expired lease makes a row claimable again; a wake makes a waiting one due now.
        assert!(claim(1300, 10, None).is_empty());
        assert_eq!(db.call(Call::Wake { domain: "other.test".into(), now: 1300 }), Reply::Count(0));
        assert_eq!(db.call(Call::Wake { domain: "y.test".into(), now: 1300 }), Reply::Count(1));
        assert_eq!(claim(1300, 10, Some("other.test")).len(), 0);
        assert_eq!(claim(1300, 10, Some("y.test")).len(), 1);
        assert_eq!(claim(1300 + 120, 10, None).len(), 1, "lease over: claimable again");
        let counts = match db.call(Call::QueueCounts { now: 1420 }) {
            Reply::Counts(c) => c,
            r => panic!("{r:?}"),
        };
        assert_eq!((counts["delivering"], counts["bounced"], counts["due"]), (1, 1, 0));
    }

    #[test]
    fn backoff_counters_and_pruning() {
        let db = db();
        let b = Backoff { failures: 2, blocked_until: 50 };
        db.call(Call::SetBackoff { domain: "y.test".into(), backoff: b });
        assert_eq!(db.call(Call::Backoff { domain: "y.test".into() }), Reply::Backoff(b));
        db.call(Call::SetBackoff { domain: "y.test".into(), backoff: Backoff::default() });
        assert_eq!(db.call(Call::Backoff { domain: "y.test".into() }), Reply::Backoff(Backoff::default()));

        db.call(Call::AddCounters { now: 7, deltas: vec![("received".into(), 2)] });
        db.call(Call::AddCounters { now: 9, deltas: vec![("received".into(), 3), ("bounced".into(), 1)] });
        let expect = vec![("bounced".into(), 1), ("received".into(), 5), ("started_at".into(), 7)];
        assert_eq!(db.call(Call::Counters), Reply::Counters(expect));

        for i in 0..3u8 {
            let mut r = row(&format!("n{i}"), "bo@r.test", "{}", i);
            r.now = i64::from(i) * 100;
            db.call(Call::Store(r));
        }
        assert_eq!(db.call(Call::Prune { before: 150 }), Reply::Count(2));
        assert_eq!(
            db.call(Call::Seen { sender_domain: "x.test".into(), nonce: "n2".into() }),
            Reply::Text(Some(hash_hex(&[2; 32])))
        );
    }
}
