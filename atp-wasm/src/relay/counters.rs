//! The relay's counters for the whole domain (docs/design.md §4 "Counters", §5d): each process
//! (a native node, a worker isolate) counts in its own [`Stats`], and adds what it counted since
//! its last flush to the domain's stored totals ([`flush`], through the home's
//! [`CounterStore`]). `stats` and `metrics` flush this process's counts, then render the stored
//! totals ([`domain_totals`]) — so they show the whole domain, across restarts and nodes.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::task::{Poll, Waker};

use crate::env::StoreError;
use crate::error::ErrorCode;
use crate::relay::stats::{Counter, Stats};
use crate::relay::store::CounterStore;

/// Prefix of the rejection counters' names (`rejections/<error_code>`).
const REJECTIONS: &str = "rejections/";
/// The name under which the store keeps when the domain's counting started (Unix seconds of its
/// first flush): `uptime` counts from there. A store sets it once, never adds to it.
pub const STARTED_AT: &str = "started_at";

/// How many named counters the core's [`Stats`] has.
const NAMED: usize = 19;

/// Every named counter of the core's [`Stats`].
fn named(s: &Stats) -> [(&'static str, &Counter); NAMED] {
    [
        ("received", &s.received),
        ("delivered_local", &s.delivered_local),
        ("queued", &s.queued),
        ("duplicates", &s.duplicates),
        ("replay_blocked", &s.replay_blocked),
        ("ats_pass", &s.ats_pass),
        ("ats_fail", &s.ats_fail),
        ("ats_neutral", &s.ats_neutral),
        ("ats_temperror", &s.ats_temperror),
        ("atk_pass", &s.atk_pass),
        ("atk_fail", &s.atk_fail),
        ("credential_pass", &s.credential_pass),
        ("credential_fail", &s.credential_fail),
        ("credential_cache_hits", &s.credential_cache_hits),
        ("registered", &s.registered),
        ("forwarded", &s.forwarded),
        ("delivery_failed", &s.delivery_failed),
        ("bounced", &s.bounced),
        ("acknowledged", &s.acknowledged),
    ]
}

/// Most rows a store's counters take: every named counter, one per error code (some share one),
/// [`STARTED_AT`]
/// (the names [`flush`] writes come from this fixed set, so the table is bounded).
pub const MAX_NAMES: usize = NAMED + ErrorCode::ALL.len() + 1;

/// Every counter of `s` by name, rejections as `rejections/<code>`.
fn snapshot(s: &Stats) -> BTreeMap<String, u64> {
    let mut out: BTreeMap<String, u64> = named(s).iter().map(|(n, c)| ((*n).to_owned(), c.get())).collect();
    for (code, n) in s.rejections() {
        out.insert(format!("{REJECTIONS}{code}"), n);
    }
    out
}

/// What this process has already added to the domain's totals, and the turn of its flushes: one
/// at a time, so that `stats` waits for a flush in progress (e.g. the periodic one) to commit
/// before it reads the totals, and shows every count made before it.
#[derive(Debug, Default)]
pub struct Flushed {
    done: Mutex<BTreeMap<String, u64>>,
    /// Whether a flush is in progress, and the tasks waiting for it to end (each once).
    turn: Mutex<(bool, Vec<Waker>)>,
}

/// A flush's turn, given back when dropped.
struct Turn<'a>(&'a Flushed);

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        if let Ok(mut t) = self.0.turn.lock() {
            t.0 = false;
            t.1.drain(..).for_each(Waker::wake);
        }
    }
}

impl Flushed {
    /// The counts since the last flush (non-zero ones, sorted by name), marked as flushed. If
    /// adding them fails, hand them back with [`Flushed::restore`].
    pub fn take(&self, s: &Stats) -> Vec<(String, u64)> {
        let now = snapshot(s);
        let Ok(mut done) = self.done.lock() else { return Vec::new() };
        let deltas = now
            .iter()
            .filter_map(|(k, v)| {
                let d = v.saturating_sub(done.get(k).copied().unwrap_or(0));
                (d > 0).then(|| (k.clone(), d))
            })
            .collect();
        *done = now;
        deltas
    }

