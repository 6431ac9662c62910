//! `atp store migrate --from sqlite:///… --to postgres://…` (docs/design.md §5d.2): moves a domain's
//! SQLite database into an empty PostgreSQL database, for a domain that grows from one node to
//! several. The server must be stopped (the SQLite database's lock is taken); nothing is changed in
//! the SQLite file, so going back is starting the server on it again.

use atp_wasm::env::{Clock, SystemClock};
use serde_json::json;

use super::{print_json, print_line, CmdError};
use crate::cli::{Output, StoreMigrateArgs};
use crate::store::{DatabaseUrl, PgStore, Store};

pub async fn migrate(a: StoreMigrateArgs) -> Result<(), CmdError> {
    let from: DatabaseUrl =
        a.from.parse().map_err(|e: crate::store::backend::BadDatabaseUrl| CmdError::Usage(e.to_string()))?;
    let to: DatabaseUrl =
        a.to.parse().map_err(|e: crate::store::backend::BadDatabaseUrl| CmdError::Usage(e.to_string()))?;
    let (DatabaseUrl::Sqlite(path), DatabaseUrl::Postgres(url)) = (&from, &to) else {
        return Err(CmdError::Usage("store migrate copies --from sqlite:///path --to postgres://…".into()));
    };
    if !path.is_file() {
        return Err(CmdError::Usage(format!("{from}: no such database")));
    }
    // Takes the lock (the server must be stopped) and brings the file to the current schema.
    let sqlite = Store::open(path).map_err(|e| CmdError::Usage(format!("{from}: {e}")))?;
    let pg = PgStore::open(url, "atp-store-migrate:0", 2).await.map_err(|e| CmdError::Usage(format!("{to}: {e}")))?;
    let done = pg.import_sqlite(path, SystemClock.now()).await.map_err(|e| CmdError::Usage(format!("{to}: {e}")))?;
    sqlite.close().await;
    pg.close();
    match a.output {
        Output::Json => print_json(&json!({
            "from": from.to_string(), "to": to.to_string(), "agents": done.agents, "messages": done.messages,
            "dedup": done.dedup, "backoffs": done.backoffs, "counters": done.counters,
        })),
        Output::Text => print_line(&format!(
            "Copied {} agents, {} messages, {} dedup records, {} backoffs and {} counters from {from} to {to}.\n\
             Start every node with --database {to} (and the same domain key).",
            done.agents, done.messages, done.dedup, done.backoffs, done.counters
        )),
    }
}
