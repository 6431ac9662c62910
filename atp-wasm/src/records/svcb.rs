//! SVCB discovery records (docs/protocol.md §5.1, RFC 9460) and the discovery procedure.
//!
//! Discovery queries SVCB `_atp.<domain>`, then `_agent.<domain>`, then SRV `_atp._tcp.<domain>`,
//! like the reference. Fixing the reference (docs/protocol.md §12 item 24):
//!
//! * ServiceMode records are returned in priority order (a stable sort, so records of equal
//!   priority keep their answer order), not in answer order.
//! * AliasMode records are followed (RFC 9460 §2.4.2), at most [`MAX_ALIAS_HOPS`] hops; a loop or a
//!   longer chain is [`DiscoveryError::AliasLoop`]. An AliasMode target of `.` means "no service"
//!   (RFC 9460 §2.5.1) and gives [`DiscoveryError::NotFound`]. When the end of an alias chain has no
//!   ServiceMode records, the endpoint is the final target name on the default port (RFC 9460 §3,
//!   the SVCB-optional fallback), so `_atp.example.com SVCB 0 atp.provider.net.` works even when the
//!   provider publishes only address records.
//! * A ServiceMode target of `.` means the owner name (RFC 9460 §2.5.2). The owner of the first
//!   record is `_atp.<domain>`, which is not a host name, so atp reads `.` there as **the domain
//!   itself**; after an alias the owner is the alias target, which is used as is.
//! * A DNS failure at any step is returned as [`DiscoveryError::Dns`] (temporary: the sender retries
//!   later) and never treated as "no records": falling through to the next name on a SERVFAIL could
//!   deliver to a stale or wrong server.
//!
//! As in the reference, there is no fallback to the A/AAAA records of the bare domain, a missing
//! `port` means 7443 ([`crate::DEFAULT_PORT`]) and a missing `alpn` means `atp/1`. The `alpn` of a
//! record is passed on in the [`Endpoint`] but records are not filtered by it.

use std::collections::HashSet;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use super::{clip, normalize_hostname};
use crate::env::{DnsError, Resolver};
use crate::{ALPN_ATP, DEFAULT_PORT};

/// One SVCB record (docs/protocol.md §5.1, RFC 9460). `priority == 0` is AliasMode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SvcbRecord {
    /// SvcPriority: 0 for AliasMode, otherwise ServiceMode, lower values preferred.
    pub priority: u16,
    /// TargetName, lowercase and without trailing dot; the root is kept as `"."`.
    pub target: String,
    /// SvcParam `port` (key 3); `None` means 7443 (docs/protocol.md §5.1).
    pub port: Option<u16>,
    /// SvcParam `alpn` (key 1); empty means `atp/1` (docs/protocol.md §5.1).
    pub alpn: Vec<String>,
    /// SvcParam `ipv4hint` (key 4).
    pub ipv4hint: Vec<Ipv4Addr>,
    /// SvcParam `ipv6hint` (key 6).
    pub ipv6hint: Vec<Ipv6Addr>,
}

/// One SRV record: the last discovery fallback, `_atp._tcp.<domain>` (docs/protocol.md §5.1, RFC 2782).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvRecord {
    /// Lower values are preferred.
    pub priority: u16,
    /// Among records of equal priority, higher values are preferred (see [`discover`]).
    pub weight: u16,
    /// Port; 0 means 7443, as in the reference (docs/protocol.md §5.1).
    pub port: u16,
    /// Target host, with or without trailing dot; `.` alone means "no service" (RFC 2782).
    pub target: String,
}

/// Where to send a transfer: `https://<host>:<port>/.well-known/atp/v1/message` (docs/protocol.md §5.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Host name (or IP literal from a local override, docs/protocol.md §8.9), lowercase, no trailing dot.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// ALPN protocol ids the record advertises (`["atp/1"]` when it named none).
    pub alpn: Vec<String>,
}

/// Longest SVCB presentation string [`SvcbRecord::parse`] accepts: the wire RDATA is at most
/// 65535 bytes, and escaping at most quadruples it.
pub const MAX_RDATA_LEN: usize = 4 * 65_535;

/// Most AliasMode hops followed during discovery (docs/protocol.md §12 item 24, RFC 9460 §3.1).
pub const MAX_ALIAS_HOPS: usize = 8;

