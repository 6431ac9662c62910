//! The `atp` command line as a user runs it (docs/protocol.md §9; the seed README's quick start and
//! "Try It: Two Servers Talking"): every client command against the real server binary, each test
//! with its own servers on free loopback ports and its own temporary homes, and every error path
//! (one `error: …` line on stderr and a non-zero exit, or a JSON error object with `--output json`).
//!
//! The interactive prompts (password twice, untrusted certificate) are driven through a
//! pseudo-terminal. `dns check` is run against BIND (`named`, installed by
//! scripts/install-test-deps.sh) serving what `dns generate` printed.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, Options, Server, ADMIN};
use serde_json::{json, Value};

/// A user of the command line: a home of their own (`ATP_HOME`), no `ATP_*` settings leaking in
/// from the environment, stdin not a terminal.
struct User {
    home: tempfile::TempDir,
}

impl User {
    fn new() -> User {
        User { home: tempfile::tempdir().unwrap() }
    }

    fn atp_home(&self) -> PathBuf {
        self.home.path().join(".atp")
    }

    fn command(&self) -> Command {
        let mut c = self.terminal_command();
        c.stdin(Stdio::null());
        c
    }

    /// The command without redirections (for the pseudo-terminal tests).
    fn terminal_command(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_atp"));
        for var in ["ATP_SERVER", "ATP_PASSWORD", "ATP_ADMIN_TOKEN", "ATP_CA_CERT", "ATP_DOMAIN", "ATP_PORT"] {
            c.env_remove(var);
        }
        c.env("ATP_HOME", self.atp_home()).env("HOME", self.home.path());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        let out = assert_cmd::Command::from_std(self.command()).args(args).output().expect("run atp");
        eprintln!(
            "$ atp {}\n[exit {:?}]\n{}{}",
            args.join(" "),
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Runs and expects success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "atp {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs with `--output json` expected to succeed; returns the parsed stdout.
    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["--output", "json"]);
        let text = self.ok(&all);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
    }

    /// Runs expecting failure: a non-zero exit, nothing on stdout and exactly one `error: …` line
    /// on stderr (besides `warning:` lines). Returns that line.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(!out.status.success(), "atp {args:?} should fail");
        assert_eq!(out.status.code(), Some(1), "clean failure exit code for {args:?}");
        assert!(out.stdout.is_empty(), "stdout of a failure: {}", String::from_utf8_lossy(&out.stdout));
        let stderr = String::from_utf8(out.stderr).unwrap();
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.starts_with("warning:")).collect();
        assert_eq!(lines.len(), 1, "one error line for {args:?}, got {stderr:?}");
        assert!(lines[0].starts_with("error: "), "{stderr:?}");
        lines[0].to_owned()
    }

    /// Runs with `--output json` expecting failure: non-zero exit and a JSON error object on stdout.
    fn fails_json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["--output", "json"]);
        let out = self.run(&all);
        assert_eq!(out.status.code(), Some(1), "{args:?} should fail");
        let v: Value = serde_json::from_slice(&out.stdout).expect("a JSON error object on stdout");
        assert_eq!(v["status"], "error", "{v}");
        assert!(v["error"].is_string(), "{v}");
        v
    }
}

/// `--server 127.0.0.1:<port> --no-verify`, the README's form for local servers.
fn at(s: &Server) -> [String; 3] {
    ["--server".into(), s.addr(), "--no-verify".into()]
}

fn args<'a>(head: &[&'a str], server: &'a [String; 3], tail: &[&'a str]) -> Vec<&'a str> {
    let mut v = head.to_vec();
    v.extend(server.iter().map(String::as_str));
    v.extend_from_slice(tail);
    v
}

fn nonces(v: &Value) -> Vec<String> {
    v.as_array().unwrap().iter().map(|m| m["nonce"].as_str().unwrap().to_owned()).collect()
}

