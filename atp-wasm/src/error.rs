//! Protocol rejections: the `(error_code, message)` pair every layer returns, the one mapping from a
//! code to its HTTP status ([`ErrorCode::status`]), and the one place that turns a rejection into the
//! reference's JSON error shape (docs/protocol.md §5.4, §6.3).

use serde_json::{Map, Value};

/// Stable error codes. The ATS/ATK ones are the reference's (docs/protocol.md §5.4); the others are atp's
/// own, in the same SMTP-like `<reply> <enhanced status>` form, so that every error has a code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// `550 5.7.26` ATS policy failed.
    AtsFail,
    /// `451 4.7.26` ATS lookup failed temporarily.
    AtsTempError,
    /// `550 5.7.27` ATS record malformed.
    AtsSyntax,
    /// `550 5.7.28` ATK signature invalid or missing.
    AtkSignature,
    /// `550 5.7.29` ATK key missing, malformed, revoked or expired.
    AtkKey,
    /// `451 4.7.29` ATK lookup failed temporarily (the reference answers 403 here; a DNS hiccup
    /// must not bounce a message).
    AtkTempError,
    /// `550 5.1.1` no such local agent.
    UnknownRecipient,
    /// `552 5.3.4` body larger than the limit.
    MessageTooLarge,
    /// `550 5.6.0` body is not a well-formed ATP message.
    InvalidFormat,
    /// `553 5.1.7` bad `from` address.
    InvalidSender,
    /// `553 5.1.3` bad `to` address.
    InvalidRecipient,
    /// `550 5.7.30` nonce already used for other content (a replay).
    Replay,
    /// `550 5.7.31` message timestamp outside the accepted window.
    StaleTimestamp,
    /// `550 5.7.1` relaying denied: a remote server may only deliver to our domain.
    RelayDenied,
    /// `535 5.7.8` credential missing or wrong.
    AuthFailed,
    /// `553 5.7.1` authenticated agent is not the message's sender.
    SenderMismatch,
    /// `550 5.7.0` forbidden (admin token, reserved name, registration closed, wrong domain).
    Forbidden,
    /// `550 5.1.6` agent already registered.
    Conflict,
    /// `500 5.5.2` malformed request (bad query, missing parameter).
    BadRequest,
    /// `550 5.1.0` no such resource.
    NotFound,
    /// `451 4.3.0` temporary local failure (DNS, a dedup lookup); the client should retry.
    TempFailure,
    /// `451 4.3.0` storage unavailable (HTTP 503): retry later. The JSON's `storage` field says
    /// why (docs/protocol.md §6.4).
    Unavailable,
    /// `451 4.3.0` the server's disk is full (HTTP 507): retry later.
    StorageFull,
    /// `500 5.5.2` the route exists but not with this method (HTTP 405).
    MethodNotAllowed,
    /// `450 4.7.1` too many failed logins from this address (HTTP 429 with `Retry-After`).
    TooManyRequests,
    /// `452 4.2.2` the recipient's mailbox is full (HTTP 507): a sending server retries later.
    MailboxFull,
    /// `452 4.3.1` the agent has as many open inbox streams and long polls as it may (HTTP 429,
    /// docs/protocol.md §6.5): close one, or retry later.
    TooManyStreams,
    /// `502 5.5.1` this server does not implement the route (HTTP 501; atp-worker's inbox stream
    /// for now, docs/protocol.md §6.5).
    NotImplemented,
}

impl ErrorCode {
    /// Every code, for homes that keep counts by [`ErrorCode::as_str`] outside the process and
    /// read them back (atp-worker's global counters, docs/design.md §4).
    pub const ALL: [ErrorCode; 28] = [
        ErrorCode::AtsFail,
        ErrorCode::AtsTempError,
        ErrorCode::AtsSyntax,
        ErrorCode::AtkSignature,
        ErrorCode::AtkKey,
        ErrorCode::AtkTempError,
        ErrorCode::UnknownRecipient,
        ErrorCode::MessageTooLarge,
        ErrorCode::InvalidFormat,
        ErrorCode::InvalidSender,
        ErrorCode::InvalidRecipient,
        ErrorCode::Replay,
        ErrorCode::StaleTimestamp,
        ErrorCode::RelayDenied,
        ErrorCode::AuthFailed,
        ErrorCode::SenderMismatch,
        ErrorCode::Forbidden,
        ErrorCode::Conflict,
        ErrorCode::BadRequest,
        ErrorCode::NotFound,
        ErrorCode::TempFailure,
        ErrorCode::Unavailable,
        ErrorCode::StorageFull,
        ErrorCode::MethodNotAllowed,
        ErrorCode::TooManyRequests,
        ErrorCode::MailboxFull,
        ErrorCode::TooManyStreams,
        ErrorCode::NotImplemented,
    ];

