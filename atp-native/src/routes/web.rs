//! The browser side of the server: the web app (`www/`, built to `www/dist`) served at `/` with
//! `--web`, and CORS for the API so that a page from another origin (`--cors-origin`) may call it.
//!
//! * The app is embedded in the binary when `www/dist` existed at build time (`build.rs`,
//!   [`embedded`]), so an installed `atp` serves it from anywhere; `--web-dir DIR` serves a
//!   directory instead ([`WebSource`]). Only `GET`/`HEAD`; a directory serves its `index.html`;
//!   dot-files and `..` are never served. API paths (`/.well-known/atp/…`, `/metrics`) never fall
//!   through to files, so every API error stays JSON.
//! * CORS applies to the API paths only, and only for the configured origins (exact match, or `*`
//!   for any). A same-origin page needs none. A preflight (`OPTIONS` with
//!   `Access-Control-Request-Method`) from an allowed origin is answered 204; from another origin
//!   it is a JSON 403.

mod embedded;

use std::borrow::Cow;
use std::path::{Component, Path, PathBuf};

use atp_wasm::ErrorCode;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::Shared;
use crate::error::{reject, ApiError};

/// How to build the app, for the messages below.
const BUILD_HINT: &str = "build it (scripts/build-npm.sh, then npm --prefix www install --no-save \
    <target>/npm/atp-wasm-<version>.tgz && npm --prefix www run build, see www/README.md)";

/// Why `--web` cannot serve.
#[derive(Debug, thiserror::Error)]
pub enum MissingWebDir {
    #[error("--web-dir: the web app directory {} has no index.html; {hint}, or pass another --web-dir DIR", .0.display(), hint = BUILD_HINT)]
    Dir(PathBuf),
    #[error(
        "--web: this atp binary was built without the web app (www/dist did not exist when it was \
         built); {hint} and build atp again (cargo install --path atp-native embeds www/dist), or pass \
         --web-dir DIR",
        hint = BUILD_HINT
    )]
    NotEmbedded,
}

/// Where `--web` takes the app from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebSource {
    /// The copy embedded at build time (`--web` alone).
    Embedded,
    /// A directory (`--web-dir DIR`, `[server] web_dir`).
    Dir(PathBuf),
}

/// The app being served.
#[derive(Debug, Clone)]
pub enum WebRoot {
    Embedded,
    Dir(PathBuf),
}

impl WebRoot {
    /// Checks that the source holds a built app (an `index.html`).
    pub fn open(source: &WebSource) -> Result<Self, MissingWebDir> {
        match source {
            WebSource::Embedded if embedded::get("index.html").is_some() => Ok(WebRoot::Embedded),
            WebSource::Embedded => Err(MissingWebDir::NotEmbedded),
            WebSource::Dir(dir) => {
                let dir = dir.canonicalize().map_err(|_| MissingWebDir::Dir(dir.to_owned()))?;
                if !dir.join("index.html").is_file() {
                    return Err(MissingWebDir::Dir(dir));
                }
                Ok(WebRoot::Dir(dir))
            }
        }
    }

    /// Where the files come from, for the start-up line.
    pub fn describe(&self) -> String {
        match self {
            WebRoot::Embedded => format!(
                "the copy embedded in the binary ({} files, built from {})",
                embedded::FILES.len(),
                embedded::SOURCE.unwrap_or("?")
            ),
            WebRoot::Dir(d) => d.display().to_string(),
        }
    }

    /// The safe relative path of a request path (no `..`, no dot-files), `/`-separated, with
    /// `index.html` for the root.
    fn relative(path: &str) -> Option<String> {
        let decoded: String = percent_decode(path)?;
        let mut parts = Vec::new();
        for c in Path::new(decoded.trim_start_matches('/')).components() {
            match c {
                Component::Normal(s) if !s.to_string_lossy().starts_with('.') => parts.push(s.to_str()?.to_owned()),
                Component::CurDir => {}
                _ => return None,
            }
        }
        if parts.is_empty() || decoded.ends_with('/') {
            parts.push("index.html".into());
        }
        Some(parts.join("/"))
    }

