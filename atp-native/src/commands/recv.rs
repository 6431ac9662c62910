//! `atp recv` (docs/protocol.md §6 `GET messages`, §9): the agent's new messages.
//!
//! The server never deletes or acknowledges anything; the reader keeps a cursor (docs/protocol.md §6:
//! "the cursor lives only in the client"). `recv` keeps one per server and agent in
//! `<home>/cursors.json` — the `last_id` of the newest message printed — and asks for
//! `after_id=<cursor>`, so repeated calls print new messages only; `--all` reads from the start.
//! The cursor advances only after the messages were printed.
//!
//! `--wait SECS` polls until a message arrives or SECS pass (then prints the empty result and
//! exits 0); `--follow` prints new messages until interrupted.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use super::{connect, default_agent, home, password, print_json, print_line, CmdError};
use crate::cli::{Output, RecvArgs};
use crate::client::{Auth, ClientError};
use crate::home::{write_atomic, Home, HomeError};

/// Pause between two polls of `--wait` / `--follow`.
const POLL: Duration = Duration::from_secs(1);

/// The cursor file: `{"<server base URL>": {"<agent id>": <last_id>}}`.
#[derive(Debug, Clone)]
pub struct Cursors {
    path: PathBuf,
}

impl Cursors {
    pub fn new(home: &Home) -> Self {
        Cursors { path: home.root.join("cursors.json") }
    }

    fn load(&self) -> Result<Map<String, Value>, HomeError> {
        match std::fs::read_to_string(&self.path) {
            Ok(text) => match serde_json::from_str::<Value>(&text) {
                Ok(Value::Object(m)) => Ok(m),
                Ok(_) => Err(HomeError::Format { path: self.path.clone(), message: "not a JSON object".into() }),
                Err(e) => Err(HomeError::Format { path: self.path.clone(), message: e.to_string() }),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Map::new()),
            Err(source) => Err(HomeError::Io { path: self.path.clone(), source }),
        }
    }

    /// The `last_id` already read by `agent` on `server` (0: nothing yet).
    pub fn get(&self, server: &str, agent: &str) -> Result<i64, HomeError> {
        Ok(self.load()?.get(server).and_then(|s| s.get(agent)).and_then(Value::as_i64).unwrap_or(0))
    }

    /// Moves the cursor forward to `last_id` (never back: `--all` re-reads without losing it).
    /// The file is re-read just before and replaced atomically.
    pub fn advance(&self, server: &str, agent: &str, last_id: i64) -> Result<(), HomeError> {
        let mut all = self.load()?;
        let entry = all.entry(server.to_owned()).or_insert_with(|| Value::Object(Map::new()));
        if !entry.is_object() {
            *entry = Value::Object(Map::new());
        }
        let Value::Object(per_agent) = entry else { unreachable!() };
        let old = per_agent.get(agent).and_then(Value::as_i64).unwrap_or(0);
        if last_id <= old {
            return Ok(());
        }
        per_agent.insert(agent.to_owned(), last_id.into());
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| HomeError::Io { path: dir.to_owned(), source })?;
        }
        let text = serde_json::to_string_pretty(&Value::Object(all)).unwrap_or_default();
        write_atomic(&self.path, text.as_bytes())
    }
}

/// One page of the inbox: the messages and the `last_id` to continue after.
fn page(v: &Value, server: &str) -> Result<(Vec<Value>, Option<i64>), ClientError> {
    let bad = |reason: &str| ClientError::BadResponse { server: server.to_owned(), status: 200, reason: reason.into() };
    let messages = v.get("messages").and_then(Value::as_array).ok_or_else(|| bad("no 'messages' list"))?.clone();
    let last = v.get("last_id").and_then(Value::as_i64);
    if !messages.is_empty() && last.is_none() {
        return Err(bad("messages without 'last_id'"));
    }
    Ok((messages, last))
}

/// `[nonce] from -> to: payload` (the reference's text line; the payload as compact JSON).
pub fn text_line(m: &Value) -> String {
    let s = |k: &str| m.get(k).and_then(Value::as_str).unwrap_or("?").to_owned();
    let payload = m.get("payload").map(Value::to_string).unwrap_or_default();
    format!("[{}] {} -> {}: {payload}", s("nonce"), s("from"), s("to"))
}

