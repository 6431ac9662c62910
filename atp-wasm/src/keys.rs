//! Ed25519 domain keys (protocol.md §4, §8.7): generation, the reference's file formats (PKCS#8 PEM
//! private key, SubjectPublicKeyInfo PEM public key) and the raw 32-byte public key in padded
//! standard base64 that ATK records publish.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};

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

    /// Reads an unencrypted PKCS#8 PEM private key (`keys/<selector>.key`).
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, KeyError> {
        SigningKey::from_pkcs8_pem(pem).map(|signing| DomainKey { signing }).map_err(|e| KeyError::Pkcs8(e.to_string()))
    }

    /// Writes the private key as unencrypted PKCS#8 PEM, as the reference does.
    pub fn to_pkcs8_pem(&self) -> Result<String, KeyError> {
        self.signing
            .to_pkcs8_pem(Default::default())
            .map(|z| z.as_str().to_owned())
            .map_err(|e| KeyError::Pkcs8(e.to_string()))
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
        self.0.to_public_key_pem(Default::default()).map_err(|e| KeyError::Spki(e.to_string()))
    }

    /// Reads a SubjectPublicKeyInfo PEM.
    pub fn from_spki_pem(pem: &str) -> Result<Self, KeyError> {
        VerifyingKey::from_public_key_pem(pem).map(PublicKey).map_err(|e| KeyError::Spki(e.to_string()))
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
