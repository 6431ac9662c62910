//! `atp keys generate | show | list | rotate` (docs/protocol.md §8.7, §9): the domain's Ed25519 keys in
//! `<home>/keys/`, in the reference's layout (`<sel>.key` PKCS#8 PEM mode 0600, `<sel>.pub` SPKI
//! PEM, `keyring.json`). Unlike the reference, `generate` refuses to replace a selector without
//! `--force` (docs/protocol.md §12 item 17), and `rotate` checks that the old key exists.

use atp_wasm::env::{Clock, SystemClock};
use atp_wasm::keys::PublicKey;
use serde_json::{json, Value};

use super::{home, print_json, print_line, CmdError};
use crate::cli::{KeyGenerateArgs, KeyListArgs, KeyRotateArgs, KeyShowArgs, Output};
use crate::home::{HomeError, KeyInfo};

fn key_json(k: &KeyInfo, pk: &PublicKey) -> Value {
    json!({
        "selector": k.selector,
        "public_key": pk.to_b64(),
        "created_at": k.created_at,
        "private_key_path": k.private_key.display().to_string(),
        "public_key_path": k.public_key.display().to_string(),
    })
}

pub fn generate(a: KeyGenerateArgs) -> Result<(), CmdError> {
    let home = home(&a.home);
    home.ensure()?;
    let (key, info) = home.generate_key(&a.selector, SystemClock.now(), a.force)?;
    match a.output {
        Output::Json => print_json(&key_json(&info, &key.public_key())),
        Output::Text => print_line(&format!(
            "Key pair generated:\n  Selector:    {}\n  Private key: {}\n  Public key:  {}",
            info.selector,
            info.private_key.display(),
            info.public_key.display()
        )),
    }
}

pub fn show(a: KeyShowArgs) -> Result<(), CmdError> {
    let home = home(&a.home);
    let pk = home.public_key(&a.selector)?;
    let info = home.keyring()?.into_iter().find(|k| k.selector == a.selector).unwrap_or_else(|| KeyInfo {
        selector: a.selector.clone(),
        private_key: home.key_path(&a.selector),
        public_key: home.pub_path(&a.selector),
        created_at: 0,
    });
    match a.output {
        Output::Json => {
            let mut v = key_json(&info, &pk);
            if a.public {
                if let Some(o) = v.as_object_mut() {
                    o.remove("private_key_path");
                }
            }
            print_json(&v)
        }
        Output::Text => {
            let mut text = format!("Selector: {}\nPublic key (base64): {}", a.selector, pk.to_b64());
            if !a.public {
                text.push_str(&format!("\nPrivate key path: {}", info.private_key.display()));
            }
            print_line(&text)
        }
    }
}

pub fn list(a: KeyListArgs) -> Result<(), CmdError> {
    let home = home(&a.home);
    let keys = home.live_keys()?;
    match a.output {
        Output::Json => print_json(&json!({"keys": keys.iter().map(|(k, pk)| key_json(k, pk)).collect::<Vec<_>>()})),
        Output::Text if keys.is_empty() => print_line("No keys found."),
        Output::Text => print_line(
            &keys
                .iter()
                .map(|(k, _)| format!("  {}: created {}", k.selector, k.created_at))
                .collect::<Vec<_>>()
                .join("\n"),
        ),
    }
}

/// A new key beside the old one. The server keeps signing with `key_selector` from config.toml
/// until it is changed (docs/protocol.md §8.7): publish the new ATK record first, then switch, and keep
/// the old record until mail signed with it has been delivered.
pub fn rotate(a: KeyRotateArgs) -> Result<(), CmdError> {
    let home = home(&a.home);
    let old_exists =
        home.key_path(&a.old_selector).exists() || home.keyring()?.iter().any(|k| k.selector == a.old_selector);
    if !old_exists {
        return Err(HomeError::NoKey(a.old_selector).into());
    }
    home.ensure()?;
    let (key, info) = home.generate_key(&a.new_selector, SystemClock.now(), false)?;
    match a.output {
        Output::Json => {
            let mut v = key_json(&info, &key.public_key());
            v["old_selector"] = a.old_selector.clone().into();
            print_json(&v)
        }
        Output::Text => print_line(&format!(
            "New key pair generated: {new}\nOld key '{old}' preserved.\n\
             Next: publish the new ATK record (atp dns generate prints both), then set key_selector = \"{new}\" \
             in config.toml and restart the server; keep the '{old}' record published until mail signed with it \
             has been delivered.",
            new = info.selector,
            old = a.old_selector
        )),
    }
}
