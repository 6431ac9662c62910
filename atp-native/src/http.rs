//! HTTP for native code (docs/design.md §1): the core's [`HttpTransport`] — with the [`Clock`] and
//! [`Sleep`] that [`atp_wasm::client::Client`] also needs — over reqwest and rustls. One builder
//! ([`client_builder`]) serves the command line and the delivery engine alike: TLS 1.3 only, HTTP/2
//! when the server offers it, timeouts, no redirects, and one of three ways to judge the server's
//! certificate ([`Trust`], in [`verify`]): the Web PKI roots plus extra CAs, a pinned certificate,
//! or no verification. Host names may be resolved through the server's own resolver (overrides,
//! local registry, DNS) instead of the system's.

pub mod verify;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use atp_wasm::env::{Clock, Resolver, SystemClock};
use atp_wasm::http::{HttpError, HttpRequest, HttpResponse, HttpTransport, Method, Sleep};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::resolver::ServerResolver;
pub use verify::{CertPin, Trust};

/// How long one request may take, connection included.
pub const TIMEOUT: Duration = Duration::from_secs(30);
/// How long setting up a TCP + TLS connection may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A transport could not be built.
#[derive(Debug, thiserror::Error)]
pub enum HttpSetupError {
    /// A CA file (`--ca-cert`, `--peer-ca`) cannot be read or holds no PEM certificate.
    #[error("{path}: {reason}")]
    CaFile { path: std::path::PathBuf, reason: String },
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// Why a request got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// No connection was made (refused, unreachable, unknown host): the request was not sent.
    Connect,
    /// The server's TLS certificate was not accepted (untrusted, wrong name, not the pinned one).
    Certificate,
    /// No answer in time; the request may or may not have been processed.
    Timeout,
    /// Anything else (e.g. a connection reset while waiting for the answer).
    Other,
}

/// A request that got no answer: its kind and one line naming the root cause. The core's
/// [`HttpError`] carries only the text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    pub kind: FailureKind,
    pub message: String,
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

