//! Delivery through real DNS: BIND (Debian `bind9`) serves a zone with the SVCB, A, ATS and ATK
//! records of two domains, and two atp servers find and verify each other with `--dns-server`
//! only (no overrides, no local registry). Certificates are real too: each server has one issued
//! by a test CA for its SVCB target name, and the sender verifies it (`--peer-ca`).
//!
//! Needs `named` (`apt-get install bind9`, done by scripts/install-test-deps.sh); without it the
//! test fails with that hint rather than passing silently.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use atp_wasm::records::zone::quote_txt;
use common::*;
use serde_json::json;

fn named() -> PathBuf {
    for p in ["/usr/sbin/named", "/usr/bin/named"] {
        if Path::new(p).is_file() {
            return p.into();
        }
    }
    panic!("BIND's `named` is not installed: apt-get install bind9 (scripts/install-test-deps.sh)");
}

/// A `named -g` on 127.0.0.1:<port>, killed on drop.
struct Bind {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Bind {
    fn start(zone: &str) -> Bind {
        let dir = tempfile::tempdir().unwrap();
        let port = free_udp_and_tcp_port();
        let d = dir.path().display();
        std::fs::write(dir.path().join("test.zone"), zone).unwrap();
        std::fs::write(
            dir.path().join("named.conf"),
            format!(
                "controls {{ }};\noptions {{\n directory \"{d}\";\n pid-file \"{d}/named.pid\";\n \
                 session-keyfile \"{d}/session.key\";\n listen-on port {port} {{ 127.0.0.1; }};\n \
                 listen-on-v6 {{ none; }};\n recursion no;\n allow-query {{ any; }};\n dnssec-validation no;\n}};\n\
                 zone \"test\" {{ type primary; file \"{d}/test.zone\"; }};\n"
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("named.log")).unwrap();
        let child = Command::new(named())
            .args(["-g", "-c"])
            .arg(dir.path().join("named.conf"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start named");
        let b = Bind { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let log = std::fs::read_to_string(b.dir.path().join("named.log")).unwrap_or_default();
            if log.contains("running") {
                return b;
            }
            assert!(!log.contains("exiting (due to fatal error)"), "named failed:\n{log}");
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("named did not start:\n{}", std::fs::read_to_string(b.dir.path().join("named.log")).unwrap_or_default());
    }
}

impl Drop for Bind {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port free for both UDP and TCP on loopback.
fn free_udp_and_tcp_port() -> u16 {
    loop {
        let p = free_port();
        if std::net::UdpSocket::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
}

/// A test CA and, for each name, a leaf certificate and key written as `<dir>/<name>.{crt,key}`.
fn certificates(dir: &Path, names: &[&str]) -> PathBuf {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(rcgen::DnType::CommonName, "atp test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let ca_path = dir.join("ca.pem");
    std::fs::write(&ca_path, ca_cert.pem()).unwrap();
    for name in names {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec![name.to_string()]).unwrap().signed_by(&key, &ca_cert, &ca_key).unwrap();
        std::fs::write(dir.join(format!("{name}.crt")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
    }
    ca_path
}

fn atk_txt(seed: u8) -> String {
    quote_txt(&atk_record(seed))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_with_real_dns_and_verified_certificates() {
    let (alpha_port, beta_port) = (free_port(), free_port());
    // alpha publishes a ServiceMode record; beta an AliasMode record to a provider name.
    let zone = format!(
        "$TTL 300\n@ IN SOA ns1.test. hostmaster.test. ( 1 3600 600 86400 60 )\n@ IN NS ns1.test.\nns1 IN A 127.0.0.1\n\
         _atp.alpha IN SVCB 1 mx.alpha.test. port={alpha_port} alpn=atp/1\n\
         mx.alpha IN A 127.0.0.1\n\
         ats._atp.alpha IN TXT \"v=atp1 allow=domain:mx.alpha.test deny=all\"\n\
         default.atk._atp.alpha IN TXT {}\n\
         _atp.beta IN SVCB 0 pool.provider.test.\n\
         pool.provider IN SVCB 1 mx.beta.test. port={beta_port} alpn=atp/1\n\
         mx.beta IN A 127.0.0.1\n\
         ats._atp.beta IN TXT \"v=atp1 allow=ip:127.0.0.1 deny=all\"\n\
         default.atk._atp.beta IN TXT {}\n",
        atk_txt(1),
        atk_txt(2)
    );
    let bind = Bind::start(&zone);
    let dns = format!("127.0.0.1:{}", bind.port);
    let certs = tempfile::tempdir().unwrap();
    let ca = certificates(certs.path(), &["mx.alpha.test", "mx.beta.test"]);
    let start = |domain: &str, seed: u8, port: u16, host: &str| {
        let home = tempfile::tempdir().unwrap();
        seed_key(home.path(), seed);
        let cert = certs.path().join(format!("{host}.crt"));
        let key = certs.path().join(format!("{host}.key"));
        let o = Options::new(domain)
            .arg("--dns-server")
            .arg(&dns)
            .arg("--no-local-registry")
            .arg("--peer-ca")
            .arg(ca.to_str().unwrap())
            .arg("--cert")
            .arg(cert.to_str().unwrap())
            .arg("--key")
            .arg(key.to_str().unwrap());
        Server::start_in(o, home, port)
    };
    let alpha = start("alpha.test", 1, alpha_port, "mx.alpha.test");
    let beta = start("beta.test", 2, beta_port, "mx.beta.test");
    register(&alpha, "alice@alpha.test", "pw-a").await;
    register(&beta, "bob@beta.test", "pw-b").await;

    let send = |from: &'static str, to: &'static str, pw: &'static str, via: &Server, nonce: &str| {
        let m = json!({"from": from, "to": to, "timestamp": now(), "nonce": nonce, "type": "message",
                       "payload": {"body": format!("over real DNS: {nonce}")}});
        client().post(via.url("message")).basic_auth(from, Some(pw)).json(&m)
    };
    let inbox = |s: &Server, agent: &'static str, pw: &'static str| {
        client().get(s.url(&format!("messages?agent_id={agent}"))).basic_auth(agent, Some(pw))
    };
    assert_eq!(call(send("alice@alpha.test", "bob@beta.test", "pw-a", &alpha, "dns-1")).await.0, 202);
    assert_eq!(call(send("bob@beta.test", "alice@alpha.test", "pw-b", &beta, "dns-2")).await.0, 202);
    for (s, agent, pw, nonce) in
        [(&beta, "bob@beta.test", "pw-b", "dns-1"), (&alpha, "alice@alpha.test", "pw-a", "dns-2")]
    {
        let got = eventually(20, || async {
            let (_, v) = call(inbox(s, agent, pw)).await;
            (v["count"] == 1).then_some(v)
        })
        .await
        .unwrap_or_else(|| panic!("{nonce} did not arrive; sender logs:\n{}\n{}", alpha.log(), beta.log()));
        assert_eq!(got["messages"][0]["nonce"], nonce);
    }
    let (_, stats) = call(client().get(beta.url("stats")).bearer_auth(ADMIN)).await;
    assert_eq!(stats["security"]["ats_pass"], 1, "ATS by the A record of mx.alpha.test: {stats}");

    // The answers are cached for their TTL: with BIND gone, a second message still finds its way.
    drop(bind);
    assert_eq!(call(send("alice@alpha.test", "bob@beta.test", "pw-a", &alpha, "dns-3")).await.0, 202);
    eventually(20, || async {
        let (_, v) = call(inbox(&beta, "bob@beta.test", "pw-b")).await;
        (v["count"] == 2).then_some(())
    })
    .await
    .unwrap_or_else(|| panic!("dns-3 did not arrive from the cache; alpha log:\n{}", alpha.log()));
}
