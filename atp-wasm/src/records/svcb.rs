//! SVCB discovery records (protocol.md §5.1, RFC 9460) and the discovery procedure.
//!
//! Discovery queries SVCB `_atp.<domain>`, then `_agent.<domain>`, then SRV `_atp._tcp.<domain>`.
//! Fixing the reference (protocol.md §12 item 24): ServiceMode records are tried in priority order,
//! AliasMode records are followed, and a ServiceMode target of `.` means the domain itself.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::env::{DnsError, Resolver};
use crate::DEFAULT_PORT;

/// One SVCB record. `priority == 0` is AliasMode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SvcbRecord {
    pub priority: u16,
    /// Target name without trailing dot; `"."` (the root) is kept as `"."`.
    pub target: String,
    pub port: Option<u16>,
    pub alpn: Vec<String>,
    pub ipv4hint: Vec<Ipv4Addr>,
    pub ipv6hint: Vec<Ipv6Addr>,
}

/// One SRV record (the last discovery fallback, `_atp._tcp.<domain>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvRecord {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    pub target: String,
}

/// Where to send a transfer: `https://<host>:<port>/.well-known/atp/v1/message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub alpn: Vec<String>,
}

/// A malformed SVCB presentation string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SvcbError {
    #[error("missing {0}")]
    Missing(&'static str),
    #[error("invalid priority '{0}'")]
    BadPriority(String),
    #[error("invalid {key} value '{value}'")]
    BadValue { key: &'static str, value: String },
}

fn clip(s: &str) -> String {
    s.chars().take(64).collect()
}

fn normalize_target(t: &str) -> String {
    if t == "." {
        ".".into()
    } else {
        t.trim_end_matches('.').to_ascii_lowercase()
    }
}

impl SvcbRecord {
    /// A ServiceMode record for `target` with `port` and ALPN `atp/1`.
    pub fn service(priority: u16, target: &str, port: u16) -> Self {
        SvcbRecord {
            priority: priority.max(1),
            target: normalize_target(target),
            port: Some(port),
            alpn: vec![crate::ALPN_ATP.into()],
            ipv4hint: Vec::new(),
            ipv6hint: Vec::new(),
        }
    }

    /// True for AliasMode (priority 0).
    pub fn is_alias(&self) -> bool {
        self.priority == 0
    }

    /// Parses presentation-format RDATA, e.g. `1 atp.example.com. port=7443 alpn="atp/1,h2"`.
    /// Unknown keys (such as the reference's `atp-capabilities`) are ignored.
    pub fn parse(rdata: &str) -> Result<Self, SvcbError> {
        let mut tokens = rdata.split_ascii_whitespace().filter(|t| *t != "(" && *t != ")");
        let prio = tokens.next().ok_or(SvcbError::Missing("priority"))?;
        let priority = prio.parse::<u16>().map_err(|_| SvcbError::BadPriority(clip(prio)))?;
        let target = normalize_target(tokens.next().ok_or(SvcbError::Missing("target"))?);
        let mut rec =
            SvcbRecord { priority, target, port: None, alpn: Vec::new(), ipv4hint: Vec::new(), ipv6hint: Vec::new() };
        for param in tokens {
            let (key, value) = param.split_once('=').unwrap_or((param, ""));
            let value = value.trim_matches('"');
            let bad = |key: &'static str| SvcbError::BadValue { key, value: clip(value) };
            match key {
                "port" => rec.port = Some(value.parse().map_err(|_| bad("port"))?),
                "alpn" => {
                    rec.alpn = value.split(',').map(str::to_owned).collect();
                    if rec.alpn.iter().any(String::is_empty) {
                        return Err(bad("alpn"));
                    }
                }
                "ipv4hint" => {
                    rec.ipv4hint =
                        value.split(',').map(str::parse).collect::<Result<_, _>>().map_err(|_| bad("ipv4hint"))?
                }
                "ipv6hint" => {
                    rec.ipv6hint =
                        value.split(',').map(str::parse).collect::<Result<_, _>>().map_err(|_| bad("ipv6hint"))?
                }
                _ => {}
            }
        }
        Ok(rec)
    }
}

impl fmt::Display for SvcbRecord {
    /// Presentation-format RDATA.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let target = if self.target == "." { ".".to_owned() } else { format!("{}.", self.target) };
        write!(f, "{} {}", self.priority, target)?;
        if !self.alpn.is_empty() {
            write!(f, " alpn=\"{}\"", self.alpn.join(","))?;
        }
        if let Some(p) = self.port {
            write!(f, " port={p}")?;
        }
        let join = |v: Vec<String>| v.join(",");
        if !self.ipv4hint.is_empty() {
            write!(f, " ipv4hint={}", join(self.ipv4hint.iter().map(|i| i.to_string()).collect()))?;
        }
        if !self.ipv6hint.is_empty() {
            write!(f, " ipv6hint={}", join(self.ipv6hint.iter().map(|i| i.to_string()).collect()))?;
        }
        Ok(())
    }
}

/// The SVCB names queried for `domain`, in order: `_atp.<d>`, `_agent.<d>`.
pub fn svcb_names(domain: &str) -> [String; 2] {
    [format!("_atp.{domain}"), format!("_agent.{domain}")]
}

