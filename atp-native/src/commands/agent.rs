//! `atp agent register` and `atp agent list` (docs/protocol.md §6 `POST register`, `GET agents`; §9).

use serde_json::Value;

use super::{home, new_password, print_json, print_line, CmdError};
use crate::cli::{AgentListArgs, Output, RegisterArgs};
use crate::client::Connection;

/// Registers `NAME` (the server completes a short name with its domain) → `Agent registered:
/// name@domain`.
pub async fn register(a: RegisterArgs) -> Result<(), CmdError> {
    let mut conn = Connection::open(&a.server, &home(&a.home), Some(&a.name), a.admin_token).await?;
    conn.client.set_password(new_password(a.password)?);
    let v = conn.check(conn.client.register().await)?;
    match a.output {
        Output::Json => print_json(&v),
        Output::Text => {
            let registered = v.get("agent_id").and_then(Value::as_str).unwrap_or(a.name.trim());
            print_line(&format!("Agent registered: {registered}"))
        }
    }
}

/// Lists the registered agents (admin): two-space-indented ids, or `No agents registered.`.
pub async fn list(a: AgentListArgs) -> Result<(), CmdError> {
    let conn = Connection::open(&a.server, &home(&a.home), None, Some(a.admin_token)).await?;
    let v = conn.check(conn.client.agents().await)?;
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
