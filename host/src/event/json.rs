//! Lossless JSON for MessagePack bodies: what `beehive tail --json`, `beehive record` and
//! `beehive test` print, and what `beehive publish --json` reads, so a recorded event
//! replays byte for byte.
//!
//! Plain JSON stays plain JSON: `null`, booleans, integers, strings, arrays and maps whose
//! keys are distinct strings are written as themselves (map keys in their MessagePack order).
//! Only what JSON cannot say is tagged, as an object with exactly one key starting with `$`:
//!
//! | MessagePack | JSON |
//! |---|---|
//! | nil, bool, str | `null`, `true`, `"text"` |
//! | integer (any width, signed or not) | `7`, `-3`, `18446744073709551615` |
//! | float 64 | a number with a fraction or exponent, so it stays a float: `1.0`, `12.5`, `1e300` |
//! | float 64 NaN / ±infinity | `{"$f64": "NaN"}`, `{"$f64": "Infinity"}`, `{"$f64": "-Infinity"}`; another NaN payload `{"$f64": "0x7ff8000000000001"}` (its bits) |
//! | float 32 | `{"$f32": 0.1}` (same special strings, `0x` + 8 hex digits for NaN payloads) |
//! | bin | `{"$bin": "AAH+/w=="}` (standard base64, padded) |
//! | str that is not UTF-8 | `{"$str": "<base64 of its bytes>"}` |
//! | ext -1, a canonical timestamp in years 1–9999 (Go's `time.Time`) | `{"$time": "2024-05-01T12:00:00.5Z"}` (RFC 3339, UTC, up to 9 fraction digits) |
//! | any other ext | `{"$ext": [-1, "<base64 of its data>"]}` (type −128..127) |
//! | map with a non-string or repeated key, or whose only key starts with `$` | `{"$map": [[1, "one"], [2, "two"]]}` (pairs in order) |
//! | a body that is not one MessagePack value (corrupt, empty, trailing bytes) | `{"$raw": "<base64>"}`, at the top level only ([`body_to_json`]) |
//!
//! Reading JSON back ([`from_json`]) accepts the same forms, plus a number in `$f64` (`{"$f64":
//! 1}` is the float 1.0) and any other object with one `$` key is an error that names it. A
//! JSON number with a fraction or an exponent becomes a float 64; an integer becomes the
//! smallest MessagePack integer that holds it.
//!
//! **Byte for byte.** MessagePack allows several encodings of one value (`5` may be written
//! in 1, 2, 3, 5 or 9 bytes). [`from_json`] writes the canonical one: every integer, length
//! and ext header in its smallest form, non-negative integers as unsigned, floats in the width
//! they had, timestamps in the smallest of the three formats. That is how rmp-serde (the
//! Rust SDK, `broker.publish`), BeeORM's encoder (shamaton/msgpack) and the Python and
//! JavaScript SDKs write bodies, so for them `from_json(to_json(body)) == body`. A body
//! encoded otherwise (e.g. `5` as `d3 00 … 05`) comes back with the same value in canonical
//! form.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Map, Number, Value};

use crate::error::{Error, Result};
use crate::event::{EntryId, Event};

/// The deepest nesting of JSON arrays and objects [`to_json`] writes (and [`from_json`]
/// reads): below serde_json's parser limit of 128, so every line printed can be read back.
pub const MAX_DEPTH: usize = 120;

/// The JSON form of the MessagePack `body` (see the [module docs](self)); an error when the
/// bytes are not exactly one MessagePack value or nest deeper than [`MAX_DEPTH`].
pub fn to_json(body: &[u8]) -> Result<Value> {
    let mut reader = Reader { bytes: body, at: 0 };
    let value = reader
        .value(1)
        .map_err(|e| invalid(format!("the body is not MessagePack: {e}")))?;
    if reader.at != body.len() {
        return Err(invalid(format!(
            "the body is not one MessagePack value: {} bytes follow it",
            body.len() - reader.at
        )));
    }
    Ok(value)
}

