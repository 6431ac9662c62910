//! The command line (docs/protocol.md §9): `atp server start` with the reference's options plus
//! `--registration`, `--home` and `--log-level` filters, and the client commands `agent`, `send`,
//! `recv`, `keys`, `status`, `inspect` and `dns`, and the operator's `doctor`, `completions` and
//! `man` (run by [`crate::commands`]).
//!
//! Every server option is optional here: [`crate::config::Settings::resolve`] applies the
//! precedence flags > environment (`ATP_*`, read by clap) > `config.toml` > defaults (docs/design.md §6).
//! Client commands take their defaults from `ATP_*` variables and `config.toml`'s `agent_id`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(name = "atp", version, about = "Agent Transfer Protocol (ATP): server and command-line client")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once per process: the size of `server start`'s arguments does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run an ATP server.
    Server {
        #[command(subcommand)]
        action: ServerAction,
    },
    /// Register and list agents on a server.
    Agent {
        #[command(subcommand)]
        action: AgentAction,
    },
    /// Send a message (as one of the server's agents).
    Send(SendArgs),
    /// Receive new messages (a cursor per agent and server remembers what was read).
    Recv(RecvArgs),
    /// Act as one agent for an AI agent: an MCP server on stdin/stdout with the tools send_message,
    /// check_inbox, whoami, server_status and verify_message, and the resource atp://inbox.
    Mcp(McpArgs),
    /// Manage the domain's Ed25519 signing keys (in <home>/keys).
    Keys {
        #[command(subcommand)]
        action: KeysAction,
    },
    /// Show a server's health and capabilities; with --admin-token also its statistics.
    Status(StatusArgs),
    /// Show where a message is (admin).
    Inspect(InspectArgs),
    /// Generate and check the DNS records of a domain.
    Dns {
        #[command(subcommand)]
        action: DnsAction,
    },
    /// Check everything mail for a domain needs, with a fix for each problem: DNS records, the
    /// certificate, the port, the clock, the home's permissions, disk space and the queue.
    Doctor(DoctorArgs),
    /// Move a domain's database between backends (SQLite to PostgreSQL).
    Store {
        #[command(subcommand)]
        action: StoreAction,
    },
    /// Print a shell completion script.
    Completions(CompletionsArgs),
    /// Print the manual page (roff), or write one page per command with --dir.
    Man(ManArgs),
}

#[derive(Subcommand, Debug)]
pub enum StoreAction {
    /// Copy a stopped server's SQLite database into an empty PostgreSQL database (agents, inboxes with
    /// their ids, the queue, dedup records, backoff); the SQLite file is left as it was.
    Migrate(StoreMigrateArgs),
}

#[derive(Args, Debug)]
pub struct StoreMigrateArgs {
    /// The SQLite database: sqlite:///path/to/<domain>.db (the server must be stopped).
    #[arg(long, value_name = "URL")]
    pub from: String,
    /// The PostgreSQL database: postgres://user:password@host:port/dbname (empty).
    #[arg(long, value_name = "URL")]
    pub to: String,
    #[arg(long, value_enum, default_value = "text")]
    pub output: Output,
}

#[derive(Args, Debug)]
pub struct DoctorArgs {
    /// The domain to check.
    #[arg(long)]
    pub domain: String,
    /// Ask this DNS server (IP:PORT) instead of the system's resolvers.
    #[arg(long, value_name = "IP:PORT")]
    pub dns_server: Option<std::net::SocketAddr>,
    /// Check this endpoint (host[:port]) instead of the one DNS discovery finds.
    #[arg(long, value_name = "HOST[:PORT]")]
    pub server: Option<String>,
    /// Also trust the CA certificates in this PEM file when checking the certificate chain.
    #[arg(long, env = "ATP_CA_CERT", value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
    /// ATK selectors to check [default: the live keys of the home's keyring, else "default"].
    #[arg(long = "selector")]
    pub selectors: Vec<String>,
    /// A certificate that expires within this many days is a problem.
    #[arg(long, default_value_t = 14, value_name = "DAYS")]
    pub cert_days: i64,
    /// A clock further than this from the server's is a problem (receivers refuse messages more
    /// than 60 s in their future).
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    pub max_skew: i64,
    /// Less free space than this (MiB) on the home's file system is a problem.
    #[arg(long, default_value_t = 512, value_name = "MIB")]
    pub min_free_mib: u64,
    /// A message waiting for delivery longer than this is a problem.
    #[arg(long, default_value_t = 3600, value_name = "SECS")]
    pub queue_age: i64,
    /// The server's database, checked read-only: `sqlite:///path/to/file.db` [default:
    /// <home>/data/<domain>.db] or `postgres://user:password@host:port/dbname`.
    #[arg(long, env = "ATP_DATABASE", value_name = "URL", hide_env_values = true)]
    pub database: Option<String>,
    #[arg(long, value_enum, default_value = "text")]
    pub output: Output,
    #[command(flatten)]
    pub home: HomeOpt,
}

