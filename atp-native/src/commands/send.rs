//! `atp send` (docs/protocol.md §6 `POST message`, §2 message JSON, §9): builds an unsigned message as
//! the reference's client does (servers sign, agents never do, docs/protocol.md §4) and submits it with
//! the sender's Basic credential (§7). Prints `{"status":"accepted","nonce","timestamp"}` (the
//! message's timestamp) or fails with a non-zero exit code.

use std::io::Read;
use std::path::Path;

use atp_wasm::env::{Clock, SystemClock};
use atp_wasm::message::Message;
use reqwest::Method;
use serde_json::{json, Map, Value};

use super::{connect, default_agent, home, password, print_json, print_line, CmdError};
use crate::cli::{Output, SendArgs};
use crate::client::Auth;

/// Media type of a submitted message (docs/protocol.md §2).
pub const ATP_JSON: &str = "application/atp+json";

pub async fn send(a: SendArgs) -> Result<(), CmdError> {
    let home = home(&a.home);
    let from_name = default_agent(&home, a.from.clone(), "--from")?;
    let payload = payload(a.payload.as_deref(), a.body.as_deref(), a.subject.as_deref())?;
    let client = connect(&a.server)?;
    let from = client.local_agent(&from_name, "--from").await?;
    let to = client.complete(&a.to).await?;
    let mut cc = Vec::new();
    for c in a.cc.iter().map(|c| c.trim()).filter(|c| !c.is_empty()) {
        cc.push(client.complete(c).await?.to_string());
    }
    let password = password(a.password, &from.to_string())?;
    let mut m = Message::new(&from, &to, payload, SystemClock.now());
    m.cc = cc;
    let auth = Auth::Basic(from.to_string(), password);
    client.json(Method::POST, "message", &auth, Some((ATP_JSON, m.to_json()))).await?;
    match a.output {
        Output::Json => print_json(&json!({"status": "accepted", "nonce": m.nonce, "timestamp": m.timestamp})),
        Output::Text => print_line(&format!("Message sent. nonce={}", m.nonce)),
    }
}

/// The payload: the JSON file (`-` = stdin) as is, else `{"body", "subject"}` with the keys given
/// (docs/protocol.md §2), else `{}`.
pub fn payload(file: Option<&Path>, body: Option<&str>, subject: Option<&str>) -> Result<Value, CmdError> {
    if let Some(path) = file {
        let what = format!("--payload {}", path.display());
        let mut text = String::new();
        if path == Path::new("-") {
            std::io::stdin().read_to_string(&mut text).map_err(CmdError::io(what.clone()))?;
        } else {
            text = std::fs::read_to_string(path).map_err(CmdError::io(what.clone()))?;
        }
        return serde_json::from_str(&text).map_err(|e| CmdError::Usage(format!("{what}: not JSON: {e}")));
    }
    let mut p = Map::new();
    if let Some(b) = body {
        p.insert("body".into(), b.into());
    }
    if let Some(s) = subject {
        p.insert("subject".into(), s.into());
    }
    Ok(Value::Object(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_from_flags_or_file() {
        assert_eq!(payload(None, Some("hi"), Some("s")).unwrap(), json!({"body": "hi", "subject": "s"}));
        assert_eq!(payload(None, None, Some("s")).unwrap(), json!({"subject": "s"}));
        assert_eq!(payload(None, None, None).unwrap(), json!({}));
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("p.json");
        std::fs::write(&f, r#"{"n": 123456789012345678901234567890, "x": [1e-05]}"#).unwrap();
        let v = payload(Some(&f), None, None).unwrap();
        assert_eq!(v.to_string(), r#"{"n":123456789012345678901234567890,"x":[1e-05]}"#, "numbers kept exactly");
        std::fs::write(&f, "{nope").unwrap();
        assert!(payload(Some(&f), None, None).unwrap_err().to_string().contains("not JSON"));
        assert!(payload(Some(&dir.path().join("missing")), None, None).is_err());
    }
}
