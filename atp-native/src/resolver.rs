//! DNS for the server: the core's [`Resolver`] trait (docs/design.md §1) implemented over the local
//! discovery overrides of the reference (docs/protocol.md §8.9): `peers.toml` (quoted domain tables with
//! `host`, `port`, `alpn`, `capabilities`, `ip_addresses`) and `dns_override.toml` (quoted name tables
//! with `record`), read once at start when `local_mode = true`.
//!
//! [`ServerResolver`] is the one type the server holds: overrides, then the local registry of
//! running servers ([`crate::registry`]), then real DNS ([`crate::dns`]).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use atp_wasm::env::{normalize_name, DnsError, Resolver, StaticResolver};
use atp_wasm::records::svcb::{SrvRecord, SvcbRecord};
use serde::Deserialize;

use crate::dns::DnsResolver;
use crate::registry::Registry;

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

/// The resolver the server uses: the explicit overrides first (`local_mode`, docs/protocol.md §8.9),
/// then the local registry of running servers ([`Registry`], loopback only), then real DNS
/// ([`DnsResolver`]). A source that has no records for a name passes the question on, as the
/// reference's `CompositeResolver` does; a DNS failure is returned as such.
#[derive(Debug, Clone, Default)]
pub struct ServerResolver {
    pub overrides: Option<StaticResolver>,
    pub registry: Option<Registry>,
    pub dns: Option<DnsResolver>,
}

/// A name under `_atp` / `.atk._atp` / `ats._atp` that the registry can answer, and its domain.
enum RegistryName<'a> {
    Svcb(&'a str),
    Ats(&'a str),
    Atk(&'a str, &'a str),
}

fn registry_name(name: &str) -> Option<RegistryName<'_>> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if let Some(d) = name.strip_prefix("_atp.") {
        return Some(RegistryName::Svcb(d));
    }
    if let Some(d) = name.strip_prefix("ats._atp.") {
        return Some(RegistryName::Ats(d));
    }
    let (sel, d) = atp_wasm::sign::split_key_id(name)?;
    Some(RegistryName::Atk(sel, d))
}

impl ServerResolver {
    /// The resolver for a configuration (must be called inside a tokio runtime).
    pub fn from_settings(s: &crate::config::Settings) -> Result<Self, ResolverSetupError> {
        let overrides = s.local_mode.then_some((s.peers_file.as_deref(), s.dns_override_file.as_deref()));
        Self::new(overrides, s.local_registry.then(|| s.home.registry_dir()), s.dns_server)
    }

    /// The resolver a client of the servers of `home` uses to find them (`atp --server <domain>`):
    /// what the servers of that home would use, from its `config.toml` (`local_mode` with
    /// `peers_file` / `dns_override_file`, `[delivery] local_registry` and `dns_server`).
    pub fn for_home(home: &crate::home::Home, file: &crate::config::FileConfig) -> Result<Self, ResolverSetupError> {
        let overrides = file.local_mode.then_some((file.peers_file.as_deref(), file.dns_override_file.as_deref()));
        let registry = file.delivery.local_registry.unwrap_or(true).then(|| home.registry_dir());
        Self::new(overrides, registry, file.delivery.dns_server)
    }

    /// Overrides from the two files (when given), the registry in `registry_dir` (when given), and
    /// DNS through `dns_server` or the system's configuration. Must be called inside a tokio runtime.
    pub fn new(
        overrides: Option<(Option<&Path>, Option<&Path>)>,
        registry_dir: Option<PathBuf>,
        dns_server: Option<std::net::SocketAddr>,
    ) -> Result<Self, ResolverSetupError> {
        Ok(ServerResolver {
            overrides: overrides.map(|(peers, dns)| load_overrides(peers, dns)).transpose()?,
            registry: registry_dir.map(Registry::new),
            dns: match DnsResolver::new(dns_server) {
                Ok(d) => Some(d),
                // No usable system configuration (e.g. a container without /etc/resolv.conf): the
                // server still runs, with the overrides and the local registry only.
                Err(e) if dns_server.is_none() => {
                    tracing::warn!(error = %e, "no system DNS configuration: only local discovery works");
                    None
                }
                Err(e) => return Err(e.into()),
            },
        })
    }

    /// True when `domain`'s records come from a local source (an override or the registry), whose
    /// endpoints use self-signed certificates: transfers there skip certificate verification, as
    /// the reference does in `local_mode` (docs/protocol.md §8.9).
    pub async fn is_local_peer(&self, domain: &str) -> bool {
        let name = format!("_atp.{domain}");
        if let Some(o) = &self.overrides {
            if o.svcb(&name).await.is_ok_and(|v| !v.is_empty()) {
                return true;
            }
        }
        self.registry.as_ref().is_some_and(|r| r.get(domain).is_some())
    }

    fn registry_txt(&self, name: &str) -> Option<String> {
        let reg = self.registry.as_ref()?;
        let name = normalize_name(name);
        match registry_name(&name)? {
            RegistryName::Ats(d) => Some(reg.get(d)?.ats),
            RegistryName::Atk(sel, d) => reg.get(d)?.atk.get(sel).cloned(),
            RegistryName::Svcb(_) => None,
        }
    }

    fn registry_svcb(&self, name: &str) -> Option<SvcbRecord> {
        let reg = self.registry.as_ref()?;
        let name = normalize_name(name);
        let RegistryName::Svcb(d) = registry_name(&name)? else { return None };
        let e = reg.get(d)?;
        let mut r = SvcbRecord::service(1, &e.host.to_string(), e.port);
        r.alpn = vec![atp_wasm::ALPN_ATP.into()];
        Some(r)
    }
}

