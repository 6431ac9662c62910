//! The worker's configuration: Worker vars and secrets (`wrangler.toml` `[vars]`, `wrangler secret
//! put`), read through a lookup function so that the parsing is testable natively. What the core's
//! relay needs (domain, admin token, registration policy) becomes its [`RelayConfig`].
//!
//! | name | kind | meaning |
//! |---|---|---|
//! | `DOMAIN` | var, required | the domain this relay serves (agents are `name@DOMAIN`) |
//! | `DOMAIN_KEY` | secret, required | the domain's Ed25519 signing key: PKCS#8 PEM (`atp keys` format) or the raw 32-byte seed in base64 |
//! | `KEY_SELECTOR` | var | ATK selector (`<selector>.atk._atp.DOMAIN`), default `default` |
//! | `ADMIN_TOKEN` | secret | bearer token of the admin routes (and of `register` under `REGISTRATION=token`) |
//! | `REGISTRATION` | var | `open` (default), `token` or `closed` |
//! | `DOH_URL` | var | DNS-over-HTTPS endpoint (RFC 8484), default [`DEFAULT_DOH_URL`] |
//! | `DOH_METHOD` | var | `GET` (default, cacheable) or `POST` |
//! | `RETRY_BASE`, `RETRY_CAP`, `MAX_AGE` | vars | retry policy in seconds (defaults 30, 3600, 345600 as atp-native) |
//! | `SWEEP_BATCH` | var | most queued messages one cron run attempts (default 20) |
//! | `SUBREQUEST_BUDGET` | var | most `fetch` calls one invocation makes (default 45: the free plan allows 50) |
//! | `ARGON2_MEMORY_KIB`, `ARGON2_ITERATIONS` | vars | cost of new password hashes (defaults 19456, 2: argon2's defaults, as atp-native) |
//! | `OUTBOUND_SCHEME` | var, **tests only** | `http` makes transfers use `http://host:port` instead of `https://` (a peer on loopback without TLS) |

use atp_wasm::keys::DomainKey;
use atp_wasm::relay::credentials::Argon2Params;
use atp_wasm::relay::{Registration, RelayConfig};
use atp_wasm::retry::RetryPolicy;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;

/// The public resolver used when `DOH_URL` is not set.
pub const DEFAULT_DOH_URL: &str = "https://cloudflare-dns.com/dns-query";

/// A var or secret is missing or malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name}: {problem}")]
pub struct ConfigError {
    pub name: &'static str,
    pub problem: String,
}

fn bad(name: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError { name, problem: problem.into() }
}

/// Everything the worker reads from its environment.
#[derive(Debug, Clone)]
pub struct Config {
    /// The core relay's part: domain (lowercase), admin token, registration policy.
    pub relay: RelayConfig,
    pub key: DomainKey,
    pub selector: String,
    pub doh_url: String,
    pub doh_post: bool,
    pub policy: RetryPolicy,
    pub sweep_batch: usize,
    pub subrequest_budget: u32,
    /// The cost of new password hashes.
    pub argon2: Argon2Params,
    /// `https` in production; `http` only for tests against a loopback peer without TLS.
    pub outbound_scheme: String,
}

/// Reads a signing key: PKCS#8 PEM, or the base64 (standard or URL-safe, padded or not) of the
/// 32-byte seed.
pub fn parse_domain_key(text: &str) -> Result<DomainKey, String> {
    let text = text.trim();
    if text.contains("-----BEGIN") {
        return DomainKey::from_pkcs8_pem(text).map_err(|e| e.to_string());
    }
    let cleaned: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    let normalized = cleaned.replace('-', "+").replace('_', "/");
    let unpadded = normalized.trim_end_matches('=');
    let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(unpadded)
        .map_err(|e| format!("neither a PKCS#8 PEM nor base64: {e}"))?;
    let seed: [u8; 32] =
        bytes.as_slice().try_into().map_err(|_| format!("a raw Ed25519 seed is 32 bytes, got {}", bytes.len()))?;
    Ok(DomainKey::from_seed(&seed))
}

impl Config {
    /// Reads the configuration; `get` returns a var or secret by name (`None` when unset).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let opt = |name: &str| get(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let num = |name: &'static str, default: u64| -> Result<u64, ConfigError> {
            match opt(name) {
                None => Ok(default),
                Some(v) => v.parse().map_err(|_| bad(name, format!("not a number: {v:?}"))),
            }
        };
        let domain = opt("DOMAIN").ok_or_else(|| bad("DOMAIN", "not set"))?.to_ascii_lowercase();
        atp_wasm::identity::validate_domain(&domain).map_err(|e| bad("DOMAIN", e.to_string()))?;
        let key = parse_domain_key(&get("DOMAIN_KEY").ok_or_else(|| bad("DOMAIN_KEY", "secret not set"))?)
            .map_err(|e| bad("DOMAIN_KEY", e))?;
        let selector = opt("KEY_SELECTOR").unwrap_or_else(|| "default".into());
        let registration = match opt("REGISTRATION") {
            None => Registration::Open,
            Some(v) => Registration::parse(&v)
                .ok_or_else(|| bad("REGISTRATION", format!("expected open, token or closed, got {v:?}")))?,
        };
        let doh_post = match opt("DOH_METHOD").as_deref().map(str::to_ascii_uppercase).as_deref() {
            None | Some("GET") => false,
            Some("POST") => true,
            Some(other) => return Err(bad("DOH_METHOD", format!("expected GET or POST, got {other:?}"))),
        };
        let defaults = RetryPolicy::default();
        let policy = RetryPolicy {
            base_secs: num("RETRY_BASE", defaults.base_secs)?.max(1),
            cap_secs: num("RETRY_CAP", defaults.cap_secs)?.max(1),
            max_age_secs: num("MAX_AGE", defaults.max_age_secs)?,
        };
        let outbound_scheme = match opt("OUTBOUND_SCHEME").as_deref() {
            None | Some("https") => "https".to_owned(),
            Some("http") => "http".to_owned(),
            Some(other) => return Err(bad("OUTBOUND_SCHEME", format!("expected https or http, got {other:?}"))),
        };
        let mut relay = RelayConfig::new(&domain);
        relay.admin_token = opt("ADMIN_TOKEN");
        relay.registration = registration;
        Ok(Config {
            relay,
            key,
            selector,
            doh_url: opt("DOH_URL").unwrap_or_else(|| DEFAULT_DOH_URL.into()),
            doh_post,
            policy,
            sweep_batch: num("SWEEP_BATCH", 20)?.clamp(1, 500) as usize,
            subrequest_budget: num("SUBREQUEST_BUDGET", 45)?.clamp(5, 10_000) as u32,
            argon2: Argon2Params {
                memory_kib: num("ARGON2_MEMORY_KIB", 19_456)?.clamp(8, 1 << 20) as u32,
                iterations: num("ARGON2_ITERATIONS", 2)?.clamp(1, 100) as u32,
            },
            outbound_scheme,
        })
    }

    /// The domain served.
    pub fn domain(&self) -> &str {
        &self.relay.domain
    }
}

