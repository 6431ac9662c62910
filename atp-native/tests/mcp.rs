//! `atp mcp` under a real MCP client nobody here wrote: the official Python SDK (`mcp` on PyPI),
//! driven line by line through `tests/mcp_driver.py`, against real atp servers.
//!
//! * Two servers (alpha.test, beta.test) deliver to each other over TLS on loopback; alice's `atp
//!   mcp` sends to bob on the other server, bob's `atp mcp` (found as `--server beta.test` through
//!   the local registry) is notified through its `atp://inbox` subscription, shows the message in
//!   the resource, returns it once from `check_inbox` (with `wait_seconds`), verifies its signature
//!   against DNS (the home's overrides) and keys, and has saved its position across a restart.
//! * Bad arguments and a wrong password are MCP tool errors carrying the ATP `error_code`, and the
//!   server goes on serving.
//! * A client of protocol versions before 2026-07-28 (`initialize`, `resources/subscribe`) works too.
//!
//! Needs the Python SDK in a virtualenv: `scripts/install-test-deps.sh` (or
//! `scripts/install-mcp-client.sh`) makes `<repo>/target/mcp-client-venv`; `ATP_MCP_VENV` points
//! elsewhere. Without it these tests fail, saying so. Every wait is for a condition, with a
//! generous deadline.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// The longest a driver command may take (a `check_inbox` waits at most 30 s here).
const ANSWER_DEADLINE: Duration = Duration::from_secs(120);

fn venv() -> PathBuf {
    std::env::var_os("ATP_MCP_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/mcp-client-venv"))
}

