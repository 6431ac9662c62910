//! # atp-worker — the ATP edge relay on Cloudflare Workers
//!
//! A full ATP server for one domain (docs/design.md §4), as a thin adapter of the core: every route
//! is the core's relay ([`atp_wasm::relay`]: registration, authentication, submissions, transfers
//! checked by the inbound pipeline, inbox, admin routes, counters) and every delivery decision the
//! core's state machine ([`atp_wasm::delivery`]). The worker adds what only a worker has:
//!
//! | module | holds |
//! |---|---|
//! | [`worker`] | one invocation: the core relay over the domain's object, DoH and inline argon2id; the isolate's state |
//! | [`store`] | the core's storage traits as calls to the domain's Durable Object |
//! | [`object`], [`sql`] | the Durable Object's storage: SQLite tables, one transaction per call |
//! | [`delivery`] | the outbound queue: attempt after the 202, cron sweeps, leases, backoff, waking |
//! | [`waiters`] | inbox streams and long polls waiting in the object: `/watch`, the bounded table |
//! | [`dnscache`] | DoH answers kept in the isolate for their TTL |
//! | [`budget`] | the per-invocation subrequest cap |
//! | [`config`] | vars and secrets |
//! | [`clock`] | milliseconds from `Date.now()` (or a hand-moved clock in tests) |
//! | `cf` | the Workers runtime (wasm32 only): the Durable Object class, `fetch`, the `fetch` and `scheduled` events |
//! | `local` | the object in-process over a SQLite file (native only: tests) |
//!
//! Everything but `cf` is independent of the Workers runtime and tested natively with the object
//! over a real SQLite file (`cargo test -p atp-worker`).

pub mod budget;
pub mod clock;
pub mod config;
pub mod delivery;
pub mod dnscache;
pub mod object;
pub mod sql;
pub mod store;
pub mod waiters;
pub mod worker;

#[cfg(not(target_arch = "wasm32"))]
pub mod local;

#[cfg(target_arch = "wasm32")]
pub mod cf;
