//! Group commit (docs/design.md §3): one thread owns the write connection. It takes every write request
//! waiting in its channel (up to [`MAX_BATCH`]), applies them in one transaction — each inside a
//! savepoint, so one failing request does not undo the others — commits (one fsync for the whole
//! batch), and only then answers each request. Concurrent submissions therefore share fsyncs
//! instead of queueing on them, and no request is answered before its data is durable.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;

use rusqlite::{params, Connection, Transaction, TransactionBehavior};
use tokio::sync::oneshot;

use super::queue::{self, QueueOp, QueueResult};
use super::{Ack, DbError, Fault, NewMessage, Status, Stored};

/// Most write requests committed in one transaction.
pub const MAX_BATCH: usize = 1024;

/// A write request and where to send its result.
pub enum Write {
    Message(NewMessage, oneshot::Sender<Result<Stored, DbError>>),
    Agent {
        id: String,
        hash: String,
        now: i64,
        reply: oneshot::Sender<Result<bool, DbError>>,
    },
    PruneDedup {
        before: i64,
        reply: oneshot::Sender<Result<usize, DbError>>,
    },
    /// A transition of the outbound queue.
    Queue(QueueOp, oneshot::Sender<Result<QueueResult, DbError>>),
    /// Removes acknowledged inbox messages ([`remove_inbox_rows`]).
    Ack {
        agent: String,
        ack: Ack,
        reply: oneshot::Sender<Result<u64, DbError>>,
    },
    /// Removes up to `limit` inbox messages stored before `before` (retention).
    Expire {
        before: i64,
        limit: usize,
        reply: oneshot::Sender<Result<u64, DbError>>,
    },
    /// Adds to the domain's counters ([`add_counters`]).
    Counters {
        now: i64,
        deltas: Vec<(String, u64)>,
        reply: oneshot::Sender<Result<(), DbError>>,
    },
    /// Commit what came before, then stop (graceful shutdown).
    Close(oneshot::Sender<()>),
    /// Panics inside the batch (tests of the writer's recovery).
    #[cfg(test)]
    Panic,
}

/// Inserts a message and its dedup row in the caller's transaction. The dedup row decides:
/// a new `(sender domain, nonce)` stores the message; the same content again is a duplicate
/// (nothing stored); other content under a used nonce is a replay.
pub fn store_message(tx: &Connection, m: &NewMessage) -> rusqlite::Result<Stored> {
    let inserted = tx
        .prepare_cached(
            "INSERT INTO dedup(sender_domain, nonce, content_hash, accepted_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT DO NOTHING",
        )?
        .execute(params![m.sender_domain, m.nonce, &m.content_hash[..], m.now])?;
    if inserted == 0 {
        let existing: Vec<u8> = tx
            .prepare_cached("SELECT content_hash FROM dedup WHERE sender_domain = ?1 AND nonce = ?2")?
            .query_row(params![m.sender_domain, m.nonce], |r| r.get(0))?;
        return Ok(if existing == m.content_hash { Stored::Duplicate } else { Stored::Replay });
    }
    tx.prepare_cached(
        "INSERT INTO messages(nonce, sender_domain, from_id, to_id, message_json, status, created_at, updated_at,
                              next_attempt_at, dest_domain)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, CASE WHEN ?6 = 'queued' THEN ?7 END,
                 CASE WHEN ?6 = 'queued' THEN lower(substr(?4, instr(?4, '@') + 1)) END)",
    )?
    .execute(params![m.nonce, m.sender_domain, m.from_id, m.to_id, m.json, m.status.as_str(), m.now])?;
    let id = tx.last_insert_rowid();
    if m.status == Status::Delivered {
        tx.prepare_cached(
            "INSERT INTO inbox_usage(agent_id, messages, bytes) VALUES (?1, 1, ?2)
             ON CONFLICT(agent_id) DO UPDATE SET messages = messages + 1, bytes = bytes + ?2",
        )?
        .execute(params![m.to_id, m.json.len() as i64])?;
    }
    Ok(Stored::New(id))
}

