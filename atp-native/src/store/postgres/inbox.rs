//! Messages and inboxes on PostgreSQL (docs/design.md §5d): storing a message with its dedup row
//! and inbox usage in one transaction, inbox pages by per-agent id, and the removal of read or old
//! mail (issue 18's `ack` / `expire`).

use atp_wasm::relay::store::{InboxRow, MessageStatus, NewMessage, Stored, Usage};

use super::{PgError, PgStore};
use crate::store::PageBudget;

/// The channel a stored inbox message is announced on (`NOTIFY atp_inbox, '<agent>'`), so that push
/// streams on other nodes wake (docs/design.md §5c).
pub const INBOX_CHANNEL: &str = "atp_inbox";

/// Announcements waiting for the announcer; beyond this they are dropped (a hint, not data).
pub(super) const ANNOUNCE_QUEUE: usize = 4096;
/// Most agents announced in one round (one transaction).
const ANNOUNCE_ROUND: usize = 1000;

/// Sends the announcements of committed inbox messages: each round takes what is waiting (agents
/// once each) and notifies them in one transaction. Not inside the storing transactions: a
/// transaction that notifies holds a database-wide lock through its commit, which would make every
/// submission wait for the one before it instead of sharing fsyncs (docs/design.md §5d).
pub(super) async fn announcer(pool: deadpool_postgres::Pool, mut rx: tokio::sync::mpsc::Receiver<String>) {
    while let Some(first) = rx.recv().await {
        let mut agents = std::collections::BTreeSet::from([first]);
        while agents.len() < ANNOUNCE_ROUND {
            match rx.try_recv() {
                Ok(a) => {
                    agents.insert(a);
                }
                Err(_) => break,
            }
        }
        let agents: Vec<String> = agents.into_iter().collect();
        let sent = async {
            let c = pool.get().await.map_err(PgError::from)?;
            c.execute("SELECT pg_notify('atp_inbox', a) FROM unnest($1::text[]) AS a", &[&agents])
                .await
                .map_err(PgError::from)
        };
        if let Err(e) = sent.await {
            tracing::debug!(error = %e, agents = agents.len(), "inbox announcements not sent");
        }
    }
}

