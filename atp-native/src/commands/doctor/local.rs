//! The checks of the machine the server runs on: the home's permissions (docs/protocol.md §8.7: the
//! private keys are the domain's identity), free space on its file system (a full disk is answered
//! 507, docs/design.md §3), and the outbound queue read from the server's database, opened read-only
//! (docs/design.md §3 "per-destination delivery": waiting rows and the domains backing off).

use std::path::{Path, PathBuf};

use super::Line;
use crate::commands::utc;
use crate::home::Home;

/// Permission problems of the home, one line for all.
pub fn permissions(home: &Home) -> Line {
    const CHECK: &str = "home permissions";
    let root = &home.root;
    if !root.is_dir() {
        return Line::fail(
            CHECK,
            format!("no home directory at {}", root.display()),
            "pass --home with the server's state directory (e.g. --home /var/lib/atp), or set ATP_HOME",
        );
    }
    let problems = permission_problems(home);
    if problems.is_empty() {
        return Line::ok(
            CHECK,
            format!("{}: private keys owner-only, database not readable by others", root.display()),
        );
    }
    let r = root.display();
    Line::fail(
        CHECK,
        problems.join("; "),
        format!(
            "chmod 700 {r}/keys {r}/data && chmod 600 {r}/keys/*.key {r}/certs/*.key && chmod go-w {r}; \
             chown -R <server user> {r} when files belong to another user"
        ),
    )
}

#[cfg(unix)]
fn permission_problems(home: &Home) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let mut problems = Vec::new();
    let Ok(root_meta) = std::fs::metadata(&home.root) else { return vec!["the home cannot be read".into()] };
    let owner = root_meta.uid();
    let files = |dir: &Path| -> Vec<PathBuf> {
        std::fs::read_dir(dir).map(|it| it.flatten().map(|e| e.path()).collect()).unwrap_or_default()
    };
    let mut all = vec![home.root.clone(), home.config_path()];
    for dir in [home.keys_dir(), home.certs_dir(), home.data_dir(), home.registry_dir()] {
        all.extend(files(&dir));
        all.push(dir);
    }
    for path in &all {
        let Ok(m) = std::fs::symlink_metadata(path) else { continue };
        let mode = m.mode() & 0o777;
        if mode & 0o002 != 0 && !m.file_type().is_symlink() {
            problems.push(format!("{} is writable by every user ({mode:o})", path.display()));
        }
        if m.uid() != owner {
            problems.push(format!("{} belongs to uid {}, the home to uid {owner}", path.display(), m.uid()));
        }
    }
    let mode = |p: &Path| std::fs::metadata(p).map(|m| m.mode() & 0o777).ok();
    if let Some(m) = mode(&home.keys_dir()).filter(|m| m & 0o077 != 0) {
        problems.push(format!("{} is open to other users ({m:o})", home.keys_dir().display()));
    }
    for dir in [home.keys_dir(), home.certs_dir()] {
        for key in files(&dir).into_iter().filter(|p| p.extension().is_some_and(|e| e == "key")) {
            if let Some(m) = mode(&key).filter(|m| m & 0o077 != 0) {
                problems.push(format!("private key {} is readable by other users ({m:o})", key.display()));
            }
        }
    }
    // Messages and password hashes: readable by others when both the directory and a file are.
    let data = home.data_dir();
    if mode(&data).is_some_and(|m| m & 0o005 == 0o005) {
        if let Some(db) = files(&data).into_iter().find(|p| mode(p).is_some_and(|m| m & 0o004 != 0)) {
            problems.push(format!("{} (the database) is readable by other users", db.display()));
        }
    }
    let config = home.config_path();
    if mode(&config).is_some_and(|m| m & 0o004 != 0)
        && std::fs::read_to_string(&config).is_ok_and(|t| t.contains("admin_token"))
    {
        problems.push(format!("{} holds the admin token and is readable by other users", config.display()));
    }
    problems
}

#[cfg(not(unix))]
fn permission_problems(_home: &Home) -> Vec<String> {
    Vec::new()
}

