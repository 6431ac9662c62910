//! Connection limits (docs/design.md §5b): what one client can make the server hold open.
//!
//! * **Caps**: at most `max_connections` connections at once, and `max_connections_per_ip` from
//!   one client address (IPv4 address, IPv6 /64). A connection over a cap is closed as soon as it
//!   is accepted — before the TLS handshake, so it costs an `accept` and a `close` — with a reset
//!   (`SO_LINGER` 0: no `TIME_WAIT` left on the server). Refusals are logged at most once per
//!   [`REFUSAL_LOG_EVERY`], with their counts.
//! * **TLS handshake timeout**: a handshake not finished within `handshake_timeout` is dropped.
//! * **Header-read timeout** (HTTP/1.1, slowloris): once the first byte of a request arrives on a
//!   connection with no request in flight, its head must be complete (the request handed to the
//!   router) within `header_read_timeout`, or the connection is closed.
//! * **Idle timeout**: a connection with no request in flight for `idle_timeout` is closed, however
//!   many bytes trickle in (HTTP/2 pings, a head that never completes); HTTP/1.1 keep-alive and
//!   HTTP/2 alike, and a connection that never sends anything after its handshake.
//! * **Stalls**: a response the client does not read (the socket's send buffer stays full) for
//!   `idle_timeout` closes the connection; a request body that brings no byte for
//!   `header_read_timeout` while the handler waits for it fails (the handler answers an error).
//! * **HTTP/2**: at most `http2_max_streams` concurrent streams per connection and a header list of
//!   at most [`HTTP2_MAX_HEADER_LIST`] bytes (announced in SETTINGS).
//!
//! hyper's own `http1().header_read_timeout` is not used: in hyper 1.x its timer also runs while a
//! keep-alive connection waits for its next request (so it would close every idle HTTP/1.1
//! connection after the header timeout, making `idle_timeout` meaningless there), and it does not
//! run at all while hyper-util's auto builder sniffs the protocol (a connection that sends nothing
//! after the TLS handshake was never timed) nor for HTTP/2. The timers here see both sides of a
//! connection: the bytes read ([`Conn`], the I/O under hyper) and the requests in flight
//! ([`Tracked`], the service hyper calls; a request counts until its response body is done).
//!
//! Open files: at start the soft `RLIMIT_NOFILE` is raised to the hard limit, and `max_connections`
//! is lowered (with a warning) when the limit, less the descriptors already open and a reserve,
//! leaves too little room for it, so that client connections alone never exhaust the descriptors. Should `accept` fail anyway (`EMFILE` from
//! other descriptors), axum-server's accept loop waits 50 ms and tries again: the server neither
//! spins nor stops, and connections wait in the listen backlog.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use axum::http::{Request, Response};
use axum_server::accept::{Accept, DefaultAcceptor};
use axum_server::tls_rustls::RustlsAcceptor;
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

/// Most bytes of an HTTP/2 header list (SETTINGS_MAX_HEADER_LIST_SIZE); HTTP/1.1 heads are bounded
/// by hyper's read buffer (400 KiB, 100 headers).
pub const HTTP2_MAX_HEADER_LIST: u32 = 16 << 10;
/// How often refused connections are reported in the log (at most).
pub const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);
/// Descriptors kept free, beyond those open when the server starts (the database, the listener,
/// the runtime), for everything but client connections (outbound transfers, DNS, SQLite's
/// temporary files): this many, or a quarter of the limit when that is less.
const FD_RESERVE: u64 = 256;

/// The connection limits of one server (`[limits]` in config.toml; README "Limits").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub handshake_timeout: Duration,
    pub http2_max_streams: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 4096,
            max_connections_per_ip: 64,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            handshake_timeout: Duration::from_secs(10),
            http2_max_streams: 100,
        }
    }
}

/// Connections are counted per IPv4 address and per IPv6 /64 (one host usually has a whole /64).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct IpKey(IpAddr);

