//! Delivery through real DNS: BIND (Debian `bind9`) serves a zone with the SVCB, A, ATS and ATK
//! records of two domains, and two atp servers find and verify each other with `--dns-server`
//! only (no overrides, no local registry). Certificates are real too: each server has one issued
//! by a test CA for its SVCB target name, and the sender verifies it (`--peer-ca`).
//!
//! Needs `named` (`apt-get install bind9`, done by scripts/install-test-deps.sh); without it the
//! test fails with that hint rather than passing silently.

mod common;

use atp_wasm::records::zone::quote_txt;
use common::bind::{certificates, Bind};
use common::*;
use serde_json::json;

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
    let dns = bind.addr();
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
