//! The outbound queue on PostgreSQL (docs/design.md §5d), the same states as SQLite's
//! ([`crate::store::queue`]) for any number of nodes:
//!
//! * a claim takes due rows with `FOR UPDATE SKIP LOCKED` (two nodes never take one row, and
//!   neither waits for the other) and stamps them with a lease and this run's owner token;
//! * settling a row (delivered, retry, release, bounce) changes it only while this run still owns
//!   its lease: a row whose lease ran out and was taken over by another node is that node's;
//! * a lease that ran out (its node died) makes the row claimable by any node; at start a node
//!   frees at once the leases of its own earlier runs (same node name, other run), never another
//!   node's;
//! * per-destination backoff lives in `domain_backoff`, shared by every node.

use atp_wasm::delivery::Backoff;

use super::inbox::store_in;
use super::{commit, PgError, PgStore};
use crate::store::queue::{Claimed, QueueOp};

impl PgStore {
    /// Leases up to `limit` due rows (oldest due first, expired leases included) whose domain is
    /// not in `blocked`, until `lease_until`, for this run.
    pub async fn claim(
        &self,
        now: i64,
        lease_until: i64,
        limit: usize,
        blocked: &[String],
    ) -> Result<Vec<Claimed>, PgError> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(
                "UPDATE messages m SET status = 'delivering', lease_until = $2, lease_owner = $5, updated_at = $1
                 FROM (SELECT id FROM messages
                        WHERE ((status IN ('queued', 'failed') AND next_attempt_at <= $1)
                               OR (status = 'delivering' AND lease_until <= $1))
                          AND dest_domain <> ALL($4)
                        ORDER BY CASE WHEN status = 'delivering' THEN lease_until ELSE next_attempt_at END, id
                        LIMIT $3
                        FOR UPDATE SKIP LOCKED) due
                 WHERE m.id = due.id
                 RETURNING m.id, m.nonce, m.from_id, m.to_id, m.dest_domain, m.message_json, m.attempts, m.created_at",
            )
            .await?;
        let rows = c.query(&st, &[&now, &lease_until, &(limit as i64), &blocked, &&*self.owner]).await?;
        let mut claimed: Vec<Claimed> = rows
            .iter()
            .map(|r| Claimed {
                id: r.get(0),
                nonce: r.get(1),
                from_id: r.get(2),
                to_id: r.get(3),
                dest_domain: r.get::<_, Option<String>>(4).unwrap_or_default(),
                json: r.get(5),
                attempts: r.get::<_, i64>(6).clamp(0, u32::MAX as i64) as u32,
                created_at: r.get(7),
            })
            .collect();
        claimed.sort_by_key(|c| c.id);
        Ok(claimed)
    }

    /// Applies a transition of the queue; returns the rows it changed. A claim goes through
    /// [`PgStore::claim`].
    pub async fn queue(&self, op: QueueOp) -> Result<usize, PgError> {
        let owner: &str = &self.owner;
        let mut c = self.client().await?;
        let n = match op {
            QueueOp::Claim { now, lease_until, limit, blocked } => {
                drop(c);
                return Ok(self.claim(now, lease_until, limit, &blocked).await?.len());
            }
            QueueOp::Delivered { id, now } => {
                let st = c
                    .prepare_cached(
                        "UPDATE messages SET status = 'delivered', attempts = attempts + 1, lease_until = NULL,
                            lease_owner = NULL, next_attempt_at = NULL, last_error = NULL, updated_at = $2
                         WHERE id = $1 AND status = 'delivering' AND lease_owner = $3",
                    )
                    .await?;
                c.execute(&st, &[&id, &now, &owner]).await?
            }
            QueueOp::Retry { id, now, next_at, error } => {
                let st = c
                    .prepare_cached(
                        "UPDATE messages SET status = 'failed', attempts = attempts + 1, lease_until = NULL,
                            lease_owner = NULL, next_attempt_at = $3, last_error = $4, updated_at = $2
                         WHERE id = $1 AND status = 'delivering' AND lease_owner = $5",
                    )
                    .await?;
                c.execute(&st, &[&id, &now, &next_at, &error, &owner]).await?
            }
            QueueOp::Release { id, next_at } => {
                let st = c
                    .prepare_cached(
                        "UPDATE messages SET status = CASE WHEN attempts = 0 THEN 'queued' ELSE 'failed' END,
                            lease_until = NULL, lease_owner = NULL, next_attempt_at = $2
                         WHERE id = $1 AND status = 'delivering' AND lease_owner = $3",
                    )
                    .await?;
                c.execute(&st, &[&id, &next_at, &owner]).await?
            }
            QueueOp::Bounce { id, now, error, notice } => {
                let tx = c.transaction().await?;
                let st = tx
                    .prepare_cached(
                        "UPDATE messages SET status = 'bounced', attempts = attempts + 1, lease_until = NULL,
                            lease_owner = NULL, next_attempt_at = NULL, last_error = $3, updated_at = $2
                         WHERE id = $1 AND status = 'delivering' AND lease_owner = $4",
                    )
                    .await?;
                let n = tx.execute(&st, &[&id, &now, &error, &owner]).await?;
                if n == 1 {
                    store_in(&tx, &notice).await?;
                }
                commit(tx).await?;
                if n == 1 {
                    self.announce(&notice);
                }
                n
            }
            QueueOp::Wake { domain, now } => {
                let st = c
                    .prepare_cached(
                        "UPDATE messages SET next_attempt_at = $2
                         WHERE dest_domain = $1 AND status IN ('queued', 'failed') AND next_attempt_at > $2",
                    )
                    .await?;
                c.execute(&st, &[&domain, &now]).await?
            }
            QueueOp::Backoff { domain, backoff } => {
                drop(c);
                self.set_backoff(&domain, backoff).await?;
                return Ok(1);
            }
            QueueOp::Recover { now } => {
                // This node's earlier runs only: other nodes' leases are alive (or expire).
                let st = c
                    .prepare_cached(
                        "UPDATE messages SET status = CASE WHEN attempts = 0 THEN 'queued' ELSE 'failed' END,
                            lease_until = NULL, lease_owner = NULL, next_attempt_at = $1
                         WHERE status = 'delivering' AND starts_with(lease_owner, $2) AND lease_owner <> $3",
                    )
                    .await?;
                let prefix = format!("{}/", self.node);
                c.execute(&st, &[&now, &prefix, &owner]).await?
            }
        };
        Ok(n as usize)
    }

    /// The earliest due time among waiting rows of domains not in `blocked`, and among leases.
    pub async fn next_due(&self, blocked: &[String]) -> Result<Option<i64>, PgError> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(
                "SELECT LEAST(
                   (SELECT min(next_attempt_at) FROM messages WHERE status IN ('queued', 'failed')
                      AND dest_domain <> ALL($1)),
                   (SELECT min(lease_until) FROM messages WHERE status = 'delivering'))",
            )
            .await?;
        Ok(c.query_one(&st, &[&blocked]).await?.get(0))
    }

    /// The backoff of every destination domain blocked at `now`, as every node sees it.
    pub async fn backoffs(&self, now: i64) -> Result<Vec<(String, Backoff)>, PgError> {
        let c = self.client().await?;
        let st = c
            .prepare_cached("SELECT domain, failures, blocked_until FROM domain_backoff WHERE blocked_until > $1")
            .await?;
        Ok(c.query(&st, &[&now])
            .await?
            .iter()
            .map(|r| {
                let failures = r.get::<_, i64>(1).clamp(0, u32::MAX as i64) as u32;
                (r.get(0), Backoff { failures, blocked_until: r.get(2) })
            })
            .collect())
    }

    /// Records a domain's backoff (`None`: it answered, forget it).
    pub async fn set_backoff(&self, domain: &str, backoff: Option<Backoff>) -> Result<(), PgError> {
        let c = self.client().await?;
        match backoff {
            Some(b) => {
                let st = c
                    .prepare_cached(
                        "INSERT INTO domain_backoff(domain, failures, blocked_until) VALUES ($1, $2, $3)
                         ON CONFLICT (domain) DO UPDATE SET failures = $2, blocked_until = $3",
                    )
                    .await?;
                c.execute(&st, &[&domain, &(b.failures as i64), &b.blocked_until]).await?;
            }
            None => {
                let st = c.prepare_cached("DELETE FROM domain_backoff WHERE domain = $1").await?;
                c.execute(&st, &[&domain]).await?;
            }
        }
        Ok(())
    }
}
