//! Push delivery (docs/protocol.md §6.5, docs/design.md §5c): `GET messages/stream`, an inbox as
//! server-sent events, and the long poll `GET messages?wait=SECONDS`.
//!
//! The protocol part lives here once — the cursor (`Last-Event-ID` or `after_id`), the framing of
//! each event, the heartbeat, the per-agent bound on open streams, backlog first and then live.
//! The waiting is the home's: it implements [`InboxWatch`] (natively an in-process notification
//! per agent, woken when the store commits an inbox row; PostgreSQL LISTEN/NOTIFY or a Durable
//! Object later) and drives an [`InboxStream`] chunk by chunk into its response body.
//!
//! No gap, no duplicate: a stream's watcher is registered before its first read, every read asks
//! for rows after the last id sent, and inbox ids increase in commit order (docs/design.md §1.5).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::error::{ErrorCode, Rejection};
use crate::relay::request::ApiRequest;
use crate::relay::store::{InboxRow, MessageStore};
use crate::relay::PageLimits;

/// How long a stream stays silent before it sends a comment line (docs/protocol.md §6.5), so
/// proxies and clients can tell a quiet stream from a dead connection.
pub const HEARTBEAT: Duration = Duration::from_secs(15);
/// The longest long poll (`GET messages?wait=`): a larger `wait` is shortened to this.
pub const MAX_WAIT_SECS: i64 = 60;
/// How long a client waits before reconnecting (the stream's `retry:` field), in milliseconds.
pub const RETRY_MS: u64 = 2000;
/// The content type of the stream.
pub const CONTENT_TYPE: &str = "text/event-stream";
/// The heartbeat: an SSE comment line.
pub const HEARTBEAT_CHUNK: &str = ": heartbeat\n\n";

/// A home's way of waiting for new mail in an agent's inbox.
pub trait InboxWatch {
    type Watcher: InboxWatcher;
    /// Whether this home can wait at all. When it cannot, the stream route answers 501 and a long
    /// poll answers at once.
    fn available(&self) -> bool {
        true
    }
    /// Starts watching `agent`'s inbox: every inbox row committed from now on wakes the watcher.
    /// Called before the first read, so nothing committed in between is missed.
    fn watch(&self, agent: &str) -> Self::Watcher;
}

/// One watcher of one inbox.
#[allow(async_fn_in_trait)]
pub trait InboxWatcher {
    /// Waits, at most `timeout`, until a row may have been committed to the inbox since the
    /// watcher was made or since the last wake; `true` when woken, `false` on time-out. A wake
    /// may be spurious (the caller reads and finds nothing). Cancel-safe: a wake is not lost when
    /// the future is dropped.
    ///
    /// `after_id` is the last inbox id the caller has read: a home whose waiting lives elsewhere
    /// (atp-worker's Durable Object, docs/design.md §5c) checks "any row after `after_id`?" and
    /// registers the waiter in one step, so a commit between the caller's read and the
    /// registration is not lost. A home that is notified in-process may ignore it.
    async fn wait(&mut self, after_id: i64, timeout: Duration) -> bool;
}

/// For homes that cannot wait (atp-worker on KV): no stream, long polls answer at once.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoWatch;

impl InboxWatch for NoWatch {
    type Watcher = NoWatch;
    fn available(&self) -> bool {
        false
    }
    fn watch(&self, _agent: &str) -> NoWatch {
        NoWatch
    }
}

impl InboxWatcher for NoWatch {
    async fn wait(&mut self, _after_id: i64, _timeout: Duration) -> bool {
        false
    }
}

/// How many streams and long polls may be open (docs/design.md §5b).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamLimits {
    /// Per agent (`[limits] streams_per_agent`).
    pub per_agent: usize,
    /// In all (`[limits] max_streams`).
    pub total: usize,
}

impl Default for StreamLimits {
    /// 8 per agent (a few devices and tabs), 10,000 in all.
    fn default() -> Self {
        StreamLimits { per_agent: 8, total: 10_000 }
    }
}

/// The open streams and long polls, per agent: what [`StreamLimits`] bounds. The table holds only
/// agents with something open, so it is bounded by [`StreamLimits::total`]. A list, each operation
/// one pass over it (at most 10,000 entries by default): a map would link one more hash table into
/// atp-worker's module (docs/design.md §4, the wasm's size).
#[derive(Debug, Default)]
pub struct StreamSlots {
    open: Mutex<Vec<(String, usize)>>,
}

fn count(open: &[(String, usize)], agent: &str) -> usize {
    open.iter().find(|(a, _)| a == agent).map_or(0, |(_, n)| *n)
}

/// A taken place among an agent's open streams, given back when dropped.
#[derive(Debug)]
pub struct StreamSlot {
    agent: String,
    slots: Arc<StreamSlots>,
}

impl StreamSlots {
    /// Takes a place for `agent`, or refuses with 429 `452 4.3.1` past a limit.
    pub fn take(self: &Arc<Self>, agent: &str, limits: StreamLimits) -> Result<StreamSlot, Rejection> {
        let mut open = self.open.lock().map_err(|_| Rejection::new(ErrorCode::Unavailable, "stream table poisoned"))?;
        let total: usize = open.iter().map(|(_, n)| n).sum();
        let mine = count(&open, agent);
        if mine >= limits.per_agent || total >= limits.total {
            let (what, max) = if mine >= limits.per_agent {
                ("for this agent", limits.per_agent)
            } else {
                ("on this server", limits.total)
            };
            return Err(Rejection::new(ErrorCode::TooManyStreams, format!("Too many open streams {what}"))
                .with("max_streams", max)
                .with("details", "close a stream or long poll of this agent, or retry later"));
        }
        match open.iter_mut().find(|(a, _)| a == agent) {
            Some((_, n)) => *n += 1,
            None => open.push((agent.to_owned(), 1)),
        }
        Ok(StreamSlot { agent: agent.to_owned(), slots: self.clone() })
    }

