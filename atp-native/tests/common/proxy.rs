//! A fault-injecting HTTPS hop between two servers, for the faults a real network cannot be made
//! to produce on demand: it terminates TLS (self-signed; local peers are not verified), forwards
//! each HTTP/1.1 `POST` to the real receiver, and then, depending on its mode, returns the answer,
//! drops the connection without answering (a "lost 202"), or holds the request first.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Forward requests and answers.
pub const FORWARD: u8 = 0;
/// Forward the request, then close the connection without answering.
pub const DROP_ANSWER: u8 = 1;
/// Wait [`Proxy::hold`] before forwarding.
pub const HOLD: u8 = 2;

pub struct Proxy {
    pub port: u16,
    pub mode: Arc<AtomicU8>,
    /// Requests forwarded to the receiver.
    pub forwarded: Arc<AtomicU64>,
    /// Answers dropped.
    pub dropped: Arc<AtomicU64>,
    rt: Option<tokio::runtime::Runtime>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `https://127.0.0.1:<upstream>`.
    pub fn start(upstream: u16, hold: Duration) -> Proxy {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let port = std_listener.local_addr().unwrap().port();
        let mode = Arc::new(AtomicU8::new(FORWARD));
        let forwarded = Arc::new(AtomicU64::new(0));
        let dropped = Arc::new(AtomicU64::new(0));
        let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.key_pair.serialize_der().into());
        let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.cert.der().clone()], key)
            .unwrap();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        let client = reqwest::Client::builder().danger_accept_invalid_certs(true).build().unwrap();
        let (m, f, d) = (mode.clone(), forwarded.clone(), dropped.clone());
        rt.spawn(async move {
            let listener = TcpListener::from_std(std_listener).unwrap();
            loop {
                let Ok((tcp, _)) = listener.accept().await else { continue };
                let (acceptor, client, m, f, d) = (acceptor.clone(), client.clone(), m.clone(), f.clone(), d.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                    while let Some(body) = read_request(&mut tls).await {
                        let mode = m.load(Ordering::SeqCst);
                        if mode == HOLD {
                            tokio::time::sleep(hold).await;
                        }
                        let url = format!("https://127.0.0.1:{upstream}/.well-known/atp/v1/message");
                        let Ok(resp) =
                            client.post(url).header("content-type", "application/atp+json").body(body).send().await
                        else {
                            return;
                        };
                        f.fetch_add(1, Ordering::SeqCst);
                        let status = resp.status().as_u16();
                        let text = resp.text().await.unwrap_or_default();
                        if mode == DROP_ANSWER {
                            d.fetch_add(1, Ordering::SeqCst);
                            return; // the receiver has it; the sender never hears
                        }
                        let head = format!(
                            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                            text.len()
                        );
                        if tls.write_all(head.as_bytes()).await.is_err()
                            || tls.write_all(text.as_bytes()).await.is_err()
                        {
                            return;
                        }
                    }
                });
            }
        });
        Proxy { port, mode, forwarded, dropped, rt: Some(rt) }
    }

    pub fn set(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// Reads one HTTP/1.1 request with a `Content-Length` body; `None` at end of stream.
async fn read_request<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let len: usize =
        head.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse().ok()).unwrap_or(0);
    while buf.len() < head_end + len {
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Some(buf[head_end..head_end + len].to_vec())
}
