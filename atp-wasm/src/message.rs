//! The ATP message and its signature envelope (docs/protocol.md §2, §4), with typed validation.
//!
//! Parsing never panics: every malformed input becomes a [`MessageError`]. Unknown top-level keys
//! are dropped, as the reference does (they are neither signed nor stored).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::canonical::{self, CanonError};
use crate::env::ContentHash;
use crate::identity::{AgentId, IdentityError};

/// Longest nonce accepted.
pub const MAX_NONCE_LEN: usize = 128;
/// Most `cc` entries accepted.
pub const MAX_CC: usize = 100;

/// The signature a server attaches before a transfer (docs/protocol.md §4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignatureEnvelope {
    /// `<selector>.atk._atp.<domain>`, also the DNS name of the ATK record.
    pub key_id: String,
    /// Always `ed25519`.
    pub algorithm: String,
    /// Padded standard base64 of the 64-byte Ed25519 signature.
    pub signature: String,
    /// Decorative: the signature always covers the whole canonical message.
    pub headers: Vec<String>,
    /// Unix seconds at signing; not covered by the signature.
    pub timestamp: i64,
}

/// An ATP message. `from`/`to` are kept as received (the canonical form signs the lowercased `from`
/// and the as-received `to`, docs/protocol.md §3); use [`Message::sender`] and [`Message::recipient`] for
/// the normalised identities.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Message {
    pub from: String,
    pub to: String,
    /// Unix seconds, set by the originating client.
    pub timestamp: i64,
    pub nonce: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub payload: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signature: Option<SignatureEnvelope>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cc: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routing: Option<Value>,
}

/// Why a body is not a valid message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error("invalid JSON: {0}")]
    Json(String),
    #[error("message must be a JSON object")]
    NotAnObject,
    #[error("Missing required field: '{0}'")]
    MissingField(&'static str),
    #[error("field '{field}' must be {expected}")]
    WrongType { field: &'static str, expected: &'static str },
    #[error("invalid sender '{id}': {source}")]
    BadSender { id: String, source: IdentityError },
    #[error("invalid recipient '{id}': {source}")]
    BadRecipient { id: String, source: IdentityError },
    #[error("nonce must be 1 to {MAX_NONCE_LEN} printable ASCII characters")]
    BadNonce,
    #[error("cc must be a list of at most {MAX_CC} agent ids")]
    BadCc,
    #[error("invalid signature envelope: {0}")]
    BadEnvelope(String),
}

fn take<'a>(obj: &'a Map<String, Value>, field: &'static str) -> Result<&'a Value, MessageError> {
    obj.get(field).ok_or(MessageError::MissingField(field))
}

fn string(obj: &Map<String, Value>, field: &'static str) -> Result<String, MessageError> {
    take(obj, field)?.as_str().map(str::to_owned).ok_or(MessageError::WrongType { field, expected: "a string" })
}

fn integer(obj: &Map<String, Value>, field: &'static str) -> Result<i64, MessageError> {
    take(obj, field)?.as_i64().ok_or(MessageError::WrongType { field, expected: "an integer (Unix seconds)" })
}

impl SignatureEnvelope {
    /// Validates an envelope object: all five keys present with their types.
    pub fn from_value(v: &Value) -> Result<Self, MessageError> {
        let obj = v.as_object().ok_or_else(|| MessageError::BadEnvelope("not an object".into()))?;
        let env = |e: MessageError| MessageError::BadEnvelope(e.to_string());
        let headers = take(obj, "headers")
            .map_err(env)?
            .as_array()
            .and_then(|a| a.iter().map(|h| h.as_str().map(str::to_owned)).collect::<Option<Vec<_>>>())
            .ok_or_else(|| MessageError::BadEnvelope("headers must be a list of strings".into()))?;
        Ok(SignatureEnvelope {
            key_id: string(obj, "key_id").map_err(env)?,
            algorithm: string(obj, "algorithm").map_err(env)?,
            signature: string(obj, "signature").map_err(env)?,
            headers,
            timestamp: integer(obj, "timestamp").map_err(env)?,
        })
    }
}

impl Message {
    /// Creates an unsigned message as a client does, with a fresh nonce.
    pub fn new(from: &AgentId, to: &AgentId, payload: Value, timestamp: i64) -> Self {
        Message {
            from: from.to_string(),
            to: to.to_string(),
            timestamp,
            nonce: new_nonce(),
            kind: "message".into(),
            payload,
            signature: None,
            cc: Vec::new(),
            routing: None,
        }
    }

    /// Parses a request body (JSON text) into a validated message.
    pub fn parse(body: &[u8]) -> Result<Self, MessageError> {
        let v: Value = serde_json::from_slice(body).map_err(|e| MessageError::Json(e.to_string()))?;
        Self::from_value(v)
    }

