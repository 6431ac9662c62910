//! The database schema and its versioned migrations (`PRAGMA user_version` = steps applied), and
//! the connection settings: WAL with `synchronous=FULL`, so a committed transaction survives a
//! power cut (docs/design.md §3 "202 means durable").

use std::path::Path;
use std::time::Duration;

use rusqlite::Connection;

/// Migration steps, applied in order, each in its own transaction: the relay's SQLite schema,
/// defined once for every home that keeps it in SQLite ([`atp_wasm::sqlite_schema`]).
pub const MIGRATIONS: &[&str] = &atp_wasm::sqlite_schema::MIGRATIONS;

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

/// Applies the migrations not yet applied; returns the resulting schema version. A database
/// written by a newer atp (a higher `user_version` than [`MIGRATIONS`] knows) is refused.
pub fn migrate(conn: &mut Connection) -> Result<usize, super::DbError> {
    let version: usize = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > MIGRATIONS.len() {
        return Err(super::DbError::SchemaTooNew { found: version, known: MIGRATIONS.len() });
    }
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
        c.pragma_update(None, "user_version", MIGRATIONS.len() + 1).unwrap();
        let newer = migrate(&mut c).unwrap_err().to_string();
        assert!(newer.contains("newer than this atp knows"), "{newer}");
        c.pragma_update(None, "user_version", MIGRATIONS.len()).unwrap();
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
