//! Admin routes (bearer token, docs/protocol.md §6.1): `GET agents`, `stats`, `inspect`, and
//! Prometheus text at `metrics` (docs/design.md §6). `stats` and `metrics` show the whole domain's
//! counters: this process's are flushed into the store first ([`counters::domain_totals`]).

use serde_json::json;

use crate::env::{Clock, Resolver};
use crate::error::{ErrorCode, Rejection};
use crate::relay::counters;
use crate::relay::credentials::PasswordHasher;
use crate::relay::stats::Stats;
use crate::relay::store::{AgentStore, CounterStore, MessageStore};
use crate::relay::stream::InboxWatch;
use crate::relay::{Handled, Query, Relay};

impl<S: AgentStore + MessageStore + CounterStore, R: Resolver, H: PasswordHasher, C: Clock, W: InboxWatch>
    Relay<'_, S, R, H, C, W>
{
    /// `GET agents` → `{"agents":["a@d",…]}`, registered agents, oldest first.
    pub(super) async fn agents(&self) -> Result<Handled, Rejection> {
        Ok(Handled::json(200, &json!({"agents": self.store.agent_ids().await?})))
    }

    /// `GET stats`: the reference's body (docs/protocol.md §6.1), the home's own facts added.
    pub(super) async fn stats(&self) -> Result<Handled, Rejection> {
        let queue = self.store.queue_counts().await?;
        let agents = self.store.agent_ids().await?;
        let mut v = self.totals().await?.stats_json(self.clock.now(), &self.cfg.domain, &queue, agents);
        if let Some(m) = v.as_object_mut() {
            m.extend(self.store.extra_stats());
            // Open inbox streams and waiting long polls (docs/protocol.md §6.5).
            m.insert("streams".into(), json!({"open": self.state.streams.total()}));
        }
        Ok(Handled::json(200, &v))
    }

    /// `GET inspect?nonce=N` → the newest stored message with that nonce, in the reference's
    /// shape plus atp's names for the same facts (the delivery engine's view).
    pub(super) async fn inspect(&self, q: &Query) -> Result<Handled, Rejection> {
        let Some(nonce) = q.get("nonce").filter(|n| !n.is_empty()) else {
            return Err(Rejection::new(ErrorCode::BadRequest, "Missing 'nonce' parameter"));
        };
        let Some(m) = self.store.message_info(nonce).await? else {
            return Err(Rejection::new(ErrorCode::NotFound, format!("Message {nonce} not found")));
        };
        Ok(Handled::json(
            200,
            &json!({
                "nonce": m.nonce, "from": m.from, "to": m.to, "status": m.status, "created_at": m.created_at,
                "updated_at": m.updated_at, "retry_count": m.attempts, "next_retry_at": m.next_attempt_at,
                "error": m.error, "attempts": m.attempts, "next_attempt_at": m.next_attempt_at, "last_error": m.error,
            }),
        ))
    }

    /// The domain's counters (docs/design.md §4 "Counters"): this process's flushed, then the
    /// store's totals.
    async fn totals(&self) -> Result<Stats, Rejection> {
        let s = &self.state;
        Ok(counters::domain_totals(self.store, &s.stats, &s.flushed, self.clock.now()).await?)
    }

    /// `GET metrics`: Prometheus text exposition format.
    pub(super) async fn metrics(&self) -> Result<Handled, Rejection> {
        let queue = self.store.queue_counts().await?;
        let agents = self.store.agent_ids().await?.len();
        let text = self.totals().await?.prometheus(self.clock.now(), &queue, agents);
        Ok(Handled::body(200, "text/plain; version=0.0.4; charset=utf-8", text))
    }
}
