//! JavaScript bindings (wasm32 only): the protocol tools of the core for Node, browsers, Deno and
//! Workers. Errors are thrown as `Error` with the core's message.

use serde::Serialize;
use wasm_bindgen::prelude::*;

use crate::keys::{DomainKey, PublicKey};
use crate::message::Message;
use crate::records::atk::AtkRecord;
use crate::records::ats::{AtsAction, AtsPolicy, AtsQualifier};
use crate::records::svcb::SvcbRecord;

#[wasm_bindgen(typescript_custom_section)]
const TS_TYPES: &'static str = r#"
/** A domain key from `generateDomainKey`. */
export interface DomainKey {
  /** The Ed25519 private key as PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`), as the reference writes it. */
  privateKeyPem: string;
  /** The raw 32-byte public key, base64: the `p=` of the domain's ATK record. */
  publicKey: string;
}
/** One directive of an ATS (sender policy) record. */
export interface AtsDirective {
  action: "allow" | "deny";
  kind: "all" | "ip" | "domain";
  /** The network (`10.0.0.0/8`) or domain name; `null` for `all`. */
  value: string | null;
  /** The directive as written, e.g. `allow=ip:10.0.0.0/8`. */
  text: string;
}
/** A parsed ATS record. */
export interface AtsPolicy {
  directives: AtsDirective[];
}
/** A parsed ATK (domain key) record. */
export interface AtkRecord {
  /** The raw 32-byte Ed25519 public key, base64. */
  publicKey: string;
  revoked: boolean;
  /** Unix seconds after which the key is no longer valid, or `null`. */
  expires: number | null;
  /** All `t=` flags as published. */
  flags: string[];
}
/** A parsed SVCB record (presentation RDATA). */
export interface SvcbRecord {
  priority: number;
  /** The target name without its trailing dot, lowercased; `"."` (ServiceMode: the owner name itself). */
  target: string;
  /** The `port=` value, or the ATP default 7443. */
  port: number;
  alpn: string[];
  ipv4hint: string[];
  ipv6hint: string[];
  /** AliasMode (priority 0). */
  alias: boolean;
}
"#;

fn js_err(e: impl std::fmt::Display) -> JsError {
    JsError::new(&e.to_string())
}

fn to_js<T: Serialize>(v: &T) -> Result<JsValue, JsError> {
    v.serialize(&serde_wasm_bindgen::Serializer::json_compatible()).map_err(js_err)
}

/// Unix seconds from `Date.now()`.
fn now() -> i64 {
    (js_sys::Date::now() / 1000.0) as i64
}

/// The reference's canonical form of a JSON text (the bytes ATP signs).
#[wasm_bindgen]
pub fn canonicalize(json: &str) -> Result<String, JsError> {
    crate::canonical::canonicalize_str(json).map_err(js_err)
}

