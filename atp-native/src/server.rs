//! `atp server start` (docs/protocol.md §9): prepares the home (keys, certificate, database), binds the
//! listener, serves the API over TLS 1.3 (or plain HTTP with `--no-tls`) and shuts down gracefully
//! on SIGTERM/SIGINT: stop accepting, let requests in flight finish (10 s at most), then flush the
//! counters and commit and close the database writer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use atp_wasm::env::{Clock, SystemClock};
use atp_wasm::relay::store::MessageStore;
use atp_wasm::relay::{counters, RelayConfig, RelayState};

use crate::config::{Settings, TlsMode};
use crate::delivery::transport::Transport;
use crate::delivery::Engine;
use crate::metrics::Metrics;
use crate::registry::{Entry, Registry};
use crate::resolver::ServerResolver;
use crate::routes::{self, AppState};
use crate::store::Backend;
use crate::tls;

/// How long in-flight requests may take after a shutdown signal.
const DRAIN: Duration = Duration::from_secs(10);
/// How often accepted-message fingerprints past the retry horizon are forgotten.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// How often this process's counts are added to the domain's counters in the database
/// (docs/design.md §4 "Counters"); `stats` and `metrics` flush too, and so does the shutdown.
const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Home(#[from] crate::home::HomeError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    Resolver(#[from] crate::resolver::ResolverSetupError),
    #[error(transparent)]
    Transport(#[from] crate::delivery::transport::TransportError),
    #[error(transparent)]
    Store(#[from] crate::store::backend::OpenError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Web(#[from] crate::routes::web::MissingWebDir),
    #[error("server: {0}")]
    Serve(std::io::Error),
}

/// Runs the server until a shutdown signal.
pub async fn run(s: Settings) -> Result<(), ServerError> {
    let home = &s.home;
    let web = s.web.as_ref().map(routes::web::WebRoot::open).transpose()?;
    home.ensure()?;
    let (signing_key, created) = home.load_or_create_key(&s.key_selector, SystemClock.now())?;
    if created {
        say!("Generated domain key '{}' in {}", s.key_selector, home.keys_dir().display());
    }
    let resolver = Arc::new(ServerResolver::from_settings(&s)?);
    let transport = Transport::new(resolver.clone(), s.delivery.peer_ca.as_deref())?;
    let store = Backend::open(&s.database, &node_name(s.listen.port()), s.pool_size).await?;
    if let Backend::Postgres(_) = store {
        say!("Using the shared database {}", s.database);
    }
    let mut relay = RelayConfig::new(&s.domain);
    relay.inbound.max_size = s.max_message_size;
    relay.admin_token = s.admin_token.clone();
    relay.quota = s.quota;
    relay.streams = s.streams;
    relay.registration = match s.registration {
        crate::cli::Registration::Open => atp_wasm::relay::Registration::Open,
        crate::cli::Registration::Token => atp_wasm::relay::Registration::Token,
        crate::cli::Registration::Closed => atp_wasm::relay::Registration::Closed,
    };
    let delivery_wake = Arc::new(tokio::sync::Notify::new());
    let state = Arc::new(AppState {
        domain: s.domain.clone(),
        relay,
        relay_state: RelayState::new(SystemClock.now()),
        store: store.clone(),
        resolver,
        hasher: crate::hasher::NativeHasher::new(0),
        delivery_wake: delivery_wake.clone(),
        metrics: Metrics::default(),
        web,
        cors: routes::web::Cors::new(&s.cors_origins),
    });

    let engine = Engine::new(state.clone(), transport, signing_key.clone(), &s, delivery_wake);
    let delivery = tokio::spawn(engine.run());
    let (stop_flushing, stop) = tokio::sync::watch::channel(false);
    let flusher = tokio::spawn(flush_counters(state.clone(), stop));
    let pruner = tokio::spawn(prune(
        store.clone(),
        state.relay.inbound.remote_max_age + state.relay.inbound.max_future_skew,
        s.retention,
    ));

    let listener =
        std::net::TcpListener::bind(s.listen).map_err(|source| ServerError::Bind { addr: s.listen, source })?;
    let local = listener.local_addr().unwrap_or(s.listen);
    publish(&s, local, &signing_key);
    let limits = crate::limits::Guard::new(&s.limits);
    let handle = axum_server::Handle::new();
    let signal_handle = handle.clone();
    let hub = store.hub().clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutdown signal: draining connections");
        // Streams and long polls end now rather than holding the drain (store::watch).
        hub.close();
        signal_handle.graceful_shutdown(Some(DRAIN));
    });
    if let Some(web) = &state.web {
        say!("Serving the web app at / from {}", web.describe());
    }
    let app = routes::router(state.clone())
        .layer(axum::middleware::from_fn(crate::logging::request_span))
        .into_make_service_with_connect_info::<SocketAddr>();
    let served = match &s.tls {
        TlsMode::Off => {
            let _hangup = tls::ignore_hangup();
            say!("Starting ATP Server: {} on HTTP://{local} (no TLS)", s.domain);
            limits.plain(axum_server::from_tcp(listener)).handle(handle).serve(app).await
        }
        mode => {
            let (cert, key) = match mode {
                TlsMode::Files { cert, key } => (cert.clone(), key.clone()),
                _ => {
                    let (c, k, created) = tls::self_signed(home, &s.domain)?;
                    say!(
                        "Using a self-signed certificate for {} ({}{}); clients on this machine pin it through the local registry, others need --ca-cert or --no-verify",
                        s.domain,
                        c.display(),
                        if created { ", just generated" } else { "" }
                    );
                    (c, k)
                }
            };
            // SIGHUP or new files replace the certificate for new handshakes (tls::Reloader).
            let store = tls::CertStore::open(&cert, &key)?;
            let _reloader = tls::Reloader::new(store.clone()).spawn(tls::POLL_FILES);
            let config = tls::server_config(store)?;
            say!("Starting ATP Server: {} on HTTPS://{local} (TLS 1.3, ALPN atp/1 h2 http/1.1)", s.domain);
            limits
                .tls(axum_server::from_tcp_rustls(listener, axum_server::tls_rustls::RustlsConfig::from_config(config)))
                .handle(handle)
                .serve(app)
                .await
        }
    };
    pruner.abort();
    delivery.abort();
    // The periodic flush ends between flushes (never in the middle of one), then the last one.
    let _ = stop_flushing.send(true);
    let _ = flusher.await;
    flush(&state).await;
    store.close().await;
    tracing::info!("stopped");
    served.map_err(ServerError::Serve)
}

