//! The tools of `atp mcp`: their names, descriptions and JSON schemas (what an LLM reads to use
//! them), the reading of their arguments, and tool errors.
//!
//! Arguments are checked here rather than by the SDK, so that a bad argument is a tool error the
//! model can read and correct (`isError: true`, with an ATP `error_code`, docs/protocol.md §5.4),
//! never a JSON-RPC error: an unknown key, a wrong type or an out-of-range number is
//! `500 5.5.2` (`BadRequest`), an invalid agent id `553 5.1.3` (`InvalidRecipient`).

use std::sync::Arc;

use atp_wasm::identity::AgentId;
use atp_wasm::ErrorCode;
use rmcp::model::{CallToolResult, JsonObject, Tool, ToolAnnotations};
use serde_json::{json, Map, Value};

use crate::client::ClientError;
use crate::http::one_line;

pub const SEND_MESSAGE: &str = "send_message";
pub const CHECK_INBOX: &str = "check_inbox";
pub const WHOAMI: &str = "whoami";
pub const SERVER_STATUS: &str = "server_status";
pub const VERIFY_MESSAGE: &str = "verify_message";

/// `check_inbox`'s `limit` when none is given.
pub const DEFAULT_LIMIT: u64 = 20;
/// The largest page the server returns (docs/protocol.md §6.1 `GET messages`).
pub const MAX_LIMIT: u64 = 500;
/// The longest `wait_seconds`.
pub const MAX_WAIT_SECONDS: u64 = 300;

fn schema(v: Value) -> Arc<JsonObject> {
    match v {
        Value::Object(m) => Arc::new(m),
        _ => unreachable!("a tool schema is an object"),
    }
}

