//! Ed25519 domain keys (docs/protocol.md §4, §8.7): generation, the reference's file formats (PKCS#8 PEM
//! private key, SubjectPublicKeyInfo PEM public key) and the raw 32-byte public key in padded
//! standard base64 that ATK records publish.
//!
//! The DER of Ed25519 keys is fixed apart from the key bytes (RFC 8410 §7, §10), so it is written
//! and read here directly instead of through the `pkcs8`/`der`/`pem` crates, which would add a third
//! to the npm package's wasm. Private keys are written as PKCS#8 v1, the 48-byte form Python's
//! `cryptography` writes (the reference's key files): `cryptography` 46 cannot read the v2 form
//! (`OneAsymmetricKey` with the public key, RFC 5958) that ed25519-dalek's `pkcs8` wrote ("ASN.1
//! parsing error: extra data"), so keys written that way could not be shared with the reference.
//! Both v1 and v2 are read.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};

/// `SEQUENCE { INTEGER 0|1, AlgorithmIdentifier { id-Ed25519 }, OCTET STRING { OCTET STRING (32) } … }`:
/// the bytes after the outer SEQUENCE header, up to the seed (RFC 8410 §7).
const PKCS8_ALGORITHM_AND_SEED: [u8; 11] = [0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];
/// `[1] IMPLICIT BIT STRING (33)` holding the public key in PKCS#8 v2 (RFC 5958).
const PKCS8_PUBLIC_KEY: [u8; 3] = [0x81, 0x21, 0x00];
/// `SubjectPublicKeyInfo { AlgorithmIdentifier { id-Ed25519 }, BIT STRING (33) }` up to the key (RFC 8410 §4).
const SPKI_PREFIX: [u8; 12] = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];
/// Longest PEM text read (a key is ~120 characters).
const MAX_PEM_LEN: usize = 16 * 1024;

/// The DER inside a PEM block labelled `label` (RFC 7468: no headers, base64 in any line layout).
fn pem_decode(pem: &str, label: &str) -> Result<Vec<u8>, String> {
    if pem.len() > MAX_PEM_LEN {
        return Err("PEM text too long".into());
    }
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let body = pem
        .trim()
        .strip_prefix(&begin)
        .and_then(|rest| rest.strip_suffix(&end))
        .ok_or_else(|| format!("expected a PEM block labelled '{label}'"))?;
    if body.contains(':') || body.contains('-') {
        return Err("PEM headers or nested blocks are not allowed".into());
    }
    let b64: String = body.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    STANDARD.decode(b64).map_err(|e| format!("PEM base64: {e}"))
}

/// A PEM block: base64 in 64-character lines, LF line ends (RFC 7468 §2).
fn pem_encode(der: &[u8], label: &str) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Why a key could not be read or written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("invalid PKCS#8 private key: {0}")]
    Pkcs8(String),
    #[error("invalid public key PEM: {0}")]
    Spki(String),
    #[error("invalid base64 public key: {0}")]
    Base64(String),
    #[error("an Ed25519 public key is 32 bytes long, got {0}")]
    Length(usize),
    #[error("not a valid Ed25519 public key")]
    InvalidPoint,
}

/// A domain's Ed25519 signing key. The secret is zeroized on drop.
#[derive(Clone)]
pub struct DomainKey {
    signing: SigningKey,
}

impl std::fmt::Debug for DomainKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DomainKey(public={})", self.public_key().to_b64())
    }
}

impl DomainKey {
    /// A new random key from the OS (or, in wasm, the JS crypto) random source.
    pub fn generate() -> Self {
        DomainKey { signing: SigningKey::generate(&mut rand_core::OsRng) }
    }

