//! The server as a sending server sees it (docs/design.md §3): a TCP connection to the endpoint, a
//! TLS 1.3 handshake offering ALPN `atp/1`, the certificate chain it presents, and the `Date` of
//! its answer to `GET /.well-known/atp/v1/health`. The handshake accepts any certificate so that
//! every other check still runs; the chain and the name are judged afterwards ([`verify_chain`],
//! [`verify_name`]) against the Web PKI roots plus `--ca-cert`, as delivery does.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::client::danger::ServerCertVerifier;
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, RootCertStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::http::verify::{client_config, Trust};

/// Connecting, the handshake and the answer each get this long.
const TIMEOUT: Duration = Duration::from_secs(10);

/// What the endpoint showed.
#[derive(Debug)]
pub struct Probe {
    /// The negotiated ALPN protocol.
    pub alpn: Option<Vec<u8>>,
    /// The negotiated protocol version.
    pub version: Option<rustls::ProtocolVersion>,
    /// The presented chain, end-entity first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The status of `GET health`, if it answered.
    pub status: Option<u16>,
    /// Server `Date` minus the local time halfway through the request, in seconds.
    pub skew: Option<i64>,
}

/// Why the endpoint could not be probed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("cannot connect to {addr}: {reason}")]
    Connect { addr: SocketAddr, reason: String },
    #[error("no TLS 1.3 handshake with {addr}: {reason}")]
    Handshake { addr: SocketAddr, reason: String },
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn server_name(host: &str) -> Option<ServerName<'static>> {
    ServerName::try_from(host.trim_start_matches('[').trim_end_matches(']').to_owned()).ok()
}

fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// Connects to `addr`, shakes hands as `host` (SNI), and asks for `health`.
pub async fn probe(addr: SocketAddr, host: &str) -> Result<Probe, ProbeError> {
    let tcp = tokio::time::timeout(TIMEOUT, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| ProbeError::Connect { addr, reason: "timed out".into() })?
        .map_err(|e| ProbeError::Connect { addr, reason: e.to_string() })?;
    // Any certificate (judged afterwards), handshake signatures still checked: the client
    // configuration of `Trust::NoVerify`, offering ALPN `atp/1` instead.
    let mut cfg = client_config(&Trust::NoVerify).map_err(|e| ProbeError::Handshake { addr, reason: e.to_string() })?;
    cfg.alpn_protocols = vec![atp_wasm::ALPN_ATP.as_bytes().to_vec()];
    let name = server_name(host)
        .ok_or_else(|| ProbeError::Handshake { addr, reason: format!("{host:?} is not a server name") })?;
    let mut tls = tokio::time::timeout(TIMEOUT, tokio_rustls::TlsConnector::from(Arc::new(cfg)).connect(name, tcp))
        .await
        .map_err(|_| ProbeError::Handshake { addr, reason: "timed out".into() })?
        .map_err(|e| ProbeError::Handshake { addr, reason: e.to_string() })?;
    let conn = tls.get_ref().1;
    let mut probe = Probe {
        alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
        version: conn.protocol_version(),
        chain: conn.peer_certificates().unwrap_or_default().iter().map(|c| c.clone().into_owned()).collect(),
        status: None,
        skew: None,
    };
    let request = format!(
        "GET /.well-known/atp/v1/health HTTP/1.1\r\nHost: {host}\r\nUser-Agent: atp-doctor\r\nConnection: close\r\n\r\n"
    );
    let before = now();
    let mut answer = Vec::new();
    let exchange = async {
        tls.write_all(request.as_bytes()).await?;
        let mut chunk = [0u8; 4096];
        // The head is enough; a server that keeps the connection open does not hold us up.
        while !answer.windows(4).any(|w| w == b"\r\n\r\n") && answer.len() < 65_536 {
            let n = tls.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&chunk[..n]);
        }
        Ok::<_, std::io::Error>(())
    };
    if let Ok(Ok(())) = tokio::time::timeout(TIMEOUT, exchange).await {
        let local = (before + now()) / 2.0;
        let head = String::from_utf8_lossy(&answer);
        probe.status = head.split(' ').nth(1).and_then(|s| s.parse().ok());
        probe.skew = head
            .lines()
            .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("date")).map(|(_, v)| v.trim()))
            .and_then(http_date)
            .map(|server| server - local.round() as i64);
    }
    Ok(probe)
}

