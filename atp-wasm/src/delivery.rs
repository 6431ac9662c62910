//! The delivery state machine (docs/design.md §3 "per-destination delivery", fixing
//! docs/protocol.md §8.1–§8.3 and §12.1–§12.3), as functions both engines apply to their own
//! queue: atp-native's tokio dispatcher over SQLite, atp-worker's cron sweep over its Durable Object.
//!
//! * [`attempt`]: sign the stored message with the domain key, discover the destination's
//!   endpoints (SVCB `_atp` → `_agent` → SRV, docs/protocol.md §5.1) and POST it to each until one
//!   answers.
//! * [`settle`]: how the result settles — delivered; a permanent refusal bounces now (with the
//!   receiver's error); a temporary failure backs off per destination domain ([`Backoff`]) and
//!   retries, until the maximum age, when it bounces too ([`crate::retry`] classifies answers).
//! * [`bounce_notice`]: the notice from `postmaster@<domain>` in the sender's inbox.

use serde_json::{json, Value};

use crate::env::Resolver;
use crate::http::{HttpRequest, HttpTransport};
use crate::keys::DomainKey;
use crate::message::Message;
use crate::records::svcb::{discover, DiscoveryError, Endpoint};
use crate::relay::api;
use crate::retry::{classify_status, Outcome, RetryPolicy};
use crate::sign::sign_message;

/// Why an attempt did not deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub outcome: Outcome,
    /// The receiver's HTTP status, if it answered.
    pub status: Option<u16>,
    /// The receiver's `error_code`, or ours for failures before an answer.
    pub error_code: String,
    /// What went wrong, for `inspect` and the bounce notice.
    pub error: String,
}

impl Failure {
    /// A failure before any answer from the receiver.
    pub fn before_answer(outcome: Outcome, code: &str, error: impl Into<String>) -> Self {
        Failure { outcome, status: None, error_code: code.into(), error: error.into() }
    }

    /// `"<code>: <error>"`, as `inspect` shows the last error.
    pub fn describe(&self) -> String {
        format!("{}: {}", self.error_code, self.error)
    }

    /// Whether the destination domain answered (a delivery, or a refusal for good): it is up, so
    /// its backoff ends and its waiting messages are due at once.
    pub fn answered(result: &Result<(), Failure>) -> bool {
        match result {
            Ok(()) => true,
            Err(f) => f.status.is_some() && f.outcome == Outcome::Permanent,
        }
    }
}

/// Who signs: our domain, its key and the key's selector (docs/protocol.md §4, §5.3).
#[derive(Debug, Clone, Copy)]
pub struct Signer<'a> {
    pub domain: &'a str,
    pub key: &'a DomainKey,
    pub selector: &'a str,
}

/// The transfer URL of an endpoint (`scheme` is `https`; `http` only in tests of a worker).
pub fn transfer_url(scheme: &str, ep: &Endpoint) -> String {
    let host = if ep.host.contains(':') { format!("[{}]", ep.host) } else { ep.host.clone() };
    api::MESSAGE.url(&format!("{scheme}://{host}:{}", ep.port))
}

/// One attempt: signs the stored message (`json`), discovers `dest_domain`'s endpoints and POSTs
/// it to each in turn until one answers; that answer decides. No endpoint answering is a
/// temporary failure naming the last error; a domain without ATP records is permanent.
pub async fn attempt<R: Resolver, T: HttpTransport>(
    json: &str,
    dest_domain: &str,
    signer: Signer<'_>,
    now: i64,
    resolver: &R,
    transport: &T,
    scheme: &str,
) -> Result<(), Failure> {
    let mut msg = Message::parse(json.as_bytes()).map_err(|e| {
        Failure::before_answer(Outcome::Permanent, "554 5.6.0", format!("stored message unreadable: {e}"))
    })?;
    sign_message(&mut msg, signer.key, signer.selector, signer.domain, now).map_err(|e| {
        Failure::before_answer(Outcome::Permanent, "554 5.6.0", format!("message cannot be signed: {e}"))
    })?;
    let endpoints = discover(resolver, dest_domain).await.map_err(|e| match e {
        DiscoveryError::Dns(e) => Failure::before_answer(Outcome::Temporary, "451 4.4.3", e.to_string()),
        e => Failure::before_answer(Outcome::Permanent, "550 5.1.2", e.to_string()),
    })?;
    let body = msg.to_json();
    let mut last = String::from("no endpoint");
    for ep in &endpoints {
        let url = transfer_url(scheme, ep);
        let req = HttpRequest::post(&url, "application/atp+json", body.clone());
        match transport.send(req).await {
            Ok(resp) => return answer(resp.status, &resp.body),
            Err(e) => last = format!("{url}: {e}"),
        }
    }
    Err(Failure::before_answer(Outcome::Temporary, "451 4.4.1", last.chars().take(500).collect::<String>()))
}

