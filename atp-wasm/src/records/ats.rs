//! ATS, the sender authorization policy (docs/protocol.md §5.2): TXT at `ats._atp.<sender domain>`,
//! e.g. `v=atp1 allow=ip:192.0.2.0/24 allow=domain:mx.example.com deny=all`.
//!
//! Directives are evaluated in order and the first match wins: `allow` gives PASS, `deny` FAIL,
//! no match NEUTRAL. Strict where the reference is lax (docs/protocol.md §12 items 8 and 10):
//!
//! * a malformed record is a permanent error (`550 5.7.27`, never a 500): a first token other than
//!   `v=atp1`, an invalid address or network, an unknown token, and the unsupported `include:` and
//!   `redirect=` are all errors instead of being skipped;
//! * records are bounded: at most [`MAX_DIRECTIVES`] directives and [`MAX_DOMAIN_LOOKUPS`]
//!   `domain:` lookups;
//! * IPv4-mapped IPv6 sources (`::ffff:192.0.2.1`) are unwrapped to IPv4;
//! * only `v=atp1` TXT records count (an SPF record at the same name is ignored), and several
//!   `v=atp1` records are an error rather than a coin toss;
//! * the matched directive reads `deny=all`, not the reference's `deny=all:all`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::{IpNet, Ipv4Net};

use super::{atp_txt_records, ats_name, clip, normalize_hostname, ATP_VERSION_TAG};
use crate::env::Resolver;
use crate::error::{ErrorCode, Rejection};

/// Most directives in one ATS record (docs/protocol.md §5.2; more is a [`AtsError::TooManyDirectives`]).
pub const MAX_DIRECTIVES: usize = 32;

/// Most `domain:` lookups one evaluation makes (docs/protocol.md §5.2; more is a PERMERROR).
pub const MAX_DOMAIN_LOOKUPS: usize = 32;

/// What a matching directive decides (docs/protocol.md §5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtsAction {
    /// `allow=…`: PASS.
    Allow,
    /// `deny=…`: FAIL.
    Deny,
}

/// Which sources a directive matches (docs/protocol.md §5.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AtsQualifier {
    /// `all`: every source.
    All,
    /// `ip:<address or CIDR>`: sources in this network (a bare address is a /32 or /128; host bits
    /// are cleared, as with Python's non-strict `ip_network`).
    Ip(IpNet),
    /// `domain:<name>`: sources among the A/AAAA addresses of this name (lowercase, no trailing dot).
    Domain(String),
}

/// One `allow=…` / `deny=…` directive (docs/protocol.md §5.2). Its text form (`allow=all`,
/// `deny=ip:10.0.0.0/8`, `allow=domain:mx.example.com`) is what a FAIL reports as
/// `matched_directive`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AtsDirective {
    /// What a match decides.
    pub action: AtsAction,
    /// What it matches.
    pub qualifier: AtsQualifier,
}

impl fmt::Display for AtsDirective {
    /// `allow=all`, `deny=ip:10.0.0.0/8`, `allow=ip:192.0.2.1` (a single address without its
    /// prefix length), `allow=domain:mx.example.com`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let action = match self.action {
            AtsAction::Allow => "allow",
            AtsAction::Deny => "deny",
        };
        match &self.qualifier {
            AtsQualifier::All => write!(f, "{action}=all"),
            AtsQualifier::Ip(net) if net.prefix_len() == net.max_prefix_len() => {
                write!(f, "{action}=ip:{}", net.addr())
            }
            AtsQualifier::Ip(net) => write!(f, "{action}=ip:{net}"),
            AtsQualifier::Domain(d) => write!(f, "{action}=domain:{d}"),
        }
    }
}

/// A parsed ATS record (docs/protocol.md §5.2).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AtsPolicy {
    /// The directives, in evaluation order.
    pub directives: Vec<AtsDirective>,
}

