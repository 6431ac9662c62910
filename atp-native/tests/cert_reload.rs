//! Certificate reload without a restart (docs/design.md §6): the real binary serves `--cert/--key`
//! files issued by a test CA; the files are replaced, SIGHUP (or the change itself) makes new
//! handshakes present the new certificate while a connection opened before keeps working, and a
//! broken file or a key of another certificate leaves the current certificate in place, with the
//! reason in the log. Every wait is on a log line the server writes once the reload is done.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use common::*;
use rustls::pki_types::{CertificateDer, ServerName};
use sha2::Digest as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const NAME: &str = "reload.test";

/// A certificate for [`NAME`] signed by the CA: (certificate PEM, key PEM, certificate DER).
struct Leaf {
    pem: String,
    key: String,
    der: Vec<u8>,
}

fn ca() -> (rcgen::Certificate, rcgen::KeyPair) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(rcgen::DnType::CommonName, "atp reload test CA");
    (params.self_signed(&key).unwrap(), key)
}

fn leaf(ca: &(rcgen::Certificate, rcgen::KeyPair)) -> Leaf {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec![NAME.to_owned()]).unwrap().signed_by(&key, &ca.0, &ca.1).unwrap();
    Leaf { pem: cert.pem(), key: key.serialize_pem(), der: cert.der().to_vec() }
}

fn sha256(der: &[u8]) -> String {
    sha2::Sha256::digest(der).iter().map(|b| format!("{b:02x}")).collect()
}

/// Replaces a file the way deployment tools do: a new file renamed over the old one.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn hangup(s: &Server) {
    let status = Command::new("kill").args(["-HUP", &s.child.id().to_string()]).status().unwrap();
    assert!(status.success());
}

/// Lines of the server's log containing every one of `parts`.
fn count(s: &Server, parts: &[&str]) -> usize {
    s.log().lines().filter(|l| parts.iter().all(|p| l.contains(p))).count()
}

/// Waits until the server's log has `n` lines containing every one of `parts`.
async fn log_lines(s: &Server, parts: &[&str], n: usize) {
    eventually(30, || async { (count(s, parts) >= n).then_some(()) })
        .await
        .unwrap_or_else(|| panic!("no {n} log line(s) with {parts:?}; the log:\n{}", s.log()));
}

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// A TLS 1.3 connection that verifies the server against the test CA, as a client of the
/// operator's real certificate would.
async fn connect(s: &Server, ca_pem: &str) -> Tls {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap()).unwrap();
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(s.addr()).await.unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(cfg)).connect(ServerName::try_from(NAME).unwrap(), tcp).await.unwrap()
}

/// The end-entity certificate the connection was made with.
fn served(tls: &Tls) -> Vec<u8> {
    tls.get_ref().1.peer_certificates().unwrap()[0].as_ref().to_vec()
}

/// One `GET health` on a kept-alive HTTP/1.1 connection; returns the status line.
async fn health(tls: &mut Tls) -> String {
    tls.write_all(b"GET /.well-known/atp/v1/health HTTP/1.1\r\nHost: reload.test\r\n\r\n").await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = tls.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed: {}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let len: usize = text[..end]
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
                .expect("content-length");
            if buf.len() >= end + 4 + len {
                return text.lines().next().unwrap().to_owned();
            }
        }
    }
}

use rustls::pki_types::pem::PemObject;

#[tokio::test]
async fn sighup_and_file_changes_swap_the_certificate() {
    let ca = ca();
    let ca_pem = ca.0.pem();
    let (one, two) = (leaf(&ca), leaf(&ca));
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("live.crt"), dir.path().join("live.key"));
    std::fs::write(&cert, &one.pem).unwrap();
    std::fs::write(&key, &one.key).unwrap();
    let s = Server::with(
        Options::new(NAME).arg("--cert").arg(cert.to_str().unwrap()).arg("--key").arg(key.to_str().unwrap()),
    );

    // A client connected before the swap.
    let mut before = connect(&s, &ca_pem).await;
    assert_eq!(served(&before), one.der);
    assert!(health(&mut before).await.contains("200"));

    // Renewal: key and certificate replaced, then SIGHUP.
    replace(&key, &two.key);
    replace(&cert, &two.pem);
    hangup(&s);
    log_lines(&s, &["TLS certificate reloaded", &sha256(&two.der)], 1).await;
    let mut after = connect(&s, &ca_pem).await;
    assert_eq!(served(&after), two.der, "a new handshake gets the new certificate");
    assert!(health(&mut after).await.contains("200"));
    assert!(health(&mut before).await.contains("200"), "the connection made before the swap goes on");
    assert_eq!(served(&before), one.der);

    // A broken certificate file: logged, and the current certificate stays.
    let refused = ["TLS certificate not reloaded", "live.crt: "];
    let n = count(&s, &refused);
    replace(&cert, "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n");
    hangup(&s);
    log_lines(&s, &refused, n + 1).await;
    assert_eq!(served(&connect(&s, &ca_pem).await), two.der);

    // The certificate of one pair with the key of the other: refused as well.
    let mismatch = ["TLS certificate not reloaded", "do not go together"];
    let n = count(&s, &mismatch);
    replace(&cert, &one.pem);
    hangup(&s);
    log_lines(&s, &mismatch, n + 1).await;
    assert_eq!(served(&connect(&s, &ca_pem).await), two.der);

    // The matching key arrives: the change of the file alone reloads (no SIGHUP).
    replace(&key, &one.key);
    log_lines(&s, &["TLS certificate reloaded", "file change", &sha256(&one.der)], 1).await;
    assert_eq!(served(&connect(&s, &ca_pem).await), one.der);
    assert!(health(&mut before).await.contains("200"));

    let mut s = s;
    assert!(s.child.try_wait().unwrap().is_none(), "SIGHUP does not end the server:\n{}", s.log());
}

/// Without TLS there is nothing to reload, and SIGHUP (`systemctl reload`) does not end the server.
#[tokio::test]
async fn sighup_without_tls_is_ignored() {
    let mut o = Options::new("plain.test");
    o.tls = false;
    let mut s = Server::with(o);
    hangup(&s);
    log_lines(&s, &["SIGHUP: no certificate to reload"], 1).await;
    let (status, _) = call(client().get(s.url("health"))).await;
    assert_eq!(status, 200);
    assert!(s.child.try_wait().unwrap().is_none(), "{}", s.log());
}
