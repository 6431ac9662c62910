//! The agent side of the HTTP API (docs/protocol.md §6, §9, §10): what `atp send` / `atp recv` and the
//! reference's `ATPClient` do, as a small state machine over an [`HttpTransport`]. It is the whole
//! client of the npm package (`AtpClient`, whose JavaScript glue only performs `fetch`) and is
//! tested natively with canned responses.
//!
//! * Server addresses are read as the CLI reads `--server` ([`ServerUrl::parse`]). Requests go to
//!   that address, or to the endpoint discovery found for it ([`Client::with_endpoint`]).
//! * Short agent names (no `@`) are completed with the server's domain, learnt once from
//!   `GET health` (the reference's CLI and SDK refuse short names, docs/protocol.md §12 item 21); the
//!   agent's own id must be of that domain, as in atp's CLI.
//! * `recv` keeps the `after_id` cursor in the client, as the reference SDK does (docs/protocol.md §10):
//!   the server never deletes anything, so the cursor is what makes a message arrive once.
//! * The admin routes (`agents`, `stats`, `inspect`, and `register` on servers that require it) carry
//!   the admin bearer token ([`Client::with_admin_token`], docs/protocol.md §6 "Admin auth").
//! * Every failure is one [`ClientError`]: the HTTP status and the server's `error_code` when the
//!   server answered, a [`ErrorKind`] otherwise.

use std::cell::{Cell, RefCell};
use std::net::{IpAddr, Ipv6Addr};

use serde_json::{Map, Value};

use crate::env::Clock;
use crate::http::{HttpError, HttpRequest, HttpResponse, HttpTransport, Sleep};
use crate::identity::AgentId;
use crate::message::Message;
use crate::relay::api;
use crate::DEFAULT_PORT;

/// Path prefix of every route (docs/protocol.md §6).
pub const API_PREFIX: &str = crate::relay::api::PREFIX;

/// Content type of a submitted message, as the reference sends it (docs/protocol.md §2).
pub const MESSAGE_CONTENT_TYPE: &str = "application/atp+json";

/// How often `recv` with `wait` asks the server again, as the reference's CLI does (docs/protocol.md §9).
pub const DEFAULT_POLL_MS: u32 = 2_000;

/// How long `recv` with `wait: true` waits for mail, as the reference's CLI does (docs/protocol.md §9).
pub const DEFAULT_WAIT_MS: u32 = 30_000;

/// What went wrong, beyond the HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The server answered with an error status; `status` and usually `code` say which.
    Http,
    /// No answer: connection refused, TLS or DNS failure, CORS, timeout.
    Network,
    /// The call itself is wrong (bad agent id, missing password, bad server address); nothing was sent.
    Invalid,
    /// The server's answer is not what the protocol says (not JSON, missing fields).
    Protocol,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Http => "http",
            ErrorKind::Network => "network",
            ErrorKind::Invalid => "invalid",
            ErrorKind::Protocol => "protocol",
        }
    }
}

/// A failed client call. `status` is the HTTP status (0 when there was no answer), `code` the
/// server's `error_code` (docs/protocol.md §5.4; atp-native sends one with every error), `body` the
/// server's JSON error object.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct ClientError {
    pub kind: ErrorKind,
    pub status: u16,
    pub code: Option<String>,
    pub message: String,
    pub body: Option<Box<Value>>,
}

impl ClientError {
    pub fn invalid(message: impl Into<String>) -> Self {
        ClientError { kind: ErrorKind::Invalid, status: 0, code: None, message: message.into(), body: None }
    }

    pub fn network(e: HttpError) -> Self {
        ClientError { kind: ErrorKind::Network, status: 0, code: None, message: e.0, body: None }
    }

    pub fn protocol(status: u16, message: impl Into<String>) -> Self {
        ClientError { kind: ErrorKind::Protocol, status, code: None, message: message.into(), body: None }
    }

    /// The error a non-2xx response stands for: the reference's `{"error": …, "error_code": …}`
    /// shape (docs/protocol.md §6), with `error_message` or `details` appended to the text when present.
    pub fn from_response(resp: &HttpResponse) -> Self {
        let body: Option<Value> = serde_json::from_slice(&resp.body).ok().filter(Value::is_object);
        let field = |k: &str| body.as_ref().and_then(|b| b.get(k)).and_then(Value::as_str).map(str::to_owned);
        let mut message = match field("error") {
            Some(e) => e,
            None => {
                let text = String::from_utf8_lossy(&resp.body);
                let text = text.trim();
                if text.is_empty() {
                    format!("HTTP {}", resp.status)
                } else {
                    format!("HTTP {}: {}", resp.status, crate::records::clip(text))
                }
            }
        };
        if let Some(more) = field("error_message").or_else(|| field("details")) {
            message = format!("{message}: {more}");
        }
        ClientError {
            kind: ErrorKind::Http,
            status: resp.status,
            code: field("error_code"),
            message,
            body: body.map(Box::new),
        }
    }
}

/// A server address that is not one of the forms [`ServerUrl::parse`] accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid server address '{}': {reason}", clip(.input))]
pub struct AddressError {
    /// The address as given.
    pub input: String,
    /// What is wrong with it.
    pub reason: String,
}

impl From<AddressError> for ClientError {
    fn from(e: AddressError) -> Self {
        ClientError::invalid(e.to_string())
    }
}

