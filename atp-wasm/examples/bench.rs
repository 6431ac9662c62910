//! Native throughput of what the npm package's signMessage / verifyMessage / canonicalize do, on
//! the message of tests/npm/bench.mjs, for comparison with the wasm figures (run by hand):
//!
//! ```text
//! cargo run --release -p atp-wasm --example bench [seconds per case, default 2]
//! ```

use std::time::{Duration, Instant};

use atp_wasm::keys::DomainKey;
use atp_wasm::message::Message;
use atp_wasm::sign::{sign_message, verify_message};

const MESSAGE: &str = r#"{"from":"alice@alpha.test","to":"bob@beta.test","timestamp":1800000000,"nonce":"msg-0123456789abcdef0123456789abcdef","type":"message","payload":{"subject":"Quarterly numbers","body":"Hello Bob, the figures are attached. Hello Bob, the figures are attached. Hello Bob, the figures are attached. Hello Bob, the figures are attached. ","data":{"rows":[[1,2.5,"x"],[3,4.25,"y"]],"ok":true,"note":null},"tags":["finance","q3"]}}"#;

fn bench(name: &str, seconds: f64, mut f: impl FnMut()) {
    for _ in 0..200 {
        f();
    }
    let budget = Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < budget {
        for _ in 0..50 {
            f();
        }
        n += 50;
    }
    println!("  {name:<40} {:>10.0} ops/s", n as f64 / start.elapsed().as_secs_f64());
}

fn main() {
    let seconds: f64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(2.0);
    let key = DomainKey::generate();
    let pem = key.to_pkcs8_pem().unwrap();
    let public = key.public_key();
    let mut signed = Message::parse(MESSAGE.as_bytes()).unwrap();
    sign_message(&mut signed, &key, "default", "alpha.test", 1_800_000_001).unwrap();
    let signed_json = signed.to_json();
    println!("native (this machine), {seconds} s per case, message {} bytes of JSON", MESSAGE.len());
    bench("canonicalize (reference form)", seconds, || {
        std::hint::black_box(atp_wasm::canonical::canonicalize_str(MESSAGE).unwrap());
    });
    bench("canonicalize_jcs (RFC 8785)", seconds, || {
        std::hint::black_box(atp_wasm::jcs::canonicalize_jcs_str(MESSAGE).unwrap());
    });
    // As signMessage does it: parse the JSON and the PEM, sign, serialise.
    bench("sign (parse + PEM + sign + JSON)", seconds, || {
        let mut m = Message::parse(MESSAGE.as_bytes()).unwrap();
        let k = DomainKey::from_pkcs8_pem(&pem).unwrap();
        sign_message(&mut m, &k, "default", "alpha.test", 1_800_000_001).unwrap();
        std::hint::black_box(m.to_json());
    });
    bench("verify (parse + verify)", seconds, || {
        let m = Message::parse(signed_json.as_bytes()).unwrap();
        verify_message(&m, &public).unwrap();
    });
}
