//! The foreign-server transfer matrix (docs/protocol.md §11.3) with atp's corrected outcomes (docs/design.md
//! §3, docs/protocol.md §12): signatures, keys, timestamps, ATS, relaying, orphan mail, shapes and
//! sizes, idempotent repeats and replays. The kit plays the foreign servers: it signs with
//! atp-wasm's signing API and the keys of [`crate::foreign`], and posts with no Authorization.

use atp_wasm::message::Message;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE};
use base64::Engine;
use serde_json::{json, Value};

use crate::case;
use crate::foreign::Sender;
use crate::kit::{nonce_of, now, Case, Ctx, Outcome};

pub fn cases() -> Vec<Case> {
    vec![
        case!("transfer.valid", "§11.3", "202, stored once", valid),
        case!("transfer.repeat_exact", "design §3", "202 again, stored once", repeat_exact),
        case!("transfer.repeat_resigned", "design §3 §4", "202 again, stored once", repeat_resigned),
        case!("transfer.replay_other_content", "§8.4", "400 550 5.7.30", replay_other_content),
        case!("transfer.nonce_other_sender", "design §3 §12.16", "202, both stored", nonce_other_sender),
        case!("transfer.tampered_payload", "§5.3", "403 550 5.7.28", tampered_payload),
        case!("transfer.tampered_to", "§3", "403 550 5.7.28", tampered_to),
        case!("transfer.wrong_key", "§5.3", "403 550 5.7.28", wrong_key),
        case!("transfer.key_id_other_domain", "§4 §5.3", "403 550 5.7.28", key_id_other_domain),
        case!("transfer.key_id_malformed", "§4", "403 550 5.7.28", key_id_malformed),
        case!("transfer.atk_spki", "§5.3", "403 550 5.7.28", atk_spki),
        case!("transfer.atk_revoked", "§5.3", "403 550 5.7.29", atk_revoked),
        case!("transfer.atk_expired", "§5.3", "403 550 5.7.29", atk_expired),
        case!("transfer.atk_version_keytype", "§5.3 §12.9", "403 550 5.7.29", atk_version_keytype),
        case!("transfer.unknown_domain", "§5.3", "403 550 5.7.29", unknown_domain),
        case!("transfer.no_signature", "§5.3", "403 550 5.7.28", no_signature),
        case!("transfer.null_signature", "§2", "403 550 5.7.28", null_signature),
        case!("transfer.envelope_without_headers", "§2 §12.12", "400 550 5.6.0", envelope_without_headers),
        case!("transfer.headers_decorative", "§4", "202", headers_decorative),
        case!("transfer.algorithm_not_ed25519", "§4 §12.9", "403 550 5.7.28", algorithm_rsa),
        case!("transfer.b64_unpadded", "§4", "403 550 5.7.28", b64_unpadded),
        case!("transfer.b64_urlsafe", "§4", "403 550 5.7.28", b64_urlsafe),
        case!("transfer.ts_now_minus_290", "§8.4", "202", ts_minus_290),
        case!("transfer.ts_now_minus_400", "design §3 §12.2", "202 (retry horizon)", ts_minus_400),
        case!("transfer.ts_beyond_horizon", "design §3", "400 550 5.7.31", ts_beyond_horizon),
        case!("transfer.ts_now_plus_120", "§8.4", "400 550 5.7.31", ts_plus_120),
        case!("transfer.ts_string", "§2 §12.12", "400 550 5.6.0", ts_string),
        case!("transfer.from_mixed_case_as_sent", "§3", "403 550 5.7.28", from_mixed_as_sent),
        case!("transfer.from_mixed_case_lowercased", "§3", "202, from stored lowercased", from_mixed_lowercased),
        case!("transfer.to_mixed_case", "§3", "202, stored once", to_mixed_case),
        case!("transfer.ats_deny_ip", "§5.2", "403 550 5.7.26 deny=ip:…", ats_deny_ip),
        case!("transfer.ats_xff_not_trusted", "§5.2 §12.7", "202 (X-Forwarded-For ignored)", ats_xff_allow),
        case!("transfer.ats_xff_cannot_escape_deny", "§5.2 §12.7", "403 550 5.7.26", ats_xff_deny),
        case!("transfer.ats_malformed", "§5.2 §12.8", "403 550 5.7.27", ats_malformed),
        case!("transfer.relay_refused", "design §3 §12.5", "403 550 5.7.1", relay_refused),
        case!("transfer.own_domain_unauthenticated", "§6", "401 535 5.7.8", own_domain_unauthenticated),
        case!("transfer.unknown_local_recipient", "design §3 §12.6", "404 550 5.1.1", unknown_local_recipient),
        case!("transfer.cc_routing_signed", "§2 §3", "202, cc and routing kept", cc_routing),
        case!("transfer.cc_empty_signed", "§3 §12.12", "403 550 5.7.28", cc_empty_signed),
        case!("transfer.cc_empty_unsigned", "§3", "202", cc_empty_unsigned),
        case!("transfer.extra_key_signed", "§2 §3", "403 550 5.7.28", extra_key_signed),
        case!("transfer.extra_key_unsigned", "§2", "202, key dropped", extra_key_unsigned),
        case!("transfer.float_python_form", "§3", "202", float_python),
        case!("transfer.float_rfc8785_form", "§3", "403 550 5.7.28", float_rfc8785),
        case!("transfer.big_integer", "§3", "202, digits kept", big_integer),
        case!("transfer.body_at_limit", "§2", "202 (1048576 bytes)", body_at_limit),
        case!("transfer.body_too_large", "§2", "400 552 5.3.4, max_size", body_too_large),
        case!("transfer.bad_json", "§2", "400 550 5.6.0", bad_json),
        case!("transfer.missing_nonce", "§2", "400 550 5.6.0", missing_nonce),
        case!("transfer.array_body", "§2", "400 550 5.6.0", array_body),
        case!("transfer.number_body", "§2 §12.12", "400 550 5.6.0", number_body),
    ]
}

