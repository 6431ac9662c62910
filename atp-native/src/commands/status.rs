//! `atp status` and `atp inspect` (docs/protocol.md §6 `GET health`, `capabilities`, `stats`,
//! `inspect`; §9).
//!
//! `status` works without a token (public health and capabilities, as the seed README's quick start
//! runs it) and adds the statistics with `--admin-token`. Its JSON output is
//! `{"server", "health", "capabilities", "stats"?}`; its text output ends with the reference's
//! statistics layout. A server that does not report `healthy` is a failure.

use atp_wasm::env::{Clock, SystemClock};
use serde_json::{json, Value};

use super::{home, print_json, print_line, utc, CmdError};
use crate::cli::{InspectArgs, Output, StatusArgs};
use crate::client::locate::Source;
use crate::client::Connection;

fn num(v: &Value, path: &[&str]) -> String {
    let mut cur = v;
    for p in path {
        cur = cur.get(p).unwrap_or(&Value::Null);
    }
    match cur {
        Value::Null => "0".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn list(v: Option<&Value>) -> String {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter().map(|x| x.as_str().map(str::to_owned).unwrap_or(x.to_string())).collect::<Vec<_>>().join(", ")
        })
        .unwrap_or_default()
}

/// The text form of `status`.
pub fn status_text(server: &str, health: &Value, caps: &Value, stats: Option<&Value>) -> String {
    let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("?").to_owned();
    let mut out = vec![
        format!("ATP Server: {}", s(health, "domain")),
        format!("  Address:      {server}"),
        format!("  Status:       {}", s(health, "status")),
        format!("  Version:      {}", s(health, "version")),
        format!("  Protocols:    {}", list(caps.get("protocols"))),
        format!("  Capabilities: {}", list(caps.get("capabilities"))),
        format!("  Max payload:  {} bytes", num(caps, &["max_payload_size"])),
    ];
    let Some(st) = stats else {
        out.push(String::new());
        out.push("(statistics need --admin-token)".into());
        return out.join("\n");
    };
    let uptime = st.get("uptime").and_then(Value::as_f64).unwrap_or(0.0) as i64;
    out.push(format!("  Uptime:       {}h {}m {}s", uptime / 3600, uptime % 3600 / 60, uptime % 60));
    let section = |out: &mut Vec<String>, title: &str, rows: &[(&str, &[&str])]| {
        out.push(String::new());
        out.push(format!("{title}:"));
        for (label, path) in rows {
            out.push(format!("  {:<16}{}", format!("{label}:"), num(st, path)));
        }
    };
    section(
        &mut out,
        "Messages",
        &[
            ("Received", &["messages", "received"]),
            ("Delivered", &["messages", "delivered_local"]),
            ("Forwarded", &["messages", "forwarded"]),
            ("Success", &["messages", "delivery_success"]),
            ("Failed", &["messages", "delivery_failed"]),
            ("Bounced", &["messages", "bounced"]),
        ],
    );
    section(
        &mut out,
        "Queue",
        &[
            ("Queued", &["queue", "queued"]),
            ("Delivering", &["queue", "delivering"]),
            ("Delivered", &["queue", "delivered"]),
            ("Failed", &["queue", "failed"]),
            ("Bounced", &["queue", "bounced"]),
        ],
    );
    section(
        &mut out,
        "Security",
        &[
            ("ATS Pass", &["security", "ats_pass"]),
            ("ATS Fail", &["security", "ats_fail"]),
            ("ATK Pass", &["security", "atk_pass"]),
            ("ATK Fail", &["security", "atk_fail"]),
            ("Replay Blocked", &["security", "replay_blocked"]),
        ],
    );
    let agents: Vec<&str> =
        st.get("agents").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
    if !agents.is_empty() {
        out.push(String::new());
        out.push(format!("Agents ({}):", agents.len()));
        out.extend(agents.iter().map(|a| format!("  {a}")));
    }
    out.join("\n")
}

