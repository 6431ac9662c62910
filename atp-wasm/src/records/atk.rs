//! ATK, the domain key records (protocol.md §5.3): TXT at `<selector>.atk._atp.<domain>`, e.g.
//! `v=atp1 k=ed25519 p=<padded standard base64 of the raw 32-byte key>`.
//!
//! Strict where the reference is lax (protocol.md §12 item 9): `v` must be `atp1` and `k` must be
//! `ed25519`; `p` is decoded strictly and must be exactly 32 bytes.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use crate::error::ErrorCode;

/// A parsed ATK record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AtkRecord {
    /// The raw Ed25519 public key.
    pub public_key: [u8; 32],
    /// `t=` has the flag `s`: the key is revoked.
    pub revoked: bool,
    /// `x=`: Unix time from which the key is no longer valid.
    pub expires: Option<i64>,
    /// All `t=` flags as published.
    pub flags: Vec<String>,
}

/// Why an ATK record is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AtkError {
    #[error("missing '{0}=' tag")]
    MissingField(&'static str),
    #[error("unsupported version v={0}")]
    BadVersion(String),
    #[error("unsupported key type k={0}")]
    BadKeyType(String),
    #[error("{0}")]
    BadPublicKey(String),
    #[error("invalid expiry x={0}")]
    BadExpiry(String),
}

impl AtkError {
    /// The code a receiver answers with (protocol.md §5.3 steps 7 and 9): an undecodable key is a
    /// signature failure (5.7.28), the rest a key failure (5.7.29).
    pub fn code(&self) -> ErrorCode {
        match self {
            AtkError::BadPublicKey(_) => ErrorCode::AtkSignature,
            _ => ErrorCode::AtkKey,
        }
    }
}

fn clip(s: &str) -> String {
    s.chars().take(64).collect()
}

impl AtkRecord {
    /// A valid, unrevoked, unexpiring record for `public_key`.
    pub fn new(public_key: [u8; 32]) -> Self {
        AtkRecord { public_key, revoked: false, expires: None, flags: Vec::new() }
    }

    /// Parses the record text: whitespace-separated `tag=value` tokens (split at the first `=`,
    /// tokens without `=` ignored, a later duplicate wins).
    pub fn parse(text: &str) -> Result<Self, AtkError> {
        let (mut v, mut k, mut p, mut t, mut x) = (None, None, None, None, None);
        for token in text.split_ascii_whitespace() {
            let Some((tag, value)) = token.split_once('=') else { continue };
            match tag {
                "v" => v = Some(value),
                "k" => k = Some(value),
                "p" => p = Some(value),
                "t" => t = Some(value),
                "x" => x = Some(value),
                _ => {}
            }
        }
        let v = v.ok_or(AtkError::MissingField("v"))?;
        let k = k.ok_or(AtkError::MissingField("k"))?;
        let p = p.ok_or(AtkError::MissingField("p"))?;
        if v != "atp1" {
            return Err(AtkError::BadVersion(clip(v)));
        }
        if !k.eq_ignore_ascii_case("ed25519") {
            return Err(AtkError::BadKeyType(clip(k)));
        }
        let expires = x.map(|x| x.parse::<i64>().map_err(|_| AtkError::BadExpiry(clip(x)))).transpose()?;
        let flags: Vec<String> =
            t.map(|t| t.split(',').filter(|f| !f.is_empty()).map(clip).collect()).unwrap_or_default();
        let raw =
            STANDARD.decode(p).map_err(|e| AtkError::BadPublicKey(format!("Failed to decode ATK public key: {e}")))?;
        let public_key: [u8; 32] = raw.as_slice().try_into().map_err(|_| {
            AtkError::BadPublicKey(format!(
                "An Ed25519 public key is 32 bytes long, got {} (p= must be the raw key, not SPKI DER)",
                raw.len()
            ))
        })?;
        let revoked = flags.iter().any(|f| f == "s");
        Ok(AtkRecord { public_key, revoked, expires, flags })
    }

    /// True when the key may verify signatures at `now`: not revoked, not expired (`x <= now`).
    pub fn is_usable_at(&self, now: i64) -> bool {
        !self.revoked && self.expires.is_none_or(|x| x > now)
    }
}

