//! ATP's DNS records (protocol.md §5): SVCB discovery, ATS sender policy, ATK keys.

pub mod atk;
pub mod ats;
pub mod svcb;

/// Version tag that every ATP TXT record starts with.
pub const ATP_VERSION_TAG: &str = "v=atp1";

/// Name of the ATS record of `domain`: `ats._atp.<domain>`.
pub fn ats_name(domain: &str) -> String {
    format!("ats._atp.{domain}")
}

/// Name of an ATK record, which is also the signature's `key_id`: `<selector>.atk._atp.<domain>`.
pub fn atk_name(selector: &str, domain: &str) -> String {
    format!("{selector}.atk._atp.{domain}")
}

/// Several TXT records may share a name (protocol.md §12 item 10): keeps only those whose first
/// whitespace-separated token is exactly `v=atp1`, in their original order.
pub fn atp_txt_records(records: &[String]) -> Vec<&str> {
    records.iter().map(String::as_str).filter(|r| r.split_ascii_whitespace().next() == Some(ATP_VERSION_TAG)).collect()
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
            "  v=atp1   deny=all".to_string(),
            "".to_string(),
        ];
        assert_eq!(atp_txt_records(&recs), vec!["v=atp1 allow=all", "  v=atp1   deny=all"]);
    }

    #[test]
    fn names() {
        assert_eq!(ats_name("a.test"), "ats._atp.a.test");
        assert_eq!(atk_name("default", "a.test"), "default.atk._atp.a.test");
    }
}
