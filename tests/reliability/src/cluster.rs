//! Scenario `cluster` (docs/design.md §5d): `alpha.rel` served by two nodes on one throwaway
//! PostgreSQL (`--database postgres://…`, one shared home: one domain key), `beta.rel` by one
//! SQLite server. Clients submit to both alpha nodes at once.
//!
//! 1. **A node dies holding leases.** beta is paused (SIGSTOP), so alpha's attempts hang in
//!    flight, leased; once node 1 holds leases it gets `kill -9` and stays dead; beta resumes. The
//!    survivor must take the dead node's leases over when they expire (`--lease-seconds`) and
//!    deliver those messages.
//! 2. **PostgreSQL restarted under load** (submissions to node 2): while it is down, submissions
//!    are refused `503` with `"storage":"unavailable"` (never a 500, never a hang); after it is back
//!    the node accepts again by itself.
//!
//! Passes when every 202 is in beta's inbox exactly once, a submission without an answer at most
//! once, no refused submission arrived, nothing bounced, every row the dead node had leased was
//! delivered, the outage was answered with clear 503s and acceptance resumed after it.

use std::time::{Duration, Instant};

use crate::load::{drain, Inbox, Ledger, Load, Tally};
use crate::report::Row;
use crate::servers::{Launch, Server, RECIPIENT, SENDER};
use crate::Error;

#[path = "../../../atp-native/tests/common/postgres.rs"]
mod postgres;

/// Settings of the scenario.
pub struct Cluster {
    /// Clients per alpha node.
    pub clients: usize,
    /// `--lease-seconds` of the alpha nodes.
    pub lease_secs: u64,
    /// Seconds PostgreSQL stays down.
    pub pg_down_secs: f64,
    pub drain_secs: u64,
}

fn signal(pid: Option<u32>, sig: i32) {
    if let Some(pid) = pid {
        // SAFETY: kill(2) on a child process id of ours.
        unsafe {
            libc::kill(pid as i32, sig);
        }
    }
}

/// Waits until `cond` holds (checked every 50 ms) or `limit` passes; whether it held.
async fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cond()
}

