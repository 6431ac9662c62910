//! Shared helpers of the integration suites: start the real `atp` binary on a free loopback port in
//! its own temporary home, wait until it serves, and kill it by its process id when the guard drops.
#![allow(dead_code)]

pub mod bind;
pub mod postgres;
pub mod proxy;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use atp_wasm::keys::DomainKey;
use atp_wasm::message::Message;
use atp_wasm::sign::sign_message;
use serde_json::Value;

pub const ADMIN: &str = "admin-token";

pub fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// How to start a server.
pub struct Options {
    pub domain: String,
    pub args: Vec<String>,
    pub config_toml: Option<String>,
    pub env: Vec<(String, String)>,
    pub tls: bool,
    /// Pass `--domain` and `--port` on the command line (else config.toml / env must).
    pub flags: bool,
}

impl Options {
    pub fn new(domain: &str) -> Self {
        Options {
            domain: domain.into(),
            args: vec!["--admin-token".into(), ADMIN.into()],
            config_toml: None,
            env: Vec::new(),
            tls: true,
            flags: true,
        }
    }
    pub fn arg(mut self, a: &str) -> Self {
        self.args.push(a.into());
        self
    }
    pub fn config(mut self, toml: &str) -> Self {
        self.config_toml = Some(toml.into());
        self
    }
}

/// A running `atp server start`, killed by PID on drop.
pub struct Server {
    pub child: Child,
    pub port: u16,
    pub home: tempfile::TempDir,
    pub domain: String,
    pub scheme: &'static str,
}

impl Server {
    pub fn start(domain: &str) -> Server {
        Self::with(Options::new(domain))
    }

    pub fn with(o: Options) -> Server {
        let home = tempfile::tempdir().expect("temp home");
        Self::start_in(o, home, free_port())
    }

    /// Starts in an existing home (restarts).
    pub fn start_in(o: Options, home: tempfile::TempDir, port: u16) -> Server {
        let _ = std::fs::rename(home.path().join("server.log"), home.path().join("server.previous.log"));
        if let Some(cfg) = &o.config_toml {
            std::fs::write(home.path().join("config.toml"), cfg).unwrap();
        }
        let mut cmd = Self::command(&o, home.path(), port);
        let child = cmd.spawn().expect("start the atp binary");
        let mut s =
            Server { child, port, home, domain: o.domain.clone(), scheme: if o.tls { "https" } else { "http" } };
        s.wait_started();
        s
    }

    pub fn command(o: &Options, home: &Path, port: u16) -> Command {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(home.join("server.log")).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_atp"));
        cmd.args(["server", "start", "--home"]).arg(home);
        if !o.args.iter().any(|a| a == "--host") {
            cmd.args(["--host", "127.0.0.1"]);
        }
        if o.flags {
            cmd.args(["--domain", &o.domain, "--port", &port.to_string()]);
        }
        if !o.tls {
            cmd.arg("--no-tls");
        }
        cmd.args(&o.args)
            .env_remove("ATP_HOME")
            .env_remove("ATP_DOMAIN")
            .env_remove("ATP_PORT")
            .env_remove("ATP_ADMIN_TOKEN")
            .env_remove("ATP_REGISTRATION")
            .envs(o.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        cmd
    }

    /// Waits for the "Starting ATP Server" line (printed once the listener is bound), failing with
    /// the server's log if the process exits first.
    fn wait_started(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut exited = None;
        while Instant::now() < deadline {
            if self.log().contains("Starting ATP Server") {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                exited = Some(status);
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("atp did not start (exit: {exited:?}); its log:\n{}", self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.home.path().join("server.log")).unwrap_or_default()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}://127.0.0.1:{}/.well-known/atp/v1/{path}", self.scheme, self.port)
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn home_path(&self) -> PathBuf {
        self.home.path().to_owned()
    }

    /// Sends SIGTERM and waits (at most `timeout`) for the process to exit.
    pub fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().expect("kill -TERM");
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Stops the server (SIGKILL) and hands back its home for a restart.
    pub fn stop(mut self) -> tempfile::TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let home = std::mem::replace(&mut self.home, tempfile::tempdir().unwrap());
        drop(self);
        home
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client that accepts the self-signed certificate.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder().danger_accept_invalid_certs(true).timeout(Duration::from_secs(30)).build().unwrap()
}

/// Sends a request; returns the status and the JSON body (panics on a non-JSON body).
pub async fn call(req: reqwest::RequestBuilder) -> (u16, Value) {
    let r = req.send().await.expect("request");
    let status = r.status().as_u16();
    let ctype = r.headers().get("content-type").map(|v| v.to_str().unwrap_or("").to_owned()).unwrap_or_default();
    let text = r.text().await.unwrap();
    let v = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text:?}"));
    assert!(ctype.starts_with("application/json"), "content-type {ctype:?} for {text}");
    (status, v)
}

/// Status and `error_code` of a refusal (asserting the error shape).
pub async fn refusal(req: reqwest::RequestBuilder) -> (u16, String) {
    let (status, v) = call(req).await;
    assert!(v["error"].is_string(), "no 'error' in {v}");
    (status, v["error_code"].as_str().unwrap_or_else(|| panic!("no 'error_code' in {v}")).to_owned())
}

/// Registers `name` with `password`; panics unless 201.
pub async fn register(s: &Server, name: &str, password: &str) -> String {
    let (st, v) =
        call(client().post(s.url("register")).json(&serde_json::json!({"agent_id": name, "password": password}))).await;
    assert_eq!(st, 201, "{v}");
    v["agent_id"].as_str().unwrap().to_owned()
}

/// A domain key from a fixed seed.
pub fn key(seed: u8) -> DomainKey {
    DomainKey::from_seed(&[seed; 32])
}

/// Signs a message value as the server of `domain` does (docs/protocol.md §4), returning the JSON text.
pub fn signed(v: Value, k: &DomainKey, domain: &str) -> String {
    let mut m = Message::from_value(v).expect("a valid message");
    sign_message(&mut m, k, "default", domain, now()).unwrap();
    m.to_json()
}

/// Writes `dns_override.toml` with these `(name, record)` entries and returns its path.
pub fn write_overrides(dir: &Path, entries: &[(String, String)]) -> PathBuf {
    let mut text = String::new();
    for (name, record) in entries {
        text.push_str(&format!("[\"{name}\"]\nrecord = \"{record}\"\n\n"));
    }
    let path = dir.join("dns_override.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Puts the domain key of `seed` into a home before its server starts (the server would generate
/// one otherwise), so a test knows every server's public key in advance.
pub fn seed_key(home: &Path, seed: u8) {
    let dir = home.join("keys");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("default.key"), key(seed).to_pkcs8_pem().unwrap()).unwrap();
}

/// The ATK record text of the key of `seed`.
pub fn atk_record(seed: u8) -> String {
    atp_wasm::records::atk::AtkRecord::new(*key(seed).public_key().as_bytes()).to_string()
}

/// Writes `peers.toml` mapping each domain to a loopback port.
pub fn write_peers(dir: &Path, peers: &[(&str, u16)]) -> PathBuf {
    let mut text = String::new();
    for (domain, port) in peers {
        text.push_str(&format!(
            "[\"{domain}\"]\nhost = \"127.0.0.1\"\nport = {port}\nip_addresses = [\"127.0.0.1\"]\n\n"
        ));
    }
    let path = dir.join("peers.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Polls `f` every 50 ms until it returns `Some`, for at most `secs` seconds.
pub async fn eventually<T, F: std::future::Future<Output = Option<T>>>(
    secs: u64,
    mut f: impl FnMut() -> F,
) -> Option<T> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
