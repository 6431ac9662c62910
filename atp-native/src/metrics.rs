//! HTTP-level metrics of the native server (docs/design.md §6): responses by status and a latency
//! histogram, appended to the relay's Prometheus text at `/metrics`. The protocol counters
//! (messages, ATS/ATK, credentials, refusals by code) are the core's
//! ([`atp_wasm::relay::stats::Stats`]), the same in every home.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds (seconds) of the request latency histogram buckets.
const BUCKETS: [f64; 13] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

/// Responses and their latency.
#[derive(Debug, Default)]
pub struct Metrics {
    responses: Mutex<BTreeMap<u16, u64>>,
    latency_buckets: [AtomicU64; BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_us: AtomicU64,
}

impl Metrics {
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

    /// Prometheus text (exposition format 0.0.4) of the responses and the latency histogram.
    pub fn prometheus(&self) -> String {
        let mut out = String::with_capacity(2048);
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
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text() {
        let m = Metrics::default();
        m.observe(202, Duration::from_micros(700));
        let text = m.prometheus();
        assert!(text.contains("atp_http_responses_total{status=\"202\"} 1\n"));
        assert!(text.contains("atp_http_request_duration_seconds_bucket{le=\"0.0005\"} 0\n"));
        assert!(text.contains("atp_http_request_duration_seconds_bucket{le=\"0.001\"} 1\n"));
        assert!(text.contains("atp_http_request_duration_seconds_bucket{le=\"+Inf\"} 1\n"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }
}
