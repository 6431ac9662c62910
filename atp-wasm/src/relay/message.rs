//! `POST message` (docs/protocol.md §6.1 "POST message pipeline"): a local submission (the sender
//! is one of our agents and shows its Basic credential) or a remote transfer (another server; ATS
//! + ATK), both checked by the core's pipeline ([`crate::pipeline`]), then stored durably.
//!
//! * A message for our domain goes into the recipient's inbox (`delivered`); a local agent's
//!   message for another domain is stored `queued` and the home's delivery is woken
//!   ([`super::Queued`]); a remote server may only deliver to our domain (no open relay, 5.7.1).
//! * **Unknown local recipients** are refused 404 `550 5.1.1` (docs/design.md §3 "No orphan mail"):
//!   a permanent failure for a sending server, which bounces at once. The check runs after
//!   authentication and verification, so it tells strangers nothing.
//! * An exact repeat of an accepted message (same sender domain, nonce and content) answers 202
//!   again and stores nothing; the 202 body is `{"status":"accepted","nonce":…,"timestamp":<now>}`.

use serde_json::json;

use crate::env::{Clock, Resolver};
use crate::error::{ErrorCode, Rejection};
use crate::pipeline::{self, Accepted, AtsVerdict, Inbound, Origin};
use crate::relay::credentials::PasswordHasher;
use crate::relay::store::{AgentStore, MessageStatus, MessageStore, NewMessage, Stored};
use crate::relay::stream::InboxWatch;
use crate::relay::{api, ApiRequest, Handled, Queued, Relay};

impl<S: AgentStore + MessageStore, R: Resolver, H: PasswordHasher, C: Clock, W: InboxWatch> Relay<'_, S, R, H, C, W> {
    /// The handler.
    pub(super) async fn post_message(&self, req: &ApiRequest) -> Result<Handled, Rejection> {
        self.state.stats.received.inc();
        let inbound = pipeline::parse_inbound(&req.body, &self.cfg.inbound)?;
        let origin = inbound.origin;
        let nonce = inbound.message.nonce.clone();
        let result = self.accept(req, inbound).await;
        match result {
            Ok(mut h) => {
                h.nonce = Some(nonce);
                Ok(h)
            }
            Err(r) => {
                self.count_refusal(origin, &r);
                self.state.stats.rejected(r.code);
                let mut h = Handled::rejection(&r);
                h.nonce = Some(nonce);
                Ok(h)
            }
        }
    }

    /// Verification and storage.
    async fn accept(&self, req: &ApiRequest, inbound: Inbound) -> Result<Handled, Rejection> {
        let now = self.clock.now();
        let stats = &self.state.stats;
        let accepted = match inbound.origin {
            Origin::Local => {
                let who = self.agent(req, "Credential required for local agent").await?;
                pipeline::verify_local_submission(inbound, &who, &self.cfg.inbound, now, self.store).await?
            }
            Origin::Remote => {
                let Some(source) = req.source_ip else {
                    return Err(Rejection::new(ErrorCode::TempFailure, "Source address unknown, retry later")
                        .with("details", "the transport gave no client address"));
                };
                let a =
                    pipeline::verify_remote(inbound, source, &self.cfg.inbound, now, self.resolver, self.store).await?;
                match a.ats {
                    AtsVerdict::Pass => stats.ats_pass.inc(),
                    _ => stats.ats_neutral.inc(),
                }
                stats.atk_pass.inc();
                a
            }
        };
        if accepted.duplicate {
            stats.duplicates.inc();
            return Ok(accepted_response(&accepted, now));
        }
        let local = accepted.is_for_local_domain(&self.cfg.domain);
        if local && !self.store.agent_exists(&accepted.recipient.to_string()).await? {
            return Err(Rejection::new(ErrorCode::UnknownRecipient, "Unknown recipient")
                .with("details", format!("no agent {} on this server", accepted.recipient)));
        }
        let json = accepted.message.to_json();
        if local {
            self.check_quota(&accepted.recipient.to_string(), json.len()).await?;
        }
        let stored = self
            .store
            .store_message(NewMessage {
                nonce: accepted.message.nonce.clone(),
                sender_domain: accepted.sender.domain().to_owned(),
                from_id: accepted.sender.to_string(),
                to_id: accepted.recipient.to_string(),
                json,
                status: if local { MessageStatus::Delivered } else { MessageStatus::Queued },
                content_hash: accepted.content_hash,
                now,
            })
            .await?;
        match stored {
            Stored::New(_) if local => {
                stats.delivered_local.inc();
                Ok(accepted_response(&accepted, now))
            }
            Stored::New(_) => {
                stats.queued.inc();
                let mut h = accepted_response(&accepted, now);
                let domain = accepted.recipient.domain().to_owned();
                h.queued = Some(Queued { nonce: accepted.message.nonce.clone(), domain });
                Ok(h)
            }
            // Two identical copies raced past the pipeline's dedup read; the store decided.
            Stored::Duplicate => {
                stats.duplicates.inc();
                Ok(accepted_response(&accepted, now))
            }
            Stored::Replay => Err(Rejection::new(ErrorCode::Replay, "Replay detected")
                .with("details", "nonce already used for a different message")),
        }
    }

    /// Refuses a message of `size` bytes that would take `agent`'s inbox past its quota: a
    /// temporary "mailbox full", so the sender retries later (docs/design.md §5b). Concurrent
    /// submissions may pass it together by a few messages; the quota bounds, it does not meter.
    async fn check_quota(&self, agent: &str, size: usize) -> Result<(), Rejection> {
        let q = self.cfg.quota;
        let u = self.store.usage(agent).await?;
        if u.messages.saturating_add(1) > q.max_messages || u.bytes.saturating_add(size as u64) > q.max_bytes {
            return Err(Rejection::new(ErrorCode::MailboxFull, "Mailbox full, retry later").with(
                "details",
                format!(
                    "{agent} holds {} messages / {} bytes (quota {} / {})",
                    u.messages, u.bytes, q.max_messages, q.max_bytes
                ),
            ));
        }
        Ok(())
    }

    /// The security counters of `stats` for a refused message (one rule for every home).
    fn count_refusal(&self, origin: Origin, r: &Rejection) {
        use ErrorCode::*;
        let s = &self.state.stats;
        match r.code {
            Replay | StaleTimestamp => s.replay_blocked.inc(),
            AtsFail | AtsSyntax if origin == Origin::Remote => s.ats_fail.inc(),
            AtsTempError if origin == Origin::Remote => s.ats_temperror.inc(),
            AtkSignature | AtkKey | AtkTempError if origin == Origin::Remote => s.atk_fail.inc(),
            _ => {}
        }
    }
}

/// The 202 (docs/protocol.md §6.1).
fn accepted_response(accepted: &Accepted, now: i64) -> Handled {
    let body = api::Accepted { status: "accepted".into(), nonce: accepted.message.nonce.clone(), timestamp: now };
    Handled::json(202, &json!(body))
}
