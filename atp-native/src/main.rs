//! `atp`: the Agent Transfer Protocol server and its command-line client (docs/design.md §1 "atp-native").
//!
//! | module | holds |
//! |---|---|
//! | [`cli`] | the command line |
//! | [`config`] | `config.toml` and the effective settings (flags > `ATP_*` > file > defaults) |
//! | [`home`] | the `~/.atp` layout and the domain key |
//! | [`tls`] | TLS 1.3 with ALPN, the self-signed certificate |
//! | [`resolver`] | DNS for the core: overrides (`peers.toml`, `dns_override.toml`), registry, DNS |
//! | [`dns`] | real DNS through hickory, cached |
//! | [`http`] | HTTP clients (reqwest, rustls): the core's transport, certificate trust, pinning |
//! | [`registry`] | the per-user registry of running local servers (zero-config discovery) |
//! | [`delivery`] | the outbound queue: signing, discovery, transfer, retries, bounces |
//! | [`store`] | SQLite: schema, migrations, group-commit writer |
//! | [`credentials`] | argon2id hashes and the verified-credential cache |
//! | [`routes`] | the HTTP API of docs/protocol.md §6 |
//! | [`error`] | the one place where a rejection becomes an HTTP response |
//! | [`metrics`] | counters for `/stats` and Prometheus `/metrics` |
//! | [`limits`] | connection limits: caps, header/idle/handshake timeouts, HTTP/2 limits |
//! | [`server`] | start-up, serving, graceful shutdown |
//! | [`logging`] | the server's log: text or JSON lines |
//! | [`client`] | the command line on the core's client: locating `--server`, the certificate prompt |
//! | [`commands`] | the client commands: `agent`, `send`, `recv`, `keys`, `status`, `inspect`, `dns` |

/// Prints a line to stderr like `eprintln!`, but never panics: a full disk or a closed stderr
/// must not take the server down (the line is lost instead). With `--log-format json` the line is
/// a log event, so that every line of the log is JSON.
macro_rules! say {
    ($($arg:tt)*) => {{
        if crate::logging::json() {
            tracing::info!("{}", format_args!($($arg)*));
        } else {
            use std::io::Write as _;
            let _ = writeln!(std::io::stderr(), $($arg)*);
        }
    }};
}

mod cli;
mod client;
mod commands;
mod config;
mod delivery;
mod dns;
mod error;
mod hasher;
mod home;
mod http;
mod limits;
mod logging;
mod metrics;
mod registry;
mod resolver;
mod routes;
mod server;
mod store;
mod tls;

use clap::Parser;

use crate::cli::{Cli, Command, ServerAction};
use crate::config::Settings;

/// Makes glibc give large blocks back to the system as soon as they are freed. Every argon2id hash
/// (credentials.rs) takes a 19 MiB buffer on a blocking-pool thread; glibc's adaptive mmap threshold
/// otherwise moves such blocks into that thread's heap arena, where they stay resident, so peak RSS
/// grew by ~19 MiB per thread that ever hashed (105 MiB after the recv-drain benchmark, 44 MiB
/// with this; tests/bench). A fixed threshold of 1 MiB keeps all blocks that large on mmap.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

fn main() -> std::process::ExitCode {
    tune_allocator();
    let cli = Cli::parse();
    match cli.command {
        Command::Server { action: ServerAction::Start(args) } => {
            let settings = match Settings::resolve(args) {
                Ok(s) => s,
                Err(e) => return fail(e),
            };
            logging::init(&settings.log_level, settings.log_format);
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(r) => r,
                Err(e) => return fail(e),
            };
            match runtime.block_on(server::run(settings)) {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(e) => fail(e),
            }
        }
        client_command => commands::run(client_command),
    }
}

fn fail(e: impl std::fmt::Display) -> std::process::ExitCode {
    say!("Error: {e}");
    std::process::ExitCode::FAILURE
}
