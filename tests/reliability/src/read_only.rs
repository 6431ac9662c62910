//! Read-only while running (the last step of the `storage` scenario): Linux refuses `mount -o
//! remount,ro` while files are open for writing, but an ext4 file system mounted
//! `errors=remount-ro` turns read-only on an error regardless, and ext4 can be told to have one
//! (`/sys/fs/ext4/<dev>/trigger_fs_error`). The sending server's home is such a file system in a
//! loop device.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::load::{drain, Inbox, Load, Tally};
use crate::servers::{Launch, Pair};
use crate::storage::run_load;
use crate::Error;

/// An ext4 file system in a loop device, mounted with `errors=remount-ro`; unmounted (and its
/// image deleted) on drop.
struct Ext4 {
    dir: PathBuf,
    image: PathBuf,
}

impl Ext4 {
    fn new(dir: &Path) -> Result<Ext4, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let image = dir.with_extension("img");
        let run = |cmd: &mut Command| -> Result<(), String> {
            let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(String::from_utf8_lossy(&out.stderr).trim().replace('\n', " "))
            }
        };
        run(Command::new("truncate").args(["-s", "64M"]).arg(&image))?;
        run(Command::new("mkfs.ext4").args(["-q", "-F", "-m", "0"]).arg(&image))?;
        let fs = Ext4 { dir: dir.to_owned(), image };
        fs.mount()?;
        Ok(fs)
    }

    fn mount(&self) -> Result<(), String> {
        let opts = "loop,errors=remount-ro".to_string();
        let out = Command::new("mount").args(["-o", &opts]).arg(&self.image).arg(&self.dir).output();
        match out {
            Ok(o) if o.status.success() => Ok(()),
            Ok(o) => Err(String::from_utf8_lossy(&o.stderr).trim().replace('\n', " ")),
            Err(e) => Err(format!("mount: {e}")),
        }
    }

    /// `/sys/fs/ext4/<loop device>/trigger_fs_error` of the mounted file system.
    fn trigger(&self) -> Result<PathBuf, String> {
        let mounts = std::fs::read_to_string("/proc/mounts").map_err(|e| e.to_string())?;
        let dir = self.dir.to_string_lossy();
        let dev = mounts
            .lines()
            .find_map(|l| {
                let mut f = l.split_whitespace();
                let (dev, at) = (f.next()?, f.next()?);
                (at == dir).then(|| dev.rsplit('/').next().unwrap_or(dev).to_owned())
            })
            .ok_or("not in /proc/mounts")?;
        let p = PathBuf::from(format!("/sys/fs/ext4/{dev}/trigger_fs_error"));
        if p.exists() {
            Ok(p)
        } else {
            Err(format!("no {}", p.display()))
        }
    }

    /// Unmounts, repairs (`e2fsck -fy`) and mounts again read-write.
    fn repair(&self) -> Result<(), String> {
        let _ = Command::new("umount").arg(&self.dir).output();
        let _ = Command::new("e2fsck").args(["-f", "-y"]).arg(&self.image).output();
        self.mount()
    }
}

impl Drop for Ext4 {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).output();
        let _ = std::fs::remove_file(&self.image);
    }
}

/// The sending server's home becomes read-only under it: an ext4 error (`trigger_fs_error`) with
/// `errors=remount-ro`, which Linux applies even with files open. Submissions must then be refused
/// clearly (no 500, no hang) and the server stay up; after a repair and a restart every 202 arrives
/// exactly once, no refusal ever arrives, and every "outcome unknown" answer retried with the same
/// nonce is accepted and arrives exactly once. `Err` when this cannot be set up here (no loop devices, no mkfs.ext4).
pub async fn while_running(
    launch: &Launch,
    dir: &Path,
    drain_secs: u64,
) -> Result<Result<(Tally, Vec<String>, bool), String>, Error> {
    let home = dir.join("alpha");
    let fs = match Ext4::new(&home) {
        Ok(fs) => fs,
        Err(e) => return Ok(Err(format!("no ext4 loop file system ({e})"))),
    };
    let trigger = match fs.trigger() {
        Ok(t) => t,
        Err(e) => return Ok(Err(e)),
    };
    let mut pair = Pair::new(launch, dir, Some(&home))?;
    pair.start().await?;
    let alpha = pair.alpha.api(Duration::from_secs(30))?;
    let beta = pair.beta.api(Duration::from_secs(30))?;
    let mut notes = Vec::new();
    let mut ok = true;
    let load = Load::start(&alpha, "ro-before", 2, Some(Duration::from_millis(10)));
    tokio::time::sleep(Duration::from_secs(1)).await;
    pair.alpha.note("storage: ext4 error → read-only while running");
    std::fs::write(&trigger, "1")?;
    let mut ledger = load.stop().await;
    let during = run_load(&alpha, "ro-during", Duration::from_secs(3)).await;
    let msg = format!(
        "read-only while running (ext4 error): {} accepted, refused {:?}, {} outcome unknown, {} without answer, {} unclear",
        during.accepted.len(),
        during.refused,
        during.unknown.len(),
        during.uncertain.len(),
        during.unclear_count
    );
    eprintln!("  storage: {msg}");
    if let Some(b) = during.samples.values().next() {
        eprintln!("  storage: refusal body: {b}");
        notes.push(format!("read-only while running → {}", b.trim()));
    }
    if during.unclear_count > 0
        || during.timeouts > 0
        || !during.uncertain.is_empty()
        || (during.refused.is_empty() && during.unknown.is_empty())
    {
        ok = false;
        notes.push(format!("{msg}: {:?} {:?}", during.unclear, during.failures));
    }
    if let Some(st) = pair.alpha.exited() {
        ok = false;
        notes.push(format!("alpha exited when its disk turned read-only ({st})"));
    }
    ledger.merge(during);
    pair.alpha.kill9();
    fs.repair().map_err(|e| Error::Msg(format!("repairing the ext4 image: {e}")))?;
    pair.alpha.note("storage: repaired, read-write again, restart");
    pair.alpha.start().await?;
    // Submissions answered "outcome unknown" are retried as a client should: the same nonce and
    // content. Each must now be accepted, and arrive exactly once whether or not the first try
    // had been stored.
    let unknown = ledger.unknown.len();
    let left = ledger.retry_unknown(&alpha, Duration::from_secs(30)).await;
    eprintln!(
        "  storage: {unknown} \"outcome unknown\" answers retried with the same nonce, {} not accepted",
        left.len()
    );
    if !left.is_empty() {
        ok = false;
        notes.push(format!("retries of \"outcome unknown\" not accepted: {left:?}"));
    }
    let mut inbox = Inbox::new();
    let drained = drain(&mut inbox, &alpha, &beta, &ledger.accepted, Duration::from_secs(drain_secs)).await?;
    let t = Tally::of(&ledger, &inbox, "ro-");
    if !t.exact() || t.refused_arrived > 0 || drained.bounced != 0 {
        ok = false;
        notes.push(format!(
            "after the read-only disk: lost {}, duplicates {}, strays {}, refused but delivered {}, bounced {}",
            t.lost, t.duplicates, t.strays, t.refused_arrived, drained.bounced
        ));
    }
    eprintln!(
        "  storage: after repair: {} accepted, {} delivered, {} lost, {} duplicates",
        t.accepted, t.delivered, t.lost, t.duplicates
    );
    drop(pair);
    drop(fs);
    Ok(Ok((t, notes, ok)))
}