#[test]
fn quickstart_register_send_recv_status() {
    let s = Server::start("alpha.test");
    let u = User::new();
    let srv = at(&s);
    // register (short names completed with the server's domain)
    assert_eq!(
        u.ok(&args(&["agent", "register", "alice"], &srv, &["-p", "alicepw"])),
        "Agent registered: alice@alpha.test\n"
    );
    let v = u.json(&args(&["agent", "register", "Bob"], &srv, &["-p", "bobpw"]));
    assert_eq!(v, json!({"status": "registered", "agent_id": "bob@alpha.test"}));

    // send: the reference's JSON shape, the message's nonce and timestamp
    let sent = u.json(&args(
        &["send", "bob", "--from", "alice", "--password", "alicepw"],
        &srv,
        &["--body", "Hello Bob", "--subject", "hi"],
    ));
    assert_eq!(sent["status"], "accepted");
    let n1 = sent["nonce"].as_str().unwrap().to_owned();
    assert!(n1.starts_with("msg-"), "{sent}");
    assert!((sent["timestamp"].as_i64().unwrap() - common::now()).abs() < 60);
    assert_eq!(sent.as_object().unwrap().len(), 3);

    // recv: JSON array of the stored messages
    let got = u.json(&args(&["recv", "--agent-id", "bob", "-P", "bobpw"], &srv, &[]));
    assert_eq!(nonces(&got), [n1.as_str()]);
    let m = &got[0];
    assert_eq!(
        (m["from"].as_str(), m["to"].as_str(), m["type"].as_str()),
        (Some("alice@alpha.test"), Some("bob@alpha.test"), Some("message"))
    );
    assert_eq!(m["payload"], json!({"body": "Hello Bob", "subject": "hi"}));
    assert!(m.get("signature").is_none(), "local mail is not signed");

    // the cursor: only new messages, per agent and server
    assert_eq!(u.json(&args(&["recv", "--agent-id", "bob@alpha.test", "-P", "bobpw"], &srv, &[])), json!([]));
    assert_eq!(
        u.ok(&args(&["recv", "--agent-id", "bob", "-P", "bobpw"], &srv, &["--output", "text"])),
        "No messages.\n"
    );
    let cursors: Value =
        serde_json::from_str(&std::fs::read_to_string(u.atp_home().join("cursors.json")).unwrap()).unwrap();
    assert!(cursors[format!("https://{}", s.addr())]["bob@alpha.test"].as_i64().unwrap() > 0, "{cursors}");
    let text = u.ok(&args(
        &["send", "bob@alpha.test", "--from", "alice@alpha.test", "-P", "alicepw"],
        &srv,
        &["-b", "second", "--output", "text"],
    ));
    let n2 = text.trim().strip_prefix("Message sent. nonce=").unwrap_or_else(|| panic!("{text}")).to_owned();
    let line = u.ok(&args(&["recv", "--agent-id", "bob", "-P", "bobpw"], &srv, &["--output", "text"]));
    assert_eq!(line, format!("[{n2}] alice@alpha.test -> bob@alpha.test: {{\"body\":\"second\"}}\n"));
    // --all re-reads from the start (and --limit pages)
    assert_eq!(
        nonces(&u.json(&args(&["recv", "--agent-id", "bob", "-P", "bobpw", "--all"], &srv, &[]))),
        [n1.clone(), n2.clone()]
    );
    assert_eq!(
        nonces(&u.json(&args(&["recv", "--agent-id", "bob", "-P", "bobpw", "--all", "--limit", "1"], &srv, &[]))),
        [n1.as_str()]
    );
    assert_eq!(
        u.json(&args(&["recv", "--agent-id", "bob", "-P", "bobpw"], &srv, &[])),
        json!([]),
        "--all does not move the cursor back"
    );

    // payload file, cc, and config.toml's agent_id as the default --from / --agent-id
    let payload = u.home.path().join("payload.json");
    std::fs::write(&payload, r#"{"task": "sum", "args": [1, 2.5, 123456789012345678901234567890]}"#).unwrap();
    std::fs::create_dir_all(u.atp_home()).unwrap();
    std::fs::write(u.atp_home().join("config.toml"), "agent_id = \"alice\"\n").unwrap();
    let p = payload.to_str().unwrap();
    let sent =
        u.json(&args(&["send", "bob", "-P", "alicepw", "--payload", p, "--cc", "alice,carol@gamma.test"], &srv, &[]));
    std::fs::write(u.atp_home().join("config.toml"), "agent_id = \"bob@alpha.test\"\n").unwrap();
    let got = u.json(&args(&["recv", "-P", "bobpw"], &srv, &[]));
    assert_eq!(nonces(&got), [sent["nonce"].as_str().unwrap()]);
    assert_eq!(got[0]["payload"].to_string(), r#"{"task":"sum","args":[1,2.5,123456789012345678901234567890]}"#);
    assert_eq!(got[0]["cc"], json!(["alice@alpha.test", "carol@gamma.test"]));

    // status: public without a token, statistics with one
    let text = u.ok(&args(&["status"], &srv, &[]));
    assert!(text.starts_with("ATP Server: alpha.test\n"), "{text}");
    assert!(text.contains("Status:       healthy") && text.contains("Protocols:    atp/1"), "{text}");
    let v = u.json(&args(&["status"], &srv, &[]));
    assert_eq!(v["health"]["domain"], "alpha.test");
    assert_eq!(v["capabilities"]["max_payload_size"], 1048576);
    assert!(v.get("stats").is_none());
    let v = u.json(&args(&["status"], &srv, &["--admin-token", ADMIN]));
    assert_eq!(v["stats"]["domain"], "alpha.test");
    assert_eq!(v["stats"]["messages"]["delivered_local"], 3);
    let text = u.ok(&args(&["status"], &srv, &["--admin-token", ADMIN]));
    assert!(text.contains("Messages:\n  Received:       3\n  Delivered:      3"), "{text}");
    assert!(text.contains("Agents (2):\n  alice@alpha.test\n  bob@alpha.test"), "{text}");

    // agent list and inspect (admin)
    assert_eq!(
        u.ok(&args(&["agent", "list"], &srv, &["--admin-token", ADMIN])),
        "  alice@alpha.test\n  bob@alpha.test\n"
    );
    assert_eq!(
        u.json(&args(&["agent", "list"], &srv, &["--admin-token", ADMIN])),
        json!({"agents": ["alice@alpha.test", "bob@alpha.test"]})
    );
    let v = u.json(&args(&["inspect", &n1], &srv, &["--admin-token", ADMIN]));
    assert_eq!(
        (v["status"].as_str(), v["to"].as_str(), v["from"].as_str()),
        (Some("delivered"), Some("bob@alpha.test"), Some("alice@alpha.test"))
    );
    let text = u.ok(&args(&["inspect", &n1], &srv, &["--admin-token", ADMIN]));
    assert!(text.starts_with(&format!("Nonce:       {n1}\nFrom:        alice@alpha.test\nTo:          bob@alpha.test\nStatus:      delivered\nCreated:     ")), "{text}");
    assert!(text.trim_end().ends_with(" UTC"), "{text}");
}

#[test]
fn error_paths_fail_with_one_line() {
    let s = Server::start("alpha.test");
    let u = User::new();
    let srv = at(&s);
    u.ok(&args(&["agent", "register", "alice"], &srv, &["-p", "pw"]));
    u.ok(&args(&["agent", "register", "bob"], &srv, &["-p", "pw"]));

    // wrong password: non-zero exit (the reference exited 0), the server's error
    let e = u.fails(&args(&["send", "bob", "--from", "alice", "-P", "nope"], &srv, &["-b", "x", "--output", "text"]));
    assert_eq!(e, "error: Credential verification failed (HTTP 401, 535 5.7.8)");
    let v = u.fails_json(&args(&["send", "bob", "--from", "alice", "-P", "nope"], &srv, &["-b", "x"]));
    assert_eq!(
        v,
        json!({"status": "error", "error": "Credential verification failed", "error_code": "535 5.7.8", "http_status": 401})
    );
    // recv with a wrong password is an error, not "No messages." (docs/protocol.md §12 item 21)
    assert_eq!(u.fails_json(&args(&["recv", "--agent-id", "bob", "-P", "nope"], &srv, &[]))["http_status"], 401);
    let text = args(&["recv", "--agent-id", "bob", "-P", "nope"], &srv, &["--output", "text"]);
    assert!(u.fails(&text).contains("HTTP 401"));
    // unknown local recipient
    assert!(u
        .fails(&args(&["send", "ghost", "--from", "alice", "-P", "pw"], &srv, &["--output", "text"]))
        .contains("Unknown recipient"));
    // duplicate and reserved registrations, another domain
    let e = u.fails(&args(&["agent", "register", "alice"], &srv, &["-p", "pw"]));
    assert!(e.contains("already registered") && e.contains("HTTP 409"), "{e}");
    let v = u.fails_json(&args(&["agent", "register", "alice"], &srv, &["-p", "pw"]));
    assert_eq!(v["http_status"], 409);
    assert!(u.fails(&args(&["agent", "register", "postmaster"], &srv, &["-p", "pw"])).contains("reserved"));
    assert!(u
        .fails(&args(&["agent", "register", "dave@beta.test"], &srv, &["-p", "pw"]))
        .contains("Cannot register agent for domain 'beta.test'"));
    assert!(u.fails(&args(&["agent", "register", "bad name"], &srv, &["-p", "pw"])).contains("invalid agent id"));
    // a sender or reader of another domain: refused before anything is sent
    let e = u.fails(&args(&["send", "bob", "--from", "alice@beta.test", "-P", "pw"], &srv, &["--output", "text"]));
    assert_eq!(e, "error: --from alice@beta.test is not an agent of this server (alpha.test); use the server of alice@beta.test's domain");
    assert!(u
        .fails(&args(&["recv", "--agent-id", "bob@beta.test", "-P", "pw"], &srv, &["--output", "text"]))
        .contains("not an agent of this server"));
    // no password and stdin not a terminal
    assert!(u.fails(&args(&["agent", "register", "carol"], &srv, &[])).contains("--password"));
    assert!(u.fails(&args(&["send", "bob", "--from", "alice"], &srv, &["--output", "text"])).contains("--password"));
    // no sender and no config
    assert!(u
        .fails(&args(&["send", "bob", "-P", "pw"], &srv, &["--output", "text"]))
        .contains("pass --from or set agent_id"));
    assert!(u
        .fails(&args(&["recv", "-P", "pw"], &srv, &["--output", "text"]))
        .contains("pass --agent-id or set agent_id"));
    // a payload file that is not JSON
    let bad = u.home.path().join("bad.json");
    std::fs::write(&bad, "{").unwrap();
    assert!(u
        .fails(&args(
            &["send", "bob", "--from", "alice", "-P", "pw"],
            &srv,
            &["-p", bad.to_str().unwrap(), "--output", "text"]
        ))
        .contains("not JSON"));
    // admin routes
    assert!(u.fails(&args(&["agent", "list"], &srv, &["--admin-token", "wrong"])).contains("Invalid admin token"));
    assert!(u.fails(&args(&["status"], &srv, &["--admin-token", "wrong"])).contains("HTTP 403"));
    let e = u.fails(&args(&["inspect", "msg-nothing"], &srv, &["--admin-token", ADMIN]));
    assert_eq!(e, "error: Message msg-nothing not found (HTTP 404, 550 5.1.0)");

    // unknown server, bad --server forms (refused before any network access)
    let down = format!("127.0.0.1:{}", free_port());
    let e = u.fails(&["status", "--server", &down, "--no-verify"]);
    assert!(e.starts_with(&format!("error: cannot reach https://{down}: ")), "{e}");
    assert!(u.fails_json(&["status", "--server", &down])["error"].as_str().unwrap().contains("cannot reach"));
    for bad in ["::1", "ftp://x.test", "x.test:99999", "x.test/path", "user@x.test", "[::1"] {
        assert!(
            u.fails(&["status", "--server", bad]).starts_with(&format!("error: invalid --server {bad:?}")),
            "{bad}"
        );
    }
    // a missing required option is clap's usage error (exit 2)
    assert_eq!(u.run(&["send", "bob"]).status.code(), Some(2));
}

#[test]
fn tls_verification() {
    let s = Server::start("alpha.test");
    let u = User::new();
    // self-signed certificate, stdin not a terminal: one clear line naming --no-verify
    let e = u.fails(&["status", "--server", &s.addr()]);
    assert!(e.contains("is not trusted") && e.contains("--no-verify"), "{e}");
    assert!(u.fails(&["agent", "register", "alice", "--server", &s.addr(), "-p", "pw"]).contains("--no-verify"));
    // --ca-cert trusts the server's certificate: verified, no prompt, no flag
    let cert = s.home.path().join("certs/self-signed-alpha.test.crt");
    let cert = cert.to_str().unwrap();
    assert!(u.ok(&["status", "--server", &s.addr(), "--ca-cert", cert]).contains("healthy"));
    assert!(u
        .ok(&["status", "--server", &format!("https://localhost:{}", s.port), "--ca-cert", cert])
        .contains("healthy"));
    assert!(u.fails(&["status", "--server", &s.addr(), "--ca-cert", "/nonexistent.pem"]).contains("--ca-cert"));
    // http:// warns on stderr (and a TLS server does not speak it)
    let out = u.run(&["status", "--server", &format!("http://{}", s.addr())]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("warning: http://127.0.0.1:") && stderr.contains("unencrypted"), "{stderr}");
}

#[test]
fn plain_http_and_ipv6_servers() {
    let plain = Server::with(Options::new("alpha.test").arg("--no-tls"));
    let u = User::new();
    let out = u.run(&["agent", "register", "alice", "--server", &format!("http://{}", plain.addr()), "-p", "pw"]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "Agent registered: alice@alpha.test\n");
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("warning: "), "http:// warns");

    let v6 = Server::with(Options::new("beta.test").arg("--host").arg("::1"));
    let server = format!("[::1]:{}", v6.port);
    assert_eq!(
        u.ok(&["agent", "register", "bob", "--server", &server, "--no-verify", "-p", "pw"]),
        "Agent registered: bob@beta.test\n"
    );
    assert!(u
        .ok(&["status", "--server", &format!("https://{server}"), "--no-verify"])
        .contains("Address:      https://[::1]:"));
}

#[test]
fn cross_domain_send_is_queued() {
    // A DNS server that never answers: discovery of beta.test fails temporarily, so the message
    // stays in the queue (the delivery engine is tested elsewhere).
    let dead_dns = format!("127.0.0.1:{}", free_port());
    let s = Server::with(Options::new("alpha.test").arg("--dns-server").arg(&dead_dns).arg("--no-local-registry"));
    let u = User::new();
    let srv = at(&s);
    u.ok(&args(&["agent", "register", "alice"], &srv, &["-p", "pw"]));
    let sent = u.json(&args(&["send", "carol@beta.test", "--from", "alice", "-P", "pw"], &srv, &["-b", "hi"]));
    assert_eq!(sent["status"], "accepted");
    let v = u.json(&args(&["inspect", sent["nonce"].as_str().unwrap()], &srv, &["--admin-token", ADMIN]));
    assert_eq!((v["from"].as_str(), v["to"].as_str()), (Some("alice@alpha.test"), Some("carol@beta.test")));
    let status = v["status"].as_str().unwrap();
    assert!(["queued", "delivering", "failed"].contains(&status), "waiting for delivery, got {v}");
}

#[test]
fn recv_wait_and_follow() {
    let s = Server::start("alpha.test");
    let u = User::new();
    let srv = at(&s);
    u.ok(&args(&["agent", "register", "alice"], &srv, &["-p", "pw"]));
    u.ok(&args(&["agent", "register", "bob"], &srv, &["-p", "pw"]));
    let recv = args(&["recv", "--agent-id", "bob", "-P", "pw"], &srv, &[]);

    // --wait times out with an empty result and exit 0
    let started = Instant::now();
    let mut w = recv.clone();
    w.extend(["--wait", "2"]);
    assert_eq!(u.json(&w), json!([]));
    let took = started.elapsed();
    assert!(took >= Duration::from_secs(2) && took < Duration::from_secs(15), "{took:?}");

    // --wait returns as soon as a message arrives
    let started = Instant::now();
    let mut w = recv.clone();
    w.extend(["--wait", "30", "--output", "json"]);
    let child = u.command().args(&w).stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let sent = u.json(&args(&["send", "bob", "--from", "alice", "-P", "pw"], &srv, &["-b", "late"]));
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(nonces(&got), [sent["nonce"].as_str().unwrap()]);
    assert!(started.elapsed() < Duration::from_secs(15));

    // --follow prints each new message as it comes (text lines; JSON would be one object per line)
    let cursors = std::fs::read_to_string(u.atp_home().join("cursors.json")).unwrap();
    let before_follow = serde_json::from_str::<Value>(&cursors).unwrap()[format!("https://{}", s.addr())]
        ["bob@alpha.test"]
        .as_i64()
        .unwrap();
    let mut f = recv.clone();
    f.extend(["--follow", "--output", "text"]);
    let mut child = u.command().args(&f).stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut expected = Vec::new();
    for body in ["one", "two"] {
        let sent = u.json(&args(&["send", "bob", "--from", "alice", "-P", "pw"], &srv, &["-b", body]));
        expected.push(format!(
            "[{}] alice@alpha.test -> bob@alpha.test: {{\"body\":\"{body}\"}}",
            sent["nonce"].as_str().unwrap()
        ));
        let line = lines.next().unwrap().unwrap();
        assert_eq!(line, *expected.last().unwrap());
    }
    assert!(child.try_wait().unwrap().is_none(), "still following");
    // A line is printed before the cursor is saved (a message killed in between is shown again,
    // never lost): wait for the save of the second one before stopping the process.
    let cursor = || -> i64 {
        let text = std::fs::read_to_string(u.atp_home().join("cursors.json")).unwrap_or_default();
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        v[format!("https://{}", s.addr())]["bob@alpha.test"].as_i64().unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while cursor() < before_follow + 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    Command::new("kill").arg(child.id().to_string()).status().unwrap();
    child.wait().unwrap();
    // the cursor moved past what --follow printed
    assert_eq!(u.json(&recv), json!([]));
}

/// `recv --follow --ack` on the inbox stream (docs/protocol.md §6.5): the backlog, then live
/// messages, one JSON object per line; what was printed is acknowledged, so the server no longer
/// has it; a second follower resumes after the saved cursor.
#[test]
fn recv_follow_on_the_stream_with_ack() {
    let s = Server::start("alpha.test");
    let u = User::new();
    let srv = at(&s);
    u.ok(&args(&["agent", "register", "alice"], &srv, &["-p", "pw"]));
    u.ok(&args(&["agent", "register", "bob"], &srv, &["-p", "pw"]));
    let send = |body: &str| {
        u.json(&args(&["send", "bob", "--from", "alice", "-P", "pw"], &srv, &["-b", body]))["nonce"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let mut sent = vec![send("backlog 1"), send("backlog 2")];
    let f = args(&["recv", "--agent-id", "bob", "-P", "pw", "--follow", "--ack"], &srv, &[]);
    let mut child = u.command().args(&f).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut got = Vec::new();
    for i in 0..4 {
        if i == 2 {
            sent.push(send("live 1"));
            sent.push(send("live 2"));
        }
        let line = lines.next().unwrap().unwrap();
        let v: Value = serde_json::from_str(&line).unwrap();
        got.push(v["nonce"].as_str().unwrap().to_owned());
    }
    assert_eq!(got, sent, "each once, in order");
    // Acknowledged after printing: the inbox empties (the last ack follows the last line).
    let deadline = Instant::now() + Duration::from_secs(30);
    let all = args(&["recv", "--agent-id", "bob", "-P", "pw", "--all"], &srv, &[]);
    while u.json(&all) != json!([]) {
        assert!(Instant::now() < deadline, "still in the inbox: {}", u.json(&all));
        std::thread::sleep(Duration::from_millis(50));
    }
    Command::new("kill").arg(child.id().to_string()).status().unwrap();
    child.wait().unwrap();
    // A new message; a new follower prints only it.
    let last = send("after restart");
    let f = args(&["recv", "--agent-id", "bob", "-P", "pw", "--follow"], &srv, &[]);
    let mut child = u.command().args(&f).stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().unwrap();
    let line = BufReader::new(child.stdout.take().unwrap()).lines().next().unwrap().unwrap();
    assert_eq!(serde_json::from_str::<Value>(&line).unwrap()["nonce"], json!(last));
    Command::new("kill").arg(child.id().to_string()).status().unwrap();
    child.wait().unwrap();
    // recv --ack without --follow: prints, then acknowledges what it printed.
    let printed = u.json(&args(&["recv", "--agent-id", "bob", "-P", "pw", "--all", "--ack"], &srv, &[]));
    assert_eq!(nonces(&printed), [last.as_str()]);
    assert_eq!(u.json(&all), json!([]), "acknowledged: gone from the server");
}

#[test]
fn keys_generate_show_list_rotate() {
    let u = User::new();
    assert_eq!(u.ok(&["keys", "list"]), "No keys found.\n");
    assert!(u.fails(&["keys", "show"]).contains("no key with selector \"default\""));
    let out = u.ok(&["keys", "generate"]);
    let keys = u.atp_home().join("keys");
    assert_eq!(
        out,
        format!(
            "Key pair generated:\n  Selector:    default\n  Private key: {}\n  Public key:  {}\n",
            keys.join("default.key").display(),
            keys.join("default.pub").display()
        )
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(keys.join("default.key")).unwrap().permissions().mode() & 0o777, 0o600);
    }
    // no silent overwrite
    let before = std::fs::read(keys.join("default.key")).unwrap();
    assert!(u.fails(&["keys", "generate"]).contains("--force"));
    assert_eq!(std::fs::read(keys.join("default.key")).unwrap(), before);
    let shown = u.json(&["keys", "show"]);
    u.ok(&["keys", "generate", "--force"]);
    assert_ne!(std::fs::read(keys.join("default.key")).unwrap(), before);
    let default = u.json(&["keys", "show", "--public"]);
    assert_ne!(default["public_key"], shown["public_key"]);
    assert!(default.get("private_key_path").is_none());
    assert_eq!(default["public_key"].as_str().unwrap().len(), 44);
    let text = u.ok(&["keys", "show", "--public"]);
    assert_eq!(text, format!("Selector: default\nPublic key (base64): {}\n", default["public_key"].as_str().unwrap()));
    assert!(u.ok(&["keys", "show"]).contains("Private key path: "));

    // rotate keeps the old key
    let out = u.ok(&["keys", "rotate", "--new-selector", "k2"]);
    assert!(out.starts_with("New key pair generated: k2\nOld key 'default' preserved.\n"), "{out}");
    assert!(u.fails(&["keys", "rotate", "--new-selector", "k2"]).contains("already exists"));
    assert!(u.fails(&["keys", "rotate", "--old-selector", "nope", "--new-selector", "k3"]).contains("nope"));
    assert!(u.fails(&["keys", "generate", "--selector", "a.b"]).contains("not a DNS label"));
    let list = u.json(&["keys", "list"]);
    let sels: Vec<&str> = list["keys"].as_array().unwrap().iter().map(|k| k["selector"].as_str().unwrap()).collect();
    assert_eq!(sels, ["default", "k2"]);
    assert_eq!(list["keys"][0]["public_key"], default["public_key"]);
    let text = u.ok(&["keys", "list"]);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines.len() == 2 && lines[0].starts_with("  default: created ") && lines[1].starts_with("  k2: created "),
        "{text}"
    );
    let ring: Value = serde_json::from_str(&std::fs::read_to_string(keys.join("keyring.json")).unwrap()).unwrap();
    assert_eq!(ring["keys"]["k2"]["private_key"], "k2.key");

    // dns generate: SVCB, address, ATS and one ATK line per live selector
    let out = u.ok(&["dns", "generate", "--domain", "Alpha.Test.", "--ip", "192.0.2.7", "--port", "17443"]);
    let k2 = list["keys"][1]["public_key"].as_str().unwrap();
    let d = default["public_key"].as_str().unwrap();
    assert_eq!(
        out,
        format!(
            "; ATP records for alpha.test: add them at your DNS provider\n\
             _atp.alpha.test. 3600 IN SVCB 1 atp.alpha.test. alpn=\"atp/1\" port=17443\n\
             atp.alpha.test. 3600 IN A 192.0.2.7\n\
             ats._atp.alpha.test. 3600 IN TXT \"v=atp1 allow=ip:192.0.2.7 deny=all\"\n\
             default.atk._atp.alpha.test. 3600 IN TXT \"v=atp1 k=ed25519 p={d}\"\n\
             k2.atk._atp.alpha.test. 3600 IN TXT \"v=atp1 k=ed25519 p={k2}\"\n"
        )
    );
    let v = u.json(&["dns", "generate", "--domain", "alpha.test", "--ip", "2001:db8::7"]);
    let types: Vec<&str> = v["records"].as_array().unwrap().iter().map(|r| r["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["SVCB", "AAAA", "TXT", "TXT", "TXT"]);
    assert_eq!(v["records"][4]["name"], "k2.atk._atp.alpha.test.");
    assert!(u.fails(&["dns", "generate", "--domain=-bad", "--ip", "192.0.2.7"]).contains("not a valid domain"));
    assert_eq!(u.run(&["dns", "generate", "--domain", "a.test", "--ip", "not-an-ip"]).status.code(), Some(2));

    // a fresh home: dns generate creates the signing key, as the reference does
    let fresh = User::new();
    let out = fresh.run(&["dns", "generate", "--domain", "a.test", "--ip", "192.0.2.1"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("generated one"));
    assert!(String::from_utf8_lossy(&out.stdout).contains("default.atk._atp.a.test. 3600 IN TXT"));
    assert!(fresh.atp_home().join("keys/default.key").is_file());
}

#[test]
fn help_for_every_command() {
    let u = User::new();
    let network =
        [vec!["agent", "register"], vec!["agent", "list"], vec!["send"], vec!["recv"], vec!["status"], vec!["inspect"]];
    for cmd in &network {
        let mut a = cmd.clone();
        a.push("--help");
        let text = u.ok(&a);
        for opt in ["--server", "--no-verify", "--home", "--output"] {
            assert!(text.contains(opt), "{cmd:?} --help lacks {opt}:\n{text}");
        }
    }
    for cmd in [
        vec!["keys", "generate"],
        vec!["keys", "show"],
        vec!["keys", "list"],
        vec!["keys", "rotate"],
        vec!["dns", "generate"],
        vec!["dns", "check"],
    ] {
        let mut a = cmd.clone();
        a.push("--help");
        let text = u.ok(&a);
        assert!(text.contains("--home") && text.contains("--output"), "{cmd:?}:\n{text}");
    }
    let top = u.ok(&["--help"]);
    for cmd in ["server", "agent", "send", "recv", "keys", "status", "inspect", "dns"] {
        assert!(top.contains(&format!("  {cmd} ")), "{cmd} missing from:\n{top}");
    }
    assert!(u.ok(&["dns", "check", "--help"]).contains("--dns-server"));
    assert!(u.ok(&["recv", "--help"]).contains("--wait") && u.ok(&["recv", "--help"]).contains("--follow"));
}

// ---- interactive prompts, through a pseudo-terminal -------------------------------------------

fn pty(u: &User, args: &[&str]) -> expectrl::Session {
    let mut cmd = u.terminal_command();
    cmd.args(args);
    let mut p = expectrl::Session::spawn(cmd).expect("spawn atp on a pty");
    p.set_expect_timeout(Some(Duration::from_secs(30)));
    p
}

/// Waits for the end of output and the exit status (as `Exited(pid, code)` text).
fn finish(mut p: expectrl::Session) -> (String, String) {
    let rest = p.expect(expectrl::Eof).map(|c| String::from_utf8_lossy(c.before()).into_owned()).unwrap_or_default();
    let status = format!("{:?}", p.get_process().wait().unwrap());
    (rest, status)
}

#[test]
fn password_prompt_on_a_terminal() {
    let s = Server::start("alpha.test");
    let u = User::new();
    let addr = s.addr();
    let mut p = pty(&u, &["agent", "register", "carol", "--server", &addr, "--no-verify"]);
    p.expect("Password: ").unwrap();
    p.send_line("s3cret-pw").unwrap();
    let between = p.expect("Repeat for confirmation: ").unwrap();
    assert!(!String::from_utf8_lossy(between.before()).contains("s3cret-pw"), "the password is not echoed");
    p.send_line("s3cret-pw").unwrap();
    p.expect("Agent registered: carol@alpha.test").unwrap();
    let (rest, status) = finish(p);
    assert!(status.ends_with(", 0)"), "{status}");
    assert!(!rest.contains("s3cret-pw"));
    // the typed password is the one registered
    u.ok(&["agent", "register", "dave", "--server", &addr, "--no-verify", "-p", "x"]);
    u.ok(&["send", "dave", "--from", "carol", "-P", "s3cret-pw", "--server", &addr, "--no-verify"]);

    // two different answers
    let mut p = pty(&u, &["agent", "register", "erin", "--server", &addr, "--no-verify"]);
    p.expect("Password: ").unwrap();
    p.send_line("one").unwrap();
    p.expect("Repeat for confirmation: ").unwrap();
    p.send_line("two").unwrap();
    p.expect("error: the two passwords differ").unwrap();
    let (_, status) = finish(p);
    assert!(status.ends_with(", 1)"), "{status}");

    // send asks once for the sender's password
    let mut p = pty(&u, &["send", "dave", "--from", "carol", "--server", &addr, "--no-verify", "--output", "text"]);
    p.expect("Password for carol@alpha.test: ").unwrap();
    p.send_line("s3cret-pw").unwrap();
    p.expect("Message sent. nonce=msg-").unwrap();
    let (_, status) = finish(p);
    assert!(status.ends_with(", 0)"), "{status}");
}

#[test]
fn untrusted_certificate_prompt_on_a_terminal() {
    let s = Server::start("alpha.test");
    let u = User::new();
    let addr = s.addr();
    let mut p = pty(&u, &["agent", "register", "carol", "--server", &addr, "-p", "pw"]);
    p.expect("is not trusted (invalid peer certificate: UnknownIssuer).").unwrap();
    p.expect("Continue without verification? [y/N] ").unwrap();
    p.send_line("y").unwrap();
    p.expect("Agent registered: carol@alpha.test").unwrap();
    let (_, status) = finish(p);
    assert!(status.ends_with(", 0)"), "{status}");

    let mut p = pty(&u, &["status", "--server", &addr]);
    p.expect("Continue without verification? [y/N] ").unwrap();
    p.send_line("").unwrap();
    p.expect("error: aborted: the TLS certificate of https://").unwrap();
    let (_, status) = finish(p);
    assert!(status.ends_with(", 1)"), "{status}");
}

// ---- dns check against BIND --------------------------------------------------------------------

use common::bind::Bind;

#[test]
fn dns_check_reads_back_what_dns_generate_prints() {
    let u = User::new();
    u.ok(&["keys", "generate"]);
    u.ok(&["keys", "rotate", "--new-selector", "next"]);
    let records = u.ok(&["dns", "generate", "--domain", "alpha.test", "--ip", "192.0.2.7"]);
    let soa = "$TTL 300\n@ IN SOA ns1.test. hostmaster.test. ( 1 3600 600 86400 60 )\n@ IN NS ns1.test.\nns1 IN A 127.0.0.1\n";
    let bind = Bind::start(&format!("{soa}{records}"));
    let dns = format!("127.0.0.1:{}", bind.port);

    let text = u.ok(&["dns", "check", "--domain", "alpha.test", "--dns-server", &dns]);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "Checking DNS records for alpha.test:");
    let rows: Vec<(&str, &str, &str)> = lines[1..]
        .iter()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[0], f[1], f[2])
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("SVCB", "_atp.alpha.test", "OK"),
            ("ADDR", "atp.alpha.test", "OK"),
            ("ATS", "ats._atp.alpha.test", "OK"),
            ("ATK", "default.atk._atp.alpha.test", "OK"),
            ("ATK", "next.atk._atp.alpha.test", "OK"),
        ],
        "{text}"
    );
    assert!(text.contains("atp.alpha.test:7443") && text.contains("matches the local key"), "{text}");
    let v = u.json(&["dns", "check", "--domain", "alpha.test", "--dns-server", &dns]);
    assert_eq!(v["ok"], true);
    assert_eq!(v["checks"].as_array().unwrap().len(), 5);

    // another home whose key was never published, and a domain with nothing: exit 1
    let other = User::new();
    other.ok(&["keys", "generate", "--selector", "next"]);
    let out = other.run(&[
        "dns",
        "check",
        "--domain",
        "alpha.test",
        "--dns-server",
        &dns,
        "--selector",
        "next",
        "--selector",
        "gone",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("next.atk._atp.alpha.test")
            && text.contains("INVALID")
            && text.contains("but the local key 'next'"),
        "{text}"
    );
    assert!(text.contains("gone.atk._atp.alpha.test") && text.contains("MISSING"), "{text}");
    assert_eq!(String::from_utf8_lossy(&out.stderr).trim(), "error: 2 of 5 DNS records are missing or wrong");
    let out = u.run(&["dns", "check", "--domain", "beta.test", "--dns-server", &dns, "--output", "json"]);
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], false);
    let statuses: Vec<&str> = v["checks"].as_array().unwrap().iter().map(|c| c["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["missing", "missing", "missing", "missing"]);
    assert!(out.stderr.is_empty(), "JSON mode reports on stdout only");
}

#[test]
fn keys_are_read_by_the_reference_cli() {
    // The same ~/.atp layout (docs/design.md §2): the reference's `atp keys show` reads our key.
    let venv = std::env::var_os("ATP_REF_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/atp-ref-venv"));
    let reference = venv.join("bin/atp");
    assert!(
        reference.is_file(),
        "the reference CLI is not installed at {}: run scripts/install-reference.sh",
        reference.display()
    );
    let u = User::new();
    let ours = u.json(&["keys", "generate", "--selector", "sel1"]);
    let out = Command::new(reference)
        .args(["keys", "show", "--selector", "sel1", "--public"])
        .env("HOME", u.home.path())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(text, format!("Selector: sel1\nPublic key (base64): {}\n", ours["public_key"].as_str().unwrap()));
    let out = Command::new(venv.join("bin/atp")).args(["keys", "list"]).env("HOME", u.home.path()).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("  sel1: created "));
}
