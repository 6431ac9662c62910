//! The worker for one invocation: the core's relay ([`atp_wasm::relay::Relay`], every route) over
//! the domain's Durable Object ([`crate::store`]), its DoH resolver with the isolate's answer
//! cache, argon2id inline, the delivery of queued messages ([`crate::delivery`]) and the flush of
//! the isolate's counts into the domain's counters ([`atp_wasm::relay::counters`]). HTTP goes out
//! through the core's [`HttpTransport`] under the invocation's subrequest budget, so the whole
//! worker runs natively in tests with the object over a SQLite file and canned peers, and in
//! workerd with the Durable Object and `fetch` ([`crate::cf`]).

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use atp_wasm::doh::{DohMethod, DohResolver};
use atp_wasm::http::HttpTransport;
use atp_wasm::relay::credentials::InlineHasher;
use atp_wasm::relay::stream::{InboxStream, InboxWatch, StreamOpen};
use atp_wasm::relay::{counters, ApiRequest, Handled, Relay, RelayState};

use crate::budget::{Budget, Budgeted};
use crate::clock::Clock;
use crate::config::Config;
use crate::dnscache::{DnsCache, IsolateDns};
use crate::store::{ObjectWatcher, Objects, Store};

/// The core's relay as the worker runs it: storage and inbox waiting in the domain's object.
type WorkerRelay<'a, O, T> = Relay<'a, Store<O>, DohResolver<Budgeted<T>, IsolateDns>, InlineHasher, Clock, Store<O>>;

/// What one isolate keeps in memory between invocations (reset when Cloudflare recycles it).
#[derive(Debug)]
pub struct Isolate {
    /// The core relay's counters (and what of them was flushed) and verified-credential cache.
    pub relay: RelayState,
    /// DoH answers, for their TTL.
    pub dns: Rc<RefCell<DnsCache>>,
    /// Whether a flush of the counters is scheduled (`crate::cf` coalesces them).
    pub flush_scheduled: Cell<bool>,
    /// Cron sweeps run.
    pub sweeps: Cell<u64>,
}

impl Isolate {
    /// A new isolate at `now_ms`.
    pub fn new(now_ms: i64) -> Self {
        Isolate {
            relay: RelayState::new(now_ms.div_euclid(1000)),
            dns: Rc::default(),
            flush_scheduled: Cell::new(false),
            sweeps: Cell::new(0),
        }
    }
}

/// The worker for one invocation (`fetch` or `scheduled`).
pub struct Worker<O, T> {
    pub cfg: Config,
    pub store: Store<O>,
    pub(crate) outbound: Budgeted<T>,
    pub(crate) resolver: DohResolver<Budgeted<T>, IsolateDns>,
    pub(crate) budget: Budget,
    pub(crate) clock: Clock,
    hasher: InlineHasher,
    pub(crate) iso: Rc<Isolate>,
}

impl<O: Objects + Clone, T: HttpTransport + Clone> Worker<O, T> {
    /// A worker over the domain's object `objects`, sending HTTP (DoH and transfers) through
    /// `transport`.
    pub fn new(cfg: Config, objects: O, transport: T, clock: Clock, iso: Rc<Isolate>) -> Self {
        let budget = Budget::new(cfg.subrequest_budget);
        let outbound = Budgeted::new(transport, budget.clone());
        let method = if cfg.doh_post { DohMethod::Post } else { DohMethod::Get };
        let cache = IsolateDns { cache: iso.dns.clone(), clock: clock.clone() };
        let resolver = DohResolver::new(outbound.clone(), cfg.doh_url.clone(), method).with_cache(cache);
        let store = Store::new(objects, clock.clone(), iso.clone());
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
        self.relay(&self.iso.relay).handle(req).await
    }

    /// The body of a stream the relay accepted ([`Handled::stream`]): the agent's inbox as SSE
    /// chunks, waiting in the domain's object between them ([`crate::waiters`]).
    pub fn inbox_stream(&self, open: StreamOpen) -> InboxStream<ObjectWatcher<O>> {
        let watcher = self.store.watch(&open.agent);
        InboxStream::new(open, watcher, self.cfg.relay.pages)
    }

    fn relay<'a>(&'a self, state: &'a RelayState) -> WorkerRelay<'a, O, T> {
        Relay {
            cfg: &self.cfg.relay,
            state,
            store: &self.store,
            resolver: &self.resolver,
            hasher: &self.hasher,
            clock: &self.clock,
            // Streams and long polls wait in the domain's object (crate::waiters).
            inbox: &self.store,
        }
    }

    /// Adds what this isolate counted since its last flush to the domain's counters.
    pub async fn flush_counters(&self) -> Result<(), atp_wasm::env::StoreError> {
        let r = &self.iso.relay;
        counters::flush(&self.store, &r.stats, &r.flushed, self.clock.now()).await
    }
}