/// The reqwest builder every native HTTP client starts from: `trust` decides on certificates,
/// `resolver` (if any) resolves host names.
pub fn client_builder(
    trust: &Trust,
    resolver: Option<&Arc<ServerResolver>>,
) -> Result<reqwest::ClientBuilder, HttpSetupError> {
    let mut b = reqwest::Client::builder()
        .use_preconfigured_tls(verify::client_config(trust)?)
        .timeout(TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT)
        // Below the servers' idle timeout (60 s by default), so a pooled connection is not reused
        // just as the peer closes it.
        .pool_idle_timeout(Duration::from_secs(50))
        .http2_adaptive_window(true)
        .user_agent(concat!("atp/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none());
    if let Some(r) = resolver {
        b = b.dns_resolver(Arc::new(ViaServerResolver(r.clone())));
    }
    Ok(b)
}

/// Most bytes of an answer read.
const MAX_RESPONSE: usize = 16 << 20;

/// The core's [`HttpTransport`] over one reqwest client; cheap to clone (clones share connections).
#[derive(Debug, Clone)]
pub struct NativeHttp {
    client: reqwest::Client,
}

impl NativeHttp {
    pub fn new(trust: &Trust, resolver: Option<&Arc<ServerResolver>>) -> Result<Self, HttpSetupError> {
        Ok(NativeHttp { client: client_builder(trust, resolver)?.build()? })
    }
}

impl NativeHttp {
    /// Sends `r` and returns the response as soon as its head arrived (the body is read by the
    /// caller: the inbox stream, docs/protocol.md §6.5).
    pub async fn open(&self, r: HttpRequest) -> Result<reqwest::Response, Failure> {
        let method = match r.method {
            Method::Get => reqwest::Method::GET,
            Method::Post => reqwest::Method::POST,
        };
        let mut req = self.client.request(method, &r.url);
        for (name, value) in &r.headers {
            req = req.header(name, value);
        }
        if r.method == Method::Post {
            req = req.body(r.body);
        }
        req.send().await.map_err(|e| failure(&e))
    }

    /// Sends `r`; a failure says of what kind it is ([`HttpTransport::send`] keeps only the text).
    pub async fn fetch(&self, r: HttpRequest) -> Result<HttpResponse, Failure> {
        let url = r.url.clone();
        let mut resp = self.open(r).await?;
        let status = resp.status().as_u16();
        let content_type =
            resp.headers().get(reqwest::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
        // Bounded (docs/design.md §5b): an inbox page is at most 8 MiB plus one 1 MiB message.
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| failure(&e))? {
            if body.len() + chunk.len() > MAX_RESPONSE {
                let message = format!("{url}: answer larger than {MAX_RESPONSE} bytes");
                return Err(Failure { kind: FailureKind::Other, message });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(HttpResponse { status, content_type, body })
    }
}

impl HttpTransport for NativeHttp {
    async fn send(&self, r: HttpRequest) -> Result<HttpResponse, HttpError> {
        self.fetch(r).await.map_err(|f| HttpError(f.message))
    }
}

impl Clock for NativeHttp {
    fn now(&self) -> i64 {
        SystemClock.now()
    }
}

impl Sleep for NativeHttp {
    async fn sleep(&self, millis: u32) {
        tokio::time::sleep(Duration::from_millis(millis.into())).await
    }
}

/// The delivery engine's two transports (docs/design.md §3): one verifying certificates (Web PKI
/// roots plus `--peer-ca`), one not (local peers, `--no-verify-peers`), resolving host names
/// through the same [`ServerResolver`].
#[derive(Debug, Clone)]
pub struct PeerTransports {
    verified: NativeHttp,
    unverified: NativeHttp,
}

impl PeerTransports {
    pub fn new(resolver: Arc<ServerResolver>, peer_ca: Option<&Path>) -> Result<Self, HttpSetupError> {
        Ok(PeerTransports {
            verified: NativeHttp::new(&Trust::roots(peer_ca)?, Some(&resolver))?,
            unverified: NativeHttp::new(&Trust::NoVerify, Some(&resolver))?,
        })
    }

    /// The verifying transport, or the one that accepts any certificate.
    pub fn get(&self, verify: bool) -> &NativeHttp {
        if verify {
            &self.verified
        } else {
            &self.unverified
        }
    }
}

/// A reqwest failure: its kind (certificate, timeout, connect) and one line naming the root cause.
pub fn failure(e: &reqwest::Error) -> Failure {
    let (kind, message) = if let Some(reason) = verify::certificate_problem(e) {
        (FailureKind::Certificate, reason)
    } else if e.is_timeout() {
        (FailureKind::Timeout, "timed out".to_owned())
    } else if e.is_connect() {
        (FailureKind::Connect, innermost(e))
    } else {
        (FailureKind::Other, innermost(e))
    };
    Failure { kind, message: one_line(&message) }
}

/// The most specific message of an error chain (its root cause).
pub fn innermost(e: &dyn std::error::Error) -> String {
    let mut last = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        last = s.to_string();
        cur = s.source();
    }
    last
}

/// Joins the lines of `s`, so that an error stays on one line.
pub fn one_line(s: &str) -> String {
    s.split(['\r', '\n']).filter(|l| !l.trim().is_empty()).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_causes() {
        assert_eq!(one_line("a\r\n\nb \n"), "a b ");
        let io = std::io::Error::other("root cause");
        assert_eq!(innermost(&io), "root cause");
    }

    #[tokio::test]
    async fn refused_connections_are_connect_errors() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let http = NativeHttp::new(&Trust::NoVerify, None).unwrap();
        let e = http.fetch(HttpRequest::get(format!("https://127.0.0.1:{port}/"))).await.unwrap_err();
        assert_eq!(e.kind, FailureKind::Connect, "{e}");
        assert!(!e.message.contains('\n'));
        let e = http.send(HttpRequest::get(format!("https://127.0.0.1:{port}/"))).await.unwrap_err();
        assert!(!e.0.is_empty());
        assert!(http.now() > 1_700_000_000);
    }
}
