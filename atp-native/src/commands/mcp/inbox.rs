//! Messages as `atp mcp` shows them to a model, and their signatures.
//!
//! A message of the inbox is the stored JSON (docs/protocol.md §6.1 `GET messages`): a remote message
//! keeps the signature its sender's server made (§8.5), local mail has none. [`present`] turns one
//! into what an LLM reads well: sender, recipient, time, subject and body (the payload only when it
//! holds more than those), the nonce, and whether the signature verifies. [`Verifier`] checks a
//! signature the way a receiving server does (`pipeline::check_atk`, docs/protocol.md §5.3) through
//! the resolver the servers of the home use (overrides, local registry, then DNS), or against a
//! given key (`sign::verify_message`, §4).

use std::net::SocketAddr;
use std::time::Duration;

use atp_wasm::env::{Clock, SystemClock};
use atp_wasm::keys::PublicKey;
use atp_wasm::message::Message;
use atp_wasm::ErrorCode;
use serde_json::{json, Map, Value};

use crate::config::FileConfig;
use crate::home::Home;
use crate::resolver::ServerResolver;

/// How long one signature check may wait for DNS.
const VERIFY_TIMEOUT: Duration = Duration::from_secs(10);

/// What is known of a message's signature.
#[derive(Debug, Clone, PartialEq)]
pub enum Signature {
    /// Mail from an agent of the reader's own server: no signature, the sender logged in.
    Local,
    /// A remote message without a signature (a server accepts none such; docs/protocol.md §8.5).
    Missing,
    /// Not checked (the caller asked not to).
    NotChecked {
        key_id: String,
    },
    Verified {
        key_id: String,
    },
    Failed {
        key_id: Option<String>,
        error: String,
        code: &'static str,
    },
}

impl Signature {
    /// `signature_verified`: true, false, or null when there is nothing to verify or it was not
    /// checked.
    pub fn verified(&self) -> Value {
        match self {
            Signature::Verified { .. } => Value::Bool(true),
            Signature::Failed { .. } | Signature::Missing => Value::Bool(false),
            Signature::Local | Signature::NotChecked { .. } => Value::Null,
        }
    }

    pub fn to_value(&self) -> Value {
        match self {
            Signature::Local => json!({"status": "local", "note": "mail from your own server carries no signature"}),
            Signature::Missing => json!({"status": "missing"}),
            Signature::NotChecked { key_id } => json!({"status": "not_checked", "key_id": key_id}),
            Signature::Verified { key_id } => json!({"status": "verified", "key_id": key_id}),
            Signature::Failed { key_id, error, code } => {
                json!({"status": "failed", "key_id": key_id, "error": error, "error_code": code})
            }
        }
    }
}

/// Checks signatures against the senders' published keys, or a given key.
pub struct Verifier {
    /// The home's resolver, or why there is none.
    resolver: Result<ServerResolver, String>,
}

impl Verifier {
    /// The resolver of the home's servers (`config.toml`: overrides, `[delivery] local_registry`
    /// and `dns_server`), with `dns_server` instead when given. Must be called inside a runtime.
    pub fn for_home(home: &Home, dns_server: Option<SocketAddr>) -> Self {
        let resolver = FileConfig::load(&home.config_path()).map_err(|e| e.to_string()).and_then(|mut file| {
            if dns_server.is_some() {
                file.delivery.dns_server = dns_server;
            }
            ServerResolver::for_home(home, &file).map_err(|e| e.to_string())
        });
        Verifier { resolver }
    }

