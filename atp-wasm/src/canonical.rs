//! The reference's canonical form: the exact bytes ATP signs (protocol.md §3).
//!
//! CONTRACT (filled in by the canonical-form work; keep these signatures):

use serde_json::Value;

/// Why a value has no canonical form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CanonError {
    /// The input text is not JSON (includes invalid `\u` escapes such as lone surrogates).
    #[error("invalid JSON: {0}")]
    InvalidJson(String),
    /// Nesting deeper than [`MAX_DEPTH`].
    #[error("nesting deeper than {MAX_DEPTH} levels")]
    TooDeep,
    /// A number that is not finite as a double (e.g. `1e400`) where a double is needed.
    #[error("number out of range: {0}")]
    NumberOutOfRange(String),
}

/// Deepest nesting of arrays/objects accepted.
pub const MAX_DEPTH: usize = 128;

/// Canonical text of a JSON value, per the reference's rules (protocol.md §3).
pub fn canonicalize(value: &Value) -> Result<String, CanonError> {
    let _ = value;
    todo!("canonical form")
}

/// Parses JSON text (duplicate keys: last wins) and returns its canonical text.
pub fn canonicalize_str(json: &str) -> Result<String, CanonError> {
    let _ = json;
    todo!("canonical form")
}
