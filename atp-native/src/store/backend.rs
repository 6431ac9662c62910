//! The storage backend a server runs on (docs/design.md §5d): SQLite, the embedded default (one
//! process per database), or PostgreSQL (any number of nodes per domain), chosen by
//! `--database URL` / `ATP_DATABASE` / `[store] url`. [`Backend`] forwards the core's storage
//! traits and the delivery engine's queue to the one in use.

use std::path::PathBuf;
use std::str::FromStr;

use atp_wasm::delivery::Backoff;
use atp_wasm::env::{ContentHash, DedupStore, StoreError};
use atp_wasm::relay::store::{
    Ack, AgentStore, CounterStore, InboxRow, MessageInfo, MessageStore, NewMessage, QueueCounts, Stored, Usage,
};

use super::postgres::{PgError, PgStore};
use super::queue::{Claimed, QueueOp};
use super::watch::InboxHub;
use super::{DbError, Store};

/// Where a domain's data lives.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// `sqlite:///absolute/path.db` (or `sqlite://relative/path.db`).
    Sqlite(PathBuf),
    /// `postgres://…` or `postgresql://…`, as libpq reads it.
    Postgres(String),
}

/// A `--database` value that names no backend.
#[derive(Debug, thiserror::Error)]
#[error("database URL {0:?}: expected sqlite:///path or postgres://user:password@host:port/dbname")]
pub struct BadDatabaseUrl(pub String);

impl FromStr for DatabaseUrl {
    type Err = BadDatabaseUrl;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(path) = s.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err(BadDatabaseUrl(s.into()));
            }
            return Ok(DatabaseUrl::Sqlite(path.into()));
        }
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            return Ok(DatabaseUrl::Postgres(s.into()));
        }
        Err(BadDatabaseUrl(DatabaseUrl::redact(s)))
    }
}

impl DatabaseUrl {
    /// `s` without its password (`postgres://user:***@host/db`), for logs and errors.
    fn redact(s: &str) -> String {
        let Some((scheme, rest)) = s.split_once("://") else { return s.into() };
        match rest.split_once('@') {
            Some((user, host)) if user.contains(':') => {
                let name = user.split_once(':').map_or(user, |(n, _)| n);
                format!("{scheme}://{name}:***@{host}")
            }
            _ => s.into(),
        }
    }
}

impl std::fmt::Display for DatabaseUrl {
    /// The URL with its password hidden.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DatabaseUrl::Sqlite(p) => write!(f, "sqlite://{}", p.display()),
            DatabaseUrl::Postgres(u) => f.write_str(&DatabaseUrl::redact(u)),
        }
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DatabaseUrl({self})")
    }
}

/// Why a database could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("database {url}: {source}")]
    Sqlite { url: DatabaseUrl, source: DbError },
    #[error("database {url}: {source}")]
    Postgres { url: DatabaseUrl, source: PgError },
}

/// The store of a running server; cheap to clone.
#[derive(Clone)]
pub enum Backend {
    Sqlite(Store),
    Postgres(PgStore),
}

/// Applies the same call to whichever store is in use.
macro_rules! each {
    ($self:expr, $s:ident => $call:expr) => {
        match $self {
            Backend::Sqlite($s) => $call.map_err(StoreError::from),
            Backend::Postgres($s) => $call.map_err(StoreError::from),
        }
    };
}

impl Backend {
    /// Opens (creating and migrating) the database at `url`. `node` names this node in the lease
    /// owner tokens of a shared database; `pool_size` bounds its PostgreSQL connections. On
    /// PostgreSQL it also starts waking this node's streams from every node's commits
    /// ([`PgStore::wake_streams`]).
    pub async fn open(url: &DatabaseUrl, node: &str, pool_size: usize) -> Result<Backend, OpenError> {
        match url {
            DatabaseUrl::Sqlite(path) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    let _ = std::fs::create_dir_all(dir);
                }
                Store::open(path).map(Backend::Sqlite).map_err(|source| OpenError::Sqlite { url: url.clone(), source })
            }
            DatabaseUrl::Postgres(u) => PgStore::open(u, node, pool_size)
                .await
                .map(|s| {
                    s.wake_streams();
                    Backend::Postgres(s)
                })
                .map_err(|source| OpenError::Postgres { url: url.clone(), source }),
        }
    }

    /// Applies a transition of the outbound queue; returns the rows it changed.
    pub async fn queue(&self, op: QueueOp) -> Result<usize, StoreError> {
        each!(self, s => s.queue(op).await)
    }

    /// Leases due rows for delivery.
    pub async fn claim(
        &self,
        now: i64,
        lease_until: i64,
        limit: usize,
        blocked: Vec<String>,
    ) -> Result<Vec<Claimed>, StoreError> {
        match self {
            Backend::Sqlite(s) => Ok(s.claim(now, lease_until, limit, blocked).await?),
            Backend::Postgres(s) => Ok(s.claim(now, lease_until, limit, &blocked).await?),
        }
    }

    /// The earliest due time among waiting rows of domains not in `blocked`.
    pub async fn next_due(&self, blocked: Vec<String>) -> Result<Option<i64>, StoreError> {
        match self {
            Backend::Sqlite(s) => Ok(s.next_due(blocked).await?),
            Backend::Postgres(s) => Ok(s.next_due(&blocked).await?),
        }
    }

    /// The backoff of every destination domain blocked at `now`.
    pub async fn backoffs(&self, now: i64) -> Result<Vec<(String, Backoff)>, StoreError> {
        each!(self, s => s.backoffs(now).await)
    }

    /// Records a domain's backoff (`None`: forget it).
    pub async fn set_backoff(&self, domain: &str, backoff: Option<Backoff>) -> Result<(), StoreError> {
        each!(self, s => s.set_backoff(domain, backoff).await)
    }

    /// Forgets dedup entries accepted before `before`.
    pub async fn prune_dedup(&self, before: i64) -> Result<usize, StoreError> {
        each!(self, s => s.prune_dedup(before).await)
    }

    /// Message counts per status and the number of agents, for the whole domain.
    pub async fn counts(&self) -> Result<(QueueCounts, i64), StoreError> {
        each!(self, s => s.counts().await)
    }

    /// Wakes this node's inbox streams when an inbox row commits (docs/design.md §5c): on SQLite
    /// the store's own commits; on PostgreSQL every node's, announced by `NOTIFY atp_inbox`.
    pub fn hub(&self) -> &InboxHub {
        match self {
            Backend::Sqlite(s) => s.hub(),
            Backend::Postgres(s) => s.hub(),
        }
    }

    /// Commits what is pending and closes the store.
    pub async fn close(&self) {
        match self {
            Backend::Sqlite(s) => s.close().await,
            Backend::Postgres(s) => s.close(),
        }
    }
}

