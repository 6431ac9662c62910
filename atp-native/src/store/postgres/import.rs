//! Moving a domain from SQLite to PostgreSQL (`atp store migrate`, docs/design.md §5d.2): every
//! agent, message, dedup record, backoff and counter of a SQLite database is copied into an empty
//! PostgreSQL database in one transaction, so a failed import leaves nothing behind.
//!
//! Ids are kept: a message keeps its row id, and an inbox message's SQLite id becomes its inbox id,
//! so the cursors agents hold (`after_id`) stay valid; each agent's next inbox id continues after
//! its largest. Rows that were being delivered (leased) become due at once.

use std::path::{Path, PathBuf};

use super::{commit, PgError, PgStore};
use crate::store::DbError;

/// Rows sent from the SQLite reader to the importer at a time (and at most 4 such chunks wait),
/// so memory stays bounded whatever the database's size.
const CHUNK: usize = 1000;

/// What an import copied.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Imported {
    pub agents: u64,
    pub messages: u64,
    pub dedup: u64,
    pub backoffs: u64,
    pub counters: u64,
}

/// Why an import did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{path}: {source}")]
    Sqlite { path: PathBuf, source: DbError },
    #[error(transparent)]
    Postgres(#[from] PgError),
    #[error("the PostgreSQL database already holds {agents} agents and {messages} messages: import into an empty one")]
    NotEmpty { agents: i64, messages: i64 },
}

type Value = Box<dyn tokio_postgres::types::ToSql + Sync + Send>;

/// The value of a SQLite column as the PostgreSQL parameter of `kind`: `T` text, `I` bigint, `B`
/// bytea (a NULL keeps its column's type).
fn value(kind: u8, v: rusqlite::types::ValueRef<'_>) -> Value {
    use rusqlite::types::ValueRef;
    match (kind, v) {
        (b'I', ValueRef::Integer(n)) => Box::new(n),
        (b'I', _) => Box::new(Option::<i64>::None),
        (b'B', ValueRef::Blob(b)) => Box::new(b.to_vec()),
        (b'B', _) => Box::new(Option::<Vec<u8>>::None),
        (_, ValueRef::Text(t)) => Box::new(String::from_utf8_lossy(t).into_owned()),
        (_, ValueRef::Integer(n)) => Box::new(n.to_string()),
        (_, _) => Box::new(Option::<String>::None),
    }
}

/// Reads every row of `sql` in a blocking thread and sends them in chunks of [`CHUNK`].
fn stream(
    path: &Path,
    sql: &'static str,
    kinds: &'static str,
) -> tokio::sync::mpsc::Receiver<Result<Vec<Vec<Value>>, DbError>> {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        let read = || -> Result<(), DbError> {
            let conn = crate::store::schema::connect(&path)?;
            let mut st = conn.prepare(sql)?;
            let mut rows = st.query([])?;
            let mut batch = Vec::with_capacity(CHUNK);
            while let Some(r) = rows.next()? {
                let row = kinds
                    .bytes()
                    .enumerate()
                    .map(|(i, k)| r.get_ref(i).map(|v| value(k, v)))
                    .collect::<Result<_, _>>()?;
                batch.push(row);
                if batch.len() == CHUNK && tx.blocking_send(Ok(std::mem::take(&mut batch))).is_err() {
                    return Ok(());
                }
            }
            if !batch.is_empty() {
                let _ = tx.blocking_send(Ok(batch));
            }
            Ok(())
        };
        if let Err(e) = read() {
            let _ = tx.blocking_send(Err(e));
        }
    });
    rx
}

