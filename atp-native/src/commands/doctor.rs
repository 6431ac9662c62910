//! `atp doctor --domain D`: everything mail for a domain needs, checked in the order mail flows,
//! each a ✓ (fine), ! (worth a look) or ✗ (mail does not flow) line with a fix:
//!
//! 1. DNS (docs/protocol.md §5): discovery (SVCB `_atp`, `_agent`, SRV `_atp._tcp`), the addresses of
//!    its hosts, ATS, and ATK for each live key, matching the key in the home ([`super::dns::check`]).
//! 2. The endpoint discovery finds (or `--server`), as a sending server sees it ([`probe`]): the port
//!    answers TLS 1.3 with ALPN `atp/1`; the certificate's chain (Web PKI roots plus `--ca-cert`),
//!    its name (the endpoint's host), its expiry in days; the clock against the server's `Date`.
//! 3. This machine ([`local`]): the home's permissions, free disk space, the configured database
//!    ([`database`]: it opens, its schema version), and the queue (the oldest waiting message, the
//!    domains backing off) read from the SQLite database, read-only.
//!
//! The exit code is 1 when any line is ✗ (docs/protocol.md §9: 0 on success, 1 on failure).

mod database;
mod local;
mod probe;
mod x509;

use std::collections::HashMap;
use std::net::SocketAddr;

use atp_wasm::env::{Clock, Resolver, SystemClock};
use atp_wasm::keys::PublicKey;
use atp_wasm::records::svcb::{discover, Endpoint};
use serde_json::json;

use super::dns::{self, Verdict};
use super::{home, print_json, print_line, utc, CmdError};
use crate::cli::{DoctorArgs, Output};
use atp_wasm::client::ServerUrl;

use crate::client::ClientError;
use crate::home::Home;

/// The verdict of one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    Ok,
    /// Worth a look; does not fail the run.
    Warn,
    /// Mail does not flow (or will not soon).
    Fail,
}

impl Mark {
    fn symbol(self) -> &'static str {
        match self {
            Mark::Ok => "✓",
            Mark::Warn => "!",
            Mark::Fail => "✗",
        }
    }
    fn as_str(self) -> &'static str {
        match self {
            Mark::Ok => "ok",
            Mark::Warn => "warning",
            Mark::Fail => "problem",
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub check: String,
    pub mark: Mark,
    pub detail: String,
    /// What to do (✗ and ! lines).
    pub fix: Option<String>,
}

impl Line {
    pub fn ok(check: impl Into<String>, detail: impl Into<String>) -> Self {
        Line { check: check.into(), mark: Mark::Ok, detail: detail.into(), fix: None }
    }
    pub fn warn(check: impl Into<String>, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Line { check: check.into(), mark: Mark::Warn, detail: detail.into(), fix: Some(fix.into()) }
    }
    pub fn fail(check: impl Into<String>, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Line { check: check.into(), mark: Mark::Fail, detail: detail.into(), fix: Some(fix.into()) }
    }
}

/// The thresholds of a run.
#[derive(Debug, Clone)]
pub struct Limits {
    pub cert_days: i64,
    pub max_skew: i64,
}