impl IpKey {
    fn of(ip: IpAddr) -> IpKey {
        match ip {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpKey(IpAddr::V4(v4)),
                None => {
                    let s = v6.segments();
                    IpKey(IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0)))
                }
            },
            v4 => IpKey(v4),
        }
    }
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    Total,
    PerIp,
}

#[derive(Debug, Default)]
struct RefusalLog {
    last: Option<Instant>,
    total: u64,
    per_ip: u64,
    last_ip: Option<IpAddr>,
}

/// The counts shared by every connection of a server.
#[derive(Debug)]
struct Shared {
    limits: Limits,
    /// `max_connections` as enforced (lowered to fit the open-file limit).
    max_total: usize,
    total: AtomicUsize,
    per_ip: Mutex<HashMap<IpKey, usize>>,
    refusals: Mutex<RefusalLog>,
}

/// The limits of a running server: [`Guard::plain`] and [`Guard::tls`] put them on an
/// axum-server `Server`.
#[derive(Debug, Clone)]
pub struct Guard(Arc<Shared>);

impl Guard {
    /// Raises the soft open-file limit and fits `max_connections` under it (logging when lowered).
    pub fn new(limits: &Limits) -> Guard {
        let max_total = match raise_nofile() {
            Some(nofile) => {
                let fit = fit_connections(limits.max_connections, nofile, open_descriptors());
                if fit < limits.max_connections {
                    tracing::warn!(
                        configured = limits.max_connections,
                        enforced = fit,
                        open_file_limit = nofile,
                        "max_connections lowered to fit the open-file limit (raise it: ulimit -n, LimitNOFILE=)"
                    );
                    say!(
                        "max_connections lowered from {} to {fit}: the open-file limit is {nofile}",
                        limits.max_connections
                    );
                }
                fit
            }
            None => limits.max_connections,
        };
        tracing::info!(
            max_connections = max_total,
            max_connections_per_ip = limits.max_connections_per_ip,
            header_read_timeout = limits.header_read_timeout.as_secs(),
            idle_timeout = limits.idle_timeout.as_secs(),
            handshake_timeout = limits.handshake_timeout.as_secs(),
            http2_max_streams = limits.http2_max_streams,
            "connection limits"
        );
        Guard::with_cap(limits, max_total)
    }

    fn with_cap(limits: &Limits, max_total: usize) -> Guard {
        Guard(Arc::new(Shared {
            limits: limits.clone(),
            max_total: max_total.max(1),
            total: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
            refusals: Mutex::new(RefusalLog::default()),
        }))
    }

    /// Plain HTTP (`--no-tls`).
    pub fn plain(
        &self,
        server: axum_server::Server<DefaultAcceptor>,
    ) -> axum_server::Server<LimitAcceptor<DefaultAcceptor>> {
        self.apply(server)
    }

    /// TLS: the handshake bounded by `handshake_timeout` (axum-server's timer, and ours around it).
    pub fn tls(
        &self,
        server: axum_server::Server<RustlsAcceptor>,
    ) -> axum_server::Server<LimitAcceptor<RustlsAcceptor>> {
        let t = self.0.limits.handshake_timeout;
        self.apply(server.map(|a| a.handshake_timeout(t)))
    }

    fn apply<A>(&self, mut server: axum_server::Server<A>) -> axum_server::Server<LimitAcceptor<A>> {
        let l = &self.0.limits;
        let http = server.http_builder();
        http.http1().keep_alive(true);
        http.http2().max_concurrent_streams(l.http2_max_streams).max_header_list_size(HTTP2_MAX_HEADER_LIST);
        let guard = self.clone();
        server.map(|inner| LimitAcceptor { inner, guard })
    }