/// Removes the inbox rows `select` picks (a `SELECT id FROM messages …` over the parameters
/// `args`, kept to inbox rows by the caller) and takes them off their agents' `inbox_usage`, in
/// the caller's transaction; returns how many went (docs/protocol.md §6.5).
fn remove_inbox_rows(tx: &Connection, select: &str, args: &[&dyn rusqlite::ToSql]) -> rusqlite::Result<u64> {
    tx.execute_batch(
        "CREATE TEMP TABLE IF NOT EXISTS removing(id INTEGER PRIMARY KEY, to_id TEXT NOT NULL, bytes INTEGER NOT NULL);
         DELETE FROM removing;",
    )?;
    tx.prepare_cached(&format!(
        "INSERT INTO removing SELECT id, to_id, length(CAST(message_json AS BLOB)) FROM messages
         WHERE id IN ({select})"
    ))?
    .execute(args)?;
    tx.prepare_cached(
        "UPDATE inbox_usage SET messages = max(0, messages - x.n), bytes = max(0, bytes - x.b)
         FROM (SELECT to_id, COUNT(*) AS n, SUM(bytes) AS b FROM removing GROUP BY to_id) AS x
         WHERE inbox_usage.agent_id = x.to_id",
    )?
    .execute([])?;
    let n = tx.prepare_cached("DELETE FROM messages WHERE id IN (SELECT id FROM removing)")?.execute([])?;
    tx.execute_batch("DELETE FROM removing;")?;
    Ok(n as u64)
}

/// Removes the agent's acknowledged inbox messages (never another agent's: the selection is
/// the agent's inbox, exactly what `GET messages` shows it).
pub fn ack(tx: &Connection, agent: &str, ack: &Ack) -> rusqlite::Result<u64> {
    const INBOX: &str = "SELECT id FROM messages WHERE to_id = ?1 AND status = 'delivered'";
    match ack {
        Ack::UpTo(max) => remove_inbox_rows(tx, &format!("{INBOX} AND id <= ?2"), &[&agent, max]),
        Ack::Ids(ids) => {
            let ids = serde_json::to_string(ids).unwrap_or_else(|_| "[]".into());
            remove_inbox_rows(tx, &format!("{INBOX} AND id IN (SELECT value FROM json_each(?2))"), &[&agent, &ids])
        }
    }
}

/// Removes at most `limit` inbox messages stored before `before` (`[store] retention_days`).
/// Inbox rows are the delivered ones without a destination domain (outbound rows keep theirs).
pub fn expire(tx: &Connection, before: i64, limit: usize) -> rusqlite::Result<u64> {
    remove_inbox_rows(
        tx,
        "SELECT id FROM messages WHERE status = 'delivered' AND dest_domain IS NULL AND created_at < ?1
         ORDER BY id LIMIT ?2",
        &[&before, &(limit as i64)],
    )
}

/// Adds `deltas` to the domain's counters and records `now` as their start unless one is there
/// ([`atp_wasm::relay::counters`]), in the caller's transaction.
pub fn add_counters(tx: &Connection, now: i64, deltas: &[(String, u64)]) -> rusqlite::Result<()> {
    use atp_wasm::sqlite_schema::counters::{ADD, SET_ONCE};
    tx.prepare_cached(SET_ONCE)?.execute(params![atp_wasm::relay::counters::STARTED_AT, now])?;
    let mut add = tx.prepare_cached(ADD)?;
    for (name, n) in deltas {
        add.execute(params![name, (*n).min(i64::MAX as u64) as i64])?;
    }
    Ok(())
}

/// Runs `f` in a savepoint of `tx`: its changes are kept only if it succeeds.
fn in_savepoint<T>(tx: &mut Transaction, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> rusqlite::Result<T> {
    let sp = tx.savepoint()?;
    let r = f(&sp)?;
    sp.commit()?;
    Ok(r)
}

/// Why a batch was not committed (every request of the batch gets it).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct CommitFailure {
    pub message: String,
    pub fault: Fault,
    /// The batch may have been committed after all (docs/design.md §3): the failure came from
    /// `COMMIT` after its WAL frames may have reached the file (a failed `fsync`, an unclassified
    /// I/O error). Such frames are replayed when the database is opened again, so the caller must
    /// not be told "not stored"; it is told "unknown, retry with the same nonce".
    pub unknown: bool,
}

impl CommitFailure {
    /// The failure of `e` on `conn`: an I/O error is classified by the system error behind it
    /// (`EROFS` when the file system turned read-only under the open database, `ENOSPC`).
    /// `at_commit`: `e` came from `COMMIT` (otherwise nothing was written: BEGIN failed, or the
    /// batch was rolled back).
    fn new(e: &rusqlite::Error, conn: &Connection, at_commit: bool) -> Self {
        let unknown = at_commit && !nothing_written(e);
        let fault = Fault::of_sqlite(e);
        if fault != Fault::Other || e.sqlite_error_code() != Some(rusqlite::ErrorCode::SystemIoFailure) {
            return CommitFailure { message: e.to_string(), fault, unknown };
        }
        // SAFETY: the handle is this thread's open connection; the call only reads its state.
        let errno = unsafe { rusqlite::ffi::sqlite3_system_errno(conn.handle()) };
        let message = format!("{e} ({})", std::io::Error::from_raw_os_error(errno));
        CommitFailure { message, fault: Fault::of_errno(errno), unknown }
    }

