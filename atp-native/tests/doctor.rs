//! `atp doctor` against real DNS and a real server: BIND serves the zone of alpha.test, an atp
//! server runs for it with a certificate from a test CA, and the doctor (the real binary) is run
//! after each change. Each broken record of the zone turns its line ✗ (exit 1) and ✓ again once the
//! zone is fixed (exit 0); so do a certificate for another name, an untrusted chain, a closed port,
//! a private key readable by others, and a message stuck in the queue for a domain backing off.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use atp_wasm::records::zone::quote_txt;
use common::bind::{certificates, Bind};
use common::*;
use serde_json::{json, Value};

/// The zone of `test.` with alpha.test's records, as given.
fn zone(serial: u32, records: &str) -> String {
    format!(
        "$TTL 300\n@ IN SOA ns1.test. hostmaster.test. ( {serial} 3600 600 86400 60 )\n@ IN NS ns1.test.\n\
         ns1 IN A 127.0.0.1\nmx.alpha IN A 127.0.0.1\nmx2.alpha IN A 127.0.0.1\n{records}"
    )
}

/// The records `atp dns generate` would print for the server on `port` with the key of seed 1.
fn good(port: u16) -> String {
    format!(
        "_atp.alpha IN SVCB 1 mx.alpha.test. port={port} alpn=atp/1\n\
         ats._atp.alpha IN TXT \"v=atp1 allow=ip:127.0.0.1 deny=all\"\n\
         default.atk._atp.alpha IN TXT {}\n",
        quote_txt(&atk_record(1))
    )
}

/// Runs `atp doctor --output json` for alpha.test; returns the exit code and the report.
fn doctor(dns: &str, home: &Path, extra: &[&str]) -> (i32, Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_atp"))
        .args(["doctor", "--domain", "alpha.test", "--dns-server", dns, "--min-free-mib", "1", "--output", "json"])
        .arg("--home")
        .arg(home)
        .args(extra)
        .env_remove("ATP_HOME")
        .env_remove("ATP_CA_CERT")
        .output()
        .expect("run atp doctor");
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("doctor printed no JSON ({e}): {text}"));
    (out.status.code().unwrap_or(-1), v)
}

/// `check → status` of a report.
fn statuses(v: &Value) -> Vec<(String, String)> {
    v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["check"].as_str().unwrap().to_owned(), c["status"].as_str().unwrap().to_owned()))
        .collect()
}

fn status<'a>(v: &'a Value, check: &str) -> &'a str {
    let c = v["checks"].as_array().unwrap().iter().find(|c| c["check"] == check);
    c.unwrap_or_else(|| panic!("no {check:?} line in {v:#}"))["status"].as_str().unwrap()
}

fn detail<'a>(v: &'a Value, check: &str) -> &'a str {
    let c = v["checks"].as_array().unwrap().iter().find(|c| c["check"] == check).unwrap();
    c["detail"].as_str().unwrap()
}