const SIG: (u16, &str) = (403, "550 5.7.28");
const KEY: (u16, &str) = (403, "550 5.7.29");
const FORMAT: (u16, &str) = (400, "550 5.6.0");

/// Posts `body` (carrying `nonce`); expects a refusal and nothing stored.
async fn refused(cx: &Ctx, body: String, nonce: &str, (status, code): (u16, &str)) -> Outcome {
    cx.refused_not_stored(cx.transfer(body).await, status, code, nonce).await
}

/// Posts `body`; expects 202 and one stored copy.
async fn stored(cx: &Ctx, body: String, nonce: &str) -> Outcome {
    cx.accepted_and_stored(cx.transfer(body).await, nonce, |_| Ok(String::new())).await
}

fn parse(text: &str) -> Value {
    serde_json::from_str(text).expect("the kit's own JSON")
}

async fn valid(cx: &Ctx) -> Outcome {
    let v = cx.transfer_msg();
    let n = nonce_of(&v);
    let payload = v["payload"].clone();
    let from = v["from"].clone();
    let r = cx.transfer(cx.sign(v, Sender::Main)).await;
    cx.accepted_and_stored(r, &n, |m| {
        if m["payload"] == payload && m["from"] == from && m["signature"].is_object() {
            Ok("signature kept".into())
        } else {
            Err(format!("stored as {m}"))
        }
    })
    .await
}

/// The foreign server's 202 was lost; it sends the very same bytes again (docs/design.md §3).
async fn repeat_exact(cx: &Ctx) -> Outcome {
    let v = cx.transfer_msg();
    let n = nonce_of(&v);
    let body = cx.sign(v, Sender::Main);
    let first = cx.accepted(cx.transfer(body.clone()).await, &n);
    first.and(|| async { stored(cx, body, &n).await }).await
}

/// A retry re-signed later: same signature bytes, new envelope timestamp (docs/protocol.md §4).
async fn repeat_resigned(cx: &Ctx) -> Outcome {
    let v = cx.transfer_msg();
    let n = nonce_of(&v);
    let first = cx.accepted(cx.transfer(cx.sign(v.clone(), Sender::Main)).await, &n);
    first
        .and(|| async {
            let again = cx.sign_with(v, Sender::Main, Sender::Main, |m| {
                if let Some(s) = m.signature.as_mut() {
                    s.timestamp += 3600;
                }
            });
            stored(cx, again, &n).await
        })
        .await
}

