//! The reference's own signing vectors (`tests/data/reference-signing.json`, produced by running
//! agent-transfer-protocol 1.0.0a8): our canonical form must match byte for byte, and every
//! signature must verify; signing with the vectors' key must reproduce the reference's signatures.
//! Also: CPython's float repr table and the public RFC 8785 (JCS) test vectors.

use atp_wasm::canonical::{canonicalize, canonicalize_str, parse_json};
use atp_wasm::keys::{DomainKey, PublicKey};
use atp_wasm::message::Message;
use atp_wasm::sign::{sign_message, verify_message};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde_json::{Map, Value};

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

/// The signed object built by hand from the message text (docs/protocol.md §3), independently of
/// `Message`: the six fields (with `from` lowercased), `cc` if non-empty, `routing` if not null.
fn signed_object(message: &Value) -> Value {
    let m = message.as_object().unwrap();
    let mut s = Map::new();
    for key in ["from", "to", "timestamp", "nonce", "type", "payload"] {
        s.insert(key.into(), m[key].clone());
    }
    s["from"] = Value::String(m["from"].as_str().unwrap().to_lowercase());
    if let Some(cc) = m.get("cc").filter(|cc| cc.as_array().is_some_and(|a| !a.is_empty())) {
        s.insert("cc".into(), cc.clone());
    }
    if let Some(routing) = m.get("routing").filter(|r| !r.is_null()) {
        s.insert("routing".into(), routing.clone());
    }
    Value::Object(s)
}

#[test]
fn canonical_form_by_hand_matches_every_reference_vector() {
    let v = vectors();
    for vec in v["vectors"].as_array().unwrap() {
        let name = vec["name"].as_str().unwrap();
        let message = vec["message"].as_str().unwrap();
        let want = vec["canonical"].as_str().unwrap();
        assert_eq!(canonicalize(&signed_object(&parse_json(message).unwrap())).unwrap(), want, "vector {name}");
        // the canonical text is its own canonical form
        assert_eq!(canonicalize_str(want).unwrap(), want, "vector {name}");
        // and serde_json's parser gives the same value
        let via_serde: Value = serde_json::from_str(message).unwrap();
        assert_eq!(canonicalize(&signed_object(&via_serde)).unwrap(), want, "vector {name}");
    }
}

#[test]
fn every_reference_signature_verifies_with_ed25519_dalek() {
    let v = vectors();
    let public: [u8; 32] = STANDARD.decode(v["key"]["public_key_b64"].as_str().unwrap()).unwrap().try_into().unwrap();
    let verifying = VerifyingKey::from_bytes(&public).unwrap();
    let signing = SigningKey::from_bytes(&seed(&v));
    assert_eq!(signing.verifying_key(), verifying);
    for vec in v["vectors"].as_array().unwrap() {
        let name = vec["name"].as_str().unwrap();
        let canonical = canonicalize(&signed_object(&parse_json(vec["message"].as_str().unwrap()).unwrap())).unwrap();
        let sig: [u8; 64] =
            STANDARD.decode(vec["signature"]["signature"].as_str().unwrap()).unwrap().try_into().unwrap();
        let sig = Signature::from_bytes(&sig);
        verifying.verify_strict(canonical.as_bytes(), &sig).unwrap_or_else(|e| panic!("vector {name}: {e}"));
        // Ed25519 is deterministic: the seed reproduces the signature
        assert_eq!(signing.sign(canonical.as_bytes()), sig, "vector {name}");
        // one byte more or less breaks it
        assert!(verifying.verify_strict(format!("{canonical} ").as_bytes(), &sig).is_err(), "vector {name}");
        assert!(verifying.verify_strict(&canonical.as_bytes()[1..], &sig).is_err(), "vector {name}");
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

/// cyberphone/json-canonicalization `testdata` (Apache-2.0), see `data/jcs/README.md`.
#[test]
fn public_jcs_test_vectors() {
    macro_rules! case {
        ($name:literal) => {
            (
                $name,
                include_str!(concat!("data/jcs/", $name, ".input.json")),
                include_str!(concat!("data/jcs/", $name, ".output.json")),
            )
        };
    }
    let cases = [
        case!("arrays"),
        case!("french"),
        case!("simpleString"),
        case!("structures"),
        case!("unicode"),
        case!("values"),
        case!("weird"),
    ];
    for (name, input, output) in cases {
        assert_eq!(atp_wasm::jcs::canonicalize_jcs_str(input).unwrap(), output, "{name}");
        // canonical text is a fixed point
        assert_eq!(atp_wasm::jcs::canonicalize_jcs_str(output).unwrap(), output, "{name}");
    }
    // outhex/simpleString.txt: the output's bytes
    let hex = "22 74 68 69 73 20 69 73 20 61 20 74 65 73 74 20 73 74 72 69 6E 67 20 31 32 33 35 22";
    let bytes: Vec<u8> = hex.split(' ').map(|h| u8::from_str_radix(h, 16).unwrap()).collect();
    assert_eq!(atp_wasm::jcs::canonicalize_jcs_str(cases[2].1).unwrap().as_bytes(), bytes);
}

/// The reference's form agrees with RFC 8785 on these vectors except `weird`, where the key U+FB33
/// sorts before the non-BMP U+1F602 by code point and after it by UTF-16 code unit.
#[test]
fn reference_form_on_jcs_vectors() {
    for (name, input, output) in [
        ("arrays", include_str!("data/jcs/arrays.input.json"), include_str!("data/jcs/arrays.output.json")),
        ("french", include_str!("data/jcs/french.input.json"), include_str!("data/jcs/french.output.json")),
        ("structures", include_str!("data/jcs/structures.input.json"), include_str!("data/jcs/structures.output.json")),
        ("unicode", include_str!("data/jcs/unicode.input.json"), include_str!("data/jcs/unicode.output.json")),
        ("values", include_str!("data/jcs/values.input.json"), include_str!("data/jcs/values.output.json")),
    ] {
        assert_eq!(canonicalize_str(input).unwrap(), output, "{name}");
    }
    let weird = canonicalize_str(include_str!("data/jcs/weird.input.json")).unwrap();
    let jcs = include_str!("data/jcs/weird.output.json");
    assert_ne!(weird, jcs);
    assert_eq!(
        weird,
        "{\"1\":\"One\",\"</script>\":\"Browser Challenge\",\"\u{80}\":\"Control\u{7f}\",\
         \"\u{f6}\":\"Latin Small Letter O With Diaeresis\",\"\u{20ac}\":\"Euro Sign\",\
         \"\u{fb33}\":\"Hebrew Letter Dalet With Dagesh\",\"\u{1f602}\":\"Smiley\"}"
    );
}