#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Args, Debug)]
pub struct ManArgs {
    /// Write atp.1 and a page per command (atp-server-start.1, …) into this directory.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// `--output`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Pretty-printed JSON on stdout (errors too, as {"status":"error",…}).
    Json,
    /// Lines for people.
    Text,
}

/// How to reach a server.
#[derive(Args, Debug, Clone)]
pub struct ServerOpts {
    /// Server: host, host:port, https://host[:port], http://host[:port] (warns), [IPv6]:port.
    /// The default port is 7443.
    #[arg(long, env = "ATP_SERVER")]
    pub server: String,
    /// Do not verify the server's TLS certificate.
    #[arg(long)]
    pub no_verify: bool,
    /// Also trust the certificates in this PEM file (e.g. the server's self-signed certificate).
    #[arg(long, env = "ATP_CA_CERT", value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
}

/// `--home`.
#[derive(Args, Debug, Clone, Default)]
pub struct HomeOpt {
    /// State directory (keys, cursors, config.toml) [default: ~/.atp]; also ATP_HOME.
    #[arg(long, env = "ATP_HOME")]
    pub home: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum AgentAction {
    /// Register an agent (NAME or NAME@DOMAIN); asks for the password twice unless -p is given.
    Register(RegisterArgs),
    /// List the registered agents (admin).
    List(AgentListArgs),
}

#[derive(Args, Debug)]
pub struct RegisterArgs {
    /// Agent name; without @ it gets the server's domain.
    pub name: String,
    #[command(flatten)]
    pub server: ServerOpts,
    /// Password (asked on the terminal, hidden, when absent).
    #[arg(short = 'p', long, env = "ATP_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// Admin bearer token, for servers started with --registration token.
    #[arg(long, env = "ATP_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    #[arg(long, value_enum, default_value = "text")]
    pub output: Output,
    #[command(flatten)]
    pub home: HomeOpt,
}

#[derive(Args, Debug)]
pub struct AgentListArgs {
    #[command(flatten)]
    pub server: ServerOpts,
    /// Admin bearer token of the server.
    #[arg(long, env = "ATP_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: String,
    #[arg(long, value_enum, default_value = "text")]
    pub output: Output,
    #[command(flatten)]
    pub home: HomeOpt,
}

#[derive(Args, Debug)]
pub struct SendArgs {
    /// Recipient; without @ it gets the server's domain.
    pub to: String,
    /// Sender, one of the server's agents [default: agent_id in config.toml].
    #[arg(long)]
    pub from: Option<String>,
    /// The sender's password (asked on the terminal when absent).
    #[arg(short = 'P', long, env = "ATP_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// Message body (payload {"body": …}).
    #[arg(short = 'b', long)]
    pub body: Option<String>,
    /// Message subject (payload {"subject": …}).
    #[arg(short = 's', long)]
    pub subject: Option<String>,
    /// JSON file used as the whole payload ('-' reads stdin).
    #[arg(short = 'p', long, value_name = "FILE", conflicts_with_all = ["body", "subject"])]
    pub payload: Option<PathBuf>,
    /// Carbon-copy addresses (metadata only; repeat or separate with commas).
    #[arg(long, value_delimiter = ',')]
    pub cc: Vec<String>,
    #[command(flatten)]
    pub server: ServerOpts,
    #[arg(long, value_enum, default_value = "json")]
    pub output: Output,
    #[command(flatten)]
    pub home: HomeOpt,
}

#[derive(Args, Debug)]
pub struct RecvArgs {
    /// The receiving agent [default: agent_id in config.toml].
    #[arg(long)]
    pub agent_id: Option<String>,
    /// The agent's password (asked on the terminal when absent).
    #[arg(short = 'P', long, env = "ATP_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    #[command(flatten)]
    pub server: ServerOpts,
    /// Wait up to SECS seconds for a message when there is none [--wait alone: 30].
    #[arg(long, value_name = "SECS", num_args = 0..=1, default_missing_value = "30")]
    pub wait: Option<u64>,
    /// At most N messages [default: 50; the server caps it at 500].
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=500))]
    pub limit: u32,
    /// Keep printing new messages until interrupted (JSON output: one message per line).
    #[arg(long, conflicts_with = "wait")]
    pub follow: bool,
    /// Read from the first message again instead of after the saved cursor.
    #[arg(long)]
    pub all: bool,
    /// Acknowledge what was printed: the server removes it from the inbox (atp servers only).
    #[arg(long)]
    pub ack: bool,
    #[arg(long, value_enum, default_value = "json")]
    pub output: Output,
    #[command(flatten)]
    pub home: HomeOpt,
}

