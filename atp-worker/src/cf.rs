//! The Workers runtime binding (wasm32 only): Workers KV behind [`Kv`], `fetch` behind the core's
//! [`HttpTransport`] (with a timeout), and the `fetch` and `scheduled` event handlers: a workers-rs
//! request becomes the core's [`ApiRequest`], its [`Handled`] answer a response, and a message it
//! queued is attempted in `waitUntil` after the response.
//!
//! Bindings (`wrangler.toml`): KV namespaces `AGENTS`, `MAIL`, `QUEUE`; vars and secrets as in
//! [`crate::config`]; a Cron trigger for the sweep.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use atp_wasm::env::StoreError;
use atp_wasm::http::{self, HttpError, HttpRequest, HttpResponse, HttpTransport};
use atp_wasm::relay::{api, ApiRequest, Handled};
use atp_wasm::{ErrorCode, Rejection};
use futures_util::future::{select, Either};
use worker::{
    console_error, console_log, event, AbortController, Context, Delay, Env, Fetch, Headers, KvStore, Method, Request,
    RequestInit, RequestRedirect, Response, ScheduleContext, ScheduledEvent,
};

use crate::clock::Clock;
use crate::config::Config;
use crate::kv::{Kv, Listed, Page, Put};
use crate::store::Namespaces;
use crate::worker::{Isolate, Worker};

/// How long one outbound request (DoH or transfer) may take.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(30);

thread_local! {
    static ISOLATE: RefCell<Option<Rc<Isolate>>> = const { RefCell::new(None) };
}

fn clock() -> Clock {
    Clock::new(|| js_sys::Date::now() as i64)
}

fn isolate() -> Rc<Isolate> {
    ISOLATE.with(|i| i.borrow_mut().get_or_insert_with(|| Rc::new(Isolate::new(js_sys::Date::now() as i64))).clone())
}

fn kv_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::new(e.to_string())
}

/// A Workers KV namespace.
pub struct WorkerKv(pub KvStore);

impl Kv for WorkerKv {
    async fn get(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.0.get(key).text().await.map_err(kv_err)
    }

    async fn put(&self, key: &str, value: &str, opts: Put) -> Result<(), StoreError> {
        let mut b = self.0.put(key, value).map_err(kv_err)?;
        if let Some(ttl) = opts.ttl_secs {
            b = b.expiration_ttl(ttl);
        }
        if let Some(m) = opts.metadata {
            b = b.metadata(m).map_err(kv_err)?;
        }
        b.execute().await.map_err(kv_err)
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.0.delete(key).await.map_err(kv_err)
    }

    async fn list(&self, prefix: &str, cursor: Option<String>, limit: u32) -> Result<Page, StoreError> {
        let mut b = self.0.list().prefix(prefix.to_owned()).limit(u64::from(limit.clamp(1, crate::kv::MAX_PAGE)));
        if let Some(c) = cursor {
            b = b.cursor(c);
        }
        let r = b.execute().await.map_err(kv_err)?;
        Ok(Page {
            keys: r.keys.into_iter().map(|k| Listed { name: k.name, metadata: k.metadata }).collect(),
            cursor: if r.list_complete { None } else { r.cursor.filter(|c| !c.is_empty()) },
        })
    }
}

/// `fetch`, with [`FETCH_TIMEOUT`] and without following redirects.
#[derive(Debug, Clone, Copy, Default)]
pub struct FetchTransport;

impl HttpTransport for FetchTransport {
    async fn send(&self, req: HttpRequest) -> Result<HttpResponse, HttpError> {
        let err = |e: worker::Error| HttpError(e.to_string());
        let headers = Headers::new();
        for (n, v) in &req.headers {
            headers.set(n, v).map_err(err)?;
        }
        let mut init = RequestInit::new();
        init.with_method(match req.method {
            http::Method::Get => Method::Get,
            http::Method::Post => Method::Post,
        })
        .with_headers(headers)
        .with_redirect(RequestRedirect::Manual);
        if !req.body.is_empty() {
            init.with_body(Some(js_sys::Uint8Array::from(req.body.as_slice()).into()));
        }
        let request = Request::new_with_init(&req.url, &init).map_err(err)?;
        let controller = AbortController::default();
        let signal = controller.signal();
        let work = Box::pin(async move {
            let mut resp = Fetch::Request(request).send_with_signal(&signal).await?;
            let status = resp.status_code();
            let content_type = resp.headers().get("content-type")?;
            let body = resp.bytes().await?;
            Ok::<_, worker::Error>(HttpResponse { status, content_type, body })
        });
        match select(work, Delay::from(FETCH_TIMEOUT)).await {
            Either::Left((r, _)) => r.map_err(err),
            Either::Right(_) => {
                controller.abort();
                Err(HttpError(format!("no answer within {} s", FETCH_TIMEOUT.as_secs())))
            }
        }
    }
}

