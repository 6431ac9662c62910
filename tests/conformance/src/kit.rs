//! The kit's machinery: what a run is told ([`Config`]), what each case sees ([`Ctx`]), a case and
//! its outcome, and the checks the cases share.

use std::future::Future;
use std::pin::Pin;
use std::time::{SystemTime, UNIX_EPOCH};

use atp_wasm::message::{new_nonce, Message};
use atp_wasm::sign::sign_message;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Value};

use crate::foreign::{Foreign, Sender};
use crate::http::{Http, NoReply, Reply};

/// Which implementation is under test; decides the built-in expected failures and defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// atp-native (or any server that should pass everything).
    Atp,
    /// The Python reference (`agent-transfer-protocol` 1.0.0a8): its known bugs are expected
    /// failures (docs/protocol.md §12) and it has no `error_code` on most errors.
    Reference,
    /// atp-worker in workerd: TLS is terminated by the platform (Miniflare, Cloudflare's edge),
    /// so the `tls.*` cases are not applicable.
    Worker,
}

/// An agent of the server under test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agent {
    pub id: String,
    pub password: String,
}

/// Everything a run is told.
#[derive(Debug, Clone)]
pub struct Config {
    /// `https://host:port` of the server under test.
    pub url: String,
    /// Its domain.
    pub domain: String,
    /// Two agents to use; registered by the kit when absent.
    pub agents: Option<(Agent, Agent)>,
    /// The admin bearer token; the admin cases are not applicable without it.
    pub admin_token: Option<String>,
    pub foreign: Foreign,
    pub target: Target,
    /// Run the `tls.*` cases (not applicable over plain HTTP or with `--no-tls-checks`).
    pub tls_checks: bool,
    /// Require the stable `error_code` field on errors (atp's; the reference has none).
    pub error_codes: bool,
    /// Only cases whose name contains one of these.
    pub only: Vec<String>,
}

impl Config {
    pub fn new(url: &str, domain: &str) -> Self {
        Config {
            url: url.into(),
            domain: domain.to_ascii_lowercase(),
            agents: None,
            admin_token: None,
            foreign: Foreign::default(),
            target: Target::Atp,
            tls_checks: true,
            error_codes: true,
            only: Vec::new(),
        }
    }
}

/// How a case ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Fail,
    /// The case does not apply to this target (said why in `got`); never silently skipped.
    NotApplicable,
}

/// A case's verdict and what was observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub verdict: Verdict,
    pub got: String,
}

impl Outcome {
    pub fn pass(got: impl Into<String>) -> Self {
        Outcome { verdict: Verdict::Pass, got: got.into() }
    }
    pub fn fail(got: impl Into<String>) -> Self {
        Outcome { verdict: Verdict::Fail, got: got.into() }
    }
    pub fn na(why: impl Into<String>) -> Self {
        Outcome { verdict: Verdict::NotApplicable, got: format!("n/a: {}", why.into()) }
    }
    pub fn passed(&self) -> bool {
        self.verdict == Verdict::Pass
    }
    /// Runs `next` only when this outcome passed; prefixes its observation with ours.
    pub async fn and<F: Future<Output = Outcome>>(self, next: impl FnOnce() -> F) -> Outcome {
        if !self.passed() {
            return self;
        }
        let n = next().await;
        Outcome { verdict: n.verdict, got: format!("{}; {}", self.got, n.got) }
    }
}

impl From<Result<String, String>> for Outcome {
    fn from(r: Result<String, String>) -> Self {
        match r {
            Ok(g) => Outcome::pass(g),
            Err(g) => Outcome::fail(g),
        }
    }
}

/// A case's body.
pub type CaseFn = for<'a> fn(&'a Ctx) -> Pin<Box<dyn Future<Output = Outcome> + 'a>>;

/// One named check.
#[derive(Clone, Copy)]
pub struct Case {
    /// `group.name`, e.g. `transfer.tampered_payload`.
    pub name: &'static str,
    /// The docs/protocol.md / docs/design.md section it checks.
    pub section: &'static str,
    /// The correct outcome, as shown in the table.
    pub expect: &'static str,
    pub run: CaseFn,
}

/// Declares a case from an `async fn(&Ctx) -> Outcome`.
#[macro_export]
macro_rules! case {
    ($name:literal, $section:literal, $expect:literal, $f:path) => {
        $crate::kit::Case { name: $name, section: $section, expect: $expect, run: |cx| Box::pin($f(cx)) }
    };
}

/// Unix seconds now.
pub fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// What every case sees.
pub struct Ctx {
    pub cfg: Config,
    pub http: Http,
    /// The sender of local submissions.
    pub a: Agent,
    /// The recipient of the kit's transfers.
    pub b: Agent,
    /// A short random tag of this run (names of agents the kit registers).
    pub run_id: String,
}

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Http(#[from] NoReply),
    #[error("the server is not healthy at {url}: {got}")]
    Unhealthy { url: String, got: String },
    #[error("could not register the kit's agent {name}: {got}")]
    Register { name: String, got: String },
}

