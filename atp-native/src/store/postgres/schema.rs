//! The PostgreSQL schema and its versioned migrations (docs/design.md §5d): the version applied is
//! the one row of `atp_schema`; every node applies the missing steps at start, under an advisory
//! lock, in one transaction (PostgreSQL's DDL is transactional), and a database whose version is
//! newer than this binary knows is refused.

use super::PgError;

/// The advisory lock that serialises migrations of nodes starting at once.
const MIGRATION_LOCK: i64 = 0x0a7b_5c4e_3a00_0001;

/// Migration steps, applied in order. Never edit a released step; append a new one.
pub const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE agents(
    agent_id      TEXT PRIMARY KEY,         -- lowercase local@domain
    password_hash TEXT NOT NULL,            -- argon2id PHC string
    created_at    BIGINT NOT NULL
);
-- Every stored message: inbox rows ('delivered', with inbox_id) and rows of the outbound queue
-- ('queued' → 'delivering' under a lease → 'delivered' / 'failed' (retry) / 'bounced').
CREATE TABLE messages(
    id              BIGSERIAL PRIMARY KEY,
    inbox_id        BIGINT,                 -- per agent, in commit order (inbox_usage.last_id)
    nonce           TEXT NOT NULL,
    sender_domain   TEXT NOT NULL,
    from_id         TEXT NOT NULL,
    to_id           TEXT NOT NULL,
    message_json    TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('delivered', 'queued', 'delivering', 'failed', 'bounced')),
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT,                 -- due time of the next attempt (queued / failed)
    lease_until     BIGINT,                 -- the node named by lease_owner owns the row until then
    lease_owner     TEXT,
    last_error      TEXT,
    dest_domain     TEXT                    -- queue rows: the destination domain
);
CREATE UNIQUE INDEX messages_inbox ON messages(to_id, inbox_id) WHERE inbox_id IS NOT NULL;
CREATE INDEX messages_due ON messages(next_attempt_at) WHERE status IN ('queued', 'failed');
CREATE INDEX messages_lease ON messages(lease_until) WHERE status = 'delivering';
CREATE INDEX messages_waiting ON messages(dest_domain) WHERE status IN ('queued', 'failed');
CREATE INDEX messages_nonce ON messages(nonce);
CREATE INDEX messages_status ON messages(status);
-- What was accepted under (sender domain, nonce), for the retry horizon (docs/design.md §3).
CREATE TABLE dedup(
    sender_domain TEXT NOT NULL,
    nonce         TEXT NOT NULL,
    content_hash  BYTEA NOT NULL,           -- SHA-256 of the canonical form
    accepted_at   BIGINT NOT NULL,
    PRIMARY KEY(sender_domain, nonce)
);
CREATE INDEX dedup_age ON dedup(accepted_at);
-- Per-agent inbox use (the quota, docs/design.md §5b) and the agent's last inbox id: the row is
-- updated in the transaction that stores a message, so its lock orders an agent's inbox commits.
CREATE TABLE inbox_usage(
    agent_id TEXT PRIMARY KEY,
    messages BIGINT NOT NULL,
    bytes    BIGINT NOT NULL,
    last_id  BIGINT NOT NULL
);
-- Per-destination backoff, shared by every node of the domain (docs/design.md §5d).
CREATE TABLE domain_backoff(
    domain        TEXT PRIMARY KEY,
    failures      BIGINT NOT NULL,
    blocked_until BIGINT NOT NULL
);
"#,
    r#"
-- The domain's request counters, each node adding its counts (docs/design.md §4 "Counters").
CREATE TABLE counters(
    name  TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
"#,
];

/// Applies the migrations this database lacks; returns the resulting version. Refuses a database
/// written by a newer atp ([`PgError::SchemaTooNew`]).
pub async fn migrate(client: &mut tokio_postgres::Client) -> Result<usize, PgError> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS atp_schema(version BIGINT NOT NULL)").await?;
    let found: Option<i64> = tx.query_opt("SELECT version FROM atp_schema", &[]).await?.map(|r| r.get(0));
    let known = MIGRATIONS.len();
    let version = match found {
        Some(v) if v as usize > known => return Err(PgError::SchemaTooNew { found: v, known }),
        Some(v) => v as usize,
        None => {
            tx.execute("INSERT INTO atp_schema(version) VALUES (0)", &[]).await?;
            0
        }
    };
    for sql in &MIGRATIONS[version..] {
        tx.batch_execute(sql).await?;
    }
    tx.execute("UPDATE atp_schema SET version = $1", &[&(known as i64)]).await?;
    tx.commit().await?;
    Ok(known)
}
