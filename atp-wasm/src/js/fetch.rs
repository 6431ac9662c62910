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
    let mut text = one(e).unwrap_or_else(|| format!("{e:?}"));
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

impl HttpTransport for FetchIo {
    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        let fetch = self.fetch()?;
        let init = Object::new();
        set(&init, "method", &JsValue::from_str(request.method.as_str()));
        let headers = Object::new();
        for (name, value) in &request.headers {
            set(&headers, name, &JsValue::from_str(value));
        }
        set(&init, "headers", &headers);
        if !request.body.is_empty() {
            set(&init, "body", &Uint8Array::from(request.body.as_slice()));
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
        let buffer = call_method(&resp, "arrayBuffer", &[]).await.map_err(fail)?;
        Ok(HttpResponse { status, content_type, body: Uint8Array::new(&buffer).to_vec() })
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