/// A malformed SVCB presentation string (docs/protocol.md §5.1).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SvcbError {
    /// The priority or the target is missing.
    #[error("missing {0}")]
    Missing(&'static str),
    /// The priority is not a decimal number from 0 to 65535.
    #[error("invalid priority '{0}'")]
    BadPriority(String),
    /// The target is neither `.` nor a valid DNS name.
    #[error("invalid target name '{0}'")]
    BadTarget(String),
    /// A SvcParamKey is not made of letters, digits and `-`.
    #[error("invalid SvcParam key '{0}'")]
    BadKey(String),
    /// A SvcParamKey appears twice (RFC 9460 §2.2).
    #[error("duplicate SvcParam key '{0}'")]
    DuplicateKey(String),
    /// The value of a known SvcParam is missing or malformed.
    #[error("invalid {key} value '{value}'")]
    BadValue {
        /// The SvcParam name.
        key: &'static str,
        /// The offending value (clipped).
        value: String,
    },
    /// Broken quoting or escaping.
    #[error("malformed presentation format: {0}")]
    Syntax(&'static str),
    /// The string is longer than [`MAX_RDATA_LEN`].
    #[error("SVCB record longer than {MAX_RDATA_LEN} characters")]
    TooLong,
}

/// Lowercases a target and strips one trailing dot, keeping the root as `"."`; no validation.
fn normalize_target(t: &str) -> String {
    if t == "." || t.is_empty() {
        ".".into()
    } else {
        t.strip_suffix('.').unwrap_or(t).to_ascii_lowercase()
    }
}

/// A decimal number without sign, as RFC 9460 presentation form writes numbers.
fn parse_u16(s: &str) -> Option<u16> {
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Splits presentation RDATA into tokens: whitespace separates tokens except inside `"…"`, the
/// quotes themselves are dropped, unquoted `(` `)` (zone-file line continuation) act as
/// whitespace, and escapes (`\X`, `\DDD`) are kept verbatim for [`unescape`].
fn tokenize(rdata: &str) -> Result<Vec<String>, SvcbError> {
    let mut tokens = Vec::new();
    let mut cur = String::new();
    let (mut in_token, mut quoted) = (false, false);
    let mut chars = rdata.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                let next = chars.next().ok_or(SvcbError::Syntax("dangling backslash"))?;
                cur.push('\\');
                cur.push(next);
                in_token = true;
            }
            '"' => {
                quoted = !quoted;
                in_token = true;
            }
            c if !quoted && (c.is_ascii_whitespace() || c == '(' || c == ')') => {
                if in_token {
                    tokens.push(std::mem::take(&mut cur));
                    in_token = false;
                }
            }
            c => {
                cur.push(c);
                in_token = true;
            }
        }
    }
    if quoted {
        return Err(SvcbError::Syntax("unterminated quoted string"));
    }
    if in_token {
        tokens.push(cur);
    }
    Ok(tokens)
}

/// Decodes the escapes of an RFC 1035 character-string: `\DDD` (a byte, at most 255) and `\X`.
fn unescape(raw: &str) -> Option<Vec<u8>> {
    let b = raw.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            out.push(b[i]);
            i += 1;
            continue;
        }
        let rest = &b[i + 1..];
        match rest {
            [d1, d2, d3, ..] if [d1, d2, d3].iter().all(|d| d.is_ascii_digit()) => {
                let v = u32::from(d1 - b'0') * 100 + u32::from(d2 - b'0') * 10 + u32::from(d3 - b'0');
                out.push(u8::try_from(v).ok()?);
                i += 4;
            }
            [c, ..] if !c.is_ascii_digit() => {
                out.push(*c);
                i += 2;
            }
            _ => return None,
        }
    }
    Some(out)
}

/// Splits an unescaped value-list at commas; `\,` and `\\` are a literal comma and backslash
/// (RFC 9460 Appendix A.1).
fn split_value_list(b: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut items = vec![Vec::new()];
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => {
                let c = *b.get(i + 1)?;
                items.last_mut()?.push(c);
                i += 2;
            }
            b',' => {
                items.push(Vec::new());
                i += 1;
            }
            c => {
                items.last_mut()?.push(c);
                i += 1;
            }
        }
    }
    Some(items)
}

/// Writes an `alpn` value-list as a quoted character-string, escaping both levels.
fn escape_alpn(ids: &[String]) -> String {
    let mut list = Vec::new();
    for (n, id) in ids.iter().enumerate() {
        if n > 0 {
            list.push(b',');
        }
        for &b in id.as_bytes() {
            if b == b',' || b == b'\\' {
                list.push(b'\\');
            }
            list.push(b);
        }
    }
    let mut out = String::from("\"");
    for b in list {
        match b {
            b'"' | b'\\' => {
                out.push('\\');
                out.push(b as char);
            }
            0x21..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\{b:03}")),
        }
    }
    out.push('"');
    out
}

fn parse_hints<T: std::str::FromStr>(value: &[u8]) -> Option<Vec<T>> {
    std::str::from_utf8(value).ok()?.split(',').map(|s| s.parse().ok()).collect()
}

impl SvcbRecord {
    /// A ServiceMode record for `target` with `port` and ALPN `atp/1` (the form `atp dns generate`
    /// publishes and the local `peers.toml` override stands for, docs/protocol.md §5.1, §8.9). A
    /// priority of 0 is raised to 1. The target is lowercased and loses its trailing dot but is
    /// not validated (a local override may name an IP address).
    pub fn service(priority: u16, target: &str, port: u16) -> Self {
        SvcbRecord {
            priority: priority.max(1),
            target: normalize_target(target),
            port: Some(port),
            alpn: vec![ALPN_ATP.into()],
            ipv4hint: Vec::new(),
            ipv6hint: Vec::new(),
        }
    }

