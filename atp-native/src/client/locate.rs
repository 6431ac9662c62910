//! Where the server of `--server example.com` is: a domain without a port is looked up the way
//! servers find their peers (README "Delivery between servers"; docs/protocol.md §5, §8.9), through
//! the resolver the servers of the same home use ([`ServerResolver::for_home`]):
//!
//! 1. the peer overrides (`local_mode` with `peers_file` / `dns_override_file` in `config.toml`);
//! 2. the local registry: a server of this machine publishes its loopback endpoint and the SHA-256
//!    of its certificate, which is then pinned ([`crate::registry`]);
//! 3. DNS: SVCB `_atp`, `_agent`, SRV `_atp._tcp` ([`discover`]);
//! 4. none of these: the domain itself on port 7443, as the reference connects.
//!
//! A domain whose local server is registered but not running, or whose DNS lookup fails, is an
//! error rather than a guess.

use atp_wasm::client::ServerUrl;
use atp_wasm::records::svcb::{discover, DiscoveryError, Endpoint};

use crate::http::CertPin;
use crate::resolver::ServerResolver;

/// Who said where the server is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `--server` named it (an address with a port, an IP address, `http://`).
    Address,
    /// The peer overrides.
    Overrides,
    /// The local registry (the certificate is pinned).
    Registry,
    /// DNS discovery.
    Dns,
    /// Nothing: the domain on the default port.
    DefaultPort,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Address => "address",
            Source::Overrides => "peer overrides",
            Source::Registry => "local registry",
            Source::Dns => "DNS",
            Source::DefaultPort => "default port",
        }
    }
}

/// Where to connect, and the certificate to pin if the source published one.
#[derive(Debug, Clone)]
pub struct Located {
    pub endpoint: ServerUrl,
    pub source: Source,
    pub pin: Option<CertPin>,
}

impl Located {
    /// The address as given.
    pub fn given(server: &ServerUrl) -> Self {
        Located { endpoint: server.clone(), source: Source::Address, pin: None }
    }

    fn found(endpoints: Vec<Endpoint>, source: Source, server: &ServerUrl) -> Self {
        let endpoint = match endpoints.first() {
            Some(e) => ServerUrl::https(&e.host, e.port),
            None => server.clone(),
        };
        Located { endpoint, source, pin: None }
    }

    /// `https://host:port` for an address; `example.com (https://127.0.0.1:7443 from the local
    /// registry)` for a domain that was looked up.
    pub fn label(&self, server: &ServerUrl) -> String {
        match self.source {
            Source::Address | Source::DefaultPort => self.endpoint.base(),
            source => format!("{} ({} from the {})", server.host, self.endpoint.base(), source.as_str()),
        }
    }
}

/// Discovery failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot find the server of {domain}: {source}; give its address as host:port")]
pub struct LookupError {
    domain: String,
    source: DiscoveryError,
}

/// Looks up the server of `server` (a bare domain, [`ServerUrl::is_bare_domain`]).
pub async fn locate(server: &ServerUrl, resolver: &ServerResolver) -> Result<Located, LookupError> {
    let domain = server.host.as_str();
    let failed = |source| LookupError { domain: domain.to_owned(), source };
    if let Some(overrides) = &resolver.overrides {
        match discover(overrides, domain).await {
            Ok(endpoints) => return Ok(Located::found(endpoints, Source::Overrides, server)),
            Err(DiscoveryError::NotFound { .. }) => {}
            Err(e) => return Err(failed(e)),
        }
    }
    if let Some(entry) = resolver.registry.as_ref().and_then(|r| r.get(domain)) {
        return Ok(Located {
            endpoint: ServerUrl::https(&entry.host.to_string(), entry.port),
            source: Source::Registry,
            pin: entry.cert_sha256.as_deref().and_then(CertPin::from_hex),
        });
    }
    // The whole chain again: a registered server that stopped is an error here ("not running").
    match discover(resolver, domain).await {
        Ok(endpoints) => Ok(Located::found(endpoints, Source::Dns, server)),
        Err(DiscoveryError::NotFound { .. }) => Ok(Located { source: Source::DefaultPort, ..Located::given(server) }),
        Err(e) => Err(failed(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{Entry, Registry};
    use atp_wasm::env::StaticResolver;
    use atp_wasm::records::svcb::SvcbRecord;

    fn block<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
    }

    fn url(s: &str) -> ServerUrl {
        ServerUrl::parse(s).unwrap()
    }

    #[test]
    fn overrides_then_registry_then_the_default_port() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::new(dir.path().join("registry"));
        for (domain, pin) in [("alpha.test", Some("ab".repeat(32))), ("both.test", None)] {
            let mut e = Entry::for_listener(domain, "127.0.0.1:17601".parse().unwrap(), Default::default()).unwrap();
            e.cert_sha256 = pin;
            registry.publish(&e).unwrap();
        }
        let mut stopped = Entry::for_listener("stopped.test", "[::1]:1".parse().unwrap(), Default::default()).unwrap();
        stopped.pid = u32::MAX - 1;
        registry.publish(&stopped).unwrap();
        let mut overrides = StaticResolver::new();
        overrides.add_svcb("_atp.both.test", SvcbRecord::service(1, "peer.both.test", 9443));
        let r = ServerResolver { overrides: Some(overrides), registry: Some(registry), dns: None };

        let l = block(locate(&url("alpha.test"), &r)).unwrap();
        assert_eq!((l.source, l.endpoint.base()), (Source::Registry, "https://127.0.0.1:17601".to_owned()));
        assert_eq!(l.pin, CertPin::from_hex(&"ab".repeat(32)));
        assert_eq!(l.label(&url("alpha.test")), "alpha.test (https://127.0.0.1:17601 from the local registry)");

        let l = block(locate(&url("both.test"), &r)).unwrap();
        assert_eq!((l.source, l.endpoint.base()), (Source::Overrides, "https://peer.both.test:9443".to_owned()));
        assert!(l.pin.is_none());

        let l = block(locate(&url("nowhere.test"), &r)).unwrap();
        assert_eq!((l.source, l.endpoint.base()), (Source::DefaultPort, "https://nowhere.test:7443".to_owned()));
        assert_eq!(l.label(&url("nowhere.test")), "https://nowhere.test:7443");

        let e = block(locate(&url("stopped.test"), &r)).unwrap_err().to_string();
        assert!(e.starts_with("cannot find the server of stopped.test: ") && e.contains("not running"), "{e}");
    }
}
