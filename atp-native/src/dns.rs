//! Real DNS (docs/protocol.md §5): the core's [`Resolver`] trait over hickory's stub resolver, using the
//! system configuration (`/etc/resolv.conf`, `/etc/hosts`) or one given server (`--dns-server
//! IP:PORT`, UDP with TCP fallback).
//!
//! Answers are cached for their TTL and negative answers (NXDOMAIN, NODATA) for the SOA minimum,
//! both by hickory's cache; a name that does not exist or has no records of the type is an empty
//! answer, and only a failed lookup (timeout, SERVFAIL, refused) is a [`DnsError`], which the
//! pipeline turns into a temporary 451 and the delivery engine into a retry. Names are always
//! queried as absolute names, so the search list of `resolv.conf` never changes what `_atp.<domain>`
//! means.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use atp_wasm::env::{DnsError, Resolver};
use atp_wasm::records::svcb::{SrvRecord, SvcbRecord};
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::NetError;
use hickory_resolver::proto::rr::rdata::svcb::{SvcParamKey, SvcParamValue};
use hickory_resolver::proto::rr::{Name, RData, RecordType};
use hickory_resolver::TokioResolver;

/// How long one query may take before it is retried (then failed).
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);
/// Answers kept in the cache.
const CACHE_SIZE: u64 = 8192;
/// Negative answers are remembered at least this long (a burst of mail for a domain without ATS
/// records then costs one query, not one per message), and at most [`NEGATIVE_MAX_TTL`].
const NEGATIVE_MIN_TTL: Duration = Duration::from_secs(5);
const NEGATIVE_MAX_TTL: Duration = Duration::from_secs(300);

/// The resolver could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("DNS resolver: {0}")]
pub struct DnsSetupError(String);

/// Real DNS through hickory; cheap to clone (clones share the cache).
#[derive(Clone)]
pub struct DnsResolver {
    inner: TokioResolver,
}

impl std::fmt::Debug for DnsResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DnsResolver")
    }
}

fn options(mut o: ResolverOpts) -> ResolverOpts {
    o.timeout = QUERY_TIMEOUT;
    o.attempts = 2;
    o.cache_size = CACHE_SIZE;
    o.negative_min_ttl = Some(NEGATIVE_MIN_TTL);
    o.negative_max_ttl = Some(NEGATIVE_MAX_TTL);
    o.edns0 = true;
    o
}

impl DnsResolver {
    /// `server` given: only that server (UDP, TCP on truncation). Otherwise the system's
    /// configuration. Must be called inside a tokio runtime.
    pub fn new(server: Option<SocketAddr>) -> Result<Self, DnsSetupError> {
        let builder = match server {
            Some(addr) => {
                let mut udp = ConnectionConfig::udp();
                udp.port = addr.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = addr.port();
                let ns = NameServerConfig::new(addr.ip(), true, vec![udp, tcp]);
                let mut b = TokioResolver::builder_with_config(
                    ResolverConfig::from_name_servers(vec![ns]),
                    TokioRuntimeProvider::default(),
                );
                *b.options_mut() = options(ResolverOpts::default());
                b
            }
            None => {
                let mut b = TokioResolver::builder_tokio().map_err(|e| DnsSetupError(e.to_string()))?;
                let o = options(b.options_mut().clone());
                *b.options_mut() = o;
                b
            }
        };
        Ok(DnsResolver { inner: builder.build().map_err(|e| DnsSetupError(e.to_string()))? })
    }

    async fn lookup(&self, name: &str, rtype: RecordType) -> Result<Vec<RData>, DnsError> {
        let mut qname = Name::from_ascii(name).map_err(|e| DnsError::new(name, format!("invalid name: {e}")))?;
        qname.set_fqdn(true);
        match self.inner.lookup(qname, rtype).await {
            Ok(lookup) => Ok(lookup.answers().iter().map(|r| r.data.clone()).collect()),
            Err(e) => absent_or_error(name, e),
        }
    }
}

/// "No such name" and "no records of this type" are empty answers; everything else is a failure.
fn absent_or_error<T>(name: &str, e: NetError) -> Result<Vec<T>, DnsError> {
    if e.is_no_records_found() || e.is_nx_domain() {
        Ok(Vec::new())
    } else {
        Err(DnsError::new(name, e.to_string()))
    }
}

/// An SVCB record as the core models it (RFC 9460 SvcParams `port`, `alpn`, `ipv4hint`, `ipv6hint`;
/// other keys are ignored).
fn svcb_from(r: &hickory_resolver::proto::rr::rdata::SVCB) -> SvcbRecord {
    let target = r.target_name.to_ascii();
    let target = if target == "." { ".".to_owned() } else { target.trim_end_matches('.').to_ascii_lowercase() };
    let mut out = SvcbRecord {
        priority: r.svc_priority,
        target,
        port: None,
        alpn: Vec::new(),
        ipv4hint: Vec::new(),
        ipv6hint: Vec::new(),
    };
    for (key, value) in &r.svc_params {
        match (key, value) {
            (SvcParamKey::Port, SvcParamValue::Port(p)) => out.port = Some(*p),
            (SvcParamKey::Alpn, SvcParamValue::Alpn(a)) => out.alpn = a.0.clone(),
            (SvcParamKey::Ipv4Hint, SvcParamValue::Ipv4Hint(h)) => out.ipv4hint = h.0.iter().map(|a| a.0).collect(),
            (SvcParamKey::Ipv6Hint, SvcParamValue::Ipv6Hint(h)) => out.ipv6hint = h.0.iter().map(|a| a.0).collect(),
            _ => {}
        }
    }
    out
}

impl Resolver for DnsResolver {
    async fn txt(&self, name: &str) -> Result<Vec<String>, DnsError> {
        Ok(self
            .lookup(name, RecordType::TXT)
            .await?
            .into_iter()
            .filter_map(|d| match d {
                RData::TXT(t) => Some(t.txt_data.iter().map(|s| String::from_utf8_lossy(s)).collect::<String>()),
                _ => None,
            })
            .collect())
    }

    async fn svcb(&self, name: &str) -> Result<Vec<SvcbRecord>, DnsError> {
        Ok(self
            .lookup(name, RecordType::SVCB)
            .await?
            .iter()
            .filter_map(|d| match d {
                RData::SVCB(s) => Some(svcb_from(s)),
                _ => None,
            })
            .collect())
    }

    async fn srv(&self, name: &str) -> Result<Vec<SrvRecord>, DnsError> {
        Ok(self
            .lookup(name, RecordType::SRV)
            .await?
            .into_iter()
            .filter_map(|d| match d {
                RData::SRV(s) => Some(SrvRecord {
                    priority: s.priority,
                    weight: s.weight,
                    port: s.port,
                    target: s.target.to_ascii(),
                }),
                _ => None,
            })
            .collect())
    }

    async fn ip_addrs(&self, name: &str) -> Result<Vec<IpAddr>, DnsError> {
        if let Ok(ip) = name.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        let mut qname = Name::from_ascii(name).map_err(|e| DnsError::new(name, format!("invalid name: {e}")))?;
        qname.set_fqdn(true);
        match self.inner.lookup_ip(qname).await {
            Ok(ips) => Ok(ips.iter().collect()),
            Err(e) => absent_or_error(name, e),
        }
    }
}
