//! Bodies of the fuzz targets (issue 9), shared by the thin wrappers in `fuzz_targets/*.rs` and by
//! the ordinary regression test `atp-wasm/tests/fuzz_regressions.rs`, which replays every input of
//! `fuzz/regressions/<target>/` through the same functions on stable Rust, without libFuzzer.
//!
//! Each body takes arbitrary bytes and must never panic. Besides "no panic", each checks invariants
//! of the code under test with `assert!`, so a violated invariant is a crash the fuzzer reports:
//!
//! * [`message_parse`]: `Message::parse` (docs/protocol.md §2, §4) and `AgentId::parse` (§1); a parsed
//!   message prints back to itself, and its canonical form is deterministic.
//! * [`canonical`]: the reference's canonical form (`canonical.rs`, §3) and RFC 8785 (`jcs.rs`):
//!   deterministic, idempotent, its output re-parses, and the strict parser agrees with serde_json
//!   (which parses message bodies) on what is JSON and on the canonical text.
//! * [`records`]: ATS (§5.2), ATK (§5.3) and SVCB (§5.1) records: parsing, printing (a printed
//!   record parses back to itself), ATS evaluation and endpoint discovery over an in-memory DNS.
//! * [`doh`]: DNS-over-HTTPS wire answers (`doh.rs`, RFC 8484) for each query type.
//! * [`pipeline`]: the inbound verification pipeline (`pipeline.rs`, §5.3, §6) with a fixed
//!   in-memory resolver, clock and dedup store: the raw body as received, and the body re-signed by
//!   the sender's key (so mutations of a valid message get past the signature check). An accepted
//!   message must verify again after being stored and forwarded, and an exact repeat must be
//!   accepted as a duplicate.

use std::future::Future;
use std::net::IpAddr;
use std::sync::OnceLock;
use std::task::{Context, Poll, Waker};

use atp_wasm::canonical::{canonicalize, parse_json, parse_json_slice, CanonError, MAX_DEPTH};
use atp_wasm::doh::{decode_response, Answer, QueryType};
use atp_wasm::env::{FixedClock, MemoryDedup, StaticResolver};
use atp_wasm::identity::AgentId;
use atp_wasm::jcs::canonicalize_jcs_str;
use atp_wasm::keys::DomainKey;
use atp_wasm::message::Message;
use atp_wasm::pipeline::{parse_inbound, verify_local_submission, verify_remote_transfer, Accepted, InboundConfig};
use atp_wasm::records::atk::AtkRecord;
use atp_wasm::records::ats::{check_ats, AtsPolicy};
use atp_wasm::records::normalize_hostname;
use atp_wasm::records::svcb::{discover, SvcbRecord};
use atp_wasm::retry::DEFAULT_HORIZON_SECS;
use atp_wasm::sign::{sign_message, verify_message};
use atp_wasm::{Rejection, MAX_MESSAGE_SIZE};
use serde_json::Value;

/// Runs a future of the in-memory environment to completion. `StaticResolver` and `MemoryDedup`
/// answer at once, so the future is ready on its first poll.
fn block_on<F: Future>(fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("an in-memory future is never pending"),
    }
}

/// True when a value holds serde_json's private marker key: with `arbitrary_precision`, serde_json
/// reads `{"$serde_json::private::Number": "…"}` as a number, our strict parser as the object it is
/// (see `canonical.rs`), so the two parsers may legitimately disagree on it.
fn has_serde_marker(v: &Value) -> bool {
    match v {
        Value::Array(items) => items.iter().any(has_serde_marker),
        Value::Object(map) => map.iter().any(|(k, v)| k.starts_with("$serde_json::private::") || has_serde_marker(v)),
        _ => false,
    }
}

