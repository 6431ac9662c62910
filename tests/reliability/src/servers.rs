//! Real `atp server start` processes: started on a home and port, killed with SIGKILL, restarted on
//! the same home and port. Each server's stdout and stderr go to a log file outside its home (so a
//! full or read-only home does not lose them). Two servers find each other through the local
//! registry (README "Delivery between servers"): each home's `registry` is a symlink to one shared
//! directory, so the homes themselves can live on different file systems.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::client::{Api, ADMIN};
use crate::Error;

/// Settings shared by every server of a run.
#[derive(Debug, Clone)]
pub struct Launch {
    pub atp: PathBuf,
    pub retry_base: u64,
    pub retry_cap: u64,
}

/// One server of the suite.
pub struct Server {
    pub domain: String,
    pub port: u16,
    pub home: PathBuf,
    pub log: PathBuf,
    launch: Launch,
    child: Option<Child>,
    /// Times started.
    pub starts: u32,
    /// More arguments of `atp server start` (e.g. `--database`).
    pub extra: Vec<String>,
}

/// A free TCP port on loopback.
pub fn free_port() -> Result<u16, Error> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Server {
    /// A server of `domain` with its home `home` (created) and its log `log`; not started.
    pub fn new(launch: &Launch, domain: &str, home: &Path, log: &Path, registry: &Path) -> Result<Server, Error> {
        fs::create_dir_all(home)?;
        fs::create_dir_all(registry)?;
        let link = home.join("registry");
        if fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(registry, &link)?;
        }
        Ok(Server {
            domain: domain.to_owned(),
            port: free_port()?,
            home: home.to_owned(),
            log: log.to_owned(),
            launch: launch.clone(),
            child: None,
            starts: 0,
            extra: Vec::new(),
        })
    }

    /// A client of this server.
    pub fn api(&self, timeout: Duration) -> Result<Api, Error> {
        Api::new(self.port, timeout)
    }

    /// Spawns the process (its output appended to the log).
    pub fn spawn(&mut self) -> Result<(), Error> {
        let log = fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let child = Command::new(&self.launch.atp)
            .args(["server", "start", "--host", "127.0.0.1", "--domain", &self.domain, "--port"])
            .arg(self.port.to_string())
            .arg("--home")
            .arg(&self.home)
            .args(["--admin-token", ADMIN, "--log-level", "info", "--retry-base"])
            .arg(self.launch.retry_base.to_string())
            .arg("--retry-cap")
            .arg(self.launch.retry_cap.to_string())
            .args(&self.extra)
            .env_remove("ATP_HOME")
            .env_remove("ATP_DATABASE")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| Error::Msg(format!("starting {}: {e}", self.launch.atp.display())))?;
        self.child = Some(child);
        self.starts += 1;
        Ok(())
    }

    /// Starts the server and waits until it answers `health` (60 s at most).
    pub async fn start(&mut self) -> Result<(), Error> {
        self.spawn()?;
        let api = self.api(Duration::from_secs(2))?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if api.healthy().await {
                return Ok(());
            }
            if let Some(status) = self.exited() {
                return Err(Error::Msg(format!(
                    "{} exited at start ({status}); see {}",
                    self.domain,
                    self.log.display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(Error::Msg(format!("{} did not answer within 60 s; see {}", self.domain, self.log.display())))
    }

    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The exit status, if the process has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// Waits (at most `timeout`) for the process to exit by itself.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(s) = self.exited() {
                return Some(s);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }

    /// `kill -9`, then reaps the process.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Appends a marker line to the log (what the suite did, for reading the log later).
    pub fn note(&self, what: &str) {
        use std::io::Write;
        if let Ok(mut f) = fs::OpenOptions::new().append(true).open(&self.log) {
            let _ = writeln!(f, "==== reliability suite: {what}");
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The two servers of a scenario: `alpha.rel` (the sender's) and `beta.rel` (the recipient's),
/// with one agent each.
pub struct Pair {
    pub alpha: Server,
    pub beta: Server,
}

/// The sending agent.
pub const SENDER: &str = "sender@alpha.rel";
/// The receiving agent.
pub const RECIPIENT: &str = "recipient@beta.rel";

impl Pair {
    /// Servers with homes `<dir>/alpha` and `<dir>/beta` (or `alpha_home`), logs `<dir>/*.log`.
    pub fn new(launch: &Launch, dir: &Path, alpha_home: Option<&Path>) -> Result<Pair, Error> {
        let registry = dir.join("registry");
        let alpha_home = alpha_home.map(Path::to_owned).unwrap_or_else(|| dir.join("alpha"));
        Ok(Pair {
            alpha: Server::new(launch, "alpha.rel", &alpha_home, &dir.join("alpha.log"), &registry)?,
            beta: Server::new(launch, "beta.rel", &dir.join("beta"), &dir.join("beta.log"), &registry)?,
        })
    }

    /// Starts both and registers the two agents.
    pub async fn start(&mut self) -> Result<(), Error> {
        self.beta.start().await?;
        self.alpha.start().await?;
        self.alpha.api(Duration::from_secs(30))?.register(SENDER).await?;
        self.beta.api(Duration::from_secs(30))?.register(RECIPIENT).await?;
        Ok(())
    }
}