/// Why an ATS record is malformed: a PERMERROR, answered with `550 5.7.27` (docs/protocol.md §5.2, §12
/// item 8).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AtsError {
    /// The first token is not exactly `v=atp1`.
    #[error("record does not start with v=atp1")]
    NotAtp1,
    /// `include:` or `redirect=`, which atp (like the reference) does not implement.
    #[error("unsupported token '{0}'")]
    Unsupported(String),
    /// Anything that is not `allow=`/`deny=` with `all`, `ip:` or `domain:`.
    #[error("unknown token '{0}'")]
    UnknownToken(String),
    /// An `ip:` value that is not an address or network.
    #[error("invalid address or network '{0}'")]
    BadIp(String),
    /// A `domain:` value that is not a DNS name.
    #[error("invalid domain '{0}'")]
    BadDomain(String),
    /// More than [`MAX_DIRECTIVES`] directives.
    #[error("more than {MAX_DIRECTIVES} directives")]
    TooManyDirectives,
}

/// The prefix length of an IPv4 netmask (`255.255.0.0`) or, failing that, hostmask (`0.0.255.255`),
/// in that order, as Python's `ip_network` reads them.
fn v4_mask_prefix(mask: &str) -> Option<u8> {
    let m = u32::from(mask.parse::<Ipv4Addr>().ok()?);
    [m, !m].into_iter().find(|x| x.leading_ones() + x.trailing_zeros() == 32).map(|x| x.leading_ones() as u8)
}

/// Parses `ip:` values like Python's `ip_network(value, strict=False)`: an address, or
/// `address/prefix` with host bits allowed (and cleared), or for IPv4 `address/netmask`.
fn parse_net(value: &str) -> Result<IpNet, AtsError> {
    let bad = || AtsError::BadIp(clip(value));
    let (addr, prefix) = match value.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (value, None),
    };
    let addr: IpAddr = addr.parse().map_err(|_| bad())?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let len = match prefix {
        None => max,
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
            p.parse::<u8>().ok().filter(|l| *l <= max).ok_or_else(bad)?
        }
        Some(p) if addr.is_ipv4() => v4_mask_prefix(p).ok_or_else(bad)?,
        Some(_) => return Err(bad()),
    };
    IpNet::new(addr, len).map(|n| n.trunc()).map_err(|_| bad())
}

/// Does `net` contain the (canonical) `source`? Families never match each other, except that a
/// network inside `::ffff:0:0/96` stands for the IPv4 addresses it maps (as sources are unwrapped).
fn net_contains(net: &IpNet, source: IpAddr) -> bool {
    match (net, source) {
        (IpNet::V6(n), IpAddr::V4(v4)) => match n.network().to_ipv4_mapped() {
            Some(base) if n.prefix_len() >= 96 => {
                Ipv4Net::new(base, n.prefix_len() - 96).map(|m| m.contains(&v4)).unwrap_or(false)
            }
            _ => false,
        },
        _ => net.contains(&source),
    }
}

impl AtsPolicy {
    /// Parses the record text (docs/protocol.md §5.2): whitespace-separated tokens, the first exactly
    /// `v=atp1`, then `allow=`/`deny=` directives with `all`, `ip:<address or CIDR>` or
    /// `domain:<name>`. Anything else is an [`AtsError`].
    pub fn parse(text: &str) -> Result<Self, AtsError> {
        let mut tokens = text.split_ascii_whitespace();
        if tokens.next() != Some(ATP_VERSION_TAG) {
            return Err(AtsError::NotAtp1);
        }
        let mut directives = Vec::new();
        for token in tokens {
            if token.starts_with("include:") || token.starts_with("redirect=") {
                return Err(AtsError::Unsupported(clip(token)));
            }
            let (action, rest) = match token.split_once('=') {
                Some(("allow", rest)) => (AtsAction::Allow, rest),
                Some(("deny", rest)) => (AtsAction::Deny, rest),
                _ => return Err(AtsError::UnknownToken(clip(token))),
            };
            if directives.len() == MAX_DIRECTIVES {
                return Err(AtsError::TooManyDirectives);
            }
            let qualifier = match rest.split_once(':') {
                None if rest == "all" => AtsQualifier::All,
                Some(("ip", value)) => AtsQualifier::Ip(parse_net(value)?),
                Some(("domain", value)) => {
                    AtsQualifier::Domain(normalize_hostname(value).ok_or_else(|| AtsError::BadDomain(clip(value)))?)
                }
                _ => return Err(AtsError::UnknownToken(clip(token))),
            };
            directives.push(AtsDirective { action, qualifier });
        }
        Ok(AtsPolicy { directives })
    }

