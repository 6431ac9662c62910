//! Waking inbox streams in-process (docs/design.md §5c): the core's
//! [`InboxWatch`](atp_wasm::relay::stream::InboxWatch) over one tokio `watch` channel per agent
//! that has a stream or long poll open. [`super::Store`] calls [`InboxHub::notify`] after the
//! commit of every inbox row — a local submission, an inbound transfer, a bounce notice — so a
//! waiting stream reads it at once, without polling.
//!
//! The table holds only agents with a live watcher (a watcher removes its agent's entry when it is
//! the last one), so it is bounded by the relay's stream limits.
//!
//! At shutdown the server [closes](InboxHub::close) the hub: long polls answer at once with what
//! they have and streams end cleanly ([`InboxHub::closed`]), so the graceful shutdown does not wait
//! out its drain time for them; clients resume from their cursor elsewhere or later.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use atp_wasm::relay::stream::{InboxWatch, InboxWatcher};
use tokio::sync::watch;

/// One notification channel per watched agent; cheap to clone.
#[derive(Debug, Clone)]
pub struct InboxHub {
    agents: Arc<Mutex<HashMap<String, watch::Sender<u64>>>>,
    /// `true` once the server shuts down.
    closing: Arc<watch::Sender<bool>>,
}

impl Default for InboxHub {
    fn default() -> Self {
        InboxHub { agents: Arc::default(), closing: Arc::new(watch::channel(false).0) }
    }
}

impl InboxHub {
    /// The server is shutting down: every waiting long poll answers now, and [`InboxHub::closed`]
    /// resolves for the streams.
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// Resolves once the hub is [closed](InboxHub::close).
    pub async fn closed(&self) {
        let mut rx = self.closing.subscribe();
        let _ = rx.wait_for(|closing| *closing).await;
    }

    fn is_closed(&self) -> bool {
        *self.closing.borrow()
    }

    /// Wakes every watcher of `agent` (nothing when nobody watches).
    pub fn notify(&self, agent: &str) {
        if let Ok(agents) = self.agents.lock() {
            if let Some(tx) = agents.get(agent) {
                tx.send_modify(|v| *v = v.wrapping_add(1));
            }
        }
    }

    /// Agents with a watcher now.
    #[cfg(test)]
    pub fn watched(&self) -> usize {
        self.agents.lock().map(|a| a.len()).unwrap_or(0)
    }
}

impl InboxWatch for InboxHub {
    type Watcher = HubWatcher;

    fn watch(&self, agent: &str) -> HubWatcher {
        let rx = match self.agents.lock() {
            Ok(mut agents) => agents.entry(agent.to_owned()).or_insert_with(|| watch::channel(0).0).subscribe(),
            // A poisoned table: a watcher that is never woken still works, by its heartbeat reads.
            Err(_) => watch::channel(0).1,
        };
        HubWatcher { rx, agent: agent.to_owned(), hub: self.clone() }
    }
}

/// One stream's (or long poll's) watcher.
#[derive(Debug)]
pub struct HubWatcher {
    rx: watch::Receiver<u64>,
    agent: String,
    hub: InboxHub,
}

impl InboxWatcher for HubWatcher {
    /// `after_id` is not needed: [`InboxHub::notify`] is called in-process after every commit,
    /// and the receiver keeps a notification sent before the wait.
    async fn wait(&mut self, _after_id: i64, timeout: Duration) -> bool {
        if self.hub.is_closed() {
            return false;
        }
        // `changed` is cancel-safe, and a notification sent since the last wait is kept.
        tokio::select! {
            woken = tokio::time::timeout(timeout, self.rx.changed()) => matches!(woken, Ok(Ok(()))),
            () = self.hub.closed() => false,
        }
    }
}

impl Drop for HubWatcher {
    fn drop(&mut self) {
        if let Ok(mut agents) = self.hub.agents.lock() {
            // This receiver still counts: remove the entry when it is the last.
            if agents.get(&self.agent).is_some_and(|tx| tx.receiver_count() <= 1) {
                agents.remove(&self.agent);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_notification_wakes_every_watcher_of_the_agent_only() {
        let hub = InboxHub::default();
        let (mut a1, mut a2, mut b) = (hub.watch("a@x.test"), hub.watch("a@x.test"), hub.watch("b@x.test"));
        assert!(!a1.wait(0, Duration::from_millis(10)).await, "nothing yet: a time-out");
        // Sent before the wait: not lost.
        hub.notify("a@x.test");
        assert!(a1.wait(0, Duration::from_secs(30)).await);
        assert!(a2.wait(0, Duration::from_secs(30)).await);
        assert!(!b.wait(0, Duration::from_millis(10)).await, "another agent's mail does not wake b");
        // A waiter woken from another task.
        let waiting = tokio::spawn(async move { a1.wait(0, Duration::from_secs(30)).await });
        tokio::task::yield_now().await;
        hub.notify("a@x.test");
        assert!(waiting.await.unwrap());
        assert_eq!(hub.watched(), 2);
        drop((a2, b));
        assert_eq!(hub.watched(), 0, "entries go with their last watcher");
        hub.notify("a@x.test");
    }
}
