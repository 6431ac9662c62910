//! The PostgreSQL store (docs/design.md §5d): several `atp` nodes serve one domain from one
//! database. It provides what the core's storage traits need (`relay::store::AgentStore`,
//! `MessageStore`, through [`crate::store::Backend`], and [`DedupStore`]) and the delivery engine's
//! queue ([`queue`]) over a bounded pool of connections (deadpool-postgres over tokio-postgres).
//!
//! * **Durability.** A message, its dedup row and its inbox usage are written by one statement,
//!   committed on its own, and the caller hears "stored" only after it returned. An error the
//!   server answered is "not stored" (the statement was rolled back); no answer at all (the
//!   connection broke) is "outcome unknown" (docs/protocol.md §6.4) and the client retries with the
//!   same nonce.
//! * **Inbox ids in commit order.** An inbox id is the agent's `inbox_usage.last_id + 1`, taken by
//!   an upsert in the storing transaction: the row lock orders the agent's concurrent inserts, so
//!   a larger id always commits after a smaller one and an `after_id` cursor never skips a late
//!   commit (docs/design.md §1.5). After the commit the agent is announced on `atp_inbox`
//!   (`NOTIFY`, batched by a task of its own) for push streams on other nodes.
//! * **Dedup across nodes.** The `(sender domain, nonce)` primary key decides: of two nodes storing
//!   the same message at once, the second waits for the first's commit and answers a duplicate.

mod counters;
pub mod import;
mod inbox;
pub mod queue;
pub mod schema;
#[cfg(test)]
pub(crate) mod tests;

#[cfg(test)]
pub use inbox::Ack;

use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use atp_wasm::env::{ContentHash, DedupStore, StoreError, StoreFault};
use atp_wasm::relay::store::{MessageInfo, QueueCounts};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::error::SqlState;
use tokio_postgres::NoTls;

use crate::store::watch::InboxHub;

/// Connections one node keeps at most (docs/design.md §5d: 100 nodes × 16 stay under a server's
/// `max_connections` only with a pooler in front; see the paper model there).
pub const POOL_SIZE: usize = 16;
/// How long a request waits for a free connection, and for a new one to be made, before it is
/// answered 503 `"storage":"unavailable"`.
const POOL_WAIT: Duration = Duration::from_secs(5);
/// Most agent ids remembered as existing (agents are never deleted, so a hit is always right).
const KNOWN_AGENTS_MAX: usize = 100_000;

/// Why the PostgreSQL store could not do something. Callers answer 503 (retry later), never 500.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("postgres: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("postgres: no connection: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    /// `COMMIT` was sent and no answer came back: the transaction may be committed.
    #[error("postgres: commit outcome unknown: {0}")]
    CommitUnknown(tokio_postgres::Error),
    #[error("postgres URL: {0}")]
    Url(String),
    #[error(
        "the database has schema version {found}, newer than this atp knows ({known}): upgrade atp, or use \
         another database"
    )]
    SchemaTooNew { found: i64, known: usize },
}

impl PgError {
    /// The kind of storage trouble this is: a full disk (`53100`), a read-only server (`25006`,
    /// a standby), anything else unavailable.
    pub fn fault(&self) -> StoreFault {
        let code = match self {
            PgError::Db(e) | PgError::CommitUnknown(e) => e.code(),
            _ => None,
        };
        match code {
            Some(c) if *c == SqlState::DISK_FULL => StoreFault::Full,
            Some(c) if *c == SqlState::READ_ONLY_SQL_TRANSACTION => StoreFault::ReadOnly,
            _ => StoreFault::Unavailable,
        }
    }
}

impl From<PgError> for StoreError {
    /// What the relay tells the client (docs/protocol.md §6.4).
    fn from(e: PgError) -> Self {
        let unknown = matches!(e, PgError::CommitUnknown(_));
        StoreError::with_fault(e.fault(), unknown, e.to_string())
    }
}

/// Commits `tx`: an error the server answered means it rolled back (not stored); no answer at all
/// (the connection broke) means the outcome is unknown.
async fn commit(tx: deadpool_postgres::Transaction<'_>) -> Result<(), PgError> {
    tx.commit().await.map_err(|e| if e.code().is_some() { PgError::Db(e) } else { PgError::CommitUnknown(e) })
}

/// Handle to one domain's PostgreSQL database; cheap to clone.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    /// How to connect (for [`PgStore::listen_inbox`]'s own connection).
    config: Arc<tokio_postgres::Config>,
    /// This run's lease owner token, `<node>/<random>` ([`queue`]).
    owner: Arc<str>,
    /// This node's name, the prefix of its owner tokens.
    node: Arc<str>,
    known_agents: Arc<RwLock<HashSet<String>>>,
    /// Agents whose inbox got a message, for the announcer task ([`inbox::announcer`]).
    announce: tokio::sync::mpsc::Sender<String>,
    /// This node's inbox streams, woken by every node's announcements ([`inbox::wake_streams`]).
    hub: InboxHub,
}

