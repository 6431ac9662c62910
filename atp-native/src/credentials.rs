//! Agent credentials (protocol.md §7, design.md §3 "cheap authentication"): argon2id hashes, and a
//! short-lived in-memory cache of verified credentials keyed by a keyed hash of `id:password`, so a
//! request does not pay a full argon2 hash each time and no plaintext is kept.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// How long a verified credential is trusted without re-hashing.
pub const CACHE_TTL: Duration = Duration::from_secs(300);
const CACHE_MAX: usize = 10_000;

/// Hashes a new password (argon2id, PHC string).
pub fn hash_password(password: &str) -> Result<String, String> {
    let mut salt = [0u8; 16];
    getrandom::getrandom(&mut salt).map_err(|e| e.to_string())?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    Argon2::default().hash_password(password.as_bytes(), &salt).map(|h| h.to_string()).map_err(|e| e.to_string())
}

/// Checks a password against a PHC hash (the comparison inside argon2 is constant-time).
pub fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
}

/// Compares two secrets in constant time.
pub fn secrets_equal(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// Verified credentials, by keyed hash.
pub struct CredentialCache {
    key: [u8; 32],
    entries: Mutex<HashMap<[u8; 32], Instant>>,
}

impl Default for CredentialCache {
    fn default() -> Self {
        let mut key = [0u8; 32];
        let _ = getrandom::getrandom(&mut key);
        CredentialCache { key, entries: Mutex::new(HashMap::new()) }
    }
}

impl CredentialCache {
    fn tag(&self, id: &str, password: &str) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key).expect("any key length");
        mac.update(id.as_bytes());
        mac.update(&[0]);
        mac.update(password.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// True when this exact credential was verified less than [`CACHE_TTL`] ago.
    pub fn check(&self, id: &str, password: &str) -> bool {
        let tag = self.tag(id, password);
        let Ok(entries) = self.entries.lock() else { return false };
        entries.get(&tag).is_some_and(|at| at.elapsed() < CACHE_TTL)
    }

    /// Remembers a verified credential.
    pub fn remember(&self, id: &str, password: &str) {
        let tag = self.tag(id, password);
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= CACHE_MAX {
                entries.retain(|_, at| at.elapsed() < CACHE_TTL);
                if entries.len() >= CACHE_MAX {
                    entries.clear();
                }
            }
            entries.insert(tag, Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argon2id_round_trip() {
        let h = hash_password("s3cret:with:colons").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("s3cret:with:colons", &h));
        assert!(!verify_password("s3cret", &h));
        assert!(!verify_password("x", "not a hash"));
    }

    #[test]
    fn cache_is_keyed_by_id_and_password() {
        let c = CredentialCache::default();
        assert!(!c.check("a@b.c", "pw"));
        c.remember("a@b.c", "pw");
        assert!(c.check("a@b.c", "pw"));
        assert!(!c.check("a@b.c", "pw2"));
        assert!(!c.check("a@b.cc", "pw"));
    }

    #[test]
    fn constant_time_equal() {
        assert!(secrets_equal("token", "token"));
        assert!(!secrets_equal("token", "tokem"));
        assert!(!secrets_equal("token", "token2"));
    }
}
