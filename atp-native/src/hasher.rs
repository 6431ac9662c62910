//! Password hashing for the relay (docs/design.md §5b): argon2id runs on a bounded pool — at most
//! one per core — so a burst of logins queues instead of each holding argon2's 19 MiB at once, and
//! concurrent checks of one credential share a single run.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use atp_wasm::relay::credentials::{hash_password, verify_password, Argon2Params, PasswordHasher};
use sha2::{Digest, Sha256};
use tokio::sync::{OnceCell, Semaphore};

/// A verification in flight, shared by the requests checking the same credential.
type Flight = Arc<OnceCell<bool>>;

/// argon2id on tokio's blocking threads, at most `permits` at a time.
pub struct NativeHasher {
    cost: Argon2Params,
    pool: Arc<Semaphore>,
    /// Random per-process key of the in-flight map's keys (no plaintext is kept).
    key: [u8; 32],
    inflight: Mutex<HashMap<[u8; 32], Flight>>,
    /// argon2 runs started (tests).
    #[cfg(test)]
    runs: std::sync::atomic::AtomicUsize,
}

impl NativeHasher {
    /// A hasher running at most `permits` argon2 computations at once (0 = one per core).
    pub fn new(permits: usize) -> Self {
        let permits = if permits == 0 { std::thread::available_parallelism().map_or(2, |n| n.get()) } else { permits };
        let mut key = [0u8; 32];
        let _ = getrandom::getrandom(&mut key);
        NativeHasher {
            cost: Argon2Params::default(),
            pool: Arc::new(Semaphore::new(permits)),
            key,
            inflight: Mutex::default(),
            #[cfg(test)]
            runs: Default::default(),
        }
    }

    /// Runs `f` on a blocking thread once a pool permit is free.
    async fn on_pool<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
        let _permit = self.pool.acquire().await.ok()?;
        #[cfg(test)]
        self.runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        tokio::task::spawn_blocking(f).await.ok()
    }

    fn flight_key(&self, password: &str, phc: Option<&str>) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.key);
        h.update(phc.unwrap_or("").as_bytes());
        h.update([0]);
        h.update(password.as_bytes());
        h.finalize().into()
    }
}

impl PasswordHasher for NativeHasher {
    async fn hash(&self, password: &str) -> Result<String, String> {
        let (pw, cost) = (password.to_owned(), self.cost);
        self.on_pool(move || hash_password(&pw, cost)).await.unwrap_or_else(|| Err("password hashing failed".into()))
    }

    async fn verify(&self, password: &str, phc: Option<&str>) -> bool {
        let key = self.flight_key(password, phc);
        let flight = match self.inflight.lock() {
            Ok(mut m) => m.entry(key).or_default().clone(),
            Err(_) => Flight::default(),
        };
        let (pw, phc_owned) = (password.to_owned(), phc.map(str::to_owned));
        let ok = *flight
            .get_or_init(|| async move {
                self.on_pool(move || verify_password(&pw, phc_owned.as_deref())).await.unwrap_or(false)
            })
            .await;
        if let Ok(mut m) = self.inflight.lock() {
            if m.get(&key).is_some_and(|f| Arc::ptr_eq(f, &flight)) {
                m.remove(&key);
            }
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_checks_of_one_credential_share_a_run_and_the_pool_is_bounded() {
        let h = Arc::new(NativeHasher::new(1));
        let phc = h.hash("pw").await.unwrap();
        assert!(h.verify("pw", Some(&phc)).await);
        assert!(!h.verify("nope", Some(&phc)).await);
        assert!(!h.verify("pw", None).await, "no agent never verifies");
        // The pool has one permit: while a test task holds it, no verification can run.
        let held = h.pool.clone().acquire_owned().await.unwrap();
        let done = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (h, phc, done) = (h.clone(), phc.clone(), done.clone());
                tokio::spawn(async move {
                    let ok = h.verify("pw", Some(&phc)).await;
                    done.fetch_add(1, Ordering::SeqCst);
                    ok
                })
            })
            .collect();
        // Wait (a condition, not a time) until all eight hold the one flight: the map's Arc + 8.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let holders = h.inflight.lock().unwrap().values().next().map_or(0, Arc::strong_count);
            if holders == 9 {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "the checks never met in one flight ({holders})");
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert_eq!(done.load(Ordering::SeqCst), 0, "queued behind the pool");
        let runs_before = h.runs.load(Ordering::SeqCst);
        drop(held);
        for t in tasks {
            assert!(t.await.unwrap());
        }
        assert_eq!(h.runs.load(Ordering::SeqCst), runs_before + 1, "eight checks, one argon2 run");
        assert!(h.inflight.lock().unwrap().is_empty());
    }
}
