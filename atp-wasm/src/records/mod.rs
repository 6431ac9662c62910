//! ATP's DNS records (docs/protocol.md §5): SVCB discovery (§5.1), ATS sender policy (§5.2), ATK keys
//! (§5.3), and the zone-file lines that publish them (`atp dns generate`, docs/protocol.md §9).
//!
//! Everything here is pure: parsing, printing and evaluation. DNS answers come in only through
//! [`crate::env::Resolver`].
#![deny(missing_docs)]

pub mod atk;
pub mod ats;
pub mod svcb;
pub mod zone;

pub use zone::zone_records;

/// Version tag that every ATP TXT record starts with (docs/protocol.md §5.2, §5.3).
pub const ATP_VERSION_TAG: &str = "v=atp1";

/// Longest DNS name in presentation form, without the trailing dot (RFC 1035 §2.3.4).
pub const MAX_NAME_LEN: usize = 253;

/// Longest DNS label (RFC 1035 §2.3.4).
pub const MAX_LABEL_LEN: usize = 63;

/// Name of the ATS record of `domain`: `ats._atp.<domain>` (docs/protocol.md §5.2).
pub fn ats_name(domain: &str) -> String {
    format!("ats._atp.{domain}")
}

/// Name of an ATK record, which is also the signature's `key_id`: `<selector>.atk._atp.<domain>`
/// (docs/protocol.md §5.3).
pub fn atk_name(selector: &str, domain: &str) -> String {
    format!("{selector}.atk._atp.{domain}")
}

/// Several TXT records may share a name (docs/protocol.md §12 item 10): keeps only those whose first
/// whitespace-separated token is exactly `v=atp1`, in their original order. Other records at the
/// name (SPF, site verification, …) are ignored instead of being parsed as ATP records.
pub fn atp_txt_records(records: &[String]) -> Vec<&str> {
    records.iter().map(String::as_str).filter(|r| r.split_ascii_whitespace().next() == Some(ATP_VERSION_TAG)).collect()
}

/// Normalises a DNS name as ATP records use it (SVCB/SRV targets §5.1, ATS `domain:` §5.2): one
/// trailing dot stripped, ASCII-lowercased. Returns `None` unless every label is 1–63 characters of
/// letters, digits, `-` or `_`, not starting or ending with `-`, and the whole name is at most 253
/// characters. Internationalised names must already be in their `xn--` form; the root `"."` is not
/// a host name and gives `None`.
pub fn normalize_hostname(name: &str) -> Option<String> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return None;
    }
    let ok = name.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= MAX_LABEL_LEN
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    });
    ok.then(|| name.to_ascii_lowercase())
}

/// Truncates attacker-supplied text before it is put into an error message.
pub(crate) fn clip(s: &str) -> String {
    const MAX: usize = 64;
    if s.chars().count() <= MAX {
        s.to_owned()
    } else {
        let mut out: String = s.chars().take(MAX).collect();
        out.push('…');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_by_version_tag() {
        let recs = vec![
            "v=spf1 -all".to_string(),
            "v=atp1 allow=all".to_string(),
            "v=atp10 allow=all".to_string(),
            "V=ATP1 allow=all".to_string(),
            "  v=atp1   deny=all".to_string(),
            "v=atp1".to_string(),
            "".to_string(),
            "google-site-verification=abc".to_string(),
        ];
        assert_eq!(atp_txt_records(&recs), vec!["v=atp1 allow=all", "  v=atp1   deny=all", "v=atp1"]);
        assert!(atp_txt_records(&[]).is_empty());
    }

    #[test]
    fn names() {
        assert_eq!(ats_name("a.test"), "ats._atp.a.test");
        assert_eq!(atk_name("default", "a.test"), "default.atk._atp.a.test");
    }

    #[test]
    fn hostnames() {
        assert_eq!(normalize_hostname("MX.Example.COM.").as_deref(), Some("mx.example.com"));
        assert_eq!(normalize_hostname("_atp.example.com").as_deref(), Some("_atp.example.com"));
        assert_eq!(normalize_hostname("localhost").as_deref(), Some("localhost"));
        assert_eq!(normalize_hostname("127.0.0.1").as_deref(), Some("127.0.0.1"));
        assert_eq!(normalize_hostname("xn--bcher-kva.example").as_deref(), Some("xn--bcher-kva.example"));
        let long_ok = ["a".repeat(63), "b".repeat(63), "c".repeat(63), "d".repeat(61)].join(".");
        assert_eq!(long_ok.len(), 253);
        assert!(normalize_hostname(&long_ok).is_some());
        for bad in [
            "",
            ".",
            "..",
            "a..b",
            ".a",
            "a.b..",
            "bücher.example",
            "a b",
            "a\"b",
            "a\\.b",
            "a/b",
            "::1",
            "a@b",
            "-a.test",
            "a-.test",
            "-",
            "\u{0}",
        ] {
            assert_eq!(normalize_hostname(bad), None, "{bad:?}");
        }
        assert_eq!(normalize_hostname(&"a".repeat(64)), None);
        assert_eq!(normalize_hostname(&format!("{long_ok}x")), None);
        assert_eq!(normalize_hostname(&"a.".repeat(5 << 20)), None);
    }

    #[test]
    fn clipping() {
        assert_eq!(clip("short"), "short");
        let c = clip(&"é".repeat(1000));
        assert_eq!(c.chars().count(), 65);
        assert!(c.ends_with('…'));
    }
}
