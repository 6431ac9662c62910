//! Group commit (design.md §3): one thread owns the write connection. It takes every write request
//! waiting in its channel (up to [`MAX_BATCH`]), applies them in one transaction — each inside a
//! savepoint, so one failing request does not undo the others — commits (one fsync for the whole
//! batch), and only then answers each request. Concurrent submissions therefore share fsyncs
//! instead of queueing on them, and no request is answered before its data is durable.

use std::sync::mpsc;

use rusqlite::{params, Connection, Transaction, TransactionBehavior};
use tokio::sync::oneshot;

use super::queue::{self, QueueOp, QueueResult};
use super::{DbError, NewMessage, Stored};

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
    /// Commit what came before, then stop (graceful shutdown).
    Close(oneshot::Sender<()>),
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
    Ok(Stored::New(tx.last_insert_rowid()))
}

/// Runs `f` in a savepoint of `tx`: its changes are kept only if it succeeds.
fn in_savepoint<T>(tx: &mut Transaction, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> rusqlite::Result<T> {
    let sp = tx.savepoint()?;
    let r = f(&sp)?;
    sp.commit()?;
    Ok(r)
}

/// The answer to one request, sent once the batch's commit is known.
type Reply = Box<dyn FnOnce(Option<&str>) + Send>;

fn reply_with<T: Send + 'static>(r: rusqlite::Result<T>, to: oneshot::Sender<Result<T, DbError>>) -> Reply {
    Box::new(move |commit_error| {
        let _ = to.send(match (r, commit_error) {
            (Ok(v), None) => Ok(v),
            (Err(e), _) => Err(e.into()),
            (Ok(_), Some(e)) => Err(DbError::Commit(e.to_owned())),
        });
    })
}

fn apply(tx: &mut Transaction, w: Write) -> Reply {
    match w {
        Write::Message(m, reply) => reply_with(in_savepoint(tx, |t| store_message(t, &m)), reply),
        Write::Agent { id, hash, now, reply } => {
            let r = in_savepoint(tx, |t| {
                t.prepare_cached(
                    "INSERT INTO agents(agent_id, password_hash, created_at) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
                )?
                .execute(params![id, hash, now])
            });
            reply_with(r.map(|n| n == 1), reply)
        }
        Write::PruneDedup { before, reply } => {
            let r = in_savepoint(tx, |t| t.execute("DELETE FROM dedup WHERE accepted_at < ?1", params![before]));
            reply_with(r, reply)
        }
        Write::Queue(op, reply) => reply_with(in_savepoint(tx, |t| queue::apply(t, op)), reply),
        Write::Close(reply) => Box::new(move |_| {
            let _ = reply.send(());
        }),
    }
}

/// The writer thread's loop; returns when every sender is gone or a `Close` was committed.
pub fn run(mut conn: Connection, rx: mpsc::Receiver<Write>) {
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
        let outcome = (|| -> rusqlite::Result<()> {
            let mut tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            for w in batch.drain(..) {
                replies.push(apply(&mut tx, w));
            }
            tx.commit()
        })();
        // If BEGIN failed, the requests still in `batch` are dropped: their callers see the
        // channel closed (DbError::WriterGone), i.e. a temporary failure, never a false success.
        batch.clear();
        let err = outcome.err().map(|e| e.to_string());
        if let Some(e) = &err {
            tracing::error!(error = %e, "database commit failed");
        }
        for reply in replies.drain(..) {
            reply(err.as_deref());
        }
        if closing {
            tracing::debug!("database writer closed");
            return;
        }
    }
}
