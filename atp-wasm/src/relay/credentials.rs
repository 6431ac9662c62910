//! Agent credentials (docs/protocol.md §7, docs/design.md §3 "cheap authentication"): argon2id
//! hashes in PHC form, constant-time secret comparison, and a short-lived cache of verified
//! credentials keyed by an HMAC of `id NUL password` under a random per-process key, so that a
//! polling agent does not pay a full argon2 run per request and no plaintext is kept.
//!
//! Hashing itself goes through [`PasswordHasher`]: natively on a bounded pool of threads, in a
//! worker inline ([`InlineHasher`]).

use std::collections::HashMap;
use std::sync::Mutex;

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// How long a verified credential is trusted without re-hashing, in seconds.
pub const CACHE_TTL_SECS: i64 = 300;
/// Most credentials cached.
pub const CACHE_MAX: usize = 10_000;

/// The cost of new hashes (verification uses whatever cost a hash names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Argon2Params {
    pub memory_kib: u32,
    pub iterations: u32,
}

impl Default for Argon2Params {
    /// argon2's recommended default: 19 MiB, 2 iterations, 1 lane.
    fn default() -> Self {
        Argon2Params { memory_kib: Params::DEFAULT_M_COST, iterations: Params::DEFAULT_T_COST }
    }
}

/// Hashes a new password (argon2id, PHC string).
pub fn hash_password(password: &str, cost: Argon2Params) -> Result<String, String> {
    let params = Params::new(cost.memory_kib, cost.iterations, 1, None).map_err(|e| e.to_string())?;
    let mut salt = [0u8; 16];
    getrandom::getrandom(&mut salt).map_err(|e| e.to_string())?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Checks a password against a PHC hash (the comparison inside argon2 is constant-time). `None`:
/// no such agent — the same work is done against a fixed hash, then `false`, so response times
/// do not reveal which agents exist.
pub fn verify_password(password: &str, phc: Option<&str>) -> bool {
    verify_password_at(password, phc, Argon2Params::default())
}

/// [`verify_password`] for a home whose hashes cost `cost`: an unknown agent costs the same run
/// at that cost (a worker with a lowered cost must not pay the default for strangers, nor let
/// them tell agents apart by the difference).
pub fn verify_password_at(password: &str, phc: Option<&str>, cost: Argon2Params) -> bool {
    let phc_ok = phc.is_some();
    let dummy;
    let phc = match phc {
        Some(p) => p,
        None => {
            dummy = dummy_hash(cost);
            dummy.as_str()
        }
    };
    let ok = PasswordHash::new(phc).is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok());
    ok && phc_ok
}

/// A hash to verify against when the agent does not exist, at a given cost (one per cost, made once).
fn dummy_hash(cost: Argon2Params) -> String {
    static DUMMIES: Mutex<Vec<(Argon2Params, String)>> = Mutex::new(Vec::new());
    let Ok(mut d) = DUMMIES.lock() else { return String::new() };
    if let Some((_, h)) = d.iter().find(|(c, _)| *c == cost) {
        return h.clone();
    }
    let h = hash_password("atp dummy password", cost).unwrap_or_default();
    d.push((cost, h.clone()));
    h
}

/// Compares two secrets in constant time, lengths included (their SHA-256 digests are compared).
pub fn secrets_equal(a: &str, b: &str) -> bool {
    let (da, db) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    bool::from(da.as_slice().ct_eq(db.as_slice()))
}

/// Hashes and verifies passwords for the relay. Implementations decide where the work runs.
#[allow(async_fn_in_trait)]
pub trait PasswordHasher {
    /// [`hash_password`] at the home's cost.
    async fn hash(&self, password: &str) -> Result<String, String>;
    /// [`verify_password`].
    async fn verify(&self, password: &str, phc: Option<&str>) -> bool;
}

/// Hashing in the calling task (Workers, tests).
#[derive(Debug, Clone, Copy, Default)]
pub struct InlineHasher(pub Argon2Params);

