//! Connection limits of the real binary (docs/design.md §5b, `atp-native/src/limits.rs`): the
//! per-address and total caps close excess connections at once, slowloris heads are cut after the
//! header-read timeout, idle connections (HTTP/1.1 keep-alive, HTTP/2, nothing sent at all) are
//! closed within the idle timeout, TLS handshakes within the handshake timeout, HTTP/2 SETTINGS
//! announce the stream and header-list limits, stalled request bodies and unread responses are
//! cut, and a low open-file limit lowers the cap instead of taking the server down — while a
//! legitimate client keeps working. Bounds are generous: each check waits for a condition with a
//! deadline well past the configured limit, never for an exact moment.

mod common;

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinHandle;

/// The attacking address (loopback accepts all of 127/8); legitimate clients use 127.0.0.1.
const ATTACKER: &str = "127.0.0.2";
/// Slack on every upper bound: a loaded 2-core machine is slow, never early.
const MARGIN: Duration = Duration::from_secs(6);

fn plain(domain: &str, config: &str) -> Server {
    let mut o = Options::new(domain).config(config);
    o.tls = false;
    Server::with(o)
}

fn tls(domain: &str, config: &str) -> Server {
    Server::with(Options::new(domain).config(config))
}

/// A TCP connection to the server from `src`.
async fn tcp_from(src: &str, s: &Server) -> io::Result<TcpStream> {
    let sock = TcpSocket::new_v4()?;
    sock.bind(format!("{src}:0").parse().unwrap())?;
    sock.connect(s.addr().parse().unwrap()).await
}

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

/// A TLS 1.3 connection from `src` offering `alpn`.
async fn tls_from(src: &str, s: &Server, alpn: &[&str]) -> io::Result<Tls> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(atp_testkit::AnyCert::new(provider))
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|a| a.as_bytes().to_vec()).collect();
    let tcp = tcp_from(src, s).await?;
    tokio_rustls::TlsConnector::from(Arc::new(cfg)).connect(ServerName::try_from("localhost").unwrap(), tcp).await
}

/// Reads (and discards) until the server closes the connection (end of stream, reset or TLS
/// error); the time from `since`.
fn watch<S: AsyncRead + Unpin + Send + 'static>(mut s: S, since: Instant) -> JoinHandle<Duration> {
    tokio::spawn(async move {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return since.elapsed(),
                Ok(_) => {}
            }
        }
    })
}

/// Opens a connection from `src` and watches it; a connection reset while connecting (the server
/// refused it before the client saw the connect complete) counts as closed at once.
async fn open(src: &str, s: &Server) -> JoinHandle<Duration> {
    let t0 = Instant::now();
    match tcp_from(src, s).await {
        Ok(c) => watch(c, t0),
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => tokio::spawn(async move { t0.elapsed() }),
        Err(e) => panic!("connecting: {e}"),
    }
}

fn closed(held: &[JoinHandle<Duration>]) -> usize {
    held.iter().filter(|h| h.is_finished()).count()
}

/// Waits until at least `n` of `held` are closed (at most `secs`); how many are.
async fn wait_closed(held: &[JoinHandle<Duration>], n: usize, secs: u64) -> usize {
    eventually(secs, || async { (closed(held) >= n).then_some(()) }).await;
    closed(held)
}

/// The times to close of the connections that are closed (the others are aborted).
async fn close_times(held: Vec<JoinHandle<Duration>>) -> Vec<Duration> {
    let mut out = Vec::new();
    for h in held {
        if h.is_finished() {
            out.push(h.await.unwrap());
        } else {
            h.abort();
        }
    }
    out
}

