//! `atp dns generate` and `atp dns check` (docs/protocol.md §5.1–§5.3, §9).
//!
//! `generate` prints complete zone-file records ([`atp_wasm::records::zone_records`]): SVCB, the
//! address of `atp.<domain>`, ATS, and one ATK record for **every live key** of the keyring, so a
//! rotated-out key stays published beside the new one. The signing selector (`--selector`, else
//! `key_selector` of config.toml, else `default`) is generated first when missing, as the
//! reference does.
//!
//! `check` looks every record up through an [`atp_wasm::env::Resolver`] and reports each as OK,
//! missing, invalid, a lookup error, or a warning (which does not fail the check). It is generic
//! over the resolver, so tests run it on a [`atp_wasm::env::StaticResolver`].

use std::collections::HashMap;
use std::net::IpAddr;

use atp_wasm::env::{Clock, Resolver, SystemClock};
use atp_wasm::keys::PublicKey;
use atp_wasm::records::atk::AtkRecord;
use atp_wasm::records::ats::{AtsPolicy, AtsResult};
use atp_wasm::records::svcb::{discover, srv_name, svcb_names, DiscoveryError};
use atp_wasm::records::{atk_name, atp_txt_records, ats_name, normalize_hostname, zone_records};
use serde_json::{json, Value};

use super::{home, print_json, print_line, CmdError};
use crate::cli::{DnsCheckArgs, DnsGenerateArgs, Output};
use crate::config::FileConfig;
use crate::home::is_selector;

/// A domain as given on the command line: lowercase, no trailing dot, a valid host name.
pub fn domain_arg(d: &str) -> Result<String, CmdError> {
    normalize_hostname(d.trim()).ok_or_else(|| CmdError::Usage(format!("--domain {d:?} is not a valid domain name")))
}

pub fn generate(a: DnsGenerateArgs) -> Result<(), CmdError> {
    let domain = domain_arg(&a.domain)?;
    let home = home(&a.home);
    let selector = match a.selector {
        Some(s) => s,
        None => FileConfig::load(&home.config_path())?.key_selector.unwrap_or_else(|| "default".into()),
    };
    if !is_selector(&selector) {
        return Err(crate::home::HomeError::BadSelector(selector).into());
    }
    if !home.live_keys()?.iter().any(|(k, _)| k.selector == selector) {
        home.ensure()?;
        home.generate_key(&selector, SystemClock.now(), false)?;
        eprintln!("No key found for selector '{selector}': generated one in {}", home.keys_dir().display());
    }
    let keys: Vec<(String, String)> = home.live_keys()?.into_iter().map(|(k, pk)| (k.selector, pk.to_b64())).collect();
    let lines = zone_records(&domain, a.ip, a.port, &keys);
    match a.output {
        Output::Json => {
            let records: Vec<Value> = lines
                .iter()
                .map(|l| {
                    let f: Vec<&str> = l.splitn(5, ' ').collect();
                    json!({"name": f[0], "ttl": f[1].parse::<u32>().unwrap_or(0), "class": f[2], "type": f[3], "data": f[4]})
                })
                .collect();
            print_json(&json!({"domain": domain, "records": records}))
        }
        Output::Text => {
            let mut text = vec![format!("; ATP records for {domain}: add them at your DNS provider")];
            text.extend(lines);
            print_line(&text.join("\n"))
        }
    }
}

/// The verdict on one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    /// Worth a look, but not wrong.
    Warning,
    Missing,
    Invalid,
    /// The lookup failed (timeout, SERVFAIL): unknown.
    Error,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Warning => "warning",
            Verdict::Missing => "missing",
            Verdict::Invalid => "invalid",
            Verdict::Error => "error",
        }
    }
    pub fn is_problem(self) -> bool {
        !matches!(self, Verdict::Ok | Verdict::Warning)
    }
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// `SVCB`, `ADDR`, `ATS` or `ATK`.
    pub record: &'static str,
    /// The DNS name looked up.
    pub name: String,
    pub verdict: Verdict,
    pub detail: String,
}

