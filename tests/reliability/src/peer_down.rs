//! Scenario `peer-down`: the receiving server is killed and stays down for `--down-secs` while the
//! sending server keeps accepting submissions (every one must be a 202: the message waits in the
//! sender's queue, docs/protocol.md §8); then it comes back on the same home and port and everything
//! must arrive exactly once within a deadline. Reports the time from the restart to the last
//! delivery (which the retry backoff, `--retry-base` / `--retry-cap`, dominates).

use std::time::{Duration, Instant};

use crate::load::{drain, Inbox, Load, Tally};
use crate::report::Row;
use crate::servers::{Launch, Pair};
use crate::Error;

/// Settings of the scenario.
pub struct PeerDown {
    pub down_secs: u64,
    pub clients: usize,
    /// Pause of each client between submissions.
    pub pace: Duration,
    /// How long after the restart everything must have arrived.
    pub deadline: Duration,
}

pub async fn run(p: &PeerDown, launch: &Launch, dir: &std::path::Path) -> Result<Row, Error> {
    let started = Instant::now();
    let mut pair = Pair::new(launch, dir, None)?;
    pair.start().await?;
    let alpha = pair.alpha.api(Duration::from_secs(30))?;
    let beta = pair.beta.api(Duration::from_secs(30))?;
    // A few messages while both are up (the sender learns the way), then the peer goes down.
    let warm = Load::start(&alpha, "warm", 1, Some(Duration::from_millis(50)));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut ledger = warm.stop().await;
    pair.beta.note("peer-down: kill -9");
    pair.beta.kill9();
    eprintln!("  peer-down: beta killed; submitting to alpha for {} s", p.down_secs);
    let load = Load::start(&alpha, "down", p.clients, Some(p.pace));
    let down_since = Instant::now();
    let mut last_report = Instant::now();
    while down_since.elapsed() < Duration::from_secs(p.down_secs) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if last_report.elapsed() > Duration::from_secs(60) {
            eprintln!("  peer-down: {:.0} s down, {} accepted", down_since.elapsed().as_secs_f64(), load.accepted());
            last_report = Instant::now();
        }
    }
    ledger.merge(load.stop().await);
    let (queued, _) = alpha.queue().await?;
    pair.beta.note("peer-down: restart");
    pair.beta.start().await?;
    let restarted = Instant::now();
    eprintln!(
        "  peer-down: beta back after {:.1} s; {queued} messages waiting in alpha's queue",
        down_since.elapsed().as_secs_f64()
    );
    let mut inbox = Inbox::new();
    let drained = drain(&mut inbox, &alpha, &beta, &ledger.accepted, p.deadline).await?;
    let t = Tally::of(&ledger, &inbox, "");
    let not_202 = t.uncertain + t.refused + t.unclear;
    let mut notes = vec![format!("{queued} waiting when the peer came back")];
    let catch_up = drained.all_arrived.map(|at| at.duration_since(restarted));
    match catch_up {
        Some(d) => notes.push(format!("restart → last delivery {:.1} s", d.as_secs_f64())),
        None => notes.push(format!("not all delivered within {} s of the restart", p.deadline.as_secs())),
    }
    if not_202 > 0 {
        notes.push(format!("{not_202} submissions were not answered 202 while the peer was down"));
        notes.extend(ledger.samples.values().take(2).cloned());
        notes.extend(ledger.unclear.iter().cloned());
        notes.extend(ledger.failures.iter().cloned());
    }
    if drained.bounced != 0 {
        notes.push(format!("{} bounced", drained.bounced));
    }
    let pass = t.exact() && not_202 == 0 && catch_up.is_some() && drained.bounced == 0;
    eprintln!(
        "  peer-down: {} accepted, {} delivered, {} lost, {} duplicates; {}",
        t.accepted,
        t.delivered,
        t.lost,
        t.duplicates,
        notes.join("; ")
    );
    Ok(Row::new(&format!("peer-down {} s", p.down_secs), 1, &t, started.elapsed(), pass, notes))
}
