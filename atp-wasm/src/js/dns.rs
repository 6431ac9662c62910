//! DNS for JavaScript callers: the core's [`Resolver`] over either a lookup function the caller
//! supplies, `(name, type) => Promise<string[]>` answering presentation-format RDATA, or DNS over
//! HTTPS ([`crate::doh`]) through `fetch`. `resolveAtp` discovers a domain's server and reads its
//! ATS and ATK records; `dohQuery` is one DoH lookup, usable as such a lookup function.

use std::net::IpAddr;

use js_sys::{Array, Function, Promise};
use serde::Serialize;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;

use super::fetch::{error_text, FetchIo};
use super::{atp_error, invalid, opt_function, opt_string, to_js};
use crate::doh::{DohMethod, DohResolver, QueryType};
use crate::env::{DnsError, Resolver};
use crate::keys::PublicKey;
use crate::records::atk::AtkRecord;
use crate::records::svcb::{discover, DiscoveryError, SrvRecord, SvcbRecord};
use crate::records::{atk_name, atp_txt_records, ats_name, clip, normalize_hostname};

#[wasm_bindgen(typescript_custom_section)]
const TS_DNS: &'static str = r#"
/** Record types ATP looks up. */
export type DnsRecordType = "A" | "AAAA" | "TXT" | "SRV" | "SVCB";
/**
 * A DNS lookup: the records of `type` at `name` in presentation form — TXT text with its strings
 * joined, SVCB `1 atp.example.com. alpn="atp/1" port=7443`, SRV `10 5 7443 atp.example.com.`,
 * addresses as usual. No records: `[]`. A failed lookup (SERVFAIL, timeout): throw or reject.
 */
export type DnsLookup = (name: string, type: DnsRecordType) => Promise<string[]> | string[];
/** Where DNS answers come from: a lookup function, or a DNS-over-HTTPS (RFC 8484) endpoint. */
export interface DnsOptions {
  lookup?: DnsLookup;
  /** A DoH endpoint such as `https://cloudflare-dns.com/dns-query` or `https://dns.google/dns-query`. */
  dohUrl?: string;
  /** `GET` (`?dns=`, cacheable; default) or `POST` (`application/dns-message` body). */
  dohMethod?: "GET" | "POST";
  /** A `fetch` for the DoH requests instead of the global one. */
  fetch?: FetchLike;
}
/** Options of `resolveAtp`. */
export interface ResolveOptions extends DnsOptions {
  /** The ATK selector to read (default `default`). */
  selector?: string;
}
/** Where a domain's ATP server listens. */
export interface AtpEndpoint {
  host: string;
  port: number;
  alpn: string[];
  /** `https://host:port`, the base of the server's API. */
  url: string;
}
/** A parsed ATK record with its name. */
export interface AtkKey extends AtkRecord {
  /** The record's name, which is also the signatures' `key_id`. */
  keyId: string;
  /** The record text. */
  record: string;
}
/** What DNS publishes about a domain's ATP service. */
export interface AtpDiscovery {
  domain: string;
  /** The domain's ATP servers, best first; empty when none is published. */
  endpoints: AtpEndpoint[];
  /** The ATS (sender policy) record at `ats._atp.<domain>`, or `null`. */
  ats: string | null;
  /** The valid ATK records at `<selector>.atk._atp.<domain>`. */
  keys: AtkKey[];
}
/** The outcome of `evaluateAts`. */
export interface AtsEvaluation {
  result: "pass" | "fail" | "neutral" | "temperror" | "permerror";
  /** The matching directive, e.g. `deny=ip:10.0.0.0/8`, for pass and fail. */
  directive: string | null;
  /** Why, for temperror and permerror. */
  reason: string | null;
}
"#;

/// Where a JavaScript caller's DNS answers come from.
pub enum JsDns {
    /// No DNS given: every lookup fails.
    None,
    /// A lookup function.
    Lookup(Function),
    /// DNS over HTTPS through `fetch`.
    Doh(DohResolver<FetchIo>),
}

impl JsDns {
    /// From a lookup function, `{ lookup }` or `{ dohUrl, dohMethod?, fetch? }`.
    pub fn from_options(v: &JsValue) -> Result<Self, JsValue> {
        if let Some(f) = v.dyn_ref::<Function>() {
            return Ok(JsDns::Lookup(f.clone()));
        }
        if v.is_object() {
            if let Some(f) = opt_function(v, "lookup")? {
                return Ok(JsDns::Lookup(f));
            }
            if let Some(url) = opt_string(v, "dohUrl")? {
                return Ok(JsDns::Doh(doh_resolver(v, url)?));
            }
        }
        Err(invalid("expected a DNS lookup function, { lookup } or { dohUrl }"))
    }

