//! # atp-worker — the ATP edge relay on Cloudflare Workers
//!
//! A full ATP server for one domain (docs/design.md §4), as a thin adapter of the core: every route
//! is the core's relay ([`atp_wasm::relay`]: registration, authentication, submissions, transfers
//! checked by the inbound pipeline, inbox, admin routes, counters) and every delivery decision the
//! core's state machine ([`atp_wasm::delivery`]). The worker adds what only a worker has:
//!
//! | module | holds |
//! |---|---|
//! | [`worker`] | one invocation: the core relay over KV, DoH and inline argon2id; the isolate's state |
//! | [`store`], [`layout`], [`kv`] | the core's storage traits over three KV namespaces; the retry queue |
//! | [`delivery`] | the KV queue: attempt after the 202, cron sweeps, leases, per-domain backoff |
//! | [`dnscache`] | DoH answers kept in the isolate for their TTL |
//! | [`budget`] | the per-invocation subrequest cap |
//! | [`config`] | vars and secrets |
//! | [`clock`] | milliseconds from `Date.now()` (or a hand-moved clock in tests) |
//! | `cf` | the Workers runtime (wasm32 only): KV, `fetch`, the `fetch` and `scheduled` events |
//!
//! Everything but `cf` is independent of the Workers runtime and tested natively with an
//! in-memory KV (`cargo test -p atp-worker`).

pub mod budget;
pub mod clock;
pub mod config;
pub mod delivery;
pub mod dnscache;
pub mod kv;
pub mod layout;
pub mod store;
pub mod worker;

#[cfg(target_arch = "wasm32")]
pub mod cf;
