//! The small traits through which the outside world reaches the core (docs/design.md §1): DNS lookups,
//! the clock and the dedup store. Each home (native server, worker, browser) implements them; the
//! core only calls them.
//!
//! The async traits use `async fn` in traits without a `Send` bound so that `!Send` wasm futures can
//! implement them; on tokio's multi-threaded runtime a concrete implementation whose futures are
//! `Send` keeps the callers `Send` (auto traits leak through concrete types).

use std::collections::HashMap;
use std::net::IpAddr;

use crate::records::svcb::{SrvRecord, SvcbRecord};

/// A DNS lookup failed in a way that may succeed later (timeout, SERVFAIL, no nameserver).
/// A name that does not exist, or has no records of the type, is *not* an error: it is `Ok(vec![])`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("DNS lookup of {name} failed: {reason}")]
pub struct DnsError {
    pub name: String,
    pub reason: String,
}

impl DnsError {
    pub fn new(name: impl Into<String>, reason: impl Into<String>) -> Self {
        DnsError { name: name.into(), reason: reason.into() }
    }
}

/// DNS, as ATP needs it (docs/protocol.md §5).
#[allow(async_fn_in_trait)]
pub trait Resolver {
    /// TXT records at `name`, each record's character-strings concatenated.
    async fn txt(&self, name: &str) -> Result<Vec<String>, DnsError>;
    /// SVCB records at `name`, in answer order.
    async fn svcb(&self, name: &str) -> Result<Vec<SvcbRecord>, DnsError>;
    /// SRV records at `name`.
    async fn srv(&self, name: &str) -> Result<Vec<SrvRecord>, DnsError>;
    /// A and AAAA addresses of `name`.
    async fn ip_addrs(&self, name: &str) -> Result<Vec<IpAddr>, DnsError>;
}

impl<R: Resolver + ?Sized> Resolver for &R {
    async fn txt(&self, name: &str) -> Result<Vec<String>, DnsError> {
        (**self).txt(name).await
    }
    async fn svcb(&self, name: &str) -> Result<Vec<SvcbRecord>, DnsError> {
        (**self).svcb(name).await
    }
    async fn srv(&self, name: &str) -> Result<Vec<SrvRecord>, DnsError> {
        (**self).srv(name).await
    }
    async fn ip_addrs(&self, name: &str) -> Result<Vec<IpAddr>, DnsError> {
        (**self).ip_addrs(name).await
    }
}

/// Normalises a DNS name for lookups in tables: ASCII lowercase, no trailing dot.
pub fn normalize_name(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// A resolver answering from in-memory tables: the local overrides of `peers.toml` and
/// `dns_override.toml` (docs/protocol.md §8.9), and a fixed DNS for tests. Names not in a table have no
/// records; names listed in `failing` fail temporarily.
#[derive(Debug, Default, Clone)]
pub struct StaticResolver {
    pub txt: HashMap<String, Vec<String>>,
    pub svcb: HashMap<String, Vec<SvcbRecord>>,
    pub srv: HashMap<String, Vec<SrvRecord>>,
    pub ips: HashMap<String, Vec<IpAddr>>,
    pub failing: Vec<String>,
}

impl StaticResolver {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a TXT record at `name`.
    pub fn add_txt(&mut self, name: &str, record: &str) -> &mut Self {
        self.txt.entry(normalize_name(name)).or_default().push(record.to_owned());
        self
    }

    /// Adds an SVCB record at `name`.
    pub fn add_svcb(&mut self, name: &str, record: SvcbRecord) -> &mut Self {
        self.svcb.entry(normalize_name(name)).or_default().push(record);
        self
    }

    /// Adds an SRV record at `name`.
    pub fn add_srv(&mut self, name: &str, record: SrvRecord) -> &mut Self {
        self.srv.entry(normalize_name(name)).or_default().push(record);
        self
    }

    /// Adds an address of `name`.
    pub fn add_ip(&mut self, name: &str, ip: IpAddr) -> &mut Self {
        self.ips.entry(normalize_name(name)).or_default().push(ip);
        self
    }

    /// Makes every lookup of `name` fail temporarily.
    pub fn fail(&mut self, name: &str) -> &mut Self {
        self.failing.push(normalize_name(name));
        self
    }

    fn get<T: Clone>(&self, table: &HashMap<String, Vec<T>>, name: &str) -> Result<Vec<T>, DnsError> {
        let key = normalize_name(name);
        if self.failing.contains(&key) {
            return Err(DnsError::new(name, "SERVFAIL"));
        }
        Ok(table.get(&key).cloned().unwrap_or_default())
    }
}

impl Resolver for StaticResolver {
    async fn txt(&self, name: &str) -> Result<Vec<String>, DnsError> {
        self.get(&self.txt, name)
    }
    async fn svcb(&self, name: &str) -> Result<Vec<SvcbRecord>, DnsError> {
        self.get(&self.svcb, name)
    }
    async fn srv(&self, name: &str) -> Result<Vec<SrvRecord>, DnsError> {
        self.get(&self.srv, name)
    }
    async fn ip_addrs(&self, name: &str) -> Result<Vec<IpAddr>, DnsError> {
        self.get(&self.ips, name)
    }
}

/// Unix time in seconds.
pub trait Clock {
    fn now(&self) -> i64;
}

/// A clock stopped at one instant (tests, replays of recorded traffic).
#[derive(Debug, Clone, Copy)]
pub struct FixedClock(pub i64);

impl Clock for FixedClock {
    fn now(&self) -> i64 {
        self.0
    }
}

/// The host's wall clock. (Not on wasm32, where `std::time` has no clock; the JS bindings use
/// `Date.now()`.)
#[cfg(not(target_arch = "wasm32"))]
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

#[cfg(not(target_arch = "wasm32"))]
impl Clock for SystemClock {
    fn now(&self) -> i64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
    }
}

