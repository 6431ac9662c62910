//! Configuration: `config.toml` in the reference's format (docs/protocol.md §8.8) and the effective
//! server settings, with the precedence flags > environment `ATP_*` > `config.toml` > defaults
//! (docs/design.md §6). Unlike the reference (docs/protocol.md §12 item 19), `[server] max_message_size` is
//! honoured, `domain`/`port` from the file are used when no flag or variable gives them, and
//! `--no-tls` always means plain HTTP.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::cli::{Registration, StartArgs};
use crate::home::Home;

/// `config.toml` (docs/protocol.md §8.8); unknown keys are ignored, as the reference does.
#[derive(Debug, Default, Deserialize)]
pub struct FileConfig {
    /// The default agent of the command line: `--from` of `send`, `--agent-id` of `recv`
    /// (docs/protocol.md §8.8). A name without `@` is completed with the server's domain.
    pub agent_id: Option<String>,
    /// Use `peers_file` / `dns_override_file` (docs/protocol.md §8.9).
    #[serde(default)]
    pub local_mode: bool,
    pub peers_file: Option<PathBuf>,
    pub dns_override_file: Option<PathBuf>,
    /// Selector of the domain key that signs transfers (default `default`).
    pub key_selector: Option<String>,
    #[serde(default)]
    pub server: ServerSection,
    #[serde(default)]
    pub delivery: DeliverySection,
    #[serde(default)]
    pub limits: LimitsSection,
    #[serde(default)]
    pub store: StoreSection,
}

/// The `[store]` table of `config.toml` (atp's own): where the domain's data lives (docs/design.md
/// §5d) and what it keeps.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    /// `sqlite:///path` or `postgres://…` (`--database`).
    pub url: Option<String>,
    /// Most PostgreSQL connections of this node (default 16).
    pub pool_size: Option<usize>,
    /// Inbox messages older than this many days are removed (docs/protocol.md §6.5); absent:
    /// kept until acknowledged.
    pub retention_days: Option<u64>,
}

/// The `[limits]` table of `config.toml` (atp's own): connection limits (docs/design.md §5b);
/// timeouts in seconds.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    pub max_connections: Option<usize>,
    pub max_connections_per_ip: Option<usize>,
    pub header_read_timeout: Option<u64>,
    pub idle_timeout: Option<u64>,
    pub handshake_timeout: Option<u64>,
    pub http2_max_streams: Option<u32>,
    /// Per-agent inbox quota: most messages (default 100,000).
    pub quota_messages: Option<u64>,
    /// Per-agent inbox quota: most bytes of messages (default 1 GiB).
    pub quota_bytes: Option<u64>,
    /// Open inbox streams and long polls per agent (default 8; docs/protocol.md §6.5).
    pub streams_per_agent: Option<usize>,
    /// Open inbox streams and long polls in all (default 10,000).
    pub max_streams: Option<usize>,
}

/// The `[delivery]` table of `config.toml` (atp's own; the reference has none).
#[derive(Debug, Default, Deserialize)]
pub struct DeliverySection {
    pub retry_base: Option<u64>,
    pub retry_cap: Option<u64>,
    pub max_age: Option<u64>,
    /// Transfers in flight to one destination domain at once (default 64).
    pub per_domain_concurrency: Option<usize>,
    pub dns_server: Option<SocketAddr>,
    #[serde(default)]
    pub no_verify_peers: bool,
    pub peer_ca: Option<PathBuf>,
    pub local_registry: Option<bool>,
    /// `--lease-seconds`.
    pub lease_seconds: Option<u64>,
}

