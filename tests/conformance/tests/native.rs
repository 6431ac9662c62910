//! The whole kit against a real atp-native server: `atp server start` (built by cargo) on a free
//! loopback port with TLS, resolving the kit's foreign domains from a `dns_override.toml`
//! (`local_mode = true`, docs/protocol.md §8.9); the `atp-conformance` binary runs every case and every
//! case must pass.
//!
//! The `atp` binary: `ATP_BIN` if set, else `cargo build -p atp-native --bin atp` into this test's
//! own target directory and profile.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use atp_conformance::foreign::Foreign;

const DOMAIN: &str = "beta.test";
const ADMIN: &str = "conformance-admin";

/// `<target>/<profile>` of this test executable (`<target>/<profile>/deps/native-…`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent().and_then(Path::parent).expect("target/<profile>/deps").to_owned()
}

fn atp_bin() -> PathBuf {
    if let Some(b) = std::env::var_os("ATP_BIN") {
        return PathBuf::from(b);
    }
    let profile_dir = profile_dir();
    let target = profile_dir.parent().expect("target dir");
    let profile = profile_dir.file_name().and_then(|p| p.to_str()).unwrap_or("debug");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    // Without the variables cargo sets for this test (CARGO_PKG_*, CARGO_MANIFEST_DIR, …): build
    // scripts that watch them would otherwise rebuild, and the next `cargo test` again.
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if (k.starts_with("CARGO_") && k != "CARGO_HOME") || k.starts_with("__CARGO") {
            cmd.env_remove(k.as_ref());
        }
    }
    cmd.args(["build", "--quiet", "-p", "atp-native", "--bin", "atp", "--target-dir"])
        .arg(target)
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    match profile {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    let status = cmd.status().expect("run cargo build -p atp-native");
    assert!(status.success(), "cargo build -p atp-native failed");
    profile_dir.join(format!("atp{}", std::env::consts::EXE_SUFFIX))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The server process, killed by its PID on drop.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `atp server start` for [`DOMAIN`] on `home` and `port` with `extra` arguments, its output
/// in `<home>/<log>`, and waits until it serves.
fn start(bin: &Path, home: &Path, port: u16, extra: &[&str], log: &str) -> (Server, PathBuf) {
    let log_path = home.join(log);
    let file = std::fs::File::create(&log_path).unwrap();
    let child = Command::new(bin)
        .args(["server", "start", "--home"])
        .arg(home)
        .args(["--host", "127.0.0.1", "--domain", DOMAIN, "--port", &port.to_string()])
        .args(["--admin-token", ADMIN, "--no-local-registry"])
        .args(extra)
        .env_remove("ATP_HOME")
        .env_remove("ATP_REGISTRATION")
        .env_remove("ATP_DATABASE")
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
    let mut server = Server(child);
    let read_log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !read_log().contains("Starting ATP Server") {
        if let Ok(Some(status)) = server.0.try_wait() {
            panic!("atp exited ({status}):\n{}", read_log());
        }
        assert!(Instant::now() < deadline, "atp did not start:\n{}", read_log());
        std::thread::sleep(Duration::from_millis(20));
    }
    (server, log_path)
}

/// A home whose config resolves the kit's foreign domains.
fn kit_home() -> tempfile::TempDir {
    let home = tempfile::tempdir().unwrap();
    let overrides = home.path().join("dns_override.toml");
    std::fs::write(&overrides, Foreign::default().dns_override_toml()).unwrap();
    std::fs::write(
        home.path().join("config.toml"),
        format!("local_mode = true\ndns_override_file = \"{}\"\n", overrides.display()),
    )
    .unwrap();
    home
}

/// Runs the whole kit against the server on `port`; every case must pass.
fn run_kit(port: u16, server_log: &Path) {
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_atp-conformance"))
        .args(["run", "--url", &format!("https://127.0.0.1:{port}"), "--domain", DOMAIN])
        .args(["--admin-token", ADMIN, "--target", "atp"])
        .output()
        .expect("run atp-conformance");
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}{stderr}\n(kit run took {:.1} s)", took.as_secs_f64());
    assert!(
        out.status.success(),
        "the kit failed against atp-native:\n{stdout}\n{stderr}\nserver log:\n{}",
        std::fs::read_to_string(server_log).unwrap_or_default()
    );
    let summary = stdout.lines().find(|l| l.contains(" cases: ")).expect("a summary line");
    let total: usize = summary.split(' ').next().and_then(|n| n.parse().ok()).expect("case count");
    assert_eq!(
        summary
            .split(": ")
            .nth(1)
            .map(|s| s.starts_with(&format!("{total} passed, 0 failed, 0 xfail, 0 xpass, 0 n/a"))),
        Some(true),
        "every case must pass: {summary}"
    );
    assert!(total >= 80, "{summary}");
}

#[test]
fn the_whole_kit_passes_against_atp_native() {
    let bin = atp_bin();
    let home = kit_home();
    let port = free_port();
    let (server, log) = start(&bin, home.path(), port, &[], "server.log");
    run_kit(port, &log);
    drop(server);
}

#[path = "../../../atp-native/tests/common/postgres.rs"]
mod postgres;

/// Two nodes serving one domain from one PostgreSQL database (docs/design.md §5d), sharing the home
/// (its domain key and certificate): the whole kit passes against each of them, one after the
/// other, on the same database.
#[test]
fn the_whole_kit_passes_against_each_node_of_a_postgres_pair() {
    let bin = atp_bin();
    let pg = postgres::Postgres::start();
    let url = pg.create_db("atp");
    let home = kit_home();
    let (port_a, port_b) = (free_port(), free_port());
    let (a, log_a) = start(&bin, home.path(), port_a, &["--database", &url], "node-a.log");
    let (b, log_b) = start(&bin, home.path(), port_b, &["--database", &url], "node-b.log");
    println!("== node a");
    run_kit(port_a, &log_a);
    println!("== node b");
    run_kit(port_b, &log_b);
    drop((a, b));
}