pub async fn recv(a: RecvArgs) -> Result<(), CmdError> {
    let home = home(&a.home);
    let name = default_agent(&home, a.agent_id.clone(), "--agent-id")?;
    let client = connect(&a.server)?;
    let id = client.local_agent(&name, "--agent-id").await?.to_string();
    let auth = Auth::Basic(id.clone(), password(a.password, &id)?);
    let cursors = Cursors::new(&home);
    let server = client.url.base();
    let mut after = if a.all { 0 } else { cursors.get(&server, &id)? };
    let deadline = a.wait.map(|s| Instant::now() + Duration::from_secs(s));
    loop {
        let v = client.get(&format!("messages?after_id={after}&limit={}", a.limit), &auth).await?;
        let (messages, last) = page(&v, &server)?;
        if a.follow {
            for m in &messages {
                match a.output {
                    Output::Json => print_line(&m.to_string())?,
                    Output::Text => print_line(&text_line(m))?,
                }
            }
        } else if messages.is_empty() && deadline.is_some_and(|d| Instant::now() < d) {
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now())).unwrap_or_default();
            tokio::time::sleep(POLL.min(left)).await;
            continue;
        } else {
            match a.output {
                Output::Json => print_json(&Value::Array(messages.clone()))?,
                Output::Text if messages.is_empty() => print_line("No messages.")?,
                Output::Text => print_line(&messages.iter().map(text_line).collect::<Vec<_>>().join("\n"))?,
            }
        }
        if let Some(last) = last.filter(|_| !messages.is_empty()) {
            cursors.advance(&server, &id, last)?;
            after = after.max(last);
        }
        if !a.follow {
            return Ok(());
        }
        if messages.len() < a.limit as usize {
            tokio::time::sleep(POLL).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cursors_per_server_and_agent_only_move_forward() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home { root: dir.path().join("fresh-home") };
        let c = Cursors::new(&home);
        assert_eq!(c.get("https://a:1", "bob@b.test").unwrap(), 0, "no file yet");
        c.advance("https://a:1", "bob@b.test", 5).unwrap();
        c.advance("https://a:1", "carol@b.test", 2).unwrap();
        c.advance("https://other:1", "bob@b.test", 9).unwrap();
        c.advance("https://a:1", "bob@b.test", 3).unwrap();
        assert_eq!(c.get("https://a:1", "bob@b.test").unwrap(), 5, "never back");
        assert_eq!(c.get("https://a:1", "carol@b.test").unwrap(), 2);
        assert_eq!(c.get("https://other:1", "bob@b.test").unwrap(), 9);
        let text = std::fs::read_to_string(home.root.join("cursors.json")).unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            v,
            json!({"https://a:1": {"bob@b.test": 5, "carol@b.test": 2}, "https://other:1": {"bob@b.test": 9}})
        );
        let leftovers: Vec<_> = std::fs::read_dir(&home.root).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(leftovers, ["cursors.json"], "no temporary file left behind");
    }

    #[test]
    fn a_broken_cursor_file_is_an_error_not_a_silent_reset() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home { root: dir.path().to_owned() };
        std::fs::write(home.root.join("cursors.json"), "[1,2").unwrap();
        let c = Cursors::new(&home);
        assert!(matches!(c.get("s", "a"), Err(HomeError::Format { .. })));
        assert!(c.advance("s", "a", 1).is_err());
    }

    #[test]
    fn pages_and_text_lines() {
        let m = json!({"from": "a@x.test", "to": "b@y.test", "nonce": "msg-1", "payload": {"body": "hi"}});
        let (msgs, last) = page(&json!({"messages": [m.clone()], "count": 1, "last_id": 7}), "s").unwrap();
        assert_eq!((msgs.len(), last), (1, Some(7)));
        assert_eq!(page(&json!({"messages": [], "count": 0}), "s").unwrap(), (vec![], None));
        assert!(page(&json!({"messages": [m.clone()]}), "s").is_err(), "no way to continue");
        assert!(page(&json!({}), "s").is_err());
        assert_eq!(text_line(&m), r#"[msg-1] a@x.test -> b@y.test: {"body":"hi"}"#);
    }
}