/// `atp mcp` (docs/design.md §1.2; run by [`crate::commands::mcp`]).
#[derive(Args, Debug)]
pub struct McpArgs {
    /// The agent to act as, one of the server's agents [default: agent_id in config.toml].
    #[arg(long)]
    pub agent_id: Option<String>,
    /// Read the agent's password from this environment variable (preferred: it keeps the password
    /// out of the MCP client's command line). Wins over --password.
    #[arg(long, value_name = "VAR")]
    pub password_env: Option<String>,
    /// The agent's password (asked on the terminal when neither this nor --password-env is given).
    #[arg(short = 'P', long, env = "ATP_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    #[command(flatten)]
    pub server: ServerOpts,
    /// Seconds between two looks at the inbox while a client is subscribed to atp://inbox (new mail
    /// is found by polling until servers push it).
    #[arg(long, default_value_t = 5, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub poll_interval: u64,
    /// Ask this DNS server (IP:PORT) for the senders' keys when verifying signatures [default: the
    /// home's config.toml, else the system's resolvers].
    #[arg(long, value_name = "IP:PORT")]
    pub dns_server: Option<std::net::SocketAddr>,
    /// What to log on stderr (stdout carries the protocol): a tracing filter.
    #[arg(long, default_value = "warn")]
    pub log_level: String,
    #[command(flatten)]
    pub home: HomeOpt,
}

#[derive(Subcommand, Debug)]
pub enum KeysAction {
    /// Generate a key pair (refuses to replace an existing selector without --force).
    Generate(KeyGenerateArgs),
    /// Show a key's public half (the ATK p= value).
    Show(KeyShowArgs),
    /// List the keys of the keyring.
    List(KeyListArgs),
    /// Generate a new key and keep the old one (both stay published until you retire the old).
    Rotate(KeyRotateArgs),
}

#[derive(Args, Debug)]
pub struct KeyGenerateArgs {
    /// Key selector (a DNS label).
    #[arg(long, default_value = "default")]
    pub selector: String,
    /// Replace an existing key with this selector.
    #[arg(long)]
    pub force: bool,
    #[arg(long, value_enum, default_value = "text")]
    pub output: Output,
    #[command(flatten)]
    pub home: HomeOpt,
}

#[derive(Args, Debug)]
pub struct KeyShowArgs {
    #[arg(long, default_value = "default")]
    pub selector: String,
    /// Show the public key only (not the private key's path).
    #[arg(long)]
    pub public: bool,
    #[arg(long, value_enum, default_value = "text")]
    pub output: Output,
    #[command(flatten)]
    pub home: HomeOpt,
}

#[derive(Args, Debug)]
pub struct KeyListArgs {
    #[arg(long, value_enum, default_value = "text")]
    pub output: Output,
    #[command(flatten)]
    pub home: HomeOpt,
}

#[derive(Args, Debug)]
pub struct KeyRotateArgs {
    /// The current key (kept).
    #[arg(long, default_value = "default")]
    pub old_selector: String,
    /// The new key's selector.
    #[arg(long)]
    pub new_selector: String,
    #[arg(long, value_enum, default_value = "text")]
    pub output: Output,
    #[command(flatten)]
    pub home: HomeOpt,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    pub server: ServerOpts,
    /// Admin bearer token: adds the server's statistics.
    #[arg(long, env = "ATP_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    #[arg(long, value_enum, default_value = "text")]
    pub output: Output,
    #[command(flatten)]
    pub home: HomeOpt,
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// The message's nonce (as `send` printed it).
    pub nonce: String,
    #[command(flatten)]
    pub server: ServerOpts,
    /// Admin bearer token of the server.
    #[arg(long, env = "ATP_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: String,
    #[arg(long, value_enum, default_value = "text")]
    pub output: Output,
    #[command(flatten)]
    pub home: HomeOpt,
}