/// What a receiver's answer means: 2xx delivered, otherwise a failure carrying its `error` and
/// `error_code` (at most 500 characters each).
pub fn answer(status: u16, body: &[u8]) -> Result<(), Failure> {
    match classify_status(status) {
        Outcome::Delivered => Ok(()),
        outcome => {
            let v: Value = serde_json::from_slice(body).unwrap_or_default();
            let text = |k: &str| v.get(k).and_then(Value::as_str).map(|s| s.chars().take(500).collect::<String>());
            Err(Failure {
                outcome,
                status: Some(status),
                error_code: text("error_code").unwrap_or_default(),
                error: text("error").or_else(|| text("detail")).unwrap_or_else(|| format!("HTTP {status}")),
            })
        }
    }
}

/// Backoff of one destination domain: consecutive temporary failures and the time until which
/// its messages are not attempted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Backoff {
    pub failures: u32,
    pub blocked_until: i64,
}

impl Backoff {
    /// After a temporary failure at `now`: one more failure per backoff period (several attempts
    /// failing together count once), blocked for the policy's jittered delay.
    pub fn failed(self, now: i64, policy: &RetryPolicy, jitter: f64) -> Backoff {
        if self.blocked_until > now {
            return self;
        }
        let failures = self.failures.saturating_add(1);
        Backoff { failures, blocked_until: now + policy.delay_secs(failures, jitter) as i64 }
    }

    /// Whether the domain is backing off at `now`.
    pub fn blocks(&self, now: i64) -> bool {
        self.blocked_until > now
    }
}

/// How an attempt's result settles a queued message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settlement {
    Delivered,
    /// Try again at `next_at`; `error` is the failure for `inspect`.
    Retry {
        next_at: i64,
        error: String,
    },
    /// Give up: the failure goes into the bounce notice.
    Bounce(Failure),
}

/// The state machine's transition for a message first queued at `queued_at`, attempted
/// `attempts` times before this one, whose destination's backoff after this result is `backoff`
/// (see [`Backoff::failed`]).
pub fn settle(
    result: Result<(), Failure>,
    queued_at: i64,
    attempts: u32,
    backoff: Backoff,
    policy: &RetryPolicy,
    now: i64,
    jitter: f64,
) -> Settlement {
    let f = match result {
        Ok(()) => return Settlement::Delivered,
        Err(f) if f.outcome == Outcome::Permanent => return Settlement::Bounce(f),
        Err(f) => f,
    };
    let n = attempts.saturating_add(1).max(backoff.failures);
    match policy.next_attempt(queued_at, now, n, jitter) {
        Some(next) => {
            let deadline = queued_at + policy.max_age_secs as i64;
            Settlement::Retry { next_at: next.max(backoff.blocked_until.min(deadline)), error: f.describe() }
        }
        None => Settlement::Bounce(Failure {
            outcome: Outcome::Permanent,
            status: f.status,
            error_code: "554 5.4.7".into(),
            error: format!("undeliverable for {} s; last error: {}", policy.max_age_secs, f.error),
        }),
    }
}

/// The original message a bounce is about.
#[derive(Debug, Clone, Copy)]
pub struct Bounced<'a> {
    pub nonce: &'a str,
    /// The original sender (the notice's recipient).
    pub from: &'a str,
    pub to: &'a str,
}