/// The resolver could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ResolverSetupError {
    #[error(transparent)]
    Overrides(#[from] OverrideError),
    #[error(transparent)]
    Dns(#[from] crate::dns::DnsSetupError),
}

/// Asks the overrides, then `local`, then DNS; the first non-empty answer wins.
macro_rules! chain {
    ($self:ident, $method:ident, $name:ident, $local:expr) => {{
        if let Some(o) = &$self.overrides {
            let v = o.$method($name).await?;
            if !v.is_empty() {
                return Ok(v);
            }
        }
        let local: Vec<_> = $local;
        if !local.is_empty() {
            return Ok(local);
        }
        match &$self.dns {
            Some(d) => d.$method($name).await,
            None => Ok(Vec::new()),
        }
    }};
}

impl Resolver for ServerResolver {
    async fn txt(&self, name: &str) -> Result<Vec<String>, DnsError> {
        chain!(self, txt, name, self.registry_txt(name).into_iter().collect())
    }
    async fn svcb(&self, name: &str) -> Result<Vec<SvcbRecord>, DnsError> {
        let found: Vec<SvcbRecord> =
            async { chain!(self, svcb, name, self.registry_svcb(name).into_iter().collect()) }.await?;
        // A local server that published here before and is stopped now: its mail waits (a
        // temporary failure) rather than bouncing for lack of records.
        if found.is_empty() {
            let n = normalize_name(name);
            if let (Some(reg), Some(RegistryName::Svcb(d))) = (&self.registry, registry_name(&n)) {
                if reg.known(d) {
                    return Err(DnsError::new(name, format!("the local server of {d} is not running")));
                }
            }
        }
        Ok(found)
    }
    async fn srv(&self, name: &str) -> Result<Vec<SrvRecord>, DnsError> {
        chain!(self, srv, name, Vec::new())
    }
    async fn ip_addrs(&self, name: &str) -> Result<Vec<IpAddr>, DnsError> {
        let local = self.registry.as_ref().and_then(|r| r.get(name)).map(|e| e.host).into_iter().collect();
        chain!(self, ip_addrs, name, local)
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
        let r =
            ServerResolver { overrides: Some(load_overrides(Some(&peers), Some(&dns)).unwrap()), ..Default::default() };
        assert_eq!(block(r.txt("ATS._atp.beta.test.")).unwrap(), vec!["v=atp1 allow=all"]);
        assert!(block(r.txt("ats._atp.gamma.test")).unwrap().is_empty());
        let svcb = block(r.svcb("_atp.beta.test")).unwrap();
        assert_eq!((svcb[0].target.as_str(), svcb[0].port), ("127.0.0.1", Some(17602)));
        assert_eq!(svcb[0].alpn, vec!["atp/1"]);
        assert_eq!(block(r.svcb("_atp.gamma.test")).unwrap()[0].port, Some(7443));
        assert_eq!(block(r.ip_addrs("beta.test")).unwrap().len(), 2);
    }

    #[test]
    fn overrides_then_registry_then_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::new(dir.path().join("registry"));
        let atk: std::collections::BTreeMap<String, String> =
            [("default".to_string(), "v=atp1 k=ed25519 p=REG".to_string())].into_iter().collect();
        for d in ["alice.local", "both.local"] {
            let e = crate::registry::Entry::for_listener(d, "0.0.0.0:7443".parse().unwrap(), atk.clone()).unwrap();
            registry.publish(&e).unwrap();
        }
        let mut stopped =
            crate::registry::Entry::for_listener("stopped.local", "127.0.0.1:7445".parse().unwrap(), atk).unwrap();
        stopped.pid = u32::MAX - 1;
        registry.publish(&stopped).unwrap();
        let mut o = StaticResolver::new();
        o.add_txt("ats._atp.both.local", "v=atp1 allow=all");
        let r = ServerResolver { overrides: Some(o), registry: Some(registry), dns: None };
        // the registry answers what DNS would: SVCB, ATS, ATK, addresses
        let svcb = block(r.svcb("_atp.alice.local.")).unwrap();
        assert_eq!((svcb[0].target.as_str(), svcb[0].port), ("127.0.0.1", Some(7443)));
        assert_eq!(
            block(r.txt("ats._atp.alice.local")).unwrap(),
            vec!["v=atp1 allow=ip:127.0.0.1 allow=ip:::1 deny=all"]
        );
        assert_eq!(block(r.txt("default.atk._atp.alice.local")).unwrap(), vec!["v=atp1 k=ed25519 p=REG"]);
        assert!(block(r.txt("other.atk._atp.alice.local")).unwrap().is_empty());
        assert_eq!(block(r.ip_addrs("alice.local")).unwrap(), vec![IpAddr::from([127, 0, 0, 1])]);
        // explicit overrides win
        assert_eq!(block(r.txt("ats._atp.both.local")).unwrap(), vec!["v=atp1 allow=all"]);
        // unknown names: no records (and no DNS configured here)
        assert!(block(r.svcb("_atp.bob.local")).unwrap().is_empty());
        // a stopped local server: its mail waits (temporary failure) instead of bouncing
        let e = block(r.svcb("_atp.stopped.local")).unwrap_err();
        assert!(e.reason.contains("not running"), "{e}");
        assert!(block(r.txt("ats._atp.stopped.local")).unwrap().is_empty());
        assert!(block(r.is_local_peer("alice.local")));
        assert!(!block(r.is_local_peer("bob.local")));
        // the registry's ATS record is one the core accepts
        let ats = atp_wasm::records::ats::AtsPolicy::parse("v=atp1 allow=ip:127.0.0.1 allow=ip:::1 deny=all").unwrap();
        assert!(block(ats.evaluate("::1".parse().unwrap(), &r)).to_rejection().is_none());
        assert!(block(ats.evaluate("10.0.0.1".parse().unwrap(), &r)).to_rejection().is_some());
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
