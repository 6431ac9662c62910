//! The SQLite store (design.md §3 "202 means durable"): one database per domain, WAL with
//! `synchronous=FULL`, versioned migrations, and **group commit** — one writer thread owns the write
//! connection, drains every pending write request into one transaction, commits (one fsync for the
//! whole batch) and only then answers each request. Reads use a small pool of read connections.

use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};

use atp_wasm::env::{ContentHash, DedupStore, StoreError};
use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::oneshot;

/// Schema migrations; `PRAGMA user_version` is the number applied.
const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE agents(
    agent_id TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE messages(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    nonce TEXT NOT NULL,
    sender_domain TEXT NOT NULL,
    from_id TEXT NOT NULL,
    to_id TEXT NOT NULL,
    message_json TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER,
    lease_until INTEGER,
    last_error TEXT
);
CREATE INDEX messages_inbox ON messages(to_id, status, id);
CREATE INDEX messages_queue ON messages(status, next_attempt_at);
CREATE INDEX messages_nonce ON messages(nonce);
CREATE TABLE dedup(
    sender_domain TEXT NOT NULL,
    nonce TEXT NOT NULL,
    content_hash BLOB NOT NULL,
    accepted_at INTEGER NOT NULL,
    PRIMARY KEY(sender_domain, nonce)
);
"#];

/// Most write requests committed in one transaction.
const MAX_BATCH: usize = 512;
/// Read connections kept open.
const READERS: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("database writer stopped")]
    WriterGone,
    #[error("database task failed: {0}")]
    Join(String),
}

/// Message states (the delivery engine moves `queued` ones).
pub mod status {
    pub const DELIVERED: &str = "delivered";
    pub const QUEUED: &str = "queued";
}

/// A message to store, with its dedup key.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub nonce: String,
    pub sender_domain: String,
    pub from_id: String,
    pub to_id: String,
    pub json: String,
    pub status: &'static str,
    pub content_hash: ContentHash,
    pub now: i64,
}

/// What storing a message did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// Committed under this row id.
    New(i64),
    /// An exact repeat of a message already stored: nothing written.
    Duplicate,
    /// The nonce is taken by other content.
    Replay,
}

enum Write {
    Message(NewMessage, oneshot::Sender<Result<Stored, DbError>>),
    Agent { id: String, hash: String, now: i64, reply: oneshot::Sender<Result<bool, DbError>> },
    Prune { before: i64, reply: oneshot::Sender<Result<usize, DbError>> },
}

/// A stored message as the inbox returns it.
#[derive(Debug, Clone)]
pub struct InboxRow {
    pub id: i64,
    pub json: String,
}

/// Row counts per status, and the number of registered agents.
#[derive(Debug, Clone, Default)]
pub struct Counts {
    pub by_status: Vec<(String, i64)>,
    pub agents: i64,
}

/// What `inspect` shows of a message.
#[derive(Debug, Clone)]
pub struct MessageInfo {
    pub nonce: String,
    pub from: String,
    pub to: String,
    pub status: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub attempts: i64,
    pub next_attempt_at: Option<i64>,
    pub error: Option<String>,
}

/// Handle to one domain's database.
#[derive(Clone)]
pub struct Store {
    writer: mpsc::Sender<Write>,
    readers: Arc<Mutex<Vec<Connection>>>,
    path: PathBuf,
}

fn open(path: &Path) -> Result<Connection, DbError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(conn)
}

fn migrate(conn: &mut Connection) -> Result<(), DbError> {
    let version: usize = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i + 1)?;
        tx.commit()?;
    }
    Ok(())
}

fn store_message(tx: &Connection, m: &NewMessage) -> Result<Stored, rusqlite::Error> {
    let inserted = tx.execute(
        "INSERT INTO dedup(sender_domain, nonce, content_hash, accepted_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT DO NOTHING",
        params![m.sender_domain, m.nonce, &m.content_hash[..], m.now],
    )?;
    if inserted == 0 {
        let existing: Vec<u8> = tx.query_row(
            "SELECT content_hash FROM dedup WHERE sender_domain = ?1 AND nonce = ?2",
            params![m.sender_domain, m.nonce],
            |r| r.get(0),
        )?;
        return Ok(if existing == m.content_hash { Stored::Duplicate } else { Stored::Replay });
    }
    tx.execute(
        "INSERT INTO messages(nonce, sender_domain, from_id, to_id, message_json, status, created_at, updated_at,
                              next_attempt_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, CASE WHEN ?6 = 'queued' THEN ?7 END)",
        params![m.nonce, m.sender_domain, m.from_id, m.to_id, m.json, m.status, m.now],
    )?;
    Ok(Stored::New(tx.last_insert_rowid()))
}

/// Answers one write request once the batch's commit outcome (an error text, or none) is known.
type Reply = Box<dyn FnOnce(Option<&str>) + Send>;

