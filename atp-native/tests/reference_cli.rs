//! Wire compatibility with the reference (docs/design.md §2): the reference's own Python CLI and SDK
//! (`agent-transfer-protocol` 1.0.0a8, docs/protocol.md §9, §10) register, send and receive against the
//! real `atp` binary, unchanged.
//!
//! Needs the reference in a virtualenv: `scripts/install-reference.sh` (it makes
//! `<repo>/target/atp-ref-venv`; `ATP_REF_VENV` points elsewhere). Without it these tests fail —
//! they never pass silently.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{Options, Server};
use serde_json::Value;

const DOMAIN: &str = "alpha.test";
const ADMIN: &str = common::ADMIN;

fn venv() -> PathBuf {
    std::env::var_os("ATP_REF_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/atp-ref-venv"))
}

/// The reference's `atp` executable, or a failing test with the fix in its message.
fn reference_atp() -> PathBuf {
    let bin = venv().join("bin/atp");
    assert!(
        bin.is_file(),
        "the reference ATP CLI is not installed at {}: run scripts/install-reference.sh",
        bin.display()
    );
    bin
}

/// Our server (the real binary, TLS with its self-signed certificate) and the reference CLI run
/// with `HOME` in a temporary directory.
struct Env {
    server: Server,
}

impl Env {
    fn start() -> Env {
        reference_atp();
        Env { server: Server::with(Options::new(DOMAIN)) }
    }

    fn addr(&self) -> String {
        self.server.addr()
    }

    fn log(&self) -> String {
        self.server.log()
    }

    fn cli_home(&self) -> PathBuf {
        let home = self.server.home_path().join("cli-home");
        std::fs::create_dir_all(&home).unwrap();
        home
    }

    /// Runs the reference CLI.
    fn cli(&self, args: &[&str]) -> Output {
        let out = Command::new(reference_atp())
            .args(args)
            .env("HOME", self.cli_home())
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::null())
            .output()
            .expect("run the reference CLI");
        eprintln!(
            "$ atp {}\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// The reference CLI, which must exit 0; its stdout.
    fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(out.status.success(), "atp {args:?} failed: {out:?}\nserver log:\n{}", self.log());
        String::from_utf8(out.stdout).unwrap()
    }
}

#[test]
fn reference_cli_registers_sends_and_receives() {
    let s = Env::start();
    let srv = s.addr();
    let out = s.cli_ok(&["agent", "register", "alice", "--server", &srv, "--no-verify", "-p", "alicepw"]);
    assert_eq!(out.trim(), "Agent registered: alice@alpha.test");
    let out = s.cli_ok(&["agent", "register", "bob@alpha.test", "--server", &srv, "--no-verify", "-p", "bobpw"]);
    assert_eq!(out.trim(), "Agent registered: bob@alpha.test");

    // Refusals come back as the reference's `Error: <error>` with exit code 1.
    let dup = s.cli(&["agent", "register", "bob", "--server", &srv, "--no-verify", "-p", "other"]);
    assert_eq!(dup.status.code(), Some(1));
    let text = String::from_utf8_lossy(&dup.stdout);
    assert!(text.starts_with("Error: ") && text.contains("already registered"), "{text}");
    let reserved = s.cli(&["agent", "register", "postmaster", "--server", &srv, "--no-verify", "-p", "x"]);
    assert_eq!(reserved.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&reserved.stdout).contains("reserved"));

    let out = s.cli_ok(&[
        "send",
        "bob@alpha.test",
        "--from",
        "alice@alpha.test",
        "--password",
        "alicepw",
        "--server",
        &srv,
        "--no-verify",
        "--body",
        "Hello Bob",
        "--subject",
        "hi",
    ]);
    let sent: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("send printed {out:?}: {e}"));
    assert_eq!(sent["status"], "accepted", "{sent}");
    let nonce = sent["nonce"].as_str().unwrap().to_owned();

    // A wrong password is reported (the reference CLI exits 0 even then, docs/protocol.md §9).
    let out = s.cli_ok(&[
        "send",
        "bob@alpha.test",
        "--from",
        "alice@alpha.test",
        "--password",
        "wrong",
        "--server",
        &srv,
        "--no-verify",
        "--body",
        "x",
    ]);
    let refused: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(refused["status"], "error");
    assert_eq!(refused["error"], "HTTP 401");

    let out =
        s.cli_ok(&["recv", "--agent-id", "bob@alpha.test", "--password", "bobpw", "--server", &srv, "--no-verify"]);
    let inbox: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("recv printed {out:?}: {e}"));
    let inbox = inbox.as_array().expect("recv prints a JSON array");
    assert_eq!(inbox.len(), 1, "{inbox:?}");
    let m = &inbox[0];
    assert_eq!(m["from"], "alice@alpha.test");
    assert_eq!(m["to"], "bob@alpha.test");
    assert_eq!(m["nonce"], nonce.as_str());
    assert_eq!(m["type"], "message");
    assert_eq!(m["payload"]["body"], "Hello Bob");
    assert_eq!(m["payload"]["subject"], "hi");

    let out = s.cli_ok(&[
        "recv",
        "--agent-id",
        "bob@alpha.test",
        "--password",
        "bobpw",
        "--server",
        &srv,
        "--no-verify",
        "--output",
        "text",
    ]);
    assert_eq!(
        out.trim(),
        format!("[{nonce}] alice@alpha.test -> bob@alpha.test: {{'body': 'Hello Bob', 'subject': 'hi'}}")
    );

    // Alice's inbox is empty.
    let out = s.cli_ok(&[
        "recv",
        "--agent-id",
        "alice@alpha.test",
        "--password",
        "alicepw",
        "--server",
        &srv,
        "--no-verify",
        "--output",
        "text",
    ]);
    assert_eq!(out.trim(), "No messages.");
}

