//! In-memory counters (docs/design.md §6): the reference's `/stats` JSON (docs/protocol.md §6 "/stats body")
//! and Prometheus text at `/metrics`. Counters reset on restart, as the reference's do; queue and
//! agent counts come from the database when rendered.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use atp_wasm::ErrorCode;

/// Upper bounds (seconds) of the request latency histogram buckets.
const BUCKETS: [f64; 13] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

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
}

/// Everything the server counts.
#[derive(Debug)]
pub struct Metrics {
    started: Instant,
    /// `POST message` requests with a body read.
    pub received: Counter,
    /// Messages stored into a local inbox.
    pub delivered_local: Counter,
    /// Messages stored for the delivery engine (another domain).
    pub queued: Counter,
    /// Exact repeats answered 202 without storing (docs/design.md §3).
    pub duplicates: Counter,
    /// Same nonce, other content, or a timestamp outside the window.
    pub replay_blocked: Counter,
    pub ats_pass: Counter,
    pub ats_fail: Counter,
    pub ats_neutral: Counter,
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
    rejections: Mutex<BTreeMap<&'static str, u64>>,
    responses: Mutex<BTreeMap<u16, u64>>,
    latency_buckets: [AtomicU64; BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_us: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            started: Instant::now(),
            received: Counter::default(),
            delivered_local: Counter::default(),
            queued: Counter::default(),
            duplicates: Counter::default(),
            replay_blocked: Counter::default(),
            ats_pass: Counter::default(),
            ats_fail: Counter::default(),
            ats_neutral: Counter::default(),
            ats_temperror: Counter::default(),
            atk_pass: Counter::default(),
            atk_fail: Counter::default(),
            credential_pass: Counter::default(),
            credential_fail: Counter::default(),
            credential_cache_hits: Counter::default(),
            registered: Counter::default(),
            forwarded: Counter::default(),
            delivery_failed: Counter::default(),
            bounced: Counter::default(),
            rejections: Mutex::default(),
            responses: Mutex::default(),
            latency_buckets: Default::default(),
            latency_count: AtomicU64::new(0),
            latency_sum_us: AtomicU64::new(0),
        }
    }
}

/// Message rows per status, from the database.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueCounts {
    pub by_status: BTreeMap<String, i64>,
}

impl QueueCounts {
    pub fn get(&self, status: &str) -> i64 {
        self.by_status.get(status).copied().unwrap_or(0)
    }
}

/// The statuses a message row can have (`messages.status`).
pub const STATUSES: [&str; 5] = ["queued", "delivering", "delivered", "failed", "bounced"];

