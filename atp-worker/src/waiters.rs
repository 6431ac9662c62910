//! The inbox streams and long polls waiting in the domain's Durable Object (docs/design.md §5c).
//!
//! A worker's [`InboxWatcher`](atp_wasm::relay::stream::InboxWatcher) asks the object
//! `POST https://store/watch` with a [`WatchRequest`] (the agent and the last inbox id it has). In
//! one turn of the object — nothing awaited in between — the object answers [`WatchAnswer::Woken`]
//! when the agent has a row after that id, or registers a [`Waiter`] here; a call that commits
//! inbox rows wakes their agents' waiters once its transaction has committed. So no wake is lost
//! between the worker's read and the registration. A waiter whose time is up answers
//! [`WatchAnswer::Timeout`].
//!
//! Bounded: at most [`PER_AGENT`] waiters per agent and [`TOTAL`] in all; past either the object
//! answers [`WatchAnswer::Full`] at once and the worker waits out the time itself (a long poll
//! still answers within its `wait`, a stream reads again after its heartbeat). A waiter leaves the
//! table when woken, or when it is dropped (its time is up, or its request went away).

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

/// Most waiters of one agent (its streams and long polls, over every isolate).
pub const PER_AGENT: usize = 32;
/// Most waiters in all.
pub const TOTAL: usize = 10_000;
/// The longest wait the object accepts (a longer one is shortened): a long poll's 60 s and then
/// some.
pub const MAX_WAIT: Duration = Duration::from_secs(120);

/// What `/watch` answers, as one byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchAnswer {
    /// The agent has (or may have) a row after the caller's last id: read again.
    Woken,
    /// Nothing came within the time.
    Timeout,
    /// Too many waiters: the caller waits by itself.
    Full,
}

impl WatchAnswer {
    pub fn byte(self) -> u8 {
        match self {
            WatchAnswer::Woken => b'w',
            WatchAnswer::Timeout => b't',
            WatchAnswer::Full => b'f',
        }
    }

    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            b'w' => Some(WatchAnswer::Woken),
            b't' => Some(WatchAnswer::Timeout),
            b'f' => Some(WatchAnswer::Full),
            _ => None,
        }
    }
}

/// The body of `POST https://store/watch`: `after_id` (8 bytes, little-endian), the timeout in
/// milliseconds (4 bytes, little-endian), then the agent's id (UTF-8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchRequest {
    pub agent: String,
    pub after_id: i64,
    pub timeout: Duration,
}

impl WatchRequest {
    pub fn encode(&self) -> Vec<u8> {
        let ms = u32::try_from(self.timeout.as_millis()).unwrap_or(u32::MAX);
        let mut out = Vec::with_capacity(12 + self.agent.len());
        out.extend_from_slice(&self.after_id.to_le_bytes());
        out.extend_from_slice(&ms.to_le_bytes());
        out.extend_from_slice(self.agent.as_bytes());
        out
    }

    /// The request in `body`, its timeout at most [`MAX_WAIT`]; `None` when malformed.
    pub fn decode(body: &[u8]) -> Option<Self> {
        let after_id = i64::from_le_bytes(body.get(..8)?.try_into().ok()?);
        let ms = u32::from_le_bytes(body.get(8..12)?.try_into().ok()?);
        let agent = std::str::from_utf8(body.get(12..)?).ok().filter(|a| !a.is_empty())?.to_owned();
        Some(WatchRequest { agent, after_id, timeout: Duration::from_millis(u64::from(ms)).min(MAX_WAIT) })
    }
}

/// A one-shot wake-up for one task (single-threaded: the object's isolate).
#[derive(Debug, Default)]
pub struct Signal {
    fired: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl Signal {
    /// Fires: [`Signal::fired`] resolves, now or at its next poll.
    pub fn fire(&self) {
        self.fired.set(true);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }

    /// Resolves once [`Signal::fire`] was called.
    pub fn fired(self: &Rc<Self>) -> Fired {
        Fired(self.clone())
    }
}

/// The future of [`Signal::fired`].
#[derive(Debug)]
pub struct Fired(Rc<Signal>);

impl Future for Fired {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0.fired.get() {
            return Poll::Ready(());
        }
        *self.0.waker.borrow_mut() = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// The waiting table: each waiter's agent, id and signal. A flat list (at most [`TOTAL`], each
/// operation one pass over it): a map would link another hash table into the module
/// (docs/design.md §4, the wasm's size).
#[derive(Debug, Default)]
pub struct Waiters {
    entries: Vec<(String, u64, Rc<Signal>)>,
    next: u64,
}

/// Past a bound: [`WatchAnswer::Full`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

/// A registered waiter; leaves the table when dropped.
#[derive(Debug)]
pub struct Waiter {
    table: Rc<RefCell<Waiters>>,
    id: u64,
    signal: Rc<Signal>,
}

impl Waiters {
    /// Registers a waiter for `agent`, or [`Full`] past [`PER_AGENT`] or [`TOTAL`].
    pub fn register(table: &Rc<RefCell<Waiters>>, agent: &str) -> Result<Waiter, Full> {
        let mut t = table.borrow_mut();
        if t.entries.len() >= TOTAL || t.waiting(agent) >= PER_AGENT {
            return Err(Full);
        }
        t.next += 1;
        let (id, signal) = (t.next, Rc::new(Signal::default()));
        t.entries.push((agent.to_owned(), id, signal.clone()));
        Ok(Waiter { table: table.clone(), id, signal })
    }

