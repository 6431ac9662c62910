//! The relay's counters, global (docs/design.md §4 "Counters"): each isolate counts in the core's
//! [`Stats`] as any home does, and adds what it counted since its last flush to the domain
//! object's `counters` table ([`Flushed::take`]); `stats` and `metrics` render the object's totals
//! with the core's renderers ([`totals`]).

use std::cell::RefCell;
use std::collections::BTreeMap;

use atp_wasm::relay::stats::{Counter, Stats};
use atp_wasm::ErrorCode;

/// Prefix of the rejection counters' names (`rejections/<error_code>`).
const REJECTIONS: &str = "rejections/";
/// The name under which the object keeps when counting started (Unix seconds).
pub const STARTED_AT: &str = "started_at";

/// Every named counter of the core's [`Stats`].
fn named(s: &Stats) -> [(&'static str, &Counter); 19] {
    [
        ("received", &s.received),
        ("delivered_local", &s.delivered_local),
        ("queued", &s.queued),
        ("duplicates", &s.duplicates),
        ("replay_blocked", &s.replay_blocked),
        ("ats_pass", &s.ats_pass),
        ("ats_fail", &s.ats_fail),
        ("ats_neutral", &s.ats_neutral),
        ("ats_temperror", &s.ats_temperror),
        ("atk_pass", &s.atk_pass),
        ("atk_fail", &s.atk_fail),
        ("credential_pass", &s.credential_pass),
        ("credential_fail", &s.credential_fail),
        ("credential_cache_hits", &s.credential_cache_hits),
        ("registered", &s.registered),
        ("forwarded", &s.forwarded),
        ("delivery_failed", &s.delivery_failed),
        ("bounced", &s.bounced),
        ("acknowledged", &s.acknowledged),
    ]
}

/// Every counter of `s` by name, rejections as `rejections/<code>`.
fn snapshot(s: &Stats) -> BTreeMap<String, u64> {
    let mut out: BTreeMap<String, u64> = named(s).iter().map(|(n, c)| ((*n).to_owned(), c.get())).collect();
    for (code, n) in s.rejections() {
        out.insert(format!("{REJECTIONS}{code}"), n);
    }
    out
}

/// What this isolate has already added to the global counters.
#[derive(Debug, Default)]
pub struct Flushed(RefCell<BTreeMap<String, u64>>);

impl Flushed {
    /// The counts since the last flush (non-zero ones), marked as flushed. If adding them fails,
    /// hand them back with [`Flushed::restore`].
    pub fn take(&self, s: &Stats) -> Vec<(String, u64)> {
        let now = snapshot(s);
        let mut done = self.0.borrow_mut();
        let deltas: Vec<(String, u64)> = now
            .iter()
            .filter_map(|(k, v)| {
                let d = v.saturating_sub(done.get(k).copied().unwrap_or(0));
                (d > 0).then(|| (k.clone(), d))
            })
            .collect();
        *done = now;
        deltas
    }

    /// Marks `deltas` as not flushed after all (the next flush carries them).
    pub fn restore(&self, deltas: &[(String, u64)]) {
        let mut done = self.0.borrow_mut();
        for (k, d) in deltas {
            if let Some(v) = done.get_mut(k) {
                *v = v.saturating_sub(*d);
            }
        }
    }
}

/// The core's [`Stats`] holding the global `totals` (as [`Flushed::take`] names them).
pub fn totals(totals: &[(String, u64)], now: i64) -> Stats {
    let get = |name: &str| totals.iter().find(|(k, _)| k == name).map(|(_, v)| *v);
    let started = get(STARTED_AT).map_or(now, |v| v as i64);
    let s = Stats::new(started);
    for (name, c) in named(&s) {
        c.add(get(name).unwrap_or(0));
    }
    for (k, n) in totals {
        let Some(code) = k.strip_prefix(REJECTIONS) else { continue };
        if let Some(c) = ErrorCode::ALL.iter().find(|c| c.as_str() == code) {
            s.add_rejections(*c, *n);
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_are_flushed_once_and_restored_on_failure() {
        let s = Stats::new(0);
        let f = Flushed::default();
        assert!(f.take(&s).is_empty());
        s.received.inc();
        s.received.inc();
        s.rejected(ErrorCode::AtkSignature);
        let d = f.take(&s);
        assert_eq!(d, vec![("received".to_owned(), 2), (format!("{REJECTIONS}550 5.7.28"), 1)]);
        assert!(f.take(&s).is_empty(), "nothing new");
        s.received.inc();
        let d = f.take(&s);
        assert_eq!(d, vec![("received".to_owned(), 1)]);
        f.restore(&d);
        s.bounced.inc();
        assert_eq!(f.take(&s), vec![("bounced".to_owned(), 1), ("received".to_owned(), 1)], "carried again");
    }

    #[test]
    fn totals_render_through_the_core() {
        let t = vec![
            (STARTED_AT.to_owned(), 100),
            ("received".to_owned(), 7),
            ("forwarded".to_owned(), 3),
            (format!("{REJECTIONS}550 5.7.28"), 2),
            (format!("{REJECTIONS}999 9.9.9"), 5),
        ];
        let s = totals(&t, 160);
        assert_eq!((s.received.get(), s.forwarded.get(), s.uptime(160)), (7, 3, 60));
        let text = s.prometheus(160, &Default::default(), 0);
        assert!(text.contains("atp_rejections_total{code=\"550 5.7.28\"} 2\n"), "{text}");
        assert!(!text.contains("999"), "unknown codes are dropped");
        assert_eq!(snapshot(&s).get("received"), Some(&7));
    }
}