impl PgStore {
    /// Copies the SQLite database at `sqlite` (already migrated to the current schema, and not in
    /// use: open it with [`crate::store::Store::open`] first, which takes its lock) into this
    /// empty database. `now` makes leased rows due.
    pub async fn import_sqlite(&self, sqlite: &Path, now: i64) -> Result<Imported, ImportError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(PgError::from)?;
        let (agents, messages): (i64, i64) = {
            let r = tx
                .query_one("SELECT (SELECT COUNT(*) FROM agents), (SELECT COUNT(*) FROM messages)", &[])
                .await
                .map_err(PgError::from)?;
            (r.get(0), r.get(1))
        };
        if agents > 0 || messages > 0 {
            return Err(ImportError::NotEmpty { agents, messages });
        }
        let mut done = Imported::default();
        // (the SQLite query, the column kinds of `value`, the PostgreSQL insert)
        let tables: [(&'static str, &'static str, &'static str); 5] = [
            (
                "SELECT agent_id, password_hash, created_at FROM agents ORDER BY created_at, rowid",
                "TTI",
                "INSERT INTO agents(agent_id, password_hash, created_at) VALUES ($1, $2, $3)",
            ),
            (
                "SELECT id, nonce, sender_domain, from_id, to_id, message_json, status, created_at, updated_at,
                        attempts, next_attempt_at, last_error, dest_domain
                 FROM messages ORDER BY id",
                "ITTTTTTIIIITT",
                "INSERT INTO messages(id, inbox_id, nonce, sender_domain, from_id, to_id, message_json, status,
                                      created_at, updated_at, attempts, next_attempt_at, last_error, dest_domain)
                 VALUES ($1::bigint, CASE WHEN $7::text = 'delivered' AND $13::text IS NULL THEN $1::bigint END, $2, $3, $4, $5, $6,
                         CASE WHEN $7::text = 'delivering'
                              THEN CASE WHEN $10::bigint = 0 THEN 'queued' ELSE 'failed' END ELSE $7::text END,
                         $8, $9, $10, CASE WHEN $7::text = 'delivering' THEN $14::bigint ELSE $11::bigint END,
                         $12, $13)",
            ),
            (
                "SELECT sender_domain, nonce, content_hash, accepted_at FROM dedup",
                "TTBI",
                "INSERT INTO dedup(sender_domain, nonce, content_hash, accepted_at) VALUES ($1, $2, $3, $4)",
            ),
            (
                "SELECT domain, failures, blocked_until FROM domain_backoff",
                "TII",
                "INSERT INTO domain_backoff(domain, failures, blocked_until) VALUES ($1, $2, $3)",
            ),
            // Counts a node of the new database may have flushed already are added to; the start
            // is the earlier one.
            (
                "SELECT name, value FROM counters",
                "TI",
                "INSERT INTO counters(name, value) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE
                 SET value = CASE WHEN counters.name = 'started_at' THEN LEAST(counters.value, excluded.value)
                                  ELSE counters.value + excluded.value END",
            ),
        ];
        for (t, (select, kinds, insert)) in tables.into_iter().enumerate() {
            let st = tx.prepare(insert).await.map_err(PgError::from)?;
            let mut rows = stream(sqlite, select, kinds);
            while let Some(batch) = rows.recv().await {
                let batch = batch.map_err(|source| ImportError::Sqlite { path: sqlite.to_owned(), source })?;
                for mut row in batch {
                    if t == 1 {
                        row.push(Box::new(now));
                    }
                    let args: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                        row.iter().map(|b| &**b as &(dyn tokio_postgres::types::ToSql + Sync)).collect();
                    tx.execute(&st, &args).await.map_err(PgError::from)?;
                    *[&mut done.agents, &mut done.messages, &mut done.dedup, &mut done.backoffs, &mut done.counters]
                        [t] += 1;
                }
            }
        }
        // Usage and each agent's last inbox id, from the copied rows; new row ids after the last.
        tx.batch_execute(
            "INSERT INTO inbox_usage(agent_id, messages, bytes, last_id)
               SELECT to_id, COUNT(*), SUM(octet_length(message_json)), MAX(inbox_id) FROM messages
               WHERE inbox_id IS NOT NULL GROUP BY to_id;
             SELECT setval(pg_get_serial_sequence('messages', 'id'), GREATEST((SELECT MAX(id) FROM messages), 1));",
        )
        .await
        .map_err(PgError::from)?;
        commit(tx).await?;
        Ok(done)
    }
}