    /// The key with this 32-byte seed (RFC 8032 private key).
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        DomainKey { signing: SigningKey::from_bytes(seed) }
    }

    /// Reads an unencrypted PKCS#8 PEM private key (`keys/<selector>.key`): v1 (RFC 8410 §7) or
    /// v2 with the public key, which must then match the seed (RFC 5958).
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, KeyError> {
        let der = pem_decode(pem, "PRIVATE KEY").map_err(KeyError::Pkcs8)?;
        Self::from_pkcs8_der(&der)
    }

    /// Reads the DER of an unencrypted Ed25519 PKCS#8 private key (see [`DomainKey::from_pkcs8_pem`]).
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, KeyError> {
        let bad = |why: &str| KeyError::Pkcs8(format!("not an Ed25519 PKCS#8 private key: {why}"));
        let body = match der {
            [0x30, len, body @ ..] if usize::from(*len) == body.len() && *len < 0x80 => body,
            _ => return Err(bad("expected a short DER SEQUENCE")),
        };
        let (version, rest) = match body {
            [0x02, 0x01, v @ (0 | 1), rest @ ..] => (*v, rest),
            _ => return Err(bad("expected version 0 or 1")),
        };
        let rest =
            rest.strip_prefix(&PKCS8_ALGORITHM_AND_SEED[..]).ok_or_else(|| bad("expected algorithm id-Ed25519"))?;
        let (seed, rest) = rest.split_at_checked(32).ok_or_else(|| bad("truncated seed"))?;
        let key = DomainKey::from_seed(seed.try_into().map_err(|_| bad("truncated seed"))?);
        match rest {
            [] => Ok(key),
            [a, b, c, public @ ..] if version == 1 && [*a, *b, *c] == PKCS8_PUBLIC_KEY && public.len() == 32 => {
                if public == key.public_key().as_bytes() {
                    Ok(key)
                } else {
                    Err(bad("the public key does not belong to the private key"))
                }
            }
            _ => Err(bad("unexpected trailing data")),
        }
    }

    /// The private key as PKCS#8 v1 DER (RFC 8410 §7: 48 bytes, no public key).
    pub fn to_pkcs8_der(&self) -> Vec<u8> {
        let mut der = vec![0x30, 0x2e, 0x02, 0x01, 0x00];
        der.extend_from_slice(&PKCS8_ALGORITHM_AND_SEED);
        der.extend_from_slice(&self.signing.to_bytes());
        der
    }

    /// Writes the private key as unencrypted PKCS#8 PEM (v1), byte for byte as the reference
    /// (Python `cryptography`) writes it, and readable by it.
    pub fn to_pkcs8_pem(&self) -> Result<String, KeyError> {
        Ok(pem_encode(&self.to_pkcs8_der(), "PRIVATE KEY"))
    }

    /// The public half.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.signing.verifying_key())
    }

    /// Pure Ed25519 (RFC 8032) signature of `bytes`.
    pub fn sign(&self, bytes: &[u8]) -> [u8; 64] {
        self.signing.sign(bytes).to_bytes()
    }
}

/// An Ed25519 public key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(pub VerifyingKey);