/// Every line ok (or, for the names in `warnings`, a warning).
fn all_ok(v: &Value, warnings: &[&str]) {
    for (check, st) in statuses(v) {
        let want = if warnings.contains(&check.as_str()) { "warning" } else { "ok" };
        assert_eq!(st, want, "{check}: {v:#}");
    }
    assert_eq!(v["ok"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_turns_red_for_each_broken_record_and_green_when_fixed() {
    let port = free_port();
    let certs = tempfile::tempdir().unwrap();
    let ca = certificates(certs.path(), &["mx.alpha.test"]);
    let ca = ca.to_str().unwrap();

    // Broken: no discovery record, two ATS policies, the ATK of another key.
    let broken = format!(
        "ats._atp.alpha IN TXT \"v=atp1 allow=all\"\nats._atp.alpha IN TXT \"v=atp1 deny=all\"\n\
         default.atk._atp.alpha IN TXT {}\n",
        quote_txt(&atk_record(9))
    );
    let bind = Bind::start(&zone(1, &broken));
    let dns = bind.addr();

    // The server: seed 1's key (written 0644, as a careless copy would leave it), the CA's
    // certificate for mx.alpha.test, and beta.test pointed at a closed port (for the queue).
    let home = tempfile::tempdir().unwrap();
    seed_key(home.path(), 1);
    std::fs::set_permissions(home.path().join("keys/default.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let peers = write_peers(certs.path(), &[("beta.test", free_port())]);
    let cert = certs.path().join("mx.alpha.test.crt");
    let key = certs.path().join("mx.alpha.test.key");
    let opts = Options::new("alpha.test")
        .arg("--dns-server")
        .arg(&dns)
        .arg("--no-local-registry")
        .arg("--peers")
        .arg(peers.to_str().unwrap())
        .arg("--retry-base")
        .arg("600")
        .arg("--retry-cap")
        .arg("600")
        .arg("--cert")
        .arg(cert.to_str().unwrap())
        .arg("--key")
        .arg(key.to_str().unwrap());
    let alpha = Server::start_in(opts, home, port);
    let h = alpha.home_path();

    let (code, v) = doctor(&dns, &h, &["--ca-cert", ca]);
    assert_eq!(code, 1, "{v:#}");
    assert_eq!(
        statuses(&v),
        [
            ("discovery (SVCB/SRV)", "problem"),
            ("ATS record", "problem"),
            ("ATK record 'default'", "problem"),
            ("endpoint", "problem"),
            ("home permissions", "problem"),
            ("disk space", "ok"),
            ("database", "ok"),
            ("queue", "ok"),
            ("backoff", "ok"),
        ]
        .map(|(c, s)| (c.to_owned(), s.to_owned()))
    );
    assert!(detail(&v, "ATS record").contains("2 v=atp1 records"), "{v:#}");
    assert!(detail(&v, "ATK record 'default'").contains("but the local key 'default'"), "{v:#}");
    assert!(detail(&v, "home permissions").contains("default.key is readable by other users"), "{v:#}");
    assert!(v["checks"][0]["fix"].as_str().unwrap().contains("IN SVCB 1 atp.alpha.test."), "{v:#}");

    // Fixed: the records `atp dns generate` prints, and the key made owner-only.
    bind.reload(&zone(2, &good(port)), 2);
    std::fs::set_permissions(h.join("keys/default.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let (code, v) = doctor(&dns, &h, &["--ca-cert", ca]);
    assert_eq!(code, 0, "{v:#}");
    all_ok(&v, &[]);
    assert_eq!(
        statuses(&v).iter().map(|(c, _)| c.as_str()).collect::<Vec<_>>(),
        [
            "discovery (SVCB/SRV)",
            "address mx.alpha.test",
            "ATS record",
            "ATK record 'default'",
            "port",
            "certificate chain",
            "certificate name",
            "certificate expiry",
            "clock",
            "home permissions",
            "disk space",
            "database",
            "queue",
            "backoff",
        ]
    );
    assert!(detail(&v, "port").contains("TLS 1.3 with ALPN atp/1"), "{v:#}");
    assert!(detail(&v, "ATK record 'default'").contains("matches the local key"), "{v:#}");
    assert!(detail(&v, "certificate expiry").contains("days)"), "{v:#}");

    // The text report: one ✓ line per check, no ✗.
    let out = Command::new(env!("CARGO_BIN_EXE_atp"))
        .args(["doctor", "--domain", "alpha.test", "--dns-server", &dns, "--min-free-mib", "1", "--ca-cert", ca])
        .arg("--home")
        .arg(&h)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.lines().filter(|l| l.starts_with("✓ ")).count() == 14 && !text.contains('✗'), "{text}");

    // A chain the doctor does not trust (no --ca-cert): only the chain line fails.
    let (code, v) = doctor(&dns, &h, &[]);
    assert_eq!((code, status(&v, "certificate chain"), status(&v, "certificate name")), (1, "problem", "ok"));
    assert!(detail(&v, "certificate chain").contains("unknown issuer"), "{v:#}");

    // The SVCB target is a name the certificate does not hold.
    bind.reload(&zone(3, &good(port).replace("1 mx.alpha.test.", "1 mx2.alpha.test.")), 3);
    let (code, v) = doctor(&dns, &h, &["--ca-cert", ca]);
    assert_eq!((code, status(&v, "certificate name"), status(&v, "certificate chain")), (1, "problem", "ok"));
    assert_eq!(detail(&v, "certificate name"), "not valid for mx2.alpha.test");

    // The SVCB record names a port nobody listens on.
    let closed = free_port();
    bind.reload(&zone(4, &good(closed)), 4);
    let (code, v) = doctor(&dns, &h, &["--ca-cert", ca]);
    assert_eq!((code, status(&v, "port")), (1, "problem"), "{v:#}");
    assert!(detail(&v, "port").contains(&format!("cannot connect to 127.0.0.1:{closed}")), "{v:#}");
    assert!(v["checks"].as_array().unwrap().iter().all(|c| c["check"] != "certificate chain"));

    // Fixed again; then a message for beta.test, whose server is down: the domain backs off (a
    // warning), and once the message is older than --queue-age the queue is a problem.
    bind.reload(&zone(5, &good(port)), 5);
    let (code, v) = doctor(&dns, &h, &["--ca-cert", ca]);
    assert_eq!(code, 0, "{v:#}");
    register(&alpha, "alice@alpha.test", "pw").await;
    let m = json!({"from": "alice@alpha.test", "to": "bob@beta.test", "timestamp": now(), "nonce": "stuck-1",
                   "type": "message", "payload": {"body": "for a server that is down"}});
    let (st, body) =
        call(client().post(alpha.url("message")).basic_auth("alice@alpha.test", Some("pw")).json(&m)).await;
    assert_eq!(st, 202, "{body}");
    let v = eventually(30, || async {
        let (code, v) = doctor(&dns, &h, &["--ca-cert", ca]);
        (status(&v, "backoff") == "warning").then_some((code, v))
    })
    .await
    .unwrap_or_else(|| panic!("beta.test never showed as backing off; server log:\n{}", alpha.log()));
    assert_eq!(v.0, 0, "backing off is a warning, not a failure: {:#}", v.1);
    all_ok(&v.1, &["backoff"]);
    assert!(detail(&v.1, "backoff").contains("beta.test (1 messages, next attempt in"), "{:#}", v.1);
    assert!(detail(&v.1, "queue").contains("stuck-1 to bob@beta.test"), "{:#}", v.1);
    let v = eventually(30, || async {
        let (code, v) = doctor(&dns, &h, &["--ca-cert", ca, "--queue-age", "0"]);
        (status(&v, "queue") == "problem").then_some((code, v))
    })
    .await
    .expect("the waiting message is older than --queue-age 0");
    assert_eq!(v.0, 1);
    assert!(v.1["checks"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["fix"].as_str().is_some_and(|f| f.contains("atp inspect stuck-1"))));
    drop(bind);
}
