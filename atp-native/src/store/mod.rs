//! The SQLite store (docs/design.md §3): one database file per domain (`<home>/data/<domain>.db`, so
//! servers of different domains may share a home), WAL with `synchronous=FULL`, versioned
//! migrations ([`schema`]), group commit through one writer thread ([`writer`]), and a small pool of
//! read connections used from `spawn_blocking`.
//!
//! A message is answered 202 only after [`Store::insert_message`] returned, i.e. after the batch
//! holding it was committed. Its dedup row `(sender domain, nonce, content hash)` is written in the
//! same transaction; [`DedupStore`] reads it back for the core's pipeline.

pub mod backend;
pub mod postgres;
pub mod queue;
pub mod schema;
pub mod watch;
pub mod writer;

pub use backend::{Backend, DatabaseUrl};
pub use postgres::PgStore;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex, RwLock};

use atp_wasm::env::{ContentHash, DedupStore, StoreError, StoreFault};
use atp_wasm::relay::store::{Ack, AgentStore, MessageStore};
use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::oneshot;

use queue::{Claimed, QueueOp, QueueResult};
use writer::Write;

/// Read connections kept open.
const READERS: usize = 4;
/// Most agent ids remembered as existing (agents are never deleted, so a hit is always right).
const KNOWN_AGENTS_MAX: usize = 100_000;
/// Most agents whose inbox usage is kept in memory.
const USAGE_CACHE_MAX: usize = 100_000;
/// Most rows one retention write removes (a long expiry does not hold the writer for long).
const EXPIRE_BATCH: usize = 10_000;

/// Why the database could not do something. Callers answer 503 (retry later), never 500.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("database commit failed: {0}")]
    Commit(writer::CommitFailure),
    #[error("database writer stopped")]
    WriterGone,
    #[error("database task failed: {0}")]
    Task(String),
    #[error("{0} is in use by another atp server (one server per domain and home)")]
    Locked(PathBuf),
    #[error("{path}: {source}")]
    Lock { path: PathBuf, source: std::io::Error },
    #[error(
        "the database has schema version {found}, newer than this atp knows ({known}): upgrade atp, or use \
         another database"
    )]
    SchemaTooNew { found: usize, known: usize },
}

/// What kind of storage trouble a [`DbError`] is, for the client's answer (`error.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The disk (or the file system's quota) is full: `SQLITE_FULL`, `ENOSPC`.
    Full,
    /// The data directory is read-only: `SQLITE_READONLY`, `EROFS`.
    ReadOnly,
    /// Anything else (I/O error, writer gone, …).
    Other,
}

impl Fault {
    /// Classifies a SQLite error by its primary result code.
    pub fn of_sqlite(e: &rusqlite::Error) -> Fault {
        match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DiskFull) => Fault::Full,
            Some(rusqlite::ErrorCode::ReadOnly) => Fault::ReadOnly,
            _ => Fault::Other,
        }
    }

    fn of_io(e: &std::io::Error) -> Fault {
        e.raw_os_error().map_or(Fault::Other, Fault::of_errno)
    }

    /// Classifies a system error number.
    pub fn of_errno(errno: i32) -> Fault {
        match errno {
            libc::ENOSPC | libc::EDQUOT => Fault::Full,
            libc::EROFS => Fault::ReadOnly,
            _ => Fault::Other,
        }
    }
}

impl DbError {
    /// Whether the write may have been committed after all (an I/O error inside `COMMIT`,
    /// [`writer::CommitFailure::unknown`]): the caller must not say "not stored".
    pub fn outcome_unknown(&self) -> bool {
        matches!(self, DbError::Commit(c) if c.unknown)
    }

    /// The kind of storage trouble this is.
    pub fn fault(&self) -> Fault {
        match self {
            DbError::Sqlite(e) => Fault::of_sqlite(e),
            DbError::Commit(c) => c.fault,
            DbError::Lock { source, .. } => Fault::of_io(source),
            DbError::WriterGone | DbError::Task(_) | DbError::Locked(_) | DbError::SchemaTooNew { .. } => Fault::Other,
        }
    }
}

/// The core's message types (docs/design.md §1): the relay hands these to the store.
pub use atp_wasm::relay::store::{
    InboxRow, MessageInfo, MessageStatus as Status, NewMessage, QueueCounts, Stored, Usage,
};