/// Free space and writability of the file system holding the home.
pub fn disk(home: &Home, min_free_mib: u64) -> Line {
    const CHECK: &str = "disk space";
    let Some(path) = home.root.ancestors().find(|p| p.exists()) else {
        return Line::fail(CHECK, "no existing directory above the home", "create the home");
    };
    match statvfs(path) {
        Err(e) => Line::fail(CHECK, format!("statvfs {}: {e}", path.display()), "check the file system"),
        Ok(fs) if fs.read_only => Line::fail(
            CHECK,
            format!("the file system of {} is mounted read-only: every message is refused 503", path.display()),
            "remount it read-write (after `dmesg` shows why it turned read-only)",
        ),
        Ok(fs) => {
            let (free, total) = (fs.free / (1 << 20), fs.total / (1 << 20));
            let text = format!(
                "{} MiB free of {} MiB ({}%) on the file system of {}",
                free,
                total,
                (free * 100).checked_div(total).unwrap_or(0),
                path.display()
            );
            if free < min_free_mib {
                Line::fail(
                    CHECK,
                    format!("{text}, under {min_free_mib} MiB"),
                    "free space there: when the disk fills the server refuses messages with 507 \"storage\": \"full\"",
                )
            } else {
                Line::ok(CHECK, text)
            }
        }
    }
}

struct FsStats {
    free: u64,
    total: u64,
    read_only: bool,
}

#[cfg(unix)]
fn statvfs(path: &Path) -> std::io::Result<FsStats> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    // SAFETY: `c` is a valid NUL-terminated string; `st` is written by statvfs only.
    let st = unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c.as_ptr(), &mut st) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        st
    };
    let unit = st.f_frsize as u64;
    Ok(FsStats {
        free: st.f_bavail as u64 * unit,
        total: st.f_blocks as u64 * unit,
        read_only: st.f_flag & libc::ST_RDONLY != 0,
    })
}

#[cfg(not(unix))]
fn statvfs(_path: &Path) -> std::io::Result<FsStats> {
    Err(std::io::Error::other("not supported on this platform"))
}

/// A waiting message.
#[derive(Debug)]
struct Waiting {
    nonce: String,
    to: String,
    created_at: i64,
    attempts: i64,
    last_error: Option<String>,
}

/// A destination domain whose messages wait for a retry.
#[derive(Debug)]
struct BackingOff {
    domain: String,
    messages: i64,
    next_attempt_at: i64,
    last_error: Option<String>,
}

