//! The seed README's "Try It: Two Servers Talking", run verbatim: two servers of different domains
//! started by the same user with nothing but `--domain` and `--port` (so they share `~/.atp`), two
//! agents registered, a message sent from `agent@alice.local` to `agent@bob.local` and received,
//! "no DNS needed". It works through the local registry (each server publishes its loopback
//! endpoint, ATS and ATK in `~/.atp/registry/`) and per-domain state in the shared home.
//!
//! The commands use the README's fixed ports 7443 and 7444; `HOME` is a temporary directory.

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
