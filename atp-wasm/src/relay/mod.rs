//! The relay: an ATP server's behaviour, written once (docs/design.md §1). Every route's handler is
//! an I/O-free async function over the small traits a home implements — storage
//! ([`store::AgentStore`], [`store::MessageStore`]), password hashing
//! ([`credentials::PasswordHasher`]), DNS ([`crate::env::Resolver`]) and the clock — so atp-native
//! (axum, SQLite) and atp-worker (workers-rs, KV) only turn their runtime's requests into
//! [`ApiRequest`]s and [`Handled`] answers back into responses.
//!
//! | module | holds |
//! |---|---|
//! | [`api`] | the API definition: every route's method, path, authentication, body limit; request and response types |
//! | [`request`] | [`ApiRequest`], query parsing, [`Handled`] |
//! | [`auth`] | Basic credentials, the admin token, the registration policy |
//! | [`credentials`] | argon2id, the verified-credential cache, constant-time comparison |
//! | [`limits`] | failed logins rate-limited per address and per (address, agent) |
//! | [`store`] | the storage traits |
//! | [`stats`] | counters, `/stats` JSON, Prometheus text |
//! | [`counters`] | the domain's counters: flushing a process's counts into the store, the totals |
//! | [`message`] | `POST message`: submissions and transfers |
//! | [`agents`] | `POST register`, `GET messages` (and its long poll), `GET whoami` |
//! | [`stream`] | push delivery: the waiting trait, SSE framing, stream limits, [`stream::InboxStream`] |
//! | [`ack`] | `POST messages/ack`, `GET messages/stream` |
//! | [`memory`] | an in-memory store (tests) |
//! | [`admin`] | `GET agents`, `stats`, `inspect`, `metrics` |

pub mod ack;
pub mod admin;
pub mod agents;
pub mod api;
pub mod auth;
pub mod counters;
pub mod credentials;
pub mod limits;
pub mod memory;
pub mod message;
pub mod request;
pub mod stats;
pub mod store;
pub mod stream;

use serde_json::json;

use crate::env::{Clock, Resolver};
use crate::error::Rejection;
use crate::pipeline::InboundConfig;
pub use api::Route;
use credentials::{CredentialCache, PasswordHasher};
pub use request::{ApiRequest, Handled, Query, Queued};
use stats::Stats;
use store::{AgentStore, CounterStore, MessageStore};
use stream::{InboxWatch, StreamLimits, StreamSlots};

/// Who may register agents (docs/protocol.md §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Registration {
    /// Anyone (the reference's behaviour and the quick start's).
    #[default]
    Open,
    /// Only with the admin token.
    Token,
    /// Nobody.
    Closed,
}

impl Registration {
    pub fn as_str(self) -> &'static str {
        match self {
            Registration::Open => "open",
            Registration::Token => "token",
            Registration::Closed => "closed",
        }
    }

    /// `open`, `token` or `closed`.
    pub fn parse(s: &str) -> Option<Registration> {
        match s.trim().to_ascii_lowercase().as_str() {
            "open" => Some(Registration::Open),
            "token" => Some(Registration::Token),
            "closed" => Some(Registration::Closed),
            _ => None,
        }
    }
}

/// Limits of `GET messages` pages (docs/design.md §5b).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageLimits {
    /// `limit` when the request names none (the reference's 50).
    pub default_limit: usize,
    /// Most messages per page (the reference had no maximum, docs/protocol.md §12.15).
    pub max_limit: usize,
    /// Most bytes of message JSON per page; a single larger message still comes, alone.
    pub max_bytes: usize,
}

impl Default for PageLimits {
    fn default() -> Self {
        PageLimits { default_limit: 50, max_limit: 500, max_bytes: 8 << 20 }
    }
}

/// What the relay is configured with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayConfig {
    /// Our domain (lowercase).
    pub domain: String,
    pub inbound: InboundConfig,
    pub admin_token: Option<String>,
    pub registration: Registration,
    pub pages: PageLimits,
    pub quota: Quota,
    /// Open streams and long polls (docs/protocol.md §6.5).
    pub streams: StreamLimits,
}

/// Per-agent inbox quota (docs/design.md §5b): a message that would pass it is refused with a
/// temporary "mailbox full" (`507`, `452 4.2.2`), so the sender's server retries later; nothing
/// accepted is ever dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Most messages in one inbox.
    pub max_messages: u64,
    /// Most bytes of message JSON in one inbox.
    pub max_bytes: u64,
}

impl Default for Quota {
    /// 100,000 messages and 1 GiB: far above what an agent reads, low enough that one agent
    /// cannot fill the disk.
    fn default() -> Self {
        Quota { max_messages: 100_000, max_bytes: 1 << 30 }
    }
}

