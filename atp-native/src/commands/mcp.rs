//! `atp mcp`: one agent's ATP mail as a Model Context Protocol server on stdin/stdout, so that any
//! MCP-capable AI agent can send and receive ATP messages (issue 19).
//!
//! The server acts as the agent of `--agent-id` on the server of `--server`, found and trusted as
//! for every other command (docs/protocol.md §9); it talks to it through the core's client
//! ([`atp_wasm::client::Client`], docs/design.md §1.1) over the native transport, like `atp send`
//! and `atp recv`. The password comes from `--password-env VAR` (preferred), `--password` /
//! `ATP_PASSWORD`, or the terminal.
//!
//! * Tools ([`tools`]): `send_message` (`POST message`), `check_inbox` (`GET messages` after the
//!   saved cursor, which it shares with `atp recv` in `<home>/cursors.json`: each message is
//!   returned once, across restarts), `whoami` (`GET whoami`), `server_status` (`GET health`,
//!   `capabilities`) and `verify_message` (a signature against DNS or a key, [`inbox::Verifier`]).
//!   There is no `acknowledge`: ATP servers keep every message and have no acknowledgement yet
//!   (docs/protocol.md §6.1 `GET messages`); the cursor is what makes a message arrive once. It will
//!   come with push delivery and acknowledgement (issue 18).
//! * The resource `atp://inbox`: the messages `check_inbox` has not returned yet (reading it moves
//!   nothing). A client subscribed to it — `resources/subscribe` (protocol versions up to
//!   2025-11-25) or `subscriptions/listen` (2026-07-28) — gets `notifications/resources/updated`
//!   when new mail arrives or `check_inbox` took some. New mail is found by polling the server every
//!   `--poll-interval` seconds: servers do not push yet.
//! * Every failure of a tool is an MCP tool error (`isError: true`) carrying the ATP `error_code`
//!   (docs/protocol.md §5.4; [`tools::ToolError`]), and the server goes on serving. Only a
//!   request that names no tool or resource of this server is a protocol error.
//!
//! The core's client is not `Sync`, so the whole server runs on the command's current-thread
//! runtime in a `LocalSet` (the SDK's `local` feature); requests still overlap (a `check_inbox`
//! waiting for mail does not hold up a `send_message`), and `check_inbox` calls run one at a time
//! so that the cursor is never read twice.

pub mod inbox;
pub mod tools;

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Duration;

use atp_wasm::client::{json_body, RecvOptions, SendOptions};
use atp_wasm::http::{HttpRequest, HttpTransport};
use atp_wasm::identity::AgentId;
use atp_wasm::keys::PublicKey;
use atp_wasm::message::Message;
use atp_wasm::ErrorCode;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, Implementation, ListResourcesResult, ListToolsResult,
    PaginatedRequestParams, ReadResourceRequestParams, ReadResourceResponse, ReadResourceResult, Resource,
    ResourceContents, ResourceUpdatedNotificationParam, ServerCapabilities, ServerConfig, SubscribeRequestParams,
    SubscriptionFilter, UnsubscribeRequestParams,
};
use rmcp::service::{RequestContext, RoleServer, SubscriptionContext};
use rmcp::{ErrorData as McpError, ServerHandler, ServiceExt};
use serde_json::{json, Value};
use tokio::sync::watch;

use super::recv::Cursors;
use super::{default_agent, home, CmdError};
use crate::cli::McpArgs;
use crate::client::{ClientError, Connection};
use inbox::{present, Signature, Verifier};
use tools::{Args, ToolError};

/// The URI of the inbox resource.
pub const INBOX_URI: &str = "atp://inbox";
/// Messages of this session remembered for `verify_message {nonce}`.
const REMEMBERED: usize = 1000;
/// At most this many messages in `atp://inbox`.
const INBOX_PAGE: u32 = 50;

