//! JavaScript bindings (wasm32 only), the API of the npm package `atp-wasm` for Node, browsers, Deno
//! and Workers:
//!
//! * protocol tools (this module): `canonicalize`, `canonicalizeJcs`, `generateDomainKey`,
//!   `signMessage`, `verifyMessage`, `parseAts`, `evaluateAts`, `parseAtk`, `parseSvcb`,
//!   `dnsRecords`;
//! * the agent client `AtpClient` ([`client`]) over the core's [`crate::client`];
//! * DNS: `resolveAtp` and `dohQuery` over DNS over HTTPS ([`crate::doh`]), or any lookup function
//!   ([`dns`]);
//! * [`fetch`]: the only I/O — `fetch`, `Date.now()`, `setTimeout`.
//!
//! The parsers and signers throw plain `Error`s with the core's message. The client, the DNS
//! functions and `verifyMessage` throw `Error`s named `AtpError` carrying `kind`, `status`, `code`
//! and `body` ([`atp_error`]); the package's entry modules export an `AtpError` class that
//! `instanceof` recognises them by.

pub mod client;
pub mod dns;
pub mod fetch;

use js_sys::{Function, Reflect};
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
/**
 * Verifies a signed message (JSON text, or an object that `JSON.stringify` turns into it) against
 * a public key: the raw 32-byte Ed25519 key in base64, as an ATK record's `p=`. Returns `true` or
 * throws an `AtpError` (kind `verify`, or `invalid` for a malformed message or key).
 */
export function verifyMessage(message: string | object, publicKey: string): boolean;
/**
 * Verifies a signed message as a receiving server does (docs/protocol.md §5.3): the `key_id` must name
 * a key of the sender's domain, whose ATK record is looked up through `dns` (a lookup function,
 * `{ lookup }`, or `{ dohUrl }` for DNS over HTTPS) and must be valid now. Resolves to `true` or
 * rejects with an `AtpError` (`status` 403 or 451, `code` `550 5.7.28` / `550 5.7.29` / `451 4.7.29`).
 */
export function verifyMessage(message: string | object, dns: DnsLookup | DnsOptions): Promise<boolean>;
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

/// A plain JS object from a Rust value, through JSON text (`JSON.parse`): smaller in wasm than a
/// direct serializer, and the values are small.
fn to_js<T: Serialize>(v: &T) -> Result<JsValue, JsError> {
    let text = serde_json::to_string(v).map_err(js_err)?;
    js_sys::JSON::parse(&text).map_err(|_| JsError::new("internal: unparsable JSON"))
}

/// Unix seconds from `Date.now()`.
pub(crate) fn now() -> i64 {
    (js_sys::Date::now() / 1000.0) as i64
}

/// An `Error` named `AtpError` with `kind`, `status` (HTTP status, 0 when there was none), `code`
/// (the server's `error_code`, or `null`) and `body` (the server's JSON error object, or `null`).
pub fn atp_error(
    kind: &str,
    status: u16,
    code: Option<&str>,
    message: &str,
    body: Option<&serde_json::Value>,
) -> JsValue {
    let e = js_sys::Error::new(message);
    e.set_name("AtpError");
    let body = body.and_then(|b| js_sys::JSON::parse(&b.to_string()).ok()).unwrap_or(JsValue::NULL);
    for (k, v) in [
        ("kind", JsValue::from_str(kind)),
        ("status", JsValue::from(status)),
        ("code", code.map(JsValue::from_str).unwrap_or(JsValue::NULL)),
        ("body", body),
    ] {
        let _ = Reflect::set(&e, &JsValue::from_str(k), &v);
    }
    e.into()
}

/// An `AtpError` of kind `invalid`: the call itself is wrong.
pub(crate) fn invalid(message: &str) -> JsValue {
    atp_error("invalid", 0, None, message, None)
}

/// `obj[key]`, or `undefined` when `obj` is not an object.
pub(crate) fn field(obj: &JsValue, key: &str) -> JsValue {
    if obj.is_object() || obj.is_function() {
        Reflect::get(obj, &JsValue::from_str(key)).unwrap_or(JsValue::UNDEFINED)
    } else {
        JsValue::UNDEFINED
    }
}

