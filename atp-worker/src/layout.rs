//! Where the relay's state lives in its three KV namespaces, as pure functions on key strings.
//!
//! | namespace | key | value |
//! |---|---|---|
//! | `AGENTS` | `a/<agent id>` | `{"hash": <argon2id PHC>, "created_at": s}`; metadata `{"created_at": s}` |
//! | `MAIL` | `i/<agent>/<day>/<id>` | a message in the agent's inbox (JSON as stored) |
//! | `MAIL` | `x/<agent>/<day>` | marks a day on which the agent received mail (value `1`) |
//! | `MAIL` | `m/<nonce>` | the message record `inspect` shows (the core's [`atp_wasm::relay::store::MessageInfo`]) |
//! | `MAIL` | `d/<sender domain>/<nonce>` | hex SHA-256 of an accepted message, for the 5-day horizon |
//! | `QUEUE` | `q/<due>/<nonce>` | an outbound message waiting for its next attempt ([`crate::store::QueueEntry`]) |
//! | `QUEUE` | `b/<domain>` | backoff of a destination domain (`{"failures", "blocked_until"}`) |
//!
//! * **Inbox ids** are `unix milliseconds × 1000 + a random 0..999`: increasing with time without a
//!   counter (KV has no atomic increment), unique in practice, and below 2^53 so JavaScript clients
//!   read them exactly. The `recv` cursor (`after_id`) selects ids greater than it.
//! * **Days** (`id / 1000 / 86 400 000`, zero-padded to 6 digits) bucket an inbox, so that `recv`
//!   lists only the days at or after its cursor's day: `x/<agent>/` names them (one list), then
//!   `i/<agent>/<day>/` is listed day by day until `limit` messages are found. Nothing is read twice
//!   and no key is ever rewritten, so concurrent writers cannot lose each other's updates.
//! * **Queue keys** sort by due time (Unix seconds zero-padded to 12 digits), so the cron sweep
//!   lists `q/` and stops at the first key that is not due yet. Claiming a message moves it to a
//!   later key (a lease), so an attempt that dies mid-way is retried after the lease.

/// Width of a zero-padded inbox id (ids are below 10^16 until the year 2286).
pub const ID_WIDTH: usize = 16;
/// Width of a zero-padded day number.
pub const DAY_WIDTH: usize = 6;
/// Width of a zero-padded due time in Unix seconds.
pub const DUE_WIDTH: usize = 12;

const MS_PER_DAY: i64 = 86_400_000;

/// `a/<agent>`.
pub fn agent_key(agent: &str) -> String {
    format!("a/{agent}")
}

/// The prefix of every agent key.
pub const AGENTS_PREFIX: &str = "a/";

/// An inbox id for a message stored at `now_ms`, with `random` spreading ids within a millisecond.
pub fn inbox_id(now_ms: i64, random: u32) -> i64 {
    now_ms.max(0).saturating_mul(1000).saturating_add(i64::from(random % 1000))
}

/// The day bucket of an inbox id.
pub fn day_of(id: i64) -> i64 {
    id.max(0) / 1000 / MS_PER_DAY
}

/// `i/<agent>/<day>/<id>`.
pub fn inbox_key(agent: &str, id: i64) -> String {
    format!("i/{agent}/{:0dw$}/{:0iw$}", day_of(id), id, dw = DAY_WIDTH, iw = ID_WIDTH)
}

/// `i/<agent>/<day>/`: one day of an inbox.
pub fn inbox_day_prefix(agent: &str, day: i64) -> String {
    format!("i/{agent}/{day:0DAY_WIDTH$}/")
}

/// The inbox id at the end of an inbox key.
pub fn parse_inbox_key(key: &str) -> Option<i64> {
    key.rsplit('/').next()?.parse().ok()
}

/// `x/<agent>/<day>`.
pub fn day_marker_key(agent: &str, day: i64) -> String {
    format!("x/{agent}/{day:0DAY_WIDTH$}")
}

/// `x/<agent>/`.
pub fn day_marker_prefix(agent: &str) -> String {
    format!("x/{agent}/")
}

/// The day at the end of a day marker key.
pub fn parse_day_marker(key: &str) -> Option<i64> {
    key.rsplit('/').next()?.parse().ok()
}

/// `m/<nonce>`.
pub fn record_key(nonce: &str) -> String {
    format!("m/{nonce}")
}

/// `u/<agent>`: what an agent's inbox holds (its quota, docs/design.md §5b).
pub fn usage_key(agent: &str) -> String {
    format!("u/{agent}")
}

/// `d/<sender domain>/<nonce>`.
pub fn dedup_key(sender_domain: &str, nonce: &str) -> String {
    format!("d/{sender_domain}/{nonce}")
}

/// The prefix of every queue key.
pub const QUEUE_PREFIX: &str = "q/";

/// `q/<due>/<nonce>`.
pub fn queue_key(due: i64, nonce: &str) -> String {
    format!("q/{:0DUE_WIDTH$}/{nonce}", due.max(0))
}

/// `(due, nonce)` of a queue key.
pub fn parse_queue_key(key: &str) -> Option<(i64, &str)> {
    let rest = key.strip_prefix(QUEUE_PREFIX)?;
    let (due, nonce) = rest.split_once('/')?;
    if due.len() != DUE_WIDTH || nonce.is_empty() {
        return None;
    }
    Some((due.parse().ok()?, nonce))
}

/// `b/<domain>`.
pub fn backoff_key(domain: &str) -> String {
    format!("b/{domain}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inbox_keys_sort_by_id_and_carry_their_day() {
        let now = 1_795_545_211_123; // ms
        let a = inbox_id(now, 5);
        let b = inbox_id(now + 1, 999);
        let c = inbox_id(now + 86_400_000, 0);
        assert!(a < b && b < c);
        assert!(c < (1i64 << 53), "exact in JavaScript");
        assert_eq!(inbox_id(now, 1005), inbox_id(now, 5));
        let (ka, kb, kc) = (inbox_key("bob@x.test", a), inbox_key("bob@x.test", b), inbox_key("bob@x.test", c));
        assert!(ka < kb && kb < kc);
        assert_eq!(ka, format!("i/bob@x.test/020781/{a:016}"));
        assert!(ka.starts_with(&inbox_day_prefix("bob@x.test", day_of(a))));
        assert_eq!(day_of(c), day_of(a) + 1);
        assert_eq!(parse_inbox_key(&kc), Some(c));
        assert_eq!(parse_day_marker(&day_marker_key("bob@x.test", 20781)), Some(20781));
        assert!(day_marker_key("bob@x.test", 7).starts_with(&day_marker_prefix("bob@x.test")));
        assert_eq!(day_of(0), 0);
    }

    #[test]
    fn queue_keys_sort_by_due_time() {
        let k1 = queue_key(1_795_545_211, "msg-1");
        let k2 = queue_key(999, "msg-2");
        assert!(k2 < k1);
        assert_eq!(k1, "q/001795545211/msg-1");
        assert_eq!(parse_queue_key(&k1), Some((1_795_545_211, "msg-1")));
        assert_eq!(parse_queue_key("q/001795545211/a/b"), Some((1_795_545_211, "a/b")), "nonces may hold '/'");
        assert_eq!(parse_queue_key("q/12/x"), None);
        assert_eq!(parse_queue_key("b/x"), None);
        assert_eq!(parse_queue_key("q/001795545211/"), None);
    }
}