/// The tools, as `tools/list` shows them. `acknowledge` is not among them: ATP servers keep every
/// message and know no acknowledgement yet (docs/protocol.md §6.1 `GET messages`: "nothing is
/// deleted or acknowledged"); `check_inbox` returns each message once by its saved position.
pub fn list(poll_seconds: u64) -> Vec<Tool> {
    vec![
        Tool::new(
            SEND_MESSAGE,
            "Send an ATP message (agent-to-agent mail) as this agent. The recipient is an agent id \
             local@domain on any ATP server; your own server signs the message and delivers it, retrying \
             for days if the recipient's server is down. Give `body` (and optionally `subject`) for a text \
             message, or `payload` for structured JSON. Returns status \"accepted\" and the message's nonce \
             (accepted = stored by your server and queued; a later delivery failure comes back to your \
             inbox as a notice from postmaster). Errors carry an ATP error_code, e.g. \"550 5.1.1\" unknown \
             recipient, \"535 5.7.8\" wrong password, \"452 4.2.2\" recipient's mailbox full (codes starting \
             with 4 are temporary: retry later).",
            schema(json!({
                "type": "object",
                "properties": {
                    "to": {
                        "type": "string",
                        "description": "Recipient agent id, local@domain (e.g. \"bob@example.com\"). A name without @ is an agent of your own server's domain."
                    },
                    "body": {"type": "string", "description": "The message text."},
                    "subject": {"type": "string", "description": "Optional subject line (with body)."},
                    "payload": {
                        "description": "Instead of body/subject: any JSON value, sent unchanged as the message's payload (structured data for the receiving agent)."
                    },
                    "cc": {
                        "type": "array",
                        "items": {"type": "string"},
                        "description": "Optional copy addresses (agent ids). Metadata only: the message is delivered to `to` alone."
                    }
                },
                "required": ["to"],
                "additionalProperties": false
            })),
        )
        .with_title("Send an ATP message")
        .with_annotations(
            ToolAnnotations::with_title("Send an ATP message")
                .read_only(false)
                .destructive(false)
                .idempotent(false)
                .open_world(true),
        ),
        Tool::new(
            CHECK_INBOX,
            "Fetch the ATP messages that arrived for this agent since the last check_inbox, oldest first. \
             Each message is returned once: the position is saved (across restarts, and shared with `atp \
             recv`), so call again for more when `more` is true. With wait_seconds, waits up to that long \
             for mail when there is none yet. Each message has from, to, time, subject/body (or payload), \
             nonce, and signature_verified: true when the sender's server signature checks out against \
             the sender domain's published key, false when it does not, null for mail from your own \
             server (which carries no signature: the sender logged in to your server).",
            schema(json!({
                "type": "object",
                "properties": {
                    "limit": {
                        "type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT,
                        "description": "At most this many messages."
                    },
                    "wait_seconds": {
                        "type": "integer", "minimum": 0, "maximum": MAX_WAIT_SECONDS, "default": 0,
                        "description": "When no message is waiting, wait up to this many seconds for one (the server is asked every second). 0 returns at once. Keep it below your MCP client's request timeout."
                    },
                    "verify_signatures": {
                        "type": "boolean", "default": true,
                        "description": "Check each remote message's signature against DNS (your server already checked it when it accepted the message). false skips the lookups: signature_verified is then null."
                    }
                },
                "additionalProperties": false
            })),
        )
        .with_title("Check the ATP inbox")
        .with_annotations(
            ToolAnnotations::with_title("Check the ATP inbox")
                .read_only(false)
                .destructive(false)
                .idempotent(false)
                .open_world(true),
        ),
        Tool::new(
            WHOAMI,
            "The ATP agent id this MCP server acts as (local@domain: the address others send to), as \
             the ATP server confirms it with the agent's password.",
            schema(json!({"type": "object", "properties": {}, "additionalProperties": false})),
        )
        .with_title("Who am I on ATP")
        .with_annotations(ToolAnnotations::with_title("Who am I on ATP").read_only(true).open_world(true)),
        Tool::new(
            SERVER_STATUS,
            format!(
                "The health, version and capabilities of this agent's ATP server, and how it was reached. \
                 New mail is noticed by polling the server every {poll_seconds} s (for atp://inbox \
                 subscribers); servers do not push yet."
            ),
            schema(json!({"type": "object", "properties": {}, "additionalProperties": false})),
        )
        .with_title("ATP server status")
        .with_annotations(ToolAnnotations::with_title("ATP server status").read_only(true).open_world(true)),
        Tool::new(
            VERIFY_MESSAGE,
            "Verify an ATP message's signature: the Ed25519 signature its sender's server made, checked \
             against the key the sender's domain publishes in DNS (its ATK record), or against a public \
             key you give. Name a message check_inbox or atp://inbox returned in this session by its \
             nonce, or pass the message JSON as a server stored it (with its signature). Returns \
             verified true, or false with the reason and ATP error_code; null for mail from your own \
             server, which carries no signature.",
            schema(json!({
                "type": "object",
                "properties": {
                    "nonce": {
                        "type": "string",
                        "description": "The nonce of a message that check_inbox or atp://inbox returned in this session."
                    },
                    "message": {
                        "type": ["object", "string"],
                        "description": "Or the ATP message itself (JSON object or JSON text) with its signature envelope."
                    },
                    "public_key": {
                        "type": "string",
                        "description": "Verify with this Ed25519 public key (base64 of the 32 raw bytes: an ATK record's p= value) instead of looking the sender domain's key up in DNS."
                    }
                },
                "additionalProperties": false
            })),
        )
        .with_title("Verify an ATP message's signature")
        .with_annotations(
            ToolAnnotations::with_title("Verify an ATP message's signature").read_only(true).open_world(true),
        ),
    ]
}

/// A tool's failure as the model sees it: an MCP tool error (`isError: true`) whose content is
/// `{"error", "error_code", "http_status"?, "kind", "retryable"}`.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolError {
    pub message: String,
    /// The ATP `error_code` (docs/protocol.md §5.4): the server's when it refused, else the code
    /// that names the failure.
    pub code: String,
    pub status: Option<u16>,
    /// `invalid_arguments`, `refused` (the server said no), `network`, `certificate`, `protocol`,
    /// `local`.
    pub kind: &'static str,
}

impl ToolError {
    pub fn new(kind: &'static str, code: impl Into<String>, message: impl Into<String>) -> Self {
        ToolError { message: one_line(&message.into()), code: code.into(), status: None, kind }
    }

    /// An argument the tool cannot use.
    pub fn bad_argument(message: impl Into<String>) -> Self {
        Self::new("invalid_arguments", ErrorCode::BadRequest.as_str(), message)
    }

    /// A failure on this machine (the cursor file, the resolver).
    pub fn local(message: impl std::fmt::Display) -> Self {
        Self::new("local", ErrorCode::TempFailure.as_str(), message.to_string())
    }