    /// A definite refusal of a batch that was never written (the file system is read-only).
    fn not_written(fault: Fault, message: String) -> Self {
        CommitFailure { message, fault, unknown: false }
    }
}

/// Whether a failed `COMMIT` certainly left no commit behind. In WAL mode a commit is a run of
/// frames appended to the `-wal` file, the last one marked "commit", then an `fsync`; a frame is
/// replayed on the next open only if the whole run up to the commit frame is in the file with
/// valid checksums. So a failed `write` (`SQLITE_IOERR_WRITE`, `SQLITE_FULL`) or a refusal to
/// write (`SQLITE_READONLY`) means the commit frame is not there. A failed `fsync`, or anything
/// else, may leave every frame in the page cache, to reach the disk later: unknown.
fn nothing_written(e: &rusqlite::Error) -> bool {
    use rusqlite::ffi;
    match e {
        rusqlite::Error::SqliteFailure(f, _) => {
            f.extended_code == ffi::SQLITE_IOERR_WRITE
                || f.extended_code & 0xff == ffi::SQLITE_FULL
                || f.extended_code & 0xff == ffi::SQLITE_READONLY
        }
        _ => false,
    }
}

/// Whether the file system holding the database is mounted read-only now (`statvfs`'s
/// `ST_RDONLY`). Checked before each batch, so a disk that turned read-only under the running
/// server is refused cleanly ("not stored") instead of failing in `COMMIT`.
fn file_system_read_only(db: &std::path::Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(path) = std::ffi::CString::new(db.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `path` is a valid NUL-terminated string; `st` is written by statvfs only.
    unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        libc::statvfs(path.as_ptr(), &mut st) == 0 && st.f_flag & libc::ST_RDONLY != 0
    }
}

/// The answer to one request, sent once the batch's commit is known. `None` as the request's
/// result: it was never applied (the batch failed before it).
type Reply = Box<dyn FnOnce(Option<&CommitFailure>) + Send>;

fn reply_with<T: Send + 'static>(r: Option<rusqlite::Result<T>>, to: oneshot::Sender<Result<T, DbError>>) -> Reply {
    Box::new(move |commit_error| {
        let _ = to.send(match (r, commit_error) {
            (Some(Ok(v)), None) => Ok(v),
            (Some(Err(e)), _) => Err(e.into()),
            (_, Some(e)) => Err(DbError::Commit(e.clone())),
            (None, None) => Err(DbError::WriterGone),
        });
    })
}

