//! An RQ job as `rq.Queue.enqueue(function, payload, headers)` stores it: the pickled call,
//! zlib-compressed, and the description RQ shows for it (`function(repr(arg), ...)`).

use std::io::Write;
use std::time::SystemTime;

use flate2::Compression;
use flate2::write::ZlibEncoder;
use serde::ser::{Serialize, SerializeMap, SerializeTuple, Serializer};
use serde_json::Value;

use crate::sink::Payload;

/// RQ truncates each argument's `repr()` in the description to this many characters.
const DESCRIPTION_ARG_CHARS: usize = 75;

/// Pickles at least this large are deflated; smaller ones go in zlib's stored blocks.
pub const DEFLATE_MIN_BYTES: usize = 8 * 1024;

/// `zlib.compress(pickle.dumps((function, None, (payload, headers), {})))`: what RQ's worker
/// `zlib.decompress`es and unpickles into `(func_name, instance, args, kwargs)`. Pickle
/// protocol 3.
///
/// Setting up a deflate stream costs more than pickling a typical webhook (the compressor
/// clears some 300 KiB of tables), so a pickle under [`DEFLATE_MIN_BYTES`] is written as a
/// zlib stream of stored (uncompressed) blocks, as `zlib.compress(data, 0)` writes it; larger
/// ones are deflated at zlib's default level.
pub fn data(
    function: &str,
    payload: &Payload,
    headers: &[(String, String)],
) -> Result<Vec<u8>, String> {
    let call = Call {
        function,
        payload,
        headers,
    };
    let pickle = serde_pickle::to_vec(&call, serde_pickle::SerOptions::new())
        .map_err(|e| format!("cannot pickle the job: {e}"))?;
    if pickle.len() < DEFLATE_MIN_BYTES {
        return Ok(zlib_stored(&pickle));
    }
    let mut zlib = ZlibEncoder::new(Vec::with_capacity(pickle.len() / 2), Compression::default());
    zlib.write_all(&pickle).map_err(|e| e.to_string())?;
    zlib.finish().map_err(|e| e.to_string())
}

/// A zlib stream (RFC 1950) holding `data` in stored deflate blocks (RFC 1951, 3.2.4).
fn zlib_stored(data: &[u8]) -> Vec<u8> {
    const MAX_BLOCK: usize = 65_535;
    let blocks = data.len().div_ceil(MAX_BLOCK).max(1);
    let mut out = Vec::with_capacity(2 + blocks * 5 + data.len() + 4);
    // CMF 0x78 (deflate, 32 KiB window), FLG 0x01 (fastest level, check bits).
    out.extend_from_slice(&[0x78, 0x01]);
    let mut chunks = data.chunks(MAX_BLOCK).peekable();
    if data.is_empty() {
        out.extend_from_slice(&[0x01, 0x00, 0x00, 0xff, 0xff]);
    }
    while let Some(chunk) = chunks.next() {
        out.push(u8::from(chunks.peek().is_none()));
        let len = u16::try_from(chunk.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    out.extend_from_slice(&adler32(data).to_be_bytes());
    out
}

/// The zlib checksum.
fn adler32(data: &[u8]) -> u32 {
    const MOD: u32 = 65_521;
    // The largest run that cannot overflow `b` before the modulo.
    const NMAX: usize = 5552;
    let (mut a, mut b) = (1u32, 0u32);
    for run in data.chunks(NMAX) {
        for &byte in run {
            a += u32::from(byte);
            b += a;
        }
        a %= MOD;
        b %= MOD;
    }
    (b << 16) | a
}

/// RQ's timestamp format, `%Y-%m-%dT%H:%M:%S.%fZ` in UTC.
pub fn timestamp(t: SystemTime) -> String {
    humantime::format_rfc3339_micros(t).to_string()
}

/// `function(repr(payload), repr(headers))`, each argument cut at 75 characters followed by
/// `...`, as RQ writes the job's `description`.
pub fn description(function: &str, payload: &Payload, headers: &[(String, String)]) -> String {
    let payload = match payload {
        Payload::Json(json) => bounded_repr(|r| r.value(json.value())),
        Payload::Blob(bytes) => bounded_repr(|r| r.bytes(bytes)),
    };
    let headers = bounded_repr(|r| r.headers(headers));
    format!("{function}({payload}, {headers})")
}

/// The pickled call tuple.
struct Call<'a> {
    function: &'a str,
    payload: &'a Payload,
    headers: &'a [(String, String)],
}

impl Serialize for Call<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut t = s.serialize_tuple(4)?;
        t.serialize_element(self.function)?;
        t.serialize_element(&None::<()>)?;
        t.serialize_element(&(PayloadArg(self.payload), HeaderDict(self.headers)))?;
        t.serialize_element(&HeaderDict(&[]))?;
        t.end()
    }
}

