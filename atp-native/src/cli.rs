//! The command line (protocol.md §9: the reference's `atp server start` and its options, plus
//! `--registration`, `--home` and `--log-level` filters).
//!
//! Every option is optional here: [`crate::config::Settings::resolve`] applies the precedence
//! flags > environment (`ATP_*`, read by clap) > `config.toml` > defaults (design.md §6).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(name = "atp", version, about = "Agent Transfer Protocol (ATP) server")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run an ATP server.
    Server {
        #[command(subcommand)]
        action: ServerAction,
    },
}

#[derive(Subcommand, Debug)]
pub enum ServerAction {
    /// Start the server (TLS 1.3; a self-signed certificate unless --cert/--key are given).
    Start(StartArgs),
}

/// Who may register agents (`POST register`, protocol.md §6; design.md §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Registration {
    /// Anyone (the reference's behaviour, and the default).
    Open,
    /// Only with `Authorization: Bearer <admin token>`.
    Token,
    /// Nobody (agents are provisioned otherwise).
    Closed,
}

#[derive(Args, Debug, Default)]
pub struct StartArgs {
    /// The domain this server serves (agents are `name@<domain>`). Also `[server] domain`.
    #[arg(long, env = "ATP_DOMAIN")]
    pub domain: Option<String>,
    /// TCP port [default: 7443]. Also `[server] port`.
    #[arg(long, env = "ATP_PORT")]
    pub port: Option<u16>,
    /// Address to listen on [default: 0.0.0.0]. Also `[server] host`.
    #[arg(long, env = "ATP_HOST")]
    pub host: Option<String>,
    /// PEM certificate chain (with --key). Also `[server] tls_cert`.
    #[arg(long, env = "ATP_CERT", requires = "key")]
    pub cert: Option<PathBuf>,
    /// PEM private key (with --cert). Also `[server] tls_key`.
    #[arg(long, env = "ATP_KEY", requires = "cert")]
    pub key: Option<PathBuf>,
    /// Serve plain HTTP (behind a TLS-terminating proxy, or for local tests).
    #[arg(long, env = "ATP_NO_TLS")]
    pub no_tls: bool,
    /// Bearer token for the admin routes (agents, stats, inspect, metrics). Also `[server] admin_token`.
    #[arg(long, env = "ATP_ADMIN_TOKEN")]
    pub admin_token: Option<String>,
    /// Who may register agents [default: open]. Also `[server] registration`.
    #[arg(long, env = "ATP_REGISTRATION", value_enum)]
    pub registration: Option<Registration>,
    /// State directory [default: ~/.atp]; also ATP_HOME.
    #[arg(long, env = "ATP_HOME")]
    pub home: Option<PathBuf>,
    /// Log filter: DEBUG|INFO|WARNING|ERROR, or tracing env-filter syntax (e.g. `atp=debug`) [default: info].
    #[arg(long, env = "ATP_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// Discovery overrides in the reference's `peers.toml` format (quoted domain tables with `host`,
    /// `port`, `ip_addresses`). Also `peers_file` with `local_mode = true` in config.toml.
    #[arg(long = "peers", env = "ATP_PEERS", value_name = "FILE")]
    pub peers: Option<PathBuf>,
    /// TXT overrides in the reference's `dns_override.toml` format (quoted name tables with `record`).
    /// Also `dns_override_file` with `local_mode = true` in config.toml.
    #[arg(long = "dns-override", env = "ATP_DNS_OVERRIDE", value_name = "FILE")]
    pub dns_override: Option<PathBuf>,
    /// Ask this DNS server (IP:PORT, UDP and TCP) instead of the system's resolvers.
    #[arg(long, env = "ATP_DNS_SERVER", value_name = "IP:PORT")]
    pub dns_server: Option<std::net::SocketAddr>,
    /// Don't publish this server in, or discover peers through, the per-user local registry
    /// (`<home>/registry/`, loopback servers only).
    #[arg(long, env = "ATP_NO_LOCAL_REGISTRY")]
    pub no_local_registry: bool,
    /// Skip certificate verification for every outbound transfer (local peers are never verified).
    #[arg(long, env = "ATP_NO_VERIFY_PEERS")]
    pub no_verify_peers: bool,
    /// Extra trusted root certificate (PEM) for outbound transfers, e.g. a test CA.
    #[arg(long, env = "ATP_PEER_CA", value_name = "FILE")]
    pub peer_ca: Option<PathBuf>,
    /// Seconds before the first retry of a failed transfer; doubles up to --retry-cap [default: 30].
    /// Also `[delivery] retry_base`.
    #[arg(long, env = "ATP_RETRY_BASE", value_name = "SECS")]
    pub retry_base: Option<u64>,
    /// Longest wait between retries [default: 3600]. Also `[delivery] retry_cap`.
    #[arg(long, env = "ATP_RETRY_CAP", value_name = "SECS")]
    pub retry_cap: Option<u64>,
    /// Age after which an undelivered message bounces [default: 345600 = 4 days]. Also `[delivery] max_age`.
    #[arg(long, env = "ATP_MAX_AGE", value_name = "SECS")]
    pub max_age: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_the_reference_options() {
        let cli = Cli::try_parse_from([
            "atp",
            "server",
            "start",
            "--domain",
            "alpha.test",
            "--port",
            "17601",
            "--host",
            "127.0.0.1",
            "--cert",
            "c.pem",
            "--key",
            "k.pem",
            "--admin-token",
            "tok",
            "--registration",
            "token",
            "--log-level",
            "WARNING",
        ])
        .unwrap();
        let Command::Server { action: ServerAction::Start(a) } = cli.command;
        assert_eq!(a.domain.as_deref(), Some("alpha.test"));
        assert_eq!(a.port, Some(17601));
        assert_eq!(a.registration, Some(Registration::Token));
        assert!(!a.no_tls);
        assert!(Cli::try_parse_from(["atp", "server", "start", "--cert", "c.pem"]).is_err(), "--cert needs --key");
        assert!(Cli::try_parse_from(["atp", "server", "start", "--registration", "maybe"]).is_err());
    }
}
