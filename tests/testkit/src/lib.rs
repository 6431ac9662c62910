//! Helpers shared by atp's test suites (atp-native's tests, `tests/conformance`, `tests/bench`,
//! `tests/reliability`): one definition of what every suite needs and no product code may have.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// A certificate verifier that accepts any server certificate: the servers under test present
/// self-signed certificates made at start. Handshake signatures are still checked, with the
/// provider's algorithms, so a TLS test still exercises a real handshake. Tests only: never in a
/// client that talks to the world.
#[derive(Debug)]
pub struct AnyCert(pub Arc<CryptoProvider>);

impl AnyCert {
    /// The verifier for `provider`, ready for `dangerous().with_custom_certificate_verifier`.
    pub fn new(provider: Arc<CryptoProvider>) -> Arc<Self> {
        Arc::new(AnyCert(provider))
    }
}

impl ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handshake(client_cfg: rustls::ClientConfig, provider: Arc<CryptoProvider>) -> Result<(), rustls::Error> {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.key_pair.serialize_der().into());
        let server_cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.cert.der().clone()], key)
            .unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let mut client = rustls::ClientConnection::new(Arc::new(client_cfg), name).unwrap();
        let mut server = rustls::ServerConnection::new(Arc::new(server_cfg)).unwrap();
        // In-memory flights until both sides are done (a TLS 1.3 handshake takes 2 round trips).
        for _ in 0..10 {
            let mut buf = Vec::new();
            client.write_tls(&mut buf).unwrap();
            server.read_tls(&mut buf.as_slice()).unwrap();
            server.process_new_packets()?;
            let mut buf = Vec::new();
            server.write_tls(&mut buf).unwrap();
            client.read_tls(&mut buf.as_slice()).unwrap();
            client.process_new_packets()?;
            if !client.is_handshaking() && !server.is_handshaking() {
                return Ok(());
            }
        }
        panic!("the handshake neither completed nor failed");
    }

    fn client(provider: &Arc<CryptoProvider>) -> rustls::ConfigBuilder<rustls::ClientConfig, rustls::WantsVerifier> {
        rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
    }

    /// A self-signed server is refused by an ordinary client and accepted with [`AnyCert`].
    #[test]
    fn a_self_signed_server_is_accepted_only_with_any_cert() {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let strict = client(&provider).with_root_certificates(rustls::RootCertStore::empty()).with_no_client_auth();
        assert!(handshake(strict, provider.clone()).is_err(), "an empty root store must refuse");
        let any = client(&provider)
            .dangerous()
            .with_custom_certificate_verifier(AnyCert::new(provider.clone()))
            .with_no_client_auth();
        handshake(any, provider).expect("AnyCert accepts the self-signed server");
    }
}