/// JSON as dict/list/str/int/float/bool/None; a blob as `bytes`.
struct PayloadArg<'a>(&'a Payload);

impl Serialize for PayloadArg<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Payload::Json(json) => json.value().serialize(s),
            Payload::Blob(bytes) => s.serialize_bytes(bytes),
        }
    }
}

/// `dict[str, str]`, in the given order.
struct HeaderDict<'a>(&'a [(String, String)]);

impl Serialize for HeaderDict<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

/// Python's `repr()` of one argument, cut as RQ cuts it.
fn bounded_repr(write: impl FnOnce(&mut Repr) -> Result<(), Full>) -> String {
    let mut r = Repr {
        out: String::new(),
        chars: 0,
    };
    // Writing stops one character past the limit: enough to know the text is longer.
    let _ = write(&mut r);
    if r.chars > DESCRIPTION_ARG_CHARS {
        let cut = r
            .out
            .char_indices()
            .nth(DESCRIPTION_ARG_CHARS)
            .map_or(r.out.len(), |(i, _)| i);
        r.out.truncate(cut);
        r.out.push_str("...");
    }
    r.out
}

/// The bounded text was filled.
struct Full;

struct Repr {
    out: String,
    chars: usize,
}

impl Repr {
    fn push(&mut self, c: char) -> Result<(), Full> {
        if self.chars > DESCRIPTION_ARG_CHARS {
            return Err(Full);
        }
        self.out.push(c);
        self.chars += 1;
        Ok(())
    }

    fn push_str(&mut self, s: &str) -> Result<(), Full> {
        s.chars().try_for_each(|c| self.push(c))
    }

    fn value(&mut self, v: &Value) -> Result<(), Full> {
        match v {
            Value::Null => self.push_str("None"),
            Value::Bool(true) => self.push_str("True"),
            Value::Bool(false) => self.push_str("False"),
            Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
                (Some(i), _, _) => self.push_str(&i.to_string()),
                (_, Some(u), _) => self.push_str(&u.to_string()),
                (_, _, Some(f)) => self.push_str(&py_float(f)),
                _ => self.push_str(&n.to_string()),
            },
            Value::String(s) => self.str(s),
            Value::Array(items) => {
                self.push('[')?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        self.push_str(", ")?;
                    }
                    self.value(item)?;
                }
                self.push(']')
            }
            Value::Object(map) => {
                self.push('{')?;
                for (i, (k, v)) in map.iter().enumerate() {
                    if i > 0 {
                        self.push_str(", ")?;
                    }
                    self.str(k)?;
                    self.push_str(": ")?;
                    self.value(v)?;
                }
                self.push('}')
            }
        }
    }

    fn headers(&mut self, headers: &[(String, String)]) -> Result<(), Full> {
        self.push('{')?;
        for (i, (k, v)) in headers.iter().enumerate() {
            if i > 0 {
                self.push_str(", ")?;
            }
            self.str(k)?;
            self.push_str(": ")?;
            self.str(v)?;
        }
        self.push('}')
    }

    /// A `str` literal: single quotes unless the text has `'` and no `"`.
    fn str(&mut self, s: &str) -> Result<(), Full> {
        let quote = if s.contains('\'') && !s.contains('"') {
            '"'
        } else {
            '\''
        };
        self.push(quote)?;
        for c in s.chars() {
            match c {
                '\\' => self.push_str("\\\\")?,
                '\n' => self.push_str("\\n")?,
                '\r' => self.push_str("\\r")?,
                '\t' => self.push_str("\\t")?,
                c if c == quote => {
                    self.push('\\')?;
                    self.push(c)?;
                }
                c if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}') => {
                    let code = u32::from(c);
                    let escaped = if code < 0x100 {
                        format!("\\x{code:02x}")
                    } else {
                        format!("\\u{code:04x}")
                    };
                    self.push_str(&escaped)?;
                }
                c => self.push(c)?,
            }
        }
        self.push(quote)
    }

    /// A `bytes` literal.
    fn bytes(&mut self, b: &[u8]) -> Result<(), Full> {
        let quote = if b.contains(&b'\'') && !b.contains(&b'"') {
            b'"'
        } else {
            b'\''
        };
        self.push('b')?;
        self.push(char::from(quote))?;
        for &byte in b {
            match byte {
                b'\\' => self.push_str("\\\\")?,
                b'\n' => self.push_str("\\n")?,
                b'\r' => self.push_str("\\r")?,
                b'\t' => self.push_str("\\t")?,
                q if q == quote => {
                    self.push('\\')?;
                    self.push(char::from(q))?;
                }
                0x20..=0x7e => self.push(char::from(byte))?,
                _ => self.push_str(&format!("\\x{byte:02x}"))?,
            }
        }
        self.push(char::from(quote))
    }
}

