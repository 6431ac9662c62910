//! `atp`: the Agent Transfer Protocol server (and, later, its command line).

mod api_error;
mod credentials;
mod home;
mod overrides;
mod routes;
mod store;
mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use atp_wasm::env::{Clock, SystemClock};
use atp_wasm::pipeline::InboundConfig;
use clap::{Args, Parser, Subcommand};

use crate::routes::{AppState, Registration};

#[derive(Parser)]
#[command(name = "atp", version, about = "Agent Transfer Protocol server")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run an ATP server.
    Server {
        #[command(subcommand)]
        action: ServerAction,
    },
}

#[derive(Subcommand)]
enum ServerAction {
    /// Start the server (TLS 1.3; a self-signed certificate unless --cert/--key are given).
    Start(StartArgs),
}

#[derive(Args)]
struct StartArgs {
    /// The domain this server serves (agents are `name@<domain>`).
    #[arg(long, env = "ATP_DOMAIN")]
    domain: String,
    #[arg(long, env = "ATP_PORT", default_value_t = atp_wasm::DEFAULT_PORT)]
    port: u16,
    #[arg(long, env = "ATP_HOST", default_value = "0.0.0.0")]
    host: String,
    /// PEM certificate chain (with --key).
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    /// PEM private key (with --cert).
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
    /// Serve plain HTTP (for a TLS-terminating proxy or local tests).
    #[arg(long)]
    no_tls: bool,
    /// Bearer token for the admin routes (agents, stats, inspect).
    #[arg(long, env = "ATP_ADMIN_TOKEN")]
    admin_token: Option<String>,
    /// Who may register agents.
    #[arg(long, value_enum, default_value = "open")]
    registration: Registration,
    /// State directory (default: $ATP_HOME, else ~/.atp).
    #[arg(long)]
    home: Option<PathBuf>,
    /// Log filter (tracing env-filter syntax, e.g. info, debug, atp=debug).
    #[arg(long, default_value = "info")]
    log_level: String,
}

fn fail(msg: impl std::fmt::Display) -> ! {
    eprintln!("error: {msg}");
    std::process::exit(1);
}

fn main() {
    let cli = Cli::parse();
    match cli.command {
        Command::Server { action: ServerAction::Start(args) } => {
            let rt = tokio::runtime::Runtime::new().unwrap_or_else(|e| fail(e));
            if let Err(e) = rt.block_on(start(args)) {
                fail(e);
            }
        }
    }
}

async fn start(args: StartArgs) -> Result<(), String> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&args.log_level).map_err(|e| e.to_string())?)
        .with_writer(std::io::stderr)
        .init();
    let domain = args.domain.trim_end_matches('.').to_ascii_lowercase();
    atp_wasm::identity::validate_domain(&domain).map_err(|e| format!("--domain {domain}: {e}"))?;
    let home = home::Home::resolve(args.home);
    home.ensure().map_err(|e| e.to_string())?;
    let config = home.config().map_err(|e| e.to_string())?;
    let selector = config.key_selector.clone().unwrap_or_else(|| "default".into());
    let (key, created) = home.load_or_create_key(&selector, SystemClock.now()).map_err(|e| e.to_string())?;
    if created {
        eprintln!("Generated domain key '{selector}' in {}", home.keys_dir().display());
    }
    let resolver = if config.local_mode {
        overrides::load(config.peers_file.as_deref(), config.dns_override_file.as_deref())?
    } else {
        atp_wasm::env::StaticResolver::new()
    };
    let store = store::Store::open(&home.db_path(&domain)).map_err(|e| e.to_string())?;
    let mut inbound = InboundConfig::new(&domain);
    if let Some(max) = config.server.max_message_size {
        inbound.max_size = max;
    }
    let state = Arc::new(AppState {
        domain: domain.clone(),
        inbound,
        store: store.clone(),
        resolver,
        admin_token: args.admin_token.or(config.server.admin_token.clone()),
        registration: args.registration,
        cache: Default::default(),
        counters: Default::default(),
        started: Instant::now(),
    });
    let _ = key; // the delivery engine signs with it
    let app = routes::router(state).into_make_service_with_connect_info::<SocketAddr>();
    let addr: SocketAddr = format!("{}:{}", args.host, args.port)
        .parse()
        .or_else(|_| format!("[{}]:{}", args.host, args.port).parse())
        .map_err(|_| format!("invalid --host {}", args.host))?;

    // Forget dedup entries past the retry horizon, hourly.
    let horizon = atp_wasm::retry::DEFAULT_HORIZON_SECS;
    tokio::spawn(async move {
        loop {
            let _ = store.prune_dedup(SystemClock.now() - horizon).await;
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
    });

    let handle = axum_server::Handle::new();
    let shutdown = handle.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down");
        shutdown.graceful_shutdown(Some(Duration::from_secs(10)));
    });
    if args.no_tls {
        eprintln!("Starting ATP Server: {domain} on HTTP://{addr} (no TLS)");
        axum_server::bind(addr).handle(handle).serve(app).await.map_err(|e| e.to_string())
    } else {
        let (cert, key) = match (args.cert.or(config.server.tls_cert), args.key.or(config.server.tls_key)) {
            (Some(c), Some(k)) => (c, k),
            _ => {
                let (c, k, created) = tls::self_signed(&home, &domain).map_err(|e| e.to_string())?;
                eprintln!(
                    "Using a self-signed certificate ({}{}); clients need --no-verify",
                    c.display(),
                    if created { ", just created" } else { "" }
                );
                (c, k)
            }
        };
        let cfg = tls::server_config(&cert, &key).map_err(|e| e.to_string())?;
        eprintln!("Starting ATP Server: {domain} on HTTPS://{addr}");
        axum_server::bind_rustls(addr, axum_server::tls_rustls::RustlsConfig::from_config(cfg))
            .handle(handle)
            .serve(app)
            .await
            .map_err(|e| e.to_string())
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return ctrl_c.await.unwrap_or(()),
        };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
