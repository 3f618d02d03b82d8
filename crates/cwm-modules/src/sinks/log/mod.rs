//! `log` sink: prints each event on stdout.
//!
//! `module-config`: `pretty_print` (default `false`), `redact_sensitive` (default `true`).
//!
//! Standard output is one JSON object per line:
//! `{"received_at":"<RFC 3339, ms, UTC>","namespace":<string|null>,"webhook_id":"..","headers":{..},"payload":..}`.
//! Pretty output is a multi-line block framed by 80 `=` with the headers and the payload as
//! indented JSON; the payload text is cut at 10000 characters followed by `... [truncated]`.
//!
//! Redaction: a header or payload key whose lower-cased name *contains* one of the sensitive words
//! (password, secret, token, auth, cookie, session, ...) has its value or whole subtree replaced by
//! `"[REDACTED]"`. Words with `_` are also matched with `-` (`x-api-key` matches `api_key`), for
//! header names and payload keys alike.
//!
//! Sanitizing (standard form only, as upstream): nesting deeper than 10 levels becomes
//! `"[Max depth exceeded]"`; in strings CR and LF become `[NL]` and other control characters
//! `[CTRL]`; strings over 10000 characters are cut and end in `... [truncated]`.
//!
//! Blob payloads are logged as `{"length":N,"truncated":bool,"base64":"..."}`: base64 of at most the
//! first 7500 bytes (10000 characters), so binary bodies never corrupt the log stream.
//!
//! A JSON payload kept as the request's text ([`JsonPayload`]) is formatted straight from the text:
//! serde_json's deserializer drives the serializer, so no `Value` is built. The standard line
//! copies such a text byte for byte when formatting would not change it (compact, no escapes,
//! integers only, at most 10 levels, no sensitive key). The output is the same as for the parsed
//! document, except that a key the sender repeated in one object is printed each time (a parsed
//! document keeps only the last).
//!
//! Writes never block the runtime: `deliver` formats the line and queues it on a bounded channel
//! to the process's single writer thread ([`LogWriter`]); `Ok` means queued. The queue is bounded
//! in lines and in bytes (`LOG_QUEUE_MAX_BYTES`, the lines' allocations until they are written):
//! when stdout does not keep up (a blocked pipe) and the queue is full, `deliver` fails at once
//! with a retryable [`SinkError::Unavailable`], so the sender gets 503 and retries; no line is
//! dropped silently and memory stays bounded.

use std::borrow::Cow;
use std::cell::Cell;
use std::fmt;
use std::io::{self, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use base64::display::Base64Display;
use base64::engine::general_purpose::STANDARD;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::ser::{self, SerializeMap, SerializeSeq, SerializeStruct, Serializer};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use cwm_config::WebhookConfig;

use crate::context::ModuleContext;
use crate::opts;
use crate::payload::{JsonPayload, JsonRef};
use crate::sink::{Event, Payload, Sink, SinkError};
use crate::words::WordSet;

const REDACTED: &str = "[REDACTED]";
const DEPTH_EXCEEDED: &str = "[Max depth exceeded]";
const TRUNCATED: &str = "... [truncated]";
const MAX_DEPTH: usize = 10;
const MAX_FIELD_CHARS: usize = 10_000;
/// Base64 of this many bytes is exactly `MAX_FIELD_CHARS` characters.
const MAX_BLOB_BYTES: usize = MAX_FIELD_CHARS / 4 * 3;
const RULE: &str =
    "================================================================================";

/// The upstream `log` module's sensitive words, minus words that contain another listed word (`access_token` already
/// matches `token`), plus the `-` forms of the `_` words.
const SENSITIVE: &[&str] = &[
    "password",
    "passwd",
    "pwd",
    "secret",
    "token",
    "api_key",
    "apikey",
    "auth",
    "credential",
    "private_key",
    "privatekey",
    "session",
    "cookie",
    "ssn",
    "credit_card",
    "creditcard",
    "database_url",
    "db_url",
    "connection_string",
    "conn_string",
    "api-key",
    "private-key",
    "credit-card",
    "database-url",
    "db-url",
    "connection-string",
    "conn-string",
];

pub fn factory(config: &WebhookConfig, ctx: &ModuleContext) -> Result<Arc<dyn Sink>, String> {
    let mc = &config.module_config;
    let format = LogFormat {
        pretty: opts::truthy(mc, "pretty_print", false),
        redact: opts::truthy(mc, "redact_sensitive", true),
    };
    Ok(Arc::new(LogSink {
        format,
        writer: ctx.log_writer()?,
        size_hint: AtomicUsize::new(256),
    }))
}

struct LogSink {
    format: LogFormat,
    writer: LogWriter,
    /// Length of the last line, so the next buffer is usually allocated once.
    size_hint: AtomicUsize,
}

#[async_trait]
impl Sink for LogSink {
    fn module(&self) -> &'static str {
        "log"
    }

    async fn deliver(&self, event: &Event) -> Result<(), SinkError> {
        let hint = self.size_hint.load(Ordering::Relaxed);
        let mut line = Vec::with_capacity(hint + hint / 8);
        self.format.render(event, &mut line);
        self.size_hint
            .store(line.len().min(64 * 1024), Ordering::Relaxed);
        self.writer.send(line)
    }

    async fn shutdown(&self) {
        // The process-wide flush with a deadline is `ModuleContext::shutdown`.
        self.writer.flush(Duration::MAX).await;
    }
}