#[test]
fn reference_cli_admin_commands() {
    let s = Env::start();
    let srv = s.addr();
    s.cli_ok(&["agent", "register", "carol", "--server", &srv, "--no-verify", "-p", "pw"]);
    s.cli_ok(&["agent", "register", "dave", "--server", &srv, "--no-verify", "-p", "pw"]);
    let out = s.cli_ok(&[
        "send",
        "dave@alpha.test",
        "--from",
        "carol@alpha.test",
        "--password",
        "pw",
        "--server",
        &srv,
        "--no-verify",
        "--body",
        "hi",
    ]);
    let nonce = serde_json::from_str::<Value>(&out).unwrap()["nonce"].as_str().unwrap().to_owned();

    let out = s.cli_ok(&["agent", "list", "--server", &srv, "--admin-token", ADMIN, "--no-verify"]);
    let listed: Vec<&str> = out.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    assert!(listed.contains(&"carol@alpha.test") && listed.contains(&"dave@alpha.test"), "{out}");

    let out = s.cli_ok(&["status", "--server", &srv, "--admin-token", ADMIN, "--no-verify", "--output", "json"]);
    let stats: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(stats["domain"], DOMAIN);
    assert_eq!(stats["messages"]["delivered_local"], 1, "{stats}");
    let out = s.cli_ok(&["status", "--server", &srv, "--admin-token", ADMIN, "--no-verify"]);
    assert!(out.contains("ATP Server: alpha.test"), "{out}");
    assert!(out.contains("Agents (2):\n  carol@alpha.test\n  dave@alpha.test"), "registered agents: {out}");

    let out = s.cli_ok(&["inspect", &nonce, "--server", &srv, "--admin-token", ADMIN, "--no-verify"]);
    assert!(out.contains(&format!("Nonce:       {nonce}")), "{out}");
    assert!(out.contains("Status:      delivered"), "{out}");
    let missing = s.cli(&["inspect", "msg-nope", "--server", &srv, "--admin-token", ADMIN, "--no-verify"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stdout).contains("Message msg-nope not found."));

    let wrong = s.cli(&["agent", "list", "--server", &srv, "--admin-token", "nope", "--no-verify"]);
    assert_ne!(wrong.status.code(), Some(0));
}

/// The reference's Python SDK (`atp.client.ATPClient`, docs/protocol.md §10) against our server.
#[test]
fn reference_sdk_sends_and_receives() {
    let s = Env::start();
    let srv = s.addr();
    s.cli_ok(&["agent", "register", "erin", "--server", &srv, "--no-verify", "-p", "erinpw"]);
    s.cli_ok(&["agent", "register", "frank", "--server", &srv, "--no-verify", "-p", "frankpw"]);
    let script = r#"
import asyncio, json, sys
from atp.client import ATPClient

async def main(server):
    erin = ATPClient("erin@alpha.test", server, no_verify=True, password="erinpw")
    frank = ATPClient("frank@alpha.test", server, no_verify=True, password="frankpw")
    r1 = await erin.send("frank@alpha.test", body="one", subject="s")
    r2 = await erin.send("frank@alpha.test", payload={"n": 2, "x": 1e-05, "uni": "\u00e9\u4e2d"})
    first = await frank.recv(limit=1)
    rest = await frank.recv()
    again = await frank.recv()
    await erin.close(); await frank.close()
    print(json.dumps({"sent": [r1, r2], "first": [m.to_dict() for m in first],
                      "rest": [m.to_dict() for m in rest], "again": len(again)}))

asyncio.run(main(sys.argv[1]))
"#;
    let out = Command::new(venv().join("bin/python"))
        .args(["-c", script, &srv])
        .env("HOME", s.cli_home())
        .stdin(Stdio::null())
        .output()
        .expect("run the reference SDK");
    assert!(
        out.status.success(),
        "SDK script failed: {}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        s.log()
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["sent"][0]["status"], "accepted", "{r}");
    assert_eq!(r["sent"][1]["status"], "accepted", "{r}");
    // The SDK's cursor (after_id = last_id) pages through the inbox.
    assert_eq!(r["first"].as_array().unwrap().len(), 1, "{r}");
    assert_eq!(r["first"][0]["payload"]["body"], "one");
    assert_eq!(r["rest"].as_array().unwrap().len(), 1, "{r}");
    assert_eq!(r["rest"][0]["payload"]["n"], 2);
    assert_eq!(r["rest"][0]["payload"]["uni"], "é中");
    assert_eq!(r["again"], 0);
}