/// An optional string option (`undefined`/`null` → `None`).
pub(crate) fn opt_string(obj: &JsValue, key: &str) -> Result<Option<String>, JsValue> {
    let v = field(obj, key);
    if v.is_undefined() || v.is_null() {
        return Ok(None);
    }
    v.as_string().map(Some).ok_or_else(|| invalid(&format!("option '{key}' must be a string")))
}

/// An optional number option.
pub(crate) fn opt_number(obj: &JsValue, key: &str) -> Result<Option<f64>, JsValue> {
    let v = field(obj, key);
    if v.is_undefined() || v.is_null() {
        return Ok(None);
    }
    v.as_f64().filter(|n| n.is_finite()).map(Some).ok_or_else(|| invalid(&format!("option '{key}' must be a number")))
}

/// An optional function option.
pub(crate) fn opt_function(obj: &JsValue, key: &str) -> Result<Option<Function>, JsValue> {
    let v = field(obj, key);
    if v.is_undefined() || v.is_null() {
        return Ok(None);
    }
    v.dyn_into::<Function>().map(Some).map_err(|_| invalid(&format!("option '{key}' must be a function")))
}

/// A JS value from JSON text.
pub(crate) fn from_json(text: &str) -> Result<JsValue, JsValue> {
    js_sys::JSON::parse(text).map_err(|_| invalid("internal: unparsable JSON"))
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

/// The message text of `message`: a JSON string as is, any other value through `JSON.stringify`
/// (big integers and exact float texts survive only in the string form).
fn message_text(message: &JsValue) -> Result<String, JsValue> {
    if let Some(s) = message.as_string() {
        return Ok(s);
    }
    js_sys::JSON::stringify(message)
        .ok()
        .and_then(|s| s.as_string())
        .ok_or_else(|| invalid("the message must be a JSON string or a JSON-serialisable object"))
}

/// Verifies a signed message (JSON text or object).
///
/// * With a public key (raw 32 bytes, base64, as in an ATK record's `p=`): returns `true` or throws
///   the reason, at once.
/// * With DNS (a lookup function `(name, type) => Promise<string[]>`, or `{ lookup }` /
///   `{ dohUrl }`): checks as a receiving server does (docs/protocol.md §5.3) — the `key_id` must be a key
///   of the sender's domain, whose ATK record is looked up, must be valid now and must verify —
///   and returns a promise of `true`, rejected with an `AtpError` (`status` 403 or 451, `code`
///   `550 5.7.28` / `550 5.7.29` / `451 4.7.29`).
#[wasm_bindgen(js_name = verifyMessage, skip_typescript)]
pub fn verify_message(message: JsValue, key: JsValue) -> Result<JsValue, JsValue> {
    let text = message_text(&message)?;
    let msg = Message::parse(text.as_bytes()).map_err(|e| invalid(&e.to_string()))?;
    if let Some(public_key_b64) = key.as_string() {
        let key = PublicKey::from_b64(&public_key_b64).map_err(|e| invalid(&e.to_string()))?;
        crate::sign::verify_message(&msg, &key).map_err(|e| {
            atp_error("verify", 403, Some(crate::ErrorCode::AtkSignature.as_str()), &e.to_string(), None)
        })?;
        return Ok(JsValue::TRUE);
    }
    let resolver = dns::JsDns::from_options(&key)?;
    Ok(wasm_bindgen_futures::future_to_promise(async move {
        let sender = msg.sender().map_err(|e| invalid(&e.to_string()))?;
        crate::pipeline::check_atk(&msg, &sender, &resolver, now()).await.map_err(|r| rejection_error(&r))?;
        Ok(JsValue::TRUE)
    })
    .into())
}

/// An `AtpError` from a protocol rejection: its status and code, `error_message`/`details` as the
/// message when present.
pub(crate) fn rejection_error(r: &crate::Rejection) -> JsValue {
    let detail = r.extra.get("error_message").or_else(|| r.extra.get("details")).and_then(|v| v.as_str());
    let message = detail.map(str::to_owned).unwrap_or_else(|| r.error.clone());
    atp_error("verify", r.status(), Some(r.code.as_str()), &message, Some(&r.to_json()))
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

#[derive(Serialize)]
struct AtsEvaluation {
    result: &'static str,
    directive: Option<String>,
    reason: Option<String>,
}

/// Evaluates an ATS record (the TXT text at `ats._atp.<domain>`) for a sender connecting from
/// `sourceIp`, as a receiving server does (docs/protocol.md §5.2): `{ result, directive, reason }` with
/// `result` one of `pass`, `fail`, `neutral`, `temperror`, `permerror`. `domain:` directives need
/// `dns` (a lookup function or `{ lookup }` / `{ dohUrl }`); without it they give `temperror`. A
/// malformed record gives `permerror` (the receiver refuses with `550 5.7.27`).
#[wasm_bindgen(js_name = evaluateAts, unchecked_return_type = "Promise<AtsEvaluation>")]
pub fn evaluate_ats(
    record: &str,
    #[wasm_bindgen(js_name = sourceIp)] source_ip: &str,
    #[wasm_bindgen(unchecked_optional_param_type = "DnsLookup | DnsOptions")] dns: JsValue,
) -> Result<js_sys::Promise, JsValue> {
    use crate::records::ats::AtsResult;
    let ip: std::net::IpAddr = source_ip
        .trim()
        .parse()
        .map_err(|_| invalid(&format!("'{}' is not an IP address", crate::records::clip(source_ip))))?;
    let resolver = if dns.is_undefined() || dns.is_null() { dns::JsDns::None } else { dns::JsDns::from_options(&dns)? };
    let record = record.to_owned();
    Ok(wasm_bindgen_futures::future_to_promise(async move {
        let outcome = match AtsPolicy::parse(&record) {
            Ok(policy) => policy.evaluate(ip, &resolver).await,
            Err(e) => AtsResult::PermError(e.to_string()),
        };
        let out = match outcome {
            AtsResult::Pass(d) => AtsEvaluation { result: "pass", directive: Some(d.to_string()), reason: None },
            AtsResult::Fail(d) => AtsEvaluation { result: "fail", directive: Some(d.to_string()), reason: None },
            AtsResult::Neutral => AtsEvaluation { result: "neutral", directive: None, reason: None },
            AtsResult::TempError(r) => AtsEvaluation { result: "temperror", directive: None, reason: Some(r) },
            AtsResult::PermError(r) => AtsEvaluation { result: "permerror", directive: None, reason: Some(r) },
        };
        to_js(&out).map_err(JsValue::from)
    }))
}

/// The zone-file lines that publish an ATP server of `domain` at `ip`, as `atp dns generate` prints
/// them (docs/protocol.md §9): SVCB `_atp.<domain>` → `atp.<domain>`, its A/AAAA record, the ATS record
/// allowing `ip`, and the ATK record of the key. `key` is the raw-32 base64 public key, or the
/// private key PEM from `generateDomainKey`. Options: `selector` (default `default`), `port`
/// (default 7443).
#[wasm_bindgen(js_name = dnsRecords)]
pub fn dns_records(
    domain: &str,
    ip: &str,
    key: &str,
    #[wasm_bindgen(unchecked_optional_param_type = "{ selector?: string; port?: number }")] options: JsValue,
) -> Result<Vec<String>, JsValue> {
    let d = crate::records::normalize_hostname(domain)
        .ok_or_else(|| invalid(&format!("'{}' is not a domain name", crate::records::clip(domain))))?;
    let ip: std::net::IpAddr =
        ip.trim().parse().map_err(|_| invalid(&format!("'{}' is not an IP address", crate::records::clip(ip))))?;
    let public = if key.trim_start().starts_with("-----BEGIN") {
        DomainKey::from_pkcs8_pem(key).map_err(|e| invalid(&e.to_string()))?.public_key()
    } else {
        PublicKey::from_b64(key.trim()).map_err(|e| invalid(&e.to_string()))?
    };
    let selector = opt_string(&options, "selector")?.unwrap_or_else(|| "default".into());
    if crate::records::normalize_hostname(&selector).is_none() || selector.contains('.') {
        return Err(invalid(&format!("selector '{}' is not a DNS label", crate::records::clip(&selector))));
    }
    let port = match opt_number(&options, "port")? {
        None => crate::DEFAULT_PORT,
        Some(p) if (1.0..=65535.0).contains(&p) && p.fract() == 0.0 => p as u16,
        Some(_) => return Err(invalid("option 'port' must be an integer from 1 to 65535")),
    };
    Ok(crate::records::zone_records(&d, ip, port, &[(selector, public.to_b64())]))
}
