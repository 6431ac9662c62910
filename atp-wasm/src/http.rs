//! The HTTP side of the world, as the core sees it (docs/design.md §1): a request, a response, and the
//! one async trait a home implements to send requests. The core builds requests and reads
//! responses; sending them is the home's job (`fetch` in the npm package and the Workers relay, an
//! HTTP client in native code, a table of canned answers in tests).
//!
//! Used by the agent client ([`crate::client`]) and by DNS over HTTPS ([`crate::doh`]).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

/// HTTP methods the core uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
        }
    }
}

/// A request to send. Header names are lowercase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    pub method: Method,
    pub url: String,
    pub headers: Vec<(String, String)>,
    /// Empty for GET.
    pub body: Vec<u8>,
}

impl HttpRequest {
    /// A GET of `url` without headers.
    pub fn get(url: impl Into<String>) -> Self {
        HttpRequest { method: Method::Get, url: url.into(), headers: Vec::new(), body: Vec::new() }
    }

    /// A POST of `body` to `url` with `content-type`.
    pub fn post(url: impl Into<String>, content_type: &str, body: impl Into<Vec<u8>>) -> Self {
        HttpRequest {
            method: Method::Post,
            url: url.into(),
            headers: vec![("content-type".into(), content_type.into())],
            body: body.into(),
        }
    }

    /// Adds a header (the name is lowercased).
    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_ascii_lowercase(), value.into()));
        self
    }

    /// Adds `authorization: Basic base64(user:password)` (RFC 7617; docs/protocol.md §6, §7).
    pub fn basic_auth(self, user: &str, password: &str) -> Self {
        let token = STANDARD.encode(format!("{user}:{password}"));
        self.header("authorization", format!("Basic {token}"))
    }

    /// Adds `authorization: Bearer <token>` (the admin token, docs/protocol.md §6 "Admin auth").
    pub fn bearer_auth(self, token: &str) -> Self {
        self.header("authorization", format!("Bearer {token}"))
    }

    /// The value of a header, by lowercase name.
    pub fn header_value(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// A response as received: status, `content-type` (if any) and the whole body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn new(status: u16, content_type: Option<&str>, body: impl Into<Vec<u8>>) -> Self {
        HttpResponse { status, content_type: content_type.map(str::to_owned), body: body.into() }
    }

    /// A response with a JSON body.
    pub fn json(status: u16, body: &str) -> Self {
        Self::new(status, Some("application/json"), body)
    }

    /// 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// The request never got a response: connection refused, DNS failure, TLS failure, timeout, a
/// browser's CORS refusal. The text is the transport's own description.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct HttpError(pub String);

/// Sends HTTP requests. `async fn` without a `Send` bound, like [`crate::env::Resolver`], so that
/// `!Send` wasm futures (`fetch`) can implement it.
#[allow(async_fn_in_trait)]
pub trait HttpTransport {
    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, HttpError>;
}

impl<T: HttpTransport + ?Sized> HttpTransport for &T {
    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        (**self).send(request).await
    }
}

/// Waiting, for polls (`recv` with `wait`). Browsers and Node use `setTimeout`.
#[allow(async_fn_in_trait)]
pub trait Sleep {
    async fn sleep(&self, millis: u32);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_builders() {
        let r = HttpRequest::post("https://a.test/x", "application/json", "{}").basic_auth("alice@a.test", "p:w");
        assert_eq!(r.method.as_str(), "POST");
        assert_eq!(r.header_value("content-type"), Some("application/json"));
        // base64("alice@a.test:p:w")
        assert_eq!(r.header_value("authorization"), Some("Basic YWxpY2VAYS50ZXN0OnA6dw=="));
        let g = HttpRequest::get("https://a.test/").header("Accept", "x");
        assert_eq!((g.method, g.header_value("accept"), g.body.len()), (Method::Get, Some("x"), 0));
        assert!(HttpResponse::json(202, "{}").is_success());
        assert!(!HttpResponse::new(404, None, "").is_success());
        let b = HttpRequest::get("https://a.test/").bearer_auth("tok");
        assert_eq!(b.header_value("authorization"), Some("Bearer tok"));
    }
}