/// Applies `w` in `tx` (or, without a transaction, only prepares its answer: it was not applied).
fn apply(tx: Option<&mut Transaction>, w: Write) -> Reply {
    fn run<T>(
        tx: Option<&mut Transaction>,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Option<rusqlite::Result<T>> {
        tx.map(|tx| in_savepoint(tx, f))
    }
    match w {
        Write::Message(m, reply) => reply_with(run(tx, |t| store_message(t, &m)), reply),
        Write::Agent { id, hash, now, reply } => {
            let r = run(tx, |t| {
                t.prepare_cached(
                    "INSERT INTO agents(agent_id, password_hash, created_at) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
                )?
                .execute(params![id, hash, now])
            });
            reply_with(r.map(|r| r.map(|n| n == 1)), reply)
        }
        Write::PruneDedup { before, reply } => {
            let r = run(tx, |t| t.execute("DELETE FROM dedup WHERE accepted_at < ?1", params![before]));
            reply_with(r, reply)
        }
        Write::Queue(op, reply) => reply_with(run(tx, |t| queue::apply(t, op)), reply),
        Write::Ack { agent, ack: a, reply } => reply_with(run(tx, |t| ack(t, &agent, &a)), reply),
        Write::Expire { before, limit, reply } => reply_with(run(tx, |t| expire(t, before, limit)), reply),
        Write::Counters { now, deltas, reply } => reply_with(run(tx, |t| add_counters(t, now, &deltas)), reply),
        Write::Close(reply) => Box::new(move |_| {
            let _ = reply.send(());
        }),
        #[cfg(test)]
        Write::Panic => match tx {
            Some(_) => panic!("injected panic"),
            None => Box::new(|_| {}),
        },
    }
}

/// How a batch ended.
enum Ended {
    Committed,
    /// Not written: the file system is read-only, or `BEGIN` failed (requests not applied).
    NotBegun(CommitFailure),
    /// `COMMIT` (or a statement inside the transaction) failed.
    Failed {
        error: rusqlite::Error,
        at_commit: bool,
    },
}

/// The writer thread's loop; returns when every sender is gone or a `Close` was committed.
///
/// A batch that panics (a bug, or a logging sink that fails on a full disk) is rolled back and
/// its requests get an error; the thread goes on with the next batch instead of leaving every later
/// write without a writer.
pub fn run(mut conn: Connection, rx: mpsc::Receiver<Write>) {
    let db = conn.path().filter(|p| !p.is_empty()).map(std::path::PathBuf::from);
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut replies: Vec<Reply> = Vec::with_capacity(MAX_BATCH);
    while let Ok(first) = rx.recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(w) => batch.push(w),
                Err(_) => break,
            }
        }
        let closing = batch.iter().any(|w| matches!(w, Write::Close(_)));
        let outcome = catch_unwind(AssertUnwindSafe(|| -> Ended {
            if db.as_deref().is_some_and(file_system_read_only) {
                let e = CommitFailure::not_written(Fault::ReadOnly, "the file system is read-only".into());
                return Ended::NotBegun(e);
            }
            let mut tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
                Ok(tx) => tx,
                Err(e) => return Ended::Failed { error: e, at_commit: false },
            };
            for w in batch.drain(..) {
                replies.push(apply(Some(&mut tx), w));
            }
            match tx.commit() {
                Ok(()) => Ended::Committed,
                Err(e) => Ended::Failed { error: e, at_commit: true },
            }
        }));
        // Requests still in `batch` (the batch stopped before them) were not applied: they get
        // the batch's error, never a false success.
        for w in batch.drain(..) {
            replies.push(apply(None, w));
        }
        let err = match outcome {
            Ok(Ended::Committed) => None,
            Ok(Ended::NotBegun(e)) => Some(e),
            Ok(Ended::Failed { error, at_commit }) => Some(CommitFailure::new(&error, &conn, at_commit)),
            Err(panic) => {
                if !conn.is_autocommit() {
                    let _ = conn.execute_batch("ROLLBACK");
                }
                Some(CommitFailure::not_written(Fault::Other, format!("write batch failed: {}", panic_text(&*panic))))
            }
        };
        if let Some(e) = &err {
            // Logging must not take the writer down either.
            let _ = catch_unwind(|| tracing::error!(error = %e, "database commit failed"));
        }
        for reply in replies.drain(..) {
            reply(err.as_ref());
        }
        if closing {
            tracing::debug!("database writer closed");
            return;
        }
    }
}

/// The message of a caught panic.
fn panic_text(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("panic")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(nonce: &str) -> crate::store::NewMessage {
        crate::store::NewMessage {
            nonce: nonce.into(),
            sender_domain: "a.test".into(),
            from_id: "x@a.test".into(),
            to_id: "y@a.test".into(),
            json: "{}".into(),
            status: Status::Delivered,
            content_hash: [7; 32],
            now: 1,
        }
    }

    /// A panicking batch answers its requests with an error and the writer serves the next one.
    #[test]
    fn writer_survives_a_panicking_batch() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.test.db");
        let mut conn = crate::store::schema::connect(&path).unwrap();
        crate::store::schema::migrate(&mut conn).unwrap();
        let (tx, rx) = mpsc::channel();
        // Both requests are queued before the thread starts, so they form one batch.
        let (r1, a1) = oneshot::channel();
        tx.send(Write::Message(msg("n1"), r1)).unwrap();
        tx.send(Write::Panic).unwrap();
        let writer = std::thread::spawn(move || run(conn, rx));
        let first = a1.blocking_recv().unwrap();
        assert!(matches!(first, Err(DbError::Commit(_))), "{first:?}");
        let (r2, a2) = oneshot::channel();
        tx.send(Write::Message(msg("n1"), r2)).unwrap();
        assert!(matches!(a2.blocking_recv().unwrap(), Ok(Stored::New(_))), "the rolled-back message is new again");
        let (close, closed) = oneshot::channel();
        tx.send(Write::Close(close)).unwrap();
        closed.blocking_recv().unwrap();
        writer.join().unwrap();
    }
}
