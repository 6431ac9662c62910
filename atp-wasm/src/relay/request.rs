//! A request and a response as the relay sees them: what a home's HTTP glue builds from its
//! runtime's request, and turns back into its runtime's response (docs/design.md §1).

use std::net::IpAddr;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use crate::error::{ErrorCode, Rejection};
use crate::http::HttpResponse;

/// An HTTP request for the relay. Header names are lowercase; the body was read within the
/// route's `max_body` by the glue.
#[derive(Debug, Clone, Default)]
pub struct ApiRequest {
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The query string, without `?`.
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The client's address as the transport sees it (the TCP peer natively, `CF-Connecting-IP`
    /// on Workers); never taken from `X-Forwarded-For` (docs/protocol.md §12.7).
    pub source_ip: Option<IpAddr>,
}

impl ApiRequest {
    /// The value of a header, by lowercase name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// The value of `Authorization` after `<scheme> ` (the scheme compared case-insensitively,
    /// RFC 9110 §11.1), if any.
    pub fn credentials(&self, scheme: &str) -> Option<&str> {
        let (s, rest) = self.header("authorization")?.split_once(' ')?;
        s.eq_ignore_ascii_case(scheme).then(|| rest.trim())
    }

    /// The `Basic` credential as `(user, password)`, split at the first `:` (a password may hold
    /// `:`, docs/protocol.md §6.2). `None` when absent; `Some(Err)` when malformed.
    pub fn basic(&self) -> Option<Result<(String, String), Rejection>> {
        let encoded = self.credentials("Basic")?;
        let decoded = STANDARD.decode(encoded).ok().and_then(|b| String::from_utf8(b).ok());
        Some(match decoded.as_deref().and_then(|d| d.split_once(':')) {
            Some((u, p)) => Ok((u.to_owned(), p.to_owned())),
            None => Err(Rejection::new(ErrorCode::AuthFailed, "Invalid Authorization header")),
        })
    }

    /// The query's parameters, leniently decoded (`+` is a space, bad `%` escapes are kept).
    pub fn params(&self) -> Query {
        Query::parse(&self.query)
    }
}

/// Decoded query parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query(Vec<(String, String)>);

impl Query {
    pub fn parse(q: &str) -> Query {
        fn decode(s: &str) -> String {
            let b = s.as_bytes();
            let mut out = Vec::with_capacity(b.len());
            let mut i = 0;
            while i < b.len() {
                match b[i] {
                    b'+' => out.push(b' '),
                    b'%' if i + 2 < b.len() => {
                        match std::str::from_utf8(&b[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok()) {
                            Some(v) => {
                                out.push(v);
                                i += 2;
                            }
                            None => out.push(b'%'),
                        }
                    }
                    c => out.push(c),
                }
                i += 1;
            }
            String::from_utf8_lossy(&out).into_owned()
        }
        Query(
            q.split('&')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    (decode(k), decode(v))
                })
                .collect(),
        )
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// An optional integer parameter in `0..=i64::MAX`; anything else is a 400 (the reference
    /// silently ignored such values, docs/protocol.md §6.1).
    pub fn int(&self, name: &str, default: i64) -> Result<i64, Rejection> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v.trim().parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
                Rejection::new(ErrorCode::BadRequest, format!("'{name}' must be a non-negative integer"))
            }),
        }
    }
}

/// The relay's answer to one request.
#[derive(Debug, Clone)]
pub struct Handled {
    pub response: HttpResponse,
    /// Extra response headers (`retry-after`, `connection`).
    pub headers: Vec<(String, String)>,
    /// The error code of a refusal (for the home's metrics and logs).
    pub code: Option<ErrorCode>,
    /// A message queued for another domain: the home wakes its delivery (a tokio task natively,
    /// `waitUntil` on Workers).
    pub queued: Option<Queued>,
    /// The nonce of the message a `POST message` was about (for the home's logs).
    pub nonce: Option<String>,
    /// An accepted `GET messages/stream`: the response's head is ready and the home streams its
    /// body with a [`crate::relay::stream::InboxStream`].
    pub stream: Option<crate::relay::stream::StreamOpen>,
}

/// A message just queued for delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    pub nonce: String,
    /// The destination domain.
    pub domain: String,
}

impl Handled {
    /// A JSON answer.
    pub fn json(status: u16, v: &serde_json::Value) -> Handled {
        Handled::body(status, "application/json", serde_json::to_vec(v).unwrap_or_default())
    }

    /// An answer with a body of the given type.
    pub fn body(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Handled {
        Handled {
            response: HttpResponse::new(status, Some(content_type), body),
            headers: Vec::new(),
            code: None,
            queued: None,
            nonce: None,
            stream: None,
        }
    }

    /// The reference's JSON error shape under the code's status (docs/protocol.md §6.3). A body
    /// refused as too large was not read to its end, so that answer also closes the connection.
    pub fn rejection(r: &Rejection) -> Handled {
        let mut h = Handled::json(r.status(), &r.to_json());
        h.code = Some(r.code);
        if r.code == ErrorCode::MessageTooLarge {
            h.headers.push(("connection".into(), "close".into()));
        }
        if let Some(secs) = r.extra.get("retry_after").and_then(serde_json::Value::as_u64) {
            h.headers.push(("retry-after".into(), secs.to_string()));
        }
        h
    }
}

impl From<Rejection> for Handled {
    fn from(r: Rejection) -> Self {
        Handled::rejection(&r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_decoding_is_lenient_and_ints_strict() {
        let q = Query::parse("limit=5&after_id=%ZZ&agent_id=a%40b&x=1+2&&flag&pct=%4");
        assert_eq!(q.get("agent_id"), Some("a@b"));
        assert_eq!(q.get("after_id"), Some("%ZZ"));
        assert_eq!(q.get("x"), Some("1 2"));
        assert_eq!(q.get("flag"), Some(""));
        assert_eq!(q.get("pct"), Some("%4"));
        assert_eq!(q.int("limit", 50).unwrap(), 5);
        assert_eq!(q.int("after_id", 0).unwrap_err().status(), 400);
        assert_eq!(q.int("missing", 50).unwrap(), 50);
        assert!(Query::parse("limit=-1").int("limit", 50).is_err());
    }

    #[test]
    fn basic_credentials() {
        let mut r = ApiRequest::default();
        assert!(r.basic().is_none());
        // base64("alice@a.test:p:w")
        r.headers.push(("authorization".into(), "basic  YWxpY2VAYS50ZXN0OnA6dw== ".into()));
        assert_eq!(r.basic().unwrap().unwrap(), ("alice@a.test".into(), "p:w".into()));
        r.headers[0].1 = "Basic !!".into();
        assert_eq!(r.basic().unwrap().unwrap_err().status(), 401);
        r.headers[0].1 = "Bearer tok".into();
        assert_eq!(r.credentials("bearer"), Some("tok"));
    }

    #[test]
    fn rejections_become_json_with_their_status() {
        let h = Handled::rejection(&crate::relay::api::too_large(3));
        assert_eq!((h.response.status, h.code), (400, Some(ErrorCode::MessageTooLarge)));
        assert!(h.headers.contains(&("connection".into(), "close".into())));
        let v: serde_json::Value = serde_json::from_slice(&h.response.body).unwrap();
        assert_eq!((v["error_code"].as_str(), v["max_size"].as_u64()), (Some("552 5.3.4"), Some(3)));
    }
}
