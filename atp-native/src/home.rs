//! The home directory (protocol.md §8.7, §8.8): `config.toml`, `keys/`, `certs/`, `data/`.
//! Resolved from `--home` (or `ATP_HOME`), then `$HOME/.atp`.

use std::fs;
use std::path::{Path, PathBuf};

use atp_wasm::keys::DomainKey;

#[derive(Debug, thiserror::Error)]
pub enum HomeError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> HomeError + '_ {
    move |source| HomeError::Io { path: path.to_owned(), source }
}

/// The home directory of one user of atp (shared by servers of different domains).
#[derive(Debug, Clone)]
pub struct Home {
    pub root: PathBuf,
}

impl Home {
    /// `--home`, else `ATP_HOME`, else `$HOME/.atp`.
    pub fn resolve(flag: Option<PathBuf>) -> Self {
        let root = flag
            .or_else(|| std::env::var_os("ATP_HOME").map(PathBuf::from))
            .unwrap_or_else(|| std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default().join(".atp"));
        Home { root }
    }

    pub fn keys_dir(&self) -> PathBuf {
        self.root.join("keys")
    }
    pub fn certs_dir(&self) -> PathBuf {
        self.root.join("certs")
    }
    pub fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    /// The local registry of running servers ([`crate::registry`]).
    pub fn registry_dir(&self) -> PathBuf {
        self.root.join("registry")
    }

    /// The SQLite database of one domain's server: `data/<domain>.db`.
    pub fn db_path(&self, domain: &str) -> PathBuf {
        self.data_dir().join(format!("{domain}.db"))
    }

    /// Creates the directories.
    pub fn ensure(&self) -> Result<(), HomeError> {
        for d in [self.root.clone(), self.keys_dir(), self.certs_dir(), self.data_dir()] {
            fs::create_dir_all(&d).map_err(io(&d))?;
        }
        // The keys directory holds the domain's signing key: owner only.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let keys = self.keys_dir();
            fs::set_permissions(&keys, fs::Permissions::from_mode(0o700)).map_err(io(&keys))?;
        }
        Ok(())
    }

    /// `config.toml`.
    pub fn config_path(&self) -> PathBuf {
        self.root.join("config.toml")
    }

    /// Loads the domain key of `selector`, generating it (private key mode 0600) if missing, in
    /// the reference's layout: `<sel>.key` PKCS#8 PEM, `<sel>.pub` SPKI PEM, `keyring.json`.
    pub fn load_or_create_key(&self, selector: &str, now: i64) -> Result<(DomainKey, bool), HomeError> {
        let key_path = self.keys_dir().join(format!("{selector}.key"));
        if key_path.exists() {
            let pem = fs::read_to_string(&key_path).map_err(io(&key_path))?;
            let key = DomainKey::from_pkcs8_pem(&pem)
                .map_err(|e| HomeError::Format { path: key_path.clone(), message: e.to_string() })?;
            return Ok((key, false));
        }
        let key = DomainKey::generate();
        let fmt_err =
            |e: atp_wasm::keys::KeyError| HomeError::Format { path: key_path.clone(), message: e.to_string() };
        write_private(&key_path, key.to_pkcs8_pem().map_err(fmt_err)?.as_bytes())?;
        let pub_path = self.keys_dir().join(format!("{selector}.pub"));
        fs::write(&pub_path, key.public_key().to_spki_pem().map_err(fmt_err)?).map_err(io(&pub_path))?;
        let ring_path = self.keys_dir().join("keyring.json");
        let mut ring: serde_json::Value = fs::read_to_string(&ring_path)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_else(|| serde_json::json!({"keys": {}}));
        ring["keys"][selector] = serde_json::json!({
            "private_key": format!("{selector}.key"), "public_key": format!("{selector}.pub"), "created_at": now
        });
        fs::write(&ring_path, serde_json::to_string_pretty(&ring).unwrap_or_default()).map_err(io(&ring_path))?;
        Ok((key, true))
    }
}

/// Writes a secret file readable by its owner only.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), HomeError> {
    use std::io::Write;
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(io(path))?;
    f.write_all(bytes).map_err(io(path))?;
    f.sync_all().map_err(io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_created_once_with_private_mode() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home { root: dir.path().join(".atp") };
        home.ensure().unwrap();
        let (k1, created) = home.load_or_create_key("default", 5).unwrap();
        assert!(created);
        let (k2, created) = home.load_or_create_key("default", 6).unwrap();
        assert!(!created);
        assert_eq!(k1.public_key(), k2.public_key());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(home.keys_dir().join("default.key")).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let ring: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(home.keys_dir().join("keyring.json")).unwrap()).unwrap();
        assert_eq!(ring["keys"]["default"]["created_at"], 5);
    }
}