/// [`to_json`], or `{"$raw": "<base64>"}` for bytes that are not one MessagePack value:
/// what the command line prints as an event's body. [`from_json`] turns `$raw` back into the
/// same bytes.
pub fn body_to_json(body: &[u8]) -> Value {
    to_json(body).unwrap_or_else(|_| tagged("$raw", Value::String(BASE64.encode(body))))
}

/// The canonical MessagePack of a JSON value in the form of the [module docs](self) (plain
/// JSON included); an error naming the place (`body.items[2]`) of anything else.
pub fn from_json(value: &Value) -> Result<Vec<u8>> {
    if let Some((tag, inner)) = tag_of(value)
        && tag == "$raw"
    {
        return base64(inner, &Path::Root);
    }
    let mut out = Vec::new();
    decode_value(value, &Path::Root, 1, &mut out)?;
    Ok(out)
}

/// One event as a JSON line, as `beehive tail --json` and `beehive record` print it and
/// `beehive test` reads it:
///
/// ```json
/// {"id":"1700000000000-0","stream":"orders","body":{"id":7,"at":{"$time":"2024-05-01T12:00:00Z"}},"meta":{"version":"2"}}
/// ```
///
/// `body` is absent for an event without one (`"body": null` is a MessagePack nil); `meta` is
/// an object, or a list of `[key, value]` pairs when a key repeats.
pub fn event_to_json(event: &Event) -> Value {
    let mut line = Map::new();
    line.insert("id".into(), Value::String(event.id()));
    line.insert("stream".into(), Value::String(event.stream().to_string()));
    if let Some(body) = event.body() {
        line.insert("body".into(), body_to_json(body));
    }
    let meta = event.meta();
    let distinct = meta
        .iter()
        .enumerate()
        .all(|(i, (k, _))| meta[..i].iter().all(|(other, _)| other != k));
    let meta = if distinct {
        Value::Object(
            meta.iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect(),
        )
    } else {
        Value::Array(
            meta.iter()
                .map(|(k, v)| Value::Array(vec![k.clone().into(), v.clone().into()]))
                .collect(),
        )
    };
    line.insert("meta".into(), meta);
    Value::Object(line)
}

/// Reads an event line in the format of [`event_to_json`], plus an optional `deliveries`
/// (default 1). `stream` is required; `id` defaults to `0-0`; `body` and `meta` may be absent.
pub fn event_from_json(line: &Value) -> Result<Event> {
    let Value::Object(fields) = line else {
        return Err(invalid(format!(
            "expected an event object with id, stream, body, meta, got {}",
            kind(line)
        )));
    };
    let mut id = EntryId::ZERO;
    let mut stream = None;
    let mut body = None;
    let mut meta = Vec::new();
    let mut deliveries = 1u32;
    for (key, value) in fields {
        match key.as_str() {
            "id" => {
                let text = value.as_str().ok_or_else(|| {
                    invalid(format!("id: expected a string, got {}", kind(value)))
                })?;
                id = text.parse().map_err(|e| invalid(format!("id: {e}")))?;
            }
            "stream" => match value {
                Value::String(s) if !s.is_empty() => stream = Some(s.clone()),
                other => {
                    return Err(invalid(format!(
                        "stream: expected a stream name, got {}",
                        kind(other)
                    )));
                }
            },
            "body" => body = Some(from_json(value)?),
            "meta" => meta = meta_from_json(value)?,
            "deliveries" => {
                deliveries = value
                    .as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| {
                        invalid(format!(
                            "deliveries: expected a whole number from 1 to {}, got {value}",
                            u32::MAX
                        ))
                    })?;
            }
            other => {
                return Err(invalid(format!(
                    "unknown key {other:?}: expected id, stream, body, meta or deliveries"
                )));
            }
        }
    }
    let stream = stream.ok_or_else(|| invalid("stream: missing".into()))?;
    Ok(Event::new(&stream, id, body, meta).with_deliveries(deliveries))
}

