//! Scenario `storage`: the sending server's data directory is a small tmpfs (needs root and
//! `mount`; skipped with a message otherwise).
//!
//! 1. **Full.** The tmpfs is filled up while alpha runs; submissions must get a 202 (and that
//!    message must really arrive in the end) or a clear JSON refusal (`507` with `"storage":
//!    "full"`, or a 503) — never a 202 for a lost message, never a 500 or a body that is not the
//!    JSON error shape, never a hang (each request gives up after 30 s) — and the server must stay up.
//! 2. **Freed.** The filler is deleted: submissions are answered 202 again.
//! 3. **Read-only.** `mount -o remount,ro` while alpha runs (Linux refuses while files are open for
//!    writing, which the database always is: then this is reported, not failed); then alpha is
//!    killed, the home remounted read-only and alpha started on it: it must exit with an error line
//!    naming the problem, not a panic.
//! 4. Remounted read-write, alpha restarts, and every 202 of the scenario arrives exactly once.
//! 5. **Read-only while running**, for real: alpha's home on an ext4 loop file system mounted
//!    `errors=remount-ro`; an ext4 error is triggered (`/sys/fs/ext4/<dev>/trigger_fs_error`) under
//!    load, so the file system turns read-only with the database open: submissions must get clear
//!    refusals, the server must stay up; after `e2fsck` and a restart every 202 arrives exactly
//!    once.
//!
//! A refusal means "not stored": a refused nonce that arrives fails the scenario. The one answer
//! that is not a refusal is `503` `"storage": "outcome_unknown"` (the disk failed inside `COMMIT`,
//! docs/protocol.md §6.4): such submissions are retried with the same nonce and content once the
//! disk is back, must then be accepted, and must arrive exactly once. Reported as not tested where loop devices or `mkfs.ext4` are missing.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::load::{drain, Inbox, Ledger, Load, Tally};
use crate::report::Row;
use crate::servers::{Launch, Pair, RECIPIENT, SENDER};
use crate::Error;

/// Settings of the scenario.
pub struct Storage {
    /// Size of the tmpfs (e.g. `64m`).
    pub size: String,
    pub drain_secs: u64,
}

/// A tmpfs mounted for the scenario, unmounted on drop.
struct Mount(PathBuf);

impl Mount {
    fn tmpfs(dir: &Path, size: &str) -> Result<Mount, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        mount(&["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"], dir)?;
        Ok(Mount(dir.to_owned()))
    }
    fn remount(&self, opts: &str) -> Result<(), String> {
        mount(&["-o", &format!("remount,{opts}")], &self.0)
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).output();
    }
}

