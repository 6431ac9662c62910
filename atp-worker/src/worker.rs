//! The worker for one invocation: the core's relay ([`atp_wasm::relay::Relay`], every route) over
//! the worker's KV store, its DoH resolver with the isolate's answer cache, argon2id inline, and
//! the delivery of queued messages ([`crate::delivery`]). HTTP goes out through the core's
//! [`HttpTransport`] under the invocation's subrequest budget, so the whole worker runs natively in
//! tests with an in-memory KV and canned peers, and in workerd with Workers KV and `fetch`
//! ([`crate::cf`]).

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::rc::Rc;

use atp_wasm::doh::{DohMethod, DohResolver};
use atp_wasm::http::HttpTransport;
use atp_wasm::relay::credentials::InlineHasher;
use atp_wasm::relay::{ApiRequest, Handled, Relay, RelayState};

use crate::budget::{Budget, Budgeted};
use crate::clock::Clock;
use crate::config::Config;
use crate::dnscache::{DnsCache, IsolateDns};
use crate::kv::Kv;
use crate::store::{KvStore, Namespaces};

/// What one isolate keeps in memory between invocations (reset when Cloudflare recycles it).
#[derive(Debug)]
pub struct Isolate {
    /// The core relay's counters and verified-credential cache.
    pub relay: RelayState,
    /// DoH answers, for their TTL.
    pub dns: Rc<RefCell<DnsCache>>,
    /// Inbox day markers known to exist.
    pub known_days: RefCell<HashSet<String>>,
    /// Cron sweeps run.
    pub sweeps: Cell<u64>,
}

impl Isolate {
    /// A new isolate at `now_ms`.
    pub fn new(now_ms: i64) -> Self {
        Isolate {
            relay: RelayState::new(now_ms.div_euclid(1000)),
            dns: Rc::default(),
            known_days: RefCell::default(),
            sweeps: Cell::new(0),
        }
    }
}

/// The worker for one invocation (`fetch` or `scheduled`).
pub struct Worker<K, T> {
    pub cfg: Config,
    pub store: KvStore<K>,
    pub(crate) outbound: Budgeted<T>,
    pub(crate) resolver: DohResolver<Budgeted<T>, IsolateDns>,
    pub(crate) budget: Budget,
    pub(crate) clock: Clock,
    hasher: InlineHasher,
    pub(crate) iso: Rc<Isolate>,
}

impl<K: Kv, T: HttpTransport + Clone> Worker<K, T> {
    /// A worker over the namespaces `ns`, sending HTTP (DoH and transfers) through `transport`.
    pub fn new(cfg: Config, ns: Namespaces<K>, transport: T, clock: Clock, iso: Rc<Isolate>) -> Self {
        let budget = Budget::new(cfg.subrequest_budget);
        let outbound = Budgeted::new(transport, budget.clone());
        let method = if cfg.doh_post { DohMethod::Post } else { DohMethod::Get };
        let cache = IsolateDns { cache: iso.dns.clone(), clock: clock.clone() };
        let resolver = DohResolver::new(outbound.clone(), cfg.doh_url.clone(), method).with_cache(cache);
        let store = KvStore::new(ns, clock.clone(), iso.clone());
        let hasher = InlineHasher(cfg.argon2);
        Worker { cfg, store, outbound, resolver, budget, clock, hasher, iso }
    }

    pub fn isolate(&self) -> &Isolate {
        &self.iso
    }

    /// Answers one request (the core's router and handlers). A message queued for another domain
    /// comes back in [`Handled::queued`]: attempt it with [`Worker::deliver_now`] once the
    /// response is sent.
    pub async fn handle(&self, req: &ApiRequest) -> Handled {
        let relay = Relay {
            cfg: &self.cfg.relay,
            state: &self.iso.relay,
            store: &self.store,
            resolver: &self.resolver,
            hasher: &self.hasher,
            clock: &self.clock,
            // No waiting on KV: the stream route answers 501 and a long poll at once, until the
            // inboxes move to Durable Objects (docs/design.md §4).
            inbox: &atp_wasm::relay::stream::NoWatch,
        };
        relay.handle(req).await
    }
}
