//! ATK, the domain key records (docs/protocol.md §5.3): TXT at `<selector>.atk._atp.<domain>`, e.g.
//! `v=atp1 k=ed25519 p=<padded standard base64 of the raw 32-byte key>`.
//!
//! The grammar is the reference's: whitespace-separated `tag=value` tokens split at the first `=`,
//! tokens without `=` ignored, a later duplicate tag winning, `v`, `k` and `p` required, `t=` a
//! comma list of flags (`s` = revoked), `x=` a Unix expiry. Strict where the reference is lax
//! (docs/protocol.md §12 item 9): `v` must be exactly `atp1` and `k` exactly `ed25519`, and `p` is
//! decoded strictly (canonical padded standard base64) and must be exactly 32 bytes, so the SPKI DER
//! form `MCow…` that several reference documents show is rejected with a message saying so.
//!
//! Parsing does not check that the 32 bytes are a valid Ed25519 point; verification does
//! (`crate::keys`).

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use super::clip;
use crate::error::ErrorCode;

/// Most `t=` flags kept in [`AtkRecord::flags`]; further flags are still checked for `s`.
pub const MAX_FLAGS: usize = 16;

/// A parsed ATK record (docs/protocol.md §5.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AtkRecord {
    /// The raw Ed25519 public key (`p=`).
    pub public_key: [u8; 32],
    /// `t=` has the flag `s`: the key is revoked.
    pub revoked: bool,
    /// `x=`: Unix time from which the key is no longer valid.
    pub expires: Option<i64>,
    /// The `t=` flags as published (empty ones dropped, at most [`MAX_FLAGS`]).
    pub flags: Vec<String>,
}

/// Why an ATK record is unusable (docs/protocol.md §5.3 steps 7 and 9).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AtkError {
    /// One of the required tags `v`, `k`, `p` is missing.
    #[error("missing '{0}=' tag")]
    MissingField(&'static str),
    /// `v` is not `atp1`.
    #[error("unsupported version v={0}")]
    BadVersion(String),
    /// `k` is not `ed25519`.
    #[error("unsupported key type k={0}")]
    BadKeyType(String),
    /// `p` is not padded standard base64 of exactly 32 bytes.
    #[error("{0}")]
    BadPublicKey(String),
    /// `x` is not an integer.
    #[error("invalid expiry x={0}")]
    BadExpiry(String),
}

impl AtkError {
    /// The code a receiver answers with (docs/protocol.md §5.3): an undecodable key is
    /// [`ErrorCode::AtkSignature`] (`550 5.7.28`, as the reference's step 9), everything else
    /// [`ErrorCode::AtkKey`] (`550 5.7.29`, step 7).
    pub fn code(&self) -> ErrorCode {
        match self {
            AtkError::BadPublicKey(_) => ErrorCode::AtkSignature,
            _ => ErrorCode::AtkKey,
        }
    }
}

/// Decodes `p=`: canonical padded standard base64 of exactly 32 bytes.
fn decode_public_key(p: &str) -> Result<[u8; 32], AtkError> {
    let raw = STANDARD.decode(p).map_err(|e| {
        AtkError::BadPublicKey(format!(
            "public key p= is not padded standard base64 ({e}); an Ed25519 public key is 32 bytes long"
        ))
    })?;
    raw.as_slice().try_into().map_err(|_| {
        AtkError::BadPublicKey(format!(
            "An Ed25519 public key is 32 bytes long, p= has {} bytes (it must be the raw key, not SPKI DER)",
            raw.len()
        ))
    })
}

impl AtkRecord {
    /// A valid, unrevoked, unexpiring record for `public_key` (what `atp dns generate` publishes,
    /// docs/protocol.md §5.3).
    pub fn new(public_key: [u8; 32]) -> Self {
        AtkRecord { public_key, revoked: false, expires: None, flags: Vec::new() }
    }

    /// Parses the record text (docs/protocol.md §5.3). Checks, in the reference's order: the presence of
    /// `v`, `k`, `p` ([`AtkError::MissingField`]), then `v` ([`AtkError::BadVersion`]), `k`
    /// ([`AtkError::BadKeyType`]), `x` ([`AtkError::BadExpiry`]) and last `p`
    /// ([`AtkError::BadPublicKey`]).
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
        if k != "ed25519" {
            return Err(AtkError::BadKeyType(clip(k)));
        }
        let expires = x.map(|x| x.parse::<i64>().map_err(|_| AtkError::BadExpiry(clip(x)))).transpose()?;
        let public_key = decode_public_key(p)?;
        let mut flags = Vec::new();
        let mut revoked = false;
        for flag in t.unwrap_or("").split(',').filter(|f| !f.is_empty()) {
            revoked |= flag == "s";
            if flags.len() < MAX_FLAGS {
                flags.push(clip(flag));
            }
        }
        Ok(AtkRecord { public_key, revoked, expires, flags })
    }

    /// True when the key may verify signatures at Unix time `now` (docs/protocol.md §5.3): not revoked,
    /// and not expired (a key with `x <= now` is expired).
    pub fn is_usable_at(&self, now: i64) -> bool {
        !self.revoked && self.expires.is_none_or(|x| x > now)
    }
}