    /// Takes a connection slot for `ip`, or says which cap is full.
    fn admit(&self, ip: IpAddr) -> Result<Permit, Refusal> {
        let key = IpKey::of(ip);
        let s = &self.0;
        if s.total.fetch_add(1, Ordering::AcqRel) >= s.max_total {
            s.total.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::Total);
        }
        let mut per_ip = s.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        let n = per_ip.entry(key).or_insert(0);
        if *n >= s.limits.max_connections_per_ip {
            drop(per_ip);
            s.total.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::PerIp);
        }
        *n += 1;
        Ok(Permit { shared: self.0.clone(), key })
    }

    /// Counts a refusal; logs the counts at most once per [`REFUSAL_LOG_EVERY`].
    fn refused(&self, ip: IpAddr, why: Refusal) {
        let mut log = self.0.refusals.lock().unwrap_or_else(|p| p.into_inner());
        match why {
            Refusal::Total => log.total += 1,
            Refusal::PerIp => log.per_ip += 1,
        }
        log.last_ip = Some(ip);
        let now = Instant::now();
        if log.last.is_none_or(|t| now.duration_since(t) >= REFUSAL_LOG_EVERY) {
            tracing::warn!(
                over_per_ip_cap = log.per_ip,
                over_total_cap = log.total,
                per_ip_cap = self.0.limits.max_connections_per_ip,
                total_cap = self.0.max_total,
                last_from = %ip,
                "connections refused (closed at once)"
            );
            log.total = 0;
            log.per_ip = 0;
            log.last = Some(now);
        }
    }
}

/// `max_connections` fitted under an open-file limit, with `open` descriptors in use already.
fn fit_connections(max: usize, nofile: u64, open: u64) -> usize {
    let reserve = open + FD_RESERVE.min(nofile / 4);
    let room = nofile.saturating_sub(reserve).max(1);
    max.min(usize::try_from(room).unwrap_or(usize::MAX))
}

/// Descriptors open in this process now (0 where unknown).
fn open_descriptors() -> u64 {
    std::fs::read_dir("/proc/self/fd").map(|d| d.count() as u64).unwrap_or(0)
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns the soft limit in force.
fn raise_nofile() -> Option<u64> {
    #[cfg(unix)]
    {
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit/setrlimit only read and write the struct passed.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
                return None;
            }
            if lim.rlim_cur < lim.rlim_max {
                let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                    lim.rlim_cur = lim.rlim_max;
                }
            }
        }
        #[allow(clippy::unnecessary_cast)]
        Some(lim.rlim_cur as u64)
    }
    #[cfg(not(unix))]
    None
}

/// Closes with a reset: `SO_LINGER` 0 (never blocks: nothing is left to send).
fn reset(stream: TcpStream) {
    #[cfg(unix)]
    {
        use std::os::fd::AsRawFd;
        let linger = libc::linger { l_onoff: 1, l_linger: 0 };
        // SAFETY: a valid descriptor and a correctly sized option value.
        unsafe {
            libc::setsockopt(
                stream.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&linger as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            );
        }
    }
    drop(stream);
}

/// One connection's slot in the caps, given back when the connection is dropped.
#[derive(Debug)]
struct Permit {
    shared: Arc<Shared>,
    key: IpKey,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut per_ip = self.shared.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = per_ip.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                per_ip.remove(&self.key);
            }
        }
        drop(per_ip);
        self.shared.total.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The acceptor that enforces the caps and the timeouts around an inner one (TLS or none).
#[derive(Debug, Clone)]
pub struct LimitAcceptor<A> {
    inner: A,
    guard: Guard,
}

type Accepted<St, Sv> = io::Result<(Conn<St>, Tracked<Sv>)>;