fn config(env: &Env) -> Result<Config, String> {
    Config::from_lookup(|name| {
        env.var(name).ok().map(|v| v.to_string()).or_else(|| env.secret(name).ok().map(|s| s.to_string()))
    })
    .map_err(|e| e.to_string())
}

fn worker(env: &Env) -> Result<Worker<WorkerKv, FetchTransport>, String> {
    let cfg = config(env)?;
    let ns = |name: &str| env.kv(name).map(WorkerKv).map_err(|e| format!("KV namespace {name}: {e}"));
    let namespaces = Namespaces { agents: ns("AGENTS")?, mail: ns("MAIL")?, queue: ns("QUEUE")? };
    Ok(Worker::new(cfg, namespaces, FetchTransport, clock(), isolate()))
}

/// The request as the core's relay takes it, with the client's address from `CF-Connecting-IP`
/// (set by Cloudflare's edge). A body over the route's limit is refused before it is read when
/// `Content-Length` announces it, and after reading otherwise.
async fn api_request(mut req: Request) -> Result<ApiRequest, Rejection> {
    let bad = |e: worker::Error| Rejection::new(ErrorCode::BadRequest, format!("Could not read the request: {e}"));
    // The path and query from the URL as the runtime serialized it, without parsing it again
    // (`Request::url` would link a URL parser with its IDNA tables into the module).
    let method = req.method().to_string();
    let path = req.path();
    let url = req.inner().url();
    let query = url.split_once('?').map_or("", |(_, q)| q.split('#').next().unwrap_or(""));
    let headers: Vec<(String, String)> = req.headers().entries().map(|(n, v)| (n.to_ascii_lowercase(), v)).collect();
    let max = api::find(&method, &path).map_or(api::MAX_SMALL_BODY, |r| r.body_limit());
    let declared = headers.iter().find(|(n, _)| n == "content-length").and_then(|(_, v)| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(api::too_large(max));
    }
    let body = req.bytes().await.map_err(bad)?;
    if body.len() > max {
        return Err(api::too_large(max));
    }
    let source_ip = headers.iter().find(|(n, _)| n == "cf-connecting-ip").and_then(|(_, v)| v.trim().parse().ok());
    Ok(ApiRequest { method, path, query: query.to_owned(), headers, body, source_ip })
}

/// The runtime's response. `Connection` is left to the platform (it manages connections).
fn response(h: Handled) -> worker::Result<Response> {
    let headers = Headers::new();
    if let Some(ct) = &h.response.content_type {
        headers.set("content-type", ct)?;
    }
    for (n, v) in h.headers.iter().filter(|(n, _)| n != "connection") {
        headers.set(n, v)?;
    }
    Ok(Response::from_bytes(h.response.body)?.with_status(h.response.status).with_headers(headers))
}

#[event(start)]
fn start() {
    std::panic::set_hook(Box::new(|info| console_error!("atp-worker panic: {info}")));
}

#[event(fetch)]
async fn fetch(req: Request, env: Env, ctx: Context) -> worker::Result<Response> {
    let worker = match worker(&env) {
        Ok(w) => Rc::new(w),
        Err(e) => {
            console_error!("atp-worker is misconfigured: {e}");
            let r = Rejection::new(ErrorCode::TempFailure, "Relay misconfigured, retry later").with("details", e);
            return response(Handled::rejection(&r));
        }
    };
    let api = match api_request(req).await {
        Ok(a) => a,
        Err(r) => {
            worker.isolate().relay.stats.rejected(r.code);
            return response(Handled::rejection(&r));
        }
    };
    let handled = worker.handle(&api).await;
    if let Some(queued) = handled.queued.clone() {
        let w = worker.clone();
        ctx.wait_until(async move {
            match w.deliver_now(&queued).await {
                Ok(p) => console_log!("delivery of {}: {p:?}", queued.nonce),
                Err(e) => console_error!("delivery of {}: {e}", queued.nonce),
            }
        });
    }
    response(handled)
}

#[event(scheduled)]
async fn scheduled(_event: ScheduledEvent, env: Env, _ctx: ScheduleContext) {
    match worker(&env) {
        Ok(w) => match w.sweep().await {
            Ok(report) => console_log!("sweep: {report:?}"),
            Err(e) => console_error!("sweep failed: {e}"),
        },
        Err(e) => console_error!("atp-worker is misconfigured: {e}"),
    }
}
