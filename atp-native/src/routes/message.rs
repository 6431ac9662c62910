//! `POST message` (docs/protocol.md §6 "POST message pipeline"): a local submission (the sender is one of
//! our agents and shows its Basic credential) or a remote transfer (another server; ATS + ATK), both
//! checked by the core's pipeline ([`atp_wasm::pipeline`]), then stored durably.
//!
//! What is stored where:
//! * a message for our domain goes into the recipient's inbox (`delivered`);
//! * a local agent's message for another domain is stored `queued` and the delivery engine
//!   ([`crate::delivery`]) is woken;
//! * a remote server may only deliver to our domain (no open relay; the pipeline refuses 5.7.1).
//!
//! **Unknown local recipients** are refused with HTTP **404** and `error_code` `550 5.1.1`
//! ("Unknown recipient"), the SMTP code for "no such user" (docs/design.md §3 "No orphan mail"). 404 is
//! what the reference already uses for "no such thing" (inspect), and a 4xx other than 408/429 is a
//! permanent failure for the sending server, which bounces at once (docs/design.md §3 outcome classes).
//! The check runs after authentication and verification, so it reveals nothing to strangers that a
//! signed transfer would not.
//!
//! An exact repeat of an accepted message (same sender domain, nonce and content) answers 202 again
//! and stores nothing; the 202 body is `{"status":"accepted","nonce":…,"timestamp":<server now>}`.

use std::net::SocketAddr;

use atp_wasm::env::{Clock, SystemClock};
use atp_wasm::pipeline::{self, Accepted, AtsVerdict, Inbound, Origin};
use atp_wasm::{ErrorCode, Rejection};
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use tracing::Instrument;

use super::{auth, read_body, AppState, Shared};
use crate::error::{reject, ApiError};
use crate::store::{NewMessage, Status, Stored};

/// The handler.
pub async fn post_message(
    axum::extract::State(st): Shared,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = read_body(&headers, body, st.inbound.max_size).await?;
    st.metrics.received.inc();
    let now = SystemClock.now();
    let inbound = pipeline::parse_inbound(&body, &st.inbound).inspect_err(|r| {
        tracing::info!(code = %r.code, error = %r.error, peer = %peer, "message refused");
    })?;
    let span = tracing::info_span!(
        "message",
        nonce = %inbound.message.nonce,
        from = %inbound.sender,
        to = %inbound.recipient,
        origin = ?inbound.origin,
    );
    let origin = inbound.origin;
    // Our source address as the TCP peer sees it (no X-Forwarded-For, fixing docs/protocol.md §12
    // item 7); an IPv4 client of a dual-stack listener shows up as IPv4, not ::ffff:a.b.c.d.
    let source = peer.ip().to_canonical();
    async move {
        let result = accept(&st, &headers, inbound, source, now).await;
        match &result {
            Ok(_) => {}
            Err(ApiError(r)) => {
                count_refusal(&st, origin, r);
                tracing::info!(status = r.status, code = %r.code, error = %r.error, "message refused");
            }
        }
        result
    }
    .instrument(span)
    .await
}

/// Verification and storage, inside the message's span.
async fn accept(
    st: &AppState,
    headers: &HeaderMap,
    inbound: Inbound,
    source: std::net::IpAddr,
    now: i64,
) -> Result<Response, ApiError> {
    let accepted = match inbound.origin {
        Origin::Local => {
            let who = auth::agent(st, headers, "Credential required for local agent").await?;
            pipeline::verify_local_submission(inbound, &who, &st.inbound, now, &st.store).await?
        }
        Origin::Remote => {
            let a = pipeline::verify_remote(inbound, source, &st.inbound, now, &*st.resolver, &st.store).await?;
            match a.ats {
                AtsVerdict::Pass => st.metrics.ats_pass.inc(),
                _ => st.metrics.ats_neutral.inc(),
            }
            st.metrics.atk_pass.inc();
            a
        }
    };
    let local = accepted.is_for_local_domain(&st.domain);
    if accepted.duplicate {
        return Ok(duplicate(st, &accepted, now));
    }
    if local && !st.store.agent_exists(&accepted.recipient.to_string()).await? {
        return Err(reject(404, ErrorCode::UnknownRecipient, "Unknown recipient")
            .0
            .with("details", format!("no agent {} on this server", accepted.recipient))
            .into());
    }
    let stored = st
        .store
        .insert_message(NewMessage {
            nonce: accepted.message.nonce.clone(),
            sender_domain: accepted.sender.domain().to_owned(),
            from_id: accepted.sender.to_string(),
            to_id: accepted.recipient.to_string(),
            json: accepted.message.to_json(),
            status: if local { Status::Delivered } else { Status::Queued },
            content_hash: accepted.content_hash,
            now,
        })
        .await?;
    match stored {
        Stored::New(id) => {
            if local {
                st.metrics.delivered_local.inc();
            } else {
                st.metrics.queued.inc();
                st.delivery_wake.notify_one();
            }
            tracing::info!(id, status = if local { "delivered" } else { "queued" }, "message accepted");
            Ok(accepted_response(&accepted.message.nonce, now))
        }
        // Two identical copies raced past the pipeline's dedup read; the transaction decided.
        Stored::Duplicate => Ok(duplicate(st, &accepted, now)),
        Stored::Replay => Err(ApiError(
            Rejection::new(400, ErrorCode::Replay, "Replay detected")
                .with("details", "nonce already used for a different message"),
        )),
    }
}

fn duplicate(st: &AppState, accepted: &Accepted, now: i64) -> Response {
    st.metrics.duplicates.inc();
    tracing::info!("exact repeat of an accepted message: answered 202, nothing stored");
    accepted_response(&accepted.message.nonce, now)
}

fn accepted_response(nonce: &str, now: i64) -> Response {
    (StatusCode::ACCEPTED, Json(json!({"status": "accepted", "nonce": nonce, "timestamp": now}))).into_response()
}

/// The security counters of `/stats` for a refused message.
fn count_refusal(st: &AppState, origin: Origin, r: &Rejection) {
    use ErrorCode::*;
    match r.code {
        Replay | StaleTimestamp => st.metrics.replay_blocked.inc(),
        AtsFail | AtsSyntax if origin == Origin::Remote => st.metrics.ats_fail.inc(),
        AtsTempError if origin == Origin::Remote => st.metrics.ats_temperror.inc(),
        AtkSignature | AtkKey | AtkTempError if origin == Origin::Remote => st.metrics.atk_fail.inc(),
        _ => {}
    }
}
