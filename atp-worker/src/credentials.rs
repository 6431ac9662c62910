//! Agent credentials (docs/protocol.md §7, docs/design.md §3 "cheap authentication"), as in atp-native:
//! argon2id hashes in PHC form (so a hash moves between the two implementations), and a short-lived
//! per-isolate cache of verified credentials keyed by a keyed hash of `id NUL password`, so that a
//! polling agent does not pay a full argon2 run per request and no plaintext is kept.

use std::collections::HashMap;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use sha2::{Digest, Sha256};

/// How long a verified credential is trusted without re-hashing, in milliseconds.
pub const CACHE_TTL_MS: i64 = 300_000;
const CACHE_MAX: usize = 10_000;

/// Hashes a new password with argon2id at the given cost (PHC string).
pub fn hash_password(password: &str, memory_kib: u32, iterations: u32) -> Result<String, String> {
    let params = Params::new(memory_kib, iterations, 1, None).map_err(|e| e.to_string())?;
    let mut salt = [0u8; 16];
    getrandom::getrandom(&mut salt).map_err(|e| e.to_string())?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Checks a password against a PHC hash (whatever cost the hash names; constant-time compare).
pub fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
}

/// Compares two secrets in constant time, lengths included (the SHA-256 digests are compared).
pub fn secrets_equal(a: &str, b: &str) -> bool {
    let (da, db) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    da.iter().zip(db.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Verified credentials of this isolate, by tag.
#[derive(Debug)]
pub struct CredentialCache {
    key: [u8; 32],
    entries: HashMap<[u8; 32], i64>,
}

impl Default for CredentialCache {
    fn default() -> Self {
        let mut key = [0u8; 32];
        let _ = getrandom::getrandom(&mut key);
        CredentialCache { key, entries: HashMap::new() }
    }
}

impl CredentialCache {
    /// The tag of a credential: SHA-256 over a random per-isolate key, the id, NUL, the password.
    pub fn tag(&self, id: &str, password: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.key);
        h.update(id.as_bytes());
        h.update([0]);
        h.update(password.as_bytes());
        h.finalize().into()
    }

    /// True when the credential was verified less than [`CACHE_TTL_MS`] ago.
    pub fn is_fresh(&self, tag: &[u8; 32], now_ms: i64) -> bool {
        self.entries.get(tag).is_some_and(|t| now_ms - t < CACHE_TTL_MS)
    }

    /// Remembers a verified credential.
    pub fn remember(&mut self, tag: [u8; 32], now_ms: i64) {
        if self.entries.len() >= CACHE_MAX {
            self.entries.retain(|_, t| now_ms - *t < CACHE_TTL_MS);
            if self.entries.len() >= CACHE_MAX {
                self.entries.clear();
            }
        }
        self.entries.insert(tag, now_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_carry_their_cost() {
        let h = hash_password("s3cret", 64, 1).unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{h}");
        assert!(verify_password("s3cret", &h));
        assert!(!verify_password("s3cret!", &h));
        assert!(!verify_password("s3cret", "not a hash"));
        assert!(hash_password("x", 1, 1).is_err(), "argon2 needs at least 8 KiB");
    }

    #[test]
    fn cache_expires_and_tags_differ() {
        let mut c = CredentialCache::default();
        let t = c.tag("bob@x.test", "pw");
        assert_ne!(t, c.tag("bob@x.test", "pw2"));
        assert_ne!(c.tag("bob@x.tes", "tpw"), c.tag("bob@x.test", "pw"));
        assert!(!c.is_fresh(&t, 0));
        c.remember(t, 1000);
        assert!(c.is_fresh(&t, 1000 + CACHE_TTL_MS - 1));
        assert!(!c.is_fresh(&t, 1000 + CACHE_TTL_MS));
        assert!(secrets_equal("a", "a") && !secrets_equal("a", "b") && !secrets_equal("a", "aa"));
    }
}
