//! The outbound HTTP client (docs/protocol.md §8.1, fixed): `POST https://<host>:<port>/.well-known/atp/v1/message`
//! with `Content-Type: application/atp+json`, TLS 1.3 only (rustls), HTTP/2 when the peer offers it
//! (one connection carries many transfers) and HTTP/1.1 otherwise (the reference's uvicorn).
//!
//! Host names are resolved through the server's own resolver (overrides, local registry, DNS), so
//! a peer found in a test zone or a `peers.toml` is reached without the system resolver.
//! Certificates are verified against the Web PKI roots (plus `--peer-ca`), except for local peers
//! and with `--no-verify-peers` (docs/design.md §3).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use atp_wasm::env::Resolver;
use atp_wasm::records::svcb::Endpoint;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::resolver::ServerResolver;

/// How long one transfer may take, connection included.
const TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("peer CA {path}: {message}")]
    PeerCa { path: std::path::PathBuf, message: String },
    #[error("HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// What the receiving server answered.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    /// The `error` and `error_code` fields of a JSON refusal (docs/protocol.md §6), if any.
    pub error: Option<String>,
    pub error_code: Option<String>,
}

/// Host name resolution for reqwest through [`ServerResolver`].
struct ViaServerResolver(Arc<ServerResolver>);

impl Resolve for ViaServerResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let r = self.0.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let ips = r.ip_addrs(&host).await?;
            if ips.is_empty() {
                return Err(format!("{host}: no A/AAAA records").into());
            }
            let addrs: Addrs = Box::new(ips.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}

/// Two clients: one verifying certificates, one not (local peers, `--no-verify-peers`).
pub struct Transport {
    verified: reqwest::Client,
    unverified: reqwest::Client,
}

impl Transport {
    pub fn new(resolver: Arc<ServerResolver>, peer_ca: Option<&Path>) -> Result<Self, TransportError> {
        let builder = || {
            reqwest::Client::builder()
                .use_rustls_tls()
                .min_tls_version(reqwest::tls::Version::TLS_1_3)
                .dns_resolver(Arc::new(ViaServerResolver(resolver.clone())))
                .timeout(TIMEOUT)
                .connect_timeout(CONNECT_TIMEOUT)
                .pool_idle_timeout(Duration::from_secs(60))
                .http2_adaptive_window(true)
                .user_agent(concat!("atp/", env!("CARGO_PKG_VERSION")))
                .redirect(reqwest::redirect::Policy::none())
        };
        let mut verified = builder();
        if let Some(path) = peer_ca {
            let err = |message: String| TransportError::PeerCa { path: path.to_owned(), message };
            let pem = std::fs::read(path).map_err(|e| err(e.to_string()))?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| err(e.to_string()))? {
                verified = verified.add_root_certificate(cert);
            }
        }
        Ok(Transport { verified: verified.build()?, unverified: builder().danger_accept_invalid_certs(true).build()? })
    }

    /// Posts one signed message. `Err` is a failure before any HTTP answer (connect, TLS, timeout).
    pub async fn post(&self, ep: &Endpoint, body: String, verify: bool) -> Result<Answer, String> {
        let host = if ep.host.contains(':') { format!("[{}]", ep.host) } else { ep.host.clone() };
        let url = format!("https://{host}:{}/.well-known/atp/v1/message", ep.port);
        let client = if verify { &self.verified } else { &self.unverified };
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
