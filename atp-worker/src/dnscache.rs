//! A DNS-over-HTTPS answer cache that honours the records' TTLs (RFC 1035 §3.2.1, RFC 2308 for
//! negative answers), kept in memory per isolate.
//!
//! It sits under the core's [`atp_wasm::doh::DohResolver`] as an [`HttpTransport`] wrapper: a DoH
//! request (GET `?dns=…`, or POST with the query as body) whose answer was seen within its TTL is
//! answered from memory. The TTL is read from the wire-format answer:
//! * an answer with records: the smallest TTL among the answer records;
//! * NXDOMAIN or an empty answer: the SOA record's TTL, capped by its MINIMUM field (RFC 2308 §5),
//!   or [`DEFAULT_NEGATIVE_TTL`] without an SOA;
//! * anything else (HTTP error, SERVFAIL, REFUSED, truncated or malformed) is not cached.
//!
//! TTLs are capped at [`MAX_TTL`]. (The core's DoH codec drops TTLs, so they are read here from
//! the raw answer; see NOTES.md.)

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use atp_wasm::http::{HttpError, HttpRequest, HttpResponse, HttpTransport};

use crate::clock::Clock;

/// Longest time an answer is kept, in seconds.
pub const MAX_TTL: u32 = 3600;
/// Negative-answer TTL when the answer carries no SOA record.
pub const DEFAULT_NEGATIVE_TTL: u32 = 60;
/// Most answers kept per isolate.
pub const MAX_ENTRIES: usize = 1024;

const TYPE_SOA: u16 = 6;

/// Skips a (possibly compressed) domain name starting at `pos`; returns the position after it.
fn skip_name(wire: &[u8], mut pos: usize) -> Option<usize> {
    for _ in 0..128 {
        let len = *wire.get(pos)?;
        match len {
            0 => return Some(pos + 1),
            l if l & 0xC0 == 0xC0 => {
                wire.get(pos + 1)?;
                return Some(pos + 2);
            }
            l if l & 0xC0 == 0 => pos += 1 + usize::from(l),
            _ => return None,
        }
    }
    None
}

fn u16_at(wire: &[u8], pos: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*wire.get(pos)?, *wire.get(pos + 1)?]))
}

fn u32_at(wire: &[u8], pos: usize) -> Option<u32> {
    Some(u32::from_be_bytes(wire.get(pos..pos + 4)?.try_into().ok()?))
}

/// How long a wire-format DNS answer may be cached, in seconds (see the module documentation);
/// `None` when it must not be cached.
pub fn cache_ttl(wire: &[u8]) -> Option<u32> {
    if wire.len() < 12 {
        return None;
    }
    let flags = u16_at(wire, 2)?;
    let is_response = flags & 0x8000 != 0;
    let truncated = flags & 0x0200 != 0;
    let rcode = flags & 0x000F;
    if !is_response || truncated || !matches!(rcode, 0 | 3) {
        return None;
    }
    let (qd, an, ns) = (u16_at(wire, 4)?, u16_at(wire, 6)?, u16_at(wire, 8)?);
    let mut pos = 12;
    for _ in 0..qd {
        pos = skip_name(wire, pos)? + 4;
    }
    let mut answer_ttl: Option<u32> = None;
    let mut negative_ttl: Option<u32> = None;
    for i in 0..u32::from(an) + u32::from(ns) {
        pos = skip_name(wire, pos)?;
        let rtype = u16_at(wire, pos)?;
        let ttl = u32_at(wire, pos + 4)?;
        let rdlen = usize::from(u16_at(wire, pos + 8)?);
        let rdata = wire.get(pos + 10..pos + 10 + rdlen)?;
        pos += 10 + rdlen;
        if i < u32::from(an) {
            answer_ttl = Some(answer_ttl.map_or(ttl, |t| t.min(ttl)));
        } else if rtype == TYPE_SOA && rdlen >= 20 {
            // MINIMUM is the last field of the SOA RDATA.
            let minimum = u32_at(rdata, rdlen - 4)?;
            negative_ttl = Some(negative_ttl.map_or(ttl.min(minimum), |t| t.min(ttl).min(minimum)));
        }
    }
    let ttl = match (rcode, answer_ttl) {
        (0, Some(t)) => t,
        _ => negative_ttl.unwrap_or(DEFAULT_NEGATIVE_TTL),
    };
    Some(ttl.min(MAX_TTL))
}