/// The `log` sink's output for `event`, exactly as `deliver` queues it. Public only for the fuzz
/// targets (fuzz/fuzz_targets/log_payload.rs); not part of the API.
#[doc(hidden)]
pub fn format_event(event: &Event, pretty: bool, redact: bool) -> Vec<u8> {
    let mut out = Vec::new();
    LogFormat { pretty, redact }.render(event, &mut out);
    out
}

/// How a sink prints events.
#[derive(Debug, Clone, Copy)]
struct LogFormat {
    pretty: bool,
    redact: bool,
}

impl LogFormat {
    /// Append the complete output for `event` (ending in a newline) to `out`.
    fn render(&self, event: &Event, out: &mut Vec<u8>) {
        if self.pretty {
            self.render_pretty(event, out);
        } else {
            self.render_line(event, out);
        }
    }

    fn render_line(&self, event: &Event, out: &mut Vec<u8>) {
        let o = Opts {
            redact: self.redact,
            sanitize: true,
        };
        let head = Line {
            received_at: Timestamp(event.received_at),
            namespace: event.namespace.as_deref().map(|s| Text::new(s, o)),
            webhook_id: Text::new(&event.webhook_id, o),
            headers: HeadersView {
                headers: &event.headers,
                o,
            },
        };
        let start = out.len();
        if !write_line(&head, &event.payload, o, out) {
            // Only a broken Serialize impl gets here; still say that an event arrived.
            out.truncate(start);
            out.extend_from_slice(b"{\"error\":\"event could not be formatted\"}");
        }
        out.push(b'\n');
    }

    fn render_pretty(&self, event: &Event, out: &mut Vec<u8>) {
        let o = Opts {
            redact: self.redact,
            sanitize: false,
        };
        // Names come from the URL: sanitize them even here, they are printed outside JSON.
        let name_opts = Opts {
            redact: false,
            sanitize: true,
        };
        let id = Text::new(&event.webhook_id, name_opts);
        // Writing into a Vec cannot fail.
        let _ = writeln!(out, "{RULE}\nWEBHOOK RECEIVED\n{RULE}");
        let _ = match event.namespace.as_deref() {
            Some(ns) => writeln!(out, "Webhook: {}/{id}", Text::new(ns, name_opts)),
            None => writeln!(out, "Webhook: {id}"),
        };
        let _ = writeln!(out, "Received: {}", Timestamp(event.received_at));
        out.extend_from_slice(b"\nHeaders:\n");
        let headers = HeadersView {
            headers: &event.headers,
            o,
        };
        if serde_json::to_writer_pretty(&mut *out, &headers).is_err() {
            out.extend_from_slice(b"(headers could not be formatted)");
        }
        out.extend_from_slice(b"\n\nPayload:\n");
        let start = out.len();
        let written = match &event.payload {
            Payload::Json(json) => {
                serde_json::to_writer_pretty(&mut *out, &JsonView { json, o }).is_ok()
            }
            Payload::Blob(b) => {
                let _ = write!(
                    out,
                    "(blob, {} bytes, base64)\n{}",
                    b.len(),
                    Base64Display::new(&b[..b.len().min(MAX_BLOB_BYTES)], &STANDARD)
                );
                true
            }
        };
        if !written {
            out.truncate(start);
            out.extend_from_slice(b"(payload could not be formatted)");
        }
        if cap_chars(out, start, MAX_FIELD_CHARS)
            || matches!(&event.payload, Payload::Blob(b) if b.len() > MAX_BLOB_BYTES)
        {
            out.push(b'\n');
            out.extend_from_slice(TRUNCATED.as_bytes());
        }
        let _ = writeln!(out, "\n{RULE}");
    }
}

/// Cut `out[start..]` to at most `max` characters; true if something was cut.
fn cap_chars(out: &mut Vec<u8>, start: usize, max: usize) -> bool {
    let Some(tail) = out.get(start..) else {
        return false;
    };
    if tail.len() <= max {
        return false;
    }
    let Ok(text) = std::str::from_utf8(tail) else {
        return false;
    };
    match text.char_indices().nth(max) {
        Some((i, _)) => {
            out.truncate(start + i);
            true
        }
        None => false,
    }
}

/// Whether a header or key name is sensitive (contains-match, case-insensitive).
fn is_sensitive(name: &str) -> bool {
    if name.is_ascii() {
        matches_sensitive(name.as_bytes())
    } else {
        // Unicode lower-casing can produce ASCII (KELVIN SIGN -> k), as Python's lower() does.
        matches_sensitive(name.to_lowercase().as_bytes())
    }
}

fn matches_sensitive(name: &[u8]) -> bool {
    static WORDS: LazyLock<WordSet> = LazyLock::new(|| WordSet::new(SENSITIVE));
    WORDS.found_in(name)
}

#[derive(Debug, Clone, Copy)]
struct Opts {
    redact: bool,
    sanitize: bool,
}

#[derive(Serialize)]
struct Line<'a> {
    received_at: Timestamp,
    namespace: Option<Text<'a>>,
    webhook_id: Text<'a>,
    headers: HeadersView<'a>,
}

