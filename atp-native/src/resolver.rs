//! DNS for the server: the core's [`Resolver`] trait (design.md §1) implemented over the local
//! discovery overrides of the reference (protocol.md §8.9): `peers.toml` (quoted domain tables with
//! `host`, `port`, `alpn`, `capabilities`, `ip_addresses`) and `dns_override.toml` (quoted name tables
//! with `record`), read once at start when `local_mode = true`.
//!
//! [`ServerResolver`] is the one type the server holds. Today it answers from the override tables
//! only (names they do not list have no records: ATS NEUTRAL, ATK "key not found"); real DNS
//! (hickory) will become a second variant that the overrides fall back to, as the reference's
//! `CompositeResolver` does.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use atp_wasm::env::{DnsError, Resolver, StaticResolver};
use atp_wasm::records::svcb::{SrvRecord, SvcbRecord};
use serde::Deserialize;

/// A `peers.toml` entry.
#[derive(Debug, Deserialize)]
struct Peer {
    host: String,
    port: Option<u16>,
    alpn: Option<String>,
    #[serde(default)]
    ip_addresses: Vec<String>,
}

/// A `dns_override.toml` entry.
#[derive(Debug, Deserialize)]
struct Override {
    record: String,
}

/// An override file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum OverrideError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
}

fn read_table<T: serde::de::DeserializeOwned>(path: &Path) -> Result<BTreeMap<String, T>, OverrideError> {
    let err = |message: String| OverrideError::File { path: path.to_owned(), message };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    toml::from_str(&text).map_err(|e| err(e.to_string()))
}

/// Loads the two override files (either may be absent) into an in-memory resolver.
pub fn load_overrides(peers: Option<&Path>, dns: Option<&Path>) -> Result<StaticResolver, OverrideError> {
    let mut r = StaticResolver::new();
    if let Some(p) = peers {
        for (domain, peer) in read_table::<Peer>(p)? {
            let mut svcb = SvcbRecord::service(1, &peer.host, peer.port.unwrap_or(atp_wasm::DEFAULT_PORT));
            svcb.alpn = vec![peer.alpn.unwrap_or_else(|| atp_wasm::ALPN_ATP.into())];
            r.add_svcb(&format!("_atp.{domain}"), svcb);
            for ip in peer.ip_addresses {
                let parsed: IpAddr = ip.parse().map_err(|_| OverrideError::File {
                    path: p.to_owned(),
                    message: format!("[\"{domain}\"] ip_addresses: {ip:?} is not an IP address"),
                })?;
                r.add_ip(&domain, parsed);
            }
        }
    }
    if let Some(p) = dns {
        for (name, o) in read_table::<Override>(p)? {
            r.add_txt(&name, &o.record);
        }
    }
    Ok(r)
}

/// The resolver the server uses (see the module documentation).
#[derive(Debug, Clone)]
pub enum ServerResolver {
    /// The override tables only (`local_mode`), or nothing at all.
    Local(StaticResolver),
}

impl ServerResolver {
    /// The resolver for a configuration: the overrides when `local_mode` is on, else empty tables.
    pub fn from_settings(s: &crate::config::Settings) -> Result<Self, OverrideError> {
        if s.local_mode {
            Ok(ServerResolver::Local(load_overrides(s.peers_file.as_deref(), s.dns_override_file.as_deref())?))
        } else {
            Ok(ServerResolver::Local(StaticResolver::new()))
        }
    }
}

impl Resolver for ServerResolver {
    async fn txt(&self, name: &str) -> Result<Vec<String>, DnsError> {
        match self {
            ServerResolver::Local(r) => r.txt(name).await,
        }
    }
    async fn svcb(&self, name: &str) -> Result<Vec<SvcbRecord>, DnsError> {
        match self {
            ServerResolver::Local(r) => r.svcb(name).await,
        }
    }
    async fn srv(&self, name: &str) -> Result<Vec<SrvRecord>, DnsError> {
        match self {
            ServerResolver::Local(r) => r.srv(name).await,
        }
    }
    async fn ip_addrs(&self, name: &str) -> Result<Vec<IpAddr>, DnsError> {
        match self {
            ServerResolver::Local(r) => r.ip_addrs(name).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
    }

    #[test]
    fn reads_the_reference_formats() {
        let dir = tempfile::tempdir().unwrap();
        let peers = dir.path().join("peers.toml");
        let dns = dir.path().join("dns_override.toml");
        std::fs::write(
            &peers,
            "[\"beta.test\"]\nhost = \"127.0.0.1\"\nport = 17602\nip_addresses = [\"127.0.0.1\", \"::1\"]\n\
             [\"gamma.test\"]\nhost = \"gamma.example\"\n",
        )
        .unwrap();
        std::fs::write(&dns, "[\"ats._atp.beta.test\"]\nrecord = \"v=atp1 allow=all\"\n").unwrap();
        let r = ServerResolver::Local(load_overrides(Some(&peers), Some(&dns)).unwrap());
        assert_eq!(block(r.txt("ATS._atp.beta.test.")).unwrap(), vec!["v=atp1 allow=all"]);
        assert!(block(r.txt("ats._atp.gamma.test")).unwrap().is_empty());
        let svcb = block(r.svcb("_atp.beta.test")).unwrap();
        assert_eq!((svcb[0].target.as_str(), svcb[0].port), ("127.0.0.1", Some(17602)));
        assert_eq!(svcb[0].alpn, vec!["atp/1"]);
        assert_eq!(block(r.svcb("_atp.gamma.test")).unwrap()[0].port, Some(7443));
        assert_eq!(block(r.ip_addrs("beta.test")).unwrap().len(), 2);
    }

    #[test]
    fn bad_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.toml");
        std::fs::write(&p, "[x\n").unwrap();
        assert!(load_overrides(None, Some(&p)).is_err());
        std::fs::write(&p, "[\"a.test\"]\nhost = \"h\"\nip_addresses = [\"nope\"]\n").unwrap();
        assert!(load_overrides(Some(&p), None).is_err());
        assert!(load_overrides(Some(&dir.path().join("missing.toml")), None).is_err());
    }
}
