//! The HTTP client of the command line (docs/protocol.md §6 routes, §7 credentials, §9 `--server` and
//! `--no-verify`), fixing the reference's client bugs (docs/protocol.md §12 item 21):
//!
//! * `--server` accepts `host`, `host:port`, `https://host[:port]`, `http://host[:port]` (with a
//!   warning on stderr) and bracketed IPv6 literals (`[::1]:7443`); the default port is 7443. Paths,
//!   queries, credentials and bare IPv6 literals are refused instead of being dropped or mangled.
//! * TLS certificates are verified by default (the webpki roots, plus `--ca-cert`). An untrusted
//!   certificate asks for confirmation when stdin is a terminal and then retries without
//!   verification; otherwise it fails with one line that names `--no-verify`. `--no-verify` skips
//!   verification silently.
//! * A refusal is a typed [`ClientError::Api`] carrying the server's `error` and `error_code`, never
//!   an empty result (a 401 is not "No messages.").
//! * Names without `@` are completed with the server's domain, which `GET health` reports.

use std::cell::OnceCell;
use std::fmt;
use std::io::{BufRead, IsTerminal, Write};
use std::net::{IpAddr, Ipv6Addr};
use std::path::PathBuf;
use std::time::Duration;

use atp_wasm::identity::{AgentId, IdentityError};
use reqwest::{Method, StatusCode};
use serde_json::Value;

/// Path prefix of every route (docs/protocol.md §6).
pub const API_PREFIX: &str = "/.well-known/atp/v1/";

/// Longest a whole request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest a TCP + TLS connection set-up may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a command could not talk to the server, or the server said no.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// `--server` is not one of the accepted forms.
    #[error("invalid --server {input:?}: {reason}")]
    BadServer { input: String, reason: String },
    /// `--ca-cert` cannot be read or is not PEM.
    #[error("--ca-cert {path}: {reason}")]
    CaCert { path: PathBuf, reason: String },
    /// No connection (refused, unknown host, timeout, TLS failure other than the certificate).
    #[error("cannot reach {server}: {reason}")]
    Connect { server: String, reason: String },
    /// The server's certificate is not trusted and verification was not skipped.
    #[error(
        "the TLS certificate of {server} is not trusted ({reason}); pass --no-verify to skip verification, or --ca-cert FILE to trust it"
    )]
    Certificate { server: String, reason: String },
    /// The user answered "no" to the certificate prompt.
    #[error("aborted: the TLS certificate of {server} was not accepted")]
    CertificateRefused { server: String },
    /// The server refused the request (docs/protocol.md §6 error shape).
    #[error("{message} (HTTP {status}{})", code.as_deref().map(|c| format!(", {c}")).unwrap_or_default())]
    Api { status: u16, message: String, code: Option<String> },
    /// The answer is not what the protocol says.
    #[error("unexpected answer from {server} (HTTP {status}): {reason}")]
    BadResponse { server: String, status: u16, reason: String },
    /// The sender or reader is not an agent of the server it talks to.
    #[error("{flag} {id} is not an agent of this server ({domain}); use the server of {id}'s domain")]
    NotLocal { flag: String, id: String, domain: String },
    /// A name is not an agent id.
    #[error("invalid agent id {input:?}: {source}")]
    BadAgentId { input: String, source: IdentityError },
}

/// `http` or `https`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

/// A parsed `--server` value (docs/protocol.md §9 "`--server` parsing", fixed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerUrl {
    pub scheme: Scheme,
    /// Lowercase host name, IPv4 address, or IPv6 address without brackets.
    pub host: String,
    pub port: u16,
}