/// A server address, read exactly as the CLI (`atp --server`, atp-native) reads it: `host`,
/// `host:port`, `https://host[:port][/]`, `http://host[:port][/]`, where host is a DNS name, an IPv4
/// address or a bracketed IPv6 address (`[::1]:7443`); `example.com` → `https://example.com:7443`.
/// The default port is 7443 for both schemes, as in the reference (docs/protocol.md §9). Unlike the
/// reference, a path is refused instead of silently dropped, and IPv6 literals work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerUrl {
    /// `https` (true) or `http`.
    pub tls: bool,
    /// Lowercase host name or IP address (IPv6 without brackets).
    pub host: String,
    pub port: u16,
    /// The address named the port (`false`: the default port was filled in).
    pub explicit_port: bool,
}

impl ServerUrl {
    /// `https://host:port`: an endpoint that discovery found.
    pub fn https(host: &str, port: u16) -> Self {
        ServerUrl { tls: true, host: host.to_owned(), port, explicit_port: true }
    }

    pub fn parse(server: &str) -> Result<Self, AddressError> {
        let bad = |why: &str| AddressError { input: server.to_owned(), reason: why.to_owned() };
        let s = server.trim();
        let lower = s.to_ascii_lowercase();
        let (tls, rest) = if lower.starts_with("https://") {
            (true, &s[8..])
        } else if lower.starts_with("http://") {
            (false, &s[7..])
        } else if s.contains("://") {
            return Err(bad("only https:// and http:// are supported"));
        } else {
            (true, s)
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains(['/', '?', '#']) {
            return Err(bad("give only the server's address (host or host:port), without a path"));
        }
        if authority.contains('@') {
            return Err(bad("credentials do not belong in the address (use the password option)"));
        }
        if authority.is_empty() {
            return Err(bad("no host"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (addr, after) = v6.split_once(']').ok_or_else(|| bad("missing ']' after the IPv6 address"))?;
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
                crate::records::normalize_hostname(host).ok_or_else(|| bad("not a valid host name"))?
            };
            (host, port)
        };
        let explicit_port = port.is_some();
        let port = match port {
            None => DEFAULT_PORT,
            Some(p) => Some(p)
                .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|p| p.parse::<u16>().ok())
                .filter(|p| *p > 0)
                .ok_or_else(|| bad("the port must be a number from 1 to 65535"))?,
        };
        Ok(ServerUrl { tls, host, port, explicit_port })
    }

    /// True for an `https` address that names a domain and no port (`example.com`): the address a
    /// domain's server is found for by discovery (docs/protocol.md §5), as servers find their peers.
    pub fn is_bare_domain(&self) -> bool {
        self.tls && !self.explicit_port && self.host.parse::<IpAddr>().is_err()
    }

    /// `https://host:port` (IPv6 in brackets), without a trailing slash.
    pub fn base(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        if self.host.contains(':') {
            format!("{scheme}://[{}]:{}", self.host, self.port)
        } else {
            format!("{scheme}://{}:{}", self.host, self.port)
        }
    }

    /// The URL of an API route ([`crate::relay::api`]), e.g. `https://host:port/.well-known/atp/v1/message`.
    pub fn route(&self, route: &api::Route) -> String {
        route.url(&self.base())
    }
}

fn clip(s: &str) -> String {
    crate::records::clip(s)
}

/// What a `send` carries besides the recipient (docs/protocol.md §2, §9 `send`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SendOptions {
    pub body: Option<String>,
    pub subject: Option<String>,
    /// Any JSON value, sent as the payload as it is (instead of `body`/`subject`).
    pub payload: Option<Value>,
    /// Copy addresses (metadata only, docs/protocol.md §2); short names are completed too.
    pub cc: Vec<String>,
}

/// The server accepted a message (HTTP 202).
#[derive(Debug, Clone, PartialEq)]
pub struct SendReceipt {
    /// The server's `status` (`accepted`).
    pub status: String,
    pub nonce: String,
    /// The message's timestamp (Unix seconds), as the reference SDK returns it (docs/protocol.md §10).
    pub timestamp: i64,
    /// The message as submitted (ids completed and lowercased).
    pub message: Message,
}

/// How to ask for mail.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecvOptions {
    /// At most this many messages (the server's default is 50, atp-native caps it at 500).
    pub limit: Option<u32>,
    /// Start after this inbox row id instead of the client's cursor (and move the cursor there).
    pub after: Option<i64>,
    /// Poll until a message arrives or this many milliseconds have passed.
    pub wait_ms: Option<u32>,
    /// Milliseconds between polls (default [`DEFAULT_POLL_MS`]).
    pub poll_ms: Option<u32>,
}

/// An ATP agent's connection to its own server. `T` sends the requests, tells the time (message
/// timestamps) and waits between polls.
///
/// Methods take `&self` and never hold a borrow across an `.await`, so calls may overlap (the
/// JavaScript `AtpClient` shares one client between promises).
pub struct Client<T> {
    io: T,
    server: ServerUrl,
    /// Where requests go: `server`, or the endpoint discovery found for it.
    endpoint: ServerUrl,
    agent: Option<String>,
    password: Option<String>,
    admin_token: Option<String>,
    domain: RefCell<Option<String>>,
    cursor: Cell<i64>,
}

impl<T> std::fmt::Debug for Client<T> {
    /// Never shows the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("server", &self.server.base())
            .field("endpoint", &self.endpoint.base())
            .field("agent", &self.agent)
            .field("domain", &self.domain.borrow())
            .field("cursor", &self.cursor.get())
            .finish_non_exhaustive()
    }
}

impl<T: HttpTransport + Clock + Sleep> Client<T> {
    /// A client of the server at `server` (any `--server` form). `agent` may be a short name; it
    /// is needed by `register`, `send` and `recv`, like `password`.
    pub fn new(io: T, server: &str, agent: Option<&str>, password: Option<&str>) -> Result<Self, ClientError> {
        Self::with_server(io, ServerUrl::parse(server)?, agent, password)
    }

