//! SQL as the domain's Durable Object runs it (docs/design.md §4 "State"): statements with `?`
//! parameters, rows of [`Value`]s. Workers' SQLite storage (`ctx.storage.sql`) implements [`Sql`]
//! in `crate::cf`; natively, [`Sqlite`] runs the same statements on a real SQLite database file, so
//! the object's every statement is tested with `cargo test -p atp-worker`.

use atp_wasm::env::StoreError;

/// A value bound to a statement or read from a row.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

/// One result row, columns in the statement's order.
pub type Row = Vec<Value>;

impl Value {
    /// An integer column (a real one is truncated; SQLite's JavaScript binding returns numbers).
    pub fn int(&self) -> i64 {
        match self {
            Value::Int(i) => *i,
            Value::Real(f) => *f as i64,
            _ => 0,
        }
    }

    pub fn opt_int(&self) -> Option<i64> {
        match self {
            Value::Null => None,
            v => Some(v.int()),
        }
    }

    pub fn text(&self) -> String {
        match self {
            Value::Text(s) => s.clone(),
            _ => String::new(),
        }
    }

    pub fn opt_text(&self) -> Option<String> {
        match self {
            Value::Text(s) => Some(s.clone()),
            _ => None,
        }
    }

    pub fn blob(&self) -> Vec<u8> {
        match self {
            Value::Blob(b) => b.clone(),
            _ => Vec::new(),
        }
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(v.to_owned())
    }
}

impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(v)
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

/// Runs statements. Transactions are the caller's: the object runs each call inside one
/// (`transactionSync` on Workers, `BEGIN IMMEDIATE`…`COMMIT` in [`Sqlite::transaction`]).
pub trait Sql {
    /// Runs one statement and returns its rows (none for a write).
    fn exec(&self, sql: &str, params: &[Value]) -> Result<Vec<Row>, StoreError>;
}

/// A real SQLite database (native tests of the object).
#[cfg(not(target_arch = "wasm32"))]
pub struct Sqlite(pub rusqlite::Connection);

#[cfg(not(target_arch = "wasm32"))]
impl Sqlite {
    /// Opens (creates) the database file at `path`.
    pub fn open(path: &std::path::Path) -> Result<Sqlite, StoreError> {
        rusqlite::Connection::open(path).map(Sqlite).map_err(sql_err)
    }

    /// Runs `f` in one transaction: committed when it returns `Ok`, rolled back otherwise.
    pub fn transaction<T>(&self, f: impl FnOnce() -> Result<T, StoreError>) -> Result<T, StoreError> {
        self.0.execute_batch("BEGIN IMMEDIATE").map_err(sql_err)?;
        match f() {
            Ok(v) => {
                self.0.execute_batch("COMMIT").map_err(sql_err)?;
                Ok(v)
            }
            Err(e) => {
                let _ = self.0.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    }
}

#[cfg(not(target_arch = "wasm32"))]
fn sql_err(e: rusqlite::Error) -> StoreError {
    StoreError::new(format!("SQLite: {e}"))
}

#[cfg(not(target_arch = "wasm32"))]
impl Sql for Sqlite {
    fn exec(&self, sql: &str, params: &[Value]) -> Result<Vec<Row>, StoreError> {
        use rusqlite::types::{Value as V, ValueRef};
        let mut stmt = self.0.prepare_cached(sql).map_err(sql_err)?;
        let params: Vec<V> = params
            .iter()
            .map(|v| match v {
                Value::Null => V::Null,
                Value::Int(i) => V::Integer(*i),
                Value::Real(f) => V::Real(*f),
                Value::Text(s) => V::Text(s.clone()),
                Value::Blob(b) => V::Blob(b.clone()),
            })
            .collect();
        let n = stmt.column_count();
        let mut rows = stmt.query(rusqlite::params_from_iter(params)).map_err(sql_err)?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().map_err(sql_err)? {
            let mut row = Vec::with_capacity(n);
            for i in 0..n {
                row.push(match r.get_ref(i).map_err(sql_err)? {
                    ValueRef::Null => Value::Null,
                    ValueRef::Integer(i) => Value::Int(i),
                    ValueRef::Real(f) => Value::Real(f),
                    ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
                    ValueRef::Blob(b) => Value::Blob(b.to_vec()),
                });
            }
            out.push(row);
        }
        Ok(out)
    }
}