    /// Streams and long polls open now, in all.
    pub fn total(&self) -> usize {
        self.open.lock().map(|o| o.iter().map(|(_, n)| n).sum()).unwrap_or(0)
    }

    /// Streams and long polls open now for `agent`.
    pub fn open(&self, agent: &str) -> usize {
        self.open.lock().map(|o| count(&o, agent)).unwrap_or(0)
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        if let Ok(mut open) = self.slots.open.lock() {
            if let Some(i) = open.iter().position(|(a, _)| *a == self.agent) {
                open[i].1 -= 1;
                if open[i].1 == 0 {
                    open.swap_remove(i);
                }
            }
        }
    }
}

/// A stream the relay accepted ([`crate::relay::Handled::stream`]): the home serves it with an
/// [`InboxStream`].
#[derive(Debug, Clone)]
pub struct StreamOpen {
    /// The authenticated agent.
    pub agent: String,
    /// Events start after this inbox id.
    pub after_id: i64,
    /// The agent's place among its open streams, held while the stream lives.
    pub slot: Arc<StreamSlot>,
}

/// Where a stream starts: `Last-Event-ID` (a reconnecting `EventSource` sends it) wins over
/// `after_id`; both must be non-negative integers (an inbox id), or the answer is 400.
pub fn cursor(req: &ApiRequest) -> Result<i64, Rejection> {
    match req.header("last-event-id").map(str::trim).filter(|v| !v.is_empty()) {
        Some(v) => v.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
            Rejection::new(ErrorCode::BadRequest, "Invalid Last-Event-ID")
                .with("details", "Last-Event-ID must be a non-negative integer: the id of the last event received")
        }),
        None => req.params().int("after_id", 0),
    }
}

/// One message as an event: `id: <inbox id>`, `event: message`, `data: <the message JSON as
/// GET messages returns it>` (a line break in the JSON, which atp never writes, would continue
/// in another `data:` line, as SSE joins them).
pub fn event(row: &InboxRow) -> String {
    let mut out = String::with_capacity(row.json.len() + 40);
    out.push_str(&format!("id: {}\nevent: message\n", row.id));
    for line in row.json.split('\n') {
        out.push_str("data: ");
        out.push_str(line.strip_suffix('\r').unwrap_or(line));
        out.push('\n');
    }
    out.push('\n');
    out
}

/// The first chunk of every stream: a comment and the reconnection delay.
pub fn opening() -> String {
    format!(": atp inbox stream\nretry: {RETRY_MS}\n\n")
}

/// One agent's inbox as a stream of SSE chunks: the opening, then the backlog page by page, then
/// each new message as it is committed, with a heartbeat comment after [`HEARTBEAT`] of silence.
pub struct InboxStream<W> {
    agent: String,
    cursor: i64,
    watcher: W,
    /// The events of the last page read, not yet handed out.
    pending: std::vec::IntoIter<String>,
    opened: bool,
    pages: PageLimits,
    heartbeat: Duration,
    _slot: Arc<StreamSlot>,
}

impl<W: InboxWatcher> InboxStream<W> {
    /// The stream `open`, woken by `watcher` (made by [`InboxWatch::watch`] now, before any read).
    pub fn new(open: StreamOpen, watcher: W, pages: PageLimits) -> Self {
        InboxStream {
            agent: open.agent,
            cursor: open.after_id,
            watcher,
            pending: Vec::new().into_iter(),
            opened: false,
            pages,
            heartbeat: HEARTBEAT,
            _slot: open.slot,
        }
    }

    /// Sends heartbeats after `d` of silence instead of [`HEARTBEAT`] (tests).
    pub fn with_heartbeat(mut self, d: Duration) -> Self {
        self.heartbeat = d;
        self
    }

    /// The id of the last event handed out.
    pub fn last_id(&self) -> i64 {
        self.cursor
    }

    /// The next chunk to send. `None` ends the stream: the store failed, and the client resumes
    /// from its `Last-Event-ID` after [`RETRY_MS`].
    pub async fn next<S: MessageStore>(&mut self, store: &S) -> Option<String> {
        if !self.opened {
            self.opened = true;
            return Some(opening());
        }
        loop {
            if let Some(chunk) = self.pending.next() {
                return Some(chunk);
            }
            // Read after the last id handed out; the cursor moves only once the rows are queued,
            // so a dropped future loses nothing.
            let rows = store.inbox(&self.agent, self.cursor, self.pages.max_limit, self.pages.max_bytes).await.ok()?;
            if let Some(last) = rows.last() {
                self.cursor = last.id;
                self.pending = rows.iter().map(event).collect::<Vec<_>>().into_iter();
                continue;
            }
            if !self.watcher.wait(self.cursor, self.heartbeat).await {
                return Some(HEARTBEAT_CHUNK.to_owned());
            }
        }
    }
}
