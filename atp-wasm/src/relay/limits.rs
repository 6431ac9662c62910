//! Failed logins, rate-limited (docs/design.md §5b): per client address and per (address, agent),
//! in fixed windows. Over a limit, a credential that is not in the verified-credential cache is
//! refused `429` with `Retry-After` before any argon2 run, so password guessing costs the server
//! almost nothing. Nothing is ever limited per agent alone: someone else's failures, from another
//! address, never lock an agent out, and an agent whose credential is cached is never refused.
//!
//! The table is bounded ([`LoginLimits::max_entries`]); IPv6 clients count per /64.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use crate::error::{ErrorCode, Rejection};

/// The limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginLimits {
    /// Failed logins allowed per client address per window.
    pub per_address: u32,
    /// Failed logins allowed per (client address, agent) per window.
    pub per_address_agent: u32,
    /// The window, in seconds.
    pub window_secs: i64,
    /// Most (address, agent) and address entries remembered.
    pub max_entries: usize,
}

impl Default for LoginLimits {
    fn default() -> Self {
        LoginLimits { per_address: 30, per_address_agent: 10, window_secs: 60, max_entries: 10_000 }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Address(IpAddr),
    AddressAgent(IpAddr, String),
}

#[derive(Debug, Clone, Copy)]
struct Window {
    start: i64,
    failures: u32,
}

/// Failure counts per key.
#[derive(Debug, Default)]
pub struct LoginLimiter {
    pub limits: LoginLimits,
    entries: Mutex<HashMap<Key, Window>>,
}

/// The address as counted: IPv6 per /64 (one host usually has a whole /64).
fn counted(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

impl LoginLimiter {
    pub fn new(limits: LoginLimits) -> Self {
        LoginLimiter { limits, entries: Mutex::default() }
    }

    fn keys(ip: IpAddr, agent: &str) -> [(Key, bool); 2] {
        let ip = counted(ip);
        [(Key::Address(ip), false), (Key::AddressAgent(ip, agent.to_owned()), true)]
    }

    /// `Err(429)` when `ip` (or `ip` with `agent`) used up its failures in the current window,
    /// with the seconds until it ends in `retry_after`.
    pub fn check(&self, ip: Option<IpAddr>, agent: &str, now: i64) -> Result<(), Rejection> {
        let Some(ip) = ip else { return Ok(()) };
        let Ok(entries) = self.entries.lock() else { return Ok(()) };
        for (key, per_agent) in Self::keys(ip, agent) {
            let limit = if per_agent { self.limits.per_address_agent } else { self.limits.per_address };
            if let Some(w) = entries.get(&key) {
                let ends = w.start + self.limits.window_secs;
                if now < ends && w.failures >= limit {
                    let retry = (ends - now).max(1);
                    return Err(Rejection::new(ErrorCode::TooManyRequests, "Too many failed logins, retry later")
                        .with("retry_after", retry));
                }
            }
        }
        Ok(())
    }

    /// Counts a failed login of `agent` from `ip`.
    pub fn failed(&self, ip: Option<IpAddr>, agent: &str, now: i64) {
        let Some(ip) = ip else { return };
        let Ok(mut entries) = self.entries.lock() else { return };
        let window = self.limits.window_secs;
        for (key, _) in Self::keys(ip, agent) {
            if !entries.contains_key(&key) && entries.len() >= self.limits.max_entries {
                entries.retain(|_, w| now < w.start + window);
                if entries.len() >= self.limits.max_entries {
                    // Still full of live windows: the oldest one goes.
                    if let Some(oldest) = entries.iter().min_by_key(|(_, w)| w.start).map(|(k, _)| k.clone()) {
                        entries.remove(&oldest);
                    }
                }
            }
            let w = entries.entry(key).or_insert(Window { start: now, failures: 0 });
            if now >= w.start + window {
                *w = Window { start: now, failures: 0 };
            }
            w.failures = w.failures.saturating_add(1);
        }
    }

    /// Entries remembered now.
    pub fn len(&self) -> usize {
        self.entries.lock().map(|e| e.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: LoginLimits = LoginLimits { per_address: 4, per_address_agent: 2, window_secs: 60, max_entries: 8 };

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn failures_are_limited_per_address_and_agent_never_per_agent_alone() {
        let l = LoginLimiter::new(LIMITS);
        l.failed(ip("192.0.2.1"), "a@x.test", 100);
        assert!(l.check(ip("192.0.2.1"), "a@x.test", 100).is_ok());
        l.failed(ip("192.0.2.1"), "a@x.test", 101);
        let r = l.check(ip("192.0.2.1"), "a@x.test", 110).unwrap_err();
        assert_eq!((r.status(), r.extra["retry_after"].as_i64()), (429, Some(50)));
        // The same agent from another address is not affected, nor another agent (yet).
        assert!(l.check(ip("192.0.2.2"), "a@x.test", 110).is_ok());
        assert!(l.check(ip("192.0.2.1"), "b@x.test", 110).is_ok());
        l.failed(ip("192.0.2.1"), "b@x.test", 111);
        l.failed(ip("192.0.2.1"), "c@x.test", 111);
        assert_eq!(l.check(ip("192.0.2.1"), "d@x.test", 112).unwrap_err().status(), 429, "per address");
        // The window ends.
        assert!(l.check(ip("192.0.2.1"), "a@x.test", 161).is_ok());
        assert!(l.check(None, "a@x.test", 112).is_ok());
    }

    #[test]
    fn ipv6_counts_per_64_and_the_table_is_bounded() {
        let l = LoginLimiter::new(LIMITS);
        l.failed(ip("2001:db8::1"), "a@x.test", 1);
        l.failed(ip("2001:db8::2"), "a@x.test", 1);
        assert!(l.check(ip("2001:db8::3"), "a@x.test", 2).is_err());
        for i in 0..100 {
            l.failed(ip(&format!("198.51.100.{i}")), "a@x.test", 3);
        }
        assert!(l.len() <= LIMITS.max_entries);
    }
}
