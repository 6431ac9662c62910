//! # atp-wasm — the portable core of the Agent Transfer Protocol
//!
//! Every protocol rule of ATP lives here exactly once, with no I/O of its own (sans-IO): DNS lookups,
//! the clock and persistence come in through the small traits of [`env`]. The native server
//! (`atp-native`), the Cloudflare Workers relay (`atp-worker`) and the npm package (this crate compiled
//! to `wasm32-unknown-unknown`) are thin adapters around it.
//!
//! Section references (§) point into `docs/protocol.md`, the description of the reference implementation's
//! wire protocol, and `docs/design.md` for the places where atp deliberately differs.
//!
//! | module | holds |
//! |---|---|
//! | [`identity`] | `local@domain` agent identities (§1) |
//! | [`message`] | the message and signature envelope (§2, §4) |
//! | [`canonical`] | the reference's exact signed bytes (§3) |
//! | [`jcs`] | strict RFC 8785 canonical JSON |
//! | [`keys`] | Ed25519 domain keys and their file formats (§8.7) |
//! | [`sign`] | signing and verifying messages (§4) |
//! | [`records`] | SVCB, ATS and ATK DNS records (§5) |
//! | [`env`] | the traits through which the world comes in: resolver, clock, dedup store |
//! | [`http`] | HTTP requests and responses, and the transport trait a home implements |
//! | [`client`] | an agent's client of its server: send, recv, register (the npm `AtpClient`) |
//! | [`delivery`] | the delivery state machine: attempt, settle (delivered / retry at / bounce), per-domain backoff, bounce notice (design §3) |
//! | [`doh`] | DNS over HTTPS (RFC 8484): wire-format queries and answers, a `Resolver` over HTTP |
//! | [`pipeline`] | the inbound verification pipeline for remote transfers (§5.3, §6, design §3) |
//! | [`relay`] | the server's behaviour: API definition, handlers, storage traits, credentials, counters (design §1) |
//! | [`sse`] | the client side of the inbox stream: server-sent events, resuming subscriptions (§6.5) |
//! | [`retry`] | delivery outcome classes and the backoff schedule (design §3) |
//! | [`sqlite_schema`] | the SQLite tables of a relay's state, for the homes that keep it in SQLite (design §1.5) |
//! | [`error`] | protocol rejections `(status, error_code, message)` and their JSON shape |
//! | `js` | the npm package's JS bindings (wasm32 with the `js` feature only) |

pub mod canonical;
pub mod client;
pub mod delivery;
pub mod doh;
pub mod env;
pub mod error;
pub mod http;
pub mod identity;
pub mod jcs;
pub mod keys;
pub mod message;
pub mod pipeline;
pub mod records;
pub mod relay;
pub mod retry;
pub mod sign;
pub mod sqlite_schema;
pub mod sse;

/// The npm package's JS API; behind the `js` feature, so that a Rust home compiled to wasm32
/// (atp-worker) does not carry it (docs/design.md §1.1).
#[cfg(all(target_arch = "wasm32", feature = "js"))]
pub mod js;

pub use error::{ErrorCode, Rejection};
pub use identity::AgentId;
pub use message::{Message, SignatureEnvelope};

/// Largest request body a server accepts, in bytes (docs/protocol.md §2, `max_payload_size`).
pub const MAX_MESSAGE_SIZE: usize = 1_048_576;

/// Default ATP port (docs/protocol.md §5.1).
pub const DEFAULT_PORT: u16 = 7443;

/// ALPN protocol id of ATP over TLS.
pub const ALPN_ATP: &str = "atp/1";
