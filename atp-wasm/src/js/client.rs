//! `AtpClient`: the core's agent client ([`crate::client::Client`]) with `fetch` as its transport.
//! This file only converts between JavaScript values and the core's types; every rule (server
//! address forms, short-name completion, the recv cursor, error mapping) lives in the core.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;

use js_sys::{Array, Object, Promise, Reflect};
use serde_json::Value;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;

use super::fetch::{self, FetchIo};
use super::{atp_error, field, from_json, invalid, opt_function, opt_number, opt_string};
use crate::client::{Client, ClientError, ErrorKind, RecvOptions, SendOptions, DEFAULT_WAIT_MS};
use crate::http::Sleep;
use crate::relay::store::Ack;
use crate::sse::Subscription;

#[wasm_bindgen(typescript_custom_section)]
const TS_CLIENT: &'static str = r#"
/** The subset of `fetch` the package uses (Node ≥ 18, browsers, Deno and Workers all have it). */
export type FetchLike = (
  url: string,
  init: { method: string; headers: Record<string, string>; body?: ArrayBuffer },
) => Promise<{ status: number; headers?: { get(name: string): string | null }; arrayBuffer(): Promise<ArrayBuffer> }>;
/** Options of `new AtpClient(…)`. */
export interface AtpClientOptions {
  /**
   * The agent: `name@domain`, or a short `name` that is completed with the server's domain (read once
   * from `GET /.well-known/atp/v1/health`). It must be an agent of that server's domain. Needed by
   * `register`, `send` and `recv`.
   */
  agentId?: string;
  /** The agent's password (HTTP Basic credential). Needed by `register`, `send` and `recv`. */
  password?: string;
  /**
   * The agent's own server, as the CLI's `--server`: `example.com` (→ `https://example.com:7443`),
   * `host:port`, `https://host[:port]`, `http://host[:port]`, IPv6 in brackets (`[::1]:7443`); no
   * path. The default port is 7443.
   */
  server: string;
  /**
   * Verify the server's TLS certificate (default `true`). `fetch` offers no switch for this: in a
   * browser it cannot be turned off at all; in Node start the process with
   * `NODE_TLS_REJECT_UNAUTHORIZED=0`, or pass a `fetch` that skips verification (for instance undici's
   * `fetch` with an `Agent({ connect: { rejectUnauthorized: false } })` dispatcher). With
   * `verifyTls: false`, network errors carry this hint.
   */
  verifyTls?: boolean;
  /** A `fetch` to use instead of the global one (tests, proxies, custom TLS settings). */
  fetch?: FetchLike;
}
/** What `send` carries besides the recipient. */
export interface SendOptions {
  /** The text; sent as `payload.body`. */
  body?: string;
  /** Sent as `payload.subject`. */
  subject?: string;
  /** Any JSON value, sent as the payload as it is (instead of `body`/`subject`). */
  payload?: unknown;
  /** Copy addresses (metadata only: they are not delivered to); short names are completed. */
  cc?: string[];
}
/** The signature a sending server attaches to a transfer. */
export interface SignatureEnvelope {
  /** `<selector>.atk._atp.<domain>`, also the DNS name of the signing key's ATK record. */
  key_id: string;
  algorithm: string;
  /** Standard base64 of the 64-byte Ed25519 signature. */
  signature: string;
  headers: string[];
  timestamp: number;
}
/** An ATP message. */
export interface AtpMessage {
  from: string;
  to: string;
  /** Unix seconds, set by the sending agent. */
  timestamp: number;
  nonce: string;
  type: string;
  payload: unknown;
  /** Present on mail that came from another domain's server. */
  signature?: SignatureEnvelope;
  cc?: string[];
  routing?: unknown;
}
/** The server accepted a message. */
export interface SendResult {
  /** `accepted`. */
  status: string;
  nonce: string;
  /** The message's timestamp (Unix seconds). */
  timestamp: number;
  /** The message as submitted (ids completed and lowercased). */
  message: AtpMessage;
}
/** How to fetch mail. */
export interface RecvOptions {
  /** At most this many messages (server default 50). */
  limit?: number;
  /**
   * Wait for mail: `true` for up to 30 s, or a number of seconds. The server is asked again every
   * `pollInterval` ms until something arrives; then the result may still be empty.
   */
  wait?: boolean | number;
  /** Milliseconds between polls while waiting (default 2000). */
  pollInterval?: number;
  /** Start after this inbox row id instead of the client's cursor (the cursor moves there). */
  after?: number;
}
/** Which messages `ack` removes: every one up to an inbox id, or these ids. */
export type AckOptions = { upTo: number } | { ids: number[] };
/** Where `subscribe` starts. */
export interface SubscribeOptions {
  /** After this inbox id (default: the client's cursor). */
  after?: number;
  /** Yield each message's JSON text exactly as stored instead of an object (big integers intact;
   *  the values are then strings: cast them, `as unknown as string`). */
  raw?: boolean;
}
/**
 * The agent's inbox as it arrives: the messages after the cursor, then each new one as soon as the
 * server stored it (`GET messages/stream`, server-sent events). A dropped connection is resumed by
 * itself after the last message handed out, so each message comes exactly once. `for await` it;
 * `break` (or `return()`) closes the connection. `lastId` is the inbox id of the last message.
 */