    /// [`Client::new`] with an address parsed already.
    pub fn with_server(
        io: T,
        server: ServerUrl,
        agent: Option<&str>,
        password: Option<&str>,
    ) -> Result<Self, ClientError> {
        let agent = agent.map(str::trim).filter(|a| !a.is_empty()).map(str::to_owned);
        if let Some(a) = &agent {
            // Check the form now; a short name is completed later.
            let probe = if a.contains('@') { a.clone() } else { format!("{a}@example.com") };
            AgentId::parse(&probe).map_err(|e| ClientError::invalid(format!("invalid agent id '{}': {e}", clip(a))))?;
        }
        Ok(Client {
            io,
            endpoint: server.clone(),
            server,
            agent,
            password: password.map(str::to_owned),
            admin_token: None,
            domain: RefCell::new(None),
            cursor: Cell::new(0),
        })
    }

    /// Sends the requests to `endpoint` (what discovery found for the server's address) instead of
    /// the address itself, which stays the server's name ([`Client::server`]).
    pub fn with_endpoint(mut self, endpoint: ServerUrl) -> Self {
        self.endpoint = endpoint;
        self
    }

    /// The admin bearer token for [`Client::agents`], [`Client::stats`], [`Client::inspect`] and
    /// [`Client::register`] on servers that require it (docs/protocol.md §6 "Admin auth").
    pub fn with_admin_token(mut self, token: Option<String>) -> Self {
        self.admin_token = token.filter(|t| !t.is_empty());
        self
    }

    /// Sets the agent's password (when it is only known after the agent's id, e.g. asked for it).
    pub fn set_password(&mut self, password: impl Into<String>) {
        self.password = Some(password.into());
    }

    /// The server's address as given.
    pub fn server(&self) -> &ServerUrl {
        &self.server
    }

    /// Where the requests go.
    pub fn endpoint(&self) -> &ServerUrl {
        &self.endpoint
    }

    pub fn io(&self) -> &T {
        &self.io
    }

    /// The inbox row id after which the next `recv` starts (0: from the beginning).
    pub fn cursor(&self) -> i64 {
        self.cursor.get()
    }

    pub fn set_cursor(&self, after: i64) {
        self.cursor.set(after.max(0));
    }

    /// The server's domain if already known (from `health` or a full agent id).
    pub fn known_domain(&self) -> Option<String> {
        self.domain.borrow().clone()
    }

    /// The agent's full id, if it can be known without asking the server.
    pub fn known_agent_id(&self) -> Option<AgentId> {
        let agent = self.agent.as_deref()?;
        match self.known_domain() {
            Some(d) => AgentId::parse_or_complete(agent, &d).ok(),
            None => AgentId::parse(agent).ok(),
        }
    }

    async fn call(&self, request: HttpRequest) -> Result<HttpResponse, ClientError> {
        self.io.send(request).await.map_err(ClientError::network)
    }

    async fn call_json(&self, request: HttpRequest) -> Result<Value, ClientError> {
        let resp = self.call(request).await?;
        json_body(&resp)
    }

    /// `GET health` → `{"status":"healthy","domain":…,"version":…}`; remembers the domain.
    pub async fn health(&self) -> Result<Value, ClientError> {
        let v = self.call_json(HttpRequest::get(self.endpoint.route(&api::HEALTH))).await?;
        if let Some(d) = v.get("domain").and_then(Value::as_str) {
            if let Some(d) = crate::records::normalize_hostname(d) {
                *self.domain.borrow_mut() = Some(d);
            }
        }
        Ok(v)
    }

    /// `GET <route>` with the admin token: `agents`, `stats`, `inspect?nonce=…` (docs/protocol.md §6).
    async fn admin_get(&self, route: &api::Route, query: &str) -> Result<Value, ClientError> {
        let token = self.admin_token.as_deref().ok_or_else(|| ClientError::invalid("no admin token given"))?;
        self.call_json(HttpRequest::get(format!("{}{query}", self.endpoint.route(route))).bearer_auth(token)).await
    }

    /// `GET agents` (admin) → `{"agents":[…]}`.
    pub async fn agents(&self) -> Result<Value, ClientError> {
        self.admin_get(&api::AGENTS, "").await
    }

    /// `GET stats` (admin): the server's counters.
    pub async fn stats(&self) -> Result<Value, ClientError> {
        self.admin_get(&api::STATS, "").await
    }

    /// `GET inspect?nonce=…` (admin): where a message is in the delivery queue.
    pub async fn inspect(&self, nonce: &str) -> Result<Value, ClientError> {
        self.admin_get(&api::INSPECT, &format!("?nonce={}", query_escape(nonce))).await
    }

    /// `GET capabilities` (docs/protocol.md §6).
    pub async fn capabilities(&self) -> Result<Value, ClientError> {
        self.call_json(HttpRequest::get(self.endpoint.route(&api::CAPABILITIES))).await
    }

    /// The server's domain: known, or learnt from `GET health`.
    pub async fn domain(&self) -> Result<String, ClientError> {
        if let Some(d) = self.known_domain() {
            return Ok(d);
        }
        self.health().await?;
        self.known_domain().ok_or_else(|| ClientError::protocol(200, "the server's health answer names no domain"))
    }

    /// `name` as a full agent id: as is when it has an `@`, else completed with the server's domain.
    pub async fn complete(&self, name: &str) -> Result<AgentId, ClientError> {
        let name = name.trim();
        let id = if name.contains('@') {
            AgentId::parse(name)
        } else {
            AgentId::parse_or_complete(name, &self.domain().await?)
        };
        id.map_err(|e| ClientError::invalid(format!("invalid agent id '{}': {e}", clip(name))))
    }

