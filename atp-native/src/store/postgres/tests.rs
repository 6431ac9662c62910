//! The PostgreSQL store against a real throwaway cluster (atp-native/tests/common/postgres.rs):
//! the behaviours the SQLite store's tests check, and those of several nodes on one database.

use std::collections::HashSet;

use atp_wasm::delivery::Backoff;
use atp_wasm::env::{DedupStore, StoreError, StoreFault};
use atp_wasm::relay::store::{MessageStatus as Status, NewMessage, Stored, Usage};

use super::{Ack, PgStore};
use crate::store::queue::QueueOp;
use crate::store::tests::msg;

#[path = "../../../tests/common/postgres.rs"]
pub(crate) mod cluster;
use cluster::Postgres;

fn queued(nonce: &str, to: &str) -> NewMessage {
    NewMessage { status: Status::Queued, ..msg(nonce, 1, to) }
}

async fn cluster() -> Postgres {
    tokio::task::spawn_blocking(Postgres::start).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_dedup_inbox_usage_and_migrations() {
    let pg = cluster().await;
    let url = pg.create_db("atp");
    let store = PgStore::open(&url, "n1:1", 8).await.unwrap();
    // Concurrent writers, then a repeat, a replay, the same nonce from another domain.
    let tasks: Vec<_> = (0..300)
        .map(|i| {
            let s = store.clone();
            tokio::spawn(async move { s.insert_message(&msg(&format!("n{i}"), 1, "b@a.test")).await })
        })
        .collect();
    for t in tasks {
        assert!(matches!(t.await.unwrap().unwrap(), Stored::New(_)));
    }
    assert_eq!(store.insert_message(&msg("n1", 1, "b@a.test")).await.unwrap(), Stored::Duplicate);
    assert_eq!(store.insert_message(&msg("n1", 2, "b@a.test")).await.unwrap(), Stored::Replay);
    let mut other_domain = msg("n1", 2, "b@a.test");
    other_domain.sender_domain = "b.test".into();
    assert!(matches!(store.insert_message(&other_domain).await.unwrap(), Stored::New(_)), "per sender domain");
    assert_eq!(store.seen("a.test", "n1").await.unwrap(), Some([1; 32]));
    assert_eq!(store.seen("other.test", "n1").await.unwrap(), None);
    // Pages: by inbox id, bounded in rows and bytes, the first row always.
    let page = store.inbox("b@a.test", 0, 50, usize::MAX).await.unwrap();
    assert_eq!(page.len(), 50);
    assert_eq!(page.iter().map(|r| r.id).collect::<Vec<_>>(), (1..=50).collect::<Vec<_>>(), "per-agent ids");
    let next = store.inbox("b@a.test", page[49].id, 500, usize::MAX).await.unwrap();
    assert_eq!(next.len(), 251);
    let three: usize = page[..3].iter().map(|r| r.json.len()).sum();
    assert_eq!(store.inbox("b@a.test", 0, 50, three).await.unwrap().len(), 3);
    assert_eq!(store.inbox("b@a.test", 0, 50, 1).await.unwrap().len(), 1);
    assert!(store.inbox("nobody@a.test", 0, 50, usize::MAX).await.unwrap().is_empty());
    // Usage counts inbox messages only, not repeats or queue rows.
    let bytes: u64 = page.iter().chain(&next).map(|r| r.json.len() as u64).sum();
    store.insert_message(&queued("q1", "z@b.test")).await.unwrap();
    assert_eq!(store.usage("b@a.test").await.unwrap(), Usage { messages: 301, bytes });
    assert_eq!(store.usage("c@a.test").await.unwrap(), Usage::default());
    // Agents.
    assert!(store.insert_agent("b@a.test", "h", 1).await.unwrap());
    assert!(!store.insert_agent("b@a.test", "h2", 2).await.unwrap());
    assert!(store.insert_agent("a@a.test", "h", 2).await.unwrap());
    assert_eq!(store.agent_hash("b@a.test").await.unwrap().as_deref(), Some("h"));
    assert!(store.agent_exists("b@a.test").await.unwrap());
    assert!(!store.agent_exists("c@a.test").await.unwrap());
    assert_eq!(store.agents().await.unwrap(), ["b@a.test", "a@a.test"], "oldest first");
    let (queue, agents) = store.counts().await.unwrap();
    assert_eq!((agents, queue.get("delivered"), queue.get("queued")), (2, 301, 1));
    assert_eq!(store.inspect("n7").await.unwrap().unwrap().status, "delivered");
    let q1 = store.inspect("q1").await.unwrap().unwrap();
    assert_eq!((q1.status.as_str(), q1.next_attempt_at, q1.attempts), ("queued", Some(100), 0), "due now");
    assert!(store.inspect("zzz").await.unwrap().is_none());
    assert_eq!(store.prune_dedup(101).await.unwrap(), 302);
    assert_eq!(store.seen("a.test", "n1").await.unwrap(), None);
    store.close();
    // Reopening keeps everything and does not re-run migrations; a newer schema is refused.
    let again = PgStore::open(&url, "n1:1", 8).await.unwrap();
    assert_eq!(again.counts().await.unwrap().1, 2);
    assert_eq!(pg.psql("atp", "SELECT version FROM atp_schema"), super::schema::MIGRATIONS.len().to_string());
    pg.psql("atp", "UPDATE atp_schema SET version = 99");
    let newer = PgStore::open(&url, "n1:1", 8).await.err().expect("a newer schema is refused").to_string();
    assert!(newer.contains("schema version 99, newer than this atp knows"), "{newer}");
}

/// Two nodes store into one inbox at once while a reader pages through it with its cursor: the
/// reader sees every message exactly once (ids commit in order), and the same message stored on
/// both nodes at once is stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_one_inbox_in_commit_order() {
    let pg = cluster().await;
    let url = pg.create_db("atp");
    let (a, b) = (PgStore::open(&url, "a:1", 8).await.unwrap(), PgStore::open(&url, "b:1", 8).await.unwrap());
    const PER_TASK: usize = 100;
    let writers: Vec<_> = (0..8)
        .map(|t| {
            let s = if t % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move {
                for i in 0..PER_TASK {
                    let m = msg(&format!("t{t}-{i}"), 1, "r@a.test");
                    assert!(matches!(s.insert_message(&m).await.unwrap(), Stored::New(_)));
                }
            })
        })
        .collect();
    let total = 8 * PER_TASK;
    let reader = {
        let s = a.clone();
        tokio::spawn(async move {
            let (mut cursor, mut seen) = (0, Vec::new());
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
            while seen.len() < total {
                assert!(std::time::Instant::now() < deadline, "read {} of {total}", seen.len());
                for row in s.inbox("r@a.test", cursor, 7, usize::MAX).await.unwrap() {
                    assert!(row.id > cursor);
                    cursor = row.id;
                    seen.push(row.json);
                }
            }
            seen
        })
    };
    for w in writers {
        w.await.unwrap();
    }
    let seen = reader.await.unwrap();
    let distinct: HashSet<_> = seen.iter().collect();
    assert_eq!((seen.len(), distinct.len()), (total, total), "every message once, none skipped");
    // One message stored on both nodes at once: one copy.
    let racers: Vec<_> = (0..40)
        .map(|i| {
            let s = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move { s.insert_message(&msg("same", 5, "r@a.test")).await.unwrap() })
        })
        .collect();
    let mut new = 0;
    for r in racers {
        match r.await.unwrap() {
            Stored::New(_) => new += 1,
            other => assert_eq!(other, Stored::Duplicate),
        }
    }
    assert_eq!(new, 1);
    assert_eq!(b.usage("r@a.test").await.unwrap().messages, total as u64 + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_claims_and_leases_across_nodes() {
    let pg = cluster().await;
    let url = pg.create_db("atp");
    let (a, b) = (PgStore::open(&url, "a:1", 8).await.unwrap(), PgStore::open(&url, "b:1", 8).await.unwrap());
    for i in 0..200 {
        a.insert_message(&queued(&format!("q{i}"), if i % 2 == 0 { "z@b.test" } else { "y@C.Test" })).await.unwrap();
    }
    // Both nodes claim at once: every row once, never twice.
    let claimers: Vec<_> = [a.clone(), b.clone(), a.clone(), b.clone()]
        .into_iter()
        .map(|s| {
            tokio::spawn(async move {
                let mut got = Vec::new();
                loop {
                    let rows = s.claim(100, 400, 7, &[]).await.unwrap();
                    if rows.is_empty() {
                        return got;
                    }
                    got.extend(rows.into_iter().map(|r| (r.id, s.owner().to_owned())));
                }
            })
        })
        .collect();
    let mut all = Vec::new();
    for c in claimers {
        all.extend(c.await.unwrap());
    }
    let ids: HashSet<_> = all.iter().map(|(id, _)| *id).collect();
    assert_eq!((all.len(), ids.len()), (200, 200), "each row claimed exactly once");
    let (by_a, by_b): (Vec<_>, Vec<_>) = all.iter().partition(|(_, o)| o == a.owner());
    assert!(!by_a.is_empty() && !by_b.is_empty(), "both nodes claimed");
    let (ra, rb) = (by_a[0].0, by_b[0].0);
    // Only the lease's owner settles a row.
    assert_eq!(a.queue(QueueOp::Delivered { id: rb, now: 101 }).await.unwrap(), 0, "not a's lease");
    assert_eq!(b.queue(QueueOp::Delivered { id: rb, now: 101 }).await.unwrap(), 1);
    // a's lease runs out (a died): b takes the row over, and a's late answer changes nothing.
    let taken = b.claim(401, 700, 500, &[]).await.unwrap();
    assert_eq!(taken.len(), 199, "every expired lease");
    assert_eq!(a.queue(QueueOp::Retry { id: ra, now: 402, next_at: 500, error: "late".into() }).await.unwrap(), 0);
    assert_eq!(b.queue(QueueOp::Retry { id: ra, now: 402, next_at: 500, error: "451".into() }).await.unwrap(), 1);
    let info = a.inspect(&taken.iter().find(|r| r.id == ra).unwrap().nonce).await.unwrap().unwrap();
    assert_eq!((info.status.as_str(), info.attempts, info.next_attempt_at), ("failed", 1, Some(500)));
    // A restarted b (same node name, new run) frees b's earlier leases at once, never a's.
    let a_row = a.claim(701, 1000, 1, &[]).await.unwrap();
    assert_eq!(a_row.len(), 1);
    let b2 = PgStore::open(&url, "b:1", 8).await.unwrap();
    assert_eq!(b2.queue(QueueOp::Recover { now: 702 }).await.unwrap(), 198);
    let left = pg.psql("atp", "SELECT lease_owner FROM messages WHERE status = 'delivering'");
    assert_eq!(left, a.owner(), "a's live lease stays");
    // Blocked domains are skipped; the next due time ignores them.
    let rows = b2.claim(702, 1000, 500, &["b.test".into(), "c.test".into()]).await.unwrap();
    assert_eq!(rows.len(), 0, "b.test and c.test back off");
    let rows = b2.claim(702, 1000, 500, &["c.test".into()]).await.unwrap();
    assert!(!rows.is_empty() && rows.iter().all(|r| r.dest_domain == "b.test"));
    assert_eq!(b2.next_due(&["b.test".into()]).await.unwrap(), Some(702), "c.test rows are due");
    // Wake: a domain's waiting rows are due now.
    let c_row = b2.claim(702, 1000, 1, &["b.test".into()]).await.unwrap().remove(0);
    b2.queue(QueueOp::Retry { id: c_row.id, now: 703, next_at: 5000, error: "451".into() }).await.unwrap();
    assert!(b2.queue(QueueOp::Wake { domain: "c.test".into(), now: 704 }).await.unwrap() >= 1);
    // A bounce marks the row and stores the notice in the sender's inbox, in one transaction.
    let row = b2.claim(705, 1000, 1, &["b.test".into()]).await.unwrap().remove(0);
    let notice = msg("notice-1", 9, "x@a.test");
    let op = QueueOp::Bounce { id: row.id, now: 706, error: "550 5.7.26".into(), notice: Box::new(notice) };
    assert_eq!(b2.queue(op).await.unwrap(), 1);
    assert_eq!(b2.inspect(&row.nonce).await.unwrap().unwrap().status, "bounced");
    assert_eq!(a.inbox("x@a.test", 0, 10, usize::MAX).await.unwrap().len(), 1);
    // Release gives the lease back untried.
    let row = b2.claim(707, 1000, 1, &["b.test".into()]).await.unwrap().remove(0);
    assert_eq!(b2.queue(QueueOp::Release { id: row.id, next_at: 800 }).await.unwrap(), 1);
    assert_eq!(b2.inspect(&row.nonce).await.unwrap().unwrap().next_attempt_at, Some(800));
    // Backoff is shared by the nodes and survives them.
    let backoff = Backoff { failures: 3, blocked_until: 900 };
    a.queue(QueueOp::Backoff { domain: "b.test".into(), backoff: Some(backoff) }).await.unwrap();
    assert_eq!(b2.backoffs(800).await.unwrap(), [("b.test".to_string(), backoff)]);
    assert!(b2.backoffs(900).await.unwrap().is_empty(), "over at blocked_until");
    b2.set_backoff("b.test", None).await.unwrap();
    assert!(a.backoffs(800).await.unwrap().is_empty());
}

/// A database that is down is "unavailable" (503, not stored) and the store recovers by itself
/// once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_down_is_unavailable_then_recovers() {
    let mut pg = cluster().await;
    let url = pg.create_db("atp");
    let store = PgStore::open(&url, "n:1", 3).await.unwrap();
    // The pool is bounded: 40 concurrent requests share 3 connections.
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let s = store.clone();
            tokio::spawn(async move { s.insert_message(&msg(&format!("p{i}"), 1, "p@a.test")).await.unwrap() })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(store.pool_status(), (3, 3));
    let open = pg.psql("atp", "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'atp'");
    assert_eq!(open, "3");
    store.insert_message(&msg("before", 1, "b@a.test")).await.unwrap();
    let mut pg = tokio::task::spawn_blocking(move || {
        pg.stop();
        pg
    })
    .await
    .unwrap();
    let err = StoreError::from(store.insert_message(&msg("during", 1, "b@a.test")).await.unwrap_err());
    assert_eq!((err.fault, err.outcome_unknown), (StoreFault::Unavailable, false), "{err}");
    let r = err.to_rejection();
    assert_eq!((r.status(), r.to_json()["storage"].as_str()), (503, Some("unavailable")));
    assert!(store.inbox("b@a.test", 0, 10, usize::MAX).await.is_err());
    let pg = tokio::task::spawn_blocking(move || {
        pg.start_again();
        pg
    })
    .await
    .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        match store.insert_message(&msg("after", 1, "b@a.test")).await {
            Ok(s) => break assert!(matches!(s, Stored::New(_))),
            Err(e) => assert!(std::time::Instant::now() < deadline, "not back: {e}"),
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let rows = store.inbox("b@a.test", 0, 10, usize::MAX).await.unwrap();
    assert_eq!(rows.len(), 2, "the refused message was not stored");
    drop(pg);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_expire_and_inbox_announcements() {
    let pg = cluster().await;
    let url = pg.create_db("atp");
    let (a, b) = (PgStore::open(&url, "a:1", 4).await.unwrap(), PgStore::open(&url, "b:1", 4).await.unwrap());
    let mut listener = b.listen_inbox().await.unwrap();
    for i in 0..6 {
        let mut m = msg(&format!("m{i}"), 1, "u@a.test");
        m.now = 100 + i;
        a.insert_message(&m).await.unwrap();
    }
    a.insert_message(&msg("other", 1, "v@a.test")).await.unwrap();
    // a's commits are announced on b's connection (an agent at least once per round).
    let mut heard = HashSet::new();
    while heard.len() < 2 {
        let agent = tokio::time::timeout(std::time::Duration::from_secs(30), listener.agents.recv())
            .await
            .expect("announced within 30 s")
            .unwrap();
        heard.insert(agent);
    }
    assert_eq!(heard, HashSet::from(["u@a.test".to_string(), "v@a.test".to_string()]));
    let len = |id: &str| format!("{{\"nonce\":\"{id}\"}}").len() as u64;
    assert_eq!(b.ack("u@a.test", &Ack::UpTo(2)).await.unwrap(), 2);
    assert_eq!(b.ack("v@a.test", &Ack::Ids(vec![3, 4])).await.unwrap(), 0, "never another agent's");
    assert_eq!(b.ack("u@a.test", &Ack::Ids(vec![4, 4, 99])).await.unwrap(), 1);
    assert_eq!(b.ack("u@a.test", &Ack::UpTo(2)).await.unwrap(), 0, "already gone");
    let left: Vec<i64> = a.inbox("u@a.test", 0, 10, usize::MAX).await.unwrap().iter().map(|r| r.id).collect();
    assert_eq!(left, [3, 5, 6]);
    assert_eq!(a.usage("u@a.test").await.unwrap(), Usage { messages: 3, bytes: len("m2") + len("m4") + len("m5") });
    // The dedup record stays: a repeat is still a duplicate.
    assert_eq!(a.insert_message(&msg("m0", 1, "u@a.test")).await.unwrap(), Stored::Duplicate);
    // Expiry: u's m2 (now=102) and v's message (now=100) are older than 103.
    assert_eq!(a.expire(103).await.unwrap(), 2);
    assert_eq!(a.usage("u@a.test").await.unwrap().messages, 2);
    assert_eq!(a.usage("v@a.test").await.unwrap(), Usage::default());
    // A new message continues the agent's ids.
    assert_eq!(a.insert_message(&msg("m9", 1, "u@a.test")).await.unwrap(), Stored::New(7));
}

/// A SQLite database moves into PostgreSQL whole: agents, inboxes with their ids (cursors stay
/// valid), usage, dedup records, the queue (a leased row due at once), backoff, the counters (added
/// to what a node flushed already, the earlier start kept); an import into a database that holds
/// data is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imports_a_sqlite_database() {
    let pg = cluster().await;
    let url = pg.create_db("atp");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.test.db");
    let sqlite = crate::store::Store::open(&path).unwrap();
    sqlite.insert_agent("u@a.test", "hash-u", 10).await.unwrap();
    sqlite.insert_agent("v@a.test", "hash-v", 11).await.unwrap();
    for i in 0..5 {
        sqlite
            .insert_message(msg(&format!("m{i}"), i as u8, if i % 2 == 0 { "u@a.test" } else { "v@a.test" }))
            .await
            .unwrap();
    }
    for i in 0..3 {
        sqlite.insert_message(queued(&format!("q{i}"), "z@b.test")).await.unwrap();
    }
    let leased = sqlite.claim(100, 400, 1, vec![]).await.unwrap();
    assert_eq!(leased.len(), 1);
    sqlite.set_backoff("b.test", Some(Backoff { failures: 2, blocked_until: 5000 })).await.unwrap();
    sqlite.add_counters(50, &[("received".into(), 7), ("rejections/535 5.7.8".into(), 2)]).await.unwrap();
    let u_page = sqlite.inbox("u@a.test", 0, 50, usize::MAX).await.unwrap();
    let u_usage = sqlite.usage("u@a.test").await.unwrap();
    sqlite.close().await;
    drop(sqlite);

    let store = PgStore::open(&url, "n:1", 4).await.unwrap();
    store.add_counters(60, &[("received".into(), 1)]).await.unwrap();
    let done = store.import_sqlite(&path, 777).await.unwrap();
    assert_eq!((done.agents, done.messages, done.dedup, done.backoffs, done.counters), (2, 8, 8, 1, 3));
    let counters = [("received", 8), ("rejections/535 5.7.8", 2), ("started_at", 50)];
    assert_eq!(store.counters().await.unwrap(), counters.map(|(k, v)| (k.to_owned(), v)));
    assert_eq!(store.agents().await.unwrap(), ["u@a.test", "v@a.test"]);
    assert_eq!(store.agent_hash("v@a.test").await.unwrap().as_deref(), Some("hash-v"));
    assert_eq!(store.inbox("u@a.test", 0, 50, usize::MAX).await.unwrap(), u_page, "same ids, same messages");
    let cursor = u_page[0].id;
    assert_eq!(store.inbox("u@a.test", cursor, 50, usize::MAX).await.unwrap(), u_page[1..].to_vec());
    assert_eq!(store.usage("u@a.test").await.unwrap(), u_usage);
    assert_eq!(store.seen("a.test", "m3").await.unwrap(), Some([3; 32]));
    assert_eq!(store.insert_message(&msg("m3", 3, "v@a.test")).await.unwrap(), Stored::Duplicate);
    // New inbox ids continue after the largest; new rows after every imported row.
    let last = u_page.last().unwrap().id;
    assert_eq!(store.insert_message(&msg("new", 1, "u@a.test")).await.unwrap(), Stored::New(last + 1));
    let Stored::New(row) = store.insert_message(&queued("q-new", "z@b.test")).await.unwrap() else { panic!() };
    assert!(row > 8);
    // The leased row is due at once; the backoff came along.
    let info = store.inspect(&leased[0].nonce).await.unwrap().unwrap();
    assert_eq!((info.status.as_str(), info.next_attempt_at), ("queued", Some(777)));
    assert_eq!(store.claim(777, 900, 10, &[]).await.unwrap().len(), 4);
    assert_eq!(
        store.backoffs(100).await.unwrap(),
        [("b.test".to_string(), Backoff { failures: 2, blocked_until: 5000 })]
    );
    let again = store.import_sqlite(&path, 777).await.unwrap_err().to_string();
    assert!(again.contains("already holds 2 agents"), "{again}");
}

/// Two nodes flushing counters at once, many times, into overlapping names: every delta is added
/// exactly once and nobody deadlocks (each flush is one upsert over the names in one order); the
/// start is the first flush's and never added to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_from_two_nodes_add_up() {
    let pg = cluster().await;
    let url = pg.create_db("atp");
    let (a, b) = (PgStore::open(&url, "n1:1", 8).await.unwrap(), PgStore::open(&url, "n2:1", 8).await.unwrap());
    assert!(a.counters().await.unwrap().is_empty());
    a.add_counters(5, &[("received".into(), 1)]).await.unwrap();
    let names = ["bounced", "received", "rejections/535 5.7.8", "zz"];
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let s = if i % 2 == 0 { a.clone() } else { b.clone() };
            // Each node's flushes list the names in another order; the store sorts them.
            let mut deltas: Vec<(String, u64)> = names.iter().map(|n| ((*n).to_owned(), 1)).collect();
            if i % 2 == 1 {
                deltas.reverse();
            }
            tokio::spawn(async move { s.add_counters(100 + i, &deltas).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let got = b.counters().await.unwrap();
    let want = [("bounced", 200), ("received", 201), ("rejections/535 5.7.8", 200), ("started_at", 5), ("zz", 200)];
    let mut got_sorted = got.clone();
    got_sorted.sort();
    assert_eq!(got_sorted, want.map(|(k, v)| (k.to_owned(), v)));
}
