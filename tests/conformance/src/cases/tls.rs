//! TLS of the server under test (docs/design.md §3, docs/protocol.md §12 item 18): TLS 1.3 only, ALPN
//! `atp/1` (served as HTTP/1.1), and `h2`/`http/1.1` for ordinary HTTPS clients.

use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, SupportedProtocolVersion};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::case;
use crate::kit::{Case, Ctx, Outcome};

pub fn cases() -> Vec<Case> {
    vec![
        case!("tls.v1_3", "design §3", "TLS 1.3 handshake", v1_3),
        case!("tls.v1_2_refused", "design §3 §12.18", "TLS 1.2 handshake refused", v1_2_refused),
        case!("tls.alpn_atp", "design §3 §12.18", "ALPN atp/1 negotiated", alpn_atp),
        case!("tls.alpn_atp_serves_http1", "design §3", "HTTP/1.1 200 over atp/1", alpn_atp_http),
        case!("tls.alpn_http", "design §3", "ALPN h2 or http/1.1", alpn_http),
    ]
}

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// Host and port of the server, or why the TLS cases do not apply.
fn endpoint(cx: &Ctx) -> Result<(String, u16), Outcome> {
    if !cx.cfg.tls_checks {
        let why = if cx.cfg.target == crate::kit::Target::Worker { "--target worker" } else { "--no-tls-checks" };
        return Err(Outcome::na(format!("TLS terminated by the platform ({why})")));
    }
    let url = reqwest::Url::parse(cx.http.base()).map_err(|e| Outcome::fail(e.to_string()))?;
    if url.scheme() != "https" {
        return Err(Outcome::na("plain HTTP target"));
    }
    let host = url.host_str().unwrap_or("localhost").trim_start_matches('[').trim_end_matches(']').to_owned();
    Ok((host, url.port_or_known_default().unwrap_or(443)))
}

async fn connect(
    (host, port): &(String, u16),
    alpn: &[&str],
    versions: &[&'static SupportedProtocolVersion],
) -> Result<Tls, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(atp_testkit::AnyCert::new(provider))
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|a| a.as_bytes().to_vec()).collect();
    let name = ServerName::try_from(host.clone()).map_err(|e| e.to_string())?;
    let tcp = tokio::net::TcpStream::connect((host.as_str(), *port)).await.map_err(|e| e.to_string())?;
    tokio_rustls::TlsConnector::from(Arc::new(cfg)).connect(name, tcp).await.map_err(|e| e.to_string())
}

fn alpn(tls: &Tls) -> Option<String> {
    tls.get_ref().1.alpn_protocol().map(|p| String::from_utf8_lossy(p).into_owned())
}

async fn v1_3(cx: &Ctx) -> Outcome {
    let ep = match endpoint(cx) {
        Ok(e) => e,
        Err(o) => return o,
    };
    match connect(&ep, &["http/1.1"], &[&rustls::version::TLS13]).await {
        Ok(t) => match t.get_ref().1.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => Outcome::pass("TLS 1.3"),
            v => Outcome::fail(format!("{v:?}")),
        },
        Err(e) => Outcome::fail(format!("handshake failed: {e}")),
    }
}

async fn v1_2_refused(cx: &Ctx) -> Outcome {
    let ep = match endpoint(cx) {
        Ok(e) => e,
        Err(o) => return o,
    };
    match connect(&ep, &["http/1.1"], &[&rustls::version::TLS12]).await {
        Ok(_) => Outcome::fail("TLS 1.2 accepted"),
        Err(_) => Outcome::pass("refused"),
    }
}

async fn alpn_atp(cx: &Ctx) -> Outcome {
    let ep = match endpoint(cx) {
        Ok(e) => e,
        Err(o) => return o,
    };
    match connect(&ep, &["atp/1"], &[&rustls::version::TLS13, &rustls::version::TLS12]).await {
        Ok(t) => match alpn(&t) {
            Some(p) if p == "atp/1" => Outcome::pass(p),
            other => Outcome::fail(format!("ALPN {other:?}")),
        },
        Err(e) => Outcome::fail(format!("handshake failed: {e}")),
    }
}

async fn alpn_atp_http(cx: &Ctx) -> Outcome {
    let ep = match endpoint(cx) {
        Ok(e) => e,
        Err(o) => return o,
    };
    let mut t = match connect(&ep, &["atp/1"], &[&rustls::version::TLS13, &rustls::version::TLS12]).await {
        Ok(t) => t,
        Err(e) => return Outcome::fail(format!("handshake failed: {e}")),
    };
    if alpn(&t).as_deref() != Some("atp/1") {
        return Outcome::fail(format!("ALPN {:?}", alpn(&t)));
    }
    let req = format!("GET /.well-known/atp/v1/health HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", ep.0);
    let mut out = Vec::new();
    let io = async {
        t.write_all(req.as_bytes()).await?;
        t.read_to_end(&mut out).await
    };
    match tokio::time::timeout(std::time::Duration::from_secs(10), io).await {
        Ok(Ok(_)) | Ok(Err(_)) if !out.is_empty() => {
            let text = String::from_utf8_lossy(&out);
            let line = text.lines().next().unwrap_or("").to_owned();
            if line.starts_with("HTTP/1.1 200") && text.contains("healthy") {
                Outcome::pass(line)
            } else {
                Outcome::fail(line)
            }
        }
        Ok(r) => Outcome::fail(format!("no answer: {r:?}")),
        Err(_) => Outcome::fail("no answer within 10 s"),
    }
}

async fn alpn_http(cx: &Ctx) -> Outcome {
    let ep = match endpoint(cx) {
        Ok(e) => e,
        Err(o) => return o,
    };
    match connect(&ep, &["h2", "http/1.1"], &[&rustls::version::TLS13, &rustls::version::TLS12]).await {
        Ok(t) => match alpn(&t) {
            Some(p) if p == "h2" || p == "http/1.1" => Outcome::pass(p),
            other => Outcome::fail(format!("ALPN {other:?}")),
        },
        Err(e) => Outcome::fail(format!("handshake failed: {e}")),
    }
}
