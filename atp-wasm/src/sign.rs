//! Signing and verifying messages (docs/protocol.md §4).
//!
//! A server signs the canonical form (§3) of a message with its domain key right before each
//! transfer, replacing any signature already present. Ed25519 is deterministic, so re-signing the
//! same content yields the same signature bytes (only the envelope timestamp changes).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ed25519_dalek::Signature;

use crate::canonical::CanonError;
use crate::keys::{DomainKey, PublicKey};
use crate::message::{Message, SignatureEnvelope};
use crate::records::atk_name;

/// The only signature algorithm ATP defines.
pub const ALGORITHM: &str = "ed25519";

/// The decorative `headers` list the reference writes.
pub const HEADERS: [&str; 5] = ["from", "to", "timestamp", "nonce", "type"];

/// Separator between selector and domain in a `key_id`.
pub const KEY_ID_SEPARATOR: &str = ".atk._atp.";

/// Why a signature does not verify. Each maps to `550 5.7.28` at a receiver.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("Message has no signature")]
    NoSignature,
    #[error("Unsupported signature algorithm '{0}'")]
    Algorithm(String),
    #[error("Invalid base64 signature: {0}")]
    Base64(String),
    #[error("Signature must be 64 bytes, got {0}")]
    Length(usize),
    #[error("Signature verification failed")]
    Mismatch,
    #[error("Message has no canonical form: {0}")]
    Canonical(#[from] CanonError),
}

/// Splits a `key_id` into `(selector, domain)` at the first `.atk._atp.`.
pub fn split_key_id(key_id: &str) -> Option<(&str, &str)> {
    let (sel, dom) = key_id.split_once(KEY_ID_SEPARATOR)?;
    (!sel.is_empty() && !dom.is_empty()).then_some((sel, dom))
}

/// Signs `msg` as the server of `domain` does before a transfer: lowercases `from` (the receiver
/// verifies against the lowercased sender, §3), computes the canonical form and attaches a fresh
/// envelope with key_id `<selector>.atk._atp.<domain>`.
pub fn sign_message(
    msg: &mut Message,
    key: &DomainKey,
    selector: &str,
    domain: &str,
    now: i64,
) -> Result<(), CanonError> {
    msg.from = msg.from.to_ascii_lowercase();
    let canonical = msg.canonical()?;
    let signature = key.sign(canonical.as_bytes());
    msg.signature = Some(SignatureEnvelope {
        key_id: atk_name(selector, domain),
        algorithm: ALGORITHM.into(),
        signature: STANDARD.encode(signature),
        headers: HEADERS.iter().map(|h| (*h).to_owned()).collect(),
        timestamp: now,
    });
    Ok(())
}

/// Verifies `msg`'s signature against `key`: algorithm `ed25519`, strictly decoded padded standard
/// base64, and a strict Ed25519 check over the canonical form with the lowercased `from`.
pub fn verify_message(msg: &Message, key: &PublicKey) -> Result<(), VerifyError> {
    let env = msg.signature.as_ref().ok_or(VerifyError::NoSignature)?;
    if !env.algorithm.eq_ignore_ascii_case(ALGORITHM) {
        return Err(VerifyError::Algorithm(env.algorithm.chars().take(40).collect()));
    }
    let raw = STANDARD.decode(&env.signature).map_err(|e| VerifyError::Base64(e.to_string()))?;
    let bytes: [u8; 64] = raw.as_slice().try_into().map_err(|_| VerifyError::Length(raw.len()))?;
    let signed = signed_view(msg);
    let canonical = signed.canonical()?;
    key.0.verify_strict(canonical.as_bytes(), &Signature::from_bytes(&bytes)).map_err(|_| VerifyError::Mismatch)
}