fn meta_from_json(value: &Value) -> Result<Vec<(String, String)>> {
    let string = |v: &Value, key: &str| match v {
        Value::String(s) => Ok(s.clone()),
        other => Err(invalid(format!(
            "meta.{key}: expected a string, got {}",
            kind(other)
        ))),
    };
    match value {
        Value::Null => Ok(Vec::new()),
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| Ok((k.clone(), string(v, k)?)))
            .collect(),
        Value::Array(pairs) => pairs
            .iter()
            .map(|pair| match pair.as_array().map(Vec::as_slice) {
                Some([Value::String(k), v]) => Ok((k.clone(), string(v, k)?)),
                _ => Err(invalid(format!(
                    "meta: expected [key, value] pairs of strings, got {pair}"
                ))),
            })
            .collect(),
        other => Err(invalid(format!(
            "meta: expected an object of strings, got {}",
            kind(other)
        ))),
    }
}

fn invalid(message: String) -> Error {
    Error::InvalidArgument(message)
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn tagged(tag: &str, value: Value) -> Value {
    let mut map = Map::with_capacity(1);
    map.insert(tag.to_string(), value);
    Value::Object(map)
}

/// `Some((tag, value))` for an object whose only key starts with `$`.
fn tag_of(value: &Value) -> Option<(&str, &Value)> {
    match value {
        Value::Object(map) if map.len() == 1 => {
            let (key, inner) = map.iter().next()?;
            key.starts_with('$').then_some((key.as_str(), inner))
        }
        _ => None,
    }
}

// ---- MessagePack -> JSON ----

/// Reads one MessagePack value from `bytes` at `at`, straight into its JSON form.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], String> {
        let end = self
            .at
            .checked_add(n)
            .filter(|end| *end <= self.bytes.len())
            .ok_or_else(|| format!("truncated at byte {}", self.at))?;
        let part = &self.bytes[self.at..end];
        self.at = end;
        Ok(part)
    }

    fn array<const N: usize>(&mut self) -> std::result::Result<[u8; N], String> {
        let part = self.take(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(part);
        Ok(out)
    }

    fn len(&mut self, width: usize) -> std::result::Result<usize, String> {
        Ok(match width {
            1 => usize::from(self.array::<1>()?[0]),
            2 => usize::from(u16::from_be_bytes(self.array()?)),
            _ => u32::from_be_bytes(self.array()?) as usize,
        })
    }

    /// A count of items, each at least one byte: more than the bytes left is an error
    /// before anything is allocated for them.
    fn count(&mut self, width: usize, per_item: usize) -> std::result::Result<usize, String> {
        let n = self.len(width)?;
        if n.saturating_mul(per_item) > self.bytes.len() - self.at {
            return Err(format!(
                "truncated: {n} items announced at byte {}",
                self.at
            ));
        }
        Ok(n)
    }

    fn value(&mut self, depth: usize) -> std::result::Result<Value, String> {
        let marker = self.array::<1>()?[0];
        let deep = |needed: usize| {
            if needed > MAX_DEPTH {
                Err(format!("it nests deeper than {MAX_DEPTH} levels of JSON"))
            } else {
                Ok(())
            }
        };
        Ok(match marker {
            0x00..=0x7f => Value::Number(marker.into()),
            0xe0..=0xff => Value::Number((marker as i8).into()),
            0xc0 => Value::Null,
            0xc1 => return Err(format!("reserved byte c1 at byte {}", self.at - 1)),
            0xc2 => Value::Bool(false),
            0xc3 => Value::Bool(true),
            0xcc => Value::Number(self.array::<1>()?[0].into()),
            0xcd => Value::Number(u16::from_be_bytes(self.array()?).into()),
            0xce => Value::Number(u32::from_be_bytes(self.array()?).into()),
            0xcf => Value::Number(u64::from_be_bytes(self.array()?).into()),
            0xd0 => Value::Number((self.array::<1>()?[0] as i8).into()),
            0xd1 => Value::Number(i16::from_be_bytes(self.array()?).into()),
            0xd2 => Value::Number(i32::from_be_bytes(self.array()?).into()),
            0xd3 => Value::Number(i64::from_be_bytes(self.array()?).into()),
            0xca => {
                deep(depth)?;
                tagged("$f32", f32_json(f32::from_be_bytes(self.array()?)))
            }
            0xcb => {
                let f = f64::from_be_bytes(self.array()?);
                match Number::from_f64(f) {
                    Some(n) => Value::Number(n),
                    None => {
                        deep(depth)?;
                        tagged("$f64", Value::String(special_f64(f)))
                    }
                }
            }
            0xa0..=0xbf => self.string(usize::from(marker & 0x1f), depth)?,
            0xd9..=0xdb => {
                let n = self.len(1 << (marker - 0xd9))?;
                self.string(n, depth)?
            }
            0xc4..=0xc6 => {
                deep(depth)?;
                let n = self.len(1 << (marker - 0xc4))?;
                tagged("$bin", Value::String(BASE64.encode(self.take(n)?)))
            }
            0x90..=0x9f => self.list(usize::from(marker & 0x0f), depth)?,
            0xdc | 0xdd => {
                let n = self.count(if marker == 0xdc { 2 } else { 4 }, 1)?;
                self.list(n, depth)?
            }
            0x80..=0x8f => self.map(usize::from(marker & 0x0f), depth)?,
            0xde | 0xdf => {
                let n = self.count(if marker == 0xde { 2 } else { 4 }, 2)?;
                self.map(n, depth)?
            }
            0xd4..=0xd8 => {
                let ty = self.array::<1>()?[0] as i8;
                self.ext(ty, 1 << (marker - 0xd4), depth)?
            }
            0xc7..=0xc9 => {
                let n = self.len(1 << (marker - 0xc7))?;
                let ty = self.array::<1>()?[0] as i8;
                self.ext(ty, n, depth)?
            }
        })
    }

    fn string(&mut self, n: usize, depth: usize) -> std::result::Result<Value, String> {
        let bytes = self.take(n)?;
        Ok(match std::str::from_utf8(bytes) {
            Ok(text) => Value::String(text.to_string()),
            Err(_) => {
                if depth > MAX_DEPTH {
                    return Err(format!("it nests deeper than {MAX_DEPTH} levels of JSON"));
                }
                tagged("$str", Value::String(BASE64.encode(bytes)))
            }
        })
    }

    fn list(&mut self, n: usize, depth: usize) -> std::result::Result<Value, String> {
        if depth > MAX_DEPTH {
            return Err(format!("it nests deeper than {MAX_DEPTH} levels of JSON"));
        }
        let mut items = Vec::with_capacity(n.min(self.bytes.len() - self.at));
        for _ in 0..n {
            items.push(self.value(depth + 1)?);
        }
        Ok(Value::Array(items))
    }

    /// A map as a JSON object when its keys are distinct UTF-8 strings (and not one key
    /// starting with `$`, which would read back as a tag); else `{"$map": [[k, v], ...]}`.
    fn map(&mut self, n: usize, depth: usize) -> std::result::Result<Value, String> {
        if depth > MAX_DEPTH {
            return Err(format!("it nests deeper than {MAX_DEPTH} levels of JSON"));
        }
        let start = self.at;
        let mut object = Map::with_capacity(n.min(self.bytes.len() - self.at));
        let mut plain = true;
        for _ in 0..n {
            let key = self.value(depth + 1)?;
            let Value::String(key) = key else {
                plain = false;
                break;
            };
            let value = self.value(depth + 1)?;
            if object.insert(key, value).is_some() {
                plain = false;
                break;
            }
        }
        if plain && !(n == 1 && object.keys().next().is_some_and(|k| k.starts_with('$'))) {
            return Ok(Value::Object(object));
        }
        // Read again, as pairs: the object two levels further down.
        self.at = start;
        if depth + 2 > MAX_DEPTH {
            return Err(format!("it nests deeper than {MAX_DEPTH} levels of JSON"));
        }
        let mut pairs = Vec::with_capacity(n.min(self.bytes.len() - self.at));
        for _ in 0..n {
            let key = self.value(depth + 3)?;
            let value = self.value(depth + 3)?;
            pairs.push(Value::Array(vec![key, value]));
        }
        Ok(tagged("$map", Value::Array(pairs)))
    }

    fn ext(&mut self, ty: i8, n: usize, depth: usize) -> std::result::Result<Value, String> {
        let data = self.take(n)?;
        if ty == -1
            && let Some(text) = timestamp::format(data)
        {
            if depth > MAX_DEPTH {
                return Err(format!("it nests deeper than {MAX_DEPTH} levels of JSON"));
            }
            return Ok(tagged("$time", Value::String(text)));
        }
        if depth + 1 > MAX_DEPTH {
            return Err(format!("it nests deeper than {MAX_DEPTH} levels of JSON"));
        }
        Ok(tagged(
            "$ext",
            Value::Array(vec![ty.into(), BASE64.encode(data).into()]),
        ))
    }
}