/// Wakes this node's inbox streams on every node's announcements, for as long as the store lives:
/// a listener connection of its own, opened again a second after it breaks (a database restart).
/// Announcements lost meanwhile cost a stream only latency: it reads its inbox on each heartbeat.
pub(super) async fn wake_streams(store: PgStore) {
    let hub = store.hub.clone();
    loop {
        match store.listen_inbox().await {
            Ok(mut listener) => {
                while let Some(agent) = listener.agents.recv().await {
                    hub.notify(&agent);
                }
                tracing::debug!("inbox announcements: the listener connection ended");
            }
            Err(e) => tracing::debug!(error = %e, "inbox announcements: cannot listen"),
        }
        if store.pool.is_closed() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

/// Inbox announcements from every node (`LISTEN atp_inbox` on a connection of its own): the
/// agent ids whose inboxes got a message. A hint for waking push streams (issue 18), bounded:
/// when the reader falls behind, announcements are dropped (a woken stream reads the inbox anyway).
pub struct InboxListener {
    pub agents: tokio::sync::mpsc::Receiver<String>,
    _client: tokio_postgres::Client,
}

/// Announcements kept for a slow reader.
const LISTEN_BUFFER: usize = 1024;

pub use atp_wasm::relay::store::Ack;

/// Inserts a message and its dedup row in one statement (one round trip; atomic on its own, or
/// part of the caller's transaction). The dedup row decides: a new `(sender domain, nonce)` stores
/// the message; the same content again is a duplicate (nothing stored); other content under a used
/// nonce is a replay. A concurrent insert of the same key on another node waits for that
/// transaction and then sees the row.
///
/// An inbox message takes the agent's next inbox id from `inbox_usage`, whose row stays locked
/// until commit: inbox ids of one agent commit in increasing order (docs/design.md §1.5).
pub(super) async fn store_in(c: &impl deadpool_postgres::GenericClient, m: &NewMessage) -> Result<Stored, PgError> {
    let st = c
        .prepare_cached(
            "WITH d AS (
               INSERT INTO dedup(sender_domain, nonce, content_hash, accepted_at) VALUES ($1, $2, $3, $4)
               ON CONFLICT DO NOTHING RETURNING 1),
             u AS (
               INSERT INTO inbox_usage(agent_id, messages, bytes, last_id)
               SELECT $5, 1, $6, 1 WHERE EXISTS (SELECT 1 FROM d) AND $7::text = 'delivered'
               ON CONFLICT (agent_id) DO UPDATE SET messages = inbox_usage.messages + 1,
                   bytes = inbox_usage.bytes + EXCLUDED.bytes, last_id = inbox_usage.last_id + 1
               RETURNING last_id)
             INSERT INTO messages(inbox_id, nonce, sender_domain, from_id, to_id, message_json, status, created_at,
                                  updated_at, next_attempt_at, dest_domain)
             SELECT (SELECT last_id FROM u), $2, $1, $8, $5, $9, $7::text, $4, $4, $10, $11
             WHERE EXISTS (SELECT 1 FROM d)
             RETURNING id, inbox_id",
        )
        .await?;
    let (due, dest) = match m.status {
        MessageStatus::Queued => {
            let domain = m.to_id.rsplit_once('@').map_or("", |(_, d)| d).to_ascii_lowercase();
            (Some(m.now), Some(domain))
        }
        MessageStatus::Delivered => (None, None),
    };
    let hash = &m.content_hash[..];
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 11] = [
        &m.sender_domain,
        &m.nonce,
        &hash,
        &m.now,
        &m.to_id,
        &(m.json.len() as i64),
        &m.status.as_str(),
        &m.from_id,
        &m.json,
        &due,
        &dest,
    ];
    if let Some(row) = c.query_opt(&st, &params).await? {
        let (id, inbox_id): (i64, Option<i64>) = (row.get(0), row.get(1));
        return Ok(Stored::New(inbox_id.unwrap_or(id)));
    }
    // The nonce was taken (nothing written): by the same content or by other content?
    let st = c.prepare_cached("SELECT content_hash FROM dedup WHERE sender_domain = $1 AND nonce = $2").await?;
    let existing: Vec<u8> = c.query_one(&st, &[&m.sender_domain, &m.nonce]).await?.get(0);
    Ok(if existing == hash { Stored::Duplicate } else { Stored::Replay })
}

impl PgStore {
    /// Starts listening for inbox announcements ([`InboxListener`]). The connection is this
    /// listener's own (not the pool's); it ends when the listener is dropped or the server goes.
    pub async fn listen_inbox(&self) -> Result<InboxListener, PgError> {
        // Named apart from the pool's connections (`pg_stat_activity`): one per node, long-lived.
        let mut config = (*self.config).clone();
        config.application_name("atp-listen");
        let (client, mut conn) = config.connect(tokio_postgres::NoTls).await?;
        let (tx, agents) = tokio::sync::mpsc::channel(LISTEN_BUFFER);
        tokio::spawn(async move {
            while let Some(Ok(msg)) = std::future::poll_fn(|cx| conn.poll_message(cx)).await {
                if let tokio_postgres::AsyncMessage::Notification(n) = msg {
                    if n.channel() == INBOX_CHANNEL && tx.try_send(n.payload().to_owned()).is_err() && tx.is_closed() {
                        return;
                    }
                }
            }
        });
        client.batch_execute(&format!("LISTEN {INBOX_CHANNEL}")).await?;
        Ok(InboxListener { agents, _client: client })
    }

    /// Stores a message durably (committed before this returns), with its dedup row.
    pub async fn insert_message(&self, m: &NewMessage) -> Result<Stored, PgError> {
        let c = self.client().await?;
        // One statement, committed on its own: an error the server answered means it was rolled
        // back; no answer at all (the connection broke) means the outcome is unknown.
        let stored = match store_in(&c, m).await {
            Err(PgError::Db(e)) if e.code().is_none() => return Err(PgError::CommitUnknown(e)),
            r => r?,
        };
        if let Stored::New(_) = stored {
            self.announce(m);
        }
        Ok(stored)
    }

    /// Queues the announcement of a committed inbox message ([`announcer`]).
    pub(super) fn announce(&self, m: &NewMessage) {
        if m.status == MessageStatus::Delivered {
            let _ = self.announce.try_send(m.to_id.clone());
        }
    }

