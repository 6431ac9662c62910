//! The relay's counters (docs/design.md §6): the reference's `/stats` JSON (docs/protocol.md §6.1
//! "stats") and Prometheus text at `metrics`. Each process counts in memory; the domain's totals,
//! which `stats` and `metrics` render, are kept in the store and survive restarts
//! ([`crate::relay::counters`]). Queue and agent counts come from the store when rendered. A home
//! may add lines of its own to the Prometheus text (HTTP latency natively).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

use crate::error::ErrorCode;
use crate::relay::store::{QueueCounts, STATUSES};

/// A monotonically increasing counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
    /// Adds `n` (the stored totals, [`crate::relay::counters::totals`]).
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Relaxed);
    }
}

/// Everything the relay counts.
#[derive(Debug, Default)]
pub struct Stats {
    /// When the counting started (Unix seconds; for the domain's totals, its first flush).
    pub started_at: i64,
    /// `POST message` requests with a body read.
    pub received: Counter,
    /// Messages stored into a local inbox.
    pub delivered_local: Counter,
    /// Messages stored for delivery to another domain.
    pub queued: Counter,
    /// Exact repeats answered 202 without storing (docs/design.md §3).
    pub duplicates: Counter,
    /// Same nonce with other content, or a timestamp outside the window.
    pub replay_blocked: Counter,
    pub ats_pass: Counter,
    pub ats_fail: Counter,
    pub ats_neutral: Counter,
    /// ATS lookups that failed temporarily (the transfer was refused with 451, to be retried).
    pub ats_temperror: Counter,
    pub atk_pass: Counter,
    pub atk_fail: Counter,
    pub credential_pass: Counter,
    pub credential_fail: Counter,
    /// Credentials accepted from the verified-credential cache (no argon2 run).
    pub credential_cache_hits: Counter,
    pub registered: Counter,
    /// Transfers another server accepted (2xx).
    pub forwarded: Counter,
    /// Attempts that failed temporarily (retried later).
    pub delivery_failed: Counter,
    /// Messages given up on (a notice went to the sender).
    pub bounced: Counter,
    /// Inbox messages removed by `POST messages/ack` (docs/protocol.md §6.5).
    pub acknowledged: Counter,
    rejections: Mutex<BTreeMap<&'static str, u64>>,
}

impl Stats {
    /// Counters starting at `now` (Unix seconds).
    pub fn new(now: i64) -> Self {
        Stats { started_at: now, ..Stats::default() }
    }

    /// Counts a refusal by its error code.
    pub fn rejected(&self, code: ErrorCode) {
        if let Ok(mut m) = self.rejections.lock() {
            *m.entry(code.as_str()).or_default() += 1;
        }
    }

    /// Counts `n` refusals with `code` at once (the stored totals).
    pub fn add_rejections(&self, code: ErrorCode, n: u64) {
        if let Ok(mut m) = self.rejections.lock() {
            *m.entry(code.as_str()).or_default() += n;
        }
    }

    /// Refusals so far, by error code.
    pub fn rejections(&self) -> BTreeMap<&'static str, u64> {
        self.rejections.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// Seconds since [`Stats::started_at`].
    pub fn uptime(&self, now: i64) -> i64 {
        now.saturating_sub(self.started_at).max(0)
    }

    /// The reference's `/stats` body, plus atp's own counters: `agents` lists the registered
    /// agents (the reference listed recipients, docs/protocol.md §12.20), `queue` counts rows per
    /// status, `rejections` refusals per code.
    pub fn stats_json(&self, now: i64, domain: &str, queue: &QueueCounts, agents: Vec<String>) -> serde_json::Value {
        let mut q: serde_json::Map<String, serde_json::Value> =
            STATUSES.iter().map(|s| ((*s).to_owned(), queue.get(s).into())).collect();
        for (k, v) in &queue.by_status {
            q.entry(k.clone()).or_insert((*v).into());
        }
        serde_json::json!({
            "uptime": self.uptime(now),
            "messages": {
                "received": self.received.get(),
                "delivered_local": self.delivered_local.get(),
                "forwarded": self.forwarded.get(),
                "delivery_success": self.forwarded.get(),
                "delivery_failed": self.delivery_failed.get(),
                "bounced": self.bounced.get(),
                "queued": self.queued.get(),
                "duplicates": self.duplicates.get(),
                "acknowledged": self.acknowledged.get(),
            },
            "security": {
                "ats_pass": self.ats_pass.get(),
                "ats_fail": self.ats_fail.get(),
                "ats_neutral": self.ats_neutral.get() + self.ats_temperror.get(),
                "ats_temperror": self.ats_temperror.get(),
                "atk_pass": self.atk_pass.get(),
                "atk_fail": self.atk_fail.get(),
                "replay_blocked": self.replay_blocked.get(),
                "credential_pass": self.credential_pass.get(),
                "credential_fail": self.credential_fail.get(),
            },
            "queue": q,
            "rejections": self.rejections(),
            "agents": agents,
            "domain": domain,
        })
    }