/// The `[server]` table of `config.toml`.
#[derive(Debug, Default, Deserialize)]
pub struct ServerSection {
    pub domain: Option<String>,
    pub port: Option<u16>,
    pub host: Option<String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub admin_token: Option<String>,
    pub max_message_size: Option<usize>,
    pub registration: Option<Registration>,
    pub log_level: Option<String>,
    /// `text` or `json` (`--log-format`).
    pub log_format: Option<crate::logging::LogFormat>,
    /// Serve the web app at `/` (`--web`).
    #[serde(default)]
    pub web: bool,
    pub web_dir: Option<PathBuf>,
    /// Origins allowed to call the API from a browser (`--cors-origin`).
    #[serde(default)]
    pub cors_origins: Vec<String>,
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("no domain: pass --domain (or set ATP_DOMAIN, or [server] domain in config.toml)")]
    NoDomain,
    #[error("--domain {0:?}: {1}")]
    BadDomain(String, atp_wasm::identity::IdentityError),
    #[error("--host {0:?} is not an IP address")]
    BadHost(String),
    #[error("a TLS certificate needs its key and a key its certificate ([server] tls_cert / tls_key)")]
    HalfTls,
    #[error("--registration token needs an admin token (--admin-token, ATP_ADMIN_TOKEN or [server] admin_token)")]
    TokenWithoutAdmin,
    #[error("max_message_size must be between 1024 and 67108864 bytes, got {0}")]
    BadMaxSize(usize),
    #[error("key_selector {0:?} is not a DNS label")]
    BadSelector(String),
    #[error("delivery settings: {0}")]
    BadDelivery(&'static str),
    #[error("limits: {0}")]
    BadLimits(&'static str),
    #[error("--database / [store] url: {0}")]
    BadDatabase(#[from] crate::store::backend::BadDatabaseUrl),
    #[error("[store] pool_size must be between 1 and 1000")]
    BadPoolSize,
    #[error("store: {0}")]
    BadStore(&'static str),
}

impl FileConfig {
    /// Reads `config.toml`; a missing file is the default configuration.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                toml::from_str(&text).map_err(|e| ConfigError::File { path: path.to_owned(), message: e.to_string() })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(FileConfig::default()),
            Err(e) => Err(ConfigError::File { path: path.to_owned(), message: e.to_string() }),
        }
    }
}

/// How the listener speaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsMode {
    /// Plain HTTP (`--no-tls`).
    Off,
    /// The operator's certificate and key.
    Files { cert: PathBuf, key: PathBuf },
    /// A self-signed certificate kept in `<home>/certs/` (docs/design.md §3).
    SelfSigned,
}

/// The effective settings of one server.
#[derive(Debug, Clone)]
pub struct Settings {
    pub domain: String,
    pub listen: SocketAddr,
    pub tls: TlsMode,
    pub admin_token: Option<String>,
    pub registration: Registration,
    pub home: Home,
    pub log_level: String,
    pub log_format: crate::logging::LogFormat,
    pub max_message_size: usize,
    pub local_mode: bool,
    pub peers_file: Option<PathBuf>,
    pub dns_override_file: Option<PathBuf>,
    pub key_selector: String,
    pub dns_server: Option<SocketAddr>,
    pub local_registry: bool,
    pub delivery: Delivery,
    /// Where the web app comes from when `--web` is on (checked when the server starts).
    pub web: Option<crate::routes::web::WebSource>,
    /// Origins allowed by CORS.
    pub cors_origins: Vec<String>,
    /// Connection limits (docs/design.md §5b).
    pub limits: crate::limits::Limits,
    /// Per-agent inbox quota (`[limits] quota_messages`, `quota_bytes`; docs/design.md §5b).
    pub quota: atp_wasm::relay::Quota,
    /// Where the domain's data lives (`--database`; docs/design.md §5d).
    pub database: crate::store::DatabaseUrl,
    /// Most PostgreSQL connections of this node (`[store] pool_size`).
    pub pool_size: usize,
    /// Open inbox streams (`[limits] streams_per_agent`, `max_streams`; docs/protocol.md §6.5).
    pub streams: atp_wasm::relay::stream::StreamLimits,
    /// `[store] retention_days` in seconds: inbox messages older than this are removed.
    pub retention: Option<i64>,
}

/// How the delivery engine works (docs/design.md §3).
#[derive(Debug, Clone)]
pub struct Delivery {
    pub policy: atp_wasm::retry::RetryPolicy,
    pub per_domain_concurrency: usize,
    pub no_verify_peers: bool,
    pub peer_ca: Option<PathBuf>,
    /// How long a claimed message belongs to this node (`--lease-seconds`, default 300).
    pub lease_secs: i64,
}

