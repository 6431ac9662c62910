//! `atp send` (docs/protocol.md §6 `POST message`, §2 message JSON, §9): the core client
//! ([`atp_wasm::client::Client::send`]) builds an unsigned message as the reference's client does
//! (servers sign, agents never do, docs/protocol.md §4) and submits it with the sender's Basic
//! credential (§7). Prints `{"status":"accepted","nonce","timestamp"}` (the message's timestamp) or
//! fails with a non-zero exit code.

use std::io::Read;
use std::path::Path;

use atp_wasm::client::SendOptions;
use serde_json::{json, Value};

use super::{default_agent, home, password, print_json, print_line, CmdError};
use crate::cli::{Output, SendArgs};
use crate::client::Connection;

pub async fn send(a: SendArgs) -> Result<(), CmdError> {
    let home = home(&a.home);
    let from_name = default_agent(&home, a.from.clone(), "--from")?;
    let payload = a.payload.as_deref().map(payload_file).transpose()?;
    let mut conn = Connection::open(&a.server, &home, Some(&from_name), None).await?;
    let from = conn.local_agent(&from_name, "--from").await?;
    conn.client.set_password(password(a.password, &from.to_string())?);
    let cc = a.cc.iter().map(|c| c.trim()).filter(|c| !c.is_empty()).map(str::to_owned).collect();
    let opts = SendOptions { body: a.body, subject: a.subject, payload, cc };
    let sent = conn.check(conn.client.send(&a.to, &opts).await)?;
    match a.output {
        Output::Json => print_json(&json!({"status": sent.status, "nonce": sent.nonce, "timestamp": sent.timestamp})),
        Output::Text => print_line(&format!("Message sent. nonce={}", sent.nonce)),
    }
}

/// The payload of `--payload FILE` (`-` = stdin): its JSON as it is (without it the core makes
/// `{"body", "subject"}` of the keys given, docs/protocol.md §2).
pub fn payload_file(path: &Path) -> Result<Value, CmdError> {
    let what = format!("--payload {}", path.display());
    let mut text = String::new();
    if path == Path::new("-") {
        std::io::stdin().read_to_string(&mut text).map_err(CmdError::io(what.clone()))?;
    } else {
        text = std::fs::read_to_string(path).map_err(CmdError::io(what.clone()))?;
    }
    serde_json::from_str(&text).map_err(|e| CmdError::Usage(format!("{what}: not JSON: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("p.json");
        std::fs::write(&f, r#"{"n": 123456789012345678901234567890, "x": [1e-05]}"#).unwrap();
        let v = payload_file(&f).unwrap();
        assert_eq!(v.to_string(), r#"{"n":123456789012345678901234567890,"x":[1e-05]}"#, "numbers kept exactly");
        std::fs::write(&f, "{nope").unwrap();
        assert!(payload_file(&f).unwrap_err().to_string().contains("not JSON"));
        assert!(payload_file(&dir.path().join("missing")).is_err());
    }
}
