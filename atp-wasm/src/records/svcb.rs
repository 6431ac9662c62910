//! SVCB discovery records (protocol.md §5.1, RFC 9460).
//!
//! CONTRACT (filled in by the records work; keep these items):

use std::net::{Ipv4Addr, Ipv6Addr};

/// One SVCB record. `priority == 0` is AliasMode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SvcbRecord {
    pub priority: u16,
    /// Target name without trailing dot; `"."` (the root) is kept as `"."`.
    pub target: String,
    pub port: Option<u16>,
    pub alpn: Vec<String>,
    pub ipv4hint: Vec<Ipv4Addr>,
    pub ipv6hint: Vec<Ipv6Addr>,
}

/// One SRV record (the last discovery fallback, `_atp._tcp.<domain>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvRecord {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    pub target: String,
}

/// Where to send a transfer: `https://<host>:<port>/.well-known/atp/v1/message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub alpn: Vec<String>,
}