impl From<DbError> for StoreError {
    /// What the relay tells the client (docs/protocol.md §6.4).
    fn from(e: DbError) -> Self {
        let fault = match e.fault() {
            Fault::Full => StoreFault::Full,
            Fault::ReadOnly => StoreFault::ReadOnly,
            Fault::Other => StoreFault::Unavailable,
        };
        StoreError::with_fault(fault, e.outcome_unknown(), e.to_string())
    }
}

/// The byte bound of an inbox page (the rule of [`atp_wasm::relay::store::within_page`]) for
/// stores that look at each row's length before reading it: the first row always comes, later ones
/// while the total stays within `max_bytes`.
pub(crate) struct PageBudget {
    max_bytes: usize,
    bytes: usize,
    rows: usize,
}

impl PageBudget {
    pub(crate) fn new(max_bytes: usize) -> Self {
        PageBudget { max_bytes, bytes: 0, rows: 0 }
    }

    /// Whether a row of `len` bytes joins the page (counting it if so).
    pub(crate) fn admits(&mut self, len: usize) -> bool {
        if self.rows > 0 && self.bytes.saturating_add(len) > self.max_bytes {
            return false;
        }
        self.bytes = self.bytes.saturating_add(len);
        self.rows += 1;
        true
    }
}

/// Handle to one domain's database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    writer: mpsc::Sender<Write>,
    readers: Arc<Mutex<Vec<Connection>>>,
    known_agents: Arc<RwLock<HashSet<String>>>,
    /// Inbox usage per agent ([`Store::usage`]): read from `inbox_usage` once, then kept up to
    /// date by this process's own writes (one process owns the database), so the quota check of
    /// a submission costs no database read.
    usage: Arc<Mutex<std::collections::HashMap<String, Usage>>>,
    path: PathBuf,
    /// Wakes inbox streams when a row is committed to their inbox ([`watch`]).
    hub: watch::InboxHub,
    /// Held (locked) while the store is open: one process per database.
    _lock: Arc<std::fs::File>,
}

impl Store {
    /// Opens (creating and migrating) the database at `path` and starts its writer thread.
    pub fn open(path: &Path) -> Result<Self, DbError> {
        let lock_path = path.with_extension("lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|source| DbError::Lock { path: lock_path.clone(), source })?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(DbError::Locked(path.to_owned())),
            Err(std::fs::TryLockError::Error(source)) => return Err(DbError::Lock { path: lock_path, source }),
        }
        let mut conn = schema::connect(path)?;
        schema::migrate(&mut conn)?;
        let readers = (0..READERS).map(|_| schema::connect(path)).collect::<Result<Vec<_>, _>>()?;
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("atp-db-writer".into())
            .spawn(move || writer::run(conn, rx))
            .map_err(|e| DbError::Task(e.to_string()))?;
        Ok(Store {
            writer: tx,
            readers: Arc::new(Mutex::new(readers)),
            known_agents: Arc::default(),
            usage: Arc::default(),
            path: path.to_owned(),
            hub: watch::InboxHub::default(),
            _lock: Arc::new(lock),
        })
    }

