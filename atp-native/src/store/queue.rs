//! The outbound queue in the `messages` table (docs/design.md §3 "per-destination delivery"):
//!
//! ```text
//! queued ──claim──▶ delivering ──2xx──────────▶ delivered
//!   ▲                 │  │ └──4xx / max age──▶ bounced (+ a notice in the sender's inbox, same txn)
//!   │                 │  └──temporary────────▶ failed (next_attempt_at = backoff) ──claim──▶ …
//!   └──── release ────┘ (not attempted: its domain is backing off)
//! ```
//!
//! A claim sets a lease (`lease_until`); a row whose lease ran out (its owner died mid-attempt) is
//! claimable again, and at start-up every leased row of the database is released at once, since
//! one process owns a database ([`super::Store::open`] takes a lock). Every transition is one write
//! request through the group-commit writer, so settling a thousand deliveries costs one fsync.

use atp_wasm::delivery::Backoff;
use rusqlite::{params, Connection};

use super::writer::store_message;
use super::NewMessage;

/// A row taken for an attempt.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub id: i64,
    pub nonce: String,
    pub from_id: String,
    pub to_id: String,
    pub dest_domain: String,
    pub json: String,
    /// Attempts made before this one.
    pub attempts: u32,
    pub created_at: i64,
}

/// A queue transition.
#[derive(Debug)]
pub enum QueueOp {
    /// Leases up to `limit` due rows (oldest due first) whose domain is not in `blocked`.
    Claim { now: i64, lease_until: i64, limit: usize, blocked: Vec<String> },
    /// The receiver accepted it.
    Delivered { id: i64, now: i64 },
    /// A temporary failure: try again at `next_at`.
    Retry { id: i64, now: i64, next_at: i64, error: String },
    /// Not attempted (its domain is backing off): give the lease back, due at `next_at`.
    Release { id: i64, next_at: i64 },
    /// Permanent failure: mark it bounced and put `notice` in the sender's inbox, atomically.
    Bounce { id: i64, now: i64, error: String, notice: Box<NewMessage> },
    /// The domain answered again: its waiting rows are due now.
    Wake { domain: String, now: i64 },
    /// Start-up: rows leased by a previous run of this server are due now.
    Recover { now: i64 },
    /// Records a destination domain's backoff, `None` when it answered again (docs/design.md §5d:
    /// kept in the database, so it survives a restart and every node of a domain shares it).
    Backoff { domain: String, backoff: Option<Backoff> },
}

/// What a transition did.
#[derive(Debug)]
pub enum QueueResult {
    Claimed(Vec<Claimed>),
    /// Rows changed.
    Changed(usize),
}