/// The queue: the oldest waiting message and the domains backing off.
pub fn queue(home: &Home, domain: &str, now: i64, max_age: i64) -> Vec<Line> {
    let db = home.db_path(domain);
    let read = || -> rusqlite::Result<(i64, Option<Waiting>, Vec<BackingOff>)> {
        use rusqlite::OptionalExtension as _;
        let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let c = rusqlite::Connection::open_with_flags(&db, flags)?;
        c.busy_timeout(std::time::Duration::from_secs(5))?;
        const WAITING: &str = "status IN ('queued', 'delivering', 'failed')";
        let count: i64 = c.query_row(&format!("SELECT COUNT(*) FROM messages WHERE {WAITING}"), [], |r| r.get(0))?;
        let oldest = c
            .query_row(
                &format!(
                    "SELECT nonce, to_id, created_at, attempts, last_error FROM messages WHERE {WAITING} \
                     ORDER BY created_at, id LIMIT 1"
                ),
                [],
                |r| {
                    Ok(Waiting {
                        nonce: r.get(0)?,
                        to: r.get(1)?,
                        created_at: r.get(2)?,
                        attempts: r.get(3)?,
                        last_error: r.get(4)?,
                    })
                },
            )
            .optional()?;
        let mut st = c.prepare(
            "SELECT dest_domain, COUNT(*), MIN(next_attempt_at),
                    (SELECT last_error FROM messages l WHERE l.dest_domain = m.dest_domain AND l.status = 'failed'
                     ORDER BY l.updated_at DESC LIMIT 1)
             FROM messages m WHERE status = 'failed' AND next_attempt_at > ?1
             GROUP BY dest_domain ORDER BY COUNT(*) DESC, dest_domain",
        )?;
        let backing_off = st
            .query_map([now], |r| {
                Ok(BackingOff {
                    domain: r.get::<_, Option<String>>(0)?.unwrap_or_default(),
                    messages: r.get(1)?,
                    next_attempt_at: r.get(2)?,
                    last_error: r.get(3)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok((count, oldest, backing_off))
    };
    if !db.is_file() {
        return vec![Line::fail(
            "queue",
            format!("no database at {}", db.display()),
            format!("pass --home with the home of the server of {domain} (it creates data/{domain}.db when it starts)"),
        )];
    }
    let (count, oldest, backing_off) = match read() {
        Ok(r) => r,
        Err(e) => {
            return vec![Line::fail(
                "queue",
                format!("cannot read {}: {e}", db.display()),
                "run atp doctor as the server's user (e.g. sudo -u atp atp doctor --home /var/lib/atp …)",
            )]
        }
    };
    let mut lines = Vec::new();
    match oldest {
        None => lines.push(Line::ok("queue", "no message waiting for delivery")),
        Some(w) => {
            let age = now - w.created_at;
            let text = format!(
                "{count} waiting; the oldest, {} to {}, for {} (since {}, {} attempts{})",
                w.nonce,
                w.to,
                duration(age),
                utc(w.created_at),
                w.attempts,
                w.last_error.map(|e| format!(", last error: {e}")).unwrap_or_default()
            );
            if age > max_age {
                lines.push(Line::fail(
                    "queue",
                    text,
                    format!(
                        "see why with `atp inspect {} --server … --admin-token …`, and check the receiving domain \
                         with `atp doctor --domain {}` (messages bounce after max_age)",
                        w.nonce,
                        w.to.rsplit('@').next().unwrap_or("")
                    ),
                ));
            } else {
                lines.push(Line::ok("queue", text));
            }
        }
    }
    if backing_off.is_empty() {
        lines.push(Line::ok("backoff", "no destination domain is backing off"));
    } else {
        let list: Vec<String> = backing_off
            .iter()
            .map(|b| {
                format!(
                    "{} ({} messages, next attempt in {}{})",
                    b.domain,
                    b.messages,
                    duration(b.next_attempt_at - now),
                    b.last_error.as_ref().map(|e| format!(", last error: {e}")).unwrap_or_default()
                )
            })
            .collect();
        let first = &backing_off[0].domain;
        lines.push(Line::warn(
            "backoff",
            format!("{} domain(s) backing off: {}", backing_off.len(), list.join("; ")),
            format!(
                "the receiving servers did not answer: `atp doctor --domain {first}` shows what is wrong there; \
                 delivery resumes by itself as soon as one answers"
            ),
        ));
    }
    lines
}

/// `90 s`, `12 min`, `3 h`, `2 d`.
fn duration(secs: i64) -> String {
    match secs.max(0) {
        s if s < 120 => format!("{s} s"),
        s if s < 7200 => format!("{} min", s / 60),
        s if s < 172_800 => format!("{} h", s / 3600),
        s => format!("{} d", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::super::Mark;
    use super::*;

    #[cfg(unix)]
    #[test]
    fn permissions_of_a_home() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let home = Home { root: dir.path().join("h") };
        assert_eq!(permissions(&home).mark, Mark::Fail, "no home");
        home.ensure().unwrap();
        home.load_or_create_key("default", 0).unwrap();
        std::fs::write(home.db_path("a.test"), "db").unwrap();
        let set = |p: PathBuf, m: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
        set(home.data_dir(), 0o700);
        set(home.db_path("a.test"), 0o644);
        let line = permissions(&home);
        assert_eq!(line.mark, Mark::Ok, "{line:?}");

        set(home.key_path("default"), 0o644);
        set(home.data_dir(), 0o755);
        std::fs::write(home.config_path(), "[server]\nadmin_token = \"t\"\n").unwrap();
        set(home.config_path(), 0o644);
        set(home.certs_dir(), 0o777);
        let line = permissions(&home);
        assert_eq!(line.mark, Mark::Fail);
        for part in [
            "default.key is readable",
            "a.test.db (the database) is readable",
            "holds the admin token",
            "certs is writable",
        ] {
            assert!(line.detail.contains(part), "{part}: {}", line.detail);
        }
        assert!(line.fix.unwrap().contains("chmod 700"));
    }

    #[test]
    fn disk_space_threshold() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home { root: dir.path().to_owned() };
        assert_eq!(disk(&home, 0).mark, Mark::Ok);
        let line = disk(&home, u64::MAX);
        assert_eq!(line.mark, Mark::Fail);
        assert!(line.detail.contains("MiB free of"), "{}", line.detail);
    }

    #[test]
    fn durations() {
        assert_eq!(
            (duration(5), duration(600), duration(7200), duration(200_000)),
            ("5 s".into(), "10 min".into(), "2 h".into(), "2 d".into())
        );
    }
}