    async fn write<T>(&self, make: impl FnOnce(oneshot::Sender<Result<T, DbError>>) -> Write) -> Result<T, DbError> {
        let (tx, rx) = oneshot::channel();
        self.writer.send(make(tx)).map_err(|_| DbError::WriterGone)?;
        rx.await.map_err(|_| DbError::WriterGone)?
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, DbError> {
        let readers = self.readers.clone();
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let pooled = readers.lock().ok().and_then(|mut v| v.pop());
            let conn = match pooled {
                Some(c) => c,
                None => schema::connect(&path)?,
            };
            let r = f(&conn);
            if let Ok(mut v) = readers.lock() {
                if v.len() < READERS {
                    v.push(conn);
                }
            }
            Ok(r?)
        })
        .await
        .map_err(|e| DbError::Task(e.to_string()))?
    }

    /// Stores a message durably (committed before this returns), with its dedup row.
    pub async fn insert_message(&self, m: NewMessage) -> Result<Stored, DbError> {
        let (to, bytes, delivered) = (m.to_id.clone(), m.json.len() as u64, m.status == Status::Delivered);
        let stored = self.write(|reply| Write::Message(m, reply)).await;
        if delivered && matches!(stored, Ok(Stored::New(_))) {
            if let Some(u) = self.usage.lock().ok().as_mut().and_then(|c| c.get_mut(&to)) {
                u.messages += 1;
                u.bytes += bytes;
            }
            self.hub.notify(&to);
        } else if delivered && stored.is_err() {
            // The outcome may be unknown: read the usage again next time.
            self.forget_usage(&to);
        }
        stored
    }

    /// The in-process notification of new inbox rows, for the relay's streams and long polls.
    pub fn hub(&self) -> &watch::InboxHub {
        &self.hub
    }

    /// Removes the agent's acknowledged inbox messages and frees their quota
    /// ([`writer::ack`]).
    pub async fn ack(&self, agent: &str, ack: &Ack) -> Result<u64, DbError> {
        let (agent, ack) = (agent.to_owned(), ack.clone());
        let key = agent.clone();
        let r = self.write(|reply| Write::Ack { agent, ack, reply }).await;
        self.forget_usage(&key);
        r
    }

    /// Removes inbox messages stored before `before`, in batches of [`EXPIRE_BATCH`]; returns how
    /// many.
    pub async fn expire(&self, before: i64) -> Result<u64, DbError> {
        let mut total = 0;
        loop {
            let r = self.write(|reply| Write::Expire { before, limit: EXPIRE_BATCH, reply }).await;
            if let Ok(mut c) = self.usage.lock() {
                c.clear();
            }
            let n = r?;
            total += n;
            if n < EXPIRE_BATCH as u64 {
                return Ok(total);
            }
        }
    }

    fn forget_usage(&self, agent: &str) {
        if let Ok(mut c) = self.usage.lock() {
            c.remove(agent);
        }
    }

    /// Applies a transition of the outbound queue ([`queue`]); returns the rows it changed.
    pub async fn queue(&self, op: QueueOp) -> Result<usize, DbError> {
        let notice_to = match &op {
            QueueOp::Bounce { notice, .. } => Some(notice.to_id.clone()),
            _ => None,
        };
        let result = self.write(|reply| Write::Queue(op, reply)).await;
        if let Some(to) = notice_to {
            // A bounce notice lands in the sender's inbox: read its usage again next time, and
            // wake the sender's streams.
            self.forget_usage(&to);
            if matches!(result, Ok(QueueResult::Changed(1))) {
                self.hub.notify(&to);
            }
        }
        match result? {
            QueueResult::Changed(n) => Ok(n),
            QueueResult::Claimed(rows) => Ok(rows.len()),
        }
    }

    /// Leases due rows for delivery ([`QueueOp::Claim`]).
    pub async fn claim(
        &self,
        now: i64,
        lease_until: i64,
        limit: usize,
        blocked: Vec<String>,
    ) -> Result<Vec<Claimed>, DbError> {
        match self.write(|reply| Write::Queue(QueueOp::Claim { now, lease_until, limit, blocked }, reply)).await? {
            QueueResult::Claimed(rows) => Ok(rows),
            QueueResult::Changed(_) => Ok(Vec::new()),
        }
    }

    /// The earliest due time among waiting rows of domains not in `blocked` (the engine sleeps
    /// until then; a blocked domain is looked at again when its backoff ends).
    pub async fn next_due(&self, blocked: Vec<String>) -> Result<Option<i64>, DbError> {
        let blocked = serde_json::to_string(&blocked).unwrap_or_else(|_| "[]".into());
        self.read(move |c| {
            c.query_row(
                "SELECT min(t) FROM (
                   SELECT min(next_attempt_at) AS t FROM messages WHERE status IN ('queued', 'failed')
                     AND coalesce(dest_domain, '') NOT IN (SELECT value FROM json_each(?1))
                   UNION ALL SELECT min(lease_until) FROM messages WHERE status = 'delivering')",
                [blocked],
                |r| r.get(0),
            )
        })
        .await
    }

    /// Registers an agent; false if the id is taken.
    pub async fn insert_agent(&self, id: &str, hash: &str, now: i64) -> Result<bool, DbError> {
        let (id, hash) = (id.to_owned(), hash.to_owned());
        self.write(|reply| Write::Agent { id, hash, now, reply }).await
    }

    /// Forgets dedup entries accepted before `before` (past the retry horizon).
    pub async fn prune_dedup(&self, before: i64) -> Result<usize, DbError> {
        self.write(|reply| Write::PruneDedup { before, reply }).await
    }

    /// Commits everything sent so far and stops the writer; later writes fail with
    /// [`DbError::WriterGone`].
    pub async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.writer.send(Write::Close(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// The password hash of an agent.
    pub async fn agent_hash(&self, id: &str) -> Result<Option<String>, DbError> {
        let id = id.to_owned();
        self.read(move |c| {
            c.prepare_cached("SELECT password_hash FROM agents WHERE agent_id = ?1")?
                .query_row([id], |r| r.get(0))
                .optional()
        })
        .await
    }

    /// Whether `id` is a registered agent. Positive answers are remembered (agents are never
    /// removed), so the recipient check of a busy inbox costs no database read.
    pub async fn agent_exists(&self, id: &str) -> Result<bool, DbError> {
        if self.known_agents.read().is_ok_and(|k| k.contains(id)) {
            return Ok(true);
        }
        let exists = self.agent_hash(id).await?.is_some();
        if exists {
            self.remember_agent(id);
        }
        Ok(exists)
    }

    fn remember_agent(&self, id: &str) {
        if let Ok(mut k) = self.known_agents.write() {
            if k.len() >= KNOWN_AGENTS_MAX {
                k.clear();
            }
            k.insert(id.to_owned());
        }
    }

    /// Registered agents, oldest first.
    pub async fn agents(&self) -> Result<Vec<String>, DbError> {
        self.read(|c| {
            let mut st = c.prepare_cached("SELECT agent_id FROM agents ORDER BY created_at, rowid")?;
            let rows = st.query_map([], |r| r.get(0))?;
            rows.collect()
        })
        .await
    }

    /// An agent's inbox after row `after_id`, oldest first: at most `limit` rows and, past the
    /// first, at most `max_bytes` of message JSON (rows are read one by one, so a page of large
    /// messages never holds more than that in memory, docs/design.md §5b).
    pub async fn inbox(
        &self,
        agent: &str,
        after_id: i64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<InboxRow>, DbError> {
        let agent = agent.to_owned();
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT id, message_json FROM messages WHERE to_id = ?1 AND status = 'delivered' AND id > ?2
                 ORDER BY id LIMIT ?3",
            )?;
            let mut rows = st.query(params![agent, after_id, limit as i64])?;
            let mut out = Vec::new();
            let mut page = PageBudget::new(max_bytes);
            while let Some(r) = rows.next()? {
                // The length first: a row that would pass the limit is not read at all.
                if !page.admits(r.get_ref(1)?.as_bytes().map(<[u8]>::len).unwrap_or(0)) {
                    break;
                }
                out.push(InboxRow { id: r.get(0)?, json: r.get(1)? });
            }
            Ok(out)
        })
        .await
    }

    /// What an agent's inbox holds (kept by [`writer::store_message`] in `inbox_usage`).
    pub async fn usage(&self, agent: &str) -> Result<Usage, DbError> {
        if let Some(u) = self.usage.lock().ok().and_then(|c| c.get(agent).copied()) {
            return Ok(u);
        }
        let u = self.read_usage(agent).await?;
        if let Ok(mut c) = self.usage.lock() {
            if c.len() >= USAGE_CACHE_MAX {
                c.clear();
            }
            c.insert(agent.to_owned(), u);
        }
        Ok(u)
    }

    async fn read_usage(&self, agent: &str) -> Result<Usage, DbError> {
        let agent = agent.to_owned();
        self.read(move |c| {
            let row: Option<(i64, i64)> = c
                .prepare_cached("SELECT messages, bytes FROM inbox_usage WHERE agent_id = ?1")?
                .query_row([agent], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            let (messages, bytes) = row.unwrap_or_default();
            Ok(Usage { messages: messages.max(0) as u64, bytes: bytes.max(0) as u64 })
        })
        .await
    }

    /// The newest message with this nonce.
    pub async fn inspect(&self, nonce: &str) -> Result<Option<MessageInfo>, DbError> {
        let nonce = nonce.to_owned();
        self.read(move |c| {
            c.prepare_cached(
                "SELECT nonce, from_id, to_id, status, created_at, updated_at, attempts, next_attempt_at, last_error
                 FROM messages WHERE nonce = ?1 ORDER BY id DESC LIMIT 1",
            )?
            .query_row([nonce], |r| {
                Ok(MessageInfo {
                    nonce: r.get(0)?,
                    from: r.get(1)?,
                    to: r.get(2)?,
                    status: r.get(3)?,
                    created_at: r.get(4)?,
                    updated_at: r.get(5)?,
                    attempts: r.get(6)?,
                    next_attempt_at: r.get(7)?,
                    error: r.get(8)?,
                })
            })
            .optional()
        })
        .await
    }

    /// The backoff of every destination domain blocked at `now` ([`queue::backoffs`]).
    pub async fn backoffs(&self, now: i64) -> Result<Vec<(String, atp_wasm::delivery::Backoff)>, DbError> {
        self.read(move |c| queue::backoffs(c, now)).await
    }

    /// Records a domain's backoff (`None`: it answered, forget it).
    pub async fn set_backoff(&self, domain: &str, backoff: Option<atp_wasm::delivery::Backoff>) -> Result<(), DbError> {
        self.queue(QueueOp::Backoff { domain: domain.to_owned(), backoff }).await.map(|_| ())
    }

    /// Adds to the domain's counters ([`writer::add_counters`]), committed before this returns.
    pub async fn add_counters(&self, now: i64, deltas: &[(String, u64)]) -> Result<(), DbError> {
        let deltas = deltas.to_vec();
        self.write(|reply| Write::Counters { now, deltas, reply }).await
    }

    /// The domain's counters by name.
    pub async fn counters(&self) -> Result<Vec<(String, u64)>, DbError> {
        self.read(|c| {
            let mut st = c.prepare_cached(atp_wasm::sqlite_schema::counters::ALL)?;
            let rows = st.query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)?.max(0) as u64)))?;
            rows.collect()
        })
        .await
    }

    /// Message counts per status, and the number of registered agents.
    pub async fn counts(&self) -> Result<(QueueCounts, i64), DbError> {
        self.read(|c| {
            let mut st = c.prepare_cached("SELECT status, COUNT(*) FROM messages GROUP BY status")?;
            let by_status = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?;
            let agents = c.query_row("SELECT COUNT(*) FROM agents", [], |r| r.get(0))?;
            Ok((QueueCounts { by_status }, agents))
        })
        .await
    }
}