/// The reference's `--log-level` names, mapped to tracing filters; anything else is a filter already.
pub fn log_filter(level: &str) -> String {
    match level.to_ascii_uppercase().as_str() {
        "DEBUG" => "debug".into(),
        "INFO" => "info".into(),
        "WARNING" | "WARN" => "warn".into(),
        "ERROR" | "CRITICAL" => "error".into(),
        _ => level.to_owned(),
    }
}

impl Settings {
    /// Combines the command line (flags and `ATP_*` variables, already merged by clap) with
    /// `config.toml` in the home directory.
    pub fn resolve(args: StartArgs) -> Result<Self, ConfigError> {
        let home = Home::resolve(args.home.clone());
        let file = FileConfig::load(&home.config_path())?;
        Self::merge(args, file, home)
    }

    /// The precedence rules, without touching the environment or the disk.
    pub fn merge(args: StartArgs, file: FileConfig, home: Home) -> Result<Self, ConfigError> {
        let limits = limits(&args, &file.limits)?;
        let default_quota = atp_wasm::relay::Quota::default();
        let quota = atp_wasm::relay::Quota {
            max_messages: file.limits.quota_messages.unwrap_or(default_quota.max_messages),
            max_bytes: file.limits.quota_bytes.unwrap_or(default_quota.max_bytes),
        };
        let default_streams = atp_wasm::relay::stream::StreamLimits::default();
        let streams = atp_wasm::relay::stream::StreamLimits {
            per_agent: file.limits.streams_per_agent.unwrap_or(default_streams.per_agent),
            total: file.limits.max_streams.unwrap_or(default_streams.total),
        };
        if streams.per_agent == 0 || streams.total == 0 || streams.total > 1_000_000 {
            return Err(ConfigError::BadLimits("streams_per_agent and max_streams must be between 1 and 1000000"));
        }
        let retention = match file.store.retention_days {
            None => None,
            Some(d @ 1..=36500) => Some(d as i64 * 86400),
            Some(_) => return Err(ConfigError::BadStore("retention_days must be between 1 and 36500")),
        };
        let s = file.server;
        let web = (args.web || s.web).then(|| {
            args.web_dir
                .or(s.web_dir)
                .map_or(crate::routes::web::WebSource::Embedded, crate::routes::web::WebSource::Dir)
        });
        let cors_origins = if args.cors_origins.is_empty() { s.cors_origins } else { args.cors_origins };
        let raw_domain = args.domain.or(s.domain).ok_or(ConfigError::NoDomain)?;
        let domain = raw_domain.trim_end_matches('.').to_ascii_lowercase();
        atp_wasm::identity::validate_domain(&domain).map_err(|e| ConfigError::BadDomain(raw_domain.clone(), e))?;
        let host = args.host.or(s.host).unwrap_or_else(|| "0.0.0.0".into());
        let ip: IpAddr =
            host.trim_start_matches('[').trim_end_matches(']').parse().map_err(|_| ConfigError::BadHost(host))?;
        let port = args.port.or(s.port).unwrap_or(atp_wasm::DEFAULT_PORT);
        let tls = if args.no_tls {
            TlsMode::Off
        } else {
            match (args.cert, args.key) {
                (Some(cert), Some(key)) => TlsMode::Files { cert, key },
                _ => match (s.tls_cert, s.tls_key) {
                    (Some(cert), Some(key)) => TlsMode::Files { cert, key },
                    (None, None) => TlsMode::SelfSigned,
                    _ => return Err(ConfigError::HalfTls),
                },
            }
        };
        let admin_token = args.admin_token.or(s.admin_token).filter(|t| !t.is_empty());
        let registration = args.registration.or(s.registration).unwrap_or(Registration::Open);
        if registration == Registration::Token && admin_token.is_none() {
            return Err(ConfigError::TokenWithoutAdmin);
        }
        let max_message_size = s.max_message_size.unwrap_or(atp_wasm::MAX_MESSAGE_SIZE);
        if !(1024..=64 << 20).contains(&max_message_size) {
            return Err(ConfigError::BadMaxSize(max_message_size));
        }
        let key_selector = file.key_selector.unwrap_or_else(|| "default".into());
        if !crate::home::is_selector(&key_selector) {
            return Err(ConfigError::BadSelector(key_selector));
        }
        let d = file.delivery;
        let defaults = atp_wasm::retry::RetryPolicy::default();
        let policy = atp_wasm::retry::RetryPolicy {
            base_secs: args.retry_base.or(d.retry_base).unwrap_or(defaults.base_secs),
            cap_secs: args.retry_cap.or(d.retry_cap).unwrap_or(defaults.cap_secs),
            max_age_secs: args.max_age.or(d.max_age).unwrap_or(defaults.max_age_secs),
        };
        if policy.base_secs == 0 || policy.cap_secs < policy.base_secs {
            return Err(ConfigError::BadDelivery("retry_base must be at least 1 and retry_cap at least retry_base"));
        }
        if policy.max_age_secs as i64 >= atp_wasm::retry::DEFAULT_HORIZON_SECS {
            return Err(ConfigError::BadDelivery("max_age must be under 5 days (432000 s), the receivers' horizon"));
        }
        let per_domain_concurrency = d.per_domain_concurrency.unwrap_or(64);
        if !(1..=1024).contains(&per_domain_concurrency) {
            return Err(ConfigError::BadDelivery("per_domain_concurrency must be between 1 and 1024"));
        }
        let lease_secs = args.lease_seconds.or(d.lease_seconds).unwrap_or(300);
        if !(1..=86400).contains(&lease_secs) {
            return Err(ConfigError::BadDelivery("lease_seconds must be between 1 and 86400"));
        }
        // Parsed here, not by clap, so that a refusal never shows the URL's password.
        let database = match args.database.or(file.store.url) {
            Some(url) => url.parse()?,
            None => crate::store::DatabaseUrl::Sqlite(home.db_path(&domain)),
        };
        let pool_size = file.store.pool_size.unwrap_or(crate::store::postgres::POOL_SIZE);
        if !(1..=1000).contains(&pool_size) {
            return Err(ConfigError::BadPoolSize);
        }
        let (peers_file, dns_override_file) = if args.peers.is_some() || args.dns_override.is_some() {
            (args.peers, args.dns_override)
        } else if file.local_mode {
            (file.peers_file, file.dns_override_file)
        } else {
            (None, None)
        };
        Ok(Settings {
            local_mode: file.local_mode || peers_file.is_some() || dns_override_file.is_some(),
            peers_file,
            dns_override_file,
            dns_server: args.dns_server.or(d.dns_server),
            local_registry: !args.no_local_registry && d.local_registry.unwrap_or(true),
            delivery: Delivery {
                policy,
                per_domain_concurrency,
                no_verify_peers: args.no_verify_peers || d.no_verify_peers,
                peer_ca: args.peer_ca.or(d.peer_ca),
                lease_secs: lease_secs as i64,
            },
            database,
            pool_size,
            domain,
            listen: SocketAddr::new(ip, port),
            tls,
            admin_token,
            registration,
            home,
            log_level: log_filter(&args.log_level.or(s.log_level).unwrap_or_else(|| "info".into())),
            log_format: args.log_format.or(s.log_format).unwrap_or_default(),
            max_message_size,
            key_selector,
            web,
            cors_origins,
            limits,
            quota,
            streams,
            retention,
        })
    }
}