impl Metrics {
    /// Seconds since start.
    pub fn uptime(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// Counts a refusal by its error code, and the security counters it implies for a message.
    pub fn rejected(&self, code: ErrorCode) {
        if let Ok(mut m) = self.rejections.lock() {
            *m.entry(code.as_str()).or_default() += 1;
        }
    }

    /// Counts one finished HTTP request.
    pub fn observe(&self, status: u16, elapsed: Duration) {
        if let Ok(mut m) = self.responses.lock() {
            *m.entry(status).or_default() += 1;
        }
        let secs = elapsed.as_secs_f64();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                self.latency_buckets[i].fetch_add(1, Relaxed);
            }
        }
        self.latency_count.fetch_add(1, Relaxed);
        self.latency_sum_us.fetch_add(elapsed.as_micros().min(u64::MAX as u128) as u64, Relaxed);
    }

    /// Rejections so far, by error code.
    pub fn rejections(&self) -> BTreeMap<&'static str, u64> {
        self.rejections.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// The reference's `/stats` body (docs/protocol.md §6), plus atp's own counters: `agents` lists the
    /// registered agents (the reference listed recipients, §12 item 20).
    pub fn stats_json(&self, domain: &str, queue: &QueueCounts, agents: Vec<String>) -> serde_json::Value {
        let q: serde_json::Map<String, serde_json::Value> =
            STATUSES.iter().map(|s| ((*s).to_owned(), queue.get(s).into())).collect();
        serde_json::json!({
            "uptime": self.uptime(),
            "messages": {
                "received": self.received.get(),
                "delivered_local": self.delivered_local.get(),
                "forwarded": self.forwarded.get(),
                "delivery_success": self.forwarded.get(),
                "delivery_failed": self.delivery_failed.get(),
                "bounced": self.bounced.get(),
                "queued": self.queued.get(),
                "duplicates": self.duplicates.get(),
            },
            "security": {
                "ats_pass": self.ats_pass.get(),
                "ats_fail": self.ats_fail.get(),
                "ats_neutral": self.ats_neutral.get() + self.ats_temperror.get(),
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

    /// Prometheus text exposition format 0.0.4.
    pub fn prometheus(&self, queue: &QueueCounts, agents: i64) -> String {
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
        counter("replay_blocked_total", "Replays and stale timestamps refused.", self.replay_blocked.get());
        counter("agents_registered_total", "Agents registered since start.", self.registered.get());
        counter(
            "credential_cache_hits_total",
            "Credentials verified from the cache.",
            self.credential_cache_hits.get(),
        );
        let _ = writeln!(out, "# HELP atp_ats_total ATS results of remote transfers.\n# TYPE atp_ats_total counter");
        for (result, c) in [
            ("pass", &self.ats_pass),
            ("fail", &self.ats_fail),
            ("neutral", &self.ats_neutral),
            ("temperror", &self.ats_temperror),
        ] {
            let _ = writeln!(out, "atp_ats_total{{result=\"{result}\"}} {}", c.get());
        }
        let _ = writeln!(out, "# HELP atp_atk_total ATK results of remote transfers.\n# TYPE atp_atk_total counter");
        for (result, c) in [("pass", &self.atk_pass), ("fail", &self.atk_fail)] {
            let _ = writeln!(out, "atp_atk_total{{result=\"{result}\"}} {}", c.get());
        }
        let _ = writeln!(
            out,
            "# HELP atp_credentials_total Agent credential checks.\n# TYPE atp_credentials_total counter"
        );
        for (result, c) in [("pass", &self.credential_pass), ("fail", &self.credential_fail)] {
            let _ = writeln!(out, "atp_credentials_total{{result=\"{result}\"}} {}", c.get());
        }
        let _ = writeln!(
            out,
            "# HELP atp_rejections_total Requests refused, by error code.\n# TYPE atp_rejections_total counter"
        );
        for (code, n) in self.rejections() {
            let _ = writeln!(out, "atp_rejections_total{{code=\"{code}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP atp_http_responses_total HTTP responses, by status.\n# TYPE atp_http_responses_total counter"
        );
        if let Ok(m) = self.responses.lock() {
            for (status, n) in m.iter() {
                let _ = writeln!(out, "atp_http_responses_total{{status=\"{status}\"}} {n}");
            }
        }
        let _ = writeln!(
            out,
            "# HELP atp_http_request_duration_seconds Time to answer a request.\n\
             # TYPE atp_http_request_duration_seconds histogram"
        );
        for (i, bound) in BUCKETS.iter().enumerate() {
            let n = self.latency_buckets[i].load(Relaxed);
            let _ = writeln!(out, "atp_http_request_duration_seconds_bucket{{le=\"{bound}\"}} {n}");
        }
        let count = self.latency_count.load(Relaxed);
        let _ = writeln!(out, "atp_http_request_duration_seconds_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.latency_sum_us.load(Relaxed) as f64 / 1e6;
        let _ = writeln!(
            out,
            "atp_http_request_duration_seconds_sum {sum}\natp_http_request_duration_seconds_count {count}"
        );
        let _ = writeln!(out, "# HELP atp_queue_messages Stored messages, by status.\n# TYPE atp_queue_messages gauge");
        for s in STATUSES {
            let _ = writeln!(out, "atp_queue_messages{{status=\"{s}\"}} {}", queue.get(s));
        }
        let _ = writeln!(out, "# HELP atp_agents Registered agents.\n# TYPE atp_agents gauge\natp_agents {agents}");
        let _ = writeln!(
            out,
            "# HELP atp_uptime_seconds Seconds since start.\n# TYPE atp_uptime_seconds gauge\natp_uptime_seconds {}",
            self.uptime()
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text() {
        let m = Metrics::default();
        m.received.inc();
        m.rejected(ErrorCode::AtkSignature);
        m.rejected(ErrorCode::AtkSignature);
        m.observe(202, Duration::from_micros(700));
        let mut q = QueueCounts::default();
        q.by_status.insert("delivered".into(), 3);
        let text = m.prometheus(&q, 2);
        assert!(text.contains("atp_messages_received_total 1\n"), "{text}");
        assert!(text.contains("atp_rejections_total{code=\"550 5.7.28\"} 2\n"), "{text}");
        assert!(text.contains("atp_http_responses_total{status=\"202\"} 1\n"));
        assert!(text.contains("atp_http_request_duration_seconds_bucket{le=\"0.0005\"} 0\n"));
        assert!(text.contains("atp_http_request_duration_seconds_bucket{le=\"0.001\"} 1\n"));
        assert!(text.contains("atp_http_request_duration_seconds_bucket{le=\"+Inf\"} 1\n"));
        assert!(text.contains("atp_queue_messages{status=\"delivered\"} 3\n"));
        assert!(text.contains("atp_agents 2\n"));
        // every sample line is `name{labels} value`
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }

    #[test]
    fn stats_has_the_reference_shape() {
        let m = Metrics::default();
        m.ats_neutral.inc();
        m.ats_temperror.inc();
        let v = m.stats_json("a.test", &QueueCounts::default(), vec!["x@a.test".into()]);
        for key in ["uptime", "messages", "security", "queue", "agents", "domain"] {
            assert!(v.get(key).is_some(), "{key}");
        }
        assert_eq!(v["security"]["ats_neutral"], 2);
        assert_eq!(v["agents"], serde_json::json!(["x@a.test"]));
        assert_eq!(v["queue"]["bounced"], 0);
    }
}
