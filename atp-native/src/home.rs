//! The home directory (docs/protocol.md §8.7, §8.8): `config.toml`, `keys/`, `certs/`, `data/`.
//! Resolved from `--home` (or `ATP_HOME`), then `$HOME/.atp`.

use std::fs;
use std::path::{Path, PathBuf};

use atp_wasm::keys::{DomainKey, PublicKey};

#[derive(Debug, thiserror::Error)]
pub enum HomeError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },
    #[error("key selector {0:?} already exists (pass --force to replace it)")]
    KeyExists(String),
    #[error("no key with selector {0:?} (see `atp keys list`)")]
    NoKey(String),
    #[error("key selector {0:?} is not a DNS label (letters, digits and '-')")]
    BadSelector(String),
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
        let new_data = !self.data_dir().exists();
        for d in [self.root.clone(), self.keys_dir(), self.certs_dir(), self.data_dir()] {
            fs::create_dir_all(&d).map_err(io(&d))?;
        }
        // The keys directory holds the domain's signing key: owner only. A new data directory too
        // (messages and password hashes; `atp doctor` checks both); an existing one keeps its mode.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let keys = self.keys_dir();
            fs::set_permissions(&keys, fs::Permissions::from_mode(0o700)).map_err(io(&keys))?;
            let data = self.data_dir();
            if new_data {
                fs::set_permissions(&data, fs::Permissions::from_mode(0o700)).map_err(io(&data))?;
            }
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
        let key_path = self.key_path(selector);
        if key_path.exists() {
            return Ok((self.private_key(selector)?, false));
        }
        Ok((self.generate_key(selector, now, false)?.0, true))
    }

    /// `keys/<selector>.key`.
    pub fn key_path(&self, selector: &str) -> PathBuf {
        self.keys_dir().join(format!("{selector}.key"))
    }

    /// `keys/<selector>.pub`.
    pub fn pub_path(&self, selector: &str) -> PathBuf {
        self.keys_dir().join(format!("{selector}.pub"))
    }

    fn keyring_path(&self) -> PathBuf {
        self.keys_dir().join("keyring.json")
    }

    /// Reads the private key of `selector`.
    pub fn private_key(&self, selector: &str) -> Result<DomainKey, HomeError> {
        let path = self.key_path(selector);
        let pem = match fs::read_to_string(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(HomeError::NoKey(selector.to_owned())),
            other => other.map_err(io(&path))?,
        };
        DomainKey::from_pkcs8_pem(&pem).map_err(|e| HomeError::Format { path, message: e.to_string() })
    }

    /// The public key of `selector`: `<sel>.pub`, or derived from `<sel>.key` when only that exists.
    pub fn public_key(&self, selector: &str) -> Result<PublicKey, HomeError> {
        let path = self.pub_path(selector);
        match fs::read_to_string(&path) {
            Ok(pem) => PublicKey::from_spki_pem(&pem).map_err(|e| HomeError::Format { path, message: e.to_string() }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(self.private_key(selector)?.public_key()),
            Err(e) => Err(io(&path)(e)),
        }
    }

    /// Generates a key pair for `selector` and records it in `keyring.json` (docs/protocol.md §8.7).
    /// An existing selector is an error unless `force` (the reference silently overwrote it,
    /// docs/protocol.md §12 item 17).
    pub fn generate_key(&self, selector: &str, now: i64, force: bool) -> Result<(DomainKey, KeyInfo), HomeError> {
        if !is_selector(selector) {
            return Err(HomeError::BadSelector(selector.to_owned()));
        }
        let keys = self.keys_dir();
        fs::create_dir_all(&keys).map_err(io(&keys))?;
        let key_path = self.key_path(selector);
        if !force && (key_path.exists() || self.keyring()?.iter().any(|k| k.selector == selector)) {
            return Err(HomeError::KeyExists(selector.to_owned()));
        }
        let key = DomainKey::generate();
        let fmt_err =
            |e: atp_wasm::keys::KeyError| HomeError::Format { path: key_path.clone(), message: e.to_string() };
        let pub_pem = key.public_key().to_spki_pem().map_err(fmt_err)?;
        write_private(&key_path, key.to_pkcs8_pem().map_err(fmt_err)?.as_bytes())?;
        let pub_path = self.pub_path(selector);
        write_atomic(&pub_path, pub_pem.as_bytes())?;
        let ring_path = self.keyring_path();
        let mut ring = self.keyring_value()?;
        if !ring.get("keys").is_some_and(serde_json::Value::is_object) {
            ring = serde_json::json!({"keys": {}});
        }
        ring["keys"][selector] = serde_json::json!({
            "private_key": format!("{selector}.key"), "public_key": format!("{selector}.pub"), "created_at": now
        });
        let text = serde_json::to_string_pretty(&ring).unwrap_or_default();
        write_atomic(&ring_path, text.as_bytes())?;
        let info =
            KeyInfo { selector: selector.to_owned(), private_key: key_path, public_key: pub_path, created_at: now };
        Ok((key, info))
    }

    fn keyring_value(&self) -> Result<serde_json::Value, HomeError> {
        let path = self.keyring_path();
        match fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| HomeError::Format { path, message: e.to_string() }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(serde_json::json!({"keys": {}})),
            Err(e) => Err(io(&path)(e)),
        }
    }

    /// The keys of `keyring.json`, in the file's order (docs/protocol.md §8.7).
    pub fn keyring(&self) -> Result<Vec<KeyInfo>, HomeError> {
        let ring = self.keyring_value()?;
        let Some(keys) = ring.get("keys").and_then(serde_json::Value::as_object) else {
            return Ok(Vec::new());
        };
        Ok(keys
            .iter()
            .map(|(selector, info)| {
                let file = |field: &str, ext: &str| {
                    self.keys_dir()
                        .join(info.get(field).and_then(|v| v.as_str()).unwrap_or(&format!("{selector}.{ext}")))
                };
                KeyInfo {
                    selector: selector.clone(),
                    private_key: file("private_key", "key"),
                    public_key: file("public_key", "pub"),
                    created_at: info.get("created_at").and_then(serde_json::Value::as_i64).unwrap_or(0),
                }
            })
            .collect())
    }

    /// The keys to publish: those of the keyring whose key files still exist, with their public keys.
    pub fn live_keys(&self) -> Result<Vec<(KeyInfo, PublicKey)>, HomeError> {
        let mut out = Vec::new();
        for k in self.keyring()? {
            if is_selector(&k.selector) && (k.public_key.exists() || k.private_key.exists()) {
                let pk = self.public_key(&k.selector)?;
                out.push((k, pk));
            }
        }
        Ok(out)
    }
}

