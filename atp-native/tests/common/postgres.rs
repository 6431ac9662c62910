//! A throwaway PostgreSQL cluster for tests of the PostgreSQL store (docs/design.md §5d): `initdb`
//! in a temporary directory and a `postgres` on a free loopback port, run as the `postgres` user
//! when the tests run as root (PostgreSQL refuses to run as root), stopped by its process id on
//! drop. It never touches a system cluster. Needs Debian's `postgresql` package (server binaries
//! under /usr/lib/postgresql/<version>/bin; scripts/install-test-deps.sh installs it); without it a
//! test fails with that hint rather than passing silently.
//!
//! Self-contained (no `super::`), so the store's unit tests include it too.

#![allow(dead_code)]

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The newest installed server's binary directory.
fn bin_dir() -> PathBuf {
    let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, p)| p.join("initdb").is_file() && p.join("postgres").is_file())
        .collect();
    dirs.sort();
    match dirs.pop() {
        Some((_, dir)) => dir,
        None => panic!(
            "PostgreSQL's server binaries are not installed (/usr/lib/postgresql/<version>/bin): \
             apt-get install postgresql (scripts/install-test-deps.sh)"
        ),
    }
}

/// The uid and gid of the `postgres` user (from /etc/passwd), when we are root.
fn run_as() -> Option<(u32, u32)> {
    let uid = std::fs::metadata("/proc/self").ok().map(|m| std::os::unix::fs::MetadataExt::uid(&m));
    if uid != Some(0) {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let line = passwd
        .lines()
        .find(|l| l.starts_with("postgres:"))
        .unwrap_or_else(|| panic!("tests run as root and there is no `postgres` user: apt-get install postgresql"));
    let f: Vec<&str> = line.split(':').collect();
    Some((f[2].parse().unwrap(), f[3].parse().unwrap()))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A running throwaway cluster; stopped (SIGQUIT, then waited for) on drop.
pub struct Postgres {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
    bin: PathBuf,
    user: Option<(u32, u32)>,
}

impl Postgres {
    /// `initdb` in a temporary directory, then starts the server and waits until it accepts
    /// connections (60 s at most).
    pub fn start() -> Postgres {
        let bin = bin_dir();
        let user = run_as();
        // Under root, in /tmp: the `postgres` user must be able to reach the directory ($TMPDIR may
        // be private to root).
        let builder = tempfile::Builder::new().prefix("atp-pg-").clone();
        let dir = match user {
            Some(_) => builder.tempdir_in("/tmp"),
            None => builder.tempdir(),
        }
        .unwrap();
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
        }
        let data = dir.path().join("data");
        let out = Self::command(&bin.join("initdb"), user)
            .args([
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .output()
            .expect("run initdb");
        assert!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        let mut pg = Postgres { child: None, port: free_port(), dir, bin, user };
        pg.start_again();
        pg
    }

    fn command(program: &Path, user: Option<(u32, u32)>) -> Command {
        let mut c = Command::new(program);
        if let Some((uid, gid)) = user {
            c.uid(uid).gid(gid);
        }
        c
    }

    /// Starts the server (again, after [`Postgres::stop`]) on the same port and data directory and
    /// waits until it accepts connections.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "already running");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path()).unwrap();
        if let Some((uid, gid)) = self.user {
            std::os::unix::fs::chown(self.log_path(), Some(uid), Some(gid)).unwrap();
        }
        let child = Self::command(&self.bin.join("postgres"), self.user)
            .args(["-D", self.dir.path().join("data").to_str().unwrap()])
            .args(["-p", &self.port.to_string(), "-k", self.dir.path().to_str().unwrap()])
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "max_connections=200"])
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start postgres");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = Command::new(self.bin.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres", "-q"])
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return;
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("postgres exited ({status}): {}", self.log());
            }
            assert!(Instant::now() < deadline, "postgres did not accept connections in 60 s: {}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server (fast shutdown: open connections are cut) and waits until it has exited.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").args(["-INT", &child.id().to_string()]).status();
            let _ = child.wait();
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Runs SQL with `psql` as the superuser in database `db`; returns its output (unaligned,
    /// tuples only).
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres", "-d", db])
            .args(["-v", "ON_ERROR_STOP=1", "-At", "-c", sql])
            .stdin(Stdio::null())
            .output()
            .expect("run psql");
        assert!(out.status.success(), "psql {sql:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Creates a new empty database and returns its URL.
    pub fn create_db(&self, name: &str) -> String {
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        self.url(name)
    }

    /// The URL of database `db`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Immediate shutdown: nothing of a throwaway cluster needs to be kept.
            let _ = Command::new("kill").args(["-QUIT", &child.id().to_string()]).status();
            let _ = child.wait();
        }
    }
}