    /// An AliasMode record pointing at `target` (RFC 9460 §2.4.2).
    pub fn alias(target: &str) -> Self {
        SvcbRecord {
            priority: 0,
            target: normalize_target(target),
            port: None,
            alpn: Vec::new(),
            ipv4hint: Vec::new(),
            ipv6hint: Vec::new(),
        }
    }

    /// True for AliasMode (priority 0, RFC 9460 §2.4.2).
    pub fn is_alias(&self) -> bool {
        self.priority == 0
    }

    /// Parses presentation-format RDATA (docs/protocol.md §5.1, RFC 9460 §2.1, Appendix A), e.g.
    /// `1 atp.example.com. port=7443 alpn="atp/1,h2" ipv4hint=192.0.2.1`. Values may be quoted or
    /// not; zone-file parentheses are ignored; `\X` and `\DDD` escapes and the `\,` of value-lists
    /// are decoded.
    ///
    /// `port`, `alpn`, `ipv4hint` and `ipv6hint` are understood; other keys (registered ones such as
    /// `mandatory` or `ech`, generic `keyNNNNN`, and the reference's unregistered
    /// `atp-capabilities`) are ignored. A malformed priority, target, key or known value, a repeated
    /// key, or broken quoting is an error. In AliasMode the SvcParams are ignored (RFC 9460 §2.4.2).
    pub fn parse(rdata: &str) -> Result<Self, SvcbError> {
        if rdata.len() > MAX_RDATA_LEN {
            return Err(SvcbError::TooLong);
        }
        let tokens = tokenize(rdata)?;
        let mut tokens = tokens.iter();
        let prio = tokens.next().ok_or(SvcbError::Missing("priority"))?;
        let priority = parse_u16(prio).ok_or_else(|| SvcbError::BadPriority(clip(prio)))?;
        let t = tokens.next().ok_or(SvcbError::Missing("target"))?;
        let target = if t == "." {
            ".".to_owned()
        } else {
            normalize_hostname(t).ok_or_else(|| SvcbError::BadTarget(clip(t)))?
        };
        let mut rec =
            SvcbRecord { priority, target, port: None, alpn: Vec::new(), ipv4hint: Vec::new(), ipv6hint: Vec::new() };
        if rec.is_alias() {
            return Ok(rec);
        }
        let mut seen = HashSet::new();
        for param in tokens {
            let (key, raw) = match param.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (param.as_str(), None),
            };
            if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                return Err(SvcbError::BadKey(clip(key)));
            }
            let key = key.to_ascii_lowercase();
            if !seen.insert(key.clone()) {
                return Err(SvcbError::DuplicateKey(clip(&key)));
            }
            let known: &'static str = match key.as_str() {
                "port" => "port",
                "alpn" => "alpn",
                "ipv4hint" => "ipv4hint",
                "ipv6hint" => "ipv6hint",
                _ => continue,
            };
            let bad = || SvcbError::BadValue { key: known, value: clip(raw.unwrap_or("")) };
            let value = raw.and_then(unescape).filter(|v| !v.is_empty()).ok_or_else(bad)?;
            match known {
                "port" => {
                    rec.port = Some(std::str::from_utf8(&value).ok().and_then(parse_u16).ok_or_else(bad)?);
                }
                "alpn" => {
                    rec.alpn = split_value_list(&value)
                        .ok_or_else(bad)?
                        .into_iter()
                        .map(|id| if id.is_empty() || id.len() > 255 { None } else { String::from_utf8(id).ok() })
                        .collect::<Option<Vec<_>>>()
                        .ok_or_else(bad)?;
                }
                "ipv4hint" => rec.ipv4hint = parse_hints(&value).ok_or_else(bad)?,
                _ => rec.ipv6hint = parse_hints(&value).ok_or_else(bad)?,
            }
        }
        Ok(rec)
    }
}

impl fmt::Display for SvcbRecord {
    /// Presentation-format RDATA (docs/protocol.md §5.1), which [`SvcbRecord::parse`] reads back:
    /// `1 atp.example.com. alpn="atp/1" port=7443`, keys in RFC 9460 order. AliasMode records print
    /// no SvcParams.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.target == "." {
            write!(f, "{} .", self.priority)?;
        } else {
            write!(f, "{} {}.", self.priority, self.target)?;
        }
        if self.is_alias() {
            return Ok(());
        }
        if !self.alpn.is_empty() {
            write!(f, " alpn={}", escape_alpn(&self.alpn))?;
        }
        if let Some(p) = self.port {
            write!(f, " port={p}")?;
        }
        if !self.ipv4hint.is_empty() {
            let hints: Vec<String> = self.ipv4hint.iter().map(|i| i.to_string()).collect();
            write!(f, " ipv4hint={}", hints.join(","))?;
        }
        if !self.ipv6hint.is_empty() {
            let hints: Vec<String> = self.ipv6hint.iter().map(|i| i.to_string()).collect();
            write!(f, " ipv6hint={}", hints.join(","))?;
        }
        Ok(())
    }
}