pub async fn mcp(a: McpArgs) -> Result<(), CmdError> {
    crate::logging::init(&a.log_level, crate::logging::LogFormat::Text);
    let home = home(&a.home);
    let name = default_agent(&home, a.agent_id.clone(), "--agent-id")?;
    let mut conn = Connection::open(&a.server, &home, Some(&name), None).await?;
    // The agent's id now, when the server answers: a wrong --agent-id or --server stops here, and a
    // certificate question (stdin a terminal) is asked before the protocol starts on stdin. An
    // unreachable server does not stop the MCP server: its tools say so until it answers.
    let id = match conn.local_agent(&name, "--agent-id").await {
        Ok(id) => Some(id),
        Err(e @ (ClientError::NotLocal { .. } | ClientError::Invalid(_) | ClientError::CertificateRefused { .. })) => {
            return Err(e.into())
        }
        Err(e) => {
            say!("warning: {e}; serving anyway, the tools report errors until the server answers");
            None
        }
    };
    let label = id.as_ref().map_or_else(|| name.clone(), AgentId::to_string);
    let password = agent_password(&a, &label)?;
    conn.client.set_password(password.clone());
    let agent = Agent {
        server_key: conn.client.server().base(),
        conn,
        name,
        password,
        id: RefCell::new(id),
        cursors: Cursors::new(&home),
        inbox_lock: tokio::sync::Mutex::new(()),
        verifier: Verifier::for_home(&home, a.dns_server),
        seen: RefCell::new(VecDeque::new()),
        changed: watch::channel(0).0,
        poll: Duration::from_secs(a.poll_interval),
        legacy_watch: RefCell::new(None),
    };
    say!("atp mcp: {label} on {}, serving MCP on stdin/stdout", agent.conn.label());
    let server = AtpMcp(Rc::new(agent));
    tokio::task::LocalSet::new()
        .run_until(async move {
            let running = server
                .serve(rmcp::transport::stdio())
                .await
                .map_err(|e| CmdError::Usage(format!("MCP session did not start: {e}")))?;
            running.waiting().await.map_err(|e| CmdError::Usage(format!("MCP session ended abnormally: {e}")))?;
            Ok(())
        })
        .await
}

/// `--password-env VAR`, else `--password` / `ATP_PASSWORD`, else the terminal.
fn agent_password(a: &McpArgs, agent: &str) -> Result<String, CmdError> {
    if let Some(var) = &a.password_env {
        return match std::env::var(var) {
            Ok(p) if !p.is_empty() => Ok(p),
            Ok(_) => Err(CmdError::Usage(format!("--password-env {var}: the variable is empty"))),
            Err(_) => Err(CmdError::Usage(format!(
                "--password-env {var}: the variable is not set (set it in the MCP client's \"env\" for this server)"
            ))),
        };
    }
    super::password(a.password.clone(), agent)
}

/// One agent on its server, and what the session remembers.
struct Agent {
    conn: Connection,
    /// `--agent-id` as given (a short name is completed with the server's domain).
    name: String,
    password: String,
    /// The full id, once the server told its domain.
    id: RefCell<Option<AgentId>>,
    cursors: Cursors,
    /// The key of the cursor file: the server as `atp recv` names it.
    server_key: String,
    /// `check_inbox` calls run one at a time.
    inbox_lock: tokio::sync::Mutex<()>,
    verifier: Verifier,
    /// `(nonce, message JSON)` of the messages this session returned, newest last.
    seen: RefCell<VecDeque<(String, String)>>,
    /// Bumped when `check_inbox` took messages (`atp://inbox` changed).
    changed: watch::Sender<u64>,
    poll: Duration,
    /// The poller of a `resources/subscribe` subscription.
    legacy_watch: RefCell<Option<tokio::task::JoinHandle<()>>>,
}

impl Agent {
    async fn id(&self) -> Result<AgentId, ToolError> {
        if let Some(id) = self.id.borrow().clone() {
            return Ok(id);
        }
        let id = self.conn.local_agent(&self.name, "--agent-id").await.map_err(ToolError::client)?;
        *self.id.borrow_mut() = Some(id.clone());
        Ok(id)
    }

    fn remember(&self, raw: &str) {
        let nonce = serde_json::from_str::<Value>(raw).ok().and_then(|v| v.get("nonce")?.as_str().map(str::to_owned));
        if let Some(n) = nonce {
            let mut seen = self.seen.borrow_mut();
            seen.push_back((n, raw.to_owned()));
            while seen.len() > REMEMBERED {
                seen.pop_front();
            }
        }
    }