pub async fn doctor(a: DoctorArgs) -> Result<(), CmdError> {
    let domain = dns::domain_arg(&a.domain)?;
    let home = home(&a.home);
    let resolver = crate::dns::DnsResolver::new(a.dns_server)?;
    let now = SystemClock.now();
    let mut lines = dns_lines(&resolver, &domain, &home, &a.selectors, now).await;

    let endpoint = match &a.server {
        Some(s) => {
            let url = ServerUrl::parse(s).map_err(ClientError::BadServer)?;
            Some(Endpoint { host: url.host, port: url.port, alpn: vec![atp_wasm::ALPN_ATP.into()] })
        }
        None => discover(&resolver, &domain).await.ok().and_then(|eps| eps.into_iter().next()),
    };
    let limits = Limits { cert_days: a.cert_days, max_skew: a.max_skew };
    match endpoint {
        Some(ep) => lines.extend(endpoint_lines(&resolver, &ep, a.ca_cert.as_deref(), &limits, now).await),
        None => lines.push(Line::fail(
            "endpoint",
            "not checked: discovery found no server for the domain",
            "publish the discovery record above, or pass --server HOST:PORT to check a server before DNS points at it",
        )),
    }

    lines.push(local::permissions(&home));
    lines.push(local::disk(&home, a.min_free_mib));
    let db = match &a.database {
        Some(url) => url.parse().map_err(|e: crate::store::backend::BadDatabaseUrl| CmdError::Usage(e.to_string()))?,
        None => crate::store::DatabaseUrl::Sqlite(home.db_path(&domain)),
    };
    lines.push(database::check(&db).await);
    lines.extend(local::queue(&home, &domain, now, a.queue_age));

    render(&domain, &lines, a.output)?;
    let problems = lines.iter().filter(|l| l.mark == Mark::Fail).count();
    if problems > 0 {
        return Err(CmdError::Reported(format!("{problems} problem(s) found for {domain}")));
    }
    Ok(())
}

/// The DNS records, as `atp dns check` sees them, each with its fix.
async fn dns_lines<R: Resolver>(resolver: &R, domain: &str, home: &Home, selectors: &[String], now: i64) -> Vec<Line> {
    let live = home.live_keys().unwrap_or_default();
    let selectors: Vec<String> = if !selectors.is_empty() {
        selectors.to_vec()
    } else if !live.is_empty() {
        live.iter().map(|(k, _)| k.selector.clone()).collect()
    } else {
        // A key file without keyring.json (copied in by hand) signs all the same.
        let configured = crate::config::FileConfig::load(&home.config_path()).ok().and_then(|c| c.key_selector);
        vec![configured.unwrap_or_else(|| "default".into())]
    };
    let local: HashMap<String, PublicKey> =
        selectors.iter().filter_map(|s| home.public_key(s).ok().map(|pk| (s.clone(), pk))).collect();
    let generate = format!("`atp dns generate --domain {domain} --ip <server IP> --home {}`", home.root.display());
    let mut lines = Vec::new();
    for c in dns::check(resolver, domain, &selectors, &local, now).await {
        let (check, fix) = match c.record {
            "SVCB" => (
                "discovery (SVCB/SRV)".to_owned(),
                format!(
                    "publish `_atp.{domain}. IN SVCB 1 atp.{domain}. alpn=\"atp/1\" port=7443` and an A/AAAA record \
                     for atp.{domain} ({generate} prints them)"
                ),
            ),
            "ADDR" => (
                format!("address {}", c.name),
                format!("publish an A (and/or AAAA) record for {} with the server's public address", c.name),
            ),
            "ATS" => (
                "ATS record".to_owned(),
                format!(
                    "publish exactly one `ats._atp.{domain}. IN TXT \"v=atp1 allow=ip:<server IP> deny=all\"` \
                     listing every address mail leaves from"
                ),
            ),
            _ => {
                let selector = c.name.split('.').next().unwrap_or("default").to_owned();
                (
                    format!("ATK record '{selector}'"),
                    format!(
                        "publish the home's key: {generate} prints the ATK line (`atp keys show --selector {selector} \
                         --public` prints the key); receivers reject signatures they cannot match"
                    ),
                )
            }
        };
        let fix = match c.verdict {
            Verdict::Error => "the DNS servers did not answer: check the zone's name servers (dig +trace)".into(),
            _ => fix,
        };
        lines.push(match c.verdict {
            Verdict::Ok if c.record == "ATK" && !local.contains_key(c.name.split('.').next().unwrap_or("")) => {
                Line::warn(
                    check,
                    format!("{}: {}; no local key to compare with in {}", c.name, c.detail, home.keys_dir().display()),
                    "pass --home with the server's home so that the published key is compared with its own",
                )
            }
            Verdict::Ok => Line::ok(check, format!("{}: {}", c.name, c.detail)),
            Verdict::Warning => Line::warn(check, format!("{}: {}", c.name, c.detail), fix),
            _ => Line::fail(check, format!("{}: {} ({})", c.name, c.detail, c.verdict.as_str()), fix),
        });
    }
    lines
}