impl PublicKey {
    /// From the 32 raw bytes.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, KeyError> {
        VerifyingKey::from_bytes(bytes).map(PublicKey).map_err(|_| KeyError::InvalidPoint)
    }

    /// From padded standard base64 of the 32 raw bytes (an ATK `p=` value), strictly decoded.
    pub fn from_b64(text: &str) -> Result<Self, KeyError> {
        let raw = STANDARD.decode(text).map_err(|e| KeyError::Base64(e.to_string()))?;
        let bytes: [u8; 32] = raw.as_slice().try_into().map_err(|_| KeyError::Length(raw.len()))?;
        Self::from_bytes(&bytes)
    }

    /// Padded standard base64 of the 32 raw bytes (44 characters).
    pub fn to_b64(&self) -> String {
        STANDARD.encode(self.0.as_bytes())
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        self.0.as_bytes()
    }

    /// SubjectPublicKeyInfo PEM (`keys/<selector>.pub`).
    pub fn to_spki_pem(&self) -> Result<String, KeyError> {
        let mut der = SPKI_PREFIX.to_vec();
        der.extend_from_slice(self.as_bytes());
        Ok(pem_encode(&der, "PUBLIC KEY"))
    }

    /// Reads a SubjectPublicKeyInfo PEM of an Ed25519 key.
    pub fn from_spki_pem(pem: &str) -> Result<Self, KeyError> {
        let der = pem_decode(pem, "PUBLIC KEY").map_err(KeyError::Spki)?;
        let raw = der
            .strip_prefix(&SPKI_PREFIX[..])
            .filter(|k| k.len() == 32)
            .ok_or_else(|| KeyError::Spki("not an Ed25519 SubjectPublicKeyInfo".into()))?;
        let bytes: [u8; 32] = raw.try_into().map_err(|_| KeyError::Length(raw.len()))?;
        Self::from_bytes(&bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The reference vectors' key (tests/data/reference-signing.json).
    const SEED: &str = "792da788022c7e1d5872e729cbbecc6d76780f03a7c43d007370f259dd9c5ca6";
    const PUB: &str = "W5IqPFzGPmVx1Rx5/nK8CN5TewPvr3AfWSjTaYELjDM=";

    fn seed() -> [u8; 32] {
        let mut s = [0u8; 32];
        for (i, b) in s.iter_mut().enumerate() {
            *b = u8::from_str_radix(&SEED[2 * i..2 * i + 2], 16).unwrap();
        }
        s
    }

    #[test]
    fn seed_gives_the_reference_public_key() {
        assert_eq!(DomainKey::from_seed(&seed()).public_key().to_b64(), PUB);
    }

    #[test]
    fn pkcs8_and_spki_round_trip() {
        let k = DomainKey::from_seed(&seed());
        let pem = k.to_pkcs8_pem().unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        let back = DomainKey::from_pkcs8_pem(&pem).unwrap();
        assert_eq!(back.public_key(), k.public_key());
        let spki = k.public_key().to_spki_pem().unwrap();
        assert!(spki.starts_with("-----BEGIN PUBLIC KEY-----"));
        assert_eq!(PublicKey::from_spki_pem(&spki).unwrap(), k.public_key());
        assert!(DomainKey::from_pkcs8_pem("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n").is_err());
        assert!(DomainKey::from_pkcs8_pem(&"x".repeat(10 << 20)).is_err());
    }

    #[test]
    fn the_python_pem_format_is_read() {
        // `cryptography`'s PKCS#8 encoding of an Ed25519 key is the 48-byte RFC 8410 form.
        let pem = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIHktp4gCLH4dWHLnKcu+zG12eA8Dp8Q9AHNw8lndnFym\n-----END PRIVATE KEY-----\n";
        assert_eq!(DomainKey::from_pkcs8_pem(pem).unwrap().public_key().to_b64(), PUB);
    }

    #[test]
    fn pem_output_is_what_python_cryptography_writes() {
        // `Ed25519PrivateKey.from_private_bytes(bytes([7] * 32)).private_bytes(PEM, PKCS8, NoEncryption())`
        // and `.public_key().public_bytes(PEM, SubjectPublicKeyInfo)` (cryptography 46).
        let k = DomainKey::from_seed(&[7u8; 32]);
        assert_eq!(
            k.to_pkcs8_pem().unwrap(),
            "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIAcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcH\n-----END PRIVATE KEY-----\n"
        );
        assert_eq!(
            k.public_key().to_spki_pem().unwrap(),
            "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA6kpsY+KcUgq+9VB7Ey7F+ZVHdq6+vnuSQh7qaRRG0iw=\n-----END PUBLIC KEY-----\n"
        );
        // The v2 form ed25519-dalek's pkcs8 encoder wrote (earlier atp key files) is still read.
        let v2 = "-----BEGIN PRIVATE KEY-----\nMFECAQEwBQYDK2VwBCIEIAcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcH\n\
                  gSEA6kpsY+KcUgq+9VB7Ey7F+ZVHdq6+vnuSQh7qaRRG0iw=\n-----END PRIVATE KEY-----\n";
        assert_eq!(DomainKey::from_pkcs8_pem(v2).unwrap().public_key(), k.public_key());
    }

    #[test]
    fn pkcs8_reading_is_strict() {
        let k = DomainKey::from_seed(&seed());
        let v1 = k.to_pkcs8_der();
        assert_eq!(v1.len(), 48);
        // v2: version 1 and the public key appended (RFC 5958).
        let mut v2 = v1.clone();
        v2[1] = 0x51;
        v2[4] = 1;
        v2.extend_from_slice(&PKCS8_PUBLIC_KEY);
        v2.extend_from_slice(k.public_key().as_bytes());
        assert_eq!(DomainKey::from_pkcs8_der(&v2).unwrap().public_key(), k.public_key());
        // CRLF line ends and another line layout are fine.
        let b64 = STANDARD.encode(&v2);
        let crlf =
            format!("-----BEGIN PRIVATE KEY-----\r\n{}\r\n{}\r\n-----END PRIVATE KEY-----\r\n", &b64[..20], &b64[20..]);
        assert_eq!(DomainKey::from_pkcs8_pem(&crlf).unwrap().public_key(), k.public_key());
        // v2 whose public key belongs to another seed.
        let mut wrong = v2.clone();
        wrong[82] ^= 1;
        assert!(DomainKey::from_pkcs8_der(&wrong).unwrap_err().to_string().contains("does not belong"));
        // v1 with a public key, trailing bytes, another algorithm, truncation.
        let mut v1_with_pub = v2.clone();
        v1_with_pub[4] = 0;
        assert!(DomainKey::from_pkcs8_der(&v1_with_pub).is_err());
        let mut trailing = v1.clone();
        trailing.push(0);
        trailing[1] += 1;
        assert!(DomainKey::from_pkcs8_der(&trailing).is_err());
        let mut x25519 = v1.clone();
        x25519[11] = 0x6e;
        assert!(DomainKey::from_pkcs8_der(&x25519).is_err());
        assert!(DomainKey::from_pkcs8_der(&v1[..40]).is_err());
        assert!(DomainKey::from_pkcs8_der(&[]).is_err());
        let public_pem = k.public_key().to_spki_pem().unwrap();
        assert!(DomainKey::from_pkcs8_pem(&public_pem).is_err());
        let with_header = crlf.replace("-----\r\n", "-----\r\nProc-Type: 4,ENCRYPTED\r\n");
        assert!(DomainKey::from_pkcs8_pem(&with_header).is_err());
        assert!(PublicKey::from_spki_pem(&crlf).is_err());
        assert!(PublicKey::from_spki_pem(&public_pem.replace("MCow", "MCox")).is_err());
    }

    #[test]
    fn strict_public_key_decoding() {
        assert!(PublicKey::from_b64(PUB).is_ok());
        assert!(matches!(PublicKey::from_b64(PUB.trim_end_matches('=')), Err(KeyError::Base64(_))));
        assert!(matches!(PublicKey::from_b64(&PUB.replace('/', "_")), Err(KeyError::Base64(_))));
        // SPKI DER in p= (a common mistake in the reference's docs)
        let spki_b64 = "MCowBQYDK2VwAyEAW5IqPFzGPmVx1Rx5/nK8CN5TewPvr3AfWSjTaYELjDM=";
        assert_eq!(PublicKey::from_b64(spki_b64), Err(KeyError::Length(44)));
    }

    #[test]
    fn generated_keys_differ_and_sign() {
        let (a, b) = (DomainKey::generate(), DomainKey::generate());
        assert_ne!(a.public_key(), b.public_key());
        let sig = a.sign(b"hello");
        use ed25519_dalek::Verifier;
        assert!(a.public_key().0.verify(b"hello", &ed25519_dalek::Signature::from_bytes(&sig)).is_ok());
    }
}