fn special_f64(f: f64) -> String {
    if f == f64::INFINITY {
        "Infinity".into()
    } else if f == f64::NEG_INFINITY {
        "-Infinity".into()
    } else if f.to_bits() == f64::NAN.to_bits() {
        "NaN".into()
    } else {
        format!("0x{:016x}", f.to_bits())
    }
}

fn special_f32(f: f32) -> String {
    if f == f32::INFINITY {
        "Infinity".into()
    } else if f == f32::NEG_INFINITY {
        "-Infinity".into()
    } else if f.to_bits() == f32::NAN.to_bits() {
        "NaN".into()
    } else {
        format!("0x{:08x}", f.to_bits())
    }
}

/// A float 32 as a JSON number: its shortest decimal when that reads back as the same
/// float 32 through a float 64, else its exact value.
fn f32_json(f: f32) -> Value {
    if !f.is_finite() {
        return Value::String(special_f32(f));
    }
    let short: f64 = f.to_string().parse().unwrap_or(f as f64);
    let value = if (short as f32).to_bits() == f.to_bits() {
        short
    } else {
        f as f64
    };
    Number::from_f64(value).map_or(Value::Null, Value::Number)
}

// ---- JSON -> MessagePack ----

/// Where in the body a value sits, for error messages; rendered only on error.
enum Path<'a> {
    Root,
    Key(&'a Path<'a>, &'a str),
    Index(&'a Path<'a>, usize),
}

