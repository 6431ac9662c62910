//! BIND (Debian `bind9`'s `named -g`) serving one zone, `test.`, on a free loopback port, and a test
//! CA issuing certificates: the DNS and PKI of the suites that use real records (dns_bind.rs,
//! doctor.rs). Needs `named` (`apt-get install bind9`, done by scripts/install-test-deps.sh); without
//! it a test fails with that hint rather than passing silently.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;

fn named() -> PathBuf {
    for p in ["/usr/sbin/named", "/usr/bin/named"] {
        if Path::new(p).is_file() {
            return p.into();
        }
    }
    panic!("BIND's `named` is not installed: apt-get install bind9 (scripts/install-test-deps.sh)");
}

/// A `named -g` on 127.0.0.1:<port> serving the zone `test.`, killed on drop.
pub struct Bind {
    child: Child,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Bind {
    /// Starts BIND with `zone` (zone-file text for `test.`) and waits until it serves.
    pub fn start(zone: &str) -> Bind {
        let dir = tempfile::tempdir().unwrap();
        let port = free_udp_and_tcp_port();
        let d = dir.path().display();
        std::fs::write(dir.path().join("test.zone"), zone).unwrap();
        std::fs::write(
            dir.path().join("named.conf"),
            format!(
                "controls {{ }};\noptions {{\n directory \"{d}\";\n pid-file \"{d}/named.pid\";\n \
                 session-keyfile \"{d}/session.key\";\n listen-on port {port} {{ 127.0.0.1; }};\n \
                 listen-on-v6 {{ none; }};\n recursion no;\n allow-query {{ any; }};\n dnssec-validation no;\n}};\n\
                 zone \"test\" {{ type primary; file \"{d}/test.zone\"; }};\n"
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("named.log")).unwrap();
        let child = Command::new(named())
            .args(["-g", "-c"])
            .arg(dir.path().join("named.conf"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start named");
        let b = Bind { child, port, dir };
        // Not "running": named's first line is "running on Linux …", before the zone is loaded
        // (queries then get SERVFAIL).
        b.wait_for("all zones loaded", 1);
        b
    }

    /// `IP:PORT` for `--dns-server`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("named.log")).unwrap_or_default()
    }

    /// Replaces the zone (whose SOA must carry `serial`, higher than before), reloads BIND with
    /// SIGHUP and waits until it has loaded that serial.
    pub fn reload(&self, zone: &str, serial: u32) {
        let loaded = format!("loaded serial {serial}");
        let before = self.log().matches(&loaded).count();
        let path = self.dir.path().join("test.zone");
        std::fs::write(path.with_extension("new"), zone).unwrap();
        std::fs::rename(path.with_extension("new"), &path).unwrap();
        let status = Command::new("kill").args(["-HUP", &self.child.id().to_string()]).status().unwrap();
        assert!(status.success(), "kill -HUP named");
        self.wait_for(&loaded, before + 1);
    }

    /// Waits until the log holds `n` occurrences of `what`, failing on a fatal error.
    fn wait_for(&self, what: &str, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let log = self.log();
            if log.matches(what).count() >= n {
                return;
            }
            assert!(!log.contains("exiting (due to fatal error)"), "named failed:\n{log}");
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("named: no {what:?} in its log:\n{}", self.log());
    }
}

impl Drop for Bind {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port free for both UDP and TCP on loopback.
pub fn free_udp_and_tcp_port() -> u16 {
    loop {
        let p = free_port();
        if std::net::UdpSocket::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
}

/// A test CA and, for each name, a leaf certificate and key written as `<dir>/<name>.{crt,key}`.
/// Returns the CA certificate's path (`<dir>/ca.pem`).
pub fn certificates(dir: &Path, names: &[&str]) -> PathBuf {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(rcgen::DnType::CommonName, "atp test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let ca_path = dir.join("ca.pem");
    std::fs::write(&ca_path, ca_cert.pem()).unwrap();
    for name in names {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec![name.to_string()]).unwrap().signed_by(&key, &ca_cert, &ca_key).unwrap();
        std::fs::write(dir.join(format!("{name}.crt")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
    }
    ca_path
}
