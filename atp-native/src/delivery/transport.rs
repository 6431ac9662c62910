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

use atp_wasm::records::svcb::Endpoint;

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

/// What the receiving server answered.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    /// The `error` and `error_code` fields of a JSON refusal (docs/protocol.md §6), if any.
    pub error: Option<String>,
    pub error_code: Option<String>,
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

    /// Posts one signed message. `Err` is a failure before any HTTP answer (connect, TLS, timeout).
    pub async fn post(&self, ep: &Endpoint, body: String, verify: bool) -> Result<Answer, String> {
        let host = if ep.host.contains(':') { format!("[{}]", ep.host) } else { ep.host.clone() };
        let url = format!("https://{host}:{}/.well-known/atp/v1/message", ep.port);
        let client = self.http(verify).reqwest();
        let resp = client
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/atp+json")
            .body(body)
            .send()
            .await
            .map_err(|e| describe(&url, &e))?;
        let status = resp.status().as_u16();
        // The body only matters for refusals (bounce text); a 2xx is settled by its status.
        let (error, error_code) = if resp.status().is_success() {
            (None, None)
        } else {
            let v: serde_json::Value = resp.json().await.unwrap_or_default();
            let text = |k: &str| v.get(k).and_then(|x| x.as_str()).map(|s| s.chars().take(500).collect::<String>());
            (text("error").or_else(|| text("detail")), text("error_code"))
        };
        Ok(Answer { status, error, error_code })
    }
}

/// One line for a transport error, with its causes (reqwest's Display hides them).
fn describe(url: &str, e: &reqwest::Error) -> String {
    let mut s = format!("{url}: {e}");
    let mut src = std::error::Error::source(e);
    while let Some(cause) = src {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        src = cause.source();
    }
    s.chars().take(500).collect()
}
