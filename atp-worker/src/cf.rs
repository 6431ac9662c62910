//! The Workers runtime binding (wasm32 only): the domain's Durable Object class
//! ([`DomainStore`]: [`crate::object`] over `ctx.storage.sql`, each call in `transactionSync`;
//! inbox waiters, [`crate::waiters`]) and the worker's way to it ([`DomainObject`]), `fetch`
//! behind the core's [`HttpTransport`] (with a timeout), and the `fetch` and `scheduled` event
//! handlers: a workers-rs request becomes the core's [`ApiRequest`], its [`Handled`] answer a
//! response (an inbox stream's body fed chunk by chunk), a message it queued is attempted in
//! `waitUntil` after the response, and the isolate's counters are flushed there too.
//!
//! A `GET` (a long poll) races the client: when `request.signal` aborts (compatibility flag
//! `enable_request_signal`; workerd aborts it when the client goes away before the response is
//! made, on Cloudflare's edge — not in workerd under Miniflare, where the long poll ends with its
//! `wait`) its handling is dropped, which gives back its place among the agent's streams and its
//! waiter in the object. A stream races the signal too: workerd notices a gone client when a write
//! to it fails, at the latest at the heartbeat (15 s), and aborts the signal then, in Miniflare as
//! well (tests/worker/e2e.mjs). Other requests are not raced:
//! a submission whose client goes away still ends, and its message, stored before the 202, is
//! attempted in `waitUntil` as usual (if the runtime ends the invocation first, the cron sweep
//! claims the message once its lease is over, `crate::store::LEASE_SECS`).
//!
//! Bindings (`wrangler.toml`): the Durable Object namespace `STORE` (class `DomainStore`, SQLite
//! storage, one object per domain); vars and secrets as in [`crate::config`]; a Cron trigger for
//! the sweep.

use std::cell::RefCell;
use std::future::Future;
use std::pin::{pin, Pin};
use std::rc::Rc;
use std::time::Duration;

use atp_wasm::env::StoreError;
use atp_wasm::http::{self, HttpError, HttpRequest, HttpResponse, HttpTransport};
use atp_wasm::relay::{api, ApiRequest, Handled};
use atp_wasm::{ErrorCode, Rejection};
use futures_util::future::{select, Either};
use worker::wasm_bindgen::closure::Closure;
use worker::wasm_bindgen::{JsCast, JsValue};
use worker::wasm_bindgen_futures::{self, JsFuture};
use worker::web_sys::{self, RequestRedirect};
use worker::{
    console_error, console_log, durable_object, event, AbortController, Context, Delay, DurableObject, Env, Fetch,
    Headers, Request, Response, ScheduleContext, ScheduledEvent, SqlStorage, SqlStorageValue, State, Stub,
};

use crate::clock::Clock;
use crate::config::Config;
use crate::object::{Call, Domain, Reply};
use crate::sql::{Row, Sql, Value};
use crate::store::Objects;
use crate::waiters::{Fired, Signal, Waiters, WatchAnswer, WatchRequest};
use crate::worker::{Isolate, Worker};

/// The Durable Object namespace binding.
pub const BINDING: &str = "STORE";
/// How long the isolate gathers counts before flushing them to the domain's object.
pub const FLUSH_DELAY: Duration = Duration::from_millis(200);

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

/// The domain's object as the worker reaches it: each [`Call`] a `POST` with its JSON, each
/// answer a [`Reply`] (200) or the object's error (500: rolled back, nothing written); each wait
/// a `POST https://store/watch` ([`crate::waiters`]).
#[derive(Clone)]
pub struct DomainObject(pub Rc<Stub>);

impl DomainObject {
    /// `POST https://store{path}` with `body`: the answer's status and bytes (an error: no answer).
    async fn post(&self, path: &str, body: JsValue) -> worker::Result<(u16, Vec<u8>)> {
        let req = request(&format!("https://store{path}"), "POST", None, Some(&body), RequestRedirect::Follow)?;
        let mut resp = self.0.fetch_with_request(req).await?;
        Ok((resp.status_code(), resp.bytes().await?))
    }
}

impl Objects for DomainObject {
    async fn call(&self, call: &Call) -> Result<Reply, StoreError> {
        let body = serde_json::to_string(call).map_err(|e| StoreError::new(e.to_string()))?;
        let (status, body) = self.post("/call", JsValue::from_str(&body)).await.map_err(|e| StoreError {
            outcome_unknown: true,
            ..StoreError::new(format!("the domain object did not answer: {e}"))
        })?;
        // Bytes and `from_slice`, as the core reads JSON: one instance of serde_json's reader in
        // the module (docs/design.md §4, the wasm's size).
        if status != 200 {
            let text = String::from_utf8_lossy(&body);
            return Err(StoreError::new(format!("the domain object refused the call: {text}")));
        }
        serde_json::from_slice(&body)
            .map_err(|e| StoreError::new(format!("unreadable answer of the domain object: {e}")))
    }