/// `head` as a JSON object with `"payload"` as its last member. A payload text the formatting
/// would not change is copied as it is; false if something could not be formatted.
fn write_line(head: &Line<'_>, payload: &Payload, o: Opts, out: &mut Vec<u8>) -> bool {
    if serde_json::to_writer(&mut *out, head).is_err() || out.pop() != Some(b'}') {
        return false;
    }
    out.extend_from_slice(b",\"payload\":");
    let copied = match payload {
        Payload::Json(json) => match json.view() {
            JsonRef::Text(t) if copyable(t, o.redact) => Some(t),
            _ => None,
        },
        Payload::Blob(_) => None,
    };
    match copied {
        Some(text) => out.extend_from_slice(text.as_bytes()),
        None => {
            if serde_json::to_writer(&mut *out, &PayloadView { payload, o }).is_err() {
                return false;
            }
        }
    }
    out.push(b'}');
    true
}

/// Whether the standard line can show `text`, a valid JSON document, byte for byte: only when the
/// transcoder would write exactly the same, i.e. the text is compact, has no escapes, no number
/// serde_json prints differently (floats, `-0`, integers near or beyond 64 bits), no nesting
/// beyond `MAX_DEPTH`, only clean strings of at most `MAX_FIELD_CHARS` bytes and, when
/// redacting, no sensitive key. Any doubt answers false and the transcoder runs, so this only has
/// to be right when it says true.
fn copyable(text: &str, redact: bool) -> bool {
    let b = text.as_bytes();
    let mut depth = 0usize;
    let mut digits = 0usize;
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        match c {
            b'"' => {
                let start = i + 1;
                let Some(len) = b
                    .get(start..)
                    .and_then(|r| r.iter().position(|&c| c == b'"'))
                else {
                    return false;
                };
                // Quotes are ASCII, so these are char boundaries.
                let Some(s) = text.get(start..start + len) else {
                    return false;
                };
                if s.len() > MAX_FIELD_CHARS || s.bytes().any(|c| c == b'\\' || c == 0x7f) {
                    return false;
                }
                i = start + len + 1;
                if redact && b.get(i) == Some(&b':') && is_sensitive(s) {
                    return false;
                }
                digits = 0;
                continue;
            }
            b'{' | b'[' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return false;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            b'0'..=b'9' => {
                digits += 1;
                if digits > 18 {
                    return false;
                }
                i += 1;
                continue;
            }
            b'-' if b.get(i + 1) == Some(&b'0') => return false,
            b'.' | b'e' | b'E' if digits > 0 => return false,
            b' ' | b'\t' | b'\n' | b'\r' => return false,
            _ => {}
        }
        digits = 0;
        i += 1;
    }
    true
}

/// RFC 3339 UTC with milliseconds; out-of-range clocks are clamped (the formatter refuses them).
struct Timestamp(SystemTime);

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const MAX: Duration = Duration::from_secs(253_402_300_799);
        let t = match self.0.duration_since(UNIX_EPOCH) {
            Ok(d) if d <= MAX => self.0,
            Ok(_) => UNIX_EPOCH + MAX,
            Err(_) => UNIX_EPOCH,
        };
        fmt::Display::fmt(&humantime::format_rfc3339_millis(t), f)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A string, sanitized when the options say so. Clean strings (the usual case) are written as is.
#[derive(Clone, Copy)]
struct Text<'a> {
    s: &'a str,
    sanitize: bool,
}

impl<'a> Text<'a> {
    fn new(s: &'a str, o: Opts) -> Self {
        Self {
            s,
            sanitize: o.sanitize,
        }
    }

    fn is_clean(&self) -> bool {
        !self.sanitize
            || (self.s.len() <= MAX_FIELD_CHARS
                && self
                    .s
                    .bytes()
                    .all(|b| (b >= 0x20 || b == b'\t') && b != 0x7f))
    }
}

impl fmt::Display for Text<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_clean() {
            return f.write_str(self.s);
        }
        for (i, c) in self.s.chars().enumerate() {
            if i == MAX_FIELD_CHARS {
                return f.write_str(TRUNCATED);
            }
            match c {
                '\r' | '\n' => f.write_str("[NL]")?,
                '\t' => f.write_str("\t")?,
                c if c < ' ' || c == '\x7f' => f.write_str("[CTRL]")?,
                c => fmt::Write::write_char(f, c)?,
            }
        }
        Ok(())
    }
}

impl Serialize for Text<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.is_clean() {
            s.serialize_str(self.s)
        } else {
            s.collect_str(self)
        }
    }
}

struct HeadersView<'a> {
    headers: &'a [(String, String)],
    o: Opts,
}

impl Serialize for HeadersView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.headers.len()))?;
        for (name, value) in self.headers {
            let key = Text::new(name, self.o);
            if self.o.redact && is_sensitive(name) {
                map.serialize_entry(&key, REDACTED)?;
            } else {
                map.serialize_entry(&key, &Text::new(value, self.o))?;
            }
        }
        map.end()
    }
}

struct PayloadView<'a> {
    payload: &'a Payload,
    o: Opts,
}

impl Serialize for PayloadView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.payload {
            Payload::Json(json) => JsonView { json, o: self.o }.serialize(s),
            Payload::Blob(b) => {
                let shown = &b[..b.len().min(MAX_BLOB_BYTES)];
                let mut st = s.serialize_struct("Blob", 3)?;
                st.serialize_field("length", &b.len())?;
                st.serialize_field("truncated", &(shown.len() < b.len()))?;
                st.serialize_field("base64", &B64(shown))?;
                st.end()
            }
        }
    }
}

