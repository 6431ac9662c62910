//! Strict RFC 8785 JSON Canonicalization Scheme (JCS).
//!
//! CONTRACT (filled in by the canonical-form work; keep these signatures):

use serde_json::Value;

pub use crate::canonical::CanonError;

/// RFC 8785 canonical text of a JSON value.
pub fn canonicalize_jcs(value: &Value) -> Result<String, CanonError> {
    let _ = value;
    todo!("jcs")
}

/// Parses JSON text and returns its RFC 8785 canonical text. Duplicate keys are an error (I-JSON).
pub fn canonicalize_jcs_str(json: &str) -> Result<String, CanonError> {
    let _ = json;
    todo!("jcs")
}
