//! # atp-worker — the ATP edge relay on Cloudflare Workers
//!
//! A full ATP server for one domain (docs/design.md §4): agents submit and read mail with their
//! credentials (argon2id hashes in KV), other servers transfer mail to it (ATS from
//! `CF-Connecting-IP`, ATK by DNS over HTTPS, both checked by the core's pipeline), and its agents'
//! mail for other domains is signed with the domain key (a Worker secret), found by DoH SVCB and
//! sent with `fetch`, retried from a KV queue that a Cron trigger sweeps.
//!
//! The relay logic ([`relay`], [`delivery`], [`store`]) is independent of the Workers runtime and
//! is tested natively with an in-memory store; [`cf`] (wasm32 only) binds it to Workers KV,
//! `fetch` and the `fetch`/`scheduled` events.
//!
//! | module | holds |
//! |---|---|
//! | [`config`] | vars and secrets |
//! | [`relay`] | the HTTP routes |
//! | [`delivery`] | outbound transfers, retries, bounces, the cron sweep |
//! | [`store`], [`layout`], [`kv`] | state in KV |
//! | [`dnscache`] | DoH answers cached for their TTL |
//! | [`credentials`] | argon2id and the verified-credential cache |
//! | [`budget`] | the per-invocation subrequest cap |

pub mod budget;
pub mod clock;
pub mod config;
pub mod credentials;
pub mod delivery;
pub mod dnscache;
pub mod kv;
pub mod layout;
pub mod relay;
pub mod store;

#[cfg(target_arch = "wasm32")]
pub mod cf;
