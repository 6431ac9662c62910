//! The server's log on stderr (docs/design.md §6): lines for people (`--log-format text`, the
//! default) or one JSON object per line for log collectors (`--log-format json`).
//!
//! A JSON line holds `timestamp` (RFC 3339, UTC), `level`, `target`, `message`, the event's own
//! fields, and the fields of every span the event happened in, innermost first: so an event inside
//! a request carries its `peer` (the TCP peer, from [`request_span`]), `method` and `path`, and an
//! event about a message carries its `nonce` (the message and delivery spans). The start-up lines
//! that are printed for people in text mode are JSON events too, so every line parses.

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::{ConnectInfo, Request};
use axum::middleware::Next;
use axum::response::Response;
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Instrument, Subscriber};
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, JsonFields, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// `--log-format`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Lines for people.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Set once JSON logging is on: `say!` lines become log events.
static JSON: AtomicBool = AtomicBool::new(false);

/// True when the log is JSON lines.
pub fn json() -> bool {
    JSON.load(Ordering::Relaxed)
}

/// Installs the global subscriber: `filter` is a tracing env-filter.
pub fn init(filter: &str, format: LogFormat) {
    let filter =
        tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Write errors (stderr on a full disk, a closed pipe) drop the event; by default
    // tracing-subscriber reports them with eprintln!, which panics on the same broken stderr.
    let builder =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).log_internal_errors(false);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init(),
        LogFormat::Json => {
            builder.with_ansi(false).fmt_fields(JsonFields::new()).event_format(JsonLines).init();
            JSON.store(true, Ordering::Relaxed);
        }
    }
}

/// Wraps every request in a `request` span with the TCP peer, the method and the path.
pub async fn request_span(ConnectInfo(peer): ConnectInfo<SocketAddr>, req: Request, next: Next) -> Response {
    let span = tracing::info_span!("request", peer = %peer, method = %req.method(), path = %req.uri().path());
    next.run(req).instrument(span).await
}

/// The JSON-lines event format.
struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let mut timestamp = String::new();
        SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
        let meta = event.metadata();
        let mut line = Map::new();
        line.insert("timestamp".into(), timestamp.into());
        line.insert("level".into(), meta.level().as_str().into());
        line.insert("target".into(), meta.target().into());
        let mut fields = Fields(Map::new());
        event.record(&mut fields);
        line.insert("message".into(), fields.0.remove("message").unwrap_or(Value::String(String::new())));
        line.extend(fields.0);
        // Span fields, innermost span first; an event's own field wins over a span's.
        if let Some(scope) = ctx.event_scope() {
            for span in scope {
                let ext = span.extensions();
                let Some(formatted) = ext.get::<FormattedFields<N>>() else { continue };
                if let Ok(Value::Object(map)) = serde_json::from_str::<Value>(&formatted.fields) {
                    for (k, v) in map {
                        line.entry(k).or_insert(v);
                    }
                }
            }
        }
        writeln!(writer, "{}", Value::Object(line))
    }
}

/// Collects an event's fields as JSON values.
struct Fields(Map<String, Value>);

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0.insert(field.name().into(), value.to_string().into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().into(), format!("{value:?}").into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::fmt::MakeWriter;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buffer {
        type Writer = Buffer;
        fn make_writer(&'a self) -> Buffer {
            self.clone()
        }
    }

    #[test]
    fn one_object_per_line_with_span_fields() {
        let buf = Buffer::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(buf.clone())
            .fmt_fields(JsonFields::new())
            .event_format(JsonLines)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let request = tracing::info_span!("request", peer = %"127.0.0.1:5000");
            let _r = request.enter();
            let message = tracing::info_span!("message", nonce = %"n-1", to = "b@x.test");
            let _m = message.enter();
            tracing::info!(id = 7, local = true, "message\naccepted");
            tracing::warn!(nonce = "own", "own field wins");
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 2, "{text}");
        let first = &lines[0];
        assert_eq!(first["message"], "message\naccepted");
        assert_eq!(
            (first["level"].as_str(), first["id"].as_i64(), first["local"].as_bool()),
            (Some("INFO"), Some(7), Some(true))
        );
        assert_eq!((first["nonce"].as_str(), first["peer"].as_str()), (Some("n-1"), Some("127.0.0.1:5000")));
        assert!(first["timestamp"].as_str().unwrap().ends_with('Z'));
        assert_eq!(lines[1]["nonce"], "own");
    }
}