impl fmt::Display for AtkRecord {
    /// The record text (docs/protocol.md §5.3): `v=atp1 k=ed25519 p=<base64>`, then ` t=<flags>` when
    /// there are flags or the key is revoked (`s` added if missing) and ` x=<expiry>` when set.
    /// [`AtkRecord::parse`] reads it back.
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

    /// A real key, from a reference-generated record.
    const P: &str = "W5IqPFzGPmVx1Rx5/nK8CN5TewPvr3AfWSjTaYELjDM=";
    /// The same key as SPKI DER, as some reference docs wrongly show it.
    const SPKI: &str = "MCowBQYDK2VwAyEAW5IqPFzGPmVx1Rx5/nK8CN5TewPvr3AfWSjTaYELjDM=";

    fn rec(extra: &str) -> Result<AtkRecord, AtkError> {
        AtkRecord::parse(&format!("v=atp1 k=ed25519 p={P}{extra}"))
    }

    #[test]
    fn parses_the_reference_record() {
        let r = rec("").unwrap();
        assert_eq!(STANDARD.encode(r.public_key), P);
        assert_eq!(r, AtkRecord::new(r.public_key));
        assert!(r.is_usable_at(i64::MAX) && r.is_usable_at(i64::MIN));
        assert_eq!(r.to_string(), format!("v=atp1 k=ed25519 p={P}"));
        assert_eq!(AtkRecord::parse(&r.to_string()).unwrap(), r);
    }

    #[test]
    fn tags_in_any_order_later_wins_and_junk_ignored() {
        let r = AtkRecord::parse(&format!("  p=AAAA k=ed25519 junk v=atp1 n=note h=sha256 p={P}\t")).unwrap();
        assert_eq!(STANDARD.encode(r.public_key), P);
        // a later duplicate wins, also for v and k
        assert_eq!(AtkRecord::parse(&format!("v=zzz k=rsa p={P} v=atp1 k=ed25519")).unwrap(), rec("").unwrap());
        assert_eq!(rec(" v=zzz"), Err(AtkError::BadVersion("zzz".into())));
        // split at the first '=': base64 padding stays in the value; a later '=' is not a tag
        assert_eq!(rec(" x==5").unwrap_err(), AtkError::BadExpiry("=5".into()));
        // tags are case-sensitive: V= is an unknown tag
        assert_eq!(AtkRecord::parse(&format!("V=atp1 k=ed25519 p={P}")), Err(AtkError::MissingField("v")));
        // tokens without '=' and unknown tags are ignored
        assert!(rec(" hello world z=1 =x").is_ok());
    }

    #[test]
    fn flags_revocation_and_expiry() {
        let r = rec(" t=y,s").unwrap();
        assert_eq!(r.flags, ["y", "s"]);
        assert!(r.revoked && !r.is_usable_at(0));
        assert_eq!(r.to_string(), format!("v=atp1 k=ed25519 p={P} t=y,s"));
        assert_eq!(AtkRecord::parse(&r.to_string()).unwrap(), r);

        let r = rec(" t=y").unwrap();
        assert!(!r.revoked && r.is_usable_at(0));
        let r = rec(" t=,,s,,").unwrap();
        assert_eq!(r.flags, ["s"]);
        assert!(r.revoked);
        let r = rec(" t=").unwrap();
        assert!(r.flags.is_empty() && !r.revoked);
        assert!(!rec(" t=S").unwrap().revoked, "flags are case-sensitive");
        assert!(rec(" t=s t=y").unwrap().is_usable_at(0), "a later t= replaces an earlier one");

        let r = rec(" x=1000").unwrap();
        assert_eq!(r.expires, Some(1000));
        assert!(r.is_usable_at(999) && !r.is_usable_at(1000) && !r.is_usable_at(1001));
        assert_eq!(AtkRecord::parse(&r.to_string()).unwrap(), r);
        assert_eq!(rec(" x=-5").unwrap().expires, Some(-5));
        assert_eq!(rec(" x=0").unwrap().expires, Some(0));
        assert_eq!(rec(&format!(" x={}", i64::MAX)).unwrap().expires, Some(i64::MAX));

        let r = AtkRecord { revoked: true, expires: Some(5), ..AtkRecord::new([1; 32]) };
        assert_eq!(r.to_string(), format!("v=atp1 k=ed25519 p={} t=s x=5", STANDARD.encode([1u8; 32])));
        assert_eq!(AtkRecord::parse(&r.to_string()).unwrap(), AtkRecord { flags: vec!["s".into()], ..r.clone() });
        let r = AtkRecord { flags: vec!["y".into()], ..AtkRecord::new([0; 32]) };
        assert_eq!(AtkRecord::parse(&r.to_string()).unwrap(), r);
    }