    fn agent_name(&self) -> Result<&str, ClientError> {
        self.agent.as_deref().ok_or_else(|| ClientError::invalid("no agentId given"))
    }

    fn password(&self) -> Result<&str, ClientError> {
        self.password.as_deref().ok_or_else(|| ClientError::invalid("no password given"))
    }

    /// The agent's full id: a short name completed with the server's domain, and, as the CLI does,
    /// refused when its domain is not the server's (the server would take the message for a
    /// transfer from another server and refuse it with a confusing signature error).
    pub async fn agent_id(&self) -> Result<AgentId, ClientError> {
        let name = self.agent_name()?.to_owned();
        let domain = self.domain().await?;
        let id = AgentId::parse_or_complete(name.trim(), &domain)
            .map_err(|e| ClientError::invalid(format!("invalid agent id '{}': {e}", clip(&name))))?;
        if id.domain() != domain {
            return Err(ClientError::invalid(format!(
                "agent {id} does not belong to this server, whose domain is {domain}"
            )));
        }
        Ok(id)
    }

    /// `POST register` `{"agent_id","password"}` → `{"status":"registered","agent_id":…}`. The name
    /// is sent as given; the server completes a short one with its domain (docs/protocol.md §6). The
    /// admin token, when given, goes along (servers started with `--registration token`).
    pub async fn register(&self) -> Result<Value, ClientError> {
        let body = serde_json::json!({"agent_id": self.agent_name()?, "password": self.password()?});
        let mut req = HttpRequest::post(self.endpoint.route(&api::REGISTER), "application/json", body.to_string());
        if let Some(token) = &self.admin_token {
            req = req.bearer_auth(token);
        }
        let v = self.call_json(req).await?;
        if self.known_domain().is_none() {
            if let Some(id) = v.get("agent_id").and_then(Value::as_str).and_then(|s| AgentId::parse(s).ok()) {
                *self.domain.borrow_mut() = Some(id.domain().to_owned());
            }
        }
        Ok(v)
    }

    /// The message `send` would submit (without sending it).
    pub async fn compose(&self, to: &str, opts: &SendOptions) -> Result<Message, ClientError> {
        let to = self.complete(to).await?;
        let from = self.agent_id().await?;
        let payload = match (&opts.payload, &opts.body, &opts.subject) {
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
                return Err(ClientError::invalid("give either payload or body/subject, not both"))
            }
            (Some(p), None, None) => p.clone(),
            (None, body, subject) => {
                let mut m = Map::new();
                if let Some(b) = body {
                    m.insert("body".into(), Value::String(b.clone()));
                }
                if let Some(s) = subject {
                    m.insert("subject".into(), Value::String(s.clone()));
                }
                Value::Object(m)
            }
        };
        let mut msg = Message::new(&from, &to, payload, self.io.now());
        for c in &opts.cc {
            msg.cc.push(self.complete(c).await?.to_string());
        }
        Ok(msg)
    }

    /// Submits a message to `to` (a full id or a short name of the server's domain) with the
    /// agent's credential: `POST message` → 202 (docs/protocol.md §6).
    pub async fn send(&self, to: &str, opts: &SendOptions) -> Result<SendReceipt, ClientError> {
        let password = self.password()?.to_owned();
        let msg = self.compose(to, opts).await?;
        let req = HttpRequest::post(self.endpoint.route(&api::MESSAGE), MESSAGE_CONTENT_TYPE, msg.to_json())
            .basic_auth(&msg.from, &password);
        let v = self.call_json(req).await?;
        let status = v.get("status").and_then(Value::as_str).unwrap_or("accepted").to_owned();
        Ok(SendReceipt { status, nonce: msg.nonce.clone(), timestamp: msg.timestamp, message: msg })
    }

    /// `GET whoami`: the server's view of who this client's credential is (docs/protocol.md §6.1).
    pub async fn whoami(&self) -> Result<AgentId, ClientError> {
        let agent = self.agent_id().await?;
        let req = HttpRequest::get(self.endpoint.route(&api::WHOAMI)).basic_auth(&agent.to_string(), self.password()?);
        let v = self.call_json(req).await?;
        let id = v.get("agent_id").and_then(Value::as_str).unwrap_or_default();
        AgentId::parse(id).map_err(|e| ClientError::protocol(200, format!("whoami: {e}")))
    }

    /// The request for one page of the inbox after `after`.
    pub fn inbox_request(&self, agent: &AgentId, password: &str, after: i64, limit: Option<u32>) -> HttpRequest {
        let mut url = format!("{}?after_id={after}", self.endpoint.route(&api::MESSAGES));
        if let Some(l) = limit {
            url.push_str(&format!("&limit={l}"));
        }
        HttpRequest::get(url).basic_auth(&agent.to_string(), password)
    }

    /// The request that opens (or resumes) the agent's inbox stream after inbox id `after`
    /// (`GET messages/stream` with `Last-Event-ID`, docs/protocol.md §6.5). The caller's
    /// transport reads its body into a [`crate::sse::Subscription`].
    pub async fn stream_request(&self, after: i64) -> Result<HttpRequest, ClientError> {
        let agent = self.agent_id().await?;
        Ok(HttpRequest::get(self.endpoint.route(&api::STREAM))
            .basic_auth(&agent.to_string(), self.password()?)
            .header("accept", crate::relay::stream::CONTENT_TYPE)
            .header("last-event-id", after.to_string()))
    }

    /// `POST messages/ack` (docs/protocol.md §6.5): removes these messages from the agent's
    /// inbox; returns how many were removed. Ids that are not the agent's are an error (404).
    pub async fn ack(&self, ack: &crate::relay::store::Ack) -> Result<u64, ClientError> {
        use crate::relay::store::Ack;
        let agent = self.agent_id().await?;
        let body = match ack {
            Ack::UpTo(n) => api::AckRequest { up_to_id: Some(*n), ids: None },
            Ack::Ids(ids) => api::AckRequest { up_to_id: None, ids: Some(ids.clone()) },
        };
        let req = HttpRequest::post(
            self.endpoint.route(&api::ACK),
            "application/json",
            serde_json::to_vec(&body).unwrap_or_default(),
        )
        .basic_auth(&agent.to_string(), self.password()?);
        let v = self.call_json(req).await?;
        v.get("removed").and_then(Value::as_u64).ok_or_else(|| ClientError::protocol(200, "ack: no 'removed' count"))
    }

    /// Fetches the agent's new messages (`GET messages`, docs/protocol.md §6) after the cursor and
    /// moves the cursor past them. Each message is returned as JSON text exactly as the server
    /// stored it (numbers keep their digits, so signatures still verify). With `wait_ms`, asks
    /// again every `poll_ms` until something arrives or the time is up; then the result may be empty.
    pub async fn recv(&self, opts: &RecvOptions) -> Result<Vec<String>, ClientError> {
        let agent = self.agent_id().await?;
        let password = self.password()?.to_owned();
        if let Some(after) = opts.after {
            self.set_cursor(after);
        }
        let poll = opts.poll_ms.unwrap_or(DEFAULT_POLL_MS).max(1);
        let mut waited: u32 = 0;
        loop {
            let after = self.cursor();
            let v = self.call_json(self.inbox_request(&agent, &password, after, opts.limit)).await?;
            let (messages, last_id) = parse_inbox(&v)?;
            if !messages.is_empty() {
                // Only move forward: an overlapping call may have advanced the cursor already.
                if let Some(last) = last_id {
                    if last > self.cursor() {
                        self.cursor.set(last);
                    }
                }
                return Ok(messages);
            }
            let budget = opts.wait_ms.unwrap_or(0);
            if waited >= budget {
                return Ok(messages);
            }
            let step = poll.min(budget - waited);
            self.io.sleep(step).await;
            waited = waited.saturating_add(step);
        }
    }
}