/// The SVCB names queried for `domain`, in order: `_atp.<d>`, `_agent.<d>` (docs/protocol.md §5.1).
pub fn svcb_names(domain: &str) -> [String; 2] {
    [format!("_atp.{domain}"), format!("_agent.{domain}")]
}

/// The SRV name queried last: `_atp._tcp.<d>` (docs/protocol.md §5.1).
pub fn srv_name(domain: &str) -> String {
    format!("_atp._tcp.{domain}")
}

/// Why discovery found no endpoint (docs/protocol.md §5.1).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiscoveryError {
    /// No SVCB or SRV record publishes an ATP service, or one says explicitly that there is none
    /// (target `.`), or the domain is not a valid name. Permanent.
    #[error("no ATP service published for {domain}")]
    NotFound {
        /// The domain looked up (clipped).
        domain: String,
    },
    /// A lookup failed temporarily (timeout, SERVFAIL). Retry later.
    #[error(transparent)]
    Dns(#[from] DnsError),
    /// The SVCB AliasMode chain loops or is longer than [`MAX_ALIAS_HOPS`]. Permanent.
    #[error("SVCB alias chain loops or is too long for {domain}")]
    AliasLoop {
        /// The domain looked up.
        domain: String,
    },
}

impl DiscoveryError {
    /// True when a later attempt may succeed (a DNS failure); the sender then retries instead of
    /// bouncing (docs/design.md §3).
    pub fn is_temporary(&self) -> bool {
        matches!(self, DiscoveryError::Dns(_))
    }
}

fn endpoint(host: String, port: Option<u16>, alpn: &[String]) -> Endpoint {
    Endpoint {
        host,
        port: match port {
            None | Some(0) => DEFAULT_PORT,
            Some(p) => p,
        },
        alpn: if alpn.is_empty() { vec![ALPN_ATP.into()] } else { alpn.to_vec() },
    }
}

/// A stable insertion sort (`before` is a strict order). Discovery sorts a handful of records;
/// `slice::sort` would add a few KB of wasm per element type to the npm package.
fn sort_small<T>(v: &mut [T], before: impl Fn(&T, &T) -> bool) {
    for i in 1..v.len() {
        let mut j = i;
        while j > 0 && before(&v[j], &v[j - 1]) {
            v.swap(j, j - 1);
            j -= 1;
        }
    }
}

/// Resolves one SVCB name, following aliases. `Ok(None)`: no records at the name itself.
async fn resolve_svcb<R: Resolver>(
    resolver: &R,
    domain: &str,
    name: String,
) -> Result<Option<Vec<Endpoint>>, DiscoveryError> {
    let mut qname = name;
    let mut visited = vec![qname.clone()];
    loop {
        let records = resolver.svcb(&qname).await?;
        let aliased = visited.len() > 1;
        let mut services: Vec<&SvcbRecord> = records.iter().filter(|r| !r.is_alias()).collect();
        if !services.is_empty() {
            // RFC 9460 §2.4.1: when ServiceMode records exist, AliasMode records are ignored.
            sort_small(&mut services, |a, b| a.priority < b.priority);
            let owner = if aliased { qname.as_str() } else { domain };
            return Ok(Some(
                services
                    .into_iter()
                    .map(|r| {
                        let host = if r.target == "." { owner.to_owned() } else { r.target.clone() };
                        endpoint(host, r.port, &r.alpn)
                    })
                    .collect(),
            ));
        }
        let Some(alias) = records.first() else {
            // Empty answer: nothing here, or, at the end of an alias chain, the target host itself.
            return Ok(aliased.then(|| vec![endpoint(qname, None, &[])]));
        };
        if alias.target == "." {
            return Err(DiscoveryError::NotFound { domain: domain.to_owned() });
        }
        if visited.len() > MAX_ALIAS_HOPS || visited.contains(&alias.target) {
            return Err(DiscoveryError::AliasLoop { domain: domain.to_owned() });
        }
        qname = alias.target.clone();
        visited.push(qname.clone());
    }
}