export interface AtpSubscription extends AsyncIterableIterator<AtpMessage> {
  readonly lastId: number;
  return(): Promise<IteratorResult<AtpMessage>>;
}
/** `GET health`. */
export interface Health {
  status: string;
  domain: string;
  version: string;
}
/** `GET capabilities`. */
export interface Capabilities {
  version: string;
  capabilities: string[];
  protocols: string[];
  max_payload_size: number;
}
/** `POST register`. */
export interface Registration {
  status: string;
  /** The full id. */
  agent_id: string;
}
/** What went wrong, beyond the HTTP status: the server answered with an error (`http`), no answer
 * (`network`), a wrong call (`invalid`), an answer that breaks the protocol (`protocol`), a failed DNS
 * lookup (`dns`), a signature that does not verify (`verify`). */
export type AtpErrorKind = "http" | "network" | "invalid" | "protocol" | "dns" | "verify";
"#;

/// An ATP agent's client of its own server. Every method returns a promise; failures reject with
/// an `AtpError` (`kind`, `status`, `code` = the server's `error_code`, `message`).
///
/// ```js
/// const client = new AtpClient({ agentId: "alice", password: "pw", server: "example.com" });
/// await client.register();
/// await client.send("bob", { subject: "hi", body: "Hello Bob" });
/// for (const m of await client.recv({ wait: 10 })) console.log(m.from, m.payload);
/// ```
#[wasm_bindgen]
pub struct AtpClient {
    inner: Rc<Client<FetchIo>>,
    verify_tls: bool,
}

/// A core client error as a JavaScript `AtpError`.
fn client_error(e: &ClientError, verify_tls: bool) -> JsValue {
    let mut message = e.message.clone();
    if e.kind == ErrorKind::Network && !verify_tls {
        message.push_str(
            " (verifyTls: false cannot switch off certificate checks of fetch: in Node set \
             NODE_TLS_REJECT_UNAUTHORIZED=0 or pass a `fetch` option; browsers always verify)",
        );
    }
    atp_error(e.kind.as_str(), e.status, e.code.as_deref(), &message, e.body.as_deref())
}

fn json_value(v: &Value) -> Result<JsValue, JsValue> {
    from_json(&v.to_string())
}