    /// The code as it appears in the `error_code` JSON field.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::AtsFail => "550 5.7.26",
            ErrorCode::AtsTempError => "451 4.7.26",
            ErrorCode::AtsSyntax => "550 5.7.27",
            ErrorCode::AtkSignature => "550 5.7.28",
            ErrorCode::AtkKey => "550 5.7.29",
            ErrorCode::AtkTempError => "451 4.7.29",
            ErrorCode::UnknownRecipient => "550 5.1.1",
            ErrorCode::MessageTooLarge => "552 5.3.4",
            ErrorCode::InvalidFormat => "550 5.6.0",
            ErrorCode::InvalidSender => "553 5.1.7",
            ErrorCode::InvalidRecipient => "553 5.1.3",
            ErrorCode::Replay => "550 5.7.30",
            ErrorCode::StaleTimestamp => "550 5.7.31",
            ErrorCode::RelayDenied => "550 5.7.1",
            ErrorCode::AuthFailed => "535 5.7.8",
            ErrorCode::SenderMismatch => "553 5.7.1",
            ErrorCode::Forbidden => "550 5.7.0",
            ErrorCode::Conflict => "550 5.1.6",
            ErrorCode::BadRequest => "500 5.5.2",
            ErrorCode::NotFound => "550 5.1.0",
            ErrorCode::TempFailure | ErrorCode::Unavailable | ErrorCode::StorageFull => "451 4.3.0",
            ErrorCode::MethodNotAllowed => "500 5.5.2",
            ErrorCode::TooManyRequests => "450 4.7.1",
            ErrorCode::MailboxFull => "452 4.2.2",
            ErrorCode::TooManyStreams => "452 4.3.1",
            ErrorCode::NotImplemented => "502 5.5.1",
        }
    }

    /// The HTTP status of a refusal with this code: the one mapping (docs/protocol.md §5.4), the
    /// reference's statuses wherever it has one.
    pub fn status(self) -> u16 {
        use ErrorCode::*;
        match self {
            MessageTooLarge | InvalidFormat | InvalidSender | InvalidRecipient | Replay | StaleTimestamp
            | BadRequest => 400,
            AuthFailed => 401,
            AtsFail | AtsSyntax | AtkSignature | AtkKey | RelayDenied | SenderMismatch | Forbidden => 403,
            UnknownRecipient | NotFound => 404,
            MethodNotAllowed => 405,
            Conflict => 409,
            TooManyRequests | TooManyStreams => 429,
            AtsTempError | AtkTempError | TempFailure => 451,
            Unavailable => 503,
            StorageFull | MailboxFull => 507,
            NotImplemented => 501,
        }
    }

    /// True for codes a sender should retry (4.x.x).
    pub fn is_temporary(self) -> bool {
        self.as_str().starts_with('4')
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refusal: a stable code (which decides the HTTP status), the reference's `error` text and any
/// extra JSON fields (`error_message`, `matched_directive`, `max_size`, `details`, `storage`).
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    pub code: ErrorCode,
    pub error: String,
    pub extra: Map<String, Value>,
}

impl Rejection {
    pub fn new(code: ErrorCode, error: impl Into<String>) -> Self {
        Rejection { code, error: error.into(), extra: Map::new() }
    }

    /// The HTTP status of this refusal ([`ErrorCode::status`]).
    pub fn status(&self) -> u16 {
        self.code.status()
    }

    /// Adds an extra field to the JSON body.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extra.insert(key.to_owned(), value.into());
        self
    }

    /// The reference's JSON error shape: `{"error": …, "error_code": …, …extras}`.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("error".into(), Value::String(self.error.clone()));
        m.insert("error_code".into(), Value::String(self.code.as_str().into()));
        for (k, v) in &self.extra {
            m.insert(k.clone(), v.clone());
        }
        Value::Object(m)
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} {}", self.status(), self.code, self.error)
    }
}

impl std::error::Error for Rejection {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_lists_every_code_once() {
        // The match is exhaustive: a new code fails to compile here; list it in `ALL` too.
        for c in ErrorCode::ALL {
            let named = match c {
                ErrorCode::AtsFail
                | ErrorCode::AtsTempError
                | ErrorCode::AtsSyntax
                | ErrorCode::AtkSignature
                | ErrorCode::AtkKey
                | ErrorCode::AtkTempError
                | ErrorCode::UnknownRecipient
                | ErrorCode::MessageTooLarge
                | ErrorCode::InvalidFormat
                | ErrorCode::InvalidSender
                | ErrorCode::InvalidRecipient
                | ErrorCode::Replay
                | ErrorCode::StaleTimestamp
                | ErrorCode::RelayDenied
                | ErrorCode::AuthFailed
                | ErrorCode::SenderMismatch
                | ErrorCode::Forbidden
                | ErrorCode::Conflict
                | ErrorCode::BadRequest
                | ErrorCode::NotFound
                | ErrorCode::TempFailure
                | ErrorCode::Unavailable
                | ErrorCode::StorageFull
                | ErrorCode::MethodNotAllowed
                | ErrorCode::TooManyRequests
                | ErrorCode::MailboxFull
                | ErrorCode::TooManyStreams
                | ErrorCode::NotImplemented => c,
            };
            assert_eq!(ErrorCode::ALL.iter().filter(|x| **x == named).count(), 1, "{c:?} listed once");
        }
    }

    #[test]
    fn json_shape_has_error_code_and_extras() {
        let r = Rejection::new(ErrorCode::AtsFail, "ATS validation failed").with("matched_directive", "deny=all");
        assert_eq!(r.status(), 403);
        assert_eq!(
            r.to_json().to_string(),
            r#"{"error":"ATS validation failed","error_code":"550 5.7.26","matched_directive":"deny=all"}"#
        );
    }

    #[test]
    fn every_code_has_one_status() {
        assert_eq!(ErrorCode::AuthFailed.status(), 401);
        assert_eq!(ErrorCode::UnknownRecipient.status(), 404);
        assert_eq!(ErrorCode::MethodNotAllowed.status(), 405);
        assert_eq!(ErrorCode::Unavailable.status(), 503);
        assert_eq!(ErrorCode::StorageFull.status(), 507);
        // Temporary codes never map to a permanent (4xx other than 408/429/451) status.
        for c in [ErrorCode::AtsTempError, ErrorCode::AtkTempError, ErrorCode::TempFailure] {
            assert_eq!(c.status(), 451);
        }
    }

    #[test]
    fn temporary_codes() {
        assert!(ErrorCode::AtsTempError.is_temporary());
        assert!(ErrorCode::TempFailure.is_temporary());
        assert!(!ErrorCode::AtkKey.is_temporary());
    }
}