/// The message as the receiver checks it: `from` lowercased, everything else as received.
fn signed_view(msg: &Message) -> std::borrow::Cow<'_, Message> {
    if msg.from.bytes().any(|b| b.is_ascii_uppercase()) {
        let mut m = msg.clone();
        m.from = m.from.to_ascii_lowercase();
        std::borrow::Cow::Owned(m)
    } else {
        std::borrow::Cow::Borrowed(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key() -> DomainKey {
        DomainKey::from_seed(&[7u8; 32])
    }

    fn msg() -> Message {
        Message::from_value(json!({
            "from": "Alice@Alpha.test", "to": "Bob@Beta.test", "timestamp": 1795545211,
            "nonce": "msg-1", "type": "message", "payload": {"x": 1e-05, "n": 12345678901234567890u64}
        }))
        .unwrap()
    }

    #[test]
    fn sign_then_verify() {
        let mut m = msg();
        sign_message(&mut m, &key(), "default", "alpha.test", 1795545215).unwrap();
        assert_eq!(m.from, "alice@alpha.test");
        let env = m.signature.as_ref().unwrap();
        assert_eq!(env.key_id, "default.atk._atp.alpha.test");
        assert_eq!(env.signature.len(), 88);
        assert_eq!(env.headers, HEADERS);
        verify_message(&m, &key().public_key()).unwrap();
        // re-signing is deterministic apart from the envelope timestamp
        let first = env.signature.clone();
        sign_message(&mut m, &key(), "default", "alpha.test", 1795545999).unwrap();
        assert_eq!(m.signature.as_ref().unwrap().signature, first);
    }

    #[test]
    fn mixed_case_from_verifies_as_lowercased() {
        let mut m = msg();
        sign_message(&mut m, &key(), "default", "alpha.test", 1).unwrap();
        m.from = "ALICE@alpha.TEST".into();
        verify_message(&m, &key().public_key()).unwrap();
    }

    #[test]
    fn tampering_and_bad_envelopes_fail() {
        let mut m = msg();
        sign_message(&mut m, &key(), "default", "alpha.test", 1).unwrap();
        let pk = key().public_key();

        let mut t = m.clone();
        t.payload = json!({"x": 2});
        assert_eq!(verify_message(&t, &pk), Err(VerifyError::Mismatch));
        let mut t = m.clone();
        t.to = "bob@BETA.test".into(); // `to` is signed as received
        assert_eq!(verify_message(&t, &pk), Err(VerifyError::Mismatch));
        let mut t = m.clone();
        t.cc = vec!["c@d.e".into()];
        assert_eq!(verify_message(&t, &pk), Err(VerifyError::Mismatch));
        assert_eq!(verify_message(&m, &DomainKey::from_seed(&[8; 32]).public_key()), Err(VerifyError::Mismatch));

        let env = |f: &dyn Fn(&mut SignatureEnvelope)| {
            let mut t = m.clone();
            f(t.signature.as_mut().unwrap());
            verify_message(&t, &pk)
        };
        assert!(matches!(
            env(&|e| e.signature = e.signature.trim_end_matches('=').into()),
            Err(VerifyError::Base64(_))
        ));
        assert!(matches!(
            env(&|e| e.signature = e.signature.replace('+', "-").replace('/', "_")),
            Err(VerifyError::Base64(_)) | Err(VerifyError::Mismatch)
        ));
        assert!(matches!(env(&|e| e.signature = "AAAA".into()), Err(VerifyError::Length(3))));
        assert!(matches!(env(&|e| e.algorithm = "rsa".into()), Err(VerifyError::Algorithm(_))));
        // headers and envelope timestamp are decorative
        assert_eq!(env(&|e| e.headers = vec!["foo".into()]), Ok(()));
        assert_eq!(env(&|e| e.timestamp = 0), Ok(()));

        let mut t = m.clone();
        t.signature = None;
        assert_eq!(verify_message(&t, &pk), Err(VerifyError::NoSignature));
    }

    #[test]
    fn key_ids() {
        assert_eq!(split_key_id("default.atk._atp.alpha.test"), Some(("default", "alpha.test")));
        assert_eq!(split_key_id("a.atk._atp.b.atk._atp.c"), Some(("a", "b.atk._atp.c")));
        assert_eq!(split_key_id("default._atp.alpha.test"), None);
        assert_eq!(split_key_id(".atk._atp.alpha.test"), None);
    }
}
