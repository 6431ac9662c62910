//! How a native HTTP client judges the server's certificate ([`Trust`]), as one rustls client
//! configuration (TLS 1.3 only, ALPN `h2` and `http/1.1`; docs/design.md §3):
//!
//! * [`Trust::Roots`]: the Web PKI roots plus extra certificates (`--ca-cert`, `--peer-ca`);
//! * [`Trust::Pinned`]: exactly one certificate, named by the SHA-256 of its DER — what a local
//!   server publishes in its registry entry ([`crate::registry`]), so that a client on the same
//!   machine trusts that server's self-signed certificate and no other;
//! * [`Trust::NoVerify`]: any certificate (`--no-verify`, local peers of the delivery engine).
//!
//! A pinned or unverified certificate is accepted whatever names it carries and whenever it
//! expires; the handshake signature is still checked, so the server must hold the certificate's key.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, OtherError, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};

use super::HttpSetupError;

/// A certificate named by the SHA-256 of its DER encoding.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct CertPin([u8; 32]);

impl CertPin {
    pub fn of_der(der: &[u8]) -> Self {
        CertPin(Sha256::digest(der).into())
    }

    /// The first certificate of a PEM file (the server's own, in a chain file).
    pub fn of_pem_file(path: &Path) -> Result<Self, HttpSetupError> {
        let certs = read_pem_certs(path)?;
        Ok(CertPin::of_der(&certs[0]))
    }

    /// 64 hex digits, either case.
    pub fn from_hex(s: &str) -> Option<Self> {
        let s = s.trim();
        if s.len() != 64 || !s.is_ascii() {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(CertPin(out))
    }

    /// 64 lowercase hex digits.
    pub fn to_hex(self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl std::fmt::Debug for CertPin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CertPin({})", self.to_hex())
    }
}

/// Which server certificates a client accepts.
#[derive(Debug, Clone)]
pub enum Trust {
    /// Certificates that chain to the Web PKI roots or to one of these, for the name connected to.
    Roots(Vec<CertificateDer<'static>>),
    /// Exactly this certificate.
    Pinned(CertPin),
    /// Any certificate.
    NoVerify,
}

impl Trust {
    /// The Web PKI roots, plus the certificates of a PEM file when one is given.
    pub fn roots(ca_file: Option<&Path>) -> Result<Trust, HttpSetupError> {
        Ok(Trust::Roots(match ca_file {
            Some(path) => read_pem_certs(path)?,
            None => Vec::new(),
        }))
    }
}

/// The certificates of a PEM file; none is an error.
fn read_pem_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, HttpSetupError> {
    let err = |reason: String| HttpSetupError::CaFile { path: path.to_owned(), reason };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no PEM certificate in the file".into()));
    }
    Ok(certs)
}

/// The rustls configuration for `trust`.
pub fn client_config(trust: &Trust) -> Result<ClientConfig, HttpSetupError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder =
        ClientConfig::builder_with_provider(provider.clone()).with_protocol_versions(&[&rustls::version::TLS13])?;
    let mut config = match trust {
        Trust::Roots(extra) => {
            let mut roots = RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            for cert in extra {
                roots.add(cert.clone())?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        Trust::Pinned(pin) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Fixed::new(Some(*pin), &provider)))
            .with_no_client_auth(),
        Trust::NoVerify => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Fixed::new(None, &provider)))
            .with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// The server's certificate is not the pinned one.
#[derive(Debug, thiserror::Error)]
#[error("not the pinned certificate (SHA-256 {expected})")]
struct NotPinned {
    expected: String,
}

/// Accepts the pinned certificate (or, without a pin, any), checking handshake signatures only.
#[derive(Debug)]
struct Fixed {
    pin: Option<CertPin>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl Fixed {
    fn new(pin: Option<CertPin>, provider: &CryptoProvider) -> Self {
        Fixed { pin, algorithms: provider.signature_verification_algorithms }
    }
}

impl ServerCertVerifier for Fixed {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.pin {
            Some(pin) if CertPin::of_der(end_entity) != pin => {
                let e = NotPinned { expected: pin.to_hex() };
                Err(rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e)))))
            }
            _ => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Why the server's certificate was refused, if that is why `e` failed.
pub fn certificate_problem(e: &reqwest::Error) -> Option<String> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        // io::Error::source() skips the error it wraps (and TLS errors come wrapped twice): look inside.
        let mut inner = err;
        while let Some(wrapped) = inner.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
            inner = wrapped;
        }
        if let Some(r) = inner.downcast_ref::<rustls::Error>() {
            return match r {
                rustls::Error::InvalidCertificate(CertificateError::Other(o)) => {
                    Some(format!("invalid peer certificate: {}", o.0))
                }
                rustls::Error::InvalidCertificate(_) => Some(r.to_string()),
                _ => None,
            };
        }
        cur = err.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_in_hex() {
        let pin = CertPin::of_der(b"certificate");
        let hex = pin.to_hex();
        assert_eq!(hex.len(), 64);
        assert_eq!(CertPin::from_hex(&hex.to_uppercase()), Some(pin));
        for bad in ["", "00", &hex[1..], &format!("{}zz", &hex[2..]), &format!("{}é", &hex[..62])] {
            assert_eq!(CertPin::from_hex(bad), None, "{bad}");
        }
    }

    #[test]
    fn ca_files_must_hold_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let e = Trust::roots(Some(&empty)).unwrap_err().to_string();
        assert!(e.ends_with("no PEM certificate in the file"), "{e}");
        assert!(Trust::roots(Some(&dir.path().join("missing.pem"))).is_err());
        assert!(matches!(Trust::roots(None).unwrap(), Trust::Roots(v) if v.is_empty()));
        for trust in [Trust::roots(None).unwrap(), Trust::NoVerify, Trust::Pinned(CertPin::of_der(b"x"))] {
            let config = client_config(&trust).unwrap();
            assert_eq!(config.alpn_protocols, [b"h2".to_vec(), b"http/1.1".to_vec()]);
        }
    }
}