/// The JSON body of a 2xx response, or the error the response stands for.
pub fn json_body(resp: &HttpResponse) -> Result<Value, ClientError> {
    if !resp.is_success() {
        return Err(ClientError::from_response(resp));
    }
    serde_json::from_slice(&resp.body)
        .map_err(|e| ClientError::protocol(resp.status, format!("the server's answer is not JSON: {e}")))
}

/// `{"messages":[…],"count":n,"last_id":id}` → the messages as JSON texts and `last_id`. Messages
/// without a `last_id` are refused: there would be no way to continue after them.
pub fn parse_inbox(v: &Value) -> Result<(Vec<String>, Option<i64>), ClientError> {
    let messages = v
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| ClientError::protocol(200, "the inbox answer has no 'messages' list"))?;
    let last_id = v.get("last_id").and_then(Value::as_i64);
    if !messages.is_empty() && last_id.is_none() {
        return Err(ClientError::protocol(200, "the inbox answer has messages but no 'last_id'"));
    }
    Ok((messages.iter().map(Value::to_string).collect(), last_id))
}

/// `s` for a URL query value: unreserved characters (RFC 3986) as they are, the rest `%XX`.
fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::executor::block_on;
    use std::collections::VecDeque;

    /// Canned answers, recorded requests, a fixed clock and a sleep that only counts.
    #[derive(Default)]
    struct Mock {
        answers: RefCell<VecDeque<Result<HttpResponse, HttpError>>>,
        requests: RefCell<Vec<HttpRequest>>,
        slept: Cell<u32>,
    }

    impl Mock {
        fn with(answers: Vec<Result<HttpResponse, HttpError>>) -> Self {
            Mock { answers: RefCell::new(answers.into()), ..Default::default() }
        }
    }

    impl HttpTransport for Mock {
        async fn send(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
            self.requests.borrow_mut().push(request);
            self.answers.borrow_mut().pop_front().expect("an answer for every request")
        }
    }
    impl Clock for Mock {
        fn now(&self) -> i64 {
            1_800_000_000
        }
    }
    impl Sleep for Mock {
        async fn sleep(&self, millis: u32) {
            self.slept.set(self.slept.get() + millis);
        }
    }

    fn health() -> Result<HttpResponse, HttpError> {
        Ok(HttpResponse::json(200, r#"{"status":"healthy","domain":"Alpha.Test","version":"0.1.0"}"#))
    }

    fn client(answers: Vec<Result<HttpResponse, HttpError>>) -> Client<Mock> {
        Client::new(Mock::with(answers), "127.0.0.1:17601", Some("alice"), Some("pw:1")).unwrap()
    }

    #[test]
    fn server_addresses_as_the_cli_reads_them() {
        // The forms and refusals of `atp --server` (atp-native's command line parses it here).
        let p = |s: &str| ServerUrl::parse(s).map(|u| u.base());
        assert_eq!(p("example.com").unwrap(), "https://example.com:7443");
        assert_eq!(p("Example.COM:8443").unwrap(), "https://example.com:8443");
        assert_eq!(p("https://example.com").unwrap(), "https://example.com:7443");
        assert_eq!(p("HTTPS://Example.COM:9/").unwrap(), "https://example.com:9");
        assert_eq!(p("http://example.com").unwrap(), "http://example.com:7443");
        assert_eq!(p("http://127.0.0.1:17601/").unwrap(), "http://127.0.0.1:17601");
        assert_eq!(p(" 127.0.0.1:17601 ").unwrap(), "https://127.0.0.1:17601");
        assert_eq!(p("localhost:1").unwrap(), "https://localhost:1");
        assert_eq!(p("  atp.example.com.  ").unwrap(), "https://atp.example.com:7443");
        assert_eq!(p("[::1]:17601").unwrap(), "https://[::1]:17601");
        assert_eq!(p("[::1]").unwrap(), "https://[::1]:7443");
        assert_eq!(p("https://[2001:DB8::1]:8443").unwrap(), "https://[2001:db8::1]:8443");
        assert_eq!(p("example.com:07443").unwrap(), "https://example.com:7443");
        for bad in [
            "",
            "https://",
            "ftp://example.com",
            "example.com:0",
            "example.com:65536",
            "example.com:abc",
            "example.com:",
            "example.com:+80",
            "example.com/path",
            "https://example.com/.well-known/atp/v1",
            "example.com?x=1",
            "user:pw@example.com",
            "exa mple.com",
            "-bad.example",
            "bücher.example",
            "::1",
            "::1:7443",
            "[::1",
            "[::1]7443",
            "[nope]:1",
            "[127.0.0.1]:1",
        ] {
            let e = ServerUrl::parse(bad).unwrap_err();
            assert_eq!(e.input, bad);
            let e = ClientError::from(e);
            assert_eq!(e.kind, ErrorKind::Invalid, "{bad:?}");
            assert!(e.message.starts_with("invalid server address"), "{bad:?}: {}", e.message);
        }
        assert_eq!(ServerUrl::parse("::1").unwrap_err().reason, "IPv6 addresses need brackets, e.g. [::1]:7443");
        let u = ServerUrl::parse("a.test").unwrap();
        assert_eq!(u.route(&api::MESSAGE), "https://a.test:7443/.well-known/atp/v1/message");
        // Only a domain without a port (over https) is left to discovery.
        let bare = |s: &str| ServerUrl::parse(s).unwrap().is_bare_domain();
        assert!(bare("example.com") && bare("https://Example.com/") && bare("localhost"));
        for not in ["example.com:7443", "http://example.com", "127.0.0.1", "[::1]", "https://example.com:1"] {
            assert!(!bare(not), "{not}");
        }
        assert_eq!(ServerUrl::https("::1", 9).base(), "https://[::1]:9");
    }

    #[test]
    fn error_mapping() {
        let e = ClientError::from_response(&HttpResponse::json(
            403,
            r#"{"error":"ATK verification failed","error_code":"550 5.7.28","error_message":"Signature verification failed"}"#,
        ));
        assert_eq!((e.kind, e.status, e.code.as_deref()), (ErrorKind::Http, 403, Some("550 5.7.28")));
        assert_eq!(e.message, "ATK verification failed: Signature verification failed");
        assert_eq!(e.body.unwrap()["error_code"], "550 5.7.28");
        let e =
            ClientError::from_response(&HttpResponse::json(409, r#"{"error":"[500] Agent a@b already registered"}"#));
        assert_eq!((e.status, e.code, e.message.as_str()), (409, None, "[500] Agent a@b already registered"));
        let e = ClientError::from_response(&HttpResponse::new(404, Some("text/plain"), "Not Found"));
        assert_eq!((e.message.as_str(), e.body), ("HTTP 404: Not Found", None));
        let e = ClientError::from_response(&HttpResponse::new(502, None, ""));
        assert_eq!(e.message, "HTTP 502");
        let e = json_body(&HttpResponse::new(200, None, "<html>")).unwrap_err();
        assert_eq!((e.kind, e.status), (ErrorKind::Protocol, 200));
    }

    #[test]
    fn short_names_are_completed_with_the_domain_from_health() {
        let c =
            client(vec![health(), Ok(HttpResponse::json(202, r#"{"status":"accepted","nonce":"x","timestamp":1}"#))]);
        assert_eq!(c.known_agent_id(), None);
        let opts = SendOptions {
            body: Some("hi".into()),
            cc: vec!["carol".into(), "Dave@Beta.test".into()],
            ..Default::default()
        };
        let r = block_on(c.send("Bob", &opts)).unwrap();
        assert_eq!(r.status, "accepted");
        assert_eq!(r.timestamp, 1_800_000_000);
        assert_eq!(r.message.from, "alice@alpha.test");
        assert_eq!(r.message.to, "bob@alpha.test");
        assert_eq!(r.message.cc, ["carol@alpha.test", "dave@beta.test"]);
        assert_eq!(c.known_agent_id().unwrap().to_string(), "alice@alpha.test");
        let reqs = c.io().requests.borrow();
        assert_eq!(reqs[0].url, "https://127.0.0.1:17601/.well-known/atp/v1/health");
        let post = &reqs[1];
        assert_eq!(post.url, "https://127.0.0.1:17601/.well-known/atp/v1/message");
        assert_eq!(post.header_value("content-type"), Some(MESSAGE_CONTENT_TYPE));
        // base64("alice@alpha.test:pw:1")
        assert_eq!(post.header_value("authorization"), Some("Basic YWxpY2VAYWxwaGEudGVzdDpwdzox"));
        let sent = Message::parse(&post.body).unwrap();
        assert_eq!(sent.payload, serde_json::json!({"body": "hi"}));
        assert_eq!(sent.nonce, r.nonce);
        assert!(sent.signature.is_none());
    }

    #[test]
    fn payload_is_passed_through_and_the_agent_must_be_local() {
        let c = Client::new(
            Mock::with(vec![health(), Ok(HttpResponse::json(202, r#"{"status":"accepted"}"#))]),
            "http://h.test",
            Some("Alice@Alpha.test"),
            Some("pw"),
        )
        .unwrap();
        assert_eq!(c.known_agent_id().unwrap().to_string(), "alice@alpha.test");
        let payload: Value = serde_json::from_str(r#"{"n":12345678901234567890,"x":1e-05}"#).unwrap();
        let r =
            block_on(c.send("bob@beta.test", &SendOptions { payload: Some(payload), ..Default::default() })).unwrap();
        let sent = c.io().requests.borrow()[1].body.clone();
        assert!(String::from_utf8(sent).unwrap().contains(r#""payload":{"n":12345678901234567890,"x":1e-05}"#));
        assert_eq!(r.message.from, "alice@alpha.test");
        let both = SendOptions { payload: Some(Value::Null), body: Some("x".into()), ..Default::default() };
        assert_eq!(block_on(c.send("bob@beta.test", &both)).unwrap_err().kind, ErrorKind::Invalid);
        let subject_only =
            block_on(c.compose("b@c.d", &SendOptions { subject: Some("s".into()), ..Default::default() }));
        assert_eq!(subject_only.unwrap().payload, serde_json::json!({"subject": "s"}));

        // An agent of another domain is refused before anything is submitted.
        let foreign = Client::new(Mock::with(vec![health()]), "h.test", Some("eve@beta.test"), Some("pw")).unwrap();
        let e = block_on(foreign.send("bob", &SendOptions::default())).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Invalid);
        assert_eq!(e.message, "agent eve@beta.test does not belong to this server, whose domain is alpha.test");
        assert_eq!(block_on(foreign.recv(&RecvOptions::default())).unwrap_err().kind, ErrorKind::Invalid);
        assert_eq!(foreign.io().requests.borrow().len(), 1, "only health");
    }

    #[test]
    fn server_errors_and_network_errors() {
        let c = client(vec![
            health(),
            Ok(HttpResponse::json(401, r#"{"error":"Credential verification failed","error_code":"535 5.7.8"}"#)),
            Err(HttpError("connection refused".into())),
        ]);
        let e = block_on(c.send("bob", &SendOptions::default())).unwrap_err();
        assert_eq!((e.kind, e.status, e.code.as_deref()), (ErrorKind::Http, 401, Some("535 5.7.8")));
        let e = block_on(c.recv(&RecvOptions::default())).unwrap_err();
        assert_eq!((e.kind, e.status, e.message.as_str()), (ErrorKind::Network, 0, "connection refused"));
    }

    #[test]
    fn invalid_calls_send_nothing() {
        assert_eq!(Client::new(Mock::default(), "a.test", Some("a b"), None).unwrap_err().kind, ErrorKind::Invalid);
        let c = Client::new(Mock::default(), "a.test", None, None).unwrap();
        assert_eq!(block_on(c.register()).unwrap_err().message, "no agentId given");
        let c = Client::new(Mock::default(), "a.test", Some("a@b.c"), None).unwrap();
        assert_eq!(block_on(c.send("x@y.z", &SendOptions::default())).unwrap_err().message, "no password given");
        let c = Client::new(Mock::default(), "a.test", Some("a@b.c"), Some("p")).unwrap();
        let e = block_on(c.send("x@y@z", &SendOptions::default())).unwrap_err();
        assert!(e.message.starts_with("invalid agent id 'x@y@z'"), "{}", e.message);
        assert!(c.io().requests.borrow().is_empty());
    }

    #[test]
    fn register_learns_the_domain() {
        let c = client(vec![Ok(HttpResponse::json(201, r#"{"status":"registered","agent_id":"alice@alpha.test"}"#))]);
        let v = block_on(c.register()).unwrap();
        assert_eq!(v["agent_id"], "alice@alpha.test");
        assert_eq!(c.known_domain().as_deref(), Some("alpha.test"));
        let req = &c.io().requests.borrow()[0];
        assert_eq!(
            serde_json::from_slice::<Value>(&req.body).unwrap(),
            serde_json::json!({"agent_id":"alice","password":"pw:1"})
        );
        assert!(req.header_value("authorization").is_none());
    }

    #[test]
    fn recv_keeps_the_cursor_and_waits() {
        let page = r#"{"messages":[{"from":"bob@alpha.test","to":"alice@alpha.test","timestamp":1,"nonce":"n1","type":"message","payload":{"big":12345678901234567890}},{"from":"b@c.d","to":"alice@alpha.test","timestamp":2,"nonce":"n2","type":"message","payload":{}}],"count":2,"last_id":7}"#;
        let empty = r#"{"messages":[],"count":0}"#;
        let c = client(vec![
            health(),
            Ok(HttpResponse::json(200, page)),
            Ok(HttpResponse::json(200, empty)),
            Ok(HttpResponse::json(200, empty)),
            Ok(HttpResponse::json(200, empty)),
            Ok(HttpResponse::json(200, r#"{"messages":[{"n":1}],"count":1,"last_id":9}"#)),
            Ok(HttpResponse::json(200, empty)),
        ]);
        let got = block_on(c.recv(&RecvOptions { limit: Some(10), ..Default::default() })).unwrap();
        assert_eq!(got.len(), 2);
        assert!(got[0].contains("12345678901234567890"));
        assert_eq!(c.cursor(), 7);
        // Nothing new, no wait: one request, empty.
        assert!(block_on(c.recv(&RecvOptions::default())).unwrap().is_empty());
        // Wait 5 s polling every 2 s: empty, empty, then a message (2 + 2 ms slept).
        let got = block_on(c.recv(&RecvOptions { wait_ms: Some(5000), ..Default::default() })).unwrap();
        assert_eq!(got, [r#"{"n":1}"#]);
        assert_eq!(c.io().slept.get(), 4000);
        assert_eq!(c.cursor(), 9);
        // An explicit `after` moves the cursor.
        assert!(block_on(c.recv(&RecvOptions { after: Some(3), ..Default::default() })).unwrap().is_empty());
        assert_eq!(c.cursor(), 3);
        let urls: Vec<String> = c.io().requests.borrow().iter().map(|r| r.url.clone()).collect();
        assert!(urls[1].ends_with("/messages?after_id=0&limit=10"), "{}", urls[1]);
        assert!(urls[2].ends_with("/messages?after_id=7"));
        assert!(urls[5].ends_with("/messages?after_id=7"));
        assert!(urls[6].ends_with("/messages?after_id=3"));
        assert_eq!(
            c.io().requests.borrow()[1].header_value("authorization"),
            Some("Basic YWxpY2VAYWxwaGEudGVzdDpwdzox")
        );
    }

    #[test]
    fn recv_wait_gives_up_after_the_budget() {
        let empty = || Ok(HttpResponse::json(200, r#"{"messages":[],"count":0}"#));
        let c = client(vec![health(), empty(), empty(), empty()]);
        let got = block_on(c.recv(&RecvOptions { wait_ms: Some(2500), poll_ms: Some(2000), ..Default::default() }));
        assert!(got.unwrap().is_empty());
        assert_eq!(c.io().slept.get(), 2500);
        assert_eq!(c.io().requests.borrow().len(), 4);
        let bad = client(vec![health(), Ok(HttpResponse::json(200, r#"{"count":0}"#))]);
        assert_eq!(block_on(bad.recv(&RecvOptions::default())).unwrap_err().kind, ErrorKind::Protocol);
        // Messages without a last_id: no way to continue after them.
        let v: Value = serde_json::from_str(r#"{"messages":[{"n":1}],"count":1}"#).unwrap();
        assert_eq!(parse_inbox(&v).unwrap_err().kind, ErrorKind::Protocol);
        let v: Value = serde_json::from_str(r#"{"messages":[],"count":0}"#).unwrap();
        assert_eq!(parse_inbox(&v).unwrap(), (vec![], None));
    }

    #[test]
    fn whoami_asks_the_server_with_the_credential() {
        let answers = vec![
            Ok(HttpResponse::json(200, r#"{"status":"healthy","domain":"alpha.test"}"#)),
            Ok(HttpResponse::json(200, r#"{"agent_id":"alice@alpha.test"}"#)),
            Ok(HttpResponse::json(401, r#"{"error":"Credential verification failed","error_code":"535 5.7.8"}"#)),
        ];
        let c = Client::new(Mock::with(answers), "alpha.test", Some("alice@alpha.test"), Some("pw")).unwrap();
        assert_eq!(block_on(c.whoami()).unwrap().to_string(), "alice@alpha.test");
        let req = c.io().requests.borrow()[1].clone();
        assert_eq!(req.url, "https://alpha.test:7443/.well-known/atp/v1/whoami");
        assert!(req.header_value("authorization").is_some_and(|a| a.starts_with("Basic ")));
        let e = block_on(c.whoami()).unwrap_err();
        assert_eq!((e.status, e.code.as_deref()), (401, Some("535 5.7.8")));
    }

    #[test]
    fn admin_calls_carry_the_token_and_requests_go_to_the_endpoint() {
        let answers = vec![
            Ok(HttpResponse::json(200, r#"{"agents":["a@alpha.test"]}"#)),
            Ok(HttpResponse::json(200, r#"{"uptime":1}"#)),
            Ok(HttpResponse::json(404, r#"{"error":"Message m not found","error_code":"550 5.1.0"}"#)),
            Ok(HttpResponse::json(201, r#"{"status":"registered","agent_id":"alice@alpha.test"}"#)),
        ];
        let c = Client::new(Mock::with(answers), "alpha.test", Some("alice"), Some("pw"))
            .unwrap()
            .with_endpoint(ServerUrl::https("127.0.0.1", 17601))
            .with_admin_token(Some("tok".into()));
        assert_eq!(c.server().base(), "https://alpha.test:7443");
        assert_eq!(c.endpoint().base(), "https://127.0.0.1:17601");
        assert_eq!(block_on(c.agents()).unwrap()["agents"][0], "a@alpha.test");
        assert_eq!(block_on(c.stats()).unwrap()["uptime"], 1);
        let e = block_on(c.inspect("m 1/&x")).unwrap_err();
        assert_eq!((e.status, e.code.as_deref()), (404, Some("550 5.1.0")));
        block_on(c.register()).unwrap();
        let reqs = c.io().requests.borrow();
        let urls: Vec<&str> = reqs.iter().map(|r| r.url.as_str()).collect();
        assert_eq!(
            urls,
            [
                "https://127.0.0.1:17601/.well-known/atp/v1/agents",
                "https://127.0.0.1:17601/.well-known/atp/v1/stats",
                "https://127.0.0.1:17601/.well-known/atp/v1/inspect?nonce=m%201%2F%26x",
                "https://127.0.0.1:17601/.well-known/atp/v1/register",
            ]
        );
        assert!(reqs.iter().all(|r| r.header_value("authorization") == Some("Bearer tok")));
        let no_token = Client::new(Mock::default(), "alpha.test", None, None).unwrap();
        assert_eq!(block_on(no_token.stats()).unwrap_err().message, "no admin token given");
        assert!(no_token.io().requests.borrow().is_empty());
    }
}
