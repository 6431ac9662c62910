//! The kit's "foreign" sender domains (docs/protocol.md §5.2, §5.3, §11.3): their Ed25519 keys, derived
//! from a seed so that the records published before a run and the signatures made during it agree,
//! and the ATS/ATK records the server under test must be able to resolve.
//!
//! Every domain is `<label>.<suffix>` (default suffix `conf.test`). The records come out in the
//! reference's `dns_override.toml` format (atp-native `--dns-override`, the reference's
//! `local_mode`), as BIND zone lines (atp-worker through DoH, atp-native `--dns-server`), or as JSON.

use std::net::IpAddr;

use atp_wasm::keys::DomainKey;
use atp_wasm::records::atk::AtkRecord;
use sha2::{Digest, Sha256};

/// One of the kit's sender domains, each publishing one kind of record set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sender {
    /// ATS allows the kit's source address, valid ATK key: the well-behaved foreign server.
    Main,
    /// A second well-behaved sender (nonce reuse across senders).
    Second,
    /// ATS `deny=ip:<source> allow=all`: the kit's address is refused.
    Denied,
    /// A malformed ATS record (`allow=ip:999.1.1.1`), valid key.
    BadAts,
    /// ATK `p=` holds the SubjectPublicKeyInfo DER instead of the raw 32 bytes.
    Spki,
    /// ATK key revoked (`t=s`).
    Revoked,
    /// ATK key expired (`x=1000`).
    Expired,
    /// ATK with `v=zzz k=rsa` (unknown version and key type).
    VersionKey,
    /// Publishes nothing at all.
    Unknown,
    /// Never published: a key whose signatures no record vouches for (used with `Main`'s key_id).
    Stranger,
}

impl Sender {
    pub const PUBLISHED: [Sender; 9] = [
        Sender::Main,
        Sender::Second,
        Sender::Denied,
        Sender::BadAts,
        Sender::Spki,
        Sender::Revoked,
        Sender::Expired,
        Sender::VersionKey,
        Sender::Unknown,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Sender::Main => "sender",
            Sender::Second => "second",
            Sender::Denied => "denied",
            Sender::BadAts => "badats",
            Sender::Spki => "spki",
            Sender::Revoked => "revoked",
            Sender::Expired => "expired",
            Sender::VersionKey => "vk",
            Sender::Unknown => "unknown",
            Sender::Stranger => "stranger",
        }
    }
}

/// The foreign domains of one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Foreign {
    /// Keys are derived from it: the same seed gives the same records.
    pub seed: String,
    /// Domains are `<label>.<suffix>`.
    pub suffix: String,
    /// The address the server under test sees the kit's connections come from.
    pub source_ip: IpAddr,
}

impl Default for Foreign {
    fn default() -> Self {
        Foreign { seed: "atp-conformance".into(), suffix: "conf.test".into(), source_ip: [127, 0, 0, 1].into() }
    }
}

impl Foreign {
    pub fn domain(&self, s: Sender) -> String {
        format!("{}.{}", s.label(), self.suffix)
    }

    /// The domain key of `s`: Ed25519 with seed SHA-256(`atp-conformance/<seed>/<label>`).
    pub fn key(&self, s: Sender) -> DomainKey {
        let seed: [u8; 32] = Sha256::digest(format!("atp-conformance/{}/{}", self.seed, s.label())).into();
        DomainKey::from_seed(&seed)
    }

    fn allow(&self) -> String {
        format!("v=atp1 allow=ip:{} deny=all", self.source_ip)
    }

