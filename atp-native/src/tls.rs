//! TLS for the server: TLS 1.3 only, ALPN `atp/1`, `h2`, `http/1.1` (docs/design.md §3). Without
//! `--cert/--key`, a self-signed certificate is generated once and reused.
//!
//! The certificate can be replaced while the server runs (docs/design.md §6, renewals every 60–90
//! days): rustls asks a [`CertStore`] for the certificate at every handshake, and [`Reloader`]
//! loads the files again on SIGHUP or when their modification time, size or inode changes. Open
//! connections keep the certificate they were made with; new handshakes get the new one. A file
//! that does not load (unparsable, empty, a key that does not match the certificate) leaves the old
//! certificate in place, and the log says why.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use sha2::Digest as _;

use crate::home::{write_atomic, write_private, Home, HomeError};

/// How often the certificate files are looked at for a change (two `stat` calls).
pub const POLL_FILES: Duration = Duration::from_secs(2);

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
    #[error("{0}: no certificate in the file")]
    NoCertificate(PathBuf),
    #[error("{cert} and {key} do not go together: {source}")]
    Mismatch { cert: PathBuf, key: PathBuf, source: rustls::Error },
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

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Loads a PEM certificate chain and its private key, checking that the key is the certificate's.
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| TlsError::Pem(cert.to_owned(), e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(cert.to_owned()));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Pem(key.to_owned(), e.to_string()))?;
    let signing_key =
        provider().key_provider.load_private_key(key_der).map_err(|e| TlsError::Pem(key.to_owned(), e.to_string()))?;
    let ck = CertifiedKey::new(certs, signing_key);
    match ck.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(ck),
        Err(source @ rustls::Error::InconsistentKeys(_)) => {
            Err(TlsError::Mismatch { cert: cert.to_owned(), key: key.to_owned(), source })
        }
        Err(e) => Err(TlsError::Pem(cert.to_owned(), e.to_string())),
    }
}

/// SHA-256 of the end-entity certificate, hex (what `openssl x509 -fingerprint -sha256` shows).
pub fn fingerprint(ck: &CertifiedKey) -> String {
    let der = ck.cert.first().map(|c| c.as_ref()).unwrap_or_default();
    sha2::Sha256::digest(der).iter().map(|b| format!("{b:02x}")).collect()
}

/// What identifies a version of a file on disk.
type Stamp = Option<(SystemTime, u64, u64)>;

fn stamp(path: &Path) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&m);
    #[cfg(not(unix))]
    let inode = 0;
    Some((m.modified().ok()?, m.len(), inode))
}

/// The certificate handed to every new handshake, replaceable while the server runs.
#[derive(Debug)]
pub struct CertStore {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    /// The files' stamps when last loaded (or last found unloadable).
    seen: Mutex<(Stamp, Stamp)>,
}

impl CertStore {
    /// Loads the pair; an error here stops the server from starting.
    pub fn open(cert: &Path, key: &Path) -> Result<Arc<Self>, TlsError> {
        let seen = (stamp(cert), stamp(key));
        let ck = load_certified_key(cert, key)?;
        Ok(Arc::new(CertStore {
            cert: cert.to_owned(),
            key: key.to_owned(),
            current: RwLock::new(Arc::new(ck)),
            seen: Mutex::new(seen),
        }))
    }

    /// The certificate new handshakes get.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Loads the files again. On success the new certificate serves every later handshake and its
    /// fingerprint is returned; on failure the old one stays.
    pub fn reload(&self) -> Result<String, TlsError> {
        let seen = (stamp(&self.cert), stamp(&self.key));
        *self.seen.lock().unwrap_or_else(|e| e.into_inner()) = seen;
        let ck = Arc::new(load_certified_key(&self.cert, &self.key)?);
        let fp = fingerprint(&ck);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = ck;
        Ok(fp)
    }

    /// True when either file changed since it was last loaded (or found unloadable).
    pub fn changed_on_disk(&self) -> bool {
        let now = (stamp(&self.cert), stamp(&self.key));
        *self.seen.lock().unwrap_or_else(|e| e.into_inner()) != now
    }