    /// Validates a JSON value as a message. Unknown top-level keys are dropped.
    pub fn from_value(v: Value) -> Result<Self, MessageError> {
        let Value::Object(mut obj) = v else {
            return Err(MessageError::NotAnObject);
        };
        // Field order of the reference's "Missing required field" checks.
        let from = string(&obj, "from")?;
        let to = string(&obj, "to")?;
        let timestamp = integer(&obj, "timestamp")?;
        let nonce = string(&obj, "nonce")?;
        let kind = string(&obj, "type")?;
        let payload = obj.remove("payload").ok_or(MessageError::MissingField("payload"))?;
        AgentId::parse(&from).map_err(|source| MessageError::BadSender { id: from.clone(), source })?;
        AgentId::parse(&to).map_err(|source| MessageError::BadRecipient { id: to.clone(), source })?;
        if nonce.is_empty() || nonce.len() > MAX_NONCE_LEN || !nonce.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(MessageError::BadNonce);
        }
        if kind.is_empty() {
            return Err(MessageError::WrongType { field: "type", expected: "a non-empty string" });
        }
        let signature = match obj.get("signature") {
            None | Some(Value::Null) => None,
            Some(v) => Some(SignatureEnvelope::from_value(v)?),
        };
        let cc = match obj.get("cc") {
            None | Some(Value::Null) => Vec::new(),
            // Each entry must be an agent id, validated like `to` (kept as given: it is signed).
            Some(Value::Array(items)) if items.len() <= MAX_CC => items
                .iter()
                .map(|i| i.as_str().filter(|s| crate::identity::AgentId::parse(s).is_ok()).map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or(MessageError::BadCc)?,
            Some(_) => return Err(MessageError::BadCc),
        };
        let routing = obj.remove("routing").filter(|r| !r.is_null());
        Ok(Message { from, to, timestamp, nonce, kind, payload, signature, cc, routing })
    }

    /// The normalised sender.
    pub fn sender(&self) -> Result<AgentId, IdentityError> {
        AgentId::parse(&self.from)
    }

    /// The normalised recipient.
    pub fn recipient(&self) -> Result<AgentId, IdentityError> {
        AgentId::parse(&self.to)
    }

    /// The object that is signed (docs/protocol.md §3): `from,to,timestamp,nonce,type,payload`, plus `cc`
    /// when non-empty and `routing` when not null; never `signature`.
    pub fn signable_value(&self) -> Value {
        let mut m = Map::new();
        m.insert("from".into(), Value::String(self.from.clone()));
        m.insert("to".into(), Value::String(self.to.clone()));
        m.insert("timestamp".into(), Value::from(self.timestamp));
        m.insert("nonce".into(), Value::String(self.nonce.clone()));
        m.insert("type".into(), Value::String(self.kind.clone()));
        m.insert("payload".into(), self.payload.clone());
        if !self.cc.is_empty() {
            m.insert("cc".into(), Value::from(self.cc.clone()));
        }
        if let Some(r) = &self.routing {
            m.insert("routing".into(), r.clone());
        }
        Value::Object(m)
    }

    /// The canonical text that is signed.
    pub fn canonical(&self) -> Result<String, CanonError> {
        canonical::canonicalize(&self.signable_value())
    }

    /// SHA-256 of the canonical text: identifies the content for idempotent retries.
    pub fn content_hash(&self) -> Result<ContentHash, CanonError> {
        Ok(Sha256::digest(self.canonical()?.as_bytes()).into())
    }

    /// Compact JSON, keys in the reference's order.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| String::from("{}"))
    }
}