    /// An agent's inbox after inbox id `after_id`, oldest first: at most `limit` rows and, past the
    /// first, at most `max_bytes` of message JSON (docs/design.md §5b; the length is read first,
    /// so a row that would pass the limit is not fetched).
    pub async fn inbox(
        &self,
        agent: &str,
        after_id: i64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<InboxRow>, PgError> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(
                "SELECT inbox_id, octet_length(message_json) FROM messages
                 WHERE to_id = $1 AND inbox_id > $2 ORDER BY inbox_id LIMIT $3",
            )
            .await?;
        let mut ids = Vec::new();
        let mut page = PageBudget::new(max_bytes);
        for r in c.query(&st, &[&agent, &after_id, &(limit as i64)]).await? {
            if !page.admits(r.get::<_, i32>(1).max(0) as usize) {
                break;
            }
            ids.push(r.get::<_, i64>(0));
        }
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let st = c
            .prepare_cached(
                "SELECT inbox_id, message_json FROM messages WHERE to_id = $1 AND inbox_id = ANY($2) ORDER BY inbox_id",
            )
            .await?;
        Ok(c.query(&st, &[&agent, &ids]).await?.iter().map(|r| InboxRow { id: r.get(0), json: r.get(1) }).collect())
    }

    /// What an agent's inbox holds (kept in `inbox_usage` by the storing transaction). Read from
    /// the database each time: other nodes store into the same inboxes.
    pub async fn usage(&self, agent: &str) -> Result<Usage, PgError> {
        let c = self.client().await?;
        let st = c.prepare_cached("SELECT messages, bytes FROM inbox_usage WHERE agent_id = $1").await?;
        let (messages, bytes) = c.query_opt(&st, &[&agent]).await?.map_or((0i64, 0i64), |r| (r.get(0), r.get(1)));
        Ok(Usage { messages: messages.max(0) as u64, bytes: bytes.max(0) as u64 })
    }

    /// Removes the agent's inbox messages selected by `ack` — never another agent's — and frees
    /// their quota; returns how many were removed. Dedup records stay (a repeat is still answered
    /// as one). Issue 18's `MessageStore::ack`.
    pub async fn ack(&self, agent: &str, ack: &Ack) -> Result<u64, atp_wasm::env::StoreError> {
        let (up_to, ids): (i64, Vec<i64>) = match ack {
            Ack::UpTo(n) => (*n, Vec::new()),
            Ack::Ids(ids) => (0, ids.clone()),
        };
        let c = self.client().await?;
        let st = c
            .prepare_cached(
                "WITH gone AS (
                   DELETE FROM messages WHERE to_id = $1 AND inbox_id IS NOT NULL
                     AND (inbox_id <= $2 OR inbox_id = ANY($3))
                   RETURNING octet_length(message_json) AS len),
                 freed AS (SELECT COUNT(*) AS n, COALESCE(SUM(len), 0) AS b FROM gone),
                 u AS (UPDATE inbox_usage SET messages = messages - freed.n, bytes = bytes - freed.b
                       FROM freed WHERE agent_id = $1 AND freed.n > 0)
                 SELECT n FROM freed",
            )
            .await
            .map_err(PgError::from)?;
        let n: i64 = c.query_one(&st, &[&agent, &up_to, &ids]).await.map_err(PgError::from)?.get(0);
        Ok(n.max(0) as u64)
    }

    /// Removes inbox messages stored before `before` (unix seconds; `[store] retention_days`) and
    /// frees their quota; returns how many. Issue 18's `MessageStore::expire`.
    pub async fn expire(&self, before: i64) -> Result<u64, atp_wasm::env::StoreError> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(
                "WITH gone AS (
                   DELETE FROM messages WHERE inbox_id IS NOT NULL AND created_at < $1
                   RETURNING to_id, octet_length(message_json) AS len),
                 per AS (SELECT to_id, COUNT(*) AS n, SUM(len) AS b FROM gone GROUP BY to_id),
                 u AS (UPDATE inbox_usage SET messages = messages - per.n, bytes = bytes - per.b
                       FROM per WHERE agent_id = per.to_id)
                 SELECT COUNT(*) FROM gone",
            )
            .await
            .map_err(PgError::from)?;
        let n: i64 = c.query_one(&st, &[&before]).await.map_err(PgError::from)?.get(0);
        Ok(n.max(0) as u64)
    }
}