    #[test]
    fn required_fields_version_and_type() {
        let cases: &[(&str, AtkError)] = &[
            ("", AtkError::MissingField("v")),
            ("k=ed25519 p=x", AtkError::MissingField("v")),
            ("v=atp1 p=x", AtkError::MissingField("k")),
            ("v=atp1 k=ed25519", AtkError::MissingField("p")),
            ("v=atp1 k=ed25519 p", AtkError::MissingField("p")),
            ("v=zzz k=ed25519 p=x", AtkError::BadVersion("zzz".into())),
            ("v= k=ed25519 p=x", AtkError::BadVersion("".into())),
            ("v=ATP1 k=ed25519 p=x", AtkError::BadVersion("ATP1".into())),
            ("v=atp1 k=rsa p=x", AtkError::BadKeyType("rsa".into())),
            ("v=atp1 k=Ed25519 p=x", AtkError::BadKeyType("Ed25519".into())),
            ("v=atp1 k= p=x", AtkError::BadKeyType("".into())),
            ("v=atp1 k=ed25519 p=x x=soon", AtkError::BadExpiry("soon".into())),
            ("v=atp1 k=ed25519 p=x x=", AtkError::BadExpiry("".into())),
            ("v=atp1 k=ed25519 p=x x=1.5", AtkError::BadExpiry("1.5".into())),
            ("v=atp1 k=ed25519 p=x x=1e9", AtkError::BadExpiry("1e9".into())),
            ("v=atp1 k=ed25519 p=x x=99999999999999999999", AtkError::BadExpiry("99999999999999999999".into())),
        ];
        for (text, want) in cases {
            assert_eq!(&AtkRecord::parse(text).unwrap_err(), want, "{text}");
            assert_eq!(want.code(), ErrorCode::AtkKey, "{want}");
        }
    }

    #[test]
    fn public_key_is_strict() {
        let unpadded = P.trim_end_matches('=');
        let thirty_three = "A".repeat(44); // 33 bytes
        let nul = format!("{P}\u{0}");
        for bad_p in [
            SPKI,
            unpadded,
            "W5IqPFzGPmVx1Rx5_nK8CN5TewPvr3AfWSjTaYELjDM=", // url-safe alphabet
            "W5IqPFzGPmVx1Rx5/nK8CN5TewPvr3AfWSjTaYELjDN=", // non-zero trailing bits (not canonical)
            "W5IqPFzGPmVx1Rx5/nK8CN5TewPvr3AfWSjTaYELjDM==",
            "W5IqPFzGPmVx1Rx5/nK8CN5TewPvr3AfWSjTaYELjA==", // 31 bytes
            &thirty_three,
            "AAAA",
            "!!!!",
            "",
            &nul,
        ] {
            let e = AtkRecord::parse(&format!("v=atp1 k=ed25519 p={bad_p}")).unwrap_err();
            assert!(matches!(e, AtkError::BadPublicKey(_)), "{bad_p}: {e:?}");
            assert_eq!(e.code(), ErrorCode::AtkSignature);
            assert!(e.to_string().contains("Ed25519 public key is 32 bytes long"), "{e}");
        }
        let spki = AtkRecord::parse(&format!("v=atp1 k=ed25519 p={SPKI}")).unwrap_err().to_string();
        assert!(spki.starts_with("An Ed25519 public key is 32 bytes long") && spki.contains("SPKI"), "{spki}");
        // the checks before p come first, as in the reference (bad x is 5.7.29, not 5.7.28)
        assert_eq!(AtkRecord::parse("v=atp1 k=ed25519 p=!!! x=soon").unwrap_err().code(), ErrorCode::AtkKey);
    }

    #[test]
    fn hostile_inputs_are_errors_not_panics() {
        assert_eq!(AtkRecord::parse(&"x".repeat(10 << 20)), Err(AtkError::MissingField("v")));
        assert_eq!(AtkRecord::parse(&"v=atp1 ".repeat(100_000)), Err(AtkError::MissingField("k")));
        assert!(matches!(rec(&format!(" p={}", "A".repeat(1 << 20))), Err(AtkError::BadPublicKey(_))));
        let e = AtkRecord::parse(&format!("v={} k=ed25519 p={P}", "z".repeat(10 << 20))).unwrap_err();
        assert!(e.to_string().len() < 200, "error messages are clipped");
        // many flags: only MAX_FLAGS kept, but a late `s` still revokes
        let r = rec(&format!(" t={}s", "a,".repeat(1 << 20))).unwrap();
        assert_eq!(r.flags.len(), MAX_FLAGS);
        assert!(r.revoked);
        for weird in [
            "v=atp1 k=ed25519 p=\u{1F600} x=\u{0}",
            "v=atp1\u{a0}k=ed25519 p=x",
            "v=atp1 k=ed25519\u{200b} p=x",
            "\u{feff}v=atp1 k=ed25519 p=x",
            "v=atp1 k=ed25519 p=x x=１２",
        ] {
            assert!(AtkRecord::parse(weird).is_err(), "{weird:?}");
        }
        assert!(rec(" t=\u{1F600}").is_ok(), "unknown flags are kept, whatever they are");
    }
}