impl RelayConfig {
    pub fn new(domain: &str) -> Self {
        RelayConfig {
            domain: domain.to_ascii_lowercase(),
            inbound: InboundConfig::new(domain),
            admin_token: None,
            registration: Registration::Open,
            pages: PageLimits::default(),
            quota: Quota::default(),
            streams: StreamLimits::default(),
        }
    }
}

/// What the relay keeps in memory between requests: counters, verified credentials, failed
/// logins.
#[derive(Debug, Default)]
pub struct RelayState {
    /// This process's counts (the domain's are the store's, [`counters`]).
    pub stats: Stats,
    /// What of `stats` was added to the store's counters already ([`counters::flush`]).
    pub flushed: counters::Flushed,
    pub credentials: CredentialCache,
    pub logins: limits::LoginLimiter,
    /// Open streams and long polls per agent.
    pub streams: std::sync::Arc<StreamSlots>,
}

impl RelayState {
    pub fn new(now: i64) -> Self {
        RelayState { stats: Stats::new(now), ..RelayState::default() }
    }
}

/// The relay for one request (or one invocation): borrowed configuration, state and the home's
/// implementations of the traits. Cheap to build.
pub struct Relay<'a, S, R, H, C, W> {
    pub cfg: &'a RelayConfig,
    pub state: &'a RelayState,
    pub store: &'a S,
    pub resolver: &'a R,
    pub hasher: &'a H,
    pub clock: &'a C,
    /// Waiting for new mail (push delivery, [`stream`]); [`stream::NoWatch`] where the home cannot.
    pub inbox: &'a W,
}

impl<S: AgentStore + MessageStore + CounterStore, R: Resolver, H: PasswordHasher, C: Clock, W: InboxWatch>
    Relay<'_, S, R, H, C, W>
{
    /// Answers one request: finds its route ([`api::find`]: JSON 404/405 otherwise), checks who
    /// may call it, runs its handler. Every refusal is counted and answered in the reference's
    /// JSON error shape under its code's status.
    pub async fn handle(&self, req: &ApiRequest) -> Handled {
        let result = match api::find(&req.method, &req.path) {
            Ok(route) => self.dispatch(route, req).await,
            Err(r) => Err(r),
        };
        match result {
            Ok(h) => h,
            Err(r) => {
                self.state.stats.rejected(r.code);
                Handled::rejection(&r)
            }
        }
    }

    /// The handler of each route; authentication as the route's definition says.
    async fn dispatch(&self, route: &Route, req: &ApiRequest) -> Result<Handled, Rejection> {
        use api::Auth;
        if req.body.len() > route.body_limit() {
            return Err(api::too_large(route.body_limit()));
        }
        let who = match route.auth {
            Auth::Agent => Some(self.agent(req, "Credential required").await?),
            Auth::Admin => {
                self.admin(req)?;
                None
            }
            Auth::Registration => {
                self.may_register(req)?;
                None
            }
            Auth::Public | Auth::Sender => None,
        };
        let who = || who.clone().ok_or_else(|| Rejection::new(crate::ErrorCode::AuthFailed, "Credential required"));
        match *route {
            api::MESSAGE => self.post_message(req).await,
            api::REGISTER => self.register(req).await,
            api::MESSAGES => self.inbox(&who()?, &req.params()).await,
            api::STREAM => self.stream(&who()?, req),
            api::ACK => self.ack(&who()?, req).await,
            api::WHOAMI => Ok(Handled::json(200, &json!(api::WhoAmI { agent_id: who()?.to_string() }))),
            api::AGENTS => self.agents().await,
            api::STATS => self.stats().await,
            api::INSPECT => self.inspect(&req.params()).await,
            api::METRICS => self.metrics().await,
            api::CAPABILITIES => Ok(self.capabilities()),
            api::HEALTH => Ok(self.health()),
            _ => Err(api::not_found()),
        }
    }

    /// `GET capabilities` (the reference's body; `max_payload_size` is the limit enforced).
    fn capabilities(&self) -> Handled {
        Handled::json(
            200,
            &json!({
                "version": "1.0",
                "capabilities": ["message"],
                "protocols": [crate::ALPN_ATP],
                "max_payload_size": self.cfg.inbound.max_size,
            }),
        )
    }

    /// `GET health`; `version` is atp's version (the reference's was hard-coded and stale).
    fn health(&self) -> Handled {
        let h = api::Health {
            status: "healthy".into(),
            domain: self.cfg.domain.clone(),
            version: env!("CARGO_PKG_VERSION").into(),
        };
        Handled::json(200, &json!(h))
    }
}

#[cfg(test)]
pub(crate) mod tests;