struct B64<'a>(&'a [u8]);

impl Serialize for B64<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&Base64Display::new(self.0, &STANDARD))
    }
}

/// A JSON payload serialized with redaction (and sanitizing), without copying it. Text and parsed
/// documents go through the same transcoder: serde_json reads both (`&Value` is a deserializer
/// too), so the rules below exist once.
struct JsonView<'a> {
    json: &'a JsonPayload,
    o: Opts,
}

impl Serialize for JsonView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.json.view() {
            JsonRef::Value(v) => Deferred::new(v, 0, self.o).serialize(s),
            JsonRef::Text(text) => {
                let mut de = serde_json::Deserializer::from_str(text);
                Deferred::new(&mut de, 0, self.o).serialize(s)
            }
        }
    }
}

// The deserializer's events drive the serializer (as serde_transcode does), so no copy of the
// document is built. A payload was checked when it was made, so the error paths are not taken.

/// One value still in the deserializer, serialized when the serializer asks for it.
struct Deferred<D> {
    de: Cell<Option<D>>,
    depth: usize,
    o: Opts,
}

impl<D> Deferred<D> {
    fn new(de: D, depth: usize, o: Opts) -> Self {
        Self {
            de: Cell::new(Some(de)),
            depth,
            o,
        }
    }
}

impl<'de, D: Deserializer<'de>> Serialize for Deferred<D> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let de = self
            .de
            .take()
            .ok_or_else(|| ser::Error::custom("value already serialized"))?;
        if self.o.sanitize && self.depth > MAX_DEPTH {
            IgnoredAny::deserialize(de).map_err(ser::Error::custom)?;
            return s.serialize_str(DEPTH_EXCEEDED);
        }
        de.deserialize_any(Transcode {
            s,
            depth: self.depth,
            o: self.o,
        })
        .map_err(ser::Error::custom)
    }
}

/// Receives one value from the deserializer and writes it to `s`.
struct Transcode<S> {
    s: S,
    depth: usize,
    o: Opts,
}

impl<'de, S: Serializer> Visitor<'de> for Transcode<S> {
    type Value = S::Ok;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<S::Ok, E> {
        self.s.serialize_bool(v).map_err(E::custom)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<S::Ok, E> {
        self.s.serialize_i64(v).map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<S::Ok, E> {
        self.s.serialize_u64(v).map_err(E::custom)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<S::Ok, E> {
        self.s.serialize_f64(v).map_err(E::custom)
    }

    fn visit_unit<E: de::Error>(self) -> Result<S::Ok, E> {
        self.s.serialize_unit().map_err(E::custom)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<S::Ok, E> {
        Text::new(v, self.o).serialize(self.s).map_err(E::custom)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<S::Ok, A::Error> {
        let mut out = self.s.serialize_seq(None).map_err(de::Error::custom)?;
        let (depth, o) = (self.depth + 1, self.o);
        while seq
            .next_element_seed(Element {
                out: &mut out,
                depth,
                o,
            })?
            .is_some()
        {}
        out.end().map_err(de::Error::custom)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<S::Ok, A::Error> {
        let mut out = self.s.serialize_map(None).map_err(de::Error::custom)?;
        let (depth, o) = (self.depth + 1, self.o);
        while let Some(key) = map.next_key_seed(KeySeed)? {
            let k = Text::new(&key, o);
            if o.redact && is_sensitive(&key) {
                map.next_value::<IgnoredAny>()?;
                out.serialize_entry(&k, REDACTED)
                    .map_err(de::Error::custom)?;
            } else {
                out.serialize_key(&k).map_err(de::Error::custom)?;
                map.next_value_seed(Entry {
                    out: &mut out,
                    depth,
                    o,
                })?;
            }
        }
        out.end().map_err(de::Error::custom)
    }
}

/// An array element: hands the element's deserializer to the array being written.
struct Element<'a, T> {
    out: &'a mut T,
    depth: usize,
    o: Opts,
}

impl<'de, T: SerializeSeq> DeserializeSeed<'de> for Element<'_, T> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
        self.out
            .serialize_element(&Deferred::new(de, self.depth, self.o))
            .map_err(de::Error::custom)
    }
}

/// An object member's value: hands its deserializer to the object being written.
struct Entry<'a, T> {
    out: &'a mut T,
    depth: usize,
    o: Opts,
}

impl<'de, T: SerializeMap> DeserializeSeed<'de> for Entry<'_, T> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
        self.out
            .serialize_value(&Deferred::new(de, self.depth, self.o))
            .map_err(de::Error::custom)
    }
}

/// An object key, borrowed from the text unless it had escapes.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Cow<'de, str>, D::Error> {
        de.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
}

/// Messages to the writer thread.
enum Msg {
    Line(Vec<u8>),
    /// Answered once every line queued before it is written and flushed.
    Flush(oneshot::Sender<()>),
}