/// Python's `repr(float)`: the shortest digits that read back; positional for exponents -4 to
/// 15, otherwise scientific (`1e+16`, `1.5e-05`).
fn py_float(f: f64) -> String {
    if f.is_nan() {
        return "nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf".into() } else { "-inf".into() };
    }
    if f == 0.0 {
        return if f.is_sign_negative() {
            "-0.0".into()
        } else {
            "0.0".into()
        };
    }
    // `{:e}` prints the shortest round-trip digits: `-1.2345e-5`.
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    if (-4..16).contains(&exp) {
        if exp < 0 {
            let zeros = "0".repeat(usize::try_from(-exp - 1).unwrap_or(0));
            format!("{sign}0.{zeros}{digits}")
        } else {
            let int_len = usize::try_from(exp).unwrap_or(0) + 1;
            if digits.len() <= int_len {
                format!("{sign}{digits}{}.0", "0".repeat(int_len - digits.len()))
            } else {
                format!("{sign}{}.{}", &digits[..int_len], &digits[int_len..])
            }
        }
    } else {
        let (first, rest) = digits.split_at(1);
        let frac = if rest.is_empty() {
            String::new()
        } else {
            format!(".{rest}")
        };
        let esign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{first}{frac}e{esign}{:02}", exp.abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn inflate(z: &[u8]) -> Vec<u8> {
        use std::io::Read;
        let mut out = Vec::new();
        flate2::read::ZlibDecoder::new(z)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn stored_zlib_streams_inflate() {
        for len in [0, 1, 100, 65_535, 65_536, 200_000] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            let z = zlib_stored(&data);
            assert_eq!(inflate(&z), data, "{len}");
        }
        assert_eq!(adler32(b"Wikipedia"), 0x11e6_0398);
    }

    #[test]
    fn large_pickles_are_deflated() {
        let small = Payload::Json(json!({"k": "v"}).into());
        let z = data("f", &small, &[]).unwrap();
        assert_eq!(&z[..2], &[0x78, 0x01], "stored");
        let big = Payload::Json(json!({"k": "abc".repeat(10_000)}).into());
        let z = data("f", &big, &[]).unwrap();
        assert!(z.len() < 2_000, "deflated: {}", z.len());
        assert!(inflate(&z).len() > 30_000);
    }

    #[test]
    fn floats_print_as_python_prints_them() {
        for (f, want) in [
            (1.5, "1.5"),
            (1.0, "1.0"),
            (-2.0, "-2.0"),
            (0.1, "0.1"),
            (123456.789, "123456.789"),
            (1e16, "1e+16"),
            (1.5e16, "1.5e+16"),
            (9999999999999998.0, "9999999999999998.0"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (-1.25e-7, "-1.25e-07"),
            (1e100, "1e+100"),
        ] {
            assert_eq!(py_float(f), want, "{f}");
        }
    }

    #[test]
    fn description_is_rqs_call_string() {
        let payload = Payload::Json(json!({"a": 1, "b": [1.5, null, true], "s": "it's"}).into());
        let headers = vec![("x-h".to_owned(), "v".to_owned())];
        assert_eq!(
            description("mod.record", &payload, &headers),
            r#"mod.record({'a': 1, 'b': [1.5, None, True], 's': "it's"}, {'x-h': 'v'})"#
        );
        let long = Payload::Json(json!({"k": "x".repeat(200)}).into());
        let d = description("f", &long, &[]);
        assert_eq!(d, format!("f({{'k': '{}..., {{}})", "x".repeat(75 - 7)));
        let blob = Payload::Blob(bytes::Bytes::from_static(b"\x00a'\\"));
        assert_eq!(description("f", &blob, &[]), r#"f(b"\x00a'\\", {})"#);
    }
}
