//! The key-value store the relay keeps its state in: Workers KV in production ([`crate::cf`]), an
//! in-memory map in native tests ([`MemoryKv`]).
//!
//! Only what Workers KV offers is assumed: `get`, `put` (with an optional expiry and a small JSON
//! metadata object), `delete`, and `list` of a key prefix in lexicographic order, a page at a time.
//! There are no transactions and no atomic counters, and reads may be stale for up to a minute in
//! other locations (eventual consistency); the layout in [`crate::layout`] is built around that.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;

use atp_wasm::env::StoreError;
use serde_json::Value;

/// How to store a value.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Put {
    /// Seconds until the key expires (Workers KV needs at least 60).
    pub ttl_secs: Option<u64>,
    /// Small JSON object returned by `list` with the key (at most 1024 bytes serialized).
    pub metadata: Option<Value>,
}

impl Put {
    /// Kept until deleted.
    pub fn forever() -> Self {
        Put::default()
    }

    /// Expires after `secs` (at least 60, Workers KV's minimum).
    pub fn ttl(secs: u64) -> Self {
        Put { ttl_secs: Some(secs.max(60)), metadata: None }
    }

    /// With list metadata.
    pub fn with_metadata(mut self, metadata: Value) -> Self {
        self.metadata = Some(metadata);
        self
    }
}

/// One key of a listing.
#[derive(Debug, Clone, PartialEq)]
pub struct Listed {
    pub name: String,
    pub metadata: Option<Value>,
}

/// One page of a listing, keys in lexicographic order. `cursor` is `None` on the last page.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Page {
    pub keys: Vec<Listed>,
    pub cursor: Option<String>,
}

/// Largest page Workers KV returns.
pub const MAX_PAGE: u32 = 1000;

/// A key-value namespace. `async fn` without `Send` bounds: Workers futures are `!Send`.
#[allow(async_fn_in_trait)]
pub trait Kv {
    async fn get(&self, key: &str) -> Result<Option<String>, StoreError>;
    async fn put(&self, key: &str, value: &str, opts: Put) -> Result<(), StoreError>;
    async fn delete(&self, key: &str) -> Result<(), StoreError>;
    /// Up to `limit` (at most [`MAX_PAGE`]) keys starting with `prefix`, after `cursor`.
    async fn list(&self, prefix: &str, cursor: Option<String>, limit: u32) -> Result<Page, StoreError>;
}

/// Every key under `prefix`, page by page, at most `max` keys.
pub async fn list_all<K: Kv>(kv: &K, prefix: &str, max: usize) -> Result<Vec<Listed>, StoreError> {
    let mut out = Vec::new();
    let mut cursor = None;
    loop {
        let page = kv.list(prefix, cursor, MAX_PAGE).await?;
        out.extend(page.keys);
        if out.len() >= max {
            out.truncate(max);
            return Ok(out);
        }
        match page.cursor {
            Some(c) => cursor = Some(c),
            None => return Ok(out),
        }
    }
}

/// An in-memory namespace for native tests. Expiry is ignored (tests are short); `list` pages
/// with the index of the next key as cursor.
#[derive(Debug, Default)]
pub struct MemoryKv {
    entries: RefCell<BTreeMap<String, (String, Option<Value>)>>,
    /// Every operation, for tests that count them.
    pub ops: Cell<u64>,
    /// While set, every operation fails (tests of storage failures).
    pub failing: Cell<bool>,
}

impl MemoryKv {
    pub fn new() -> Self {
        Self::default()
    }

    /// All keys, sorted.
    pub fn keys(&self) -> Vec<String> {
        self.entries.borrow().keys().cloned().collect()
    }

    fn op(&self) -> Result<(), StoreError> {
        self.ops.set(self.ops.get() + 1);
        if self.failing.get() {
            return Err(StoreError::new("KV unavailable (test)"));
        }
        Ok(())
    }
}

impl Kv for MemoryKv {
    async fn get(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.op()?;
        Ok(self.entries.borrow().get(key).map(|(v, _)| v.clone()))
    }

    async fn put(&self, key: &str, value: &str, opts: Put) -> Result<(), StoreError> {
        self.op()?;
        self.entries.borrow_mut().insert(key.to_owned(), (value.to_owned(), opts.metadata));
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.op()?;
        self.entries.borrow_mut().remove(key);
        Ok(())
    }

    async fn list(&self, prefix: &str, cursor: Option<String>, limit: u32) -> Result<Page, StoreError> {
        self.op()?;
        let skip: usize = cursor.as_deref().and_then(|c| c.parse().ok()).unwrap_or(0);
        let limit = limit.clamp(1, MAX_PAGE) as usize;
        let entries = self.entries.borrow();
        let matching: Vec<Listed> = entries
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .skip(skip)
            .take(limit + 1)
            .map(|(k, (_, m))| Listed { name: k.clone(), metadata: m.clone() })
            .collect();
        let more = matching.len() > limit;
        let keys: Vec<Listed> = matching.into_iter().take(limit).collect();
        Ok(Page { cursor: more.then(|| (skip + limit).to_string()), keys })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::executor::block_on;

    #[test]
    fn memory_kv_lists_by_prefix_in_pages() {
        let kv = MemoryKv::new();
        block_on(async {
            for i in 0..5 {
                kv.put(&format!("a/{i}"), "v", Put::forever()).await.unwrap();
            }
            kv.put("b/0", "v", Put::forever().with_metadata(serde_json::json!({"x": 1}))).await.unwrap();
            let p = kv.list("a/", None, 2).await.unwrap();
            assert_eq!(p.keys.iter().map(|k| k.name.as_str()).collect::<Vec<_>>(), ["a/0", "a/1"]);
            let p2 = kv.list("a/", p.cursor, 2).await.unwrap();
            assert_eq!(p2.keys[0].name, "a/2");
            assert_eq!(list_all(&kv, "a/", 100).await.unwrap().len(), 5);
            assert_eq!(list_all(&kv, "a/", 3).await.unwrap().len(), 3);
            let b = kv.list("b/", None, 10).await.unwrap();
            assert_eq!((b.keys[0].metadata.clone(), b.cursor), (Some(serde_json::json!({"x": 1})), None));
            kv.delete("b/0").await.unwrap();
            assert_eq!(kv.get("b/0").await.unwrap(), None);
        });
    }
}