/// SHA-256 of a message's canonical bytes: what the receiver remembers per `(sender domain, nonce)`.
pub type ContentHash = [u8; 32];

/// What kind of storage trouble a [`StoreError`] is (docs/protocol.md §6.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreFault {
    /// The disk (or its quota) is full.
    Full,
    /// The data directory is read-only.
    ReadOnly,
    /// Anything else: an I/O error, a backend that does not answer.
    Unavailable,
}

impl StoreFault {
    /// The value of the `storage` (or `cause`) field of the client's answer.
    pub fn as_str(self) -> &'static str {
        match self {
            StoreFault::Full => "full",
            StoreFault::ReadOnly => "read_only",
            StoreFault::Unavailable => "unavailable",
        }
    }
}

/// Persistence failed; the request should be retried later (HTTP 503/507, never a 202 and never
/// a 500). [`StoreError::to_rejection`] is the one place that says so to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("storage {}: {message}", fault.as_str())]
pub struct StoreError {
    pub fault: StoreFault,
    /// The write may have been committed after all (an I/O error inside the commit): the client
    /// is told "outcome unknown, retry with the same nonce", never "not stored".
    pub outcome_unknown: bool,
    pub message: String,
}

impl StoreError {
    /// An unavailable store (definitely nothing written).
    pub fn new(message: impl Into<String>) -> Self {
        StoreError { fault: StoreFault::Unavailable, outcome_unknown: false, message: message.into() }
    }

    /// A failure of a given kind; `outcome_unknown` when it may have been written after all.
    pub fn with_fault(fault: StoreFault, outcome_unknown: bool, message: impl Into<String>) -> Self {
        StoreError { fault, outcome_unknown, message: message.into() }
    }

    /// The client's answer (docs/protocol.md §6.4): storage trouble is temporary (`451 4.3.0`, so a
    /// sending server retries instead of bouncing) and says what it is in a stable `storage`
    /// field: `507` `"full"`, `503` `"read_only"` or `"unavailable"` — all meaning *not stored* —
    /// or `503` `"outcome_unknown"` with a `cause`: the disk failed inside the commit, so it may
    /// be stored after all; a retry with the same nonce and content is safe (an exact repeat is
    /// answered 202 and stored once).
    pub fn to_rejection(&self) -> crate::Rejection {
        use crate::ErrorCode;
        if self.outcome_unknown {
            let error = "The server's disk failed while storing this; it may or may not be stored. \
                         Retry later with the same nonce and content: an exact repeat is stored once";
            return crate::Rejection::new(ErrorCode::Unavailable, error)
                .with("storage", "outcome_unknown")
                .with("cause", self.fault.as_str());
        }
        let (code, error) = match self.fault {
            StoreFault::Full => (ErrorCode::StorageFull, "Insufficient storage on the server, retry later"),
            StoreFault::ReadOnly => (ErrorCode::Unavailable, "The server's storage is read-only, retry later"),
            StoreFault::Unavailable => (ErrorCode::Unavailable, "Storage unavailable, retry later"),
        };
        crate::Rejection::new(code, error).with("storage", self.fault.as_str())
    }
}