impl Ctx {
    /// Checks that the server answers, then registers the two agents unless they were given.
    pub async fn setup(cfg: Config) -> Result<Ctx, SetupError> {
        let http = Http::new(&cfg.url)?;
        let health = Http::send(http.get("health")).await?;
        if health.status != 200 {
            return Err(SetupError::Unhealthy { url: http.url("health"), got: health.describe() });
        }
        let mut tag = [0u8; 4];
        let _ = getrandom::getrandom(&mut tag);
        let run_id: String = tag.iter().map(|b| format!("{b:02x}")).collect();
        let (a, b) = match cfg.agents.clone() {
            Some(pair) => pair,
            None => {
                let mut made = Vec::new();
                for who in ["a", "b"] {
                    let name = format!("conf-{run_id}-{who}");
                    let password = format!("pw-{run_id}-{who}");
                    let r = Http::send(http.post("register").json(&json!({"agent_id": name, "password": password})))
                        .await?;
                    let id = r.get("agent_id").and_then(Value::as_str).map(str::to_owned);
                    match (r.status, id) {
                        (201, Some(id)) => made.push(Agent { id, password }),
                        _ => return Err(SetupError::Register { name, got: format!("{} {}", r.status, r.text) }),
                    }
                }
                let b = made.pop().expect("two agents");
                (made.pop().expect("two agents"), b)
            }
        };
        Ok(Ctx { cfg, http, a, b, run_id })
    }

    pub fn domain(&self) -> &str {
        &self.cfg.domain
    }

    pub fn foreign(&self, s: Sender) -> String {
        self.cfg.foreign.domain(s)
    }

    /// `zed@<domain of s>`.
    pub fn foreign_agent(&self, s: Sender) -> String {
        format!("zed@{}", self.foreign(s))
    }

    /// A fresh unsigned message `from` → `to` with timestamp now.
    pub fn message(&self, from: &str, to: &str) -> Value {
        json!({"from": from, "to": to, "timestamp": now(), "nonce": new_nonce(), "type": "message",
               "payload": {"subject": "conformance", "body": "hello from the kit"}})
    }

    /// A fresh message from the main foreign sender to agent B.
    pub fn transfer_msg(&self) -> Value {
        self.message(&self.foreign_agent(Sender::Main), &self.b.id)
    }

    /// Signs `v` as the server of `s`'s domain does (docs/protocol.md §4), with `s`'s key.
    pub fn sign(&self, v: Value, s: Sender) -> String {
        self.sign_with(v, s, s, |_| {})
    }

    /// Signs `v` with `key_of`'s key as the server of `domain_of`'s domain, then lets `f` change
    /// the signed message.
    pub fn sign_with(&self, v: Value, key_of: Sender, domain_of: Sender, f: impl FnOnce(&mut Message)) -> String {
        let mut m = Message::from_value(v).expect("the kit builds valid messages");
        let key = self.cfg.foreign.key(key_of);
        sign_message(&mut m, &key, "default", &self.foreign(domain_of), now()).expect("canonical form");
        f(&mut m);
        m.to_json()
    }

    /// Signs exactly the bytes `canonical` with `s`'s key and attaches a well-formed envelope to
    /// `v` (for messages signed some other way than the canonical form of §3).
    pub fn sign_bytes(&self, mut v: Value, canonical: &str, s: Sender) -> String {
        let sig = self.cfg.foreign.key(s).sign(canonical.as_bytes());
        v["signature"] = json!({"key_id": format!("default.atk._atp.{}", self.foreign(s)), "algorithm": "ed25519",
            "signature": STANDARD.encode(sig), "headers": ["from", "to", "timestamp", "nonce", "type"],
            "timestamp": now()});
        v.to_string()
    }

    /// POSTs a transfer body as another server does: no Authorization.
    pub async fn transfer(&self, body: String) -> Result<Reply, NoReply> {
        self.transfer_with(body, &[]).await
    }

    pub async fn transfer_with(&self, body: String, headers: &[(&str, &str)]) -> Result<Reply, NoReply> {
        // a server may refuse an oversized body unread and drop the connection: use a fresh one
        let post = if body.len() > atp_wasm::MAX_MESSAGE_SIZE {
            self.http.post_oneshot("message")
        } else {
            self.http.post("message")
        };
        let mut req = post.header("content-type", "application/atp+json").body(body);
        for (n, v) in headers {
            req = req.header(*n, *v);
        }
        Http::send(req).await
    }

    /// POSTs a local submission with `who`'s credential.
    pub async fn submit(&self, who: &Agent, body: String) -> Result<Reply, NoReply> {
        let post = if body.len() > atp_wasm::MAX_MESSAGE_SIZE {
            self.http.post_oneshot("message")
        } else {
            self.http.post("message")
        };
        Http::send(
            post.basic_auth(&who.id, Some(&who.password)).header("content-type", "application/atp+json").body(body),
        )
        .await
    }

