//! The inbound verification pipeline (docs/protocol.md §5.2, §5.3, §6 "POST message pipeline", §8.4,
//! with the fixes of docs/design.md §3).
//!
//! [`parse_inbound`] runs the steps shared by both kinds of `POST message` (size, JSON, shape, the
//! sender and recipient ids) and says whether the message is a local submission (sender in our
//! domain) or a remote transfer. [`verify_remote`] then checks a transfer (relay, ATS, ATK, timestamp
//! horizon, idempotency) and [`verify_local_submission`] a submission whose credential the server
//! has checked. [`verify_remote_transfer`] is the whole path for a transfer in one call.
//!
//! Idempotency (design §3): a receiver remembers the content hash accepted under
//! `(sender domain, nonce)`. An exact repeat is accepted again and flagged `duplicate` (the server
//! answers 202 without storing a second copy); the same nonce with other content is a replay (400).

use std::net::IpAddr;

use crate::env::{Clock, ContentHash, DedupStore, Resolver};
use crate::error::{ErrorCode, Rejection};
use crate::identity::{validate_domain, AgentId};
use crate::keys::PublicKey;
use crate::message::{Message, MessageError};
use crate::records::atk::AtkRecord;
use crate::records::atp_txt_records;
use crate::records::ats::{check_ats, AtsResult};
use crate::retry::DEFAULT_HORIZON_SECS;
use crate::sign::{split_key_id, verify_message};

/// Limits and identity of the receiving server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundConfig {
    /// The server's own domain (lowercase).
    pub local_domain: String,
    /// Largest body accepted (docs/protocol.md §2).
    pub max_size: usize,
    /// How old a remote transfer's timestamp may be (design §3: the retry horizon).
    pub remote_max_age: i64,
    /// How old a local submission's timestamp may be (the reference's 300 s).
    pub local_max_age: i64,
    /// How far in the future any timestamp may be (the reference's 60 s).
    pub max_future_skew: i64,
}

impl InboundConfig {
    pub fn new(local_domain: &str) -> Self {
        InboundConfig {
            local_domain: local_domain.to_ascii_lowercase(),
            max_size: crate::MAX_MESSAGE_SIZE,
            remote_max_age: DEFAULT_HORIZON_SECS,
            local_max_age: 300,
            max_future_skew: 60,
        }
    }
}

/// Where a message comes from, decided by the sender's domain (docs/protocol.md §6 step 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Sender in our domain: an agent submitting; needs its credential.
    Local,
    /// Sender elsewhere: a server transferring; needs ATS and ATK.
    Remote,
}

/// A well-formed message with its normalised identities.
#[derive(Debug, Clone, PartialEq)]
pub struct Inbound {
    /// The message, `from` lowercased, everything else as received.
    pub message: Message,
    pub sender: AgentId,
    pub recipient: AgentId,
    pub origin: Origin,
}

/// How the ATS check ended for an accepted transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtsVerdict {
    Pass,
    Neutral,
    /// Local submissions are not checked.
    NotChecked,
}

/// A message that passed every check.
#[derive(Debug, Clone, PartialEq)]
pub struct Accepted {
    pub message: Message,
    pub sender: AgentId,
    pub recipient: AgentId,
    pub origin: Origin,
    /// SHA-256 of the canonical form; store it with the message for later repeats.
    pub content_hash: ContentHash,
    /// An exact repeat of a message already accepted: answer 202 again, store nothing.
    pub duplicate: bool,
    pub ats: AtsVerdict,
}

impl Accepted {
    /// True when the recipient is one of our own agents (inbox), false when it must be forwarded.
    pub fn is_for_local_domain(&self, local_domain: &str) -> bool {
        self.recipient.domain() == local_domain
    }
}

fn invalid_format(e: &MessageError) -> Rejection {
    Rejection::new(ErrorCode::InvalidFormat, "Invalid message format").with("details", format!("[400] {e}"))
}

