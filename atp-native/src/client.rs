//! The command line's side of the HTTP API (docs/protocol.md §6, §9): the core's agent client
//! ([`atp_wasm::client::Client`] — `--server` forms, short-name completion, the server's refusals,
//! the inbox cursor) over the native transport ([`crate::http`]). What only a command line has is
//! here:
//!
//! * where the server is: `--server example.com` (a domain, no port) is found the way servers find
//!   their peers ([`locate`]); any other form is connected to as given;
//! * how its certificate is judged: the one a local server published in the registry is pinned;
//!   otherwise certificates are verified against the Web PKI roots (plus `--ca-cert`), and
//!   `--no-verify` skips verification. An untrusted certificate asks for confirmation when stdin is
//!   a terminal, then retries without verification; otherwise it fails with one line naming
//!   `--no-verify`. `http://` warns on stderr;
//! * failures as one line that names the server ([`ClientError`]); a refusal carries the server's
//!   `error` and `error_code` (docs/protocol.md §12 item 21: never an empty result);
//! * `--from` / `--agent-id` must be agents of the server's domain ([`Connection::local_agent`]).

pub mod locate;

use std::cell::{Cell, OnceCell};
use std::io::{BufRead, IsTerminal, Write};
use std::sync::Arc;

use atp_wasm::client::{AddressError, ErrorKind, ServerUrl};
use atp_wasm::env::Clock;
use atp_wasm::http::{HttpError, HttpRequest, HttpResponse, HttpTransport, Sleep};
use atp_wasm::identity::AgentId;

use crate::cli::ServerOpts;
use crate::home::Home;
use crate::http::{one_line, Failure, FailureKind, HttpSetupError, NativeHttp, Trust};
use crate::resolver::ServerResolver;
use locate::{Located, Source};

/// The core's client over the command line's transport.
pub type Client = atp_wasm::client::Client<Io>;