    /// `who`'s whole inbox (following the `after_id` cursor).
    pub async fn inbox(&self, who: &Agent) -> Result<Vec<Value>, String> {
        let mut all = Vec::new();
        let mut after: Option<i64> = None;
        loop {
            let q = match after {
                Some(a) => format!("messages?limit=500&after_id={a}"),
                None => "messages?limit=500".to_owned(),
            };
            let r = Http::send(self.http.get(&q).basic_auth(&who.id, Some(&who.password)))
                .await
                .map_err(|e| e.to_string())?;
            if r.status != 200 {
                return Err(format!("inbox: {}", r.describe()));
            }
            let msgs = r.get("messages").and_then(Value::as_array).cloned().unwrap_or_default();
            let last = r.get("last_id").and_then(Value::as_i64);
            let n = msgs.len();
            all.extend(msgs);
            match last {
                Some(l) if n > 0 && Some(l) != after => after = Some(l),
                _ => return Ok(all),
            }
        }
    }

    /// The copy of `nonce` in `who`'s inbox; exactly one must be there.
    pub async fn stored_once(&self, who: &Agent, nonce: &str) -> Result<Value, String> {
        let inbox = self.inbox(who).await?;
        let copies: Vec<Value> = inbox.into_iter().filter(|m| m["nonce"] == nonce).collect();
        match copies.len() {
            1 => Ok(copies.into_iter().next().unwrap_or_default()),
            n => Err(format!("{n} copies in the inbox")),
        }
    }

    /// No copy of `nonce` in `who`'s inbox.
    pub async fn not_stored(&self, who: &Agent, nonce: &str) -> Result<String, String> {
        let inbox = self.inbox(who).await?;
        match inbox.iter().filter(|m| m["nonce"] == nonce).count() {
            0 => Ok("not stored".into()),
            n => Err(format!("{n} copies stored")),
        }
    }

    /// The admin token, or the not-applicable outcome.
    pub fn admin(&self) -> Result<&str, Outcome> {
        self.cfg.admin_token.as_deref().ok_or_else(|| Outcome::na("no --admin-token given"))
    }

    // ---- shared checks ----

    /// A refusal: this status, a JSON body with a string `error` and (unless the target has none)
    /// this `error_code` (docs/protocol.md §5.4, §6; atp-wasm `ErrorCode`).
    pub fn refusal(&self, r: Result<Reply, NoReply>, status: u16, code: &str) -> Outcome {
        let r = match r {
            Ok(r) => r,
            Err(e) => return Outcome::fail(e.to_string()),
        };
        let got = r.describe();
        if r.status != status {
            return Outcome::fail(got);
        }
        if !r.content_type.starts_with("application/json") || r.error().is_none() {
            return Outcome::fail(format!("{got} (not a JSON error)"));
        }
        if self.cfg.error_codes && r.error_code() != Some(code) {
            return Outcome::fail(format!("{got} (error_code {:?})", r.error_code()));
        }
        Outcome::pass(got)
    }

    /// 202 `{"status":"accepted","nonce":<nonce>,…}` (docs/protocol.md §6).
    pub fn accepted(&self, r: Result<Reply, NoReply>, nonce: &str) -> Outcome {
        let r = match r {
            Ok(r) => r,
            Err(e) => return Outcome::fail(e.to_string()),
        };
        let got = r.describe();
        if r.status != 202 {
            let why = r.get("error_message").or(r.get("details")).and_then(Value::as_str).unwrap_or("");
            let why: String = why.chars().take(50).collect();
            return Outcome::fail(if why.is_empty() { got } else { format!("{got} {why}") });
        }
        if r.get("status") != Some(&json!("accepted")) || r.get("nonce") != Some(&json!(nonce)) {
            return Outcome::fail(format!("{got} body {}", r.text));
        }
        Outcome::pass(got)
    }

    /// A transfer accepted and stored once in B's inbox; returns the stored copy to `check`.
    pub async fn accepted_and_stored(
        &self,
        r: Result<Reply, NoReply>,
        nonce: &str,
        check: impl FnOnce(&Value) -> Result<String, String>,
    ) -> Outcome {
        self.accepted(r, nonce)
            .and(|| async {
                match self.stored_once(&self.b, nonce).await {
                    Ok(m) => match check(&m) {
                        Ok(s) if s.is_empty() => Outcome::pass("stored once"),
                        Ok(s) => Outcome::pass(format!("stored once, {s}")),
                        Err(s) => Outcome::fail(s),
                    },
                    Err(e) => Outcome::fail(e),
                }
            })
            .await
    }

    /// A refusal after which nothing with `nonce` is in B's inbox.
    pub async fn refused_not_stored(&self, r: Result<Reply, NoReply>, status: u16, code: &str, nonce: &str) -> Outcome {
        self.refusal(r, status, code).and(|| async { self.not_stored(&self.b, nonce).await.into() }).await
    }
}

/// The nonce of a message value.
pub fn nonce_of(v: &Value) -> String {
    v["nonce"].as_str().unwrap_or_default().to_owned()
}