/// The SRV name queried last: `_atp._tcp.<d>`.
pub fn srv_name(domain: &str) -> String {
    format!("_atp._tcp.{domain}")
}

/// Why no endpoint was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiscoveryError {
    #[error("no ATP service published for {domain}")]
    NotFound { domain: String },
    #[error(transparent)]
    Dns(#[from] DnsError),
    #[error("SVCB alias chain too long or looping for {domain}")]
    AliasLoop { domain: String },
}

impl DiscoveryError {
    /// True when a later attempt may succeed (a DNS failure).
    pub fn is_temporary(&self) -> bool {
        matches!(self, DiscoveryError::Dns(_))
    }
}

/// Most AliasMode hops followed.
pub const MAX_ALIAS_HOPS: usize = 8;

/// Finds the endpoints of `domain`'s ATP service, best first. A DNS failure at any step is
/// returned as is (temporary), never treated as "no records" — falling through to the next name on
/// a SERVFAIL would deliver to the wrong place.
pub async fn discover<R: Resolver>(resolver: &R, domain: &str) -> Result<Vec<Endpoint>, DiscoveryError> {
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    for name in svcb_names(&domain) {
        let mut current = name.clone();
        for hop in 0..=MAX_ALIAS_HOPS {
            let records = resolver.svcb(&current).await?;
            if records.is_empty() {
                break;
            }
            let mut services: Vec<&SvcbRecord> = records.iter().filter(|r| !r.is_alias()).collect();
            if services.is_empty() {
                // AliasMode: follow the (first) alias.
                if hop == MAX_ALIAS_HOPS {
                    return Err(DiscoveryError::AliasLoop { domain });
                }
                match records.iter().find(|r| r.is_alias()) {
                    Some(alias) if alias.target != "." => {
                        current = alias.target.clone();
                        continue;
                    }
                    _ => return Err(DiscoveryError::NotFound { domain }),
                }
            }
            services.sort_by_key(|r| r.priority);
            return Ok(services
                .into_iter()
                .map(|r| Endpoint {
                    host: if r.target == "." { domain.clone() } else { r.target.clone() },
                    port: r.port.unwrap_or(DEFAULT_PORT),
                    alpn: if r.alpn.is_empty() { vec![crate::ALPN_ATP.into()] } else { r.alpn.clone() },
                })
                .collect());
        }
    }
    let mut srv = resolver.srv(&srv_name(&domain)).await?;
    if srv.is_empty() || srv.iter().all(|s| s.target == "." || s.target.is_empty()) {
        return Err(DiscoveryError::NotFound { domain });
    }
    srv.sort_by(|a, b| a.priority.cmp(&b.priority).then(b.weight.cmp(&a.weight)));
    Ok(srv
        .into_iter()
        .filter(|s| s.target != "." && !s.target.is_empty())
        .map(|s| Endpoint {
            host: s.target.trim_end_matches('.').to_ascii_lowercase(),
            port: if s.port == 0 { DEFAULT_PORT } else { s.port },
            alpn: vec![crate::ALPN_ATP.into()],
        })
        .collect())
}

