//! The client commands of the command line (docs/protocol.md §9), one module per group:
//!
//! | module | commands |
//! |---|---|
//! | [`agent`] | `agent register`, `agent list` |
//! | [`send`] | `send` |
//! | [`recv`] | `recv` (and the cursor file) |
//! | [`mcp`] | `mcp`: one agent's mail as an MCP server on stdio |
//! | [`keys`] | `keys generate`, `show`, `list`, `rotate` |
//! | [`status`] | `status`, `inspect` |
//! | [`dns`] | `dns generate`, `dns check` |
//! | [`doctor`] | `doctor` |
//! | [`completions`] | `completions` |
//! | [`man`] | `man` |
//!
//! Shared rules: exit code 0 on success and 1 on any failure (the reference exits 0 on a failed
//! send, docs/protocol.md §12 item 21); a failure is one line `error: …` on stderr, or with
//! `--output json` one object `{"status":"error","error",…}` on stdout carrying the server's
//! `error_code` and HTTP status.

pub mod agent;
pub mod completions;
pub mod dns;
pub mod doctor;
pub mod keys;
pub mod man;
pub mod mcp;
pub mod recv;
pub mod send;
pub mod status;
pub mod store;

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use serde_json::{json, Value};

use crate::cli::{Command, DnsAction, HomeOpt, KeysAction, Output};
use crate::client::ClientError;
use crate::config::{ConfigError, FileConfig};
use crate::home::{Home, HomeError};
use crate::http::one_line;

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CmdError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Home(#[from] HomeError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Dns(#[from] crate::dns::DnsSetupError),
    /// The command line or the configuration does not say enough.
    #[error("{0}")]
    Usage(String),
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    /// The result was printed already and says what is wrong (e.g. `dns check`); in JSON mode
    /// nothing more is printed.
    #[error("{0}")]
    Reported(String),
    /// The reader of stdout went away (`atp recv --follow | head`): stop quietly.
    #[error("stdout closed")]
    StdoutClosed,
}

impl CmdError {
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> CmdError {
        let what = what.into();
        move |source| CmdError::Io { what, source }
    }
}

/// Runs a client command on a current-thread runtime and reports its failure.
pub fn run(command: Command) -> ExitCode {
    let output = output_of(&command);
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            report(&CmdError::io("cannot start the runtime")(e), output);
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(command)) {
        Ok(()) | Err(CmdError::StdoutClosed) => ExitCode::SUCCESS,
        Err(e) => {
            report(&e, output);
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(command: Command) -> Result<(), CmdError> {
    use crate::cli::AgentAction;
    match command {
        Command::Server { .. } => Err(CmdError::Usage("`server` is not a client command".into())),
        Command::Agent { action: AgentAction::Register(a) } => agent::register(a).await,
        Command::Agent { action: AgentAction::List(a) } => agent::list(a).await,
        Command::Send(a) => send::send(a).await,
        Command::Recv(a) => recv::recv(a).await,
        Command::Mcp(a) => mcp::mcp(a).await,
        Command::Keys { action } => match action {
            KeysAction::Generate(a) => keys::generate(a),
            KeysAction::Show(a) => keys::show(a),
            KeysAction::List(a) => keys::list(a),
            KeysAction::Rotate(a) => keys::rotate(a),
        },
        Command::Status(a) => status::status(a).await,
        Command::Inspect(a) => status::inspect(a).await,
        Command::Dns { action: DnsAction::Generate(a) } => dns::generate(a),
        Command::Dns { action: DnsAction::Check(a) } => dns::check_command(a).await,
        Command::Doctor(a) => doctor::doctor(a).await,
        Command::Store { action: crate::cli::StoreAction::Migrate(a) } => store::migrate(a).await,
        Command::Completions(a) => completions::completions(a),
        Command::Man(a) => man::man(a),
    }
}

fn output_of(command: &Command) -> Output {
    use crate::cli::AgentAction;
    match command {
        Command::Server { .. } => Output::Text,
        Command::Agent { action: AgentAction::Register(a) } => a.output,
        Command::Agent { action: AgentAction::List(a) } => a.output,
        Command::Send(a) => a.output,
        Command::Recv(a) => a.output,
        Command::Keys { action } => match action {
            KeysAction::Generate(a) => a.output,
            KeysAction::Show(a) => a.output,
            KeysAction::List(a) => a.output,
            KeysAction::Rotate(a) => a.output,
        },
        Command::Status(a) => a.output,
        Command::Inspect(a) => a.output,
        Command::Dns { action: DnsAction::Generate(a) } => a.output,
        Command::Dns { action: DnsAction::Check(a) } => a.output,
        Command::Doctor(a) => a.output,
        Command::Store { action: crate::cli::StoreAction::Migrate(a) } => a.output,
        Command::Completions(_) | Command::Man(_) | Command::Mcp(_) => Output::Text,
    }
}

/// Prints a failure: `error: …` on stderr, or a JSON object on stdout.
fn report(e: &CmdError, output: Output) {
    match output {
        Output::Text => eprintln!("error: {}", one_line(&e.to_string())),
        Output::Json => {
            if matches!(e, CmdError::Reported(_)) {
                return;
            }
            let v = match e {
                CmdError::Client(ClientError::Api { status, message, code, .. }) => {
                    json!({"status": "error", "error": message, "error_code": code, "http_status": status})
                }
                other => json!({"status": "error", "error": one_line(&other.to_string())}),
            };
            let _ = print_json(&v);
        }
    }
}

/// Pretty JSON on stdout.
pub fn print_json(v: &Value) -> Result<(), CmdError> {
    let text = serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string());
    print_line(&text)
}

/// One line (or block) on stdout, failing instead of panicking when stdout is closed.
pub fn print_line(text: &str) -> Result<(), CmdError> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}").and_then(|_| out.flush()).map_err(|e| match e.kind() {
        std::io::ErrorKind::BrokenPipe => CmdError::StdoutClosed,
        _ => CmdError::io("stdout")(e),
    })
}

