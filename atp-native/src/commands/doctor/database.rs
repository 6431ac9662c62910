//! The `database` line of `atp doctor`: whether the store the server is configured with
//! (`--database` / `ATP_DATABASE`, else `<home>/data/<domain>.db`; docs/design.md §5d) opens, and
//! its schema version against what this atp knows. Read only: nothing is created or migrated.

use std::time::Duration;

use super::Line;
use crate::store::DatabaseUrl;

const CHECK: &str = "database";
/// How long connecting to PostgreSQL may take.
const CONNECT: Duration = Duration::from_secs(5);

/// The line for the schema version `found` (`None`: no schema yet) of a store that knows `known`
/// steps.
fn version_line(url: &DatabaseUrl, found: Option<usize>, known: usize) -> Line {
    match found {
        None | Some(0) => Line::ok(CHECK, format!("{url} opens; no schema yet (the server creates it at start)")),
        Some(v) if v == known => Line::ok(CHECK, format!("{url} opens, schema version {v} (current)")),
        Some(v) if v < known => {
            Line::ok(CHECK, format!("{url} opens, schema version {v} (the server brings it to {known} at start)"))
        }
        Some(v) => Line::fail(
            CHECK,
            format!("{url} has schema version {v}, newer than this atp knows ({known})"),
            "upgrade atp to the version that wrote it, or use another database",
        ),
    }
}

/// Opens the configured store read-only and reads its schema version.
pub async fn check(url: &DatabaseUrl) -> Line {
    match url {
        DatabaseUrl::Sqlite(path) => {
            if !path.exists() {
                return Line::warn(
                    CHECK,
                    format!("no database at {url} yet"),
                    "start the server once (it creates the database), or pass the server's --database / --home",
                );
            }
            let read = || -> rusqlite::Result<usize> {
                let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
                let c = rusqlite::Connection::open_with_flags(path, flags)?;
                c.busy_timeout(CONNECT)?;
                c.query_row("PRAGMA user_version", [], |r| r.get(0))
            };
            match read() {
                Ok(v) => version_line(url, Some(v), crate::store::schema::MIGRATIONS.len()),
                Err(e) => Line::fail(
                    CHECK,
                    format!("{url}: {e}"),
                    "check the file and its permissions (the server's user reads and writes it)",
                ),
            }
        }
        DatabaseUrl::Postgres(u) => match postgres_version(u).await {
            Ok(v) => version_line(url, v, crate::store::postgres::schema::MIGRATIONS.len()),
            Err(e) => Line::fail(
                CHECK,
                format!("{url}: {e}"),
                "check the URL (host, port, user, password, database) and that the server accepts connections",
            ),
        },
    }
}

/// The version in `atp_schema` (`None` when the table is not there yet).
async fn postgres_version(url: &str) -> Result<Option<usize>, String> {
    let mut config: tokio_postgres::Config = url.parse().map_err(|e: tokio_postgres::Error| e.to_string())?;
    config.connect_timeout(CONNECT);
    let (client, conn) = tokio::time::timeout(CONNECT, config.connect(tokio_postgres::NoTls))
        .await
        .map_err(|_| "no connection within 5 s".to_owned())?
        .map_err(|e| e.to_string())?;
    let conn = tokio::spawn(conn);
    let r = client.query_opt("SELECT to_regclass('atp_schema') IS NOT NULL", &[]).await;
    let found = match r {
        Ok(Some(row)) if row.get::<_, bool>(0) => client
            .query_opt("SELECT version FROM atp_schema", &[])
            .await
            .map(|r| r.map(|r| r.get::<_, i64>(0).max(0) as usize)),
        Ok(_) => Ok(None),
        Err(e) => Err(e),
    };
    drop(client);
    let _ = conn.await;
    found.map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sqlite_versions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.test.db");
        let url = DatabaseUrl::Sqlite(path.clone());
        assert_eq!(check(&url).await.mark, super::super::Mark::Warn, "not there yet");
        let mut c = crate::store::schema::connect(&path).unwrap();
        crate::store::schema::migrate(&mut c).unwrap();
        let line = check(&url).await;
        assert!(line.mark == super::super::Mark::Ok && line.detail.contains("(current)"), "{line:?}");
        c.pragma_update(None, "user_version", crate::store::schema::MIGRATIONS.len() + 1).unwrap();
        let line = check(&url).await;
        assert!(line.mark == super::super::Mark::Fail && line.detail.contains("newer"), "{line:?}");
    }

    /// A real cluster: an empty database, a migrated one, a database that does not exist.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_versions() {
        use super::super::Mark;
        let pg = tokio::task::spawn_blocking(crate::store::postgres::tests::cluster::Postgres::start).await.unwrap();
        let url = pg.create_db("atp");
        let db = DatabaseUrl::Postgres(url.clone());
        let line = check(&db).await;
        assert!(line.mark == Mark::Ok && line.detail.contains("no schema yet"), "{line:?}");
        crate::store::PgStore::open(&url, "n:1", 1).await.unwrap().close();
        let line = check(&db).await;
        assert!(line.mark == Mark::Ok && line.detail.contains("(current)"), "{line:?}");
        let line = check(&DatabaseUrl::Postgres(pg.url("nothere"))).await;
        assert_eq!(line.mark, Mark::Fail, "{line:?}");
    }
}
