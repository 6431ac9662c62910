//! Criterion micro-benchmarks of the protocol core (run by hand, or by tests/bench/run.sh):
//! canonicalisation (the reference's form, docs/protocol.md §3, and RFC 8785), Ed25519 signing and
//! verification (§4), and the inbound pipeline for a remote transfer end to end (§5.3, §6: parse,
//! ATS, ATK, timestamp horizon, idempotency) with an in-memory resolver, a fixed clock and an
//! in-memory replay store holding 10,000 earlier nonces.
//!
//! ```text
//! cargo bench -p atp-wasm --bench protocol
//! cargo bench -p atp-wasm --bench protocol -- verify      # one group
//! ```
//!
//! Two message sizes: `small` (~300 bytes of JSON) and `10k` (a ~10 KB payload of nested objects,
//! arrays, strings with escapes and numbers, floats included).
//!
//! Native only: on wasm32 this target is an empty program (criterion does not build there).

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use std::hint::black_box;
    use std::net::IpAddr;

    use atp_wasm::canonical::canonicalize_str;
    use atp_wasm::env::{FixedClock, MemoryDedup, StaticResolver};
    use atp_wasm::jcs::canonicalize_jcs_str;
    use atp_wasm::keys::DomainKey;
    use atp_wasm::message::Message;
    use atp_wasm::pipeline::{verify_remote_transfer, InboundConfig};
    use atp_wasm::records::atk::AtkRecord;
    use atp_wasm::sign::{sign_message, verify_message};
    use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
    use futures::executor::block_on;
    use serde_json::{json, Value};

    const NOW: i64 = 1_800_000_000;
    const SRC: &str = "192.0.2.10";

    /// An unsigned message from zed@gamma.test to bob@beta.test with a payload of about
    /// `payload_bytes` bytes of JSON.
    fn message(payload_bytes: usize) -> Value {
        let mut items = Vec::new();
        let mut size = 0;
        let mut i = 0u32;
        while size < payload_bytes {
            let item = json!({
                "id": i, "name": format!("item \"{i}\" — ünïcode\t"), "price": f64::from(i) * 1.25 + 0.01,
                "tiny": 1e-7 * f64::from(i + 1), "ok": i.is_multiple_of(2), "tags": ["a", "b", i], "note": null,
            });
            size += item.to_string().len() + 1;
            items.push(item);
            i += 1;
        }
        json!({"from": "Zed@gamma.test", "to": "bob@beta.test", "timestamp": NOW - 10,
               "nonce": "msg-0123456789abcdef0123456789abcdef", "type": "message",
               "payload": {"subject": "Quarterly numbers", "body": "Hello Bob, the figures are attached.",
                           "items": items}})
    }

    fn key() -> DomainKey {
        DomainKey::from_seed(&[3u8; 32])
    }

    fn signed(v: Value) -> Message {
        let mut m = Message::from_value(v).expect("a valid message");
        sign_message(&mut m, &key(), "default", "gamma.test", NOW).expect("signs");
        m
    }

    /// The two sizes: (name, unsigned JSON text).
    fn sizes() -> [(&'static str, String); 2] {
        [("small", message(120).to_string()), ("10k", message(10_000).to_string())]
    }

    fn canonical(c: &mut Criterion) {
        let mut g = c.benchmark_group("canonicalize");
        for (name, text) in sizes() {
            g.throughput(Throughput::Bytes(text.len() as u64));
            g.bench_with_input(BenchmarkId::new("reference", name), &text, |b, t| {
                b.iter(|| canonicalize_str(black_box(t)).expect("canonical"))
            });
            g.bench_with_input(BenchmarkId::new("rfc8785", name), &text, |b, t| {
                b.iter(|| canonicalize_jcs_str(black_box(t)).expect("canonical"))
            });
        }
        g.finish();
    }

    fn sign(c: &mut Criterion) {
        let mut g = c.benchmark_group("sign");
        let k = key();
        for (name, text) in sizes() {
            let m = Message::parse(text.as_bytes()).expect("valid");
            g.throughput(Throughput::Bytes(text.len() as u64));
            g.bench_function(name, |b| {
                b.iter(|| {
                    let mut m = m.clone();
                    sign_message(&mut m, &k, "default", "gamma.test", NOW).expect("signs");
                    m
                })
            });
        }
        g.finish();
    }

    fn verify(c: &mut Criterion) {
        let mut g = c.benchmark_group("verify");
        let pk = key().public_key();
        for (name, text) in sizes() {
            let m = signed(serde_json::from_str(&text).expect("json"));
            g.throughput(Throughput::Bytes(m.to_json().len() as u64));
            g.bench_function(name, |b| b.iter(|| verify_message(black_box(&m), &pk).expect("verifies")));
        }
        g.finish();
    }

    /// The receiving server's whole check of one remote transfer, raw body in, `Accepted` out.
    fn pipeline(c: &mut Criterion) {
        let mut g = c.benchmark_group("inbound_pipeline");
        let mut dns = StaticResolver::new();
        dns.add_txt("ats._atp.gamma.test", "v=spf1 -all")
            .add_txt("ats._atp.gamma.test", &format!("v=atp1 allow=ip:{SRC} deny=all"))
            .add_txt("default.atk._atp.gamma.test", &AtkRecord::new(*key().public_key().as_bytes()).to_string());
        let dedup = MemoryDedup::new();
        for n in 0..10_000 {
            dedup.record("gamma.test", &format!("msg-old-{n}"), [n as u8; 32]);
        }
        let cfg = InboundConfig::new("beta.test");
        let clock = FixedClock(NOW);
        let src: IpAddr = SRC.parse().expect("ip");
        for (name, text) in sizes() {
            let body = signed(serde_json::from_str(&text).expect("json")).to_json().into_bytes();
            g.throughput(Throughput::Bytes(body.len() as u64));
            g.bench_function(name, |b| {
                b.iter(|| {
                    let a = block_on(verify_remote_transfer(black_box(&body), src, &cfg, &clock, &dns, &dedup))
                        .expect("accepted");
                    assert!(!a.duplicate);
                    a
                })
            });
        }
        g.finish();
    }

    criterion_group!(benches, canonical, sign, verify, pipeline);
}

#[cfg(not(target_arch = "wasm32"))]
criterion::criterion_main!(native::benches);

#[cfg(target_arch = "wasm32")]
fn main() {}