/// Nesting depth of a value: 0 for a scalar, 1 for `[]`.
fn depth(v: &Value) -> usize {
    match v {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

// ---------------------------------------------------------------------------------------------
// message_parse

/// `Message::parse` on arbitrary bytes; for a message: JSON round trip, deterministic canonical
/// form, valid normalised ids. Short inputs are also tried as agent ids.
pub fn message_parse(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        if text.len() <= 512 {
            agent_id(text);
        }
    }
    let Ok(m) = Message::parse(data) else { return };
    let sender = m.sender().expect("a parsed message has a valid sender");
    let recipient = m.recipient().expect("a parsed message has a valid recipient");
    assert_eq!(AgentId::parse(&sender.to_string()).as_ref(), Ok(&sender));
    assert_eq!(AgentId::parse(&recipient.to_string()).as_ref(), Ok(&recipient));
    let json = m.to_json();
    let back = Message::parse(json.as_bytes()).expect("a printed message parses back");
    assert_eq!(back, m, "a printed message parses back to itself");
    let canonical = m.canonical();
    assert_eq!(canonical, m.canonical(), "canonical form is deterministic");
    assert_eq!(canonical, back.canonical(), "printing does not change the canonical form");
    if let Ok(c) = &canonical {
        let reparsed = parse_json(c).expect("canonical text is JSON");
        assert_eq!(canonicalize(&reparsed).as_ref(), Ok(c), "canonical text is its own canonical form");
        assert!(m.content_hash().is_ok());
    }
    let _ = parse_inbound(data, &InboundConfig::new("beta.test"));
}

/// `AgentId::parse`: an accepted id prints in lowercase and parses back to itself.
fn agent_id(text: &str) {
    if let Ok(id) = AgentId::parse(text) {
        let printed = id.to_string();
        assert_eq!(printed, printed.to_ascii_lowercase(), "ids print in lowercase");
        assert_eq!(AgentId::parse(&printed).as_ref(), Ok(&id), "a printed id parses back to itself");
        let _ = id.is_reserved();
    }
}

// ---------------------------------------------------------------------------------------------
// canonical

/// The reference's canonical form and RFC 8785 on arbitrary text (see the module documentation).
pub fn canonical(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        assert!(parse_json_slice(data).is_err(), "invalid UTF-8 is not JSON");
        assert!(serde_json::from_slice::<Value>(data).is_err(), "serde_json rejects invalid UTF-8");
        return;
    };
    let ours = parse_json(text);
    let serde = serde_json::from_str::<Value>(text);
    // The marker can only make serde_json stricter, so it matters only when ours parsed.
    let marker = ours.as_ref().is_ok_and(has_serde_marker);
    // Both parsers implement RFC 8259; they must agree, except that serde_json stops one level of
    // nesting earlier (see `canonical::MAX_DEPTH`).
    let serde_too_deep = serde.as_ref().is_err_and(|e| e.to_string().contains("recursion limit exceeded"));
    if serde_too_deep {
        // serde_json stops at the 128th level before reading on, so ours may fail later.
        if let Ok(v) = &ours {
            assert_eq!(depth(v), MAX_DEPTH, "serde_json found too deep what parse_json parsed");
        }
    } else if !marker {
        assert_eq!(ours.is_ok(), serde.is_ok(), "parse_json {ours:?} vs serde_json {serde:?}");
    }
    if let Ok(v) = &ours {
        let c = canonicalize(v);
        assert_eq!(c, canonicalize(v), "canonicalize is deterministic");
        match &c {
            Ok(c) => {
                let again = parse_json(c).unwrap_or_else(|e| panic!("canonical text {c:?} does not re-parse: {e}"));
                assert_eq!(canonicalize(&again).as_ref(), Ok(c), "canonical text is its own canonical form");
                if !marker && depth(v) < MAX_DEPTH {
                    assert!(serde_json::from_str::<Value>(c).is_ok(), "serde_json reads canonical text {c:?}");
                }
            }
            // Parsing bounds the depth, so only a number can fail: a float that is not finite as a
            // double (`1e400`; integers are kept at arbitrary precision).
            Err(e) => assert!(matches!(e, CanonError::NumberOutOfRange(_)), "unexpected {e:?}"),
        }
        if let (Ok(c), Ok(sv), false) = (&c, &serde, marker) {
            assert_eq!(canonicalize(sv).as_ref(), Ok(c), "serde_json's value has the same canonical form");
        }
    }
    let jcs = canonicalize_jcs_str(text);
    assert_eq!(jcs, canonicalize_jcs_str(text), "RFC 8785 form is deterministic");
    if let Ok(j) = &jcs {
        assert!(ours.is_ok(), "JCS accepted what parse_json rejects");
        let again = canonicalize_jcs_str(j).unwrap_or_else(|e| panic!("JCS text {j:?} does not re-parse: {e}"));
        assert_eq!(&again, j, "RFC 8785 text is its own canonical form");
    }
}

// ---------------------------------------------------------------------------------------------
// records

/// Sources an ATS policy is evaluated for: IPv4, IPv6 and an IPv4-mapped IPv6 address.
const ATS_SOURCES: [&str; 4] = ["192.0.2.10", "10.1.2.3", "2001:db8::7", "::ffff:192.0.2.10"];

