//! wasm-bindgen tests of the JS bindings, run under Node and in headless Chromium
//! (`WASM_BINDGEN_USE_BROWSER=1`) by `scripts/test.sh`.
#![cfg(target_arch = "wasm32")]

use atp_wasm::js;
use serde_json::Value;
use wasm_bindgen::JsValue;
use wasm_bindgen_test::wasm_bindgen_test;

fn vectors() -> Value {
    serde_json::from_str(include_str!("data/reference-signing.json")).unwrap()
}

fn get(obj: &JsValue, key: &str) -> JsValue {
    js_sys::Reflect::get(obj, &JsValue::from_str(key)).unwrap()
}

/// The message of the `Error` a binding throws (panics if it did not fail).
fn thrown<T: std::fmt::Debug, E: Into<JsValue>>(r: Result<T, E>) -> String {
    let e = js_sys::Error::from(r.expect_err("the binding should throw").into());
    e.message().into()
}

/// `verifyMessage(message, publicKey)` with strings, as `true` or the thrown value.
fn verify(message: &str, public_key: &str) -> Result<bool, JsValue> {
    js::verify_message(JsValue::from_str(message), JsValue::from_str(public_key)).map(|v| v.as_bool().unwrap())
}

#[wasm_bindgen_test]
fn canonicalize_matches_the_reference_vectors() {
    for v in vectors()["vectors"].as_array().unwrap() {
        let msg: Value = serde_json::from_str(v["message"].as_str().unwrap()).unwrap();
        let mut signable = serde_json::Map::new();
        for k in ["from", "to", "timestamp", "nonce", "type", "payload"] {
            signable.insert(k.into(), msg[k].clone());
        }
        if msg.get("cc").and_then(Value::as_array).is_some_and(|a| !a.is_empty()) {
            signable.insert("cc".into(), msg["cc"].clone());
        }
        if msg.get("routing").is_some_and(|r| !r.is_null()) {
            signable.insert("routing".into(), msg["routing"].clone());
        }
        let text = Value::Object(signable).to_string();
        assert_eq!(js::canonicalize(&text).unwrap(), v["canonical"].as_str().unwrap(), "{}", v["name"]);
    }
    assert!(thrown(js::canonicalize("{")).starts_with("invalid JSON"));
    assert_eq!(js::canonicalize_jcs(r#"{"b":1e-7,"a":1e16}"#).unwrap(), r#"{"a":10000000000000000,"b":1e-7}"#);
    assert!(thrown(js::canonicalize_jcs(r#"{"a":1,"a":2}"#)).contains("duplicate"));
}

#[wasm_bindgen_test]
fn reference_signatures_verify() {
    let v = vectors();
    let public = v["key"]["public_key_b64"].as_str().unwrap();
    for vec in v["vectors"].as_array().unwrap() {
        let mut msg: Value = serde_json::from_str(vec["message"].as_str().unwrap()).unwrap();
        msg["signature"] = vec["signature"].clone();
        assert!(verify(&msg.to_string(), public).unwrap(), "{}", vec["name"]);
        msg["nonce"] = Value::from("msg-tampered");
        assert_eq!(thrown(verify(&msg.to_string(), public)), "Signature verification failed");
    }
}

#[wasm_bindgen_test]
fn generate_sign_verify_round_trip() {
    let key = js::generate_domain_key().unwrap();
    let pem = get(&key, "privateKeyPem").as_string().unwrap();
    let public = get(&key, "publicKey").as_string().unwrap();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    assert_eq!(public.len(), 44);
    let msg = r#"{"from":"Agent@Web.test","to":"bob@beta.test","timestamp":1800000000,"nonce":"msg-1","type":"message","payload":{"body":"hi","x":1e-05}}"#;
    let signed = js::sign_message(msg, &pem, "default", "web.test").unwrap();
    let parsed: Value = serde_json::from_str(&signed).unwrap();
    assert_eq!(parsed["from"], "agent@web.test");
    assert_eq!(parsed["signature"]["key_id"], "default.atk._atp.web.test");
    assert!(verify(&signed, &public).unwrap());
    let other = get(&js::generate_domain_key().unwrap(), "publicKey").as_string().unwrap();
    assert_eq!(thrown(verify(&signed, &other)), "Signature verification failed");
    assert_eq!(thrown(verify(msg, &public)), "Message has no signature");
    assert!(thrown(verify(&signed, "short")).contains("public key"));
    assert!(thrown(js::sign_message(msg, "not a pem", "default", "web.test")).contains("private key"));
    assert!(thrown(js::sign_message(r#"{"from":"a@b.test"}"#, &pem, "default", "web.test")).contains("'to'"));
}

#[wasm_bindgen_test]
fn record_parsers() {
    let ats = js::parse_ats("v=atp1 allow=ip:10.0.0.0/8 allow=domain:mx.a.test deny=all").unwrap();
    let dirs = js_sys::Array::from(&get(&ats, "directives"));
    assert_eq!(dirs.length(), 3);
    assert_eq!(get(&dirs.get(0), "kind").as_string().unwrap(), "ip");
    assert_eq!(get(&dirs.get(2), "text").as_string().unwrap(), "deny=all");
    assert!(thrown(js::parse_ats("v=spf1 -all")).contains("v=atp1"));

    let v = vectors();
    let p = v["key"]["public_key_b64"].as_str().unwrap().to_owned();
    let reference = js::parse_atk(v["key"]["atk_record"].as_str().unwrap()).unwrap();
    assert_eq!(get(&reference, "publicKey").as_string().unwrap(), p);
    assert_eq!(get(&reference, "revoked").as_bool(), Some(false));
    assert!(get(&reference, "expires").is_null());
    let atk = js::parse_atk(&format!("v=atp1 k=ed25519 p={p} t=s x=1000")).unwrap();
    assert_eq!(get(&atk, "publicKey").as_string().unwrap(), p);
    assert_eq!(get(&atk, "revoked").as_bool(), Some(true));
    assert_eq!(get(&atk, "expires").as_f64(), Some(1000.0));
    assert!(!thrown(js::parse_atk("v=atp1 k=ed25519 p=MCowBQYDK2VwAyEA")).is_empty());
    assert!(thrown(js::parse_atk("v=atp1 k=ed25519")).contains("p="));

    let svcb = js::parse_svcb(r#"1 atp.a.test. alpn="atp/1,h2" port=8443"#).unwrap();
    assert_eq!(get(&svcb, "target").as_string().unwrap(), "atp.a.test");
    assert_eq!(get(&svcb, "port").as_f64(), Some(8443.0));
    assert_eq!(get(&svcb, "alias").as_bool(), Some(false));
    assert_eq!(js_sys::Array::from(&get(&svcb, "alpn")).join(",").as_string().unwrap(), "atp/1,h2");
    assert_eq!(thrown(js::parse_svcb("x")), "invalid priority 'x'");
}
