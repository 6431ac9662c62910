//! DNS-over-HTTPS answers kept in the isolate for their TTLs (docs/design.md §4). The core's
//! [`atp_wasm::doh::DohResolver`] decodes every answer with its TTL ([`Answers::ttl`]: the smallest
//! record TTL, or RFC 2308's negative-caching TTL from the SOA) and offers it to this cache, which
//! it asks first; only the keeping is the worker's:
//!
//! * an answer is kept for its TTL, at most [`MAX_TTL`]; a negative answer without an SOA for
//!   [`DEFAULT_NEGATIVE_TTL`]; a TTL of 0 is not kept;
//! * failed lookups (HTTP errors, SERVFAIL, REFUSED, truncated or malformed answers) never reach
//!   the cache;
//! * at most [`MAX_ENTRIES`] answers (expired ones go first, then all).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use atp_wasm::doh::{Answer, AnswerCache, Answers, QueryType};
use atp_wasm::env::normalize_name;

use crate::clock::Clock;

/// Longest time an answer is kept, in seconds.
pub const MAX_TTL: u32 = 3600;
/// How long a negative answer without an SOA record is kept, in seconds.
pub const DEFAULT_NEGATIVE_TTL: u32 = 60;
/// Most answers kept per isolate.
pub const MAX_ENTRIES: usize = 1024;

/// Decoded answers by (name, type), with their expiry in milliseconds.
#[derive(Debug, Default)]
pub struct DnsCache {
    entries: HashMap<(String, QueryType), (i64, Vec<Answer>)>,
    /// Lookups answered from memory.
    pub hits: u64,
    /// Lookups that had to ask the DoH server.
    pub misses: u64,
}

impl DnsCache {
    /// The answer to `name`/`qtype`, if still fresh at `now_ms`.
    pub fn get(&mut self, name: &str, qtype: QueryType, now_ms: i64) -> Option<Vec<Answer>> {
        let key = (normalize_name(name), qtype);
        match self.entries.get(&key) {
            Some((expires, answers)) if *expires > now_ms => {
                self.hits += 1;
                return Some(answers.clone());
            }
            Some(_) => {
                self.entries.remove(&key);
            }
            None => {}
        }
        self.misses += 1;
        None
    }

    /// Keeps an answer for its TTL (see the module documentation).
    pub fn put(&mut self, name: &str, qtype: QueryType, answers: &Answers, now_ms: i64) {
        let ttl = answers.ttl.unwrap_or(DEFAULT_NEGATIVE_TTL).min(MAX_TTL);
        if ttl == 0 {
            return;
        }
        if self.entries.len() >= MAX_ENTRIES {
            self.entries.retain(|_, (expires, _)| *expires > now_ms);
            if self.entries.len() >= MAX_ENTRIES {
                self.entries.clear();
            }
        }
        let expires = now_ms + i64::from(ttl) * 1000;
        self.entries.insert((normalize_name(name), qtype), (expires, answers.records.clone()));
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The isolate's [`DnsCache`] as the core resolver's [`AnswerCache`], read with the invocation's clock.
#[derive(Debug, Clone)]
pub struct IsolateDns {
    pub cache: Rc<RefCell<DnsCache>>,
    pub clock: Clock,
}

impl AnswerCache for IsolateDns {
    fn get(&self, name: &str, qtype: QueryType) -> Option<Vec<Answer>> {
        self.cache.borrow_mut().get(name, qtype, self.clock.now_ms())
    }

    fn put(&self, name: &str, qtype: QueryType, answers: &Answers) {
        self.cache.borrow_mut().put(name, qtype, answers, self.clock.now_ms());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn txt(ttl: Option<u32>, n: usize) -> Answers {
        Answers { records: (0..n).map(|i| Answer::Txt(format!("r{i}"))).collect(), ttl }
    }

    #[test]
    fn answers_are_kept_for_their_ttl() {
        let mut c = DnsCache::default();
        let t0 = 1_000_000;
        c.put("ATS._atp.Peer.test.", QueryType::Txt, &txt(Some(120), 2), t0);
        assert_eq!(c.get("ats._atp.peer.test", QueryType::Txt, t0 + 119_999).unwrap().len(), 2);
        assert!(c.get("ats._atp.peer.test", QueryType::Svcb, t0).is_none(), "by type too");
        assert!(c.get("ats._atp.peer.test", QueryType::Txt, t0 + 120_000).is_none(), "expired at the TTL");
        assert!(c.is_empty(), "and dropped");
        c.put("a.test", QueryType::Txt, &txt(Some(86_400), 1), t0);
        assert!(c.get("a.test", QueryType::Txt, t0 + i64::from(MAX_TTL) * 1000).is_none(), "capped");
        c.put("none.test", QueryType::Txt, &txt(None, 0), t0);
        assert!(c.get("none.test", QueryType::Txt, t0 + i64::from(DEFAULT_NEGATIVE_TTL) * 1000 - 1).is_some());
        c.put("zero.test", QueryType::Txt, &txt(Some(0), 1), t0);
        assert!(c.get("zero.test", QueryType::Txt, t0).is_none(), "TTL 0 is not kept");
        assert_eq!((c.hits, c.misses), (2, 4));
    }

    #[test]
    fn the_cache_is_bounded() {
        let mut c = DnsCache::default();
        for i in 0..MAX_ENTRIES + 5 {
            c.put(&format!("n{i}.test"), QueryType::Txt, &txt(Some(60), 1), 0);
        }
        assert!(c.len() <= MAX_ENTRIES);
    }
}