/// The endpoint as a sending server sees it.
async fn endpoint_lines<R: Resolver>(
    resolver: &R,
    ep: &Endpoint,
    ca_cert: Option<&std::path::Path>,
    limits: &Limits,
    now: i64,
) -> Vec<Line> {
    let target = format!("{}:{}", ep.host, ep.port);
    let port_fix = format!(
        "start atp there with TLS (`atp server start --domain … --port {} --cert … --key …`, not --no-tls) and open \
         TCP port {} in the firewall",
        ep.port, ep.port
    );
    let ip = match resolver.ip_addrs(&ep.host).await {
        Ok(ips) if !ips.is_empty() => ips[0],
        Ok(_) => return vec![Line::fail("port", format!("{} has no address", ep.host), port_fix)],
        Err(e) => return vec![Line::fail("port", format!("{}: {e}", ep.host), port_fix)],
    };
    let probe = match probe::probe(SocketAddr::new(ip, ep.port), &ep.host).await {
        Ok(p) => p,
        Err(e) => return vec![Line::fail("port", e.to_string(), port_fix)],
    };
    let mut lines = Vec::new();
    let alpn = probe.alpn.as_deref().map(String::from_utf8_lossy);
    let version_ok = probe.version == Some(rustls::ProtocolVersion::TLSv1_3);
    match alpn.as_deref() {
        Some(atp_wasm::ALPN_ATP) if version_ok => {
            lines.push(Line::ok("port", format!("{target} ({ip}) answers TLS 1.3 with ALPN atp/1")))
        }
        other => lines.push(Line::fail(
            "port",
            format!("{target} ({ip}) answered TLS 1.3 without ALPN atp/1 (selected: {})", other.unwrap_or("none")),
            "serve ALPN atp/1 (atp server start does; a TLS-terminating proxy in front must offer atp/1)",
        )),
    }

    let cert_fix = "install the full chain (certificate and intermediates, e.g. ACME's fullchain.pem) from a CA \
                    that sending servers trust; for a private CA, pass its certificate with --ca-cert";
    match probe::roots(ca_cert) {
        Err(e) => lines.push(Line::fail("certificate chain", e, "pass a readable PEM file to --ca-cert")),
        Ok(roots) => match probe::verify_chain(&probe.chain, &ep.host, roots) {
            Ok(()) => {
                lines.push(Line::ok("certificate chain", format!("trusted ({} certificates)", probe.chain.len())))
            }
            Err(e) => lines.push(Line::fail("certificate chain", e, cert_fix)),
        },
    }
    if let Some(end) = probe.chain.first() {
        match probe::verify_name(end, &ep.host) {
            Ok(()) => lines.push(Line::ok("certificate name", format!("valid for {}", ep.host))),
            Err(e) => lines.push(Line::fail(
                "certificate name",
                e,
                format!(
                    "get a certificate whose subjectAltName holds {}, or point the SVCB target at a name the \
                     certificate holds",
                    ep.host
                ),
            )),
        }
        lines.push(match x509::validity(end.as_ref()) {
            None => Line::fail("certificate expiry", "the certificate's validity cannot be read", cert_fix),
            Some((_, not_after)) => {
                let days = (not_after - now).div_euclid(86_400);
                let text = format!("expires {} ({days} days)", utc(not_after));
                if days < limits.cert_days {
                    Line::fail(
                        "certificate expiry",
                        format!("{text}, under {} days", limits.cert_days),
                        "renew it (ACME: certbot renew), then `systemctl reload atp` or `kill -HUP <pid>`: atp loads \
                         the new --cert/--key without a restart",
                    )
                } else {
                    Line::ok("certificate expiry", text)
                }
            }
        });
    }

    let clock_fix = "synchronise the clocks (systemd-timesyncd or chrony: `timedatectl set-ntp true`) on the machine \
                     that is wrong: receivers refuse messages more than 60 s in their future";
    lines.push(match (probe.status, probe.skew) {
        (_, Some(skew)) if skew.abs() > limits.max_skew => Line::fail(
            "clock",
            format!("{skew:+} s against the server's Date (more than {} s)", limits.max_skew),
            clock_fix,
        ),
        (_, Some(skew)) => Line::ok("clock", format!("{skew:+} s against the server's Date")),
        (Some(status), None) => {
            Line::fail("clock", format!("health answered {status} without a Date header"), clock_fix)
        }
        (None, None) => Line::fail("clock", "no answer to GET /.well-known/atp/v1/health", port_fix),
    });
    lines
}