    /// Prometheus text exposition format 0.0.4 of the counters, the queue and the agents.
    pub fn prometheus(&self, now: i64, queue: &QueueCounts, agents: usize) -> String {
        let mut out = String::with_capacity(4096);
        let mut counter = |name: &str, help: &str, v: u64| {
            let _ = writeln!(out, "# HELP atp_{name} {help}\n# TYPE atp_{name} counter\natp_{name} {v}");
        };
        counter("messages_received_total", "POST message requests received.", self.received.get());
        counter("messages_delivered_local_total", "Messages stored into a local inbox.", self.delivered_local.get());
        counter("messages_queued_total", "Messages stored for delivery to another domain.", self.queued.get());
        counter("messages_forwarded_total", "Transfers another server accepted.", self.forwarded.get());
        counter("delivery_failures_total", "Transfer attempts that failed temporarily.", self.delivery_failed.get());
        counter("messages_bounced_total", "Messages given up on, with a notice to the sender.", self.bounced.get());
        counter("messages_duplicate_total", "Exact repeats accepted without storing.", self.duplicates.get());
        counter("messages_acknowledged_total", "Inbox messages removed by acknowledgement.", self.acknowledged.get());
        counter("replay_blocked_total", "Replays and stale timestamps refused.", self.replay_blocked.get());
        counter("agents_registered_total", "Agents registered since start.", self.registered.get());
        counter(
            "credential_cache_hits_total",
            "Credentials verified from the cache.",
            self.credential_cache_hits.get(),
        );
        let mut labelled = |name: &str, help: &str, label: &str, values: &[(&str, u64)]| {
            let _ = writeln!(out, "# HELP atp_{name} {help}\n# TYPE atp_{name} counter");
            for (l, v) in values {
                let _ = writeln!(out, "atp_{name}{{{label}=\"{l}\"}} {v}");
            }
        };
        labelled(
            "ats_total",
            "ATS results of remote transfers.",
            "result",
            &[
                ("pass", self.ats_pass.get()),
                ("fail", self.ats_fail.get()),
                ("neutral", self.ats_neutral.get()),
                ("temperror", self.ats_temperror.get()),
            ],
        );
        labelled(
            "atk_total",
            "ATK results of remote transfers.",
            "result",
            &[("pass", self.atk_pass.get()), ("fail", self.atk_fail.get())],
        );
        labelled(
            "credentials_total",
            "Agent credential checks.",
            "result",
            &[("pass", self.credential_pass.get()), ("fail", self.credential_fail.get())],
        );
        let rejections: Vec<(&str, u64)> = self.rejections().into_iter().collect();
        labelled("rejections_total", "Requests refused, by error code.", "code", &rejections);
        let _ = writeln!(out, "# HELP atp_queue_messages Stored messages, by status.\n# TYPE atp_queue_messages gauge");
        for s in STATUSES {
            let _ = writeln!(out, "atp_queue_messages{{status=\"{s}\"}} {}", queue.get(s));
        }
        let _ = writeln!(out, "# HELP atp_agents Registered agents.\n# TYPE atp_agents gauge\natp_agents {agents}");
        let _ = writeln!(
            out,
            "# HELP atp_uptime_seconds Seconds since start.\n# TYPE atp_uptime_seconds gauge\natp_uptime_seconds {}",
            self.uptime(now)
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text() {
        let m = Stats::new(100);
        m.received.inc();
        m.rejected(ErrorCode::AtkSignature);
        m.rejected(ErrorCode::AtkSignature);
        let mut q = QueueCounts::default();
        q.by_status.insert("delivered".into(), 3);
        let text = m.prometheus(160, &q, 2);
        assert!(text.contains("atp_messages_received_total 1\n"), "{text}");
        assert!(text.contains("atp_rejections_total{code=\"550 5.7.28\"} 2\n"), "{text}");
        assert!(text.contains("atp_queue_messages{status=\"delivered\"} 3\n"));
        assert!(text.contains("atp_agents 2\n"));
        assert!(text.contains("atp_uptime_seconds 60\n"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }

    #[test]
    fn stats_has_the_reference_shape() {
        let m = Stats::new(0);
        m.ats_neutral.inc();
        m.ats_temperror.inc();
        let mut q = QueueCounts::default();
        q.by_status.insert("due".into(), 4);
        let v = m.stats_json(5, "a.test", &q, vec!["x@a.test".into()]);
        for key in ["uptime", "messages", "security", "queue", "agents", "domain"] {
            assert!(v.get(key).is_some(), "{key}");
        }
        assert_eq!(v["security"]["ats_neutral"], 2);
        assert_eq!(v["security"]["ats_temperror"], 1);
        assert_eq!(v["agents"], serde_json::json!(["x@a.test"]));
        assert_eq!((v["queue"]["bounced"].as_i64(), v["queue"]["due"].as_i64()), (Some(0), Some(4)));
    }
}
