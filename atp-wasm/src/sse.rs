//! The client side of the inbox stream (docs/protocol.md §6.5): an incremental parser of
//! server-sent events (the WHATWG "event stream" format: `field: value` lines, a blank line ends
//! an event, `:` starts a comment) and [`Subscription`], which turns the bytes of
//! `GET messages/stream` into inbox messages and remembers the last id for a reconnect
//! (`Last-Event-ID`), so a dropped connection resumes with no gap and no duplicate. The transport
//! that reads the bytes is the caller's (reqwest natively, `fetch` in JavaScript).

/// One event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Event {
    /// The `id` field, if the event had one.
    pub id: Option<String>,
    /// The `event` field (`message` when absent, as in the standard).
    pub event: String,
    /// The `data` lines, joined with `\n`.
    pub data: String,
}

/// Most bytes of one event kept while it is incomplete (a message is at most 64 MiB).
pub const MAX_EVENT: usize = 80 << 20;

/// An incremental event-stream parser: feed it text as it arrives, get whole events.
#[derive(Debug, Default)]
pub struct Parser {
    line: Vec<u8>,
    event: Event,
    has_data: bool,
    /// The reconnection delay the server asked for (`retry:`), in milliseconds.
    pub retry_ms: Option<u64>,
}

/// Why the stream cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    #[error("an event larger than {MAX_EVENT} bytes")]
    TooLarge,
    #[error("an inbox event without a numeric id: {0:?}")]
    BadId(Option<String>),
}

impl Parser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds a chunk of bytes (a chunk may end inside a character); returns the events it
    /// completed.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<Event>, SseError> {
        let mut out = Vec::new();
        for &b in chunk {
            match b {
                b'\n' => {
                    let bytes = std::mem::take(&mut self.line);
                    let line = String::from_utf8_lossy(&bytes);
                    let line = line.strip_suffix('\r').unwrap_or(&line);
                    self.line(line, &mut out);
                }
                b => self.line.push(b),
            }
            if self.line.len() + self.event.data.len() > MAX_EVENT {
                return Err(SseError::TooLarge);
            }
        }
        Ok(out)
    }

    fn line(&mut self, line: &str, out: &mut Vec<Event>) {
        if line.is_empty() {
            if self.has_data {
                let mut e = std::mem::take(&mut self.event);
                if e.event.is_empty() {
                    e.event = "message".into();
                }
                out.push(e);
            }
            self.event = Event::default();
            self.has_data = false;
            return;
        }
        if line.starts_with(':') {
            return;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "data" => {
                if self.has_data {
                    self.event.data.push('\n');
                }
                self.event.data.push_str(value);
                self.has_data = true;
            }
            "event" => self.event.event = value.to_owned(),
            "id" if !value.contains('\0') => self.event.id = Some(value.to_owned()),
            "retry" => self.retry_ms = value.parse().ok().or(self.retry_ms),
            _ => {}
        }
    }
}

/// An inbox message from the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxEvent {
    /// The inbox id (the cursor).
    pub id: i64,
    /// The message JSON exactly as `GET messages` returns it.
    pub json: String,
}

/// One agent's subscription to its inbox stream, across reconnections: the parser of the current
/// connection and the id of the last message handed out.
#[derive(Debug, Default)]
pub struct Subscription {
    parser: Parser,
    last_id: i64,
}

impl Subscription {
    /// Starts after inbox id `after` (0: from the first message).
    pub fn new(after: i64) -> Self {
        Subscription { parser: Parser::new(), last_id: after }
    }

    /// The id to resume after (`Last-Event-ID` of the next connection).
    pub fn last_id(&self) -> i64 {
        self.last_id
    }

    /// The server's reconnection delay, if it sent one.
    pub fn retry_ms(&self) -> Option<u64> {
        self.parser.retry_ms
    }

    /// A new connection begins: an event cut off by the old one is dropped (it comes again).
    pub fn reconnecting(&mut self) {
        let retry = self.parser.retry_ms;
        self.parser = Parser { retry_ms: retry, ..Parser::default() };
    }

    /// Feeds bytes of the current connection; returns the messages they completed, oldest first,
    /// and moves [`Subscription::last_id`] past them. A message at or before the last id (a
    /// server that resent it) is skipped, so none is handed out twice.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<InboxEvent>, SseError> {
        let mut out = Vec::new();
        for e in self.parser.push(chunk)? {
            if e.event != "message" {
                continue;
            }
            let id = e.id.as_deref().and_then(|i| i.trim().parse::<i64>().ok()).ok_or(SseError::BadId(e.id.clone()))?;
            if id <= self.last_id {
                continue;
            }
            self.last_id = id;
            out.push(InboxEvent { id, json: e.data });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_across_chunks_comments_and_retry() {
        let mut p = Parser::new();
        assert!(p.push(b": atp inbox stream\nretry: 2000\n\nid: 7\nevent: mess").unwrap().is_empty());
        assert_eq!(p.retry_ms, Some(2000));
        let got = p.push(b"age\r\ndata: {\"a\":1}\ndata:{\"b\":2}\n\n: heartbeat\n\ndata: x\n\n").unwrap();
        assert_eq!(
            got,
            [
                Event { id: Some("7".into()), event: "message".into(), data: "{\"a\":1}\n{\"b\":2}".into() },
                Event { id: None, event: "message".into(), data: "x".into() },
            ]
        );
    }

    #[test]
    fn a_subscription_resumes_without_gap_or_duplicate() {
        let mut s = Subscription::new(0);
        let got = s.push(b"id: 1\nevent: message\ndata: {\"n\":1}\n\nid: 2\nevent: message\ndata: {\"n\"").unwrap();
        assert_eq!(got, [InboxEvent { id: 1, json: "{\"n\":1}".into() }]);
        // The connection drops in the middle of event 2; the next one resumes after 1.
        s.reconnecting();
        assert_eq!(s.last_id(), 1);
        let got = s.push(b"id: 1\ndata: {\"n\":1}\n\nid: 2\ndata: {\"n\":2}\n\n").unwrap();
        assert_eq!(got.iter().map(|e| e.id).collect::<Vec<_>>(), [2], "1 was handed out already");
        assert_eq!(s.push(b"id: x\ndata: {}\n\n").unwrap_err(), SseError::BadId(Some("x".into())));
    }
}