#[wasm_bindgen]
impl AtpClient {
    /// A client for `options.server` (see `AtpClientOptions`). Throws an `AtpError` of kind
    /// `invalid` for a malformed server address or agent id; nothing is sent yet.
    #[wasm_bindgen(constructor)]
    pub fn new(
        #[wasm_bindgen(unchecked_param_type = "AtpClientOptions")] options: JsValue,
    ) -> Result<AtpClient, JsValue> {
        if !options.is_object() {
            return Err(invalid("new AtpClient(options): options must be an object with at least `server`"));
        }
        let server = opt_string(&options, "server")?.ok_or_else(|| invalid("option 'server' is required"))?;
        let agent = opt_string(&options, "agentId")?;
        let password = opt_string(&options, "password")?;
        let verify = field(&options, "verifyTls");
        let verify_tls = verify.as_bool().unwrap_or(true);
        if !(verify.is_undefined() || verify.is_null() || verify.as_bool().is_some()) {
            return Err(invalid("option 'verifyTls' must be a boolean"));
        }
        let io = FetchIo::new(opt_function(&options, "fetch")?);
        let client = Client::new(io, &server, agent.as_deref(), password.as_deref())
            .map_err(|e| client_error(&e, verify_tls))?;
        Ok(AtpClient { inner: Rc::new(client), verify_tls })
    }

    /// The server's API base, e.g. `https://example.com:7443`.
    #[wasm_bindgen(getter)]
    pub fn server(&self) -> String {
        self.inner.server().base()
    }

    /// The agent's full id, once known (a short name needs the server's domain: after `health`,
    /// `register`, `send` or `recv`); `undefined` before.
    #[wasm_bindgen(getter, js_name = agentId)]
    pub fn agent_id(&self) -> Option<String> {
        self.inner.known_agent_id().map(|a| a.to_string())
    }

    /// The server's domain, once known; `undefined` before.
    #[wasm_bindgen(getter)]
    pub fn domain(&self) -> Option<String> {
        self.inner.known_domain()
    }

    /// The inbox row id after which the next `recv` starts (0 = from the beginning). Save it to
    /// resume later; set it to re-read.
    #[wasm_bindgen(getter)]
    pub fn cursor(&self) -> f64 {
        self.inner.cursor() as f64
    }

    #[wasm_bindgen(setter)]
    pub fn set_cursor(&mut self, after: f64) {
        self.inner.set_cursor(if after.is_finite() { after as i64 } else { 0 });
    }

    fn run<F>(&self, f: impl FnOnce(Rc<Client<FetchIo>>) -> F) -> Promise
    where
        F: std::future::Future<Output = Result<JsValue, ClientError>> + 'static,
    {
        let verify_tls = self.verify_tls;
        let fut = f(self.inner.clone());
        future_to_promise(async move { fut.await.map_err(|e| client_error(&e, verify_tls)) })
    }

    /// `GET health` → `{ status, domain, version }`; also teaches the client the server's domain.
    #[wasm_bindgen(unchecked_return_type = "Promise<Health>")]
    pub fn health(&self) -> Promise {
        self.run(|c| async move {
            let v = c.health().await?;
            json_value(&v).map_err(|_| ClientError::protocol(200, "unreadable health answer"))
        })
    }

    /// `GET capabilities` → `{ version, capabilities, protocols, max_payload_size }`.
    #[wasm_bindgen(unchecked_return_type = "Promise<Capabilities>")]
    pub fn capabilities(&self) -> Promise {
        self.run(|c| async move {
            let v = c.capabilities().await?;
            json_value(&v).map_err(|_| ClientError::protocol(200, "unreadable capabilities answer"))
        })
    }

    /// Registers the agent with its password (`POST register`) → `{ status: "registered", agent_id }`.
    /// A taken name rejects with status 409.
    #[wasm_bindgen(unchecked_return_type = "Promise<Registration>")]
    pub fn register(&self) -> Promise {
        self.run(|c| async move {
            let v = c.register().await?;
            json_value(&v).map_err(|_| ClientError::protocol(201, "unreadable registration answer"))
        })
    }