impl<A, S> Accept<TcpStream, S> for LimitAcceptor<A>
where
    A: Accept<TcpStream, S> + Clone + Send + Sync + 'static,
    A::Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    A::Service: Send + 'static,
    A::Future: Send + 'static,
    S: Send + 'static,
{
    type Stream = Conn<A::Stream>;
    type Service = Tracked<A::Service>;
    type Future = Pin<Box<dyn Future<Output = Accepted<A::Stream, A::Service>> + Send>>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        let ip = match stream.peer_addr() {
            Ok(a) => a.ip(),
            Err(e) => return Box::pin(std::future::ready(Err(e))),
        };
        let permit = match self.guard.admit(ip) {
            Ok(p) => p,
            Err(why) => {
                reset(stream);
                self.guard.refused(ip, why);
                return Box::pin(std::future::ready(Err(io::Error::other("connection refused: over a cap"))));
            }
        };
        // As axum::serve does: small answers (HTTP/2 frames, a 202) are not held back by Nagle's
        // algorithm waiting for the client's delayed ACK.
        let _ = stream.set_nodelay(true);
        let limits = self.guard.0.limits.clone();
        let handshake = self.inner.accept(stream, service);
        Box::pin(async move {
            let (io, service) = match tokio::time::timeout(limits.handshake_timeout, handshake).await {
                Ok(r) => r?,
                Err(_) => {
                    tracing::debug!(peer = %ip, "TLS handshake timed out");
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "handshake timeout"));
                }
            };
            let state = Arc::new(ConnState::new());
            let conn = Conn::new(io, state.clone(), &limits, permit, ip);
            Ok((conn, Tracked { inner: service, state, stall: limits.header_read_timeout }))
        })
    }
}

/// What a connection's I/O and its service share: the requests in flight.
#[derive(Debug)]
struct ConnState {
    /// Requests started: a new value ends the header timer of the previous head.
    started: AtomicU64,
    busy: Mutex<Busy>,
}

#[derive(Debug)]
struct Busy {
    in_flight: usize,
    /// When the last request ended (or the connection began).
    idle_since: Instant,
    /// The reader to wake when the connection turns idle (so that it arms the idle timer).
    reader: Option<Waker>,
}

impl ConnState {
    fn new() -> ConnState {
        ConnState {
            started: AtomicU64::new(0),
            busy: Mutex::new(Busy { in_flight: 0, idle_since: Instant::now(), reader: None }),
        }
    }

    fn busy(&self) -> std::sync::MutexGuard<'_, Busy> {
        self.busy.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A request in flight, until its response body is done (or dropped).
#[derive(Debug)]
struct InFlight(Arc<ConnState>);

impl InFlight {
    fn start(state: Arc<ConnState>) -> InFlight {
        {
            let mut b = state.busy();
            b.in_flight += 1;
            state.started.fetch_add(1, Ordering::AcqRel);
        }
        InFlight(state)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut b = self.0.busy();
        b.in_flight -= 1;
        if b.in_flight == 0 {
            b.idle_since = Instant::now();
            if let Some(w) = b.reader.take() {
                w.wake();
            }
        }
    }
}

/// What the connection's first bytes say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proto {
    /// `n` bytes of the HTTP/2 preface's `PRI` seen so far.
    Unknown(usize),
    Http1,
    Http2,
}

const H2_START: &[u8] = b"PRI";

/// A connection's I/O with the header, idle and write-stall timers.
pub struct Conn<S> {
    io: S,
    state: Arc<ConnState>,
    header_timeout: Duration,
    idle_timeout: Duration,
    proto: Proto,
    /// The first byte of the current head: (requests started then, when).
    head: Option<(u64, Instant)>,
    read_timer: Pin<Box<Sleep>>,
    write_blocked: Option<Instant>,
    write_timer: Pin<Box<Sleep>>,
    peer: IpAddr,
    _permit: Permit,
}

impl<S> Conn<S> {
    fn new(io: S, state: Arc<ConnState>, limits: &Limits, permit: Permit, peer: IpAddr) -> Conn<S> {
        let far = Instant::now() + Duration::from_secs(86400 * 365);
        Conn {
            io,
            state,
            header_timeout: limits.header_read_timeout,
            idle_timeout: limits.idle_timeout,
            proto: Proto::Unknown(0),
            head: None,
            read_timer: Box::pin(tokio::time::sleep_until(far)),
            write_blocked: None,
            write_timer: Box::pin(tokio::time::sleep_until(far)),
            peer,
            _permit: permit,
        }
    }