    pub fn cert_path(&self) -> &Path {
        &self.cert
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// The server's rustls configuration, taking its certificate from `store` at every handshake.
pub fn server_config(store: Arc<CertStore>) -> Result<Arc<ServerConfig>, TlsError> {
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_cert_resolver(store);
    cfg.alpn_protocols = vec![atp_wasm::ALPN_ATP.as_bytes().to_vec(), b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Reloads a [`CertStore`] on SIGHUP and when its files change.
pub struct Reloader {
    store: Arc<CertStore>,
    #[cfg(unix)]
    hangup: Option<tokio::signal::unix::Signal>,
}

impl Reloader {
    /// Takes over SIGHUP at once (so that a SIGHUP from now on reloads instead of ending the
    /// process). Must be called inside the tokio runtime.
    pub fn new(store: Arc<CertStore>) -> Self {
        #[cfg(unix)]
        let hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP: the certificate reloads on file changes only");
                None
            }
        };
        Reloader {
            store,
            #[cfg(unix)]
            hangup,
        }
    }

    async fn hangup(&mut self) {
        #[cfg(unix)]
        if let Some(h) = self.hangup.as_mut() {
            if h.recv().await.is_some() {
                return;
            }
        }
        std::future::pending::<()>().await
    }

    /// Runs [`Self::run`] as a task that ends when the returned guard is dropped.
    pub fn spawn(self, poll: Duration) -> ReloaderTask {
        ReloaderTask(tokio::spawn(self.run(poll)))
    }

    /// Runs until the task is aborted.
    pub async fn run(mut self, poll: Duration) {
        let mut tick = tokio::time::interval(poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            let trigger = tokio::select! {
                _ = self.hangup() => "SIGHUP",
                _ = tick.tick() => {
                    if !self.store.changed_on_disk() {
                        continue;
                    }
                    "file change"
                }
            };
            let cert = self.store.cert_path().display().to_string();
            match self.store.reload() {
                Ok(fp) => tracing::info!(%trigger, %cert, sha256 = %fp, "TLS certificate reloaded"),
                Err(e) => tracing::warn!(
                    %trigger,
                    %cert,
                    error = %e,
                    "TLS certificate not reloaded, keeping the previous one"
                ),
            }
        }
    }
}

/// Without TLS (`--no-tls`) there is nothing to reload, but SIGHUP (`systemctl reload`) must not end
/// the server either: it is logged and ignored while the returned guard lives.
pub fn ignore_hangup() -> Option<ReloaderTask> {
    #[cfg(unix)]
    {
        let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok()?;
        Some(ReloaderTask(tokio::spawn(async move {
            while hangup.recv().await.is_some() {
                tracing::info!("SIGHUP: no certificate to reload (plain HTTP, --no-tls)");
            }
        })))
    }
    #[cfg(not(unix))]
    None
}

/// The running [`Reloader`]; dropping it stops the reloads.
pub struct ReloaderTask(tokio::task::JoinHandle<()>);

impl Drop for ReloaderTask {
    fn drop(&mut self) {
        self.0.abort();
    }
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
        let cfg = server_config(CertStore::open(&c, &k).unwrap()).unwrap();
        assert_eq!(cfg.alpn_protocols[0], b"atp/1");
        assert!(CertStore::open(&c, &c).is_err(), "a certificate is not a key");
    }

    /// A reload swaps the certificate; a bad file or a key of another certificate keeps the old.
    #[test]
    fn reload_swaps_or_keeps_the_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        let write = |names: &[&str]| {
            let g =
                rcgen::generate_simple_self_signed(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
            (g.cert.pem(), g.key_pair.serialize_pem())
        };
        let (c1, k1) = write(&["one.test"]);
        std::fs::write(&cert, &c1).unwrap();
        std::fs::write(&key, &k1).unwrap();
        let store = CertStore::open(&cert, &key).unwrap();
        let first = fingerprint(&store.current());
        assert!(!store.changed_on_disk());

        let (c2, k2) = write(&["two.test"]);
        write_atomic(&cert, c2.as_bytes()).unwrap();
        assert!(store.changed_on_disk());
        let e = store.reload().unwrap_err();
        assert!(matches!(e, TlsError::Mismatch { .. }), "{e}");
        assert_eq!(fingerprint(&store.current()), first, "the old certificate stays");
        assert!(!store.changed_on_disk(), "a failed reload is not retried until the files change again");

        write_atomic(&key, k2.as_bytes()).unwrap();
        assert!(store.changed_on_disk());
        let second = store.reload().unwrap();
        assert_ne!(second, first);
        assert_eq!(fingerprint(&store.current()), second);

        for garbage in ["", "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n"] {
            write_atomic(&cert, garbage.as_bytes()).unwrap();
            assert!(store.reload().is_err(), "{garbage:?}");
            assert_eq!(fingerprint(&store.current()), second);
        }
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
        CertStore::open(&c, &k).unwrap();
    }
}
