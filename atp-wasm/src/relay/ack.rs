//! The push and acknowledgement routes (docs/protocol.md §6.5): `GET messages/stream` (accepted
//! here; the home streams it with [`InboxStream`](super::stream::InboxStream)) and
//! `POST messages/ack`.

use std::sync::Arc;

use serde_json::json;

use crate::env::{Clock, Resolver};
use crate::error::{ErrorCode, Rejection};
use crate::identity::AgentId;
use crate::relay::credentials::PasswordHasher;
use crate::relay::store::{Ack, AgentStore, MessageStore};
use crate::relay::stream::{self, InboxWatch, StreamOpen};
use crate::relay::{api, ApiRequest, Handled, Relay};

/// Most ids in one `POST messages/ack`.
pub const MAX_ACK_IDS: usize = 1000;

impl<S: AgentStore + MessageStore, R: Resolver, H: PasswordHasher, C: Clock, W: InboxWatch> Relay<'_, S, R, H, C, W> {
    /// `GET messages/stream`: checks the cursor (`Last-Event-ID` or `after_id`, 400 when
    /// malformed, on every home) and takes one of the agent's stream places (429 `452 4.3.1` past
    /// [`crate::relay::stream::StreamLimits`]); the answer's head is 200 `text/event-stream`, its
    /// body the home's to stream ([`Handled::stream`]). A home that cannot wait answers 501
    /// `502 5.5.1`.
    pub(super) fn stream(&self, who: &AgentId, req: &ApiRequest) -> Result<Handled, Rejection> {
        let after_id = stream::cursor(req)?;
        if !self.inbox.available() {
            return Err(Rejection::new(ErrorCode::NotImplemented, "Inbox streams are not implemented on this server")
                .with("details", "poll GET messages with after_id instead"));
        }
        let agent = who.to_string();
        let slot = self.state.streams.take(&agent, self.cfg.streams)?;
        let mut h = Handled::body(200, stream::CONTENT_TYPE, Vec::new());
        h.headers.push(("cache-control".into(), "no-cache".into()));
        // Proxies such as nginx must pass each event on at once.
        h.headers.push(("x-accel-buffering".into(), "no".into()));
        h.stream = Some(StreamOpen { agent, after_id, slot: Arc::new(slot) });
        Ok(h)
    }

    /// `POST messages/ack` `{"up_to_id": N}` or `{"ids": [...]}` → 200
    /// `{"status":"acknowledged","removed":n}`: removes those messages of the agent's inbox and
    /// frees their quota. Ids that are not messages in the agent's inbox (another agent's, never
    /// stored, or acknowledged already) are left alone and make the answer a 404 `550 5.1.0`
    /// that still says how many were removed. Anything else malformed is a 400 `500 5.5.2`.
    pub(super) async fn ack(&self, who: &AgentId, req: &ApiRequest) -> Result<Handled, Rejection> {
        let bad = |m: &str| Rejection::new(ErrorCode::BadRequest, m);
        let shape = |why: &str| {
            bad("Invalid JSON").with("details", format!("expected {{\"up_to_id\": N}} or {{\"ids\": [...]}}: {why}"))
        };
        // Read by hand, not through serde's derive: a smaller wasm for the homes (docs/design.md §4).
        let v: serde_json::Value = serde_json::from_slice(&req.body).map_err(|_| shape("not JSON"))?;
        let obj = v.as_object().ok_or_else(|| shape("not an object"))?;
        if let Some(k) = obj.keys().find(|k| *k != "up_to_id" && *k != "ids") {
            return Err(shape(&format!("unknown field {k:?}")));
        }
        let id = |x: &serde_json::Value| x.as_i64().ok_or_else(|| shape("ids are integers"));
        let up_to_id = obj.get("up_to_id").map(id).transpose()?;
        let ids = match obj.get("ids") {
            None => None,
            Some(a) => Some(
                a.as_array().ok_or_else(|| shape("ids is a list"))?.iter().map(id).collect::<Result<Vec<i64>, _>>()?,
            ),
        };
        let ack = match (up_to_id, ids) {
            (Some(n), None) if n >= 0 => Ack::UpTo(n),
            (None, Some(mut ids)) if !ids.is_empty() && ids.len() <= MAX_ACK_IDS && ids.iter().all(|i| *i > 0) => {
                ids.sort_unstable();
                ids.dedup();
                Ack::Ids(ids)
            }
            _ => {
                return Err(bad("Give exactly one of up_to_id or ids").with(
                    "details",
                    format!("up_to_id: a non-negative inbox id; ids: 1 to {MAX_ACK_IDS} positive inbox ids"),
                ))
            }
        };
        let removed = self.store.ack(&who.to_string(), &ack).await?;
        self.state.stats.acknowledged.add(removed);
        if let Ack::Ids(ids) = &ack {
            let missing = (ids.len() as u64).saturating_sub(removed);
            if missing > 0 {
                return Err(Rejection::new(ErrorCode::NotFound, "Not every id is a message in your inbox")
                    .with("removed", removed)
                    .with("not_found", missing)
                    .with("details", "the others were removed; these were never yours or were acknowledged already"));
            }
        }
        Ok(Handled::json(200, &json!(api::Acknowledged { status: "acknowledged".into(), removed })))
    }
}
