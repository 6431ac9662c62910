//! The outbound HTTP client (docs/protocol.md §8.1, fixed): `POST https://<host>:<port>/.well-known/atp/v1/message`
//! with `Content-Type: application/atp+json`, TLS 1.3 only (rustls), HTTP/2 when the peer offers it
//! (one connection carries many transfers) and HTTP/1.1 otherwise (the reference's uvicorn).
//!
//! Host names are resolved through the server's own resolver (overrides, local registry, DNS), so
//! a peer found in a test zone or a `peers.toml` is reached without the system resolver.
//! Certificates are verified against the Web PKI roots (plus `--peer-ca`), except for local peers
//! and with `--no-verify-peers` (docs/design.md §3). The clients come from [`crate::http`], like
//! the command line's.

use std::path::Path;
use std::sync::Arc;

use crate::http::{HttpSetupError, NativeHttp, PeerTransports};
use crate::resolver::ServerResolver;

/// The client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("peer CA {path}: {message}")]
    PeerCa { path: std::path::PathBuf, message: String },
    #[error(transparent)]
    Http(HttpSetupError),
}

impl From<HttpSetupError> for TransportError {
    fn from(e: HttpSetupError) -> Self {
        match e {
            HttpSetupError::CaFile { path, reason } => TransportError::PeerCa { path, message: reason },
            other => TransportError::Http(other),
        }
    }
}

/// Two clients ([`PeerTransports`], built by [`crate::http`]): one verifying certificates, one not
/// (local peers, `--no-verify-peers`); both resolve host names through the server's resolver.
pub struct Transport {
    peers: PeerTransports,
}

impl Transport {
    pub fn new(resolver: Arc<ServerResolver>, peer_ca: Option<&Path>) -> Result<Self, TransportError> {
        Ok(Transport { peers: PeerTransports::new(resolver, peer_ca)? })
    }

    /// The core's HTTP transport that verifies peer certificates (`verify`) or does not.
    pub fn http(&self, verify: bool) -> &NativeHttp {
        self.peers.get(verify)
    }
}