/// Steps 1–4 of `POST message`: size, JSON, message shape, sender and recipient identities, origin.
pub fn parse_inbound(body: &[u8], cfg: &InboundConfig) -> Result<Inbound, Rejection> {
    if body.len() > cfg.max_size {
        return Err(Rejection::new(ErrorCode::MessageTooLarge, "Message too large").with("max_size", cfg.max_size));
    }
    let mut message = Message::parse(body).map_err(|e| match &e {
        MessageError::BadSender { .. } => {
            Rejection::new(ErrorCode::InvalidSender, "Invalid sender").with("details", e.to_string())
        }
        MessageError::BadRecipient { .. } => {
            Rejection::new(ErrorCode::InvalidRecipient, "Invalid recipient").with("details", e.to_string())
        }
        _ => invalid_format(&e),
    })?;
    // Message::parse validated both ids.
    let sender = message
        .sender()
        .map_err(|e| invalid_format(&MessageError::BadSender { id: message.from.clone(), source: e }))?;
    let recipient = message
        .recipient()
        .map_err(|e| invalid_format(&MessageError::BadRecipient { id: message.to.clone(), source: e }))?;
    message.from = sender.to_string();
    let origin = if sender.domain() == cfg.local_domain { Origin::Local } else { Origin::Remote };
    Ok(Inbound { message, sender, recipient, origin })
}

fn check_window(ts: i64, now: i64, max_age: i64, skew: i64) -> Result<(), Rejection> {
    if ts < now.saturating_sub(max_age) || ts > now.saturating_add(skew) {
        return Err(Rejection::new(ErrorCode::StaleTimestamp, "Replay detected").with(
            "details",
            format!("timestamp {ts} outside the accepted window [{}, {}]", now - max_age, now + skew),
        ));
    }
    Ok(())
}

async fn check_dedup<D: DedupStore>(dedup: &D, domain: &str, msg: &Message) -> Result<(ContentHash, bool), Rejection> {
    let hash = msg.content_hash().map_err(|e| invalid_format(&MessageError::Json(e.to_string())))?;
    let seen = dedup.seen(domain, &msg.nonce).await?;
    match seen {
        None => Ok((hash, false)),
        Some(h) if h == hash => Ok((hash, true)),
        Some(_) => Err(Rejection::new(ErrorCode::Replay, "Replay detected")
            .with("details", "nonce already used for a different message")),
    }
}

fn atk_failure(code: ErrorCode, message: impl Into<String>) -> Rejection {
    Rejection::new(code, "ATK verification failed").with("error_message", message.into())
}

