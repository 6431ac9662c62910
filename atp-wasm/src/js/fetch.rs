//! The one piece of I/O of the npm package: HTTP through `fetch` (the global one, found at call
//! time on `globalThis` — Node ≥ 18, browsers, Deno, Workers — or a function the caller passes),
//! plus `Date.now()` and `setTimeout`. Everything else is the core's sans-IO code.

use js_sys::{Function, Object, Promise, Reflect, Uint8Array};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

use crate::env::Clock;
use crate::http::{HttpError, HttpRequest, HttpResponse, HttpTransport, Sleep};

/// `fetch`, `Date.now()` and `setTimeout` as the core's [`HttpTransport`], [`Clock`] and [`Sleep`].
#[derive(Debug, Clone, Default)]
pub struct FetchIo {
    custom: Option<Function>,
}

impl FetchIo {
    /// Uses `fetch` when given, else the global `fetch`.
    pub fn new(fetch: Option<Function>) -> Self {
        FetchIo { custom: fetch }
    }

    fn fetch(&self) -> Result<Function, HttpError> {
        if let Some(f) = &self.custom {
            return Ok(f.clone());
        }
        global_function("fetch")
            .ok_or_else(|| HttpError("no global fetch(): pass a `fetch` function in the options".into()))
    }
}

/// A function on `globalThis`.
pub(crate) fn global_function(name: &str) -> Option<Function> {
    Reflect::get(&js_sys::global(), &JsValue::from_str(name)).ok()?.dyn_into::<Function>().ok()
}

/// The text of a thrown value: an Error's message, followed by its `cause`'s (Node's fetch
/// reports `fetch failed` with the real reason, e.g. `connect ECONNREFUSED`, in `cause`).
pub(crate) fn error_text(e: &JsValue) -> String {
    fn one(e: &JsValue) -> Option<String> {
        if let Some(err) = e.dyn_ref::<js_sys::Error>() {
            return Some(String::from(err.message()));
        }
        e.as_string()
    }
    let mut text = one(e)
        .or_else(|| js_sys::JSON::stringify(e).ok().and_then(|s| s.as_string()))
        .unwrap_or_else(|| "unknown error".into());
    if let Ok(cause) = Reflect::get(e, &JsValue::from_str("cause")) {
        if let Some(c) = one(&cause).filter(|c| !c.is_empty()) {
            text = format!("{text}: {c}");
        }
    }
    text
}

fn set(obj: &Object, key: &str, value: &JsValue) {
    let _ = Reflect::set(obj, &JsValue::from_str(key), value);
}

/// Calls `this[name](...args)` and awaits the result if it is a promise.
async fn call_method(this: &JsValue, name: &str, args: &[JsValue]) -> Result<JsValue, JsValue> {
    let f: Function = Reflect::get(this, &JsValue::from_str(name))?.dyn_into()?;
    let ret = match args {
        [] => f.call0(this)?,
        [a] => f.call1(this, a)?,
        _ => return Err(JsValue::from_str("call_method: too many arguments")),
    };
    JsFuture::from(Promise::resolve(&ret)).await
}

/// A response whose body is still to be read (`Response.body`, a `ReadableStream`).
pub struct Opened {
    pub status: u16,
    pub content_type: Option<String>,
    /// The `Response` object.
    pub response: JsValue,
}

impl Opened {
    /// Reads the whole body (for an error answer).
    pub async fn into_response(self) -> Result<HttpResponse, HttpError> {
        let buffer = call_method(&self.response, "arrayBuffer", &[]).await.map_err(|e| HttpError(error_text(&e)))?;
        Ok(HttpResponse {
            status: self.status,
            content_type: self.content_type,
            body: Uint8Array::new(&buffer).to_vec(),
        })
    }

    /// A reader of the body (`response.body.getReader()`).
    pub async fn reader(&self) -> Result<JsValue, HttpError> {
        let body = Reflect::get(&self.response, &JsValue::from_str("body")).map_err(|e| HttpError(error_text(&e)))?;
        if !body.is_object() {
            return Err(HttpError("this fetch gives no streaming body (Response.body)".into()));
        }
        call_method(&body, "getReader", &[]).await.map_err(|e| HttpError(error_text(&e)))
    }
}

/// The next chunk of a body reader; `None` at its end.
pub async fn read_chunk(reader: &JsValue) -> Result<Option<Vec<u8>>, HttpError> {
    let r = call_method(reader, "read", &[]).await.map_err(|e| HttpError(error_text(&e)))?;
    if Reflect::get(&r, &JsValue::from_str("done")).ok().and_then(|d| d.as_bool()).unwrap_or(true) {
        return Ok(None);
    }
    let value = Reflect::get(&r, &JsValue::from_str("value")).map_err(|e| HttpError(error_text(&e)))?;
    Ok(Some(Uint8Array::new(&value).to_vec()))
}

/// Cancels a body reader (the connection is closed).
pub async fn cancel(reader: &JsValue) {
    let _ = call_method(reader, "cancel", &[]).await;
}

impl FetchIo {
    /// Sends `request`; resolves once the response's head arrived (its body unread).
    pub async fn open(&self, request: HttpRequest) -> Result<Opened, HttpError> {
        let fetch = self.fetch()?;
        let init = Object::new();
        set(&init, "method", &JsValue::from_str(request.method.as_str()));
        let headers = Object::new();
        for (name, value) in &request.headers {
            set(&headers, name, &JsValue::from_str(value));
        }
        set(&init, "headers", &headers);
        if !request.body.is_empty() {
            // An ArrayBuffer of exactly the body (every fetch accepts one; TypeScript's BodyInit too).
            set(&init, "body", &Uint8Array::from(request.body.as_slice()).buffer());
        }
        let fail = |e: JsValue| HttpError(error_text(&e));
        let pending = fetch.call2(&JsValue::UNDEFINED, &JsValue::from_str(&request.url), &init).map_err(fail)?;
        let resp = JsFuture::from(Promise::resolve(&pending)).await.map_err(fail)?;
        let status = Reflect::get(&resp, &JsValue::from_str("status")).map_err(fail)?.as_f64().unwrap_or(0.0) as u16;
        let content_type = match Reflect::get(&resp, &JsValue::from_str("headers")) {
            Ok(h) if h.is_object() => {
                call_method(&h, "get", &[JsValue::from_str("content-type")]).await.ok().and_then(|v| v.as_string())
            }
            _ => None,
        };
        Ok(Opened { status, content_type, response: resp })
    }
}

impl HttpTransport for FetchIo {
    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        self.open(request).await?.into_response().await
    }
}

impl Clock for FetchIo {
    fn now(&self) -> i64 {
        (js_sys::Date::now() / 1000.0) as i64
    }
}

impl Sleep for FetchIo {
    async fn sleep(&self, millis: u32) {
        let Some(set_timeout) = global_function("setTimeout") else {
            return;
        };
        let promise = Promise::new(&mut |resolve, _reject| {
            let _ = set_timeout.call2(&JsValue::UNDEFINED, &resolve, &JsValue::from(millis));
        });
        let _ = JsFuture::from(promise).await;
    }
}