/// The connection limits: flags > `[limits]` > defaults.
fn limits(args: &StartArgs, f: &LimitsSection) -> Result<crate::limits::Limits, ConfigError> {
    use std::time::Duration;
    let d = crate::limits::Limits::default();
    let secs = |flag: Option<u64>, file: Option<u64>, default: Duration, what: &'static str| match flag
        .or(file)
        .map(Duration::from_secs)
        .unwrap_or(default)
    {
        t if t.is_zero() || t > Duration::from_secs(86400) => Err(ConfigError::BadLimits(what)),
        t => Ok(t),
    };
    let l = crate::limits::Limits {
        max_connections: args.max_connections.or(f.max_connections).unwrap_or(d.max_connections),
        max_connections_per_ip: args
            .max_connections_per_ip
            .or(f.max_connections_per_ip)
            .unwrap_or(d.max_connections_per_ip),
        header_read_timeout: secs(
            args.header_read_timeout,
            f.header_read_timeout,
            d.header_read_timeout,
            "header_read_timeout must be between 1 and 86400 seconds",
        )?,
        idle_timeout: secs(
            args.idle_timeout,
            f.idle_timeout,
            d.idle_timeout,
            "idle_timeout must be between 1 and 86400 seconds",
        )?,
        handshake_timeout: secs(
            args.handshake_timeout,
            f.handshake_timeout,
            d.handshake_timeout,
            "handshake_timeout must be between 1 and 86400 seconds",
        )?,
        http2_max_streams: args.http2_max_streams.or(f.http2_max_streams).unwrap_or(d.http2_max_streams),
    };
    if l.max_connections == 0 || l.max_connections_per_ip == 0 {
        return Err(ConfigError::BadLimits("max_connections and max_connections_per_ip must be at least 1"));
    }
    if !(1..=10_000).contains(&l.http2_max_streams) {
        return Err(ConfigError::BadLimits("http2_max_streams must be between 1 and 10000"));
    }
    Ok(l)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn home() -> Home {
        Home { root: PathBuf::from("/nonexistent/.atp") }
    }

    fn file(text: &str) -> FileConfig {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn reads_the_reference_config_format() {
        let f = file(
            "agent_id = \"alice@alpha.test\"\nlocal_mode = true\npeers_file = \"/s/peers.toml\"\n\
             dns_override_file = \"/s/dns.toml\"\nkey_selector = \"k2\"\n\
             [server]\ndomain = \"alpha.test\"\nport = 17601\ntls_cert = \"/c\"\ntls_key = \"/k\"\n\
             admin_token = \"tokA\"\nmax_message_size = 4096\n",
        );
        let s = Settings::merge(StartArgs::default(), f, home()).unwrap();
        assert_eq!(s.domain, "alpha.test");
        assert_eq!(s.listen, "0.0.0.0:17601".parse().unwrap());
        assert_eq!(s.tls, TlsMode::Files { cert: "/c".into(), key: "/k".into() });
        assert_eq!(s.admin_token.as_deref(), Some("tokA"));
        assert_eq!(s.max_message_size, 4096);
        assert!(s.local_mode);
        assert_eq!(s.key_selector, "k2");
        assert_eq!(s.registration, Registration::Open);
        assert_eq!(file("agent_id = \"alice\"\n").agent_id.as_deref(), Some("alice"));
    }

    #[test]
    fn flags_win_over_the_file() {
        let f = file("[server]\ndomain = \"file.test\"\nport = 1\nadmin_token = \"f\"\nregistration = \"closed\"\n");
        let args = StartArgs {
            domain: Some("Flag.Test.".into()),
            port: Some(2),
            host: Some("::1".into()),
            admin_token: Some("a".into()),
            registration: Some(Registration::Token),
            no_tls: true,
            ..Default::default()
        };
        let s = Settings::merge(args, f, home()).unwrap();
        assert_eq!(s.domain, "flag.test");
        assert_eq!(s.listen, "[::1]:2".parse().unwrap());
        assert_eq!(s.admin_token.as_deref(), Some("a"));
        assert_eq!(s.registration, Registration::Token);
        assert_eq!(s.tls, TlsMode::Off);
        assert!(s.web.is_none() && s.cors_origins.is_empty());
    }

    #[test]
    fn web_and_cors_settings() {
        let f = file("[server]\ndomain = \"d.test\"\nweb = true\ncors_origins = [\"https://a.test\"]\n");
        let s = Settings::merge(StartArgs::default(), f, home()).unwrap();
        assert_eq!(s.web, Some(crate::routes::web::WebSource::Embedded));
        assert_eq!(s.log_format, crate::logging::LogFormat::Text);
        let f = file("[server]\ndomain = \"d.test\"\nlog_format = \"json\"\n");
        assert_eq!(
            Settings::merge(StartArgs::default(), f, home()).unwrap().log_format,
            crate::logging::LogFormat::Json
        );
        assert_eq!(s.cors_origins, ["https://a.test"]);
        let args = StartArgs {
            domain: Some("d.test".into()),
            web: true,
            web_dir: Some("/srv/www".into()),
            cors_origins: vec!["https://b.test".into()],
            ..Default::default()
        };
        let s = Settings::merge(args, file("[server]\ncors_origins = [\"https://a.test\"]\n"), home()).unwrap();
        assert_eq!(
            (s.web, s.cors_origins),
            (Some(crate::routes::web::WebSource::Dir("/srv/www".into())), vec!["https://b.test".to_owned()])
        );
    }

    #[test]
    fn defaults_and_errors() {
        let args = || StartArgs { domain: Some("d.test".into()), ..Default::default() };
        let s = Settings::merge(args(), FileConfig::default(), home()).unwrap();
        assert_eq!((s.listen.port(), s.tls.clone(), s.log_level.as_str()), (7443, TlsMode::SelfSigned, "info"));
        assert!(matches!(
            Settings::merge(StartArgs::default(), FileConfig::default(), home()),
            Err(ConfigError::NoDomain)
        ));
        let bad = StartArgs { domain: Some("-x.test".into()), ..Default::default() };
        assert!(matches!(Settings::merge(bad, FileConfig::default(), home()), Err(ConfigError::BadDomain(..))));
        let bad = StartArgs { host: Some("localhost".into()), ..args() };
        assert!(matches!(Settings::merge(bad, FileConfig::default(), home()), Err(ConfigError::BadHost(_))));
        let token = StartArgs { registration: Some(Registration::Token), ..args() };
        assert!(matches!(Settings::merge(token, FileConfig::default(), home()), Err(ConfigError::TokenWithoutAdmin)));
        assert!(matches!(
            Settings::merge(args(), file("[server]\ntls_cert = \"/c\"\n"), home()),
            Err(ConfigError::HalfTls)
        ));
        assert!(matches!(
            Settings::merge(args(), file("[server]\nmax_message_size = 10\n"), home()),
            Err(ConfigError::BadMaxSize(10))
        ));
        assert!(matches!(
            Settings::merge(args(), file("key_selector = \"a.b\"\n"), home()),
            Err(ConfigError::BadSelector(_))
        ));
        assert_eq!(log_filter("WARNING"), "warn");
        assert_eq!(log_filter("atp=debug"), "atp=debug");
    }

    #[test]
    fn limits_from_flags_file_and_defaults() {
        use std::time::Duration;
        let args = || StartArgs { domain: Some("d.test".into()), ..Default::default() };
        let s = Settings::merge(args(), FileConfig::default(), home()).unwrap();
        assert_eq!(s.limits, crate::limits::Limits::default());
        let f = file(
            "[limits]\nmax_connections = 100\nmax_connections_per_ip = 5\nheader_read_timeout = 3\n\
             idle_timeout = 7\nhandshake_timeout = 4\nhttp2_max_streams = 9\n",
        );
        let s = Settings::merge(StartArgs { idle_timeout: Some(8), max_connections: Some(200), ..args() }, f, home())
            .unwrap();
        let l = s.limits;
        assert_eq!((l.max_connections, l.max_connections_per_ip, l.http2_max_streams), (200, 5, 9));
        assert_eq!(
            (l.header_read_timeout, l.idle_timeout, l.handshake_timeout),
            (Duration::from_secs(3), Duration::from_secs(8), Duration::from_secs(4))
        );
        for bad in ["idle_timeout = 0", "max_connections_per_ip = 0", "http2_max_streams = 0"] {
            let r = Settings::merge(args(), file(&format!("[limits]\n{bad}\n")), home());
            assert!(matches!(r, Err(ConfigError::BadLimits(_))), "{bad}");
        }
        assert!(toml::from_str::<FileConfig>("[limits]\nidle = 3\n").is_err(), "a misspelt limit is an error");
    }

    #[test]
    fn missing_file_is_default_and_bad_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!FileConfig::load(&dir.path().join("config.toml")).unwrap().local_mode);
        std::fs::write(dir.path().join("config.toml"), "local_mode = [").unwrap();
        assert!(matches!(FileConfig::load(&dir.path().join("config.toml")), Err(ConfigError::File { .. })));
    }
}