    /// Notes bytes read: the protocol, and the start of a head on an idle connection.
    fn saw(&mut self, bytes: &[u8]) {
        for &b in bytes {
            match self.proto {
                Proto::Unknown(n) if n < H2_START.len() && H2_START[n] == b => {
                    self.proto = if n + 1 == H2_START.len() { Proto::Http2 } else { Proto::Unknown(n + 1) }
                }
                Proto::Unknown(_) => self.proto = Proto::Http1,
                _ => break,
            }
        }
        let b = self.state.busy();
        if b.in_flight == 0 {
            let started = self.state.started.load(Ordering::Acquire);
            if self.head.is_none_or(|(gen, _)| gen != started) {
                self.head = Some((started, Instant::now()));
            }
        }
    }

    /// When reading must have brought a request (none while one is in flight), and why.
    fn read_deadline(&mut self, cx: &Context<'_>) -> Option<(Instant, &'static str)> {
        let mut b = self.state.busy();
        match &b.reader {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => b.reader = Some(cx.waker().clone()),
        }
        if b.in_flight > 0 {
            return None;
        }
        let mut deadline = (b.idle_since + self.idle_timeout, "idle timeout");
        let started = self.state.started.load(Ordering::Acquire);
        if let Some((gen, at)) = self.head {
            if gen == started && self.proto != Proto::Http2 && at + self.header_timeout < deadline.0 {
                deadline = (at + self.header_timeout, "header read timeout");
            }
        }
        Some(deadline)
    }

    /// Applies the write-stall timer to a write's outcome.
    fn stalled<T>(&mut self, r: Poll<io::Result<T>>, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        if r.is_ready() {
            self.write_blocked = None;
            return r;
        }
        let since = *self.write_blocked.get_or_insert_with(Instant::now);
        let deadline = since + self.idle_timeout;
        if expired(&mut self.write_timer, deadline, cx) {
            tracing::debug!(peer = %self.peer, "connection closed: the client does not read");
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "write stalled")));
        }
        Poll::Pending
    }
}

/// Arms `timer` for `deadline`; whether it has passed.
fn expired(timer: &mut Pin<Box<Sleep>>, deadline: Instant, cx: &mut Context<'_>) -> bool {
    if Instant::now() >= deadline {
        return true;
    }
    if timer.deadline() != deadline {
        timer.as_mut().reset(deadline);
    }
    timer.as_mut().poll(cx).is_ready()
}