/// Zone-file lines publishing a server (what `atp dns generate` prints): the SVCB record pointing
/// at `atp.<domain>`, its address, an ATS policy allowing `ip`, and one ATK record per
/// `(selector, public key base64)`.
pub fn zone_records(domain: &str, ip: IpAddr, port: u16, keys: &[(String, String)]) -> Vec<String> {
    let d = domain.trim_end_matches('.').to_ascii_lowercase();
    let host = format!("atp.{d}");
    let mut lines = vec![
        format!("_atp.{d}. 3600 IN SVCB {}", SvcbRecord::service(1, &host, port)),
        format!("{host}. 3600 IN {} {ip}", if ip.is_ipv4() { "A" } else { "AAAA" }),
        format!("{}. 3600 IN TXT \"v=atp1 allow=ip:{ip} deny=all\"", super::ats_name(&d)),
    ];
    for (selector, public_b64) in keys {
        lines.push(format!("{}. 3600 IN TXT \"v=atp1 k=ed25519 p={public_b64}\"", super::atk_name(selector, &d)));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::StaticResolver;
    use futures::executor::block_on;

    fn ep(host: &str, port: u16) -> Endpoint {
        Endpoint { host: host.into(), port, alpn: vec!["atp/1".into()] }
    }

    #[test]
    fn parse_and_display() {
        let r = SvcbRecord::parse(
            r#"1 Relay.Example.TEST. ( port=8443 alpn="atp/1,h2" ipv4hint=127.0.0.1 atp-capabilities="message" )"#,
        )
        .unwrap();
        assert_eq!((r.priority, r.target.as_str(), r.port), (1, "relay.example.test", Some(8443)));
        assert_eq!(r.alpn, ["atp/1", "h2"]);
        assert_eq!(r.ipv4hint, [Ipv4Addr::LOCALHOST]);
        assert_eq!(r.to_string(), r#"1 relay.example.test. alpn="atp/1,h2" port=8443 ipv4hint=127.0.0.1"#);
        assert_eq!(SvcbRecord::parse(&r.to_string()).unwrap(), r);
        let alias = SvcbRecord::parse("0 other.test.").unwrap();
        assert!(alias.is_alias());
        assert_eq!(SvcbRecord::parse("1 . alpn=atp/1").unwrap().target, ".");
        let v6 = SvcbRecord::parse("2 x.test ipv6hint=::1,2001:db8::1").unwrap();
        assert_eq!(SvcbRecord::parse(&v6.to_string()).unwrap(), v6);
    }

    #[test]
    fn parse_errors() {
        assert_eq!(SvcbRecord::parse(""), Err(SvcbError::Missing("priority")));
        assert_eq!(SvcbRecord::parse("1"), Err(SvcbError::Missing("target")));
        assert!(matches!(SvcbRecord::parse("70000 x."), Err(SvcbError::BadPriority(_))));
        assert!(matches!(SvcbRecord::parse("1 x. port=99999"), Err(SvcbError::BadValue { key: "port", .. })));
        assert!(matches!(SvcbRecord::parse("1 x. ipv4hint=1.2.3"), Err(SvcbError::BadValue { .. })));
        assert!(matches!(SvcbRecord::parse("1 x. alpn=,"), Err(SvcbError::BadValue { .. })));
        assert!(SvcbRecord::parse(&format!("1 x. port={}", "9".repeat(10 << 20))).is_err());
    }

    #[test]
    fn discovery_sorts_priorities_and_defaults() {
        let mut r = StaticResolver::new();
        r.add_svcb("_atp.a.test", SvcbRecord::parse("20 slow.a.test. port=9000").unwrap())
            .add_svcb("_atp.a.test", SvcbRecord::parse("10 fast.a.test.").unwrap());
        assert_eq!(block_on(discover(&r, "A.test.")).unwrap(), vec![ep("fast.a.test", 7443), ep("slow.a.test", 9000)]);
        r.add_svcb("_atp.dot.test", SvcbRecord::parse("1 . port=1234").unwrap());
        assert_eq!(block_on(discover(&r, "dot.test")).unwrap(), vec![ep("dot.test", 1234)]);
    }

    #[test]
    fn aliases_fallbacks_and_failures() {
        let mut r = StaticResolver::new();
        r.add_svcb("_atp.b.test", SvcbRecord::parse("0 pool.host.test.").unwrap())
            .add_svcb("pool.host.test", SvcbRecord::parse("1 node1.host.test. port=7000").unwrap());
        assert_eq!(block_on(discover(&r, "b.test")).unwrap(), vec![ep("node1.host.test", 7000)]);

        r.add_svcb("_atp.loop.test", SvcbRecord::parse("0 _atp.loop.test.").unwrap());
        assert!(matches!(block_on(discover(&r, "loop.test")), Err(DiscoveryError::AliasLoop { .. })));

        r.add_svcb("_agent.c.test", SvcbRecord::service(1, "agent.c.test", 7444));
        assert_eq!(block_on(discover(&r, "c.test")).unwrap(), vec![ep("agent.c.test", 7444)]);

        r.add_srv("_atp._tcp.d.test", SrvRecord { priority: 5, weight: 1, port: 0, target: "low.d.test.".into() })
            .add_srv(
                "_atp._tcp.d.test",
                SrvRecord { priority: 1, weight: 1, port: 7555, target: "srv.d.test.".into() },
            );
        assert_eq!(block_on(discover(&r, "d.test")).unwrap(), vec![ep("srv.d.test", 7555), ep("low.d.test", 7443)]);

        r.add_srv("_atp._tcp.none.test", SrvRecord { priority: 0, weight: 0, port: 0, target: ".".into() });
        let e = block_on(discover(&r, "none.test")).unwrap_err();
        assert!(matches!(e, DiscoveryError::NotFound { .. }) && !e.is_temporary());
        assert!(matches!(block_on(discover(&r, "nothing.test")), Err(DiscoveryError::NotFound { .. })));

        r.fail("_atp.e.test").add_svcb("_agent.e.test", SvcbRecord::service(1, "wrong.e.test", 1));
        let e = block_on(discover(&r, "e.test")).unwrap_err();
        assert!(e.is_temporary(), "a SERVFAIL must not fall through to the next name");
    }

    #[test]
    fn zone_lines() {
        let lines =
            zone_records("Alpha.test", "192.0.2.7".parse().unwrap(), 7443, &[("default".into(), "PUB=".into())]);
        assert_eq!(
            lines,
            [
                r#"_atp.alpha.test. 3600 IN SVCB 1 atp.alpha.test. alpn="atp/1" port=7443"#,
                "atp.alpha.test. 3600 IN A 192.0.2.7",
                r#"ats._atp.alpha.test. 3600 IN TXT "v=atp1 allow=ip:192.0.2.7 deny=all""#,
                r#"default.atk._atp.alpha.test. 3600 IN TXT "v=atp1 k=ed25519 p=PUB=""#,
            ]
        );
        assert!(zone_records("a.test", "::1".parse().unwrap(), 1, &[])[1].contains("IN AAAA ::1"));
    }
}
