//! ATS, the sender authorization policy (protocol.md §5.2): TXT at `ats._atp.<sender domain>`,
//! e.g. `v=atp1 allow=ip:192.0.2.0/24 allow=domain:mx.example.com deny=all`.
//!
//! Directives are evaluated in order and the first match wins: `allow` gives PASS, `deny` FAIL,
//! no match NEUTRAL. Strict where the reference is lax (protocol.md §12 item 8): a malformed record
//! is a permanent error (`550 5.7.27`, never a 500), unknown or unsupported tokens (`include:`,
//! `redirect=`) are errors rather than silently skipped, IPv4-mapped IPv6 sources are unwrapped, and
//! several `v=atp1` records at the name are an error rather than a coin toss.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

use super::{atp_txt_records, ats_name, ATP_VERSION_TAG};
use crate::env::Resolver;
use crate::error::{ErrorCode, Rejection};

/// Most directives in one record.
pub const MAX_DIRECTIVES: usize = 32;
/// Most `domain:` lookups one evaluation may make.
pub const MAX_DOMAIN_LOOKUPS: usize = 10;

/// What a matching directive decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtsAction {
    Allow,
    Deny,
}

/// Which sources a directive matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AtsQualifier {
    /// Every source.
    All,
    /// Sources in this network (a bare address is a /32 or /128).
    Ip(IpNet),
    /// Sources among the A/AAAA addresses of this name.
    Domain(String),
}

/// One `allow=…` / `deny=…` directive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AtsDirective {
    pub action: AtsAction,
    pub qualifier: AtsQualifier,
}

impl fmt::Display for AtsDirective {
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

/// A parsed ATS record.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AtsPolicy {
    pub directives: Vec<AtsDirective>,
}

/// Why an ATS record is malformed (`550 5.7.27`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AtsError {
    #[error("record does not start with v=atp1")]
    NotAtp1,
    #[error("unsupported token '{0}'")]
    Unsupported(String),
    #[error("unknown token '{0}'")]
    UnknownToken(String),
    #[error("invalid address or network '{0}'")]
    BadIp(String),
    #[error("invalid domain '{0}'")]
    BadDomain(String),
    #[error("more than {MAX_DIRECTIVES} directives")]
    TooManyDirectives,
}

fn clip(s: &str) -> String {
    s.chars().take(64).collect()
}

fn parse_net(value: &str) -> Result<IpNet, AtsError> {
    if let Ok(net) = value.parse::<IpNet>() {
        return Ok(net.trunc()); // host bits allowed, as Python's non-strict ip_network
    }
    value.parse::<IpAddr>().map(IpNet::from).map_err(|_| AtsError::BadIp(clip(value)))
}

impl AtsPolicy {
    /// Parses the record text.
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
            let qualifier = match rest.split_once(':') {
                None if rest == "all" => AtsQualifier::All,
                Some(("ip", value)) => AtsQualifier::Ip(parse_net(value)?),
                Some(("domain", value)) => {
                    let name = value.trim_end_matches('.').to_ascii_lowercase();
                    crate::identity::validate_domain(&name).map_err(|_| AtsError::BadDomain(clip(value)))?;
                    AtsQualifier::Domain(name)
                }
                _ => return Err(AtsError::UnknownToken(clip(token))),
            };
            if directives.len() == MAX_DIRECTIVES {
                return Err(AtsError::TooManyDirectives);
            }
            directives.push(AtsDirective { action, qualifier });
        }
        Ok(AtsPolicy { directives })
    }

    /// First-match evaluation for a connection from `source`. `domain:` names are resolved only
    /// when reached; a failed lookup makes the result TEMPERROR.
    pub async fn evaluate<R: Resolver>(&self, source: IpAddr, resolver: &R) -> AtsResult {
        let source = source.to_canonical();
        let mut lookups = 0;
        for d in &self.directives {
            let matched = match &d.qualifier {
                AtsQualifier::All => true,
                AtsQualifier::Ip(net) => net.contains(&source),
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
    /// The record text.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(ATP_VERSION_TAG)?;
        for d in &self.directives {
            write!(f, " {d}")?;
        }
        Ok(())
    }
}

/// The outcome of an ATS check (protocol.md §5.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AtsResult {
    /// An `allow` directive matched.
    Pass(AtsDirective),
    /// A `deny` directive matched.
    Fail(AtsDirective),
    /// No record, or no directive matched.
    Neutral,
    /// A DNS lookup failed; the sender should retry.
    TempError(String),
    /// The record is malformed or ambiguous.
    PermError(String),
}