impl std::fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Path::Root => f.write_str("body"),
            Path::Key(parent, key) => write!(f, "{parent}.{key}"),
            Path::Index(parent, i) => write!(f, "{parent}[{i}]"),
        }
    }
}

fn at(path: &Path<'_>, message: impl std::fmt::Display) -> Error {
    invalid(format!("{path}: {message}"))
}

/// Writing into a `Vec` cannot fail; lengths are checked before.
fn put<T, E>(result: std::result::Result<T, E>) {
    let _ = result;
}

fn length(len: usize, path: &Path<'_>) -> Result<u32> {
    u32::try_from(len).map_err(|_| at(path, "longer than MessagePack allows (4 GiB)"))
}

fn decode_value(value: &Value, path: &Path<'_>, depth: usize, out: &mut Vec<u8>) -> Result<()> {
    use rmp::encode as w;
    match value {
        Value::Null => put(w::write_nil(out)),
        Value::Bool(b) => put(w::write_bool(out, *b)),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                put(w::write_uint(out, u));
            } else if let Some(i) = n.as_i64() {
                put(w::write_sint(out, i));
            } else {
                put(w::write_f64(out, n.as_f64().unwrap_or(f64::NAN)));
            }
        }
        Value::String(s) => {
            put(w::write_str_len(out, length(s.len(), path)?));
            out.extend_from_slice(s.as_bytes());
        }
        Value::Array(items) => {
            if depth > MAX_DEPTH {
                return Err(at(path, format!("nested deeper than {MAX_DEPTH} levels")));
            }
            put(w::write_array_len(out, length(items.len(), path)?));
            for (i, item) in items.iter().enumerate() {
                decode_value(item, &Path::Index(path, i), depth + 1, out)?;
            }
        }
        Value::Object(map) => {
            if depth > MAX_DEPTH {
                return Err(at(path, format!("nested deeper than {MAX_DEPTH} levels")));
            }
            if let Some((tag, inner)) = tag_of(value) {
                return decode_tag(tag, inner, path, depth, out);
            }
            put(w::write_map_len(out, length(map.len(), path)?));
            for (key, item) in map {
                put(w::write_str_len(out, length(key.len(), path)?));
                out.extend_from_slice(key.as_bytes());
                decode_value(item, &Path::Key(path, key), depth + 1, out)?;
            }
        }
    }
    Ok(())
}