async fn replay_other_content(cx: &Ctx) -> Outcome {
    let mut v = cx.transfer_msg();
    let n = nonce_of(&v);
    let first = cx.accepted(cx.transfer(cx.sign(v.clone(), Sender::Main)).await, &n);
    first
        .and(|| async {
            v["payload"] = json!({"body": "other content, same nonce"});
            cx.refusal(cx.transfer(cx.sign(v, Sender::Main)).await, 400, "550 5.7.30")
        })
        .await
}

/// Nonces are unique per sender domain, not across the world (docs/protocol.md §12.16).
async fn nonce_other_sender(cx: &Ctx) -> Outcome {
    let v = cx.transfer_msg();
    let n = nonce_of(&v);
    let first = cx.accepted(cx.transfer(cx.sign(v.clone(), Sender::Main)).await, &n);
    first
        .and(|| async {
            let mut w = v.clone();
            w["from"] = json!(cx.foreign_agent(Sender::Second));
            w["payload"] = json!({"body": "same nonce, other sender"});
            let second = cx.accepted(cx.transfer(cx.sign(w, Sender::Second)).await, &n);
            second
                .and(|| async {
                    match cx.inbox(&cx.b).await {
                        Ok(inbox) => {
                            let n = inbox.iter().filter(|m| m["nonce"] == json!(n)).count();
                            if n == 2 {
                                Outcome::pass("both stored")
                            } else {
                                Outcome::fail(format!("{n} stored"))
                            }
                        }
                        Err(e) => Outcome::fail(e),
                    }
                })
                .await
        })
        .await
}

async fn tampered_payload(cx: &Ctx) -> Outcome {
    let v = cx.transfer_msg();
    let n = nonce_of(&v);
    let body = cx.sign_with(v, Sender::Main, Sender::Main, |m| m.payload = json!({"body": "tampered"}));
    refused(cx, body, &n, SIG).await
}

async fn tampered_to(cx: &Ctx) -> Outcome {
    let v = cx.message(&cx.foreign_agent(Sender::Main), &cx.a.id);
    let n = nonce_of(&v);
    let body = cx.sign_with(v, Sender::Main, Sender::Main, |m| m.to = cx.b.id.clone());
    refused(cx, body, &n, SIG).await
}

async fn wrong_key(cx: &Ctx) -> Outcome {
    let v = cx.transfer_msg();
    let n = nonce_of(&v);
    refused(cx, cx.sign_with(v, Sender::Stranger, Sender::Main, |_| {}), &n, SIG).await
}

/// A transfer signed with `signer`'s key whose envelope then names `key_id`: refused, not stored.
async fn refused_with_key_id(cx: &Ctx, signer: Sender, key_id: String) -> Outcome {
    let v = cx.transfer_msg();
    let n = nonce_of(&v);
    let body = cx.sign_with(v, signer, Sender::Main, |m| {
        if let Some(s) = m.signature.as_mut() {
            s.key_id = key_id;
        }
    });
    refused(cx, body, &n, SIG).await
}

async fn key_id_other_domain(cx: &Ctx) -> Outcome {
    let other = format!("default.atk._atp.{}", cx.foreign(Sender::Second));
    refused_with_key_id(cx, Sender::Second, other).await
}

async fn key_id_malformed(cx: &Ctx) -> Outcome {
    let bad = format!("default.{}", cx.foreign(Sender::Main));
    refused_with_key_id(cx, Sender::Main, bad).await
}

/// A message from `s`'s domain signed with its (published, but unusable) key.
async fn from_domain(cx: &Ctx, s: Sender, expect: (u16, &str)) -> Outcome {
    let v = cx.message(&cx.foreign_agent(s), &cx.b.id);
    let n = nonce_of(&v);
    refused(cx, cx.sign(v, s), &n, expect).await
}

async fn atk_spki(cx: &Ctx) -> Outcome {
    from_domain(cx, Sender::Spki, SIG).await
}