/// Cached DoH answers by request (method, URL and body).
#[derive(Debug, Default)]
pub struct DnsCache {
    entries: HashMap<(String, Vec<u8>), (i64, HttpResponse)>,
    /// Answers served from memory.
    pub hits: u64,
    /// Answers fetched.
    pub misses: u64,
}

impl DnsCache {
    fn key(req: &HttpRequest) -> (String, Vec<u8>) {
        (format!("{} {}", req.method.as_str(), req.url), req.body.clone())
    }

    /// The cached answer to `req`, if still fresh at `now_ms`.
    pub fn get(&mut self, req: &HttpRequest, now_ms: i64) -> Option<HttpResponse> {
        let key = Self::key(req);
        match self.entries.get(&key) {
            Some((expires, resp)) if *expires > now_ms => {
                self.hits += 1;
                Some(resp.clone())
            }
            Some(_) => {
                self.entries.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Remembers the answer to `req` for its TTL, if it may be cached.
    pub fn put(&mut self, req: &HttpRequest, resp: &HttpResponse, now_ms: i64) {
        if resp.status != 200 {
            return;
        }
        let Some(ttl) = cache_ttl(&resp.body).filter(|t| *t > 0) else {
            return;
        };
        if self.entries.len() >= MAX_ENTRIES {
            self.entries.retain(|_, (expires, _)| *expires > now_ms);
            if self.entries.len() >= MAX_ENTRIES {
                self.entries.clear();
            }
        }
        self.entries.insert(Self::key(req), (now_ms + i64::from(ttl) * 1000, resp.clone()));
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// An [`HttpTransport`] that answers repeated DoH queries from a [`DnsCache`].
#[derive(Clone)]
pub struct Cached<T> {
    inner: T,
    cache: Rc<RefCell<DnsCache>>,
    clock: Clock,
}

impl<T> Cached<T> {
    pub fn new(inner: T, cache: Rc<RefCell<DnsCache>>, clock: Clock) -> Self {
        Cached { inner, cache, clock }
    }
}

impl<T: HttpTransport> HttpTransport for Cached<T> {
    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        if let Some(hit) = self.cache.borrow_mut().get(&request, self.clock.now_ms()) {
            return Ok(hit);
        }
        let resp = self.inner.send(request.clone()).await?;
        let mut cache = self.cache.borrow_mut();
        cache.misses += 1;
        cache.put(&request, &resp, self.clock.now_ms());
        Ok(resp)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::cell::Cell;

    /// A wire-format answer for `name`: `answers` TXT records with the given TTLs, and an SOA in
    /// the authority section with `(ttl, minimum)` when given.
    pub fn answer(rcode: u16, answers: &[u32], soa: Option<(u32, u32)>) -> Vec<u8> {
        let mut w = vec![0, 0];
        w.extend_from_slice(&(0x8180u16 | rcode).to_be_bytes());
        w.extend_from_slice(&1u16.to_be_bytes());
        w.extend_from_slice(&(answers.len() as u16).to_be_bytes());
        w.extend_from_slice(&u16::from(soa.is_some()).to_be_bytes());
        w.extend_from_slice(&0u16.to_be_bytes());
        w.extend_from_slice(b"\x03ats\x04_atp\x05alpha\x04test\x00");
        w.extend_from_slice(&[0, 16, 0, 1]);
        for ttl in answers {
            w.extend_from_slice(&[0xC0, 12, 0, 16, 0, 1]);
            w.extend_from_slice(&ttl.to_be_bytes());
            w.extend_from_slice(&[0, 7, 6]);
            w.extend_from_slice(b"v=atp1");
        }
        if let Some((ttl, minimum)) = soa {
            w.extend_from_slice(&[0xC0, 21, 0, 6, 0, 1]);
            w.extend_from_slice(&ttl.to_be_bytes());
            let mut rdata = b"\x03ns1\xC0\x15\x0ahostmaster\xC0\x15".to_vec();
            for v in [1u32, 3600, 600, 86400, minimum] {
                rdata.extend_from_slice(&v.to_be_bytes());
            }
            w.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
            w.extend_from_slice(&rdata);
        }
        w
    }

    #[test]
    fn ttl_of_answers_and_negative_answers() {
        assert_eq!(cache_ttl(&answer(0, &[300, 120, 600], None)), Some(120));
        assert_eq!(cache_ttl(&answer(0, &[86_400], None)), Some(MAX_TTL));
        assert_eq!(cache_ttl(&answer(3, &[], Some((300, 60)))), Some(60), "NXDOMAIN: SOA minimum");
        assert_eq!(cache_ttl(&answer(0, &[], Some((30, 60)))), Some(30), "NODATA: SOA ttl");
        assert_eq!(cache_ttl(&answer(3, &[], None)), Some(DEFAULT_NEGATIVE_TTL));
        assert_eq!(cache_ttl(&answer(2, &[], None)), None, "SERVFAIL is not cached");
        assert_eq!(cache_ttl(&answer(0, &[0], None)), Some(0));
        let mut truncated = answer(0, &[300], None);
        truncated[2] |= 0x02;
        assert_eq!(cache_ttl(&truncated), None);
        let whole = answer(0, &[300], None);
        assert_eq!(cache_ttl(&whole[..whole.len() - 3]), None, "malformed");
        assert_eq!(cache_ttl(&[0; 5]), None);
    }

    /// Counts requests and answers each with `body`.
    struct Canned {
        body: Vec<u8>,
        status: u16,
        calls: Cell<u32>,
    }

    impl HttpTransport for Canned {
        async fn send(&self, _r: HttpRequest) -> Result<HttpResponse, HttpError> {
            self.calls.set(self.calls.get() + 1);
            Ok(HttpResponse::new(self.status, Some("application/dns-message"), self.body.clone()))
        }
    }

    #[test]
    fn cached_transport_serves_within_ttl() {
        use futures::executor::block_on;
        let t = Rc::new(Cell::new(1_000_000i64));
        let cache = Rc::new(RefCell::new(DnsCache::default()));
        let canned = Canned { body: answer(0, &[120], None), status: 200, calls: Cell::new(0) };
        let c = Cached::new(&canned, cache.clone(), Clock::manual(t.clone()));
        let q = HttpRequest::get("https://doh.test/dns-query?dns=AAAA");
        block_on(async {
            c.send(q.clone()).await.unwrap();
            c.send(q.clone()).await.unwrap();
            assert_eq!(canned.calls.get(), 1);
            c.send(HttpRequest::get("https://doh.test/dns-query?dns=BBBB")).await.unwrap();
            assert_eq!(canned.calls.get(), 2);
            t.set(t.get() + 119_999);
            c.send(q.clone()).await.unwrap();
            assert_eq!(canned.calls.get(), 2);
            t.set(t.get() + 1);
            c.send(q.clone()).await.unwrap();
            assert_eq!(canned.calls.get(), 3, "expired at the TTL");
        });
        assert_eq!((cache.borrow().hits, cache.borrow().misses), (2, 3));
        let failing = Canned { body: answer(2, &[], None), status: 200, calls: Cell::new(0) };
        let c = Cached::new(&failing, Rc::new(RefCell::new(DnsCache::default())), Clock::manual(t));
        block_on(async {
            c.send(q.clone()).await.unwrap();
            c.send(q.clone()).await.unwrap();
        });
        assert_eq!(failing.calls.get(), 2);
    }
}