/// One entry of `keyring.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    pub selector: String,
    pub private_key: PathBuf,
    pub public_key: PathBuf,
    pub created_at: i64,
}

/// A selector is one DNS label (it becomes `<selector>.atk._atp.<domain>`, docs/protocol.md §5.3).
pub fn is_selector(s: &str) -> bool {
    !s.contains('.') && atp_wasm::identity::validate_domain(s).is_ok()
}

/// Writes a file through a temporary file and a rename, so readers never see half of it.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), HomeError> {
    use std::io::Write;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(io(path))
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
    // `mode` applies only when the file is created: tighten a file that existed (e.g. the
    // reference's 0644 key, docs/protocol.md §12 item 17) before writing the secret into it.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(fs::Permissions::from_mode(0o600)).map_err(io(path))?;
    }
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

    #[test]
    fn keyring_generate_refuses_to_overwrite_and_lists_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home { root: dir.path().join(".atp") };
        let (k1, info) = home.generate_key("default", 10, false).unwrap();
        assert_eq!(info.private_key, home.keys_dir().join("default.key"));
        assert!(matches!(home.generate_key("default", 11, false), Err(HomeError::KeyExists(_))));
        assert_eq!(home.public_key("default").unwrap(), k1.public_key());
        let (k2, _) = home.generate_key("default", 12, true).unwrap();
        assert_ne!(k1.public_key(), k2.public_key(), "--force replaces the key");
        home.generate_key("next", 13, false).unwrap();
        let ring = home.keyring().unwrap();
        let sels: Vec<_> = ring.iter().map(|k| (k.selector.as_str(), k.created_at)).collect();
        assert_eq!(sels, [("default", 12), ("next", 13)]);
        assert_eq!(home.live_keys().unwrap().len(), 2);
        fs::remove_file(home.keys_dir().join("next.key")).unwrap();
        fs::remove_file(home.keys_dir().join("next.pub")).unwrap();
        assert_eq!(home.live_keys().unwrap().len(), 1, "a selector without files is not live");
        assert!(matches!(home.public_key("nope"), Err(HomeError::NoKey(_))));
        assert!(matches!(home.generate_key("a.b", 1, false), Err(HomeError::BadSelector(_))));
        assert!(matches!(home.generate_key("", 1, false), Err(HomeError::BadSelector(_))));
        // the reference's keyring layout, read back by a plain JSON parser
        let ring: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(home.keys_dir().join("keyring.json")).unwrap()).unwrap();
        assert_eq!(ring["keys"]["default"]["private_key"], "default.key");
        assert_eq!(ring["keys"]["default"]["public_key"], "default.pub");
    }

    #[cfg(unix)]
    #[test]
    fn overwriting_a_loose_key_file_tightens_its_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        fs::write(&path, "old").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        write_private(&path, b"new").unwrap();
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(fs::read_to_string(&path).unwrap(), "new");
    }
}