/// Why a command could not talk to the server, or the server said no.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// `--server` is not one of the accepted forms.
    #[error("invalid --server {:?}: {}", .0.input, .0.reason)]
    BadServer(AddressError),
    /// `--ca-cert` cannot be read or is not PEM.
    #[error("--ca-cert {path}: {reason}")]
    CaCert { path: std::path::PathBuf, reason: String },
    #[error(transparent)]
    Setup(HttpSetupError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Resolver(#[from] crate::resolver::ResolverSetupError),
    /// Discovery failed for a `--server` domain.
    #[error(transparent)]
    Lookup(#[from] locate::LookupError),
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
    /// The server refused the request (docs/protocol.md §6 error shape). `json`: the refusal was
    /// the JSON error object (else `message` is the core's text, which names the status already).
    #[error("{message}{}", if *json { http_suffix(*status, code.as_deref()) } else { String::new() })]
    Api { status: u16, message: String, code: Option<String>, json: bool },
    /// The answer is not what the protocol says.
    #[error("unexpected answer from {server} (HTTP {status}): {reason}")]
    BadResponse { server: String, status: u16, reason: String },
    /// The sender or reader is not an agent of the server it talks to.
    #[error("{flag} {id} is not an agent of this server ({domain}); use the server of {id}'s domain")]
    NotLocal { flag: String, id: String, domain: String },
    /// The call itself is wrong (e.g. an invalid agent id); nothing was sent.
    #[error("{0}")]
    Invalid(String),
}

fn http_suffix(status: u16, code: Option<&str>) -> String {
    match code {
        Some(c) => format!(" (HTTP {status}, {c})"),
        None => format!(" (HTTP {status})"),
    }
}

impl From<HttpSetupError> for ClientError {
    fn from(e: HttpSetupError) -> Self {
        match e {
            HttpSetupError::CaFile { path, reason } => ClientError::CaCert { path, reason },
            other => ClientError::Setup(other),
        }
    }
}

/// The transport of the command line: the native one, and after the user accepted an untrusted
/// certificate at the prompt, one without verification. It remembers the kind of the last failure,
/// which the core's error does not carry (the command line sends one request at a time).
pub struct Io {
    http: NativeHttp,
    resolver: Option<Arc<ServerResolver>>,
    insecure: OnceCell<NativeHttp>,
    /// The server as named in messages.
    label: String,
    /// The user refused the certificate at the prompt.
    refused: Cell<bool>,
    last_failure: Cell<Option<FailureKind>>,
}

impl Io {
    async fn fetch(&self, request: HttpRequest) -> Result<HttpResponse, Failure> {
        if let Some(insecure) = self.insecure.get() {
            return insecure.fetch(request).await;
        }
        match self.http.fetch(request.clone()).await {
            Err(f) if f.kind == FailureKind::Certificate && std::io::stdin().is_terminal() => {
                if !accept_untrusted(&self.label, &f.message) {
                    self.refused.set(true);
                    return Err(f);
                }
                let insecure = NativeHttp::new(&Trust::NoVerify, self.resolver.as_ref())
                    .map_err(|e| Failure { kind: FailureKind::Other, message: e.to_string() })?;
                self.insecure.get_or_init(|| insecure).fetch(request).await
            }
            other => other,
        }
    }
}

impl Io {
    /// Opens a streaming response (the inbox stream) with the transport the user accepted.
    pub async fn open(&self, request: HttpRequest) -> Result<reqwest::Response, Failure> {
        let r = self.insecure.get().unwrap_or(&self.http).open(request).await;
        if let Err(f) = &r {
            self.last_failure.set(Some(f.kind));
        }
        r
    }
}

impl HttpTransport for Io {
    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        self.fetch(request).await.map_err(|f| {
            self.last_failure.set(Some(f.kind));
            HttpError(f.message)
        })
    }
}

impl Clock for Io {
    fn now(&self) -> i64 {
        self.http.now()
    }
}

impl Sleep for Io {
    async fn sleep(&self, millis: u32) {
        self.http.sleep(millis).await
    }
}

/// Asks whether to continue without verification.
fn accept_untrusted(server: &str, reason: &str) -> bool {
    eprint!(
        "warning: the TLS certificate of {server} is not trusted ({reason}).\nContinue without verification? [y/N] "
    );
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    let _ = std::io::stdin().lock().read_line(&mut answer);
    matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

/// A client of the server of `--server`, with where it was found.
pub struct Connection {
    pub client: Client,
    pub located: Located,
}

impl Connection {
    /// Locates the server of `opts` (a bare domain through the resolver of `home`'s servers) and
    /// prepares a client for `agent` (a full id or a short name), with the admin token if given.
    pub async fn open(
        opts: &ServerOpts,
        home: &Home,
        agent: Option<&str>,
        admin_token: Option<String>,
    ) -> Result<Self, ClientError> {
        let server = ServerUrl::parse(&opts.server).map_err(ClientError::BadServer)?;
        let roots = Trust::roots(opts.ca_cert.as_deref())?;
        let resolver = if server.is_bare_domain() {
            let file = crate::config::FileConfig::load(&home.config_path())?;
            Some(Arc::new(ServerResolver::for_home(home, &file)?))
        } else {
            None
        };
        let located = match &resolver {
            Some(r) => locate::locate(&server, r).await?,
            None => Located::given(&server),
        };
        if !located.endpoint.tls {
            eprintln!(
                "warning: {} is plain HTTP: the password and messages travel unencrypted",
                located.endpoint.base()
            );
        }
        let trust = match (opts.no_verify, located.pin) {
            (true, _) => Trust::NoVerify,
            (false, Some(pin)) => Trust::Pinned(pin),
            (false, None) => roots,
        };
        let resolver = resolver.filter(|_| matches!(located.source, Source::Overrides | Source::Dns));
        let io = Io {
            http: NativeHttp::new(&trust, resolver.as_ref())?,
            resolver,
            insecure: OnceCell::new(),
            label: located.label(&server),
            refused: Cell::new(false),
            last_failure: Cell::new(None),
        };
        let client = Client::with_server(io, server, agent, None)
            .map_err(|e| ClientError::Invalid(one_line(&e.message)))?
            .with_endpoint(located.endpoint.clone())
            .with_admin_token(admin_token);
        Ok(Connection { client, located })
    }

    /// The server as named in messages: its address, and where it was found for a domain.
    pub fn label(&self) -> &str {
        &self.client.io().label
    }

    /// The result of a core call, its error as one of the command line's.
    pub fn check<T>(&self, result: Result<T, atp_wasm::client::ClientError>) -> Result<T, ClientError> {
        result.map_err(|e| {
            let io = self.client.io();
            let server = self.label().to_owned();
            let message = one_line(&e.message);
            match e.kind {
                ErrorKind::Http => ClientError::Api { status: e.status, message, code: e.code, json: e.body.is_some() },
                ErrorKind::Network => match io.last_failure.take() {
                    Some(FailureKind::Certificate) if io.refused.get() => ClientError::CertificateRefused { server },
                    Some(FailureKind::Certificate) => ClientError::Certificate { server, reason: message },
                    _ => ClientError::Connect { server, reason: message },
                },
                ErrorKind::Protocol => ClientError::BadResponse { server, status: e.status, reason: message },
                ErrorKind::Invalid => ClientError::Invalid(message),
            }
        })
    }

    /// `name` (of `flag`) as one of this server's agents: completed with the server's domain, and
    /// refused when of another domain (the server would take the message for a transfer from
    /// another server and refuse it with a confusing signature error).
    pub async fn local_agent(&self, name: &str, flag: &str) -> Result<AgentId, ClientError> {
        let domain = self.check(self.client.domain().await)?;
        let id = self.check(self.client.complete(name).await)?;
        if id.domain() != domain {
            return Err(ClientError::NotLocal { flag: flag.to_owned(), id: id.to_string(), domain });
        }
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_of_the_command_line() {
        let e = ClientError::BadServer(ServerUrl::parse("::1").unwrap_err());
        assert_eq!(e.to_string(), "invalid --server \"::1\": IPv6 addresses need brackets, e.g. [::1]:7443");
        let api = |json, code: Option<&str>| ClientError::Api {
            status: 404,
            message: "Unknown recipient: no agent x".into(),
            code: code.map(str::to_owned),
            json,
        };
        assert_eq!(api(true, Some("550 5.1.1")).to_string(), "Unknown recipient: no agent x (HTTP 404, 550 5.1.1)");
        assert_eq!(api(true, None).to_string(), "Unknown recipient: no agent x (HTTP 404)");
        assert_eq!(api(false, None).to_string(), "Unknown recipient: no agent x");
        let e = ClientError::Certificate { server: "https://a:1".into(), reason: "r".into() };
        assert!(e.to_string().contains("--no-verify") && e.to_string().contains("--ca-cert"));
    }
}