    /// Waits for the flush in progress, if any, to end; then this one's turn.
    async fn turn(&self) -> Turn<'_> {
        std::future::poll_fn(|cx| {
            let Ok(mut t) = self.turn.lock() else { return Poll::Ready(()) };
            if !t.0 {
                t.0 = true;
                return Poll::Ready(());
            }
            if !t.1.iter().any(|w| w.will_wake(cx.waker())) {
                t.1.push(cx.waker().clone());
            }
            Poll::Pending
        })
        .await;
        Turn(self)
    }

    /// Marks `deltas` as not flushed after all (the next flush carries them).
    pub fn restore(&self, deltas: &[(String, u64)]) {
        let Ok(mut done) = self.done.lock() else { return };
        for (k, d) in deltas {
            if let Some(v) = done.get_mut(k) {
                *v = v.saturating_sub(*d);
            }
        }
    }
}

/// Adds what `stats` counted since the last flush to the store's totals (nothing to do: no store
/// call). On failure the counts stay unflushed, for the next flush. `now` becomes [`STARTED_AT`]
/// if the store has none yet.
pub async fn flush<S: CounterStore>(store: &S, stats: &Stats, flushed: &Flushed, now: i64) -> Result<(), StoreError> {
    let _turn = flushed.turn().await;
    let deltas = flushed.take(stats);
    if deltas.is_empty() {
        return Ok(());
    }
    let r = store.add_counters(now, &deltas).await;
    if r.is_err() {
        flushed.restore(&deltas);
    }
    r
}

/// The core's [`Stats`] holding the stored `totals` (as [`Flushed::take`] names them); `uptime`
/// counts from [`STARTED_AT`] (`now` when nothing was stored yet). Unknown names are ignored.
pub fn totals(totals: &[(String, u64)], now: i64) -> Stats {
    let get = |name: &str| totals.iter().find(|(k, _)| k == name).map(|(_, v)| *v);
    let started = get(STARTED_AT).map_or(now, |v| v.min(i64::MAX as u64) as i64);
    let s = Stats::new(started);
    for (name, c) in named(&s) {
        c.add(get(name).unwrap_or(0));
    }
    for (k, n) in totals {
        let Some(code) = k.strip_prefix(REJECTIONS) else { continue };
        if let Some(c) = ErrorCode::ALL.iter().find(|c| c.as_str() == code) {
            s.add_rejections(*c, *n);
        }
    }
    s
}

/// The domain's counters for `stats` and `metrics`: this process's counts flushed first, then the
/// store's totals.
pub async fn domain_totals<S: CounterStore>(
    store: &S,
    stats: &Stats,
    flushed: &Flushed,
    now: i64,
) -> Result<Stats, StoreError> {
    flush(store, stats, flushed, now).await?;
    Ok(totals(&store.counters().await?, now))
}

#[cfg(test)]
mod tests {
    use futures::executor::block_on;

    use super::*;
    use crate::relay::memory::MemoryStore;

    #[test]
    fn deltas_are_flushed_once_and_restored_on_failure() {
        let s = Stats::new(0);
        let f = Flushed::default();
        assert!(f.take(&s).is_empty());
        s.received.inc();
        s.received.inc();
        s.rejected(ErrorCode::AtkSignature);
        let d = f.take(&s);
        assert_eq!(d, vec![("received".to_owned(), 2), (format!("{REJECTIONS}550 5.7.28"), 1)]);
        assert!(f.take(&s).is_empty(), "nothing new");
        s.received.inc();
        let d = f.take(&s);
        assert_eq!(d, vec![("received".to_owned(), 1)]);
        f.restore(&d);
        s.bounced.inc();
        assert_eq!(f.take(&s), vec![("bounced".to_owned(), 1), ("received".to_owned(), 1)], "carried again");
    }

    /// Two processes flushing into one store: the totals are the sum; a failed flush loses
    /// nothing (the next one carries it); the start is the first flush's time.
    #[test]
    fn flushes_add_up_in_the_store_and_survive_failures() {
        let store = MemoryStore::new();
        let (a, b) = (Stats::new(0), Stats::new(0));
        let (fa, fb) = (Flushed::default(), Flushed::default());
        block_on(flush(&store, &a, &fa, 50)).unwrap();
        assert!(block_on(store.counters()).unwrap().is_empty(), "nothing counted: nothing written, no start");
        a.received.inc();
        a.rejected(ErrorCode::AuthFailed);
        b.received.inc();
        b.received.inc();
        block_on(flush(&store, &a, &fa, 100)).unwrap();
        store.fail_with(Some(StoreError::new("down")));
        assert!(block_on(flush(&store, &b, &fb, 110)).is_err());
        assert!(block_on(domain_totals(&store, &b, &fb, 115)).is_err(), "no totals without the store");
        store.fail_with(None);
        b.forwarded.inc();
        let t = block_on(domain_totals(&store, &b, &fb, 160)).unwrap();
        assert_eq!((t.received.get(), t.forwarded.get(), t.uptime(160)), (3, 1, 60));
        assert_eq!(t.rejections().get(ErrorCode::AuthFailed.as_str()), Some(&1));
        // Nothing new: the totals stay, nothing is added twice.
        let again = block_on(domain_totals(&store, &a, &fa, 170)).unwrap();
        assert_eq!((again.received.get(), again.forwarded.get()), (3, 1));
    }

