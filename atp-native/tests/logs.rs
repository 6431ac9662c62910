//! `--log-format json` (docs/design.md §6): every line the server writes is one JSON object, and an
//! accepted message's event carries its `nonce` and the TCP `peer` it came from.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

#[tokio::test]
async fn json_logs_are_one_object_per_line_with_nonce_and_peer() {
    let mut s = Server::with(Options::new("logs.test").arg("--log-format").arg("json"));
    register(&s, "alice@logs.test", "pw").await;
    let m = json!({"from": "alice@logs.test", "to": "alice@logs.test", "timestamp": now(), "nonce": "log-nonce-1",
                   "type": "message", "payload": {"body": "hi"}});
    let (status, v) = call(client().post(s.url("message")).basic_auth("alice@logs.test", Some("pw")).json(&m)).await;
    assert_eq!(status, 202, "{v}");
    let accepted = eventually(10, || async {
        s.log().lines().find(|l| l.contains("message accepted")).map(|l| serde_json::from_str::<Value>(l).unwrap())
    })
    .await
    .unwrap_or_else(|| panic!("no 'message accepted' event:\n{}", s.log()));
    assert_eq!(accepted["nonce"], "log-nonce-1", "{accepted}");
    assert!(accepted["peer"].as_str().is_some_and(|p| p.starts_with("127.0.0.1:")), "{accepted}");
    assert_eq!(
        (accepted["level"].as_str(), accepted["path"].as_str()),
        (Some("INFO"), Some("/.well-known/atp/v1/message"))
    );

    assert!(s.terminate(Duration::from_secs(20)).is_some_and(|st| st.success()), "{}", s.log());
    let log = s.log();
    for line in log.lines() {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"));
        assert!(v.is_object() && v["timestamp"].is_string() && v["message"].is_string(), "{line}");
    }
    let messages: Vec<String> = log
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["message"].as_str().unwrap().to_owned())
        .collect();
    assert!(messages.iter().any(|m| m.starts_with("Starting ATP Server: logs.test")), "{log}");
    assert!(messages.iter().any(|m| m == "stopped"), "{log}");
}