async fn atk_revoked(cx: &Ctx) -> Outcome {
    from_domain(cx, Sender::Revoked, KEY).await
}

async fn atk_expired(cx: &Ctx) -> Outcome {
    from_domain(cx, Sender::Expired, KEY).await
}

async fn atk_version_keytype(cx: &Ctx) -> Outcome {
    from_domain(cx, Sender::VersionKey, KEY).await
}

async fn unknown_domain(cx: &Ctx) -> Outcome {
    from_domain(cx, Sender::Unknown, KEY).await
}

async fn no_signature(cx: &Ctx) -> Outcome {
    let v = cx.transfer_msg();
    let n = nonce_of(&v);
    refused(cx, v.to_string(), &n, SIG).await
}

async fn null_signature(cx: &Ctx) -> Outcome {
    let mut v = cx.transfer_msg();
    let n = nonce_of(&v);
    v["signature"] = Value::Null;
    refused(cx, v.to_string(), &n, SIG).await
}

async fn envelope_without_headers(cx: &Ctx) -> Outcome {
    let v = cx.transfer_msg();
    let n = nonce_of(&v);
    let mut signed = parse(&cx.sign(v, Sender::Main));
    if let Some(env) = signed["signature"].as_object_mut() {
        env.remove("headers");
    }
    refused(cx, signed.to_string(), &n, FORMAT).await
}

/// `headers` and the envelope timestamp are not covered and not checked (docs/protocol.md §4).
async fn headers_decorative(cx: &Ctx) -> Outcome {
    let v = cx.transfer_msg();
    let n = nonce_of(&v);
    let body = cx.sign_with(v, Sender::Main, Sender::Main, |m| {
        if let Some(s) = m.signature.as_mut() {
            s.headers = vec!["foo".into()];
            s.timestamp = 0;
        }
    });
    stored(cx, body, &n).await
}

async fn algorithm_rsa(cx: &Ctx) -> Outcome {
    let v = cx.transfer_msg();
    let n = nonce_of(&v);
    let body = cx.sign_with(v, Sender::Main, Sender::Main, |m| {
        if let Some(s) = m.signature.as_mut() {
            s.algorithm = "rsa".into();
        }
    });
    refused(cx, body, &n, SIG).await
}

fn reencode(m: &mut Message, f: impl Fn(&[u8]) -> String) {
    if let Some(s) = m.signature.as_mut() {
        if let Ok(raw) = STANDARD.decode(&s.signature) {
            s.signature = f(&raw);
        }
    }
}

async fn b64_unpadded(cx: &Ctx) -> Outcome {
    let v = cx.transfer_msg();
    let n = nonce_of(&v);
    let body = cx.sign_with(v, Sender::Main, Sender::Main, |m| reencode(m, |b| STANDARD_NO_PAD.encode(b)));
    refused(cx, body, &n, SIG).await
}

/// URL-safe base64 of a signature that has a `+` or `/` (so the two alphabets differ).
async fn b64_urlsafe(cx: &Ctx) -> Outcome {
    for _ in 0..100 {
        let v = cx.transfer_msg();
        let n = nonce_of(&v);
        let plain = Message::parse(cx.sign(v.clone(), Sender::Main).as_bytes()).ok();
        let sig = plain.and_then(|m| m.signature).map(|s| s.signature).unwrap_or_default();
        if sig.contains('+') || sig.contains('/') {
            let body = cx.sign_with(v, Sender::Main, Sender::Main, |m| reencode(m, |b| URL_SAFE.encode(b)));
            return refused(cx, body, &n, SIG).await;
        }
    }
    Outcome::fail("no signature with + or / in 100 tries")
}

async fn at(cx: &Ctx, ts: i64) -> (String, String) {
    let mut v = cx.transfer_msg();
    v["timestamp"] = json!(ts);
    let n = nonce_of(&v);
    (cx.sign(v, Sender::Main), n)
}

async fn ts_minus_290(cx: &Ctx) -> Outcome {
    let (body, n) = at(cx, now() - 290).await;
    stored(cx, body, &n).await
}