/// RFC 8785 (JCS) canonical form of a JSON text.
#[wasm_bindgen(js_name = canonicalizeJcs)]
pub fn canonicalize_jcs(json: &str) -> Result<String, JsError> {
    crate::jcs::canonicalize_jcs_str(json).map_err(js_err)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GeneratedKey {
    private_key_pem: String,
    public_key: String,
}

/// A new Ed25519 domain key: `{ privateKeyPem, publicKey }` (PKCS#8 PEM, raw-32 base64).
#[wasm_bindgen(js_name = generateDomainKey, unchecked_return_type = "DomainKey")]
pub fn generate_domain_key() -> Result<JsValue, JsError> {
    let key = DomainKey::generate();
    to_js(&GeneratedKey { private_key_pem: key.to_pkcs8_pem().map_err(js_err)?, public_key: key.public_key().to_b64() })
}

/// Signs a message JSON as the server of `domain` does; returns the signed message JSON.
#[wasm_bindgen(js_name = signMessage)]
pub fn sign_message(
    #[wasm_bindgen(js_name = messageJson)] message_json: &str,
    #[wasm_bindgen(js_name = privateKeyPem)] private_key_pem: &str,
    selector: &str,
    domain: &str,
) -> Result<String, JsError> {
    let mut msg = Message::parse(message_json.as_bytes()).map_err(js_err)?;
    let key = DomainKey::from_pkcs8_pem(private_key_pem).map_err(js_err)?;
    crate::sign::sign_message(&mut msg, &key, selector, domain, now()).map_err(js_err)?;
    Ok(msg.to_json())
}

/// Verifies a signed message JSON against a raw-32 base64 public key; returns `true` or throws the
/// reason.
#[wasm_bindgen(js_name = verifyMessage)]
pub fn verify_message(
    #[wasm_bindgen(js_name = messageJson)] message_json: &str,
    #[wasm_bindgen(js_name = publicKey)] public_key_b64: &str,
) -> Result<bool, JsError> {
    let msg = Message::parse(message_json.as_bytes()).map_err(js_err)?;
    let key = PublicKey::from_b64(public_key_b64).map_err(js_err)?;
    crate::sign::verify_message(&msg, &key).map_err(js_err)?;
    Ok(true)
}

#[derive(Serialize)]
struct JsDirective {
    action: &'static str,
    kind: &'static str,
    value: Option<String>,
    text: String,
}

/// Parses an ATS record: `{ directives: [{ action, kind, value, text }] }`.
#[wasm_bindgen(js_name = parseAts, unchecked_return_type = "AtsPolicy")]
pub fn parse_ats(text: &str) -> Result<JsValue, JsError> {
    #[derive(Serialize)]
    struct Out {
        directives: Vec<JsDirective>,
    }
    let policy = AtsPolicy::parse(text).map_err(js_err)?;
    let directives = policy
        .directives
        .iter()
        .map(|d| {
            let action = if d.action == AtsAction::Allow { "allow" } else { "deny" };
            let (kind, value) = match &d.qualifier {
                AtsQualifier::All => ("all", None),
                AtsQualifier::Ip(net) => ("ip", Some(net.to_string())),
                AtsQualifier::Domain(name) => ("domain", Some(name.clone())),
            };
            JsDirective { action, kind, value, text: d.to_string() }
        })
        .collect();
    to_js(&Out { directives })
}

/// Parses an ATK record: `{ publicKey, revoked, expires, flags }`.
#[wasm_bindgen(js_name = parseAtk, unchecked_return_type = "AtkRecord")]
pub fn parse_atk(text: &str) -> Result<JsValue, JsError> {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Out {
        public_key: String,
        revoked: bool,
        expires: Option<i64>,
        flags: Vec<String>,
    }
    let r = AtkRecord::parse(text).map_err(js_err)?;
    let public_key = PublicKey::from_bytes(&r.public_key).map_err(js_err)?.to_b64();
    to_js(&Out { public_key, revoked: r.revoked, expires: r.expires, flags: r.flags })
}

/// Parses SVCB presentation RDATA: `{ priority, target, port, alpn, ipv4hint, ipv6hint, alias }`.
#[wasm_bindgen(js_name = parseSvcb, unchecked_return_type = "SvcbRecord")]
pub fn parse_svcb(text: &str) -> Result<JsValue, JsError> {
    #[derive(Serialize)]
    struct Out {
        priority: u16,
        target: String,
        port: u16,
        alpn: Vec<String>,
        ipv4hint: Vec<String>,
        ipv6hint: Vec<String>,
        alias: bool,
    }
    let r = SvcbRecord::parse(text).map_err(js_err)?;
    to_js(&Out {
        priority: r.priority,
        alias: r.is_alias(),
        port: r.port.unwrap_or(crate::DEFAULT_PORT),
        alpn: r.alpn,
        ipv4hint: r.ipv4hint.iter().map(|i| i.to_string()).collect(),
        ipv6hint: r.ipv6hint.iter().map(|i| i.to_string()).collect(),
        target: r.target,
    })
}
