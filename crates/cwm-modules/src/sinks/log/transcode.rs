//! The `log` sink's formatter: an event's standard JSON line or pretty block, with redaction and
//! sanitizing applied while the payload is transcoded (no copy of the document is built).

use std::borrow::Cow;
use std::cell::Cell;
use std::fmt;
use std::io::Write;
use std::sync::LazyLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::display::Base64Display;
use base64::engine::general_purpose::STANDARD;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::ser::{self, SerializeMap, SerializeSeq, SerializeStruct, Serializer};
use serde::{Deserialize, Serialize};

use crate::payload::{JsonPayload, JsonRef};
use crate::sink::{Event, Payload};
use crate::words::WordSet;

pub(super) const REDACTED: &str = "[REDACTED]";
pub(super) const DEPTH_EXCEEDED: &str = "[Max depth exceeded]";
pub(super) const TRUNCATED: &str = "... [truncated]";
pub(super) const MAX_DEPTH: usize = 10;
pub(super) const MAX_FIELD_CHARS: usize = 10_000;
/// Base64 of this many bytes is exactly `MAX_FIELD_CHARS` characters.
pub(super) const MAX_BLOB_BYTES: usize = MAX_FIELD_CHARS / 4 * 3;
pub(super) const RULE: &str =
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
pub(crate) struct LogFormat {
    pub(crate) pretty: bool,
    pub(crate) redact: bool,
}

impl LogFormat {
    /// Append the complete output for `event` (ending in a newline) to `out`.
    pub(crate) fn render(&self, event: &Event, out: &mut Vec<u8>) {
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
pub(super) fn is_sensitive(name: &str) -> bool {
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
pub(super) fn copyable(text: &str, redact: bool) -> bool {
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
pub(super) struct Timestamp(pub(super) SystemTime);

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
