//! Zero-configuration local discovery: the per-user registry of running servers.
//!
//! The seed README's walkthrough runs two servers in one home, "no DNS needed":
//! `atp server start --domain alice.local --port 7443` and `--domain bob.local --port 7444`, then
//! sends from `agent@alice.local` to `agent@bob.local`. The reference cannot do this (its servers
//! would share one database, docs/protocol.md §8.6, and it has no discovery without DNS or override
//! files). atp keeps state per domain, and every server publishes what DNS would say about its
//! domain in `<home>/registry/<domain>.json`: its loopback endpoint (SVCB `_atp`), its ATS policy
//! (loopback addresses only) and its ATK record, with the SHA-256 of its TLS certificate, which the
//! command line pins when `--server` names the domain ([`crate::client::locate`]). Resolution
//! consults the registry after the explicit overrides and before DNS
//! ([`crate::resolver::ServerResolver`]).
//!
//! Safety rails: only loopback endpoints are published or believed, an entry whose process is gone
//! is not used for answers, and the directory is the user's own. The entry of a stopped server
//! stays, so that mail for its domain waits for it (a temporary failure) instead of bouncing.

use std::collections::BTreeMap;
use std::fs;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// How long a read entry is trusted before the file is read again.
const FRESH: Duration = Duration::from_secs(1);

/// What one running server publishes about its domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub domain: String,
    /// A loopback address.
    pub host: IpAddr,
    pub port: u16,
    /// The publishing server's process id (liveness check).
    pub pid: u32,
    /// The ATS record text (`v=atp1 allow=ip:127.0.0.1 allow=ip:::1 deny=all`).
    pub ats: String,
    /// ATK record text per selector.
    pub atk: BTreeMap<String, String>,
    /// SHA-256 of the DER of the server's TLS certificate (64 hex digits): clients that find the
    /// server here (`atp --server <domain>`) pin it instead of verifying a self-signed certificate
    /// against roots it cannot chain to. Absent in entries of older servers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_sha256: Option<String>,
}

impl Entry {
    /// The entry of a server of `domain` listening on `listen` (an unspecified address is reached
    /// over IPv4 loopback), or `None` when it listens on a non-loopback address only.
    pub fn for_listener(domain: &str, listen: SocketAddr, atk: BTreeMap<String, String>) -> Option<Entry> {
        let ip = listen.ip().to_canonical();
        let host = if ip.is_unspecified() {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else if ip.is_loopback() {
            ip
        } else {
            return None;
        };
        Some(Entry {
            domain: domain.to_owned(),
            host,
            port: listen.port(),
            pid: std::process::id(),
            ats: "v=atp1 allow=ip:127.0.0.1 allow=ip:::1 deny=all".into(),
            atk,
            cert_sha256: None,
        })
    }
}

/// Entries read recently (domain → when read, what was found).
type ReadCache = Arc<Mutex<BTreeMap<String, (Instant, Option<Entry>)>>>;

/// The registry directory, with a short-lived read cache.
#[derive(Debug, Clone)]
pub struct Registry {
    dir: PathBuf,
    cache: ReadCache,
}

/// Whether process `pid` is running (it may belong to another user: EPERM still means alive).
fn alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else { return false };
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill with signal 0 only checks whether the process exists; it sends nothing.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

impl Registry {
    pub fn new(dir: PathBuf) -> Self {
        Registry { dir, cache: Arc::default() }
    }

    fn path(&self, domain: &str) -> PathBuf {
        self.dir.join(format!("{domain}.json"))
    }

    /// Publishes `entry` (atomically: a temporary file renamed over the old one).
    pub fn publish(&self, entry: &Entry) -> std::io::Result<()> {
        fs::create_dir_all(&self.dir)?;
        let tmp = self.dir.join(format!(".{}.{}.tmp", entry.domain, entry.pid));
        fs::write(&tmp, serde_json::to_vec_pretty(entry).map_err(std::io::Error::other)?)?;
        fs::rename(&tmp, self.path(&entry.domain))
    }

    /// Whether a server of `domain` ever published here (running or not): a stopped local server
    /// is a temporary failure for its senders, not a reason to bounce.
    pub fn known(&self, domain: &str) -> bool {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        read(&self.path(&domain)).is_some_and(|e| e.domain == domain && e.host.is_loopback())
    }

    /// The live entry of `domain`, if any.
    pub fn get(&self, domain: &str) -> Option<Entry> {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        if let Ok(cache) = self.cache.lock() {
            if let Some((at, e)) = cache.get(&domain) {
                if at.elapsed() < FRESH {
                    return e.clone();
                }
            }
        }
        let entry = read(&self.path(&domain))
            .filter(|e| e.domain == domain && e.host.is_loopback() && e.port != 0 && alive(e.pid));
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() > 1024 {
                cache.clear();
            }
            cache.insert(domain, (Instant::now(), entry.clone()));
        }
        entry
    }
}

fn read(path: &Path) -> Option<Entry> {
    serde_json::from_slice(&fs::read(path).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_get_withdraw_and_liveness() {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::new(dir.path().join("registry"));
        let atk = BTreeMap::from([("default".to_string(), "v=atp1 k=ed25519 p=AAAA".to_string())]);
        let e = Entry::for_listener("alice.local", "0.0.0.0:7443".parse().unwrap(), atk.clone()).unwrap();
        assert_eq!(e.host, IpAddr::V4(Ipv4Addr::LOCALHOST));
        reg.publish(&e).unwrap();
        assert_eq!(Registry::new(dir.path().join("registry")).get("Alice.Local."), Some(e.clone()));
        assert_eq!(reg.get("bob.local"), None);

        // a dead publisher is ignored
        let mut dead = e.clone();
        dead.domain = "dead.local".into();
        dead.pid = u32::MAX - 1;
        reg.publish(&dead).unwrap();
        assert_eq!(reg.get("dead.local"), None);

        // a non-loopback host is never believed, nor published
        let mut far = e.clone();
        far.domain = "far.local".into();
        far.host = "192.0.2.1".parse().unwrap();
        reg.publish(&far).unwrap();
        assert_eq!(reg.get("far.local"), None);
        assert!(Entry::for_listener("x.test", "192.0.2.1:7443".parse().unwrap(), atk).is_none());

        assert!(reg.known("dead.local") && reg.known("alice.local") && !reg.known("bob.local"));

        // the certificate's fingerprint is kept; entries without one (older servers) still read
        let mut pinned = e.clone();
        pinned.domain = "pinned.local".into();
        pinned.cert_sha256 = Some("ab".repeat(32));
        reg.publish(&pinned).unwrap();
        assert_eq!(reg.get("pinned.local").unwrap().cert_sha256, pinned.cert_sha256);
        let text = std::fs::read_to_string(dir.path().join("registry/alice.local.json")).unwrap();
        assert!(!text.contains("cert_sha256"), "{text}");
    }
}