/// The venv's Python, failing the test (never skipping it silently) when the SDK is missing.
fn python() -> PathBuf {
    let py = venv().join("bin/python");
    let ok = py.exists()
        && Command::new(&py)
            .args(["-c", "import mcp"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    assert!(
        ok,
        "the Python MCP SDK (`mcp` on PyPI) is not installed in {}: run scripts/install-test-deps.sh \
         (or scripts/install-mcp-client.sh) first",
        venv().display()
    );
    py
}

/// `atp mcp ARGS` under the Python client, in `mode` (`auto`: protocol 2026-07-28; `legacy`:
/// `initialize`), with `env` as the MCP client's `env` for the server.
struct Mcp {
    child: Child,
    stdin: Option<ChildStdin>,
    answers: Receiver<String>,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Mcp {
    fn start(mode: &str, env: &[(&str, &str)], args: &[&str]) -> Mcp {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("driver.log");
        let mut cmd = Command::new(python());
        cmd.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp_driver.py")).arg(mode);
        for (k, v) in env {
            cmd.arg("--env").arg(format!("{k}={v}"));
        }
        cmd.arg("--").arg(env!("CARGO_BIN_EXE_atp")).arg("mcp").args(args);
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start the Python MCP driver");
        let stdout = child.stdout.take().unwrap();
        let (tx, answers) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take();
        Mcp { child, stdin, answers, log, _dir: dir }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends one command; its answer, which must be `ok`.
    fn call(&mut self, cmd: Value) -> Value {
        let v = self.try_call(cmd.clone());
        assert_eq!(v["ok"], true, "{cmd} failed: {v}\n{}", self.log());
        v
    }

    /// Sends one command; its answer, `ok` or not.
    fn try_call(&mut self, cmd: Value) -> Value {
        let stdin = self.stdin.as_mut().expect("driver open");
        writeln!(stdin, "{cmd}").and_then(|_| stdin.flush()).unwrap_or_else(|e| {
            panic!("the driver stopped reading ({e}); its log:\n{}", self.log());
        });
        let started = Instant::now();
        match self.answers.recv_timeout(ANSWER_DEADLINE) {
            Ok(line) => serde_json::from_str(&line).unwrap_or_else(|e| panic!("driver printed {line:?}: {e}")),
            Err(RecvTimeoutError::Timeout) => {
                panic!("no answer to {cmd} in {:?}; the driver's log:\n{}", started.elapsed(), self.log())
            }
            Err(RecvTimeoutError::Disconnected) => {
                panic!("the driver exited during {cmd}; its log:\n{}", self.log())
            }
        }
    }

    /// Calls a tool; its result (`isError`, `structuredContent`, `content`).
    fn tool(&mut self, name: &str, arguments: Value) -> Value {
        self.call(json!({"op": "call_tool", "name": name, "arguments": arguments}))["result"].clone()
    }

    /// Calls a tool that must succeed; its structured content.
    fn ok(&mut self, name: &str, arguments: Value) -> Value {
        let r = self.tool(name, arguments.clone());
        assert_eq!(r["isError"], false, "{name} {arguments} failed: {r}");
        assert_eq!(text_json(&r), r["structuredContent"], "the text content is the structured content");
        r["structuredContent"].clone()
    }

    /// Calls a tool that must fail with a tool error (not a protocol error); its content.
    fn tool_error(&mut self, name: &str, arguments: Value) -> Value {
        let r = self.tool(name, arguments.clone());
        assert_eq!(r["isError"], true, "{name} {arguments} should fail: {r}");
        let e = r["structuredContent"].clone();
        assert!(e["error"].as_str().is_some_and(|s| !s.is_empty()), "no error text: {r}");
        assert_eq!(text_json(&r), e, "the model reads the same error as text");
        e
    }

    /// Ends the session: the client closes, `atp mcp` sees the end of its input and exits.
    fn quit(mut self) {
        let _ = self.try_call(json!({"op": "quit"}));
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                assert!(status.success(), "driver exit {status}; log:\n{}", self.log());
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the driver did not exit; log:\n{}", self.log());
    }
}

impl Drop for Mcp {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The JSON in a tool result's first text content.
fn text_json(result: &Value) -> Value {
    let text = result["content"][0]["text"].as_str().unwrap_or_else(|| panic!("no text content: {result}"));
    serde_json::from_str(text).unwrap_or_else(|e| panic!("text content is not JSON ({e}): {text}"))
}

/// The JSON of a resource read.
fn resource_json(read: &Value) -> Value {
    let text = read["result"]["contents"][0]["text"].as_str().unwrap_or_else(|| panic!("no text: {read}"));
    serde_json::from_str(text).unwrap()
}

/// Waits (up to `secs`) for a `notifications/resources/updated` of `atp://inbox`.
fn wait_update(m: &mut Mcp, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        let v = m.call(json!({"op": "updates", "timeout": 10}));
        if v["uris"].as_array().is_some_and(|u| u.iter().any(|x| x == "atp://inbox")) {
            return;
        }
    }
    panic!("no notifications/resources/updated for atp://inbox in {secs} s; log:\n{}", m.log());
}

/// Calls `check_inbox` with `wait_seconds` until the message `nonce` comes (up to `secs`); the
/// messages of that call.
fn wait_message(m: &mut Mcp, nonce: &str, secs: u64) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        let got = m.ok("check_inbox", json!({"wait_seconds": 30}));
        let messages = got["messages"].as_array().cloned().unwrap_or_default();
        if messages.iter().any(|x| x["nonce"] == nonce) {
            return messages;
        }
    }
    panic!("message {nonce} never reached check_inbox; log:\n{}", m.log());
}

const TOOLS: [&str; 5] = ["send_message", "check_inbox", "whoami", "server_status", "verify_message"];

/// alpha.test (key 1) delivers to beta.test (key 2); beta (and `atp mcp` in its home) trust
/// alpha's records through `config.toml` overrides.
fn two_servers() -> (Server, Server) {
    let beta_home = tempfile::tempdir().unwrap();
    seed_key(beta_home.path(), 2);
    let dns = write_overrides(
        beta_home.path(),
        &[
            ("ats._atp.alpha.test".into(), "v=atp1 allow=ip:127.0.0.1 deny=all".into()),
            ("default.atk._atp.alpha.test".into(), atk_record(1)),
        ],
    );
    let beta_cfg = format!("local_mode = true\ndns_override_file = {:?}\n", dns.to_str().unwrap());
    let beta = Server::start_in(Options::new("beta.test").config(&beta_cfg), beta_home, free_port());

    let alpha_home = tempfile::tempdir().unwrap();
    seed_key(alpha_home.path(), 1);
    let peers = write_peers(alpha_home.path(), &[("beta.test", beta.port)]);
    let alpha = Server::start_in(
        Options::new("alpha.test").arg("--peers").arg(peers.to_str().unwrap()).arg("--retry-base").arg("1"),
        alpha_home,
        free_port(),
    );
    (alpha, beta)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_mcp_client_sends_to_an_agent_on_another_server() {
    python();
    let (alpha, beta) = two_servers();
    register(&alpha, "alice", "alice-pw").await;
    register(&beta, "bob", "bob-pw").await;
    let alice_home = tempfile::tempdir().unwrap();
    let alice_home_s = alice_home.path().to_str().unwrap().to_owned();
    let alpha_addr = alpha.addr();
    let beta_home_s = beta.home_path().to_str().unwrap().to_owned();
    let alice_args = [
        "--home",
        &alice_home_s,
        "--server",
        &alpha_addr,
        "--no-verify",
        "--agent-id",
        "alice",
        "--password-env",
        "ALICE_PW",
    ];
    let bob_args = [
        "--home",
        &beta_home_s,
        "--server",
        "beta.test",
        "--agent-id",
        "bob",
        "--password-env",
        "BOB_PW",
        "--poll-interval",
        "1",
    ];

    tokio::task::block_in_place(|| {
        let mut a = Mcp::start("auto", &[("ALICE_PW", "alice-pw")], &alice_args);
        let mut b = Mcp::start("auto", &[("BOB_PW", "bob-pw")], &bob_args);
        // The session and the tools.
        let info = a.call(json!({"op": "info"}));
        assert_eq!(info["protocol_version"], "2026-07-28", "{info}");
        assert_eq!(info["server_info"]["name"], "atp");
        assert_eq!(info["capabilities"]["resources"]["subscribe"], true);
        assert!(info["instructions"].as_str().unwrap().contains("alice@alpha.test"), "{info}");
        let tools = a.call(json!({"op": "list_tools"}))["tools"].as_array().cloned().unwrap();
        let names: Vec<_> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
        assert_eq!(names, TOOLS, "acknowledge is not offered until servers support it");
        for t in &tools {
            assert_eq!(t["inputSchema"]["type"], "object", "{t}");
            assert!(t["description"].as_str().unwrap().len() > 80, "{t}");
        }
        let send = &tools[0]["inputSchema"];
        assert_eq!(send["required"], json!(["to"]));
        for k in ["to", "body", "subject", "payload", "cc"] {
            assert!(send["properties"][k]["description"].is_string(), "{k}: {send}");
        }
        let check = &tools[1]["inputSchema"]["properties"];
        assert!(check["limit"].is_object() && check["wait_seconds"].is_object(), "{check}");
        assert_eq!(a.ok("whoami", json!({}))["agent_id"], "alice@alpha.test");
        let resources = b.call(json!({"op": "list_resources"}))["resources"].clone();
        assert_eq!(resources[0]["uri"], "atp://inbox", "{resources}");
        assert!(resources[0]["description"].as_str().unwrap().contains("polled"), "{resources}");
        assert_eq!(b.ok("whoami", json!({}))["agent_id"], "bob@beta.test");
        let status = b.ok("server_status", json!({}));
        assert_eq!((status["healthy"].clone(), status["domain"].clone()), (json!(true), json!("beta.test")));
        assert!(status["server"].as_str().unwrap().contains("local registry"), "found in the registry: {status}");

        // bob listens for new mail; alice writes to him across servers.
        let sub = b.call(json!({"op": "subscribe", "uri": "atp://inbox"}));
        assert_eq!(sub["honored"]["resourceSubscriptions"], json!(["atp://inbox"]), "{sub}");
        assert_eq!(b.ok("check_inbox", json!({}))["count"], 0, "nothing yet");
        let sent = a.ok(
            "send_message",
            json!({"to": "bob@beta.test", "subject": "Lunch?", "body": "Noon at the usual place.", "cc": ["carol@beta.test"]}),
        );
        assert_eq!(sent["status"], "accepted", "{sent}");
        assert_eq!(sent["from"], "alice@alpha.test");
        assert_eq!(sent["cc"], json!(["carol@beta.test"]));
        let nonce = sent["nonce"].as_str().unwrap().to_owned();

        // Notified by polling, readable in the resource without taking it, then returned once.
        wait_update(&mut b, 120);
        let inbox = resource_json(&b.call(json!({"op": "read_resource", "uri": "atp://inbox"})));
        let unread = inbox["messages"].as_array().unwrap();
        assert!(unread.iter().any(|m| m["nonce"] == nonce.as_str()), "{inbox}");
        let messages = wait_message(&mut b, &nonce, 120);
        let m = messages.iter().find(|m| m["nonce"] == nonce.as_str()).unwrap();
        assert_eq!(m["from"], "alice@alpha.test");
        assert_eq!(m["to"], "bob@beta.test");
        assert_eq!(m["cc"], json!(["carol@beta.test"]));
        assert_eq!((m["subject"].as_str(), m["body"].as_str()), (Some("Lunch?"), Some("Noon at the usual place.")));
        assert!(m["time"].as_str().unwrap().ends_with(" UTC"), "{m}");
        assert_eq!(m["signature_verified"], true, "alpha's signature against its ATK record: {m}");
        assert_eq!(m["signature"]["key_id"], "default.atk._atp.alpha.test");
        let again = b.ok("check_inbox", json!({"wait_seconds": 1}));
        assert_eq!(again["count"], 0, "each message is returned once: {again}");
        let inbox = resource_json(&b.call(json!({"op": "read_resource", "uri": "atp://inbox"})));
        assert_eq!(inbox["unread"], 0, "{inbox}");

        // verify_message: by nonce against DNS (the home's overrides), and against keys.
        let v = b.ok("verify_message", json!({"nonce": nonce}));
        assert_eq!((v["verified"].clone(), v["checked_against"].clone()), (json!(true), json!("dns")), "{v}");
        let right = key(1).public_key().to_b64();
        let v = b.ok("verify_message", json!({"nonce": nonce, "public_key": right}));
        assert_eq!(v["verified"], true, "{v}");
        let wrong = key(9).public_key().to_b64();
        let v = b.ok("verify_message", json!({"nonce": nonce, "public_key": wrong}));
        assert_eq!((v["verified"].clone(), v["error_code"].clone()), (json!(false), json!("550 5.7.28")), "{v}");
        let e = b.tool_error("verify_message", json!({"message": "{\"not\": \"a message\"}"}));
        assert_eq!(e["error_code"], "550 5.6.0", "{e}");

        // Bad arguments: tool errors with the ATP error_code, and the server goes on.
        let e = a.tool_error("send_message", json!({"to": "bob@beta.test"}));
        assert_eq!((e["error_code"].as_str(), e["kind"].as_str()), (Some("500 5.5.2"), Some("invalid_arguments")));
        let e = a.tool_error("send_message", json!({"to": "bob@beta.test", "mesage": "hi"}));
        assert_eq!(e["error_code"], "500 5.5.2");
        assert!(e["error"].as_str().unwrap().contains("'mesage'"), "{e}");
        let e = a.tool_error("send_message", json!({"to": "not an address", "body": "hi"}));
        assert_eq!(e["error_code"], "553 5.1.3", "{e}");
        let e = a.tool_error("send_message", json!({"to": "bob@beta.test", "body": 42}));
        assert_eq!(e["error_code"], "500 5.5.2", "{e}");
        let e = a.tool_error("check_inbox", json!({"limit": 0}));
        assert_eq!(e["error_code"], "500 5.5.2", "{e}");
        let e = a.tool_error("check_inbox", json!({"wait_seconds": "soon"}));
        assert_eq!(e["error_code"], "500 5.5.2", "{e}");
        let e = a.tool_error("send_message", json!({"to": "nobody", "body": "hi"}));
        assert_eq!((e["error_code"].as_str(), e["http_status"].as_u64()), (Some("550 5.1.1"), Some(404)), "{e}");
        let unknown = a.try_call(json!({"op": "call_tool", "name": "acknowledge", "arguments": {}}));
        assert_eq!(unknown["ok"], false, "an unknown tool is a protocol error: {unknown}");
        assert_eq!(a.ok("whoami", json!({}))["agent_id"], "alice@alpha.test", "still serving");

        // A wrong password: the credential's refusal as a tool error; still serving.
        let mut wrong = Mcp::start("auto", &[("PW", "not-alices")], &{
            let mut args = alice_args;
            args[8] = "PW";
            args
        });
        for (tool, args) in [
            ("whoami", json!({})),
            ("check_inbox", json!({})),
            ("send_message", json!({"to": "bob@beta.test", "body": "hi"})),
        ] {
            let e = wrong.tool_error(tool, args);
            assert_eq!((e["error_code"].as_str(), e["http_status"].as_u64()), (Some("535 5.7.8"), Some(401)), "{e}");
            assert_eq!(e["retryable"], false);
        }
        assert_eq!(wrong.ok("server_status", json!({}))["healthy"], true, "still serving");
        wrong.quit();

        // The position is saved: a new session of bob has nothing new, then the next message.
        b.quit();
        let mut b = Mcp::start("auto", &[("BOB_PW", "bob-pw")], &bob_args);
        assert_eq!(b.ok("check_inbox", json!({}))["count"], 0, "the cursor survived the restart");
        let sent = a.ok(
            "send_message",
            json!({"to": "bob@beta.test", "payload": {"task": "review", "n": 12345678901234567890u64}}),
        );
        let nonce = sent["nonce"].as_str().unwrap().to_owned();
        let messages = wait_message(&mut b, &nonce, 120);
        let m = messages.iter().find(|m| m["nonce"] == nonce.as_str()).unwrap();
        assert_eq!(m["payload"].to_string(), r#"{"task":"review","n":12345678901234567890}"#, "{m}");
        assert_eq!(m["signature_verified"], true, "{m}");
        b.quit();
        a.quit();
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_of_earlier_protocol_versions_subscribes_to_the_inbox() {
    python();
    let s = Server::start("gamma.test");
    register(&s, "dave", "dave-pw").await;
    register(&s, "erin", "erin-pw").await;
    let home = tempfile::tempdir().unwrap();
    let home_s = home.path().to_str().unwrap().to_owned();
    let addr = s.addr();
    let args = |agent: &'static str, var: &'static str| {
        vec!["--home", &home_s, "--server", &addr, "--no-verify", "--agent-id", agent, "--password-env", var]
    };
    tokio::task::block_in_place(|| {
        let mut dave = Mcp::start("legacy", &[("D", "dave-pw")], &args("dave", "D"));
        let mut erin_args = args("erin", "E");
        erin_args.extend(["--poll-interval", "1"]);
        let mut erin = Mcp::start("legacy", &[("E", "erin-pw")], &erin_args);
        let info = erin.call(json!({"op": "info"}));
        assert_ne!(info["protocol_version"], "2026-07-28", "the initialize handshake: {info}");
        let tools = erin.call(json!({"op": "list_tools"}))["tools"].as_array().cloned().unwrap();
        assert_eq!(tools.iter().map(|t| t["name"].as_str().unwrap()).collect::<Vec<_>>(), TOOLS);
        assert_eq!(erin.call(json!({"op": "subscribe", "uri": "atp://inbox"}))["how"], "resources/subscribe");

        let sent = dave.ok("send_message", json!({"to": "erin", "body": "hello"}));
        assert_eq!(sent["to"], "erin@gamma.test", "a short name is of the server's domain");
        wait_update(&mut erin, 120);
        let messages = wait_message(&mut erin, sent["nonce"].as_str().unwrap(), 120);
        assert_eq!(messages[0]["body"], "hello");
        assert_eq!(messages[0]["signature_verified"], Value::Null, "local mail carries no signature");
        assert_eq!(messages[0]["signature"]["status"], "local");
        let v = erin.ok("verify_message", json!({"nonce": sent["nonce"]}));
        assert_eq!((v["verified"].clone(), v["signature"]["status"].clone()), (Value::Null, json!("local")), "{v}");
        let nope = erin.try_call(json!({"op": "read_resource", "uri": "atp://outbox"}));
        assert_eq!(nope["ok"], false, "{nope}");
        assert_eq!(erin.ok("whoami", json!({}))["agent_id"], "erin@gamma.test", "still serving");
        erin.quit();
        dave.quit();
    });
}

#[test]
fn a_missing_password_stops_atp_mcp_before_the_protocol_starts() {
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_atp"))
        .args(["mcp", "--server", "127.0.0.1:1", "--no-verify", "--agent-id", "a@x.test", "--password-env"])
        .arg("ATP_TEST_UNSET_PASSWORD_VARIABLE")
        .arg("--home")
        .arg(home.path())
        .env_remove("ATP_PASSWORD")
        .env_remove("ATP_TEST_UNSET_PASSWORD_VARIABLE")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "stdout is the protocol's: {:?}", String::from_utf8_lossy(&out.stdout));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--password-env ATP_TEST_UNSET_PASSWORD_VARIABLE: the variable is not set"), "{err}");
}