#[derive(Subcommand, Debug)]
pub enum DnsAction {
    /// Print the zone-file records (SVCB, A/AAAA, ATS, one ATK per live key) for a domain.
    Generate(DnsGenerateArgs),
    /// Look the records up and report each as OK, missing or invalid.
    Check(DnsCheckArgs),
}

#[derive(Args, Debug)]
pub struct DnsGenerateArgs {
    /// The domain of the server.
    #[arg(long)]
    pub domain: String,
    /// The server's public address (published as atp.<domain> and allowed by ATS).
    #[arg(long)]
    pub ip: std::net::IpAddr,
    /// Key selector to create when the keyring lacks it [default: key_selector in config.toml, else
    /// "default"]. Records are printed for every live key.
    #[arg(long)]
    pub selector: Option<String>,
    /// The server's port.
    #[arg(long, default_value_t = atp_wasm::DEFAULT_PORT)]
    pub port: u16,
    #[arg(long, value_enum, default_value = "text")]
    pub output: Output,
    #[command(flatten)]
    pub home: HomeOpt,
}

#[derive(Args, Debug)]
pub struct DnsCheckArgs {
    /// The domain to check.
    #[arg(long)]
    pub domain: String,
    /// ATK selectors to check [default: the live keys of the keyring, else "default"].
    #[arg(long = "selector")]
    pub selectors: Vec<String>,
    /// Ask this DNS server (IP:PORT) instead of the system's resolvers.
    #[arg(long, value_name = "IP:PORT")]
    pub dns_server: Option<std::net::SocketAddr>,
    #[arg(long, value_enum, default_value = "text")]
    pub output: Output,
    #[command(flatten)]
    pub home: HomeOpt,
}

#[derive(Subcommand, Debug)]
pub enum ServerAction {
    /// Start the server (TLS 1.3; a self-signed certificate unless --cert/--key are given).
    Start(StartArgs),
}

