//! Request authentication (docs/protocol.md §6, §7): an agent's HTTP Basic credential, and the admin
//! bearer token.
//!
//! Fixes over the reference: the Basic username is parsed and lowercased as an agent id before the
//! lookup (`Alice@alpha.test` works), the scheme name is case-insensitive (RFC 9110 §11.1), secrets
//! are compared in constant time, and an unknown agent costs the same argon2 run as a wrong
//! password, so response times do not reveal which agents exist.

use std::sync::OnceLock;

use atp_wasm::identity::AgentId;
use atp_wasm::ErrorCode;
use axum::http::HeaderMap;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use super::AppState;
use crate::credentials::{hash_password, secrets_equal, verify_password};
use crate::error::{reject, ApiError};

/// The value of `Authorization` after `<scheme> ` (scheme compared case-insensitively), if any.
fn credentials<'h>(headers: &'h HeaderMap, scheme: &str) -> Option<&'h str> {
    let value = headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?;
    let (s, rest) = value.split_once(' ')?;
    s.eq_ignore_ascii_case(scheme).then(|| rest.trim())
}

/// A hash to verify against when the agent does not exist (same cost as a real check).
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| hash_password("atp dummy password").unwrap_or_default())
}

/// Checks `Authorization: Basic base64(agent-id:password)` and returns the agent. `missing` is the
/// reference's text for an absent credential (it differs between routes).
pub async fn agent(st: &AppState, headers: &HeaderMap, missing: &'static str) -> Result<AgentId, ApiError> {
    let fail = |msg: &'static str| reject(401, ErrorCode::AuthFailed, msg);
    let Some(encoded) = credentials(headers, "Basic") else {
        return Err(fail(missing));
    };
    let decoded = STANDARD.decode(encoded).ok().and_then(|b| String::from_utf8(b).ok());
    // Split at the first ':' — the password may contain ':' (docs/protocol.md §6).
    let Some((user, password)) = decoded.as_deref().and_then(|d| d.split_once(':')) else {
        return Err(fail("Invalid Authorization header"));
    };
    let id = match AgentId::parse(user) {
        Ok(id) => id,
        Err(_) => {
            st.metrics.credential_fail.inc();
            return Err(fail("Credential verification failed"));
        }
    };
    let key = id.to_string();
    let tag = st.credentials.tag(&key, password);
    if st.credentials.is_fresh(&tag) {
        st.metrics.credential_cache_hits.inc();
        st.metrics.credential_pass.inc();
        return Ok(id);
    }
    let _flight = st.credentials.single_flight(tag).await;
    if st.credentials.is_fresh(&tag) {
        st.metrics.credential_cache_hits.inc();
        st.metrics.credential_pass.inc();
        return Ok(id);
    }
    let hash = st.store.agent_hash(&key).await?;
    let password = password.to_owned();
    let ok = tokio::task::spawn_blocking(move || match &hash {
        Some(phc) => verify_password(&password, phc),
        None => {
            // Same work as for a real agent, then refuse.
            let _ = std::hint::black_box(verify_password(&password, dummy_hash()));
            false
        }
    })
    .await
    .map_err(|e| reject(503, ErrorCode::TempFailure, format!("Credential check failed: {e}")))?;
    if !ok {
        st.metrics.credential_fail.inc();
        return Err(fail("Credential verification failed"));
    }
    st.credentials.remember(tag);
    st.metrics.credential_pass.inc();
    Ok(id)
}

/// Checks `Authorization: Bearer <admin token>` (docs/protocol.md §6 "Admin auth").
pub fn admin(st: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(token) = &st.admin_token else {
        return Err(reject(
            403,
            ErrorCode::Forbidden,
            "Admin access not configured (set admin_token in server config)",
        ));
    };
    match credentials(headers, "Bearer") {
        None => Err(reject(401, ErrorCode::AuthFailed, "Admin authentication required")),
        Some(given) if secrets_equal(given, token) => Ok(()),
        Some(_) => Err(reject(403, ErrorCode::Forbidden, "Invalid admin token")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(v: &[u8]) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_bytes(v).unwrap());
        h
    }

    #[test]
    fn scheme_is_case_insensitive_and_value_trimmed() {
        assert_eq!(credentials(&headers(b"basic  YTpi "), "Basic"), Some("YTpi"));
        assert_eq!(credentials(&headers(b"Bearer tok"), "Basic"), None);
        assert_eq!(credentials(&headers(b"Basic"), "Basic"), None);
        assert_eq!(credentials(&headers(b"Basic \xff"), "Basic"), None, "not visible ASCII");
        assert_eq!(credentials(&HeaderMap::new(), "Basic"), None);
    }
}