/// Finds the endpoints of `domain`'s ATP service, best first (docs/protocol.md §5.1, fixed as in
/// docs/protocol.md §12 item 24; see the module documentation for every rule).
///
/// 1. SVCB `_atp.<domain>`, then SVCB `_agent.<domain>`: ServiceMode records sorted by priority,
///    AliasMode followed, target `.` = the domain.
/// 2. SRV `_atp._tcp.<domain>`: sorted by priority, then by weight, highest first (deterministic
///    instead of RFC 2782's weighted random choice); port 0 means 7443; targets `.` are dropped and
///    a lone `.` means no service.
///
/// The first name with records decides. Errors: [`DiscoveryError::Dns`] (temporary) as soon as a
/// lookup fails, [`DiscoveryError::NotFound`] when nothing is published,
/// [`DiscoveryError::AliasLoop`] for a looping alias chain.
pub async fn discover<R: Resolver>(resolver: &R, domain: &str) -> Result<Vec<Endpoint>, DiscoveryError> {
    let Some(domain) = normalize_hostname(domain) else {
        return Err(DiscoveryError::NotFound { domain: clip(domain) });
    };
    for name in svcb_names(&domain) {
        if let Some(endpoints) = resolve_svcb(resolver, &domain, name).await? {
            return Ok(endpoints);
        }
    }
    let mut srv: Vec<SrvRecord> = resolver.srv(&srv_name(&domain)).await?;
    sort_small(&mut srv, |a, b| (a.priority, std::cmp::Reverse(a.weight)) < (b.priority, std::cmp::Reverse(b.weight)));
    let endpoints: Vec<Endpoint> = srv
        .into_iter()
        .filter_map(|s| {
            let host = normalize_hostname(&s.target)?;
            Some(endpoint(host, Some(s.port), &[]))
        })
        .collect();
    if endpoints.is_empty() {
        return Err(DiscoveryError::NotFound { domain });
    }
    Ok(endpoints)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::StaticResolver;
    use futures::executor::block_on;

    fn ep(host: &str, port: u16) -> Endpoint {
        Endpoint { host: host.into(), port, alpn: vec!["atp/1".into()] }
    }

    fn svcb(text: &str) -> SvcbRecord {
        SvcbRecord::parse(text).unwrap()
    }

    fn srv(priority: u16, weight: u16, port: u16, target: &str) -> SrvRecord {
        SrvRecord { priority, weight, port, target: target.into() }
    }

    fn bad_value(text: &str) -> &'static str {
        match SvcbRecord::parse(text) {
            Err(SvcbError::BadValue { key, .. }) => key,
            other => panic!("{text}: {other:?}"),
        }
    }

    #[test]
    fn parses_the_common_forms() {
        let r = svcb(r#"1 atp.example.com. port=7443 alpn="atp/1,h2" ipv4hint=127.0.0.1"#);
        assert_eq!(r.priority, 1);
        assert_eq!(r.target, "atp.example.com");
        assert_eq!(r.port, Some(7443));
        assert_eq!(r.alpn, ["atp/1", "h2"]);
        assert_eq!(r.ipv4hint, [Ipv4Addr::LOCALHOST]);
        assert!(!r.is_alias());

        let r = svcb("2 Relay.Example.TEST alpn=atp/1");
        assert_eq!((r.target.as_str(), r.port, r.alpn.as_slice()), ("relay.example.test", None, &["atp/1".into()][..]));

        let r = svcb("1 . port=1234");
        assert_eq!(r.target, ".");

        let r = svcb("0 other.example.");
        assert!(r.is_alias());
        assert_eq!(r.target, "other.example");
        assert_eq!(r, SvcbRecord::alias("Other.Example."));

        let r = svcb("1\tx.test.\n  port=1\r\n");
        assert_eq!(r.port, Some(1));
        let r = svcb("65535 x.test ipv6hint=::1,2001:db8::1");
        assert_eq!(r.ipv6hint, ["::1".parse::<Ipv6Addr>().unwrap(), "2001:db8::1".parse().unwrap()]);
    }

    #[test]
    fn parses_the_reference_generate_output_ignoring_unknown_keys() {
        // docs/protocol.md §5.1: what the reference's `atp dns generate` prints (without owner/type).
        let r = svcb(r#"1 atp.alpha.test. ( port=7443 alpn="atp/1" atp-capabilities="message" )"#);
        assert_eq!(r, SvcbRecord::service(1, "atp.alpha.test", 7443));
        // parentheses attached to tokens, registered and generic keys we do not use
        let r =
            svcb(r#"1 x.test. (port=1 mandatory=alpn,port no-default-alpn ech="AEX+DQ==" key65333=ab\044c key7=x)"#);
        assert_eq!(r.port, Some(1));
        assert!(r.alpn.is_empty());
    }

    #[test]
    fn alias_mode_ignores_params() {
        let r = svcb("0 pool.test. port=99999 alpn=,, junk\u{1F600}");
        assert_eq!(r, SvcbRecord::alias("pool.test"));
        assert_eq!(r.to_string(), "0 pool.test.");
        assert_eq!(svcb("0 .").to_string(), "0 .");
    }

    #[test]
    fn quoting_and_escapes() {
        // RFC 9460 Appendix A.1: two levels of escaping in a value-list.
        let r = svcb(r#"1 x.test. alpn="f\\\\oo\\,bar,h2""#);
        assert_eq!(r.alpn, [r"f\oo,bar", "h2"]);
        let r = svcb(r"1 x.test. alpn=f\\\092oo\092,bar,h2");
        assert_eq!(r.alpn, [r"f\oo,bar", "h2"]);
        let r = svcb(r#"1 x.test. alpn="a b\"c" port="80""#);
        assert_eq!(r.alpn, [r#"a b"c"#]);
        assert_eq!(r.port, Some(80));
        let r = svcb(r"1 x.test. alpn=\104\050");
        assert_eq!(r.alpn, ["h2"]);
        let r = svcb("1 x.test. alpn=\"é,ü\"");
        assert_eq!(r.alpn, ["é", "ü"]);
    }

    #[test]
    fn display_round_trips() {
        let r = svcb(r#"1 Relay.Example.TEST. ( port=8443 alpn="atp/1,h2" ipv4hint=127.0.0.1,10.0.0.1 )"#);
        assert_eq!(r.to_string(), r#"1 relay.example.test. alpn="atp/1,h2" port=8443 ipv4hint=127.0.0.1,10.0.0.1"#);
        assert_eq!(svcb(&r.to_string()), r);
        assert_eq!(
            SvcbRecord::service(1, "atp.example.com.", 7443).to_string(),
            r#"1 atp.example.com. alpn="atp/1" port=7443"#
        );
        let weird = SvcbRecord {
            priority: 7,
            target: ".".into(),
            port: Some(0),
            alpn: vec![r#"a,b\c"d"#.into(), "é t".into(), "\u{1}".into()],
            ipv4hint: vec![],
            ipv6hint: vec!["2001:db8::1".parse().unwrap(), "::ffff:1.2.3.4".parse().unwrap()],
        };
        assert_eq!(svcb(&weird.to_string()), weird, "{weird}");
        let bare = SvcbRecord { port: None, alpn: vec![], ..SvcbRecord::service(3, "b.test", 1) };
        assert_eq!(bare.to_string(), "3 b.test.");
        assert_eq!(svcb(&bare.to_string()), bare);
        assert_eq!(SvcbRecord::service(0, "x.test", 1).priority, 1);
    }

    #[test]
    fn parse_errors() {
        assert_eq!(SvcbRecord::parse(""), Err(SvcbError::Missing("priority")));
        assert_eq!(SvcbRecord::parse("  ( ) "), Err(SvcbError::Missing("priority")));
        assert_eq!(SvcbRecord::parse("1"), Err(SvcbError::Missing("target")));
        for prio in ["70000", "-1", "+1", "x", "1.5", "0x1", "١"] {
            assert!(matches!(SvcbRecord::parse(&format!("{prio} x.test.")), Err(SvcbError::BadPriority(_))), "{prio}");
        }
        for target in ["a..b", "bücher.test", "a/b", r"a\.b", "..", "-", "\"\""] {
            let e = SvcbRecord::parse(&format!("1 {target}"));
            assert!(matches!(e, Err(SvcbError::BadTarget(_)) | Err(SvcbError::Syntax(_))), "{target}: {e:?}");
        }
        assert_eq!(bad_value("1 x. port=99999"), "port");
        assert_eq!(bad_value("1 x. port=-1"), "port");
        assert_eq!(bad_value("1 x. port=+80"), "port");
        assert_eq!(bad_value("1 x. port="), "port");
        assert_eq!(bad_value("1 x. port"), "port");
        assert_eq!(bad_value("1 x. port=80,81"), "port");
        assert_eq!(bad_value("1 x. alpn=,"), "alpn");
        assert_eq!(bad_value("1 x. alpn=atp/1,"), "alpn");
        assert_eq!(bad_value("1 x. alpn=\"\""), "alpn");
        assert_eq!(bad_value(&format!("1 x. alpn={}", "a".repeat(256))), "alpn");
        assert_eq!(bad_value(r"1 x. alpn=\255\254"), "alpn"); // not UTF-8
        assert_eq!(bad_value(r"1 x. alpn=\256"), "alpn");
        assert_eq!(bad_value(r"1 x. alpn=\12"), "alpn");
        assert_eq!(bad_value("1 x. ipv4hint=1.2.3"), "ipv4hint");
        assert_eq!(bad_value("1 x. ipv4hint=::1"), "ipv4hint");
        assert_eq!(bad_value("1 x. ipv4hint=1.2.3.4,"), "ipv4hint");
        assert_eq!(bad_value("1 x. ipv4hint=01.2.3.4"), "ipv4hint");
        assert_eq!(bad_value("1 x. ipv6hint=1.2.3.4"), "ipv6hint");
        assert_eq!(bad_value("1 x. ipv6hint=fe80::1%eth0"), "ipv6hint");
        assert_eq!(SvcbRecord::parse("1 x. port=1 port=2"), Err(SvcbError::DuplicateKey("port".into())));
        assert_eq!(SvcbRecord::parse("1 x. foo foo"), Err(SvcbError::DuplicateKey("foo".into())));
        assert!(matches!(SvcbRecord::parse("1 x. =1"), Err(SvcbError::BadKey(_))));
        assert!(matches!(SvcbRecord::parse("1 x. p\u{f6}rt=1"), Err(SvcbError::BadKey(_))));
        assert!(matches!(SvcbRecord::parse("1 x. ;comment"), Err(SvcbError::BadKey(_))));
        assert_eq!(SvcbRecord::parse("1 x. alpn=\"atp/1"), Err(SvcbError::Syntax("unterminated quoted string")));
        assert_eq!(SvcbRecord::parse("1 x. alpn=atp\\"), Err(SvcbError::Syntax("dangling backslash")));
    }

    #[test]
    fn hostile_inputs_are_errors_not_panics() {
        assert_eq!(SvcbRecord::parse(&format!("1 x. port={}", "9".repeat(10 << 20))), Err(SvcbError::TooLong));
        assert_eq!(SvcbRecord::parse(&"x".repeat(10 << 20)), Err(SvcbError::TooLong));
        assert!(matches!(
            SvcbRecord::parse(&format!("1 x. port={}", "9".repeat(1000))),
            Err(SvcbError::BadValue { .. })
        ));
        // thousands of distinct unknown keys are fine, one repeat is not
        let many: String = (0..10_000).map(|i| format!(" k{i}=v")).collect();
        assert!(SvcbRecord::parse(&format!("1 x.{many}")).is_ok());
        assert!(SvcbRecord::parse(&format!("1 x.{many} k0=v")).is_err());
        for weird in
            ["\u{0}", "\u{202e}1 x.", "1 \u{FEFF}x.", "1 x. alpn=\u{0}", "\"", "\\", "1 x. \\\u{1F600}=1", "𝟙 x."]
        {
            let _ = SvcbRecord::parse(weird); // must not panic
        }
        assert!(SvcbRecord::parse("1 x. alpn=\u{0}").unwrap().alpn == ["\u{0}"]);
        assert!(SvcbRecord::parse(&format!("1 {}", "a.".repeat(200))).is_err());
    }

    #[test]
    fn names() {
        assert_eq!(svcb_names("a.test"), ["_atp.a.test".to_string(), "_agent.a.test".to_string()]);
        assert_eq!(srv_name("a.test"), "_atp._tcp.a.test");
    }

    #[test]
    fn discovery_sorts_priorities_stably_and_applies_defaults() {
        let mut r = StaticResolver::new();
        r.add_svcb("_atp.a.test", svcb("20 slow.a.test. port=9000"))
            .add_svcb("_atp.a.test", svcb("10 fast.a.test."))
            .add_svcb("_atp.a.test", svcb("20 also-slow.a.test. alpn=atp/1,h2"))
            .add_svcb("_atp.a.test", svcb("0 ignored-alias.test."));
        let got = block_on(discover(&r, "A.test.")).unwrap();
        assert_eq!(
            got,
            vec![
                ep("fast.a.test", 7443),
                ep("slow.a.test", 9000),
                Endpoint { host: "also-slow.a.test".into(), port: 7443, alpn: vec!["atp/1".into(), "h2".into()] },
            ]
        );
        // "." in ServiceMode at _atp.<d> is the domain itself; port 0 means the default
        r.add_svcb("_atp.dot.test", svcb("1 . port=1234")).add_svcb("_atp.zero.test", svcb("1 z.test. port=0"));
        assert_eq!(block_on(discover(&r, "dot.test")).unwrap(), vec![ep("dot.test", 1234)]);
        assert_eq!(block_on(discover(&r, "zero.test")).unwrap(), vec![ep("z.test", 7443)]);
    }

    #[test]
    fn discovery_follows_aliases() {
        let mut r = StaticResolver::new();
        r.add_svcb("_atp.b.test", svcb("0 pool.host.test."))
            .add_svcb("pool.host.test", svcb("0 pool2.host.test."))
            .add_svcb("pool2.host.test", svcb("2 node2.host.test. port=7001"))
            .add_svcb("pool2.host.test", svcb("1 node1.host.test. port=7000"))
            .add_svcb("pool2.host.test", svcb("3 .")); // "." after an alias: the alias target
        assert_eq!(
            block_on(discover(&r, "b.test")).unwrap(),
            vec![ep("node1.host.test", 7000), ep("node2.host.test", 7001), ep("pool2.host.test", 7443)]
        );
        // an alias whose target has no SVCB records: the target host on the default port
        r.add_svcb("_atp.c.test", svcb("0 atp.provider.test."));
        assert_eq!(block_on(discover(&r, "c.test")).unwrap(), vec![ep("atp.provider.test", 7443)]);
        // an alias to "." means no service, without falling back to _agent or SRV
        r.add_svcb("_atp.n.test", svcb("0 .")).add_svcb("_agent.n.test", svcb("1 wrong.test."));
        assert!(matches!(block_on(discover(&r, "n.test")), Err(DiscoveryError::NotFound { .. })));
        // an alias chain of exactly MAX_ALIAS_HOPS hops is followed
        let mut chain = StaticResolver::new();
        chain.add_svcb("_atp.long.test", svcb("0 h1.test."));
        for i in 1..MAX_ALIAS_HOPS {
            chain.add_svcb(&format!("h{i}.test"), svcb(&format!("0 h{}.test.", i + 1)));
        }
        chain.add_svcb(&format!("h{MAX_ALIAS_HOPS}.test"), svcb("1 end.test."));
        assert_eq!(block_on(discover(&chain, "long.test")).unwrap(), vec![ep("end.test", 7443)]);
        // one more is too long
        chain.svcb.clear();
        chain.add_svcb("_atp.long.test", svcb("0 h1.test."));
        for i in 1..=MAX_ALIAS_HOPS {
            chain.add_svcb(&format!("h{i}.test"), svcb(&format!("0 h{}.test.", i + 1)));
        }
        chain.add_svcb(&format!("h{}.test", MAX_ALIAS_HOPS + 1), svcb("1 end.test."));
        assert_eq!(
            block_on(discover(&chain, "long.test")),
            Err(DiscoveryError::AliasLoop { domain: "long.test".into() })
        );
    }

    #[test]
    fn discovery_detects_alias_loops() {
        let mut r = StaticResolver::new();
        r.add_svcb("_atp.loop.test", svcb("0 _atp.loop.test."));
        r.add_svcb("_atp.loop2.test", svcb("0 a.loop2.test.")).add_svcb("a.loop2.test", svcb("0 _atp.loop2.test."));
        for d in ["loop.test", "loop2.test"] {
            let e = block_on(discover(&r, d)).unwrap_err();
            assert!(matches!(e, DiscoveryError::AliasLoop { .. }) && !e.is_temporary(), "{d}");
        }
    }

    #[test]
    fn discovery_falls_back_to_agent_then_srv() {
        let mut r = StaticResolver::new();
        r.add_svcb("_agent.c.test", SvcbRecord::service(1, "agent.c.test", 7444));
        assert_eq!(block_on(discover(&r, "c.test")).unwrap(), vec![ep("agent.c.test", 7444)]);
        // _atp wins over _agent
        r.add_svcb("_atp.c.test", SvcbRecord::service(1, "atp.c.test", 7443));
        assert_eq!(block_on(discover(&r, "c.test")).unwrap(), vec![ep("atp.c.test", 7443)]);

        r.add_srv("_atp._tcp.d.test", srv(5, 1, 0, "low.d.test."))
            .add_srv("_atp._tcp.d.test", srv(1, 1, 7555, "Light.D.test."))
            .add_srv("_atp._tcp.d.test", srv(1, 60, 7556, "heavy.d.test"))
            .add_srv("_atp._tcp.d.test", srv(1, 60, 7557, "heavy2.d.test"))
            .add_srv("_atp._tcp.d.test", srv(0, 0, 1, "."));
        assert_eq!(
            block_on(discover(&r, "d.test")).unwrap(),
            vec![ep("heavy.d.test", 7556), ep("heavy2.d.test", 7557), ep("light.d.test", 7555), ep("low.d.test", 7443)]
        );
        // SVCB wins over SRV
        r.add_svcb("_agent.d.test", SvcbRecord::service(1, "svcb.d.test", 1));
        assert_eq!(block_on(discover(&r, "d.test")).unwrap(), vec![ep("svcb.d.test", 1)]);
    }

    #[test]
    fn discovery_not_found() {
        let mut r = StaticResolver::new();
        r.add_srv("_atp._tcp.none.test", srv(0, 0, 0, "."));
        let e = block_on(discover(&r, "none.test")).unwrap_err();
        assert_eq!(e, DiscoveryError::NotFound { domain: "none.test".into() });
        assert!(!e.is_temporary());
        assert!(matches!(block_on(discover(&r, "nothing.test")), Err(DiscoveryError::NotFound { .. })));
        // there is no fallback to the bare domain's addresses (docs/protocol.md §5.1)
        r.add_ip("addr.test", "192.0.2.1".parse().unwrap());
        assert!(matches!(block_on(discover(&r, "addr.test")), Err(DiscoveryError::NotFound { .. })));
        // invalid domains are not looked up at all
        r.fail("_atp.");
        let huge = "x".repeat(10 << 20);
        for bad in ["", ".", "a..b", "bad domain", huge.as_str()] {
            let e = block_on(discover(&r, bad)).unwrap_err();
            assert!(matches!(&e, DiscoveryError::NotFound { domain } if domain.chars().count() <= 65), "{e:?}");
        }
    }

    #[test]
    fn dns_failures_are_temporary_and_stop_discovery() {
        let mut r = StaticResolver::new();
        r.fail("_atp.e.test").add_svcb("_agent.e.test", SvcbRecord::service(1, "wrong.e.test", 1));
        let e = block_on(discover(&r, "e.test")).unwrap_err();
        assert!(e.is_temporary(), "a SERVFAIL must not fall through to the next name");
        assert!(e.to_string().contains("_atp.e.test"), "{e}");

        r.fail("_agent.f.test");
        assert!(block_on(discover(&r, "f.test")).unwrap_err().is_temporary());

        r.fail("_atp._tcp.g.test");
        assert!(block_on(discover(&r, "g.test")).unwrap_err().is_temporary());

        r.add_svcb("_atp.h.test", svcb("0 broken.provider.test.")).fail("broken.provider.test");
        assert!(block_on(discover(&r, "h.test")).unwrap_err().is_temporary());
    }
}