    /// The file for a request path in a directory root (a directory serves its `index.html`).
    fn file_for(dir: &Path, path: &str) -> Option<PathBuf> {
        let mut file = dir.join(Self::relative(path)?);
        if file.is_dir() {
            file.push("index.html");
        }
        Some(file)
    }

    /// The contents and name of the file a request path names, if any.
    async fn read(&self, path: &str) -> Option<(Cow<'static, [u8]>, String)> {
        match self {
            WebRoot::Embedded => {
                let rel = Self::relative(path)?;
                if let Some(data) = embedded::get(&rel) {
                    return Some((Cow::Borrowed(data), rel));
                }
                let index = format!("{rel}/index.html");
                embedded::get(&index).map(|data| (Cow::Borrowed(data), index))
            }
            WebRoot::Dir(dir) => {
                let file = Self::file_for(dir, path)?;
                let data = tokio::fs::read(&file).await.ok()?;
                Some((Cow::Owned(data), file.to_string_lossy().into_owned()))
            }
        }
    }
}

fn percent_decode(path: &str) -> Option<String> {
    let bytes: Vec<u8> = form_urlencoded::parse(format!("p={}", path.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned().into_bytes())
        .unwrap_or_default();
    let s = String::from_utf8(bytes).ok()?;
    (!s.contains('\0') && !s.contains('\\')).then_some(s)
}

fn content_type(file: &str) -> &'static str {
    match Path::new(file).extension().and_then(|e| e.to_str()).unwrap_or("") {
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
    let Some((data, name)) = root.read(&path).await else {
        return ApiError(atp_wasm::relay::api::not_found()).into_response();
    };
    let mut resp = if req.method() == Method::HEAD {
        let mut r = Response::new(Body::empty());
        r.headers_mut().insert(header::CONTENT_LENGTH, data.len().into());
        r
    } else {
        Response::new(Body::from(data))
    };
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type(&name)));
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
const ALLOW_HEADERS: &str = "authorization, content-type, last-event-id";

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
        let source = WebSource::Dir(dir.path().to_owned());
        assert!(matches!(WebRoot::open(&source), Err(MissingWebDir::Dir(_))));
        std::fs::write(dir.path().join("index.html"), "<!doctype html>").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let WebRoot::Dir(root) = WebRoot::open(&source).unwrap() else { panic!("not a directory root") };
        let file_for = |p: &str| WebRoot::file_for(&root, p);
        assert_eq!(file_for("/").unwrap(), root.join("index.html"));
        assert_eq!(file_for("/sub/").unwrap(), root.join("sub/index.html"));
        assert_eq!(file_for("/sub").unwrap(), root.join("sub/index.html"));
        assert_eq!(file_for("/a%20b.js").unwrap(), root.join("a b.js"));
        assert!(file_for("/../etc/passwd").is_none());
        assert!(file_for("/%2e%2e/etc/passwd").is_none());
        assert!(file_for("/.git/config").is_none());
        assert!(file_for("/sub/..%2f..%2fx").is_none());
        assert!(file_for("/a%5c..%5cb").is_none());
        assert_eq!(content_type("x.wasm"), "application/wasm");
        assert_eq!(WebRoot::relative("/atp-wasm/web.js").as_deref(), Some("atp-wasm/web.js"));
        assert_eq!(WebRoot::relative("").as_deref(), Some("index.html"));
    }

    /// The embedded copy is what build.rs found: with it `--web` alone works, without it the
    /// error says how to get it.
    #[tokio::test]
    async fn embedded_app_or_how_to_get_it() {
        match WebRoot::open(&WebSource::Embedded) {
            Ok(root) => {
                let (index, name) = root.read("/").await.expect("index.html");
                assert_eq!(name, "index.html");
                assert!(String::from_utf8_lossy(&index).contains("<html"), "an HTML page");
                assert!(root.read("/../Cargo.toml").await.is_none());
                assert!(root.describe().contains("embedded"));
            }
            Err(e) => {
                assert!(embedded::FILES.is_empty());
                let e = e.to_string();
                assert!(e.contains("built without the web app") && e.contains("--web-dir"), "{e}");
            }
        }
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