/// Applies one request inside the batch transaction, in a savepoint so that its failure does not
/// undo the others; returns the reply to send after the commit.
fn in_savepoint<T>(
    tx: &mut rusqlite::Transaction,
    f: impl FnOnce(&Connection) -> Result<T, rusqlite::Error>,
) -> Result<T, rusqlite::Error> {
    let sp = tx.savepoint()?;
    let r = f(&sp)?;
    sp.commit()?;
    Ok(r)
}

fn apply(tx: &mut rusqlite::Transaction, w: Write) -> Reply {
    match w {
        Write::Message(m, reply) => {
            let r = in_savepoint(tx, |t: &Connection| store_message(t, &m));
            Box::new(move |commit_err| {
                let _ = reply.send(match (r, commit_err) {
                    (Ok(s), None) => Ok(s),
                    (Err(e), _) => Err(e.into()),
                    (_, Some(e)) => Err(DbError::Join(e.to_owned())),
                });
            })
        }
        Write::Agent { id, hash, now, reply } => {
            let r = in_savepoint(tx, |t: &Connection| {
                t.execute(
                "INSERT INTO agents(agent_id, password_hash, created_at) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
                params![id, hash, now],
            )
            });
            Box::new(move |commit_err| {
                let _ = reply.send(match (r, commit_err) {
                    (Ok(n), None) => Ok(n == 1),
                    (Err(e), _) => Err(e.into()),
                    (_, Some(e)) => Err(DbError::Join(e.to_owned())),
                });
            })
        }
        Write::Prune { before, reply } => {
            let r = in_savepoint(tx, |t: &Connection| {
                t.execute("DELETE FROM dedup WHERE accepted_at < ?1", params![before])
            });
            Box::new(move |commit_err| {
                let _ = reply.send(match (r, commit_err) {
                    (Ok(n), None) => Ok(n),
                    (Err(e), _) => Err(e.into()),
                    (_, Some(e)) => Err(DbError::Join(e.to_owned())),
                });
            })
        }
    }
}

fn writer_loop(mut conn: Connection, rx: mpsc::Receiver<Write>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(w) => batch.push(w),
                Err(_) => break,
            }
        }
        let mut replies = Vec::with_capacity(batch.len());
        let outcome = (|| -> Result<(), rusqlite::Error> {
            let mut tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            for w in batch.drain(..) {
                replies.push(apply(&mut tx, w));
            }
            tx.commit()
        })();
        let err = outcome.err().map(|e| e.to_string());
        if let Some(e) = &err {
            tracing::error!(error = %e, "database commit failed");
        }
        for reply in replies {
            reply(err.as_deref());
        }
        // Requests dropped unapplied (begin failed) see their reply channel closed.
    }
}

impl Store {
    /// Opens (creating and migrating) the database at `path` and starts its writer thread.
    pub fn open(path: &Path) -> Result<Self, DbError> {
        let mut conn = open(path)?;
        migrate(&mut conn)?;
        let readers = (0..READERS).map(|_| open(path)).collect::<Result<Vec<_>, _>>()?;
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("atp-db-writer".into())
            .spawn(move || writer_loop(conn, rx))
            .map_err(|e| DbError::Join(e.to_string()))?;
        Ok(Store { writer: tx, readers: Arc::new(Mutex::new(readers)), path: path.to_owned() })
    }

