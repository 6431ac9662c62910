//! The browser side of the server: the web app (`www/`, built to `www/dist`) served at `/` with
//! `--web`, and CORS for the API so that a page from another origin (`--cors-origin`) may call it.
//!
//! * Static files come from a directory ([`WebRoot`]); nothing is embedded, so `cargo build` never
//!   needs npm. Only `GET`/`HEAD`; a directory serves its `index.html`; dot-files and `..` are
//!   never served. API paths (`/.well-known/atp/…`, `/metrics`) never fall through to files, so
//!   every API error stays JSON.
//! * CORS applies to the API paths only, and only for the configured origins (exact match, or `*`
//!   for any). A same-origin page needs none. A preflight (`OPTIONS` with
//!   `Access-Control-Request-Method`) from an allowed origin is answered 204; from another origin
//!   it is a JSON 403.

use std::path::{Component, Path, PathBuf};

use atp_wasm::ErrorCode;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::Shared;
use crate::error::{reject, ApiError};

/// Why `--web` cannot serve.
#[derive(Debug, thiserror::Error)]
#[error(
    "--web: the web app directory {0} has no index.html. Build it first (npm --prefix www install && \
     npm --prefix www run build, see www/README.md) or pass --web-dir DIR"
)]
pub struct MissingWebDir(pub PathBuf);

/// The directory the web app is served from.
#[derive(Debug, Clone)]
pub struct WebRoot {
    dir: PathBuf,
}

impl WebRoot {
    /// Checks that `dir` holds a built app (an `index.html`).
    pub fn open(dir: &Path) -> Result<Self, MissingWebDir> {
        let dir = dir.canonicalize().map_err(|_| MissingWebDir(dir.to_owned()))?;
        if !dir.join("index.html").is_file() {
            return Err(MissingWebDir(dir));
        }
        Ok(WebRoot { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file for a request path, if it is a safe relative path (no `..`, no dot-files).
    fn file_for(&self, path: &str) -> Option<PathBuf> {
        let decoded: String = percent_decode(path)?;
        let rel = Path::new(decoded.trim_start_matches('/'));
        let mut file = self.dir.clone();
        for c in rel.components() {
            match c {
                Component::Normal(s) if !s.to_string_lossy().starts_with('.') => file.push(s),
                Component::CurDir => {}
                _ => return None,
            }
        }
        if file.is_dir() {
            file.push("index.html");
        }
        Some(file)
    }
}

/// The default `--web-dir`: `www/dist` of the source tree this binary was built from.
pub fn default_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../www/dist")
}

fn percent_decode(path: &str) -> Option<String> {
    let bytes: Vec<u8> = form_urlencoded::parse(format!("p={}", path.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned().into_bytes())
        .unwrap_or_default();
    let s = String::from_utf8(bytes).ok()?;
    (!s.contains('\0') && !s.contains('\\')).then_some(s)
}

fn content_type(file: &Path) -> &'static str {
    match file.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "wasm" => "application/wasm",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "txt" => "text/plain; charset=utf-8",
        "webmanifest" => "application/manifest+json",
        _ => "application/octet-stream",
    }
}

/// True for the paths of the API (never served from files, always JSON errors).
pub fn is_api(path: &str) -> bool {
    path.starts_with("/.well-known/atp") || path == "/metrics"
}

/// The fallback with `--web`: API paths answer the JSON 404, other `GET`/`HEAD` paths are files.
pub async fn serve(State(st): Shared, req: Request) -> Response {
    let path = req.uri().path().to_owned();
    let Some(root) = st.web.as_ref().filter(|_| !is_api(&path)) else {
        return ApiError(atp_wasm::relay::api::not_found()).into_response();
    };
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return reject(ErrorCode::MethodNotAllowed, "Method Not Allowed").into_response();
    }
    // Errors stay JSON with a stable code here too (the same 404 as an unknown API path).
    let Some(file) = root.file_for(&path) else {
        return ApiError(atp_wasm::relay::api::not_found()).into_response();
    };
    let data = match tokio::fs::read(&file).await {
        Ok(d) => d,
        Err(_) => return ApiError(atp_wasm::relay::api::not_found()).into_response(),
    };
    let mut resp = if req.method() == Method::HEAD {
        let mut r = Response::new(Body::empty());
        r.headers_mut().insert(header::CONTENT_LENGTH, data.len().into());
        r
    } else {
        Response::new(Body::from(data))
    };
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type(&file)));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    resp
}

