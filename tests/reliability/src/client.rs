//! The HTTP side of the suite: an agent's calls to its server (docs/protocol.md §6 — `register`,
//! `POST message`, `GET messages`) and the admin `stats`, over TLS without certificate
//! verification (the servers use self-signed certificates).

use std::time::Duration;

use serde_json::{json, Value};

use crate::Error;

/// The admin token every server of the suite is started with.
pub const ADMIN: &str = "reliability-admin";
/// Every agent's password.
pub const PASSWORD: &str = "reliability-pass";

/// What one submission got.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// 202: the server says the message is stored.
    Accepted,
    /// Another HTTP answer: its status, body, and whether the body is the JSON error shape
    /// (`error` and `error_code`). Means "not stored".
    Refused { status: u16, body: String, clear: bool },
    /// `503` with `"storage": "outcome_unknown"`: the server's disk failed while committing, so
    /// the message may be stored or not (docs/protocol.md §6.4). A retry with the same nonce and
    /// content (`timestamp` included) must settle it: 202, stored exactly once.
    Unknown { timestamp: u64, body: String },
    /// No answer (connection refused or reset, timeout).
    Failed { timeout: bool, error: String },
}

/// A client of one server.
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    /// A client of `https://127.0.0.1:<port>`; every request gives up after `timeout`.
    pub fn new(port: u16, timeout: Duration) -> Result<Api, Error> {
        let http = reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .connect_timeout(Duration::from_secs(5))
            .timeout(timeout)
            .pool_max_idle_per_host(16)
            .build()?;
        Ok(Api { http, base: format!("https://127.0.0.1:{port}/.well-known/atp/v1") })
    }

    /// Whether `health` answers 200.
    pub async fn healthy(&self) -> bool {
        matches!(self.http.get(format!("{}/health", self.base)).send().await, Ok(r) if r.status() == 200)
    }

    /// Registers `agent` (201, or 409 when it exists already).
    pub async fn register(&self, agent: &str) -> Result<(), Error> {
        let r = self
            .http
            .post(format!("{}/register", self.base))
            .json(&json!({"agent_id": agent, "password": PASSWORD}))
            .send()
            .await?;
        match r.status().as_u16() {
            201 | 409 => Ok(()),
            s => Err(Error::Msg(format!("registering {agent}: {s} {}", r.text().await.unwrap_or_default()))),
        }
    }

    /// Submits a message from `from` to `to` under `nonce`.
    pub async fn submit(&self, from: &str, to: &str, nonce: &str) -> Outcome {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        self.submit_at(from, to, nonce, now).await
    }

    /// Submits the message of [`Api::submit`] with the given timestamp: the same arguments give
    /// byte-identical content (a retry).
    pub async fn submit_at(&self, from: &str, to: &str, nonce: &str, now: u64) -> Outcome {
        let msg = json!({"from": from, "to": to, "timestamp": now, "nonce": nonce, "type": "message",
                         "payload": {"subject": "reliability", "body": nonce}});
        let sent = self.http.post(format!("{}/message", self.base)).basic_auth(from, Some(PASSWORD)).json(&msg).send();
        match sent.await {
            Ok(r) => {
                let status = r.status().as_u16();
                match r.text().await {
                    Ok(_) if status == 202 => Outcome::Accepted,
                    Ok(body) => {
                        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                        let clear = v["error"].is_string() && v["error_code"].is_string();
                        if clear && status == 503 && v["storage"] == "outcome_unknown" {
                            return Outcome::Unknown { timestamp: now, body };
                        }
                        Outcome::Refused { status, body, clear }
                    }
                    // The 202's body was cut: we cannot know; count it as no answer.
                    Err(e) => Outcome::Failed { timeout: e.is_timeout(), error: e.to_string() },
                }
            }
            Err(e) => Outcome::Failed { timeout: e.is_timeout(), error: e.to_string() },
        }
    }

    /// The nonces of `agent`'s inbox after row `after` (oldest first) and the new cursor.
    pub async fn inbox_page(&self, agent: &str, after: i64) -> Result<(Vec<String>, i64), Error> {
        let r = self
            .http
            .get(format!("{}/messages", self.base))
            .query(&[("agent_id", agent), ("after_id", &after.to_string()), ("limit", "1000")])
            .basic_auth(agent, Some(PASSWORD))
            .send()
            .await?;
        let status = r.status().as_u16();
        let v: Value = r.json().await?;
        if status != 200 {
            return Err(Error::Msg(format!("inbox of {agent}: {status} {v}")));
        }
        let nonces = v["messages"]
            .as_array()
            .map(|a| a.iter().filter_map(|m| m["nonce"].as_str().map(str::to_owned)).collect())
            .unwrap_or_default();
        Ok((nonces, v["last_id"].as_i64().unwrap_or(after)))
    }

    /// Rows of the outbound queue not yet finished (`queued` + `delivering` + `failed`), and
    /// `bounced` ones, from the admin `stats`.
    pub async fn queue(&self) -> Result<(i64, i64), Error> {
        let v: Value = self
            .http
            .get(format!("{}/stats", self.base))
            .bearer_auth(ADMIN)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let q = &v["queue"];
        let n = |s: &str| q[s].as_i64().unwrap_or(0);
        Ok((n("queued") + n("delivering") + n("failed"), n("bounced")))
    }
}