    async fn watch(&self, w: &WatchRequest) -> Result<WatchAnswer, StoreError> {
        let body = js_sys::Uint8Array::from(w.encode().as_slice()).into();
        let (status, body) = self
            .post("/watch", body)
            .await
            .map_err(|e| StoreError::new(format!("the domain object did not answer a watch: {e}")))?;
        match (status, body.as_slice()) {
            (200, [b]) => WatchAnswer::from_byte(*b).ok_or_else(|| StoreError::new("unreadable watch answer")),
            (status, _) => Err(StoreError::new(format!("the domain object refused a watch: {status}"))),
        }
    }

    async fn pause(&self, d: Duration) {
        Delay::from(d).await;
    }
}

/// A request made with web-sys' `RequestInit`: workers-rs' `RequestInit` would link the
/// serializer of its `cf` options (image resizing and more, ~6.5 KB gzipped) although the worker sets
/// none (docs/design.md §4, the wasm's size).
fn request(
    url: &str,
    method: &str,
    headers: Option<&Headers>,
    body: Option<&JsValue>,
    redirect: RequestRedirect,
) -> worker::Result<Request> {
    let init = web_sys::RequestInit::new();
    init.set_method(method);
    init.set_redirect(redirect);
    if let Some(h) = headers {
        init.set_headers(h.as_ref());
    }
    if let Some(b) = body {
        init.set_body(b);
    }
    web_sys::Request::new_with_str_and_init(url, &init).map(Request::from).map_err(|e| {
        worker::Error::JsError(e.as_string().unwrap_or_else(|| "invalid URL or options for Request".into()))
    })
}

/// `ctx.storage.sql`.
pub struct DoSql(pub SqlStorage);

impl Sql for DoSql {
    fn exec(&self, sql: &str, params: &[Value]) -> Result<Vec<Row>, StoreError> {
        let bindings: Vec<SqlStorageValue> = params
            .iter()
            .map(|v| match v {
                Value::Null => SqlStorageValue::Null,
                Value::Int(i) => SqlStorageValue::Integer(*i),
                Value::Real(f) => SqlStorageValue::Float(*f),
                Value::Text(s) => SqlStorageValue::String(s.clone()),
                Value::Blob(b) => SqlStorageValue::Blob(b.clone()),
            })
            .collect();
        let err = |e: worker::Error| StoreError::new(format!("SQL: {e}"));
        let cursor = self.0.exec(sql, bindings).map_err(err)?;
        cursor
            .raw()
            .map(|row| {
                let row = row.map_err(err)?;
                Ok(row
                    .into_iter()
                    .map(|v| match v {
                        SqlStorageValue::Null => Value::Null,
                        SqlStorageValue::Boolean(b) => Value::Int(i64::from(b)),
                        SqlStorageValue::Integer(i) => Value::Int(i),
                        SqlStorageValue::Float(f) => Value::Real(f),
                        SqlStorageValue::String(s) => Value::Text(s),
                        SqlStorageValue::Blob(b) => Value::Blob(b),
                    })
                    .collect())
            })
            .collect()
    }
}

/// The domain's Durable Object (SQLite storage): runs each [`Call`] in one `transactionSync`
/// (`POST https://store/call`) and holds the inbox waiters (`POST https://store/watch`), woken
/// after the call that delivered to their agent has committed.
#[durable_object]
pub struct DomainStore {
    state: State,
    domain: Result<Rc<Domain<DoSql>>, String>,
    waiters: Rc<RefCell<Waiters>>,
}

impl DurableObject for DomainStore {
    fn new(state: State, _env: Env) -> Self {
        let domain = Domain::open(DoSql(state.storage().sql())).map(Rc::new).map_err(|e| e.to_string());
        if let Err(e) = &domain {
            console_error!("atp-worker: the domain object's schema: {e}");
        }
        DomainStore { state, domain, waiters: Rc::default() }
    }

    async fn fetch(&self, mut req: Request) -> worker::Result<Response> {
        let domain = match &self.domain {
            Ok(d) => d.clone(),
            Err(e) => return Response::error(e.clone(), 500),
        };
        let body = req.bytes().await?;
        if req.path() == "/watch" {
            return self.watch(&domain, &body).await;
        }
        let call: Call = match serde_json::from_slice(&body) {
            Ok(c) => c,
            Err(e) => return Response::error(format!("not a call: {e}"), 400),
        };
        let result = transaction(&self.state, domain.clone(), call);
        // Committed: wake the agents it delivered to (rolled back: nobody).
        let delivered = domain.take_delivered();
        match result {
            Ok(reply) => {
                let mut waiters = self.waiters.borrow_mut();
                for agent in &delivered {
                    waiters.wake(agent);
                }
                drop(waiters);
                Response::from_json(&reply)
            }
            Err(e) => Response::error(e.to_string(), 500),
        }
    }
}