    /// First-match evaluation for a connection from `source` (docs/protocol.md §5.2): `allow` gives
    /// [`AtsResult::Pass`], `deny` [`AtsResult::Fail`], no match [`AtsResult::Neutral`].
    ///
    /// An IPv4-mapped IPv6 source is unwrapped to IPv4 first. `domain:` names are resolved (A and
    /// AAAA, through [`Resolver::ip_addrs`]) only when evaluation reaches them; a failed lookup
    /// gives [`AtsResult::TempError`], a name without addresses simply does not match, and more
    /// than [`MAX_DOMAIN_LOOKUPS`] lookups give [`AtsResult::PermError`].
    pub async fn evaluate<R: Resolver>(&self, source: IpAddr, resolver: &R) -> AtsResult {
        let source = source.to_canonical();
        let mut lookups = 0;
        for d in &self.directives {
            let matched = match &d.qualifier {
                AtsQualifier::All => true,
                AtsQualifier::Ip(net) => net_contains(net, source),
                AtsQualifier::Domain(name) => {
                    lookups += 1;
                    if lookups > MAX_DOMAIN_LOOKUPS {
                        return AtsResult::PermError(format!("more than {MAX_DOMAIN_LOOKUPS} domain lookups"));
                    }
                    match resolver.ip_addrs(name).await {
                        Ok(ips) => ips.iter().any(|ip| ip.to_canonical() == source),
                        Err(e) => return AtsResult::TempError(e.to_string()),
                    }
                }
            };
            if matched {
                return match d.action {
                    AtsAction::Allow => AtsResult::Pass(d.clone()),
                    AtsAction::Deny => AtsResult::Fail(d.clone()),
                };
            }
        }
        AtsResult::Neutral
    }
}

impl fmt::Display for AtsPolicy {
    /// The record text, e.g. `v=atp1 allow=ip:192.0.2.1 deny=all`; [`AtsPolicy::parse`] reads it
    /// back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(ATP_VERSION_TAG)?;
        for d in &self.directives {
            write!(f, " {d}")?;
        }
        Ok(())
    }
}

/// The outcome of an ATS check (docs/protocol.md §5.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AtsResult {
    /// An `allow` directive matched.
    Pass(AtsDirective),
    /// A `deny` directive matched.
    Fail(AtsDirective),
    /// No record, or no directive matched.
    Neutral,
    /// A DNS lookup failed; the sender should retry (the reason is for logs, not for the peer).
    TempError(String),
    /// The record is malformed or ambiguous (the reason goes into the rejection's `details`).
    PermError(String),
}

impl AtsResult {
    /// The receiver's refusal for this outcome (docs/protocol.md §5.2, §5.4); `None` for PASS and
    /// NEUTRAL, which continue to ATK.
    ///
    /// * FAIL: 403 `{"error":"ATS validation failed","error_code":"550 5.7.26","matched_directive":…}`
    /// * TEMPERROR: 451 `{"error":"ATS temporary DNS error, retry later","error_code":"451 4.7.26"}`
    /// * PERMERROR: 403 `{"error":"ATS record invalid","error_code":"550 5.7.27","details":…}` (the
    ///   reference answers 500 here, docs/protocol.md §12 item 8)
    pub fn to_rejection(&self) -> Option<Rejection> {
        match self {
            AtsResult::Pass(_) | AtsResult::Neutral => None,
            AtsResult::Fail(d) => Some(
                Rejection::new(ErrorCode::AtsFail, "ATS validation failed").with("matched_directive", d.to_string()),
            ),
            AtsResult::TempError(_) => {
                Some(Rejection::new(ErrorCode::AtsTempError, "ATS temporary DNS error, retry later"))
            }
            AtsResult::PermError(why) => {
                Some(Rejection::new(ErrorCode::AtsSyntax, "ATS record invalid").with("details", why.clone()))
            }
        }
    }
}