/// Who may register agents (`POST register`, docs/protocol.md §6; docs/design.md §3).
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
    /// Log lines for people (text) or one JSON object per line (json) [default: text]. Also
    /// `[server] log_format`.
    #[arg(long, env = "ATP_LOG_FORMAT", value_enum)]
    pub log_format: Option<crate::logging::LogFormat>,
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
    /// Where the domain's data lives: `sqlite:///path/to/file.db` [default: <home>/data/<domain>.db]
    /// or `postgres://user:password@host:port/dbname`, which any number of atp nodes of the domain
    /// may share (docs/design.md §5d). Also `[store] url`.
    #[arg(long, env = "ATP_DATABASE", value_name = "URL", hide_env_values = true)]
    pub database: Option<String>,
    /// How long a node owns a message it is delivering; the lease of a node that died is taken
    /// over after this [default: 300]. Also `[delivery] lease_seconds`.
    #[arg(long, env = "ATP_LEASE_SECONDS", value_name = "SECS")]
    pub lease_seconds: Option<u64>,
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
    /// Serve the browser app (www/) at `/`: the copy embedded in the binary at build time, or
    /// --web-dir. Also `[server] web = true`.
    #[arg(long, env = "ATP_WEB")]
    pub web: bool,
    /// Serve the web app from this directory (a `www/dist`) instead of the embedded copy. Also
    /// `[server] web_dir`.
    #[arg(long, env = "ATP_WEB_DIR", value_name = "DIR")]
    pub web_dir: Option<PathBuf>,
    /// An origin (`https://app.example.com`) whose pages may call the API from a browser (CORS);
    /// repeatable, `*` for any. A page served by this server itself (--web) needs none. Also
    /// `[server] cors_origins = [...]`.
    #[arg(long = "cors-origin", env = "ATP_CORS_ORIGIN", value_name = "ORIGIN", value_delimiter = ',')]
    pub cors_origins: Vec<String>,
    /// Most client connections at once [default: 4096; lowered to fit the open-file limit]. Also
    /// `[limits] max_connections`.
    #[arg(long, env = "ATP_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<usize>,
    /// Most connections from one client address (IPv6: one /64) [default: 64]; more are closed at
    /// once. Also `[limits] max_connections_per_ip`.
    #[arg(long, env = "ATP_MAX_CONNECTIONS_PER_IP", value_name = "N")]
    pub max_connections_per_ip: Option<usize>,
    /// Seconds from a request's first byte to the end of its head (slowloris) [default: 10]. Also
    /// `[limits] header_read_timeout`.
    #[arg(long, env = "ATP_HEADER_READ_TIMEOUT", value_name = "SECS")]
    pub header_read_timeout: Option<u64>,
    /// Seconds a connection may stay without a request in flight [default: 60]. Also
    /// `[limits] idle_timeout`.
    #[arg(long, env = "ATP_IDLE_TIMEOUT", value_name = "SECS")]
    pub idle_timeout: Option<u64>,
    /// Seconds for a TLS handshake [default: 10]. Also `[limits] handshake_timeout`.
    #[arg(long, env = "ATP_HANDSHAKE_TIMEOUT", value_name = "SECS")]
    pub handshake_timeout: Option<u64>,
    /// Concurrent streams per HTTP/2 connection [default: 100]. Also `[limits] http2_max_streams`.
    #[arg(long, env = "ATP_HTTP2_MAX_STREAMS", value_name = "N")]
    pub http2_max_streams: Option<u32>,
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
        let Command::Server { action: ServerAction::Start(a) } = cli.command else { panic!("not server start") };
        assert_eq!(a.domain.as_deref(), Some("alpha.test"));
        assert_eq!(a.port, Some(17601));
        assert_eq!(a.registration, Some(Registration::Token));
        assert!(!a.no_tls);
        assert!(Cli::try_parse_from(["atp", "server", "start", "--cert", "c.pem"]).is_err(), "--cert needs --key");
        assert!(Cli::try_parse_from(["atp", "server", "start", "--registration", "maybe"]).is_err());
    }

    #[test]
    fn parses_the_client_commands() {
        let recv = |extra: &[&str]| {
            let mut a = vec!["atp", "recv", "--server", "x.test"];
            a.extend_from_slice(extra);
            match Cli::try_parse_from(a).map(|c| c.command) {
                Ok(Command::Recv(r)) => Ok(r),
                Ok(other) => panic!("{other:?}"),
                Err(e) => Err(e),
            }
        };
        let r = recv(&["--wait", "--limit", "5"]).unwrap();
        assert_eq!((r.wait, r.limit, r.output), (Some(30), 5, Output::Json), "--wait alone is the reference's 30 s");
        assert_eq!(recv(&["--wait", "7"]).unwrap().wait, Some(7));
        assert_eq!(recv(&[]).unwrap().wait, None);
        assert!(recv(&["--follow", "--wait", "3"]).is_err());
        assert!(recv(&["--limit", "0"]).is_err());

        let send = Cli::try_parse_from([
            "atp",
            "send",
            "bob",
            "--server",
            "x.test",
            "--cc",
            "a,b@c.test",
            "--cc",
            "d",
            "-b",
            "hi",
            "-P",
            "pw",
        ])
        .unwrap();
        let Command::Send(s) = send.command else { panic!("not send") };
        assert_eq!(s.cc, ["a", "b@c.test", "d"]);
        assert_eq!((s.body.as_deref(), s.password.as_deref()), (Some("hi"), Some("pw")));
        assert!(
            Cli::try_parse_from(["atp", "send", "bob", "--server", "x", "-p", "f.json", "-b", "hi"]).is_err(),
            "--payload replaces --body"
        );
        let reg = Cli::try_parse_from(["atp", "agent", "register", "alice", "--server", "x", "-p", "pw"]).unwrap();
        let Command::Agent { action: AgentAction::Register(r) } = reg.command else { panic!("not register") };
        assert_eq!((r.name.as_str(), r.password.as_deref(), r.output), ("alice", Some("pw"), Output::Text));
        assert!(
            Cli::try_parse_from(["atp", "inspect", "n", "--server", "x"]).is_err(),
            "inspect needs the admin token"
        );
    }
}
