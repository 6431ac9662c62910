//! `atp-conformance`: runs the kit against a server and prints the table (exit 0 iff no unexpected
//! failure), prints the records the server must resolve, or lists the cases.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use atp_conformance::foreign::Foreign;
use atp_conformance::kit::Agent;
use atp_conformance::{Config, ExpectedFailures, Target};
use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(name = "atp-conformance", version, about = "Black-box conformance kit for ATP servers")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the cases against a server and print the table.
    Run(RunArgs),
    /// Print the ATS/ATK records of the kit's foreign domains (publish them before `run`).
    Records {
        #[command(flatten)]
        foreign: ForeignArgs,
        #[arg(long, value_enum, default_value = "dns-override")]
        format: Format,
    },
    /// List the cases with their sections and expected outcomes.
    List,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    /// The reference's dns_override.toml (atp-native --dns-override, reference local_mode).
    DnsOverride,
    /// BIND zone lines with absolute names.
    Zone,
    Json,
}

#[derive(Args)]
struct ForeignArgs {
    /// Seed of the foreign domains' keys (the same for `records` and `run`).
    #[arg(long, default_value = "atp-conformance")]
    seed: String,
    /// The foreign domains are <label>.<suffix>.
    #[arg(long, default_value = "conf.test")]
    foreign_suffix: String,
    /// The address the server sees the kit's connections come from (ATS records allow it).
    #[arg(long, default_value = "127.0.0.1")]
    source_ip: IpAddr,
}

impl ForeignArgs {
    fn foreign(&self) -> Foreign {
        Foreign { seed: self.seed.clone(), suffix: self.foreign_suffix.clone(), source_ip: self.source_ip }
    }
}

#[derive(Args)]
struct RunArgs {
    /// The server, e.g. https://127.0.0.1:7443
    #[arg(long)]
    url: String,
    /// The server's domain.
    #[arg(long)]
    domain: String,
    /// An agent of the server as ID:PASSWORD (twice); without them the kit registers two.
    #[arg(long = "agent", value_name = "ID:PASSWORD")]
    agents: Vec<String>,
    /// The admin bearer token (the admin cases are N/A without it).
    #[arg(long, env = "ATP_CONFORMANCE_ADMIN_TOKEN")]
    admin_token: Option<String>,
    /// The implementation under test: its built-in expected failures and defaults.
    #[arg(long, value_enum, default_value = "atp")]
    target: Target,
    /// More expected failures: a file of case names (one a line, `#` comments).
    #[arg(long)]
    expect_fail: Option<PathBuf>,
    /// Mark the TLS cases N/A (TLS terminated in front of the server, e.g. Miniflare).
    #[arg(long)]
    no_tls_checks: bool,
    /// Do not require the `error_code` field on errors (the reference's errors have none).
    #[arg(long)]
    no_error_codes: bool,
    /// Run only the cases whose name contains this (repeatable).
    #[arg(long)]
    only: Vec<String>,
    #[command(flatten)]
    foreign: ForeignArgs,
}

fn agent(s: &str) -> Result<Agent, String> {
    let (id, pw) = s.split_once(':').ok_or_else(|| format!("--agent {s}: expected ID:PASSWORD"))?;
    Ok(Agent { id: id.to_ascii_lowercase(), password: pw.to_owned() })
}

fn config(a: &RunArgs) -> Result<(Config, ExpectedFailures), String> {
    let mut cfg = Config::new(&a.url, &a.domain);
    cfg.agents = match a.agents.as_slice() {
        [] => None,
        [x, y] => Some((agent(x)?, agent(y)?)),
        _ => return Err("--agent must be given twice (or not at all)".into()),
    };
    cfg.admin_token = a.admin_token.clone();
    cfg.foreign = a.foreign.foreign();
    cfg.target = a.target;
    cfg.tls_checks = !a.no_tls_checks && a.target != Target::Worker;
    cfg.error_codes = !a.no_error_codes && a.target != Target::Reference;
    cfg.only = a.only.clone();
    let mut xfail = ExpectedFailures::builtin(a.target);
    if let Some(f) = &a.expect_fail {
        let text = std::fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display()))?;
        xfail.extend(ExpectedFailures::parse(&text));
    }
    let names: Vec<&str> = atp_conformance::cases::all().iter().map(|c| c.name).collect();
    let unknown = xfail.unknown(&names);
    if !unknown.is_empty() {
        return Err(format!("expected failures name no case: {}", unknown.join(", ")));
    }
    Ok((cfg, xfail))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::List => {
            for c in atp_conformance::cases::all() {
                println!("{:<42} {:<20} {}", c.name, c.section, c.expect);
            }
            ExitCode::SUCCESS
        }
        Command::Records { foreign, format } => {
            let f = foreign.foreign();
            print!(
                "{}",
                match format {
                    Format::DnsOverride => f.dns_override_toml(),
                    Format::Zone => f.zone_lines(),
                    Format::Json => f.json() + "\n",
                }
            );
            ExitCode::SUCCESS
        }
        Command::Run(a) => {
            let (cfg, xfail) = match config(&a) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("atp-conformance: {e}");
                    return ExitCode::from(2);
                }
            };
            let rt = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("atp-conformance: {e}");
                    return ExitCode::from(2);
                }
            };
            println!("atp-conformance: {} ({}) as {:?}", cfg.url, cfg.domain, cfg.target);
            match rt.block_on(atp_conformance::run(cfg, &xfail)) {
                Ok(report) => {
                    print!("{}", report.table());
                    let details = report.details();
                    if !details.is_empty() {
                        println!("\n{details}");
                    }
                    if report.ok() {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    }
                }
                Err(e) => {
                    eprintln!("atp-conformance: {e}");
                    ExitCode::from(2)
                }
            }
        }
    }
}
