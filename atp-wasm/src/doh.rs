//! DNS over HTTPS (RFC 8484), sans-IO: build a DNS query in wire format, wrap it in an HTTP request,
//! and turn the wire-format answer into what [`crate::env::Resolver`] returns (TXT strings, SVCB
//! and SRV records, A/AAAA addresses). The wire format is hickory-proto's (built without its `std`
//! feature, so it compiles to wasm32 with no random source and no I/O).
//!
//! [`DohResolver`] puts the pieces together over any [`HttpTransport`]: `fetch` in the npm package
//! (`resolveAtp`) and in the Cloudflare Workers relay, any HTTP client natively. With it a browser
//! discovers a server (SVCB `_atp` → `_agent` → SRV, [`crate::records::svcb::discover`]) and checks
//! ATS/ATK records without a server's help.
//!
//! Pieces, for a home that drives the HTTP itself:
//!
//! ```
//! use atp_wasm::doh::{self, DohMethod, QueryType};
//! use atp_wasm::http::HttpResponse;
//!
//! let query = doh::encode_query("ats._atp.example.com", QueryType::Txt).unwrap();
//! let request = doh::request("https://cloudflare-dns.com/dns-query", DohMethod::Get, &query);
//! assert!(request.url.starts_with("https://cloudflare-dns.com/dns-query?dns="));
//! // … send `request`, receive `response` …
//! # let response = HttpResponse::new(200, Some(doh::DNS_MESSAGE), query.clone());
//! let answers = doh::decode_http("ats._atp.example.com", QueryType::Txt, &response);
//! # assert!(answers.is_err()); // a query is not an answer
//! ```
//!
//! Rules:
//! * Queries use message id 0 and ask for recursion (RFC 8484 §4.1: id 0 keeps answers cacheable).
//! * NXDOMAIN and an empty answer are "no records" (`Ok(vec![])`); SERVFAIL, REFUSED, other error
//!   codes, a truncated or malformed answer, and any HTTP status but 200 are [`DnsError`]s — temporary
//!   failures in the sense of [`crate::env`].
//! * CNAME chains inside the answer are followed (a recursive resolver includes them); records of
//!   the asked type whose owner is the name or a CNAME target are returned, in answer order.
//! * TXT character-strings are concatenated (docs/protocol.md §5.2); bytes that are not UTF-8 are
//!   replaced. SVCB params other than `port`, `alpn`, `ipv4hint` and `ipv6hint` are ignored, as
//!   [`SvcbRecord::parse`] ignores them.
//! * Answers keep how long they may be cached ([`Answers::ttl`], [`decode_answers`]): the smallest
//!   TTL of the records used, or for "no records" the negative-caching TTL of the authority
//!   section's SOA (RFC 2308 §5). A [`DohResolver`] given an [`AnswerCache`] asks it first and
//!   gives it every decoded answer with that TTL (the worker's per-isolate cache, docs/design.md §4).

use std::net::IpAddr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hickory_proto::op::{Header, HeaderCounts, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::rdata::svcb::{Alpn, IpHint, SvcParamKey};
use hickory_proto::rr::rdata::{A, AAAA, SRV};
use hickory_proto::rr::{Label, Name};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, BinEncodable, BinEncoder};

use crate::env::{DnsError, Resolver};
use crate::http::{HttpRequest, HttpResponse, HttpTransport};
use crate::records::svcb::{SrvRecord, SvcbRecord};

/// The media type of DNS messages (RFC 8484 §6).
pub const DNS_MESSAGE: &str = "application/dns-message";

/// Largest answer accepted (a DNS message is at most 65535 bytes).
pub const MAX_MESSAGE_LEN: usize = 65_535;

// RR TYPE codes, compared as numbers: hickory's `RecordType` conversions match on every type it
// knows, which would put all of them into the wasm module.
const TYPE_A: u16 = 1;
const TYPE_CNAME: u16 = 5;
const TYPE_SOA: u16 = 6;
const TYPE_TXT: u16 = 16;
const TYPE_AAAA: u16 = 28;
const TYPE_SRV: u16 = 33;
const TYPE_SVCB: u16 = 64;
/// CLASS IN.
const CLASS_IN: u16 = 1;

/// The record types ATP looks up (docs/protocol.md §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QueryType {
    A,
    Aaaa,
    Txt,
    Srv,
    Svcb,
}

impl QueryType {
    /// The presentation name (`A`, `AAAA`, `TXT`, `SRV`, `SVCB`).
    pub fn as_str(self) -> &'static str {
        match self {
            QueryType::A => "A",
            QueryType::Aaaa => "AAAA",
            QueryType::Txt => "TXT",
            QueryType::Srv => "SRV",
            QueryType::Svcb => "SVCB",
        }
    }

    /// Reads a presentation name, case-insensitively.
    pub fn parse(name: &str) -> Option<Self> {
        [QueryType::A, QueryType::Aaaa, QueryType::Txt, QueryType::Srv, QueryType::Svcb]
            .into_iter()
            .find(|t| t.as_str().eq_ignore_ascii_case(name))
    }

    /// The RR TYPE code (RFC 1035 §3.2.2, RFC 3596, RFC 2782, RFC 9460).
    pub fn code(self) -> u16 {
        match self {
            QueryType::A => TYPE_A,
            QueryType::Aaaa => TYPE_AAAA,
            QueryType::Txt => TYPE_TXT,
            QueryType::Srv => TYPE_SRV,
            QueryType::Svcb => TYPE_SVCB,
        }
    }
}

/// One decoded answer record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// A TXT record, its character-strings concatenated.
    Txt(String),
    Svcb(SvcbRecord),
    Srv(SrvRecord),
    /// An A or AAAA record.
    Ip(IpAddr),
}