impl DedupStore for Backend {
    async fn seen(&self, sender_domain: &str, nonce: &str) -> Result<Option<ContentHash>, StoreError> {
        match self {
            Backend::Sqlite(s) => s.seen(sender_domain, nonce).await,
            Backend::Postgres(s) => s.seen(sender_domain, nonce).await,
        }
    }
}

impl AgentStore for Backend {
    async fn agent_hash(&self, id: &str) -> Result<Option<String>, StoreError> {
        each!(self, s => s.agent_hash(id).await)
    }
    async fn agent_exists(&self, id: &str) -> Result<bool, StoreError> {
        each!(self, s => s.agent_exists(id).await)
    }
    async fn insert_agent(&self, id: &str, hash: &str, now: i64) -> Result<bool, StoreError> {
        each!(self, s => s.insert_agent(id, hash, now).await)
    }
    async fn agent_ids(&self) -> Result<Vec<String>, StoreError> {
        each!(self, s => s.agents().await)
    }
}

impl MessageStore for Backend {
    async fn store_message(&self, m: NewMessage) -> Result<Stored, StoreError> {
        match self {
            Backend::Sqlite(s) => Ok(s.insert_message(m).await?),
            Backend::Postgres(s) => Ok(s.insert_message(&m).await?),
        }
    }
    async fn inbox(
        &self,
        agent: &str,
        after: i64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<InboxRow>, StoreError> {
        each!(self, s => s.inbox(agent, after, limit, max_bytes).await)
    }
    async fn message_info(&self, nonce: &str) -> Result<Option<MessageInfo>, StoreError> {
        each!(self, s => s.inspect(nonce).await)
    }
    async fn queue_counts(&self) -> Result<QueueCounts, StoreError> {
        Ok(self.counts().await?.0)
    }
    async fn usage(&self, agent: &str) -> Result<Usage, StoreError> {
        each!(self, s => s.usage(agent).await)
    }
    async fn ack(&self, agent: &str, ack: &Ack) -> Result<u64, StoreError> {
        match self {
            Backend::Sqlite(s) => MessageStore::ack(s, agent, ack).await,
            Backend::Postgres(s) => s.ack(agent, ack).await,
        }
    }
    async fn expire(&self, before: i64) -> Result<u64, StoreError> {
        match self {
            Backend::Sqlite(s) => MessageStore::expire(s, before).await,
            Backend::Postgres(s) => s.expire(before).await,
        }
    }
}

/// The domain's counters: one table for every process of the domain (docs/design.md §5d).
impl CounterStore for Backend {
    async fn add_counters(&self, now: i64, deltas: &[(String, u64)]) -> Result<(), StoreError> {
        each!(self, s => s.add_counters(now, deltas).await)
    }
    async fn counters(&self) -> Result<Vec<(String, u64)>, StoreError> {
        each!(self, s => s.counters().await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_a_backend_and_hide_passwords() {
        assert_eq!(
            "sqlite:///var/lib/atp/a.db".parse::<DatabaseUrl>().unwrap(),
            DatabaseUrl::Sqlite("/var/lib/atp/a.db".into())
        );
        assert_eq!("sqlite://rel/a.db".parse::<DatabaseUrl>().unwrap(), DatabaseUrl::Sqlite("rel/a.db".into()));
        let pg: DatabaseUrl = "postgres://atp:s3cret@db.internal:5432/atp".parse().unwrap();
        assert!(matches!(pg, DatabaseUrl::Postgres(_)));
        assert_eq!(pg.to_string(), "postgres://atp:***@db.internal:5432/atp");
        assert!(!format!("{pg:?}").contains("s3cret"));
        assert!("postgresql://h/db".parse::<DatabaseUrl>().is_ok());
        for bad in ["mysql://x", "sqlite://", "/var/lib/atp.db", ""] {
            assert!(bad.parse::<DatabaseUrl>().is_err(), "{bad}");
        }
        let err = "mysql://u:pw@h/d".parse::<DatabaseUrl>().unwrap_err().to_string();
        assert!(!err.contains("pw@"), "{err}");
    }
}