fn row(record: &'static str, name: impl Into<String>, verdict: Verdict, detail: impl Into<String>) -> Check {
    Check { record, name: name.into(), verdict, detail: detail.into() }
}

/// Looks up the records of `domain` (docs/protocol.md §5): discovery (SVCB/SRV) and the addresses of the
/// hosts it names, ATS (exactly one `v=atp1` record that parses; a warning if it denies the
/// server's own addresses), and ATK for each selector (a usable `v=atp1` record; when `local` has
/// the selector's key, the published key must be that one).
pub async fn check<R: Resolver>(
    resolver: &R,
    domain: &str,
    selectors: &[String],
    local: &HashMap<String, PublicKey>,
    now: i64,
) -> Vec<Check> {
    let mut out = Vec::new();
    let svcb_name = svcb_names(domain)[0].clone();
    let mut server_ips: Vec<IpAddr> = Vec::new();
    match discover(resolver, domain).await {
        Ok(endpoints) => {
            let list: Vec<String> = endpoints.iter().map(|e| format!("{}:{}", e.host, e.port)).collect();
            out.push(row("SVCB", &svcb_name, Verdict::Ok, list.join(", ")));
            let mut hosts: Vec<&str> = endpoints.iter().map(|e| e.host.as_str()).collect();
            hosts.dedup();
            for host in hosts {
                if let Ok(ip) = host.parse::<IpAddr>() {
                    server_ips.push(ip);
                    continue;
                }
                match resolver.ip_addrs(host).await {
                    Ok(ips) if ips.is_empty() => {
                        out.push(row("ADDR", host, Verdict::Invalid, "the service host has no A/AAAA record"))
                    }
                    Ok(ips) => {
                        let text: Vec<String> = ips.iter().map(IpAddr::to_string).collect();
                        out.push(row("ADDR", host, Verdict::Ok, text.join(", ")));
                        server_ips.extend(ips);
                    }
                    Err(e) => out.push(row("ADDR", host, Verdict::Error, e.to_string())),
                }
            }
        }
        Err(DiscoveryError::NotFound { .. }) => out.push(row(
            "SVCB",
            &svcb_name,
            Verdict::Missing,
            format!(
                "no SVCB record at {} or {}, no SRV record at {}",
                svcb_name,
                svcb_names(domain)[1],
                srv_name(domain)
            ),
        )),
        Err(e @ DiscoveryError::Dns(_)) => out.push(row("SVCB", &svcb_name, Verdict::Error, e.to_string())),
        Err(e) => out.push(row("SVCB", &svcb_name, Verdict::Invalid, e.to_string())),
    }
    out.push(check_ats(resolver, domain, &server_ips).await);
    for selector in selectors {
        out.push(check_atk(resolver, domain, selector, local.get(selector), now).await);
    }
    out
}

async fn check_ats<R: Resolver>(resolver: &R, domain: &str, server_ips: &[IpAddr]) -> Check {
    let name = ats_name(domain);
    let txt = match resolver.txt(&name).await {
        Ok(t) => t,
        Err(e) => return row("ATS", name, Verdict::Error, e.to_string()),
    };
    let records = atp_txt_records(&txt);
    let text = match records.as_slice() {
        [] => return row("ATS", name, Verdict::Missing, "no v=atp1 TXT record"),
        [one] => one.to_string(),
        many => {
            return row(
                "ATS",
                name,
                Verdict::Invalid,
                format!("{} v=atp1 records; receivers need exactly one", many.len()),
            )
        }
    };
    let policy = match AtsPolicy::parse(&text) {
        Ok(p) => p,
        Err(e) => return row("ATS", name, Verdict::Invalid, format!("{e}: {text}")),
    };
    for ip in server_ips {
        if let AtsResult::Fail(d) = policy.evaluate(*ip, resolver).await {
            return row(
                "ATS",
                name,
                Verdict::Warning,
                format!("{text} (denies the server's address {ip} by {d}; fine if mail leaves from another address)"),
            );
        }
    }
    row("ATS", name, Verdict::Ok, text)
}