impl std::fmt::Display for Answer {
    /// Presentation form of the RDATA: TXT text as is (unquoted), SVCB as [`SvcbRecord`]'s
    /// `Display`, SRV as `priority weight port target.`, addresses as usual.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Answer::Txt(t) => f.write_str(t),
            Answer::Svcb(s) => s.fmt(f),
            Answer::Srv(s) => {
                let t = if s.target == "." || s.target.ends_with('.') {
                    s.target.clone()
                } else {
                    format!("{}.", s.target)
                };
                write!(f, "{} {} {} {t}", s.priority, s.weight, s.port)
            }
            Answer::Ip(ip) => ip.fmt(f),
        }
    }
}

/// The answers to one query and how long they may be cached.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Answers {
    pub records: Vec<Answer>,
    /// Seconds the answer may be reused: with records, the smallest TTL among the answer records
    /// used (CNAMEs followed included); without (NXDOMAIN, or no record of the type), the
    /// negative-caching TTL `min(SOA TTL, SOA MINIMUM)` of the authority section's SOA (RFC 2308
    /// §5). `None` when the answer says nothing (a negative answer without SOA).
    pub ttl: Option<u32>,
}

fn dns_err(name: &str, reason: impl Into<String>) -> DnsError {
    DnsError::new(crate::records::clip(name), reason)
}

/// A name in the query's form: absolute, from presentation text (letters, digits, `-`, `_`).
fn query_name(name: &str) -> Result<Name, DnsError> {
    let bad = || dns_err(name, "not a valid DNS name");
    let n = crate::records::normalize_hostname(name).ok_or_else(bad)?;
    let mut qname = Name::root();
    for label in n.split('.') {
        qname = qname.append_label(Label::from_raw_bytes(label.as_bytes()).map_err(|_| bad())?).map_err(|_| bad())?;
    }
    Ok(qname)
}

/// A query for `name`/`qtype` in DNS wire format: id 0, RD set, one question, class IN.
pub fn encode_query(name: &str, qtype: QueryType) -> Result<Vec<u8>, DnsError> {
    let qname = query_name(name)?;
    let mut metadata = Metadata::new(0, MessageType::Query, OpCode::Query);
    metadata.recursion_desired = true;
    let header = Header { metadata, counts: HeaderCounts { queries: 1, ..Default::default() } };
    let mut buf = Vec::with_capacity(64);
    let mut enc = BinEncoder::new(&mut buf);
    let failed = |_| dns_err(name, "cannot encode the query");
    header.emit(&mut enc).map_err(failed)?;
    // The question (RFC 1035 §4.1.2): QNAME, QTYPE, QCLASS.
    qname.emit(&mut enc).map_err(failed)?;
    enc.emit_u16(qtype.code()).map_err(failed)?;
    enc.emit_u16(CLASS_IN).map_err(failed)?;
    Ok(buf)
}

/// How to send the query (RFC 8484 §4.1): GET with `?dns=<base64url>` (cacheable; the default)
/// or POST with the message as the body.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DohMethod {
    #[default]
    Get,
    Post,
}

/// The HTTP request carrying `query` to the DoH endpoint `url` (e.g.
/// `https://cloudflare-dns.com/dns-query`).
pub fn request(url: &str, method: DohMethod, query: &[u8]) -> HttpRequest {
    let req = match method {
        DohMethod::Get => {
            let sep = if url.contains('?') { '&' } else { '?' };
            HttpRequest::get(format!("{url}{sep}dns={}", URL_SAFE_NO_PAD.encode(query)))
        }
        DohMethod::Post => HttpRequest::post(url, DNS_MESSAGE, query.to_vec()),
    };
    req.header("accept", DNS_MESSAGE)
}

/// A name as ATP compares names: labels joined by `.`, ASCII-lowercased, no trailing dot; the root
/// is `.`. (Deliberately not hickory's `Display`, which decodes punycode through IDNA tables that
/// would triple the wasm size; ATP names stay in their `xn--` form.)
fn canonical(name: &Name) -> String {
    if name.is_root() {
        return ".".into();
    }
    let labels: Vec<String> = name.iter().map(|l| String::from_utf8_lossy(l).to_ascii_lowercase()).collect();
    labels.join(".")
}

const MALFORMED: &str = "malformed DNS answer";

/// Reads the answer records one by one, decoding only the types ATP asks for (hickory's
/// `Record::read` would link the decoders of every record type into the wasm module).
struct Reader<'a> {
    d: BinDecoder<'a>,
}

impl<'a> Reader<'a> {
    fn u16(&mut self) -> Option<u16> {
        self.d.read_u16().ok().map(|v| v.unverified())
    }
    fn bytes(&mut self, len: usize) -> Option<&'a [u8]> {
        self.d.read_slice(len).ok().map(|v| v.unverified())
    }
    fn name(&mut self) -> Option<Name> {
        Name::read(&mut self.d).ok()
    }
    fn u32(&mut self) -> Option<u32> {
        self.d.read_u32().ok().map(|v| v.unverified())
    }
    /// Skips `n` questions (QNAME, QTYPE, QCLASS).
    fn questions(&mut self, n: u16) -> Option<()> {
        for _ in 0..n {
            self.name()?;
            self.bytes(4)?;
        }
        Some(())
    }
    /// One resource record; `start` is the offset of its RDATA in the message.
    fn record(&mut self) -> Option<Rr<'a>> {
        let owner = self.name()?;
        let rtype = self.u16()?;
        let _class = self.u16()?;
        let ttl = self.u32()?;
        let len = usize::from(self.u16()?);
        let start = self.d.index();
        let rdata = self.bytes(len)?;
        Some(Rr { owner, rtype, ttl, start, rdata })
    }
    /// The negative-caching TTL of the next `n` records (the authority section): the smallest
    /// `min(TTL, MINIMUM)` of its SOA records (RFC 2308 §5); MINIMUM ends the SOA RDATA.
    fn negative_ttl(&mut self, n: u16) -> Option<u32> {
        let mut ttl: Option<u32> = None;
        for _ in 0..n {
            let rr = self.record()?;
            if rr.rtype == TYPE_SOA && rr.rdata.len() >= 20 {
                let minimum = u32::from_be_bytes(rr.rdata[rr.rdata.len() - 4..].try_into().ok()?);
                let t = rr.ttl.min(minimum);
                ttl = Some(ttl.map_or(t, |x| x.min(t)));
            }
        }
        ttl
    }
}