/// Queue depth of the writer in lines: enough to absorb bursts (the byte budget bounds memory).
const QUEUE_LINES: usize = 16 * 1024;
/// Default byte budget of the queue (`ModuleContext::DEFAULT_LOG_QUEUE_MAX_BYTES`).
pub(crate) const DEFAULT_QUEUE_BYTES: usize = 64 * 1024 * 1024;
/// Write out at least this often while draining a long queue.
const MAX_BATCH_BYTES: usize = 1024 * 1024;
/// After writing a batch the thread waits this long before looking at the queue again, so under
/// load lines accumulate and are written together instead of each send waking the thread (a futex
/// wake per event cost the receiver a sixth of its CPU). Lines reach stdout at most this much
/// later; the HTTP answer never waits for it, since `Ok` means queued.
const COALESCE: Duration = Duration::from_micros(500);

/// The process's single stdout writer: one thread owning the output, fed by a bounded channel.
/// Clones share the thread, which ends when the last clone is dropped.
#[derive(Clone)]
pub(crate) struct LogWriter {
    tx: mpsc::Sender<Msg>,
    budget: Arc<Budget>,
}

/// Bytes queued and not yet written: added by `send`, subtracted by the writer once written.
struct Budget {
    queued: AtomicUsize,
    max: usize,
}

const QUEUE_FULL: &str = "log queue full: stdout is not keeping up";

impl LogWriter {
    /// The writer for the real stdout, queueing at most `max_bytes`.
    pub(crate) fn stdout(max_bytes: usize) -> io::Result<Self> {
        Self::spawn(Box::new(StdoutTarget), max_bytes)
    }

    pub(crate) fn spawn(target: Box<dyn Write + Send>, max_bytes: usize) -> io::Result<Self> {
        let (tx, rx) = mpsc::channel(QUEUE_LINES);
        let budget = Arc::new(Budget {
            queued: AtomicUsize::new(0),
            max: max_bytes,
        });
        let shared = budget.clone();
        std::thread::Builder::new()
            .name("cwm-log-writer".into())
            .spawn(move || write_loop(rx, target, &shared))?;
        Ok(Self { tx, budget })
    }

    /// Queue `line`, or fail at once when the queue is full in lines or bytes. A line larger
    /// than the whole budget is still taken when nothing else is queued.
    fn send(&self, line: Vec<u8>) -> Result<(), SinkError> {
        let size = line.capacity();
        let before = self.budget.queued.fetch_add(size, Ordering::Relaxed);
        if before != 0 && before.saturating_add(size) > self.budget.max {
            self.budget.queued.fetch_sub(size, Ordering::Relaxed);
            return Err(SinkError::Unavailable(QUEUE_FULL.into()));
        }
        self.tx.try_send(Msg::Line(line)).map_err(|e| {
            self.budget.queued.fetch_sub(size, Ordering::Relaxed);
            SinkError::Unavailable(match e {
                mpsc::error::TrySendError::Full(_) => QUEUE_FULL.into(),
                mpsc::error::TrySendError::Closed(_) => "log writer stopped".into(),
            })
        })
    }

    /// Wait until everything queued so far is on stdout, at most `timeout`. True if it is; false
    /// when the time ran out first (the writer is blocked on its output) or the writer stopped.
    pub(crate) async fn flush(&self, timeout: Duration) -> bool {
        let (done, wait) = oneshot::channel();
        let flushed = async { self.tx.send(Msg::Flush(done)).await.is_ok() && wait.await.is_ok() };
        tokio::time::timeout(timeout, flushed)
            .await
            .unwrap_or(false)
    }
}