/// Runs `mount ARGS DIR`; the error is mount's own message.
fn mount(args: &[&str], dir: &Path) -> Result<(), String> {
    let out = Command::new("mount").args(args).arg(dir).output().map_err(|e| format!("mount: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().replace('\n', " "))
    }
}

/// Fills the file system of `dir` with `dir/filler` until ENOSPC; returns the bytes written.
fn fill(dir: &Path) -> Result<u64, Error> {
    let mut f = std::fs::File::create(dir.join("filler"))?;
    for chunk in [1 << 20, 4096, 512, 1] {
        let buf = vec![0x5a; chunk];
        while f.write_all(&buf).is_ok() {}
    }
    let _ = f.sync_all();
    Ok(f.metadata()?.len())
}

pub async fn run(s: &Storage, launch: &Launch, dir: &Path) -> Result<Row, Error> {
    let started = Instant::now();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(Row::skipped("storage", "skipped: needs root (mount -t tmpfs)"));
    }
    let home = dir.join("alpha-tmpfs");
    let mnt = match Mount::tmpfs(&home, &s.size) {
        Ok(m) => m,
        Err(e) => return Ok(Row::skipped("storage", &format!("skipped: cannot mount a tmpfs ({e})"))),
    };
    let mut pair = Pair::new(launch, dir, Some(&home))?;
    pair.start().await?;
    let alpha = pair.alpha.api(Duration::from_secs(30))?;
    let beta = pair.beta.api(Duration::from_secs(30))?;
    let mut notes = Vec::new();
    let mut pass = true;
    let mut fail = |notes: &mut Vec<String>, why: String| {
        eprintln!("  storage: FAILED: {why}");
        notes.push(why);
        pass = false;
    };

    // Before: a few messages while there is room.
    let mut ledger = run_load(&alpha, "st-before", Duration::from_secs(1)).await;

    // 1. Full.
    pair.alpha.note("storage: filling the disk");
    let filled = fill(&home)?;
    eprintln!("  storage: filled {} KiB of the tmpfs; submitting", filled / 1024);
    let full = run_load(&alpha, "st-full", Duration::from_secs(4)).await;
    let storage_refusals: u64 =
        full.refused.iter().filter(|(s, _)| [503, 507].contains(s)).map(|(_, n)| n).sum::<u64>()
            + full.unknown.len() as u64;
    let full_msg = format!(
        "disk full: {} accepted, {} refused {:?}, {} outcome unknown, {} without answer, {} unclear",
        full.accepted.len(),
        full.refused.values().sum::<u64>(),
        full.refused,
        full.unknown.len(),
        full.uncertain.len(),
        full.unclear_count
    );
    eprintln!("  storage: {full_msg}");
    if let Some(b) = full.samples.get(&507).or_else(|| full.samples.get(&503)) {
        eprintln!("  storage: refusal body: {b}");
        notes.push(format!("full → {}", b.trim()));
    }
    if storage_refusals == 0 {
        fail(&mut notes, format!("the full disk was never refused ({full_msg})"));
    }
    if full.unclear_count > 0 || full.timeouts > 0 || !full.uncertain.is_empty() {
        fail(&mut notes, format!("{full_msg}: {:?} {:?}", full.unclear, full.failures));
    }
    if let Some(st) = pair.alpha.exited() {
        fail(&mut notes, format!("alpha exited on the full disk ({st})"));
        pair.alpha.start().await?;
    }
    ledger.merge(full);

    // 2. Freed.
    std::fs::remove_file(home.join("filler"))?;
    pair.alpha.note("storage: space freed");
    let freed = run_load(&alpha, "st-freed", Duration::from_secs(2)).await;
    let not_202 = freed.refused.values().sum::<u64>()
        + freed.unclear_count
        + freed.uncertain.len() as u64
        + freed.unknown.len() as u64;
    eprintln!("  storage: space freed: {} accepted, {not_202} not", freed.accepted.len());
    if not_202 > 0 || freed.accepted.is_empty() {
        fail(
            &mut notes,
            format!("after freeing space: {} accepted, {not_202} not ({:?})", freed.accepted.len(), freed.samples),
        );
    }
    ledger.merge(freed);

    // 3. Read-only.
    match mnt.remount("ro") {
        Ok(()) => {
            pair.alpha.note("storage: remounted read-only while running");
            let ro = run_load(&alpha, "st-ro", Duration::from_secs(2)).await;
            let msg = format!("read-only while running: {} accepted, refused {:?}", ro.accepted.len(), ro.refused);
            eprintln!("  storage: {msg}");
            if ro.unclear_count > 0 || ro.timeouts > 0 {
                fail(&mut notes, format!("{msg}, unclear {:?}", ro.unclear));
            } else {
                notes.push(msg);
            }
            ledger.merge(ro);
            mnt.remount("rw").map_err(Error::Msg)?;
        }
        Err(e) => {
            eprintln!("  storage: remount,ro while alpha runs refused by the kernel ({e}); testing a start on it");
            notes.push("ro remount while running: refused by Linux (open files)".into());
        }
    }
    pair.alpha.note("storage: kill -9, remount read-only, start");
    pair.alpha.kill9();
    mnt.remount("ro").map_err(|e| Error::Msg(format!("remount,ro: {e}")))?;
    let log_before = std::fs::metadata(&pair.alpha.log).map(|m| m.len()).unwrap_or(0);
    pair.alpha.spawn()?;
    match pair.alpha.wait_exit(Duration::from_secs(30)).await {
        Some(status) => {
            let log = std::fs::read(&pair.alpha.log).unwrap_or_default();
            let said = String::from_utf8_lossy(&log[log_before as usize..]).trim().to_owned();
            eprintln!("  storage: start on a read-only home: {status}: {said}");
            if status.success() || said.contains("panicked") || !said.contains("Error:") {
                fail(&mut notes, format!("start on a read-only home: {status}: {said}"));
            } else {
                notes.push(format!("start on read-only home → {}", said.lines().last().unwrap_or_default()));
            }
        }
        None => {
            let r = alpha.submit(SENDER, RECIPIENT, "st-ro-start").await;
            pair.alpha.kill9();
            fail(&mut notes, format!("alpha started on a read-only home (a submission got {r:?})"));
        }
    }
    mnt.remount("rw").map_err(|e| Error::Msg(format!("remount,rw: {e}")))?;

    // 4. Back, and everything delivered once.
    pair.alpha.note("storage: read-write again, restart");
    pair.alpha.start().await?;
    ledger.merge(run_load(&alpha, "st-after", Duration::from_secs(1)).await);
    // "Outcome unknown" answers (a commit that failed on the full or read-only disk) are retried
    // with the same nonce and content: each must be accepted now and arrive exactly once.
    let unknown = ledger.unknown.len();
    let left = ledger.retry_unknown(&alpha, Duration::from_secs(30)).await;
    eprintln!(
        "  storage: {unknown} \"outcome unknown\" answers retried with the same nonce, {} not accepted",
        left.len()
    );
    if !left.is_empty() {
        fail(&mut notes, format!("retries of \"outcome unknown\" not accepted: {left:?}"));
    }
    let mut inbox = Inbox::new();
    let drained = drain(&mut inbox, &alpha, &beta, &ledger.accepted, Duration::from_secs(s.drain_secs)).await?;
    let mut t = Tally::of(&ledger, &inbox, "st-");
    if !t.exact() || t.refused_arrived > 0 || drained.bounced != 0 {
        fail(
            &mut notes,
            format!(
                "delivery: lost {}, duplicates {}, strays {}, refused but delivered {}, bounced {}",
                t.lost, t.duplicates, t.strays, t.refused_arrived, drained.bounced
            ),
        );
    }
    drop(pair);
    drop(mnt);

    // 5. Read-only while running, through an ext4 error (when loop devices are available).
    match crate::read_only::while_running(launch, &dir.join("ext4"), s.drain_secs).await? {
        Ok((t2, ro_notes, ok)) => {
            t.add(&t2);
            if !ok {
                fail(&mut notes, ro_notes.join("; "));
            } else {
                notes.extend(ro_notes);
            }
        }
        Err(why) => {
            eprintln!("  storage: read-only while running not tested: {why}");
            notes.push(format!("read-only while running not tested: {why}"));
        }
    }
    Ok(Row::new("storage", 1, &t, started.elapsed(), pass, notes))
}

/// Two clients submitting for `secs`, 10 ms apart; what they got.
pub async fn run_load(alpha: &crate::client::Api, prefix: &str, secs: Duration) -> Ledger {
    let load = Load::start(alpha, prefix, 2, Some(Duration::from_millis(10)));
    tokio::time::sleep(secs).await;
    load.stop().await
}