impl PgStore {
    /// Connects to `url` (`postgres://user:password@host:port/dbname`), applies the migrations the
    /// database lacks, and keeps a pool of at most `pool_size` connections. `node` names this
    /// node in lease owner tokens (docs/design.md §5d).
    pub async fn open(url: &str, node: &str, pool_size: usize) -> Result<Self, PgError> {
        let mut config: tokio_postgres::Config =
            url.parse().map_err(|e: tokio_postgres::Error| PgError::Url(e.to_string()))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(POOL_WAIT);
        }
        if config.get_application_name().is_none() {
            config.application_name("atp");
        }
        let manager =
            Manager::from_config(config.clone(), NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager)
            .max_size(pool_size.max(1))
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(POOL_WAIT))
            .recycle_timeout(Some(POOL_WAIT))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| PgError::Url(e.to_string()))?;
        let mut client = pool.get().await?;
        schema::migrate(&mut client).await?;
        drop(client);
        let mut run = [0u8; 8];
        let _ = getrandom::getrandom(&mut run);
        let run: String = run.iter().map(|b| format!("{b:02x}")).collect();
        let (announce, queued) = tokio::sync::mpsc::channel(inbox::ANNOUNCE_QUEUE);
        tokio::spawn(inbox::announcer(pool.clone(), queued));
        Ok(PgStore {
            announce,
            pool,
            config: Arc::new(config),
            owner: format!("{node}/{run}").into(),
            node: node.into(),
            known_agents: Arc::default(),
            hub: InboxHub::default(),
        })
    }

    /// This node's inbox streams ([`Backend::hub`](crate::store::Backend::hub)).
    pub fn hub(&self) -> &InboxHub {
        &self.hub
    }

    /// Wakes [`PgStore::hub`] on every node's inbox announcements from now on (a listener
    /// connection of its own, [`inbox::wake_streams`]): what a serving node needs, not a one-off
    /// command such as `atp store migrate`.
    pub fn wake_streams(&self) {
        tokio::spawn(inbox::wake_streams(self.clone()));
    }

    /// This run's lease owner token.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Connections open now and the pool's limit.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn pool_status(&self) -> (usize, usize) {
        let s = self.pool.status();
        (s.size, s.max_size)
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, PgError> {
        Ok(self.pool.get().await?)
    }

    /// Registers an agent; false if the id is taken (of concurrent registrations on any nodes,
    /// one wins: the primary key).
    pub async fn insert_agent(&self, id: &str, hash: &str, now: i64) -> Result<bool, PgError> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(
                "INSERT INTO agents(agent_id, password_hash, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            )
            .await?;
        Ok(c.execute(&st, &[&id, &hash, &now]).await? == 1)
    }

    /// The password hash of an agent.
    pub async fn agent_hash(&self, id: &str) -> Result<Option<String>, PgError> {
        let c = self.client().await?;
        let st = c.prepare_cached("SELECT password_hash FROM agents WHERE agent_id = $1").await?;
        Ok(c.query_opt(&st, &[&id]).await?.map(|r| r.get(0)))
    }

    /// Whether `id` is a registered agent; positive answers are remembered (agents are never
    /// removed, on any node).
    pub async fn agent_exists(&self, id: &str) -> Result<bool, PgError> {
        if self.known_agents.read().is_ok_and(|k| k.contains(id)) {
            return Ok(true);
        }
        let exists = self.agent_hash(id).await?.is_some();
        if exists {
            if let Ok(mut k) = self.known_agents.write() {
                if k.len() >= KNOWN_AGENTS_MAX {
                    k.clear();
                }
                k.insert(id.to_owned());
            }
        }
        Ok(exists)
    }

    /// Registered agents of the whole domain, oldest first.
    pub async fn agents(&self) -> Result<Vec<String>, PgError> {
        let c = self.client().await?;
        let st = c.prepare_cached("SELECT agent_id FROM agents ORDER BY created_at, agent_id").await?;
        Ok(c.query(&st, &[]).await?.iter().map(|r| r.get(0)).collect())
    }

    /// The newest message with this nonce.
    pub async fn inspect(&self, nonce: &str) -> Result<Option<MessageInfo>, PgError> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(
                "SELECT nonce, from_id, to_id, status, created_at, updated_at, attempts, next_attempt_at, last_error
                 FROM messages WHERE nonce = $1 ORDER BY id DESC LIMIT 1",
            )
            .await?;
        Ok(c.query_opt(&st, &[&nonce]).await?.map(|r| MessageInfo {
            nonce: r.get(0),
            from: r.get(1),
            to: r.get(2),
            status: r.get(3),
            created_at: r.get(4),
            updated_at: r.get(5),
            attempts: r.get(6),
            next_attempt_at: r.get(7),
            error: r.get(8),
        }))
    }

    /// Message counts per status and the number of registered agents, for the whole domain.
    pub async fn counts(&self) -> Result<(QueueCounts, i64), PgError> {
        let c = self.client().await?;
        let st = c.prepare_cached("SELECT status, COUNT(*) FROM messages GROUP BY status").await?;
        let by_status = c.query(&st, &[]).await?.iter().map(|r| (r.get(0), r.get(1))).collect();
        let agents: i64 = c.query_one("SELECT COUNT(*) FROM agents", &[]).await?.get(0);
        Ok((QueueCounts { by_status }, agents))
    }

    /// Forgets dedup entries accepted before `before` (past the retry horizon).
    pub async fn prune_dedup(&self, before: i64) -> Result<usize, PgError> {
        let c = self.client().await?;
        Ok(c.execute("DELETE FROM dedup WHERE accepted_at < $1", &[&before]).await? as usize)
    }

    /// Closes the pool: later requests fail as unavailable.
    pub fn close(&self) {
        self.pool.close();
    }
}

impl DedupStore for PgStore {
    async fn seen(&self, sender_domain: &str, nonce: &str) -> Result<Option<ContentHash>, StoreError> {
        let c = self.client().await?;
        let st = c
            .prepare_cached("SELECT content_hash FROM dedup WHERE sender_domain = $1 AND nonce = $2")
            .await
            .map_err(PgError::from)?;
        let row = c.query_opt(&st, &[&sender_domain, &nonce]).await.map_err(PgError::from)?;
        Ok(row.and_then(|r| r.get::<_, Vec<u8>>(0).try_into().ok()))
    }
}