fn records_resolver() -> &'static StaticResolver {
    static R: OnceLock<StaticResolver> = OnceLock::new();
    R.get_or_init(|| {
        let mut r = StaticResolver::new();
        r.add_ip("mx.example.test", "192.0.2.10".parse().unwrap())
            .add_ip("mx.example.test", "2001:db8::7".parse().unwrap())
            .add_ip("atp.example.test", "10.1.2.3".parse().unwrap())
            .fail("broken.example.test");
        r
    })
}

/// ATS, ATK and SVCB parsing of arbitrary text; a parsed record prints and parses back to itself.
pub fn records(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let resolver = records_resolver();

    if let Ok(policy) = AtsPolicy::parse(&text) {
        let printed = policy.to_string();
        assert_eq!(AtsPolicy::parse(&printed).as_ref(), Ok(&policy), "ATS {printed:?} parses back");
        for src in ATS_SOURCES {
            let src: IpAddr = src.parse().unwrap();
            let verdict = block_on(policy.evaluate(src, resolver));
            let _ = verdict.to_rejection();
        }
        let mut r = resolver.clone();
        r.add_txt("ats._atp.example.test", &text);
        let _ = block_on(check_ats(&r, "Example.test.", ATS_SOURCES[0].parse().unwrap())).to_rejection();
    }

    if let Ok(atk) = AtkRecord::parse(&text) {
        let printed = atk.to_string();
        assert_eq!(AtkRecord::parse(&printed).as_ref(), Ok(&atk), "ATK {printed:?} parses back");
        for now in [i64::MIN, 0, 1_800_000_000, i64::MAX] {
            let _ = atk.is_usable_at(now);
        }
    } else if let Err(e) = AtkRecord::parse(&text) {
        let _ = (e.code(), e.to_string());
    }

    match SvcbRecord::parse(&text) {
        Ok(svcb) => {
            let printed = svcb.to_string();
            assert_eq!(SvcbRecord::parse(&printed).as_ref(), Ok(&svcb), "SVCB {printed:?} parses back");
            let mut r = resolver.clone();
            r.add_svcb("_atp.example.test", svcb.clone());
            if svcb.is_alias() && svcb.target != "." {
                // An alias chain ending in a service record, or looping on itself.
                r.add_svcb(&svcb.target, SvcbRecord::service(1, "atp.example.test", 7443));
                r.add_svcb(&svcb.target, SvcbRecord::alias("example.test"));
            }
            if let Ok(endpoints) = block_on(discover(&r, "example.test")) {
                assert!(endpoints.iter().all(|e| !e.host.is_empty()), "endpoints have a host");
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// doh

/// The name every DoH answer is decoded for.
const DOH_NAME: &str = "_atp.example.test";

/// A DNS wire answer decoded for each query type ATP asks.
pub fn doh(data: &[u8]) {
    for qtype in [QueryType::A, QueryType::Aaaa, QueryType::Txt, QueryType::Srv, QueryType::Svcb] {
        if let Ok(answers) = decode_response(DOH_NAME, qtype, data) {
            for a in answers {
                let text = a.to_string();
                // An SVCB answer with a host-name target prints as presentation text that parses
                // back to the same record (the wire and text forms accept the same records).
                if let Answer::Svcb(s) = &a {
                    if s.target == "." || normalize_hostname(&s.target).as_deref() == Some(s.target.as_str()) {
                        assert_eq!(SvcbRecord::parse(&text).as_ref(), Ok(s), "SVCB answer {text:?} parses back");
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// pipeline

/// The receiving server's clock.
pub const NOW: i64 = 1_800_000_000;
/// The address transfers come from, allowed by the sender's ATS record.
pub const SOURCE_IP: &str = "192.0.2.10";
/// The sender's domain, which publishes ATS and ATK records.
pub const SENDER_DOMAIN: &str = "gamma.test";
/// The receiving server's domain.
pub const LOCAL_DOMAIN: &str = "beta.test";

/// The sender's domain key (a fixed seed: the regression inputs carry its signatures).
pub fn sender_key() -> &'static DomainKey {
    static KEY: OnceLock<DomainKey> = OnceLock::new();
    KEY.get_or_init(|| DomainKey::from_seed(&[3u8; 32]))
}

/// gamma.test's DNS: an ATS record allowing [`SOURCE_IP`] (next to an SPF record), its key at
/// selector `default`, an unusable revoked key at `old`.
fn pipeline_resolver() -> &'static StaticResolver {
    static R: OnceLock<StaticResolver> = OnceLock::new();
    R.get_or_init(|| {
        let pk = *sender_key().public_key().as_bytes();
        let revoked = AtkRecord { revoked: true, ..AtkRecord::new(pk) };
        let mut r = StaticResolver::new();
        r.add_txt("ats._atp.gamma.test", "v=spf1 -all")
            .add_txt("ats._atp.gamma.test", &format!("v=atp1 allow=ip:{SOURCE_IP} allow=domain:mx.gamma.test deny=all"))
            .add_ip("mx.gamma.test", SOURCE_IP.parse().unwrap())
            .add_txt("default.atk._atp.gamma.test", &AtkRecord::new(pk).to_string())
            .add_txt("old.atk._atp.gamma.test", &revoked.to_string());
        r
    })
}

fn config() -> InboundConfig {
    InboundConfig::new(LOCAL_DOMAIN)
}

/// The whole inbound pipeline for a remote transfer of `body` (fresh dedup store).
pub fn verify(body: &[u8], dedup: &MemoryDedup) -> Result<Accepted, Rejection> {
    block_on(verify_remote_transfer(
        body,
        SOURCE_IP.parse().unwrap(),
        &config(),
        &FixedClock(NOW),
        pipeline_resolver(),
        dedup,
    ))
}

/// A message from `zed@gamma.test` to `bob@beta.test` signed by gamma.test's key: the seed that
/// `fuzz/regressions/pipeline/valid-signed.json` holds.
pub fn signed_seed() -> Vec<u8> {
    let text = format!(
        r#"{{"from": "Zed@Gamma.test", "to": "bob@beta.test", "timestamp": {}, "nonce": "msg-fuzz-0001",
            "type": "message", "cc": ["carol@beta.test"], "routing": {{"hops": 1}}, "payload": {{"body": "hi",
            "x": 1e-05, "big": 123456789012345678901234567890, "f": 2.5e16, "s": "\u00e9\ud83d\ude00"}}}}"#,
        NOW - 10
    );
    let mut m = Message::parse(text.as_bytes()).expect("the seed is a message");
    sign_message(&mut m, sender_key(), "default", SENDER_DOMAIN, NOW).expect("the seed has a canonical form");
    m.to_json().into_bytes()
}

/// Checks an accepted transfer: it is stored and forwarded as JSON, so its printed form must parse
/// back, have the same content hash and still verify with the sender's key; an exact repeat is a
/// duplicate.
fn check_accepted(body: &[u8], a: &Accepted, dedup: &MemoryDedup) {
    assert_eq!(a.sender.domain(), SENDER_DOMAIN);
    assert!(a.is_for_local_domain(LOCAL_DOMAIN));
    assert!(!a.duplicate, "a fresh dedup store has seen nothing");
    let stored = Message::parse(a.message.to_json().as_bytes()).expect("a stored message parses");
    assert_eq!(stored.content_hash().ok(), Some(a.content_hash), "the stored message keeps its content hash");
    verify_message(&stored, &sender_key().public_key()).expect("a stored message still verifies");
    dedup.record(a.sender.domain(), &a.message.nonce, a.content_hash);
    let again = verify(body, dedup).expect("an exact repeat is accepted again");
    assert!(again.duplicate, "an exact repeat is a duplicate");
}

/// The inbound pipeline fed `data` as received, then `data` re-signed with the sender's key.
pub fn pipeline(data: &[u8]) {
    if data.len() > MAX_MESSAGE_SIZE {
        return;
    }
    // 1. The body as received.
    let dedup = MemoryDedup::new();
    if let Ok(a) = verify(data, &dedup) {
        check_accepted(data, &a, &dedup);
    }
    // A local submission, as after the server checked the sender's credential.
    if let Ok(inbound) = parse_inbound(data, &config()) {
        let who = inbound.sender.clone();
        let _ = block_on(verify_local_submission(inbound, &who, &config(), NOW, &MemoryDedup::new()));
    }

    // 2. The same message signed by gamma.test's key, as its server would before a transfer.
    let Ok(mut m) = Message::parse(data) else { return };
    if sign_message(&mut m, sender_key(), "default", SENDER_DOMAIN, NOW).is_err() {
        return;
    }
    let body = m.to_json().into_bytes();
    let dedup = MemoryDedup::new();
    let result = verify(&body, &dedup);
    let (sender, recipient) = (m.sender().unwrap(), m.recipient().unwrap());
    let in_window = m.timestamp >= NOW - DEFAULT_HORIZON_SECS && m.timestamp <= NOW + 60;
    if sender.domain() == SENDER_DOMAIN && recipient.domain() == LOCAL_DOMAIN && in_window {
        let a = result.unwrap_or_else(|e| panic!("a validly signed transfer is rejected: {:?}", e.to_json()));
        check_accepted(&body, &a, &dedup);
    } else if let Ok(a) = result {
        panic!("accepted a transfer that should be rejected: {:?}", a.message);
    }
}