async fn check_atk<R: Resolver>(
    resolver: &R,
    domain: &str,
    selector: &str,
    local: Option<&PublicKey>,
    now: i64,
) -> Check {
    let name = atk_name(selector, domain);
    let txt = match resolver.txt(&name).await {
        Ok(t) => t,
        Err(e) => return row("ATK", name, Verdict::Error, e.to_string()),
    };
    let records = atp_txt_records(&txt);
    if records.is_empty() {
        return row("ATK", name, Verdict::Missing, "no v=atp1 TXT record");
    }
    let mut usable = Vec::new();
    let mut problems = Vec::new();
    for text in &records {
        match AtkRecord::parse(text) {
            Err(e) => problems.push(e.to_string()),
            Ok(r) if !r.is_usable_at(now) => problems.push("key revoked or expired".into()),
            Ok(r) => match PublicKey::from_bytes(&r.public_key) {
                Ok(pk) => usable.push(pk),
                Err(e) => problems.push(e.to_string()),
            },
        }
    }
    let Some(first) = usable.first() else {
        return row("ATK", name, Verdict::Invalid, problems.join("; "));
    };
    match local {
        Some(mine) if !usable.contains(mine) => row(
            "ATK",
            name,
            Verdict::Invalid,
            format!("publishes p={} but the local key '{selector}' is p={}", first.to_b64(), mine.to_b64()),
        ),
        Some(_) => row("ATK", name, Verdict::Ok, "matches the local key"),
        None => row("ATK", name, Verdict::Ok, format!("p={}", first.to_b64())),
    }
}

/// The report as text lines (aligned columns) or JSON.
pub fn render(domain: &str, checks: &[Check], output: Output) -> Result<(), CmdError> {
    let ok = !checks.iter().any(|c| c.verdict.is_problem());
    match output {
        Output::Json => {
            let rows: Vec<Value> = checks
                .iter()
                .map(|c| json!({"record": c.record, "name": c.name, "status": c.verdict.as_str(), "detail": c.detail}))
                .collect();
            print_json(&json!({"domain": domain, "ok": ok, "checks": rows}))
        }
        Output::Text => {
            let width = checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
            let mut text = vec![format!("Checking DNS records for {domain}:")];
            for c in checks {
                let verdict = c.verdict.as_str().to_ascii_uppercase();
                text.push(format!("  {:<5} {:<width$}  {verdict:<7}  {}", c.record, c.name, c.detail));
            }
            print_line(&text.join("\n"))
        }
    }
}

/// Runs [`check`] and fails (exit 1) when any record is missing, invalid or could not be looked up.
pub async fn check_and_report<R: Resolver>(resolver: &R, a: &DnsCheckArgs, domain: &str) -> Result<(), CmdError> {
    let home = home(&a.home);
    let live = home.live_keys().unwrap_or_default();
    let local: HashMap<String, PublicKey> = live.iter().map(|(k, pk)| (k.selector.clone(), *pk)).collect();
    let selectors: Vec<String> = if !a.selectors.is_empty() {
        a.selectors.clone()
    } else if !live.is_empty() {
        live.iter().map(|(k, _)| k.selector.clone()).collect()
    } else {
        vec!["default".into()]
    };
    let checks = check(resolver, domain, &selectors, &local, SystemClock.now()).await;
    render(domain, &checks, a.output)?;
    let problems = checks.iter().filter(|c| c.verdict.is_problem()).count();
    if problems > 0 {
        return Err(CmdError::Reported(format!("{problems} of {} DNS records are missing or wrong", checks.len())));
    }
    Ok(())
}