/// A retry some minutes after the first attempt must still be accepted (docs/protocol.md §12 item 2).
async fn ts_minus_400(cx: &Ctx) -> Outcome {
    let (body, n) = at(cx, now() - 400).await;
    stored(cx, body, &n).await
}

async fn ts_beyond_horizon(cx: &Ctx) -> Outcome {
    let (body, n) = at(cx, now() - 6 * 86_400).await;
    refused(cx, body, &n, (400, "550 5.7.31")).await
}

async fn ts_plus_120(cx: &Ctx) -> Outcome {
    let (body, n) = at(cx, now() + 120).await;
    refused(cx, body, &n, (400, "550 5.7.31")).await
}

async fn ts_string(cx: &Ctx) -> Outcome {
    let mut v = cx.transfer_msg();
    let n = nonce_of(&v);
    v["timestamp"] = json!(now().to_string());
    // signed over the string, as a sender that believed in it would
    let canonical = atp_wasm::canonical::canonicalize(&signable(&v)).unwrap_or_default();
    refused(cx, cx.sign_bytes(v, &canonical, Sender::Main), &n, FORMAT).await
}

/// The signed subset of a message value, as §3 defines it, but without any validation.
fn signable(v: &Value) -> Value {
    let mut s = serde_json::Map::new();
    for k in ["from", "to", "timestamp", "nonce", "type", "payload"] {
        s.insert(k.into(), v[k].clone());
    }
    Value::Object(s)
}

fn mixed_from(cx: &Ctx) -> String {
    format!("Zed@{}", cx.foreign(Sender::Main).to_uppercase())
}

/// Signed over the mixed-case `from` as sent: receivers verify the lowercased form (§3).
async fn from_mixed_as_sent(cx: &Ctx) -> Outcome {
    let mut v = cx.transfer_msg();
    v["from"] = json!(mixed_from(cx));
    let n = nonce_of(&v);
    let canonical = atp_wasm::canonical::canonicalize(&signable(&v)).unwrap_or_default();
    refused(cx, cx.sign_bytes(v, &canonical, Sender::Main), &n, SIG).await
}

async fn from_mixed_lowercased(cx: &Ctx) -> Outcome {
    let v = cx.transfer_msg();
    let n = nonce_of(&v);
    let lower = v["from"].clone();
    let body = cx.sign_with(v, Sender::Main, Sender::Main, |m| m.from = mixed_from(cx));
    cx.accepted_and_stored(cx.transfer(body).await, &n, |m| {
        if m["from"] == lower {
            Ok("from lowercased".into())
        } else {
            Err(format!("from stored as {}", m["from"]))
        }
    })
    .await
}

async fn to_mixed_case(cx: &Ctx) -> Outcome {
    let mut v = cx.transfer_msg();
    v["to"] = json!(cx.b.id.to_uppercase());
    let n = nonce_of(&v);
    stored(cx, cx.sign(v, Sender::Main), &n).await
}

async fn ats_deny_ip(cx: &Ctx) -> Outcome {
    let v = cx.message(&cx.foreign_agent(Sender::Denied), &cx.b.id);
    let n = nonce_of(&v);
    let r = cx.transfer(cx.sign(v, Sender::Denied)).await;
    let directive = r.as_ref().ok().and_then(|r| r.get("matched_directive")).and_then(Value::as_str).map(str::to_owned);
    cx.refused_not_stored(r, 403, "550 5.7.26", &n)
        .await
        .and(|| async {
            match directive {
                Some(d) if d.starts_with("deny=ip:") => Outcome::pass(d),
                other => Outcome::fail(format!("matched_directive {other:?}")),
            }
        })
        .await
}

/// Headers a client can write never move the ATS source address (docs/protocol.md §12 item 7).
const SPOOF: [(&str, &str); 3] =
    [("x-forwarded-for", "10.1.2.3"), ("x-real-ip", "10.1.2.3"), ("forwarded", "for=10.1.2.3")];

async fn ats_xff_allow(cx: &Ctx) -> Outcome {
    let v = cx.transfer_msg();
    let n = nonce_of(&v);
    let r = cx.transfer_with(cx.sign(v, Sender::Main), &SPOOF).await;
    cx.accepted_and_stored(r, &n, |_| Ok(String::new())).await
}

