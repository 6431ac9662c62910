//! Interop with the reference server (`agent-transfer-protocol` 1.0.0a8 from PyPI, docs/protocol.md §11)
//! in both directions, over loopback TLS with the reference's own discovery overrides:
//!
//! * atp → reference: our server signs and transfers; the reference verifies our signature (ATS +
//!   ATK, docs/protocol.md §5) and stores the message for its agent.
//! * reference → atp: the reference signs and transfers; our server verifies its signature.
//!
//! The payloads are those of every shared signing vector (unicode, escapes, floats, big integers,
//! cc, routing, …); what arrives is compared by its canonical form (docs/protocol.md §3), so a float
//! the reference re-serialises still compares equal when it means the same number.
//!
//! Needs the reference in `<repo>/target/atp-ref-venv` (scripts/install-reference.sh); without it
//! the test fails with that hint.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use atp_wasm::canonical::{canonicalize, parse_json};
use atp_wasm::keys::PublicKey;
use common::*;
use serde_json::{json, Value};

const REF_DOMAIN: &str = "ref.test";
const ATP_DOMAIN: &str = "atp.test";
const REF_ADMIN: &str = "ref-admin";

fn venv() -> PathBuf {
    std::env::var_os("ATP_REF_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/atp-ref-venv"))
}

fn reference_atp() -> PathBuf {
    let bin = venv().join("bin/atp");
    assert!(bin.is_file(), "the reference is not installed at {}: run scripts/install-reference.sh", bin.display());
    bin
}

/// A reference server (`atp server start`) with its own `HOME`, killed on drop.
struct RefServer {
    child: Child,
    port: u16,
    home: tempfile::TempDir,
}

impl RefServer {
    fn log(&self) -> String {
        std::fs::read_to_string(self.home.path().join("server.log")).unwrap_or_default()
    }

    fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}/.well-known/atp/v1/{path}", self.port)
    }
}

impl Drop for RefServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ref_cmd(home: &Path) -> Command {
    let mut c = Command::new(reference_atp());
    c.env("HOME", home).env("PYTHONDONTWRITEBYTECODE", "1").stdin(Stdio::null());
    c
}

/// Generates the reference's domain key (its own `keys generate`) and returns its public key.
fn ref_key(home: &Path) -> PublicKey {
    let out = ref_cmd(home).args(["keys", "generate"]).output().expect("reference keys generate");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let pem = std::fs::read_to_string(home.join(".atp/keys/default.pub")).unwrap();
    PublicKey::from_spki_pem(&pem).unwrap()
}

