//! TLS for the server: TLS 1.3 only, ALPN `atp/1`, `h2`, `http/1.1` (docs/design.md §3). Without
//! `--cert/--key`, a self-signed certificate is generated once and reused.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

use crate::home::{write_atomic, write_private, Home, HomeError};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{0}: {1}")]
    Pem(PathBuf, String),
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error(transparent)]
    Home(#[from] HomeError),
}

/// Paths of the self-signed certificate for `domain` in the home, created if missing.
/// Returns `(cert, key, created)`.
pub fn self_signed(home: &Home, domain: &str) -> Result<(PathBuf, PathBuf, bool), TlsError> {
    let cert = home.certs_dir().join(format!("self-signed-{domain}.crt"));
    let key = home.certs_dir().join(format!("self-signed-{domain}.key"));
    // An empty file is what a crash (or a file system turned read-only) can leave of a write
    // that was never flushed: generate the pair again rather than fail on "no certificates".
    let usable = |p: &Path| std::fs::metadata(p).is_ok_and(|m| m.len() > 0);
    if usable(&cert) && usable(&key) {
        return Ok((cert, key, false));
    }
    let names = vec![domain.to_owned(), "localhost".into(), "127.0.0.1".into(), "::1".into()];
    let generated = rcgen::generate_simple_self_signed(names)?;
    write_private(&key, generated.key_pair.serialize_pem().as_bytes())?;
    write_atomic(&cert, generated.cert.pem().as_bytes())?;
    Ok((cert, key, true))
}

/// The server's rustls configuration from PEM files.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| TlsError::Pem(cert.to_owned(), e.to_string()))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Pem(key.to_owned(), e.to_string()))?;
    let mut cfg = ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    cfg.alpn_protocols = vec![atp_wasm::ALPN_ATP.as_bytes().to_vec(), b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_is_created_once_and_loads() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home { root: dir.path().to_owned() };
        home.ensure().unwrap();
        let (c, k, created) = self_signed(&home, "alpha.test").unwrap();
        assert!(created);
        let (_, _, again) = self_signed(&home, "alpha.test").unwrap();
        assert!(!again);
        let cfg = server_config(&c, &k).unwrap();
        assert_eq!(cfg.alpn_protocols[0], b"atp/1");
        assert!(server_config(&c, &c).is_err(), "a certificate is not a key");
    }

    /// What a crash before the flush leaves (an empty certificate) is generated again.
    #[test]
    fn an_empty_self_signed_certificate_is_generated_again() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home { root: dir.path().to_owned() };
        home.ensure().unwrap();
        let (c, k, _) = self_signed(&home, "alpha.test").unwrap();
        std::fs::write(&c, "").unwrap();
        let (c, k2, created) = self_signed(&home, "alpha.test").unwrap();
        assert!(created);
        assert_eq!(k, k2);
        server_config(&c, &k).unwrap();
    }
}
