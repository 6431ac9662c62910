//! Embeds the browser app in the binary (docs/design.md §6 "running in production"): when the built
//! app exists at build time (`www/dist` of the source tree, or the directory of `ATP_WEB_DIST`), every
//! file of it becomes an `include_bytes!` entry of `$OUT_DIR/web_assets.rs`, read by
//! `src/routes/web/embedded.rs`. Without it the table is empty and `atp server start --web` says how
//! to build the app. `cargo build` never needs npm.
//!
//! Cargo reruns this script when a file under the app directory changes, and, while the directory
//! does not exist, when anything under its parent (`www/`) changes, so building the app and then
//! `cargo build` (or `cargo install --path atp-native`) embeds the new files.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=ATP_WEB_DIST");
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let (dist, default) = match std::env::var_os("ATP_WEB_DIST") {
        Some(d) if !d.is_empty() => (manifest.join(d), false),
        _ => (manifest.join("../www/dist"), true),
    };
    let mut files = Vec::new();
    if dist.join("index.html").is_file() {
        println!("cargo:rerun-if-changed={}", dist.display());
        collect(&dist, &dist, &mut files);
        files.sort();
    } else {
        if dist.is_dir() {
            println!("cargo:warning=web app not embedded: {} has no index.html", dist.display());
        }
        // Watch `www/` for the app to appear (cargo treats a missing path as always changed, so
        // the missing directory itself cannot be watched).
        if let Some(www) = dist.parent().filter(|p| default && p.is_dir()) {
            println!("cargo:rerun-if-changed={}", www.display());
        }
    }
    let mut out = String::from("/// The embedded web app: (path relative to the app's root, contents).\n");
    out.push_str("pub static FILES: &[(&str, &[u8])] = &[\n");
    for (rel, abs) in &files {
        let _ = writeln!(out, "    ({rel:?}, include_bytes!({abs:?})),");
    }
    out.push_str("];\n");
    let source = if files.is_empty() { "None".to_owned() } else { format!("Some({:?})", dist.display().to_string()) };
    let _ = writeln!(out, "/// The directory the app was embedded from.\npub const SOURCE: Option<&str> = {source};");
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    std::fs::write(out_dir.join("web_assets.rs"), out).expect("write web_assets.rs");
}

/// Every regular file under `dir` (dot-files and dot-directories left out, as the server never
/// serves them), as `(relative path with '/', absolute path)`.
fn collect(root: &Path, dir: &Path, files: &mut Vec<(String, String)>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with('.') {
            continue;
        }
        if path.is_dir() {
            collect(root, &path, files);
        } else if path.is_file() {
            let (Ok(rel), Some(abs)) = (path.strip_prefix(root), path.canonicalize().ok()) else { continue };
            let (Some(rel), Some(abs)) = (rel.to_str(), abs.to_str().map(str::to_owned)) else { continue };
            files.push((rel.replace(std::path::MAIN_SEPARATOR, "/"), abs));
        }
    }
}