impl ServerUrl {
    /// Parses `--server`: `host`, `host:port`, `https://host[:port][/]`, `http://host[:port][/]`,
    /// where host is a DNS name, an IPv4 address or a bracketed IPv6 address.
    pub fn parse(input: &str) -> Result<Self, ClientError> {
        let bad = |reason: &str| ClientError::BadServer { input: input.to_owned(), reason: reason.to_owned() };
        let s = input.trim();
        let lower = s.to_ascii_lowercase();
        let (scheme, rest) = if lower.starts_with("https://") {
            (Scheme::Https, &s[8..])
        } else if lower.starts_with("http://") {
            (Scheme::Http, &s[7..])
        } else if s.contains("://") {
            return Err(bad("only https:// and http:// are supported"));
        } else {
            (Scheme::Https, s)
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains(['/', '?', '#']) {
            return Err(bad("give only the server's address (host or host:port), without a path"));
        }
        if authority.contains('@') {
            return Err(bad("credentials do not belong in --server (use --password)"));
        }
        if authority.is_empty() {
            return Err(bad("no host"));
        }
        let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
            let (addr, after) = bracketed.split_once(']').ok_or_else(|| bad("missing ']' after the IPv6 address"))?;
            let ip: Ipv6Addr = addr.parse().map_err(|_| bad("not an IPv6 address inside [...]"))?;
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or_else(|| bad("expected ':port' after ']'"))?),
            };
            (ip.to_string(), port)
        } else if authority.matches(':').count() > 1 {
            return Err(bad("IPv6 addresses need brackets, e.g. [::1]:7443"));
        } else {
            let (host, port) = match authority.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            };
            let host = if host.parse::<IpAddr>().is_ok() {
                host.to_owned()
            } else {
                atp_wasm::records::normalize_hostname(host).ok_or_else(|| bad("not a valid host name"))?
            };
            (host, port)
        };
        let port = match port {
            None => atp_wasm::DEFAULT_PORT,
            Some(p) => Some(p)
                .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|p| p.parse::<u16>().ok())
                .filter(|p| *p > 0)
                .ok_or_else(|| bad("the port must be a number from 1 to 65535"))?,
        };
        Ok(ServerUrl { scheme, host, port })
    }

    /// `https://host:port` (IPv6 in brackets).
    pub fn base(&self) -> String {
        let scheme = match self.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        if self.host.contains(':') {
            format!("{scheme}://[{}]:{}", self.host, self.port)
        } else {
            format!("{scheme}://{}:{}", self.host, self.port)
        }
    }

    /// The URL of an API route, e.g. `api("messages?after_id=3")`.
    pub fn api(&self, route: &str) -> String {
        format!("{}{API_PREFIX}{route}", self.base())
    }
}

impl fmt::Display for ServerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.base())
    }
}

/// How to treat the server's certificate.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// `--no-verify`: accept any certificate, silently.
    pub no_verify: bool,
    /// `--ca-cert`: PEM certificates to trust besides the built-in roots.
    pub ca_cert: Option<PathBuf>,
}

/// Credentials of one request.
#[derive(Debug, Clone)]
pub enum Auth {
    None,
    /// An agent's `id:password` (docs/protocol.md §7).
    Basic(String, String),
    /// The admin token (docs/protocol.md §6 "Admin auth").
    Bearer(String),
}

/// A client of one ATP server.
pub struct Client {
    pub url: ServerUrl,
    verified: reqwest::Client,
    /// The client without verification, once `--no-verify` or the prompt allowed it.
    insecure: OnceCell<reqwest::Client>,
    domain: OnceCell<String>,
}

fn builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .user_agent(concat!("atp/", env!("CARGO_PKG_VERSION")))
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT)
}

fn build(b: reqwest::ClientBuilder, server: &ServerUrl) -> Result<reqwest::Client, ClientError> {
    b.build().map_err(|e| ClientError::Connect { server: server.to_string(), reason: innermost(&e) })
}

