//! TLS of the real binary (docs/design.md §3): TLS 1.3 only, ALPN `atp/1` / `h2` / `http/1.1`, the
//! self-signed certificate made once and reused, the operator's own certificate, `--no-tls`, and the
//! domain key files of docs/protocol.md §8.7.

mod common;

use std::sync::Arc;

use common::*;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// A raw TLS connection offering `alpn` with the given protocol versions.
async fn connect(
    s: &Server,
    alpn: &[&str],
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> std::io::Result<Tls> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(atp_testkit::AnyCert::new(provider))
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|a| a.as_bytes().to_vec()).collect();
    let tcp = tokio::net::TcpStream::connect(s.addr()).await?;
    tokio_rustls::TlsConnector::from(Arc::new(cfg)).connect(ServerName::try_from("localhost").unwrap(), tcp).await
}

async fn http1_health(mut tls: Tls) -> String {
    tls.write_all(b"GET /.well-known/atp/v1/health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    tls.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test]
async fn tls_1_3_only_with_alpn() {
    let s = Server::start("beta.test");
    // TLS 1.2 is refused (raw client, and reqwest)
    assert!(connect(&s, &["http/1.1"], &[&rustls::version::TLS12]).await.is_err(), "TLS 1.2 must be refused");
    let old = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .max_tls_version(reqwest::tls::Version::TLS_1_2)
        .build()
        .unwrap();
    assert!(old.get(s.url("health")).send().await.is_err());

    // ALPN atp/1 negotiates, and HTTP/1.1 is spoken over it
    let tls = connect(&s, &["atp/1"], &[&rustls::version::TLS13]).await.unwrap();
    let (_, conn) = tls.get_ref();
    assert_eq!(conn.alpn_protocol(), Some(&b"atp/1"[..]));
    assert_eq!(conn.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_3));
    let reply = http1_health(tls).await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.contains("\"status\":\"healthy\""), "{reply}");

    // atp/1 is preferred; h2 and http/1.1 for ordinary clients; no ALPN at all also works
    let pick = |offer: &'static [&'static str]| {
        let s = &s;
        async move {
            let tls = connect(s, offer, &[&rustls::version::TLS13]).await.unwrap();
            tls.get_ref().1.alpn_protocol().map(|p| String::from_utf8(p.to_vec()).unwrap())
        }
    };
    assert_eq!(pick(&["h2", "http/1.1", "atp/1"]).await.as_deref(), Some("atp/1"));
    assert_eq!(pick(&["h2", "http/1.1"]).await.as_deref(), Some("h2"));
    assert_eq!(pick(&["http/1.1"]).await.as_deref(), Some("http/1.1"));
    assert_eq!(pick(&[]).await, None);
    let reply = http1_health(connect(&s, &[], &[&rustls::version::TLS13]).await.unwrap()).await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    // an unknown protocol only is refused by the handshake (RFC 7301 no_application_protocol)
    assert!(connect(&s, &["smtp"], &[&rustls::version::TLS13]).await.is_err());

    // an ordinary HTTP/2 client
    let r = client().get(s.url("health")).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn self_signed_certificate_is_made_once_and_reused() {
    let s = Server::start("beta.test");
    assert!(s.log().contains("self-signed"), "{}", s.log());
    let tls = connect(&s, &["atp/1"], &[&rustls::version::TLS13]).await.unwrap();
    let der = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    let contains = |needle: &[u8]| der.windows(needle.len()).any(|w| w == needle);
    assert!(contains(b"beta.test") && contains(b"localhost"), "SAN DNS names");
    assert!(contains(&[127, 0, 0, 1]), "SAN 127.0.0.1");
    assert!(contains(&std::net::Ipv6Addr::LOCALHOST.octets()), "SAN ::1");
    let certs = s.home_path().join("certs");
    let files: Vec<_> = std::fs::read_dir(&certs).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(files.len(), 2, "{files:?}");
    #[cfg(unix)]
    for f in &files {
        use std::os::unix::fs::PermissionsExt;
        if f.to_string_lossy().ends_with(".key") {
            let mode = std::fs::metadata(certs.join(f)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    // a restart in the same home presents the same certificate
    let home = s.stop();
    let s = Server::start_in(Options::new("beta.test"), home, free_port());
    let tls = connect(&s, &["atp/1"], &[&rustls::version::TLS13]).await.unwrap();
    assert_eq!(tls.get_ref().1.peer_certificates().unwrap()[0].to_vec(), der);
    assert!(s.log().contains("self-signed"));
    assert!(!s.log().contains("just generated"), "{}", s.log());

    // the operator's certificate (here: that one, copied) with --cert/--key
    let dir = tempfile::tempdir().unwrap();
    let mut cert = None;
    let mut key = None;
    for f in std::fs::read_dir(s.home_path().join("certs")).unwrap() {
        let p = f.unwrap().path();
        let dest = dir.path().join(p.file_name().unwrap());
        std::fs::copy(&p, &dest).unwrap();
        if dest.extension().unwrap() == "key" {
            key = Some(dest);
        } else {
            cert = Some(dest);
        }
    }
    let (cert, key) = (cert.unwrap(), key.unwrap());
    let o =
        Options::new("other.test").arg("--cert").arg(cert.to_str().unwrap()).arg("--key").arg(key.to_str().unwrap());
    let other = Server::with(o);
    assert!(!other.log().contains("self-signed"), "{}", other.log());
    let tls = connect(&other, &["atp/1"], &[&rustls::version::TLS13]).await.unwrap();
    assert_eq!(tls.get_ref().1.peer_certificates().unwrap()[0].to_vec(), der);
    assert!(!other.home_path().join("certs").read_dir().unwrap().any(|_| true), "no self-signed cert made");

    // a missing certificate file stops the start with a message
    let home = tempfile::tempdir().unwrap();
    let o = Options::new("x.test").arg("--cert").arg("/nonexistent.pem").arg("--key").arg("/nonexistent.key");
    let out = Server::command(&o, home.path(), free_port()).output().unwrap();
    assert!(!out.status.success());
    let log = std::fs::read_to_string(home.path().join("server.log")).unwrap();
    assert!(log.contains("Error:") && log.contains("nonexistent.pem"), "{log}");
}

#[tokio::test]
async fn plain_http_with_no_tls() {
    let mut o = Options::new("beta.test");
    o.tls = false;
    let s = Server::with(o);
    assert!(s.url("health").starts_with("http://"));
    let (st, v) = call(reqwest::Client::new().get(s.url("health"))).await;
    assert_eq!((st, v["status"].as_str()), (200, Some("healthy")));
    assert!(!s.home_path().join("certs").read_dir().unwrap().any(|_| true));
}

#[tokio::test]
async fn domain_key_in_the_reference_layout() {
    let s = Server::start("beta.test");
    let keys = s.home_path().join("keys");
    let private = std::fs::read_to_string(keys.join("default.key")).unwrap();
    assert!(private.starts_with("-----BEGIN PRIVATE KEY-----"), "PKCS#8 PEM");
    let public = std::fs::read_to_string(keys.join("default.pub")).unwrap();
    assert!(public.starts_with("-----BEGIN PUBLIC KEY-----"), "SPKI PEM");
    let key = atp_wasm::keys::DomainKey::from_pkcs8_pem(&private).unwrap();
    assert_eq!(atp_wasm::keys::PublicKey::from_spki_pem(&public).unwrap(), key.public_key());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(keys.join("default.key")).unwrap().permissions().mode() & 0o777, 0o600);
    }
    let ring: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(keys.join("keyring.json")).unwrap()).unwrap();
    assert_eq!(ring["keys"]["default"]["private_key"], "default.key");
    assert_eq!(ring["keys"]["default"]["public_key"], "default.pub");
    assert!(ring["keys"]["default"]["created_at"].as_i64().unwrap() > 1_700_000_000);
    assert!(s.log().contains("Generated domain key 'default'"));
    // kept across restarts, never overwritten
    let home = s.stop();
    let s = Server::start_in(Options::new("beta.test"), home, free_port());
    assert_eq!(std::fs::read_to_string(keys_of(&s).join("default.key")).unwrap(), private);
    assert!(!s.log().contains("Generated domain key"));
    // another selector from config.toml
    let home = s.stop();
    let s = Server::start_in(Options::new("beta.test").config("key_selector = \"k2026\"\n"), home, free_port());
    assert!(keys_of(&s).join("k2026.key").exists());
    let ring: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(keys_of(&s).join("keyring.json")).unwrap()).unwrap();
    assert!(ring["keys"]["default"].is_object() && ring["keys"]["k2026"].is_object(), "{ring}");
}

fn keys_of(s: &Server) -> std::path::PathBuf {
    s.home_path().join("keys")
}
