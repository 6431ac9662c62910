//! The domain's object in this process (native tests and tools): [`Domain`] over a real SQLite
//! file, each call run in one transaction and passed through its JSON wire form both ways, as
//! the worker and the Durable Object exchange it in workerd (`crate::cf`).

use std::cell::Cell;
use std::path::Path;
use std::rc::Rc;

use atp_wasm::env::StoreError;

use crate::object::{Call, Domain, Reply};
use crate::sql::Sqlite;
use crate::store::Objects;

/// The object, shared by the invocations of a test.
pub struct LocalObject {
    pub domain: Domain<Sqlite>,
    /// While set, every call fails before it reaches the database (a storage outage).
    pub failing: Cell<bool>,
}

impl LocalObject {
    /// The object over the database file `path` (created if missing).
    pub fn open(path: &Path) -> Result<Rc<LocalObject>, StoreError> {
        let domain = Domain::open(Sqlite::open(path)?)?;
        Ok(Rc::new(LocalObject { domain, failing: Cell::new(false) }))
    }
}

fn wire<T: serde::Serialize + serde::de::DeserializeOwned>(v: &T) -> Result<T, StoreError> {
    let text = serde_json::to_vec(v).map_err(|e| StoreError::new(e.to_string()))?;
    serde_json::from_slice(&text).map_err(|e| StoreError::new(e.to_string()))
}

impl Objects for Rc<LocalObject> {
    async fn call(&self, call: &Call) -> Result<Reply, StoreError> {
        if self.failing.get() {
            return Err(StoreError::new("the domain object is unavailable"));
        }
        let call = wire(call)?;
        let reply = self.domain.sql.transaction(|| self.domain.call(call))?;
        wire(&reply)
    }
}
