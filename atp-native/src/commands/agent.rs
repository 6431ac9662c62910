//! `atp agent register` and `atp agent list` (docs/protocol.md §6 `POST register`, `GET agents`; §9).

use reqwest::Method;
use serde_json::{json, Value};

use super::{connect, new_password, print_json, print_line, CmdError};
use crate::cli::{AgentListArgs, Output, RegisterArgs};
use crate::client::Auth;

/// Registers `NAME` (completed with the server's domain) → `Agent registered: name@domain`.
pub async fn register(a: RegisterArgs) -> Result<(), CmdError> {
    let client = connect(&a.server)?;
    let id = client.complete(&a.name).await?;
    let password = new_password(a.password)?;
    let auth = match a.admin_token {
        Some(t) => Auth::Bearer(t),
        None => Auth::None,
    };
    let body = json!({"agent_id": id.to_string(), "password": password}).to_string();
    let (_, v) = client.json(Method::POST, "register", &auth, Some(("application/json", body))).await?;
    match a.output {
        Output::Json => print_json(&v),
        Output::Text => {
            let registered = v.get("agent_id").and_then(Value::as_str).map(str::to_owned).unwrap_or(id.to_string());
            print_line(&format!("Agent registered: {registered}"))
        }
    }
}

/// Lists the registered agents (admin): two-space-indented ids, or `No agents registered.`.
pub async fn list(a: AgentListArgs) -> Result<(), CmdError> {
    let client = connect(&a.server)?;
    let v = client.get("agents", &Auth::Bearer(a.admin_token)).await?;
    match a.output {
        Output::Json => print_json(&v),
        Output::Text => {
            let agents: Vec<&str> =
                v.get("agents").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
            if agents.is_empty() {
                return print_line("No agents registered.");
            }
            print_line(&agents.iter().map(|a| format!("  {a}")).collect::<Vec<_>>().join("\n"))
        }
    }
}