impl AtsResult {
    /// The receiver's refusal for this outcome; `None` for PASS and NEUTRAL, which continue to ATK.
    pub fn to_rejection(&self) -> Option<Rejection> {
        match self {
            AtsResult::Pass(_) | AtsResult::Neutral => None,
            AtsResult::Fail(d) => Some(
                Rejection::new(403, ErrorCode::AtsFail, "ATS validation failed")
                    .with("matched_directive", d.to_string()),
            ),
            AtsResult::TempError(why) => Some(
                Rejection::new(451, ErrorCode::AtsTempError, "ATS temporary DNS error, retry later")
                    .with("details", why.clone()),
            ),
            AtsResult::PermError(why) => {
                Some(Rejection::new(403, ErrorCode::AtsSyntax, "ATS record invalid").with("details", why.clone()))
            }
        }
    }
}

/// Looks up and evaluates the ATS policy of `sender_domain` for a connection from `source`.
/// Only `v=atp1` TXT records count (an SPF record at the same name is ignored); none is NEUTRAL.
pub async fn check_ats<R: Resolver>(resolver: &R, sender_domain: &str, source: IpAddr) -> AtsResult {
    let name = ats_name(sender_domain);
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
        _ => AtsResult::PermError(format!("{} v=atp1 records at {name}", records.len())),
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

    fn eval(record: &str, source: &str, r: &StaticResolver) -> AtsResult {
        block_on(AtsPolicy::parse(record).unwrap().evaluate(ip(source), r))
    }

    #[test]
    fn grammar_and_round_trip() {
        let text = "v=atp1 allow=ip:192.0.2.0/24 allow=ip:2001:db8::1 allow=domain:mx.example.com deny=all";
        let p = AtsPolicy::parse(text).unwrap();
        assert_eq!(p.directives.len(), 4);
        assert_eq!(p.to_string(), text);
        assert_eq!(AtsPolicy::parse(&p.to_string()).unwrap(), p);
        assert_eq!(AtsPolicy::parse("v=atp1").unwrap().directives, vec![]);
        // host bits allowed, as the reference's non-strict parse
        assert_eq!(AtsPolicy::parse("v=atp1 allow=ip:10.1.2.3/8").unwrap().to_string(), "v=atp1 allow=ip:10.0.0.0/8");
        assert_eq!(
            AtsPolicy::parse("v=atp1 allow=domain:MX.Example.com.").unwrap().directives[0].qualifier,
            AtsQualifier::Domain("mx.example.com".into())
        );
    }

    #[test]
    fn malformed_records_are_errors() {
        for (text, want) in [
            ("v=spf1 allow=all", AtsError::NotAtp1),
            ("", AtsError::NotAtp1),
            ("allow=all v=atp1", AtsError::NotAtp1),
            ("v=atp1 allow=ip:999.1.1.1", AtsError::BadIp("999.1.1.1".into())),
            ("v=atp1 allow=ip:10.0.0.0/33", AtsError::BadIp("10.0.0.0/33".into())),
            ("v=atp1 include:other.test", AtsError::Unsupported("include:other.test".into())),
            ("v=atp1 redirect=other.test", AtsError::Unsupported("redirect=other.test".into())),
            ("v=atp1 permit=all", AtsError::UnknownToken("permit=all".into())),
            ("v=atp1 allow=any", AtsError::UnknownToken("allow=any".into())),
            ("v=atp1 allow", AtsError::UnknownToken("allow".into())),
            ("v=atp1 allow=domain:bad_name", AtsError::BadDomain("bad_name".into())),
        ] {
            assert_eq!(AtsPolicy::parse(text), Err(want), "{text}");
        }
        let many = format!("v=atp1{}", " allow=ip:10.0.0.1".repeat(MAX_DIRECTIVES + 1));
        assert_eq!(AtsPolicy::parse(&many), Err(AtsError::TooManyDirectives));
        assert!(AtsPolicy::parse(&format!("v=atp1 {}", "x".repeat(10 << 20))).is_err());
    }

    #[test]
    fn first_match_wins() {
        let r = StaticResolver::new();
        let d = "v=atp1 deny=ip:10.0.0.0/8 allow=all";
        match eval(d, "10.1.2.3", &r) {
            AtsResult::Fail(dir) => assert_eq!(dir.to_string(), "deny=ip:10.0.0.0/8"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(eval(d, "192.0.2.1", &r), AtsResult::Pass(_)));
        let p = "v=atp1 allow=ip:127.0.0.1 deny=all";
        match eval(p, "10.1.2.3", &r) {
            AtsResult::Fail(dir) => assert_eq!(dir.to_string(), "deny=all"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(eval(p, "127.0.0.1", &r), AtsResult::Pass(_)));
        assert_eq!(eval("v=atp1 allow=ip:127.0.0.1", "10.0.0.1", &r), AtsResult::Neutral);
        // families never match each other, but IPv4-mapped IPv6 is unwrapped
        assert_eq!(eval("v=atp1 allow=ip:::/0", "10.0.0.1", &r), AtsResult::Neutral);
        assert!(matches!(eval(p, "::ffff:127.0.0.1", &r), AtsResult::Pass(_)));
        assert!(matches!(eval("v=atp1 allow=ip:2001:db8::/32", "2001:db8::5", &r), AtsResult::Pass(_)));
    }

    #[test]
    fn domain_directives_resolve_lazily() {
        let mut r = StaticResolver::new();
        r.add_ip("mx.gamma.test", ip("127.0.0.1")).fail("broken.test");
        let rec = "v=atp1 allow=domain:mx.gamma.test deny=all";
        assert!(matches!(eval(rec, "127.0.0.1", &r), AtsResult::Pass(_)));
        assert!(matches!(eval(rec, "127.0.0.2", &r), AtsResult::Fail(_)));
        assert!(matches!(eval("v=atp1 allow=domain:broken.test", "127.0.0.1", &r), AtsResult::TempError(_)));
        // not reached, so not looked up
        assert!(matches!(eval("v=atp1 allow=all allow=domain:broken.test", "127.0.0.1", &r), AtsResult::Pass(_)));
        let many = format!("v=atp1{} allow=all", " deny=domain:none.test".repeat(MAX_DOMAIN_LOOKUPS + 1));
        assert!(matches!(eval(&many, "127.0.0.1", &r), AtsResult::PermError(_)));
    }

    #[test]
    fn lookup_filters_records_and_maps_outcomes() {
        let src = ip("10.1.2.3");
        let mut r = StaticResolver::new();
        r.add_txt("ats._atp.a.test", "v=spf1 -all").add_txt("ats._atp.a.test", "v=atp1 deny=ip:10.0.0.0/8");
        let res = block_on(check_ats(&r, "a.test", src));
        let rej = res.to_rejection().unwrap();
        assert_eq!((rej.status, rej.code), (403, ErrorCode::AtsFail));
        assert_eq!(rej.to_json()["matched_directive"], "deny=ip:10.0.0.0/8");

        assert_eq!(block_on(check_ats(&r, "none.test", src)), AtsResult::Neutral);
        assert!(AtsResult::Neutral.to_rejection().is_none());

        r.add_txt("ats._atp.b.test", "v=spf1 allow=all");
        assert_eq!(block_on(check_ats(&r, "b.test", src)), AtsResult::Neutral, "only v=atp1 records count");

        r.add_txt("ats._atp.c.test", "v=atp1 allow=ip:nonsense");
        let rej = block_on(check_ats(&r, "c.test", src)).to_rejection().unwrap();
        assert_eq!((rej.status, rej.code), (403, ErrorCode::AtsSyntax));

        r.add_txt("ats._atp.d.test", "v=atp1 allow=all").add_txt("ats._atp.d.test", "v=atp1 deny=all");
        assert!(matches!(block_on(check_ats(&r, "d.test", src)), AtsResult::PermError(_)));

        r.fail("ats._atp.e.test");
        let rej = block_on(check_ats(&r, "e.test", src)).to_rejection().unwrap();
        assert_eq!((rej.status, rej.code), (451, ErrorCode::AtsTempError));
    }
}