    /// The messages as a model reads them, each remembered for `verify_message`.
    async fn present_all(&self, texts: &[String], own_domain: &str, verify: bool) -> Vec<Value> {
        let mut out = Vec::with_capacity(texts.len());
        for raw in texts {
            self.remember(raw);
            let sig = match Message::parse(raw.as_bytes()) {
                Err(e) => Signature::Failed {
                    key_id: None,
                    error: format!("not a valid message: {e}"),
                    code: ErrorCode::InvalidFormat.as_str(),
                },
                Ok(m) if verify => self.verifier.check(&m, own_domain).await,
                Ok(m) => match &m.signature {
                    Some(env) => Signature::NotChecked { key_id: env.key_id.to_ascii_lowercase() },
                    None => self.verifier.check(&m, own_domain).await,
                },
            };
            out.push(present(raw, &sig));
        }
        out
    }

    /// The saved position of `check_inbox` (and `atp recv`).
    fn saved_cursor(&self, id: &AgentId) -> Result<i64, ToolError> {
        self.cursors.get(&self.server_key, &id.to_string()).map_err(ToolError::local)
    }

    /// One page of the inbox after `after`, without moving any cursor: the messages' JSON texts and
    /// the last one's row id.
    async fn peek(&self, id: &AgentId, after: i64, limit: u32) -> Result<(Vec<String>, Option<i64>), ToolError> {
        let client = &self.conn.client;
        let request = client.inbox_request(id, &self.password, after, Some(limit));
        let answer = client.io().send(request).await.map_err(atp_wasm::client::ClientError::network);
        let page = answer.and_then(|r| json_body(&r)).and_then(|v| atp_wasm::client::parse_inbox(&v));
        self.conn.check(page).map_err(ToolError::client)
    }