/// The base64 seed of `key` (what `DOMAIN_KEY` may hold), for tests and docs.
pub fn seed_b64(seed: &[u8; 32]) -> String {
    STANDARD.encode(seed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn cfg(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let m: HashMap<String, String> = vars.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
        Config::from_lookup(|k| m.get(k).cloned())
    }

    #[test]
    fn defaults_and_required_values() {
        let seed = seed_b64(&[7; 32]);
        let c = cfg(&[("DOMAIN", "Relay.Test"), ("DOMAIN_KEY", &seed)]).unwrap();
        assert_eq!(c.domain(), "relay.test");
        assert_eq!(c.selector, "default");
        assert_eq!(c.relay.registration, Registration::Open);
        assert_eq!(c.argon2, Argon2Params::default());
        assert_eq!(c.doh_url, DEFAULT_DOH_URL);
        assert_eq!(c.policy, RetryPolicy::default());
        assert_eq!(c.outbound_scheme, "https");
        assert_eq!(c.relay.admin_token, None);
        assert_eq!(c.key.public_key(), DomainKey::from_seed(&[7; 32]).public_key());
        assert_eq!(cfg(&[("DOMAIN_KEY", &seed)]).unwrap_err().name, "DOMAIN");
        assert_eq!(cfg(&[("DOMAIN", "a.test")]).unwrap_err().name, "DOMAIN_KEY");
        assert_eq!(cfg(&[("DOMAIN", "bad domain"), ("DOMAIN_KEY", &seed)]).unwrap_err().name, "DOMAIN");
    }

    #[test]
    fn vars_are_parsed_strictly() {
        let seed = seed_b64(&[7; 32]);
        let base = [("DOMAIN", "a.test"), ("DOMAIN_KEY", seed.as_str())];
        let with = |extra: &[(&'static str, &'static str)]| {
            let mut v: Vec<(&str, &str)> = base.to_vec();
            v.extend_from_slice(extra);
            cfg(&v)
        };
        let c = with(&[
            ("REGISTRATION", "Token"),
            ("ADMIN_TOKEN", " tok "),
            ("RETRY_BASE", "1"),
            ("RETRY_CAP", "5"),
            ("MAX_AGE", "60"),
            ("OUTBOUND_SCHEME", "http"),
            ("DOH_METHOD", "post"),
        ])
        .unwrap();
        assert_eq!(c.relay.registration, Registration::Token);
        assert_eq!(c.relay.admin_token.as_deref(), Some("tok"));
        assert_eq!(c.policy, RetryPolicy { base_secs: 1, cap_secs: 5, max_age_secs: 60 });
        assert_eq!(c.outbound_scheme, "http");
        assert!(c.doh_post);
        assert_eq!(with(&[("REGISTRATION", "maybe")]).unwrap_err().name, "REGISTRATION");
        assert_eq!(with(&[("RETRY_BASE", "soon")]).unwrap_err().name, "RETRY_BASE");
        assert_eq!(with(&[("OUTBOUND_SCHEME", "ftp")]).unwrap_err().name, "OUTBOUND_SCHEME");
        assert_eq!(with(&[("ADMIN_TOKEN", "  ")]).unwrap().relay.admin_token, None);
    }

    #[test]
    fn domain_keys_in_both_forms() {
        let key = DomainKey::from_seed(&[9; 32]);
        let pem = key.to_pkcs8_pem().unwrap();
        assert_eq!(parse_domain_key(&pem).unwrap().public_key(), key.public_key());
        assert_eq!(parse_domain_key(&format!("  {}\n", seed_b64(&[9; 32]))).unwrap().public_key(), key.public_key());
        let urlsafe = seed_b64(&[0xfb; 32]).replace('+', "-").replace('/', "_").replace('=', "");
        assert_eq!(parse_domain_key(&urlsafe).unwrap().public_key(), DomainKey::from_seed(&[0xfb; 32]).public_key());
        assert!(parse_domain_key("c2hvcnQ=").unwrap_err().contains("32 bytes"));
        assert!(parse_domain_key("-----BEGIN PRIVATE KEY-----\nxx\n-----END PRIVATE KEY-----").is_err());
        assert!(parse_domain_key("not base64!").is_err());
    }
}
