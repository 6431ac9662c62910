//! Delivery outcome classes and the backoff schedule (docs/design.md §3), as pure functions.
//!
//! The reference retries only on exact 202 and treats every other answer alike (docs/protocol.md §8.2,
//! §12 items 2-3). atp classifies answers: 2xx is delivered; a 4xx is permanent (bounce now) except
//! 408 and 429; 451, 5xx, timeouts and network errors are temporary (retry with backoff).

/// What a delivery attempt's result means for the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The receiver has it (any 2xx).
    Delivered,
    /// The receiver refused it for good: bounce to the sender now.
    Permanent,
    /// Try again later.
    Temporary,
}

/// Classifies an HTTP status from the receiving server.
pub fn classify_status(status: u16) -> Outcome {
    match status {
        200..=299 => Outcome::Delivered,
        408 | 429 | 451 => Outcome::Temporary,
        400..=499 => Outcome::Permanent,
        _ => Outcome::Temporary,
    }
}

/// A failure before any HTTP answer (DNS, connect, TLS, timeout) is temporary, except a domain that
/// has no ATP service at all (no SVCB/SRV records), which is permanent.
pub fn classify_transport_failure(no_such_service: bool) -> Outcome {
    if no_such_service {
        Outcome::Permanent
    } else {
        Outcome::Temporary
    }
}

/// Exponential backoff with jitter and a cap, and the maximum age after which a message bounces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Delay before the second attempt, in seconds.
    pub base_secs: u64,
    /// Longest delay between attempts, in seconds.
    pub cap_secs: u64,
    /// Age (since first queued) after which a message still undelivered bounces, in seconds.
    pub max_age_secs: u64,
}

/// How long a receiver accepts a remote transfer's timestamp, and remembers its nonce (5 days).
pub const DEFAULT_HORIZON_SECS: i64 = 5 * 86_400;

impl Default for RetryPolicy {
    /// 30 s, doubling, capped at 1 h; bounce after 4 days (inside the receivers' 5-day horizon).
    fn default() -> Self {
        RetryPolicy { base_secs: 30, cap_secs: 3_600, max_age_secs: 4 * 86_400 }
    }
}

impl RetryPolicy {
    /// Delay before the next attempt after `failures` consecutive failures (1 = the first attempt
    /// failed). `jitter` in `[0, 1)` spreads retries: the delay is between half and all of the
    /// exponential value ("equal jitter"), so a crowd of messages does not retry in lockstep.
    pub fn delay_secs(&self, failures: u32, jitter: f64) -> u64 {
        let exp = failures.saturating_sub(1).min(63);
        let full = self.base_secs.saturating_mul(1u64 << exp).min(self.cap_secs).max(1);
        let jitter = if jitter.is_finite() { jitter.clamp(0.0, 1.0) } else { 0.0 };
        let half = full / 2;
        half + ((full - half) as f64 * jitter) as u64
    }

    /// True when a message first queued at `queued_at` is too old for another attempt at `now`.
    pub fn expired(&self, queued_at: i64, now: i64) -> bool {
        now.saturating_sub(queued_at) >= self.max_age_secs as i64
    }

    /// When to try next, or `None` when the message should bounce instead.
    pub fn next_attempt(&self, queued_at: i64, now: i64, failures: u32, jitter: f64) -> Option<i64> {
        if self.expired(queued_at, now) {
            return None;
        }
        let at = now.saturating_add(self.delay_secs(failures, jitter) as i64);
        // The last attempt happens at the deadline, not after it.
        Some(at.min(queued_at.saturating_add(self.max_age_secs as i64)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_classes() {
        assert_eq!(classify_status(202), Outcome::Delivered);
        assert_eq!(classify_status(200), Outcome::Delivered);
        for s in [400, 401, 403, 404, 409, 413] {
            assert_eq!(classify_status(s), Outcome::Permanent, "{s}");
        }
        for s in [408, 429, 451, 500, 502, 503, 504, 301, 100] {
            assert_eq!(classify_status(s), Outcome::Temporary, "{s}");
        }
        assert_eq!(classify_transport_failure(false), Outcome::Temporary);
        assert_eq!(classify_transport_failure(true), Outcome::Permanent);
    }

    #[test]
    fn backoff_doubles_with_jitter_and_caps() {
        let p = RetryPolicy::default();
        assert_eq!(p.delay_secs(1, 0.0), 15);
        assert_eq!(p.delay_secs(1, 0.999_999), 29);
        assert_eq!(p.delay_secs(2, 0.0), 30);
        assert_eq!(p.delay_secs(3, 0.0), 60);
        assert_eq!(p.delay_secs(8, 0.0), 1_800);
        assert_eq!(p.delay_secs(1000, 0.0), 1_800);
        assert_eq!(p.delay_secs(1000, 1.0), 3_600);
        assert_eq!(p.delay_secs(0, 0.5), 22);
        assert_eq!(p.delay_secs(3, f64::NAN), 60);
        for f in 1..40 {
            let (lo, hi) = (p.delay_secs(f, 0.0), p.delay_secs(f, 1.0));
            assert!(lo <= hi && hi <= p.cap_secs && lo >= 15);
        }
    }

    #[test]
    fn bounce_after_max_age_and_last_attempt_at_deadline() {
        let p = RetryPolicy { base_secs: 10, cap_secs: 100, max_age_secs: 1000 };
        assert_eq!(p.next_attempt(0, 10, 1, 0.0), Some(15));
        assert_eq!(p.next_attempt(0, 950, 9, 1.0), Some(1000));
        assert_eq!(p.next_attempt(0, 1000, 9, 0.0), None);
        assert!(p.expired(0, 1000) && !p.expired(0, 999));
        assert!((p.max_age_secs as i64) < DEFAULT_HORIZON_SECS || p.max_age_secs == 1000);
        assert!((RetryPolicy::default().max_age_secs as i64) < DEFAULT_HORIZON_SECS);
    }
}