fn base64(value: &Value, path: &Path<'_>) -> Result<Vec<u8>> {
    let text = value.as_str().ok_or_else(|| {
        at(
            path,
            format!("expected a base64 string, got {}", kind(value)),
        )
    })?;
    BASE64
        .decode(text)
        .map_err(|e| at(path, format!("invalid base64: {e}")))
}

fn decode_tag(
    tag: &str,
    inner: &Value,
    outer: &Path<'_>,
    depth: usize,
    out: &mut Vec<u8>,
) -> Result<()> {
    use rmp::encode as w;
    let path = &Path::Key(outer, tag);
    match tag {
        "$bin" => {
            let bytes = base64(inner, path)?;
            put(w::write_bin_len(out, length(bytes.len(), path)?));
            out.extend_from_slice(&bytes);
        }
        "$str" => {
            let bytes = base64(inner, path)?;
            put(w::write_str_len(out, length(bytes.len(), path)?));
            out.extend_from_slice(&bytes);
        }
        "$f64" => {
            let f = match inner {
                Value::Number(n) => n.as_f64().unwrap_or(f64::NAN),
                Value::String(s) => parse_special(s, 16)
                    .map(|(special, bits)| bits.map_or(special, f64::from_bits))
                    .ok_or_else(|| {
                        at(
                            path,
                            "expected a number, NaN, Infinity, -Infinity or 0x and 16 hex digits",
                        )
                    })?,
                other => return Err(at(path, format!("expected a number, got {}", kind(other)))),
            };
            put(w::write_f64(out, f));
        }
        "$f32" => {
            let f = match inner {
                Value::Number(n) => n.as_f64().unwrap_or(f64::NAN) as f32,
                Value::String(s) => match parse_special(s, 8) {
                    Some((special, None)) => special as f32,
                    Some((_, Some(bits))) => f32::from_bits(bits as u32),
                    None => {
                        return Err(at(
                            path,
                            "expected a number, NaN, Infinity, -Infinity or 0x and 8 hex digits",
                        ));
                    }
                },
                other => return Err(at(path, format!("expected a number, got {}", kind(other)))),
            };
            put(w::write_f32(out, f));
        }
        "$ext" => {
            let (ty, data) = match inner.as_array().map(Vec::as_slice) {
                Some([ty, data]) => (ty, data),
                _ => return Err(at(path, "expected [type, \"<base64>\"]")),
            };
            let ty = ty
                .as_i64()
                .and_then(|t| i8::try_from(t).ok())
                .ok_or_else(|| {
                    at(
                        &Path::Index(path, 0),
                        "expected an ext type from -128 to 127",
                    )
                })?;
            let data = base64(data, &Path::Index(path, 1))?;
            put(w::write_ext_meta(out, length(data.len(), path)?, ty));
            out.extend_from_slice(&data);
        }
        "$time" => {
            let text = inner.as_str().ok_or_else(|| {
                at(
                    path,
                    format!("expected an RFC 3339 time string, got {}", kind(inner)),
                )
            })?;
            let (secs, nanos) = timestamp::parse(text).ok_or_else(|| {
                at(
                    path,
                    format!("expected a UTC time such as 2024-05-01T12:00:00.5Z (years 1 to 9999), got {text:?}"),
                )
            })?;
            let data = timestamp::encode(secs, nanos);
            put(w::write_ext_meta(out, data.len() as u32, -1));
            out.extend_from_slice(&data);
        }
        "$map" => {
            let pairs = inner
                .as_array()
                .ok_or_else(|| at(path, "expected a list of [key, value] pairs"))?;
            if depth + 2 > MAX_DEPTH {
                return Err(at(path, format!("nested deeper than {MAX_DEPTH} levels")));
            }
            put(w::write_map_len(out, length(pairs.len(), path)?));
            for (i, pair) in pairs.iter().enumerate() {
                let here = Path::Index(path, i);
                match pair.as_array().map(Vec::as_slice) {
                    Some([k, v]) => {
                        decode_value(k, &Path::Index(&here, 0), depth + 3, out)?;
                        decode_value(v, &Path::Index(&here, 1), depth + 3, out)?;
                    }
                    _ => return Err(at(&here, "expected a [key, value] pair")),
                }
            }
        }
        "$raw" => {
            return Err(at(
                path,
                "$raw (bytes that are not MessagePack) may only be the whole body",
            ));
        }
        other => {
            return Err(at(
                outer,
                format!(
                    "unknown tag {other:?}: expected $bin, $str, $f32, $f64, $ext, $time, $map or $raw; a map whose only key starts with $ is written {{\"$map\": [[{other:?}, value]]}}"
                ),
            ));
        }
    }
    Ok(())
}