    /// Presentation-format answers of the lookup function.
    async fn lookup(&self, f: &Function, name: &str, qtype: QueryType) -> Result<Vec<String>, DnsError> {
        let fail = |e: &JsValue| DnsError::new(clip(name), error_text(e));
        let ret = f.call2(&JsValue::UNDEFINED, &JsValue::from_str(name), &JsValue::from_str(qtype.as_str()));
        let value = JsFuture::from(Promise::resolve(&ret.map_err(|e| fail(&e))?)).await.map_err(|e| fail(&e))?;
        if value.is_undefined() || value.is_null() {
            return Ok(Vec::new());
        }
        if !Array::is_array(&value) {
            return Err(DnsError::new(clip(name), format!("the lookup of {} returned no array", qtype.as_str())));
        }
        Array::from(&value)
            .iter()
            .map(|v| v.as_string().ok_or_else(|| DnsError::new(clip(name), "the lookup returned a non-string record")))
            .collect()
    }

    fn parsed<T, E: std::fmt::Display>(
        name: &str,
        texts: Vec<String>,
        parse: impl Fn(&str) -> Result<T, E>,
    ) -> Result<Vec<T>, DnsError> {
        texts
            .iter()
            .map(|t| parse(t).map_err(|e| DnsError::new(clip(name), format!("malformed record '{}': {e}", clip(t)))))
            .collect()
    }
}

fn no_dns(name: &str) -> DnsError {
    DnsError::new(clip(name), "no DNS lookup given")
}

/// `10 5 7443 atp.example.com.` → an SRV record.
fn parse_srv(text: &str) -> Result<SrvRecord, String> {
    let t: Vec<&str> = text.split_ascii_whitespace().collect();
    let [p, w, port, target] = t.as_slice() else {
        return Err("expected 'priority weight port target'".into());
    };
    let num = |s: &str| s.parse::<u16>().map_err(|_| format!("'{}' is not a number", clip(s)));
    Ok(SrvRecord { priority: num(p)?, weight: num(w)?, port: num(port)?, target: (*target).to_owned() })
}

impl Resolver for JsDns {
    async fn txt(&self, name: &str) -> Result<Vec<String>, DnsError> {
        match self {
            JsDns::None => Err(no_dns(name)),
            JsDns::Lookup(f) => self.lookup(f, name, QueryType::Txt).await,
            JsDns::Doh(d) => d.txt(name).await,
        }
    }
    async fn svcb(&self, name: &str) -> Result<Vec<SvcbRecord>, DnsError> {
        match self {
            JsDns::None => Err(no_dns(name)),
            JsDns::Lookup(f) => Self::parsed(name, self.lookup(f, name, QueryType::Svcb).await?, SvcbRecord::parse),
            JsDns::Doh(d) => d.svcb(name).await,
        }
    }
    async fn srv(&self, name: &str) -> Result<Vec<SrvRecord>, DnsError> {
        match self {
            JsDns::None => Err(no_dns(name)),
            JsDns::Lookup(f) => Self::parsed(name, self.lookup(f, name, QueryType::Srv).await?, parse_srv),
            JsDns::Doh(d) => d.srv(name).await,
        }
    }
    async fn ip_addrs(&self, name: &str) -> Result<Vec<IpAddr>, DnsError> {
        match self {
            JsDns::None => Err(no_dns(name)),
            JsDns::Lookup(f) => {
                let mut ips = Vec::new();
                for qtype in [QueryType::A, QueryType::Aaaa] {
                    ips.extend(Self::parsed(name, self.lookup(f, name, qtype).await?, |t| t.trim().parse::<IpAddr>())?);
                }
                Ok(ips)
            }
            JsDns::Doh(d) => d.ip_addrs(name).await,
        }
    }
}

fn doh_resolver(options: &JsValue, url: String) -> Result<DohResolver<FetchIo>, JsValue> {
    let lower = url.to_ascii_lowercase();
    if !(lower.starts_with("https://") || lower.starts_with("http://")) {
        return Err(invalid("dohUrl must be an http(s) URL"));
    }
    let method = match opt_string(options, "dohMethod")?.map(|m| m.to_ascii_uppercase()).as_deref() {
        None | Some("GET") => DohMethod::Get,
        Some("POST") => DohMethod::Post,
        Some(_) => return Err(invalid("dohMethod must be GET or POST")),
    };
    Ok(DohResolver::new(FetchIo::new(opt_function(options, "fetch")?), url, method))
}

fn dns_error(e: &DnsError) -> JsValue {
    atp_error("dns", 0, None, &e.to_string(), None)
}