async fn ats_xff_deny(cx: &Ctx) -> Outcome {
    let v = cx.message(&cx.foreign_agent(Sender::Denied), &cx.b.id);
    let n = nonce_of(&v);
    let r = cx.transfer_with(cx.sign(v, Sender::Denied), &SPOOF).await;
    cx.refused_not_stored(r, 403, "550 5.7.26", &n).await
}

async fn ats_malformed(cx: &Ctx) -> Outcome {
    from_domain(cx, Sender::BadAts, (403, "550 5.7.27")).await
}

async fn relay_refused(cx: &Ctx) -> Outcome {
    let v = cx.message(&cx.foreign_agent(Sender::Main), &format!("carol@elsewhere.{}", cx.cfg.foreign.suffix));
    cx.refusal(cx.transfer(cx.sign(v, Sender::Main)).await, 403, "550 5.7.1")
}

async fn own_domain_unauthenticated(cx: &Ctx) -> Outcome {
    let v = cx.message(&format!("mallory@{}", cx.domain()), &cx.b.id);
    let n = nonce_of(&v);
    refused(cx, v.to_string(), &n, (401, "535 5.7.8")).await
}

async fn unknown_local_recipient(cx: &Ctx) -> Outcome {
    let v = cx.message(&cx.foreign_agent(Sender::Main), &format!("ghost-{}@{}", cx.run_id, cx.domain()));
    cx.refusal(cx.transfer(cx.sign(v, Sender::Main)).await, 404, "550 5.1.1")
}

async fn cc_routing(cx: &Ctx) -> Outcome {
    let mut v = cx.transfer_msg();
    let n = nonce_of(&v);
    let cc = json!([cx.a.id, cx.foreign_agent(Sender::Second)]);
    let routing = json!({"via": [cx.foreign(Sender::Main)], "hops": 1});
    v["cc"] = cc.clone();
    v["routing"] = routing.clone();
    let r = cx.transfer(cx.sign(v, Sender::Main)).await;
    cx.accepted_and_stored(r, &n, |m| {
        if m["cc"] == cc && m["routing"] == routing {
            Ok("cc and routing kept".into())
        } else {
            Err(format!("stored cc {} routing {}", m["cc"], m["routing"]))
        }
    })
    .await
}

/// `cc: []` is not part of the signed form (docs/protocol.md §3): a signature over it fails.
async fn cc_empty_signed(cx: &Ctx) -> Outcome {
    let mut v = cx.transfer_msg();
    let n = nonce_of(&v);
    v["cc"] = json!([]);
    let mut s = signable(&v);
    s["cc"] = json!([]);
    let canonical = atp_wasm::canonical::canonicalize(&s).unwrap_or_default();
    refused(cx, cx.sign_bytes(v, &canonical, Sender::Main), &n, SIG).await
}

async fn cc_empty_unsigned(cx: &Ctx) -> Outcome {
    let v = cx.transfer_msg();
    let n = nonce_of(&v);
    let mut signed = parse(&cx.sign(v, Sender::Main));
    signed["cc"] = json!([]);
    stored(cx, signed.to_string(), &n).await
}

async fn extra_key_signed(cx: &Ctx) -> Outcome {
    let mut v = cx.transfer_msg();
    let n = nonce_of(&v);
    v["extra"] = json!({"not": "a protocol field"});
    let mut s = signable(&v);
    s["extra"] = v["extra"].clone();
    let canonical = atp_wasm::canonical::canonicalize(&s).unwrap_or_default();
    refused(cx, cx.sign_bytes(v, &canonical, Sender::Main), &n, SIG).await
}

async fn extra_key_unsigned(cx: &Ctx) -> Outcome {
    let v = cx.transfer_msg();
    let n = nonce_of(&v);
    let mut signed = parse(&cx.sign(v, Sender::Main));
    signed["extra"] = json!({"not": "a protocol field"});
    cx.accepted_and_stored(cx.transfer(signed.to_string()).await, &n, |m| {
        if m.get("extra").is_none() {
            Ok("extra dropped".into())
        } else {
            Err("extra stored".into())
        }
    })
    .await
}