    async fn send_message(&self, args: Option<rmcp::model::JsonObject>) -> Result<Value, ToolError> {
        let mut a = Args::new(tools::SEND_MESSAGE, args, &["to", "body", "subject", "payload", "cc"])?;
        let to = a.required_string("to")?.trim().to_owned();
        let body = a.string("body")?;
        let subject = a.string("subject")?;
        let payload = a.value("payload");
        let cc = a.strings("cc")?;
        tools::check_address(tools::SEND_MESSAGE, "to", &to)?;
        for c in &cc {
            tools::check_address(tools::SEND_MESSAGE, "cc", c)?;
        }
        match (&payload, &body, &subject) {
            (None, None, _) => {
                return Err(ToolError::bad_argument(
                    "send_message: give 'body' (the text, with an optional 'subject') or 'payload' (JSON)",
                ))
            }
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
                return Err(ToolError::bad_argument(
                    "send_message: give either 'payload' or 'body'/'subject', not both",
                ))
            }
            _ => {}
        }
        let from = self.id().await?;
        let opts = SendOptions { body, subject, payload, cc };
        let sent = self.conn.check(self.conn.client.send(&to, &opts).await).map_err(ToolError::client)?;
        let mut out = json!({
            "status": sent.status,
            "nonce": sent.nonce,
            "timestamp": sent.timestamp,
            "from": from.to_string(),
            "to": sent.message.to,
        });
        if !sent.message.cc.is_empty() {
            out["cc"] = json!(sent.message.cc);
        }
        Ok(out)
    }

    async fn check_inbox(&self, args: Option<rmcp::model::JsonObject>) -> Result<Value, ToolError> {
        let mut a = Args::new(tools::CHECK_INBOX, args, &["limit", "wait_seconds", "verify_signatures"])?;
        let limit = a.integer("limit", 1, tools::MAX_LIMIT)?.unwrap_or(tools::DEFAULT_LIMIT) as u32;
        let wait = a.integer("wait_seconds", 0, tools::MAX_WAIT_SECONDS)?.unwrap_or(0) as u32;
        let verify = a.boolean("verify_signatures")?.unwrap_or(true);
        let id = self.id().await?;
        let _one_at_a_time = self.inbox_lock.lock().await;
        // The file may be ahead (an `atp recv` meanwhile); the client may be ahead (a failed save).
        let client = &self.conn.client;
        client.set_cursor(self.saved_cursor(&id)?.max(client.cursor()));
        let opts = RecvOptions { limit: Some(limit), after: None, wait_ms: Some(wait * 1000), poll_ms: Some(1000) };
        let texts = self.conn.check(client.recv(&opts).await).map_err(ToolError::client)?;
        let mut out = json!({"agent_id": id.to_string()});
        if !texts.is_empty() {
            if let Err(e) = self.cursors.advance(&self.server_key, &id.to_string(), client.cursor()) {
                out["warning"] = format!(
                    "the inbox position could not be saved ({e}): after a restart these messages may come again"
                )
                .into();
            }
            self.changed.send_modify(|n| *n += 1);
        }
        let messages = self.present_all(&texts, id.domain(), verify).await;
        out["count"] = messages.len().into();
        out["more"] = (messages.len() == limit as usize).into();
        out["messages"] = messages.into();
        Ok(out)
    }

    async fn whoami(&self, args: Option<rmcp::model::JsonObject>) -> Result<Value, ToolError> {
        Args::new(tools::WHOAMI, args, &[])?;
        let id = self.id().await?;
        let client = &self.conn.client;
        let request = HttpRequest::get(client.endpoint().route(&atp_wasm::relay::api::WHOAMI))
            .basic_auth(&id.to_string(), &self.password);
        let answer = client.io().send(request).await.map_err(atp_wasm::client::ClientError::network);
        let v = self.conn.check(answer.and_then(|r| json_body(&r))).map_err(ToolError::client)?;
        Ok(json!({
            "agent_id": v.get("agent_id").cloned().unwrap_or_else(|| id.to_string().into()),
            "server": self.conn.label(),
        }))
    }

    async fn server_status(&self, args: Option<rmcp::model::JsonObject>) -> Result<Value, ToolError> {
        Args::new(tools::SERVER_STATUS, args, &[])?;
        let client = &self.conn.client;
        let health = self.conn.check(client.health().await).map_err(ToolError::client)?;
        let capabilities = self.conn.check(client.capabilities().await).map_err(ToolError::client)?;
        Ok(json!({
            "server": self.conn.label(),
            "endpoint": client.endpoint().base(),
            "healthy": health.get("status").and_then(Value::as_str) == Some("healthy"),
            "domain": health.get("domain"),
            "version": health.get("version"),
            "capabilities": capabilities,
            "agent_id": self.id.borrow().as_ref().map(AgentId::to_string),
            "new_mail": format!("found by polling every {} s; servers do not push yet", self.poll.as_secs()),
            "acknowledge": "not supported by ATP servers yet: check_inbox returns each message once",
        }))
    }

    async fn verify_message(&self, args: Option<rmcp::model::JsonObject>) -> Result<Value, ToolError> {
        let mut a = Args::new(tools::VERIFY_MESSAGE, args, &["nonce", "message", "public_key"])?;
        let nonce = a.string("nonce")?;
        let message = a.value("message");
        let public_key = a.string("public_key")?;
        let raw = match (message, nonce) {
            (Some(Value::String(s)), _) => s,
            (Some(v @ Value::Object(_)), _) => v.to_string(),
            (Some(_), _) => {
                return Err(ToolError::bad_argument("verify_message: 'message' must be a JSON object or JSON text"))
            }
            (None, Some(n)) => {
                let seen = self.seen.borrow();
                let found = seen.iter().rev().find(|(k, _)| *k == n.trim()).map(|(_, raw)| raw.clone());
                found.ok_or_else(|| {
                    ToolError::new(
                        "invalid_arguments",
                        ErrorCode::NotFound.as_str(),
                        format!(
                            "verify_message: no message with nonce {n:?} was returned in this session; pass the message itself"
                        ),
                    )
                })?
            }
            (None, None) => {
                return Err(ToolError::bad_argument("verify_message: give 'nonce' or 'message'"));
            }
        };
        let msg = Message::parse(raw.as_bytes()).map_err(|e| {
            ToolError::new(
                "invalid_arguments",
                ErrorCode::InvalidFormat.as_str(),
                format!("verify_message: not an ATP message: {e}"),
            )
        })?;
        let (sig, against) = match public_key {
            Some(k) => {
                let key = PublicKey::from_b64(k.trim()).map_err(|e| {
                    ToolError::new(
                        "invalid_arguments",
                        ErrorCode::AtkKey.as_str(),
                        format!("verify_message: 'public_key' is not a base64 Ed25519 key: {e}"),
                    )
                })?;
                (Verifier::check_with_key(&msg, &key), "public_key")
            }
            None => {
                let own = self.id.borrow().as_ref().map(|i| i.domain().to_owned()).unwrap_or_default();
                (self.verifier.check(&msg, &own).await, "dns")
            }
        };
        let mut out = json!({
            "verified": sig.verified(),
            "nonce": msg.nonce,
            "from": msg.from,
            "checked_against": against,
            "signature": sig.to_value(),
        });
        if let Signature::Failed { error, code, .. } = &sig {
            out["error"] = error.as_str().into();
            out["error_code"] = (*code).into();
        } else if sig == Signature::Missing {
            out["error"] = "the message has no signature".into();
            out["error_code"] = ErrorCode::AtkSignature.as_str().into();
        }
        Ok(out)
    }

    /// `atp://inbox`: what `check_inbox` would return next, without taking it.
    async fn read_inbox(&self) -> Result<Value, ToolError> {
        let id = self.id().await?;
        let after = self.saved_cursor(&id)?.max(self.conn.client.cursor());
        let (texts, _) = self.peek(&id, after, INBOX_PAGE).await?;
        let messages = self.present_all(&texts, id.domain(), true).await;
        Ok(json!({
            "agent_id": id.to_string(),
            "unread": messages.len(),
            "more": messages.len() == INBOX_PAGE as usize,
            "messages": messages,
        }))
    }

    /// Polls the inbox while `notify` succeeds, calling it when new mail arrived (or `check_inbox`
    /// took some). The first look reports mail already waiting.
    async fn watch<F, Fut>(self: Rc<Self>, notify: F)
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let mut changed = self.changed.subscribe();
        let mut noticed: i64 = 0;
        let mut failing = false;
        loop {
            if let Ok(id) = self.id().await {
                let after = self.saved_cursor(&id).unwrap_or(0).max(self.conn.client.cursor()).max(noticed);
                match self.peek(&id, after, 100).await {
                    Ok((texts, Some(last))) if !texts.is_empty() => {
                        noticed = last;
                        failing = false;
                        if !notify().await {
                            return;
                        }
                    }
                    Ok(_) => failing = false,
                    Err(e) if !failing => {
                        failing = true;
                        tracing::warn!(error = %e.message, "polling the inbox failed; retrying");
                    }
                    Err(_) => {}
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(self.poll) => {}
                c = changed.changed() => {
                    if c.is_err() || !notify().await {
                        return;
                    }
                }
            }
        }
    }
}