    /// A store whose first `add_counters` waits until opened (a flush in progress).
    #[derive(Default)]
    struct Gated {
        inner: MemoryStore,
        calls: std::sync::atomic::AtomicU32,
        open: std::sync::atomic::AtomicBool,
    }

    impl CounterStore for Gated {
        async fn add_counters(&self, now: i64, deltas: &[(String, u64)]) -> Result<(), StoreError> {
            use std::sync::atomic::Ordering::SeqCst;
            if self.calls.fetch_add(1, SeqCst) == 0 {
                std::future::poll_fn(|_| if self.open.load(SeqCst) { Poll::Ready(()) } else { Poll::Pending }).await;
            }
            self.inner.add_counters(now, deltas).await
        }
        async fn counters(&self) -> Result<Vec<(String, u64)>, StoreError> {
            self.inner.counters().await
        }
    }

    use std::future::Future;
    use std::task::{Context, Poll};

    /// `stats` during a flush in progress waits for it: the totals it shows hold every count made
    /// before it, including those the other flush is writing.
    #[test]
    fn totals_wait_for_a_flush_in_progress() {
        let store = Gated::default();
        let (s, f) = (Stats::new(0), Flushed::default());
        let mut cx = Context::from_waker(futures::task::noop_waker_ref());
        s.received.inc();
        let mut periodic = std::pin::pin!(flush(&store, &s, &f, 10));
        assert!(periodic.as_mut().poll(&mut cx).is_pending(), "writing received=1");
        s.received.inc();
        let mut stats = std::pin::pin!(domain_totals(&store, &s, &f, 11));
        assert!(stats.as_mut().poll(&mut cx).is_pending(), "waits for the flush in progress");
        store.open.store(true, std::sync::atomic::Ordering::SeqCst);
        assert!(matches!(periodic.as_mut().poll(&mut cx), Poll::Ready(Ok(()))));
        let Poll::Ready(Ok(t)) = stats.as_mut().poll(&mut cx) else { panic!("stats done") };
        assert_eq!(t.received.get(), 2);
    }

    /// Every counter and every refusal code at once stays within [`MAX_NAMES`] rows.
    #[test]
    fn the_names_are_bounded() {
        let s = Stats::new(0);
        for (_, c) in named(&s) {
            c.inc();
        }
        for code in ErrorCode::ALL {
            s.rejected(code);
        }
        let store = MemoryStore::new();
        block_on(flush(&store, &s, &Flushed::default(), 1)).unwrap();
        let rows = block_on(store.counters()).unwrap();
        let codes: std::collections::BTreeSet<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(rows.len(), 19 + codes.len() + 1, "every name once, plus the start");
        assert!(rows.len() <= MAX_NAMES);
        let t = totals(&rows, 1);
        assert_eq!(snapshot(&t), snapshot(&s), "every name reads back");
    }

    #[test]
    fn totals_render_through_the_core() {
        let t = vec![
            (STARTED_AT.to_owned(), 100),
            ("received".to_owned(), 7),
            ("forwarded".to_owned(), 3),
            (format!("{REJECTIONS}550 5.7.28"), 2),
            (format!("{REJECTIONS}999 9.9.9"), 5),
        ];
        let s = totals(&t, 160);
        assert_eq!((s.received.get(), s.forwarded.get(), s.uptime(160)), (7, 3, 60));
        let text = s.prometheus(160, &Default::default(), 0);
        assert!(text.contains("atp_rejections_total{code=\"550 5.7.28\"} 2\n"), "{text}");
        assert!(!text.contains("999"), "unknown codes are dropped");
        assert_eq!(snapshot(&s).get("received"), Some(&7));
    }
}
