//! The domain's object in this process (native tests and tools): [`Domain`] over a real SQLite
//! file, each call run in one transaction and passed through its JSON wire form both ways, as
//! the worker and the Durable Object exchange it in workerd (`crate::cf`).
//!
//! It does not wait: `/watch` answers at once (woken when the inbox has a row after the caller's
//! id, else a time-out), as there is no timer in the tests' executor. The waiting itself is
//! [`crate::waiters`] (tested natively) and `crate::cf` (tested in workerd: tests/worker,
//! tests/conformance).

use std::cell::Cell;
use std::path::Path;
use std::rc::Rc;
use std::time::Duration;

use atp_wasm::env::StoreError;

use crate::object::{Call, Domain, Reply};
use crate::sql::Sqlite;
use crate::store::Objects;
use crate::waiters::{WatchAnswer, WatchRequest};

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
        let reply = self.domain.sql.transaction(|| self.domain.call(call));
        // Nobody waits here: the list of agents to wake is dropped (committed or not).
        self.domain.take_delivered();
        wire(&reply?)
    }

    async fn watch(&self, w: &WatchRequest) -> Result<WatchAnswer, StoreError> {
        if self.failing.get() {
            return Err(StoreError::new("the domain object is unavailable"));
        }
        let w = WatchRequest::decode(&w.encode()).ok_or_else(|| StoreError::new("malformed watch request"))?;
        let woken = self.domain.has_after(&w.agent, w.after_id)?;
        Ok(if woken { WatchAnswer::Woken } else { WatchAnswer::Timeout })
    }

    async fn pause(&self, _d: Duration) {}
}