    /// The command line's error of a call to the server.
    pub fn client(e: ClientError) -> Self {
        let message = e.to_string();
        match e {
            ClientError::Api { status, code, .. } => ToolError {
                code: code.unwrap_or_else(|| code_of_status(status).to_owned()),
                status: Some(status),
                ..Self::new("refused", "", message)
            },
            ClientError::Connect { .. } => Self::new("network", "451 4.4.1", message),
            ClientError::Certificate { .. } | ClientError::CertificateRefused { .. } => {
                Self::new("certificate", "451 4.4.1", message)
            }
            ClientError::Lookup(_) => Self::new("network", "451 4.4.3", message),
            ClientError::BadResponse { status, .. } => {
                ToolError { status: Some(status), ..Self::new("protocol", ErrorCode::TempFailure.as_str(), message) }
            }
            ClientError::Invalid(_) | ClientError::NotLocal { .. } | ClientError::BadServer(_) => {
                Self::bad_argument(message)
            }
            ClientError::CaCert { .. } | ClientError::Setup(_) | ClientError::Config(_) | ClientError::Resolver(_) => {
                Self::local(message)
            }
        }
    }

    pub fn to_value(&self) -> Value {
        let mut v = json!({
            "error": self.message,
            "error_code": self.code,
            "kind": self.kind,
            "retryable": self.code.starts_with('4'),
        });
        if let Some(s) = self.status {
            v["http_status"] = s.into();
        }
        v
    }

    pub fn into_result(self) -> CallToolResult {
        CallToolResult::structured_error(self.to_value())
    }
}

/// The code of a refusal that carried none (a server other than atp, docs/protocol.md §6.3).
fn code_of_status(status: u16) -> &'static str {
    match status {
        401 => ErrorCode::AuthFailed.as_str(),
        403 => ErrorCode::Forbidden.as_str(),
        404 => ErrorCode::NotFound.as_str(),
        429 => ErrorCode::TooManyRequests.as_str(),
        500.. => ErrorCode::TempFailure.as_str(),
        _ => ErrorCode::BadRequest.as_str(),
    }
}

/// A tool's arguments, taken one by one; whatever is left is unknown.
pub struct Args {
    tool: &'static str,
    map: Map<String, Value>,
}

impl Args {
    /// `allowed`: the tool's keys. An unknown key is an error naming the allowed ones (a model's
    /// typo such as `message` for `body` must not be silently dropped).
    pub fn new(tool: &'static str, map: Option<Map<String, Value>>, allowed: &[&str]) -> Result<Self, ToolError> {
        let map = map.unwrap_or_default();
        if let Some(k) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
            let known = if allowed.is_empty() { "none".to_owned() } else { allowed.join(", ") };
            return Err(ToolError::bad_argument(format!("{tool}: unknown argument '{k}' (arguments: {known})")));
        }
        Ok(Args { tool, map })
    }

    fn wrong(&self, key: &str, what: &str, got: &Value) -> ToolError {
        let got = match got {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Number(_) => "a number",
            Value::String(_) => "a string",
            Value::Array(_) => "an array",
            Value::Object(_) => "an object",
        };
        ToolError::bad_argument(format!("{}: '{key}' must be {what}, not {got}", self.tool))
    }

    /// A value of any type (`null` counts as absent).
    pub fn value(&mut self, key: &str) -> Option<Value> {
        self.map.remove(key).filter(|v| !v.is_null())
    }

    pub fn string(&mut self, key: &str) -> Result<Option<String>, ToolError> {
        match self.value(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(self.wrong(key, "a string", &other)),
        }
    }

    pub fn required_string(&mut self, key: &str) -> Result<String, ToolError> {
        match self.string(key)? {
            Some(s) if !s.trim().is_empty() => Ok(s),
            _ => Err(ToolError::bad_argument(format!("{}: '{key}' is required", self.tool))),
        }
    }

    pub fn boolean(&mut self, key: &str) -> Result<Option<bool>, ToolError> {
        match self.value(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(b)),
            Some(other) => Err(self.wrong(key, "true or false", &other)),
        }
    }

    /// An integer in `min..=max` (`5.0` is accepted as 5).
    pub fn integer(&mut self, key: &str, min: u64, max: u64) -> Result<Option<u64>, ToolError> {
        let Some(v) = self.value(key) else { return Ok(None) };
        let n = v.as_u64().or_else(|| v.as_f64().filter(|f| f.fract() == 0.0 && *f >= 0.0).map(|f| f as u64));
        match n {
            Some(n) if (min..=max).contains(&n) => Ok(Some(n)),
            _ if v.is_number() => Err(ToolError::bad_argument(format!(
                "{}: '{key}' must be an integer from {min} to {max}, not {v}",
                self.tool
            ))),
            _ => Err(self.wrong(key, &format!("an integer from {min} to {max}"), &v)),
        }
    }

    /// A list of strings; one string is read as a comma-separated list.
    pub fn strings(&mut self, key: &str) -> Result<Vec<String>, ToolError> {
        let items = match self.value(key) {
            None => return Ok(Vec::new()),
            Some(Value::String(s)) => s.split(',').map(str::to_owned).collect(),
            Some(Value::Array(a)) => {
                let mut out = Vec::with_capacity(a.len());
                for item in a {
                    match item {
                        Value::String(s) => out.push(s),
                        other => return Err(self.wrong(key, "a list of strings", &other)),
                    }
                }
                out
            }
            Some(other) => return Err(self.wrong(key, "a list of strings", &other)),
        };
        Ok(items.into_iter().map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect())
    }
}