/// Looks up and evaluates the ATS policy of `sender_domain` for a connection from `source`
/// (docs/protocol.md §5.2). The TXT records at `ats._atp.<sender_domain>` are filtered to those starting
/// with `v=atp1` (docs/protocol.md §12 item 10): none gives NEUTRAL, more than one PERMERROR, a lookup
/// failure TEMPERROR, a malformed record PERMERROR; otherwise the policy is evaluated.
pub async fn check_ats<R: Resolver>(resolver: &R, sender_domain: &str, source: IpAddr) -> AtsResult {
    let domain = sender_domain.strip_suffix('.').unwrap_or(sender_domain).to_ascii_lowercase();
    let name = ats_name(&domain);
    let txt = match resolver.txt(&name).await {
        Ok(txt) => txt,
        Err(e) => return AtsResult::TempError(e.to_string()),
    };
    let records = atp_txt_records(&txt);
    match records.as_slice() {
        [] => AtsResult::Neutral,
        [one] => match AtsPolicy::parse(one) {
            Ok(policy) => policy.evaluate(source, resolver).await,
            Err(e) => AtsResult::PermError(e.to_string()),
        },
        _ => AtsResult::PermError(format!("{} v=atp1 records at {}", records.len(), clip(&name))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::StaticResolver;
    use futures::executor::block_on;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn net(s: &str) -> AtsQualifier {
        AtsQualifier::Ip(s.parse().unwrap())
    }

    fn eval(record: &str, source: &str, r: &StaticResolver) -> AtsResult {
        block_on(AtsPolicy::parse(record).unwrap().evaluate(ip(source), r))
    }

    fn fail_text(res: AtsResult) -> String {
        match res {
            AtsResult::Fail(d) => d.to_string(),
            other => panic!("expected FAIL, got {other:?}"),
        }
    }

    fn pass_text(res: AtsResult) -> String {
        match res {
            AtsResult::Pass(d) => d.to_string(),
            other => panic!("expected PASS, got {other:?}"),
        }
    }

    #[test]
    fn grammar() {
        let p = AtsPolicy::parse(
            "v=atp1 allow=all deny=all allow=ip:192.0.2.0/24 deny=ip:2001:db8::1 allow=domain:MX.Example.com. deny=domain:x.test",
        )
        .unwrap();
        use AtsAction::{Allow, Deny};
        let want = [
            (Allow, AtsQualifier::All),
            (Deny, AtsQualifier::All),
            (Allow, net("192.0.2.0/24")),
            (Deny, net("2001:db8::1/128")),
            (Allow, AtsQualifier::Domain("mx.example.com".into())),
            (Deny, AtsQualifier::Domain("x.test".into())),
        ];
        let got: Vec<_> = p.directives.iter().map(|d| (d.action, d.qualifier.clone())).collect();
        assert_eq!(got, want);
        assert_eq!(AtsPolicy::parse("v=atp1").unwrap(), AtsPolicy::default());
        assert_eq!(AtsPolicy::parse("  v=atp1\t\n").unwrap(), AtsPolicy::default());
        assert_eq!(AtsPolicy::parse("\tv=atp1  allow=all\r\n").unwrap().directives.len(), 1);
    }

    #[test]
    fn ip_values_follow_python_non_strict_ip_network() {
        for (value, want) in [
            ("10.1.2.3", "10.1.2.3/32"),
            ("10.1.2.3/8", "10.0.0.0/8"),
            ("10.1.2.3/008", "10.0.0.0/8"),
            ("10.1.2.3/0", "0.0.0.0/0"),
            ("10.1.2.3/32", "10.1.2.3/32"),
            ("10.1.2.3/255.255.0.0", "10.1.0.0/16"),
            ("10.1.2.3/0.0.0.255", "10.1.2.0/24"),
            ("10.1.2.3/0.0.0.0", "0.0.0.0/0"),
            ("10.1.2.3/255.255.255.255", "10.1.2.3/32"),
            ("2001:db8::1", "2001:db8::1/128"),
            ("2001:DB8::1/32", "2001:db8::/32"),
            ("::/0", "::/0"),
            ("::ffff:10.0.0.1/104", "::ffff:10.0.0.0/104"),
        ] {
            let p = AtsPolicy::parse(&format!("v=atp1 allow=ip:{value}")).unwrap();
            assert_eq!(p.directives[0].qualifier, net(want), "{value}");
        }
        for value in [
            "",
            "999.1.1.1",
            "10.0.0.0/33",
            "2001:db8::/129",
            "10.0.0.0/",
            "10.0.0.0/-1",
            "10.0.0.0/+8",
            "10.0.0.0/8/8",
            "10.0.0.0/255.0.255.0",
            "10.0.0.0/99999999999999999999",
            "2001:db8::/ffff::",
            "010.0.0.1",
            "10.0.0",
            "fe80::1%eth0",
            "[::1]",
            "localhost",
            "١٠.0.0.1",
        ] {
            assert_eq!(
                AtsPolicy::parse(&format!("v=atp1 allow=ip:{value}")),
                Err(AtsError::BadIp(value.into())),
                "{value}"
            );
        }
    }

    #[test]
    fn display_round_trips() {
        let text =
            "v=atp1 allow=ip:192.0.2.0/24 allow=ip:2001:db8::1 deny=ip:10.0.0.1 allow=domain:mx.example.com deny=all";
        let p = AtsPolicy::parse(text).unwrap();
        assert_eq!(p.to_string(), text);
        assert_eq!(AtsPolicy::parse(&p.to_string()).unwrap(), p);
        // normalised forms
        for (input, output) in [
            ("v=atp1   allow=ip:10.1.2.3/8", "v=atp1 allow=ip:10.0.0.0/8"),
            ("v=atp1 allow=ip:10.1.2.3/32", "v=atp1 allow=ip:10.1.2.3"),
            ("v=atp1 allow=ip:2001:db8:0:0::/64", "v=atp1 allow=ip:2001:db8::/64"),
            ("v=atp1 deny=domain:A.Test.", "v=atp1 deny=domain:a.test"),
            ("v=atp1", "v=atp1"),
        ] {
            let p = AtsPolicy::parse(input).unwrap();
            assert_eq!(p.to_string(), output);
            assert_eq!(AtsPolicy::parse(output).unwrap(), p);
        }
        let d = |action, qualifier| AtsDirective { action, qualifier }.to_string();
        assert_eq!(d(AtsAction::Allow, AtsQualifier::All), "allow=all");
        assert_eq!(d(AtsAction::Deny, net("10.0.0.0/8")), "deny=ip:10.0.0.0/8");
        assert_eq!(d(AtsAction::Allow, AtsQualifier::Domain("mx.example.com".into())), "allow=domain:mx.example.com");
    }

    #[test]
    fn malformed_records_are_errors() {
        for (text, want) in [
            ("v=spf1 allow=all", AtsError::NotAtp1),
            ("", AtsError::NotAtp1),
            ("   ", AtsError::NotAtp1),
            ("V=ATP1 allow=all", AtsError::NotAtp1),
            ("v=atp1; allow=all", AtsError::NotAtp1),
            ("v=atp10 allow=all", AtsError::NotAtp1),
            ("allow=all v=atp1", AtsError::NotAtp1),
            ("v=atp1 v=atp1", AtsError::UnknownToken("v=atp1".into())),
            ("v=atp1 include:other.test", AtsError::Unsupported("include:other.test".into())),
            ("v=atp1 redirect=other.test", AtsError::Unsupported("redirect=other.test".into())),
            ("v=atp1 permit=all", AtsError::UnknownToken("permit=all".into())),
            ("v=atp1 Allow=all", AtsError::UnknownToken("Allow=all".into())),
            ("v=atp1 allow=ALL", AtsError::UnknownToken("allow=ALL".into())),
            ("v=atp1 allow=any", AtsError::UnknownToken("allow=any".into())),
            ("v=atp1 allow=all:all", AtsError::UnknownToken("allow=all:all".into())),
            ("v=atp1 allow=", AtsError::UnknownToken("allow=".into())),
            ("v=atp1 allow", AtsError::UnknownToken("allow".into())),
            ("v=atp1 allow=all -all", AtsError::UnknownToken("-all".into())),
            ("v=atp1 allow=ipv4:10.0.0.1", AtsError::UnknownToken("allow=ipv4:10.0.0.1".into())),
            ("v=atp1 allow=a:mx.test", AtsError::UnknownToken("allow=a:mx.test".into())),
            ("v=atp1 allow=ip:nonsense", AtsError::BadIp("nonsense".into())),
            ("v=atp1 allow=domain:", AtsError::BadDomain("".into())),
            ("v=atp1 allow=domain:.", AtsError::BadDomain(".".into())),
            ("v=atp1 allow=domain:a..b", AtsError::BadDomain("a..b".into())),
            ("v=atp1 allow=domain:bücher.test", AtsError::BadDomain("bücher.test".into())),
            ("v=atp1 allow=domain:a/b", AtsError::BadDomain("a/b".into())),
        ] {
            assert_eq!(AtsPolicy::parse(text), Err(want), "{text}");
        }
        // an error anywhere makes the whole record invalid, even after valid directives
        assert_eq!(
            AtsPolicy::parse("v=atp1 allow=all include:x.test"),
            Err(AtsError::Unsupported("include:x.test".into()))
        );
    }

    #[test]
    fn directive_limit() {
        let max = format!("v=atp1{}", " allow=ip:10.0.0.1".repeat(MAX_DIRECTIVES));
        assert_eq!(AtsPolicy::parse(&max).unwrap().directives.len(), MAX_DIRECTIVES);
        let many = format!("v=atp1{}", " allow=ip:10.0.0.1".repeat(MAX_DIRECTIVES + 1));
        assert_eq!(AtsPolicy::parse(&many), Err(AtsError::TooManyDirectives));
    }

    #[test]
    fn hostile_inputs_are_errors_not_panics() {
        let huge = "x".repeat(10 << 20);
        assert_eq!(AtsPolicy::parse(&huge), Err(AtsError::NotAtp1));
        let e = AtsPolicy::parse(&format!("v=atp1 {huge}")).unwrap_err();
        assert!(e.to_string().len() < 200, "error messages are clipped");
        assert!(AtsPolicy::parse(&format!("v=atp1 allow=ip:{huge}")).is_err());
        assert!(AtsPolicy::parse(&format!("v=atp1 allow=domain:{huge}")).is_err());
        assert_eq!(
            AtsPolicy::parse(&format!("v=atp1{}", " deny=all".repeat(100_000))),
            Err(AtsError::TooManyDirectives)
        );
        for weird in [
            "v=atp1 allow=domain:\u{1F600}.test",
            "v=atp1 allow=ip:\u{0}",
            "v=atp1\u{a0}allow=all",
            "v=atp1 allow=ip:1.2.3.4/\u{1F600}",
            "v=atp1 allow=ip:𝟙.2.3.4",
            "\u{feff}v=atp1 allow=all",
            "v=atp1 \u{202e}allow=all",
        ] {
            assert!(AtsPolicy::parse(weird).is_err(), "{weird:?}");
        }
    }

    #[test]
    fn first_match_wins() {
        let r = StaticResolver::new();
        // docs/protocol.md §11.3
        assert_eq!(fail_text(eval("v=atp1 deny=ip:10.0.0.0/8", "10.1.2.3", &r)), "deny=ip:10.0.0.0/8");
        assert_eq!(fail_text(eval("v=atp1 allow=ip:127.0.0.1 deny=all", "10.1.2.3", &r)), "deny=all");
        assert_eq!(pass_text(eval("v=atp1 allow=ip:127.0.0.1 deny=all", "127.0.0.1", &r)), "allow=ip:127.0.0.1");
        // order decides
        let d = "v=atp1 deny=ip:10.0.0.0/8 allow=all";
        assert_eq!(fail_text(eval(d, "10.1.2.3", &r)), "deny=ip:10.0.0.0/8");
        assert_eq!(pass_text(eval(d, "192.0.2.1", &r)), "allow=all");
        let d = "v=atp1 allow=ip:10.1.0.0/16 deny=ip:10.0.0.0/8 allow=all";
        assert_eq!(pass_text(eval(d, "10.1.9.9", &r)), "allow=ip:10.1.0.0/16");
        assert_eq!(fail_text(eval(d, "10.2.9.9", &r)), "deny=ip:10.0.0.0/8");
        assert_eq!(pass_text(eval("v=atp1 allow=all deny=all", "10.0.0.1", &r)), "allow=all");
        assert_eq!(fail_text(eval("v=atp1 deny=all allow=all", "10.0.0.1", &r)), "deny=all");
        // no match
        assert_eq!(eval("v=atp1 allow=ip:127.0.0.1", "10.0.0.1", &r), AtsResult::Neutral);
        assert_eq!(eval("v=atp1", "10.0.0.1", &r), AtsResult::Neutral);
        // network edges
        assert_eq!(pass_text(eval("v=atp1 allow=ip:10.0.0.0/8", "10.255.255.255", &r)), "allow=ip:10.0.0.0/8");
        assert_eq!(eval("v=atp1 allow=ip:10.0.0.0/8", "11.0.0.0", &r), AtsResult::Neutral);
        assert_eq!(pass_text(eval("v=atp1 allow=ip:2001:db8::/32", "2001:db8::5", &r)), "allow=ip:2001:db8::/32");
        assert_eq!(eval("v=atp1 allow=ip:2001:db8::/32", "2001:db9::5", &r), AtsResult::Neutral);
    }

    #[test]
    fn address_families() {
        let r = StaticResolver::new();
        // v4 and v6 never match each other
        assert_eq!(eval("v=atp1 allow=ip:::/0", "10.0.0.1", &r), AtsResult::Neutral);
        assert_eq!(eval("v=atp1 allow=ip:0.0.0.0/0", "2001:db8::1", &r), AtsResult::Neutral);
        assert_eq!(
            eval("v=atp1 allow=ip:::a00:1", "10.0.0.1", &r),
            AtsResult::Neutral,
            "IPv4-compatible is not mapped"
        );
        // IPv4-mapped IPv6 sources are unwrapped
        let p = "v=atp1 allow=ip:127.0.0.1 deny=all";
        assert_eq!(pass_text(eval(p, "::ffff:127.0.0.1", &r)), "allow=ip:127.0.0.1");
        assert_eq!(fail_text(eval(p, "::ffff:10.1.2.3", &r)), "deny=all");
        assert_eq!(pass_text(eval("v=atp1 allow=ip:10.0.0.0/8", "::ffff:10.9.9.9", &r)), "allow=ip:10.0.0.0/8");
        // a mapped network stands for the IPv4 addresses it maps
        let m = "v=atp1 allow=ip:::ffff:10.0.0.0/104";
        assert!(matches!(eval(m, "10.1.2.3", &r), AtsResult::Pass(_)));
        assert!(matches!(eval(m, "::ffff:10.1.2.3", &r), AtsResult::Pass(_)));
        assert_eq!(eval(m, "11.1.2.3", &r), AtsResult::Neutral);
        assert!(matches!(eval("v=atp1 allow=ip:::ffff:10.0.0.1", "10.0.0.1", &r), AtsResult::Pass(_)));
        assert_eq!(eval("v=atp1 allow=ip:::/64", "10.0.0.1", &r), AtsResult::Neutral);
    }

    #[test]
    fn domain_directives_resolve_lazily() {
        let mut r = StaticResolver::new();
        r.add_ip("gamma.test", ip("127.0.0.1"))
            .add_ip("gamma.test", ip("2001:db8::7"))
            .add_ip("mapped.test", ip("::ffff:192.0.2.9"))
            .fail("broken.test");
        // docs/protocol.md §11.3
        let rec = "v=atp1 allow=domain:gamma.test deny=all";
        assert_eq!(pass_text(eval(rec, "127.0.0.1", &r)), "allow=domain:gamma.test");
        assert_eq!(pass_text(eval(rec, "2001:db8::7", &r)), "allow=domain:gamma.test");
        assert_eq!(pass_text(eval(rec, "::ffff:127.0.0.1", &r)), "allow=domain:gamma.test");
        assert_eq!(fail_text(eval(rec, "127.0.0.2", &r)), "deny=all");
        assert!(matches!(eval("v=atp1 allow=domain:mapped.test", "192.0.2.9", &r), AtsResult::Pass(_)));
        // a name without addresses does not match
        assert_eq!(eval("v=atp1 allow=domain:nothing.test", "127.0.0.1", &r), AtsResult::Neutral);
        assert_eq!(
            fail_text(eval("v=atp1 deny=domain:gamma.test allow=all", "127.0.0.1", &r)),
            "deny=domain:gamma.test"
        );
        // a failed lookup is a TEMPERROR, but only when evaluation reaches it
        assert!(matches!(eval("v=atp1 allow=domain:broken.test", "127.0.0.1", &r), AtsResult::TempError(_)));
        assert!(matches!(
            eval("v=atp1 allow=ip:127.0.0.0/8 allow=domain:broken.test", "127.0.0.1", &r),
            AtsResult::Pass(_)
        ));
        assert!(matches!(
            eval("v=atp1 allow=ip:10.0.0.0/8 allow=domain:broken.test", "127.0.0.1", &r),
            AtsResult::TempError(_)
        ));
    }

    #[test]
    fn domain_lookups_are_bounded() {
        let r = StaticResolver::new();
        let deny_none = AtsDirective { action: AtsAction::Deny, qualifier: AtsQualifier::Domain("none.test".into()) };
        let all = AtsDirective { action: AtsAction::Allow, qualifier: AtsQualifier::All };
        let mut p = AtsPolicy { directives: vec![deny_none.clone(); MAX_DOMAIN_LOOKUPS] };
        p.directives.push(all.clone());
        assert!(matches!(block_on(p.evaluate(ip("127.0.0.1"), &r)), AtsResult::Pass(_)));
        // a policy built in code (not parsed) with more lookups still stops
        let mut p = AtsPolicy { directives: vec![deny_none; MAX_DOMAIN_LOOKUPS + 1] };
        p.directives.push(all);
        assert!(matches!(block_on(p.evaluate(ip("127.0.0.1"), &r)), AtsResult::PermError(_)));
    }

    #[test]
    fn check_ats_filters_records() {
        let src = ip("10.1.2.3");
        let mut r = StaticResolver::new();
        r.add_txt("ats._atp.a.test", "v=spf1 -all").add_txt("ats._atp.a.test", "v=atp1 deny=ip:10.0.0.0/8");
        r.add_txt("ats._atp.a.test", "google-site-verification=xyz");
        assert_eq!(fail_text(block_on(check_ats(&r, "a.test", src))), "deny=ip:10.0.0.0/8");
        assert_eq!(fail_text(block_on(check_ats(&r, "A.Test.", src))), "deny=ip:10.0.0.0/8");
        // no record, or no v=atp1 record: NEUTRAL
        assert_eq!(block_on(check_ats(&r, "none.test", src)), AtsResult::Neutral);
        r.add_txt("ats._atp.b.test", "v=spf1 allow=all");
        assert_eq!(block_on(check_ats(&r, "b.test", src)), AtsResult::Neutral, "only v=atp1 records count");
        // malformed: PERMERROR
        r.add_txt("ats._atp.c.test", "v=atp1 allow=ip:nonsense");
        assert!(matches!(block_on(check_ats(&r, "c.test", src)), AtsResult::PermError(m) if m.contains("nonsense")));
        // several v=atp1 records: PERMERROR
        r.add_txt("ats._atp.d.test", "v=atp1 allow=all").add_txt("ats._atp.d.test", "v=atp1 deny=all");
        assert!(matches!(block_on(check_ats(&r, "d.test", src)), AtsResult::PermError(m) if m.starts_with("2 v=atp1")));
        // DNS failure: TEMPERROR
        r.fail("ats._atp.e.test");
        assert!(matches!(block_on(check_ats(&r, "e.test", src)), AtsResult::TempError(_)));
        // the policy's own lookups go through the same resolver
        r.add_txt("ats._atp.f.test", "v=atp1 allow=domain:mx.f.test deny=all").add_ip("mx.f.test", src);
        assert_eq!(pass_text(block_on(check_ats(&r, "f.test", src))), "allow=domain:mx.f.test");
    }

    #[test]
    fn rejections() {
        let fail = AtsResult::Fail(AtsDirective { action: AtsAction::Deny, qualifier: net("10.0.0.0/8") });
        let rej = fail.to_rejection().unwrap();
        assert_eq!((rej.status(), rej.code), (403, ErrorCode::AtsFail));
        assert_eq!(
            rej.to_json().to_string(),
            r#"{"error":"ATS validation failed","error_code":"550 5.7.26","matched_directive":"deny=ip:10.0.0.0/8"}"#
        );
        let rej = AtsResult::TempError("DNS lookup of x failed: SERVFAIL".into()).to_rejection().unwrap();
        assert_eq!(rej.status(), 451);
        assert_eq!(
            rej.to_json().to_string(),
            r#"{"error":"ATS temporary DNS error, retry later","error_code":"451 4.7.26"}"#
        );
        let rej = AtsResult::PermError("record does not start with v=atp1".into()).to_rejection().unwrap();
        assert_eq!((rej.status(), rej.code), (403, ErrorCode::AtsSyntax));
        assert_eq!(
            rej.to_json().to_string(),
            r#"{"error":"ATS record invalid","error_code":"550 5.7.27","details":"record does not start with v=atp1"}"#
        );
        let pass = AtsResult::Pass(AtsDirective { action: AtsAction::Allow, qualifier: AtsQualifier::All });
        assert!(pass.to_rejection().is_none());
        assert!(AtsResult::Neutral.to_rejection().is_none());
    }
}