    /// The TXT records to publish, as `(name, text)`.
    pub fn records(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for s in Sender::PUBLISHED {
            let d = self.domain(s);
            let ats = format!("ats._atp.{d}");
            let atk = format!("default.atk._atp.{d}");
            let pk = *self.key(s).public_key().as_bytes();
            let valid = AtkRecord::new(pk).to_string();
            let (ats_text, atk_text) = match s {
                Sender::Main | Sender::Second => (Some(self.allow()), Some(valid)),
                Sender::Denied => (Some(format!("v=atp1 deny=ip:{} allow=all", self.source_ip)), Some(valid)),
                Sender::BadAts => (Some("v=atp1 allow=ip:999.1.1.1".to_owned()), Some(valid)),
                Sender::Spki => {
                    let pem = self.key(s).public_key().to_spki_pem().unwrap_or_default();
                    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
                    (Some(self.allow()), Some(format!("v=atp1 k=ed25519 p={b64}")))
                }
                Sender::Revoked => {
                    (Some(self.allow()), Some(AtkRecord { revoked: true, ..AtkRecord::new(pk) }.to_string()))
                }
                Sender::Expired => {
                    (Some(self.allow()), Some(AtkRecord { expires: Some(1000), ..AtkRecord::new(pk) }.to_string()))
                }
                Sender::VersionKey => (Some(self.allow()), Some(valid.replace("v=atp1 k=ed25519", "v=zzz k=rsa"))),
                Sender::Unknown | Sender::Stranger => (None, None),
            };
            if let Some(t) = ats_text {
                out.push((ats, t));
            }
            if let Some(t) = atk_text {
                out.push((atk, t));
            }
        }
        out
    }

    /// The records in the reference's `dns_override.toml` format (docs/protocol.md §8.9).
    pub fn dns_override_toml(&self) -> String {
        let mut s = String::from("# ATS/ATK records of the atp-conformance kit's foreign domains\n");
        for (name, text) in self.records() {
            s.push_str(&format!("\n[\"{name}\"]\nrecord = \"{text}\"\n"));
        }
        s
    }

    /// The records as BIND zone-file lines with absolute names (they belong in the zone that
    /// contains `suffix`, e.g. zone `test`).
    pub fn zone_lines(&self) -> String {
        self.records().iter().map(|(name, text)| format!("{name}. IN TXT \"{text}\"\n")).collect()
    }

    /// The records as a JSON array of `{"name","type","text"}`.
    pub fn json(&self) -> String {
        let v: Vec<serde_json::Value> = self
            .records()
            .into_iter()
            .map(|(name, text)| serde_json::json!({"name": name, "type": "TXT", "text": text}))
            .collect();
        serde_json::to_string_pretty(&v).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_deterministic_and_parse() {
        let f = Foreign::default();
        assert_eq!(f.records(), Foreign::default().records());
        let other = Foreign { seed: "x".into(), ..Foreign::default() };
        assert_ne!(f.records(), other.records());
        let recs = f.records();
        let get = |n: &str| recs.iter().find(|(name, _)| name == n).map(|(_, t)| t.clone());
        let main_atk = get("default.atk._atp.sender.conf.test").unwrap();
        let rec = AtkRecord::parse(&main_atk).unwrap();
        assert_eq!(&rec.public_key, f.key(Sender::Main).public_key().as_bytes());
        assert!(get("default.atk._atp.spki.conf.test").unwrap().contains("p=MCow"));
        assert!(AtkRecord::parse(&get("default.atk._atp.revoked.conf.test").unwrap()).unwrap().revoked);
        assert!(get("default.atk._atp.vk.conf.test").unwrap().starts_with("v=zzz k=rsa p="));
        assert_eq!(get("ats._atp.sender.conf.test").unwrap(), "v=atp1 allow=ip:127.0.0.1 deny=all");
        assert!(get("ats._atp.unknown.conf.test").is_none() && get("default.atk._atp.unknown.conf.test").is_none());
        assert!(f.zone_lines().contains("ats._atp.denied.conf.test. IN TXT \"v=atp1 deny=ip:127.0.0.1 allow=all\""));
        assert!(f.dns_override_toml().contains("[\"ats._atp.sender.conf.test\"]\nrecord = \"v=atp1 allow="));
    }
}