/// A fresh nonce: `msg-` and 128 random bits in hex (the reference used 48 bits, docs/protocol.md §12.16).
pub fn new_nonce() -> String {
    let mut bytes = [0u8; 16];
    // A failing OS RNG leaves zeros; the time-free fallback would be worse, and getrandom does not
    // fail on the supported targets.
    let _ = getrandom::getrandom(&mut bytes);
    let mut s = String::with_capacity(36);
    s.push_str("msg-");
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = r#"{"from": "Alice@Alpha.test", "to": "Bob@beta.test", "timestamp": 1795545211,
        "nonce": "msg-0123456789ab", "type": "message", "payload": {"body": "hi"}, "extra": 1}"#;

    #[test]
    fn parses_and_drops_unknown_keys() {
        let m = Message::parse(OK.as_bytes()).unwrap();
        assert_eq!(m.from, "Alice@Alpha.test");
        assert_eq!(m.sender().unwrap().to_string(), "alice@alpha.test");
        assert_eq!(m.recipient().unwrap().to_string(), "bob@beta.test");
        assert!(m.signature.is_none() && m.cc.is_empty() && m.routing.is_none());
        assert!(!m.to_json().contains("extra"));
        let back = Message::parse(m.to_json().as_bytes()).unwrap();
        assert_eq!(back, m);
    }

    fn with(field: &str, value: &str) -> Result<Message, MessageError> {
        let mut v: Value = serde_json::from_str(OK).unwrap();
        if value.is_empty() {
            v.as_object_mut().unwrap().remove(field);
        } else {
            v[field] = serde_json::from_str(value).unwrap();
        }
        Message::from_value(v)
    }

    #[test]
    fn typed_errors() {
        assert_eq!(with("nonce", ""), Err(MessageError::MissingField("nonce")));
        assert_eq!(with("payload", ""), Err(MessageError::MissingField("payload")));
        assert!(matches!(
            with("timestamp", r#""1795545211""#),
            Err(MessageError::WrongType { field: "timestamp", .. })
        ));
        assert!(matches!(with("timestamp", "1.5"), Err(MessageError::WrongType { .. })));
        assert!(matches!(with("timestamp", "123456789012345678901234567890"), Err(MessageError::WrongType { .. })));
        assert!(matches!(with("from", r#""nobody""#), Err(MessageError::BadSender { .. })));
        assert!(matches!(with("to", r#""x@y@z""#), Err(MessageError::BadRecipient { .. })));
        assert!(matches!(with("to", "5"), Err(MessageError::WrongType { field: "to", .. })));
        assert_eq!(with("nonce", r#""""#), Err(MessageError::BadNonce));
        assert_eq!(with("nonce", r#""a b""#), Err(MessageError::BadNonce));
        assert_eq!(with("cc", r#"[1]"#), Err(MessageError::BadCc));
        assert_eq!(with("cc", r#""a@b.c""#), Err(MessageError::BadCc));
        assert_eq!(with("cc", r#"["not an id"]"#), Err(MessageError::BadCc));
        assert_eq!(with("cc", r#"["a@b.c", "x@"]"#), Err(MessageError::BadCc));
        assert!(matches!(with("signature", r#"{"key_id": "x"}"#), Err(MessageError::BadEnvelope(_))));
        assert!(matches!(with("signature", r#""sig""#), Err(MessageError::BadEnvelope(_))));
        assert_eq!(Message::parse(b"[1,2]"), Err(MessageError::NotAnObject));
        assert_eq!(Message::parse(b"42"), Err(MessageError::NotAnObject));
        assert!(matches!(Message::parse(b"{"), Err(MessageError::Json(_))));
        assert!(matches!(Message::parse(b"\xff\xfe"), Err(MessageError::Json(_))));
    }

    #[test]
    fn null_signature_and_routing_are_absent_and_empty_cc_is_dropped() {
        let m = with("signature", "null").unwrap();
        assert!(m.signature.is_none());
        let m = with("routing", "null").unwrap();
        assert!(m.routing.is_none());
        let m = with("cc", "[]").unwrap();
        assert!(!m.signable_value().as_object().unwrap().contains_key("cc"));
        let m = with("cc", r#"["c@d.e"]"#).unwrap();
        assert_eq!(m.signable_value()["cc"], serde_json::json!(["c@d.e"]));
    }

    #[test]
    fn hostile_inputs_are_errors_not_panics() {
        let deep = "[".repeat(100_000) + &"]".repeat(100_000);
        assert!(Message::parse(deep.as_bytes()).is_err());
        let deep_payload = format!(
            r#"{{"from":"a@b.c","to":"d@e.f","timestamp":1,"nonce":"n","type":"message","payload":{}1{}}}"#,
            "[".repeat(5000),
            "]".repeat(5000)
        );
        assert!(Message::parse(deep_payload.as_bytes()).is_err());
        let lone = r#"{"from":"a@b.c","to":"d@e.f","timestamp":1,"nonce":"n","type":"message","payload":"\ud800"}"#;
        assert!(Message::parse(lone.as_bytes()).is_err());
        let big = format!(
            r#"{{"from":"a@b.c","to":"d@e.f","timestamp":1,"nonce":"n","type":"message","payload":"{}"}}"#,
            "x".repeat(10 << 20)
        );
        assert!(Message::parse(big.as_bytes()).is_ok(), "size limits are the server's business");
        let huge_num = format!(
            r#"{{"from":"a@b.c","to":"d@e.f","timestamp":1{},"nonce":"n","type":"message","payload":1}}"#,
            "0".repeat(5000)
        );
        assert!(matches!(Message::parse(huge_num.as_bytes()), Err(MessageError::WrongType { .. })));
    }

    #[test]
    fn nonces_are_fresh_and_long() {
        let (a, b) = (new_nonce(), new_nonce());
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert!(a.starts_with("msg-"));
    }
}