    /// Sends a message to `to` (a full id, or a short name of the server's domain) →
    /// `{ status, nonce, timestamp, message }` once the server accepted it (HTTP 202).
    #[wasm_bindgen(unchecked_return_type = "Promise<SendResult>")]
    pub fn send(
        &self,
        to: &str,
        #[wasm_bindgen(unchecked_optional_param_type = "SendOptions")] options: JsValue,
    ) -> Result<Promise, JsValue> {
        let opts = send_options(&options)?;
        let to = to.to_owned();
        Ok(self.run(|c| async move {
            let r = c.send(&to, &opts).await?;
            let text = format!(
                r#"{{"status":{},"nonce":{},"timestamp":{},"message":{}}}"#,
                Value::String(r.status),
                Value::String(r.nonce),
                r.timestamp,
                r.message.to_json()
            );
            from_json(&text).map_err(|_| ClientError::protocol(202, "unreadable send answer"))
        }))
    }

    /// Fetches new messages (after the client's cursor, which then moves past them), oldest first.
    /// Big integers in payloads lose precision in JavaScript numbers; `recvRaw` keeps the JSON text.
    #[wasm_bindgen(unchecked_return_type = "Promise<AtpMessage[]>")]
    pub fn recv(
        &self,
        #[wasm_bindgen(unchecked_optional_param_type = "RecvOptions")] options: JsValue,
    ) -> Result<Promise, JsValue> {
        let opts = recv_options(&options)?;
        Ok(self.run(|c| async move {
            let texts = c.recv(&opts).await?;
            let out = Array::new();
            for t in &texts {
                out.push(&from_json(t).map_err(|_| ClientError::protocol(200, "unreadable message"))?);
            }
            Ok(out.into())
        }))
    }

    /// Like `recv`, but each message is its JSON text exactly as the server stored it (what
    /// `verifyMessage` should be given when payloads may hold big integers).
    #[wasm_bindgen(js_name = recvRaw, unchecked_return_type = "Promise<string[]>")]
    pub fn recv_raw(
        &self,
        #[wasm_bindgen(unchecked_optional_param_type = "RecvOptions")] options: JsValue,
    ) -> Result<Promise, JsValue> {
        let opts = recv_options(&options)?;
        Ok(self.run(|c| async move {
            let texts = c.recv(&opts).await?;
            Ok(texts.iter().map(|t| JsValue::from_str(t)).collect::<Array>().into())
        }))
    }
}

#[wasm_bindgen]
impl AtpClient {
    /// Removes messages from the agent's inbox on the server (`POST messages/ack`): `{ upTo }` every
    /// message up to that inbox id, `{ ids }` these → the number removed. Ids that are not the
    /// agent's reject with status 404 (the agent's own are removed all the same).
    #[wasm_bindgen(unchecked_return_type = "Promise<number>")]
    pub fn ack(
        &self,
        #[wasm_bindgen(unchecked_param_type = "AckOptions")] options: JsValue,
    ) -> Result<Promise, JsValue> {
        let ids = field(&options, "ids");
        let id = |v: f64| (v.is_finite() && v.fract() == 0.0 && v >= 0.0).then_some(v as i64);
        let ack = match (opt_number(&options, "upTo")?, ids.is_undefined()) {
            (Some(n), true) => Ack::UpTo(id(n).ok_or_else(|| invalid("upTo must be an inbox id"))?),
            (None, false) if Array::is_array(&ids) => Ack::Ids(
                Array::from(&ids)
                    .iter()
                    .map(|v| v.as_f64().and_then(id).ok_or_else(|| invalid("ids must be inbox ids")))
                    .collect::<Result<_, _>>()?,
            ),
            _ => return Err(invalid("ack takes { upTo: id } or { ids: [id, …] }")),
        };
        Ok(self.run(|c| async move { Ok(JsValue::from(c.ack(&ack).await? as f64)) }))
    }