/// The allowed origins of `--cors-origin`.
#[derive(Debug, Clone, Default)]
pub struct Cors {
    origins: Vec<String>,
}

impl Cors {
    pub fn new(origins: &[String]) -> Self {
        Cors { origins: origins.iter().map(|o| o.trim().trim_end_matches('/').to_ascii_lowercase()).collect() }
    }

    fn allows(&self, origin: &str) -> bool {
        let origin = origin.to_ascii_lowercase();
        self.origins.iter().any(|o| o == "*" || *o == origin)
    }
}

const ALLOW_METHODS: &str = "GET, POST, OPTIONS";
const ALLOW_HEADERS: &str = "authorization, content-type";

/// CORS for the API paths: preflights answered here, the allowed origin echoed on responses.
pub async fn cors(State(st): Shared, req: Request, next: Next) -> Response {
    let origin = req.headers().get(header::ORIGIN).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let (Some(origin), true) = (origin, is_api(req.uri().path())) else {
        return next.run(req).await;
    };
    let allowed = st.cors.allows(&origin);
    let preflight =
        req.method() == Method::OPTIONS && req.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    if preflight {
        if !allowed {
            return reject(ErrorCode::Forbidden, format!("Origin {origin} is not allowed (--cors-origin)"))
                .into_response();
        }
        let mut resp = StatusCode::NO_CONTENT.into_response();
        let h = resp.headers_mut();
        allow(h, &origin);
        h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static(ALLOW_METHODS));
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static(ALLOW_HEADERS));
        h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
        return resp;
    }
    let mut resp = next.run(req).await;
    if allowed {
        allow(resp.headers_mut(), &origin);
    }
    resp
}

fn allow(h: &mut HeaderMap, origin: &str) {
    if let Ok(v) = HeaderValue::from_str(origin) {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
    }
    h.append(header::VARY, HeaderValue::from_static("Origin"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_stay_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        assert!(WebRoot::open(dir.path()).is_err());
        std::fs::write(dir.path().join("index.html"), "<!doctype html>").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let root = WebRoot::open(dir.path()).unwrap();
        assert_eq!(root.file_for("/").unwrap(), root.dir().join("index.html"));
        assert_eq!(root.file_for("/sub/").unwrap(), root.dir().join("sub/index.html"));
        assert_eq!(root.file_for("/a%20b.js").unwrap(), root.dir().join("a b.js"));
        assert!(root.file_for("/../etc/passwd").is_none());
        assert!(root.file_for("/%2e%2e/etc/passwd").is_none());
        assert!(root.file_for("/.git/config").is_none());
        assert!(root.file_for("/sub/..%2f..%2fx").is_none());
        assert!(root.file_for("/a%5c..%5cb").is_none());
        assert_eq!(content_type(Path::new("x.wasm")), "application/wasm");
    }

    #[test]
    fn cors_origins_match_exactly() {
        let c = Cors::new(&["https://App.example/".into()]);
        assert!(c.allows("https://app.example"));
        assert!(!c.allows("https://app.example:8443"));
        assert!(!c.allows("null"));
        assert!(Cors::new(&["*".into()]).allows("http://anything"));
        assert!(!Cors::default().allows("https://app.example"));
        assert!(is_api("/.well-known/atp/v1/messages") && is_api("/metrics") && !is_api("/index.html"));
    }
}
