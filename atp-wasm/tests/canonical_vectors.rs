//! The reference's own signing vectors (`tests/data/reference-signing.json`, produced by running
//! agent-transfer-protocol 1.0.0a8): our canonical form must match byte for byte, and every
//! signature must verify; signing with the vectors' key must reproduce the reference's signatures.

use atp_wasm::canonical::canonicalize_str;
use atp_wasm::keys::{DomainKey, PublicKey};
use atp_wasm::message::Message;
use atp_wasm::sign::{sign_message, verify_message};
use serde_json::Value;

fn vectors() -> Value {
    serde_json::from_str(include_str!("data/reference-signing.json")).unwrap()
}

fn seed(v: &Value) -> [u8; 32] {
    let hex = v["key"]["seed_hex"].as_str().unwrap();
    let mut s = [0u8; 32];
    for (i, b) in s.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap();
    }
    s
}

#[test]
fn canonical_form_matches_every_reference_vector() {
    let v = vectors();
    let list = v["vectors"].as_array().unwrap();
    assert_eq!(list.len(), 16);
    for vec in list {
        let name = vec["name"].as_str().unwrap();
        let msg = Message::parse(vec["message"].as_str().unwrap().as_bytes()).unwrap();
        assert_eq!(msg.canonical().unwrap(), vec["canonical"].as_str().unwrap(), "vector {name}");
    }
}

#[test]
fn every_reference_signature_verifies_and_is_reproduced() {
    let v = vectors();
    let public = PublicKey::from_b64(v["key"]["public_key_b64"].as_str().unwrap()).unwrap();
    let key = DomainKey::from_seed(&seed(&v));
    assert_eq!(key.public_key(), public);
    for vec in v["vectors"].as_array().unwrap() {
        let name = vec["name"].as_str().unwrap();
        let mut msg = Message::parse(vec["message"].as_str().unwrap().as_bytes()).unwrap();
        let reference_sig: atp_wasm::SignatureEnvelope = serde_json::from_value(vec["signature"].clone()).unwrap();
        msg.signature = Some(reference_sig.clone());
        verify_message(&msg, &public).unwrap_or_else(|e| panic!("vector {name}: {e}"));
        // tampering breaks it
        let mut t = msg.clone();
        t.nonce.push('x');
        assert!(verify_message(&t, &public).is_err(), "vector {name}");
        // we sign exactly as the reference does
        sign_message(&mut msg, &key, "default", "alpha.test", reference_sig.timestamp).unwrap();
        assert_eq!(msg.signature.unwrap(), reference_sig, "vector {name}");
    }
}

#[test]
fn python_float_repr_table() {
    let table = include_str!("data/python-floats.tsv");
    let mut n = 0;
    for line in table.lines().filter(|l| !l.starts_with('#')) {
        let (token, want) = line.split_once('\t').unwrap();
        assert_eq!(canonicalize_str(token).unwrap(), want, "token {token}");
        n += 1;
    }
    assert_eq!(n, 1200);
}

#[test]
fn public_jcs_test_vectors() {
    for (name, input, output) in [
        ("weird", include_str!("data/jcs/weird.input.json"), include_str!("data/jcs/weird.output.json")),
        ("values", include_str!("data/jcs/values.input.json"), include_str!("data/jcs/values.output.json")),
        ("structures", include_str!("data/jcs/structures.input.json"), include_str!("data/jcs/structures.output.json")),
    ] {
        assert_eq!(atp_wasm::jcs::canonicalize_jcs_str(input).unwrap(), output, "{name}");
    }
}