/// `NaN`, `Infinity`, `-Infinity` as a float 64, or `0x` and `digits` hex digits as raw bits.
fn parse_special(s: &str, digits: usize) -> Option<(f64, Option<u64>)> {
    match s {
        "NaN" => Some((f64::NAN, None)),
        "Infinity" => Some((f64::INFINITY, None)),
        "-Infinity" => Some((f64::NEG_INFINITY, None)),
        _ => {
            let hex = s.strip_prefix("0x")?;
            if hex.len() != digits || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            Some((f64::NAN, Some(u64::from_str_radix(hex, 16).ok()?)))
        }
    }
}

/// The MessagePack timestamp extension (type −1) and RFC 3339 text.
mod timestamp {
    /// Seconds of 0001-01-01T00:00:00Z and of 9999-12-31T23:59:59Z.
    const MIN_SECS: i64 = -62_135_596_800;
    const MAX_SECS: i64 = 253_402_300_799;

    /// The canonical data of a timestamp: 32-bit when it fits, then 64-bit, else 96-bit, as
    /// the MessagePack spec (and Go encoders) choose.
    pub(super) fn encode(secs: i64, nanos: u32) -> Vec<u8> {
        if secs >= 0 && secs >> 34 == 0 {
            let data = (u64::from(nanos) << 34) | secs as u64;
            if data >> 32 == 0 {
                (data as u32).to_be_bytes().to_vec()
            } else {
                data.to_be_bytes().to_vec()
            }
        } else {
            let mut data = nanos.to_be_bytes().to_vec();
            data.extend_from_slice(&secs.to_be_bytes());
            data
        }
    }

    fn decode(data: &[u8]) -> Option<(i64, u32)> {
        let (secs, nanos) = match data.len() {
            4 => (i64::from(u32::from_be_bytes(data.try_into().ok()?)), 0),
            8 => {
                let v = u64::from_be_bytes(data.try_into().ok()?);
                ((v & ((1 << 34) - 1)) as i64, (v >> 34) as u32)
            }
            12 => (
                i64::from_be_bytes(data[4..].try_into().ok()?),
                u32::from_be_bytes(data[..4].try_into().ok()?),
            ),
            _ => return None,
        };
        (nanos < 1_000_000_000).then_some((secs, nanos))
    }

