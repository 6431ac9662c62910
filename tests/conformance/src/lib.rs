//! # atp-conformance — a black-box conformance kit for ATP servers
//!
//! Given a server's URL and domain, the kit checks the protocol over HTTPS (docs/protocol.md §6, §11.3,
//! §12; docs/design.md §3): every route's success and error shapes, the matrix of transfers from foreign
//! servers (which the kit plays, signing with atp-wasm and its own keys), idempotent repeats and
//! replays, relaying, orphan mail, size limits, TLS 1.3 and ALPN. Each case knows the *correct*
//! outcome (what atp implements); a target's known deviations are listed as expected failures.
//!
//! The server must resolve the ATS/ATK records of the kit's foreign domains ([`foreign`]):
//! `atp-conformance records` prints them for a `dns_override.toml` or a BIND zone.

pub mod cases;
pub mod expect;
pub mod foreign;
pub mod http;
pub mod kit;
pub mod report;

pub use expect::ExpectedFailures;
pub use kit::{Config, Ctx, Target};
pub use report::Report;

/// Sets up (health check, agents) and runs every case.
pub async fn run(cfg: Config, xfail: &ExpectedFailures) -> Result<Report, kit::SetupError> {
    let cx = Ctx::setup(cfg).await?;
    Ok(report::run(&cx, &cases::all(), xfail).await)
}