    /// `msg`'s signature against its sender domain's ATK record (docs/protocol.md §5.3). Mail of
    /// `own_domain` without a signature is local mail.
    pub async fn check(&self, msg: &Message, own_domain: &str) -> Signature {
        let Some(env) = &msg.signature else {
            let local = msg.sender().is_ok_and(|s| s.domain() == own_domain);
            return if local { Signature::Local } else { Signature::Missing };
        };
        let key_id = env.key_id.to_ascii_lowercase();
        let failed = |error: String, code: ErrorCode| Signature::Failed {
            key_id: Some(key_id.clone()),
            error,
            code: code.as_str(),
        };
        let sender = match msg.sender() {
            Ok(s) => s,
            Err(e) => return failed(format!("bad sender: {e}"), ErrorCode::InvalidSender),
        };
        let resolver = match &self.resolver {
            Ok(r) => r,
            Err(e) => return failed(format!("no resolver to look the key up: {e}"), ErrorCode::AtkTempError),
        };
        let now = SystemClock.now();
        match tokio::time::timeout(VERIFY_TIMEOUT, atp_wasm::pipeline::check_atk(msg, &sender, resolver, now)).await {
            Ok(Ok(())) => Signature::Verified { key_id },
            Ok(Err(r)) => {
                let detail = r.extra.get("error_message").and_then(Value::as_str);
                let error = match detail {
                    Some(d) => format!("{}: {d}", r.error),
                    None => r.error.clone(),
                };
                failed(error, r.code)
            }
            Err(_) => failed(
                format!("the key lookup took longer than {} s", VERIFY_TIMEOUT.as_secs()),
                ErrorCode::AtkTempError,
            ),
        }
    }

    /// `msg`'s signature against `key` (docs/protocol.md §4).
    pub fn check_with_key(msg: &Message, key: &PublicKey) -> Signature {
        let key_id = msg.signature.as_ref().map(|e| e.key_id.to_ascii_lowercase());
        match atp_wasm::sign::verify_message(msg, key) {
            Ok(()) => Signature::Verified { key_id: key_id.unwrap_or_default() },
            Err(e) => Signature::Failed { key_id, error: e.to_string(), code: ErrorCode::AtkSignature.as_str() },
        }
    }
}

