//! The database schema and its versioned migrations (`PRAGMA user_version` = steps applied), and
//! the connection settings: WAL with `synchronous=FULL`, so a committed transaction survives a
//! power cut (docs/design.md §3 "202 means durable").

use std::path::Path;
use std::time::Duration;

use rusqlite::Connection;

/// Migration steps, applied in order, each in its own transaction. Never edit a released step;
/// append a new one.
pub const MIGRATIONS: &[&str] = &[
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
];

/// Opens a connection with the server's settings.
pub fn connect(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    // The writer runs each request of a batch in a savepoint (writer.rs); their statement journal
    // stays in memory instead of spilling to a temporary file past 64 KiB (only pages that existed
    // before the batch are journaled, so it stays small).
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    owner_only(path);
    Ok(conn)
}

/// Makes the database and its `-wal` / `-shm` files readable by the owner only (0600): they hold
/// password hashes and every message (docs/design.md §5b).
fn owner_only(db: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mut name = db.as_os_str().to_owned();
        for suffix in ["", "-wal", "-shm"] {
            name.push(suffix);
            let p = Path::new(&name);
            if let Ok(meta) = std::fs::metadata(p) {
                if meta.permissions().mode() & 0o077 != 0 {
                    let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600));
                }
            }
            name = db.as_os_str().to_owned();
        }
    }
}

/// Applies the migrations not yet applied; returns the resulting schema version.
pub fn migrate(conn: &mut Connection) -> rusqlite::Result<usize> {
    let version: usize = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i + 1)?;
        tx.commit()?;
    }
    Ok(MIGRATIONS.len().max(version))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn database_files_are_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.db");
        let conn = connect(&path).unwrap();
        conn.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);").unwrap();
        drop(connect(&path).unwrap());
        for suffix in ["", "-wal", "-shm"] {
            let p = dir.path().join(format!("x.db{suffix}"));
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", p.display());
        }
    }

    #[test]
    fn migrations_apply_once_and_settings_hold() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let mut c = connect(&path).unwrap();
        assert_eq!(migrate(&mut c).unwrap(), MIGRATIONS.len());
        assert_eq!(migrate(&mut c).unwrap(), MIGRATIONS.len(), "idempotent");
        let mode: String = c.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
        assert_eq!(mode, "wal");
        let sync: i64 = c.query_row("PRAGMA synchronous", [], |r| r.get(0)).unwrap();
        assert_eq!(sync, 2, "FULL");
        let bad = c.execute(
            "INSERT INTO messages(nonce, sender_domain, from_id, to_id, message_json, status, created_at, updated_at)
             VALUES ('n', 'd', 'f', 't', '{}', 'lost', 0, 0)",
            [],
        );
        assert!(bad.is_err(), "unknown status refused");
    }
}