impl fmt::Display for AtkRecord {
    /// The record text, as `atp dns generate` publishes it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v=atp1 k=ed25519 p={}", STANDARD.encode(self.public_key))?;
        let mut flags = self.flags.clone();
        if self.revoked && !flags.iter().any(|x| x == "s") {
            flags.push("s".into());
        }
        if !flags.is_empty() {
            write!(f, " t={}", flags.join(","))?;
        }
        if let Some(x) = self.expires {
            write!(f, " x={x}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "W5IqPFzGPmVx1Rx5/nK8CN5TewPvr3AfWSjTaYELjDM=";

    #[test]
    fn parses_the_reference_record() {
        let r = AtkRecord::parse(&format!("v=atp1 k=ed25519 p={P}")).unwrap();
        assert_eq!(STANDARD.encode(r.public_key), P);
        assert!(r.is_usable_at(i64::MAX));
        assert_eq!(r.to_string(), format!("v=atp1 k=ed25519 p={P}"));
        assert_eq!(AtkRecord::parse(&r.to_string()).unwrap(), r);
    }

    #[test]
    fn tags_in_any_order_later_wins_and_junk_ignored() {
        let r = AtkRecord::parse(&format!("  p=AAAA k=ed25519 junk v=atp1 n=note p={P}\t")).unwrap();
        assert_eq!(STANDARD.encode(r.public_key), P);
    }

    #[test]
    fn revocation_and_expiry() {
        let r = AtkRecord::parse(&format!("v=atp1 k=ed25519 p={P} t=y,s")).unwrap();
        assert!(r.revoked && !r.is_usable_at(0));
        assert_eq!(AtkRecord::parse(&r.to_string()).unwrap(), r);
        let r = AtkRecord::parse(&format!("v=atp1 k=ed25519 p={P} x=1000")).unwrap();
        assert!(r.is_usable_at(999) && !r.is_usable_at(1000));
        assert_eq!(AtkRecord::parse(&r.to_string()).unwrap(), r);
        let r = AtkRecord { revoked: true, ..AtkRecord::new([1; 32]) };
        assert!(AtkRecord::parse(&r.to_string()).unwrap().revoked);
    }

    #[test]
    fn errors_and_their_codes() {
        let cases: &[(&str, AtkError)] = &[
            ("k=ed25519 p=x", AtkError::MissingField("v")),
            ("v=atp1 p=x", AtkError::MissingField("k")),
            ("v=atp1 k=ed25519", AtkError::MissingField("p")),
            ("v=zzz k=ed25519 p=x", AtkError::BadVersion("zzz".into())),
            ("v=atp1 k=rsa p=x", AtkError::BadKeyType("rsa".into())),
        ];
        for (text, want) in cases {
            assert_eq!(&AtkRecord::parse(text).unwrap_err(), want, "{text}");
            assert_eq!(want.code(), ErrorCode::AtkKey);
        }
        let e = AtkRecord::parse(&format!("v=atp1 k=ed25519 p={P} x=soon")).unwrap_err();
        assert_eq!((e.code(), matches!(e, AtkError::BadExpiry(_))), (ErrorCode::AtkKey, true));
        for bad_p in [
            "MCowBQYDK2VwAyEAW5IqPFzGPmVx1Rx5/nK8CN5TewPvr3AfWSjTaYELjDM=", // SPKI DER
            P.trim_end_matches('='),                                        // unpadded
            "W5IqPFzGPmVx1Rx5_nK8CN5TewPvr3AfWSjTaYELjDM=",                 // url-safe
            "AAAA",
            "!!!!",
        ] {
            let e = AtkRecord::parse(&format!("v=atp1 k=ed25519 p={bad_p}")).unwrap_err();
            assert!(matches!(e, AtkError::BadPublicKey(_)), "{bad_p}");
            assert_eq!(e.code(), ErrorCode::AtkSignature);
        }
        assert!(AtkRecord::parse("v=atp1 k=ed25519 p=MCowBQYDK2VwAyEAW5IqPFzGPmVx1Rx5/nK8CN5TewPvr3AfWSjTaYELjDM=")
            .unwrap_err()
            .to_string()
            .contains("32 bytes long"));
    }

    #[test]
    fn hostile_inputs() {
        assert!(AtkRecord::parse(&"x".repeat(10 << 20)).is_err());
        assert!(AtkRecord::parse(&"v=atp1 ".repeat(100_000)).is_err());
        assert!(AtkRecord::parse(&format!("v=atp1 k=ed25519 p={}", "A".repeat(1 << 20))).is_err());
        assert!(AtkRecord::parse("v=atp1 k=ed25519 p=\u{1F600} x=\u{0}").is_err());
        assert!(AtkRecord::parse("").is_err());
    }
}