/// The MCP server of one agent.
#[derive(Clone)]
struct AtpMcp(Rc<Agent>);

impl AtpMcp {
    fn tool_result(r: Result<Value, ToolError>) -> CallToolResult {
        match r {
            Ok(v) => CallToolResult::structured(v),
            Err(e) => e.into_result(),
        }
    }

    fn inbox_resource(&self) -> Resource {
        Resource::new(INBOX_URI, "inbox")
            .with_title(format!("ATP inbox of {}", self.agent_label()))
            .with_description(format!(
                "The ATP messages that arrived and that check_inbox has not returned yet (reading this \
                 resource takes nothing). Subscribers are notified when new mail arrives: the server is \
                 polled every {} s for it (servers do not push yet).",
                self.0.poll.as_secs()
            ))
            .with_mime_type("application/json")
    }

    fn agent_label(&self) -> String {
        self.0.id.borrow().as_ref().map_or_else(|| self.0.name.clone(), AgentId::to_string)
    }

    fn check_uri(uri: &str) -> Result<(), McpError> {
        if uri == INBOX_URI {
            Ok(())
        } else {
            Err(McpError::resource_not_found(format!("no resource {uri:?}: this server has {INBOX_URI}"), None))
        }
    }
}

impl ServerHandler for AtpMcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder().enable_tools().enable_resources().enable_resources_subscribe().build(),
        )
        .with_server_info(
            Implementation::new("atp", env!("CARGO_PKG_VERSION"))
                .with_title("ATP (Agent Transfer Protocol) mail")
                .with_description("Send and receive ATP messages as one agent"),
        )
        .with_instructions(format!(
            "You are the ATP agent {}: ATP is email for agents (addresses local@domain). Use send_message \
                 to write to another agent, check_inbox to read what arrived (each message comes once), and \
                 verify_message to check who really sent one. Tool errors carry an ATP error_code; codes \
                 starting with 4 are temporary.",
            self.agent_label()
        ))
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        Ok(ListToolsResult::with_all_items(tools::list(self.0.poll.as_secs())))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let agent = &self.0;
        let args = request.arguments;
        let result = match request.name.as_ref() {
            tools::SEND_MESSAGE => agent.send_message(args).await,
            tools::CHECK_INBOX => agent.check_inbox(args).await,
            tools::WHOAMI => agent.whoami(args).await,
            tools::SERVER_STATUS => agent.server_status(args).await,
            tools::VERIFY_MESSAGE => agent.verify_message(args).await,
            other => {
                return Err(McpError::invalid_params(
                    format!(
                        "unknown tool {other:?}: this server has {}, {}, {}, {}, {}",
                        tools::SEND_MESSAGE,
                        tools::CHECK_INBOX,
                        tools::WHOAMI,
                        tools::SERVER_STATUS,
                        tools::VERIFY_MESSAGE
                    ),
                    None,
                ))
            }
        };
        Ok(Self::tool_result(result).into())
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, McpError> {
        Ok(ListResourcesResult::with_all_items(vec![self.inbox_resource()]))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        Self::check_uri(&request.uri)?;
        // A failure is the resource's content (with its error_code), not a protocol error.
        let v = self.0.read_inbox().await.unwrap_or_else(|e| e.to_value());
        let text = ResourceContents::text(v.to_string(), INBOX_URI).with_mime_type("application/json");
        Ok(ReadResourceResult::new(vec![text]).into())
    }

    #[allow(deprecated)] // the subscription of protocol versions before 2026-07-28, which clients still speak
    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        Self::check_uri(&request.uri)?;
        let mut slot = self.0.legacy_watch.borrow_mut();
        if slot.as_ref().is_some_and(|h| !h.is_finished()) {
            return Ok(());
        }
        let peer = context.peer.clone();
        let agent = self.0.clone();
        *slot =
            Some(tokio::task::spawn_local(
                agent.watch(move || {
                    let peer = peer.clone();
                    async move {
                        peer.notify_resource_updated(ResourceUpdatedNotificationParam::new(INBOX_URI)).await.is_ok()
                    }
                }),
            ));
        Ok(())
    }

    #[allow(deprecated)]
    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        Self::check_uri(&request.uri)?;
        if let Some(h) = self.0.legacy_watch.borrow_mut().take() {
            h.abort();
        }
        Ok(())
    }

    fn accepted_subscription_filter(&self, requested: &SubscriptionFilter) -> Option<SubscriptionFilter> {
        let mut accepted = requested.supported_by(&self.get_info().capabilities);
        accepted.resource_subscriptions = accepted
            .resource_subscriptions
            .map(|uris| uris.into_iter().filter(|u| u == INBOX_URI).collect::<Vec<_>>())
            .filter(|uris| !uris.is_empty());
        Some(accepted)
    }

    async fn listen(&self, context: SubscriptionContext) -> Result<(), McpError> {
        let wants_inbox =
            context.accepted().resource_subscriptions.as_ref().is_some_and(|uris| uris.iter().any(|u| u == INBOX_URI));
        if wants_inbox {
            let sink = context.sink();
            let watching = self.0.clone().watch(|| async { sink.notify_resource_updated(INBOX_URI).await.is_ok() });
            tokio::select! {
                _ = watching => {}
                _ = context.cancelled() => {}
            }
        } else {
            context.cancelled().await;
        }
        Ok(())
    }
}