/// ATK (docs/protocol.md §5.3): the signature, checked against the sender domain's published key, in the
/// reference's order of checks (so the same failure gets the same code).
pub async fn check_atk<R: Resolver>(msg: &Message, sender: &AgentId, resolver: &R, now: i64) -> Result<(), Rejection> {
    use ErrorCode::{AtkKey, AtkSignature, AtkTempError};
    let env = msg.signature.as_ref().ok_or_else(|| atk_failure(AtkSignature, "Message has no signature"))?;
    let key_id = env.key_id.to_ascii_lowercase();
    let Some((selector, key_domain)) = split_key_id(&key_id) else {
        return Err(atk_failure(AtkSignature, "Invalid ATK key_id format"));
    };
    if validate_domain(selector).is_err() || validate_domain(key_domain).is_err() {
        return Err(atk_failure(AtkSignature, "Invalid ATK key_id format"));
    }
    if key_domain != sender.domain() {
        return Err(atk_failure(
            AtkSignature,
            format!(
                "ATK key domain mismatch: key_id domain '{key_domain}' does not match sender domain '{}'",
                sender.domain()
            ),
        ));
    }
    let txt = resolver
        .txt(&key_id)
        .await
        .map_err(|e| atk_failure(AtkTempError, format!("DNS error looking up ATK key: {}", e.reason)))?;
    let records = atp_txt_records(&txt);
    if records.is_empty() {
        return Err(atk_failure(AtkKey, format!("ATK key not found: {key_id}")));
    }
    // Several keys may be published at one selector (rotation): any usable one that verifies wins;
    // otherwise the first failure is reported.
    let mut first_err = None;
    for text in records {
        let result = match AtkRecord::parse(text) {
            Err(e) => Err(atk_failure(e.code(), format!("Failed to parse ATK record: {e}"))),
            Ok(rec) if !rec.is_usable_at(now) => Err(atk_failure(AtkKey, "ATK key revoked or expired")),
            Ok(rec) => match PublicKey::from_bytes(&rec.public_key) {
                Err(e) => Err(atk_failure(AtkSignature, format!("Failed to decode ATK public key: {e}"))),
                Ok(pk) => verify_message(msg, &pk).map_err(|e| atk_failure(AtkSignature, e.to_string())),
            },
        };
        match result {
            Ok(()) => return Ok(()),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    Err(first_err.unwrap_or_else(|| atk_failure(AtkKey, "ATK key not found")))
}

/// Checks a remote transfer: no relaying, ATS, ATK, the timestamp horizon and idempotency.
pub async fn verify_remote<R: Resolver, D: DedupStore>(
    inbound: Inbound,
    source_ip: IpAddr,
    cfg: &InboundConfig,
    now: i64,
    resolver: &R,
    dedup: &D,
) -> Result<Accepted, Rejection> {
    let Inbound { message, sender, recipient, origin } = inbound;
    if origin == Origin::Local {
        return Err(Rejection::new(ErrorCode::AuthFailed, "Credential required for local agent"));
    }
    if recipient.domain() != cfg.local_domain {
        return Err(Rejection::new(ErrorCode::RelayDenied, "Relaying denied")
            .with("details", format!("this server only accepts transfers for {}", cfg.local_domain)));
    }
    let ats = match check_ats(resolver, sender.domain(), source_ip).await {
        AtsResult::Pass(_) => AtsVerdict::Pass,
        AtsResult::Neutral => AtsVerdict::Neutral,
        other => {
            return Err(other
                .to_rejection()
                .unwrap_or_else(|| Rejection::new(ErrorCode::AtsFail, "ATS validation failed")))
        }
    };
    check_atk(&message, &sender, resolver, now).await?;
    check_window(message.timestamp, now, cfg.remote_max_age, cfg.max_future_skew)?;
    let (content_hash, duplicate) = check_dedup(dedup, sender.domain(), &message).await?;
    Ok(Accepted { message, sender, recipient, origin, content_hash, duplicate, ats })
}

/// The whole inbound pipeline for a remote transfer: raw body and source address in, an accepted
/// message or a rejection `(error_code, message)` out.
pub async fn verify_remote_transfer<C: Clock, R: Resolver, D: DedupStore>(
    body: &[u8],
    source_ip: IpAddr,
    cfg: &InboundConfig,
    clock: &C,
    resolver: &R,
    dedup: &D,
) -> Result<Accepted, Rejection> {
    let inbound = parse_inbound(body, cfg)?;
    verify_remote(inbound, source_ip, cfg, clock.now(), resolver, dedup).await
}

/// Checks a local submission after the server verified the agent's credential: the credential's
/// agent must be the sender, the timestamp within the tight local window, the nonce fresh (an exact
/// repeat of an accepted submission is flagged `duplicate`). A client-supplied signature is dropped:
/// only servers sign (docs/protocol.md §4).
pub async fn verify_local_submission<D: DedupStore>(
    inbound: Inbound,
    authenticated: &AgentId,
    cfg: &InboundConfig,
    now: i64,
    dedup: &D,
) -> Result<Accepted, Rejection> {
    let Inbound { mut message, sender, recipient, origin } = inbound;
    if &sender != authenticated {
        return Err(Rejection::new(
            ErrorCode::SenderMismatch,
            "Sender identity mismatch: authenticated agent does not match message 'from'",
        ));
    }
    check_window(message.timestamp, now, cfg.local_max_age, cfg.max_future_skew)?;
    message.signature = None;
    let (content_hash, duplicate) = check_dedup(dedup, sender.domain(), &message).await?;
    Ok(Accepted { message, sender, recipient, origin, content_hash, duplicate, ats: AtsVerdict::NotChecked })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::{FixedClock, MemoryDedup, StaticResolver};
    use crate::keys::DomainKey;
    use crate::records::atk::AtkRecord;
    use crate::sign::sign_message;
    use futures::executor::block_on;
    use serde_json::{json, Value};

    const NOW: i64 = 1_800_000_000;
    const SRC: &str = "192.0.2.10";

    fn key() -> DomainKey {
        DomainKey::from_seed(&[3u8; 32])
    }

    /// gamma.test (the sender) publishes ATS allowing SRC and its key; we are beta.test.
    fn dns() -> StaticResolver {
        let mut r = StaticResolver::new();
        r.add_txt("ats._atp.gamma.test", "v=spf1 -all")
            .add_txt("ats._atp.gamma.test", &format!("v=atp1 allow=ip:{SRC} deny=all"))
            .add_txt("default.atk._atp.gamma.test", &AtkRecord::new(*key().public_key().as_bytes()).to_string());
        r
    }

    fn raw(ts: i64) -> Value {
        json!({"from": "zed@gamma.test", "to": "bob@beta.test", "timestamp": ts, "nonce": "msg-abc",
               "type": "message", "payload": {"body": "hi", "x": 1e-05}})
    }

    fn signed(v: Value) -> Vec<u8> {
        let mut m = Message::from_value(v).unwrap();
        sign_message(&mut m, &key(), "default", "gamma.test", NOW).unwrap();
        m.to_json().into_bytes()
    }

    fn run(body: &[u8], r: &StaticResolver, d: &MemoryDedup) -> Result<Accepted, Rejection> {
        let cfg = InboundConfig::new("beta.test");
        block_on(verify_remote_transfer(body, SRC.parse().unwrap(), &cfg, &FixedClock(NOW), r, d))
    }

    fn code(r: Result<Accepted, Rejection>) -> (u16, &'static str) {
        let e = r.expect_err("should be rejected");
        (e.status(), e.code.as_str())
    }

    #[test]
    fn accepts_a_valid_transfer_and_repeats_idempotently() {
        let (r, d) = (dns(), MemoryDedup::new());
        let body = signed(raw(NOW - 10));
        let a = run(&body, &r, &d).unwrap();
        assert!(!a.duplicate);
        assert_eq!(a.ats, AtsVerdict::Pass);
        assert_eq!(a.recipient.to_string(), "bob@beta.test");
        assert!(a.is_for_local_domain("beta.test"));
        d.record("gamma.test", "msg-abc", a.content_hash);
        // a retry after a lost 202 (re-signed later, new envelope timestamp) is accepted again
        let mut again = Message::parse(&body).unwrap();
        sign_message(&mut again, &key(), "default", "gamma.test", NOW + 3600).unwrap();
        let b = run(again.to_json().as_bytes(), &r, &d).unwrap();
        assert!(b.duplicate);
        // the same nonce with other content is a replay
        let mut other = raw(NOW - 10);
        other["payload"] = json!("different");
        assert_eq!(code(run(&signed(other), &r, &d)), (400, "550 5.7.30"));
    }

    #[test]
    fn retry_horizon_replaces_the_300_second_window() {
        let (r, d) = (dns(), MemoryDedup::new());
        assert!(run(&signed(raw(NOW - 400)), &r, &d).is_ok());
        assert!(run(&signed(raw(NOW - 4 * 86_400)), &r, &d).is_ok());
        assert_eq!(code(run(&signed(raw(NOW - 6 * 86_400)), &r, &d)), (400, "550 5.7.31"));
        assert_eq!(code(run(&signed(raw(NOW + 120)), &r, &d)), (400, "550 5.7.31"));
        assert!(run(&signed(raw(NOW + 50)), &r, &d).is_ok());
    }

    #[test]
    fn format_errors() {
        let (r, d) = (dns(), MemoryDedup::new());
        let big = vec![b' '; crate::MAX_MESSAGE_SIZE + 1];
        let e = run(&big, &r, &d).unwrap_err();
        assert_eq!((e.status(), e.error.as_str()), (400, "Message too large"));
        assert_eq!(e.to_json()["max_size"], json!(crate::MAX_MESSAGE_SIZE));
        for body in [&b"{"[..], b"[]", b"42", b"null", b"{\"from\":\"a@b.c\"}", b"\xff"] {
            assert_eq!(code(run(body, &r, &d)), (400, "550 5.6.0"), "{:?}", String::from_utf8_lossy(body));
        }
        let mut v = raw(NOW);
        v["timestamp"] = json!("1800000000");
        assert_eq!(code(run(v.to_string().as_bytes(), &r, &d)), (400, "550 5.6.0"));
        let mut v = raw(NOW);
        v["from"] = json!("not an id");
        assert_eq!(code(run(v.to_string().as_bytes(), &r, &d)), (400, "553 5.1.7"));
        let mut v = raw(NOW);
        v["to"] = json!("bob@@beta.test");
        assert_eq!(code(run(v.to_string().as_bytes(), &r, &d)), (400, "553 5.1.3"));
        let mut v = raw(NOW);
        v["signature"] = json!({"key_id": "default.atk._atp.gamma.test"});
        assert_eq!(code(run(v.to_string().as_bytes(), &r, &d)), (400, "550 5.6.0"));
    }

    #[test]
    fn no_relay_and_no_unauthenticated_local_senders() {
        let (r, d) = (dns(), MemoryDedup::new());
        let mut v = raw(NOW);
        v["to"] = json!("carol@alpha.test");
        assert_eq!(code(run(&signed(v), &r, &d)), (403, "550 5.7.1"));
        let mut v = raw(NOW);
        v["from"] = json!("mallory@beta.test");
        assert_eq!(code(run(v.to_string().as_bytes(), &r, &d)), (401, "535 5.7.8"));
    }

    #[test]
    fn ats_outcomes() {
        let d = MemoryDedup::new();
        let body = signed(raw(NOW));
        let cfg = InboundConfig::new("beta.test");
        let other_ip = |r: &StaticResolver| {
            block_on(verify_remote_transfer(&body, "10.1.2.3".parse().unwrap(), &cfg, &FixedClock(NOW), r, &d))
        };
        let e = other_ip(&dns()).unwrap_err();
        assert_eq!((e.status(), e.code.as_str()), (403, "550 5.7.26"));
        assert_eq!(e.to_json()["matched_directive"], json!("deny=all"));

        let mut r = StaticResolver::new();
        r.add_txt("default.atk._atp.gamma.test", &AtkRecord::new(*key().public_key().as_bytes()).to_string());
        assert_eq!(other_ip(&r).unwrap().ats, AtsVerdict::Neutral, "no ATS record is neutral");

        let mut r2 = r.clone();
        r2.fail("ats._atp.gamma.test");
        assert_eq!(code(other_ip(&r2)), (451, "451 4.7.26"));

        let mut r3 = r.clone();
        r3.add_txt("ats._atp.gamma.test", "v=atp1 allow=ip:999.1.1.1");
        assert_eq!(code(other_ip(&r3)), (403, "550 5.7.27"));

        let mut r4 = r.clone();
        r4.add_txt("ats._atp.gamma.test", "v=atp1 allow=domain:mx.gamma.test deny=all")
            .add_ip("mx.gamma.test", "10.1.2.3".parse().unwrap());
        assert_eq!(other_ip(&r4).unwrap().ats, AtsVerdict::Pass);
    }

    #[test]
    fn atk_failures_in_reference_order() {
        let d = MemoryDedup::new();
        let pk = *key().public_key().as_bytes();
        let with_atk = |rec: &str| {
            let mut r = StaticResolver::new();
            r.add_txt("default.atk._atp.gamma.test", rec);
            r
        };
        let good = signed(raw(NOW));
        let msg = |f: &dyn Fn(&mut Message)| {
            let mut m = Message::parse(&good).unwrap();
            f(&mut m);
            m.to_json().into_bytes()
        };
        let r = with_atk(&AtkRecord::new(pk).to_string());
        let atk = |body: &[u8], r: &StaticResolver| {
            let e = run(body, r, &d).unwrap_err();
            (e.status(), e.code.as_str(), e.extra["error_message"].as_str().unwrap_or("").to_owned())
        };
        assert_eq!(atk(&msg(&|m| m.signature = None), &r).1, "550 5.7.28");
        assert_eq!(
            atk(&msg(&|m| m.signature.as_mut().unwrap().key_id = "default.gamma.test".into()), &r).1,
            "550 5.7.28"
        );
        let (_, c, text) =
            atk(&msg(&|m| m.signature.as_mut().unwrap().key_id = "default.atk._atp.alpha.test".into()), &r);
        assert_eq!(c, "550 5.7.28");
        assert!(text.contains("mismatch"), "{text}");
        assert_eq!(atk(&msg(&|m| m.payload = json!("tampered")), &r).1, "550 5.7.28");
        assert_eq!(atk(&msg(&|m| m.signature.as_mut().unwrap().algorithm = "rsa".into()), &r).1, "550 5.7.28");
        assert_eq!(
            atk(
                &msg(&|m| {
                    let s = &mut m.signature.as_mut().unwrap().signature;
                    *s = s.trim_end_matches('=').to_owned();
                }),
                &r
            )
            .1,
            "550 5.7.28"
        );
        // key records
        let (s, c, text) = atk(&good, &StaticResolver::new());
        assert_eq!((s, c), (403, "550 5.7.29"));
        assert!(text.contains("not found"));
        let mut failing = StaticResolver::new();
        failing.fail("default.atk._atp.gamma.test");
        assert_eq!(atk(&good, &failing).0, 451, "a DNS hiccup is temporary, not a bounce");
        let revoked = AtkRecord { revoked: true, ..AtkRecord::new(pk) };
        assert_eq!(atk(&good, &with_atk(&revoked.to_string())).1, "550 5.7.29");
        let expired = AtkRecord { expires: Some(1000), ..AtkRecord::new(pk) };
        assert_eq!(atk(&good, &with_atk(&expired.to_string())).1, "550 5.7.29");
        let spki = "v=atp1 k=ed25519 p=MCowBQYDK2VwAyEAW5IqPFzGPmVx1Rx5/nK8CN5TewPvr3AfWSjTaYELjDM=";
        assert_eq!(atk(&good, &with_atk(spki)).1, "550 5.7.28");
        assert_eq!(atk(&good, &with_atk("v=atp1 k=ed25519")).1, "550 5.7.29");
        // rotation: an old key and the new one published together
        let mut both = with_atk(&AtkRecord::new(*DomainKey::from_seed(&[9; 32]).public_key().as_bytes()).to_string());
        both.add_txt("default.atk._atp.gamma.test", &AtkRecord::new(pk).to_string());
        assert!(run(&good, &both, &d).is_ok());
    }

    #[test]
    fn local_submissions() {
        let cfg = InboundConfig::new("beta.test");
        let d = MemoryDedup::new();
        let bob = AgentId::parse("bob@beta.test").unwrap();
        let body = |ts: i64| {
            json!({"from": "Bob@Beta.test", "to": "zed@gamma.test", "timestamp": ts, "nonce": "n1",
                   "type": "message", "payload": {}, "signature": {"key_id": "x", "algorithm": "y",
                   "signature": "z", "headers": [], "timestamp": 0}})
            .to_string()
        };
        let sub = |b: &str, who: &AgentId| {
            let inbound = parse_inbound(b.as_bytes(), &cfg).unwrap();
            assert_eq!(inbound.origin, Origin::Local);
            block_on(verify_local_submission(inbound, who, &cfg, NOW, &d))
        };
        let a = sub(&body(NOW), &bob).unwrap();
        assert_eq!(a.message.from, "bob@beta.test");
        assert!(a.message.signature.is_none(), "client signatures are dropped");
        assert!(!a.is_for_local_domain("beta.test"));
        let alice = AgentId::parse("alice@beta.test").unwrap();
        assert_eq!(sub(&body(NOW), &alice).unwrap_err().status(), 403);
        assert_eq!(sub(&body(NOW - 301), &bob).unwrap_err().code, ErrorCode::StaleTimestamp);
        d.record("beta.test", "n1", a.content_hash);
        assert!(sub(&body(NOW), &bob).unwrap().duplicate);
        assert_eq!(sub(&body(NOW - 1), &bob).unwrap_err().code, ErrorCode::Replay);
    }
}
