//! Local discovery overrides (protocol.md §8.9): `peers.toml` (quoted domain tables with `host`,
//! `port`, `ip_addresses`) and `dns_override.toml` (quoted name tables with `record`), loaded into
//! the core's [`StaticResolver`].

use std::path::Path;

use atp_wasm::env::StaticResolver;
use atp_wasm::records::svcb::SvcbRecord;
use serde::Deserialize;

#[derive(Deserialize)]
struct Peer {
    host: String,
    port: Option<u16>,
    #[serde(default)]
    ip_addresses: Vec<String>,
}

#[derive(Deserialize)]
struct Override {
    record: String,
}

/// Adds the entries of the two files (either may be absent) to a resolver.
pub fn load(peers: Option<&Path>, dns: Option<&Path>) -> Result<StaticResolver, String> {
    let mut r = StaticResolver::new();
    let read = |p: &Path| std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()));
    if let Some(p) = peers {
        let table: std::collections::BTreeMap<String, Peer> =
            toml::from_str(&read(p)?).map_err(|e| format!("{}: {e}", p.display()))?;
        for (domain, peer) in table {
            let port = peer.port.unwrap_or(atp_wasm::DEFAULT_PORT);
            r.add_svcb(&format!("_atp.{domain}"), SvcbRecord::service(1, &peer.host, port));
            for ip in peer.ip_addresses {
                let ip = ip.parse().map_err(|_| format!("{}: bad ip_addresses entry {ip:?}", p.display()))?;
                r.add_ip(&domain, ip);
            }
        }
    }
    if let Some(p) = dns {
        let table: std::collections::BTreeMap<String, Override> =
            toml::from_str(&read(p)?).map_err(|e| format!("{}: {e}", p.display()))?;
        for (name, o) in table {
            r.add_txt(&name, &o.record);
        }
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use atp_wasm::env::Resolver;

    #[test]
    fn reference_formats() {
        let dir = tempfile::tempdir().unwrap();
        let peers = dir.path().join("peers.toml");
        let dns = dir.path().join("dns_override.toml");
        std::fs::write(&peers, "[\"beta.test\"]\nhost = \"127.0.0.1\"\nport = 17602\nip_addresses = [\"127.0.0.1\"]\n")
            .unwrap();
        std::fs::write(&dns, "[\"ats._atp.beta.test\"]\nrecord = \"v=atp1 allow=all\"\n").unwrap();
        let r = load(Some(&peers), Some(&dns)).unwrap();
        let b = futures_lite(r.txt("ats._atp.beta.test"));
        assert_eq!(b.unwrap(), vec!["v=atp1 allow=all"]);
        assert_eq!(futures_lite(r.svcb("_atp.beta.test")).unwrap()[0].port, Some(17602));
        assert_eq!(futures_lite(r.ip_addrs("beta.test")).unwrap().len(), 1);
        std::fs::write(&dns, "[x\n").unwrap();
        assert!(load(None, Some(&dns)).is_err());
    }

    fn futures_lite<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
    }
}