impl Client {
    /// A client for `--server`; warns on stderr when the connection is not encrypted.
    pub fn new(server: &str, tls: &TlsOptions) -> Result<Self, ClientError> {
        let url = ServerUrl::parse(server)?;
        if url.scheme == Scheme::Http {
            eprintln!("warning: {url} is plain HTTP: the password and messages travel unencrypted");
        }
        let mut b = builder();
        if let Some(path) = &tls.ca_cert {
            let ca = |reason: String| ClientError::CaCert { path: path.clone(), reason };
            let pem = std::fs::read(path).map_err(|e| ca(e.to_string()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| ca(innermost(&e)))?;
            if certs.is_empty() {
                return Err(ca("no PEM certificate in the file".into()));
            }
            for c in certs {
                b = b.add_root_certificate(c);
            }
        }
        let verified = build(b, &url)?;
        let insecure = OnceCell::new();
        if tls.no_verify {
            let _ = insecure.set(build(builder().danger_accept_invalid_certs(true), &url)?);
        }
        Ok(Client { url, verified, insecure, domain: OnceCell::new() })
    }

    /// Sends one request and returns the status and body text. An untrusted certificate is
    /// handled as the module documentation says.
    pub async fn send(
        &self,
        method: Method,
        route: &str,
        auth: &Auth,
        body: Option<(&'static str, String)>,
    ) -> Result<(StatusCode, String), ClientError> {
        let attempt = |http: &reqwest::Client| {
            let mut req = http.request(method.clone(), self.url.api(route));
            req = match auth {
                Auth::None => req,
                Auth::Basic(user, pw) => req.basic_auth(user, Some(pw)),
                Auth::Bearer(token) => req.bearer_auth(token),
            };
            if let Some((content_type, text)) = &body {
                req = req.header(reqwest::header::CONTENT_TYPE, *content_type).body(text.clone());
            }
            req.send()
        };
        let result = match self.insecure.get() {
            Some(insecure) => attempt(insecure).await,
            None => match attempt(&self.verified).await {
                Err(e) => match certificate_problem(&e) {
                    Some(reason) => {
                        self.accept_untrusted(&reason)?;
                        let insecure = build(builder().danger_accept_invalid_certs(true), &self.url)?;
                        attempt(self.insecure.get_or_init(|| insecure)).await
                    }
                    None => Err(e),
                },
                ok => ok,
            },
        };
        let resp = result.map_err(|e| self.connect_error(&e))?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| self.connect_error(&e))?;
        Ok((status, text))
    }

    /// Sends a request and parses the JSON answer; a non-2xx answer is [`ClientError::Api`].
    pub async fn json(
        &self,
        method: Method,
        route: &str,
        auth: &Auth,
        body: Option<(&'static str, String)>,
    ) -> Result<(u16, Value), ClientError> {
        let (status, text) = self.send(method, route, auth, body).await?;
        let parsed: Result<Value, _> = serde_json::from_str(&text);
        if !status.is_success() {
            return Err(api_error(status.as_u16(), parsed.ok(), &text));
        }
        let value = parsed.map_err(|e| ClientError::BadResponse {
            server: self.url.to_string(),
            status: status.as_u16(),
            reason: format!("not JSON: {e}"),
        })?;
        Ok((status.as_u16(), value))
    }

    /// `GET <route>` returning JSON.
    pub async fn get(&self, route: &str, auth: &Auth) -> Result<Value, ClientError> {
        Ok(self.json(Method::GET, route, auth, None).await?.1)
    }

    /// The server's domain, from `GET health` (asked once).
    pub async fn domain(&self) -> Result<String, ClientError> {
        if let Some(d) = self.domain.get() {
            return Ok(d.clone());
        }
        let health = self.get("health", &Auth::None).await?;
        let domain = health.get("domain").and_then(Value::as_str).map(str::to_owned).ok_or_else(|| {
            ClientError::BadResponse {
                server: self.url.to_string(),
                status: 200,
                reason: "health has no domain".into(),
            }
        })?;
        Ok(self.domain.get_or_init(|| domain).clone())
    }

    /// `name` as a full agent id: a name without `@` gets the server's domain.
    pub async fn complete(&self, name: &str) -> Result<AgentId, ClientError> {
        let domain = if name.contains('@') { String::new() } else { self.domain().await? };
        complete_with(name, &domain)
    }

    /// `name` as one of this server's agents: completed like [`Client::complete`], and refused
    /// when its domain is not the server's (the server would take the message for a transfer from
    /// another server and refuse it with a confusing signature error).
    pub async fn local_agent(&self, name: &str, flag: &str) -> Result<AgentId, ClientError> {
        let domain = self.domain().await?;
        let id = complete_with(name, &domain)?;
        if id.domain() != domain {
            return Err(ClientError::NotLocal { flag: flag.to_owned(), id: id.to_string(), domain });
        }
        Ok(id)
    }

    /// Asks whether to continue without verification (stdin a terminal), else fails.
    fn accept_untrusted(&self, reason: &str) -> Result<(), ClientError> {
        let server = self.url.to_string();
        if !std::io::stdin().is_terminal() {
            return Err(ClientError::Certificate { server, reason: reason.to_owned() });
        }
        eprint!("warning: the TLS certificate of {server} is not trusted ({reason}).\nContinue without verification? [y/N] ");
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        let _ = std::io::stdin().lock().read_line(&mut answer);
        if matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
            Ok(())
        } else {
            Err(ClientError::CertificateRefused { server })
        }
    }

    fn connect_error(&self, e: &reqwest::Error) -> ClientError {
        let reason = if e.is_timeout() { "timed out".to_owned() } else { innermost(e) };
        ClientError::Connect { server: self.url.to_string(), reason }
    }
}

/// Completes `name` with `domain` when it has no `@`, then parses and lowercases it.
pub fn complete_with(name: &str, domain: &str) -> Result<AgentId, ClientError> {
    AgentId::parse_or_complete(name.trim(), domain)
        .map_err(|source| ClientError::BadAgentId { input: name.to_owned(), source })
}

/// The refusal in the server's JSON (`{"error", "error_code", "details"…}`), or its text.
fn api_error(status: u16, body: Option<Value>, text: &str) -> ClientError {
    let body = body.unwrap_or(Value::Null);
    let mut message = match body.get("error").and_then(Value::as_str) {
        Some(e) => e.to_owned(),
        None if text.trim().is_empty() => {
            StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason()).unwrap_or("request refused").to_owned()
        }
        None => text.trim().chars().take(200).collect(),
    };
    if let Some(details) = body.get("details").and_then(Value::as_str) {
        message = format!("{message}: {details}");
    }
    let code = body.get("error_code").and_then(Value::as_str).map(str::to_owned);
    ClientError::Api { status, message: one_line(&message), code }
}