impl DedupStore for Store {
    async fn seen(&self, sender_domain: &str, nonce: &str) -> Result<Option<ContentHash>, StoreError> {
        let (d, n) = (sender_domain.to_owned(), nonce.to_owned());
        let hash: Option<Vec<u8>> = self
            .read(move |c| {
                c.prepare_cached("SELECT content_hash FROM dedup WHERE sender_domain = ?1 AND nonce = ?2")?
                    .query_row([d, n], |r| r.get(0))
                    .optional()
            })
            .await?;
        Ok(hash.and_then(|h| h.try_into().ok()))
    }
}

impl AgentStore for Store {
    async fn agent_hash(&self, id: &str) -> Result<Option<String>, StoreError> {
        Ok(Store::agent_hash(self, id).await?)
    }
    async fn agent_exists(&self, id: &str) -> Result<bool, StoreError> {
        Ok(Store::agent_exists(self, id).await?)
    }
    async fn insert_agent(&self, id: &str, hash: &str, now: i64) -> Result<bool, StoreError> {
        Ok(Store::insert_agent(self, id, hash, now).await?)
    }
    async fn agent_ids(&self) -> Result<Vec<String>, StoreError> {
        Ok(self.agents().await?)
    }
}

impl MessageStore for Store {
    async fn store_message(&self, m: NewMessage) -> Result<Stored, StoreError> {
        Ok(self.insert_message(m).await?)
    }
    async fn inbox(
        &self,
        agent: &str,
        after: i64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<InboxRow>, StoreError> {
        Ok(Store::inbox(self, agent, after, limit, max_bytes).await?)
    }
    async fn message_info(&self, nonce: &str) -> Result<Option<MessageInfo>, StoreError> {
        Ok(self.inspect(nonce).await?)
    }
    async fn queue_counts(&self) -> Result<QueueCounts, StoreError> {
        Ok(self.counts().await?.0)
    }
    async fn usage(&self, agent: &str) -> Result<Usage, StoreError> {
        Ok(Store::usage(self, agent).await?)
    }
    async fn ack(&self, agent: &str, ack: &Ack) -> Result<u64, StoreError> {
        Ok(Store::ack(self, agent, ack).await?)
    }
    async fn expire(&self, before: i64) -> Result<u64, StoreError> {
        Ok(Store::expire(self, before).await?)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A delivered message from `x@a.test` (the SQLite and PostgreSQL stores' tests).
    pub(crate) fn msg(nonce: &str, hash: u8, to: &str) -> NewMessage {
        NewMessage {
            nonce: nonce.into(),
            sender_domain: "a.test".into(),
            from_id: "x@a.test".into(),
            to_id: to.into(),
            json: format!("{{\"nonce\":\"{nonce}\"}}"),
            status: Status::Delivered,
            content_hash: [hash; 32],
            now: 100,
        }
    }

    /// Usage is counted in the transaction (inbox_usage) and kept in memory afterwards; a reopened
    /// store reads the same figures back.
    #[tokio::test]
    async fn inbox_usage_for_quotas() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("a.test.db")).unwrap();
        assert_eq!(store.usage("u@a.test").await.unwrap(), Usage::default());
        let (m1, m2) = (msg("u1", 1, "u@a.test"), msg("u2", 2, "u@a.test"));
        let bytes = (m1.json.len() + m2.json.len()) as u64;
        store.insert_message(m1.clone()).await.unwrap();
        store.insert_message(m2).await.unwrap();
        assert_eq!(store.insert_message(m1).await.unwrap(), Stored::Duplicate, "a repeat is not counted");
        let mut queued = msg("u3", 3, "u@a.test");
        queued.status = Status::Queued;
        store.insert_message(queued).await.unwrap();
        let want = Usage { messages: 2, bytes };
        assert_eq!(store.usage("u@a.test").await.unwrap(), want);
        assert_eq!(store.read_usage("u@a.test").await.unwrap(), want, "the database agrees");
        store.close().await;
        drop(store);
        let again = Store::open(&dir.path().join("a.test.db")).unwrap();
        assert_eq!(again.usage("u@a.test").await.unwrap(), want);
    }

    /// Acknowledgement and expiry remove inbox rows only — the agent's own, never another's, never
    /// outbound rows — free their quota in the same transaction, and wake nobody.
    #[tokio::test]
    async fn ack_and_expire_free_quota() {
        use atp_wasm::relay::stream::{InboxWatch, InboxWatcher};
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("a.test.db")).unwrap();
        let mut watcher = store.hub().watch("u@a.test");
        let mut ids = Vec::new();
        for (i, to) in ["u@a.test", "u@a.test", "v@a.test", "u@a.test"].into_iter().enumerate() {
            let mut m = msg(&format!("k{i}"), 1, to);
            m.now = 100 + i as i64;
            let Stored::New(id) = store.insert_message(m).await.unwrap() else { panic!() };
            ids.push(id);
        }
        assert!(watcher.wait(0, std::time::Duration::from_secs(30)).await, "a commit to u's inbox wakes u's watcher");
        let mut queued = msg("out", 1, "z@b.test");
        queued.status = Status::Queued;
        queued.now = 1;
        store.insert_message(queued).await.unwrap();
        let len = msg("k0", 1, "u@a.test").json.len() as u64;
        assert_eq!(store.usage("u@a.test").await.unwrap(), Usage { messages: 3, bytes: 3 * len });
        // v's message (ids[2]) is not u's to remove.
        assert_eq!(store.ack("u@a.test", &Ack::Ids(vec![ids[0], ids[2]])).await.unwrap(), 1);
        assert_eq!(store.inbox("v@a.test", 0, 10, usize::MAX).await.unwrap().len(), 1);
        assert_eq!(store.usage("u@a.test").await.unwrap(), Usage { messages: 2, bytes: 2 * len });
        assert_eq!(store.ack("u@a.test", &Ack::UpTo(ids[2])).await.unwrap(), 1, "ids[1] only");
        let left: Vec<i64> = store.inbox("u@a.test", 0, 10, usize::MAX).await.unwrap().iter().map(|r| r.id).collect();
        assert_eq!(left, [ids[3]]);
        assert_eq!(store.read_usage("u@a.test").await.unwrap(), Usage { messages: 1, bytes: len }, "on disk too");
        assert!(store.seen("a.test", "k0").await.unwrap().is_some(), "dedup records stay");
        // Expiry: v's message (stored at 102) goes, u's (103) stays; the old outbound row stays.
        assert_eq!(store.expire(103).await.unwrap(), 1);
        assert!(store.inbox("v@a.test", 0, 10, usize::MAX).await.unwrap().is_empty());
        assert_eq!(store.read_usage("v@a.test").await.unwrap(), Usage::default());
        assert_eq!(store.usage("u@a.test").await.unwrap().messages, 1);
        assert_eq!(store.inspect("out").await.unwrap().unwrap().status, "queued");
        assert_eq!(store.expire(1000).await.unwrap(), 1);
        assert_eq!(store.usage("u@a.test").await.unwrap(), Usage::default());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn group_commit_dedup_and_reads() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("a.test.db")).unwrap();
        // many concurrent writers share commits
        let tasks: Vec<_> = (0..300)
            .map(|i| {
                let s = store.clone();
                tokio::spawn(async move { s.insert_message(msg(&format!("n{i}"), 1, "b@a.test")).await })
            })
            .collect();
        for t in tasks {
            assert!(matches!(t.await.unwrap().unwrap(), Stored::New(_)));
        }
        assert_eq!(store.insert_message(msg("n1", 1, "b@a.test")).await.unwrap(), Stored::Duplicate);
        assert_eq!(store.insert_message(msg("n1", 2, "b@a.test")).await.unwrap(), Stored::Replay);
        let mut other_domain = msg("n1", 2, "b@a.test");
        other_domain.sender_domain = "b.test".into();
        assert!(matches!(store.insert_message(other_domain).await.unwrap(), Stored::New(_)), "per sender domain");
        assert_eq!(store.seen("a.test", "n1").await.unwrap(), Some([1; 32]));
        assert_eq!(store.seen("other.test", "n1").await.unwrap(), None);
        let page = store.inbox("b@a.test", 0, 50, usize::MAX).await.unwrap();
        assert_eq!(page.len(), 50);
        let next = store.inbox("b@a.test", page[49].id, 500, usize::MAX).await.unwrap();
        assert_eq!(next.len(), 251);
        // Pages are bounded in bytes too (rows differ in length: the bound is what the first three
        // take); the first row always comes.
        let three: usize = page[..3].iter().map(|r| r.json.len()).sum();
        assert_eq!(store.inbox("b@a.test", 0, 50, three).await.unwrap().len(), 3);
        assert_eq!(store.inbox("b@a.test", 0, 50, 1).await.unwrap().len(), 1);
        assert!(store.insert_agent("b@a.test", "h", 1).await.unwrap());
        assert!(!store.insert_agent("b@a.test", "h2", 2).await.unwrap());
        assert_eq!(store.agent_hash("b@a.test").await.unwrap().as_deref(), Some("h"));
        assert!(store.agent_exists("b@a.test").await.unwrap());
        assert!(!store.agent_exists("c@a.test").await.unwrap());
        let (queue, agents) = store.counts().await.unwrap();
        assert_eq!((agents, queue.get("delivered")), (1, 301));
        assert_eq!(store.inspect("n7").await.unwrap().unwrap().status, "delivered");
        assert!(store.inspect("zzz").await.unwrap().is_none());
        assert_eq!(store.prune_dedup(101).await.unwrap(), 301);
        store.close().await;
        assert!(matches!(store.insert_message(msg("late", 1, "b@a.test")).await, Err(DbError::WriterGone)));
        drop(store);
        // reopening keeps everything and does not re-run migrations
        let again = Store::open(&dir.path().join("a.test.db")).unwrap();
        assert_eq!(again.counts().await.unwrap().1, 1);
        assert_eq!(again.agents().await.unwrap(), vec!["b@a.test".to_string()]);
    }

    #[tokio::test]
    async fn queue_transitions() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("a.test.db")).unwrap();
        assert!(matches!(Store::open(&dir.path().join("a.test.db")), Err(DbError::Locked(_))), "one process");
        for (n, to) in [("q1", "z@b.test"), ("q2", "y@c.test"), ("q3", "x@B.Test")] {
            let mut m = msg(n, 1, to);
            m.status = Status::Queued;
            store.insert_message(m).await.unwrap();
        }
        // c.test is backing off: only b.test rows are leased
        let rows = store.claim(100, 400, 10, vec!["c.test".into()]).await.unwrap();
        assert_eq!(rows.iter().map(|r| r.nonce.as_str()).collect::<Vec<_>>(), ["q1", "q3"]);
        assert_eq!(rows[1].dest_domain, "b.test");
        assert!(store.claim(100, 400, 10, vec!["c.test".into()]).await.unwrap().is_empty(), "leased");
        // a lease that ran out is claimable again
        let again = store.claim(401, 700, 10, vec!["c.test".into()]).await.unwrap();
        assert_eq!(again.len(), 2);
        let (q1, q3) = (again[0].id, again[1].id);
        assert_eq!(
            store.queue(QueueOp::Retry { id: q1, now: 402, next_at: 500, error: "451: down".into() }).await.unwrap(),
            1
        );
        assert_eq!(store.queue(QueueOp::Delivered { id: q3, now: 402 }).await.unwrap(), 1);
        assert_eq!(store.queue(QueueOp::Delivered { id: q3, now: 403 }).await.unwrap(), 0, "settled once");
        let info = store.inspect("q1").await.unwrap().unwrap();
        assert_eq!((info.status.as_str(), info.attempts, info.next_attempt_at), ("failed", 1, Some(500)));
        assert_eq!(info.error.as_deref(), Some("451: down"));
        assert_eq!(store.next_due(vec![]).await.unwrap(), Some(100), "q2 (c.test) is due");
        assert_eq!(store.next_due(vec!["c.test".into()]).await.unwrap(), Some(500), "q1 (b.test) next");
        // the domain answers again: its waiting rows are due now
        assert_eq!(store.queue(QueueOp::Wake { domain: "b.test".into(), now: 410 }).await.unwrap(), 1);
        let q1 = store.claim(410, 700, 10, vec!["c.test".into()]).await.unwrap();
        assert_eq!(q1.len(), 1);
        // a bounce marks the row and stores the notice in one transaction
        let mut notice = msg("notice-1", 9, "x@a.test");
        notice.sender_domain = "a.test".into();
        let op =
            QueueOp::Bounce { id: q1[0].id, now: 411, error: "550 5.7.26: denied".into(), notice: Box::new(notice) };
        assert_eq!(store.queue(op).await.unwrap(), 1);
        assert_eq!(store.inspect("q1").await.unwrap().unwrap().status, "bounced");
        assert_eq!(store.inbox("x@a.test", 0, 10, usize::MAX).await.unwrap().len(), 1);
        // a crash mid-attempt: at start-up every leased row is released
        let q2 = store.claim(420, 720, 10, vec![]).await.unwrap();
        assert_eq!(q2.len(), 1);
        assert_eq!(store.queue(QueueOp::Recover { now: 430 }).await.unwrap(), 1);
        let info = store.inspect("q2").await.unwrap().unwrap();
        assert_eq!((info.status.as_str(), info.next_attempt_at), ("queued", Some(430)));
        assert_eq!(store.queue(QueueOp::Release { id: q2[0].id, next_at: 1 }).await.unwrap(), 0, "not leased");
    }

    #[tokio::test]
    async fn queued_rows_are_due_now() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("a.test.db")).unwrap();
        let mut m = msg("q1", 1, "z@b.test");
        m.status = Status::Queued;
        store.insert_message(m).await.unwrap();
        let info = store.inspect("q1").await.unwrap().unwrap();
        assert_eq!((info.status.as_str(), info.next_attempt_at, info.attempts), ("queued", Some(100), 0));
    }
}