    /// The agent's inbox as an async iterator of messages: the backlog after the cursor, then live
    /// (`GET messages/stream`); it reconnects by itself with `Last-Event-ID`. See
    /// `AtpSubscription`. The client's cursor follows the messages handed out.
    #[wasm_bindgen(unchecked_return_type = "AtpSubscription")]
    pub fn subscribe(
        &self,
        #[wasm_bindgen(unchecked_optional_param_type = "SubscribeOptions")] options: JsValue,
    ) -> Result<JsValue, JsValue> {
        let after = match opt_number(&options, "after")? {
            Some(n) if n.is_finite() && n >= 0.0 && n.fract() == 0.0 => n as i64,
            Some(_) => return Err(invalid("option 'after' must be an inbox id")),
            None => self.inner.cursor(),
        };
        let state = Rc::new(Subscribed {
            client: self.inner.clone(),
            sub: RefCell::new(Subscription::new(after)),
            reader: RefCell::default(),
            queue: RefCell::default(),
            closed: Cell::new(false),
            handed: Cell::new(after),
            verify_tls: self.verify_tls,
            raw: field(&options, "raw").as_bool().unwrap_or(false),
        });
        let obj = JsValue::from(AtpSubscription { state });
        // `for await` asks for [Symbol.asyncIterator](): the subscription is its own iterator.
        let me = obj.clone();
        let iter = Closure::<dyn Fn() -> JsValue>::new(move || me.clone()).into_js_value();
        Reflect::set(&obj, &js_sys::Symbol::async_iterator(), &iter)?;
        Ok(obj)
    }
}

/// A live subscription to the agent's inbox (see `AtpClient.subscribe`).
#[wasm_bindgen]
pub struct AtpSubscription {
    state: Rc<Subscribed>,
}

struct Subscribed {
    client: Rc<Client<FetchIo>>,
    sub: RefCell<Subscription>,
    /// The body reader of the open connection.
    reader: RefCell<Option<JsValue>>,
    /// Messages parsed and not yet handed out.
    queue: RefCell<VecDeque<(i64, String)>>,
    closed: Cell<bool>,
    /// The inbox id of the last message handed out.
    handed: Cell<i64>,
    verify_tls: bool,
    raw: bool,
}

fn iter_result(value: &JsValue, done: bool) -> JsValue {
    let o = Object::new();
    let _ = Reflect::set(&o, &JsValue::from_str("value"), value);
    let _ = Reflect::set(&o, &JsValue::from_str("done"), &JsValue::from_bool(done));
    o.into()
}

impl Subscribed {
    /// The next message; connects (and reconnects after a drop, waiting the server's `retry:`)
    /// as needed. A refusal of the stream (401, 501 …) rejects.
    async fn next(&self) -> Result<JsValue, JsValue> {
        let fail = |e: &ClientError| client_error(e, self.verify_tls);
        loop {
            if self.closed.get() {
                return Ok(iter_result(&JsValue::UNDEFINED, true));
            }
            let queued = self.queue.borrow_mut().pop_front();
            if let Some((id, text)) = queued {
                self.handed.set(id);
                if id > self.client.cursor() {
                    self.client.set_cursor(id);
                }
                let value = if self.raw {
                    JsValue::from_str(&text)
                } else {
                    from_json(&text).map_err(|_| fail(&ClientError::protocol(200, "unreadable message")))?
                };
                return Ok(iter_result(&value, false));
            }
            let reader = self.reader.borrow().clone();
            let Some(reader) = reader else {
                let after = self.sub.borrow().last_id();
                let req = self.client.stream_request(after).await.map_err(|e| fail(&e))?;
                let opened = match self.client.io().open(req).await {
                    Ok(o) => o,
                    Err(_) => {
                        self.pause().await;
                        continue;
                    }
                };
                if opened.status != 200 {
                    let resp = opened.into_response().await.map_err(|e| fail(&ClientError::network(e)))?;
                    return Err(fail(&ClientError::from_response(&resp)));
                }
                let r = opened.reader().await.map_err(|e| fail(&ClientError::network(e)))?;
                self.sub.borrow_mut().reconnecting();
                *self.reader.borrow_mut() = Some(r);
                continue;
            };
            match fetch::read_chunk(&reader).await {
                Ok(Some(bytes)) => {
                    let events = self
                        .sub
                        .borrow_mut()
                        .push(&bytes)
                        .map_err(|e| fail(&ClientError::protocol(200, e.to_string())))?;
                    self.queue.borrow_mut().extend(events.into_iter().map(|e| (e.id, e.json)));
                }
                // The stream ended or the connection dropped: resume after the last message.
                Ok(None) | Err(_) => {
                    *self.reader.borrow_mut() = None;
                    self.pause().await;
                }
            }
        }
    }