/// One DNS-over-HTTPS lookup: the records of `type` at `name` in presentation form (see
/// `DnsLookup`). `options`: `{ dohUrl, dohMethod?, fetch? }`. Rejects with an `AtpError` of kind
/// `dns` when the lookup fails; a name without records gives `[]`.
#[wasm_bindgen(js_name = dohQuery, unchecked_return_type = "Promise<string[]>")]
pub fn doh_query(
    name: &str,
    #[wasm_bindgen(js_name = "type", unchecked_param_type = "DnsRecordType")] qtype: &str,
    #[wasm_bindgen(unchecked_param_type = "DnsOptions")] options: JsValue,
) -> Result<Promise, JsValue> {
    let qtype = QueryType::parse(qtype).ok_or_else(|| invalid("type must be A, AAAA, TXT, SRV or SVCB"))?;
    let url = opt_string(&options, "dohUrl")?.ok_or_else(|| invalid("dohQuery needs { dohUrl }"))?;
    let resolver = doh_resolver(&options, url)?;
    let name = name.to_owned();
    Ok(wasm_bindgen_futures::future_to_promise(async move {
        let answers = resolver.query(&name, qtype).await.map_err(|e| dns_error(&e))?;
        Ok(answers.iter().map(|a| JsValue::from_str(&a.to_string())).collect::<Array>().into())
    }))
}

#[derive(Serialize)]
struct JsEndpoint {
    host: String,
    port: u16,
    alpn: Vec<String>,
    url: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsKey {
    key_id: String,
    record: String,
    public_key: String,
    revoked: bool,
    expires: Option<i64>,
    flags: Vec<String>,
}

#[derive(Serialize)]
struct Discovery {
    domain: String,
    endpoints: Vec<JsEndpoint>,
    ats: Option<String>,
    keys: Vec<JsKey>,
}

/// Discovers the ATP service of `domain` from DNS alone (docs/protocol.md §5): its servers (SVCB
/// `_atp.<domain>`, then `_agent.<domain>`, then SRV `_atp._tcp.<domain>`), its ATS record and the
/// ATK records of `options.selector` (default `default`). DNS comes from `options`: `{ dohUrl }`
/// for DNS over HTTPS (RFC 8484), or `{ lookup }`. Rejects with an `AtpError` of kind `dns` when a
/// lookup fails or an SVCB alias chain loops; a domain that publishes nothing has no endpoints.
#[wasm_bindgen(js_name = resolveAtp, unchecked_return_type = "Promise<AtpDiscovery>")]
pub fn resolve_atp(
    domain: &str,
    #[wasm_bindgen(unchecked_param_type = "ResolveOptions")] options: JsValue,
) -> Result<Promise, JsValue> {
    let resolver = JsDns::from_options(&options)?;
    let selector = opt_string(&options, "selector")?.unwrap_or_else(|| "default".into());
    let domain =
        normalize_hostname(domain).ok_or_else(|| invalid(&format!("'{}' is not a domain name", clip(domain))))?;
    if normalize_hostname(&selector).is_none() || selector.contains('.') {
        return Err(invalid(&format!("selector '{}' is not a DNS label", clip(&selector))));
    }
    Ok(wasm_bindgen_futures::future_to_promise(async move {
        let endpoints = match discover(&resolver, &domain).await {
            Ok(eps) => eps,
            Err(DiscoveryError::NotFound { .. }) => Vec::new(),
            Err(e) => return Err(atp_error("dns", 0, None, &e.to_string(), None)),
        };
        let endpoints = endpoints
            .into_iter()
            .map(|e| {
                let url = crate::client::ServerUrl::https(&e.host, e.port).base();
                JsEndpoint { host: e.host, port: e.port, alpn: e.alpn, url }
            })
            .collect();
        let ats_txt = resolver.txt(&ats_name(&domain)).await.map_err(|e| dns_error(&e))?;
        let ats = atp_txt_records(&ats_txt).first().map(|s| (*s).to_owned());
        let key_id = atk_name(&selector, &domain);
        let atk_txt = resolver.txt(&key_id).await.map_err(|e| dns_error(&e))?;
        let keys = atp_txt_records(&atk_txt)
            .into_iter()
            .filter_map(|text| {
                let r = AtkRecord::parse(text).ok()?;
                let public_key = PublicKey::from_bytes(&r.public_key).ok()?.to_b64();
                Some(JsKey {
                    key_id: key_id.clone(),
                    record: text.to_owned(),
                    public_key,
                    revoked: r.revoked,
                    expires: r.expires,
                    flags: r.flags,
                })
            })
            .collect();
        to_js(&Discovery { domain, endpoints, ats, keys }).map_err(JsValue::from)
    }))
}