/// Publishes this server in the local registry (zero-config discovery between servers of one home,
/// [`crate::registry`]) when it listens on loopback or on every address.
fn publish(s: &Settings, local: SocketAddr, key: &atp_wasm::keys::DomainKey) {
    if !s.local_registry || s.tls == TlsMode::Off {
        return;
    }
    let atk =
        [(s.key_selector.clone(), atp_wasm::records::atk::AtkRecord::new(*key.public_key().as_bytes()).to_string())];
    let Some(mut entry) = Entry::for_listener(&s.domain, local, atk.into_iter().collect()) else { return };
    // The certificate's SHA-256, which clients of this machine pin (the self-signed one is made here
    // on a first start, and reused by the TLS set-up below).
    let cert = match &s.tls {
        TlsMode::Files { cert, .. } => Ok(cert.clone()),
        _ => tls::self_signed(&s.home, &s.domain).map(|(cert, _, _)| cert).map_err(|e| e.to_string()),
    };
    match cert.and_then(|c| crate::http::CertPin::of_pem_file(&c).map_err(|e| e.to_string())) {
        Ok(pin) => entry.cert_sha256 = Some(pin.to_hex()),
        Err(e) => tracing::warn!(error = %e, "no certificate fingerprint for the local registry"),
    }
    if let Err(e) = Registry::new(s.home.registry_dir()).publish(&entry) {
        tracing::warn!(error = %e, "could not publish this server in the local registry");
    }
}

/// This node's name in the lease owner tokens of a shared database (docs/design.md §5d):
/// `<hostname>:<port>`, stable across restarts, so a restarted node frees its own earlier leases
/// at once and never another node's.
fn node_name(port: u16) -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most that much.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let host = if ok { String::from_utf8_lossy(&buf[..end]).into_owned() } else { "atp".into() };
    format!("{host}:{port}")
}

/// Forgets dedup rows older than `keep` seconds and, with `[store] retention_days`, removes inbox
/// messages older than `retention` seconds (docs/protocol.md §6.5): now, and then every
/// [`PRUNE_EVERY`].
async fn prune(store: Backend, keep: i64, retention: Option<i64>) {
    loop {
        match store.prune_dedup(SystemClock.now() - keep).await {
            Ok(n) if n > 0 => tracing::info!(rows = n, "pruned dedup entries past the retry horizon"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "pruning dedup entries failed"),
        }
        if let Some(r) = retention {
            match store.expire(SystemClock.now() - r).await {
                Ok(n) if n > 0 => tracing::info!(messages = n, "removed inbox messages past the retention time"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "removing old inbox messages failed"),
            }
        }
        tokio::time::sleep(PRUNE_EVERY).await;
    }
}

/// Adds this process's counts to the domain's counters every [`FLUSH_EVERY`] until `stop`.
async fn flush_counters(state: Arc<AppState>, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(FLUSH_EVERY) => flush(&state).await,
            _ = stop.changed() => return,
        }
    }
}

/// Adds this process's counts to the domain's counters (a failure leaves them for the next flush).
async fn flush(state: &AppState) {
    let r = &state.relay_state;
    if let Err(e) = counters::flush(&state.store, &r.stats, &r.flushed, SystemClock.now()).await {
        tracing::warn!(error = %e, "counters not flushed to the database");
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {},
                    _ = term.recv() => {},
                }
            }
            Err(_) => ctrl_c.await,
        }
    }
    #[cfg(not(unix))]
    ctrl_c.await;
}