/// Checks the form of an agent id or short name before anything is sent (`553 5.1.3`, the code a
/// server gives an invalid recipient, docs/protocol.md §5.4).
pub fn check_address(tool: &str, key: &str, name: &str) -> Result<(), ToolError> {
    let probe = if name.contains('@') { name.to_owned() } else { format!("{name}@example.com") };
    AgentId::parse(&probe).map(|_| ()).map_err(|e| {
        ToolError::new(
            "invalid_arguments",
            ErrorCode::InvalidRecipient.as_str(),
            format!("{tool}: '{key}' is not an agent id (local@domain): {name:?}: {e}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: Value, allowed: &[&str]) -> Result<Args, ToolError> {
        let Value::Object(m) = v else { panic!("not an object") };
        Args::new("t", Some(m), allowed)
    }

    #[test]
    fn every_tool_has_an_object_schema_and_a_description() {
        let tools = list(5);
        let names: Vec<_> = tools.iter().map(|t| t.name.to_string()).collect();
        assert_eq!(names, [SEND_MESSAGE, CHECK_INBOX, WHOAMI, SERVER_STATUS, VERIFY_MESSAGE]);
        for t in &tools {
            assert_eq!(t.input_schema.get("type"), Some(&json!("object")), "{}", t.name);
            assert_eq!(t.input_schema.get("additionalProperties"), Some(&json!(false)), "{}", t.name);
            assert!(t.description.as_deref().is_some_and(|d| d.len() > 80), "{}", t.name);
        }
        assert_eq!(tools[0].input_schema["required"], json!(["to"]));
    }

    #[test]
    fn arguments_are_checked_with_readable_errors() {
        let e = args(json!({"to": "b", "mesage": "hi"}), &["to", "body"]).err().unwrap();
        assert_eq!(e.code, "500 5.5.2");
        assert_eq!(e.message, "t: unknown argument 'mesage' (arguments: to, body)");

        let mut a = args(
            json!({"n": 5.0, "m": 0, "s": 3, "b": "yes", "l": "a, b,,c", "x": null}),
            &["n", "m", "s", "b", "l", "x"],
        )
        .unwrap();
        assert_eq!(a.integer("n", 1, 10).unwrap(), Some(5));
        assert_eq!(a.integer("m", 1, 10).unwrap_err().message, "t: 'm' must be an integer from 1 to 10, not 0");
        assert_eq!(a.string("s").unwrap_err().message, "t: 's' must be a string, not a number");
        assert_eq!(a.boolean("b").unwrap_err().message, "t: 'b' must be true or false, not a string");
        assert_eq!(a.strings("l").unwrap(), ["a", "b", "c"]);
        assert_eq!(a.string("x").unwrap(), None, "null is absent");
        assert_eq!(a.required_string("x").unwrap_err().message, "t: 'x' is required");
    }

    #[test]
    fn addresses_and_client_errors_get_atp_codes() {
        assert!(check_address("t", "to", "bob").is_ok());
        assert!(check_address("t", "to", "bob@example.com").is_ok());
        let e = check_address("t", "to", "not an id").unwrap_err();
        assert_eq!((e.code.as_str(), e.kind), ("553 5.1.3", "invalid_arguments"));

        let refused = ToolError::client(ClientError::Api {
            status: 404,
            message: "Unknown recipient".into(),
            code: Some("550 5.1.1".into()),
            json: true,
        });
        assert_eq!(
            refused.to_value(),
            json!({"error": "Unknown recipient (HTTP 404, 550 5.1.1)", "error_code": "550 5.1.1", "kind": "refused",
                   "retryable": false, "http_status": 404})
        );
        let no_code =
            ToolError::client(ClientError::Api { status: 401, message: "no".into(), code: None, json: false });
        assert_eq!(no_code.code, "535 5.7.8");
        let down = ToolError::client(ClientError::Connect { server: "s".into(), reason: "refused".into() });
        assert_eq!((down.code.as_str(), down.to_value()["retryable"].clone()), ("451 4.4.1", json!(true)));
    }
}