fn write_loop(mut rx: mpsc::Receiver<Msg>, mut out: Box<dyn Write + Send>, budget: &Budget) {
    let mut batch = Vec::with_capacity(64 * 1024);
    let mut waiters = Vec::new();
    let mut reported = false;
    while let Some(first) = rx.blocking_recv() {
        let mut next = Some(first);
        // Budget bytes of the lines in `batch`, given back once they are written.
        let mut taken = 0;
        while let Some(msg) = next.take() {
            match msg {
                Msg::Line(line) => {
                    batch.extend_from_slice(&line);
                    taken += line.capacity();
                }
                Msg::Flush(w) => waiters.push(w),
            }
            if batch.len() < MAX_BATCH_BYTES {
                next = rx.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            if let Err(e) = out.write_all(&batch).and_then(|()| out.flush()) {
                // stdout is gone (closed pipe): say so once, keep draining so senders never hang.
                if !reported {
                    eprintln!("cwm: log sink cannot write to stdout: {e}");
                    reported = true;
                }
            }
            batch.clear();
            if batch.capacity() > 2 * MAX_BATCH_BYTES {
                batch.shrink_to(64 * 1024);
            }
        }
        budget.queued.fetch_sub(taken, Ordering::Relaxed);
        for w in waiters.drain(..) {
            let _ = w.send(());
        }
        std::thread::sleep(COALESCE);
    }
}

/// Stdout, locked once per batch so other writers (a tracing layer) interleave only between
/// batches and never wait on this thread for long.
struct StdoutTarget;

impl Write for StdoutTarget {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        io::stdout().lock().write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        io::stdout().lock().write_all(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stdout().lock().flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::JsonPayload;
    use bytes::Bytes;
    use serde_json::{Value, json};
    use std::sync::Mutex;

    fn event(payload: Payload, headers: &[(&str, &str)]) -> Event {
        Event {
            namespace: Some("ns".into()),
            webhook_id: "hook".into(),
            payload,
            headers: headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            received_at: UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
        }
    }

    fn line(format: LogFormat, ev: &Event) -> Value {
        let mut out = Vec::new();
        format.render(ev, &mut out);
        assert_eq!(out.last(), Some(&b'\n'));
        assert_eq!(out.iter().filter(|b| **b == b'\n').count(), 1);
        serde_json::from_slice(&out).unwrap()
    }

    const STD: LogFormat = LogFormat {
        pretty: false,
        redact: true,
    };

    #[test]
    fn standard_line_redacts_headers_and_keys() {
        let ev = event(
            Payload::Json(
                json!({
                    "user": "bob",
                    "Password": "p",
                    "nested": {"apiKey": "k", "my_api_key": "k2", "ok": 1, "SessionId": "s"},
                    "auth": {"inner": "v"},
                    "list": [{"credit-card": "4111"}, 2],
                    "monkey": "banana"
                })
                .into(),
            ),
            &[
                ("authorization", "Bearer x"),
                ("x-api-key", "k"),
                ("x_auth_token", "t"),
                ("cookie", "c"),
                ("content-type", "application/json"),
            ],
        );
        let v = line(STD, &ev);
        assert_eq!(v["received_at"], "2023-11-14T22:13:20.123Z");
        assert_eq!(v["namespace"], "ns");
        assert_eq!(v["webhook_id"], "hook");
        assert_eq!(
            v["headers"],
            json!({"authorization":REDACTED,"x-api-key":REDACTED,"x_auth_token":REDACTED,"cookie":REDACTED,"content-type":"application/json"})
        );
        assert_eq!(
            v["payload"],
            json!({
                "user": "bob",
                "Password": REDACTED,
                "nested": {"apiKey": REDACTED, "my_api_key": REDACTED, "ok": 1, "SessionId": REDACTED},
                "auth": REDACTED,
                "list": [{"credit-card": REDACTED}, 2],
                "monkey": "banana"
            })
        );
        let plain = line(
            LogFormat {
                pretty: false,
                redact: false,
            },
            &ev,
        );
        assert_eq!(plain["headers"]["authorization"], "Bearer x");
        assert_eq!(plain["payload"]["Password"], "p");
    }

    #[test]
    fn standard_line_sanitizes() {
        let mut deep = json!("bottom");
        for _ in 0..12 {
            deep = json!({ "d": deep });
        }
        let long = "x".repeat(MAX_FIELD_CHARS + 5);
        let ev = event(
            Payload::Json(
                json!({"msg": "a\r\nb\u{1}c\td\u{7f}", "long": long, "deep": deep, "n": null, "f": 1.5})
                    .into(),
            ),
            &[("x-note", "line1\nline2")],
        );
        let v = line(STD, &ev);
        assert_eq!(v["payload"]["msg"], "a[NL][NL]b[CTRL]c\td[CTRL]");
        let cut = v["payload"]["long"].as_str().unwrap();
        assert_eq!(cut.len(), MAX_FIELD_CHARS + TRUNCATED.len());
        assert!(cut.ends_with(TRUNCATED));
        assert_eq!(v["headers"]["x-note"], "line1[NL]line2");
        assert_eq!(v["payload"]["n"], Value::Null);
        assert_eq!(v["payload"]["f"], 1.5);
        // Top level is depth 0, so the value at depth 11 is replaced.
        let mut cur = &v["payload"]["deep"];
        for _ in 0..9 {
            cur = &cur["d"];
        }
        assert_eq!(cur["d"], DEPTH_EXCEEDED);
    }

    #[test]
    fn blob_is_base64_with_length() {
        let ev = event(Payload::Blob(Bytes::from_static(b"\x00\xffhi\n")), &[]);
        let v = line(STD, &ev);
        assert_eq!(
            v["payload"],
            json!({"length":5,"truncated":false,"base64":"AP9oaQo="})
        );
        let big = Bytes::from(vec![7u8; MAX_BLOB_BYTES + 1]);
        let v = line(STD, &event(Payload::Blob(big), &[]));
        assert_eq!(v["payload"]["truncated"], true);
        assert_eq!(
            v["payload"]["base64"].as_str().unwrap().len(),
            MAX_FIELD_CHARS
        );
        assert_eq!(v["payload"]["length"], MAX_BLOB_BYTES + 1);
    }

    #[test]
    fn pretty_block() {
        let f = LogFormat {
            pretty: true,
            redact: true,
        };
        let ev = event(
            Payload::Json(json!({"token":"t","text":"é\nz"}).into()),
            &[("authorization", "x"), ("accept", "*/*")],
        );
        let mut out = Vec::new();
        f.render(&ev, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with(&format!(
            "{RULE}\nWEBHOOK RECEIVED\n{RULE}\nWebhook: ns/hook\n"
        )));
        assert!(text.contains("Received: 2023-11-14T22:13:20.123Z\n"));
        assert!(text.contains(
            "\nHeaders:\n{\n  \"authorization\": \"[REDACTED]\",\n  \"accept\": \"*/*\"\n}\n"
        ));
        assert!(
            text.contains(
                "\nPayload:\n{\n  \"token\": \"[REDACTED]\",\n  \"text\": \"é\\nz\"\n}\n"
            )
        );
        assert!(text.ends_with(&format!("}}\n{RULE}\n")));

        let ev = event(
            Payload::Json(json!(["y".repeat(MAX_FIELD_CHARS)]).into()),
            &[],
        );
        let mut out = Vec::new();
        f.render(&ev, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.ends_with(&format!("yyy\n{TRUNCATED}\n{RULE}\n")));
    }

    /// The request's text, kept as it is (cleanup off, so credential keys do not force a copy).
    fn text_payload(text: &str) -> Payload {
        let cfg = cwm_config::WebhookConfig::from_value(
            json!({"credential_cleanup": {"enabled": false}}),
            &|_: &str| None,
        )
        .unwrap();
        let off = crate::CredentialCleanup::from_config(&cfg).unwrap();
        let limits = crate::payload::JsonLimits {
            max_depth: 50,
            max_string_chars: 1 << 20,
        };
        Payload::Json(JsonPayload::from_text(text.to_owned(), limits, &off).unwrap())
    }

    #[test]
    fn text_payloads_print_like_parsed_ones() {
        let mut deep = String::from("\"bottom\"");
        for i in 0..13 {
            deep = if i % 2 == 0 {
                format!("{{\"d\": {deep}, \"n\": {i}}}")
            } else {
                format!("[{i}, {deep}]")
            };
        }
        let long = "é".repeat(MAX_FIELD_CHARS + 3);
        let docs = [
            r#"{"event":"push","repository":"cwm","sender":{"login":"octocat","id":583231},"commits":3,"forced":false,"n":null}"#.to_owned(),
            " [ 1 , -2 , 3.25 , 1e3 , -0 , 18446744073709551615 , -9223372036854775808 , 1.7976931348623157e308 ] ".to_owned(),
            r#"{"Password":"p","nested":{"apiKey":"k","ok":{"x":1},"SessionId":{"a":[1]}},"list":[{"credit-card":"4"},2],"monkey":"banana"}"#.to_owned(),
            r#"{"esc\u0061ped key":"a\r\nb\u0001c\td\u007f\"q\" \\ \/ \ud83d\ude00","x-api-key":{"deep":1},"auth":[]}"#.to_owned(),
            format!("{{\"long\":\"{long}\",\"deep\":{deep},\"e\":{{}},\"a\":[],\"u\":\"\u{2028}\"}}"),
            "\"just a string\"".to_owned(),
            "true".to_owned(),
            "null".to_owned(),
            // Copied as they are by the standard line:
            r#"{"a":[true,false,null,-5,0,123456789012345678,"x y:z","{[]}"],"b":{"c":{}},"é":"ü"}"#.to_owned(),
            format!("[{}]", "[".repeat(9) + &"]".repeat(9)),
            // Not copied: one reason each.
            r#"{"a":1.5}"#.to_owned(),
            r#"{"a":1e5}"#.to_owned(),
            r#"{"a":-0}"#.to_owned(),
            r#"{"a":1234567890123456789}"#.to_owned(),
            r#"{"a":18446744073709551616}"#.to_owned(),
            r#"{"a" :1}"#.to_owned(),
            "{\"a\":\"\u{7f}\"}".to_owned(),
            r#"{"a":"\"q\""}"#.to_owned(),
            r#"{"my_token":1}"#.to_owned(),
            format!("[{}]", "[".repeat(10) + &"]".repeat(10)),
            format!("[\"{}\"]", "x".repeat(MAX_FIELD_CHARS + 1)),
        ];
        for doc in [0, 5, 6, 7, 8, 9].map(|i| &docs[i]) {
            assert!(copyable(doc, true), "{doc}");
        }
        assert!(
            copyable(&docs[18], false),
            "keys are only judged when redacting"
        );
        for doc in &docs[1..5] {
            assert!(!copyable(doc, true), "{doc}");
        }
        for doc in &docs[10..] {
            assert!(!copyable(doc, true), "{doc}");
        }
        for doc in &docs {
            let value: Value = serde_json::from_str(doc).unwrap();
            let parsed = event(Payload::Json(value.into()), &[("x-note", "n")]);
            let text = event(text_payload(doc), &[("x-note", "n")]);
            for (pretty, redact) in [(false, true), (false, false), (true, true), (true, false)] {
                let f = LogFormat { pretty, redact };
                let (mut a, mut b) = (Vec::new(), Vec::new());
                f.render(&parsed, &mut a);
                f.render(&text, &mut b);
                assert_eq!(
                    String::from_utf8(b).unwrap(),
                    String::from_utf8(a).unwrap(),
                    "{doc} pretty={pretty} redact={redact}"
                );
            }
        }
        // The rules apply on the text path too (the comparison above would pass if both broke).
        let v = line(STD, &event(text_payload(&docs[2]), &[]));
        assert_eq!(v["payload"]["nested"]["apiKey"], REDACTED);
        assert_eq!(v["payload"]["nested"]["ok"], json!({"x": 1}));
        assert_eq!(v["payload"]["monkey"], "banana");
        let v = line(STD, &event(text_payload(&docs[4]), &[]));
        assert!(v["payload"]["long"].as_str().unwrap().ends_with(TRUNCATED));
        let mut at = &v["payload"]["deep"];
        for _ in 0..MAX_DEPTH - 1 {
            at = at.get("d").or_else(|| at.get(1)).unwrap();
        }
        assert_eq!(at.get("d").or_else(|| at.get(1)).unwrap(), DEPTH_EXCEEDED);
    }

    #[test]
    fn sensitive_matching() {
        for name in [
            "X-Api-Key",
            "api_key",
            "DB_URL",
            "set-cookie",
            "author",
            "TO\u{212A}EN",
        ] {
            assert!(is_sensitive(name), "{name}");
        }
        for name in ["content-type", "user", "x-request-id", "monkey", ""] {
            assert!(!is_sensitive(name), "{name}");
        }
    }

    #[test]
    fn out_of_range_clock_is_clamped() {
        let before = UNIX_EPOCH - Duration::from_secs(5);
        assert_eq!(Timestamp(before).to_string(), "1970-01-01T00:00:00.000Z");
    }

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl Write for Capture {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn sink_queues_to_one_writer_and_flushes() {
        let cap = Capture::default();
        let ctx = ModuleContext::with_log_target(Box::new(cap.clone()));
        let cfg = WebhookConfig::from_value(json!({"module":"log"}), &|_: &str| None).unwrap();
        let a = factory(&cfg, &ctx).unwrap();
        let b = factory(&cfg, &ctx).unwrap();
        let mut tasks = Vec::new();
        for i in 0..200 {
            let sink = if i % 2 == 0 { a.clone() } else { b.clone() };
            tasks.push(tokio::spawn(async move {
                sink.deliver(&event(Payload::Json(json!({ "i": i }).into()), &[]))
                    .await
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        a.shutdown().await;
        let text = String::from_utf8(cap.0.lock().unwrap().clone()).unwrap();
        let mut seen: Vec<i64> = text
            .lines()
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap()["payload"]["i"]
                    .as_i64()
                    .unwrap()
            })
            .collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..200).collect::<Vec<_>>());
        assert!(ctx.shutdown(Duration::from_secs(60)).await);
    }

    /// An output nobody reads: every write waits until the gate opens.
    #[derive(Clone, Default)]
    struct Gated {
        open: Arc<(Mutex<bool>, std::sync::Condvar)>,
        out: Capture,
    }

    impl Gated {
        fn open(&self) {
            *self.open.0.lock().unwrap() = true;
            self.open.1.notify_all();
        }

        fn ids(&self) -> Vec<i64> {
            let text = String::from_utf8(self.out.0.lock().unwrap().clone()).unwrap();
            text.lines()
                .map(|l| {
                    serde_json::from_str::<Value>(l).unwrap()["payload"]["i"]
                        .as_i64()
                        .unwrap()
                })
                .collect()
        }
    }

    impl Write for Gated {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let (lock, cv) = &*self.open;
            let mut open = lock.lock().unwrap();
            while !*open {
                open = cv.wait(open).unwrap();
            }
            drop(open);
            self.out.write(buf)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn numbered(i: i64) -> Event {
        event(
            Payload::Json(json!({ "i": i, "pad": "x".repeat(200) }).into()),
            &[],
        )
    }

    #[tokio::test]
    async fn full_byte_budget_fails_fast_then_drains() {
        let out = Gated::default();
        let ctx = ModuleContext::with_log_target_and_budget(Box::new(out.clone()), 4096);
        let cfg = WebhookConfig::from_value(json!({"module":"log"}), &|_: &str| None).unwrap();
        let sink = factory(&cfg, &ctx).unwrap();
        let mut accepted = Vec::new();
        let mut refused = None;
        for i in 0..1000 {
            match sink.deliver(&numbered(i)).await {
                Ok(()) => accepted.push(i),
                Err(e) => {
                    refused = Some(e);
                    break;
                }
            }
        }
        let err = refused.expect("a blocked output fills a 4 KiB budget");
        assert_eq!(err, SinkError::Unavailable(QUEUE_FULL.into()));
        assert!(err.retryable());
        // ~300-byte lines: the budget, not the line count, stopped the queue.
        assert!((1..=20).contains(&accepted.len()), "{}", accepted.len());
        // Still full while the output is blocked: nothing was written or given back.
        assert!(sink.deliver(&numbered(-1)).await.is_err());
        assert!(out.ids().is_empty());

        out.open();
        assert!(ctx.shutdown(Duration::from_secs(60)).await);
        assert_eq!(out.ids(), accepted);
        sink.deliver(&numbered(5000)).await.unwrap();
        assert!(ctx.shutdown(Duration::from_secs(60)).await);
        assert_eq!(out.ids().last(), Some(&5000));
    }

    #[tokio::test]
    async fn shutdown_returns_when_stdout_is_blocked() {
        // No log sink was ever built: nothing to flush.
        assert!(ModuleContext::new().shutdown(Duration::ZERO).await);

        let out = Gated::default();
        let ctx = ModuleContext::with_log_target(Box::new(out.clone()));
        let cfg = WebhookConfig::from_value(json!({"module":"log"}), &|_: &str| None).unwrap();
        let sink = factory(&cfg, &ctx).unwrap();
        for i in 0..3 {
            sink.deliver(&numbered(i)).await.unwrap();
        }
        assert!(!ctx.shutdown(Duration::from_millis(50)).await);
        assert!(out.ids().is_empty());
        out.open();
        assert!(ctx.shutdown(Duration::from_secs(60)).await);
        assert_eq!(out.ids(), vec![0, 1, 2]);
    }
}