    /// Wakes (and removes) every waiter of `agent`; how many there were.
    pub fn wake(&mut self, agent: &str) -> usize {
        let before = self.entries.len();
        self.entries.retain(|(a, _, signal)| {
            let mine = a == agent;
            if mine {
                signal.fire();
            }
            !mine
        });
        before - self.entries.len()
    }

    /// Waiters now, in all.
    pub fn total(&self) -> usize {
        self.entries.len()
    }

    /// Waiters of `agent` now.
    pub fn waiting(&self, agent: &str) -> usize {
        self.entries.iter().filter(|(a, _, _)| a == agent).count()
    }
}

impl Waiter {
    /// Resolves when the agent's inbox gets a row ([`Waiters::wake`]).
    pub fn woken(&self) -> Fired {
        self.signal.fired()
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        if let Ok(mut t) = self.table.try_borrow_mut() {
            t.entries.retain(|(_, id, _)| *id != self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::executor::block_on;
    use futures::FutureExt;

    #[test]
    fn the_request_and_answer_round_trip_and_bad_bodies_are_refused() {
        let r = WatchRequest { agent: "bob@a.test".into(), after_id: -3, timeout: Duration::from_millis(15_000) };
        assert_eq!(WatchRequest::decode(&r.encode()), Some(r.clone()));
        let long = WatchRequest { timeout: Duration::from_secs(3600), ..r.clone() };
        assert_eq!(WatchRequest::decode(&long.encode()).unwrap().timeout, MAX_WAIT);
        assert_eq!(WatchRequest::decode(&r.encode()[..12]), None, "no agent");
        assert_eq!(WatchRequest::decode(&[1, 2, 3]), None);
        let mut bad = r.encode();
        bad.push(0xff);
        assert_eq!(WatchRequest::decode(&bad), None, "not UTF-8");
        for a in [WatchAnswer::Woken, WatchAnswer::Timeout, WatchAnswer::Full] {
            assert_eq!(WatchAnswer::from_byte(a.byte()), Some(a));
        }
        assert_eq!(WatchAnswer::from_byte(0), None);
    }

    #[test]
    fn a_wake_resolves_the_agents_waiters_only_and_empties_their_places() {
        let table = Rc::new(RefCell::new(Waiters::default()));
        let (a1, a2) = (Waiters::register(&table, "a").unwrap(), Waiters::register(&table, "a").unwrap());
        let b = Waiters::register(&table, "b").unwrap();
        assert_eq!(table.borrow().total(), 3);
        let (mut fa1, mut fb) = (a1.woken(), b.woken());
        assert!((&mut fa1).now_or_never().is_none(), "not woken yet");
        assert_eq!(table.borrow_mut().wake("a"), 2);
        assert_eq!((table.borrow().waiting("a"), table.borrow().total()), (0, 1));
        block_on(fa1);
        assert!(a2.woken().now_or_never().is_some(), "a wake before the poll is kept");
        assert!((&mut fb).now_or_never().is_none(), "another agent's row does not wake b");
        drop((a1, a2));
        assert_eq!(table.borrow().total(), 1, "woken waiters are not counted twice");
        drop(b);
        assert_eq!(table.borrow().total(), 0, "a dropped waiter (time up, request gone) leaves");
        assert_eq!(table.borrow_mut().wake("b"), 0);
    }

    #[test]
    fn at_most_per_agent_waiters_of_one_agent() {
        let table = Rc::new(RefCell::new(Waiters::default()));
        let mut held: Vec<Waiter> = (0..PER_AGENT).map(|_| Waiters::register(&table, "a").unwrap()).collect();
        assert_eq!(Waiters::register(&table, "a").err(), Some(Full));
        assert!(Waiters::register(&table, "b").is_ok(), "other agents still wait");
        held.pop();
        held.push(Waiters::register(&table, "a").expect("a place freed by a drop"));
        assert_eq!(table.borrow().waiting("a"), PER_AGENT);
    }

    #[test]
    fn at_most_total_waiters_in_all() {
        let table = Rc::new(RefCell::new(Waiters::default()));
        let mut held: Vec<Waiter> =
            (0..TOTAL).map(|i| Waiters::register(&table, &format!("agent{}", i / PER_AGENT)).unwrap()).collect();
        assert_eq!(table.borrow().total(), TOTAL);
        assert_eq!(Waiters::register(&table, "fresh").err(), Some(Full));
        assert_eq!(table.borrow_mut().wake("agent0"), PER_AGENT);
        let fresh = Waiters::register(&table, "fresh").expect("woken waiters free their places");
        held.clear();
        assert_eq!(table.borrow().total(), 1);
        drop(fresh);
        assert_eq!(table.borrow().total(), 0);
    }
}