pub async fn status(a: StatusArgs) -> Result<(), CmdError> {
    let with_stats = a.admin_token.is_some();
    let conn = Connection::open(&a.server, &home(&a.home), None, a.admin_token).await?;
    let health = conn.check(conn.client.health().await)?;
    let caps = conn.check(conn.client.capabilities().await)?;
    let stats = if with_stats { Some(conn.check(conn.client.stats().await)?) } else { None };
    let server = conn.client.endpoint().base();
    let source = conn.located.source;
    let address = match source {
        Source::Address | Source::DefaultPort => server.clone(),
        found => format!("{server} ({}, from the {})", conn.client.server().host, found.as_str()),
    };
    match a.output {
        Output::Json => {
            let mut v = json!({"server": server, "found_by": source.as_str(), "health": health, "capabilities": caps});
            if let Some(st) = &stats {
                v["stats"] = st.clone();
            }
            print_json(&v)?;
        }
        Output::Text => print_line(&status_text(&address, &health, &caps, stats.as_ref()))?,
    }
    match health.get("status").and_then(Value::as_str) {
        Some("healthy") => Ok(()),
        other => Err(CmdError::Reported(format!("server {server} is not healthy (status {other:?})"))),
    }
}

/// The text form of `inspect` (the reference's layout).
pub fn inspect_text(d: &Value, now: i64) -> String {
    let s = |k: &str| match d.get(k) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(v) => v.to_string(),
    };
    let mut out = vec![
        format!("Nonce:       {}", s("nonce")),
        format!("From:        {}", s("from")),
        format!("To:          {}", s("to")),
        format!("Status:      {}", s("status")),
    ];
    let int = |k: &str| d.get(k).and_then(Value::as_i64).filter(|v| *v != 0);
    if let Some(t) = int("created_at") {
        out.push(format!("Created:     {}", utc(t)));
    }
    if let Some(t) = int("updated_at") {
        out.push(format!("Updated:     {}", utc(t)));
    }
    if let Some(n) = int("retry_count") {
        out.push(format!("Retries:     {n}"));
    }
    if let Some(t) = int("next_retry_at") {
        let left = t - now;
        out.push(if left > 0 { format!("Next retry:  in {left}s") } else { "Next retry:  pending".into() });
    }
    if !s("error").is_empty() {
        out.push(format!("Error:       {}", s("error")));
    }
    out.join("\n")
}

pub async fn inspect(a: InspectArgs) -> Result<(), CmdError> {
    let conn = Connection::open(&a.server, &home(&a.home), None, Some(a.admin_token)).await?;
    let v = conn.check(conn.client.inspect(&a.nonce).await)?;
    match a.output {
        Output::Json => print_json(&v),
        Output::Text => print_line(&inspect_text(&v, SystemClock.now())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inspect_layout() {
        let d = json!({"nonce": "msg-1", "from": "a@x.test", "to": "b@y.test", "status": "failed",
            "created_at": 951782400, "updated_at": 951782401, "retry_count": 2, "next_retry_at": 951782460,
            "error": "HTTP 503"});
        assert_eq!(
            inspect_text(&d, 951782400),
            "Nonce:       msg-1\nFrom:        a@x.test\nTo:          b@y.test\nStatus:      failed\n\
             Created:     2000-02-29 00:00:00 UTC\nUpdated:     2000-02-29 00:00:01 UTC\nRetries:     2\n\
             Next retry:  in 60s\nError:       HTTP 503"
        );
        let queued = json!({"nonce": "n", "from": "a", "to": "b", "status": "queued", "created_at": 0,
            "retry_count": 0, "next_retry_at": null, "error": null});
        assert_eq!(inspect_text(&queued, 5).lines().count(), 4);
    }

    #[test]
    fn status_layout() {
        let health = json!({"status": "healthy", "domain": "alpha.test", "version": "0.1.0"});
        let caps =
            json!({"version": "1.0", "capabilities": ["message"], "protocols": ["atp/1"], "max_payload_size": 1048576});
        let text = status_text("https://127.0.0.1:1", &health, &caps, None);
        assert!(
            text.starts_with("ATP Server: alpha.test\n  Address:      https://127.0.0.1:1\n  Status:       healthy")
        );
        assert!(text.contains("  Protocols:    atp/1\n  Capabilities: message\n  Max payload:  1048576 bytes"));
        let stats = json!({"uptime": 3723, "messages": {"received": 4}, "queue": {"queued": 1},
            "security": {"ats_pass": 2}, "agents": ["a@alpha.test"]});
        let text = status_text("s", &health, &caps, Some(&stats));
        assert!(text.contains("  Uptime:       1h 2m 3s"), "{text}");
        assert!(text.contains("Messages:\n  Received:       4\n  Delivered:      0"), "{text}");
        assert!(text.contains("Queue:\n  Queued:         1"), "{text}");
        assert!(text.contains("  ATS Pass:       2"), "{text}");
        assert!(text.ends_with("Agents (1):\n  a@alpha.test"), "{text}");
    }
}