/// One stored message (its JSON text) as a model reads it.
pub fn present(raw: &str, signature: &Signature) -> Value {
    let v: Value = serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_owned()));
    let Value::Object(m) = &v else {
        return json!({"unreadable": raw, "signature_verified": false});
    };
    let mut out = Map::new();
    for k in ["from", "to"] {
        if let Some(x) = m.get(k) {
            out.insert(k.into(), x.clone());
        }
    }
    if let Some(cc) = m.get("cc").filter(|c| c.as_array().is_some_and(|a| !a.is_empty())) {
        out.insert("cc".into(), cc.clone());
    }
    if let Some(ts) = m.get("timestamp").and_then(Value::as_i64) {
        out.insert("time".into(), super::super::utc(ts).into());
    }
    let payload = m.get("payload").cloned().unwrap_or(Value::Null);
    let text = |k: &str| payload.get(k).and_then(Value::as_str).map(str::to_owned);
    let (subject, body) = (text("subject"), text("body"));
    if let Some(s) = subject {
        out.insert("subject".into(), s.into());
    }
    if let Some(b) = body {
        out.insert("body".into(), b.into());
    }
    // The payload itself only when it says more than subject and body (a bounce notice, structured
    // data): the model sees everything, once.
    let simple = payload
        .as_object()
        .is_some_and(|p| p.iter().all(|(k, x)| matches!(k.as_str(), "subject" | "body") && x.is_string()));
    if !simple {
        out.insert("payload".into(), payload);
    }
    if let Some(t) = m.get("type").filter(|t| t.as_str() != Some("message")) {
        out.insert("type".into(), t.clone());
    }
    if let Some(n) = m.get("nonce") {
        out.insert("nonce".into(), n.clone());
    }
    if let Some(ts) = m.get("timestamp") {
        out.insert("timestamp".into(), ts.clone());
    }
    out.insert("signature_verified".into(), signature.verified());
    out.insert("signature".into(), signature.to_value());
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use atp_wasm::env::StaticResolver;
    use atp_wasm::keys::DomainKey;
    use atp_wasm::records::atk::AtkRecord;

    fn signed(payload: Value) -> (Message, DomainKey) {
        let key = DomainKey::from_seed(&[3; 32]);
        let mut m = Message::from_value(json!({
            "from": "alice@alpha.test", "to": "bob@beta.test", "timestamp": 1_795_545_211i64, "nonce": "msg-1",
            "type": "message", "payload": payload
        }))
        .unwrap();
        atp_wasm::sign::sign_message(&mut m, &key, "default", "alpha.test", 1_795_545_211).unwrap();
        (m, key)
    }

    fn verifier(records: &[(&str, String)]) -> Verifier {
        let mut r = StaticResolver::new();
        for (name, text) in records {
            r.add_txt(name, text);
        }
        Verifier { resolver: Ok(ServerResolver { overrides: Some(r), registry: None, dns: None }) }
    }

    #[tokio::test]
    async fn signatures_against_dns_and_a_key() {
        let (m, key) = signed(json!({"body": "hi", "n": 12345678901234567890123u128}));
        let atk = AtkRecord::new(*key.public_key().as_bytes()).to_string();
        let v = verifier(&[("default.atk._atp.alpha.test", atk)]);
        assert_eq!(
            v.check(&m, "beta.test").await,
            Signature::Verified { key_id: "default.atk._atp.alpha.test".into() }
        );

        let none = verifier(&[]);
        let Signature::Failed { code, error, .. } = none.check(&m, "beta.test").await else { panic!("no key") };
        assert_eq!(code, "550 5.7.29");
        assert!(error.contains("ATK key not found"), "{error}");

        let mut tampered = m.clone();
        tampered.payload = json!({"body": "changed"});
        assert!(matches!(
            Verifier::check_with_key(&tampered, &key.public_key()),
            Signature::Failed { code: "550 5.7.28", .. }
        ));
        assert!(matches!(Verifier::check_with_key(&m, &key.public_key()), Signature::Verified { .. }));

        let mut local = m.clone();
        local.signature = None;
        assert_eq!(none.check(&local, "alpha.test").await, Signature::Local);
        assert_eq!(none.check(&local, "beta.test").await, Signature::Missing);
    }

    #[test]
    fn presented_for_a_model() {
        let (m, _) = signed(json!({"subject": "Hello", "body": "Hi Bob"}));
        let ok = Signature::Verified { key_id: "default.atk._atp.alpha.test".into() };
        let v = present(&m.to_json(), &ok);
        assert_eq!(v["from"], "alice@alpha.test");
        assert_eq!((v["subject"].as_str(), v["body"].as_str()), (Some("Hello"), Some("Hi Bob")));
        assert_eq!(v["time"], "2026-11-24 18:33:31 UTC");
        assert_eq!(v["signature_verified"], true);
        assert!(v.get("payload").is_none(), "subject and body say it all: {v}");

        let bounce = json!({"from": "postmaster@beta.test", "to": "bob@beta.test", "timestamp": 1, "nonce": "n",
                            "type": "message", "payload": {"subject": "Undeliverable", "body": "x", "error_code": "550 5.1.1"}});
        let v = present(&bounce.to_string(), &Signature::Local);
        assert_eq!(v["payload"]["error_code"], "550 5.1.1");
        assert_eq!(v["signature_verified"], Value::Null);
        assert_eq!(v["signature"]["status"], "local");

        let data = r#"{"from": "a@x.test", "to": "b@y.test", "timestamp": 1, "nonce": "n", "type": "task",
                       "payload": [1e-05, 123456789012345678901234567890]}"#;
        let v = present(data, &Signature::NotChecked { key_id: "k".into() });
        assert_eq!(v["payload"].to_string(), "[1e-05,123456789012345678901234567890]", "numbers kept exactly");
        assert_eq!(v["type"], "task");
    }
}