fn start_reference(home: tempfile::TempDir, port: u16, atp_port: u16) -> RefServer {
    let h = home.path();
    // the reference finds us through its peers.toml and trusts our key through dns_override.toml
    let peers = write_peers(h, &[(ATP_DOMAIN, atp_port)]);
    let dns = write_overrides(
        h,
        &[
            (format!("ats._atp.{ATP_DOMAIN}"), "v=atp1 allow=ip:127.0.0.1 deny=all".into()),
            (format!("default.atk._atp.{ATP_DOMAIN}"), atk_record(1)),
        ],
    );
    std::fs::write(
        h.join(".atp/config.toml"),
        format!("local_mode = true\npeers_file = \"{}\"\ndns_override_file = \"{}\"\n", peers.display(), dns.display()),
    )
    .unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    std::fs::write(h.join("server.crt"), cert.cert.pem()).unwrap();
    std::fs::write(h.join("server.key"), cert.key_pair.serialize_pem()).unwrap();
    let log = std::fs::File::create(h.join("server.log")).unwrap();
    let child = ref_cmd(h)
        .args(["server", "start", "--domain", REF_DOMAIN, "--host", "127.0.0.1", "--port", &port.to_string()])
        .arg("--cert")
        .arg(h.join("server.crt"))
        .arg("--key")
        .arg(h.join("server.key"))
        .args(["--admin-token", REF_ADMIN])
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start the reference server");
    let r = RefServer { child, port, home };
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if r.log().contains("Uvicorn running") {
            return r;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the reference server did not start:\n{}", r.log());
}

/// The shared signing vectors: (name, message value with exact number text).
fn vectors() -> Vec<(String, Value)> {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../atp-wasm/tests/data/reference-signing.json"),
    )
    .unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap();
    doc["vectors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["name"].as_str().unwrap().to_owned(), parse_json(v["message"].as_str().unwrap()).unwrap()))
        .collect()
}

/// A vector's message re-addressed, with a fresh nonce and timestamp.
fn readdress(v: &Value, from: &str, to: &str, nonce: &str) -> Value {
    let mut m = v.clone();
    m["from"] = json!(from);
    m["to"] = json!(to);
    m["nonce"] = json!(nonce);
    m["timestamp"] = json!(now());
    m.as_object_mut().unwrap().remove("signature");
    m
}

/// What must survive the trip: payload, type, cc and routing, by canonical form.
fn essence(m: &Value) -> String {
    let mut e = json!({"payload": m["payload"], "type": m["type"]});
    if let Some(cc) = m.get("cc").filter(|c| c.as_array().is_some_and(|a| !a.is_empty())) {
        e["cc"] = cc.clone();
    }
    if let Some(r) = m.get("routing").filter(|r| !r.is_null()) {
        e["routing"] = r.clone();
    }
    canonicalize(&e).unwrap()
}

async fn inbox_at(url: String, agent: &str, pw: &str) -> Vec<Value> {
    let r = client().get(url).basic_auth(agent, Some(pw)).send().await.unwrap();
    let text = r.text().await.unwrap();
    let v = parse_json(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    v["messages"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_directions_with_every_vector_payload() {
    let (ref_port, atp_port) = (free_port(), free_port());
    let ref_home = tempfile::tempdir().unwrap();
    let ref_public = ref_key(ref_home.path());
    let reference = start_reference(ref_home, ref_port, atp_port);

    let home = tempfile::tempdir().unwrap();
    seed_key(home.path(), 1);
    let peers = write_peers(home.path(), &[(REF_DOMAIN, ref_port)]);
    let dns = write_overrides(
        home.path(),
        &[
            (format!("ats._atp.{REF_DOMAIN}"), "v=atp1 allow=ip:127.0.0.1 deny=all".into()),
            (
                format!("default.atk._atp.{REF_DOMAIN}"),
                atp_wasm::records::atk::AtkRecord::new(*ref_public.as_bytes()).to_string(),
            ),
        ],
    );
    let o = Options::new(ATP_DOMAIN)
        .arg("--peers")
        .arg(peers.to_str().unwrap())
        .arg("--dns-override")
        .arg(dns.to_str().unwrap())
        .arg("--no-local-registry");
    let atp = Server::start_in(o, home, atp_port);

    let c = client();
    for (url, agent) in [
        (atp.url("register"), "alice@atp.test"),
        (atp.url("register"), "dave@atp.test"),
        (reference.url("register"), "bob@ref.test"),
        (reference.url("register"), "carol@ref.test"),
    ] {
        let r = c.post(url).json(&json!({"agent_id": agent, "password": "pw"})).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 201, "register {agent}: {}", r.text().await.unwrap());
    }

    let vectors = vectors();
    assert!(vectors.len() >= 16);
    let mut sent_to_ref = Vec::new();
    let mut sent_to_atp = Vec::new();
    for (i, (name, v)) in vectors.iter().enumerate() {
        // atp → reference: alice submits to our server, which signs and transfers
        let m = readdress(v, "alice@atp.test", "bob@ref.test", &format!("msg-to-ref-{i:02}"));
        let r = c.post(atp.url("message")).basic_auth("alice@atp.test", Some("pw")).body(m.to_string()).send().await;
        assert_eq!(r.unwrap().status().as_u16(), 202, "atp accepted {name}");
        sent_to_ref.push((name.clone(), m));
        // reference → atp: carol submits to the reference, which signs and transfers
        let m = readdress(v, "carol@ref.test", "dave@atp.test", &format!("msg-to-atp-{i:02}"));
        let r =
            c.post(reference.url("message")).basic_auth("carol@ref.test", Some("pw")).body(m.to_string()).send().await;
        let r = r.unwrap();
        assert_eq!(r.status().as_u16(), 202, "reference accepted {name}: {}", r.text().await.unwrap());
        sent_to_atp.push((name.clone(), m));
    }

    // The reference's delivery loop runs every 5 s and sends 20 at a time, one by one.
    let n = vectors.len();
    let at_ref = eventually(90, || async {
        let got = inbox_at(reference.url("messages?agent_id=bob@ref.test&limit=100"), "bob@ref.test", "pw").await;
        (got.len() >= n).then_some(got)
    })
    .await
    .unwrap_or_else(|| {
        panic!("atp → reference incomplete\natp log:\n{}\nreference log:\n{}", atp.log(), reference.log())
    });
    let at_atp = eventually(90, || async {
        let got = inbox_at(atp.url("messages?agent_id=dave@atp.test&limit=100"), "dave@atp.test", "pw").await;
        (got.len() >= n).then_some(got)
    })
    .await
    .unwrap_or_else(|| {
        panic!("reference → atp incomplete\natp log:\n{}\nreference log:\n{}", atp.log(), reference.log())
    });

    for (sent, got, key) in [(&sent_to_ref, &at_ref, key(1).public_key()), (&sent_to_atp, &at_atp, ref_public)] {
        assert_eq!(got.len(), sent.len(), "each message exactly once");
        for (name, m) in sent {
            let nonce = m["nonce"].as_str().unwrap();
            let g = got.iter().find(|g| g["nonce"] == nonce).unwrap_or_else(|| panic!("{name} ({nonce}) missing"));
            assert_eq!(essence(g), essence(m), "{name}: content changed in transit");
            // the signature the receiver verified verifies here too, with the sender's key
            let msg = atp_wasm::message::Message::from_value(g.clone()).unwrap();
            atp_wasm::sign::verify_message(&msg, &key).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
    // the receivers counted real verifications
    let (_, stats) = call(c.get(atp.url("stats")).bearer_auth(ADMIN)).await;
    assert_eq!(stats["security"]["atk_pass"].as_u64(), Some(n as u64), "{stats}");
    let (_, stats) = call(c.get(reference.url("stats")).bearer_auth(REF_ADMIN)).await;
    assert_eq!(stats["security"]["atk_pass"].as_u64(), Some(n as u64), "{stats}");
}

/// `atp recv --follow` against a server without the inbox stream (the reference answers 404 for
/// `messages/stream`, docs/protocol.md §6.5): it says so once on stderr and polls `GET messages`
/// instead — the backlog first, then a message that arrives while it follows, each printed once.
#[test]
fn recv_follow_polls_a_server_without_a_stream() {
    use std::io::{BufRead, BufReader};
    let port = free_port();
    let ref_home = tempfile::tempdir().unwrap();
    ref_key(ref_home.path());
    let reference = start_reference(ref_home, port, free_port());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let submit = |from: &str, to: &str, nonce: &str| {
        let m = json!({"from": from, "to": to, "timestamp": now(), "nonce": nonce, "type": "message", "payload": {"body": nonce}});
        let r = rt.block_on(async {
            let r = client().post(reference.url("message")).basic_auth(from, Some("pw")).body(m.to_string()).send();
            let r = r.await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        });
        assert_eq!(r.0, 202, "the reference accepted {nonce}: {}", r.1);
    };
    for agent in ["bob@ref.test", "carol@ref.test"] {
        let r = rt.block_on(async {
            let body = json!({"agent_id": agent, "password": "pw"});
            client().post(reference.url("register")).json(&body).send().await.unwrap().status().as_u16()
        });
        assert_eq!(r, 201, "register {agent}");
    }
    submit("carol@ref.test", "bob@ref.test", "backlog-1");

    let home = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_atp"))
        .args(["recv", "--follow", "--agent-id", "bob@ref.test", "-P", "pw", "--no-verify", "--output", "json"])
        .args(["--server", &format!("127.0.0.1:{port}")])
        .env("ATP_HOME", home.path().join(".atp"))
        .env("HOME", home.path())
        .env_remove("ATP_SERVER")
        .env_remove("ATP_PASSWORD")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A watchdog: a follower that never prints fails the test (its stdout ends) instead of hanging.
    let pid = child.id().to_string();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let finished = done.clone();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(180));
        if !finished.load(std::sync::atomic::Ordering::SeqCst) {
            let _ = Command::new("kill").arg(&pid).status();
        }
    });
    let stderr = child.stderr.take().unwrap();
    let note = std::thread::spawn(move || {
        BufReader::new(stderr).lines().map_while(Result::ok).find(|l| l.contains("has no inbox stream"))
    });
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next = || {
        let line = lines.next().expect("atp recv --follow ended").unwrap();
        serde_json::from_str::<Value>(&line).unwrap_or_else(|e| panic!("{e}: {line}"))["nonce"].clone()
    };
    assert_eq!(next(), json!("backlog-1"), "the backlog");
    submit("carol@ref.test", "bob@ref.test", "live-1");
    submit("carol@ref.test", "bob@ref.test", "live-2");
    assert_eq!([next(), next()], [json!("live-1"), json!("live-2")], "what arrived while following, once each");
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let _ = child.kill();
    let _ = child.wait();
    let note = note.join().unwrap();
    assert!(note.is_some_and(|n| n.contains("polling")), "no note about polling\n{}", reference.log());
}
