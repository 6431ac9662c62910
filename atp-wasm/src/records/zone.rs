//! Zone-file lines publishing an ATP server, as `atp dns generate` prints them (docs/protocol.md §9,
//! records of §5.1–§5.3).
//!
//! Unlike the reference's output (docs/protocol.md §5.1), the SVCB line carries no made-up
//! `atp-capabilities` key, every line is a complete BIND resource record with owner, TTL and
//! class, and TXT strings are quoted and escaped properly.

use std::net::IpAddr;

use super::svcb::SvcbRecord;
use super::{atk_name, ats_name};

/// TTL of the generated records, in seconds.
pub const ZONE_TTL: u32 = 3600;

/// Longest character-string inside a TXT record (RFC 1035 §3.3).
const MAX_TXT_STRING: usize = 255;

/// Quotes `text` as TXT RDATA in zone-file presentation form (RFC 1035 §5.1): `"` and `\` are
/// escaped, bytes outside printable ASCII become `\DDD`, and text longer than 255 bytes is split
/// into several character-strings (which resolvers concatenate again, docs/protocol.md §5.2).
pub fn quote_txt(text: &str) -> String {
    let bytes = text.as_bytes();
    if bytes.is_empty() {
        return "\"\"".into();
    }
    bytes
        .chunks(MAX_TXT_STRING)
        .map(|chunk| {
            let mut s = String::with_capacity(chunk.len() + 2);
            s.push('"');
            for &b in chunk {
                match b {
                    b'"' | b'\\' => {
                        s.push('\\');
                        s.push(b as char);
                    }
                    0x20..=0x7e => s.push(b as char),
                    _ => s.push_str(&format!("\\{b:03}")),
                }
            }
            s.push('"');
            s
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Zone-file lines publishing a server of `domain` (what `atp dns generate` prints, docs/protocol.md §9):
///
/// ```text
/// _atp.<d>. 3600 IN SVCB 1 atp.<d>. alpn="atp/1" port=<port>
/// atp.<d>. 3600 IN A <ip>                     (AAAA for IPv6)
/// ats._atp.<d>. 3600 IN TXT "v=atp1 allow=ip:<ip> deny=all"
/// <selector>.atk._atp.<d>. 3600 IN TXT "v=atp1 k=ed25519 p=<public key>"   (one per key)
/// ```
///
/// `keys` holds `(selector, padded standard base64 of the raw 32-byte public key)` pairs
/// (docs/protocol.md §5.3). The domain is lowercased and a trailing dot dropped; an IPv4-mapped IPv6
/// address is published as the IPv4 address it wraps.
pub fn zone_records(domain: &str, ip: IpAddr, port: u16, keys: &[(String, String)]) -> Vec<String> {
    let d = domain.strip_suffix('.').unwrap_or(domain).to_ascii_lowercase();
    let ip = ip.to_canonical();
    let host = format!("atp.{d}");
    let ttl = ZONE_TTL;
    let mut lines = vec![
        format!("_atp.{d}. {ttl} IN SVCB {}", SvcbRecord::service(1, &host, port)),
        format!("{host}. {ttl} IN {} {ip}", if ip.is_ipv4() { "A" } else { "AAAA" }),
        format!("{}. {ttl} IN TXT {}", ats_name(&d), quote_txt(&format!("v=atp1 allow=ip:{ip} deny=all"))),
    ];
    for (selector, public_b64) in keys {
        let txt = quote_txt(&format!("v=atp1 k=ed25519 p={public_b64}"));
        lines.push(format!("{}. {ttl} IN TXT {txt}", atk_name(selector, &d)));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::atk::AtkRecord;
    use crate::records::ats::AtsPolicy;

    const P: &str = "W5IqPFzGPmVx1Rx5/nK8CN5TewPvr3AfWSjTaYELjDM=";

    #[test]
    fn zone_lines() {
        let lines = zone_records(
            "Alpha.test.",
            "192.0.2.7".parse().unwrap(),
            7443,
            &[("default".into(), P.into()), ("Next".into(), P.into())],
        );
        assert_eq!(
            lines,
            [
                r#"_atp.alpha.test. 3600 IN SVCB 1 atp.alpha.test. alpn="atp/1" port=7443"#.to_string(),
                "atp.alpha.test. 3600 IN A 192.0.2.7".into(),
                r#"ats._atp.alpha.test. 3600 IN TXT "v=atp1 allow=ip:192.0.2.7 deny=all""#.into(),
                format!(r#"default.atk._atp.alpha.test. 3600 IN TXT "v=atp1 k=ed25519 p={P}""#),
                format!(r#"Next.atk._atp.alpha.test. 3600 IN TXT "v=atp1 k=ed25519 p={P}""#),
            ]
        );
    }

    #[test]
    fn generated_records_parse_back() {
        let lines = zone_records("a.test", "2001:db8::7".parse().unwrap(), 17443, &[("default".into(), P.into())]);
        assert_eq!(lines[1], "atp.a.test. 3600 IN AAAA 2001:db8::7");
        let rdata = |line: &str, ty: &str| line.split_once(&format!(" IN {ty} ")).unwrap().1.to_string();
        let svcb = SvcbRecord::parse(&rdata(&lines[0], "SVCB")).unwrap();
        assert_eq!((svcb.target.as_str(), svcb.port), ("atp.a.test", Some(17443)));
        let unquote = |s: String| s.trim_matches('"').to_string();
        let ats = AtsPolicy::parse(&unquote(rdata(&lines[2], "TXT"))).unwrap();
        assert_eq!(ats.to_string(), "v=atp1 allow=ip:2001:db8::7 deny=all");
        let atk = AtkRecord::parse(&unquote(rdata(&lines[3], "TXT"))).unwrap();
        assert_eq!(atk.to_string(), format!("v=atp1 k=ed25519 p={P}"));
    }

    #[test]
    fn mapped_addresses_are_published_as_ipv4() {
        let lines = zone_records("a.test", "::ffff:192.0.2.1".parse().unwrap(), 1, &[]);
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[1], "atp.a.test. 3600 IN A 192.0.2.1");
        assert!(lines[2].contains("allow=ip:192.0.2.1 "));
    }

    #[test]
    fn txt_quoting() {
        assert_eq!(quote_txt(""), r#""""#);
        assert_eq!(quote_txt(r#"a "b" \c"#), r#""a \"b\" \\c""#);
        assert_eq!(quote_txt("é\n"), r#""\195\169\010""#);
        let long = "x".repeat(600);
        let q = quote_txt(&long);
        let parts: Vec<&str> = q.split(' ').collect();
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[0].len(), 257);
        assert_eq!(parts[2].len(), 600 - 510 + 2);
    }
}