impl PasswordHasher for InlineHasher {
    async fn hash(&self, password: &str) -> Result<String, String> {
        hash_password(password, self.0)
    }
    async fn verify(&self, password: &str, phc: Option<&str>) -> bool {
        verify_password_at(password, phc, self.0)
    }
}

/// The HMAC of a credential: identifies it without keeping it.
pub type Tag = [u8; 32];

/// Verified credentials, by [`Tag`], with the time (seconds) they were verified.
#[derive(Debug)]
pub struct CredentialCache {
    key: [u8; 32],
    entries: Mutex<HashMap<Tag, i64>>,
}

impl Default for CredentialCache {
    fn default() -> Self {
        let mut key = [0u8; 32];
        let _ = getrandom::getrandom(&mut key);
        CredentialCache { key, entries: Mutex::default() }
    }
}

impl CredentialCache {
    /// The tag of a credential.
    pub fn tag(&self, id: &str, password: &str) -> Tag {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(id.as_bytes());
        mac.update(&[0]);
        mac.update(password.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// True when this exact credential was verified less than [`CACHE_TTL_SECS`] before `now`.
    pub fn is_fresh(&self, tag: &Tag, now: i64) -> bool {
        let Ok(entries) = self.entries.lock() else { return false };
        entries.get(tag).is_some_and(|at| now.saturating_sub(*at) < CACHE_TTL_SECS)
    }

    /// Remembers a verified credential; at most [`CACHE_MAX`] are kept.
    pub fn remember(&self, tag: Tag, now: i64) {
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= CACHE_MAX {
                entries.retain(|_, at| now.saturating_sub(*at) < CACHE_TTL_SECS);
                if entries.len() >= CACHE_MAX {
                    entries.clear();
                }
            }
            entries.insert(tag, now);
        }
    }

    /// Credentials cached now.
    pub fn len(&self) -> usize {
        self.entries.lock().map(|e| e.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHEAP: Argon2Params = Argon2Params { memory_kib: 64, iterations: 1 };

    #[test]
    fn argon2id_round_trip() {
        let h = hash_password("s3cret:with:colons", CHEAP).unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("s3cret:with:colons", Some(&h)));
        assert!(!verify_password("s3cret", Some(&h)));
        assert!(!verify_password("x", Some("not a hash")));
        assert!(!verify_password("atp dummy password", None), "no agent never verifies");
        assert!(!verify_password_at("atp dummy password", None, CHEAP));
        assert!(dummy_hash(CHEAP).starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "the dummy has the home's cost");
    }

    #[test]
    fn cache_is_keyed_by_id_and_password_and_expires() {
        let c = CredentialCache::default();
        let t = c.tag("a@b.c", "pw");
        assert!(!c.is_fresh(&t, 100));
        c.remember(t, 100);
        assert!(c.is_fresh(&c.tag("a@b.c", "pw"), 100 + CACHE_TTL_SECS - 1));
        assert!(!c.is_fresh(&t, 100 + CACHE_TTL_SECS));
        assert!(!c.is_fresh(&c.tag("a@b.c", "pw2"), 100));
        assert!(!c.is_fresh(&c.tag("a@b.cc", "pw"), 100));
        assert_ne!(c.tag("a@b.c", "pw"), CredentialCache::default().tag("a@b.c", "pw"), "keyed per process");
    }

    #[test]
    fn cache_is_bounded() {
        let c = CredentialCache::default();
        for i in 0..CACHE_MAX + 10 {
            c.remember(c.tag(&format!("a{i}@b.c"), "pw"), 1);
        }
        assert!(c.len() <= CACHE_MAX);
    }

    #[test]
    fn constant_time_equal() {
        assert!(secrets_equal("token", "token"));
        assert!(!secrets_equal("token", "tokem"));
        assert!(!secrets_equal("token", "token2"));
    }
}
