//! Storage and logging failures (issue 9): a server whose stderr is a full disk (`/dev/full`) keeps
//! serving — its log lines are lost, its requests are not — and a server whose data directory is
//! not writable refuses to start with an error naming the problem instead of a panic.
//! (Full and read-only data directories under load are the reliability suite's `storage`
//! scenario, `tests/reliability`, which needs root to mount a small tmpfs.)

mod common;

use std::process::Stdio;

use common::*;
use serde_json::json;

/// `--log-level debug` with stdout and stderr on `/dev/full`: every log write fails with ENOSPC.
#[tokio::test]
async fn serves_with_stderr_on_a_full_disk() {
    let home = tempfile::tempdir().unwrap();
    let port = free_port();
    let o = Options::new("full.test").arg("--log-level").arg("debug");
    let full = || std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
    let mut child = Reaped(Server::command(&o, home.path(), port).stdout(full()).stderr(full()).spawn().unwrap());
    let c = client();
    let health = format!("https://127.0.0.1:{port}/.well-known/atp/v1/health");
    let up = eventually(60, || {
        let req = c.get(&health);
        async move { req.send().await.ok().filter(|r| r.status() == 200) }
    })
    .await;
    assert!(up.is_some(), "no health answer; exit status {:?}", child.0.try_wait());
    let url = |p: &str| format!("https://127.0.0.1:{port}/.well-known/atp/v1/{p}");
    for n in 0..20 {
        let (st, v) = call(c.post(url("register")).json(&json!({"agent_id": format!("a{n}"), "password": "pw"}))).await;
        assert_eq!(st, 201, "{v}");
        let msg = json!({"from": format!("a{n}@full.test"), "to": "a0@full.test", "timestamp": now(),
                         "nonce": format!("n{n}"), "type": "message", "payload": {"body": "hi"}});
        let (st, v) = call(c.post(url("message")).basic_auth(format!("a{n}@full.test"), Some("pw")).json(&msg)).await;
        assert_eq!(st, 202, "{v}");
        // A refusal is logged too.
        let (st, _) =
            call(c.post(url("message")).basic_auth(format!("a{n}@full.test"), Some("wrong")).json(&msg)).await;
        assert_eq!(st, 401);
    }
    let (st, v) = call(c.get(url("messages?agent_id=a0@full.test")).basic_auth("a0@full.test", Some("pw"))).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["messages"].as_array().map(Vec::len), Some(20), "{v}");
    assert!(child.0.try_wait().unwrap().is_none(), "the server exited");
}

/// A child process killed when the test ends, passed or not.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A home whose data directory is a file (as root, permissions cannot make it unwritable): the
/// server exits with one line naming the path and the problem, no panic, no backtrace.
#[test]
fn unwritable_data_dir_is_a_clear_start_error() {
    let home = tempfile::tempdir().unwrap();
    std::fs::write(home.path().join("data"), "not a directory").unwrap();
    let o = Options::new("ro.test");
    let out =
        Server::command(&o, home.path(), free_port()).stdout(Stdio::piped()).stderr(Stdio::piped()).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "should have failed: {err}");
    assert!(err.starts_with("Error: "), "{err}");
    assert!(err.contains("data"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