/// `atp dns check`: real DNS ([`crate::dns::DnsResolver`]), the system's resolvers or `--dns-server`.
pub async fn check_command(a: DnsCheckArgs) -> Result<(), CmdError> {
    let domain = domain_arg(&a.domain)?;
    let resolver = crate::dns::DnsResolver::new(a.dns_server)?;
    check_and_report(&resolver, &a, &domain).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use atp_wasm::env::StaticResolver;
    use atp_wasm::keys::DomainKey;
    use atp_wasm::records::svcb::{SrvRecord, SvcbRecord};

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
    }

    const D: &str = "alpha.test";
    const NOW: i64 = 1_800_000_000;

    fn key(seed: u8) -> PublicKey {
        DomainKey::from_seed(&[seed; 32]).public_key()
    }

    /// A zone as `dns generate` prints it, loaded into a static resolver.
    fn published() -> StaticResolver {
        let mut r = StaticResolver::new();
        r.add_svcb("_atp.alpha.test", SvcbRecord::service(1, "atp.alpha.test", 7443))
            .add_ip("atp.alpha.test", "192.0.2.7".parse().unwrap())
            .add_txt("ats._atp.alpha.test", "v=spf1 -all")
            .add_txt("ats._atp.alpha.test", "v=atp1 allow=ip:192.0.2.7 deny=all")
            .add_txt("default.atk._atp.alpha.test", &AtkRecord::new(*key(1).as_bytes()).to_string())
            .add_txt("next.atk._atp.alpha.test", &AtkRecord::new(*key(2).as_bytes()).to_string());
        r
    }

    fn run(r: &StaticResolver, selectors: &[&str], local: &[(&str, PublicKey)]) -> Vec<(String, Verdict, String)> {
        let sels: Vec<String> = selectors.iter().map(|s| s.to_string()).collect();
        let local: HashMap<String, PublicKey> = local.iter().map(|(s, k)| (s.to_string(), *k)).collect();
        block_on(check(r, D, &sels, &local, NOW)).into_iter().map(|c| (c.name, c.verdict, c.detail)).collect()
    }

    fn verdicts(rows: &[(String, Verdict, String)]) -> Vec<(&str, Verdict)> {
        rows.iter().map(|(n, v, _)| (n.as_str(), *v)).collect()
    }

    #[test]
    fn a_complete_zone_is_ok() {
        let rows = run(&published(), &["default", "next"], &[("default", key(1)), ("next", key(2))]);
        assert_eq!(
            verdicts(&rows),
            [
                ("_atp.alpha.test", Verdict::Ok),
                ("atp.alpha.test", Verdict::Ok),
                ("ats._atp.alpha.test", Verdict::Ok),
                ("default.atk._atp.alpha.test", Verdict::Ok),
                ("next.atk._atp.alpha.test", Verdict::Ok),
            ]
        );
        assert_eq!(rows[0].2, "atp.alpha.test:7443");
        assert_eq!(rows[1].2, "192.0.2.7");
        assert_eq!(rows[2].2, "v=atp1 allow=ip:192.0.2.7 deny=all", "the SPF record beside it is ignored");
        assert_eq!(rows[3].2, "matches the local key");
        let without_local = run(&published(), &["default"], &[]);
        assert_eq!(without_local[3].2, format!("p={}", key(1).to_b64()));
    }

    #[test]
    fn the_records_dns_generate_prints_pass_the_check() {
        // zone lines -> static resolver -> check
        let lines = zone_records(D, "192.0.2.7".parse().unwrap(), 17443, &[("default".into(), key(1).to_b64())]);
        let mut r = StaticResolver::new();
        for l in &lines {
            let f: Vec<&str> = l.splitn(5, ' ').collect();
            let name = f[0];
            match f[3] {
                "SVCB" => {
                    r.add_svcb(name, SvcbRecord::parse(f[4]).unwrap());
                }
                "A" | "AAAA" => {
                    r.add_ip(name, f[4].parse().unwrap());
                }
                "TXT" => {
                    r.add_txt(name, f[4].trim_matches('"'));
                }
                other => panic!("unexpected record type {other}"),
            }
        }
        let rows = run(&r, &["default"], &[("default", key(1))]);
        assert!(rows.iter().all(|(_, v, _)| *v == Verdict::Ok), "{rows:?}");
        assert_eq!(rows[0].2, "atp.alpha.test:17443");
    }

    #[test]
    fn missing_records() {
        let rows = run(&StaticResolver::new(), &["default"], &[]);
        assert_eq!(
            verdicts(&rows),
            [
                ("_atp.alpha.test", Verdict::Missing),
                ("ats._atp.alpha.test", Verdict::Missing),
                ("default.atk._atp.alpha.test", Verdict::Missing),
            ]
        );
        assert!(rows[0].2.contains("_atp._tcp.alpha.test"), "{}", rows[0].2);
    }

    #[test]
    fn invalid_records() {
        let mut r = StaticResolver::new();
        r.add_svcb("_atp.alpha.test", SvcbRecord::service(1, "atp.alpha.test", 7443))
            .add_txt("ats._atp.alpha.test", "v=atp1 allow=ip:999.1.1.1 deny=all")
            .add_txt("default.atk._atp.alpha.test", "v=atp1 k=ed25519 p=MCowBQYDK2VwAyEA")
            .add_txt("old.atk._atp.alpha.test", &format!("{} t=s", AtkRecord::new(*key(1).as_bytes())))
            .add_txt("other.atk._atp.alpha.test", &AtkRecord::new(*key(3).as_bytes()).to_string());
        let rows = run(&r, &["default", "old", "other"], &[("other", key(4))]);
        assert_eq!(
            verdicts(&rows),
            [
                ("_atp.alpha.test", Verdict::Ok),
                ("atp.alpha.test", Verdict::Invalid),
                ("ats._atp.alpha.test", Verdict::Invalid),
                ("default.atk._atp.alpha.test", Verdict::Invalid),
                ("old.atk._atp.alpha.test", Verdict::Invalid),
                ("other.atk._atp.alpha.test", Verdict::Invalid),
            ]
        );
        assert!(rows[1].2.contains("no A/AAAA"));
        assert!(rows[2].2.contains("999.1.1.1"), "{}", rows[2].2);
        assert!(rows[3].2.contains("32 bytes"), "{}", rows[3].2);
        assert_eq!(rows[4].2, "key revoked or expired");
        assert!(rows[5].2.contains("but the local key 'other'"), "{}", rows[5].2);

        let mut two = StaticResolver::new();
        two.add_txt("ats._atp.alpha.test", "v=atp1 allow=all").add_txt("ats._atp.alpha.test", "v=atp1 deny=all");
        let rows = run(&two, &[], &[]);
        assert_eq!(rows[1].1, Verdict::Invalid);
        assert!(rows[1].2.starts_with("2 v=atp1 records"));
    }

    #[test]
    fn lookup_failures_and_warnings() {
        let mut r = published();
        r.fail("_atp.alpha.test").fail("next.atk._atp.alpha.test");
        let rows = run(&r, &["default", "next"], &[]);
        assert_eq!(rows[0].1, Verdict::Error);
        assert!(rows[0].2.contains("SERVFAIL"));
        assert_eq!(rows.last().unwrap().1, Verdict::Error);

        // SRV fallback, and an ATS policy that denies the server's own address: a warning only.
        let mut r = StaticResolver::new();
        r.add_srv(
            "_atp._tcp.alpha.test",
            SrvRecord { priority: 1, weight: 1, port: 0, target: "mx.alpha.test.".into() },
        )
        .add_ip("mx.alpha.test", "198.51.100.1".parse().unwrap())
        .add_txt("ats._atp.alpha.test", "v=atp1 allow=ip:192.0.2.0/24 deny=all");
        let rows = run(&r, &[], &[]);
        assert_eq!(verdicts(&rows)[..2], [("_atp.alpha.test", Verdict::Ok), ("mx.alpha.test", Verdict::Ok)]);
        assert_eq!(rows[0].2, "mx.alpha.test:7443");
        assert_eq!(rows[2].1, Verdict::Warning);
        assert!(rows[2].2.contains("denies the server's address 198.51.100.1 by deny=all"), "{}", rows[2].2);
        assert!(!Verdict::Warning.is_problem());
    }
}