    /// RFC 3339 text for canonical timestamp `data` in years 1 to 9999; `None` otherwise
    /// (it is then written as a plain ext, which keeps its bytes).
    pub(super) fn format(data: &[u8]) -> Option<String> {
        let (secs, nanos) = decode(data)?;
        if !(MIN_SECS..=MAX_SECS).contains(&secs) || encode(secs, nanos) != data {
            return None;
        }
        let days = secs.div_euclid(86_400);
        let of_day = secs.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        let mut text = format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
            of_day / 3600,
            of_day / 60 % 60,
            of_day % 60
        );
        if nanos > 0 {
            let fraction = format!("{nanos:09}");
            text.push('.');
            text.push_str(fraction.trim_end_matches('0'));
        }
        text.push('Z');
        Some(text)
    }

    /// Reads `YYYY-MM-DDTHH:MM:SS[.F{1,9}]Z`.
    pub(super) fn parse(text: &str) -> Option<(i64, u32)> {
        let b = text.as_bytes();
        if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' {
            return None;
        }
        if b[13] != b':' || b[16] != b':' || *b.last()? != b'Z' {
            return None;
        }
        let num = |range: std::ops::Range<usize>| -> Option<i64> {
            let part = text.get(range)?;
            part.bytes()
                .all(|c| c.is_ascii_digit())
                .then(|| part.parse().ok())?
        };
        let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
        let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
        let nanos = match &text[19..text.len() - 1] {
            "" => 0,
            fraction => {
                let digits = fraction.strip_prefix('.')?;
                if digits.is_empty()
                    || digits.len() > 9
                    || !digits.bytes().all(|c| c.is_ascii_digit())
                {
                    return None;
                }
                format!("{digits:0<9}").parse().ok()?
            }
        };
        if y < 1 || !(1..=12).contains(&m) || d < 1 || d > days_in_month(y, m) {
            return None;
        }
        if hh > 23 || mm > 59 || ss > 59 {
            return None;
        }
        Some((
            days_from_civil(y, m, d) * 86_400 + hh * 3600 + mm * 60 + ss,
            nanos,
        ))
    }

    fn days_in_month(y: i64, m: i64) -> i64 {
        match m {
            2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        }
    }

    /// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
    fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
        let y = if m <= 2 { y - 1 } else { y };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let mp = (m + 9) % 12;
        let doy = (153 * mp + 2) / 5 + d - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146_097 + doe - 719_468
    }

    /// The date of a day count since 1970-01-01.
    fn civil_from_days(z: i64) -> (i64, i64, i64) {
        let z = z + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = doy - (153 * mp + 2) / 5 + 1;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        let y = yoe + era * 400 + i64::from(m <= 2);
        (y, m, d)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn dates_round_trip() {
            assert_eq!(civil_from_days(0), (1970, 1, 1));
            assert_eq!(days_from_civil(2000, 3, 1), 11_017);
            for days in (-719_162..2_932_896).step_by(997) {
                let (y, m, d) = civil_from_days(days);
                assert_eq!(days_from_civil(y, m, d), days);
            }
            assert_eq!(parse("1970-01-01T00:00:00Z"), Some((0, 0)));
            assert_eq!(parse("0001-01-01T00:00:00Z"), Some((MIN_SECS, 0)));
            assert_eq!(
                parse("9999-12-31T23:59:59.999999999Z"),
                Some((MAX_SECS, 999_999_999))
            );
            assert_eq!(
                parse("2024-02-29T12:00:00.5Z"),
                Some((1_709_208_000, 500_000_000))
            );
            for bad in [
                "2023-02-29T00:00:00Z",
                "2024-01-01 00:00:00Z",
                "2024-01-01T00:00:00",
                "2024-01-01T00:00:00+01:00",
                "2024-01-01T24:00:00Z",
                "2024-01-01T00:00:00.Z",
                "2024-01-01T00:00:00.1234567890Z",
                "0000-01-01T00:00:00Z",
                "+2024-01-01T00:00:00Z",
            ] {
                assert_eq!(parse(bad), None, "{bad}");
            }
        }
    }
}
