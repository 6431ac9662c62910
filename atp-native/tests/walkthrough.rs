//! The seed README's walkthroughs, run verbatim with `HOME` a fresh temporary directory (and
//! `ATP_HOME` unset):
//!
//! * "Try It: Two Servers Talking": two servers of different domains started by the same user with
//!   nothing but `--domain` and `--port` (so they share `~/.atp`), two agents registered, a message
//!   sent from `agent@alice.local` to `agent@bob.local` and received, "no DNS needed". It works
//!   through the local registry (each server publishes its loopback endpoint, ATS and ATK in
//!   `~/.atp/registry/`) and per-domain state in the shared home. Fixed ports 7443 and 7444.
//! * The quick start: a server for `example.com`, then `--server example.com` with no
//!   `--no-verify` on a machine whose DNS does not know that server: the command line finds it in
//!   the local registry and pins the certificate the server published there. A free port replaces
//!   7443 (the registry tells the client which).

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn atp(home: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_atp"));
    c.env("HOME", home).env_remove("ATP_HOME").stdin(Stdio::null());
    for v in ["ATP_DOMAIN", "ATP_PORT", "ATP_SERVER", "ATP_PASSWORD", "ATP_ADMIN_TOKEN"] {
        c.env_remove(v);
    }
    c
}

/// Runs `atp ARGS` and echoes what it printed (shown when a test fails).
fn run(home: &Path, args: &[&str]) -> Output {
    let out = atp(home).args(args).output().expect("run atp");
    eprintln!(
        "$ atp {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn start(home: &Path, domain: &str, port: &str, log: &str) -> Killed {
    let log = std::fs::File::create(home.join(log)).unwrap();
    let child = atp(home)
        .args(["server", "start", "--domain", domain, "--port", port])
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start atp");
    Killed(child)
}

fn wait_for(home: &Path, log: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let text = std::fs::read_to_string(home.join(log)).unwrap_or_default();
        if text.contains(what) {
            return;
        }
        assert!(!text.contains("cannot listen"), "{log}:\n{text}");
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{log} never said {what:?}:\n{}", std::fs::read_to_string(home.join(log)).unwrap_or_default());
}

#[test]
fn two_servers_talking_verbatim() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    // Terminal 1 and Terminal 2
    let _a = start(h, "alice.local", "7443", "alice.log");
    let _b = start(h, "bob.local", "7444", "bob.log");
    wait_for(h, "alice.log", "Starting ATP Server");
    wait_for(h, "bob.log", "Starting ATP Server");

    // Register agents
    let out = run(h, &["agent", "register", "agent", "--server", "127.0.0.1:7443", "--no-verify", "-p", "alice_pass"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("agent@alice.local"));
    let out = run(h, &["agent", "register", "agent", "--server", "127.0.0.1:7444", "--no-verify", "-p", "bob_pass"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("agent@bob.local"));

    // Terminal 3: Alice sends to Bob
    let out = run(
        h,
        &[
            "send",
            "agent@bob.local",
            "--from",
            "agent",
            "--password",
            "alice_pass",
            "--server",
            "127.0.0.1:7443",
            "--no-verify",
            "--body",
            "Hello Bob!",
        ],
    );
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("accepted"));

    // Terminal 4: Bob receives (delivery is asynchronous: ask again until it is there)
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = run(
            h,
            &["recv", "--agent-id", "agent", "--password", "bob_pass", "--server", "127.0.0.1:7444", "--no-verify"],
        );
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        if text.contains("Hello Bob!") {
            assert!(text.contains("agent@alice.local"), "{text}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the message never reached bob; alice's log:\n{}",
            std::fs::read_to_string(h.join("alice.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // both servers kept their own state in the one home
    assert!(h.join(".atp/data/alice.local.db").is_file() && h.join(".atp/data/bob.local.db").is_file());
    assert!(h.join(".atp/registry/alice.local.json").is_file() && h.join(".atp/registry/bob.local.json").is_file());
}

/// The README's quick start, verbatim but for the port.
#[test]
fn quick_start_verbatim() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port().to_string();
    let _server = start(h, "example.com", &port, "server.log");
    wait_for(h, "server.log", "Starting ATP Server");

    let out = run(h, &["agent", "register", "mybot", "--server", "example.com", "-p", "mypassword"]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "Agent registered: mybot@example.com\n");
    assert!(out.stderr.is_empty(), "no prompt, no warning");

    let send = [
        "send",
        "agent@remote.org",
        "--from",
        "mybot",
        "--password",
        "mypassword",
        "--server",
        "example.com",
        "--body",
        "Hello!",
    ];
    let out = run(h, &send);
    assert!(out.status.success());
    let sent: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(sent["status"], "accepted", "{sent}");
    assert!(sent["nonce"].as_str().unwrap().starts_with("msg-"), "{sent}");

    let out = run(h, &["status", "--server", "example.com"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("ATP Server: example.com\n"), "{text}");
    assert!(text.contains("Status:       healthy"), "{text}");
    assert!(
        text.contains(&format!("Address:      https://127.0.0.1:{port} (example.com, from the local registry)")),
        "{text}"
    );

    // The message waits in the queue for remote.org (the server's DNS does not know it either).
    let entry = h.join(".atp/registry/example.com.json");
    let published: serde_json::Value = serde_json::from_slice(&std::fs::read(&entry).unwrap()).unwrap();
    assert_eq!(published["cert_sha256"].as_str().map(str::len), Some(64), "{published}");

    // The pin is what makes it trusted: another fingerprint is refused, --no-verify still works.
    let mut wrong = published.clone();
    wrong["cert_sha256"] = "00".repeat(32).into();
    std::fs::write(&entry, wrong.to_string()).unwrap();
    let out = run(h, &["status", "--server", "example.com"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("error: the TLS certificate of example.com (https://127.0.0.1:")
            && stderr.contains("not the pinned certificate")
            && stderr.contains("--no-verify"),
        "{stderr}"
    );
    assert!(run(h, &["status", "--server", "example.com", "--no-verify"]).status.success());
}