/// Applies `op` in the writer's transaction.
pub fn apply(c: &Connection, op: QueueOp) -> rusqlite::Result<QueueResult> {
    let changed = match op {
        QueueOp::Claim { now, lease_until, limit, blocked } => {
            let blocked = serde_json::to_string(&blocked).unwrap_or_else(|_| "[]".into());
            let mut st = c.prepare_cached(
                "UPDATE messages SET status = 'delivering', lease_until = ?2, updated_at = ?1
                 WHERE id IN (
                   SELECT id FROM (
                     SELECT id, next_attempt_at AS due, dest_domain FROM messages
                      WHERE status IN ('queued', 'failed') AND next_attempt_at <= ?1
                     UNION ALL
                     SELECT id, lease_until AS due, dest_domain FROM messages
                      WHERE status = 'delivering' AND lease_until <= ?1)
                   WHERE coalesce(dest_domain, '') NOT IN (SELECT value FROM json_each(?4))
                   ORDER BY due, id LIMIT ?3)
                 RETURNING id, nonce, from_id, to_id, dest_domain, message_json, attempts, created_at",
            )?;
            let rows = st.query_map(params![now, lease_until, limit as i64, blocked], |r| {
                Ok(Claimed {
                    id: r.get(0)?,
                    nonce: r.get(1)?,
                    from_id: r.get(2)?,
                    to_id: r.get(3)?,
                    dest_domain: r.get::<_, Option<String>>(4)?.unwrap_or_default(),
                    json: r.get(5)?,
                    attempts: r.get::<_, i64>(6)?.clamp(0, u32::MAX as i64) as u32,
                    created_at: r.get(7)?,
                })
            })?;
            let mut claimed = rows.collect::<rusqlite::Result<Vec<_>>>()?;
            claimed.sort_by_key(|c| c.id);
            return Ok(QueueResult::Claimed(claimed));
        }
        QueueOp::Delivered { id, now } => c
            .prepare_cached(
                "UPDATE messages SET status = 'delivered', attempts = attempts + 1, lease_until = NULL,
                    next_attempt_at = NULL, last_error = NULL, updated_at = ?2
             WHERE id = ?1 AND status = 'delivering'",
            )?
            .execute(params![id, now])?,
        QueueOp::Retry { id, now, next_at, error } => c
            .prepare_cached(
                "UPDATE messages SET status = 'failed', attempts = attempts + 1, lease_until = NULL,
                    next_attempt_at = ?3, last_error = ?4, updated_at = ?2
             WHERE id = ?1 AND status = 'delivering'",
            )?
            .execute(params![id, now, next_at, error])?,
        QueueOp::Release { id, next_at } => c
            .prepare_cached(
                "UPDATE messages SET status = CASE WHEN attempts = 0 THEN 'queued' ELSE 'failed' END,
                    lease_until = NULL, next_attempt_at = ?2
             WHERE id = ?1 AND status = 'delivering'",
            )?
            .execute(params![id, next_at])?,
        QueueOp::Bounce { id, now, error, notice } => {
            let n = c
                .prepare_cached(
                    "UPDATE messages SET status = 'bounced', attempts = attempts + 1, lease_until = NULL,
                            next_attempt_at = NULL, last_error = ?3, updated_at = ?2
                     WHERE id = ?1 AND status = 'delivering'",
                )?
                .execute(params![id, now, error])?;
            if n == 1 {
                store_message(c, &notice)?;
            }
            n
        }
        QueueOp::Wake { domain, now } => c
            .prepare_cached(
                "UPDATE messages SET next_attempt_at = ?2
                 WHERE dest_domain = ?1 AND status IN ('queued', 'failed') AND next_attempt_at > ?2",
            )?
            .execute(params![domain, now])?,
        QueueOp::Recover { now } => c
            .prepare_cached(
                "UPDATE messages SET status = CASE WHEN attempts = 0 THEN 'queued' ELSE 'failed' END,
                        lease_until = NULL, next_attempt_at = ?1
                 WHERE status = 'delivering'",
            )?
            .execute(params![now])?,
        QueueOp::Backoff { domain, backoff: Some(b) } => c
            .prepare_cached(
                "INSERT INTO domain_backoff(domain, failures, blocked_until) VALUES (?1, ?2, ?3)
                 ON CONFLICT(domain) DO UPDATE SET failures = ?2, blocked_until = ?3",
            )?
            .execute(params![domain, b.failures, b.blocked_until])?,
        QueueOp::Backoff { domain, backoff: None } => {
            c.prepare_cached("DELETE FROM domain_backoff WHERE domain = ?1")?.execute(params![domain])?
        }
    };
    Ok(QueueResult::Changed(changed))
}

/// The backoff of every destination domain blocked at `now`.
pub fn backoffs(c: &Connection, now: i64) -> rusqlite::Result<Vec<(String, Backoff)>> {
    let mut st =
        c.prepare_cached("SELECT domain, failures, blocked_until FROM domain_backoff WHERE blocked_until > ?1")?;
    let rows = st.query_map([now], |r| {
        Ok((
            r.get(0)?,
            Backoff { failures: r.get::<_, i64>(1)?.clamp(0, u32::MAX as i64) as u32, blocked_until: r.get(2)? },
        ))
    })?;
    rows.collect()
}