    /// Waits the server's reconnection delay (2 s unless it said otherwise).
    async fn pause(&self) {
        let ms = self.sub.borrow().retry_ms().unwrap_or(2000).clamp(100, 30_000);
        self.client.io().sleep(ms as u32).await;
    }
}

#[wasm_bindgen]
impl AtpSubscription {
    /// The next message (`{ value, done }`).
    #[wasm_bindgen(unchecked_return_type = "Promise<IteratorResult<AtpMessage>>")]
    pub fn next(&self) -> Promise {
        let state = self.state.clone();
        future_to_promise(async move { state.next().await })
    }

    /// Closes the connection; the iteration ends.
    #[wasm_bindgen(js_name = "return", unchecked_return_type = "Promise<IteratorResult<AtpMessage>>")]
    pub fn close(&self) -> Promise {
        let state = self.state.clone();
        state.closed.set(true);
        future_to_promise(async move {
            let reader = state.reader.borrow_mut().take();
            if let Some(r) = reader {
                fetch::cancel(&r).await;
            }
            Ok(iter_result(&JsValue::UNDEFINED, true))
        })
    }

    /// The inbox id of the last message handed out (or the starting point).
    #[wasm_bindgen(getter, js_name = lastId)]
    pub fn last_id(&self) -> f64 {
        self.state.handed.get() as f64
    }
}

fn send_options(o: &JsValue) -> Result<SendOptions, JsValue> {
    let payload = field(o, "payload");
    let payload = if payload.is_undefined() {
        None
    } else {
        let text = js_sys::JSON::stringify(&payload)
            .ok()
            .and_then(|s| s.as_string())
            .ok_or_else(|| invalid("payload must be JSON-serialisable"))?;
        Some(crate::canonical::parse_json(&text).map_err(|e| invalid(&format!("payload: {e}")))?)
    };
    let cc_value = field(o, "cc");
    let cc = if cc_value.is_undefined() || cc_value.is_null() {
        Vec::new()
    } else if Array::is_array(&cc_value) {
        Array::from(&cc_value)
            .iter()
            .map(|v| v.as_string().ok_or_else(|| invalid("cc must be a list of agent ids")))
            .collect::<Result<_, _>>()?
    } else {
        return Err(invalid("cc must be a list of agent ids"));
    };
    Ok(SendOptions { body: opt_string(o, "body")?, subject: opt_string(o, "subject")?, payload, cc })
}

fn recv_options(o: &JsValue) -> Result<RecvOptions, JsValue> {
    let whole = |key: &str, max: f64| -> Result<Option<f64>, JsValue> {
        match opt_number(o, key)? {
            Some(n) if n < 0.0 || n > max || n.fract() != 0.0 => {
                Err(invalid(&format!("option '{key}' must be a whole number from 0 to {max}")))
            }
            n => Ok(n),
        }
    };
    let wait = field(o, "wait");
    let wait_ms = match wait.as_bool() {
        Some(true) => Some(DEFAULT_WAIT_MS),
        Some(false) => None,
        None if wait.is_undefined() || wait.is_null() => None,
        None => match wait.as_f64() {
            Some(s) if s.is_finite() && (0.0..=86_400.0).contains(&s) => Some((s * 1000.0) as u32),
            _ => return Err(invalid("option 'wait' must be a boolean or a number of seconds (at most 86400)")),
        },
    };
    Ok(RecvOptions {
        limit: whole("limit", u32::MAX as f64)?.map(|n| n as u32),
        after: whole("after", 9_007_199_254_740_991.0)?.map(|n| n as i64),
        wait_ms,
        poll_ms: whole("pollInterval", 3_600_000.0)?.map(|n| (n as u32).max(1)),
    })
}
