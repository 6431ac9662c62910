//! Agent credentials (docs/protocol.md §7, docs/design.md §3 "cheap authentication"): argon2id hashes, and a
//! short-lived in-memory cache of verified credentials keyed by a keyed hash of `id:password`, so a
//! request does not pay a full argon2 hash each time and no plaintext is kept.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
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

/// Compares two secrets in constant time, without revealing their lengths either: the SHA-256
/// digests are compared.
pub fn secrets_equal(a: &str, b: &str) -> bool {
    let (da, db) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    bool::from(da.as_slice().ct_eq(db.as_slice()))
}

/// A keyed hash (HMAC-SHA256 under a random per-process key) of `id NUL password`: identifies a
/// credential without keeping it.
pub type Tag = [u8; 32];

/// Verified credentials, by [`Tag`], plus the verifications in flight: concurrent requests with
/// the same uncached credential wait for one argon2 run instead of each paying for their own.
pub struct CredentialCache {
    key: [u8; 32],
    entries: Mutex<HashMap<Tag, Instant>>,
    inflight: Mutex<HashMap<Tag, Arc<tokio::sync::Mutex<()>>>>,
}

impl Default for CredentialCache {
    fn default() -> Self {
        let mut key = [0u8; 32];
        let _ = getrandom::getrandom(&mut key);
        CredentialCache { key, entries: Mutex::default(), inflight: Mutex::default() }
    }
}

/// Held while one credential is being verified; see [`CredentialCache::single_flight`].
pub struct Flight<'a> {
    cache: &'a CredentialCache,
    tag: Tag,
    _guard: tokio::sync::OwnedMutexGuard<()>,
}

impl Drop for Flight<'_> {
    fn drop(&mut self) {
        if let Ok(mut m) = self.cache.inflight.lock() {
            m.remove(&self.tag);
        }
    }
}

impl CredentialCache {
    /// The tag of a credential.
    pub fn tag(&self, id: &str, password: &str) -> Tag {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key).expect("any key length");
        mac.update(id.as_bytes());
        mac.update(&[0]);
        mac.update(password.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// True when this exact credential was verified less than [`CACHE_TTL`] ago.
    pub fn is_fresh(&self, tag: &Tag) -> bool {
        let Ok(entries) = self.entries.lock() else { return false };
        entries.get(tag).is_some_and(|at| at.elapsed() < CACHE_TTL)
    }

    /// Remembers a verified credential.
    pub fn remember(&self, tag: Tag) {
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

    /// Waits until no other request is verifying this credential, then holds that role until the
    /// returned guard drops. Check [`Self::is_fresh`] again after it returns.
    pub async fn single_flight(&self, tag: Tag) -> Flight<'_> {
        let lock = match self.inflight.lock() {
            Ok(mut m) => m.entry(tag).or_default().clone(),
            Err(_) => Arc::default(),
        };
        Flight { cache: self, tag, _guard: lock.lock_owned().await }
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
        let t = c.tag("a@b.c", "pw");
        assert!(!c.is_fresh(&t));
        c.remember(t);
        assert!(c.is_fresh(&c.tag("a@b.c", "pw")));
        assert!(!c.is_fresh(&c.tag("a@b.c", "pw2")));
        assert!(!c.is_fresh(&c.tag("a@b.cc", "pw")));
        assert_ne!(c.tag("a@b.c", "pw"), CredentialCache::default().tag("a@b.c", "pw"), "keyed per process");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_verification_per_credential_at_a_time() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let c = Arc::new(CredentialCache::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let (c, runs) = (c.clone(), runs.clone());
                tokio::spawn(async move {
                    let tag = c.tag("a@b.c", "pw");
                    if c.is_fresh(&tag) {
                        return;
                    }
                    let _flight = c.single_flight(tag).await;
                    if !c.is_fresh(&tag) {
                        runs.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        c.remember(tag);
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert!(c.inflight.lock().unwrap().is_empty());
    }

    #[test]
    fn constant_time_equal() {
        assert!(secrets_equal("token", "token"));
        assert!(!secrets_equal("token", "tokem"));
        assert!(!secrets_equal("token", "token2"));
    }
}