/// Bytes on stdout (a generated script or page), failing instead of panicking when stdout is closed.
pub fn write_stdout(bytes: &[u8]) -> Result<(), CmdError> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes).and_then(|_| out.flush()).map_err(|e| match e.kind() {
        std::io::ErrorKind::BrokenPipe => CmdError::StdoutClosed,
        _ => CmdError::io("stdout")(e),
    })
}

/// The home directory of `--home` / `ATP_HOME` / `~/.atp`.
pub fn home(opt: &HomeOpt) -> Home {
    Home::resolve(opt.home.clone())
}

/// `flag`, else `agent_id` from `config.toml` (docs/protocol.md §8.8).
pub fn default_agent(home: &Home, flag: Option<String>, flag_name: &str) -> Result<String, CmdError> {
    if let Some(f) = flag {
        return Ok(f);
    }
    FileConfig::load(&home.config_path())?.agent_id.filter(|a| !a.trim().is_empty()).ok_or_else(|| {
        CmdError::Usage(format!("no agent given: pass {flag_name} or set agent_id in {}", home.config_path().display()))
    })
}

/// The password given, else asked once on the terminal (hidden).
pub fn password(given: Option<String>, agent: &str) -> Result<String, CmdError> {
    if let Some(p) = given {
        return Ok(p);
    }
    if !std::io::stdin().is_terminal() {
        return Err(CmdError::Usage(format!(
            "no password for {agent}: pass --password (or set ATP_PASSWORD); stdin is not a terminal, so it cannot be asked"
        )));
    }
    let p = rpassword::prompt_password(format!("Password for {agent}: ")).map_err(CmdError::io("password prompt"))?;
    if p.is_empty() {
        return Err(CmdError::Usage("empty password".into()));
    }
    Ok(p)
}

/// A new password: the one given, else asked twice on the terminal (hidden), as the reference's
/// `agent register` does.
pub fn new_password(given: Option<String>) -> Result<String, CmdError> {
    if let Some(p) = given {
        if p.is_empty() {
            return Err(CmdError::Usage("empty password".into()));
        }
        return Ok(p);
    }
    if !std::io::stdin().is_terminal() {
        return Err(CmdError::Usage(
            "no password: pass -p/--password (or set ATP_PASSWORD); stdin is not a terminal, so it cannot be asked"
                .into(),
        ));
    }
    let first = rpassword::prompt_password("Password: ").map_err(CmdError::io("password prompt"))?;
    if first.is_empty() {
        return Err(CmdError::Usage("empty password".into()));
    }
    let second = rpassword::prompt_password("Repeat for confirmation: ").map_err(CmdError::io("password prompt"))?;
    if first != second {
        return Err(CmdError::Usage("the two passwords differ".into()));
    }
    Ok(first)
}

/// Unix seconds as `YYYY-MM-DD HH:MM:SS UTC` (the reference's `inspect` format).
pub fn utc(ts: i64) -> String {
    let (days, secs) = (ts.div_euclid(86_400), ts.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC", secs / 3600, secs % 3600 / 60, secs % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_795_545_211), "2026-11-24 18:33:31 UTC");
        assert_eq!(utc(-1), "1969-12-31 23:59:59 UTC");
    }

    #[test]
    fn default_agent_comes_from_the_flag_then_config() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home { root: dir.path().to_owned() };
        assert_eq!(default_agent(&home, Some("a".into()), "--from").unwrap(), "a");
        let e = default_agent(&home, None, "--from").unwrap_err().to_string();
        assert!(e.starts_with("no agent given: pass --from or set agent_id in"), "{e}");
        std::fs::write(home.config_path(), "agent_id = \"bob@beta.test\"\n").unwrap();
        assert_eq!(default_agent(&home, None, "--agent-id").unwrap(), "bob@beta.test");
    }
}
