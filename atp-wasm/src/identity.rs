//! Agent identities: `local@domain` (docs/protocol.md §1).
//!
//! The reference's character rules, made strict (docs/design.md §3): no trailing newline, every domain
//! label checked for leading/trailing hyphens, total length ≤ 253, local part ≤ 64, labels ≤ 63,
//! `xn--` A-labels accepted as they are (no IDN processing, U-labels refused). Both parts are
//! lowercased with ASCII semantics.

use std::fmt;
use std::str::FromStr;

/// Longest local part accepted.
pub const MAX_LOCAL_LEN: usize = 64;
/// Longest domain accepted.
pub const MAX_DOMAIN_LEN: usize = 253;
/// Longest domain label accepted.
pub const MAX_LABEL_LEN: usize = 63;

/// Local parts that cannot be registered (docs/protocol.md §1).
pub const RESERVED_LOCAL_PARTS: &[&str] =
    &["admin", "postmaster", "root", "system", "server", "abuse", "security", "noreply", "no-reply", "mailer-daemon"];

/// Why a string is not an agent id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("agent id must have the form local@domain")]
    NotLocalAtDomain,
    #[error("local part is empty")]
    EmptyLocal,
    #[error("local part is longer than {MAX_LOCAL_LEN} characters")]
    LocalTooLong,
    #[error("local part has a character outside [a-zA-Z0-9._+-]")]
    BadLocalChar,
    #[error("domain is empty")]
    EmptyDomain,
    #[error("domain is longer than {MAX_DOMAIN_LEN} characters")]
    DomainTooLong,
    #[error("domain label {0:?} is invalid")]
    BadLabel(String),
}

/// A normalised agent identity `local@domain`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AgentId {
    local: String,
    domain: String,
}

impl AgentId {
    /// Parses and normalises `local@domain`.
    pub fn parse(s: &str) -> Result<Self, IdentityError> {
        let mut parts = s.split('@');
        let (Some(local), Some(domain), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(IdentityError::NotLocalAtDomain);
        };
        validate_local(local)?;
        validate_domain(domain)?;
        Ok(AgentId { local: local.to_ascii_lowercase(), domain: domain.to_ascii_lowercase() })
    }

    /// Parses `name`, completing a short name (no `@`) with `default_domain`.
    pub fn parse_or_complete(name: &str, default_domain: &str) -> Result<Self, IdentityError> {
        if name.contains('@') {
            Self::parse(name)
        } else {
            Self::parse(&format!("{name}@{default_domain}"))
        }
    }

    pub fn local(&self) -> &str {
        &self.local
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// True when the local part is reserved (`postmaster`, `admin`, …).
    pub fn is_reserved(&self) -> bool {
        RESERVED_LOCAL_PARTS.contains(&self.local.as_str())
    }
}

impl fmt::Display for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.local, self.domain)
    }
}

impl FromStr for AgentId {
    type Err = IdentityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

fn validate_local(local: &str) -> Result<(), IdentityError> {
    if local.is_empty() {
        return Err(IdentityError::EmptyLocal);
    }
    if local.len() > MAX_LOCAL_LEN {
        return Err(IdentityError::LocalTooLong);
    }
    if !local.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'+' | b'-')) {
        return Err(IdentityError::BadLocalChar);
    }
    Ok(())
}

/// Checks a domain name with the rules of this module (also used for server domains).
pub fn validate_domain(domain: &str) -> Result<(), IdentityError> {
    if domain.is_empty() {
        return Err(IdentityError::EmptyDomain);
    }
    if domain.len() > MAX_DOMAIN_LEN {
        return Err(IdentityError::DomainTooLong);
    }
    for label in domain.split('.') {
        let ok = !label.is_empty()
            && label.len() <= MAX_LABEL_LEN
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !ok {
            return Err(IdentityError::BadLabel(label.chars().take(70).collect()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_lowercases() {
        let id = AgentId::parse("Alice.B+x@Alpha.TEST").unwrap();
        assert_eq!(id.to_string(), "alice.b+x@alpha.test");
        assert_eq!(id.local(), "alice.b+x");
        assert_eq!(id.domain(), "alpha.test");
        assert_eq!("bob@localhost".parse::<AgentId>().unwrap().domain(), "localhost");
        assert!(AgentId::parse("bob@1.2.3.4").is_ok());
        assert!(AgentId::parse("a..b.@x.test").is_ok(), "reference allows odd dots in the local part");
        assert!(AgentId::parse("bob@xn--caf-dma.test").is_ok(), "A-labels pass as they are");
    }

    #[test]
    fn rejects_what_the_reference_should_have() {
        for bad in [
            "bob@example.com\n",
            "bob@example.com.",
            "a@b.-c-.d",
            "a@b.c-",
            "a@b..c",
            "bob",
            "a@b@c",
            "@x.test",
            "bob@",
            "bo b@x.test",
            "bob@ex_ample.com",
            "bob@café.test",
            "bøb@x.test",
            "",
        ] {
            assert!(AgentId::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn length_limits() {
        let local64 = "a".repeat(64);
        assert!(AgentId::parse(&format!("{local64}@x.test")).is_ok());
        assert_eq!(AgentId::parse(&format!("a{local64}@x.test")), Err(IdentityError::LocalTooLong));
        let label63 = "b".repeat(63);
        assert!(AgentId::parse(&format!("a@{label63}.test")).is_ok());
        assert!(matches!(AgentId::parse(&format!("a@{label63}b.test")), Err(IdentityError::BadLabel(_))));
        // 4 labels of 63 + 3 dots = 255 > 253
        let long = [label63.as_str(); 4].join(".");
        assert_eq!(AgentId::parse(&format!("a@{long}")), Err(IdentityError::DomainTooLong));
        // 10 MB of garbage is an error, not a hang or a panic
        let huge = "x".repeat(10 << 20);
        assert!(AgentId::parse(&format!("{huge}@{huge}")).is_err());
    }

    #[test]
    fn completion_and_reserved() {
        assert_eq!(AgentId::parse_or_complete("Bot", "Alpha.test").unwrap().to_string(), "bot@alpha.test");
        assert_eq!(AgentId::parse_or_complete("bot@beta.test", "alpha.test").unwrap().domain(), "beta.test");
        assert!(AgentId::parse_or_complete("PostMaster", "a.test").unwrap().is_reserved());
        assert!(!AgentId::parse("alice@a.test").unwrap().is_reserved());
    }
}
