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

/// Most bytes of a receiver's answer read (a refusal's JSON; the rest is dropped).
const MAX_ANSWER: usize = 64 * 1024;

/// The transport as the core's [`HttpTransport`] (what [`atp_wasm::delivery::attempt`] sends
/// through), verifying certificates or not.
pub struct Via<'a> {
    pub transport: &'a Transport,
    pub verify: bool,
}

impl atp_wasm::http::HttpTransport for Via<'_> {
    async fn send(
        &self,
        req: atp_wasm::http::HttpRequest,
    ) -> Result<atp_wasm::http::HttpResponse, atp_wasm::http::HttpError> {
        let client = if self.verify { &self.transport.verified } else { &self.transport.unverified };
        let method = match req.method {
            atp_wasm::http::Method::Get => reqwest::Method::GET,
            atp_wasm::http::Method::Post => reqwest::Method::POST,
        };
        let mut builder = client.request(method, &req.url).body(req.body);
        for (name, value) in &req.headers {
            builder = builder.header(name, value);
        }
        let mut resp = builder.send().await.map_err(|e| atp_wasm::http::HttpError(describe(&req.url, &e)))?;
        let status = resp.status().as_u16();
        let content_type =
            resp.headers().get(reqwest::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let mut body = Vec::new();
        while body.len() < MAX_ANSWER {
            match resp.chunk().await {
                Ok(Some(chunk)) => body.extend_from_slice(&chunk[..chunk.len().min(MAX_ANSWER - body.len())]),
                _ => break,
            }
        }
        Ok(atp_wasm::http::HttpResponse { status, content_type, body })
    }
}