    async fn write<T>(&self, make: impl FnOnce(oneshot::Sender<Result<T, DbError>>) -> Write) -> Result<T, DbError> {
        let (tx, rx) = oneshot::channel();
        self.writer.send(make(tx)).map_err(|_| DbError::WriterGone)?;
        rx.await.map_err(|_| DbError::WriterGone)?
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, rusqlite::Error> + Send + 'static,
    ) -> Result<T, DbError> {
        let readers = self.readers.clone();
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let conn = readers.lock().ok().and_then(|mut v| v.pop());
            let conn = match conn {
                Some(c) => c,
                None => open(&path)?,
            };
            let r = f(&conn);
            if let Ok(mut v) = readers.lock() {
                v.push(conn);
            }
            Ok(r?)
        })
        .await
        .map_err(|e| DbError::Join(e.to_string()))?
    }

    /// Stores a message durably (committed before this returns), with its dedup row.
    pub async fn insert_message(&self, m: NewMessage) -> Result<Stored, DbError> {
        self.write(|reply| Write::Message(m, reply)).await
    }

    /// Registers an agent; false if the id is taken.
    pub async fn insert_agent(&self, id: &str, hash: &str, now: i64) -> Result<bool, DbError> {
        let (id, hash) = (id.to_owned(), hash.to_owned());
        self.write(|reply| Write::Agent { id, hash, now, reply }).await
    }

    /// Forgets dedup entries accepted before `before`.
    pub async fn prune_dedup(&self, before: i64) -> Result<usize, DbError> {
        self.write(|reply| Write::Prune { before, reply }).await
    }

    /// The password hash of an agent.
    pub async fn agent_hash(&self, id: &str) -> Result<Option<String>, DbError> {
        let id = id.to_owned();
        self.read(move |c| {
            c.query_row("SELECT password_hash FROM agents WHERE agent_id = ?1", [id], |r| r.get(0)).optional()
        })
        .await
    }

    /// Registered agents, oldest first.
    pub async fn agents(&self) -> Result<Vec<String>, DbError> {
        self.read(|c| {
            let mut st = c.prepare("SELECT agent_id FROM agents ORDER BY created_at, rowid")?;
            let rows = st.query_map([], |r| r.get(0))?;
            rows.collect()
        })
        .await
    }

    /// An agent's inbox after row `after_id`, oldest first.
    pub async fn inbox(&self, agent: &str, after_id: i64, limit: i64) -> Result<Vec<InboxRow>, DbError> {
        let agent = agent.to_owned();
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT id, message_json FROM messages WHERE to_id = ?1 AND status = 'delivered' AND id > ?2
                 ORDER BY id LIMIT ?3",
            )?;
            let rows =
                st.query_map(params![agent, after_id, limit], |r| Ok(InboxRow { id: r.get(0)?, json: r.get(1)? }))?;
            rows.collect()
        })
        .await
    }

    /// The newest message with this nonce.
    pub async fn inspect(&self, nonce: &str) -> Result<Option<MessageInfo>, DbError> {
        let nonce = nonce.to_owned();
        self.read(move |c| {
            c.query_row(
                "SELECT nonce, from_id, to_id, status, created_at, updated_at, attempts, next_attempt_at, last_error
                 FROM messages WHERE nonce = ?1 ORDER BY id DESC LIMIT 1",
                [nonce],
                |r| {
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
                },
            )
            .optional()
        })
        .await
    }

    /// Message counts per status and the number of agents.
    pub async fn counts(&self) -> Result<Counts, DbError> {
        self.read(|c| {
            let mut st = c.prepare("SELECT status, COUNT(*) FROM messages GROUP BY status")?;
            let by_status = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?;
            let agents = c.query_row("SELECT COUNT(*) FROM agents", [], |r| r.get(0))?;
            Ok(Counts { by_status, agents })
        })
        .await
    }
}

impl DedupStore for Store {
    async fn seen(&self, sender_domain: &str, nonce: &str) -> Result<Option<ContentHash>, StoreError> {
        let (d, n) = (sender_domain.to_owned(), nonce.to_owned());
        let hash: Option<Vec<u8>> = self
            .read(move |c| {
                c.query_row("SELECT content_hash FROM dedup WHERE sender_domain = ?1 AND nonce = ?2", [d, n], |r| {
                    r.get(0)
                })
                .optional()
            })
            .await
            .map_err(|e| StoreError(e.to_string()))?;
        Ok(hash.and_then(|h| h.try_into().ok()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(nonce: &str, hash: u8, to: &str) -> NewMessage {
        NewMessage {
            nonce: nonce.into(),
            sender_domain: "a.test".into(),
            from_id: "x@a.test".into(),
            to_id: to.into(),
            json: format!("{{\"nonce\":\"{nonce}\"}}"),
            status: status::DELIVERED,
            content_hash: [hash; 32],
            now: 100,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn group_commit_dedup_and_reads() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("a.test.db")).unwrap();
        // many concurrent writers share commits
        let mut tasks = Vec::new();
        for i in 0..200 {
            let s = store.clone();
            tasks.push(tokio::spawn(async move { s.insert_message(msg(&format!("n{i}"), 1, "b@a.test")).await }));
        }
        for t in tasks {
            assert!(matches!(t.await.unwrap().unwrap(), Stored::New(_)));
        }
        assert_eq!(store.insert_message(msg("n1", 1, "b@a.test")).await.unwrap(), Stored::Duplicate);
        assert_eq!(store.insert_message(msg("n1", 2, "b@a.test")).await.unwrap(), Stored::Replay);
        assert_eq!(store.seen("a.test", "n1").await.unwrap(), Some([1; 32]));
        assert_eq!(store.seen("other.test", "n1").await.unwrap(), None);
        let page = store.inbox("b@a.test", 0, 50).await.unwrap();
        assert_eq!(page.len(), 50);
        let next = store.inbox("b@a.test", page[49].id, 500).await.unwrap();
        assert_eq!(next.len(), 150);
        assert!(store.insert_agent("b@a.test", "h", 1).await.unwrap());
        assert!(!store.insert_agent("b@a.test", "h2", 2).await.unwrap());
        assert_eq!(store.agent_hash("b@a.test").await.unwrap().as_deref(), Some("h"));
        let counts = store.counts().await.unwrap();
        assert_eq!((counts.agents, counts.by_status), (1, vec![("delivered".to_string(), 200)]));
        assert_eq!(store.inspect("n7").await.unwrap().unwrap().status, "delivered");
        assert_eq!(store.prune_dedup(101).await.unwrap(), 200);
        drop(store);
        // reopening keeps everything and does not re-run migrations
        let again = Store::open(&dir.path().join("a.test.db")).unwrap();
        assert_eq!(again.counts().await.unwrap().agents, 1);
    }
}