/// The notice for a bounced message (docs/protocol.md §8.3: `subject`, `body`, `original_nonce`,
/// plus `error_code`, `status` and `error`), from `postmaster@<domain>` to the original sender,
/// signed like any message of ours.
pub fn bounce_notice(original: Bounced<'_>, f: &Failure, signer: Signer<'_>, now: i64) -> Message {
    let payload = json!({
        "subject": format!("Delivery Failure: {}", original.nonce),
        "body": format!("Message to {} could not be delivered. Error: {}", original.to, f.error),
        "original_nonce": original.nonce,
        "error_code": f.error_code,
        "status": f.status,
        "error": f.error,
    });
    let mut msg = Message {
        from: format!("postmaster@{}", signer.domain),
        to: original.from.to_owned(),
        timestamp: now,
        nonce: crate::message::new_nonce(),
        kind: "message".into(),
        payload,
        signature: None,
        cc: Vec::new(),
        routing: None,
    };
    let _ = sign_message(&mut msg, signer.key, signer.selector, signer.domain, now);
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: RetryPolicy = RetryPolicy { base_secs: 10, cap_secs: 100, max_age_secs: 1000 };

    fn temp() -> Failure {
        Failure::before_answer(Outcome::Temporary, "451 4.4.1", "refused")
    }

    #[test]
    fn urls_and_domain_backoff() {
        let ep = Endpoint { host: "mx.a.test".into(), port: 7443, alpn: vec![] };
        assert_eq!(transfer_url("https", &ep), "https://mx.a.test:7443/.well-known/atp/v1/message");
        let ep6 = Endpoint { host: "::1".into(), port: 9, alpn: vec![] };
        assert_eq!(transfer_url("http", &ep6), "http://[::1]:9/.well-known/atp/v1/message");
        let b = Backoff::default().failed(50, &P, 0.0);
        assert_eq!(b, Backoff { failures: 1, blocked_until: 55 });
        assert_eq!(b.failed(54, &P, 0.0), b, "one failure per backoff period");
        assert_eq!(b.failed(55, &P, 0.0), Backoff { failures: 2, blocked_until: 65 });
        assert!(b.blocks(54) && !b.blocks(55));
    }

    #[test]
    fn answers_settle_into_delivered_retry_or_bounce() {
        assert_eq!(settle(Ok(()), 0, 0, Backoff::default(), &P, 5, 0.0), Settlement::Delivered);
        let refused = answer(403, br#"{"error":"ATS validation failed","error_code":"550 5.7.26"}"#).unwrap_err();
        assert_eq!((refused.status, refused.error_code.as_str()), (Some(403), "550 5.7.26"));
        assert!(Failure::answered(&Err(refused.clone())), "a refusal for good means the domain is up");
        assert_eq!(settle(Err(refused.clone()), 0, 0, Backoff::default(), &P, 5, 0.0), Settlement::Bounce(refused));
        let busy = answer(503, b"not json").unwrap_err();
        assert_eq!((busy.outcome, busy.error.as_str()), (Outcome::Temporary, "HTTP 503"));
        assert!(!Failure::answered(&Err(busy)));
        // A temporary failure retries no earlier than the domain's backoff ends.
        let b = Backoff { failures: 3, blocked_until: 90 };
        match settle(Err(temp()), 0, 0, b, &P, 50, 0.0) {
            Settlement::Retry { next_at, error } => {
                assert_eq!((next_at, error.as_str()), (90, "451 4.4.1: refused"));
            }
            other => panic!("{other:?}"),
        }
        // Past the maximum age: bounce with 5.4.7.
        match settle(Err(temp()), 0, 9, Backoff::default(), &P, 1000, 0.0) {
            Settlement::Bounce(f) => assert_eq!((f.error_code.as_str(), f.outcome), ("554 5.4.7", Outcome::Permanent)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bounce_notices_go_back_to_the_sender_signed() {
        let key = DomainKey::from_seed(&[1; 32]);
        let signer = Signer { domain: "a.test", key: &key, selector: "default" };
        let f = Failure::before_answer(Outcome::Permanent, "550 5.1.2", "no ATP service");
        let n = bounce_notice(Bounced { nonce: "n1", from: "x@a.test", to: "y@b.test" }, &f, signer, 7);
        assert_eq!((n.from.as_str(), n.to.as_str()), ("postmaster@a.test", "x@a.test"));
        assert_eq!(n.payload["original_nonce"], "n1");
        assert_eq!(n.payload["error_code"], "550 5.1.2");
        assert!(n.signature.is_some());
    }
}