impl<S: AsyncRead + Unpin> AsyncRead for Conn<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    let n = buf.filled().len() - before;
                    let mut first = [0u8; 3];
                    let k = n.min(3);
                    first[..k].copy_from_slice(&buf.filled()[before..before + k]);
                    this.saw(&first[..k]);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                let Some((deadline, why)) = this.read_deadline(cx) else { return Poll::Pending };
                if expired(&mut this.read_timer, deadline, cx) {
                    tracing::debug!(peer = %this.peer, "connection closed: {why}");
                    if why == "idle timeout" {
                        // A clean end (EOF): hyper closes the connection without an error.
                        return Poll::Ready(Ok(()));
                    }
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, why)));
                }
                Poll::Pending
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Conn<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write(cx, buf);
        this.stalled(r, cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.stalled(r, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_flush(cx);
        this.stalled(r, cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_shutdown(cx);
        this.stalled(r, cx)
    }
}

/// The service of one connection: counts its requests in flight for [`Conn`]'s timers and bounds
/// request-body stalls.
#[derive(Debug, Clone)]
pub struct Tracked<S> {
    inner: S,
    state: Arc<ConnState>,
    stall: Duration,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<S, B, RB> tower_service::Service<Request<B>> for Tracked<S>
where
    S: tower_service::Service<Request<StallBody<B>>, Response = Response<RB>>,
    S::Future: Send + 'static,
    B: Body + Unpin,
    B::Error: Into<BoxError>,
{
    type Response = Response<TrackedBody<RB>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let in_flight = InFlight::start(self.state.clone());
        let stall = self.stall;
        let fut = self.inner.call(req.map(|body| StallBody { inner: body, stall, timer: None }));
        Box::pin(async move {
            let response = fut.await?;
            Ok(response.map(|inner| TrackedBody { inner, _in_flight: in_flight }))
        })
    }
}

/// A response body that keeps its request in flight until it is done.
#[derive(Debug)]
pub struct TrackedBody<B> {
    inner: B,
    _in_flight: InFlight,
}

impl<B: Body + Unpin> Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A request body that fails when no byte comes for `stall` while it is being read.
#[derive(Debug)]
pub struct StallBody<B> {
    inner: B,
    stall: Duration,
    timer: Option<Pin<Box<Sleep>>>,
}

impl<B> Body for StallBody<B>
where
    B: Body + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, BoxError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(r) => {
                this.timer = None;
                Poll::Ready(r.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let stall = this.stall;
                let timer = this.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(stall)));
                if timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Some(Err(
                        io::Error::new(io::ErrorKind::TimedOut, "request body stalled").into()
                    )));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_counted_per_ipv4_and_per_ipv6_64() {
        let k = |s: &str| IpKey::of(s.parse().unwrap());
        assert_eq!(k("2001:db8:1:2:3:4:5:6"), k("2001:db8:1:2:ffff::1"));
        assert_ne!(k("2001:db8:1:2::1"), k("2001:db8:1:3::1"));
        assert_eq!(k("::ffff:192.0.2.7"), k("192.0.2.7"));
        assert_ne!(k("192.0.2.7"), k("192.0.2.8"));
    }

    #[test]
    fn caps_refuse_and_permits_give_back() {
        let limits = Limits { max_connections: 3, max_connections_per_ip: 2, ..Limits::default() };
        let g = Guard::with_cap(&limits, 3);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let p1 = g.admit(a).unwrap();
        let _p2 = g.admit(a).unwrap();
        assert_eq!(g.admit(a).unwrap_err(), Refusal::PerIp);
        let _p3 = g.admit(b).unwrap();
        assert_eq!(g.admit(b).unwrap_err(), Refusal::Total);
        drop(p1);
        let _p4 = g.admit(b).unwrap();
        assert_eq!(g.0.total.load(Ordering::Acquire), 3);
        assert_eq!(g.0.per_ip.lock().unwrap().get(&IpKey::of(a)), Some(&1));
    }

    #[test]
    fn the_total_cap_fits_under_the_open_file_limit() {
        assert_eq!(fit_connections(4096, 1 << 20, 30), 4096);
        assert_eq!(fit_connections(4096, 1024, 30), 1024 - 256 - 30);
        assert_eq!(fit_connections(4096, 64, 24), 64 - 16 - 24);
        assert_eq!(fit_connections(10, 64, 24), 10);
        assert_eq!(fit_connections(4096, 0, 0), 1);
    }

    #[tokio::test]
    async fn a_stalled_request_body_fails() {
        struct Never;
        impl Body for Never {
            type Data = std::io::Cursor<Vec<u8>>;
            type Error = std::convert::Infallible;
            fn poll_frame(
                self: Pin<&mut Self>,
                _: &mut Context<'_>,
            ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
                Poll::Pending
            }
        }
        let mut body = StallBody { inner: Never, stall: Duration::from_millis(200), timer: None };
        let started = Instant::now();
        let r = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
        assert!(matches!(r, Some(Err(_))));
        assert!(started.elapsed() >= Duration::from_millis(200));
    }
}