/// The report: aligned lines with the fixes under the ✗ and ! lines, or JSON.
fn render(domain: &str, lines: &[Line], output: Output) -> Result<(), CmdError> {
    let problems = lines.iter().filter(|l| l.mark == Mark::Fail).count();
    match output {
        Output::Json => print_json(&json!({
            "domain": domain,
            "ok": problems == 0,
            "problems": problems,
            "checks": lines.iter().map(|l| json!({
                "check": l.check, "status": l.mark.as_str(), "detail": l.detail, "fix": l.fix,
            })).collect::<Vec<_>>(),
        })),
        Output::Text => {
            let width = lines.iter().map(|l| l.check.chars().count()).max().unwrap_or(0);
            let mut text = vec![format!("atp doctor: {domain}")];
            for l in lines {
                text.push(format!("{} {:width$}  {}", l.mark.symbol(), l.check, l.detail));
                if let Some(fix) = l.fix.as_ref().filter(|_| l.mark != Mark::Ok) {
                    text.push(format!("  {:width$}  fix: {fix}", ""));
                }
            }
            text.push(match problems {
                0 => format!("no problems found for {domain}"),
                n => format!("{n} problem(s) found for {domain}"),
            });
            print_line(&text.join("\n"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use atp_wasm::env::StaticResolver;
    use atp_wasm::records::atk::AtkRecord;
    use atp_wasm::records::svcb::SvcbRecord;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
    }

    #[test]
    fn dns_lines_carry_fixes_and_compare_the_local_key() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home { root: dir.path().to_owned() };
        let (key, _) = home.generate_key("default", 0, false).unwrap();
        let mut r = StaticResolver::new();
        r.add_svcb("_atp.a.test", SvcbRecord::service(1, "atp.a.test", 7443))
            .add_ip("atp.a.test", "192.0.2.1".parse().unwrap())
            .add_txt("ats._atp.a.test", "v=atp1 allow=ip:192.0.2.1 deny=all")
            .add_txt("default.atk._atp.a.test", &AtkRecord::new(*key.public_key().as_bytes()).to_string());
        let lines = block_on(dns_lines(&r, "a.test", &home, &[], 1));
        assert!(lines.iter().all(|l| l.mark == Mark::Ok), "{lines:#?}");

        let other = Home { root: dir.path().join("elsewhere") };
        let lines = block_on(dns_lines(&r, "a.test", &other, &[], 1));
        assert_eq!(lines.last().unwrap().mark, Mark::Warn, "no local key to compare");

        let lines = block_on(dns_lines(&StaticResolver::new(), "a.test", &home, &[], 1));
        let marks: Vec<(&str, Mark)> = lines.iter().map(|l| (l.check.as_str(), l.mark)).collect();
        assert_eq!(
            marks,
            [("discovery (SVCB/SRV)", Mark::Fail), ("ATS record", Mark::Fail), ("ATK record 'default'", Mark::Fail)]
        );
        assert!(lines[0].fix.as_deref().unwrap().contains("_atp.a.test. IN SVCB 1 atp.a.test."));
        assert!(lines[2].fix.as_deref().unwrap().contains("atp dns generate --domain a.test"));
    }
}