async fn healthy(s: &Server) -> bool {
    matches!(client().get(s.url("health")).send().await, Ok(r) if r.status() == 200)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_per_ip_cap_are_closed_at_once() {
    // Defaults: 64 per address, idle timeout 60 s (so admitted connections stay open).
    let s = plain("cap.test", "");
    let mut held = Vec::new();
    for _ in 0..70 {
        held.push(open(ATTACKER, &s).await);
    }
    assert_eq!(wait_closed(&held, 6, 10).await, 6, "the 6 connections over the cap of 64 are closed");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(closed(&held), 6, "the 64 within the cap stay open");
    // another address is not affected
    assert!(healthy(&s).await, "a client from 127.0.0.1 is served");
    // the refused ones were closed at once, not after some timeout
    let (refused, mut admitted): (Vec<_>, Vec<_>) = held.into_iter().partition(|h| h.is_finished());
    for t in close_times(refused).await {
        assert!(t < Duration::from_secs(3), "a refused connection was closed only after {t:?}");
    }
    // slots are given back when connections close
    for h in admitted.drain(..10) {
        h.abort();
    }
    let again = eventually(15, || async {
        let c = tcp_from(ATTACKER, &s).await.ok()?;
        let h = watch(c, Instant::now());
        tokio::time::sleep(Duration::from_millis(500)).await;
        let open = !h.is_finished();
        h.abort();
        open.then_some(())
    })
    .await;
    assert!(again.is_some(), "closed connections give their slots back");
    assert!(s.log().contains("connections refused"), "refusals are logged:\n{}", s.log());
    for h in admitted {
        h.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_total_cap_are_closed_at_once() {
    let s = plain("total.test", "[limits]\nmax_connections = 10\nmax_connections_per_ip = 100\n");
    let mut held = Vec::new();
    for _ in 0..13 {
        held.push(open(ATTACKER, &s).await);
    }
    assert_eq!(wait_closed(&held, 3, 10).await, 3, "3 over the total cap of 10");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(closed(&held), 3);
    assert!(!healthy(&s).await, "the total cap counts every address");
    for t in close_times(held).await {
        assert!(t < Duration::from_secs(3), "closed only after {t:?}");
    }
    assert!(eventually(15, || async { healthy(&s).await.then_some(()) }).await.is_some(), "served once slots free");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowloris_head_is_cut_after_the_header_timeout() {
    let s = tls("slow.test", "[limits]\nheader_read_timeout = 2\nidle_timeout = 60\n");
    let mut conn = tls_from(ATTACKER, &s, &["http/1.1"]).await.unwrap();
    let head = b"GET /.well-known/atp/v1/health HTTP/1.1\r\nHost: localhost\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let t0 = Instant::now();
    let mut sent = 0;
    let mut buf = [0u8; 1024];
    let cut = loop {
        // one byte a second; the read in between notices the close
        if sent < head.len() && conn.write_all(&head[sent..=sent]).await.is_ok() {
            let _ = conn.flush().await;
            sent += 1;
        }
        match tokio::time::timeout(Duration::from_secs(1), conn.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break t0.elapsed(),
            Ok(Ok(n)) => {
                panic!("the server answered a head sent at 1 byte/s: {:?}", String::from_utf8_lossy(&buf[..n]))
            }
            Err(_) => assert!(t0.elapsed() < Duration::from_secs(2) + MARGIN, "not cut after {sent} bytes"),
        }
    };
    assert!(cut >= Duration::from_millis(1500), "cut after {cut:?}, before the header timeout");
    assert!(sent < head.len());
    assert!(healthy(&s).await, "other clients are served");
}

/// Reads one HTTP/1.1 response with a `Content-Length` (head and body).
async fn read_response<S: AsyncRead + Unpin>(s: &mut S) -> String {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed before the response was complete: {:?}", String::from_utf8_lossy(&data));
        data.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&data).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let len = text[..end]
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
                .unwrap_or(0usize);
            if data.len() >= end + 4 + len {
                return text;
            }
        }
    }
}

/// One HTTP/2 frame: (length, type, flags, payload).
async fn h2_frame<S: AsyncRead + Unpin>(s: &mut S) -> (usize, u8, u8, Vec<u8>) {
    let mut h = [0u8; 9];
    s.read_exact(&mut h).await.unwrap();
    let len = (usize::from(h[0]) << 16) | (usize::from(h[1]) << 8) | usize::from(h[2]);
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).await.unwrap();
    (len, h[3], h[4], payload)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_within_the_idle_timeout() {
    let s = tls(
        "idle.test",
        "[limits]\nheader_read_timeout = 1\nidle_timeout = 4\nhandshake_timeout = 2\nhttp2_max_streams = 7\n",
    );
    let idle = Duration::from_secs(4);
    // A legitimate client keeps working on its own connection all along.
    let legit = {
        let url = s.url("health");
        tokio::spawn(async move {
            let c = client();
            let (mut ok, mut failed) = (0, Vec::new());
            let end = Instant::now() + Duration::from_secs(9);
            while Instant::now() < end {
                match c.get(&url).send().await {
                    Ok(r) if r.status() == 200 => ok += 1,
                    other => failed.push(format!("{other:?}")),
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            (ok, failed)
        })
    };

    // (a) HTTP/1.1 keep-alive after one request: idle (not the 1 s header timer: nothing was sent)
    let mut h1 = tls_from(ATTACKER, &s, &["http/1.1"]).await.unwrap();
    h1.write_all(b"GET /.well-known/atp/v1/health HTTP/1.1\r\nHost: localhost\r\n\r\n").await.unwrap();
    let reply = read_response(&mut h1).await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let h1 = watch(h1, Instant::now());

    // (b) a TLS connection that never sends anything
    let silent = tls_from(ATTACKER, &s, &["h2"]).await.unwrap();
    let silent = watch(silent, Instant::now());

    // (c) HTTP/2 without a stream; its SETTINGS announce the limits
    let mut h2 = tls_from(ATTACKER, &s, &["h2"]).await.unwrap();
    assert_eq!(h2.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.unwrap();
    h2.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap(); // SETTINGS, empty
    let (len, kind, flags, payload) = h2_frame(&mut h2).await;
    assert_eq!((kind, flags & 1), (4, 0), "the server's first frame is its SETTINGS");
    let settings: Vec<(u16, u32)> = payload
        .chunks(6)
        .take(len / 6)
        .map(|c| (u16::from_be_bytes([c[0], c[1]]), u32::from_be_bytes([c[2], c[3], c[4], c[5]])))
        .collect();
    assert!(settings.contains(&(3, 7)), "SETTINGS_MAX_CONCURRENT_STREAMS 7 in {settings:?}");
    assert!(settings.contains(&(6, 16384)), "SETTINGS_MAX_HEADER_LIST_SIZE 16384 in {settings:?}");
    h2.write_all(&[0, 0, 0, 4, 1, 0, 0, 0, 0]).await.unwrap(); // SETTINGS ACK
    let h2 = watch(h2, Instant::now());

    // (d) TCP without a TLS handshake: the handshake timeout (2 s)
    let bare = watch(tcp_from(ATTACKER, &s).await.unwrap(), Instant::now());

    let held = vec![h1, silent, h2, bare];
    assert_eq!(wait_closed(&held, 4, (idle + MARGIN).as_secs()).await, 4, "every idle connection is closed");
    let times = close_times(held).await;
    for (what, t) in ["HTTP/1.1 keep-alive", "silent TLS", "HTTP/2"].iter().zip(&times) {
        assert!(*t >= idle - Duration::from_secs(1), "{what}: closed after {t:?}, before the idle timeout");
        assert!(*t <= idle + MARGIN, "{what}: closed only after {t:?}");
    }
    assert!(times[3] >= Duration::from_millis(1500) && times[3] <= Duration::from_secs(2) + MARGIN, "{times:?}");
    let (ok, failed) = legit.await.unwrap();
    assert!(failed.is_empty() && ok > 10, "the legitimate client: {ok} ok, failures {failed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_request_body_is_cut() {
    let s = plain("body.test", "[limits]\nheader_read_timeout = 2\n");
    let mut c = tcp_from(ATTACKER, &s).await.unwrap();
    c.write_all(
        b"POST /.well-known/atp/v1/register HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
          Content-Length: 100\r\n\r\n{\"agent_id\"",
    )
    .await
    .unwrap();
    let t0 = Instant::now();
    let mut got = Vec::new();
    let end = tokio::time::timeout(Duration::from_secs(2) + MARGIN, c.read_to_end(&mut got)).await;
    assert!(end.is_ok(), "the connection is still open {:?} after the body stalled", t0.elapsed());
    assert!(t0.elapsed() >= Duration::from_millis(1500), "cut after {:?}", t0.elapsed());
    let text = String::from_utf8_lossy(&got);
    assert!(text.is_empty() || text.starts_with("HTTP/1.1 4"), "{text}");
    assert!(healthy(&s).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_the_client_does_not_read_is_cut_after_the_idle_timeout() {
    let s = plain("read.test", "[limits]\nidle_timeout = 3\n");
    let agent = register(&s, "big", "big-password").await;
    let body = "x".repeat(1_000_000);
    for n in 0..9 {
        let msg = serde_json::json!({"from": agent, "to": agent, "timestamp": now(), "nonce": format!("big-{n}"),
                                     "type": "message", "payload": {"body": body}});
        let r = client().post(s.url("message")).basic_auth(&agent, Some("big-password")).json(&msg).send().await;
        assert_eq!(r.unwrap().status(), 202);
    }
    // A client with a tiny receive window that asks for ~8 MB and then reads nothing.
    let sock = TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let mut c = sock.connect(s.addr().parse().unwrap()).await.unwrap();
    let auth = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, format!("{agent}:big-password"));
    c.write_all(
        format!(
            "GET /.well-known/atp/v1/messages?agent_id={agent}&limit=500 HTTP/1.1\r\nHost: x\r\n\
             Authorization: Basic {auth}\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut head = vec![0u8; 512];
    let n = c.read(&mut head).await.unwrap();
    let head = String::from_utf8_lossy(&head[..n]).into_owned();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let length: usize = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
        .expect("a Content-Length");
    assert!(length > 7_000_000, "the page is {length} bytes");
    // The server's writes stall; after the idle timeout it gives up on the connection.
    tokio::time::sleep(Duration::from_secs(3) + MARGIN).await;
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), c.read_to_end(&mut rest)).await;
    let body_got = rest.len() + n - head.find("\r\n\r\n").map(|i| i + 4).unwrap_or(n);
    assert!(body_got < length, "the whole response ({length} bytes) was kept for a client that did not read");
    assert!(healthy(&s).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_low_open_file_limit_lowers_the_cap_and_the_server_survives() {
    use std::os::unix::process::CommandExt;
    let o = {
        let mut o = Options::new("fd.test").config("[limits]\nmax_connections = 1000\nmax_connections_per_ip = 1000\n");
        o.tls = false;
        o
    };
    let home = tempfile::tempdir().unwrap();
    std::fs::write(home.path().join("config.toml"), o.config_toml.as_deref().unwrap()).unwrap();
    let port = free_port();
    let mut cmd = Server::command(&o, home.path(), port);
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit { rlim_cur: 64, rlim_max: 64 };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().unwrap();
    let s = Server { child, port, home, domain: o.domain.clone(), scheme: "http" };
    assert!(
        eventually(60, || async { s.log().contains("Starting ATP Server").then_some(()) }).await.is_some(),
        "{}",
        s.log()
    );
    let log = s.log();
    let cap: usize = log
        .split("max_connections lowered from 1000 to ")
        .nth(1)
        .and_then(|rest| rest.split(':').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no line saying the cap was lowered:\n{log}"));
    assert!((8..=48).contains(&cap), "cap {cap} under an open-file limit of 64");
    let mut held = Vec::new();
    for _ in 0..100 {
        held.push(open(ATTACKER, &s).await);
    }
    // Every connection over the cap is accepted and closed (none left waiting in the backlog
    // because accept failed for want of descriptors).
    assert!(wait_closed(&held, 100 - cap, 15).await >= 100 - cap, "at most {cap} stay open");
    // No busy loop while descriptors are short.
    let cpu = || {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", s.child.id())).unwrap();
        let f: Vec<&str> = stat.rsplit(')').next().unwrap().split_whitespace().collect();
        f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
    };
    let before = cpu();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ticks = cpu() - before;
    assert!(ticks < 50, "the server used {ticks} ticks of CPU in 2 s while full");
    for h in held {
        h.abort();
    }
    assert!(eventually(15, || async { healthy(&s).await.then_some(()) }).await.is_some(), "{}", s.log());
}