/// A message whose payload has numbers in the forms of docs/protocol.md §3 (kept as text).
fn with_numbers(cx: &Ctx, numbers: &str) -> Value {
    let mut v = cx.transfer_msg();
    v["payload"] = parse(numbers);
    v
}

const FLOATS: &str = r#"{"small": 1e-05, "tiny": 1e-7, "big": 1e16, "half": 2.5, "one": 1.0, "neg": -0.0}"#;

async fn float_python(cx: &Ctx) -> Outcome {
    let v = with_numbers(cx, FLOATS);
    let n = nonce_of(&v);
    stored(cx, cx.sign(v, Sender::Main), &n).await
}

/// Signed over RFC 8785 bytes (`0.00001`, `1e+16` → `10000000000000000`): not ATP's form.
async fn float_rfc8785(cx: &Ctx) -> Outcome {
    let v = with_numbers(cx, FLOATS);
    let n = nonce_of(&v);
    let Ok(m) = Message::from_value(v.clone()) else { return Outcome::fail("kit: bad message") };
    let jcs = atp_wasm::jcs::canonicalize_jcs(&m.signable_value()).unwrap_or_default();
    if Ok(&jcs) == m.canonical().as_ref() {
        return Outcome::fail("kit: the two forms agree");
    }
    refused(cx, cx.sign_bytes(v, &jcs, Sender::Main), &n, SIG).await
}

async fn big_integer(cx: &Ctx) -> Outcome {
    let digits = "123456789012345678901234567890";
    let v = with_numbers(cx, &format!(r#"{{"n": {digits}, "p60": 1152921504606846976}}"#));
    let n = nonce_of(&v);
    cx.accepted_and_stored(cx.transfer(cx.sign(v, Sender::Main)).await, &n, |m| {
        if m["payload"]["n"].to_string().as_str() == digits {
            Ok("digits kept".into())
        } else {
            Err(format!("stored n = {}", m["payload"]["n"]))
        }
    })
    .await
}

/// A valid signed transfer padded with trailing whitespace to `len` bytes.
fn padded(cx: &Ctx, len: usize) -> (String, String) {
    let v = cx.transfer_msg();
    let n = nonce_of(&v);
    let mut body = cx.sign(v, Sender::Main);
    body.push_str(&" ".repeat(len.saturating_sub(body.len())));
    (body, n)
}

async fn body_at_limit(cx: &Ctx) -> Outcome {
    let (body, n) = padded(cx, atp_wasm::MAX_MESSAGE_SIZE);
    stored(cx, body, &n).await
}

async fn body_too_large(cx: &Ctx) -> Outcome {
    let (body, n) = padded(cx, atp_wasm::MAX_MESSAGE_SIZE + 1);
    let r = cx.transfer(body).await;
    let max = r.as_ref().ok().and_then(|r| r.get("max_size").cloned());
    cx.refused_not_stored(r, 400, "552 5.3.4", &n)
        .await
        .and(|| async {
            match max {
                Some(m) if m == json!(atp_wasm::MAX_MESSAGE_SIZE) => Outcome::pass(format!("max_size {m}")),
                other => Outcome::fail(format!("max_size {other:?}")),
            }
        })
        .await
}

async fn bad_json(cx: &Ctx) -> Outcome {
    cx.refusal(cx.transfer("{\"from\": ".into()).await, FORMAT.0, FORMAT.1)
}

async fn missing_nonce(cx: &Ctx) -> Outcome {
    let mut v = cx.transfer_msg();
    if let Some(o) = v.as_object_mut() {
        o.remove("nonce");
    }
    cx.refusal(cx.transfer(v.to_string()).await, FORMAT.0, FORMAT.1)
}

async fn array_body(cx: &Ctx) -> Outcome {
    cx.refusal(cx.transfer("[]".into()).await, FORMAT.0, FORMAT.1)
}

async fn number_body(cx: &Ctx) -> Outcome {
    cx.refusal(cx.transfer("42".into()).await, FORMAT.0, FORMAT.1)
}