/// Replaces line breaks so an error stays on one line.
pub fn one_line(s: &str) -> String {
    s.split(['\r', '\n']).filter(|l| !l.trim().is_empty()).collect::<Vec<_>>().join(" ")
}

/// The reason a request failed on the server's certificate, if it did.
fn certificate_problem(e: &reqwest::Error) -> Option<String> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(r) = err.downcast_ref::<rustls::Error>() {
            return matches!(r, rustls::Error::InvalidCertificate(_)).then(|| r.to_string());
        }
        // io::Error::source() skips the wrapped error itself: look inside.
        if let Some(inner) = err.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
            if let Some(r) = inner.downcast_ref::<rustls::Error>() {
                return matches!(r, rustls::Error::InvalidCertificate(_)).then(|| r.to_string());
            }
        }
        cur = err.source();
    }
    let text = chain(e);
    text.contains("invalid peer certificate").then(|| innermost(e))
}

/// Every message of an error and its sources.
fn chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        parts.push(s.to_string());
        cur = s.source();
    }
    parts.join(": ")
}

/// The most specific message of an error chain (the root cause).
fn innermost(e: &dyn std::error::Error) -> String {
    let mut last = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        last = s.to_string();
        cur = s.source();
    }
    one_line(&last)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> (Scheme, String, u16) {
        let u = ServerUrl::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        (u.scheme, u.host, u.port)
    }

    #[test]
    fn server_forms_of_the_readme() {
        use Scheme::*;
        assert_eq!(url("example.com"), (Https, "example.com".into(), 7443));
        assert_eq!(url("example.com:8443"), (Https, "example.com".into(), 8443));
        assert_eq!(url("https://example.com"), (Https, "example.com".into(), 7443));
        assert_eq!(url("HTTPS://Example.COM:9/"), (Https, "example.com".into(), 9));
        assert_eq!(url("http://example.com"), (Http, "example.com".into(), 7443));
        assert_eq!(url("http://example.com:8080"), (Http, "example.com".into(), 8080));
        assert_eq!(url("127.0.0.1"), (Https, "127.0.0.1".into(), 7443));
        assert_eq!(url(" 127.0.0.1:17601 "), (Https, "127.0.0.1".into(), 17601));
        assert_eq!(url("localhost:1"), (Https, "localhost".into(), 1));
    }

    #[test]
    fn ipv6_literals_need_brackets() {
        assert_eq!(url("[::1]:7443"), (Scheme::Https, "::1".into(), 7443));
        assert_eq!(url("[::1]"), (Scheme::Https, "::1".into(), 7443));
        assert_eq!(url("https://[2001:DB8::1]:8443"), (Scheme::Https, "2001:db8::1".into(), 8443));
        assert_eq!(ServerUrl::parse("[::1]:17601").unwrap().base(), "https://[::1]:17601");
        assert_eq!(
            ServerUrl::parse("[::1]:17601").unwrap().api("health"),
            "https://[::1]:17601/.well-known/atp/v1/health"
        );
        for bad in ["::1", "::1:7443", "[::1", "[::1]7443", "[nope]:1", "[127.0.0.1]:1"] {
            assert!(ServerUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_forms_are_refused_with_a_reason() {
        for bad in [
            "",
            "https://",
            "ftp://example.com",
            "example.com:0",
            "example.com:65536",
            "example.com:abc",
            "example.com:",
            "example.com/path",
            "https://example.com/.well-known/atp/v1",
            "example.com?x=1",
            "user:pw@example.com",
            "exa mple.com",
            "-bad.example",
            "bad_port:+1",
        ] {
            let e = ServerUrl::parse(bad).expect_err(bad);
            assert!(matches!(e, ClientError::BadServer { .. }), "{bad}: {e}");
            assert!(!e.to_string().contains('\n'));
        }
        assert_eq!(
            ServerUrl::parse("::1").unwrap_err().to_string(),
            "invalid --server \"::1\": IPv6 addresses need brackets, e.g. [::1]:7443"
        );
    }

    #[test]
    fn names_are_completed_with_the_server_domain() {
        assert_eq!(complete_with("alice", "alpha.test").unwrap().to_string(), "alice@alpha.test");
        assert_eq!(complete_with("Alice", "alpha.test").unwrap().to_string(), "alice@alpha.test");
        assert_eq!(complete_with("bob@Beta.Test", "alpha.test").unwrap().to_string(), "bob@beta.test");
        assert_eq!(complete_with("bob@beta.test", "").unwrap().to_string(), "bob@beta.test");
        for bad in ["bad name", "a@@b", "@alpha.test", "x@", ""] {
            assert!(matches!(complete_with(bad, "alpha.test"), Err(ClientError::BadAgentId { .. })), "{bad}");
        }
    }

    #[test]
    fn refusals_carry_the_server_error() {
        let body =
            serde_json::json!({"error": "Unknown recipient", "error_code": "550 5.1.1", "details": "no agent x"});
        let e = api_error(404, Some(body), "");
        assert_eq!(e.to_string(), "Unknown recipient: no agent x (HTTP 404, 550 5.1.1)");
        assert!(matches!(e, ClientError::Api { status: 404, .. }));
        assert_eq!(api_error(401, None, "").to_string(), "Unauthorized (HTTP 401)");
        assert_eq!(api_error(502, None, "Bad\ngateway").to_string(), "Bad gateway (HTTP 502)");
    }
}