/// A resource record as read: owner, type, TTL and RDATA (at offset `start` of the message).
struct Rr<'a> {
    owner: Name,
    rtype: u16,
    ttl: u32,
    start: usize,
    rdata: &'a [u8],
}

/// TXT RDATA: its character-strings, concatenated.
fn txt(rdata: &[u8]) -> Option<String> {
    let mut d = BinDecoder::new(rdata);
    let mut bytes = Vec::with_capacity(rdata.len());
    while !d.is_empty() {
        bytes.extend_from_slice(d.read_character_data().ok()?.unverified());
    }
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

/// `Some(s)` unless `s` is empty.
fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// SVCB RDATA (RFC 9460 §2.2): priority, target (uncompressed), then `key, length, value` params.
fn svcb(rdata: &[u8]) -> Option<SvcbRecord> {
    let mut r = Reader { d: BinDecoder::new(rdata) };
    let priority = r.u16()?;
    let target = r.name()?;
    let mut rec = SvcbRecord::alias(&canonical(&target));
    rec.priority = priority;
    if rec.is_alias() {
        return Some(rec);
    }
    let mut last_key: Option<u16> = None;
    while !r.d.is_empty() {
        let key = r.u16()?;
        if last_key.is_some_and(|k| k >= key) {
            return None; // RFC 9460 §2.2: keys strictly increasing
        }
        last_key = Some(key);
        let len = usize::from(r.u16()?);
        let value = r.bytes(len)?;
        let mut v = BinDecoder::new(value);
        match SvcParamKey::from(key) {
            // An alpn-id is 1 to 255 bytes (RFC 7301 §3.1, RFC 9460 §7.1.1); hickory reads empty ones.
            SvcParamKey::Alpn => {
                rec.alpn = Alpn::read(&mut v).ok()?.0.into_iter().map(non_empty).collect::<Option<_>>()?
            }
            SvcParamKey::Port => rec.port = Some(u16::from_be_bytes(value.try_into().ok()?)),
            SvcParamKey::Ipv4Hint => rec.ipv4hint = IpHint::<A>::read(&mut v).ok()?.0.iter().map(|a| a.0).collect(),
            SvcParamKey::Ipv6Hint => rec.ipv6hint = IpHint::<AAAA>::read(&mut v).ok()?.0.iter().map(|a| a.0).collect(),
            _ => {}
        }
    }
    Some(rec)
}

/// The answers to `name`/`qtype` in a wire-format response (see the module documentation for the
/// rules).
pub fn decode_response(name: &str, qtype: QueryType, wire: &[u8]) -> Result<Vec<Answer>, DnsError> {
    decode_answers(name, qtype, wire).map(|a| a.records)
}

/// [`decode_response`], with how long the answer may be cached ([`Answers::ttl`]).
pub fn decode_answers(name: &str, qtype: QueryType, wire: &[u8]) -> Result<Answers, DnsError> {
    let qname = canonical(&query_name(name)?);
    if wire.len() > MAX_MESSAGE_LEN {
        return Err(dns_err(name, "DNS answer too long"));
    }
    let mut r = Reader { d: BinDecoder::new(wire) };
    let header = Header::read(&mut r.d).map_err(|_| dns_err(name, MALFORMED))?;
    if header.metadata.message_type != MessageType::Response {
        return Err(dns_err(name, "not a DNS response"));
    }
    if header.metadata.truncation {
        return Err(dns_err(name, "truncated DNS answer"));
    }
    let counts = header.counts;
    match header.metadata.response_code {
        ResponseCode::NoError => {}
        // No records, whatever follows; the rest is read only for its negative-caching TTL.
        ResponseCode::NXDomain => {
            let ttl = (|| {
                r.questions(counts.queries)?;
                for _ in 0..counts.answers {
                    r.record()?;
                }
                r.negative_ttl(counts.authorities)
            })();
            return Ok(Answers { records: Vec::new(), ttl });
        }
        rc => return Err(dns_err(name, format!("DNS error {}", u16::from(rc)))),
    }
    r.questions(counts.queries).ok_or_else(|| dns_err(name, MALFORMED))?;
    let mut owners = vec![qname];
    let mut out = Vec::new();
    let mut ttl: Option<u32> = None;
    for _ in 0..counts.answers {
        let rr = r.record().ok_or_else(|| dns_err(name, MALFORMED))?;
        if !owners.contains(&canonical(&rr.owner)) {
            continue;
        }
        // Names inside RDATA may be compressed (pointers into the whole message): decode those
        // from the message at the RDATA's offset.
        let at_rdata = || {
            let mut d = BinDecoder::new(wire);
            d.read_slice(rr.start).ok()?;
            Some(d)
        };
        let bad = || dns_err(name, MALFORMED);
        let answer = match (rr.rtype, qtype) {
            (TYPE_CNAME, _) => {
                let mut d = at_rdata().ok_or_else(bad)?;
                let target = canonical(&Name::read(&mut d).map_err(|_| bad())?);
                if owners.len() <= 16 && !owners.contains(&target) {
                    owners.push(target);
                }
                ttl = Some(ttl.map_or(rr.ttl, |t| t.min(rr.ttl)));
                continue;
            }
            (TYPE_TXT, QueryType::Txt) => Answer::Txt(txt(rr.rdata).ok_or_else(bad)?),
            (TYPE_SVCB, QueryType::Svcb) => Answer::Svcb(svcb(rr.rdata).ok_or_else(bad)?),
            (TYPE_SRV, QueryType::Srv) => {
                let mut d = at_rdata().ok_or_else(bad)?;
                let s = SRV::read(&mut d).map_err(|_| bad())?;
                Answer::Srv(SrvRecord {
                    priority: s.priority,
                    weight: s.weight,
                    port: s.port,
                    target: canonical(&s.target),
                })
            }
            (TYPE_A, QueryType::A) => {
                Answer::Ip(IpAddr::V4(A::read(&mut BinDecoder::new(rr.rdata)).map_err(|_| bad())?.0))
            }
            (TYPE_AAAA, QueryType::Aaaa) => {
                Answer::Ip(IpAddr::V6(AAAA::read(&mut BinDecoder::new(rr.rdata)).map_err(|_| bad())?.0))
            }
            _ => continue,
        };
        ttl = Some(ttl.map_or(rr.ttl, |t| t.min(rr.ttl)));
        out.push(answer);
    }
    if out.is_empty() {
        // NODATA: cached like NXDOMAIN, by the SOA (RFC 2308 §5); a malformed authority section
        // only costs the TTL.
        ttl = r.negative_ttl(counts.authorities);
    }
    Ok(Answers { records: out, ttl })
}

/// The answers in a DoH HTTP response: status 200 and a DNS message body; anything else is a
/// [`DnsError`]. (The content type is not checked: some resolvers label answers loosely.)
pub fn decode_http(name: &str, qtype: QueryType, resp: &HttpResponse) -> Result<Vec<Answer>, DnsError> {
    decode_http_answers(name, qtype, resp).map(|a| a.records)
}

/// [`decode_http`], with how long the answer may be cached.
pub fn decode_http_answers(name: &str, qtype: QueryType, resp: &HttpResponse) -> Result<Answers, DnsError> {
    if resp.status != 200 {
        return Err(dns_err(name, format!("DoH server answered HTTP {}", resp.status)));
    }
    decode_answers(name, qtype, &resp.body)
}

/// Decoded answers kept for their TTL, consulted by a [`DohResolver`] before it asks the network.
/// Failed lookups are never offered. `()` caches nothing.
pub trait AnswerCache {
    /// The answer to `name`/`qtype`, if one is still fresh.
    fn get(&self, name: &str, qtype: QueryType) -> Option<Vec<Answer>>;
    /// A decoded answer, with how long it may be kept ([`Answers::ttl`]).
    fn put(&self, name: &str, qtype: QueryType, answers: &Answers);
}

impl AnswerCache for () {
    fn get(&self, _: &str, _: QueryType) -> Option<Vec<Answer>> {
        None
    }
    fn put(&self, _: &str, _: QueryType, _: &Answers) {}
}

/// A [`Resolver`] that asks a DoH endpoint over the transport `T`, and first the cache `C`.
#[derive(Debug, Clone)]
pub struct DohResolver<T, C = ()> {
    transport: T,
    url: String,
    method: DohMethod,
    cache: C,
}

impl<T: HttpTransport> DohResolver<T> {
    /// A resolver using the DoH endpoint `url` (e.g. `https://cloudflare-dns.com/dns-query`).
    pub fn new(transport: T, url: impl Into<String>, method: DohMethod) -> Self {
        DohResolver { transport, url: url.into(), method, cache: () }
    }

    /// The same resolver, answering from `cache` while its answers are fresh.
    pub fn with_cache<C: AnswerCache>(self, cache: C) -> DohResolver<T, C> {
        DohResolver { transport: self.transport, url: self.url, method: self.method, cache }
    }
}

impl<T: HttpTransport, C: AnswerCache> DohResolver<T, C> {
    pub fn transport(&self) -> &T {
        &self.transport
    }

    pub fn cache(&self) -> &C {
        &self.cache
    }

    /// One query, decoded, with its TTL (asks the network even when the cache has the answer).
    pub async fn query_answers(&self, name: &str, qtype: QueryType) -> Result<Answers, DnsError> {
        let wire = encode_query(name, qtype)?;
        let resp = self
            .transport
            .send(request(&self.url, self.method, &wire))
            .await
            .map_err(|e| dns_err(name, format!("DoH request failed: {e}")))?;
        decode_http_answers(name, qtype, &resp)
    }

    /// One query, decoded: from the cache while fresh, else from the network (and then cached).
    pub async fn query(&self, name: &str, qtype: QueryType) -> Result<Vec<Answer>, DnsError> {
        if let Some(hit) = self.cache.get(name, qtype) {
            return Ok(hit);
        }
        let answers = self.query_answers(name, qtype).await?;
        self.cache.put(name, qtype, &answers);
        Ok(answers.records)
    }
}

impl<T: HttpTransport, C: AnswerCache> Resolver for DohResolver<T, C> {
    async fn txt(&self, name: &str) -> Result<Vec<String>, DnsError> {
        let answers = self.query(name, QueryType::Txt).await?;
        Ok(answers.into_iter().filter_map(|a| if let Answer::Txt(t) = a { Some(t) } else { None }).collect())
    }
    async fn svcb(&self, name: &str) -> Result<Vec<SvcbRecord>, DnsError> {
        let answers = self.query(name, QueryType::Svcb).await?;
        Ok(answers.into_iter().filter_map(|a| if let Answer::Svcb(s) = a { Some(s) } else { None }).collect())
    }
    async fn srv(&self, name: &str) -> Result<Vec<SrvRecord>, DnsError> {
        let answers = self.query(name, QueryType::Srv).await?;
        Ok(answers.into_iter().filter_map(|a| if let Answer::Srv(s) = a { Some(s) } else { None }).collect())
    }
    /// A then AAAA; either failing fails the lookup.
    async fn ip_addrs(&self, name: &str) -> Result<Vec<IpAddr>, DnsError> {
        let mut ips = Vec::new();
        for qtype in [QueryType::A, QueryType::Aaaa] {
            for a in self.query(name, qtype).await? {
                if let Answer::Ip(ip) = a {
                    ips.push(ip);
                }
            }
        }
        Ok(ips)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::HttpError;
    use crate::records::svcb::{discover, DiscoveryError, Endpoint};
    use futures::executor::block_on;
    use hickory_proto::op::{Message, Query};
    use hickory_proto::rr::rdata::svcb::{Alpn, EchConfigList, IpHint, Mandatory, SvcParamValue, SVCB};
    use hickory_proto::rr::rdata::{CNAME, SOA, TXT};
    use hickory_proto::rr::RecordType;
    use hickory_proto::rr::{RData, Record};
    use std::cell::RefCell;
    use std::collections::HashMap;

    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    /// A real DNS response built by hickory-proto: the question, then `answers`.
    fn response(q: &str, qtype: RecordType, rcode: ResponseCode, answers: Vec<Record>) -> Vec<u8> {
        let mut m = Message::new(0, MessageType::Response, OpCode::Query);
        m.metadata.recursion_desired = true;
        m.metadata.recursion_available = true;
        m.metadata.response_code = rcode;
        m.add_query(Query::query(name(q), qtype));
        m.add_answers(answers);
        m.to_vec().unwrap()
    }

    fn rr(owner: &str, data: RData) -> Record {
        Record::from_rdata(name(owner), 300, data)
    }

    fn svcb(prio: u16, target: &str, params: Vec<(SvcParamKey, SvcParamValue)>) -> RData {
        RData::SVCB(SVCB::new(prio, name(target), params))
    }

    fn atp_svcb(target: &str, port: u16) -> RData {
        svcb(
            1,
            target,
            vec![
                (SvcParamKey::Alpn, SvcParamValue::Alpn(Alpn(vec!["atp/1".into(), "h2".into()]))),
                (SvcParamKey::Port, SvcParamValue::Port(port)),
            ],
        )
    }

    #[test]
    fn queries_are_wire_format_with_id_0_and_rd() {
        let wire = encode_query("_ATP.Example.com.", QueryType::Svcb).unwrap();
        let m = Message::from_vec(&wire).unwrap();
        assert_eq!(m.metadata.id, 0);
        assert_eq!(m.metadata.message_type, MessageType::Query);
        assert!(m.metadata.recursion_desired);
        assert_eq!(m.queries.len(), 1);
        assert_eq!(m.queries[0].name(), &name("_atp.example.com."));
        assert_eq!(m.queries[0].query_type(), RecordType::SVCB);
        for t in ["A", "aaaa", "TXT", "SRV", "svcb"] {
            let q = QueryType::parse(t).unwrap();
            assert!(q.as_str().eq_ignore_ascii_case(t));
            let m = Message::from_vec(&encode_query("a.test", q).unwrap()).unwrap();
            assert_eq!(m.queries[0].query_type().to_string(), q.as_str());
        }
        assert_eq!(QueryType::parse("MX"), None);
        for bad in ["", "a..b", "a b.test", &"x".repeat(64), "bücher.test"] {
            assert!(encode_query(bad, QueryType::Txt).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn http_requests_follow_rfc_8484() {
        let wire = encode_query("a.test", QueryType::Txt).unwrap();
        let get = request("https://dns.test/dns-query", DohMethod::Get, &wire);
        assert_eq!(get.method, crate::http::Method::Get);
        let (base, dns) = get.url.split_once("?dns=").unwrap();
        assert_eq!(base, "https://dns.test/dns-query");
        assert!(!dns.contains('=') && !dns.contains('+') && !dns.contains('/'));
        assert_eq!(URL_SAFE_NO_PAD.decode(dns).unwrap(), wire);
        assert_eq!(get.header_value("accept"), Some(DNS_MESSAGE));
        assert!(get.body.is_empty());
        let get2 = request("https://dns.test/q?ct=x", DohMethod::Get, &wire);
        assert!(get2.url.starts_with("https://dns.test/q?ct=x&dns="));
        let post = request("https://dns.test/dns-query", DohMethod::Post, &wire);
        assert_eq!((post.method, post.url.as_str()), (crate::http::Method::Post, "https://dns.test/dns-query"));
        assert_eq!(post.header_value("content-type"), Some(DNS_MESSAGE));
        assert_eq!(post.header_value("accept"), Some(DNS_MESSAGE));
        assert_eq!(post.body, wire);
    }

    #[test]
    fn txt_answers_concatenate_strings_and_follow_cnames() {
        let wire = response(
            "ats._atp.a.test.",
            RecordType::TXT,
            ResponseCode::NoError,
            vec![
                rr("ats._atp.a.test.", RData::CNAME(CNAME(name("policy.b.test.")))),
                rr(
                    "policy.b.test.",
                    RData::TXT(TXT::new(vec!["v=atp1 allow=ip:192.0.2.0/24".into(), " deny=all".into()])),
                ),
                rr("policy.b.test.", RData::TXT(TXT::new(vec!["v=spf1 -all".into()]))),
                rr("unrelated.test.", RData::TXT(TXT::new(vec!["v=atp1 allow=all".into()]))),
                rr("policy.b.test.", RData::A(A::new(192, 0, 2, 1))),
            ],
        );
        let got = decode_response("ATS._atp.A.test", QueryType::Txt, &wire).unwrap();
        assert_eq!(
            got,
            [Answer::Txt("v=atp1 allow=ip:192.0.2.0/24 deny=all".into()), Answer::Txt("v=spf1 -all".into())]
        );
        assert_eq!(got[0].to_string(), "v=atp1 allow=ip:192.0.2.0/24 deny=all");
        // Bytes that are not UTF-8 are replaced, not an error.
        let raw = response(
            "t.test.",
            RecordType::TXT,
            ResponseCode::NoError,
            vec![rr("t.test.", RData::TXT(TXT::from_bytes(vec![b"v=atp1 \xff", b"x"])))],
        );
        assert_eq!(decode_response("t.test", QueryType::Txt, &raw).unwrap(), [Answer::Txt("v=atp1 \u{fffd}x".into())]);
    }

    #[test]
    fn svcb_answers_keep_port_alpn_and_hints() {
        let wire = response(
            "_atp.a.test.",
            RecordType::SVCB,
            ResponseCode::NoError,
            vec![
                rr(
                    "_atp.a.test.",
                    svcb(
                        2,
                        "Relay.A.test.",
                        vec![
                            (SvcParamKey::Mandatory, SvcParamValue::Mandatory(Mandatory(vec![SvcParamKey::Alpn]))),
                            (SvcParamKey::Alpn, SvcParamValue::Alpn(Alpn(vec!["atp/1".into()]))),
                            (SvcParamKey::Port, SvcParamValue::Port(17443)),
                            (SvcParamKey::Ipv4Hint, SvcParamValue::Ipv4Hint(IpHint(vec![A::new(192, 0, 2, 7)]))),
                            (SvcParamKey::EchConfigList, SvcParamValue::EchConfigList(EchConfigList(vec![1, 2, 3]))),
                            (
                                SvcParamKey::Ipv6Hint,
                                SvcParamValue::Ipv6Hint(IpHint(vec![AAAA::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7)])),
                            ),
                        ],
                    ),
                ),
                rr("_atp.a.test.", svcb(1, ".", vec![])),
                rr("_atp.a.test.", svcb(0, "atp.provider.test.", vec![])),
            ],
        );
        let got = decode_response("_atp.a.test", QueryType::Svcb, &wire).unwrap();
        let Answer::Svcb(s) = &got[0] else { panic!("{got:?}") };
        assert_eq!((s.priority, s.target.as_str(), s.port), (2, "relay.a.test", Some(17443)));
        assert_eq!(s.alpn, ["atp/1"]);
        assert_eq!(s.ipv4hint, ["192.0.2.7".parse::<std::net::Ipv4Addr>().unwrap()]);
        assert_eq!(s.ipv6hint, ["2001:db8::7".parse::<std::net::Ipv6Addr>().unwrap()]);
        assert_eq!(
            got[0].to_string(),
            r#"2 relay.a.test. alpn="atp/1" port=17443 ipv4hint=192.0.2.7 ipv6hint=2001:db8::7"#
        );
        assert_eq!(got[1], Answer::Svcb(SvcbRecord { priority: 1, port: None, ..SvcbRecord::alias(".") }));
        assert_eq!(got[2], Answer::Svcb(SvcbRecord::alias("atp.provider.test")));
        // What the presentation form of an answer parses back to.
        assert_eq!(&SvcbRecord::parse(&got[0].to_string()).unwrap(), s);
    }

    /// An empty alpn-id is malformed on the wire as in presentation form (found by the `doh` fuzz
    /// target: `fuzz/regressions/doh/svcb-empty-alpn-id.bin`).
    #[test]
    fn svcb_answers_with_an_empty_alpn_id_are_malformed() {
        let with_alpn = |ids: Vec<String>| {
            let data = svcb(1, "atp.a.test.", vec![(SvcParamKey::Alpn, SvcParamValue::Alpn(Alpn(ids)))]);
            let wire =
                response("_atp.a.test.", RecordType::SVCB, ResponseCode::NoError, vec![rr("_atp.a.test.", data)]);
            decode_response("_atp.a.test", QueryType::Svcb, &wire)
        };
        assert_eq!(with_alpn(vec!["".into(), "atp/1".into()]).unwrap_err().reason, MALFORMED);
        assert!(SvcbRecord::parse(r#"1 atp.a.test. alpn=",atp/1""#).is_err());
        let ok = with_alpn(vec!["h2".into(), "atp/1".into()]).unwrap();
        assert_eq!(ok[0].to_string(), r#"1 atp.a.test. alpn="h2,atp/1""#);
    }

    #[test]
    fn srv_and_address_answers() {
        let srv = RData::SRV(SRV::new(10, 5, 0, name("atp.a.test.")));
        let wire =
            response("_atp._tcp.a.test.", RecordType::SRV, ResponseCode::NoError, vec![rr("_atp._tcp.a.test.", srv)]);
        let got = decode_response("_atp._tcp.a.test", QueryType::Srv, &wire).unwrap();
        assert_eq!(got, [Answer::Srv(SrvRecord { priority: 10, weight: 5, port: 0, target: "atp.a.test".into() })]);
        assert_eq!(got[0].to_string(), "10 5 0 atp.a.test.");
        let wire = response(
            "h.test.",
            RecordType::A,
            ResponseCode::NoError,
            vec![rr("h.test.", RData::A(A::new(192, 0, 2, 1))), rr("h.test.", RData::A(A::new(192, 0, 2, 2)))],
        );
        assert_eq!(
            decode_response("h.test", QueryType::A, &wire).unwrap(),
            [Answer::Ip("192.0.2.1".parse().unwrap()), Answer::Ip("192.0.2.2".parse().unwrap())]
        );
        let wire = response(
            "h.test.",
            RecordType::AAAA,
            ResponseCode::NoError,
            vec![rr("h.test.", RData::AAAA(AAAA::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)))],
        );
        assert_eq!(decode_response("h.test", QueryType::Aaaa, &wire).unwrap()[0].to_string(), "2001:db8::1");
        // An A answer to an AAAA question is not an AAAA record.
        let wire = response(
            "h.test.",
            RecordType::AAAA,
            ResponseCode::NoError,
            vec![rr("h.test.", RData::A(A::new(1, 2, 3, 4)))],
        );
        assert!(decode_response("h.test", QueryType::Aaaa, &wire).unwrap().is_empty());
    }

    #[test]
    fn error_codes_and_malformed_answers() {
        let nx = response("x.test.", RecordType::TXT, ResponseCode::NXDomain, vec![]);
        assert_eq!(decode_response("x.test", QueryType::Txt, &nx).unwrap(), []);
        let empty = response("x.test.", RecordType::TXT, ResponseCode::NoError, vec![]);
        assert_eq!(decode_response("x.test", QueryType::Txt, &empty).unwrap(), []);
        let fail = response("x.test.", RecordType::TXT, ResponseCode::ServFail, vec![]);
        let e = decode_response("x.test", QueryType::Txt, &fail).unwrap_err();
        assert_eq!((e.name.as_str(), e.reason.as_str()), ("x.test", "DNS error 2"));
        let refused = response("x.test.", RecordType::TXT, ResponseCode::Refused, vec![]);
        assert!(decode_response("x.test", QueryType::Txt, &refused).is_err());
        let query = encode_query("x.test", QueryType::Txt).unwrap();
        assert_eq!(decode_response("x.test", QueryType::Txt, &query).unwrap_err().reason, "not a DNS response");
        let mut truncated = response("x.test.", RecordType::TXT, ResponseCode::NoError, vec![]);
        truncated[2] |= 0x02;
        assert_eq!(decode_response("x.test", QueryType::Txt, &truncated).unwrap_err().reason, "truncated DNS answer");
        let full = response(
            "x.test.",
            RecordType::TXT,
            ResponseCode::NoError,
            vec![rr("x.test.", RData::TXT(TXT::new(vec!["v=atp1 allow=all".into()])))],
        );
        for cut in [0, 5, 12, 20, full.len() - 3] {
            assert!(decode_response("x.test", QueryType::Txt, &full[..cut]).is_err(), "cut at {cut}");
        }
        // A pointer loop in a name.
        let mut looped = full.clone();
        let at = looped.len() - 4 - 2 - 2 - 2 - 17 - 2; // the answer's owner, a 2-byte pointer
        looped[at] = 0xc0;
        looped[at + 1] = at as u8;
        assert!(decode_response("x.test", QueryType::Txt, &looped).is_err());
        assert!(decode_response("x.test", QueryType::Txt, &vec![0u8; 70_000]).is_err());
        assert!(decode_response("x.test", QueryType::Txt, b"garbage").is_err());
        let resp = HttpResponse::new(503, Some("text/plain"), "busy");
        assert_eq!(decode_http("x.test", QueryType::Txt, &resp).unwrap_err().reason, "DoH server answered HTTP 503");
        let ok = HttpResponse::new(200, Some(DNS_MESSAGE), full);
        assert_eq!(decode_http("x.test", QueryType::Txt, &ok).unwrap(), [Answer::Txt("v=atp1 allow=all".into())]);
    }

    #[test]
    fn answers_keep_their_ttls() {
        let with_ttl = |owner: &str, ttl: u32, data: RData| Record::from_rdata(name(owner), ttl, data);
        let wire = response(
            "ats._atp.a.test.",
            RecordType::TXT,
            ResponseCode::NoError,
            vec![
                with_ttl("ats._atp.a.test.", 600, RData::CNAME(CNAME(name("p.b.test.")))),
                with_ttl("p.b.test.", 300, RData::TXT(TXT::new(vec!["v=atp1".into()]))),
                with_ttl("p.b.test.", 900, RData::TXT(TXT::new(vec!["v=atp1 deny=all".into()]))),
                with_ttl("unrelated.test.", 5, RData::TXT(TXT::new(vec!["x".into()]))),
            ],
        );
        let a = decode_answers("ats._atp.a.test", QueryType::Txt, &wire).unwrap();
        assert_eq!((a.records.len(), a.ttl), (2, Some(300)));
        let short_cname = response(
            "x.test.",
            RecordType::TXT,
            ResponseCode::NoError,
            vec![
                with_ttl("x.test.", 30, RData::CNAME(CNAME(name("y.test.")))),
                with_ttl("y.test.", 300, RData::TXT(TXT::new(vec!["v".into()]))),
            ],
        );
        assert_eq!(decode_answers("x.test", QueryType::Txt, &short_cname).unwrap().ttl, Some(30));
        // Negative answers: the SOA's min(TTL, MINIMUM) (RFC 2308 §5); none without an SOA.
        let negative = |rcode: ResponseCode, soa: Option<(u32, u32)>| {
            let mut m = Message::new(0, MessageType::Response, OpCode::Query);
            m.metadata.response_code = rcode;
            m.add_query(Query::query(name("x.test."), RecordType::TXT));
            if let Some((ttl, minimum)) = soa {
                let data = SOA::new(name("ns.test."), name("hostmaster.test."), 1, 3600, 600, 86400, minimum);
                m.add_authority(Record::from_rdata(name("test."), ttl, RData::SOA(data)));
            }
            decode_answers("x.test", QueryType::Txt, &m.to_vec().unwrap()).unwrap()
        };
        assert_eq!(negative(ResponseCode::NXDomain, Some((300, 60))), Answers { records: vec![], ttl: Some(60) });
        assert_eq!(negative(ResponseCode::NoError, Some((30, 60))).ttl, Some(30));
        assert_eq!(negative(ResponseCode::NXDomain, None).ttl, None);
        assert_eq!(negative(ResponseCode::NoError, None).ttl, None);
        // An NXDOMAIN whose rest is garbage is still "no records", without a TTL.
        let nx = response("x.test.", RecordType::TXT, ResponseCode::NXDomain, vec![]);
        let cut = decode_answers("x.test", QueryType::Txt, &nx[..nx.len() - 2]).unwrap();
        assert_eq!(cut, Answers { records: vec![], ttl: None });
        let ok = HttpResponse::new(200, Some(DNS_MESSAGE), wire);
        assert_eq!(decode_http_answers("ats._atp.a.test", QueryType::Txt, &ok).unwrap().ttl, Some(300));
    }

    /// Answers by (name, type), with the TTL each was offered with.
    #[derive(Default)]
    struct Remembered(RefCell<HashMap<(String, QueryType), Answers>>);

    impl AnswerCache for Remembered {
        fn get(&self, name: &str, qtype: QueryType) -> Option<Vec<Answer>> {
            self.0.borrow().get(&(name.to_owned(), qtype)).map(|a| a.records.clone())
        }
        fn put(&self, name: &str, qtype: QueryType, answers: &Answers) {
            self.0.borrow_mut().insert((name.to_owned(), qtype), answers.clone());
        }
    }

    #[test]
    fn a_cache_answers_first_and_gets_every_decoded_answer() {
        let mut doh = FakeDoh::default();
        doh.add("ats._atp.a.test", RData::TXT(TXT::new(vec!["v=atp1 allow=all".into()])));
        doh.fail.push("broken.test".into());
        let r = DohResolver::new(&doh, "https://dns.test/dns-query", DohMethod::Get).with_cache(Remembered::default());
        for _ in 0..3 {
            assert_eq!(block_on(r.txt("ats._atp.a.test")).unwrap(), ["v=atp1 allow=all"]);
        }
        assert_eq!(doh.requests.borrow().len(), 1, "asked once, then answered from the cache");
        assert!(block_on(r.svcb("_atp.none.test")).unwrap().is_empty());
        assert!(block_on(r.txt("broken.test")).is_err());
        let cached = r.cache().0.borrow();
        assert_eq!(cached[&("ats._atp.a.test".to_owned(), QueryType::Txt)].ttl, Some(300));
        assert_eq!(cached[&("_atp.none.test".to_owned(), QueryType::Svcb)], Answers::default(), "NXDOMAIN, no SOA");
        assert!(!cached.contains_key(&("broken.test".to_owned(), QueryType::Txt)), "failures are not cached");
    }

    /// A DoH server in memory: answers from zone tables, records each request.
    #[derive(Default)]
    struct FakeDoh {
        zone: HashMap<(String, RecordType), Vec<RData>>,
        fail: Vec<String>,
        requests: RefCell<Vec<HttpRequest>>,
    }

    impl FakeDoh {
        fn add(&mut self, owner: &str, data: RData) -> &mut Self {
            self.zone.entry((owner.to_owned(), data.record_type())).or_default().push(data);
            self
        }
    }

    impl HttpTransport for FakeDoh {
        async fn send(&self, req: HttpRequest) -> Result<HttpResponse, HttpError> {
            self.requests.borrow_mut().push(req.clone());
            let wire = match req.method {
                crate::http::Method::Get => URL_SAFE_NO_PAD.decode(req.url.split_once("?dns=").unwrap().1).unwrap(),
                crate::http::Method::Post => req.body.clone(),
            };
            let q = Message::from_vec(&wire).unwrap();
            let (qname, qtype) = (q.queries[0].name().to_ascii(), q.queries[0].query_type());
            let owner = qname.trim_end_matches('.').to_string();
            if self.fail.contains(&owner) {
                return Ok(HttpResponse::new(
                    200,
                    Some(DNS_MESSAGE),
                    response(&qname, qtype, ResponseCode::ServFail, vec![]),
                ));
            }
            if owner == "down.test" {
                return Err(HttpError("connection refused".into()));
            }
            let answers: Vec<Record> = self
                .zone
                .get(&(owner.clone(), qtype))
                .into_iter()
                .flatten()
                .map(|d| rr(&format!("{owner}."), d.clone()))
                .collect();
            let rcode =
                if self.zone.keys().any(|(o, _)| *o == owner) { ResponseCode::NoError } else { ResponseCode::NXDomain };
            Ok(HttpResponse::new(200, Some(DNS_MESSAGE), response(&qname, qtype, rcode, answers)))
        }
    }

    #[test]
    fn discovery_and_records_over_doh() {
        let mut doh = FakeDoh::default();
        doh.add("_atp.a.test", atp_svcb("atp.a.test.", 17443))
            .add("_atp.a.test", RData::TXT(TXT::new(vec!["not svcb".into()])))
            .add("ats._atp.a.test", RData::TXT(TXT::new(vec!["v=atp1 allow=ip:192.0.2.1 deny=all".into()])))
            .add("_agent.b.test", svcb(0, "atp.provider.test.", vec![]))
            .add("atp.provider.test", atp_svcb(".", 7444))
            .add("_atp._tcp.c.test", RData::SRV(SRV::new(1, 0, 0, name("mx.c.test."))))
            .add("h.test", RData::A(A::new(192, 0, 2, 1)))
            .add("h.test", RData::AAAA(AAAA::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)));
        doh.fail.push("_atp.broken.test".into());
        for method in [DohMethod::Get, DohMethod::Post] {
            let r = DohResolver::new(&doh, "https://dns.test/dns-query", method);
            let ep = |host: &str, port: u16, alpn: &[&str]| Endpoint {
                host: host.into(),
                port,
                alpn: alpn.iter().map(|s| s.to_string()).collect(),
            };
            assert_eq!(block_on(discover(&r, "a.test")).unwrap(), [ep("atp.a.test", 17443, &["atp/1", "h2"])]);
            // _atp has nothing; _agent aliases to the provider, whose record's `.` target is itself.
            assert_eq!(block_on(discover(&r, "b.test")).unwrap(), [ep("atp.provider.test", 7444, &["atp/1", "h2"])]);
            assert_eq!(block_on(discover(&r, "c.test")).unwrap(), [ep("mx.c.test", 7443, &["atp/1"])]);
            assert!(matches!(block_on(discover(&r, "none.test")), Err(DiscoveryError::NotFound { .. })));
            let e = block_on(discover(&r, "broken.test")).unwrap_err();
            assert!(e.is_temporary(), "{e}");
            assert_eq!(block_on(r.txt("ats._atp.a.test")).unwrap(), ["v=atp1 allow=ip:192.0.2.1 deny=all"]);
            assert_eq!(
                block_on(r.ip_addrs("h.test")).unwrap(),
                ["192.0.2.1".parse::<IpAddr>().unwrap(), "2001:db8::1".parse().unwrap()]
            );
            let e = block_on(r.txt("down.test")).unwrap_err();
            assert_eq!(e.reason, "DoH request failed: connection refused");
            let ats = block_on(crate::records::ats::check_ats(&r, "a.test", "192.0.2.1".parse().unwrap()));
            assert!(matches!(ats, crate::records::ats::AtsResult::Pass(_)), "{ats:?}");
        }
        let reqs = doh.requests.borrow();
        assert!(reqs.iter().any(|r| r.method == crate::http::Method::Post));
        assert!(reqs.iter().all(|r| r.header_value("accept") == Some(DNS_MESSAGE)));
    }
}
