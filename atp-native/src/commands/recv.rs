//! `atp recv` (docs/protocol.md §6 `GET messages`, §9): the agent's new messages.
//!
//! The server never deletes or acknowledges anything; the reader keeps a cursor (docs/protocol.md §6:
//! "the cursor lives only in the client"). `recv` keeps one per server and agent in
//! `<home>/cursors.json` — the `last_id` of the newest message printed — and asks for
//! `after_id=<cursor>`, so repeated calls print new messages only; `--all` reads from the start.
//! The cursor advances only after the messages were printed.
//!
//! `--wait SECS` polls until a message arrives or SECS pass (then prints the empty result and
//! exits 0); `--follow` prints new messages until interrupted: on the inbox stream
//! (`GET messages/stream`, docs/protocol.md §6.5), reconnecting by itself with `Last-Event-ID`
//! after the last message printed, or by polling a server without streams (the reference,
//! atp-worker for now: 404 / 501). `--ack` acknowledges what was printed (`POST messages/ack`),
//! so the server removes it. The pages are read by the core client
//! ([`atp_wasm::client::Client::recv`], which keeps the cursor of one run), the stream's events
//! by the core's [`Subscription`].

use std::path::PathBuf;
use std::time::Duration;

use atp_wasm::client::RecvOptions;
use atp_wasm::http::HttpResponse;
use atp_wasm::relay::store::Ack;
use atp_wasm::sse::Subscription;
use serde_json::{Map, Value};

use super::{default_agent, home, password, print_json, print_line, CmdError};
use crate::cli::{Output, RecvArgs};
use crate::client::{ClientError, Connection};
use crate::home::{write_atomic, Home, HomeError};

/// Milliseconds between two polls of `--wait` / `--follow`.
const POLL_MS: u32 = 1_000;

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

/// `[nonce] from -> to: payload` (the reference's text line; the payload as compact JSON).
pub fn text_line(m: &Value) -> String {
    let s = |k: &str| m.get(k).and_then(Value::as_str).unwrap_or("?").to_owned();
    let payload = m.get("payload").map(Value::to_string).unwrap_or_default();
    format!("[{}] {} -> {}: {payload}", s("nonce"), s("from"), s("to"))
}

pub async fn recv(a: RecvArgs) -> Result<(), CmdError> {
    let home = home(&a.home);
    let name = default_agent(&home, a.agent_id.clone(), "--agent-id")?;
    let mut conn = Connection::open(&a.server, &home, Some(&name), None).await?;
    let id = conn.local_agent(&name, "--agent-id").await?.to_string();
    conn.client.set_password(password(a.password, &id)?);
    let cursors = Cursors::new(&home);
    let server = conn.client.server().base();
    conn.client.set_cursor(if a.all { 0 } else { cursors.get(&server, &id)? });
    if a.follow && follow(&conn, &cursors, (&server, &id), a.output, a.ack).await? == Followed::NoStream {
        eprintln!("note: {} has no inbox stream; polling every {POLL_MS} ms", conn.label());
    }
    let wait_ms = a.wait.filter(|_| !a.follow).map(|s| u32::try_from(s.saturating_mul(1000)).unwrap_or(u32::MAX));
    let opts = RecvOptions { limit: Some(a.limit), after: None, wait_ms, poll_ms: Some(POLL_MS) };
    loop {
        let texts = conn.check(conn.client.recv(&opts).await)?;
        let messages =
            texts.iter().map(|t| serde_json::from_str(t)).collect::<Result<Vec<Value>, _>>().map_err(|e| {
                ClientError::BadResponse { server: conn.label().to_owned(), status: 200, reason: e.to_string() }
            })?;
        match (a.follow, a.output) {
            (true, Output::Json) => texts.iter().try_for_each(|t| print_line(t))?,
            (true, Output::Text) => messages.iter().try_for_each(|m| print_line(&text_line(m)))?,
            (false, Output::Json) => print_json(&Value::Array(messages.clone()))?,
            (false, Output::Text) if messages.is_empty() => print_line("No messages.")?,
            (false, Output::Text) => print_line(&messages.iter().map(text_line).collect::<Vec<_>>().join("\n"))?,
        }
        if !messages.is_empty() {
            cursors.advance(&server, &id, conn.client.cursor())?;
            if a.ack {
                conn.check(conn.client.ack(&Ack::UpTo(conn.client.cursor())).await)?;
            }
        }
        if !a.follow {
            return Ok(());
        }
        if messages.len() < a.limit as usize {
            tokio::time::sleep(Duration::from_millis(POLL_MS.into())).await;
        }
    }
}

/// How a `--follow` on the stream ended.
#[derive(Debug, PartialEq, Eq)]
enum Followed {
    /// The server has no stream route (404) or does not implement it (501): poll instead.
    NoStream,
}

/// `--follow` on the inbox stream: prints each message as its event arrives, moves the saved
/// cursor (and with `--ack` acknowledges) after printing, and reconnects after a dropped
/// connection with `Last-Event-ID` = the last message printed, so nothing is missed or printed
/// twice. Returns only when the server has no stream; any other refusal is an error.
async fn follow(
    conn: &Connection,
    cursors: &Cursors,
    (server, id): (&str, &str),
    output: Output,
    ack: bool,
) -> Result<Followed, CmdError> {
    let mut sub = Subscription::new(conn.client.cursor());
    let mut failures = 0u32;
    loop {
        let req = conn.check(conn.client.stream_request(sub.last_id()).await)?;
        let mut resp = match conn.client.io().open(req).await {
            Ok(r) => r,
            Err(f) => {
                // Unreachable for now: keep trying, a little slower each time (at most 30 s).
                failures = failures.saturating_add(1);
                eprintln!("warning: {}: {}; reconnecting", conn.label(), f.message);
                tokio::time::sleep(Duration::from_secs(u64::from(failures.min(30)))).await;
                continue;
            }
        };
        let status = resp.status().as_u16();
        if status != 200 {
            let content_type = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).map(str::to_owned);
            let body = resp.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
            if status == 404 || status == 501 {
                return Ok(Followed::NoStream);
            }
            let r = HttpResponse { status, content_type, body };
            return Ok(conn.check(Err(atp_wasm::client::ClientError::from_response(&r)))?);
        }
        sub.reconnecting();
        loop {
            let chunk = match resp.chunk().await {
                Ok(Some(c)) => c,
                // The server closed the stream or the connection dropped: resume.
                Ok(None) | Err(_) => break,
            };
            failures = 0;
            let events = sub.push(&chunk).map_err(|e| ClientError::BadResponse {
                server: conn.label().to_owned(),
                status: 200,
                reason: e.to_string(),
            })?;
            for e in &events {
                match output {
                    Output::Json => print_line(&e.json)?,
                    Output::Text => {
                        let m: Value = serde_json::from_str(&e.json).unwrap_or(Value::Null);
                        print_line(&text_line(&m))?
                    }
                }
            }
            if let Some(last) = events.last() {
                cursors.advance(server, id, last.id)?;
                if ack {
                    conn.check(conn.client.ack(&Ack::UpTo(last.id)).await)?;
                }
            }
        }
        let wait = sub.retry_ms().unwrap_or(2000).clamp(100, 30_000);
        tokio::time::sleep(Duration::from_millis(wait)).await;
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
    fn text_lines() {
        let m = json!({"from": "a@x.test", "to": "b@y.test", "nonce": "msg-1", "payload": {"body": "hi"}});
        assert_eq!(text_line(&m), r#"[msg-1] a@x.test -> b@y.test: {"body":"hi"}"#);
    }
}
