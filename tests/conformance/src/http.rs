//! The kit's HTTPS client of the server under test: raw requests, replies kept as they came
//! (status, content type, text, JSON if it parses). Certificates are not verified (test servers are
//! self-signed); TLS itself is checked by the `tls.*` cases.

use std::time::Duration;

use serde_json::Value;

/// A reply as received.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub content_type: String,
    pub text: String,
    /// The body as JSON, when it is JSON.
    pub json: Option<Value>,
}

impl Reply {
    /// `error_code` of a JSON error body.
    pub fn error_code(&self) -> Option<&str> {
        self.json.as_ref()?.get("error_code")?.as_str()
    }

    /// `error` of a JSON error body.
    pub fn error(&self) -> Option<&str> {
        self.json.as_ref()?.get("error")?.as_str()
    }

    /// A field of the JSON body.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.json.as_ref()?.get(key)
    }

    /// A short description for the table: `403 550 5.7.28`, `202`, `404 text/plain "Not Found"`.
    pub fn describe(&self) -> String {
        if self.json.is_some() && self.content_type.starts_with("application/json") {
            match self.error_code() {
                Some(c) => format!("{} {c}", self.status),
                None => self.status.to_string(),
            }
        } else {
            let ctype = if self.content_type.is_empty() { "no content-type" } else { &self.content_type };
            let text: String = self.text.chars().take(30).collect();
            format!("{} {} {:?}", self.status, ctype.split(';').next().unwrap_or(ctype), text)
        }
    }
}

/// Why a request got no reply.
#[derive(Debug, thiserror::Error)]
#[error("no reply: {0}")]
pub struct NoReply(pub String);

/// The client of one server.
#[derive(Debug, Clone)]
pub struct Http {
    client: reqwest::Client,
    /// A client that never reuses a connection: for bodies the server may refuse unread (a
    /// server may then drop the connection, which must not fail the next request).
    oneshot: reqwest::Client,
    base: String,
}

/// The path prefix of every ATP route (docs/protocol.md §6).
pub const PREFIX: &str = "/.well-known/atp/v1/";

impl Http {
    /// A client for `base` (`https://host:port`, any path is ignored).
    pub fn new(base: &str) -> Result<Self, NoReply> {
        let url = reqwest::Url::parse(base).map_err(|e| NoReply(format!("bad --url {base}: {e}")))?;
        let base = format!("{}://{}", url.scheme(), url.authority());
        let build = |pool: bool| {
            let b = reqwest::Client::builder().danger_accept_invalid_certs(true).timeout(Duration::from_secs(30));
            let b = if pool { b } else { b.pool_max_idle_per_host(0) };
            b.build().map_err(|e| NoReply(e.to_string()))
        };
        Ok(Http { client: build(true)?, oneshot: build(false)?, base })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// The URL of `path` under the ATP prefix (`path` may carry a query).
    pub fn url(&self, path: &str) -> String {
        format!("{}{PREFIX}{path}", self.base)
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.get(self.url(path))
    }

    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.post(self.url(path))
    }

    /// A POST on a connection of its own (for bodies the server may refuse unread).
    pub fn post_oneshot(&self, path: &str) -> reqwest::RequestBuilder {
        self.oneshot.post(self.url(path))
    }

    /// Any request on the raw client.
    pub fn raw(&self) -> &reqwest::Client {
        &self.client
    }

    /// Sends and reads the whole reply.
    pub async fn send(req: reqwest::RequestBuilder) -> Result<Reply, NoReply> {
        let r = req.send().await.map_err(|e| NoReply(error_chain(&e)))?;
        let status = r.status().as_u16();
        let content_type = r.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        let text = r.text().await.map_err(|e| NoReply(error_chain(&e)))?;
        let json = serde_json::from_str(&text).ok();
        Ok(Reply { status, content_type, text, json })
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}