pub async fn run(c: &Cluster, launch: &Launch, dir: &std::path::Path) -> Result<Row, Error> {
    let started = Instant::now();
    std::fs::create_dir_all(dir)?;
    let mut pg = tokio::task::spawn_blocking(postgres::Postgres::start).await.map_err(|e| Error::Msg(e.to_string()))?;
    let url = pg.create_db("atp");
    let registry = dir.join("registry");
    let home = dir.join("alpha");
    let mut beta = Server::new(launch, "beta.rel", &dir.join("beta"), &dir.join("beta.log"), &registry)?;
    let mut n1 = Server::new(launch, "alpha.rel", &home, &dir.join("alpha1.log"), &registry)?;
    let mut n2 = Server::new(launch, "alpha.rel", &home, &dir.join("alpha2.log"), &registry)?;
    for n in [&mut n1, &mut n2] {
        n.extra = vec!["--database".into(), url.clone(), "--lease-seconds".into(), c.lease_secs.to_string()];
    }
    beta.start().await?;
    n1.start().await?;
    n2.start().await?;
    let (a1, a2) = (n1.api(Duration::from_secs(30))?, n2.api(Duration::from_secs(30))?);
    a1.register(SENDER).await?;
    beta.api(Duration::from_secs(30))?.register(RECIPIENT).await?;
    let beta_api = beta.api(Duration::from_secs(30))?;
    let mut notes = Vec::new();
    let mut ok = true;

    // 1. Node 1 dies holding leases.
    let load1 = Load::start(&a1, "pair-a", c.clients, None);
    let load2 = Load::start(&a2, "pair-b", c.clients, None);
    tokio::time::sleep(Duration::from_secs(1)).await;
    beta.note("cluster: SIGSTOP");
    signal(beta.pid(), libc::SIGSTOP);
    let owner = format!("%:{}/%", n1.port);
    let leased_by_1 = |pg: &postgres::Postgres| {
        pg.psql(
            "atp",
            &format!("SELECT string_agg(id::text, ',') FROM messages WHERE status = 'delivering' AND lease_owner LIKE '{owner}'"),
        )
    };
    let mut held = String::new();
    let holds = wait_for(Duration::from_secs(30), || {
        held = leased_by_1(&pg);
        !held.is_empty()
    })
    .await;
    n1.note("cluster: kill -9 (stays down)");
    n1.kill9();
    // What the dead node held at its death (it can take no more).
    let held = leased_by_1(&pg);
    let held_count = held.split(',').filter(|s| !s.is_empty()).count();
    signal(beta.pid(), libc::SIGCONT);
    beta.note("cluster: SIGCONT");
    if !holds || held_count == 0 {
        ok = false;
        notes.push("node 1 never held a lease while beta was paused".into());
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut ledger = load1.stop().await;
    ledger.merge(load2.stop().await);

    // 2. PostgreSQL restarted under load.
    let load3 = Load::start(&a2, "pair-pg", c.clients, None);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before_outage = load3.accepted();
    n2.note("cluster: PostgreSQL stopped");
    let mut pg = tokio::task::spawn_blocking(move || {
        pg.stop();
        pg
    })
    .await
    .map_err(|e| Error::Msg(e.to_string()))?;
    tokio::time::sleep(Duration::from_secs_f64(c.pg_down_secs)).await;
    let during_outage = load3.accepted();
    n2.note("cluster: PostgreSQL started again");
    let pg = tokio::task::spawn_blocking(move || {
        pg.start_again();
        pg
    })
    .await
    .map_err(|e| Error::Msg(e.to_string()))?;
    let back_at = Instant::now();
    let resumed = wait_for(Duration::from_secs(60), || load3.accepted() > during_outage).await;
    let back_after = back_at.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let pg_ledger: Ledger = load3.stop().await;
    // Clear refusals (503 with a `storage` field; "outcome unknown" ones are kept apart and retried
    // below, as a client must).
    let unavailable = pg_ledger.refused.get(&503).copied().unwrap_or(0);
    let unknown = pg_ledger.unknown.len();
    let sample = pg_ledger.samples.get(&503).cloned().unwrap_or_default();
    if unavailable == 0 || !sample.contains("\"storage\":") {
        ok = false;
        notes.push(format!("no 503 storage refusal while PostgreSQL was down (sample: {sample})"));
    }
    if !resumed {
        ok = false;
        notes.push("node 2 did not accept again within 60 s of PostgreSQL's restart".into());
    }
    let refused_other: u64 = pg_ledger.refused.iter().filter(|(s, _)| **s != 503).map(|(_, n)| n).sum();
    let mut pg_ledger = pg_ledger;
    let unsettled = pg_ledger.retry_unknown(&a2, Duration::from_secs(60)).await;
    if !unsettled.is_empty() {
        ok = false;
        notes.push(format!("outcome-unknown submissions not accepted on retry: {unsettled:?}"));
    }
    ledger.merge(pg_ledger);

    // Everything accepted arrives exactly once; the dead node's leases were taken over.
    let mut inbox = Inbox::new();
    let drained = drain(&mut inbox, &a2, &beta_api, &ledger.accepted, Duration::from_secs(c.drain_secs)).await?;
    let t = Tally::of(&ledger, &inbox, "pair-");
    let taken_over = if held.is_empty() {
        0
    } else {
        pg.psql("atp", &format!("SELECT count(*) FROM messages WHERE id IN ({held}) AND status = 'delivered'"))
            .parse::<usize>()
            .unwrap_or(0)
    };
    if taken_over != held_count {
        ok = false;
        notes.push(format!("of {held_count} rows leased by the dead node, {taken_over} delivered"));
    }
    let exact = t.exact() && t.unclear == 0 && t.refused_arrived == 0 && drained.bounced == 0 && t.timeouts == 0;
    if !exact {
        ok = false;
        notes.push(format!(
            "lost {}, duplicates {}, strays {}, unclear {}, refused but delivered {}, bounced {}, timeouts {}",
            t.lost, t.duplicates, t.strays, t.unclear, t.refused_arrived, drained.bounced, t.timeouts
        ));
        notes.extend(ledger.unclear.iter().cloned());
    }
    let summary = format!(
        "two alpha nodes on one PostgreSQL: node 1 killed -9 holding {held_count} leases, all delivered by node 2 \
         (lease {} s); PostgreSQL down {:.1} s: {unavailable} × 503 storage refusals, {unknown} × 503 outcome \
         unknown (retried, accepted), {refused_other} other refusals, accepting again {:.1} s after its restart ({before_outage} accepted before, {during_outage} by \
         the restart); {} submissions without answer ({} arrived, once)",
        c.lease_secs,
        c.pg_down_secs,
        back_after.as_secs_f64(),
        t.uncertain,
        t.uncertain_arrived
    );
    eprintln!(
        "  cluster: {summary}; {} accepted, {} delivered, {} lost, {} duplicates, queue left {}: {}",
        t.accepted,
        t.delivered,
        t.lost,
        t.duplicates,
        drained.queue_left,
        if ok { "ok" } else { "FAILED" }
    );
    notes.insert(0, summary);
    drop(pg);
    Ok(Row::new("cluster", 1, &t, started.elapsed(), ok, notes))
}
