//! Scenario `crash`: `kill -9` of the sending or the receiving server at a random moment under
//! load, then a restart on the same home and port; every 202 must end up in the recipient's inbox
//! exactly once, and a submission that got no answer at most once.

use std::time::{Duration, Instant};

use crate::load::{drain, Inbox, Load, Tally};
use crate::report::Row;
use crate::servers::{Launch, Pair};
use crate::{Error, Rng};

/// Settings of the scenario.
pub struct Crash {
    pub trials: u32,
    /// Seconds of submission per trial (the kill falls inside, the restart too).
    pub trial_secs: f64,
    pub clients: usize,
    pub drain_secs: u64,
}

pub async fn run(c: &Crash, launch: &Launch, dir: &std::path::Path, rng: &mut Rng) -> Result<Row, Error> {
    let started = Instant::now();
    let mut pair = Pair::new(launch, dir, None)?;
    pair.start().await?;
    let alpha = pair.alpha.api(Duration::from_secs(30))?;
    let beta = pair.beta.api(Duration::from_secs(30))?;
    let mut inbox = Inbox::new();
    let mut total = Tally::default();
    let mut notes = Vec::new();
    let (mut alpha_kills, mut beta_kills) = (0, 0);
    let first = rng.below(2);
    for trial in 1..=c.trials {
        let prefix = format!("crash-{trial}-");
        // Alternate victims, the first one at random.
        let kill_alpha = (u64::from(trial) + first).is_multiple_of(2);
        let kill_at = Duration::from_secs_f64(c.trial_secs * (0.15 + 0.5 * rng.unit()));
        let down_for = Duration::from_secs_f64(rng.unit());
        let load = Load::start(&alpha, prefix.trim_end_matches('-'), c.clients, None);
        tokio::time::sleep(kill_at).await;
        let at_kill = load.accepted();
        let victim = if kill_alpha { &mut pair.alpha } else { &mut pair.beta };
        victim.note(&format!("trial {trial}: kill -9"));
        victim.kill9();
        if kill_alpha {
            alpha_kills += 1;
        } else {
            beta_kills += 1;
        }
        tokio::time::sleep(down_for).await;
        victim.note(&format!("trial {trial}: restart"));
        victim.start().await?;
        let rest = Duration::from_secs_f64(c.trial_secs).saturating_sub(kill_at + down_for).max(Duration::from_secs(1));
        tokio::time::sleep(rest).await;
        let ledger = load.stop().await;
        let drained = drain(&mut inbox, &alpha, &beta, &ledger.accepted, Duration::from_secs(c.drain_secs)).await?;
        let t = Tally::of(&ledger, &inbox, &prefix);
        let ok = t.exact() && t.unclear == 0 && t.refused_arrived == 0 && drained.bounced == 0;
        eprintln!(
            "  crash trial {trial}/{}: kill -9 {} at {:.1} s ({at_kill} accepted by then), down {:.1} s: \
             {} accepted, {} delivered, {} lost, {} duplicates; {} without answer ({} arrived), {} refused, \
             queue left {}, {}",
            c.trials,
            if kill_alpha { "alpha" } else { "beta" },
            kill_at.as_secs_f64(),
            down_for.as_secs_f64(),
            t.accepted,
            t.delivered,
            t.lost,
            t.duplicates,
            t.uncertain,
            t.uncertain_arrived,
            t.refused,
            drained.queue_left,
            if ok { "ok" } else { "FAILED" }
        );
        if !ok {
            notes.push(format!(
                "trial {trial} failed (lost {}, duplicates {}, strays {}, unclear {}, refused but delivered {}, bounced {})",
                t.lost, t.duplicates, t.strays, t.unclear, t.refused_arrived, drained.bounced
            ));
            notes.extend(ledger.unclear.iter().cloned());
        }
        total.add(&t);
    }
    let pass = notes.is_empty();
    notes.insert(
        0,
        format!(
            "kills: {alpha_kills} alpha, {beta_kills} beta; {} submissions without answer ({} of them delivered, once)",
            total.uncertain, total.uncertain_arrived
        ),
    );
    Ok(Row::new("crash", c.trials, &total, started.elapsed(), pass, notes))
}
