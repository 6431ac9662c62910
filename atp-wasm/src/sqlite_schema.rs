//! The SQLite schema of a relay's state (docs/design.md §1.5), one definition for the homes that
//! keep it in SQLite: atp-native's database file and atp-worker's Durable Object (§4). Each step is
//! applied once, in order, in one transaction; never edit a released step, append a new one.

/// Migration steps: agents; every stored message (inbox rows `delivered`; outbound rows `queued` →
/// `delivering` under a lease → `delivered` / `failed` (retry) / `bounced`); the dedup rows of the
/// retry horizon; per-destination scheduling (`dest_domain`); per-agent inbox usage (the quota);
/// per-destination backoff, kept across restarts (docs/design.md §5d); the domain's request
/// counters (§4 "Counters").
pub const MIGRATIONS: [&str; 5] = [
    r#"
CREATE TABLE agents(
    agent_id      TEXT PRIMARY KEY,         -- lowercase local@domain
    password_hash TEXT NOT NULL,            -- argon2id PHC string
    created_at    INTEGER NOT NULL
);
-- Every stored message: local inbox rows ('delivered') and rows for the delivery engine
-- ('queued' → 'delivering' under a lease → 'delivered' / 'failed' (retry) / 'bounced').
CREATE TABLE messages(
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    nonce           TEXT NOT NULL,
    sender_domain   TEXT NOT NULL,
    from_id         TEXT NOT NULL,
    to_id           TEXT NOT NULL,
    message_json    TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('delivered', 'queued', 'delivering', 'failed', 'bounced')),
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER,                -- due time of the next attempt (queued / failed)
    lease_until     INTEGER,                -- a worker owns the row until then (delivering)
    last_error      TEXT
);
CREATE INDEX messages_inbox ON messages(to_id, status, id);
CREATE INDEX messages_due ON messages(status, next_attempt_at);
CREATE INDEX messages_nonce ON messages(nonce);
-- What was accepted under (sender domain, nonce), for the retry horizon (docs/design.md §3).
CREATE TABLE dedup(
    sender_domain TEXT NOT NULL,
    nonce         TEXT NOT NULL,
    content_hash  BLOB NOT NULL,            -- SHA-256 of the canonical form
    accepted_at   INTEGER NOT NULL,
    PRIMARY KEY(sender_domain, nonce)
) WITHOUT ROWID;
CREATE INDEX dedup_age ON dedup(accepted_at);
"#,
    r#"
-- The delivery engine schedules per destination domain (docs/design.md §3).
ALTER TABLE messages ADD COLUMN dest_domain TEXT;
UPDATE messages SET dest_domain = lower(substr(to_id, instr(to_id, '@') + 1)) WHERE status <> 'delivered';
CREATE INDEX messages_dest ON messages(dest_domain, status);
"#,
    r#"
-- Per-agent inbox use, kept in the transaction that stores a message (the quota, docs/design.md §5b).
CREATE TABLE inbox_usage(
    agent_id TEXT PRIMARY KEY,
    messages INTEGER NOT NULL,
    bytes    INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO inbox_usage
    SELECT to_id, COUNT(*), SUM(length(CAST(message_json AS BLOB))) FROM messages WHERE status = 'delivered' GROUP BY to_id;
"#,
    r#"
-- Per-destination backoff, kept across restarts (docs/design.md §5d).
CREATE TABLE domain_backoff(
    domain        TEXT PRIMARY KEY,
    failures      INTEGER NOT NULL,
    blocked_until INTEGER NOT NULL
) WITHOUT ROWID;
"#,
    // atp-worker's Durable Object had this table as its own fifth step: the same table, so an
    // object at version 5 has it already.
    r#"
-- The domain's request counters, each process adding its counts (docs/design.md §4 "Counters").
CREATE TABLE counters(
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
"#,
];

/// The counters' statements ([`crate::relay::counters`], over the last step's table).
pub mod counters {
    /// Records `?2` under `?1` (the start) unless it is there.
    pub const SET_ONCE: &str = "INSERT OR IGNORE INTO counters(name, value) VALUES (?1, ?2)";
    /// Adds `?2` to the counter `?1`.
    pub const ADD: &str =
        "INSERT INTO counters(name, value) VALUES (?1, ?2) ON CONFLICT(name) DO UPDATE SET value = value + excluded.value";
    /// Every counter, by name.
    pub const ALL: &str = "SELECT name, value FROM counters ORDER BY name";
}