impl From<StoreError> for crate::Rejection {
    fn from(e: StoreError) -> Self {
        e.to_rejection()
    }
}

/// What a receiving server remembers of accepted remote transfers, for the whole retry horizon
/// (docs/design.md §3): the content hash of the message accepted under `(sender domain, nonce)`.
/// Recording happens in the home's own transaction, together with storing the message.
#[allow(async_fn_in_trait)]
pub trait DedupStore {
    async fn seen(&self, sender_domain: &str, nonce: &str) -> Result<Option<ContentHash>, StoreError>;
}

/// An in-memory dedup store (tests; single-process homes that keep no state).
#[derive(Debug, Default)]
pub struct MemoryDedup {
    entries: std::sync::Mutex<HashMap<(String, String), ContentHash>>,
}

impl MemoryDedup {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records an accepted message.
    pub fn record(&self, sender_domain: &str, nonce: &str, hash: ContentHash) {
        if let Ok(mut m) = self.entries.lock() {
            m.insert((sender_domain.to_owned(), nonce.to_owned()), hash);
        }
    }
}

impl DedupStore for MemoryDedup {
    async fn seen(&self, sender_domain: &str, nonce: &str) -> Result<Option<ContentHash>, StoreError> {
        let m = self.entries.lock().map_err(|_| StoreError::new("dedup table poisoned"))?;
        Ok(m.get(&(sender_domain.to_owned(), nonce.to_owned())).copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::executor::block_on;

    #[test]
    fn static_resolver_normalises_names_and_fails_on_request() {
        let mut r = StaticResolver::new();
        r.add_txt("ATS._atp.Example.COM.", "v=atp1 allow=all").fail("broken.test");
        assert_eq!(block_on(r.txt("ats._atp.example.com")).unwrap(), vec!["v=atp1 allow=all"]);
        assert!(block_on(r.txt("nothing.test")).unwrap().is_empty());
        assert!(block_on(r.txt("broken.test")).is_err());
        assert!(block_on(r.ip_addrs("broken.test.")).is_err());
    }

    #[test]
    fn memory_dedup_remembers_per_sender_domain() {
        let d = MemoryDedup::new();
        d.record("alpha.test", "n1", [7; 32]);
        assert_eq!(block_on(d.seen("alpha.test", "n1")).unwrap(), Some([7; 32]));
        assert_eq!(block_on(d.seen("beta.test", "n1")).unwrap(), None);
    }

    #[test]
    fn storage_failures_say_what_they_are() {
        let r = StoreError::with_fault(StoreFault::Full, false, "ENOSPC").to_rejection();
        assert_eq!((r.status(), r.code.as_str(), r.extra["storage"].as_str()), (507, "451 4.3.0", Some("full")));
        let r = StoreError::with_fault(StoreFault::ReadOnly, false, "EROFS").to_rejection();
        assert_eq!((r.status(), r.extra["storage"].as_str()), (503, Some("read_only")));
        let r = StoreError::new("gone").to_rejection();
        assert_eq!((r.status(), r.extra["storage"].as_str()), (503, Some("unavailable")));
        let r = StoreError::with_fault(StoreFault::ReadOnly, true, "fsync").to_rejection();
        assert_eq!(
            (r.status(), r.extra["storage"].as_str(), r.extra["cause"].as_str()),
            (503, Some("outcome_unknown"), Some("read_only"))
        );
    }

    #[test]
    fn fixed_clock() {
        assert_eq!(FixedClock(42).now(), 42);
    }
}