impl DomainStore {
    /// `/watch`: in one turn (nothing awaited between the read and the registration), woken at
    /// once when the agent has a row after the caller's id, else a waiter until a commit wakes
    /// it or its time is up; "full" past the table's bounds. The waiter leaves the table when
    /// this future ends or is dropped.
    async fn watch(&self, domain: &Domain<DoSql>, body: &[u8]) -> worker::Result<Response> {
        let Some(w) = WatchRequest::decode(body) else { return Response::error("not a watch request", 400) };
        let answer = match domain.has_after(&w.agent, w.after_id) {
            Ok(true) => WatchAnswer::Woken,
            Ok(false) => match Waiters::register(&self.waiters, &w.agent) {
                Err(_full) => WatchAnswer::Full,
                Ok(waiter) => match select(waiter.woken(), Delay::from(w.timeout)).await {
                    Either::Left(_) => WatchAnswer::Woken,
                    Either::Right(_) => WatchAnswer::Timeout,
                },
            },
            Err(e) => return Response::error(e.to_string(), 500),
        };
        Response::from_bytes(vec![answer.byte()])
    }
}

/// Runs `call` inside `ctx.storage.transactionSync`: its writes commit together, or (an error)
/// none does.
fn transaction(state: &State, domain: Rc<Domain<DoSql>>, call: Call) -> Result<Reply, StoreError> {
    let storage = state.storage();
    let raw: &JsValue = storage.as_raw().as_ref();
    let run = js_sys::Reflect::get(raw, &JsValue::from_str("transactionSync"))
        .ok()
        .and_then(|f| f.dyn_into::<js_sys::Function>().ok())
        .ok_or_else(|| StoreError::new("ctx.storage.transactionSync is missing"))?;
    let out: Rc<RefCell<Option<Result<Reply, StoreError>>>> = Rc::default();
    let slot = out.clone();
    let body: Closure<dyn FnMut() -> Result<JsValue, JsValue>> = Closure::once(move || {
        let r = domain.call(call);
        let failed = r.as_ref().err().map(|e| JsValue::from_str(&e.to_string()));
        *slot.borrow_mut() = Some(r);
        // A throw makes transactionSync roll the transaction back.
        failed.map_or(Ok(JsValue::UNDEFINED), Err)
    });
    let ran = run.call1(raw, body.as_ref().unchecked_ref());
    let result = out.borrow_mut().take();
    match (result, ran) {
        (Some(r), _) => r,
        (None, Err(e)) => Err(StoreError::new(format!("transaction failed: {e:?}"))),
        (None, Ok(_)) => Err(StoreError::new("transaction did not run")),
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
        let method = match req.method {
            http::Method::Get => "GET",
            http::Method::Post => "POST",
        };
        let body: Option<JsValue> =
            (!req.body.is_empty()).then(|| js_sys::Uint8Array::from(req.body.as_slice()).into());
        let request = request(&req.url, method, Some(&headers), body.as_ref(), RequestRedirect::Manual).map_err(err)?;
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

fn worker(env: &Env) -> Result<Worker<DomainObject, FetchTransport>, String> {
    let cfg = config(env)?;
    let ns = env.durable_object(BINDING).map_err(|e| format!("Durable Object binding {BINDING}: {e}"))?;
    let stub = ns.id_from_name(cfg.domain()).and_then(|id| id.get_stub()).map_err(|e| format!("{BINDING}: {e}"))?;
    Ok(Worker::new(cfg, DomainObject(Rc::new(stub)), FetchTransport, clock(), isolate()))
}

/// Flushes the isolate's counters after [`FLUSH_DELAY`], once for all the requests in that time.
fn schedule_flush(ctx: &Context, worker: Rc<Worker<DomainObject, FetchTransport>>) {
    if worker.isolate().flush_scheduled.replace(true) {
        return;
    }
    ctx.wait_until(async move {
        Delay::from(FLUSH_DELAY).await;
        worker.isolate().flush_scheduled.set(false);
        if let Err(e) = worker.flush_counters().await {
            console_error!("atp-worker: counters not flushed: {e}");
        }
    });
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
    response_with(h, Response::from_bytes)
}

/// The response of `h` with the body `body` makes from the answer's bytes.
fn response_with(h: Handled, body: impl FnOnce(Vec<u8>) -> worker::Result<Response>) -> worker::Result<Response> {
    let headers = Headers::new();
    if let Some(ct) = &h.response.content_type {
        headers.set("content-type", ct)?;
    }
    for (n, v) in h.headers.iter().filter(|(n, _)| n != "connection") {
        headers.set(n, v)?;
    }
    Ok(body(h.response.body)?.with_status(h.response.status).with_headers(headers))
}

/// Resolves when the client has gone away (`request.signal` aborts). The handler is taken off
/// the signal when this is dropped.
struct ClientGone {
    signal: web_sys::AbortSignal,
    wait: Fired,
    _on_abort: Closure<dyn FnMut()>,
}

impl ClientGone {
    fn new(signal: web_sys::AbortSignal) -> Self {
        let fired = Rc::new(Signal::default());
        let f = fired.clone();
        let on_abort = Closure::<dyn FnMut()>::new(move || f.fire());
        signal.set_onabort(Some(on_abort.as_ref().unchecked_ref()));
        if signal.aborted() {
            fired.fire();
        }
        let wait = fired.fired();
        ClientGone { signal, wait, _on_abort: on_abort }
    }
}

impl Future for ClientGone {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        Pin::new(&mut self.wait).poll(cx)
    }
}

impl Drop for ClientGone {
    fn drop(&mut self) {
        self.signal.set_onabort(None);
    }
}

/// An accepted stream's response: the core's [`atp_wasm::relay::stream::InboxStream`] written
/// into a `TransformStream` whose readable side is the body, each chunk as it is made (a write
/// waits until the runtime took the previous one). It ends when the client goes away: once a
/// write to the client failed, workerd aborts `request.signal` (and errors the body). (A
/// `TransformStream` rather
/// than workers-rs' `Response::from_stream`, which links wasm-streams: docs/design.md §4, the
/// wasm's size.)
fn stream_response(
    mut h: Handled,
    worker: Rc<Worker<DomainObject, FetchTransport>>,
    mut gone: ClientGone,
) -> worker::Result<Response> {
    let Some(open) = h.stream.take() else { return response(h) };
    let pipe = web_sys::TransformStream::new().map_err(worker::Error::from)?;
    let writer = pipe.writable().get_writer().map_err(worker::Error::from)?;
    let mut events = worker.inbox_stream(open);
    wasm_bindgen_futures::spawn_local(async move {
        while let Either::Left((Some(chunk), _)) = select(pin!(events.next(&worker.store)), &mut gone).await {
            let bytes = js_sys::Uint8Array::from(chunk.as_bytes());
            if JsFuture::from(writer.write_with_chunk(&bytes)).await.is_err() {
                break;
            }
        }
        // Gives the agent's stream place and its waiter back before the body closes.
        drop(events);
        let _ = JsFuture::from(writer.close()).await;
    });
    response_with(h, |_| Ok(Response::builder().stream(pipe.readable())))
}

#[event(start)]
fn start() {
    std::panic::set_hook(Box::new(|info| console_error!("atp-worker panic: {info}")));
}

#[event(fetch)]
async fn fetch(req: Request, env: Env, ctx: Context) -> worker::Result<Response> {
    let gone = (req.method() == worker::Method::Get).then(|| ClientGone::new(req.inner().signal()));
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
            schedule_flush(&ctx, worker.clone());
            return response(Handled::rejection(&r));
        }
    };
    let (handled, gone) = match gone {
        // A long poll: dropped when the client goes away (its place given back).
        Some(mut gone) => match select(pin!(worker.handle(&api)), &mut gone).await {
            Either::Left((h, _)) => (h, Some(gone)),
            Either::Right(_) => {
                schedule_flush(&ctx, worker.clone());
                // Nobody reads this answer.
                return Ok(Response::empty()?.with_status(499));
            }
        },
        None => (worker.handle(&api).await, None),
    };
    schedule_flush(&ctx, worker.clone());
    if let Some(queued) = handled.queued.clone() {
        let w = worker.clone();
        ctx.wait_until(async move {
            match w.deliver_now(&queued).await {
                Ok(p) => console_log!("delivery of {}: {p:?}", queued.nonce),
                Err(e) => console_error!("delivery of {}: {e}", queued.nonce),
            }
        });
    }
    match gone {
        Some(gone) if handled.stream.is_some() => stream_response(handled, worker, gone),
        _ => response(handled),
    }
}

#[event(scheduled)]
async fn scheduled(_event: ScheduledEvent, env: Env, _ctx: ScheduleContext) {
    match worker(&env) {
        Ok(w) => {
            match w.sweep().await {
                Ok(report) => console_log!("sweep: {report:?}"),
                Err(e) => console_error!("sweep failed: {e}"),
            }
            if let Err(e) = w.flush_counters().await {
                console_error!("atp-worker: counters not flushed: {e}");
            }
        }
        Err(e) => console_error!("atp-worker is misconfigured: {e}"),
    }
}