/// An IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`, RFC 9110 §5.6.7) as Unix seconds.
pub fn http_date(s: &str) -> Option<i64> {
    let f: Vec<&str> = s.split_whitespace().collect();
    let [_, day, month, year, time, "GMT"] = f.as_slice() else { return None };
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let month = MONTHS.iter().position(|m| m == month)? as i64 + 1;
    let t: Vec<i64> = time.split(':').map(|p| p.parse().ok()).collect::<Option<_>>()?;
    let [h, m, sec] = t.as_slice() else { return None };
    let days = super::x509::days_from_civil(year.parse().ok()?, month, day.parse().ok()?);
    Some(days * 86_400 + h * 3600 + m * 60 + sec)
}

/// The Web PKI roots, plus the certificates of `extra` (`--ca-cert`).
pub fn roots(extra: Option<&Path>) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = extra {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .and_then(|it| it.collect::<Result<_, _>>())
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!("{}: no certificate", path.display()));
        }
        for c in certs {
            roots.add(c).map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }
    Ok(roots)
}

/// Whether the chain leads to a trusted root (the name is judged by [`verify_name`]).
pub fn verify_chain(chain: &[CertificateDer<'static>], host: &str, roots: RootCertStore) -> Result<(), String> {
    let (end, intermediates) = chain.split_first().ok_or("no certificate presented")?;
    let verifier =
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider()).build().map_err(|e| e.to_string())?;
    let name = server_name(host).ok_or_else(|| format!("{host:?} is not a server name"))?;
    match verifier.verify_server_cert(end, intermediates, &name, &[], UnixTime::now()) {
        Ok(_) => Ok(()),
        // webpki checks the name after the chain: a name error means the chain is good.
        Err(rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        )) => Ok(()),
        Err(rustls::Error::InvalidCertificate(e)) => Err(describe(&e)),
        Err(e) => Err(e.to_string()),
    }
}

fn describe(e: &CertificateError) -> String {
    match e {
        CertificateError::UnknownIssuer => {
            "not issued by a trusted CA (unknown issuer: a self-signed certificate, a private CA, or a missing \
             intermediate certificate)"
                .into()
        }
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => "expired".into(),
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => "not valid yet".into(),
        other => format!("{other:?}"),
    }
}

/// Whether the end-entity certificate is valid for `host` (subjectAltName).
pub fn verify_name(end: &CertificateDer<'_>, host: &str) -> Result<(), String> {
    let cert = webpki::EndEntityCert::try_from(end).map_err(|e| format!("unreadable certificate: {e}"))?;
    let name = server_name(host).ok_or_else(|| format!("{host:?} is not a server name"))?;
    cert.verify_is_valid_for_subject_name(&name).map_err(|_| format!("not valid for {host}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates() {
        assert_eq!(http_date("Sun, 06 Nov 1994 08:49:37 GMT"), Some(784_111_777));
        assert_eq!(http_date("Wed, 02 Dec 2026 12:00:00 GMT"), Some(1_796_212_800));
        assert_eq!(http_date("Sunday, 06-Nov-94 08:49:37 GMT"), None);
        assert_eq!(http_date("Sun, 06 Nov 1994 08:49:37 PST"), None);
    }

    #[test]
    fn chain_and_name_are_judged_apart() {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca.self_signed(&ca_key).unwrap();
        let key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["mx.a.test".into()]).unwrap().signed_by(&key, &ca, &ca_key).unwrap();
        let chain = vec![leaf.der().clone()];
        let dir = tempfile::tempdir().unwrap();
        let ca_path = dir.path().join("ca.pem");
        std::fs::write(&ca_path, ca.pem()).unwrap();

        assert_eq!(verify_chain(&chain, "mx.a.test", roots(Some(&ca_path)).unwrap()), Ok(()));
        assert_eq!(verify_chain(&chain, "other.test", roots(Some(&ca_path)).unwrap()), Ok(()), "name judged apart");
        assert!(verify_chain(&chain, "mx.a.test", roots(None).unwrap()).unwrap_err().contains("unknown issuer"));
        assert_eq!(verify_name(&chain[0], "mx.a.test"), Ok(()));
        assert_eq!(verify_name(&chain[0], "other.test").unwrap_err(), "not valid for other.test");
        assert!(roots(Some(&dir.path().join("none.pem"))).is_err());
    }
}
